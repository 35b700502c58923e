"""Every Lua callback, declared once, with the one function that builds its arguments.

Two kinds, as pynetdicom's events: a FILTER has one answer and a default when the function is
undefined (accept) or fails (the configured failure policy); a NOTIFY is delivered by the durable
outbox, in order, at least once. Each callback holds its argument builder, a plain, pure function.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.core.outbox import OutboxEvent


class Kind(enum.Enum):
    FILTER = "filter"
    NOTIFY = "notify"


class Role(str, enum.Enum):
    """Which sandbox process of a script set runs the callback (design.md, "Processes")."""

    MAIN = "main"
    FILTER = "filter"


def no_args() -> list[Any]:
    """``Initialize`` and ``Finalize`` take nothing."""
    return []


def received_instance_args(tags: Mapping[str, Any], origin: Mapping[str, Any], has_pixel_data: bool,
                           transfer_syntax_uid: str | None) -> list[Any]:
    """``(tags, origin, info)`` of ``ReceivedInstanceFilter`` and ``ReceivedCStoreInstanceFilter``."""
    info: dict[str, Any] = {"HasPixelData": has_pixel_data}
    if transfer_syntax_uid:
        info["TransferSyntaxUID"] = transfer_syntax_uid
    return [dict(tags), dict(origin), info]


def stored_instance_args(event: OutboxEvent) -> list[Any]:
    """``(instanceId, tags, metadata, origin)`` of ``OnStoredInstance``, from its outbox event."""
    from broker.core.origin import Origin

    payload = event.payload
    origin = Origin.from_dict(payload["origin"]).to_lua()
    return [event.resource_id, dict(payload.get("tags", {})), dict(payload.get("metadata", {})), origin]


def stable_args(event: OutboxEvent) -> list[Any]:
    """``(resourceId, tags, metadata)`` of ``OnStablePatient/Study/Series``: the resource's own main
    tags and metadata, by name, as they were when it became stable."""
    payload = event.payload
    return [event.resource_id, dict(payload.get("tags", {})), dict(payload.get("metadata", {}))]


def resource_args(event: OutboxEvent) -> list[Any]:
    """``(jobId)`` of ``OnJob*``, ``(resourceId)`` of ``OnDeleted*`` and ``OnUpdated*``."""
    return [event.resource_id]


def http_request_args(method: str, uri: str, ip: str, username: str,
                      headers: Iterable[tuple[str, str]]) -> list[Any]:
    """``(method, uri, ip, username, httpHeaders)``: header names lower-cased, when a header is
    repeated the first one kept."""
    lowered: dict[str, str] = {}
    for name, value in headers:
        lowered.setdefault(name.lower(), value)
    return [method, uri, ip, username, lowered]


def _flat_query(query: Mapping[int, str]) -> dict[str, str]:
    """A C-FIND query as the find filters get it: flat, keyed by lower-case ``gggg,eeee``, every value a
    string (sequences are not in it)."""
    from broker.core.tags import format_tag

    return {format_tag(tag): value for tag, value in query.items()}


def _find_origin(remote_ip: str, remote_aet: str, called_aet: str, manufacturer: str) -> dict[str, str]:
    """The ``origin`` of the C-FIND SCP's filters."""
    return {"RemoteIp": remote_ip, "RemoteAet": remote_aet, "CalledAet": called_aet, "Manufacturer": manufacturer}


def find_request_args(query: Mapping[int, str], remote_ip: str, remote_aet: str, called_aet: str,
                      manufacturer: str) -> list[Any]:
    """``(query, origin)`` of ``IncomingFindRequestFilter``."""
    return [_flat_query(query), _find_origin(remote_ip, remote_aet, called_aet, manufacturer)]


def worklist_request_args(query: Mapping[str, Any], remote_ip: str, remote_aet: str, called_aet: str,
                          manufacturer: str) -> list[Any]:
    """``(query, origin)`` of ``IncomingWorklistRequestFilter``: the whole query in short JSON
    (``broker.core.worklist_query.dataset_json``), sequences included."""
    return [dict(query), _find_origin(remote_ip, remote_aet, called_aet, manufacturer)]


def outgoing_find_args(query: Mapping[int, str], remote_aet: str) -> list[Any]:
    """``(query, remoteAet)`` of ``OutgoingFindRequestFilter``: the AET of the modality queried, not its
    symbolic name."""
    return [_flat_query(query), remote_aet]


@dataclass(frozen=True)
class Callback:
    name: str
    kind: Kind
    role: Role
    doc: str
    #: Builds the Lua arguments: from an outbox event for a NOTIFY that consumes one, from what the
    #: door saw for a FILTER.
    arguments: Callable[..., list[Any]]
    #: The outbox events a NOTIFY callback consumes: (kind, level), level None for any.
    events: tuple[tuple[str, str | None], ...] = ()
    #: Orthanc's [J] callbacks: run through ``_CallWithJob``; the operations recorded by SendToModality
    #: & co. are submitted as a "Lua" job once the callback has returned (``broker.scripting.lua_jobs``).
    job: bool = False
    #: The answer is read with keepStrings=true (numeric strings stay strings), as Orthanc reads it.
    keep_strings: bool = False


