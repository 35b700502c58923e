"""C-FIND over the index, as Orthanc 1.10's ``OrthancFindRequestHandler`` answers it (no network here:
``broker.dicom.find_scp`` decodes the request and encodes the answers).

The request is a flat query, tag → text, plus the sequences it asks for. Its constraints are those of
``/tools/find`` (``broker.core.find``: wildcards, ranges of dates and times, lists of values), with
DICOM's case rule: case-sensitive, but for the person names (``CaseSensitivePN``, false by default).
A wildcard on a tag whose VR does not allow it (a date, a UID) is an error, as in
``/tools/find``. An empty value asks for the tag without constraining it; ``QueryRetrieveLevel``,
``SpecificCharacterSet`` and the group lengths (``gggg,0000``) never constrain.

Each answer holds ``RetrieveAETitle`` and every tag of the query: ``QueryRetrieveLevel`` as asked,
a counter computed from the index (``NumberOfStudyRelatedSeries``, ``ModalitiesInStudy``, ...), or the
resource's value, empty when it has none. The values come from the main tags of the resource and of its
ancestors when every tag asked is a main tag; otherwise all of them come from the first instance of
the resource, as Orthanc reads them from its file (so a main tag of a lower level, empty in the first
case, is the instance's in the second). Sequences are copied from that instance.

``LimitFindResults`` (``LimitFindInstances`` at the instance level) caps the answers; when more
resources match, the answers are incomplete, which the SCP reports as Orthanc does.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from broker.core.dicom_json import JsonFormat
from broker.core.dictionary import public_entry
from broker.core.find import MODALITIES_IN_STUDY, Constraint, Finder, FindQuery
from broker.core.index import IndexTransaction, ResourceRow
from broker.core.levels import Level
from broker.core.maintags import MAIN_DICOM_TAGS
from broker.core.metadata import MetadataType
from broker.core.tags import (
    NUMBER_OF_PATIENT_RELATED_INSTANCES,
    NUMBER_OF_PATIENT_RELATED_SERIES,
    NUMBER_OF_PATIENT_RELATED_STUDIES,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    SOP_CLASSES_IN_STUDY,
    SPECIFIC_CHARACTER_SET,
    format_tag,
)
from broker.errors import ErrorCode, OrthancError

#: The tags computed from the index, and the level where each is computed (asked at another level, it
#: is answered as any other tag).
COUNTERS: dict[int, Level] = {
    NUMBER_OF_PATIENT_RELATED_STUDIES: Level.PATIENT,
    NUMBER_OF_PATIENT_RELATED_SERIES: Level.PATIENT,
    NUMBER_OF_PATIENT_RELATED_INSTANCES: Level.PATIENT,
    NUMBER_OF_STUDY_RELATED_SERIES: Level.STUDY,
    NUMBER_OF_STUDY_RELATED_INSTANCES: Level.STUDY,
    MODALITIES_IN_STUDY: Level.STUDY,
    SOP_CLASSES_IN_STUDY: Level.STUDY,
    NUMBER_OF_SERIES_RELATED_INSTANCES: Level.SERIES,
}
_ALL_MAIN_TAGS = frozenset(tag for tags in MAIN_DICOM_TAGS.values() for tag, _ in tags)
#: Never a constraint, never read from the instance (Orthanc's ``IsDicomAsJsonNeeded``).
_SPECIAL = frozenset({QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, *COUNTERS})
_PERSON_NAME = "PN"


@dataclass(frozen=True)
class FindRequest:
    """A C-FIND query once the Lua filter has run: ``query`` in the order of the request."""

    query: dict[int, str]
    sequences: tuple[int, ...] = ()
    case_sensitive_pn: bool = False
    limit_results: int = 0      # LimitFindResults, 0: no limit
    limit_instances: int = 0    # LimitFindInstances, 0: no limit
    retrieve_aet: str = "ORTHANC"

    @property
    def level(self) -> Level:
        """The ``QueryRetrieveLevel``; Orthanc's errors for a missing or unknown one."""
        value = self.query.get(QUERY_RETRIEVE_LEVEL)
        if value is None:
            raise OrthancError(ErrorCode.BAD_REQUEST, "C-FIND request without the tag 0008,0052 (QueryRetrieveLevel)")
        try:
            return Level.from_name(value.strip())
        except KeyError:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown QueryRetrieveLevel: {value!r}") from None

    @property
    def limit(self) -> int:
        return self.limit_instances if self.level is Level.INSTANCE else self.limit_results

    def constraints(self) -> tuple[Constraint, ...]:
        found = []
        for tag, value in self.query.items():
            if not value or tag in (QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET) or tag & 0xFFFF == 0:
                continue
            entry = public_entry(tag)
            vr = entry[1] if entry else ""
            if vr == "SQ":
                raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"No constraint on a sequence ({format_tag(tag)})")
            found.append(Constraint(tag, value, self.case_sensitive_pn if vr == _PERSON_NAME else True).check())
        return tuple(found)

    @property
    def reads_instance(self) -> bool:
        """Whether the answers are read from an instance rather than from the index."""
        return bool(self.sequences) or any(tag not in _SPECIAL and tag not in _ALL_MAIN_TAGS for tag in self.query)


