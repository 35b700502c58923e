"""Orthanc 1.10's DICOM modification: the request (``ModifyRequest``) and its application to a file.

This mirrors Orthanc's ``DicomModification`` (checked against a real Orthanc 1.10.1 in
``tests/broker/rest/test_modify_parity.py``); anonymization is the same machinery with a profile
loaded first (``broker.core.anonymize``). The pieces:

* ``parse_tag(name)``: ``"StationName"``, ``"0008,1010"``, ``"0008-1010"`` or ``"00081010"``; an unknown
  name is Orthanc's ``UnknownDicomTag`` (HTTP 500, as Orthanc answers it).
* ``DicomPath``: ``"ReferencedImageSequence[0].ReferencedSOPInstanceUID"`` (``[*]`` for every item), the
  paths into sequences accepted by ``Replace``, ``Remove`` and ``Keep`` since Orthanc 1.9.4.
* ``ModifyRequest.from_json(body, level=None)``: Orthanc's ``ParseModifyRequest``. ``level=None`` picks
  the level as ``POST /instances/{id}/modify`` does (``Patient`` if ``PatientID`` is replaced, ``Study``
  if ``StudyInstanceUID`` is, ``Series`` if ``SeriesInstanceUID`` is, else ``Instance``), which is also
  what the Lua ``modify`` operation gets (it cannot set ``Force``, so it is always ``Instance``).
* ``Modifier(request)``: applies a request to pydicom datasets, one after the other, keeping the map
  of old to new UIDs, so that the instances of one study or series modified by one request get
  consistent new UIDs (Orthanc's ``uidMap_``).
* ``modify_instance_bytes(data, request, *, new_sop_instance_uid=True, modifier=None)``: one DICOM file
  in, the modified file out.

What is validated when: the request's shape when it is parsed (``OrthancError`` 400 as Orthanc: a
replaced identifier without ``Force``, a non-boolean flag, a ``Replace`` that is not an object...); the
replacement values when they are applied (a number where a string is expected is
``BadParameterType``, an out-of-range ``Rows`` is ``BadFileFormat``), exactly as Orthanc, so a Lua
``ModifyInstance`` whose numeric-looking strings became numbers fails at run time, not at submission.

Output files: the dataset is written back in its transfer syntax (or the ``Transcode`` one) with a new
file meta information group (version, SOP class and instance, transfer syntax, this implementation's
class UID and version name), as DCMTK writes it for Orthanc: the original meta elements such as
``SourceApplicationEntityTitle`` are not kept.
"""
from __future__ import annotations

import base64
import io
import re
import uuid
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, generate_uid

from broker.core.dictionary import private_entry
from broker.core.levels import Level
from broker.errors import ErrorCode, OrthancError

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
SOP_INSTANCE_UID = 0x00080018
SOP_CLASS_UID = 0x00080016
SPECIFIC_CHARACTER_SET = 0x00080005
PIXEL_DATA = 0x7FE00010
DEIDENTIFICATION_METHOD = 0x00120063
REFERENCED_IMAGE_SEQUENCE = 0x00081140
SOURCE_IMAGE_SEQUENCE = 0x00082112
REFERENCED_SOP_INSTANCE_UID = 0x00081155
REFERENCED_FRAME_OF_REFERENCE_SEQUENCE = 0x30060010
RT_REFERENCED_STUDY_SEQUENCE = 0x30060012
DATABASE_KEYS = frozenset({PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID})

# DCMTK's ``isaString()``: the VRs whose values the anonymization visitor sees as text.
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                        "UI", "UR", "UT"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INTEGER_LIMITS = {"US": (0, 0xFFFF), "SS": (-0x8000, 0x7FFF), "UL": (0, 0xFFFFFFFF),
                   "SL": (-0x80000000, 0x7FFFFFFF), "UV": (0, 2**64 - 1), "SV": (-2**63, 2**63 - 1)}
_DIGITS = re.compile(r"^([+-]?)([0-9]+)$")
_FLOAT = re.compile(r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)$", re.IGNORECASE)
_HEX_TAG = re.compile(r"^([0-9a-fA-F]{4})[,-]?([0-9a-fA-F]{4})$")
_PATH_TOKEN = re.compile(r"^(.+)\[([0-9]+|\*)\]$")
DATA_URI_BINARY = "data:application/octet-stream;base64,"

# The file meta information written by this implementation.
IMPLEMENTATION_CLASS_UID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
IMPLEMENTATION_VERSION_NAME = "LUABROKER"


