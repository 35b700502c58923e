"""REST endpoints of the jobs engine: ``/jobs`` and the two transfer submissions.

* ``GET /jobs`` (ids, sorted; ``?expand``: the full JSON of each), ``GET /jobs/{id}`` (Orthanc's
  ``JobInfo``: ``ID``, ``State``, ``Type``, ``Priority``, ``Progress``, ``Content``, ``ErrorCode``,
  ``ErrorDescription``, ``ErrorDetails``, ``CreationTime``, ``Timestamp``, ``EffectiveRuntime``,
  ``CompletionTime`` once completed; an unknown id answers an empty 404);
* ``POST /jobs/{id}/cancel|pause|resume|resubmit``: ``{}``, or an empty 400 when the job is unknown
  or the verb does not apply (resume of a job that is not paused, resubmit of one that has not failed);
* ``POST /modalities/{name}/store`` and ``POST /peers/{name}/store``: the body is a bare resource id
  (plain text), a JSON string or list of ids, or ``{"Resources": [...], "Synchronous"|"Asynchronous":
  bool, "Priority": int, "Permissive": bool, "LocalAet": "..."}`` (peers also ``"Transcode": uid``
  and ``"Compress": bool``, a gzipped body); patients, studies and series expand
  to their instances. Synchronous (the default, as in Orthanc): the job runs, and the answer is its
  ``Content`` (or the error it failed with, no automatic retry); asynchronous: ``{"ID", "Path"}``.

Handlers need ``services.jobs`` (a ``JobsEngine``) and ``services.store``.
"""
from __future__ import annotations

import json
import re
from typing import Any

from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.jobs.transfers import DicomModalityStoreJob, OrthancPeerStoreJob
from broker.json_fields import optional_boolean, string_field
from broker.rest.job_options import JobMode, job_mode, read_transcode
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest
from broker.services import Services

routes = RouteTable(coordinator=True)

_ORTHANC_ID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{8}){4}$")


def _engine(services: Services) -> Any:
    engine = getattr(services, "jobs", None)
    if engine is None:
        raise OrthancError(ErrorCode.NOT_IMPLEMENTED, "The jobs engine is not running")
    return engine


@routes.get("/jobs")
def list_jobs(request: RestRequest, services: Services) -> Any:
    engine = _engine(services)
    return engine.infos() if "expand" in request.query else engine.ids()


@routes.get("/jobs/{id}")
def get_job(request: RestRequest, services: Services) -> Any:
    info = _engine(services).info(request.params["id"])
    if info is None:
        raise BareHttpStatus(404, f"Unknown job: {request.params['id']}")
    return info


def _verb(name: str) -> Any:
    def handler(request: RestRequest, services: Services) -> Any:
        job_id = request.params["id"]
        if not getattr(_engine(services), name)(job_id):
            raise BareHttpStatus(400, f"Cannot {name} the job {job_id} (unknown, or not in a state that allows it)")
        return {}
    handler.__name__ = f"{name}_job"
    return handler


for _name in ("cancel", "pause", "resume", "resubmit"):
    routes.add("POST", f"/jobs/{{id}}/{_name}", _verb(_name))


def _bad(details: str) -> OrthancError:
    return OrthancError(ErrorCode.BAD_FILE_FORMAT, details)


def export_request(body: bytes) -> tuple[list[str], dict[str, Any]]:
    """Orthanc's ``GetInstancesToExport``: the resource ids of the body, and the other arguments."""
    text = body.decode("utf-8", "replace").strip()
    if _ORTHANC_ID.match(text):  # a bare id (compatibility with Orthanc <= 0.5.1)
        request: Any = [text]
    else:
        try:
            request = json.loads(text)
        except ValueError:
            raise _bad("Must provide a JSON value") from None
    if isinstance(request, str):
        request = [request]
    elif not isinstance(request, (list, dict)):
        raise _bad("Must provide a JSON object, or a JSON array of strings")
    options: dict[str, Any] = {}
    if isinstance(request, dict):
        if "Resources" not in request:
            raise _bad('Missing field in JSON: "Resources"')
        resources = request["Resources"]
        if not isinstance(resources, list):
            raise _bad('JSON field "Resources" must contain an array')
        options = {key: value for key, value in request.items() if key != "Resources"}
    else:
        resources = request
    ids = []
    for item in resources:
        if not isinstance(item, str):
            raise _bad("Resources to be exported must be specified as a JSON array of strings")
        stripped = item.strip()
        if not _ORTHANC_ID.match(stripped):
            raise _bad(f"This string is not a valid Orthanc identifier: {stripped}")
        ids.append(stripped)
    return ids, options


def _instances(services: Services, ids: list[str], remote: str) -> list[str]:
    """The instances to send; with ``LogExportedResources``, each resource is logged as exported to
    ``remote`` once its instances are known (Orthanc's ``GetInstancesToExport``)."""
    instances: list[str] = []
    for resource_id in ids:
        instances.extend(services.store.child_instances(resource_id))
        if services.config.log_exported_resources:
            services.store.exports.log(resource_id, remote)
    return instances


def submit(services: Services, job: Any, mode: JobMode) -> Any:
    """Orthanc's ``SubmitCommandsJob``: synchronous by default."""
    engine = _engine(services)
    if mode.synchronous:
        return engine.submit_and_wait(job, mode.priority)
    job_id = engine.submit(job, mode.priority)
    return {"ID": job_id, "Path": f"/jobs/{job_id}"}


@routes.post("/modalities/{name}/store")
def store_to_modality(request: RestRequest, services: Services) -> Any:
    ids, options = export_request(request.body)
    engine = _engine(services)
    instances = _instances(services, ids, request.params["name"])
    modality = engine.context.senders.modality(request.params["name"])
    local_aet = string_field(options, "LocalAet", "")
    default_aet = getattr(modality, "local_aet", "") or engine.settings.default_local_aet
    mode = job_mode(options, commands=True)
    job = DicomModalityStoreJob(request.params["name"], modality.aet, local_aet or None, instances, ids,
                                permissive=mode.permissive, default_local_aet=default_aet)
    return submit(services, job, mode)


@routes.post("/peers/{name}/store")
def store_to_peer(request: RestRequest, services: Services) -> Any:
    ids, options = export_request(request.body)
    engine = _engine(services)
    instances = _instances(services, ids, request.params["name"])
    peer = engine.context.senders.peer(request.params["name"])
    transcode = read_transcode(options, for_job=True)
    compress = optional_boolean(options, "Compress", False)
    mode = job_mode(options, commands=True)
    job = OrthancPeerStoreJob(request.params["name"], peer.url, instances, ids, transcode=transcode,
                              compress=compress, permissive=mode.permissive)
    return submit(services, job, mode)
