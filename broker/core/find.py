"""``/tools/find`` and ``/tools/lookup``: resources whose DICOM tags match a query, as Orthanc 1.10
answers them.

Each constraint of a query is one of Orthanc's kinds (``DatabaseLookup::AddDicomConstraint``):

* empty: matches anything (the tag may be absent);
* ``a\\b\\c``: a list, one of the values exactly;
* with ``*`` or ``?``: a wildcard over the whole value (other characters, ``[`` included, are literal),
  for text VRs only (``WILDCARD_VRS``; on a date, a number or a UID it is refused with 400), and for
  a present tag only (``*`` does not match an absent tag);
* ``from-to``, ``-to``, ``from-`` for a date, time or date-time tag: an inclusive range;
* anything else: equality.

Case: without ``CaseSensitive`` (Orthanc's default is false) both sides are compared in upper case
(accented letters too: ``jode`` does not match ``Jodé``).

Where: a constraint on a main DICOM tag of the level or of its ancestors is matched against the
index; a main tag of a level below never matches (``Modality`` on studies), but for the empty
constraint; any other constraint (``SliceThickness`` on instances) is matched against the tags of the
first instance of the resource. ``ModalitiesInStudy`` on studies matches when one of the study's
series has one of its modalities.

The scan reads the index level by level; it is linear in the number of resources of the level.
"""
from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from broker.core.dicom_json import JsonFormat
from broker.core.dictionary import public_entry
from broker.core.index import IndexTransaction, ResourceRow
from broker.core.levels import Level
from broker.core.maintags import MAIN_DICOM_TAGS
from broker.core.tags import MODALITY, parse_tag
from broker.errors import ErrorCode, OrthancError

MODALITIES_IN_STUDY = 0x00080061
_RANGE_VRS = frozenset({"DA", "DT", "TM"})
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: The identifiers ``/tools/lookup`` searches, per level (Orthanc's ``DicomIdentifiers``).
LOOKUP_IDENTIFIERS = ((Level.PATIENT, "PatientID"), (Level.STUDY, "StudyInstanceUID"),
                      (Level.SERIES, "SeriesInstanceUID"), (Level.INSTANCE, "SOPInstanceUID"))
_MAIN_NAMES = {level: dict(tags) for level, tags in MAIN_DICOM_TAGS.items()}


def normalize(text: str) -> str:
    """Orthanc's case-insensitive form (``ToUpperCaseWithAccents``): upper case, accents kept."""
    return text.upper()


@dataclass(frozen=True)
class Constraint:
    tag: int
    text: str
    case_sensitive: bool

    @functools.cached_property
    def test(self) -> Callable[[str], bool] | None:
        """The test of a present value; None for a universal constraint."""
        text = self.text if self.case_sensitive else normalize(self.text)
        if not text:
            return None
        # In the order of Orthanc's ``AddDicomConstraintInternal``: range, list, wildcard, equality.
        vr = self.vr
        if vr in _RANGE_VRS and "-" in text:
            low, _, high = text.partition("-")
            return lambda value: (not low or value >= low) and (not high or value <= high)
        if "\\" in text:
            values = set(text.split("\\"))
            return lambda value: value in values
        if "*" in text or "?" in text:
            regex = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text) + r"\Z",
                               re.DOTALL)
            return lambda value: regex.match(value) is not None
        return lambda value: value == text

    @property
    def vr(self) -> str:
        entry = public_entry(self.tag)
        return entry[1] if entry else ""

    def check(self) -> Constraint:
        """Orthanc refuses wildcards on dates, times, numbers and UIDs."""
        if ("*" in self.text or "?" in self.text) and "\\" not in self.text and self.vr \
                and self.vr not in WILDCARD_VRS:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                               f"Wildcards are not allowed on tag {self.tag >> 16:04x},{self.tag & 0xFFFF:04x}")
        return self

    def matches(self, value: str | None) -> bool:
        test = self.test
        if test is None:
            return True
        if value is None:
            return False
        return test(value if self.case_sensitive else normalize(value))


@dataclass(frozen=True)
class FindQuery:
    level: Level
    constraints: tuple[Constraint, ...]
    since: int = 0
    limit: int = 0           # 0: no limit


def constraint(name: str, text: str, case_sensitive: bool) -> Constraint:
    return Constraint(parse_tag(name), text, case_sensitive).check()


