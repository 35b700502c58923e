"""Archives and media (``broker.core.archive``): ``GET``/``POST /{patients,studies,series}/{id}/archive``
and ``/media``, ``POST /tools/create-archive``, ``/tools/create-media`` and
``/tools/create-media-extended`` (``{"Resources": [ids]}``), each with ``Transcode`` (``?transcode=``
on GET) to a transfer syntax luabroker can write. The answer is the ZIP file (``application/zip``,
``filename="{id}.zip"``); with ``"Synchronous": false``, an ``Archive`` job (``broker.jobs.archives``)
whose ZIP is downloaded from ``GET /jobs/{id}/archive``.

Handlers need ``services.store``, ``services.jobs`` and ``services.archive_outputs``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.core.archive import hierarchical_names, instances_of, reader, write_archive, write_media
from broker.core.levels import Level
from broker.errors import ErrorCode, OrthancError
from broker.jobs.archives import ArchiveJob
from broker.rest.job_options import job_mode, read_transcode
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable()
Handler = Callable[[RestRequest, Services], Any]


def _options(request: RestRequest) -> dict[str, Any]:
    if request.method == "GET":
        return {"Transcode": request.query["transcode"]} if "transcode" in request.query else {}
    body = request.json_object()
    if body is None:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The body must be a JSON object")
    return body


def _answer(services: Services, options: dict[str, Any], media: bool, name: str,
            locate: Callable[[dict[str, Any]], list[tuple[Level, str]]]) -> Any:
    """The archive, or its job; the options are read before the resources, in Orthanc's order."""
    mode = job_mode(options)
    transcode = read_transcode(options, for_job=False)
    store = services.store
    instances = instances_of(store, locate(options))
    if not mode.synchronous:
        job_id = services.jobs.submit(ArchiveJob(instances, media, transcode), mode.priority)
        return {"ID": job_id, "Path": f"/jobs/{job_id}"}
    read = reader(store, transcode)
    data = write_media(instances, read) if media else write_archive(hierarchical_names(store, instances), read)
    response = RestResponse.binary(data, "application/zip")
    response.headers["Content-Disposition"] = f'filename="{name}.zip"'
    return response


@routes.get("/jobs/{id}/archive", coordinator=True)
def job_archive(request: RestRequest, services: Services) -> RestResponse:
    """The archive of an asynchronous job, while it is kept (``MediaArchiveSize``)."""
    job = services.jobs.job(request.params["id"])
    data = job.output() if isinstance(job, ArchiveJob) else None
    if data is None:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No archive for the job {request.params['id']}")
    response = RestResponse.binary(data, "application/zip")
    response.headers["Content-Disposition"] = f'filename="{request.params["id"]}.zip"'
    return response


def _of_resource(level: Level, media: bool) -> Handler:
    def handler(request: RestRequest, services: Services) -> Any:
        public_id = request.params["id"]
        if not services.store.exists(level, public_id):
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No {level.label.lower()} with id {public_id}")
        return _answer(services, _options(request), media, public_id, lambda _: [(level, public_id)])
    return handler


def _located(services: Services) -> Callable[[dict[str, Any]], list[tuple[Level, str]]]:
    """The ``Resources`` of a request body, each with its level (404 for an unknown one)."""
    def locate(options: dict[str, Any]) -> list[tuple[Level, str]]:
        if "Resources" not in options:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Missing field Resources in the JSON body")
        resources = options["Resources"]
        if not isinstance(resources, list) or not all(isinstance(item, str) for item in resources):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Expected a list of strings (Orthanc identifiers)")
        located = []
        for public_id in resources:
            level = next((level for level in Level if services.store.exists(level, public_id)), None)
            if level is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No resource with id {public_id}")
            located.append((level, public_id))
        return located
    return locate


def _of_resources(media: bool) -> Handler:
    def handler(request: RestRequest, services: Services) -> Any:
        return _answer(services, _options(request), media, "Archive", _located(services))
    return handler


for _level in (Level.PATIENT, Level.STUDY, Level.SERIES):
    for _kind, _media in (("archive", False), ("media", True)):
        routes.add("GET", f"/{_level.plural}/{{id}}/{_kind}", _of_resource(_level, _media))
        routes.add("POST", f"/{_level.plural}/{{id}}/{_kind}", _of_resource(_level, _media))
routes.add("POST", "/tools/create-archive", _of_resources(False))
routes.add("POST", "/tools/create-media", _of_resources(True))
routes.add("POST", "/tools/create-media-extended", _of_resources(True))
