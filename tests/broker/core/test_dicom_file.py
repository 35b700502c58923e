"""The file-level helpers of ``broker.core.dicom_file``: the file meta read alone and written without
pydicom, DICOMDIR detection."""
from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.fileset import FileSet
from pydicom.filewriter import write_file_meta_info

from broker.core.dicom_file import file_meta, file_meta_bytes, is_dicomdir, peek_meta
from tests.support import dicom_samples as samples


@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm", "rtplan.dcm"])
def test_the_file_meta_is_read_as_pydicom_reads_it(name: str) -> None:
    data = samples.sample_file(name)
    meta = pydicom.dcmread(io.BytesIO(data)).file_meta
    assert peek_meta(data) == (meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)


@pytest.mark.parametrize("data", [samples.sample_file("no_meta.dcm"), b"", b"DICM", bytes(132)])
def test_a_file_without_meta_has_none(data: bytes) -> None:
    assert peek_meta(data) is None


def test_a_dicomdir_is_told_from_an_instance() -> None:
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "a.dcm"
        source.write_bytes(samples.sample_file("CT_small.dcm"))
        file_set = FileSet()
        file_set.add(source)
        file_set.write(Path(work) / "out")
        assert is_dicomdir((Path(work) / "out" / "DICOMDIR").read_bytes())
    assert not is_dicomdir(samples.sample_file("CT_small.dcm"))


@pytest.mark.parametrize(("sop_class", "sop_instance", "syntax"), [
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1"),          # even lengths
    ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", "1.2.840.10008.1.2"),           # odd ones
    (None, "1.2.3", "1.2.840.10008.1.2.4.90"),                                # no SOP class
    ("1.2.840.10008.5.1.4.1.1.2", "1.2." + "3" * 70, "1.2.840.10008.1.2.1"),  # too long: written all the same
])
def test_the_file_meta_is_written_as_pydicom_writes_it(sop_class: str | None, sop_instance: str,
                                                       syntax: str) -> None:
    expected = DicomBytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_file_meta_info(expected, file_meta(sop_class, sop_instance, syntax), enforce_standard=True)
    assert file_meta_bytes(sop_class, sop_instance, syntax) == expected.getvalue()


def test_a_file_meta_needs_its_instance() -> None:
    with pytest.raises(ValueError):
        file_meta_bytes("1.2.840.10008.5.1.4.1.1.2", "", "1.2.840.10008.1.2.1")
