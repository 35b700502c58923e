"""``RestApi``: the one entry point of every REST call, from HTTP or from Lua."""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.rest.router import Route, RouteIndex, RouteTable, join, routed_path
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services


@dataclass(frozen=True)
class Call:
    """A routed request, ready to run: ``run()`` answers it. ``inline``: its handler answers from
    memory, so the HTTP server may run it on its event loop rather than in a worker thread."""

    run: Callable[[], RestResponse]
    inline: bool = False


class Forward(Protocol):
    """Where the coordinator's routes run when this process does not hold the role
    (``broker.workers.rest_forward``)."""

    def needed(self) -> bool:
        """Whether the coordinator is another process, now."""

    def __call__(self, request: RestRequest) -> RestResponse:
        """The coordinator's answer to ``request``; raises as ``RestApi.handle``."""


class RestApi:
    def __init__(self, services: Services, tables: list[RouteTable]) -> None:
        self.services = services
        self.routes: list[Route] = join(tables)
        self._index = RouteIndex(self.routes)
        self.forward: Forward | None = None  # set in a worker process of several

    def handle(self, request: RestRequest) -> RestResponse:
        """Route and run one call. Raises ``OrthancError`` or ``BareHttpStatus``; each door converts them
        its own way."""
        return self.resolve(request).run()

    def resolve(self, request: RestRequest) -> Call:
        """The call that answers ``request``, found without running it: 405 when the path is served with
        other methods, an automatic directory (``children``) for a GET that leads to routes, else 404.
        A route of the coordinator's runs there when it is another process (``forward``)."""
        allowed: list[str] = []
        path = routed_path(request.path)
        for route in self._index.candidates(path):
            match = route.regex.match(path)
            if match is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            if route.coordinator and self.forward is not None and self.forward.needed():
                return Call(functools.partial(self.forward, request))
            routed = RestRequest(request.method, path, request.query, request.headers, request.body, request.origin,
                                 match.groupdict())
            return Call(self._runner(route, routed), route.inline)
        if allowed:
            raise BareHttpStatus(405, f"Method {request.method} not allowed on {path}",
                                 {"Allow": ",".join(dict.fromkeys(allowed))})
        children = self.children(path) if request.method == "GET" else []
        if children:
            return Call(lambda: RestResponse.json(children), inline=True)
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)

    def _runner(self, route: Route, request: RestRequest) -> Callable[[], RestResponse]:
        def run() -> RestResponse:
            result = route.handler(request, self.services)
            return result if isinstance(result, RestResponse) else RestResponse.json(result)
        return run

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
