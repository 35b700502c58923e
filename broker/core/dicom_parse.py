"""Reading the structure of a DICOM file, strictly and once.

Orthanc (through DCMTK) refuses a file whose structure is broken: a truncated value, a sequence
without its delimiter, a VR that is not a VR. pydicom reads such files without a word, so the store
does not use it on the ingest path: ``parse_dicom`` walks every element header, checks that each value
fits in its container, descends into sequences, and keeps the raw bytes of the values that can be
shown (strings and numbers; never pixel data or other binary values). ``broker.core.dicom_json``
turns that tree into Orthanc's JSON. A full pydicom ``Dataset`` is built only when someone asks for
it (``IncomingInstance.dataset``).

Transfer syntax: from the file meta information; for a raw dataset without meta information (no
``DICM`` prefix), guessed from the first element the way DCMTK does (explicit or implicit VR, little
or big endian). Deflated transfer syntaxes are inflated first.

Bounds (``broker.core.bounds``): every 8 bytes can be an element, and each element is an object of
about 90 bytes, so the elements and sequence items of one file are counted against
``InputBounds.element_budget``; sequences nest at most ``_MAX_DEPTH`` levels (the parser recurses);
a deflated dataset is inflated up to ``InputBounds.inflate`` only. Past a bound the file is refused
like a broken one, early: the work done is at most what the bound allows.
"""
from __future__ import annotations

import struct
import sys
import zlib
from dataclasses import dataclass, field

from broker.core.bounds import BYTES_PER_EXTRA_ELEMENT, InputBounds, InputTooLarge, inflate
from broker.core.dictionary import dictionary_vr
from broker.core.tags import PIXEL_DATA, PIXEL_REPRESENTATION, TRANSFER_SYNTAX_UID

IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})

_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 64

# Explicit VRs with a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
KNOWN_VRS = _LONG_VRS | frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
                                   "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"})
# Values never shown (Orthanc answers null for them), so their bytes are not copied.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SV", "UV"})
# UN values are shown only when the dictionary gives a string VR and they fit in Orthanc's 256 bytes.
_MAX_KEPT_UN = 256


class DicomFormatError(ValueError):
    """The bytes are not a well-formed DICOM file; the message says where it breaks."""


@dataclass(slots=True)
class Element:
    tag: int
    vr: str
    value: bytes | None = None            # raw value of a leaf (None for binary VRs)
    items: list[list[Element]] | None = None  # the items of a sequence
    little: bool = True

    @property
    def is_sequence(self) -> bool:
        return self.items is not None


@dataclass(slots=True)
class DicomFile:
    elements: list[Element]               # the top-level dataset, in file order
    transfer_syntax: str
    meta: dict[int, bytes] = field(default_factory=dict)
    meta_elements: list[Element] = field(default_factory=list)  # the file meta information (group 0002)
    has_pixel_data: bool = False
    pixel_data_offset: int | None = None  # start of the PixelData element header in the file

    def top_level(self) -> dict[int, Element]:
        return {element.tag: element for element in self.elements}


_DEFAULT_BOUNDS = InputBounds()


def parse_dicom(data: bytes, bounds: InputBounds = _DEFAULT_BOUNDS) -> DicomFile:
    """Check the structure of ``data`` and return its element tree, or raise ``DicomFormatError``
    (also when ``data`` passes one of ``bounds``: ``UNBOUNDED`` is for files already stored)."""
    budget = _Budget(bounds.element_budget(len(data)))
    if len(data) >= 132 and data[128:132] == b"DICM":
        position = 132
    elif data[:4] == b"DICM":
        position = 4
    else:
        position = 0
    meta: dict[int, bytes] = {}
    meta_elements: list[Element] = []
    if len(data) - position >= 8 and data[position:position + 2] == b"\x02\x00":
        meta_reader = _Reader(data, little=True, implicit=False, budget=budget)
        meta_elements, position = meta_reader.dataset(position, len(data), depth=0, stop_group=0x0002)
        meta = {element.tag: element.value or b"" for element in meta_elements}
    elif position:
        raise DicomFormatError("the DICM prefix is not followed by file meta information (group 0002)")

    transfer_syntax = _decode_uid(meta.get(TRANSFER_SYNTAX_UID))
    if transfer_syntax:
        little = transfer_syntax != EXPLICIT_BIG_ENDIAN
        implicit = transfer_syntax == IMPLICIT_LITTLE_ENDIAN
    else:
        little, implicit = _guess_encoding(data, position)
        transfer_syntax = (IMPLICIT_LITTLE_ENDIAN if implicit
                           else EXPLICIT_LITTLE_ENDIAN if little else EXPLICIT_BIG_ENDIAN)

    buffer, base = data, position
    if transfer_syntax in DEFLATED_TRANSFER_SYNTAXES:
        try:
            buffer = inflate(memoryview(data)[position:], bounds.inflate, "the deflated dataset")
        except (zlib.error, EOFError, InputTooLarge) as exc:
            raise DicomFormatError(f"the deflated dataset cannot be inflated: {exc}") from None
        base = 0
    if base >= len(buffer):
        raise DicomFormatError("the file contains no dataset")
    reader = _Reader(buffer, little=little, implicit=implicit, budget=budget)
    elements, _ = reader.dataset(base, len(buffer), depth=0)
    pixel_offset = reader.pixel_data_offset
    if buffer is not data:
        pixel_offset = None
    return DicomFile(elements, transfer_syntax, meta, meta_elements,
                     has_pixel_data=reader.pixel_data_offset is not None, pixel_data_offset=pixel_offset)


