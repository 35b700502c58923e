"""The Lua built-ins that cross the process boundary, implemented once, in one registry.

The Lua side declares the same names in ``lua-runtime/builtins.lua`` and turns each call into an
``rpc`` frame; ``Bridge.dispatch`` looks the name up here. A built-in receives the raw argument list
(Lua nils preserved as ``None``) and a ``CallContext``; it validates its arguments at the boundary and
returns what the script sees. Orthanc's conventions are kept where a script can tell: the
``RestApi*`` family answers ``nil`` for a bad call or a non-200 status (with a log line), never an
error (spec section 3).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from broker.core.origin import Origin
from broker.errors import BareHttpStatus, OrthancError
from broker.rest.types import RestRequest
from broker.scripting.values import lua_tostring, to_lua

log = logging.getLogger("luabroker.lua")


@dataclass(frozen=True)
class CallContext:
    """What a built-in may use: the services of the server and who is calling."""

    services: Any
    tenant: str
    sandbox: str
    function: str


BuiltinFunction = Callable[[CallContext, list[Any]], Any]
BUILTINS: dict[str, BuiltinFunction] = {}


def builtin(name: str) -> Callable[[BuiltinFunction], BuiltinFunction]:
    def register(function: BuiltinFunction) -> BuiltinFunction:
        assert name not in BUILTINS, f"Built-in {name} is registered twice"
        BUILTINS[name] = function
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


def _rest_call(ctx: CallContext, name: str, method: str, uri: str, body: bytes,
               headers: dict[str, str]) -> bytes | None:
    path, query = uri, {}
    if method == "GET":  # Orthanc parses a query string for GET only
        parts = urlsplit(uri)
        path, query = parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
    request = RestRequest(method, unquote(path), query, headers, body, Origin.lua())
    try:
        response = ctx.services.rest.handle(request)
    except (OrthancError, BareHttpStatus) as exc:
        log.error("Lua: Error in %s() for URI: %s (%s)", name, uri, exc)
        return None
    if response.status != 200:
        log.error("Lua: Error in %s() for URI: %s (HTTP status %d)", name, uri, response.status)
        return None
    return response.body


def _bad(name: str, exc: BadArguments) -> None:
    log.error("Lua: Bad parameters to %s(): %s", name, exc)
    return None


@builtin("RestApiGet")
def rest_api_get(ctx: CallContext, args: list[Any]) -> bytes | None:
    """``RestApiGet(uri [, builtin [, headers]])``: the body on HTTP 200, else nil."""
    try:
        if not 1 <= len(args) <= 3:
            raise BadArguments(f"expected 1 to 3 arguments, got {len(args)}")
        uri, headers = _uri(args[0]), _options(args, 1)
    except BadArguments as exc:
        return _bad("RestApiGet", exc)
    return _rest_call(ctx, "RestApiGet", "GET", uri, b"", headers)


@builtin("RestApiDelete")
def rest_api_delete(ctx: CallContext, args: list[Any]) -> bool | None:
    """``RestApiDelete(uri [, builtin [, headers]])``: true on HTTP 200, else nil."""
    try:
        if not 1 <= len(args) <= 3:
            raise BadArguments(f"expected 1 to 3 arguments, got {len(args)}")
        uri, headers = _uri(args[0]), _options(args, 1)
    except BadArguments as exc:
        return _bad("RestApiDelete", exc)
    return True if _rest_call(ctx, "RestApiDelete", "DELETE", uri, b"", headers) is not None else None


def _post_or_put(ctx: CallContext, name: str, method: str, args: list[Any]) -> bytes | None:
    try:
        if not 2 <= len(args) <= 4:
            raise BadArguments(f"expected 2 to 4 arguments, got {len(args)}")
        uri, body, headers = _uri(args[0]), _body(args[1]), _options(args, 2)
    except BadArguments as exc:
        return _bad(name, exc)
    return _rest_call(ctx, name, method, uri, body, headers)


@builtin("RestApiPost")
def rest_api_post(ctx: CallContext, args: list[Any]) -> bytes | None:
    """``RestApiPost(uri, body [, builtin [, headers]])``: the body on HTTP 200, else nil."""
    return _post_or_put(ctx, "RestApiPost", "POST", args)


@builtin("RestApiPut")
def rest_api_put(ctx: CallContext, args: list[Any]) -> bytes | None:
    """``RestApiPut(uri, body [, builtin [, headers]])``: the body on HTTP 200, else nil."""
    return _post_or_put(ctx, "RestApiPut", "PUT", args)


@builtin("GetOrthancConfiguration")
def get_orthanc_configuration(ctx: CallContext, args: list[Any]) -> Any:
    """The configuration as written in the files (no defaults filled in), as a Lua table."""
    return to_lua(ctx.services.config.raw)
