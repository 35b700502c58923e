"""``POST /tools/shutdown`` and ``POST /tools/reset``: stop the server, or stop it and start it again with
the configuration read anew, as Orthanc 1.10.1 (``OrthancRestApi::ShutdownOrthanc``/``ResetOrthanc``).

Both answer ``{}`` at once and only *ask* for the stop, as Orthanc raises its "leave the barrier" flag:
the stop itself runs in the server's own thread once HTTP has stopped (``broker.server.Server.run``),
which lets the calls in progress finish first. So the caller always gets its answer, and a Lua script
that calls ``RestApiPost('/tools/reset', '')`` (from a callback or from execute-script) cannot deadlock
the server: the stop waits for that call to return, the call never waits for the stop.
docs/operations.md ("Shutdown and reset") says what each step keeps.
"""
from __future__ import annotations

import logging

from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable(coordinator=True)
log = logging.getLogger("luabroker")

#: Orthanc answers these two bytes (``AnswerBuffer("{}", MimeType_Json)``), not its indented JSON style.
EMPTY_ANSWER = b"{}"


@routes.post("/tools/shutdown")
def shutdown(request: RestRequest, services: Services) -> RestResponse:
    """Stop cleanly, as on SIGTERM; the process exits with status 0."""
    services.check_owns_server("POST /tools/shutdown")
    log.warning("Shutdown request received (%s)", request.origin.request_origin.value)
    services.stop_server(False)
    return RestResponse(200, EMPTY_ANSWER, "application/json")


@routes.post("/tools/reset")
def reset(request: RestRequest, services: Services) -> RestResponse:
    """Stop cleanly, then start again: the configuration file(s) and the scripts are read anew."""
    services.check_owns_server("POST /tools/reset")
    log.warning("Reset request received (%s)", request.origin.request_origin.value)
    services.stop_server(True)
    return RestResponse(200, EMPTY_ANSWER, "application/json")