def _decode_uid(raw: bytes | None) -> str:
    if not raw:
        return ""
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def _guess_encoding(data: bytes, position: int) -> tuple[bool, bool]:
    """(little endian, implicit VR) of a dataset without meta information, from its first element."""
    if len(data) - position < 8:
        raise DicomFormatError("the file is too short to hold a DICOM element")
    little = int.from_bytes(data[position:position + 2], "little") <= int.from_bytes(data[position:position + 2], "big")
    explicit = data[position + 4:position + 6].decode("latin-1") in KNOWN_VRS
    if not little and not explicit:
        raise DicomFormatError("the dataset looks like implicit VR big endian, which does not exist")
    return little, not explicit


class _Budget:
    """Elements and items one file may still hold, shared by the readers of that file."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.left = sys.maxsize if limit is None else limit

    def exhausted(self) -> DicomFormatError:
        return DicomFormatError(f"the file holds more than {self.limit} elements and sequence items "
                                f"(MaximumDicomElements, or one per {BYTES_PER_EXTRA_ELEMENT} bytes of a larger file)")


class _Reader:
    """Walks elements of one encoding over one buffer; raises DicomFormatError on the first flaw."""

    def __init__(self, buffer: bytes, *, little: bool, implicit: bool, budget: _Budget) -> None:
        self.buffer = buffer
        self.budget = budget
        self.little = little
        self.implicit = implicit
        endian = "<" if little else ">"
        self._tag_length = struct.Struct(endian + "HHI").unpack_from
        self._tag_vr_short = struct.Struct(endian + "HH2sH").unpack_from
        self._u32 = struct.Struct(endian + "I").unpack_from
        self._u16 = struct.Struct(endian + "H").unpack_from
        self.pixel_data_offset: int | None = None
        self._implicit_le: _Reader | None = None

    def dataset(self, position: int, end: int, *, depth: int, in_undefined_item: bool = False,
                stop_group: int | None = None) -> tuple[list[Element], int]:
        """Elements from ``position`` up to ``end`` (or the item delimiter of an undefined-length item)."""
        if depth > _MAX_DEPTH:
            raise DicomFormatError(f"sequences are nested more than {_MAX_DEPTH} levels deep")
        buffer = self.buffer
        budget = self.budget
        left = budget.left  # counted in a local: this loop is the hot path of ingest
        elements: list[Element] = []
        creators: dict[tuple[int, int], str] = {}
        pixel_representation = 0
        while position < end:
            if end - position < 8:
                raise DicomFormatError(f"truncated element header at offset {position}")
            group, elem, length = self._tag_length(buffer, position)
            tag = (group << 16) | elem
            if stop_group is not None and group != stop_group:
                break
            left -= 1
            if left < 0:
                raise budget.exhausted()
            if tag == _ITEM_DELIMITER:
                if in_undefined_item:
                    budget.left = left
                    return elements, position + 8
                raise DicomFormatError(f"unexpected item delimiter at offset {position}")
            if group == 0xFFFE:
                raise DicomFormatError(f"unexpected item tag ({group:04X},{elem:04X}) at offset {position}")

            if self.implicit:
                vr = self._implicit_vr(tag, creators, pixel_representation)
                header = 8
            else:
                _, _, vr_bytes, short_length = self._tag_vr_short(buffer, position)
                if not (65 <= vr_bytes[0] <= 90 and 65 <= vr_bytes[1] <= 90):
                    raise DicomFormatError(
                        f"invalid VR {vr_bytes!r} for tag ({group:04X},{elem:04X}) at offset {position}")
                vr = vr_bytes.decode("ascii")
                if vr in _LONG_VRS:
                    if end - position < 12:
                        raise DicomFormatError(f"truncated element header at offset {position}")
                    (length,) = self._u32(buffer, position + 8)
                    header = 12
                else:
                    length = short_length
                    header = 8

            start = position + header
            element = Element(tag, vr, little=self.little)
            if depth == 0 and tag == PIXEL_DATA:
                self.pixel_data_offset = position
            if length == _UNDEFINED:
                if vr == "SQ" or (vr == "UN" and tag != PIXEL_DATA) or (self.implicit and vr not in BINARY_VRS):
                    reader = self if vr == "SQ" or self.implicit else self._implicit_little_endian()
                    budget.left = left
                    element.items, position = reader._sequence(start, end, depth, undefined=True)
                    left = budget.left
                    element.vr = "SQ"
                elif vr in BINARY_VRS or vr == "UN":
                    position = self._fragments(start, end)
                else:
                    raise DicomFormatError(f"undefined length for VR {vr} in tag ({group:04X},{elem:04X})")
            else:
                stop = start + length
                if stop > end:
                    raise DicomFormatError(
                        f"value of tag ({group:04X},{elem:04X}) needs {length} bytes at offset {start}, "
                        f"only {end - start} remain")
                if vr == "SQ":
                    budget.left = left
                    element.items, _ = self._sequence(start, stop, depth, undefined=False)
                    left = budget.left
                elif vr not in BINARY_VRS and (vr != "UN" or length <= _MAX_KEPT_UN):
                    element.value = buffer[start:stop]
                    if group & 1 and 0x0010 <= elem <= 0x00FF and vr == "LO":
                        creators[(group, elem)] = _creator_name(element.value)
                    elif tag == PIXEL_REPRESENTATION and length >= 2:
                        (pixel_representation,) = self._u16(buffer, start)
                position = stop
            elements.append(element)
        if in_undefined_item:
            raise DicomFormatError("an item of undefined length has no item delimiter")
        budget.left = left
        return elements, position

    def _sequence(self, position: int, end: int, depth: int, *, undefined: bool) -> tuple[list[list[Element]], int]:
        buffer = self.buffer
        items: list[list[Element]] = []
        while position < end:
            if end - position < 8:
                raise DicomFormatError(f"truncated item header at offset {position}")
            group, elem, length = self._tag_length(buffer, position)
            tag = (group << 16) | elem
            if tag == _SEQUENCE_DELIMITER and undefined:
                return items, position + 8
            if tag != _ITEM:
                raise DicomFormatError(f"expected an item, found ({group:04X},{elem:04X}) at offset {position}")
            self.budget.left -= 1
            if self.budget.left < 0:
                raise self.budget.exhausted()
            start = position + 8
            if length == _UNDEFINED:
                item, position = self.dataset(start, end, depth=depth + 1, in_undefined_item=True)
            else:
                if start + length > end:
                    raise DicomFormatError(f"item at offset {position} needs {length} bytes, only {end - start} remain")
                item, _ = self.dataset(start, start + length, depth=depth + 1)
                position = start + length
            items.append(item)
        if undefined:
            raise DicomFormatError("a sequence of undefined length has no sequence delimiter")
        return items, position

    def _fragments(self, position: int, end: int) -> int:
        """Skip the fragments of encapsulated pixel data up to the sequence delimiter."""
        buffer = self.buffer
        while end - position >= 8:
            group, elem, length = self._tag_length(buffer, position)
            tag = (group << 16) | elem
            if tag == _SEQUENCE_DELIMITER:
                return position + 8
            if tag != _ITEM or length == _UNDEFINED or position + 8 + length > end:
                raise DicomFormatError(f"broken fragment of encapsulated pixel data at offset {position}")
            position += 8 + length
        raise DicomFormatError("encapsulated pixel data has no sequence delimiter")

    def _implicit_vr(self, tag: int, creators: dict[tuple[int, int], str], pixel_representation: int) -> str:
        group, elem = tag >> 16, tag & 0xFFFF
        creator = creators.get((group, elem >> 8)) if group & 1 and elem >= 0x1000 else None
        vr = dictionary_vr(tag, creator) if (creator is not None or not group & 1 or elem <= 0x00FF) else "UN"
        if len(vr) == 2 and vr in KNOWN_VRS:
            return vr
        if vr in ("US or SS", "xs"):
            return "SS" if pixel_representation == 1 else "US"
        if vr == "up":
            return "UL"
        return "OW"  # "OB or OW", "US or SS or OW", DCMTK's ox/px/lt: binary either way

    def _implicit_little_endian(self) -> _Reader:
        """Reader for the content of an undefined-length UN element (implicit VR little endian)."""
        if self._implicit_le is None:
            self._implicit_le = _Reader(self.buffer, little=True, implicit=True, budget=self.budget)
        return self._implicit_le


def _creator_name(raw: bytes) -> str:
    return raw.rstrip(b" ").split(b"\x00", 1)[0].decode("latin-1")
