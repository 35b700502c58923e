"""REST endpoints of modification and anonymization, as Orthanc 1.10 answers them.

* ``POST /instances/{id}/modify`` and ``POST /instances/{id}/anonymize``: the modified file
  (``application/dicom``), nothing stored. ``/modify`` works at the level ``ModifyRequest.from_json``
  detects (``Instance`` unless ``Force`` replaces an identifier), so the copy has a new SOPInstanceUID
  unless ``Keep: ["SOPInstanceUID"]`` with ``Force``; ``/anonymize`` works at the patient level (new
  study, series and instance UIDs). ``Transcode`` is honoured by ``/modify`` (500 when the target
  cannot be produced here, as Orthanc answers when its transcoder fails).
* ``POST /{patients|studies|series}/{id}/modify`` and ``.../anonymize``: every instance of the resource
  (of whatever level the id is: Orthanc expands any id) is modified with one ``Modifier`` (consistent
  new UIDs) and stored, with the origin of the request, metadata ``ModifiedFrom``/``AnonymizedFrom``
  (instance: the original instance; series, study, patient: the original one, when its id changed);
  ``KeepSource: false`` deletes the originals afterwards. The answer is the public content of Orthanc's
  synchronous job: ``Description``, ``FailedInstancesCount``, ``ID``, ``InstancesCount``,
  ``IsAnonymization``, ``Path``, ``PatientID``, ``Type`` (and ``Transcode``). ``"Asynchronous": true``
  or ``"Synchronous": false`` submits a ``ResourceModification`` job instead, whose content is that
  answer.
* ``POST /tools/bulk-modify`` and ``/tools/bulk-anonymize``: the same, for every instance of the ids
  (of any level) listed in ``Resources``; ``/bulk-modify`` works at the level of ``Level`` (Orthanc's
  ``StringToResourceType``), or the one ``/instances/{id}/modify`` detects. The answer lists every new
  resource (``Resources``: ``{"ID", "Path", "Type"}``, instances, then series, studies, patients,
  each sorted by id) in place of ``ID``, ``Path``, ``PatientID``, ``Type``.

Order of checks, as Orthanc: the body (400), for bulks ``Level`` then ``Resources`` (400),
``KeepSource`` and ``Transcode`` (400), the resources (404), ``Synchronous``/``Asynchronous``/``Priority``
(400), then the modification itself (400 for the sanity checks and bad replacement values, raised
before anything is stored when possible).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from broker.core.anonymize import ANONYMIZATION_SEQUENCE, anonymization_request
from broker.core.dicom_file import (
    CannotTranscode,
    read_dataset,
    transcode_dataset,
    write_dataset,
)
from broker.core.levels import Level
from broker.core.modify import modify_dataset
from broker.core.modify_request import ModifyRequest
from broker.core.resource_modification import run_resource_modification
from broker.core.restructure import merge_sources, require_study, split_sources
from broker.core.store import Store
from broker.errors import ErrorCode, OrthancError
from broker.jobs.modification import ResourceModificationJob
from broker.jobs.restructure import MergeStudyJob, SplitStudyJob
from broker.json_fields import optional_boolean
from broker.rest.job_options import job_mode, read_transcode
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

log = logging.getLogger("luabroker.modification")
routes = RouteTable()


def _store(services: Services) -> Store:
    return services.store


def _body(request: RestRequest) -> Any:
    """The JSON body; anything that is not JSON is Orthanc's ``BadFileFormat``."""
    try:
        return request.json_body()
    except OrthancError:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The body must be a JSON object") from None


def _next_patient_name(store: Store, taken: list[str] | None = None) -> Callable[[], str]:
    def next_name() -> str:
        name = f"Anonymized{store.increment_global_sequence(ANONYMIZATION_SEQUENCE)}"
        if taken is not None:
            taken.append(name)
        return name
    return next_name


# Instances: the modified file is the answer.
@routes.post("/instances/{id}/modify")
def modify_instance(request: RestRequest, services: Services) -> RestResponse:
    body = _body(request)
    modification = ModifyRequest.from_json(body, None)
    transcode = read_transcode(body, for_job=False) if isinstance(body, dict) else None
    return _answer_instance(services, request.params["id"], modification, transcode)


@routes.post("/instances/{id}/anonymize")
def anonymize_instance(request: RestRequest, services: Services) -> RestResponse:
    modification = anonymization_request(_body(request), next_patient_name=_next_patient_name(_store(services)))
    return _answer_instance(services, request.params["id"], modification, None)


def _answer_instance(services: Services, instance_id: str, modification: ModifyRequest,
                     transcode: str | None) -> RestResponse:
    data, _ = _store(services).read_instance(instance_id)
    ds = read_dataset(data)
    modify_dataset(ds, modification)
    if transcode is not None:
        try:
            transcode_dataset(ds, transcode)
        except CannotTranscode as exc:
            raise OrthancError(ErrorCode.INTERNAL_ERROR, str(exc)) from None
    return RestResponse.binary(write_dataset(ds), "application/dicom")


# Patients, studies, series: new resources are stored.
def _modify_resource(level: Level, anonymize: bool) -> Callable[[RestRequest, Any], Any]:
    def handler(request: RestRequest, services: Services) -> Any:
        body = _body(request)
        names: list[str] = []  # the Anonymized<N> taken, for a job to use the same
        if anonymize:
            modification = anonymization_request(body, next_patient_name=_next_patient_name(_store(services), names))
        else:
            modification = ModifyRequest.from_json(body, level)
        return _submit(request, services, body, modification, names, [request.params["id"]], level,
                       anonymize=anonymize, bulk=False)
    return handler


