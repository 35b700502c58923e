"""``RestApi``: the one entry point of every REST call, from HTTP or from Lua."""
from __future__ import annotations

from dataclasses import replace

from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.rest.router import Route, RouteTable, join, routed_path
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
        request = replace(request, path=routed_path(request.path))
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
        children = self.children(request.path) if request.method == "GET" else []
        if children:
            return RestResponse.json(children)
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)

    def children(self, path: str) -> list[str]:
        """Orthanc's automatic directories: a GET of a path that is no resource but leads to some lists
        the names that can follow it (``GET /tools``, ``GET /instances/{id}/frames/0``)."""
        segments = [segment for segment in path.split("/") if segment]
        names: set[str] = set()
        for route in self.routes:
            pattern = [segment for segment in route.pattern.split("/") if segment]
            if len(pattern) > len(segments) and all(expected == actual or expected.startswith("{") for expected, actual
                                                    in zip(pattern[:len(segments)], segments, strict=True)):
                following = pattern[len(segments)]
                if not following.startswith("{"):
                    names.add(following)
        return sorted(names)

