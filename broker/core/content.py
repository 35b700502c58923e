"""``/instances/{id}/content/...``: the raw DICOM dataset walked by a path, as Orthanc's
``ParsedDicomFile::SendPathValue`` answers it.

A path alternates tags and item indexes: ``0008-1140/0/0008-1155``. A tag is written as Orthanc's
``ParseTag`` reads it (``0010-0010``, ``0010,0010``, ``00100010`` or a keyword). An even number of
components (none included) names a dataset: the answer lists its tags as ``gggg-eeee``, file meta
information excluded. An odd number names an element: a sequence lists its items (``"0"``, ``"1"``,
…); any other element answers its raw value, padding included. PixelData has blocks: the items of
encapsulated pixel data (item 0 is the Basic Offset Table), or one block for native pixel data.
``None`` means nothing is there (Orthanc then answers 404).
"""
from __future__ import annotations

import struct
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from broker.core.dicom_json import STRING_VRS
from broker.core.dictionary import dictionary_vr
from broker.core.tags import PIXEL_DATA, parse_tag

_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD

Content = list[str] | bytes | None


def content_at(ds: Dataset, path: list[str]) -> Content:
    """What Orthanc answers for ``path`` in ``ds`` (freshly read: its values still raw), a list (JSON),
    raw bytes, or None."""
    if len(path) in (1, 2) and parse_tag(path[0]) == PIXEL_DATA:
        return _pixel_data(ds, path[1] if len(path) == 2 else None)
    dataset = ds
    for position in range(len(path) // 2):
        index = _index(path[2 * position + 1])
        tag = parse_tag(path[2 * position])
        if index is None or not _is_sequence(dataset, tag) or index >= len(dataset[tag].value):
            return None
        dataset = dataset[tag].value[index]
    if len(path) % 2 == 0:
        return [f"{tag >> 16:04x}-{tag & 0xFFFF:04x}" for tag in sorted(int(t) for t in dataset.keys())]
    tag = parse_tag(path[-1])
    raw = dataset.get_item(tag)
    if raw is None:
        return None
    vr = _vr(raw)
    if vr == "SQ":
        return [str(i) for i in range(len(dataset[tag].value))]
    # As DCMTK holds values: strings without their trailing padding, and every value of an even length.
    value = _raw_bytes(raw)
    pad = b" " if vr in STRING_VRS and vr != "UI" else b"\x00"
    if vr in STRING_VRS:
        value = value.rstrip(pad)
    return value + pad * (len(value) % 2)


def _vr(raw: RawDataElement | DataElement) -> str:
    """The element's VR; an implicit VR file leaves it to the dictionary."""
    return raw.VR or dictionary_vr(int(raw.tag), None)


def _is_sequence(ds: Dataset, tag: int) -> bool:
    raw = ds.get_item(tag)
    return raw is not None and _vr(raw) == "SQ"


def _index(text: str) -> int | None:
    """``boost::lexical_cast<size_t>``: digits only."""
    return int(text) if text.isdigit() else None


def _raw_bytes(element: RawDataElement | DataElement) -> bytes:
    """The value's bytes as in the file: pydicom keeps them raw until someone reads the value."""
    value = element.value
    if isinstance(value, bytes):
        return value
    return b"" if value is None else str(value).encode("utf-8")


def _fragments(value: bytes, little: bool) -> list[bytes]:
    """The items of encapsulated pixel data, Basic Offset Table first."""
    items: list[bytes] = []
    position = 0
    code = "<HHI" if little else ">HHI"
    while position + 8 <= len(value):
        group, element, length = struct.unpack_from(code, value, position)
        tag = (group << 16) | element
        position += 8
        if tag == _SEQUENCE_DELIMITER or tag != _ITEM:
            break
        items.append(value[position:position + length])
        position += length
    return items


def _pixel_data(ds: Dataset, block: str | None) -> Content:
    raw: Any = ds.get_item(PIXEL_DATA)
    if raw is None:
        return None
    value = bytes(raw.value or b"")
    encapsulated = bool(getattr(raw, "is_undefined_length", False)) or (
        isinstance(raw, RawDataElement) and raw.length == 0xFFFFFFFF)
    blocks = _fragments(value, getattr(ds, "original_encoding", (False, True))[1] is not False) \
        if encapsulated else [value]
    if block is None:
        return [str(i) for i in range(len(blocks))]
    index = _index(block)
    return blocks[index] if index is not None and index < len(blocks) else None