def _bad_request(details: str = "") -> OrthancError:
    return OrthancError(ErrorCode.BAD_REQUEST, details)


def _format_tag(tag: int) -> str:
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


# Tags and paths.
def parse_tag(name: str) -> int:
    """Orthanc's ``FromDcmtkBridge::ParseTag``: hexadecimal (``0008,1010``, ``0008-1010``,
    ``00081010``) or a dictionary keyword (case-sensitive)."""
    match = _HEX_TAG.match(name)
    if match:
        return int(match.group(1) + match.group(2), 16)
    keyword = name[len("RETIRED_"):] if name.startswith("RETIRED_") else name
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG, f"Unknown DICOM tag: {name!r}; use a DICOM keyword "
                           "(\"StationName\") or the hexadecimal form \"0008,1010\"", http_status=500)
    return int(tag)


@dataclass(frozen=True)
class DicomPath:
    """A path to a tag, possibly inside sequences: ``prefix`` is ``((sequence tag, item index or None
    for [*]), ...)``, ``final`` the tag it designates."""

    prefix: tuple[tuple[int, int | None], ...]
    final: int

    @classmethod
    def parse(cls, text: str) -> "DicomPath":
        tokens = text.split(".")
        prefix = []
        for token in tokens[:-1]:
            match = _PATH_TOKEN.match(token.strip())
            if match is None:
                raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, "Parent path doesn't contain an index")
            index = None if match.group(2) == "*" else int(match.group(2))
            prefix.append((parse_tag(match.group(1).strip()), index))
        return cls(tuple(prefix), parse_tag(tokens[-1].strip()))

    def format(self) -> str:
        parts = [f"({_format_tag(tag)})[{'*' if index is None else index}]" for tag, index in self.prefix]
        return ".".join(parts + [f"({_format_tag(self.final)})"])

    def matches(self, parents: list[tuple[int, int]], tag: int) -> bool:
        """Orthanc's ``DicomPath::IsMatch``: ``tag`` (inside the items ``parents``) is this path or below it."""
        if len(parents) < len(self.prefix):
            return False
        for (want_tag, want_index), (tag_, index) in zip(self.prefix, parents):
            if want_tag != tag_ or (want_index is not None and want_index != index):
                return False
        if len(parents) == len(self.prefix):
            return tag == self.final
        return parents[len(self.prefix)][0] == self.final


def _boolean(body: dict[str, Any], name: str, default: bool) -> bool:
    if name not in body:
        return default
    value = body[name]
    if not isinstance(value, bool):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f'Member "{name}" should be a Boolean value')
    return value


def read_string(body: dict[str, Any], name: str) -> str:
    """Orthanc's ``SerializationToolbox::ReadString`` (400 ``BadFileFormat`` for a non-string)."""
    value = body.get(name)
    if not isinstance(value, str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"String value expected in field: {name}")
    return value


# The request.
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
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"The replacement of {_format_tag(tag)} must be a string")
        return value

    # Parsing.
    @classmethod
    def from_json(cls, body: Any, level: Level | None = None) -> "ModifyRequest":
        """Orthanc's ``ParseModifyRequest`` (``Force``, ``RemovePrivateTags``, ``Remove``, ``Replace``,
        ``Keep``, ``PrivateCreator``; other members are ignored here). ``level=None``: the level of
        ``POST /instances/{id}/modify`` (see the module docstring)."""
        if not isinstance(body, dict):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The modification request must be a JSON object")
        request = cls()
        force = _boolean(body, "Force", False)
        if _boolean(body, "RemovePrivateTags", False):
            request.set_remove_private_tags(True)
        request.parse_common(body, force)
        if level is None:
            level = request.detect_level()
        request.set_level(level)
        return request

    def parse_common(self, body: dict[str, Any], force: bool) -> None:
        """``Remove``, ``Replace``, ``Keep`` (in this order, as Orthanc) and ``PrivateCreator``."""
        if "Remove" in body:
            for name, path in self._parse_list(body["Remove"], force, "removed"):
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
            for name, path in self._parse_list(body["Keep"], force, "kept"):
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


def is_private(tag: int) -> bool:
    """DCMTK's ``isPrivate``: an odd group other than 1, 3, 5, 7 and FFFF."""
    group = tag >> 16
    return bool(group & 1) and group not in (1, 3, 5, 7, 0xFFFF)