def _per_level() -> list[Callback]:
    """``OnStable*``, ``OnDeleted*`` and ``OnUpdated*``: one callback per level, as in Orthanc."""
    callbacks = []
    for level in ("Patient", "Study", "Series"):
        callbacks.append(Callback(
            f"OnStable{level}", Kind.NOTIFY, Role.MAIN,
            f"(id, tags, metadata) once the {level.lower()} had no new instance for StableAge seconds.",
            stable_args, events=((f"Stable{level}", level),), job=True))
    for level in ("Patient", "Study", "Series", "Instance"):
        callbacks.append(Callback(
            f"OnDeleted{level}", Kind.NOTIFY, Role.MAIN,
            f"(id) once the {level.lower()} is deleted (cascades, emptied parents and recycling included).",
            resource_args, events=(("Deleted", level),)))
        callbacks.append(Callback(
            f"OnUpdated{level}", Kind.NOTIFY, Role.MAIN,
            f"(id) once a user metadata or attachment of the {level.lower()} was written or deleted.",
            resource_args, events=(("UpdatedMetadata", level), ("UpdatedAttachment", level))))
    return callbacks


CALLBACKS: dict[str, Callback] = {c.name: c for c in (
    Callback("Initialize", Kind.NOTIFY, Role.MAIN,
             "Called once the server is up, and again after the main sandbox is restarted.", no_args),
    Callback("Finalize", Kind.NOTIFY, Role.MAIN,
             "Called on a clean stop, after the pending events were delivered.", no_args),
    Callback("OnHeartBeat", Kind.NOTIFY, Role.MAIN,
             "Every LuaHeartBeatPeriod seconds after the end of the previous call; not an event.", no_args),
    Callback("OnStoredInstance", Kind.NOTIFY, Role.MAIN,
             "(instanceId, tags, metadata, origin) after every successful store, duplicates included.",
             stored_instance_args, events=(("StoredInstance", None),), job=True),
    *_per_level(),
    Callback("OnJobSubmitted", Kind.NOTIFY, Role.MAIN,
             "(jobId) once a job is queued (not yet started).", resource_args, events=(("JobSubmitted", None),)),
    Callback("OnJobSuccess", Kind.NOTIFY, Role.MAIN,
             "(jobId) once a job has succeeded.", resource_args, events=(("JobSuccess", None),)),
    Callback("OnJobFailure", Kind.NOTIFY, Role.MAIN,
             "(jobId) once a job has failed (after its retries) or was canceled.", resource_args,
             events=(("JobFailure", None),)),
    Callback("ReceivedInstanceFilter", Kind.FILTER, Role.FILTER,
             "(tags, origin, info) before an instance is written; must return a boolean.",
             received_instance_args),
    Callback("ReceivedCStoreInstanceFilter", Kind.FILTER, Role.FILTER,
             "(tags, origin, info) for C-STORE only, after ReceivedInstanceFilter; returns 0 to accept, "
             "or the DIMSE status to answer.", received_instance_args),
    Callback("IncomingHttpRequestFilter", Kind.FILTER, Role.MAIN,
             "(method, uri, ip, username, headers) for every HTTP request; must return a boolean.",
             http_request_args),
    Callback("IncomingFindRequestFilter", Kind.FILTER, Role.MAIN,
             "(query, origin) for every C-FIND but worklists; returns the table that replaces the query.",
             find_request_args, keep_strings=True),
    Callback("IncomingWorklistRequestFilter", Kind.FILTER, Role.MAIN,
             "(query, origin) for every C-FIND on the worklists; returns the table that replaces the query.",
             worklist_request_args, keep_strings=True),
    Callback("OutgoingFindRequestFilter", Kind.FILTER, Role.MAIN,
             "(query, remoteAet) before /modalities/{name}/query sends its C-FIND; returns the table that "
             "replaces the query.", outgoing_find_args, keep_strings=True),
)}

_BY_EVENT: dict[tuple[str, str | None], Callback] = {event: c for c in CALLBACKS.values() for event in c.events}


def for_event(event: OutboxEvent) -> Callback | None:
    """The callback that consumes an outbox event, if any."""
    return _BY_EVENT.get((event.kind, event.level)) or _BY_EVENT.get((event.kind, None))


#: The filters of the doors that run in the main process of a single server process.
DOOR_FILTERS = ("IncomingHttpRequestFilter", "IncomingFindRequestFilter", "IncomingWorklistRequestFilter")


def roles(supervised: bool) -> dict[str, Role]:
    """Which process runs each callback. With worker processes (docs/workers.md) an HTTP
    request or a C-FIND can reach any of them, and only the coordinator has a main process: the filters
    of the doors run in the filter process of the worker that received the request, in every worker
    alike."""
    placed = {name: callback.role for name, callback in CALLBACKS.items()}
    if supervised:
        placed.update(dict.fromkeys(DOOR_FILTERS, Role.FILTER))
    return placed
