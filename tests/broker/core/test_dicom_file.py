"""The file-level helpers of ``broker.core.dicom_file``: the file meta read alone, DICOMDIR detection."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet

from broker.core.dicom_file import is_dicomdir, peek_meta
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