# New identifiers.
def generate_identifier(level: Level) -> str:
    """A new identifier, as Orthanc's ``GenerateUniqueIdentifier``: a UUID for a patient (PatientID is a
    LO, 64 characters), a DICOM UID for the other levels."""
    if level is Level.PATIENT:
        return str(uuid.uuid4())
    return str(generate_uid())


# From JSON to DICOM elements (Orthanc's ``FromDcmtkBridge::FromJson``).
def _python_codec(ds: Dataset) -> str | None:
    """The codec of the dataset's single-byte character set (Latin-1 when it has none, Orthanc's default
    encoding), or None for code extensions (ISO 2022), where strings are left to pydicom."""
    value = ds.get(SPECIFIC_CHARACTER_SET)
    terms = [] if value is None or value.value in (None, "") else value.value
    if isinstance(terms, str):
        terms = [terms]
    terms = [t for t in terms if t]
    if len(terms) > 1:
        return None
    if not terms:
        return "latin_1"
    try:
        return convert_encodings([terms[0]])[0]
    except Exception:  # an unknown character set: let pydicom deal with it
        return None


def _out_of_range(tag: int, text: str) -> OrthancError:
    return OrthancError(ErrorCode.BAD_FILE_FORMAT,
                        f'While creating a DICOM instance, tag ({_format_tag(tag)}) has out-of-range value: "{text}"')


def _parse_integer(tag: int, vr: str, text: str) -> int:
    """``boost::lexical_cast`` to a fixed-width integer: an optional sign and digits, nothing else; a
    negative value of an unsigned type wraps around, as boost's cast does."""
    match = _DIGITS.match(text)
    low, high = _INTEGER_LIMITS[vr]
    if match is None:
        raise _out_of_range(tag, text)
    magnitude = int(match.group(2))
    if low == 0:
        if magnitude > high:
            raise _out_of_range(tag, text)
        return (-magnitude) % (high + 1) if match.group(1) == "-" else magnitude
    value = -magnitude if match.group(1) == "-" else magnitude
    if not low <= value <= high:
        raise _out_of_range(tag, text)
    return value


class ElementFactory:
    """Builds the element that replaces a tag from its JSON value, for one dataset (its character set
    and private creators)."""

    def __init__(self, ds: Dataset, private_creator: str) -> None:
        self.ds = ds
        self.private_creator = private_creator
        self.codec = _python_codec(ds)

    def vr_of(self, tag: int, container: Dataset) -> str:
        if tag & 0xFFFF == 0:
            return "UL"
        if is_private(tag):
            element = tag & 0xFFFF
            if 0x0010 <= element <= 0x00FF:
                return "LO"
            creator_tag = (tag & 0xFFFF0000) | (element >> 8)
            creator = container.get(creator_tag)
            creator_name = str(creator.value).strip() if creator is not None and creator.value else self.private_creator
            entry = private_entry(tag, creator_name) if creator_name else None
            vr = entry[1] if entry else "UN"
        else:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = "UN"
        if " or " in vr:
            vr = vr.split(" or ")[0]
        return vr if vr not in ("", "NONE") else "UN"

    def make(self, tag: int, value: Any, container: Dataset) -> DataElement:
        vr = self.vr_of(tag, container)
        if tag == PIXEL_DATA:
            raise OrthancError(ErrorCode.INTERNAL_ERROR, "PixelData cannot be replaced by a modification")
        if isinstance(value, list):
            if vr != "SQ":
                raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {_format_tag(tag)}")
            return DataElement(tag, "SQ", Sequence([self._item(entry) for entry in value]))
        if value is None:
            text = ""
        elif isinstance(value, str):
            text = value
        else:
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {_format_tag(tag)}")
        return self._from_string(tag, vr, text)

    def _item(self, entry: Any) -> Dataset:
        item = Dataset()
        if isinstance(entry, dict):
            for name, value in entry.items():
                tag = parse_tag(name)
                item[tag] = self.make(tag, value, item)
        elif isinstance(entry, list):
            if entry:  # Lua cannot tell an empty object from an empty array: [] is an empty item
                raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
        else:
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
        return item

    def _from_string(self, tag: int, vr: str, text: str) -> DataElement:
        binary: bytes | None = None
        if text.startswith(DATA_URI_BINARY):
            try:
                binary = base64.b64decode(text[len(DATA_URI_BINARY):], validate=True)
            except ValueError:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Badly formatted data URI for tag {_format_tag(tag)}") from None
        elif self.codec is not None:
            text = text.encode(self.codec, errors="ignore").decode(self.codec)  # Orthanc drops what it cannot encode
        if vr in BINARY_VRS:
            data = binary if binary is not None else text.encode(self.codec or "utf-8", errors="ignore")
            if len(data) % 2:
                data += b"\x00"
            return DataElement(tag, vr, data)
        if binary is not None:
            text = binary.decode(self.codec or "latin_1", errors="replace")
        if vr in STRING_VRS:
            return DataElement(tag, vr, text)
        if vr in _INTEGER_LIMITS:
            return DataElement(tag, vr, _parse_integer(tag, vr, text))
        if vr in ("FL", "FD"):
            if not _FLOAT.match(text):
                raise _out_of_range(tag, text)
            return DataElement(tag, vr, float(text))
        if vr == "AT":
            try:
                return DataElement(tag, vr, parse_tag(text))
            except OrthancError:
                raise _out_of_range(tag, text) from None
        raise _out_of_range(tag, text)  # SQ from a string, or a VR that cannot hold text