class Finder:
    """One search over the index (inside a read transaction); ``instance_tags`` reads the tags of a stored
    instance (``gggg,eeee`` → value) for the constraints the index cannot answer."""

    def __init__(self, tx: IndexTransaction, instance_tags: Callable[[str, JsonFormat], dict[str, Any]]) -> None:
        self.tx = tx
        self.instance_tags = instance_tags
        self._tags: dict[int, dict[str, str]] = {}
        self._sample: tuple[int, dict[str, Any]] | None = None

    def find(self, query: FindQuery) -> list[str]:
        page = itertools.islice(self.rows(query), query.since, query.since + query.limit if query.limit else None)
        return [row.public_id for row in page]

    def rows(self, query: FindQuery) -> Iterator[ResourceRow]:
        """The matching resources, in index order, one at a time (the caller stops when it has enough)."""
        indexed, modalities, others = self._split(query)
        for row in self.tx.list_level(query.level):
            if not self._matches_index(row, indexed):
                continue
            if modalities is not None and not self._has_modality(row, modalities):
                continue
            if others and not self._matches_instance(row, others):
                continue
            yield row

    def _split(self, query: FindQuery) -> tuple[list[tuple[Level, str, Constraint]], Constraint | None,
                                                list[Constraint]]:
        """The constraints the index answers (with the level and name of their main tag), the
        ``ModalitiesInStudy`` one, and the others."""
        indexed: list[tuple[Level, str, Constraint]] = []
        modalities: Constraint | None = None
        others: list[Constraint] = []
        for item in query.constraints:
            if item.tag == MODALITIES_IN_STUDY and query.level is Level.STUDY:
                modalities = item
                continue
            level = next((level for level in Level if item.tag in _MAIN_NAMES[level]), None)
            if level is None:
                others.append(item)
            elif level > query.level:  # in the index, but not at this level: as an absent tag
                indexed.append((query.level, "", item))
            else:
                indexed.append((level, _MAIN_NAMES[level][item.tag], item))
        return indexed, modalities, others

    def _main_tags(self, internal_id: int) -> dict[str, str]:
        if internal_id not in self._tags:
            self._tags[internal_id] = self.tx.main_tags(internal_id)[0]
        return self._tags[internal_id]

    def _matches_index(self, row: ResourceRow, constraints: list[tuple[Level, str, Constraint]]) -> bool:
        ancestors = {row.level: row}
        current = row
        while current.parent_id is not None and any(level < current.level for level, _, _ in constraints):
            current = self.tx.parent(current)
            ancestors[current.level] = current
        return all(item.matches(self._main_tags(ancestors[level].internal_id).get(name) if name else None)
                   for level, name, item in constraints)

    def _has_modality(self, study: ResourceRow, modalities: Constraint) -> bool:
        if modalities.test is None:
            return True
        wanted = Constraint(MODALITY, modalities.text, modalities.case_sensitive)
        return any(wanted.matches(self._main_tags(series.internal_id).get("Modality"))
                   for series in self.tx.children(study.internal_id))

    def main_tags(self, row: ResourceRow) -> dict[int, str]:
        """The main tags of ``row`` and of its ancestors, by tag (Orthanc merges the levels up to the
        resource's own)."""
        merged: dict[int, str] = {}
        current = row
        while True:
            names = self._main_tags(current.internal_id)
            merged.update({tag: names[name] for tag, name in MAIN_DICOM_TAGS[current.level] if name in names})
            if current.parent_id is None:
                return merged
            current = self.tx.parent(current)

    def sample_tags(self, row: ResourceRow) -> dict[str, Any] | None:
        """The tags (short JSON) of the first instance of ``row``, which stands for the resource where the
        index does not hold a tag; None for a resource without instances. The last one is kept, since
        C-FIND reads it again for its answer."""
        instance = row
        while instance.level is not Level.INSTANCE:
            children = self.tx.children(instance.internal_id)
            if not children:
                return None
            instance = children[0]
        if self._sample is None or self._sample[0] != instance.internal_id:
            self._sample = (instance.internal_id, self.instance_tags(instance.public_id, JsonFormat.SHORT))
        return self._sample[1]

    def _matches_instance(self, row: ResourceRow, constraints: list[Constraint]) -> bool:
        tags = self.sample_tags(row)
        if tags is None:
            return False
        for item in constraints:
            value = tags.get(f"{item.tag >> 16:04x},{item.tag & 0xFFFF:04x}")
            if not item.matches(value if isinstance(value, str) else None):
                return False
        return True


def lookup(tx: IndexTransaction, identifier: str) -> list[tuple[Level, str]]:
    """``/tools/lookup``: the resources whose identifier is ``identifier`` (case and surrounding spaces
    ignored, as Orthanc's table of identifiers)."""
    wanted = normalize(identifier.strip())
    if not wanted:
        return []
    found: list[tuple[Level, str]] = []
    for level, name in LOOKUP_IDENTIFIERS:
        for row in tx.list_level(level):
            if normalize(tx.main_tags(row.internal_id)[0].get(name, "").strip()) == wanted:
                found.append((level, row.public_id))
    return found
