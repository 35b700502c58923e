"""The structural check of ``parse_dicom``: it refuses what Orthanc (DCMTK) refuses."""
from __future__ import annotations

import json
import os

import pytest

from broker.core.dicom_parse import EXPLICIT_BIG_ENDIAN, IMPLICIT_LITTLE_ENDIAN, DicomFormatError, parse_dicom
from tests.support import dicom_samples as samples


@pytest.mark.parametrize("name", samples.UNREADABLE_FILES)
def test_files_orthanc_cannot_parse_are_refused(name: str) -> None:
    with pytest.raises(DicomFormatError):
        parse_dicom(samples.sample_file(name))


@pytest.mark.parametrize("cut", [100, 131, 140, 300, 1000, 6287, 6300, 20000, -1])
def test_truncated_file_is_refused_wherever_it_is_cut(cut: int) -> None:
    data = samples.sample_file("CT_small.dcm")
    with pytest.raises(DicomFormatError):
        parse_dicom(data[:cut])


def test_truncated_sequence_of_undefined_length_is_refused() -> None:
    data = samples.sample_file("rtplan.dcm")  # implicit VR, sequences
    for cut in range(len(data) - 200, len(data) - 1, 37):
        with pytest.raises(DicomFormatError):
            parse_dicom(data[:cut])


@pytest.mark.parametrize("garbage", [b"hello", b"{\"json\": true}", json.dumps({"a": list(range(50))}).encode(),
                                     b"\x00" * 7, os.urandom(4096), b"DICM" + b"\x01" * 100])
def test_non_dicom_bytes_are_refused(garbage: bytes) -> None:
    with pytest.raises(DicomFormatError):
        parse_dicom(garbage)


def test_raw_dataset_without_meta_information_is_read_with_a_guessed_syntax() -> None:
    parsed = parse_dicom(samples.sample_file("ExplVR_BigEndNoMeta.dcm"))
    assert parsed.transfer_syntax == EXPLICIT_BIG_ENDIAN
    assert parsed.meta == {}
    parsed = parse_dicom(samples.sample_file("rtplan.dcm"))
    assert parsed.transfer_syntax == IMPLICIT_LITTLE_ENDIAN


def test_pixel_data_offset_is_the_start_of_the_element_header() -> None:
    data = samples.sample_file("CT_small.dcm")
    parsed = parse_dicom(data)
    assert parsed.has_pixel_data and parsed.pixel_data_offset == 6288
    assert data[6288:6292] == b"\xe0\x7f\x10\x00"


def test_deflated_dataset_is_inflated_and_has_no_pixel_offset() -> None:
    parsed = parse_dicom(samples.sample_file("image_dfl.dcm"))
    assert parsed.transfer_syntax == "1.2.840.10008.1.2.1.99"
    assert parsed.has_pixel_data and parsed.pixel_data_offset is None


def test_binary_values_are_not_copied() -> None:
    parsed = parse_dicom(samples.sample_file("CT_small.dcm"))
    pixel = parsed.top_level()[0x7FE00010]
    assert pixel.value is None


def test_encapsulated_pixel_data_is_walked_to_its_delimiter() -> None:
    parsed = parse_dicom(samples.sample_file("JPEG2000.dcm"))
    assert parsed.has_pixel_data
    data = samples.sample_file("JPEG2000.dcm")
    with pytest.raises(DicomFormatError):
        parse_dicom(data[:-8])  # no sequence delimiter


def test_every_pydicom_test_file_orthanc_reads_is_read() -> None:
    for name in samples.all_test_files():
        if name not in samples.UNREADABLE_FILES:
            parse_dicom(samples.sample_file(name))
