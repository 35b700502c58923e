"""Issue 7, finding 7: the ``RestApi*`` built-ins take a path of this server's REST API, nothing else.

Orthanc refuses a URI that does not start with ``/`` or has an empty component ("Badly formatted
URI", then "Error in RestApiGet() for URI: …", and nil); it does not decode ``%xx`` in the path.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from broker.rest.types import RestRequest, RestResponse
from broker.scripting.builtins import BUILTINS, CallContext
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer

REFUSED = ["http://evil.example/system", "//evil.example/system", "https:/system", "system", "", " /system",
           "/instances//x", "/instances/../system", "/./system", "/tools/.."]


@dataclass
class Rest:
    """Records the requests that reach the REST API; answers 200 to all."""
    requests: list[RestRequest] = field(default_factory=list)

    def handle(self, request: RestRequest) -> RestResponse:
        self.requests.append(request)
        return RestResponse.text("ok")


@dataclass
class ScriptLog:
    lines: list[tuple[str, str, int, str]] = field(default_factory=list)

    def emit(self, tenant: str, sandbox: str, level: int, text: str) -> None:
        self.lines.append((tenant, sandbox, level, text))


@dataclass
class Services:
    rest: Rest = field(default_factory=Rest)
    script_log: ScriptLog = field(default_factory=ScriptLog)


def call(name: str, *args: Any) -> tuple[Any, Services]:
    services = Services()
    return BUILTINS[name](CallContext(services, "default", "default/main@abc", "f"), list(args)), services


@pytest.mark.parametrize("uri", REFUSED)
@pytest.mark.parametrize("name, extra", [("RestApiGet", ()), ("RestApiDelete", ()), ("RestApiPost", ("b",)),
                                         ("RestApiPut", ("b",))])
def test_a_uri_that_is_not_a_plain_path_never_reaches_the_rest_api(name, extra, uri):
    answer, services = call(name, uri, *extra)
    assert answer is None
    assert services.rest.requests == []
    assert services.script_log.lines == [
        ("default", "default/main@abc", logging.ERROR, f"Lua: Error in {name}() for URI: {uri} (Badly formatted URI)")]


@pytest.mark.parametrize("uri, path, query", [
    ("/system", "/system", {}), ("/system/", "/system/", {}), ("/", "/", {}),
    ("/tools/find?expand&x=a%20b", "/tools/find", {"expand": "", "x": "a b"}),
    ("/syst%65m", "/syst%65m", {}),  # not decoded, as in Orthanc
])
def test_a_plain_path_reaches_the_rest_api_as_written(uri, path, query):
    answer, services = call("RestApiGet", uri)
    assert answer == b"ok"
    assert [(r.method, r.path, dict(r.query)) for r in services.rest.requests] == [("GET", path, query)]


def test_post_keeps_a_query_string_in_the_path_as_orthanc():
    _, services = call("RestApiPost", "/tools/x?y=1", "b")
    assert [(r.path, dict(r.query)) for r in services.rest.requests] == [("/tools/x?y=1", {})]


def test_a_uri_with_a_scheme_and_host_answers_nil_not_the_local_resource(luabroker, caplog):
    caplog.set_level(logging.ERROR, logger="luabroker")
    server = luabroker(ExecuteLuaEnabled=True)
    answer = server.execute("print(RestApiGet('http://evil.example/system'))")
    assert answer.text == "nil\n"
    assert any("Lua: Error in RestApiGet() for URI: http://evil.example/system (Badly formatted URI)"
               in record.getMessage() for record in caplog.records), [r.getMessage() for r in caplog.records]


PARITY_URIS = ", ".join(repr(u) for u in REFUSED + ["/system", "/system/", "/system?x=1", "/syst%65m", "/%2e%2e/system",
                                                    "/system#x", "/sys\ntem"])
PARITY_SCRIPT = f"""
for _, uri in ipairs({{{PARITY_URIS}}}) do
  print('[' .. uri .. ']', RestApiGet(uri) ~= nil)
end
"""


@pytest.mark.skipif(ORTHANC_BINARY is None, reason="Orthanc is not installed")
def test_the_same_uris_answer_nil_as_in_orthanc(luabroker):
    orthanc = OrthancPeer.create(ExecuteLuaEnabled=True).start()
    try:
        expected = orthanc.client.post("/tools/execute-script", content=PARITY_SCRIPT.encode()).text
    finally:
        orthanc.stop()
    server = luabroker(ExecuteLuaEnabled=True)
    assert server.execute(PARITY_SCRIPT).text == expected
