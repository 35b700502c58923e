"""The C-FIND SCU over REST, with Orthanc 1.10's routes and answers.

``POST /modalities/{name}/query`` with ``{"Level", "Query": {tag: value}, "Normalize" (true),
"LocalAet", "Timeout"}`` runs the C-FIND at once (``broker.dicom.find_scu``), after
``OutgoingFindRequestFilter(query, remoteAet)`` may have replaced the query, and keeps it
(``broker.dicom.queries``): the answer is ``{"ID", "Path"}``. Then:

- ``GET /queries``: the ids kept; ``GET /queries/{id}``: what can follow;
  ``DELETE /queries/{id}``;
- ``GET /queries/{id}/answers`` (``?expand``: each answer's content), ``answers/{n}`` (what can
  follow), ``answers/{n}/content``, ``query`` (the query as asked): in full, or with ``?simplify`` /
  ``?short``; ``level`` and ``modality`` (the symbolic name) as text;
- ``POST /queries/{id}/answers/{n}/query-studies|query-series|query-instances`` with ``{"Query",
  "Timeout"}``: a new query at that level, on the same modality, constrained by the identifiers of the
  answer, as Orthanc's ``QueryAnswerChildren``.

``/queries/{id}/retrieve`` and ``answers/{n}/retrieve`` (a C-MOVE of the answers) are in
``broker.rest.retrievals``.
"""
from __future__ import annotations

from typing import Any

from broker.config.network import Modality
from broker.core.dicom_json import map_to_json
from broker.core.levels import Level
from broker.core.tags import parse_tag
from broker.dicom.queries import StoredQuery
from broker.dicom.retrieve_scu import RETRIEVE_KEYS
from broker.errors import ErrorCode, OrthancError
from broker.json_fields import read_unsigned
from broker.rest.instances import json_format
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.scripting.filters import filtered_outgoing_query
from broker.services import Services

routes = RouteTable(coordinator=True)



def _object_body(request: RestRequest) -> dict[str, Any]:
    body = request.json_object()
    if body is None:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Must provide a JSON object")
    return body


def _map_of_tags(body: dict[str, Any], name: str) -> dict[int, str]:
    """Orthanc's ``SerializationToolbox::ReadMapOfTags``: an object of tags (names or ``gggg,eeee``)
    to strings."""
    error = OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Associative array of DICOM tags to strings expected in "
                                                    f"field: {name}")
    source = body[name]
    if not isinstance(source, dict):
        raise error
    query = {}
    for key, value in source.items():
        try:
            tag = parse_tag(key)
        except OrthancError:
            raise error from None
        if not isinstance(value, str):
            raise error
        query[tag] = value
    return query


def _timeout(body: dict[str, Any]) -> float | None:
    """``Timeout`` in seconds; absent or 0: the modality's, else ``DicomScuTimeout``."""
    return (read_unsigned(body, "Timeout") or None) if "Timeout" in body else None


def _run(services: Services, name: str, modality: Modality, level: Level, query: dict[int, str], *,
         normalize: bool, local_aet: str | None, timeout: float | None) -> dict[str, str]:
    """Run a query (Orthanc's ``QueryRetrieveHandler::Run``) and keep it; its ``{"ID", "Path"}``."""
    replaced = filtered_outgoing_query(services.scripts, query, modality.aet)
    answers = services.find_scu.find(modality, level, query if replaced is None else replaced,
                                     normalize=normalize, encoding=services.store.default_encoding,
                                     local_aet=local_aet, timeout=timeout)
    identifier = services.queries.add(StoredQuery(name, modality, level, query, normalize, local_aet, timeout,
                                                  answers))
    return {"ID": identifier, "Path": f"/queries/{identifier}"}


