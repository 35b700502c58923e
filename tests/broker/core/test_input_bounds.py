"""Bounds on input (issue 7, finding 3): what one file may cost the parser, and inflating within bounds."""
from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import pydicom
import pytest

from broker.core.bounds import MIB, RATIO_GRACE, InflateBound, InputBounds, InputTooLarge, inflate
from broker.core.dicom_json import JsonFormat
from broker.core.dicom_parse import DicomFormatError, parse_dicom
from broker.core.origin import Origin
from broker.core.store import Store
from broker.errors import ErrorCode, OrthancError
from tests.support import dicom_samples as samples

REST = Origin.rest("127.0.0.1", "")
DEFLATED = "1.2.840.10008.1.2.1.99"


def explicit(tag: int, vr: bytes, value: bytes = b"", length: int | None = None) -> bytes:
    """One explicit VR little endian element."""
    length = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return head + struct.pack("<HI", 0, length) + value
    return head + struct.pack("<H", length) + value


def part10(dataset: bytes, transfer_syntax: str) -> bytes:
    """Preamble, DICM and a minimal file meta group around ``dataset`` (bytes as they go in the file)."""
    uid = transfer_syntax.encode() + (b"\x00" if len(transfer_syntax) % 2 else b"")
    return b"\x00" * 128 + b"DICM" + explicit(0x00020010, b"UI", uid) + dataset


def nested(depth: int) -> bytes:
    """The elements an instance needs, then sequences that nest ``depth`` levels deep."""
    content = b""
    for level in range(depth):
        inner = explicit(0x0040A010, b"CS", b"CONTAINS") if level == 0 else b""
        item = inner + content
        content = explicit(0x0040A730, b"SQ", struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item)
    return (explicit(0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\x00") + explicit(0x00080018, b"UI", b"1.2.3.9\x00")
            + explicit(0x00100020, b"LO", b"PID ") + explicit(0x0020000D, b"UI", b"1.2.3.10")
            + explicit(0x0020000E, b"UI", b"1.2.3.11") + content)


# The element budget.
def test_zeros_are_refused_once_the_element_budget_is_spent() -> None:
    # 12 MiB of zeros read as 1.5 million empty implicit VR elements: past the default budget.
    with pytest.raises(DicomFormatError, match="elements and sequence items"):
        parse_dicom(bytes(12 * MIB))


def test_store_answers_bad_file_format_for_zeros_and_stores_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    try:
        with pytest.raises(OrthancError) as refused:
            store.store_instance(bytes(12 * MIB), REST)
        assert refused.value.code is ErrorCode.BAD_FILE_FORMAT and refused.value.http_status == 400
        assert store.statistics().count_instances == 0
    finally:
        store.close()


def test_empty_sequence_items_count_against_the_budget() -> None:
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 0) * 1_100_000
    dataset = explicit(0x0040A730, b"SQ", items)
    with pytest.raises(DicomFormatError, match="elements and sequence items"):
        parse_dicom(part10(dataset, "1.2.840.10008.1.2.1"))


def test_file_meta_elements_count_against_the_budget() -> None:
    meta = explicit(0x00020000, b"UL") * 1_100_000
    with pytest.raises(DicomFormatError, match="elements and sequence items"):
        parse_dicom(b"\x00" * 128 + b"DICM" + meta + explicit(0x00100020, b"LO", b"PID "))


def test_a_configured_budget_is_applied_and_real_files_fit_the_default() -> None:
    data = samples.sample_file("rtplan.dcm")
    parse_dicom(data)
    with pytest.raises(DicomFormatError, match="more than 10 elements"):
        parse_dicom(data, InputBounds(max_elements=10))


def test_a_large_file_may_hold_one_element_per_256_bytes_past_the_budget() -> None:
    bounds = InputBounds(max_elements=10)
    assert bounds.element_budget(1000) == 10
    assert bounds.element_budget(256 * 1000) == 1000
    assert InputBounds(max_elements=None).element_budget(10**9) is None


def test_files_already_stored_stay_readable_when_the_budget_is_lowered(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    instance = store.store_instance(samples.sample_file("rtplan.dcm"), REST).instance_id
    store.close()
    lowered = Store(tmp_path / "store", bounds=InputBounds(max_elements=10))
    try:
        assert lowered.instance_tags(instance, JsonFormat.SHORT)
        with pytest.raises(OrthancError) as refused:
            lowered.store_instance(samples.sample_file("CT_small.dcm"), REST)
        assert refused.value.code is ErrorCode.BAD_FILE_FORMAT
    finally:
        lowered.close()


# Nesting depth.
def test_sequences_nested_64_deep_are_read_and_stored(tmp_path: Path) -> None:
    data = part10(nested(64), "1.2.840.10008.1.2.1")
    store = Store(tmp_path / "store")
    try:
        instance = store.store_instance(data, REST).instance_id
        assert store.instance_tags(instance, JsonFormat.FULL)
        pydicom.dcmread(io.BytesIO(data), force=True).walk(lambda ds, element: None)
    finally:
        store.close()


def test_sequences_nested_deeper_than_64_are_refused() -> None:
    with pytest.raises(DicomFormatError, match="nested more than 64"):
        parse_dicom(part10(nested(66), "1.2.840.10008.1.2.1"))


# Deflated transfer syntax.
def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def test_deflated_dataset_that_inflates_past_the_bound_is_refused() -> None:
    # 80 MiB of pixel data deflated to 80 KiB: a ratio of 1000, past the grace size.
    dataset = nested(0) + explicit(0x7FE00010, b"OB", bytes(80 * MIB))
    with pytest.raises(DicomFormatError, match="inflates to more than"):
        parse_dicom(part10(_deflate(dataset), DEFLATED))


def test_deflated_dataset_within_the_bound_is_read() -> None:
    dataset = nested(1) + explicit(0x7FE00010, b"OB", bytes(MIB))
    parsed = parse_dicom(part10(_deflate(dataset), DEFLATED))
    assert parsed.has_pixel_data and parsed.transfer_syntax == DEFLATED


# inflate(): the reusable bound (deflated datasets today; gzip bodies later).
def test_inflate_refuses_past_the_ratio_once_past_the_grace_size() -> None:
    bomb = _deflate(bytes(RATIO_GRACE + MIB))
    with pytest.raises(InputTooLarge, match="MaximumCompressionRatio"):
        inflate(bomb, InflateBound(), "the bomb")
    assert len(inflate(bomb, InflateBound(max_ratio=None), "the bomb")) == RATIO_GRACE + MIB


def test_inflate_allows_any_ratio_within_the_grace_size() -> None:
    blank = _deflate(bytes(4 * MIB))  # a blank image: ratio 1000
    assert inflate(blank, InflateBound(), "a blank image") == bytes(4 * MIB)


def test_inflate_refuses_past_the_maximum_size_whatever_the_ratio() -> None:
    with pytest.raises(InputTooLarge, match="MaximumInflatedSize 1 MiB"):
        inflate(_deflate(bytes(2 * MIB)), InflateBound(max_size=MIB, max_ratio=None), "the data")


def test_inflate_reads_gzip_with_the_same_bound() -> None:
    assert inflate(gzip.compress(b"hello" * 1000), InflateBound(), "a body", wbits=31) == b"hello" * 1000
    with pytest.raises(InputTooLarge):
        inflate(gzip.compress(bytes(2 * MIB)), InflateBound(max_size=MIB), "a body", wbits=31)


def test_inflate_refuses_a_cut_stream() -> None:
    with pytest.raises(EOFError):
        inflate(_deflate(b"x" * 10000)[:-3], InflateBound(), "the data")
