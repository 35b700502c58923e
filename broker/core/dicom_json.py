"""Orthanc's JSON views of a DICOM dataset, built from the tree of ``broker.core.dicom_parse``.

Three formats, as in Orthanc's ``DicomToJsonFormat``:

* ``full`` (``/instances/{id}/tags``): ``{"0010,0010": {"Name": "PatientName", "Type": "String",
  "Value": "..."}}``. ``Type`` is ``String``, ``Sequence`` (``Value`` is a list of such objects),
  ``Null`` (binary or unreadable value) or ``TooLong`` (more than 256 UTF-8 bytes). A private data
  element whose block has a creator also carries ``"PrivateCreator"``.
* ``human`` (``/simplified-tags``, the ``tags`` of Lua callbacks): ``{"PatientName": "..."}``;
  sequences are lists of such objects; null, binary and too long values are ``None``. When two tags
  share a name (``Unknown Tag & Data``, ``PrivateCreator``) the last one in tag order wins.
* ``short`` (``?short``): like ``human``, keyed by ``gggg,eeee``.

Only the top-level tags up to PixelData are included (Orthanc's ``StopAfterPixelData``), and PixelData
itself is null. Values follow DCMTK: trailing padding removed, a string stops at its first NUL byte,
the Specific Character Set (default Latin-1) decoded to UTF-8, binary numbers printed as Orthanc prints them
(``%.17g`` for floats, even single precision ones) and joined with ``\\``, an attribute tag as ``gggg,eeee``.
"""
from __future__ import annotations

import enum
import functools
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes

from broker.core.dicom_parse import Element
from broker.core.dictionary import private_entry, public_entry, tag_name
from broker.core.encodings import LATIN1, Encoding
from broker.core.tags import PIXEL_DATA, SPECIFIC_CHARACTER_SET

MAX_STRING_LENGTH = 256  # ORTHANC_MAXIMUM_TAG_LENGTH

#: The VRs whose values are text (DCMTK's ``isaString()``): shown as strings, and seen as text by the
#: modification and anonymization.
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
                        "UC", "UI", "UR", "UT"})
#: VR -> (struct code, size, rendering of one value)
_NUMBERS: dict[str, tuple[str, int, Callable[[Any], str]]] = {
    "US": ("H", 2, str), "SS": ("h", 2, str), "UL": ("I", 4, str), "SL": ("i", 4, str),
    "FL": ("f", 4, lambda v: f"{v:.17g}"), "FD": ("d", 8, lambda v: f"{v:.17g}")}
_PN_DELIMITERS = {0x5C, 0x3D, 0x5E}
_VALUE_DELIMITERS = {0x5C}


class JsonFormat(enum.Enum):
    FULL = "full"
    HUMAN = "human"
    SHORT = "short"


class Charset:
    """The decoder of one dataset's strings, from its Specific Character Set (0008,0005); ``default``
    (Orthanc's ``DefaultEncoding``) when it has none or an empty one."""

    def __init__(self, specific_character_set: bytes | None, default: Encoding = LATIN1) -> None:
        text = (specific_character_set or b"").rstrip(b" \x00").decode("ascii", "replace")
        terms = [term.strip() for term in text.split("\\")]
        if not any(terms):
            self.encodings = [default.codec]
        else:
            try:
                self.encodings = convert_encodings(terms)
            except LookupError:
                self.encodings = ["ascii"]
        self._single = self.encodings[0] if len(self.encodings) == 1 else None

    def plain(self, raw: bytes) -> bool:
        """Whether ``raw`` reads as ASCII: 7-bit, and no ISO 2022 escape sequence (those are 7-bit too)."""
        return raw.isascii() and (self._single is not None or b"\x1b" not in raw)

    def decode(self, raw: bytes, vr: str) -> str:
        if self.plain(raw):
            return raw.decode("ascii")
        if self._single is not None:
            return raw.decode(self._single, "replace")
        return decode_bytes(raw, self.encodings, _PN_DELIMITERS if vr == "PN" else _VALUE_DELIMITERS)

    @classmethod
    def of(cls, elements: Iterable[Element], default: Encoding = LATIN1) -> Charset:
        for element in elements:
            if element.tag == SPECIFIC_CHARACTER_SET:
                return cls(element.value or b"", default)
        return cls(None, default)


