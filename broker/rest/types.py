"""The shape of a REST call, whichever door it came through."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.core.origin import Origin


@dataclass(frozen=True)
class RestRequest:
    """One call to the REST API.

    ``path`` is decoded and has no query string; ``query`` maps each argument to its first value
    (``""`` for a bare ``?expand``); ``headers`` have lower-cased names. ``params`` is filled by the
    router from the route's ``{placeholders}``.
    """

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    origin: Origin = field(default_factory=Origin.lua)
    params: Mapping[str, str] = field(default_factory=dict)

    def json_body(self) -> Any:
        """The body parsed as JSON, or a 400 that says why."""
        from broker.errors import ErrorCode, OrthancError

        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise OrthancError(ErrorCode.BAD_JSON, f"The body is not valid JSON: {exc}") from exc


def dump_json(value: Any) -> bytes:
    """Orthanc's REST JSON style: 3-space indent, ``" : "`` separators, sorted keys, UTF-8."""
    return (json.dumps(value, indent=3, separators=(",", " : "), sort_keys=True, ensure_ascii=False)
            + "\n").encode("utf-8")


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
