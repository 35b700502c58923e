"""Metadata types: Orthanc's numbers and names, and the user metadata of the configuration.

Numbers 1..1023 are reserved to the server (Orthanc's ``MetadataType``); 1024..65535 are user
metadata, named by the ``UserMetadata`` option or by their number. Only user metadata can be set or
deleted through REST (Orthanc answers 403 otherwise).
"""
from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from broker.errors import ErrorCode, OrthancError


class MetadataType(enum.IntEnum):
    INDEX_IN_SERIES = 1
    RECEPTION_DATE = 2
    REMOTE_AET = 3
    EXPECTED_NUMBER_OF_INSTANCES = 4
    MODIFIED_FROM = 5
    ANONYMIZED_FROM = 6
    LAST_UPDATE = 7
    ORIGIN = 8
    TRANSFER_SYNTAX = 9
    SOP_CLASS_UID = 10
    REMOTE_IP = 11
    CALLED_AET = 12
    HTTP_USERNAME = 13
    PIXEL_DATA_OFFSET = 14


SYSTEM_METADATA_NAMES: dict[int, str] = {
    MetadataType.INDEX_IN_SERIES: "IndexInSeries",
    MetadataType.RECEPTION_DATE: "ReceptionDate",
    MetadataType.REMOTE_AET: "RemoteAET",
    MetadataType.EXPECTED_NUMBER_OF_INSTANCES: "ExpectedNumberOfInstances",
    MetadataType.MODIFIED_FROM: "ModifiedFrom",
    MetadataType.ANONYMIZED_FROM: "AnonymizedFrom",
    MetadataType.LAST_UPDATE: "LastUpdate",
    MetadataType.ORIGIN: "Origin",
    MetadataType.TRANSFER_SYNTAX: "TransferSyntax",
    MetadataType.SOP_CLASS_UID: "SopClassUid",
    MetadataType.REMOTE_IP: "RemoteIP",
    MetadataType.CALLED_AET: "CalledAET",
    MetadataType.HTTP_USERNAME: "HttpUsername",
    MetadataType.PIXEL_DATA_OFFSET: "PixelDataOffset",
}
USER_METADATA_FIRST = 1024
USER_METADATA_LAST = 65535
_INTEGER = re.compile(r"^-?[0-9]+$")


def is_user_metadata(number: int) -> bool:
    return USER_METADATA_FIRST <= number <= USER_METADATA_LAST


def now_iso() -> str:
    """Orthanc's timestamps: UTC, ``20240101T120000`` (``ReceptionDate``, ``LastUpdate``, and the time
    of each outbox event)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


class MetadataNames:
    """Name ↔ number, for the system metadata and the configured ``UserMetadata``."""

    def __init__(self, user_metadata: Mapping[str, int] | None = None) -> None:
        self._by_name: dict[str, int] = {name: number for number, name in SYSTEM_METADATA_NAMES.items()}
        self._by_number: dict[int, str] = dict(SYSTEM_METADATA_NAMES)
        for name, number in (user_metadata or {}).items():
            if not isinstance(number, int) or isinstance(number, bool) or not is_user_metadata(number):
                raise ValueError(f"Option 'UserMetadata' has {name!r}: {number!r}; expected an integer "
                                 f"between {USER_METADATA_FIRST} and {USER_METADATA_LAST}")
            if name in self._by_name or number in self._by_number or _INTEGER.match(name):
                raise ValueError(f"Option 'UserMetadata' has {name!r}: {number}, which clashes with another "
                                 "metadata name or number; give each user metadata its own name and number")
            self._by_name[name] = number
            self._by_number[number] = name

    def number(self, name: str) -> int:
        """The number of a metadata given by name or number (``"ReceptionDate"``, ``"1024"``)."""
        number = self._by_name.get(name)
        if number is not None:
            return number
        if _INTEGER.match(name):
            return int(name)
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Unknown metadata name: {name!r}; use a system metadata "
                           "name, a name declared in 'UserMetadata', or a number")

    def name(self, number: int) -> str:
        return self._by_number.get(number, str(number))
