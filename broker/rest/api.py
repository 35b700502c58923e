"""``RestApi``: the one entry point of every REST call, from HTTP or from Lua."""
from __future__ import annotations

from dataclasses import replace

from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.rest.router import Route, RouteTable, join, without_empty_segments
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services


class RestApi:
    def __init__(self, services: Services, tables: list[RouteTable]) -> None:
        self.services = services
        self.routes: list[Route] = join(tables)

    def handle(self, request: RestRequest) -> RestResponse:
        """Route and run one call. Raises ``OrthancError`` or ``BareHttpStatus``; each door converts them
        its own way."""
        allowed: list[str] = []
        request = replace(request, path=without_empty_segments(request.path))
        for route in self.routes:
            match = route.regex.match(request.path)
            if match is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            result = route.handler(replace(request, params=match.groupdict()), self.services)
            return result if isinstance(result, RestResponse) else RestResponse.json(result)
        if allowed:
            raise BareHttpStatus(405, f"Method {request.method} not allowed on {request.path}",
                                 {"Allow": ",".join(dict.fromkeys(allowed))})
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)

