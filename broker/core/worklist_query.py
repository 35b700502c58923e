"""A modality worklist query, as Orthanc's framework matches it (``HierarchicalMatcher``).

The query is a DICOM dataset. Each top-level tag with a value is a constraint of ``/tools/find``
(``broker.core.find.Constraint``: a list, a wildcard on the text VRs, a range on dates and times,
equality), case-sensitive but for the person names (``CaseSensitivePN``). An empty value asks for the
tag without constraining it; ``SpecificCharacterSet`` and the group lengths are ignored; a binary value
never constrains. A sequence with one item is matched item-wise: a worklist matches when one of its
items matches the query's item (a worklist without the sequence matches too, as in Orthanc); a sequence
with no item or one empty item only asks for the sequence; more than one item is an error.

A worklist that matches is answered with the tags of the query only (those it has): a sequence with the
items that match the query's item, each reduced the same way.

The query as a Lua script sees it (``IncomingWorklistRequestFilter``) is Orthanc's "short" JSON of the
dataset: keys ``gggg,eeee``, values strings (null for an empty number), sequences as lists of objects,
no private or binary tags. ``dataset_from_json`` rebuilds a query from such a table (keys may also be
names), as Orthanc's ``ParsedDicomFile::CreateFromJson``. ``worklist_json`` shows an answer received by
the worklist C-FIND SCU as Orthanc's REST API does.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from broker.core.dicom_file import element_text
from broker.core.dicom_json import STRING_VRS, Charset, JsonFormat, dataset_to_json
from broker.core.dictionary import dictionary_vr
from broker.core.elements import BINARY_VRS, dataset_of, elements_of
from broker.core.encodings import Encoding, encoding_of_term
from broker.core.find import Constraint
from broker.core.tags import (
    PREGNANCY_STATUS,
    REFERENCED_PATIENT_SEQUENCE,
    REFERENCED_SOP_CLASS_UID,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_STUDY_SEQUENCE,
    SCHEDULED_PROCEDURE_STEP_SEQUENCE,
    SCHEDULED_STATION_AE_TITLE,
    SPECIFIC_CHARACTER_SET,
    format_tag,
    is_private,
    parse_tag,
)
from broker.errors import ErrorCode, OrthancError


def leaf_text(element: DataElement) -> str | None:
    """The value Orthanc reads from a leaf element: text, or None for a binary value or an empty number."""
    if element.VR in BINARY_VRS or isinstance(element.value, bytes):
        return None
    if element.VR not in STRING_VRS and element.value in (None, "", []):
        return None
    return element_text(element)


def fix_query(query: Dataset) -> None:
    """Orthanc's ``FixWorklistQuery`` (from DCMTK's ``wlmscpfs``): a ReferencedStudySequence or
    ReferencedPatientSequence whose only item holds an empty ReferencedSOPClassUID and
    ReferencedSOPInstanceUID loses that item, so that it asks for the sequence without constraining it."""
    for tag in (REFERENCED_STUDY_SEQUENCE, REFERENCED_PATIENT_SEQUENCE):
        element = query.get(tag)
        if element is None or element.VR != "SQ" or len(element.value) != 1:
            continue
        item = element.value[0]
        if all(tag in item and not item[tag].value for tag in (REFERENCED_SOP_CLASS_UID, REFERENCED_SOP_INSTANCE_UID)):
            element.value = Sequence([])


@dataclass(frozen=True)
class WorklistMatcher:
    """One level of the query: the constraints on its flat tags, every flat tag asked, and the matcher of
    each sequence asked (None: the whole sequence, unconstrained)."""

    constraints: tuple[Constraint, ...]
    tags: tuple[int, ...]
    sequences: Mapping[int, WorklistMatcher | None]

    @classmethod
    def of(cls, query: Dataset, case_sensitive_pn: bool) -> WorklistMatcher:
        """Orthanc's ``HierarchicalMatcher::Setup``; an error (400 ``BadRequest``, or
        ``ParameterOutOfRange`` for a wildcard on a date) fails the C-FIND."""
        constraints: list[Constraint] = []
        tags: list[int] = []
        sequences: dict[int, WorklistMatcher | None] = {}
        for element in query:
            tag = int(element.tag)
            if tag == SPECIFIC_CHARACTER_SET or tag & 0xFFFF == 0:
                continue
            if dictionary_vr(tag, None) == "SQ" or element.VR == "SQ":
                items = list(element.value or []) if element.VR == "SQ" else []
                if len(items) > 1:
                    raise OrthancError(ErrorCode.BAD_REQUEST,
                                       f"A worklist query has more than one item in the sequence {format_tag(tag)}")
                universal = not items or len(items[0]) == 0
                sequences[tag] = None if universal else cls.of(items[0], case_sensitive_pn)
                continue
            tags.append(tag)
            value = leaf_text(element)
            if value:
                case_sensitive = case_sensitive_pn if dictionary_vr(tag, None) == "PN" else True
                constraints.append(Constraint(tag, value, case_sensitive).check())
        return cls(tuple(constraints), tuple(tags), sequences)

    def matches(self, item: Dataset) -> bool:
        """Orthanc's ``MatchInternal``: every constraint holds on a present, non-binary value, and each
        constrained sequence the worklist has holds an item that matches."""
        for constraint in self.constraints:
            element = item.get(constraint.tag)
            value = None if element is None or element.VR == "SQ" else leaf_text(element)
            if value is None or not constraint.matches(value):
                return False
        for tag, matcher in self.sequences.items():
            if matcher is None:
                continue
            element = item.get(tag)
            if element is None or element.VR != "SQ":
                continue
            if not any(matcher.matches(child) for child in element.value):
                return False
        return True

    def extract(self, item: Dataset) -> dict[int, Any]:
        """Orthanc's ``ExtractInternal``: the tags asked that the worklist has, as text (None for a
        binary value), and the sequences asked with their matching items, reduced to the tags asked (or
        whole for an unconstrained sequence), in the short JSON of ``dataset_json``."""
        answer: dict[int, Any] = {}
        for tag in self.tags:
            element = item.get(tag)
            if element is not None and element.VR != "SQ":
                answer[tag] = leaf_text(element)
        for tag, matcher in self.sequences.items():
            element = item.get(tag)
            if element is None or element.VR != "SQ":
                continue
            if matcher is None:
                items = [dataset_json(child, keep_private=True) for child in element.value]
            else:
                items = [{format_tag(key): value for key, value in matcher.extract(child).items()}
                         for child in element.value if matcher.matches(child)]
            # An item's null (an empty number) is left out: it could not be rebuilt as an empty number.
            answer[tag] = [{key: value for key, value in item.items() if value is not None} for item in items]
        return answer


def dataset_json(ds: Dataset, *, keep_private: bool = False) -> dict[str, Any]:
    """Orthanc's "short" JSON of a dataset without the flags (``DicomToJsonFlags_None``): keys
    ``gggg,eeee``, text values (None for an empty number), sequences as lists; the binary values and,
    unless ``keep_private``, the private tags are left out."""
    result: dict[str, Any] = {}
    for element in ds:
        tag = int(element.tag)
        if (is_private(tag) and not keep_private) or tag >> 16 == 0x0002 or tag & 0xFFFF == 0:
            continue
        if element.VR == "SQ":
            result[format_tag(tag)] = [dataset_json(child, keep_private=keep_private) for child in element.value]
        elif element.VR not in BINARY_VRS and not isinstance(element.value, bytes):
            result[format_tag(tag)] = leaf_text(element)
    return result


def worklist_json(answer: Dataset, fmt: JsonFormat, default_encoding: Encoding) -> dict[str, Any]:
    """A worklist answer in a REST format, as Orthanc's ``DicomFindAnswers::ToJson`` (without the flags:
    the private and binary values are left out), sequences included."""
    kept = Dataset()
    for element in answer:
        if not is_private(int(element.tag)) and element.VR not in BINARY_VRS:
            kept.add(element)
    elements = elements_of(kept)
    return dataset_to_json(elements, fmt, Charset.of(elements, default_encoding))


def dataset_from_json(table: Any, default_encoding: Encoding) -> Dataset:
    """A query rebuilt from a JSON object (the answer of ``IncomingWorklistRequestFilter``), as
    Orthanc's ``ParsedDicomFile::CreateFromJson``: keys are tags by ``gggg,eeee`` or by name, values
    strings, lists of objects for sequences; in the encoding its SpecificCharacterSet names, else the
    default one. Anything else raises ``OrthancError``."""
    if not isinstance(table, dict):
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"A worklist query must be a JSON object, not {table!r}")
    values = {parse_tag(str(key)): value for key, value in table.items()}
    charset = values.get(SPECIFIC_CHARACTER_SET)
    encoding = default_encoding
    if isinstance(charset, str) and charset.strip():
        named = encoding_of_term(charset.split("\\")[0])
        if named is None:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown specific character set: {charset}")
        encoding = named
    return dataset_of(values, encoding, permissive=False)


def restricted_to_issuer(query: Dataset, issuer_aet: str, default_encoding: Encoding) -> Dataset:
    """The query of ``FilterIssuerAet``, as Orthanc's sample plugin builds it from the short JSON of the
    query: the ScheduledProcedureStepSequence (added with one empty item if missing; otherwise it must
    hold exactly one item) asks for ScheduledStationAETitle = the calling AET, and an empty
    PregnancyStatus is dropped. The plugin's test of an AET the query already gives looks at the type
    of the item rather than of the AET, so it always holds: the calling AET replaces any AET asked."""
    table = dataset_json(query)
    steps = table.setdefault(format_tag(SCHEDULED_PROCEDURE_STEP_SEQUENCE), [{}])
    if not isinstance(steps, list) or len(steps) != 1 or not isinstance(steps[0], dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT,
                           "FilterIssuerAet: the ScheduledProcedureStepSequence of the query must have one item")
    steps[0][format_tag(SCHEDULED_STATION_AE_TITLE)] = issuer_aet
    if not table.get(format_tag(PREGNANCY_STATUS), "x"):
        del table[format_tag(PREGNANCY_STATUS)]
    return dataset_from_json(table, default_encoding)
