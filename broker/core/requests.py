"""``RestRequest``: one call to the REST API, whichever door it came through.

The doors are HTTP (``broker.http``) and the Lua ``RestApi*`` built-ins (``broker.scripting``), and
the handlers that answer it are in ``broker.rest``; the value they all share lives here, below all of
them (docs/architecture.md, "Dependencies"). ``broker.rest.types`` exports it with ``RestResponse``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.core.origin import Origin
from broker.errors import ErrorCode, OrthancError


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

    def json_object(self) -> dict[str, Any] | None:
        """The body if it is a JSON object, else None: each route answers that its own way, as Orthanc."""
        try:
            body = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    def json_body(self) -> Any:
        """The body parsed as JSON, or a 400 that says why."""
        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise OrthancError(ErrorCode.BAD_JSON, f"The body is not valid JSON: {exc}") from exc