@routes.post("/modalities/{name}/query")
def query_modality(request: RestRequest, services: Services) -> Any:
    body = _object_body(request)
    if not isinstance(body.get("Level"), str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The JSON body must contain field Level")
    if "Normalize" in body and not isinstance(body["Normalize"], bool):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The field Normalize must contain a Boolean")
    if "Query" in body and not isinstance(body["Query"], dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The field Query must contain a JSON object")
    if "LocalAet" in body and not isinstance(body["LocalAet"], str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The field LocalAet must contain a string")
    name = request.params["name"]
    modality = services.network.modality(name)
    level = Level.parse(body["Level"])
    query = _map_of_tags(body, "Query") if "Query" in body else {}
    return _run(services, name, modality, level, query, normalize=body.get("Normalize", True),
                local_aet=body.get("LocalAet"), timeout=_timeout(body))


@routes.get("/queries")
def list_queries(request: RestRequest, services: Services) -> Any:
    return services.queries.ids()


@routes.get("/queries/{id}")
def list_query_operations(request: RestRequest, services: Services) -> Any:
    services.queries.get(request.params["id"])
    return services.rest.children(request.path)


@routes.delete("/queries/{id}")
def delete_query(request: RestRequest, services: Services) -> RestResponse:
    services.queries.remove(request.params["id"])
    return RestResponse.text("")


@routes.get("/queries/{id}/answers")
def list_answers(request: RestRequest, services: Services) -> Any:
    query = services.queries.get(request.params["id"])
    if "expand" in request.query:
        fmt = json_format(request)
        return [map_to_json(answer, fmt) for answer in query.answers]
    return [str(index) for index in range(len(query.answers))]


@routes.get("/queries/{id}/answers/{index}")
def list_answer_operations(request: RestRequest, services: Services) -> Any:
    query = services.queries.get(request.params["id"])
    query.answer(request.params["index"])
    # Orthanc lists "query-study" for a patient answer, a route that does not exist (rest-deviations.md).
    return ["content", "retrieve", *(f"query-{level.plural}" for level in Level if level > query.level)]


@routes.get("/queries/{id}/answers/{index}/content")
def get_answer(request: RestRequest, services: Services) -> Any:
    answer = services.queries.get(request.params["id"]).answer(request.params["index"])
    return map_to_json(answer, json_format(request))


@routes.get("/queries/{id}/query")
def get_query_arguments(request: RestRequest, services: Services) -> Any:
    query: dict[int, str | None] = dict(services.queries.get(request.params["id"]).query)
    return map_to_json(query, json_format(request))


@routes.get("/queries/{id}/level")
def get_query_level(request: RestRequest, services: Services) -> RestResponse:
    return RestResponse.text(services.queries.get(request.params["id"]).level.label)


@routes.get("/queries/{id}/modality")
def get_query_modality(request: RestRequest, services: Services) -> RestResponse:
    return RestResponse.text(services.queries.get(request.params["id"]).modality_name)


def _query_children(request: RestRequest, services: Services, level: Level) -> Any:
    """A query at ``level`` for the resources under one answer (Orthanc's ``QueryAnswerChildren``)."""
    parent = services.queries.get(request.params["id"])
    answer = parent.answer(request.params["index"])
    if level <= parent.level:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
    body = _object_body(request)
    timeout = _timeout(body) if "Timeout" in body else parent.timeout
    query = _map_of_tags(body, "Query") if "Query" in body else {}
    for tag in RETRIEVE_KEYS[parent.level]:  # Orthanc's CopyStringTag, which mimics its C-MOVE
        value = answer.get(tag)
        if value is None:
            raise OrthancError(ErrorCode.INEXISTENT_TAG)
        query[tag] = value
    return _run(services, parent.modality_name, services.network.modality(parent.modality_name), level, query,
                normalize=parent.normalize, local_aet=None, timeout=timeout)


@routes.post("/queries/{id}/answers/{index}/query-studies")
def query_child_studies(request: RestRequest, services: Services) -> Any:
    return _query_children(request, services, Level.STUDY)


@routes.post("/queries/{id}/answers/{index}/query-series")
def query_child_series(request: RestRequest, services: Services) -> Any:
    return _query_children(request, services, Level.SERIES)


@routes.post("/queries/{id}/answers/{index}/query-instances")
def query_child_instances(request: RestRequest, services: Services) -> Any:
    return _query_children(request, services, Level.INSTANCE)