def leaf_value(element: Element, charset: Charset, creator: str | None = None) -> str | None:
    """The value Orthanc reads from a leaf element (no length limit), or None for a null value."""
    vr = element.vr
    raw = element.value
    if vr in STRING_VRS:
        if not raw:
            return ""
        raw = raw.rstrip(b"\x00" if vr == "UI" else b" ")
        nul = raw.find(b"\x00")
        if nul >= 0:
            raw = raw[:nul]
        return charset.decode(raw, vr)
    if raw is None:
        return None
    number = _NUMBERS.get(vr)
    if number is not None:
        code, size, render = number
        count = len(raw) // size
        if count == 0:
            return None
        if len(raw) % size or count == 1:
            count = 1
        values = struct.unpack_from(("<" if element.little else ">") + code * count, raw)
        return "\\".join(render(value) for value in values)
    if vr == "AT":
        if len(raw) < 4:
            return None
        group, elem = struct.unpack_from("<HH" if element.little else ">HH", raw)
        return f"{group:04x},{elem:04x}"
    if vr == "UN" and raw.isascii():
        # DCMTK keeps UN; Orthanc shows it anyway, unstripped, when the dictionary says it is a string.
        entry = _dictionary_entry(element.tag, creator)
        if entry is not None and entry[1] in STRING_VRS:
            return raw.split(b"\x00", 1)[0].decode("ascii")
    return None


def _dictionary_entry(tag: int, creator: str | None) -> tuple[str, str] | None:
    return private_entry(tag, creator) if creator is not None else public_entry(tag)


def _too_long(value: str) -> bool:
    return len(value) > MAX_STRING_LENGTH // 4 and len(value.encode("utf-8")) > MAX_STRING_LENGTH


def _creators(elements: list[Element]) -> dict[tuple[int, int], str]:
    """The private creators of one dataset: (group, block) → creator. DCMTK only honours LO ones."""
    creators: dict[tuple[int, int], str] = {}
    for element in elements:
        group, elem = element.tag >> 16, element.tag & 0xFFFF
        if group & 1 and 0x0010 <= elem <= 0x00FF and element.vr == "LO" and element.value is not None:
            creators[(group, elem)] = element.value.rstrip(b" ").split(b"\x00", 1)[0].decode("latin-1")
    return creators


