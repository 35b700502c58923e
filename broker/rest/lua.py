"""REST endpoints of the scripting engine: execute-script (Orthanc's) and the sandbox's own status."""
from __future__ import annotations

from typing import Any

from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from sandbox import LuaError, SandboxError

routes = RouteTable()


@routes.post("/tools/execute-script")
def execute_script(request: RestRequest, services: Any) -> RestResponse:
    """Run the body as Lua in the main process; answer the printed lines, each ending in ``\\n``."""
    if not services.config.execute_lua_enabled:
        raise BareHttpStatus(403, "The URI /tools/execute-script is disallowed for security reasons; "
                                  "set \"ExecuteLuaEnabled\": true in the configuration to enable it")
    try:
        lines = services.scripts.execute(request.body)
    except LuaError as exc:
        raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, str(exc)) from exc
    except SandboxError as exc:
        raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, f"The Lua sandbox could not run the script: {exc}") from exc
    return RestResponse.text("".join(line + "\n" for line in lines))


@routes.get("/lua/status")
def lua_status(request: RestRequest, services: Any) -> Any:
    """Per sandbox process: pid, role, state, restarts, last error, limits; and the event queue."""
    return {"Sandboxes": services.scripts.status(), "Events": services.store.outbox.counts()}


@routes.get("/lua/events/parked")
def parked_events(request: RestRequest, services: Any) -> Any:
    """Events whose delivery kept failing (the process died or timed out each time)."""
    return [{"Seq": e.seq, "Kind": e.kind, "ResourceId": e.resource_id, "Attempts": e.attempts,
             "LastError": getattr(e, "last_error", None)} for e in services.store.outbox.parked()]