# Applying a request.
class Modifier:
    """Applies one request to one dataset after the other; new UIDs are consistent across them
    (the same original UID, at the same level, gets the same new UID)."""

    def __init__(self, request: ModifyRequest, *,
                 identifier_generator: Callable[[Level], str] = generate_identifier) -> None:
        self.request = request
        self.generate = identifier_generator
        self.uid_map: dict[tuple[Level, str], str] = {}

    def map_identifier(self, original: str, level: Level) -> str:
        key = (level, original.strip())
        if key not in self.uid_map:
            self.uid_map[key] = self.generate(level)
        return self.uid_map[key]

    def register(self, original: str, mapped: str, level: Level) -> None:
        self.uid_map.setdefault((level, original), mapped)

    def apply(self, ds: Dataset, *, keep_sop_instance_uid: bool | None = None) -> None:
        """Modify ``ds`` in place (Orthanc's ``DicomModification::Apply``, steps 1 to 8)."""
        request = self.request
        request.check()
        factory = ElementFactory(ds, request.private_creator)
        keep_sop = request.keep_sop_instance_uid if keep_sop_instance_uid is None else keep_sop_instance_uid

        # (1) Anonymization: replaced identifiers map their original value, so references follow.
        if request.is_anonymization:
            for tag, level in ((STUDY_INSTANCE_UID, Level.STUDY), (SERIES_INSTANCE_UID, Level.SERIES),
                               (SOP_INSTANCE_UID, Level.INSTANCE)):
                if request.is_replaced(tag):
                    replacement = request.replacement_as_string(tag)
                    self.register(_text(ds, tag) or "", replacement, level)

        # (2) Private tags (first level only; the anonymization visitor handles sequences).
        if request.remove_private_tags:
            for element in list(ds):
                tag = int(element.tag)
                if is_private(tag) and tag not in request.private_tags_to_keep:
                    del ds[tag]

        # (3) Clearings, only of the tags present. (4) Removals.
        for tag in sorted(request.clearings):
            if tag & 0xFFFF and tag in ds:
                vr = factory.vr_of(tag, ds) if not is_private(tag) else ds[tag].VR
                ds[tag] = DataElement(tag, vr, Sequence([]) if vr == "SQ" else None)
        for tag in sorted(request.removals):
            if tag in ds:
                del ds[tag]

        # (5) Replacements, inserted when absent.
        for tag in sorted(request.replacements):
            if tag & 0xFFFF == 0:
                continue  # group lengths are DCMTK's business
            ds[tag] = factory.make(tag, request.replacements[tag], ds)
            if tag == SPECIFIC_CHARACTER_SET:
                factory = ElementFactory(ds, request.private_creator)

        # (6) The DICOM identifiers of the modified level and below.
        identifiers = ((Level.STUDY, STUDY_INSTANCE_UID, request.keep_study_instance_uid),
                       (Level.SERIES, SERIES_INSTANCE_UID, request.keep_series_instance_uid),
                       (Level.INSTANCE, SOP_INSTANCE_UID, keep_sop))
        for level, tag, keep in identifiers:
            if request.level <= level and not request.is_replaced(tag) and not keep:
                ds[tag] = DataElement(tag, "UI", self.map_identifier(_text(ds, tag) or "", level))

        # (7) Anonymization: identifiers and profile rules everywhere, sequences included.
        if request.is_anonymization:
            self._visit(ds, [], top=True)

        # (8) Paths into sequences.
        for path in request.remove_sequences:
            for item in _items_at(ds, path):
                if path.final in item:
                    del item[path.final]
        for path, value in request.sequence_replacements:
            for item in _items_at(ds, path):
                item[path.final] = factory.make(path.final, value, item)

    # The anonymization visitor (Orthanc's ``RelationshipsVisitor``).
    def _kept(self, parents: list[tuple[int, int]], tag: int) -> bool:
        return any(path.matches(parents, tag) for path in self.request.keep_sequences)

    def _visit(self, ds: Dataset, parents: list[tuple[int, int]], top: bool = False) -> None:
        request = self.request
        for element in list(ds):
            tag = int(element.tag)
            vr = element.VR
            if vr == "SQ":
                if not top and self._default_remove(parents, tag):
                    del ds[tag]
                    continue
                for index, item in enumerate(element.value or []):
                    self._visit(item, parents + [(tag, index)])
                continue
            if vr not in STRING_VRS:
                if not top and self._default_remove(parents, tag):
                    del ds[tag]
                continue
            value = _element_text(element)
            if top:
                if tag in request.uids and not request.is_manually_modified(tag):
                    level = Level.PATIENT if tag in (PATIENT_ID, PATIENT_NAME) else Level.INSTANCE
                    ds[tag] = DataElement(tag, vr, self.map_identifier(value, level))
                continue
            if self._kept(parents, tag):
                continue
            if request.remove_private_tags and is_private(tag):
                del ds[tag]
                continue
            if request.is_removed(tag):
                del ds[tag]
                continue
            if request.is_cleared(tag):
                ds[tag] = DataElement(tag, vr, "")
                continue
            if tag == STUDY_INSTANCE_UID:
                mapped = self.map_identifier(value, Level.STUDY)
            elif tag == SERIES_INSTANCE_UID:
                mapped = self.map_identifier(value, Level.SERIES)
            elif tag == SOP_INSTANCE_UID:
                mapped = self.map_identifier(value, Level.INSTANCE)
            elif tag in request.uids:
                if tag in (PATIENT_ID, PATIENT_NAME):
                    mapped = self.map_identifier(value, Level.PATIENT)
                elif (tag == REFERENCED_SOP_INSTANCE_UID and len(parents) == 2
                      and parents[0][0] == REFERENCED_FRAME_OF_REFERENCE_SEQUENCE
                      and parents[1][0] == RT_REFERENCED_STUDY_SEQUENCE):
                    mapped = self.map_identifier(value, Level.STUDY)  # RT-STRUCT: it references a study
                else:
                    mapped = self.map_identifier(value, Level.INSTANCE)
            else:
                continue
            ds[tag] = DataElement(tag, vr, mapped)

    def _default_remove(self, parents: list[tuple[int, int]], tag: int) -> bool:
        """``GetDefaultAction`` for a non-string element inside a sequence."""
        request = self.request
        if self._kept(parents, tag):
            return False
        if request.remove_private_tags and is_private(tag):
            return True
        return request.is_cleared(tag) or request.is_removed(tag)


