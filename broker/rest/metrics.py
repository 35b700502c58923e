"""``GET /tools/metrics-prometheus``: the server's metrics in Prometheus' text format, as Orthanc
answers them (``MetricsEnabled: false`` gives an empty answer, as Orthanc's disabled registry does).
The metrics are listed in docs/operations.md."""
from __future__ import annotations

from broker.metrics import CONTENT_TYPE, merged
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable(coordinator=True)


@routes.get("/tools/metrics-prometheus")
def metrics_prometheus(request: RestRequest, services: Services) -> RestResponse:
    """With several worker processes, every worker's metrics, each sample labelled with its ``worker``
    (docs/workers.md)."""
    if not services.config.metrics_enabled or services.metrics is None:
        body = b""
    elif services.siblings is not None:
        body = merged((status["Pid"], status.get("Metrics", ""))
                      for status in services.siblings.statuses(metrics=True))
    else:
        body = services.metrics.render()
    return RestResponse(200, body, CONTENT_TYPE)


@routes.get("/tools/metrics")
def metrics_enabled(request: RestRequest, services: Services) -> bool:
    """Whether metrics are collected (Orthanc's ``MetricsEnabled``)."""
    return services.config.metrics_enabled
