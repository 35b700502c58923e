"""Orthanc's older C-FIND routes, deprecated since Orthanc 0.9 for ``/modalities/{name}/query`` but
still served by 1.10.1: ``POST /modalities/{name}/find-patient|find-study|find-series|find-instance``
and the hierarchical ``POST /modalities/{name}/find``. They answer at once, without keeping a query.

The body is an object of tags (names or ``gggg,eeee``) to values (a number or a Boolean is read as
its text, as jsoncpp's ``asString``), merged into a template: the main tags of the level, empty, with
the identifiers of the levels above (Orthanc's ``SetupFind*Template``). The query sent keeps the main
tags of the level and a few identifiers (``FindStudy`` & co.), normalized; ``OutgoingFindRequestFilter``
is not run. A body that is not an object, or, below the patient level, a query that names neither a
``PatientID`` nor an ``AccessionNumber`` of more than 2 characters (and no ``StudyInstanceUID``, or no
``SeriesInstanceUID``, of more than 2), answers 400 with no body, as Orthanc (which answers nothing).
The answers are listed by tag name, without their null, binary and private values.

``POST /modalities/{name}/find-worklist``: a C-FIND on the worklist model with the query of the body
(``{"Query": {tag: value}, "Full"|"Short"|"Simplify", "Timeout"}``, or the query itself, as before
Orthanc 1.9.5), sequences as lists of objects, in the ``DefaultEncoding`` unless it names its
``SpecificCharacterSet``. Each answer is shown whole, sequences included (by tag name unless asked),
without its private and binary values.
"""
from __future__ import annotations

from functools import partial
from typing import Any

from broker.core.dicom_json import JsonFormat, map_to_json
from broker.core.find import MODALITIES_IN_STUDY
from broker.core.levels import Level
from broker.core.maintags import MAIN_DICOM_TAGS
from broker.core.tags import (
    ACCESSION_NUMBER,
    CARDIAC_NUMBER_OF_IMAGES,
    IMAGES_IN_ACQUISITION,
    NUMBER_OF_SLICES,
    NUMBER_OF_TEMPORAL_POSITIONS,
    NUMBER_OF_TIME_SLICES,
    PATIENT_ID,
    SERIES_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    is_private,
    parse_tag,
)
from broker.core.worklist_query import dataset_from_json, worklist_json
from broker.dicom.find_scu import Answer
from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.json_fields import read_unsigned
from broker.rest.instances import body_format
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest
from broker.services import Services

routes = RouteTable()

#: The identifiers of the levels above that a level's template adds (empty).
_ADDED = {Level.PATIENT: (), Level.STUDY: (ACCESSION_NUMBER, PATIENT_ID),
          Level.SERIES: (ACCESSION_NUMBER, PATIENT_ID, STUDY_INSTANCE_UID),
          Level.INSTANCE: (ACCESSION_NUMBER, PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID)}
#: The main tags a template leaves out, as not in the module of the level.
_REMOVED = {
    # InstitutionName, RequestingPhysician, RequestedProcedureDescription
    Level.STUDY: frozenset({0x00080080, 0x00321032, 0x00321060}),
    # Manufacturer, StationName, SequenceName, ImageOrientationPatient, SeriesType,
    # AcquisitionDeviceProcessingDescription, ContrastBolusAgent and the counts of images
    Level.SERIES: frozenset({0x00080070, 0x00081010, 0x00180024, 0x00200037, 0x00541000, 0x00181400, 0x00180010,
                             CARDIAC_NUMBER_OF_IMAGES, IMAGES_IN_ACQUISITION, NUMBER_OF_SLICES,
                             NUMBER_OF_TEMPORAL_POSITIONS, NUMBER_OF_TIME_SLICES}),
}
#: The tags of the query sent beside the main tags of the level (Orthanc's ``FindStudy`` & co.).
_COPIED = {Level.PATIENT: (), Level.STUDY: (PATIENT_ID, ACCESSION_NUMBER, MODALITIES_IN_STUDY),
           Level.SERIES: (PATIENT_ID, ACCESSION_NUMBER, STUDY_INSTANCE_UID),
           Level.INSTANCE: (PATIENT_ID, ACCESSION_NUMBER, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID)}
#: The UIDs a query of ``find-series`` and ``find-instance`` must name (more than 2 characters).
_REQUIRED = {Level.PATIENT: (), Level.STUDY: (), Level.SERIES: (STUDY_INSTANCE_UID,),
             Level.INSTANCE: (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID)}


