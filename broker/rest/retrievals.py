"""The C-MOVE and C-GET SCU over REST, as jobs (``broker.jobs.retrievals``), with Orthanc's routes and
answers:

- ``POST /modalities/{name}/move`` with ``{"Level", "Resources": [{tag: value}], "TargetAet" (DicomAet),
  "LocalAet" (DicomAet), "Timeout"}``: each resource, with the ``QueryRetrieveLevel`` of ``Level``, is
  one C-MOVE to the target. Synchronous (the default), it is no job, as in Orthanc 1.10: the C-MOVEs run
  in the request, which answers ``{}``, or the first error as it is (422 when the peer answered 0xC000);
  asynchronous (``"Asynchronous": true``, which Orthanc honours since 1.11.1), it is a job;
- ``POST /modalities/{name}/get`` (Orthanc 1.12.6), the same without ``TargetAet``, always a job: the
  instances come back to this server;
- ``POST /queries/{id}/retrieve`` (every answer) and ``/queries/{id}/answers/{n}/retrieve`` (one): a
  C-MOVE of the answers, to the modality and with the calling AET of the query. The body is the target
  AET as text, or ``{"TargetAet", "Timeout" (the query's), "Full"|"Short"|"Simplify"}``, or empty
  (``DicomAet``).

The jobs take ``Synchronous``/``Asynchronous`` (synchronous by default: the answer is the job's
``Content``, or the error it failed with), ``Priority`` and ``Permissive``, as every job-submitting route
(``broker.rest.job_options``).
"""
from __future__ import annotations

from typing import Any

from broker.core.dicom_json import JsonFormat
from broker.core.levels import Level
from broker.core.tags import ACCESSION_NUMBER, QUERY_RETRIEVE_LEVEL, parse_tag
from broker.dicom.find_scu import LEVEL_NAMES
from broker.dicom.queries import StoredQuery
from broker.dicom.retrieve_scu import RETRIEVE_KEYS
from broker.errors import ErrorCode, OrthancError
from broker.jobs.retrievals import DicomGetScuJob, DicomMoveScuJob, RetrieveJob
from broker.json_fields import integer_field, read_unsigned, string_field
from broker.rest.instances import body_format
from broker.rest.job_options import job_mode
from broker.rest.jobs import submit
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest
from broker.services import Services

routes = RouteTable(coordinator=True)

#: What Orthanc keeps of an answer to retrieve it (``DicomMoveScuJob::AddFindAnswer``).
_ANSWER_KEYS = (QUERY_RETRIEVE_LEVEL, ACCESSION_NUMBER,
                *dict.fromkeys(tag for keys in RETRIEVE_KEYS.values() for tag in keys))


def _resources(body: list[Any], level: Level) -> list[dict[int, str | None]]:
    """The ``Resources`` of a move or get, each with the ``QueryRetrieveLevel`` of ``level``
    (Orthanc's ``FromDcmtkBridge::FromJson``)."""
    commands: list[dict[int, str | None]] = []
    for resource in body:
        if not isinstance(resource, dict):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Expecting an object in field 'Resources elements'")
        command: dict[int, str | None] = {}
        for key, value in resource.items():
            if not isinstance(value, str):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Expecting a string in field '{key}'")
            command[parse_tag(key)] = value
        command[QUERY_RETRIEVE_LEVEL] = LEVEL_NAMES[level]
        commands.append(command)
    return commands


def _modality_request(request: RestRequest, services: Services, *, move: bool) -> Any:
    """``/modalities/{name}/move`` and ``/get``: Orthanc's ``DicomMove``, its checks in its order."""
    body = request.json_object()
    if body is None or not isinstance(body.get("Resources"), list) or not isinstance(body.get("Level"), str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT,
                           "Must provide a JSON body containing fields Resources and Level")
    level = Level.parse(body["Level"])
    default_aet = services.config.dicom_aet
    local_aet = string_field(body, "LocalAet", default_aet)
    target_aet = string_field(body, "TargetAet", default_aet) if move else ""
    modality = services.network.modality(request.params["name"])
    timeout = read_unsigned(body, "Timeout") if "Timeout" in body else None
    commands = _resources(body["Resources"], level)
    mode = job_mode(body, commands=True)
    if move and mode.synchronous:  # Orthanc 1.10: no job, and its errors as they are (422: not found)
        for command in commands:
            services.retrieve_scu.move(modality, target_aet, command, encoding=services.store.default_encoding,
                                       local_aet=local_aet, timeout=timeout)
        return {}
    options: dict[str, Any] = {"timeout": timeout, "permissive": mode.permissive}
    job: RetrieveJob = DicomMoveScuJob(modality, local_aet, target_aet, commands, **options) if move \
        else DicomGetScuJob(modality, local_aet, commands, **options)
    return submit(services, job, mode)


@routes.post("/modalities/{name}/move")
def move_from_modality(request: RestRequest, services: Services) -> Any:
    return _modality_request(request, services, move=True)


@routes.post("/modalities/{name}/get")
def get_from_modality(request: RestRequest, services: Services) -> Any:
    return _modality_request(request, services, move=False)


def _retrieve_body(request: RestRequest, default_aet: str) -> tuple[dict[str, Any], str]:
    """The body of ``/queries/{id}/retrieve``: a JSON object, else the target AET as text (Orthanc's
    ``SubmitRetrieveJob``); with the target AET."""
    body = request.json_object()
    if body is not None:
        return body, string_field(body, "TargetAet", default_aet)
    text = request.body.decode("utf-8", "replace")
    return {}, text if text else default_aet


def _retrieve_query(request: RestRequest, services: Services, query: StoredQuery, answers: list[int]) -> Any:
    body, target_aet = _retrieve_body(request, services.config.dicom_aet)
    timeout = integer_field(body, "Timeout", -1)
    commands = [{tag: query.answers[index][tag] for tag in _ANSWER_KEYS if tag in query.answers[index]}
                for index in answers]
    mode = job_mode(body, commands=True)
    job = DicomMoveScuJob(query.modality, query.local_aet or services.config.dicom_aet, target_aet, commands,
                          timeout=timeout if timeout >= 0 else query.timeout,
                          query_format=body_format(body, JsonFormat.SHORT), permissive=mode.permissive)
    return submit(services, job, mode)


@routes.post("/queries/{id}/retrieve")
def retrieve_all_answers(request: RestRequest, services: Services) -> Any:
    query = services.queries.get(request.params["id"])
    return _retrieve_query(request, services, query, list(range(len(query.answers))))


@routes.post("/queries/{id}/answers/{index}/retrieve")
def retrieve_one_answer(request: RestRequest, services: Services) -> Any:
    query = services.queries.get(request.params["id"])
    query.answer(request.params["index"])
    return _retrieve_query(request, services, query, [int(request.params["index"])])
