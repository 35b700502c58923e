"""Orthanc 1.10's main DICOM tags, per level (``DicomMap.cpp``, lists unchanged since 1.4.2).

These are the tags stored in the index when a resource is created, and answered as ``MainDicomTags``
by ``GET /patients/{id}`` and the like. A study also keeps the patient's main tags (answered as
``PatientMainDicomTags``), as Orthanc's database schema 6 does.
"""
from __future__ import annotations

from broker.core.levels import Level
from broker.core.tags import (
    CARDIAC_NUMBER_OF_IMAGES,
    IMAGE_INDEX,
    IMAGES_IN_ACQUISITION,
    INSTANCE_NUMBER,
    NUMBER_OF_SLICES,
    NUMBER_OF_TEMPORAL_POSITIONS,
    NUMBER_OF_TIME_SLICES,
    PATIENT_ID,
    PATIENT_NAME,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)

MAIN_DICOM_TAGS: dict[Level, tuple[tuple[int, str], ...]] = {
    Level.PATIENT: (
        (PATIENT_NAME, "PatientName"),
        (0x00100030, "PatientBirthDate"),
        (0x00100040, "PatientSex"),
        (0x00101000, "OtherPatientIDs"),
        (PATIENT_ID, "PatientID"),
    ),
    Level.STUDY: (
        (0x00080020, "StudyDate"),
        (0x00080030, "StudyTime"),
        (0x00200010, "StudyID"),
        (0x00081030, "StudyDescription"),
        (0x00080050, "AccessionNumber"),
        (STUDY_INSTANCE_UID, "StudyInstanceUID"),
        (0x00321060, "RequestedProcedureDescription"),
        (0x00080080, "InstitutionName"),
        (0x00321032, "RequestingPhysician"),
        (0x00080090, "ReferringPhysicianName"),
    ),
    Level.SERIES: (
        (0x00080021, "SeriesDate"),
        (0x00080031, "SeriesTime"),
        (0x00080060, "Modality"),
        (0x00080070, "Manufacturer"),
        (0x00081010, "StationName"),
        (0x0008103E, "SeriesDescription"),
        (0x00180015, "BodyPartExamined"),
        (0x00180024, "SequenceName"),
        (0x00181030, "ProtocolName"),
        (0x00200011, "SeriesNumber"),
        (CARDIAC_NUMBER_OF_IMAGES, "CardiacNumberOfImages"),
        (IMAGES_IN_ACQUISITION, "ImagesInAcquisition"),
        (NUMBER_OF_TEMPORAL_POSITIONS, "NumberOfTemporalPositions"),
        (NUMBER_OF_SLICES, "NumberOfSlices"),
        (NUMBER_OF_TIME_SLICES, "NumberOfTimeSlices"),
        (SERIES_INSTANCE_UID, "SeriesInstanceUID"),
        (0x00200037, "ImageOrientationPatient"),
        (0x00541000, "SeriesType"),
        (0x00081070, "OperatorsName"),
        (0x00400254, "PerformedProcedureStepDescription"),
        (0x00181400, "AcquisitionDeviceProcessingDescription"),
        (0x00180010, "ContrastBolusAgent"),
    ),
    Level.INSTANCE: (
        (0x00080012, "InstanceCreationDate"),
        (0x00080013, "InstanceCreationTime"),
        (0x00200012, "AcquisitionNumber"),
        (IMAGE_INDEX, "ImageIndex"),
        (INSTANCE_NUMBER, "InstanceNumber"),
        (0x00280008, "NumberOfFrames"),
        (0x00200100, "TemporalPositionIdentifier"),
        (SOP_INSTANCE_UID, "SOPInstanceUID"),
        (0x00200032, "ImagePositionPatient"),
        (0x00204000, "ImageComments"),
        (0x00200037, "ImageOrientationPatient"),
    ),
}

# Every tag the store reads from the top level of a file: the main tags, the identifiers, and the
# tags behind the automatic metadata (SopClassUid, IndexInSeries, ExpectedNumberOfInstances).
SUMMARY_TAGS: frozenset[int] = frozenset(
    {tag for tags in MAIN_DICOM_TAGS.values() for tag, _ in tags}
    | {SOP_CLASS_UID, PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID})


def extract_main_tags(level: Level, summary: dict[int, str | None]) -> dict[str, str]:
    """The main tags of ``level`` found in ``summary``; absent, binary and too long values are left out."""
    result: dict[str, str] = {}
    for tag, name in MAIN_DICOM_TAGS[level]:
        value = summary.get(tag)
        if value is not None:
            result[name] = value
    return result


TAG_BY_NAME = {name: tag for tags in MAIN_DICOM_TAGS.values() for tag, name in tags}


def formatted(main_tags: dict[str, str], short: bool) -> dict[str, object]:
    """Main tags keyed by ``gggg,eeee`` (Orthanc's ``?short``), or with their name and type too
    (``?full``); the stored form is the one of ``?simplify``, the default."""
    result: dict[str, object] = {}
    for name, value in main_tags.items():
        tag = TAG_BY_NAME.get(name)
        key = f"{tag >> 16:04x},{tag & 0xFFFF:04x}" if tag is not None else name
        result[key] = value if short else {"Name": name, "Type": "String", "Value": value}
    return result
