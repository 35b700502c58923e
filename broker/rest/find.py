"""``POST /tools/find`` and ``POST /tools/lookup`` (``broker.core.find``), with Orthanc 1.10's errors.

``/tools/find``: ``{"Level", "Query": {tag: pattern}, "CaseSensitive" (false), "Expand" (false),
"Short", "Full", "Since", "Limit" (0: no limit)}`` → ids, or the resources' JSON with ``Expand`` (main
tags keyed by tag with ``Short``, in full with ``Full``; the URL's ``?short`` is not read here).
``/tools/lookup``: the body is an identifier → ``[{"ID", "Path", "Type"}]``.
``/tools/bulk-content`` (Orthanc 1.9.4): ``{"Resources": [ids], "Level", "Metadata" (true), "Short",
"Full"}`` → the JSON of each resource, as ``GET /{level}/{id}`` answers it, with its ``Metadata``
unless ``false``; in the order given (twice if given twice), unknown ids skipped; with ``Level``, each
resource is first brought to that level (its ancestor there, or all its descendants there), and the
resources are answered once each, sorted by id, as Orthanc's set of them.
"""
from __future__ import annotations

from typing import Any

from broker.core.dicom_json import JsonFormat
from broker.core.find import FindQuery, constraint
from broker.core.levels import Level
from broker.errors import ErrorCode, OrthancError
from broker.json_fields import optional_boolean, read_string
from broker.rest.resources import resource_json
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest
from broker.services import Services

routes = RouteTable()


def _bad(message: str) -> OrthancError:
    return OrthancError(ErrorCode.BAD_REQUEST, message)


def _level(value: Any) -> Level:
    if not isinstance(value, str):
        raise _bad('Field "Level" is missing, or should be a string')
    try:
        return Level.from_label(value.capitalize())
    except KeyError:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown resource level: {value}") from None


def _count(body: dict[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f'Field "{name}" should be an integer')
    if value < 0:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f'Field "{name}" should be a positive integer')
    return value


def _boolean(body: dict[str, Any], name: str, *, strict: bool) -> bool:
    """Orthanc checks ``CaseSensitive`` (400) but reads ``Expand`` with ``asBool()``, which throws (500)."""
    value = body.get(name, False)
    if isinstance(value, bool):
        return value
    if strict:
        raise _bad(f'Field "{name}" should be a Boolean')
    raise OrthancError(ErrorCode.INTERNAL_ERROR, f'Field "{name}" should be a Boolean')


def _object(request: RestRequest) -> dict[str, Any]:
    """The body as a JSON object (400 ``BadRequest`` otherwise)."""
    body = request.json_object()
    if body is None:
        raise _bad("The body must contain a JSON object")
    return body


def parse_find(request: RestRequest) -> tuple[FindQuery, bool, JsonFormat]:
    body = _object(request)
    level = _level(body.get("Level"))
    query = body.get("Query")
    if query is None:
        raise _bad('Field "Query" is missing, or should be a JSON object')
    if not isinstance(query, dict):
        raise OrthancError(ErrorCode.INTERNAL_ERROR, 'Field "Query" should be a JSON object')
    case_sensitive = _boolean(body, "CaseSensitive", strict=True)
    constraints = []
    for name, value in query.items():
        if not isinstance(value, str):
            raise _bad(f'Tag "{name}" should be associated with a string')
        constraints.append(constraint(name, value, case_sensitive))
    find = FindQuery(level, tuple(constraints), since=_count(body, "Since"), limit=_count(body, "Limit"))
    return find, _boolean(body, "Expand", strict=False), body_format(body)


def body_format(body: dict[str, Any]) -> JsonFormat:
    """``Short`` (tags keyed by ``gggg,eeee``) or ``Full`` (with their names and types) of a body, else
    by name."""
    return (JsonFormat.SHORT if _boolean(body, "Short", strict=False)
            else JsonFormat.FULL if _boolean(body, "Full", strict=False) else JsonFormat.HUMAN)


@routes.post("/tools/find")
def find(request: RestRequest, services: Services) -> Any:
    query, expand, fmt = parse_find(request)
    ids = services.store.find(query)
    if not expand:
        return ids
    return [resource_json(view, fmt) for view in services.store.views(query.level, ids)]


@routes.post("/tools/lookup")
def lookup(request: RestRequest, services: Services) -> Any:
    found = services.store.lookup(request.body.decode("utf-8", "replace"))
    return [{"ID": public_id, "Path": f"/{level.plural}/{public_id}", "Type": level.label}
            for level, public_id in found]


@routes.post("/tools/bulk-content")
def bulk_content(request: RestRequest, services: Services) -> Any:
    body = _object(request)
    resources = body.get("Resources")
    if not isinstance(resources, list) or not all(isinstance(item, str) for item in resources):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "List of strings expected in field: Resources")
    fmt = body_format(body)
    with_metadata = optional_boolean(body, "Metadata", True)
    target: Level | None = None
    if "Level" in body:
        try:
            target = Level.from_name(read_string(body, "Level"))
        except KeyError:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE) from None
    store = services.store
    wanted: list[tuple[Level, str]] = []
    for public_id in resources:
        level = next((level for level in Level if store.exists(level, public_id)), None)
        if level is None:
            continue
        if target is None or target is level:
            wanted.append((level, public_id))
        else:
            wanted.extend((target, found) for found in store.related(level, public_id, target))
    if target is not None:  # Orthanc gathers them in a set: once each, sorted by id
        wanted = sorted(set(wanted), key=lambda item: item[1])
    answer = []
    for level, public_id in wanted:
        view = store.view(level, public_id)
        if view is None:  # deleted meanwhile
            continue
        item = resource_json(view, fmt)
        if with_metadata:
            item["Metadata"] = store.metadata(level, public_id)
        answer.append(item)
    return answer
