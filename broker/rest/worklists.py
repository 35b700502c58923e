"""The REST API of the worklists, with the routes and answers of Orthanc's worklists plugin (1.12.10),
served when ``Worklists.Enable`` is true:

- ``GET /worklists``: ``[{"ID", "Tags"}]``, every worklist of the folder;
- ``POST /worklists/create`` with ``{"Tags": {tag: value}, "Force": false}``: a new worklist, ``{"ID",
  "Path"}``;
- ``GET /worklists/{id}``: ``{"ID", "Tags"}``; ``PUT /worklists/{id}``: create or replace it, as
  ``create`` but forced unless ``"Force": false``; ``DELETE /worklists/{id}``: ``{}``.

``Tags`` is in Orthanc's "human" JSON (by name), or ``?format=Short`` (by tag), ``Full``, ``Simplify``.
The files are ``broker.core.worklists``'s: an ID is the name of a ``.wl`` file without its extension.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from broker.config.worklists import WorklistsSettings
from broker.core.dicom_json import Charset, JsonFormat, dataset_to_json
from broker.core.dicom_parse import DicomFormatError, parse_dicom
from broker.core.worklists import WorklistFolder, check_id, worklist_file
from broker.errors import ErrorCode, OrthancError
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest
from broker.services import Services

routes = RouteTable()

#: Orthanc's ``StringToDicomToJsonFormat``.
_FORMATS = {"Full": JsonFormat.FULL, "Short": JsonFormat.SHORT, "Simplify": JsonFormat.HUMAN}


def _settings(services: Services) -> tuple[WorklistsSettings, WorklistFolder]:
    settings = services.config.worklists
    assert settings.database is not None  # the routes are served only when the worklists are enabled
    return settings, WorklistFolder(settings.database)


def _format(request: RestRequest) -> JsonFormat:
    name = request.query.get("format")
    if name is None:
        return JsonFormat.HUMAN
    if name not in _FORMATS:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown format {name!r}: Full, Short or Simplify")
    return _FORMATS[name]


def _described(services: Services, worklist_id: str, data: bytes, fmt: JsonFormat) -> dict[str, Any]:
    try:
        parsed = parse_dicom(data)
    except DicomFormatError as exc:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"The worklist {worklist_id} is not DICOM: {exc}") from None
    tags = dataset_to_json(parsed.elements, fmt, Charset.of(parsed.elements, services.store.default_encoding))
    return {"ID": worklist_id, "Tags": tags}


def _save(request: RestRequest, services: Services, worklist_id: str, *, force: bool) -> dict[str, str]:
    settings, folder = _settings(services)
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "A JSON payload was expected") from None
    folder.write(worklist_id, worklist_file(body, force=force, study_uid_if_missing=settings.study_uid_if_missing))
    return {"ID": worklist_id, "Path": f"/worklists/{worklist_id}"}


@routes.get("/worklists")
def list_worklists(request: RestRequest, services: Services) -> Any:
    fmt = _format(request)
    _, folder = _settings(services)
    described = []
    for worklist_id in folder.ids():
        try:
            described.append(_described(services, worklist_id, folder.read(worklist_id), fmt))
        except OrthancError as exc:
            if exc.code is not ErrorCode.UNKNOWN_RESOURCE:  # one removed since the listing is left out
                raise
    return described


@routes.post("/worklists/create")
def create_worklist(request: RestRequest, services: Services) -> Any:
    return _save(request, services, str(uuid.uuid4()), force=False)


@routes.get("/worklists/{id}")
def get_worklist(request: RestRequest, services: Services) -> Any:
    fmt = _format(request)
    _, folder = _settings(services)
    worklist_id = request.params["id"]
    return _described(services, worklist_id, folder.read(worklist_id), fmt)


@routes.put("/worklists/{id}")
def put_worklist(request: RestRequest, services: Services) -> Any:
    return _save(request, services, check_id(request.params["id"]), force=True)


@routes.delete("/worklists/{id}")
def delete_worklist(request: RestRequest, services: Services) -> Any:
    _settings(services)[1].delete(request.params["id"])
    return {}
