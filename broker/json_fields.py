"""Fields of a JSON object read as Orthanc's ``SerializationToolbox`` reads them, wherever a request
body or a configuration entry is read: the same checks, and the same 400 ``BadFileFormat`` with
"<Kind> value expected in field: <name>" when a field is absent or of another type."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.errors import ErrorCode, OrthancError


def _expected(kind: str, name: str) -> OrthancError:
    return OrthancError(ErrorCode.BAD_FILE_FORMAT, f"{kind} value expected in field: {name}")


def read_string(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise _expected("String", name)
    return value


def read_boolean(obj: Mapping[str, Any], name: str) -> bool:
    value = obj.get(name)
    if not isinstance(value, bool):
        raise _expected("Boolean", name)
    return value


def read_integer(obj: Mapping[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _expected("Integer", name)
    return value


def read_unsigned(obj: Mapping[str, Any], name: str) -> int:
    """A non-negative integer; a float with no fractional part counts (JSON written by some clients)."""
    value = obj.get(name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _expected("Unsigned integer", name)
    return value


def optional_boolean(obj: Mapping[str, Any], name: str, default: bool) -> bool:
    return read_boolean(obj, name) if name in obj else default


def string_field(obj: Mapping[str, Any], name: str, default: str) -> str:
    """Orthanc's ``Toolbox::GetJsonStringField``: ``default`` when absent, ``BadParameterType`` (400,
    no details) when not a string."""
    if name not in obj:
        return default
    value = obj[name]
    if not isinstance(value, str):
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
    return value


def integer_field(obj: Mapping[str, Any], name: str, default: int) -> int:
    """Orthanc's ``Toolbox::GetJsonIntegerField``: as ``string_field``, for an integer."""
    if name not in obj:
        return default
    value = obj[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
    return value
