"""DICOM tags by name: the constants the core, the REST handlers and the DICOM front end share, and
the two ways a tag is written (Orthanc's ``ParseTag`` to read a name, ``format_tag`` to show one).

Tags are plain ``int`` (``0xGGGGEEEE``), as pydicom accepts them everywhere.
"""
from __future__ import annotations

import re

from pydicom.datadict import tag_for_keyword

from broker.errors import ErrorCode, OrthancError

# File meta information, encoding.
TRANSFER_SYNTAX_UID = 0x00020010
SPECIFIC_CHARACTER_SET = 0x00080005
PIXEL_REPRESENTATION = 0x00280103
PIXEL_DATA = 0x7FE00010

# The identifiers of the four levels, and the patient's name.
PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
SOP_INSTANCE_UID = 0x00080018
ACCESSION_NUMBER = 0x00080050
SOP_CLASS_UID = 0x00080016

# An instance's place in its series, and the series' expected size (Orthanc's metadata).
INSTANCE_NUMBER = 0x00200013
IMAGE_INDEX = 0x00541330
IMAGES_IN_ACQUISITION = 0x00201002
NUMBER_OF_TEMPORAL_POSITIONS = 0x00200105
NUMBER_OF_SLICES = 0x00540081
NUMBER_OF_TIME_SLICES = 0x00540101
CARDIAC_NUMBER_OF_IMAGES = 0x00181090

# Query/retrieve: the level of a C-FIND, and what Orthanc computes from the index.
QUERY_RETRIEVE_LEVEL = 0x00080052
RETRIEVE_AE_TITLE = 0x00080054
SOP_CLASSES_IN_STUDY = 0x00080062
NUMBER_OF_PATIENT_RELATED_STUDIES = 0x00201200
NUMBER_OF_PATIENT_RELATED_SERIES = 0x00201202
NUMBER_OF_PATIENT_RELATED_INSTANCES = 0x00201204
NUMBER_OF_STUDY_RELATED_SERIES = 0x00201206
NUMBER_OF_STUDY_RELATED_INSTANCES = 0x00201208
NUMBER_OF_SERIES_RELATED_INSTANCES = 0x00201209
MODALITY = 0x00080060

# Modality worklists.
SCHEDULED_PROCEDURE_STEP_SEQUENCE = 0x00400100
SCHEDULED_STATION_AE_TITLE = 0x00400001
SCHEDULED_PROCEDURE_STEP_START_DATE = 0x00400002
REFERENCED_STUDY_SEQUENCE = 0x00081110
REFERENCED_PATIENT_SEQUENCE = 0x00081120
REFERENCED_SOP_CLASS_UID = 0x00081150
PREGNANCY_STATUS = 0x001021C0

# Modification and anonymization.
PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD = 0x00120063
REFERENCED_SOP_INSTANCE_UID = 0x00081155
REFERENCED_FRAME_OF_REFERENCE_SEQUENCE = 0x30060010
RT_REFERENCED_STUDY_SEQUENCE = 0x30060012

_HEX_TAG = re.compile(r"^([0-9a-fA-F]{4})[,-]?([0-9a-fA-F]{4})$")


def format_tag(tag: int) -> str:
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def parse_tag(name: str) -> int:
    """Orthanc's ``FromDcmtkBridge::ParseTag``: hexadecimal (``0008,1010``, ``0008-1010``,
    ``00081010``) or a dictionary keyword (case-sensitive)."""
    match = _HEX_TAG.match(name)
    if match:
        return int(match.group(1) + match.group(2), 16)
    keyword = name[len("RETIRED_"):] if name.startswith("RETIRED_") else name
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG, f"Unknown DICOM tag: {name!r}; use a DICOM keyword "
                           "(\"StationName\") or the hexadecimal form \"0008,1010\"", http_status=500)
    return int(tag)



def is_private(tag: int) -> bool:
    """DCMTK's ``isPrivate``: an odd group other than 1, 3, 5, 7 and FFFF."""
    group = tag >> 16
    return bool(group & 1) and group not in (1, 3, 5, 7, 0xFFFF)
