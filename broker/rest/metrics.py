"""``GET /tools/metrics-prometheus``: the server's metrics in Prometheus' text format, as Orthanc
answers them (``MetricsEnabled: false`` gives an empty answer, as Orthanc's disabled registry does).
The metrics are listed in docs/operations.md."""
from __future__ import annotations

from broker.metrics import CONTENT_TYPE
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable()


@routes.get("/tools/metrics-prometheus")
def metrics_prometheus(request: RestRequest, services: Services) -> RestResponse:
    body = services.metrics.render() if services.config.metrics_enabled and services.metrics is not None else b""
    return RestResponse(200, body, CONTENT_TYPE)


@routes.get("/tools/metrics")
def metrics_enabled(request: RestRequest, services: Services) -> bool:
    """Whether metrics are collected (Orthanc's ``MetricsEnabled``)."""
    return services.config.metrics_enabled
