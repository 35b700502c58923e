"""Per-resource views computed from the instances' files (``broker.core.views``), at every level:
``/{level}/{id}/module`` (and ``/studies/{id}/module-patient``), ``shared-tags``, ``instances-tags``
(``?simplify``, ``?short`` as ``/tags``) and ``statistics``; and, from the index alone, the order of
a series' slices (``/series/{id}/ordered-slices``, ``broker.core.slice_ordering``).

Handlers need ``services.store``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.core import views
from broker.core.levels import Level
from broker.core.slice_ordering import order_slices
from broker.errors import ErrorCode, OrthancError
from broker.rest.instances import ignore_length, json_format
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest
from broker.services import Services

routes = RouteTable()
Handler = Callable[[RestRequest, Services], Any]


def _module(level: Level, module_level: Level) -> Handler:
    def get_module(request: RestRequest, services: Services) -> Any:
        return views.module(services.store, level, request.params["id"], module_level, json_format(request),
                            ignore_length(request))
    return get_module


def _shared_tags(level: Level) -> Handler:
    def get_shared_tags(request: RestRequest, services: Services) -> Any:
        return views.shared_tags(services.store, level, request.params["id"], json_format(request))
    return get_shared_tags


def _instances_tags(level: Level) -> Handler:
    def get_instances_tags(request: RestRequest, services: Services) -> Any:
        return views.instances_tags(services.store, level, request.params["id"], json_format(request),
                                    ignore_length(request))
    return get_instances_tags


def _statistics(level: Level) -> Handler:
    def get_statistics(request: RestRequest, services: Services) -> Any:
        return views.statistics(services.store, level, request.params["id"]).to_json(level)
    return get_statistics


@routes.get("/series/{id}/ordered-slices")
def get_ordered_slices(request: RestRequest, services: Services) -> Any:
    store, series_id = services.store, request.params["id"]
    series = store.view(Level.SERIES, series_id)
    if series is None:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No series with id {series_id}")
    return order_slices(series, store.views(Level.INSTANCE, series.children)).to_json()


for _level in Level:
    _base = f"/{_level.plural}/{{id}}"
    routes.add("GET", f"{_base}/module", _module(_level, _level))
    routes.add("GET", f"{_base}/statistics", _statistics(_level))
    if _level is not Level.INSTANCE:
        routes.add("GET", f"{_base}/shared-tags", _shared_tags(_level))
        routes.add("GET", f"{_base}/instances-tags", _instances_tags(_level))
routes.add("GET", "/studies/{id}/module-patient", _module(Level.STUDY, Level.PATIENT))