@dataclass(frozen=True)
class FindAnswers:
    """What a C-FIND SCP answers, on the query/retrieve models or on the worklists."""

    #: Each answer: tag → text, or, for a sequence, its items (short JSON).
    answers: list[dict[int, Any]]
    #: False when more matched than the limit let through (``LimitFindResults``, ``LimitAnswers``...).
    complete: bool


def find_answers(tx: IndexTransaction, instance_tags: Callable[[str, JsonFormat], dict[str, Any]],
                 request: FindRequest) -> FindAnswers:
    """Run ``request`` over the index (inside a read transaction)."""
    level, limit = request.level, request.limit
    finder = Finder(tx, instance_tags)
    rows = list(itertools.islice(finder.rows(FindQuery(level, request.constraints())), limit + 1 if limit else None))
    complete = not limit or len(rows) <= limit
    answers = [_answer(finder, row, request, level) for row in rows[:limit or None]]
    return FindAnswers(answers, complete)


def _answer(finder: Finder, row: ResourceRow, request: FindRequest, level: Level) -> dict[int, Any]:
    sample = finder.sample_tags(row) if request.reads_instance else None
    main = finder.main_tags(row) if sample is None else {}

    def value(tag: int) -> str:
        if sample is not None:
            found = sample.get(format_tag(tag))
            return found if isinstance(found, str) else ""
        return main.get(tag, "")

    answer: dict[int, Any] = {RETRIEVE_AE_TITLE: request.retrieve_aet}
    for tag, asked in request.query.items():
        if tag == QUERY_RETRIEVE_LEVEL:
            answer[tag] = asked
        elif tag != SPECIFIC_CHARACTER_SET:
            answer[tag] = value(tag)
    answer.update(_counters(finder.tx, row, [tag for tag in request.query if COUNTERS.get(tag) is level]))
    for tag in request.sequences:
        items = sample.get(format_tag(tag)) if sample is not None else None
        if isinstance(items, list):
            answer[tag] = items
    return answer


def _counters(tx: IndexTransaction, row: ResourceRow, asked: list[int]) -> dict[int, str]:
    """The counters of ``asked`` for ``row`` (Orthanc's ``ComputeCounters``)."""
    if not asked:
        return {}
    below: dict[Level, list[ResourceRow]] = {}
    current = [row]
    for child_level in range(row.level + 1, Level.INSTANCE + 1):
        current = [child for parent in current for child in tx.children(parent.internal_id)]
        below[Level(child_level)] = current

    def joined(values: Iterable[str | None]) -> str:
        return "\\".join(sorted({value for value in values if value}))

    computed: dict[int, Callable[[], str]] = {
        NUMBER_OF_PATIENT_RELATED_STUDIES: lambda: str(len(below[Level.STUDY])),
        NUMBER_OF_PATIENT_RELATED_SERIES: lambda: str(len(below[Level.SERIES])),
        NUMBER_OF_PATIENT_RELATED_INSTANCES: lambda: str(len(below[Level.INSTANCE])),
        NUMBER_OF_STUDY_RELATED_SERIES: lambda: str(len(below[Level.SERIES])),
        NUMBER_OF_STUDY_RELATED_INSTANCES: lambda: str(len(below[Level.INSTANCE])),
        NUMBER_OF_SERIES_RELATED_INSTANCES: lambda: str(len(below[Level.INSTANCE])),
        MODALITIES_IN_STUDY: lambda: joined(tx.main_tags(series.internal_id)[0].get("Modality")
                                            for series in below[Level.SERIES]),
        SOP_CLASSES_IN_STUDY: lambda: joined(tx.get_metadata(instance.internal_id, MetadataType.SOP_CLASS_UID)
                                             for instance in below[Level.INSTANCE]),
    }
    return {tag: computed[tag]() for tag in asked}
