"""The views of one instance's DICOM file: ``/instances/{id}/file``, ``tags`` (``?simplify``,
``?short``), ``simplified-tags``, ``content/...`` (the raw dataset walked by a path,
``broker.core.content``), ``header`` (the file meta information, in the formats of ``tags``) and
``pdf`` (the document of an Encapsulated PDF); and ``export``, which writes the file to the server's
file system when ``RestApiWriteToFileSystemEnabled`` allows it.

Handlers need ``services.store`` (and ``services.config`` for ``export``).
"""
from __future__ import annotations

from typing import Any

from broker.core import views
from broker.core.content import content_at
from broker.core.dicom_file import read_dataset
from broker.core.dicom_json import JsonFormat
from broker.core.origin import RequestOrigin
from broker.core.tags import parse_tag
from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.json_fields import read_boolean
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse, dump_json
from broker.services import Services

routes = RouteTable()


def json_format(request: RestRequest) -> JsonFormat:
    """``?simplify`` and ``?short``, as for ``/tags``."""
    if "simplify" in request.query:
        return JsonFormat.HUMAN
    if "short" in request.query:
        return JsonFormat.SHORT
    return JsonFormat.FULL


def body_format(body: dict[str, Any], default: JsonFormat) -> JsonFormat:
    """Orthanc's ``GetDicomFormat`` of a POST body: ``Simplify``, ``Short`` or ``Full`` set to true."""
    for name, fmt in (("Simplify", JsonFormat.HUMAN), ("Short", JsonFormat.SHORT), ("Full", JsonFormat.FULL)):
        if name in body and read_boolean(body, name):
            return fmt
    return default


def ignore_length(request: RestRequest) -> frozenset[int]:
    """``?ignore-length=tag``: a tag shown however long its value (a name or ``gggg-eeee``)."""
    name = request.query.get("ignore-length", "")
    return frozenset({parse_tag(name)}) if name else frozenset()


def _content(request: RestRequest, services: Services, path: list[str]) -> Any:
    data, _ = services.store.read_instance(request.params["id"])
    answer = content_at(read_dataset(data), path)
    if answer is None:
        raise BareHttpStatus(404, f"Nothing at {'/'.join(path) or 'the top'} of this instance")
    return RestResponse.binary(answer) if isinstance(answer, bytes) else answer


@routes.get("/instances/{id}/file")
def get_instance_file(request: RestRequest, services: Services) -> RestResponse:
    """The DICOM file; as DICOMweb JSON (PS3.18 F.2, binary values inline) when the client accepts
    ``application/dicom+json``, as Orthanc 1.9.3 and later."""
    data, attachment = services.store.read_instance(request.params["id"])
    if "application/dicom+json" in request.headers.get("accept", ""):
        return RestResponse(200, dump_json(read_dataset(data).to_json_dict()), "application/dicom+json")
    response = RestResponse.binary(data, "application/dicom")
    response.headers["Content-Disposition"] = f'filename="{attachment.uuid}.dcm"'
    return response


@routes.get("/instances/{id}/tags")
def get_instance_tags(request: RestRequest, services: Services) -> Any:
    return services.store.instance_tags(request.params["id"], json_format(request), ignore_length(request))


@routes.get("/instances/{id}/simplified-tags")
def get_instance_simplified_tags(request: RestRequest, services: Services) -> Any:
    return services.store.instance_tags(request.params["id"], JsonFormat.HUMAN, ignore_length(request))


@routes.get("/instances/{id}/content")
def get_content(request: RestRequest, services: Services) -> Any:
    return _content(request, services, [])


@routes.get("/instances/{id}/content/{path:path}")
def get_content_at(request: RestRequest, services: Services) -> Any:
    return _content(request, services, request.params["path"].split("/"))


@routes.get("/instances/{id}/header")
def get_header(request: RestRequest, services: Services) -> Any:
    return services.store.instance_header(request.params["id"], json_format(request))


@routes.get("/instances/{id}/pdf")
def get_pdf(request: RestRequest, services: Services) -> RestResponse:
    """The PDF of an Encapsulated PDF instance; of any other instance an empty 404, as Orthanc 1.10."""
    pdf = views.encapsulated_pdf(services.store, request.params["id"])
    if pdf is None:
        raise BareHttpStatus(404, "This instance is no Encapsulated PDF")
    return RestResponse.binary(pdf, "application/pdf")


@routes.post("/instances/{id}/export")
def export_file(request: RestRequest, services: Services) -> RestResponse:
    """Write the DICOM file to the path given as the body (relative paths from the server's working
    directory), as Orthanc 1.10, and answer ``{}``. Whoever may call it can overwrite any file the
    server's user may write, so, as in Orthanc 1.12, it answers an empty 403 (before the instance is
    looked up) unless ``RestApiWriteToFileSystemEnabled``. Scripts never get it: their code is not
    trusted, and it would write as the server, outside their sandbox."""
    if not services.config.rest_api_write_to_file_system_enabled:
        raise BareHttpStatus(403, "The URI /instances/../export is disallowed for security reasons; set "
                                  "\"RestApiWriteToFileSystemEnabled\": true in the configuration to enable it")
    if request.origin.request_origin is RequestOrigin.LUA:
        raise BareHttpStatus(403, "Lua scripts may not write files through /instances/../export")
    data, _ = services.store.read_instance(request.params["id"])
    try:
        with open(request.body, "wb") as target:
            target.write(data)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        message = f"Cannot write the DICOM file to {request.body!r}: {exc}"
        raise OrthancError(ErrorCode.CANNOT_WRITE_FILE, message) from exc
    return RestResponse(200, b"{}", "application/json")
