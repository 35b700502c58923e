"""Orthanc 1.10's DICOM modification applied to datasets: ``Modifier`` walks a dataset (and, for an
anonymization, every sequence in it) as Orthanc's ``DicomModification::Apply`` does.

This mirrors Orthanc's ``DicomModification`` (checked against a real Orthanc 1.10.1 in
``tests/broker/rest/test_modify_parity.py``); anonymization is the same machinery with a profile
loaded first (``broker.core.anonymize``). The request comes from ``broker.core.modify_request``, the
replacement elements from ``broker.core.elements``, the files from ``broker.core.dicom_file``.

* ``Modifier(request)``: applies a request to pydicom datasets, one after the other, keeping the map
  of old to new UIDs, so that the instances of one study or series modified by one request get
  consistent new UIDs (Orthanc's ``uidMap_``).
* ``modify_instance_bytes(data, request, *, new_sop_instance_uid=True, modifier=None)``: one DICOM file
  in, the modified file out.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from broker.core.dicom_file import (
    CannotTranscode,
    element_text,
    read_dataset,
    text_of,
    transcode_dataset,
    write_dataset,
)
from broker.core.dicom_json import STRING_VRS
from broker.core.elements import ElementFactory
from broker.core.levels import Level
from broker.core.modify_request import DicomPath, ModifyRequest
from broker.core.tags import (
    PATIENT_ID,
    PATIENT_NAME,
    REFERENCED_FRAME_OF_REFERENCE_SEQUENCE,
    REFERENCED_SOP_INSTANCE_UID,
    RT_REFERENCED_STUDY_SEQUENCE,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID,
    is_private,
)
from broker.errors import ErrorCode, OrthancError


def generate_identifier(level: Level) -> str:
    """A new identifier, as Orthanc's ``GenerateUniqueIdentifier``: a UUID for a patient (PatientID is a
    LO, 64 characters), a DICOM UID for the other levels."""
    if level is Level.PATIENT:
        return str(uuid.uuid4())
    return str(generate_uid())


class Modifier:
    """Applies one request to one dataset after the other; new UIDs are consistent across them
    (the same original UID, at the same level, gets the same new UID)."""

    def __init__(self, request: ModifyRequest, *,
                 identifier_generator: Callable[[Level], str] = generate_identifier) -> None:
        self.request = request
        self.generate = identifier_generator
        self.uid_map: dict[tuple[Level, str], str] = {}

    def map_identifier(self, original: str, level: Level) -> str:
        key = (level, original.strip())
        if key not in self.uid_map:
            self.uid_map[key] = self.generate(level)
        return self.uid_map[key]

    def register(self, original: str, mapped: str, level: Level) -> None:
        self.uid_map.setdefault((level, original), mapped)

    def apply(self, ds: Dataset, *, keep_sop_instance_uid: bool | None = None) -> None:
        """Modify ``ds`` in place (Orthanc's ``DicomModification::Apply``, steps 1 to 8)."""
        request = self.request
        request.check()
        factory = ElementFactory(ds, request.private_creator)
        keep_sop = request.keep_sop_instance_uid if keep_sop_instance_uid is None else keep_sop_instance_uid

        # (1) Anonymization: replaced identifiers map their original value, so references follow.
        if request.is_anonymization:
            for tag, level in ((STUDY_INSTANCE_UID, Level.STUDY), (SERIES_INSTANCE_UID, Level.SERIES),
                               (SOP_INSTANCE_UID, Level.INSTANCE)):
                if request.is_replaced(tag):
                    replacement = request.replacement_as_string(tag)
                    self.register(text_of(ds, tag) or "", replacement, level)

        # (2) Private tags (first level only; the anonymization visitor handles sequences).
        if request.remove_private_tags:
            for element in list(ds):
                tag = int(element.tag)
                if is_private(tag) and tag not in request.private_tags_to_keep:
                    del ds[tag]

        # (3) Clearings, only of the tags present. (4) Removals.
        for tag in sorted(request.clearings):
            if tag & 0xFFFF and tag in ds:
                vr = factory.vr_of(tag, ds) if not is_private(tag) else ds[tag].VR
                ds[tag] = DataElement(tag, vr, Sequence([]) if vr == "SQ" else None)
        for tag in sorted(request.removals):
            if tag in ds:
                del ds[tag]

        # (5) Replacements, inserted when absent.
        for tag in sorted(request.replacements):
            if tag & 0xFFFF == 0:
                continue  # group lengths are DCMTK's business
            ds[tag] = factory.make(tag, request.replacements[tag], ds)
            if tag == SPECIFIC_CHARACTER_SET:
                factory = ElementFactory(ds, request.private_creator)

        # (6) The DICOM identifiers of the modified level and below.
        identifiers = ((Level.STUDY, STUDY_INSTANCE_UID, request.keep_study_instance_uid),
                       (Level.SERIES, SERIES_INSTANCE_UID, request.keep_series_instance_uid),
                       (Level.INSTANCE, SOP_INSTANCE_UID, keep_sop))
        for level, tag, keep in identifiers:
            if request.level <= level and not request.is_replaced(tag) and not keep:
                ds[tag] = DataElement(tag, "UI", self.map_identifier(text_of(ds, tag) or "", level))

        # (7) Anonymization: identifiers and profile rules everywhere, sequences included.
        if request.is_anonymization:
            self._visit(ds, [], top=True)

        # (8) Paths into sequences.
        for path in request.remove_sequences:
            for item in _items_at(ds, path):
                if path.final in item:
                    del item[path.final]
        for path, value in request.sequence_replacements:
            for item in _items_at(ds, path):
                item[path.final] = factory.make(path.final, value, item)

    # The anonymization visitor (Orthanc's ``RelationshipsVisitor``).
    def _kept(self, parents: list[tuple[int, int]], tag: int) -> bool:
        return any(path.matches(parents, tag) for path in self.request.keep_sequences)

    def _visit(self, ds: Dataset, parents: list[tuple[int, int]], top: bool = False) -> None:
        request = self.request
        for element in list(ds):
            tag = int(element.tag)
            vr = element.VR
            if vr == "SQ":
                if not top and self._default_remove(parents, tag):
                    del ds[tag]
                    continue
                for index, item in enumerate(element.value or []):
                    self._visit(item, parents + [(tag, index)])
                continue
            if vr not in STRING_VRS:
                if not top and self._default_remove(parents, tag):
                    del ds[tag]
                continue
            value = element_text(element)
            if top:
                if tag in request.uids and not request.is_manually_modified(tag):
                    level = Level.PATIENT if tag in (PATIENT_ID, PATIENT_NAME) else Level.INSTANCE
                    ds[tag] = DataElement(tag, vr, self.map_identifier(value, level))
                continue
            if self._kept(parents, tag):
                continue
            if request.remove_private_tags and is_private(tag):
                del ds[tag]
                continue
            if request.is_removed(tag):
                del ds[tag]
                continue
            if request.is_cleared(tag):
                ds[tag] = DataElement(tag, vr, "")
                continue
            if tag == STUDY_INSTANCE_UID:
                mapped = self.map_identifier(value, Level.STUDY)
            elif tag == SERIES_INSTANCE_UID:
                mapped = self.map_identifier(value, Level.SERIES)
            elif tag == SOP_INSTANCE_UID:
                mapped = self.map_identifier(value, Level.INSTANCE)
            elif tag in request.uids:
                if tag in (PATIENT_ID, PATIENT_NAME):
                    mapped = self.map_identifier(value, Level.PATIENT)
                elif (tag == REFERENCED_SOP_INSTANCE_UID and len(parents) == 2
                      and parents[0][0] == REFERENCED_FRAME_OF_REFERENCE_SEQUENCE
                      and parents[1][0] == RT_REFERENCED_STUDY_SEQUENCE):
                    mapped = self.map_identifier(value, Level.STUDY)  # RT-STRUCT: it references a study
                else:
                    mapped = self.map_identifier(value, Level.INSTANCE)
            else:
                continue
            ds[tag] = DataElement(tag, vr, mapped)

    def _default_remove(self, parents: list[tuple[int, int]], tag: int) -> bool:
        """``GetDefaultAction`` for a non-string element inside a sequence."""
        request = self.request
        if self._kept(parents, tag):
            return False
        if request.remove_private_tags and is_private(tag):
            return True
        return request.is_cleared(tag) or request.is_removed(tag)


def _items_at(ds: Dataset, path: DicomPath) -> list[Dataset]:
    """The items that hold ``path.final`` (``FromDcmtkBridge::IDicomPathVisitor``)."""
    items = [ds]
    for tag, index in path.prefix:
        following = []
        for item in items:
            element = item.get(tag)
            if element is None or element.VR != "SQ" or not element.value:
                continue
            for position, child in enumerate(element.value):
                if index is None or index == position:
                    following.append(child)
        items = following
    return items


def modify_dataset(ds: Dataset, request: ModifyRequest, *, new_sop_instance_uid: bool = True,
                   modifier: Modifier | None = None) -> Dataset:
    (modifier or Modifier(request)).apply(ds, keep_sop_instance_uid=None if new_sop_instance_uid else True)
    return ds


def modify_instance_bytes(data: bytes, request: ModifyRequest, *, new_sop_instance_uid: bool = True,
                          modifier: Modifier | None = None, transcode: str | None = None) -> bytes:
    """Apply ``request`` to one DICOM file and return the modified file.

    ``new_sop_instance_uid``: True (Orthanc's rule at every level: the copy is a new instance) gives the
    copy a new SOPInstanceUID unless the request replaces it or keeps it (``Keep`` + ``Force``); False
    keeps the original one whatever the request says. ``modifier``: share one ``Modifier(request)``
    between the files of one resource so that their new UIDs are consistent. ``transcode``: a transfer
    syntax UID (``broker.core.dicom_file``). Raises ``OrthancError`` as Orthanc would (400 for a bad
    replacement value, ...).
    """
    ds = read_dataset(data)
    modify_dataset(ds, request, new_sop_instance_uid=new_sop_instance_uid, modifier=modifier)
    if transcode is not None:
        try:
            transcode_dataset(ds, transcode)
        except CannotTranscode as exc:
            raise OrthancError(ErrorCode.INTERNAL_ERROR, str(exc)) from None
    return write_dataset(ds)

