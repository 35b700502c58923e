"""Orthanc's error codes, and the one exception that carries them.

An ``OrthancError`` is raised where the fact is known and converted in exactly one place per door:
the HTTP front end turns it into Orthanc's error JSON, the Lua door (``RestApi*``) into ``nil``, the
DICOM front end into a DIMSE status. The table below mirrors Orthanc's ``ErrorCode`` enumeration
(``OrthancFramework/Sources/Enumerations.h``): number, HTTP status, message.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorCode(enum.IntEnum):
    INTERNAL_ERROR = -1
    SUCCESS = 0
    NOT_IMPLEMENTED = 2
    PARAMETER_OUT_OF_RANGE = 3
    NOT_ENOUGH_MEMORY = 4
    BAD_PARAMETER_TYPE = 5
    BAD_SEQUENCE_OF_CALLS = 6
    INEXISTENT_ITEM = 7
    BAD_REQUEST = 8
    NETWORK_PROTOCOL = 9
    DATABASE = 11
    URI_SYNTAX = 12
    INEXISTENT_FILE = 13
    CANNOT_WRITE_FILE = 14
    BAD_FILE_FORMAT = 15
    TIMEOUT = 16
    UNKNOWN_RESOURCE = 17
    FULL_STORAGE = 19
    CORRUPTED_FILE = 20
    INEXISTENT_TAG = 21
    READ_ONLY = 22
    UNKNOWN_DICOM_TAG = 27
    BAD_JSON = 28
    UNAUTHORIZED = 29
    NOT_ACCEPTABLE = 34
    STORAGE_AREA_PLUGIN = 38
    DICOM_FIND_UNAVAILABLE = 2016
    DICOM_MOVE_UNAVAILABLE = 2017
    CANNOT_STORE_INSTANCE = 2018
    CREATE_DICOM_OVERRIDE_TAG = 2020
    CREATE_DICOM_BAD_PARENT = 2024
    UNKNOWN_MODALITY = 2027
    CANNOT_EXECUTE_LUA = 2031
    LUA_BAD_OUTPUT = 2033
    NOT_LUA_PREDICATE = 2034
    LUA_RETURNS_NO_STRING = 2035
    CANNOT_ORDER_SLICES = 2040


@dataclass(frozen=True)
class _Row:
    http_status: int
    message: str


# code -> (HTTP status, Orthanc's message). Codes absent from this table answer 500.
ERROR_TABLE: dict[ErrorCode, _Row] = {
    ErrorCode.INTERNAL_ERROR: _Row(500, "Internal error"),
    ErrorCode.SUCCESS: _Row(200, "Success"),
    ErrorCode.NOT_IMPLEMENTED: _Row(501, "Not implemented yet"),
    ErrorCode.PARAMETER_OUT_OF_RANGE: _Row(400, "Parameter out of range"),
    ErrorCode.NOT_ENOUGH_MEMORY: _Row(500, "The server hosting Orthanc is running out of memory"),
    ErrorCode.BAD_PARAMETER_TYPE: _Row(400, "Bad type for a parameter"),
    ErrorCode.BAD_SEQUENCE_OF_CALLS: _Row(400, "Bad sequence of calls"),
    ErrorCode.INEXISTENT_ITEM: _Row(404, "Accessing an inexistent item"),
    ErrorCode.BAD_REQUEST: _Row(400, "Bad request"),
    ErrorCode.NETWORK_PROTOCOL: _Row(500, "Error in the network protocol"),
    ErrorCode.DATABASE: _Row(500, "Error with the database engine"),
    ErrorCode.URI_SYNTAX: _Row(400, "Badly formatted URI"),
    ErrorCode.INEXISTENT_FILE: _Row(404, "Inexistent file"),
    ErrorCode.CANNOT_WRITE_FILE: _Row(500, "Cannot write to file"),
    ErrorCode.BAD_FILE_FORMAT: _Row(400, "Bad file format"),
    ErrorCode.TIMEOUT: _Row(500, "Timeout"),
    ErrorCode.UNKNOWN_RESOURCE: _Row(404, "Unknown resource"),
    ErrorCode.FULL_STORAGE: _Row(500, "The file storage is full"),
    ErrorCode.CORRUPTED_FILE: _Row(500, "Corrupted file (e.g. inconsistent MD5 hash)"),
    ErrorCode.INEXISTENT_TAG: _Row(404, "Inexistent tag"),
    ErrorCode.READ_ONLY: _Row(500, "Cannot modify a read-only data structure"),
    ErrorCode.UNKNOWN_DICOM_TAG: _Row(404, "Unknown DICOM tag"),
    ErrorCode.BAD_JSON: _Row(400, "Cannot parse a JSON document"),
    ErrorCode.UNAUTHORIZED: _Row(401, "Bad credentials were provided to an HTTP request"),
    ErrorCode.NOT_ACCEPTABLE: _Row(406, "Unable to send the response"),
    ErrorCode.STORAGE_AREA_PLUGIN: _Row(500, "Error in the plugin implementing a custom storage area"),
    ErrorCode.DICOM_FIND_UNAVAILABLE: _Row(500, "DicomUserConnection: The C-FIND command is not supported by the "
                                                "remote SCP"),
    ErrorCode.DICOM_MOVE_UNAVAILABLE: _Row(500, "DicomUserConnection: The C-MOVE command is not supported by the "
                                                "remote SCP"),
    ErrorCode.CANNOT_STORE_INSTANCE: _Row(500, "Cannot store an instance"),
    ErrorCode.CREATE_DICOM_OVERRIDE_TAG: _Row(400, "Trying to override a value inherited from a parent module"),
    ErrorCode.CREATE_DICOM_BAD_PARENT: _Row(400, "Trying to attach a new DICOM instance to an inexistent resource"),
    ErrorCode.UNKNOWN_MODALITY: _Row(404, "Unknown modality"),
    ErrorCode.CANNOT_EXECUTE_LUA: _Row(500, "Cannot execute a Lua command"),
    ErrorCode.LUA_BAD_OUTPUT: _Row(500, "The Lua function does not give the expected number of outputs"),
    ErrorCode.NOT_LUA_PREDICATE: _Row(500, "The Lua function is not a predicate (only true/false outputs allowed)"),
    ErrorCode.LUA_RETURNS_NO_STRING: _Row(500, "The Lua function does not return a string"),
    ErrorCode.CANNOT_ORDER_SLICES: _Row(500, "Unable to order the slices of the series"),
}


class OrthancError(Exception):
    """An error with an Orthanc status code; ``details`` says what was wrong and what to do."""

    def __init__(self, code: ErrorCode, details: str = "", *, http_status: int | None = None) -> None:
        self.code = code
        self.details = details
        row = ERROR_TABLE.get(code, _Row(500, code.name.replace("_", " ").capitalize()))
        self.http_status = http_status if http_status is not None else row.http_status
        self.message = row.message
        super().__init__(f"{self.message}: {details}" if details else self.message)


class RefusedByFilter(OrthancError):
    """``ReceivedCStoreInstanceFilter`` refused an instance: the C-STORE answers ``dimse_status``."""

    def __init__(self, dimse_status: int) -> None:
        super().__init__(ErrorCode.CANNOT_STORE_INSTANCE,
                         f"ReceivedCStoreInstanceFilter refused the instance with status 0x{dimse_status:04X}")
        self.dimse_status = dimse_status


class BareHttpStatus(Exception):
    """An answer with an HTTP status and no body, as Orthanc gives for an unknown resource id (404),
    a disabled endpoint (403) or a method that a route does not allow (405, with ``Allow``).
    From Lua, it is ``nil`` like any other non-200 answer."""

    def __init__(self, http_status: int, details: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(details or f"HTTP status {http_status}")
        self.http_status = http_status
        self.details = details
        self.headers = headers or {}
