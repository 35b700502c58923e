"""ZIP archives of resources (``/{level}/{id}/archive``, ``/tools/create-archive``) and DICOM media
(``/{level}/{id}/media``, ``/tools/create-media``): the same instances, laid out in folders named
after the patient, study and series (Orthanc's layout), or as a DICOM File-set with its DICOMDIR
(written by pydicom's ``FileSet``) in Orthanc's flat layout: ``IMAGES/IM0``, ``IMAGES/IM1``, ...
"""
from __future__ import annotations

import io
import logging
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.fileset import FileSet, RecordNode

from broker.core.dicom_file import CannotTranscode, read_dataset, transcoded
from broker.core.levels import Level
from broker.core.store import Store

log = logging.getLogger("luabroker.archive")


def _folder(unknown: str, *parts: str) -> str:
    """A folder name as Orthanc 1.10 writes it (``KeepAlphanumeric``): ``^`` and white space become one
    space; letters, digits, ``.`` and ``_`` are kept, everything else (accents included) goes."""
    kept: list[str] = []
    for c in " ".join(parts).replace("^", " "):
        if c.isascii() and c.isspace():
            if kept and kept[-1] != " ":
                kept.append(" ")
        elif c.isascii() and (c.isalnum() or c in "._"):
            kept.append(c)
    return "".join(kept).strip() or unknown


def instances_of(store: Store, resources: Iterable[tuple[Level, str]]) -> list[str]:
    """The instances of the resources, in order, each once."""
    seen: dict[str, None] = {}
    for level, public_id in resources:
        for instance in (store.related(level, public_id, Level.INSTANCE) if level is not Level.INSTANCE
                         else [public_id] if store.exists(Level.INSTANCE, public_id) else []):
            seen.setdefault(instance, None)
    return list(seen)


def hierarchical_names(store: Store, instances: list[str]) -> list[tuple[str, str]]:
    """(path in the archive, instance id): ``PatientID PatientName/AccessionNumber StudyDescription/
    Modality SeriesDescription/MR000000.dcm``, the files numbered from 0 in each series."""
    counters: dict[str, int] = {}
    names = []
    for instance in instances:
        series = store.view(Level.SERIES, store.related(Level.INSTANCE, instance, Level.SERIES)[0])
        assert series is not None and series.parent is not None
        study = store.view(Level.STUDY, series.parent)
        assert study is not None
        patient = study.patient_tags or {}
        modality = series.main_tags.get("Modality", "")
        folder = "/".join((_folder("Unknown Patient", patient.get("PatientID", ""), patient.get("PatientName", "")),
                           _folder("Unknown Study", study.main_tags.get("AccessionNumber", ""),
                                   study.main_tags.get("StudyDescription", "")),
                           _folder("Unknown Series", modality, series.main_tags.get("SeriesDescription", ""))))
        number = counters.get(folder, 0)
        counters[folder] = number + 1
        prefix = modality if len(modality) == 2 and modality.isalnum() else "IM"
        names.append((f"{folder}/{prefix}{number:06d}.dcm", instance))
    return names


def reader(store: Store, transcode: str | None) -> Callable[[str], bytes]:
    """How an instance is read into an archive: as stored, or transcoded (``Transcode``); an instance
    that cannot be transcoded goes in as stored, as Orthanc does."""
    def read(instance: str) -> bytes:
        data, _ = store.read_instance(instance)
        if transcode is None:
            return data
        try:
            return transcoded(data, transcode)
        except CannotTranscode as exc:
            log.warning("Cannot transcode instance %s, keeping its transfer syntax: %s", instance, exc)
            return data
    return read


def write_archive(entries: list[tuple[str, str]], read: Callable[[str], bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, instance in entries:
            archive.writestr(name, read(instance))
    return buffer.getvalue()


#: The elements of each directory record, taken from the instance (empty when it has none: the
#: standard's type 1 elements must be there, as DCMTK writes them for Orthanc).
_RECORDS = (("PATIENT", ("PatientID", "PatientName")),
            ("STUDY", ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "StudyID",
                       "AccessionNumber")),
            ("SERIES", ("SeriesInstanceUID", "Modality", "SeriesNumber")),
            ("IMAGE", ("InstanceNumber",)))


class _FlatRecord(RecordNode):
    """A directory record whose File ID component puts its file where Orthanc does: the series record
    gives the ``IMAGES`` folder, the image record the file ``IM<number>``, the others nothing (pydicom
    joins the components of a record and its ancestors, and an empty one adds no folder)."""

    number = 0

    @property
    def component(self) -> str:
        return {"SERIES": "IMAGES", "IMAGE": f"IM{self.number}"}.get(self.record_type, "")


def _records(ds: Dataset, number: int) -> RecordNode:
    """The chain of directory records of the instance stored as ``IMAGES/IM<number>``, its IMAGE
    record last."""
    node: RecordNode | None = None
    for record_type, keywords in _RECORDS:
        record = Dataset()
        record.DirectoryRecordType = record_type
        for keyword in keywords:
            setattr(record, keyword, ds.get(keyword, ""))
        if record_type == "IMAGE":  # the references to the file itself
            record.ReferencedSOPClassUIDInFile = ds.SOPClassUID
            record.ReferencedSOPInstanceUIDInFile = ds.SOPInstanceUID
            record.ReferencedTransferSyntaxUIDInFile = ds.file_meta.TransferSyntaxUID
        child = _FlatRecord(record)
        child.number = number
        if node is not None:
            child.parent = node
        node = child
    assert node is not None
    return node


def write_media(instances: list[str], read: Callable[[str], bytes]) -> bytes:
    """A ZIP of a DICOM File-set: the instances and their DICOMDIR."""
    with tempfile.TemporaryDirectory(prefix="luabroker-media-") as work:
        root = Path(work)
        files = root / "in"
        files.mkdir()
        file_set = FileSet()
        file_set.ID = "ORTHANC_MEDIA"  # Orthanc's File-set ID
        for number, instance in enumerate(instances):
            path = files / f"{number}.dcm"
            data = read(instance)
            path.write_bytes(data)
            file_set.add_custom(path, _records(read_dataset(data), number))
        output = root / "out"
        file_set.write(output)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for number in range(len(instances)):  # Orthanc's order: the files, then their DICOMDIR
                archive.write(output / "IMAGES" / f"IM{number}", f"IMAGES/IM{number}")
            archive.write(output / "DICOMDIR", "DICOMDIR")
        return buffer.getvalue()
