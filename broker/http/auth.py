"""Who may talk to the HTTP server: remote access, HTTP Basic users, then the Lua filter.

Pure ASGI middleware, applied in this order by ``broker.http.app``, then the Lua filter, which the
endpoint runs (``LuaHttpFilter``). The authenticated user name is stored in
``scope["state"]["username"]`` for the Lua filter and for the instance ``origin``.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.errors import BareHttpStatus, OrthancError
from broker.http.errors import orthanc_error_body
from broker.rest.router import routed_path
from broker.scripting.filters import http_request_allowed

if TYPE_CHECKING:
    from broker.scripting.bridge import ScriptSet


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else ""


@functools.lru_cache(maxsize=1024)
def _is_loopback(ip: str) -> bool:
    """Cached: parsing the address cost a twentieth of a small request's CPU (profiled under wrk)."""
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class RemoteAccessMiddleware:
    """``RemoteAccessAllowed: false`` (Orthanc's default): only loopback clients are served."""

    def __init__(self, app: ASGIApp, allowed: bool) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allowed and not _is_loopback(client_ip(scope)):
            await Response(b"", 403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def check_basic(authorization: str | None, users: Mapping[str, str]) -> str | None:
    """The user name if ``authorization`` carries valid Basic credentials, else None."""
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(authorization[6:].strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    expected = users.get(user)
    if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
        return None
    return user


class BasicAuthMiddleware:
    def __init__(self, app: ASGIApp, enabled: bool, users: Mapping[str, str]) -> None:
        self.app, self.enabled, self.users = app, enabled, dict(users)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        username = ""
        if self.enabled:
            user = check_basic(Headers(scope=scope).get("authorization"), self.users)
            if user is None:
                await Response(b"", 401, headers={"WWW-Authenticate": 'Basic realm="Orthanc Secure Area"'})(
                    scope, receive, send)
                return
            username = user
        scope.setdefault("state", {})["username"] = username
        await self.app(scope, receive, send)


#: The operator's endpoints (``/lua/status``, ``/lua/reload``, ``/lua/reset``, the parked events) are
#: answered without asking ``IncomingHttpRequestFilter``: a busy, broken or quarantined main process
#: must not lock the operator out of the tools that repair it (docs/security.md). Matched whole, so no
#: other path (``/lua/../tools/...``) slips through.
OPERATOR_PATHS = re.compile(r"/lua/(status|reload|reset|events/parked|events/parked/[0-9]+/requeue)")


class LuaHttpFilter:
    """``IncomingHttpRequestFilter``: false → 403 with an empty body; an error → Orthanc's 500 JSON.

    Whether the filter exists is known without asking the main process (``ScriptSet.defines``), so a
    request never waits on a process that does not define it, and does not even use a worker thread;
    when it is defined and the process is busy, the wait is bounded (``LuaSandbox.BusyTimeout``), then
    the filter's failure policy answers. ``gate`` gives the check of one request, which the endpoint
    runs before anything else of the request: in the worker thread of its handler when the request has
    no body (one thread hop for both), else before the body is read."""

    def __init__(self, scripts: ScriptSet) -> None:
        self.scripts = scripts

    def gate(self, scope: Scope, method: str) -> Callable[[], Response | None] | None:
        """The check of this request (its answer when refused, else None), or None when no filter
        applies: none is defined, or the path is one of the operator's."""
        if not self.scripts.defines("IncomingHttpRequestFilter"):
            return None
        path = routed_path(scope["path"])  # the path that will be served
        if OPERATOR_PATHS.fullmatch(path):
            return None
        headers = Headers(scope=scope).items()
        ip, username = client_ip(scope), scope.get("state", {}).get("username", "")

        def check() -> Response | None:
            try:
                allowed = http_request_allowed(self.scripts, method, path, ip, username, headers)
            except (OrthancError, BareHttpStatus) as exc:
                body = orthanc_error_body(exc, method, path) if isinstance(exc, OrthancError) else b""
                return Response(body, exc.http_status, media_type="application/json")
            return None if allowed else Response(b"", 403)
        return check


def effective_method(scope: Scope) -> str | None:
    """The method served, after Orthanc's method faking: the ``X-HTTP-Method-Override`` header (Google's
    way), or on a GET the ``_method`` argument (Ruby on Rails'). Only PUT and DELETE can be faked
    (any case); None for another value, which Orthanc answers with 400."""
    method: str = scope["method"]
    override = next((value.decode("latin-1") for name, value in scope["headers"]
                     if name.lower() == b"x-http-method-override"), None)
    query: bytes = scope.get("query_string", b"")
    if not override and method == "GET" and b"_method" in query:
        arguments = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        override = next((value for key, value in arguments if key == "_method"), None)
    if not override:
        return method
    return override.upper() if override.upper() in ("PUT", "DELETE") else None