def dataset_to_json(elements: list[Element], fmt: JsonFormat, charset: Charset | None = None,
                    *, top_level: bool = True, ignore_length: frozenset[int] = frozenset()) -> dict[str, Any]:
    """One dataset (the file's, or an item's) in the given format; the tags of ``ignore_length``
    (Orthanc's ``?ignore-length=``) are shown however long they are."""
    if charset is None:
        charset = Charset.of(elements)
    creators = _creators(elements)
    full, human = fmt is JsonFormat.FULL, fmt is JsonFormat.HUMAN
    result: dict[str, Any] = {}
    # The loop is the ingest path's hottest (simplified tags of every instance): string values, the
    # vast majority, are decoded inline; everything else goes through leaf_value.
    for element in sorted(elements, key=_tag_of):
        tag = element.tag
        group = tag >> 16
        if top_level and (tag > PIXEL_DATA or group == 0x0002):
            continue
        elem = tag & 0xFFFF
        creator = creators.get((group, elem >> 8)) if group & 1 and elem >= 0x1000 else None
        name = tag_name(tag, creator) if fmt is not JsonFormat.SHORT else ""
        key = name if human else tag_key(tag)

        if element.items is not None:
            items = [dataset_to_json(item, fmt, charset, top_level=False, ignore_length=ignore_length)
                     for item in element.items]
            result[key] = {"Name": name, "Type": "Sequence", "Value": items} if full else items
            continue

        vr = element.vr
        raw = element.value
        if vr in STRING_VRS:
            if raw:
                raw = raw.rstrip(b"\x00" if vr == "UI" else b" ")
                if b"\x00" in raw:
                    raw = raw[:raw.index(b"\x00")]
                if charset.plain(raw):
                    value: str | None = raw.decode("ascii")
                    too_long = len(raw) > MAX_STRING_LENGTH
                else:
                    value = charset.decode(raw, vr)
                    too_long = _too_long(value)
            else:
                value, too_long = "", False
        else:
            value = leaf_value(element, charset, creator)
            too_long = value is not None and _too_long(value)
        if too_long and tag in ignore_length:
            too_long = False

        if not full:
            result[key] = None if too_long else value
            continue
        node: dict[str, Any] = {"Name": name}
        if creator is not None:
            node["PrivateCreator"] = creator
        if value is None:
            node["Type"], node["Value"] = "Null", None
        elif too_long:
            node["Type"], node["Value"] = "TooLong", None
        else:
            node["Type"], node["Value"] = "String", value
        result[key] = node
    return result


def _tag_of(element: Element) -> int:
    return element.tag


@functools.lru_cache(maxsize=65536)
def tag_key(tag: int) -> str:
    """``gggg,eeee`` in lower case, Orthanc's key for a tag."""
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def summary(elements: list[Element], tags: Iterable[int] | None = None,
            charset: Charset | None = None, *, truncate: bool = True) -> dict[int, str | None]:
    """Top-level leaf values as Orthanc's "DICOM summary": too long (> 256 bytes, unless not
    ``truncate``) or binary → None.

    ``tags`` restricts the result to the tags of interest (main tags, identifiers).
    """
    if charset is None:
        charset = Charset.of(elements)
    wanted = None if tags is None else frozenset(tags)
    creators = None
    result: dict[int, str | None] = {}
    for element in elements:
        if element.items is not None or (wanted is not None and element.tag not in wanted):
            continue
        creator = None
        if element.tag >> 16 & 1:
            if creators is None:
                creators = _creators(elements)
            elem = element.tag & 0xFFFF
            creator = creators.get((element.tag >> 16, elem >> 8)) if elem >= 0x1000 else None
        value = leaf_value(element, charset, creator)
        result[element.tag] = None if value is None or (truncate and _too_long(value)) else value
    return result


def map_to_json(values: Mapping[int, str | None], fmt: JsonFormat) -> dict[str, Any]:
    """A flat map of tags (Orthanc's ``DicomMap``: a C-FIND query or answer) in the given format, as
    Orthanc's ``FromDcmtkBridge::ToJson``: a None value is ``Null``, any other a ``String``."""
    result: dict[str, Any] = {}
    for tag, value in sorted(values.items()):
        if fmt is JsonFormat.SHORT:
            result[tag_key(tag)] = value
        elif fmt is JsonFormat.HUMAN:
            result[tag_name(tag, None)] = value
        else:
            result[tag_key(tag)] = {"Name": tag_name(tag, None), "Type": "Null" if value is None else "String",
                                    "Value": value}
    return result


def simplify(full: dict[str, Any]) -> dict[str, Any]:
    """``full`` JSON → ``human`` JSON (Orthanc's ``SimplifyDicomAsJson``)."""
    result: dict[str, Any] = {}
    for key in sorted(full):
        node = full[key]
        kind = node["Type"]
        if kind == "String":
            result[node["Name"]] = node["Value"]
        elif kind == "Sequence":
            result[node["Name"]] = [simplify(item) for item in node["Value"]]
        else:
            result[node["Name"]] = None
    return result
