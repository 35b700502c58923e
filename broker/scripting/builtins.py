"""The Lua built-ins that cross the process boundary, implemented once, in one registry.

The Lua side declares the same names in ``lua-runtime/builtins.lua`` and turns each call into an
``rpc`` frame; ``Bridge.dispatch`` looks the name up here. A built-in receives the raw argument list
(Lua nils preserved as ``None``) and a ``CallContext``; it validates its arguments at the boundary and
returns what the script sees. Orthanc's conventions are kept where a script can tell: the
``RestApi*`` family answers ``nil`` for a bad call or a non-200 status (with a log line), never an
error (spec section 3). Those log lines quote what the script passed (a URI, a URL, a header name), so
they go through the scripts' log (``broker.scripting.script_log``: escaped, attributed, rate-limited).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from broker.core.origin import Origin
from broker.core.requests import RestRequest
from broker.errors import BareHttpStatus, OrthancError
from broker.scripting import journal as journals
from broker.scripting.http_client import HostRefused, HttpTransportError
from broker.scripting.redaction import redact
from broker.scripting.values import lua_tostring, to_lua
from broker.services import Services
from sandbox import BuiltinError


@dataclass(frozen=True)
class CallContext:
    """What a built-in may use: the services of the server and who is calling."""

    services: Services
    tenant: str
    sandbox: str
    function: str


BuiltinFunction = Callable[[CallContext, list[Any]], Any]
BUILTINS: dict[str, BuiltinFunction] = {}
#: Built-ins that change something (the store, a peer): journaled, so that the retry of a killed call
#: does not apply them twice (``broker.scripting.journal``). Reads always run again.
WRITING_BUILTINS: set[str] = set()
#: Built-ins whose every call goes to the audit log (``broker.core.audit``): the privileged actions
#: of a script, i.e. every write and every outbound HTTP request.
AUDITED_BUILTINS: set[str] = set()


def builtin(name: str, *, writes: bool = False, audited: bool = False) -> Callable[[BuiltinFunction], BuiltinFunction]:
    """Register a built-in; ``writes=True`` for one that changes anything (see ``WRITING_BUILTINS``),
    ``audited=True`` for one that is audited without writing (an outbound HTTP GET)."""
    def register(function: BuiltinFunction) -> BuiltinFunction:
        assert name not in BUILTINS, f"Built-in {name} is registered twice"
        BUILTINS[name] = function
        if writes:
            WRITING_BUILTINS.add(name)
        if writes or audited:
            AUDITED_BUILTINS.add(name)
        return function
    return register


class BadArguments(Exception):
    """A built-in was called with arguments Orthanc would refuse ("Bad parameters to …")."""


def _headers(value: Any) -> dict[str, str]:
    # Orthanc lower-cases the names and turns the values into strings; an empty Lua table crosses as
    # an empty array, which the broker treats as "no headers" (spec section 3, the `{}` case).
    if value is None or value == []:
        return {}
    if not isinstance(value, dict):
        raise BadArguments("the headers must be a table")
    return {str(k).lower(): lua_tostring(v) for k, v in value.items()}


def _uri(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise BadArguments("the URI must be a string")
    return value


def _body(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return lua_tostring(value).encode("ascii")
    raise BadArguments("the body must be a string")


def _options(args: list[Any], first: int) -> dict[str, str]:
    """The optional ``builtin`` and ``headers`` arguments after position ``first``.

    If present, ``builtin`` must be a boolean (so ``RestApiGet(u, nil, h)`` is refused, as in Orthanc).
    There are no plugins, so ``builtin = true`` changes nothing.
    """
    rest = args[first:]
    if len(rest) > 2:
        raise BadArguments(f"expected at most {first + 2} arguments, got {len(args)}")
    if rest and not isinstance(rest[0], bool):
        raise BadArguments("the 'builtin' argument must be a boolean")
    return _headers(rest[1]) if len(rest) == 2 else {}


def _log_error(ctx: CallContext, text: str) -> None:
    ctx.services.script_log.emit(ctx.tenant, ctx.sandbox, logging.ERROR, text)


def _path_and_query(method: str, uri: str) -> tuple[str, dict[str, str]] | None:
    """Orthanc's reading of a ``RestApi*`` URI: a path of this server's REST API, used as written (not
    %-decoded), with a query string for GET only. None for what Orthanc refuses as a badly formatted
    URI: one that does not start with ``/`` (``http://host/system`` is not ``/system``) or has an empty
    component (``//host/system``); and, here, for a ``.`` or ``..`` component, which names no resource."""
    path, query = uri, ""
    if method == "GET":
        path, _, query = uri.partition("?")
    components = path[1:].split("/")
    if components[-1] == "":  # a trailing slash: "/system/", "/"
        components.pop()
    if not path.startswith("/") or any(component in ("", ".", "..") for component in components):
        return None
    return path, dict(parse_qsl(query, keep_blank_values=True)) if query else {}


def _rest_call(ctx: CallContext, name: str, method: str, uri: str, body: bytes,
               headers: dict[str, str]) -> bytes | None:
    parsed = _path_and_query(method, uri)
    if parsed is None:
        _log_error(ctx, f"Lua: Error in {name}() for URI: {uri} (Badly formatted URI)")
        return None
    request = RestRequest(method, parsed[0], parsed[1], headers, body, Origin.lua())
    try:
        response = ctx.services.rest.handle(request)
    except (OrthancError, BareHttpStatus) as exc:
        _log_error(ctx, f"Lua: Error in {name}() for URI: {uri} ({exc})")
        return None
    if response.status != 200:
        _log_error(ctx, f"Lua: Error in {name}() for URI: {uri} (HTTP status {response.status})")
        return None
    return response.body


def _bad(ctx: CallContext, name: str, exc: BadArguments) -> None:
    _log_error(ctx, f"Lua: Bad parameters to {name}(): {exc}")


@builtin("RestApiGet")
def rest_api_get(ctx: CallContext, args: list[Any]) -> bytes | None:
    """``RestApiGet(uri [, builtin [, headers]])``: the body on HTTP 200, else nil."""
    try:
        if not 1 <= len(args) <= 3:
            raise BadArguments(f"expected 1 to 3 arguments, got {len(args)}")
        uri, headers = _uri(args[0]), _options(args, 1)
    except BadArguments as exc:
        _bad(ctx, "RestApiGet", exc)
        return None
    return _rest_call(ctx, "RestApiGet", "GET", uri, b"", headers)


@builtin("RestApiDelete", writes=True)
def rest_api_delete(ctx: CallContext, args: list[Any]) -> bool | None:
    """``RestApiDelete(uri [, builtin [, headers]])``: true on HTTP 200, else nil."""
    try:
        if not 1 <= len(args) <= 3:
            raise BadArguments(f"expected 1 to 3 arguments, got {len(args)}")
        uri, headers = _uri(args[0]), _options(args, 1)
    except BadArguments as exc:
        _bad(ctx, "RestApiDelete", exc)
        return None
    return True if _rest_call(ctx, "RestApiDelete", "DELETE", uri, b"", headers) is not None else None


def _post_or_put(ctx: CallContext, name: str, method: str, args: list[Any]) -> bytes | None:
    try:
        if not 2 <= len(args) <= 4:
            raise BadArguments(f"expected 2 to 4 arguments, got {len(args)}")
        uri, body, headers = _uri(args[0]), _body(args[1]), _options(args, 2)
    except BadArguments as exc:
        _bad(ctx, name, exc)
        return None
    return _rest_call(ctx, name, method, uri, body, headers)


@builtin("RestApiPost", writes=True)
def rest_api_post(ctx: CallContext, args: list[Any]) -> bytes | None:
    """``RestApiPost(uri, body [, builtin [, headers]])``: the body on HTTP 200, else nil."""
    return _post_or_put(ctx, "RestApiPost", "POST", args)


@builtin("RestApiPut", writes=True)
def rest_api_put(ctx: CallContext, args: list[Any]) -> bytes | None:
    """``RestApiPut(uri, body [, builtin [, headers]])``: the body on HTTP 200, else nil."""
    return _post_or_put(ctx, "RestApiPut", "PUT", args)


@builtin("GetCurrentEvent")
def get_current_event(ctx: CallContext, args: list[Any]) -> Any:
    """luabroker's own (Orthanc has no such function): ``{Seq = n, Attempt = k}`` of the outbox event
    the running callback delivers; ``Attempt`` > 1 is a redelivery (an earlier attempt was cut or
    raised). ``nil`` outside an event (a filter, execute-script, ``OnHeartBeat``)."""
    journal = journals.active()
    if journal is None or journal.delivery is None:
        return None
    return {"Seq": journal.delivery, "Attempt": journal.attempt}


@builtin("GetOrthancConfiguration")
def get_orthanc_configuration(ctx: CallContext, args: list[Any]) -> Any:
    """The configuration as written in the files (no defaults filled in), as a Lua table; its secrets
    replaced by a marker unless ``LuaExposeSecrets`` (``broker.scripting.redaction``)."""
    config = ctx.services.config
    return to_lua(config.raw if config.lua_expose_secrets else redact(config.raw))


# The HTTP client (spec section 3): Orthanc's argument checks are lua_isstring (a string or a number),
# lua_istable and lua_isnumber (a number or a numeric string). Get/Post/Put answer the body on 2xx, ""
# on any other status and nil on a transport error; Delete answers "SUCCESS" on 2xx, nil otherwise,
# and a transport error is a Lua error. A host refused by LuaHttpAllowedHosts is nil for all four.


def _is_lua_string(value: Any) -> bool:
    return isinstance(value, (str, bytes)) or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _lua_string(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else lua_tostring(value)


def _lua_number(value: Any) -> float | None:
    """``lua_tonumber``: a number, or a string Lua reads as one (``" 5 "``, ``"0x10"``, ``"1e2"``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return int(text, 16) if text.lower().startswith(("0x", "-0x")) else None
        except ValueError:
            return None
    return None


def _http_headers(value: Any) -> dict[bytes, bytes]:
    """Header names keep their case (unlike ``RestApi*``); ``{}`` (an empty array on the wire) is no headers."""
    if value == [] or value == {}:
        return {}
    if not isinstance(value, dict):
        raise BadArguments("the headers must be a table of names and values")
    headers: dict[bytes, bytes] = {}
    for name, item in value.items():
        if isinstance(item, (dict, list)):
            raise BadArguments(f"the value of the header {name!r} must be a string")
        text = item if isinstance(item, bytes) else lua_tostring(item).encode("utf-8")
        key = name if isinstance(name, bytes) else lua_tostring(name).encode("utf-8")
        if not key:
            raise BadArguments("a header name is empty")
        headers[key] = text
    return headers


def _http_call(ctx: CallContext, name: str, method: str, url: Any, body: bytes | None,
               headers: dict[bytes, bytes]) -> Any:
    """The answer, or None after logging why there is none; raises ``HttpTransportError`` for Delete."""
    target = _lua_string(url)
    try:
        return ctx.services.lua_http.request(ctx.sandbox, method, target, body, headers)
    except HostRefused as exc:
        _log_error(ctx, f"Lua: {name}() refused for URL: {target} ({exc})")
        return None
    except HttpTransportError as exc:
        if method == "DELETE":
            raise
        _log_error(ctx, f"Lua: Error in {name}() for URL: {target} ({exc})")
        return None


def _get_or_delete_arguments(args: list[Any]) -> tuple[Any, dict[bytes, bytes]]:
    """A nil table of headers is no headers, as Orthanc reads ``HttpGet(url, nil)``."""
    if not 1 <= len(args) <= 2 or not _is_lua_string(args[0]):
        raise BadArguments("expected a URL and optionally a table of headers")
    headers = args[1] if len(args) == 2 else None
    if headers is not None and not isinstance(headers, (dict, list)):
        raise BadArguments("the headers must be a table")
    return args[0], _http_headers(headers) if headers is not None else {}


@builtin("HttpGet", audited=True)
def http_get(ctx: CallContext, args: list[Any]) -> bytes | None:
    """``HttpGet(url [, headers])``: the body on 2xx, ``""`` on another status, nil on a transport error."""
    try:
        url, headers = _get_or_delete_arguments(args)
    except BadArguments as exc:
        _bad(ctx, "HttpGet", exc)
        return None
    answer = _http_call(ctx, "HttpGet", "GET", url, None, headers)
    return None if answer is None else (answer.body if answer.ok else b"")


def _post_or_put_http(ctx: CallContext, name: str, method: str, args: list[Any]) -> bytes | None:
    try:
        if not 1 <= len(args) <= 3 or not _is_lua_string(args[0]):
            raise BadArguments("expected a URL, optionally a body and a table of headers")
        if len(args) >= 2 and args[1] is not None and not _is_lua_string(args[1]):
            raise BadArguments("the body must be a string or nil")
        table = args[2] if len(args) == 3 else None  # nil headers are no headers, as in Orthanc
        if table is not None and not isinstance(table, (dict, list)):
            raise BadArguments("the headers must be a table")
        body = _body(args[1]) if len(args) >= 2 and args[1] is not None else b""
        headers = _http_headers(table) if table is not None else {}
    except BadArguments as exc:
        _bad(ctx, name, exc)
        return None
    answer = _http_call(ctx, name, method, args[0], body, headers)
    return None if answer is None else (answer.body if answer.ok else b"")


@builtin("HttpPost", writes=True)
def http_post(ctx: CallContext, args: list[Any]) -> bytes | None:
    """``HttpPost(url [, body [, headers]])``: as ``HttpGet``; a nil body sends no data."""
    return _post_or_put_http(ctx, "HttpPost", "POST", args)


@builtin("HttpPut", writes=True)
def http_put(ctx: CallContext, args: list[Any]) -> bytes | None:
    """``HttpPut(url [, body [, headers]])``: as ``HttpPost``."""
    return _post_or_put_http(ctx, "HttpPut", "PUT", args)


@builtin("HttpDelete", writes=True)
def http_delete(ctx: CallContext, args: list[Any]) -> str | None:
    """``HttpDelete(url [, headers])``: ``"SUCCESS"`` on 2xx, nil otherwise; a transport error raises."""
    try:
        url, headers = _get_or_delete_arguments(args)
    except BadArguments as exc:
        _bad(ctx, "HttpDelete", exc)
        return None
    try:
        answer = _http_call(ctx, "HttpDelete", "DELETE", url, None, headers)
    except HttpTransportError as exc:
        raise BuiltinError(f"HttpDelete(): no answer from {_lua_string(url)}: {exc}") from exc
    if answer is None or not answer.ok:
        if answer is not None:
            _log_error(ctx, f"Lua: Error in HttpDelete() for URL: {_lua_string(url)} (HTTP status {answer.status})")
        return None
    return "SUCCESS"


@builtin("SetHttpCredentials")
def set_http_credentials(ctx: CallContext, args: list[Any]) -> None:
    """``SetHttpCredentials(username, password)``: HTTP Basic for the later ``Http*`` calls of this process."""
    if len(args) != 2 or not _is_lua_string(args[0]) or not _is_lua_string(args[1]):
        _bad(ctx, "SetHttpCredentials", BadArguments("expected a user name and a password"))
        return None
    ctx.services.lua_http.set_credentials(ctx.sandbox, _lua_string(args[0]), _lua_string(args[1]))
    return None


@builtin("SetHttpTimeout")
def set_http_timeout(ctx: CallContext, args: list[Any]) -> None:
    """``SetHttpTimeout(seconds)``: truncated to an integer; <= 0 means 60 s."""
    seconds = _lua_number(args[0]) if len(args) == 1 else None
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        _bad(ctx, "SetHttpTimeout", BadArguments("expected a number of seconds"))
        return None
    ctx.services.lua_http.set_timeout(ctx.sandbox, int(seconds))
    return None
