"""Every Lua callback, declared once, with the one function that builds its arguments.

Two kinds, as pynetdicom's events: a FILTER has one answer and a default when the function is
undefined (accept) or fails (the configured failure policy); a NOTIFY is delivered by the durable
outbox, in order, at least once. Each callback holds its argument builder, a plain, pure function.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.core.outbox import OutboxEvent


class Kind(enum.Enum):
    FILTER = "filter"
    NOTIFY = "notify"


class Role(str, enum.Enum):
    """Which sandbox process of a script set runs the callback (design.md, "Processes")."""

    MAIN = "main"
    FILTER = "filter"


def no_args() -> list[Any]:
    """``Initialize`` and ``Finalize`` take nothing."""
    return []


def received_instance_args(tags: Mapping[str, Any], origin: Mapping[str, Any], has_pixel_data: bool,
                           transfer_syntax_uid: str | None) -> list[Any]:
    """``(tags, origin, info)`` of ``ReceivedInstanceFilter`` and ``ReceivedCStoreInstanceFilter``."""
    info: dict[str, Any] = {"HasPixelData": has_pixel_data}
    if transfer_syntax_uid:
        info["TransferSyntaxUID"] = transfer_syntax_uid
    return [dict(tags), dict(origin), info]


def stored_instance_args(event: OutboxEvent) -> list[Any]:
    """``(instanceId, tags, metadata, origin)`` of ``OnStoredInstance``, from its outbox event."""
    from broker.core.origin import Origin

    payload = event.payload
    origin = Origin.from_dict(payload["origin"]).to_lua()
    return [event.resource_id, dict(payload.get("tags", {})), dict(payload.get("metadata", {})), origin]


def job_args(event: OutboxEvent) -> list[Any]:
    """``(jobId)`` of ``OnJobSubmitted``, ``OnJobSuccess`` and ``OnJobFailure``, from their outbox event."""
    return [event.resource_id]


def http_request_args(method: str, uri: str, ip: str, username: str,
                      headers: Iterable[tuple[str, str]]) -> list[Any]:
    """``(method, uri, ip, username, httpHeaders)``: header names lower-cased, when a header is
    repeated the first one kept."""
    lowered: dict[str, str] = {}
    for name, value in headers:
        lowered.setdefault(name.lower(), value)
    return [method, uri, ip, username, lowered]


@dataclass(frozen=True)
class Callback:
    name: str
    kind: Kind
    role: Role
    doc: str
    #: Builds the Lua arguments: from an outbox event for a NOTIFY that consumes one, from what the
    #: door saw for a FILTER.
    arguments: Callable[..., list[Any]]
    event_kind: str | None = None  # the outbox kind that a NOTIFY callback consumes
    #: Orthanc's [J] callbacks: run through ``_CallWithJob``; the operations recorded by SendToModality
    #: & co. are submitted as a "Lua" job once the callback has returned (``broker.scripting.lua_jobs``).
    job: bool = False


CALLBACKS: dict[str, Callback] = {c.name: c for c in (
    Callback("Initialize", Kind.NOTIFY, Role.MAIN,
             "Called once the server is up, and again after the main sandbox is restarted.", no_args),
    Callback("Finalize", Kind.NOTIFY, Role.MAIN,
             "Called on a clean stop, after the pending events were delivered.", no_args),
    Callback("OnStoredInstance", Kind.NOTIFY, Role.MAIN,
             "(instanceId, tags, metadata, origin) after every successful store, duplicates included.",
             stored_instance_args, event_kind="StoredInstance", job=True),
    Callback("OnJobSubmitted", Kind.NOTIFY, Role.MAIN,
             "(jobId) once a job is queued (not yet started).", job_args, event_kind="JobSubmitted"),
    Callback("OnJobSuccess", Kind.NOTIFY, Role.MAIN,
             "(jobId) once a job has succeeded.", job_args, event_kind="JobSuccess"),
    Callback("OnJobFailure", Kind.NOTIFY, Role.MAIN,
             "(jobId) once a job has failed (after its retries) or was canceled.", job_args, event_kind="JobFailure"),
    Callback("ReceivedInstanceFilter", Kind.FILTER, Role.FILTER,
             "(tags, origin, info) before an instance is written; must return a boolean.",
             received_instance_args),
    Callback("ReceivedCStoreInstanceFilter", Kind.FILTER, Role.FILTER,
             "(tags, origin, info) for C-STORE only, after ReceivedInstanceFilter; returns 0 to accept, "
             "or the DIMSE status to answer.", received_instance_args),
    Callback("IncomingHttpRequestFilter", Kind.FILTER, Role.MAIN,
             "(method, uri, ip, username, headers) for every HTTP request; must return a boolean.",
             http_request_args),
)}

NOTIFY_BY_EVENT_KIND: dict[str, Callback] = {c.event_kind: c for c in CALLBACKS.values() if c.event_kind}
