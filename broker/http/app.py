"""The HTTP application, assembled in plain sight.

Middleware, outermost first: remote access → HTTP Basic authentication → ``IncomingHttpRequestFilter``
→ one catch-all endpoint that turns the starlette request into a ``RestRequest`` and runs
``RestApi.handle`` in the thread pool (handlers are plain blocking functions over the core). The
body is read within ``MaximumHttpBodySize`` and spooled to disk when large (``broker.http.body``).
A JSON answer is turned into XML when the client asks for it (``broker.http.xml``).
"""
from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.core.origin import Origin
from broker.errors import BareHttpStatus, OrthancError
from broker.http.auth import (
    BasicAuthMiddleware,
    LuaHttpFilterMiddleware,
    RemoteAccessMiddleware,
    client_ip,
    effective_method,
)
from broker.http.body import decoded_body, read_body
from broker.http.errors import error_response
from broker.http.xml import json_to_xml, wants_xml
from broker.rest.types import RestRequest
from broker.services import Services

METHODS = ["GET", "POST", "PUT", "DELETE"]


def build_app(services: Services) -> Starlette:
    config = services.config

    async def endpoint(request: Request) -> Response:
        method = effective_method(request.scope)
        if method is None:
            return Response(b"", 400)
        query: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            query.setdefault(key, value)
        try:
            rest_request = RestRequest(
                method=method,
                path=request.url.path,
                query=query,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=decoded_body(await read_body(request, services.store.bounds.max_body),
                                  request.headers.get("content-encoding", ""), services.store.bounds.inflate),
                origin=Origin.rest(client_ip(request.scope), request.scope.get("state", {}).get("username", "")),
            )
            answer = await run_in_threadpool(services.rest.handle, rest_request)
        except (OrthancError, BareHttpStatus) as exc:
            return error_response(request, exc, config.http_describe_errors)
        if answer.content_type == "application/json" and wants_xml(request.headers.get("accept", "")):
            return Response(json_to_xml(json.loads(answer.body)), answer.status, headers=answer.headers,
                            media_type="application/xml")
        return Response(answer.body, answer.status, headers=answer.headers, media_type=answer.content_type)

    return Starlette(
        routes=[Route("/{path:path}", endpoint, methods=METHODS)],
        middleware=[
            Middleware(RemoteAccessMiddleware, allowed=config.remote_access_allowed),
            Middleware(BasicAuthMiddleware, enabled=config.authentication_enabled, users=config.registered_users),
            Middleware(LuaHttpFilterMiddleware, scripts=services.scripts),
        ],
    )
