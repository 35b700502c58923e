"""``/exports``: the log of what was sent to modalities and peers (``broker.core.exports``).

``GET /exports?since=&limit=`` pages through it (``limit`` 100 by default; an argument that is not a
number gives the defaults, as Orthanc's parser does);
``?last`` answers the last export only. ``DELETE /exports`` empties the log.
"""
from __future__ import annotations

from typing import Any

from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable()

DEFAULT_LIMIT = 100
UINT_RANGE = 2**32
INT64_RANGE = 2**63


def since_and_limit(request: RestRequest) -> tuple[int, int]:
    """Orthanc's ``GetSinceAndLimit`` (shared with ``/changes``): ``boost::lexical_cast`` of both, so a
    negative ``limit`` wraps around as an unsigned int, and one that does not parse gives the defaults."""
    try:
        since = int(request.query.get("since", "0"))
        limit = int(request.query.get("limit", str(DEFAULT_LIMIT)))
    except ValueError:
        return 0, DEFAULT_LIMIT
    if not -UINT_RANGE < limit < UINT_RANGE or not -INT64_RANGE <= since < INT64_RANGE:
        return 0, DEFAULT_LIMIT
    return since, limit % UINT_RANGE


@routes.get("/exports")
def get_exports(request: RestRequest, services: Services) -> Any:
    log = services.store.exports
    if "last" in request.query:
        return log.last().to_json()
    since, limit = since_and_limit(request)
    return log.page(since, limit).to_json()


@routes.delete("/exports")
def delete_exports(request: RestRequest, services: Services) -> RestResponse:
    services.store.exports.clear()
    return RestResponse.text("")
