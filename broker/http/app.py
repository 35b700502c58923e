"""The HTTP application, assembled in plain sight.

A plain ASGI chain, outermost first: starlette's ``ServerErrorMiddleware`` (an unexpected exception is a
500) → remote access → HTTP Basic authentication → ``endpoint``, which asks ``IncomingHttpRequestFilter``
(``broker.http.auth.LuaHttpFilter``), turns the request into a ``RestRequest``, routes it
(``RestApi.resolve``) and runs its handler: in a worker thread (``broker.http.threads``; handlers are
plain blocking functions over the core), or on the event loop for the few routes marked ``inline``
(answered from memory). The filter runs in the handler's worker thread, just before it, when the request
has no body; before the body is read when it has one. No starlette router: there is
one endpoint, and its routing, exception and request layers cost as much as a small request.

Each request is its tenant's (docs/tenants.md): the user's (``Tenancy.for_user``), answered by that
tenant's REST API after that tenant's filter; an administrator addresses any tenant by the prefix
``/tenants/{name}`` (``_addressed_tenant``).

The body is read within ``MaximumHttpBodySize`` and spooled to disk when large (``broker.http.body``).
A JSON answer is turned into XML when the client asks for it (``broker.http.xml``).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.core.origin import Origin
from broker.errors import BareHttpStatus, OrthancError
from broker.http.auth import (
    BasicAuthMiddleware,
    LuaHttpFilter,
    RemoteAccessMiddleware,
    client_ip,
    effective_method,
)
from broker.http.body import decoded_body, read_body
from broker.http.errors import error_response
from broker.http.threads import in_thread
from broker.http.xml import json_to_xml, wants_xml
from broker.rest.api import RestApi
from broker.rest.router import routed_path
from broker.rest.types import RestRequest, RestResponse

if TYPE_CHECKING:
    from broker.tenant import Tenancy, Tenant

METHODS = ("GET", "POST", "PUT", "DELETE")


def build_app(tenancy: Tenancy) -> ASGIApp:
    config = tenancy.default.config
    http_filters = {tenant.name: LuaHttpFilter(tenant.services.scripts) for tenant in tenancy}

    async def answer(request: Request, tenant: Tenant) -> Response:
        method = effective_method(request.scope)
        if method is None:
            return Response(b"", 400)
        services = tenant.services
        gate = http_filters[tenant.name].gate(request.scope, method)
        has_body = _has_body(request)
        if gate is not None and has_body:  # refused before its body is read
            refused = await in_thread(gate)
            if refused is not None:
                return refused
            gate = None
        scope = request.scope
        # Read off the ASGI scope as starlette's Request would (names lowercase, latin-1), without
        # building its URL and query objects.
        query: dict[str, str] = {}
        if scope["query_string"]:
            for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
                query.setdefault(key, value)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            rest_request = RestRequest(
                method=method,
                path=scope["path"],
                query=query,
                headers=headers,
                body=decoded_body(await read_body(request, services.store.bounds.max_body),
                                  headers.get("content-encoding", ""), services.store.bounds.inflate)
                if has_body else b"",
                origin=Origin.rest(client_ip(scope), scope.get("state", {}).get("username", "")),
            )
            if gate is not None:
                outcome = await in_thread(_gated, gate, services.rest, rest_request)
                if isinstance(outcome, Response):
                    return outcome
                result = outcome
            else:
                call = services.rest.resolve(rest_request)
                result = call.run() if call.inline else await in_thread(call.run)
        except (OrthancError, BareHttpStatus) as exc:
            return error_response(request, exc, config.http_describe_errors)
        if result.content_type == "application/json" and wants_xml(request.headers.get("accept", "")):
            return Response(json_to_xml(json.loads(result.body)), result.status, headers=result.headers,
                            media_type="application/xml")
        return Response(result.body, result.status, headers=result.headers, media_type=result.content_type)

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; there are no websockets
            return
        if scope["method"] not in METHODS:
            response: Response = PlainTextResponse("Method Not Allowed", 405, headers={"Allow": ", ".join(METHODS)})
        else:
            username = scope.get("state", {}).get("username", "")
            tenant = tenancy.for_user(username)
            if tenancy.administers(username):
                addressed = _addressed_tenant(scope, tenancy)
                if isinstance(addressed, Response):
                    await addressed(scope, receive, send)
                    return
                if addressed is not None:
                    tenant, scope = addressed
            response = await answer(Request(scope, receive), tenant)
        await response(scope, receive, send)

    app: ASGIApp = BasicAuthMiddleware(endpoint, enabled=config.authentication_enabled, users=config.registered_users)
    app = RemoteAccessMiddleware(app, allowed=config.remote_access_allowed)
    return ServerErrorMiddleware(app)


def _has_body(request: Request) -> bool:
    headers = request.headers
    return headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers


def _gated(gate: Callable[[], Response | None], rest: RestApi, request: RestRequest) -> Response | RestResponse:
    """The filter's refusal, or the answer: the filter runs first, as for a request with a body."""
    return gate() or rest.resolve(request).run()


def _addressed_tenant(scope: Scope, tenancy: Tenancy) -> Response | tuple[Tenant, Scope] | None:
    """An administrator's request under ``/tenants``: the list of tenants (``GET /tenants``), one
    tenant's description (``GET /tenants/{name}``), or the tenant and the request as that tenant
    serves it (``/tenants/{name}/patients`` is its ``/patients``). None for any other path."""
    if "tenants" not in scope["path"]:  # most requests: no routing of the path needed to know
        return None
    segments = routed_path(scope["path"]).split("/")[1:]
    if segments[0] != "tenants":
        return None
    if len(segments) == 1:
        return _json([tenant.name for tenant in tenancy])
    tenant = tenancy.by_name.get(segments[1])
    if tenant is None:
        return _json({"Message": f"No tenant named {segments[1]!r}", "HttpStatus": 404}, 404)
    if len(segments) == 2:
        return _json(tenancy.describe(tenant))
    return tenant, {**scope, "path": "/" + "/".join(segments[2:])}


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value, indent=3).encode(), status, media_type="application/json")