def _text(value: Any) -> str:
    """jsoncpp's ``asString`` of a JSON value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return str(value)
    raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The values of the query must be strings")


def _merged(body: dict[str, Any], level: Level) -> dict[int, str]:
    """The template of ``level`` with the query of the body (Orthanc's ``MergeQueryAndTemplate``)."""
    fields = {tag: "" for tag, _ in MAIN_DICOM_TAGS[level] if tag not in _REMOVED.get(level, ())}
    fields.update((tag, "") for tag in _ADDED[level])
    fields.update((parse_tag(name), _text(value)) for name, value in body.items())
    return fields


def _body(request: RestRequest) -> dict[str, Any]:
    body = request.json_object()
    if body is None:
        raise BareHttpStatus(400, "The body must be a JSON object")
    return body


def _find(services: Services, name: str, level: Level, fields: dict[int, str]) -> list[Answer]:
    main = {tag for tag, _ in MAIN_DICOM_TAGS[level]}
    query = {tag: value for tag, value in fields.items() if tag in main or tag in _COPIED[level]}
    return services.find_scu.find(services.network.modality(name), level, query, normalize=True,
                                  encoding=services.store.default_encoding)


def _shown(answer: Answer) -> dict[str, Any]:
    return map_to_json({tag: value for tag, value in answer.items() if value is not None and not is_private(tag)},
                       JsonFormat.HUMAN)


def _find_level(request: RestRequest, services: Services, level: Level) -> Any:
    fields = _merged(_body(request), level)
    if level is not Level.PATIENT:
        def named(tag: int) -> bool:
            return len(fields[tag].encode("utf-8")) > 2
        if not (named(ACCESSION_NUMBER) or named(PATIENT_ID)) or not all(named(tag) for tag in _REQUIRED[level]):
            raise BareHttpStatus(400, "The query names no patient or accession number, or not its parents")
    return [_shown(answer) for answer in _find(services, request.params["name"], level, fields)]


for _level, _route in ((Level.PATIENT, "find-patient"), (Level.STUDY, "find-study"), (Level.SERIES, "find-series"),
                       (Level.INSTANCE, "find-instance")):
    routes.add("POST", f"/modalities/{{name}}/{_route}", partial(_find_level, level=_level))


@routes.post("/modalities/{name}/find")
def find_hierarchy(request: RestRequest, services: Services) -> Any:
    """The patients, each with its ``Studies``, each with its ``Series``."""
    body, name = _body(request), request.params["name"]
    patients = []
    for patient in _find(services, name, Level.PATIENT, _merged(body, Level.PATIENT)):
        studies = []
        for study in _below(services, name, body, patient, Level.STUDY):
            series = _below(services, name, body, study, Level.SERIES)
            studies.append({**_shown(study), "Series": [_shown(one) for one in series]})
        patients.append({**_shown(patient), "Studies": studies})
    return patients


def _below(services: Services, name: str, body: dict[str, Any], answer: Answer, level: Level) -> list[Answer]:
    """The answers of ``/find`` at ``level`` under an answer of the level above: the query of the body,
    with the ``PatientID`` (and ``StudyInstanceUID``) of that answer."""
    tags = (PATIENT_ID,) if level is Level.STUDY else (PATIENT_ID, STUDY_INSTANCE_UID)
    fields = _merged(body, level) | {tag: value for tag in tags if (value := answer.get(tag)) is not None}
    return _find(services, name, level, fields)


@routes.post("/modalities/{name}/find-worklist")
def find_worklist(request: RestRequest, services: Services) -> Any:
    body = request.json_object()
    if body is None:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Must provide a JSON object")
    encoding = services.store.default_encoding
    fields = body["Query"] if "Query" in body else body
    fmt = body_format(body, JsonFormat.HUMAN) if "Query" in body else JsonFormat.HUMAN
    if isinstance(fields, dict) and encoding.term:  # Orthanc's CreateFromJson writes the encoding it uses
        fields = {"SpecificCharacterSet": encoding.term, **fields}
    query = dataset_from_json(fields, encoding)
    modality = services.network.modality(request.params["name"])
    timeout = read_unsigned(body, "Timeout") if "Timeout" in body else None
    return [worklist_json(answer, fmt, encoding) for answer in
            services.find_scu.find_worklist(modality, query, timeout=timeout or None)]
