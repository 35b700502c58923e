"""Orthanc's ``ResourceModificationJob``: every instance of a patient, study or series (or of the
``Resources`` of ``/tools/bulk-modify|anonymize``) modified (or anonymized) and stored as a new
instance, with ``ModifiedFrom``/``AnonymizedFrom`` on it and on the new parents; run by the REST
handlers directly, or as a job (``broker.jobs.modification``) when asked to be asynchronous."""
from __future__ import annotations

import logging
from typing import Any

from broker.core.bounds import UNBOUNDED
from broker.core.dicom_file import CannotTranscode, read_dataset, transcode_dataset, write_dataset
from broker.core.ids import ResourceIds
from broker.core.levels import Level
from broker.core.metadata import MetadataType
from broker.core.modify import Modifier, modify_dataset
from broker.core.modify_request import ModifyRequest
from broker.core.store import SUCCESS, IncomingInstance, Store
from broker.errors import ErrorCode, OrthancError

log = logging.getLogger("luabroker.modification")

JOB_DESCRIPTION = "REST API"


def run_resource_modification(store: Store, modification: ModifyRequest, instances: list[str], *, origin: Any,
                              output_level: Level | None, is_anonymization: bool, keep_source: bool = True,
                              transcode: str | None = None, permissive: bool = False) -> dict[str, Any]:
    """Modify and store every instance, as Orthanc's ``ResourceModificationJob`` (synchronous), and
    return the job's public content.

    ``output_level``: the level of the single new resource the content names (``ID``, ``Path``,
    ``PatientID``, ``Type``: Orthanc's ``SingleOutput``); ``None`` for a bulk modification, whose
    content lists every new resource instead (``Resources``: Orthanc's ``MultipleOutputs``).
    ``permissive``: an instance that cannot be modified or stored is skipped, instead of failing the
    whole run; as in Orthanc, only one that cannot be read counts in ``FailedInstancesCount``."""
    if instances:  # Orthanc checks the request when it applies it: a bulk job without instances succeeds
        modification.check()
    modifier = Modifier(modification)
    metadata_type = MetadataType.ANONYMIZED_FROM if is_anonymization else MetadataType.MODIFIED_FROM
    output: dict[str, str] | None = None
    created: dict[Level, set[str]] = {level: set() for level in Level}
    failed = 0
    handled: list[str] = []
    for instance_id in instances:
        try:
            data, _ = store.read_instance(instance_id)
        except OrthancError as exc:
            log.warning("An error occurred while executing a Modification job on instance %s: %s", instance_id, exc)
            failed += 1
            continue
        try:
            new = _store_modified(store, data, modifier, transcode, instance_id, origin, metadata_type)
        except OrthancError as exc:
            if not permissive:
                raise
            log.warning("Ignoring an error in a permissive job: %s", exc)  # and not counted, as Orthanc
            continue
        handled.append(instance_id)
        for level, new_id in ((Level.INSTANCE, new.instance), (Level.SERIES, new.series), (Level.STUDY, new.study),
                              (Level.PATIENT, new.patient)):
            created[level].add(new_id)
        if output is None and output_level is not None:
            output = {"ID": {Level.PATIENT: new.patient, Level.STUDY: new.study, Level.SERIES: new.series,
                             Level.INSTANCE: new.instance}[output_level], "PatientID": new.patient}
    if not keep_source:
        for instance_id in handled:
            store.delete(Level.INSTANCE, instance_id)
    content: dict[str, Any] = {"Description": JOB_DESCRIPTION, "FailedInstancesCount": failed,
                               "InstancesCount": len(instances), "IsAnonymization": is_anonymization}
    if output_level is None:
        content["Resources"] = [_resource(level, new_id) for level in (Level.INSTANCE, Level.SERIES, Level.STUDY,
                                                                       Level.PATIENT)
                                for new_id in sorted(created[level])]
    elif output is not None:
        content.update(output)
        content["Path"] = f"/{output_level.plural}/{output['ID']}"
        content["Type"] = output_level.label
    if transcode is not None:
        content["Transcode"] = transcode
    return content


def _store_modified(store: Store, data: bytes, modifier: Modifier, transcode: str | None, instance_id: str,
                    origin: Any, metadata_type: MetadataType) -> ResourceIds:
    """The instance modified and stored, with its ``ModifiedFrom``/``AnonymizedFrom`` and its new parents'."""
    modified = _modified_bytes(data, modifier, transcode, instance_id)
    original = IncomingInstance(data, origin, UNBOUNDED).ids  # stored: read whatever bounds say now; UIDs are ASCII
    incoming = IncomingInstance(modified, origin, store.bounds, store.default_encoding)
    new = incoming.ids
    incoming.extra_metadata = {metadata_type: instance_id}
    for ancestor, old_id, new_id in ((Level.SERIES, original.series, new.series),
                                     (Level.STUDY, original.study, new.study),
                                     (Level.PATIENT, original.patient, new.patient)):
        if old_id != new_id:
            incoming.ancestor_metadata[ancestor] = {metadata_type: old_id}
    result = store.store_incoming(incoming)
    if result.status != SUCCESS:
        raise OrthancError(ErrorCode.CANNOT_STORE_INSTANCE,
                           f"Error while storing a modified instance {instance_id} ({result.status})")
    return new


def _resource(level: Level, public_id: str) -> dict[str, str]:
    return {"ID": public_id, "Path": f"/{level.plural}/{public_id}", "Type": level.label}


def _modified_bytes(data: bytes, modifier: Modifier, transcode: str | None, instance_id: str) -> bytes:
    ds = modify_dataset(read_dataset(data), modifier.request, modifier=modifier)
    if transcode is not None:
        try:
            transcode_dataset(ds, transcode)
        except CannotTranscode as exc:
            # Orthanc keeps the original transfer syntax; the UIDs are already mapped, so a second pass
            # over a fresh copy gives the same file without the failed transcoding.
            log.warning("Cannot transcode instance, keeping original transfer syntax: %s (%s)", instance_id, exc)
            ds = modify_dataset(read_dataset(data), modifier.request, modifier=modifier)
    return write_dataset(ds)
