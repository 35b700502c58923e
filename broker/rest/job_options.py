"""The options every job-submitting endpoint reads the same way, as Orthanc's ``OrthancRestApi`` does.

``job_mode``: ``Synchronous`` (or else ``Asynchronous``, negated) and ``Priority``, Orthanc's
``IsSynchronousJobRequest`` and ``GetJobRequestPriority``; for a job made of one command per instance
(Orthanc's ``SubmitCommandsJob``: stores, modifications, split and merge), ``Permissive`` before them.
``read_transcode``: the ``Transcode``
option, whose unknown values Orthanc answers in two ways: where an instance or an archive is written
now, 400 ``ParameterOutOfRange`` "Unknown transfer syntax: X"; where a job is set up (a resource
modification, a peer store), 400 ``BadFileFormat`` "Unknown transfer syntax UID: X".
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.core.dicom_file import is_known_transfer_syntax
from broker.errors import ErrorCode, OrthancError
from broker.json_fields import optional_boolean, read_boolean, read_integer, read_string


@dataclass(frozen=True)
class JobMode:
    synchronous: bool = True
    priority: int = 0
    permissive: bool = False  # a failing instance is counted and skipped instead of failing the job


def job_mode(body: Any, *, commands: bool = False) -> JobMode:
    """How to run a request's job (synchronous by default, as every such endpoint of Orthanc 1.10);
    ``commands``: the job has a command per instance, so ``Permissive`` applies. A body that is not an
    object has the defaults."""
    if not isinstance(body, Mapping):
        return JobMode()
    permissive = optional_boolean(body, "Permissive", False) if commands else False
    if "Synchronous" in body:
        synchronous = read_boolean(body, "Synchronous")
    elif "Asynchronous" in body:
        synchronous = not read_boolean(body, "Asynchronous")
    else:
        synchronous = True
    return JobMode(synchronous, read_integer(body, "Priority") if "Priority" in body else 0, permissive)


def read_transcode(body: Mapping[str, Any], *, for_job: bool) -> str | None:
    """The ``Transcode`` transfer syntax UID, or None when absent."""
    if "Transcode" not in body:
        return None
    syntax = read_string(body, "Transcode")
    if is_known_transfer_syntax(syntax):
        return syntax
    if for_job:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Unknown transfer syntax UID: {syntax}")
    raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown transfer syntax: {syntax}")
