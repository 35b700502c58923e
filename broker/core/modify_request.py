"""Orthanc 1.10's modification request (``ModifyRequest``, Orthanc's ``DicomModification``) and the
paths into sequences it names (``DicomPath``), parsed from the JSON of ``/modify``, ``/anonymize``
and the Lua ``modify`` operation.

* ``DicomPath``: ``"ReferencedImageSequence[0].ReferencedSOPInstanceUID"`` (``[*]`` for every item), the
  paths into sequences accepted by ``Replace``, ``Remove`` and ``Keep`` since Orthanc 1.9.4.
* ``ModifyRequest.from_json(body, level=None)``: Orthanc's ``ParseModifyRequest``. ``level=None`` picks
  the level as ``POST /instances/{id}/modify`` does (``Patient`` if ``PatientID`` is replaced, ``Study``
  if ``StudyInstanceUID`` is, ``Series`` if ``SeriesInstanceUID`` is, else ``Instance``), which is also
  what the Lua ``modify`` operation gets (it cannot set ``Force``, so it is always ``Instance``).

The request's shape is validated here (``OrthancError`` 400 as Orthanc: a replaced identifier without
``Force``, a non-boolean flag, a ``Replace`` that is not an object...); the replacement values only
when they are applied (``broker.core.elements``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broker.core.levels import Level
from broker.core.tags import (
    DEIDENTIFICATION_METHOD,
    PATIENT_ID,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    format_tag,
    is_private,
    parse_tag,
)
from broker.errors import ErrorCode, OrthancError
from broker.json_fields import read_string

DATABASE_KEYS = frozenset({PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID})
_PATH_TOKEN = re.compile(r"^(.+)\[([0-9]+|\*)\]$")


def _bad_request(details: str = "") -> OrthancError:
    return OrthancError(ErrorCode.BAD_REQUEST, details)


def _path_tag(token: str) -> int:
    """A tag of a path: as ``parse_tag`` reads it, or between parentheses (``(5200,9230)``, as Orthanc)."""
    token = token.strip()
    if token.startswith("(") and token.endswith(")"):
        token = token[1:-1]
    return parse_tag(token)


@dataclass(frozen=True)
class DicomPath:
    """A path to a tag, possibly inside sequences: ``prefix`` is ``((sequence tag, item index or None
    for [*]), ...)``, ``final`` the tag it designates."""

    prefix: tuple[tuple[int, int | None], ...]
    final: int

    @classmethod
    def parse(cls, text: str) -> DicomPath:
        tokens = text.split(".")
        prefix = []
        for token in tokens[:-1]:
            match = _PATH_TOKEN.match(token.strip())
            if match is None:
                raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, "Parent path doesn't contain an index")
            index = None if match.group(2) == "*" else int(match.group(2))
            prefix.append((_path_tag(match.group(1)), index))
        return cls(tuple(prefix), _path_tag(tokens[-1]))

    def format(self) -> str:
        parts = [f"({format_tag(tag)})[{'*' if index is None else index}]" for tag, index in self.prefix]
        return ".".join(parts + [f"({format_tag(self.final)})"])

    def matches(self, parents: list[tuple[int, int]], tag: int) -> bool:
        """Orthanc's ``DicomPath::IsMatch``: ``tag`` (inside the items ``parents``) is this path or below it."""
        if len(parents) < len(self.prefix):
            return False
        for (want_tag, want_index), (tag_, index) in zip(self.prefix, parents, strict=False):
            if want_tag != tag_ or (want_index is not None and want_index != index):
                return False
        if len(parents) == len(self.prefix):
            return tag == self.final
        return parents[len(self.prefix)][0] == self.final


def read_boolean(body: dict[str, Any], name: str, default: bool) -> bool:
    """A boolean member, ``default`` when absent (400 ``BadFileFormat`` for anything else)."""
    if name not in body:
        return default
    value = body[name]
    if not isinstance(value, bool):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f'Member "{name}" should be a Boolean value')
    return value


