"""From JSON to DICOM elements (Orthanc's ``FromDcmtkBridge::FromJson``): ``ElementFactory`` builds the
element that replaces a tag, with the VR the dictionary (or the private creator) gives it and the
character set of its dataset.

Replacement values are validated here, when they are applied, exactly as Orthanc: a number where a
string is expected is ``BadParameterType``, an out-of-range ``Rows`` is ``BadFileFormat``, so a Lua
``ModifyInstance`` whose numeric-looking strings became numbers fails at run time, not at submission.
"""
from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from broker.core.dicom_json import STRING_VRS
from broker.core.dicom_parse import Element, parse_dicom
from broker.core.dictionary import private_entry
from broker.core.encodings import Encoding
from broker.core.tags import PIXEL_DATA, SPECIFIC_CHARACTER_SET, format_tag, is_private, parse_tag
from broker.errors import ErrorCode, OrthancError

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INTEGER_LIMITS = {"US": (0, 0xFFFF), "SS": (-0x8000, 0x7FFF), "UL": (0, 0xFFFFFFFF),
                   "SL": (-0x80000000, 0x7FFFFFFF), "UV": (0, 2**64 - 1), "SV": (-2**63, 2**63 - 1)}
_DIGITS = re.compile(r"^([+-]?)([0-9]+)$")
_FLOAT = re.compile(r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)$", re.IGNORECASE)
DATA_URI_BINARY = "data:application/octet-stream;base64,"

log = logging.getLogger("luabroker.dicom")


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
                        f'While creating a DICOM instance, tag ({format_tag(tag)}) has out-of-range value: "{text}"')


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
                raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {format_tag(tag)}")
            return DataElement(tag, "SQ", Sequence([self._item(entry) for entry in value]))
        if value is None:
            text = ""
        elif isinstance(value, str):
            text = value
        else:
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {format_tag(tag)}")
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
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT,
                                   f"Badly formatted data URI for tag {format_tag(tag)}") from None
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


def dataset_of(values: Mapping[int, str | None], encoding: Encoding, *, permissive: bool) -> Dataset:
    """A flat map of tags (Orthanc's ``DicomMap``) as a dataset, as Orthanc's ``ParsedDicomFile(map,
    encoding, permissive)`` builds it for a C-FIND (the query it sends, the answers it sends or keeps):
    in ``encoding``, with its Specific Character Set, dropping what the encoding cannot hold; a null
    value is left out, an empty one is an empty element of its VR (a number included). A value its VR
    cannot hold raises ``OrthancError``, or is left out when ``permissive``."""
    ds = Dataset()
    if encoding.term:
        ds.SpecificCharacterSet = encoding.term
    factory = ElementFactory(ds, "")
    factory.codec = encoding.codec  # pydicom reads ISO_IR 6 as Latin-1, Orthanc as ASCII
    for tag, value in sorted(values.items()):
        if tag == SPECIFIC_CHARACTER_SET or value is None:
            continue
        try:
            ds[tag] = DataElement(tag, factory.vr_of(tag, ds), None) if value == "" else factory.make(tag, value, ds)
        except OrthancError as exc:
            if not permissive:
                raise
            log.debug("Tag %s left out of a C-FIND dataset: %s", format_tag(tag), exc)
    return ds


def elements_of(ds: Dataset) -> list[Element]:
    """A pydicom dataset (a C-FIND identifier received) as this project's parser reads a file, so that
    the one set of readers (``summary``, ``dataset_to_json``) shows it: written in Explicit VR Little
    Endian, then parsed."""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return parse_dicom(out.getvalue()).elements