def _element_text(element: DataElement) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin_1").rstrip("\x00 ")
    return str(value)


def _text(ds: Dataset, tag: int) -> str | None:
    element = ds.get(tag)
    return None if element is None else _element_text(element)


def _items_at(ds: Dataset, path: DicomPath) -> list[Dataset]:
    """The items that hold ``path.final`` (``FromDcmtkBridge::IDicomPathVisitor``)."""
    items = [ds]
    for tag, index in path.prefix:
        following = []
        for item in items:
            element = item.get(tag)
            if element is None or element.VR != "SQ" or not element.value:
                continue
            for position, child in enumerate(element.value):
                if index is None or index == position:
                    following.append(child)
        items = following
    return items


# Files.
def read_dataset(data: bytes) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Cannot parse the DICOM file: {exc}") from exc


def write_dataset(ds: Dataset, transfer_syntax: str | None = None) -> bytes:
    """The dataset as a DICOM file with a fresh file meta information group.

    Written as DCMTK writes it for Orthanc: sequences and items with explicit lengths, the group length
    elements the dataset had written again with their new values (pydicom alone drops them), and the
    values nobody changed kept byte for byte (even when SpecificCharacterSet is replaced). When the
    encoding changes (implicit/explicit VR, big endian), every element is decoded and re-encoded.
    """
    from broker.core.transcode import current_transfer_syntax

    syntax = UID(transfer_syntax or current_transfer_syntax(ds))
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    sop_class = _text(ds, SOP_CLASS_UID)
    sop_instance = _text(ds, SOP_INSTANCE_UID)
    if sop_class:
        meta.MediaStorageSOPClassUID = sop_class
    if sop_instance:
        meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    implicit = syntax == pydicom.uid.ImplicitVRLittleEndian
    little = syntax != pydicom.uid.ExplicitVRBigEndian
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if getattr(ds, "original_encoding", (None, None)) not in ((implicit, little), (None, None)):
                for _ in ds.iterall():  # raw values cannot be copied into another encoding
                    pass
            _explicit_lengths(ds)
            return _write(ds, meta, implicit, little, syntax == pydicom.uid.DeflatedExplicitVRLittleEndian)
    except OrthancError:
        raise
    except Exception as exc:
        raise OrthancError(ErrorCode.INTERNAL_ERROR, f"Cannot write the modified DICOM file: {exc}") from exc


