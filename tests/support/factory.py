"""Small, valid DICOM instances made on the fly (tests and benchmarks need many distinct ones)."""
from __future__ import annotations

import copy
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid


def template(name: str = "CT_small.dcm") -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def make_instances(count: int, *, modality: str = "CT", patient_id: str = "P1", patient_name: str = "DOE^JOHN",
                   series: int = 1, base: str = "CT_small.dcm", routing_tags: bool = False) -> list[Dataset]:
    """``count`` instances of one study, spread over ``series`` series, each with fresh UIDs.

    ``routing_tags`` adds what the auto-routing samples change: ``MilitaryRank`` and a private block
    ``0051,0010`` (creator) / ``0051,1010`` (value), next to the template's own private tags."""
    study_uid = generate_uid()
    series_uids = [generate_uid() for _ in range(series)]
    source = template(base)
    instances = []
    for index in range(count):
        ds = copy.deepcopy(source)
        ds.PatientID = patient_id
        ds.PatientName = patient_name
        ds.Modality = modality
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uids[index % series]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = index + 1
        if routing_tags:
            ds.MilitaryRank = "CAPTAIN"
            ds.add_new(0x00510010, "LO", "LUABROKER TEST")
            ds.add_new(0x00511010, "LO", "private value")
        instances.append(ds)
    return instances


def to_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_files(instances: list[Dataset], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in instances:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
