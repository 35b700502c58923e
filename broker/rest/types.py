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
    at the end (a script comparing ``RestApiGet``'s string sees Orthanc's bytes)."""
    return json.dumps(value, indent=3, separators=(",", " : "), sort_keys=True, ensure_ascii=False).encode("utf-8")


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
