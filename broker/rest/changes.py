"""``/changes``: Orthanc's changes, read from the event log (``broker.core.changes`` says which events
are changes).

``GET /changes?since=&limit=`` pages through them as Orthanc's ``GetChanges`` (``limit`` 100 by
default, the arguments parsed as ``/exports`` parses them); ``Last`` is the last change returned, or,
when none is, the last sequence number given so far. ``?last`` answers the last change only.
``DELETE /changes`` empties the list; the events stay in the log until they are delivered.
"""
from __future__ import annotations

from typing import Any

from broker.core.levels import Level
from broker.core.outbox import OutboxEvent
from broker.rest.exports import since_and_limit
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable()


def change_json(change: OutboxEvent) -> dict[str, Any]:
    level = Level.from_label(change.level or "")
    return {"ChangeType": change.kind, "Date": change.created, "ID": change.resource_id,
            "Path": f"/{level.plural}/{change.resource_id}", "ResourceType": level.label, "Seq": change.seq}


def _page(changes: list[OutboxEvent], done: bool, last: int) -> dict[str, Any]:
    return {"Changes": [change_json(change) for change in changes], "Done": done, "Last": last}


@routes.get("/changes")
def get_changes(request: RestRequest, services: Services) -> Any:
    outbox = services.store.outbox
    if "last" in request.query:
        change = outbox.last_change()
        return _page([change], True, change.seq) if change else _page([], True, outbox.last_seq())
    since, limit = since_and_limit(request)
    changes, done = outbox.changes(since, limit)
    return _page(changes, done, changes[-1].seq if changes else outbox.last_seq())


@routes.delete("/changes")
def delete_changes(request: RestRequest, services: Services) -> RestResponse:
    services.store.outbox.clear_changes()
    return RestResponse.text("")
