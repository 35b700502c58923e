"""Route tables: a plain registry of (method, pattern) → handler, like starlette's routing.

Each REST module owns a ``RouteTable`` and registers its handlers with ``@routes.get(...)`` etc.
A placeholder ``{name}`` matches one path segment, ``{name:path}`` the rest of the path.
``broker.rest.api.RestApi`` joins the tables. A handler is ``handler(request, services)`` and returns
a ``RestResponse``, or a JSON-able value (answered as Orthanc-style JSON), or raises ``OrthancError``.
A route registered ``inline=True`` answers from memory without blocking (``GET /system``): the HTTP
server runs it on its event loop, without a worker thread. A route registered ``coordinator=True`` (or
every route of a ``RouteTable(coordinator=True)``) answers from state that lives in the coordinator's
memory (the jobs, the queries, the Lua sandboxes, the settings it pushes to every worker): with several
worker processes, another worker forwards it there (``broker.workers.rest_forward``).

``RouteIndex`` finds the routes a path may match by its first segment, so a request tries a handful of
regular expressions rather than every route's.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Handler = Callable[..., Any]
_PLACEHOLDER = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(:path)?\}")


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: Handler
    inline: bool = False
    coordinator: bool = False


def compile_pattern(pattern: str) -> re.Pattern[str]:
    assert pattern.startswith("/"), f"Route pattern {pattern!r} must start with '/'"
    names = [name for name, _ in _PLACEHOLDER.findall(pattern)]
    assert len(names) == len(set(names)), f"Duplicated param name in route pattern {pattern!r}"
    escaped = re.escape(pattern).replace(r"\{", "{").replace(r"\}", "}").replace(r"\:", ":")
    regex = _PLACEHOLDER.sub(lambda m: f"(?P<{m.group(1)}>{'.+' if m.group(2) else '[^/]+'})", escaped)
    return re.compile(f"^{regex}/?$")


class RouteTable:
    def __init__(self, *, coordinator: bool = False) -> None:
        """``coordinator``: every route of the table is the coordinator's."""
        self.routes: list[Route] = []
        self.coordinator = coordinator

    def add(self, method: str, pattern: str, handler: Handler, *, inline: bool = False,
            coordinator: bool = False) -> None:
        self.routes.append(Route(method, pattern, compile_pattern(pattern), handler, inline,
                                 coordinator or self.coordinator))

    def _decorator(self, method: str, pattern: str, inline: bool = False,
                   coordinator: bool = False) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(method, pattern, handler, inline=inline, coordinator=coordinator)
            return handler
        return register

    def get(self, pattern: str, *, inline: bool = False, coordinator: bool = False) -> Callable[[Handler], Handler]:
        return self._decorator("GET", pattern, inline, coordinator)

    def post(self, pattern: str, *, coordinator: bool = False) -> Callable[[Handler], Handler]:
        return self._decorator("POST", pattern, coordinator=coordinator)

    def put(self, pattern: str, *, coordinator: bool = False) -> Callable[[Handler], Handler]:
        return self._decorator("PUT", pattern, coordinator=coordinator)

    def delete(self, pattern: str, *, coordinator: bool = False) -> Callable[[Handler], Handler]:
        return self._decorator("DELETE", pattern, coordinator=coordinator)


def join(tables: Iterable[RouteTable]) -> list[Route]:
    return [route for table in tables for route in table.routes]


def _first_segment(path: str) -> str:
    return path[1:].split("/", 1)[0]


class RouteIndex:
    """The routes by the first segment of their pattern, each list in registration order (the routes
    whose first segment is a placeholder are in every list, where they belong in that order)."""

    def __init__(self, routes: list[Route]) -> None:
        def first(route: Route) -> str:
            return _first_segment(route.pattern)

        self._variable = [route for route in routes if first(route).startswith("{")]
        self._by_first = {name: [route for route in routes if first(route) == name or first(route).startswith("{")]
                          for name in {first(route) for route in routes} if name and not name.startswith("{")}
        self._root = [route for route in routes if not first(route) or first(route).startswith("{")]

    def candidates(self, path: str) -> list[Route]:
        """The routes that may match ``path`` (a routed path), in registration order."""
        first = _first_segment(path)
        if not first:
            return self._root
        return self._by_first.get(first, self._variable)


def routed_path(path: str) -> str:
    """The path as Orthanc routes it: empty and ``.`` segments are ignored (``//system``,
    ``/system/`` and ``/./system`` are ``/system``) and ``..`` removes the segment before it, if any
    (``/patients/../system`` and ``/../system`` are ``/system``), so clients that join a base URL
    ending in ``/`` with an absolute path (Orthanc's own integration suite does) reach the resource.
    Whatever decides on a path (the routes, the HTTP filter) sees this form, so no spelling of a
    path is served without being checked."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            del segments[-1:]
        elif segment not in ("", "."):
            segments.append(segment)
    return "/" + "/".join(segments)