for _level in (Level.PATIENT, Level.STUDY, Level.SERIES):
    routes.add("POST", f"/{_level.plural}/{{id}}/modify", _modify_resource(_level, anonymize=False))
    routes.add("POST", f"/{_level.plural}/{{id}}/anonymize", _modify_resource(_level, anonymize=True))


@routes.post("/tools/bulk-modify")
def bulk_modify(request: RestRequest, services: Services) -> Any:
    """Orthanc 1.9.4's bulk modification: every instance of ``Resources`` (ids of any level), at the
    level ``Level`` says (or the one ``/instances/{id}/modify`` would detect)."""
    body = _body(request)
    modification = ModifyRequest.from_json(body, None)
    if "Level" in body:
        if not isinstance(body["Level"], str):  # Orthanc's jsoncpp asCString() throws: an unhandled exception
            raise OrthancError(ErrorCode.INTERNAL_ERROR, "An unhandled exception was generated inside the HTTP server")
        try:
            modification.set_level(Level.from_name(body["Level"]))
        except KeyError:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown resource level: {body['Level']}") from None
    return _submit(request, services, body, modification, [], _resources(body), modification.level,
                   anonymize=False, bulk=True)


@routes.post("/tools/bulk-anonymize")
def bulk_anonymize(request: RestRequest, services: Services) -> Any:
    """Orthanc 1.9.4's bulk anonymization: every instance of ``Resources``, at the patient level
    (``Level`` is ignored, as Orthanc ignores it)."""
    names: list[str] = []
    body = _body(request)
    modification = anonymization_request(body, next_patient_name=_next_patient_name(_store(services), names))
    return _submit(request, services, body, modification, names, _resources(body), Level.PATIENT,
                   anonymize=True, bulk=True)


def _resources(body: dict[str, Any]) -> list[str]:
    """Orthanc's ``ReadSetOfStrings``: required, and a set (sorted, without duplicates)."""
    return sorted(set(_list_of_ids(body, "Resources", required=True)))


def _submit(request: RestRequest, services: Services, body: dict[str, Any], modification: ModifyRequest,
            names: list[str], resources: list[str], level: Level, *, anonymize: bool, bulk: bool) -> Any:
    """Orthanc's ``SubmitModificationJob``: ``KeepSource``, ``Transcode``, the resources' instances,
    then run now (the default) or submit a job. ``level``: the modification's level, and the level
    of the new resource a single-resource answer names; a bulk answer lists every new resource.
    ``names``: the ``Anonymized<N>`` taken by the parsing, for a job to use the same."""
    store = _store(services)
    keep_source = optional_boolean(body, "KeepSource", True)
    transcode = read_transcode(body, for_job=True)
    instances = [instance for resource in resources for instance in store.child_instances(resource)]
    mode = job_mode(body, commands=True)
    if not mode.synchronous:
        job = ResourceModificationJob(level, anonymize, body, names[0] if names else None, instances,
                                      keep_source, transcode, request.origin.to_dict(), bulk=bulk,
                                      permissive=mode.permissive)
        job_id = services.jobs.submit(job, mode.priority)
        return {"ID": job_id, "Path": f"/jobs/{job_id}"}
    return run_resource_modification(store, modification, instances, origin=request.origin,
                                     output_level=None if bulk else level, is_anonymization=anonymize,
                                     keep_source=keep_source, transcode=transcode, permissive=mode.permissive)


def _list_of_ids(body: dict[str, Any], name: str, required: bool = False) -> list[str]:
    """A list of strings; an absent optional one is empty."""
    value = body.get(name) if required else body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"List of strings expected in field: {name}")
    return value


def _move_body(request: RestRequest) -> dict[str, Any]:
    body = request.json_object()
    if body is None:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The body must be a JSON object")
    return body


def _run_move(services: Services, body: dict[str, Any], job: SplitStudyJob | MergeStudyJob) -> Any:
    """Synchronously (the default): the job's content; else the job, ``{"ID", "Path"}``."""
    mode = job_mode(body, commands=True)
    if not mode.synchronous:
        job_id = services.jobs.submit(job, mode.priority)
        return {"ID": job_id, "Path": f"/jobs/{job_id}"}
    return job.run_now(services)


@routes.post("/studies/{id}/split")
def split(request: RestRequest, services: Services) -> Any:
    """Orthanc 1.9.4's split: ``{"Series", "Instances", "Replace", "Remove", "KeepSource"}``."""
    body = _move_body(request)
    store = _store(services)
    require_study(store, request.params["id"], split=True)
    series, instances = _list_of_ids(body, "Series"), _list_of_ids(body, "Instances")
    split_sources(store, request.params["id"], series, instances)  # checked now, as Orthanc adds them to the job
    if not series and not instances:
        raise OrthancError(ErrorCode.BAD_REQUEST, 'Both the "Series" and the "Instances" fields are missing')
    replace = body.get("Replace", {})
    if not isinstance(replace, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Field "Replace" must be an object')
    options = {"Series": series, "Instances": instances, "Replace": replace, "Remove": _list_of_ids(body, "Remove"),
               "KeepSource": optional_boolean(body, "KeepSource", False)}
    return _run_move(services, body, SplitStudyJob(request.params["id"], options, request.origin.to_dict()))


@routes.post("/studies/{id}/merge")
def merge(request: RestRequest, services: Services) -> Any:
    """Orthanc 1.9.4's merge: ``{"Resources", "KeepSource"}``."""
    body = _move_body(request)
    store = _store(services)
    require_study(store, request.params["id"], split=False)
    resources = _list_of_ids(body, "Resources", required=True)
    merge_sources(store, request.params["id"], resources)  # checked now, as Orthanc adds them to the job
    options = {"Resources": resources, "KeepSource": optional_boolean(body, "KeepSource", False)}
    return _run_move(services, body, MergeStudyJob(request.params["id"], options, request.origin.to_dict()))