@dataclass
class ModifyRequest:
    """One parsed modification or anonymization (Orthanc's ``DicomModification``).

    Build it with ``ModifyRequest.from_json`` (``/modify``, the Lua ``modify`` operation) or
    ``broker.core.anonymize.anonymization_request`` (``/anonymize``); apply it with ``Modifier`` or
    ``modify_instance_bytes``.
    """

    level: Level = Level.INSTANCE
    is_anonymization: bool = False
    remove_private_tags: bool = False
    allow_manual_identifiers: bool = True
    keep_study_instance_uid: bool = False
    keep_series_instance_uid: bool = False
    keep_sop_instance_uid: bool = False
    private_creator: str = ""
    keep: set[int] = field(default_factory=set)
    removals: set[int] = field(default_factory=set)
    clearings: set[int] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)
    private_tags_to_keep: set[int] = field(default_factory=set)
    replacements: dict[int, Any] = field(default_factory=dict)
    keep_sequences: list[DicomPath] = field(default_factory=list)
    remove_sequences: list[DicomPath] = field(default_factory=list)
    sequence_replacements: list[tuple[DicomPath, Any]] = field(default_factory=list)
    # The DeidentificationMethod values that mark "Orthanc's own anonymization" (set by anonymize.py).
    own_deidentification_methods: frozenset[str] = frozenset()

    # Orthanc's setters, with their side effects on the other sets.
    def keep_tag(self, tag: int) -> None:
        self.keep.add(tag)
        self.removals.discard(tag)
        self.clearings.discard(tag)
        self.uids.discard(tag)
        self.replacements.pop(tag, None)
        if tag == STUDY_INSTANCE_UID:
            self.keep_study_instance_uid = True
        elif tag == SERIES_INSTANCE_UID:
            self.keep_series_instance_uid = True
        elif tag == SOP_INSTANCE_UID:
            self.keep_sop_instance_uid = True
        elif is_private(tag):
            self.private_tags_to_keep.add(tag)
        self.mark_not_orthanc_anonymization()

    def remove_tag(self, tag: int) -> None:
        self.removals.add(tag)
        self.clearings.discard(tag)
        self.uids.discard(tag)
        self.replacements.pop(tag, None)
        self.private_tags_to_keep.discard(tag)
        self.mark_not_orthanc_anonymization()

    def replace_tag(self, tag: int, value: Any, safe_for_anonymization: bool = False) -> None:
        self.clearings.discard(tag)
        self.removals.discard(tag)
        self.uids.discard(tag)
        self.private_tags_to_keep.discard(tag)
        self.replacements[tag] = value
        if not safe_for_anonymization:
            self.mark_not_orthanc_anonymization()

    def keep_path(self, path: DicomPath) -> None:
        if not path.prefix:
            self.keep_tag(path.final)
        self.keep_sequences.append(path)
        self.mark_not_orthanc_anonymization()

    def remove_path(self, path: DicomPath) -> None:
        if not path.prefix:
            self.remove_tag(path.final)
        else:
            self.remove_sequences.append(path)
            self.mark_not_orthanc_anonymization()

    def replace_path(self, path: DicomPath, value: Any, safe_for_anonymization: bool = False) -> None:
        if not path.prefix:
            self.replace_tag(path.final, value, safe_for_anonymization)
        else:
            self.sequence_replacements.append((path, value))
            if not safe_for_anonymization:
                self.mark_not_orthanc_anonymization()

    def set_remove_private_tags(self, removed: bool) -> None:
        self.remove_private_tags = removed
        if not removed:
            self.mark_not_orthanc_anonymization()

    def set_level(self, level: Level) -> None:
        self.level = level
        if level is not Level.PATIENT:
            self.mark_not_orthanc_anonymization()

    def mark_not_orthanc_anonymization(self) -> None:
        """A request that changes the profile no longer writes the profile's ``DeidentificationMethod``."""
        current = self.replacements.get(DEIDENTIFICATION_METHOD)
        if isinstance(current, str) and current in self.own_deidentification_methods:
            del self.replacements[DEIDENTIFICATION_METHOD]

    def is_removed(self, tag: int) -> bool:
        return tag in self.removals

    def is_cleared(self, tag: int) -> bool:
        return tag in self.clearings

    def is_replaced(self, tag: int) -> bool:
        return tag in self.replacements

    def is_manually_modified(self, tag: int) -> bool:
        return tag in self.clearings or tag in self.removals or tag in self.replacements

    def replacement_as_string(self, tag: int) -> str:
        value = self.replacements[tag]
        if not isinstance(value, str):
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"The replacement of {format_tag(tag)} must be a string")
        return value

    # Parsing.
    @classmethod
    def from_json(cls, body: Any, level: Level | None = None) -> ModifyRequest:
        """Orthanc's ``ParseModifyRequest`` (``Force``, ``RemovePrivateTags``, ``Remove``, ``Replace``,
        ``Keep``, ``PrivateCreator``; other members are ignored here). ``level=None``: the level of
        ``POST /instances/{id}/modify`` (see the module docstring)."""
        if not isinstance(body, dict):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The modification request must be a JSON object")
        request = cls()
        force = read_boolean(body, "Force", False)
        if read_boolean(body, "RemovePrivateTags", False):
            request.set_remove_private_tags(True)
        request.parse_common(body, force)
        if level is None:
            level = request.detect_level()
        request.set_level(level)
        return request

    def parse_common(self, body: dict[str, Any], force: bool) -> None:
        """``Remove``, ``Replace``, ``Keep`` (in this order, as Orthanc) and ``PrivateCreator``."""
        if "Remove" in body:
            for _name, path in self._parse_list(body["Remove"], force, "removed"):
                self.remove_path(path)
        if "Replace" in body:
            replacements = body["Replace"]
            if not isinstance(replacements, dict):
                raise _bad_request()
            for name, value in replacements.items():
                path = DicomPath.parse(name)
                if not path.prefix and not force and path.final in DATABASE_KEYS:
                    raise _bad_request(f'Marking tag "{name}" as to be replaced requires the "Force" option '
                                       "to be set to true")
                self.replace_path(path, value)
        if "Keep" in body:
            for _name, path in self._parse_list(body["Keep"], force, "kept"):
                self.keep_path(path)
        if "PrivateCreator" in body:
            self.private_creator = read_string(body, "PrivateCreator")

    @staticmethod
    def _parse_list(names: Any, force: bool, operation: str) -> Iterable[tuple[str, DicomPath]]:
        if not isinstance(names, list):
            raise _bad_request()
        for name in names:
            if not isinstance(name, str):
                raise _bad_request()
            path = DicomPath.parse(name)
            if not path.prefix and not force and path.final in DATABASE_KEYS:
                raise _bad_request(f'Marking tag "{name}" as to be {operation} requires the "Force" option '
                                   "to be set to true")
            yield name, path

    def detect_level(self) -> Level:
        """Orthanc's ``DetectModifyLevel``."""
        if self.is_replaced(PATIENT_ID):
            return Level.PATIENT
        if self.is_replaced(STUDY_INSTANCE_UID):
            return Level.STUDY
        if self.is_replaced(SERIES_INSTANCE_UID):
            return Level.SERIES
        return Level.INSTANCE

    def check(self) -> None:
        """The sanity checks Orthanc 1.10 runs at the start of ``Apply`` (they do not depend on the file,
        so a resource modification runs them once, before anything is stored)."""
        if any(self.is_removed(tag) for tag in DATABASE_KEYS):
            raise _bad_request()
        level = self.level
        replaced_patient_id = self.is_replaced(PATIENT_ID) or PATIENT_ID in self.uids
        manual = not self.allow_manual_identifiers
        checks = [
            (level is Level.PATIENT and not replaced_patient_id,
             "When modifying a patient, her PatientID is required to be modified"),
            (manual and level is Level.PATIENT and self.is_replaced(STUDY_INSTANCE_UID),
             "When modifying a patient, the StudyInstanceUID cannot be manually modified"),
            (manual and level is Level.PATIENT and self.is_replaced(SERIES_INSTANCE_UID),
             "When modifying a patient, the SeriesInstanceUID cannot be manually modified"),
            (manual and level is Level.PATIENT and self.is_replaced(SOP_INSTANCE_UID),
             "When modifying a patient, the SopInstanceUID cannot be manually modified"),
            (level is Level.STUDY and replaced_patient_id,
             "When modifying a study, the parent PatientID cannot be manually modified"),
            (manual and level is Level.STUDY and self.is_replaced(SERIES_INSTANCE_UID),
             "When modifying a study, the SeriesInstanceUID cannot be manually modified"),
            (manual and level is Level.STUDY and self.is_replaced(SOP_INSTANCE_UID),
             "When modifying a study, the SopInstanceUID cannot be manually modified"),
            (level is Level.SERIES and replaced_patient_id,
             "When modifying a series, the parent PatientID cannot be manually modified"),
            (level is Level.SERIES and self.is_replaced(STUDY_INSTANCE_UID),
             "When modifying a series, the parent StudyInstanceUID cannot be manually modified"),
            (manual and level is Level.SERIES and self.is_replaced(SOP_INSTANCE_UID),
             "When modifying a series, the SopInstanceUID cannot be manually modified"),
            (level is Level.INSTANCE and replaced_patient_id,
             "When modifying an instance, the parent PatientID cannot be manually modified"),
            (level is Level.INSTANCE and self.is_replaced(STUDY_INSTANCE_UID),
             "When modifying an instance, the parent StudyInstanceUID cannot be manually modified"),
            (level is Level.INSTANCE and self.is_replaced(SERIES_INSTANCE_UID),
             "When modifying an instance, the parent SeriesInstanceUID cannot be manually modified"),
        ]
        for failed, message in checks:
            if failed:
                raise _bad_request(message)
