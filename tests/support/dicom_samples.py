"""DICOM files for the core and REST tests: pydicom's test files, and small ones built here that
exercise one rule each (padding, numbers, private tags, sequences, character sets, long values)."""
from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent

# pydicom test files Orthanc 1.10.1 refuses with 400 (broken structure) and 404 (no UIDs).
UNREADABLE_FILES = ["MR_truncated.dcm", "rtplan_truncated.dcm", "SC_rgb_jpeg.dcm", "no_meta.dcm"]
FILES_WITHOUT_UIDS = ["JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm",
                      "SC_rgb_jls_lossy_sample.dcm", "UN_sequence.dcm", "empty_charset_LEI.dcm",
                      "meta_missing_tsyntax.dcm", "nested_priv_SQ.dcm", "no_meta_group_length.dcm", "priv_SQ.dcm"]


def sample_file(name: str) -> bytes:
    return (TEST_FILES / name).read_bytes()


def all_test_files() -> list[str]:
    return sorted(path.name for path in TEST_FILES.glob("*.dcm"))


def minimal(patient_id: str | None = "PID", **attributes: object) -> Dataset:
    """A valid secondary-capture instance with fresh UIDs (``patient_id=None``: no PatientID)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.PatientName = "Doe^John"
    ds.Modality = "OT"
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


def encode(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.3")
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def kitchen_sink(transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """One instance with a bit of everything Orthanc's JSON has a rule for."""
    ds = minimal(patient_id="  SPACED ID  ")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    ds.add_new(0x00081030, "LO", "w" * 64)                 # StudyDescription
    ds.add_new(0x0008103E, "LO", "short ")                 # SeriesDescription, padded
    ds.add_new(0x00204000, "LT", "z" * 256)                # ImageComments: exactly the limit
    ds.add_new(0x00082111, "ST", "q" * 257)                # DerivationDescription: too long
    ds.add_new(0x00180050, "DS", "1.5")
    ds.add_new(0x00280030, "DS", ["0.5", "0.25"])
    ds.add_new(0x00280010, "US", 4)
    ds.add_new(0x00280011, "US", 4)
    ds.add_new(0x00280100, "US", 8)
    ds.add_new(0x00280002, "US", 1)
    ds.add_new(0x00280004, "CS", "MONOCHROME2")
    ds.add_new(0x00181310, "US", [0, 4, 4, 0])             # several binary numbers
    ds.add_new(0x00189219, "SS", -5)
    ds.add_new(0x00186028, "FD", 3.14159)
    ds.add_new(0x00186020, "SL", -7)
    ds.add_new(0x00189306, "FL", 0.1)                      # single precision
    ds.add_new(0x00209165, "AT", [0x00100010, 0x00200020])  # only the first value shows
    ds.add_new(0x00200020, "CS", ["A", "F"])
    ds.add_new(0x00080020, "DA", "")                       # empty
    ds.add_new(0x00090010, "LO", "GEMS_IDEN_01")           # known private creator
    ds.add_new(0x00091001, "LO", "full fidelity")
    ds.add_new(0x00110010, "LO", "MY_CREATOR")             # unknown private creator
    ds.add_new(0x00111001, "LO", "unknown private value")
    ds.add_new(0x00111002, "LO", "second unknown")
    ds.add_new(0x00111003, "OB", b"\x01\x02")
    ds.add_new(0x00431028, "OB", b"\x00\x01\x02\x03")       # private, no creator
    ds.add_new(0x00880200, "SQ", Sequence())               # empty sequence
    item = Dataset()
    item.CodeValue = "113838"
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = "DLP"
    inner = Dataset()
    inner.CodeValue = "A"
    inner.add_new(0x00111001, "LO", "in-seq private")
    item.add_new(0x00400260, "SQ", Sequence([inner]))
    second = Dataset()
    second.CodeValue = "2"
    ds.ProcedureCodeSequence = Sequence([item, second])
    ds.InstanceNumber = "7"
    ds.add_new(0x00540081, "US", 1)                        # NumberOfSlices (a series main tag)
    ds.add_new(0x00189999, "UN", b"abc")
    ds.add_new(0x00280008, "IS", "1")
    ds.add_new(0x7FE00010, "OB", b"\x00" * 16)
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 8)              # after PixelData: not shown
    ds.add_new(0x7FE10010, "LO", "AFTER")                  # after PixelData: not shown
    return encode(ds, transfer_syntax)


def utf8_long_main_tags() -> bytes:
    """Main tags longer than 256 UTF-8 bytes (but not 256 characters)."""
    ds = minimal(patient_id="UTF8", InstanceNumber="3")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Gérard^Ω^日本"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # longer than LO allows, on purpose
        ds.add_new(0x00081030, "LO", "é" * 200)
        ds.add_new(0x0008103E, "LO", "é" * 130)
        return encode(ds)


def series_of(count: int, **attributes: object) -> list[bytes]:
    """``count`` instances of one series of one study of patient ``TREE``."""
    study, series = generate_uid(), generate_uid()
    return [encode(minimal(patient_id="TREE", StudyInstanceUID=study, SeriesInstanceUID=series,
                           InstanceNumber=str(index + 1), **attributes)) for index in range(count)]


def implicit(ds: Dataset) -> bytes:
    return encode(ds, ImplicitVRLittleEndian)