def _explicit_lengths(ds: Dataset) -> None:
    """Sequences and items with explicit lengths (DCMTK's ``EET_ExplicitLength``)."""
    for tag in list(ds.keys()):
        stored = ds.get_item(tag)
        vr = stored.VR if stored is not None else None
        if not (vr == "SQ" or (vr is None and dictionary_vr_or_none(int(tag)) == "SQ")):
            continue
        element = ds[tag]
        if element.VR != "SQ":
            continue
        element.is_undefined_length = False
        for item in element.value or []:
            item.is_undefined_length_sequence_item = False
            _explicit_lengths(item)


def dictionary_vr_or_none(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _write(ds: Dataset, meta: FileMetaDataset, implicit: bool, little: bool, deflated: bool) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element, write_file_meta_info

    charset = ds.get(SPECIFIC_CHARACTER_SET)
    encodings = convert_encodings(charset.value if charset is not None and charset.value else None)
    with_length = {tag.group for tag in ds.keys() if tag.element == 0 and tag.group > 6}
    body = DicomBytesIO()
    body.is_implicit_VR, body.is_little_endian = implicit, little
    by_group: dict[int, list[BaseTag]] = {group: [] for group in with_length}  # DCMTK keeps an emptied group's length: 0
    for tag in sorted(ds.keys()):
        if tag.element != 0 or tag.group <= 6:
            by_group.setdefault(tag.group, []).append(tag)
    for group, tags in sorted(by_group.items()):
        part = DicomBytesIO()
        part.is_implicit_VR, part.is_little_endian = implicit, little
        for tag in tags:
            write_data_element(part, ds.get_item(tag), encodings)
        if group in with_length:
            write_data_element(body, DataElement(group << 16, "UL", len(part.getvalue())), encodings)
        body.write(part.getvalue())
    data = body.getvalue()
    if deflated:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    head = DicomBytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    return head.getvalue() + data


def modify_dataset(ds: Dataset, request: ModifyRequest, *, new_sop_instance_uid: bool = True,
                   modifier: Modifier | None = None) -> Dataset:
    (modifier or Modifier(request)).apply(ds, keep_sop_instance_uid=None if new_sop_instance_uid else True)
    return ds


def modify_instance_bytes(data: bytes, request: ModifyRequest, *, new_sop_instance_uid: bool = True,
                          modifier: Modifier | None = None, transcode: str | None = None) -> bytes:
    """Apply ``request`` to one DICOM file and return the modified file.

    ``new_sop_instance_uid``: True (Orthanc's rule at every level: the copy is a new instance) gives the
    copy a new SOPInstanceUID unless the request replaces it or keeps it (``Keep`` + ``Force``); False
    keeps the original one whatever the request says. ``modifier``: share one ``Modifier(request)``
    between the files of one resource so that their new UIDs are consistent. ``transcode``: a transfer
    syntax UID (``broker.core.transcode``). Raises ``OrthancError`` as Orthanc would (400 for a bad
    replacement value, ...).
    """
    ds = read_dataset(data)
    modify_dataset(ds, request, new_sop_instance_uid=new_sop_instance_uid, modifier=modifier)
    if transcode is not None:
        from broker.core.transcode import CannotTranscode, transcode_dataset

        try:
            transcode_dataset(ds, transcode)
        except CannotTranscode as exc:
            raise OrthancError(ErrorCode.INTERNAL_ERROR, str(exc)) from None
    return write_dataset(ds)

