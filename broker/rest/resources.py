"""REST endpoints over the resources: ``/patients``, ``/studies``, ``/series``, ``/instances``.

Answers follow Orthanc 1.10 (checked against a real Orthanc in ``tests/broker/rest``). Orthanc's
quirks kept on purpose (``BareHttpStatus``, no error JSON): ``GET``/``DELETE /{level}/{id}`` of an
unknown resource and ``GET`` of an unset metadata answer an empty 404; changing system metadata
answers an empty 403.

Handlers need ``services.store`` (a ``broker.core.store.Store``).
"""
from __future__ import annotations

import zipfile
from collections.abc import Callable
from typing import Any

from broker.core import maintags
from broker.core.bounds import InputTooLarge
from broker.core.dicom_file import is_dicomdir
from broker.core.dicom_json import JsonFormat
from broker.core.levels import Level
from broker.core.metadata import MetadataType, is_user_metadata
from broker.core.store import ResourceView, Store, parse_integer, series_status
from broker.core.zip_reader import read_entries
from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse, boolean_body
from broker.services import Services

routes = RouteTable()


def _flag(request: RestRequest, name: str) -> bool:
    """A flag such as ``?expand``: Orthanc 1.10 only checks that it is present (``expand=false`` expands)."""
    return name in request.query


# The JSON of one resource (Orthanc's "expanded" form).
def tags_format(request: RestRequest) -> JsonFormat:
    """How main tags are answered: ``?short``, ``?full``, else by name (``?simplify``, the default)."""
    if _flag(request, "short"):
        return JsonFormat.SHORT
    return JsonFormat.FULL if _flag(request, "full") else JsonFormat.HUMAN


def _main_tags(tags: dict[str, str], fmt: JsonFormat) -> dict[str, Any]:
    return dict(tags) if fmt is JsonFormat.HUMAN else maintags.formatted(tags, short=fmt is JsonFormat.SHORT)


def resource_json(view: ResourceView, fmt: JsonFormat = JsonFormat.HUMAN) -> dict[str, Any]:
    level = view.level
    result: dict[str, Any] = {"ID": view.public_id, "Type": level.label,
                              "MainDicomTags": _main_tags(view.main_tags, fmt)}
    for number, key in ((MetadataType.ANONYMIZED_FROM, "AnonymizedFrom"), (MetadataType.MODIFIED_FROM, "ModifiedFrom")):
        if number in view.metadata:
            result[key] = view.metadata[number]
    if level is Level.INSTANCE:
        result["ParentSeries"] = view.parent
        result["FileSize"] = view.attachment.size if view.attachment else 0
        result["FileUuid"] = view.attachment.uuid if view.attachment else ""
        result["IndexInSeries"] = parse_integer(view.metadata.get(MetadataType.INDEX_IN_SERIES))
        return result
    result[level.children_key] = view.children
    result["IsStable"] = view.is_stable
    if MetadataType.LAST_UPDATE in view.metadata:
        result["LastUpdate"] = view.metadata[MetadataType.LAST_UPDATE]
    if level is Level.STUDY:
        result["ParentPatient"] = view.parent
        result["PatientMainDicomTags"] = _main_tags(view.patient_tags or {}, fmt)
    elif level is Level.SERIES:
        result["ParentStudy"] = view.parent
        expected = parse_integer(view.metadata.get(MetadataType.EXPECTED_NUMBER_OF_INSTANCES))
        result["ExpectedNumberOfInstances"] = expected
        result["Status"] = series_status(expected, view.children_index_in_series)
    return result


def _store(services: Services) -> Store:
    return services.store


# Lists.
def _list(level: Level) -> Callable[[RestRequest, Any], Any]:
    def list_resources(request: RestRequest, services: Services) -> Any:
        store = _store(services)
        since, limit = _paging(request)
        if _flag(request, "expand"):
            return [resource_json(view, tags_format(request)) for view in store.views(level, since=since, limit=limit)]
        return store.list_ids(level, since, limit)
    return list_resources


def _paging(request: RestRequest) -> tuple[int, int | None]:
    has_since, has_limit = "since" in request.query, "limit" in request.query
    if not has_since and not has_limit:
        return 0, None
    for name, present in (("since", has_since), ("limit", has_limit)):
        if not present:
            raise OrthancError(ErrorCode.BAD_REQUEST,
                               f'Missing "{name}" argument for GET request against: {request.path}')
    since, limit = parse_integer(request.query["since"]), parse_integer(request.query["limit"])
    if since is None or limit is None or since < 0 or limit < 0:
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, '"since" and "limit" must be non-negative integers')
    return since, limit


# One resource.
def _get(level: Level) -> Callable[[RestRequest, Any], Any]:
    def get_resource(request: RestRequest, services: Services) -> Any:
        view = _store(services).view(level, request.params["id"])
        if view is None:
            raise BareHttpStatus(404, f"No {level.label.lower()} with id {request.params['id']}")
        return resource_json(view, tags_format(request))
    return get_resource


def _delete(level: Level) -> Callable[[RestRequest, Any], Any]:
    def delete_resource(request: RestRequest, services: Services) -> Any:
        result = _store(services).delete(level, request.params["id"])
        if result is None:
            raise BareHttpStatus(404, f"No {level.label.lower()} with id {request.params['id']}")
        return result.to_json()
    return delete_resource


