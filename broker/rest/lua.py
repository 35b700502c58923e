"""REST endpoints of the scripting engine: execute-script (Orthanc's), and the operator's own:
the sandbox status, reload, reset, and the parked events. docs/operations.md describes them."""
from __future__ import annotations

import hashlib
from typing import Any

from broker.core.origin import RequestOrigin
from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.scripting.lifecycle import ReloadError
from broker.services import Services
from sandbox import LuaError, SandboxBusy, SandboxError

routes = RouteTable(coordinator=True)


def require_lua_admin(request: RestRequest, services: Services) -> None:
    """``LuaAdminUsers``: when set, only those users may run a script or change the engine (reload,
    reset, requeue); anyone else gets 403. A script's own ``RestApi*`` call (origin Lua) passes: it is
    code an administrator installed. Reading (``/lua/status``, the parked list) stays open."""
    admins = services.config.lua_admin_users
    if admins is None or request.origin.request_origin is RequestOrigin.LUA or request.origin.username in admins:
        return
    raise BareHttpStatus(403, f"The URI {request.path} is reserved to the users of \"LuaAdminUsers\"")


@routes.post("/tools/execute-script")
def execute_script(request: RestRequest, services: Services) -> RestResponse:
    """Run the body as Lua in the main process; answer the printed lines, each ending in ``\\n``."""
    if not services.config.execute_lua_enabled:
        raise BareHttpStatus(403, "The URI /tools/execute-script is disallowed for security reasons; "
                                  "set \"ExecuteLuaEnabled\": true in the configuration to enable it")
    require_lua_admin(request, services)
    services.audit.record(services.scripts.tenant, "scripts.executed", "POST /tools/execute-script" + _by(request),
                          SHA256=hashlib.sha256(request.body).hexdigest(), Bytes=len(request.body),
                          Origin=request.origin.request_origin.value)
    try:
        lines = services.scripts.execute(request.body)
    except LuaError as exc:
        raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, str(exc)) from exc
    except SandboxBusy as exc:  # another call holds the main process: answer now, never queue on it
        raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, f"The Lua sandbox is busy, try again later: {exc}",
                           http_status=503) from exc
    except SandboxError as exc:
        raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, f"The Lua sandbox could not run the script: {exc}") from exc
    return RestResponse.text("".join(line + "\n" for line in lines))


@routes.get("/lua/status")
def lua_status(request: RestRequest, services: Services) -> Any:
    """The loaded version (SHA-256 of the sources), quarantine, failure policies, every sandbox
    process (pid, role, state, restarts, last error, limits, ``Version``; its memory, its last
    (re)start and its warm spare), replaced versions still finishing their calls, the last reload,
    and the event queue. With several worker processes, ``Workers``: each one's pid, number, whether
    it is the coordinator, and its sandboxes (docs/workers.md)."""
    status = {**services.scripts.overview(), "Events": services.store.outbox.counts()}
    if services.siblings is not None:
        status["Workers"] = services.siblings.statuses()
    return status


@routes.post("/lua/reload")
def lua_reload(request: RestRequest, services: Services) -> Any:
    """Re-read ``LuaScripts`` and load them into fresh processes; swap once ready. 400 (the old
    version stays) with the file and line when a script does not load."""
    require_lua_admin(request, services)
    previous = services.scripts.version
    try:
        version = services.scripts.reload("POST /lua/reload" + _by(request), wait=False)
    except ReloadError as exc:
        raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, f"The scripts were not reloaded, version {previous} "
                           f"stays: {exc}", http_status=exc.http_status) from exc
    if services.siblings is not None:
        services.siblings.reload()
    return {"Version": version.digest, "Previous": previous, "Changed": version.digest != previous,
            "Scripts": version.names}


@routes.post("/lua/reset")
def lua_reset(request: RestRequest, services: Services) -> Any:
    """Bring quarantined (or fatal) sandbox processes back now, with a fresh circuit."""
    require_lua_admin(request, services)
    try:
        roles = services.scripts.reset(wait=False)
    except ReloadError as exc:
        raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, str(exc), http_status=exc.http_status) from exc
    except SandboxError as exc:
        raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, f"The sandbox could not be restarted: {exc}") from exc
    return {"Reset": roles, "Sandboxes": services.scripts.status()}


@routes.get("/lua/events/parked")
def parked_events(request: RestRequest, services: Services) -> Any:
    """Events whose delivery kept failing (the process died or timed out each time)."""
    return [{"Seq": e.seq, "Kind": e.kind, "ResourceId": e.resource_id, "Attempts": e.attempts,
             "LastError": getattr(e, "last_error", None)} for e in services.store.outbox.parked()]


@routes.post("/lua/events/parked/{seq}/requeue")
def requeue_parked_event(request: RestRequest, services: Services) -> Any:
    """Put a parked event back at its place in the queue (its attempts are kept: one more cut
    delivery parks it again). 404 if no parked event has that number."""
    require_lua_admin(request, services)
    try:
        seq = int(request.params["seq"])
    except ValueError:
        raise OrthancError(ErrorCode.URI_SYNTAX, "The event number must be an integer") from None
    if not services.store.outbox.requeue(seq):
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No parked event {seq}")
    return {}


def _by(request: RestRequest) -> str:
    """Who asked, for the log and the audit log: `` by <user>`` when the request was authenticated."""
    return f" by {request.origin.username}" if request.origin.username else ""
