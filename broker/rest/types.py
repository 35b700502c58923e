"""The shape of a REST call, whichever door it came through: the request (defined in
``broker.core.requests``, so that the Lua built-ins, below the REST layer, can build one) and the
response."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from broker.core.requests import RestRequest
from broker.errors import ErrorCode, OrthancError

__all__ = ["RestRequest", "RestResponse", "boolean_body", "dump_json"]

_BOOLEANS = {"0": False, "1": True, "false": False, "true": True}


def boolean_body(request: RestRequest) -> bool:
    """A body that is a Boolean, as Orthanc's ``ParseBoolean`` reads it: ``0``, ``1``, ``false`` or
    ``true``, spaces around allowed."""
    value = _BOOLEANS.get(request.body.decode("utf-8", "replace").strip())
    if value is None:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Boolean value expected")
    return value


def dump_json(value: Any) -> bytes:
    """Orthanc's REST JSON style: 3-space indent, ``" : "`` separators, sorted keys, UTF-8, no newline
    at the end (a script comparing ``RestApiGet``'s string sees Orthanc's bytes).

    Exactly ``json.dumps(value, indent=3, separators=(",", " : "), sort_keys=True, ensure_ascii=False)``,
    whose indenting encoder is pure Python and sets up a dozen closures per call: for the small answers
    of most calls (``[]``, a list of ids) that setup cost more than the handler (profiled on
    ``RestApiGet('/patients')``). The JSON types are written here, strings and numbers by the json
    module's C functions; anything else (a non-string key, another type) takes ``json.dumps``."""
    parts: list[str] = []
    try:
        _write_json(value, "\n", parts)
    except _NotPlainJson:
        return json.dumps(value, indent=3, separators=(",", " : "), sort_keys=True, ensure_ascii=False).encode()
    return "".join(parts).encode()


class _NotPlainJson(Exception):
    pass


_string = json.encoder.encode_basestring  # C (ensure_ascii=False)
_number = json.JSONEncoder(ensure_ascii=False).encode  # C for a float (NaN, Infinity as json.dumps)
_INDENT = "   "


def _write_json(value: Any, newline: str, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(_string(value))
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, int):
        parts.append(int.__repr__(value))
    elif isinstance(value, float):
        parts.append(_number(value))
    elif isinstance(value, (list, tuple)):
        if not value:
            parts.append("[]")
            return
        inner = newline + _INDENT
        parts.append("[" + inner)
        for index, item in enumerate(value):
            if index:
                parts.append("," + inner)
            _write_json(item, inner, parts)
        parts.append(newline + "]")
    elif isinstance(value, dict):
        if not value:
            parts.append("{}")
            return
        if not all(isinstance(key, str) for key in value):
            raise _NotPlainJson()
        inner = newline + _INDENT
        parts.append("{" + inner)
        for index, (key, item) in enumerate(sorted(value.items())):
            if index:
                parts.append("," + inner)
            parts.append(_string(key) + " : ")
            _write_json(item, inner, parts)
        parts.append(newline + "}")
    else:
        raise _NotPlainJson()


@dataclass
class RestResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> RestResponse:
        return cls(status, dump_json(value), "application/json")

    @classmethod
    def text(cls, text: str, status: int = 200) -> RestResponse:
        return cls(status, text.encode("utf-8"), "text/plain")

    @classmethod
    def binary(cls, data: bytes, content_type: str = "application/octet-stream") -> RestResponse:
        return cls(200, data, content_type)