def _related(level: Level, target: Level) -> Callable[[RestRequest, Any], Any]:
    def related_resources(request: RestRequest, services: Services) -> Any:
        store = _store(services)
        ids = store.related(level, request.params["id"], target)
        views = [resource_json(view, tags_format(request)) for view in store.views(target, ids)]
        if target < level:
            if not views:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"The parent of {request.params['id']} vanished")
            return views[0]
        return views
    return related_resources


# Metadata.
def _metadata_list(level: Level) -> Callable[[RestRequest, Any], Any]:
    def list_metadata(request: RestRequest, services: Services) -> Any:
        metadata = _store(services).metadata(level, request.params["id"])
        return metadata if _flag(request, "expand") else list(metadata)
    return list_metadata


def _metadata_get(level: Level) -> Callable[[RestRequest, Any], Any]:
    def get_metadata(request: RestRequest, services: Services) -> Any:
        value = _store(services).get_metadata(level, request.params["id"], request.params["name"])
        if value is None:
            raise BareHttpStatus(404, f"Metadata {request.params['name']!r} is not set")
        return RestResponse.text(value)
    return get_metadata


def _metadata_put(level: Level) -> Callable[[RestRequest, Any], Any]:
    def put_metadata(request: RestRequest, services: Services) -> Any:
        store = _store(services)
        if not is_user_metadata(store.metadata_names.number(request.params["name"])):
            raise BareHttpStatus(403, "Only user metadata (1024..65535) can be set")
        store.set_metadata(level, request.params["id"], request.params["name"],
                           request.body.decode("utf-8", "replace"))
        return RestResponse.text("")
    return put_metadata


def _metadata_delete(level: Level) -> Callable[[RestRequest, Any], Any]:
    def delete_metadata(request: RestRequest, services: Services) -> Any:
        store = _store(services)
        name, public_id = request.params["name"], request.params["id"]
        if not is_user_metadata(store.metadata_names.number(name)):
            raise BareHttpStatus(403, "Only user metadata (1024..65535) can be deleted")
        if not store.delete_metadata(level, public_id, name):
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Metadata {name!r} is not set on {public_id}")
        return RestResponse.text("")
    return delete_metadata


for _level in Level:
    _base = f"/{_level.plural}"
    routes.add("GET", _base, _list(_level))
    routes.add("GET", _base + "/{id}", _get(_level))
    routes.add("DELETE", _base + "/{id}", _delete(_level))
    routes.add("GET", _base + "/{id}/metadata", _metadata_list(_level))
    routes.add("GET", _base + "/{id}/metadata/{name}", _metadata_get(_level))
    routes.add("PUT", _base + "/{id}/metadata/{name}", _metadata_put(_level))
    routes.add("DELETE", _base + "/{id}/metadata/{name}", _metadata_delete(_level))
    for _target in Level:
        if _target > _level:
            routes.add("GET", f"{_base}/{{id}}/{_target.plural}", _related(_level, _target))
        elif _target < _level:
            routes.add("GET", f"{_base}/{{id}}/{_target.label.lower()}", _related(_level, _target))


# Instances.
@routes.post("/instances")
def post_instances(request: RestRequest, services: Services) -> Any:
    """Store a DICOM file, or every DICOM file of a ZIP archive (non-DICOM entries are skipped)."""
    store = _store(services)
    if request.body[:4] == b"PK\x03\x04":
        return _post_zip(store, request)
    return store.store_instance(request.body, request.origin).to_json()


def _post_zip(store: Store, request: RestRequest) -> list[dict[str, str]]:
    """Entries are stored one by one; an archive that would inflate past the bounds is refused (413)
    before the first, an entry that cannot be read ends the upload (400) after the ones before it."""
    answers = []
    try:
        for _, data in read_entries(request.body, store.bounds.inflate):
            if is_dicomdir(data):  # the index of a DICOM media, not an instance (as Orthanc 1.9.7+)
                continue
            try:
                answers.append(store.store_instance(data, request.origin).to_json())
            except OrthancError as exc:
                if exc.code is not ErrorCode.BAD_FILE_FORMAT:
                    raise
    except zipfile.BadZipFile as exc:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Cannot read the ZIP archive: {exc}") from None
    except InputTooLarge as exc:
        raise OrthancError(ErrorCode.BAD_REQUEST, f"The ZIP archive is refused: {exc}", http_status=413) from None
    return answers


# Protection against recycling.
@routes.get("/patients/{id}/protected")
def get_protected(request: RestRequest, services: Services) -> RestResponse:
    return RestResponse.text("1" if _store(services).is_protected(request.params["id"]) else "0")


@routes.put("/patients/{id}/protected")
def put_protected(request: RestRequest, services: Services) -> RestResponse:
    _store(services).set_protected(request.params["id"], boolean_body(request))
    return RestResponse.text("")


def _reconstruct(level: Level) -> Callable[[RestRequest, Any], Any]:
    def reconstruct(request: RestRequest, services: Services) -> Any:
        _store(services).reconstruct(level, request.params["id"])
        return {}
    return reconstruct


for _level in Level:
    routes.add("POST", f"/{_level.plural}/{{id}}/reconstruct", _reconstruct(_level))
