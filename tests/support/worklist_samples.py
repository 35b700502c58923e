"""Worklists and worklist queries for the tests of the worklist server: files like those of Orthanc's
test suite (``Database/Worklists``), written as ``*.wl`` files, Part-10 or bare datasets."""
from __future__ import annotations

from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian


def worklist(patient_id: str, patient_name: str, station_aet: str, *, accession: str = "ACC1",
             date: str = "20240115", modality: str = "CT", procedure: str = "Chest") -> Dataset:
    """One worklist: a patient, an accession number and one scheduled procedure step."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "19700101", "M"
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{int.from_bytes(patient_id.encode(), 'big')}"
    ds.RequestedProcedureDescription = procedure
    ds.ReferencedStudySequence = Sequence([])
    step = Dataset()
    step.ScheduledStationAETitle = station_aet
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = "093000"
    step.Modality = modality
    step.ScheduledPerformingPhysicianName = "Doctor^Who"
    step.ScheduledProcedureStepDescription = procedure
    step.ScheduledProcedureStepID = f"SPS-{accession}"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def worklist_bytes(ds: Dataset, *, part10: bool = True) -> bytes:
    """A Part-10 file (Explicit VR Little Endian), or the bare dataset in Implicit VR Little Endian, as
    ``dump2dcm`` writes either."""
    buffer = BytesIO()
    if part10:
        ds = ds.copy()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.276.0.7230010.3.1.4.1"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dcmwrite(buffer, ds, enforce_file_format=True)
    else:
        dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def write_worklist(folder: Path, name: str, ds: Dataset, *, part10: bool = True) -> Path:
    path = folder / name
    path.write_bytes(worklist_bytes(ds, part10=part10))
    return path


def two_stations(folder: Path) -> None:
    """Orthanc's ``orig.7814`` pair: the same procedure scheduled on STATION_AET and on ORTHANCTEST."""
    write_worklist(folder, "station.wl", worklist("P7814", "Doe^John", "STATION_AET", accession="A7814"))
    write_worklist(folder, "other.wl", worklist("P7815", "Doe^Jane", "ORTHANCTEST", accession="A7815"), part10=False)


def query(*, station_aet: str | None = None, **flat: str) -> Dataset:
    """A worklist query asking for the usual tags, ``flat`` constraining the top level, and a
    ScheduledProcedureStepSequence item (with ``station_aet`` as ScheduledStationAETitle, if given)."""
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "", "", ""
    for keyword, value in flat.items():
        setattr(ds, keyword, value)
    step = Dataset()
    if station_aet is not None:
        step.ScheduledStationAETitle = station_aet
    step.ScheduledProcedureStepStartDate = ""
    step.Modality = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds
