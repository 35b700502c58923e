"""The claims of docs/lua-api.md about Orthanc's behaviour, run on a real Orthanc 1.10.1 and on luabroker.

``test_lua_values_parity.py`` covers numbers, ``print`` and ``PrintRecursive``; this file covers the
other built-ins, the callbacks and ``/tools/execute-script``. Where luabroker deviates on purpose,
the test states both behaviours, so that the sentence of the documentation stays true.
"""
from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pynetdicom import AE

from broker.dicom.sockets import pause_reactor
from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer
from tests.support.receivers import WebService

pytestmark = pytest.mark.skipif(ORTHANC_BINARY is None, reason="needs Orthanc (apt-get install orthanc)")
# Orthanc's Toolbox.lua is loaded as a chunk named "line", ours from lua-runtime/jobs.lua: the messages
# are compared without their position.
WITHOUT_POSITION = "local function m(ok, e) return ok, (string.gsub(tostring(e), '^.-:%d+: ', '')) end "


def start_orthanc(scripts: str | None = None, **options: Any) -> OrthancPeer:
    peer = OrthancPeer.create(**options)
    if scripts is not None:
        path = peer.workdir / "scripts.lua"
        path.write_text(scripts)
        peer.extra_config["LuaScripts"] = [str(path)]
    return peer.start()


def execute(client: httpx.Client, script: str) -> tuple[int, str]:
    answer = client.post("/tools/execute-script", content=script.encode())
    return answer.status_code, answer.text


SCRIPTS = [
    # RestApi*: builtin must be a boolean; a URI is used as written; a query string of a POST is not parsed.
    "print(RestApiGet('/system', nil, {}), RestApiGet('/system', 1), RestApiGet('/system', false) ~= nil)",
    "print(RestApiGet('/system', true, {a='b'}) ~= nil, RestApiPost('/tools/lookup', '1.2', nil, {a='b'}))",
    "print(RestApiGet('/syst%65m'), RestApiGet('/system/..'), RestApiGet('system'), RestApiGet('//x/system'))",
    "print(RestApiPost('/tools/lookup?x=1', '1.2.3'), #ParseJson(RestApiPost('/tools/lookup', '1.2.3')))",
    "print(#ParseJson(RestApiPost('/tools/lookup', 12)), RestApiDelete('/patients/nope'))",
    # Http*: "" for a status that is not 2xx, nil without an answer or for bad parameters.
    "print('[' .. HttpGet('{W}/status/404') .. ']', '[' .. HttpGet('{W}/status/500') .. ']')",
    "print(#HttpGet('{W}/binary'), HttpGet('{W}/binary') == HttpGet('{W}/binary'))",
    "print(HttpGet({}), HttpGet('{W}/x', {}, 1), HttpGet('http://127.0.0.1:1/x'), HttpGet('not a url'))",
    "print(HttpGet('{W}/x', {a='b'}), HttpGet('{W}/redirect?to={W}/target'))",
    "print(HttpPost('{W}/post', {}), HttpPost('{W}/post', true), HttpPost('{W}/post', 'x', {}, 3))",
    "print(HttpPost('{W}/post'), HttpPost('{W}/post', ''), HttpPost('{W}/post', 'x', nil), HttpPut('{W}/put', 12))",
    "print(HttpPost('{W}/post', 12, {['Content-Type']='text/plain'}))",
    "print(HttpDelete('{W}/d'))", "print(HttpDelete('{W}/status/404'))",
    # SetHttpCredentials: strings or numbers; wrong arguments change nothing; returns nothing.
    "print(select('#', SetHttpCredentials('a', 'b')), pcall(SetHttpCredentials, 'a'))",
    "SetHttpCredentials(1, 2) print(HttpGet('{W}/cred'))",
    # ParseJson: jsoncpp's leniency; JSON null is an absent key.
    "print(DumpJson(ParseJson('{\"a\":1} trailing')), DumpJson(ParseJson('{/*c*/\"a\":1 // x\\n}')))",
    "print(DumpJson(ParseJson('{\"a\":1,\"a\":2}')), ParseJson('{'), ParseJson('x'), ParseJson(''))",
    "local t = ParseJson('{\"a\":null,\"b\":1}') print(t.a, t.b, next(t))",
    # DumpJson: sorted keys, {} is [], numeric strings become numbers unless keepStrings.
    "print(DumpJson({b=1,a=2,c={z=1,y=2}}), DumpJson({}), DumpJson({x='012'}), DumpJson({x='012'}, true))",
    "print(DumpJson({x='1e3', y='abc', z=' 5', w='0x10'}), DumpJson('012'), DumpJson(nil))",
    # GetOrthancConfiguration: as written, nulls absent, no defaults.
    "local c = GetOrthancConfiguration() print(c.Custom.Answer, c.Custom.Null, c.HttpTimeout, c.ExecuteLuaEnabled)",
    # Job helpers: Orthanc's return values and messages.
    WITHOUT_POSITION + "print(m(pcall(SendToModality, 'x', 'y')))",
    WITHOUT_POSITION + "print(m(pcall(Delete, 'x')))",
    WITHOUT_POSITION + "_job = {} print(m(pcall(SendToModality, nil, 'y'))) print(m(pcall(SendToPeer, nil, 'y')))",
    WITHOUT_POSITION + "_job = {} print(m(pcall(ModifyInstance, nil, {}))) print(m(pcall(ModifyInstance, '', {})))",
    WITHOUT_POSITION + "_job = {} print(m(pcall(Delete, nil))) print(m(pcall(CallSystem, nil, 'x')))",
    WITHOUT_POSITION + "_job = {} print(m(pcall(CallSystem, 'a', nil)))",
    "_job = {} print(SendToModality('a', 'm'), SendToPeer('b', 'p'), ModifyInstance('c', {}, nil, false), "
    "Delete('d'), CallSystem('e', 'ls', {}), ModifyResource == ModifyInstance)",
    "print(type(_InitializeJob), type(_AccessJob), Initialize, Finalize)",
]


def test_builtins_answer_as_in_orthanc(lua_pair) -> None:
    ours, theirs, _ = lua_pair
    for script in SCRIPTS:
        web = WebService()  # a new port each time: Orthanc's curl never reuses a connection of another script
        try:
            script = script.replace("{W}", web.url)
            assert execute(ours, script) == execute(theirs, script), script
        finally:
            web.stop()


def test_http_requests_are_the_same_as_orthancs(lua_pair) -> None:
    ours, theirs, web = lua_pair
    script = (f"HttpPost('{web.url}/form', 'a=b') HttpPost('{web.url}/text', 'a', {{['Content-Type']='text/plain'}}) "
              f"HttpPut('{web.url}/number', 12)")
    seen = []
    for client in (ours, theirs):
        web.requests.clear()
        assert execute(client, script)[0] == 200
        seen.append([(r.method, r.path, r.header("Content-Type"), r.body) for r in web.requests])
    assert seen[0] == seen[1] == [("POST", "/form", "application/x-www-form-urlencoded", b"a=b"),
                                  ("POST", "/text", "text/plain", b"a"),
                                  ("PUT", "/number", "application/x-www-form-urlencoded", b"12")]


def test_script_errors_answer_orthancs_json(lua_pair) -> None:
    ours, theirs, _ = lua_pair
    for script in ["error('boom')", "x = = 1", "print('lost') error('after a print')"]:
        mine, yours = (client.post("/tools/execute-script", content=script.encode()) for client in (ours, theirs))
        assert (mine.status_code, mine.json()) == (yours.status_code, yours.json()), script


def test_deviations_of_the_http_builtins(lua_pair) -> None:
    """docs/lua-api.md, HttpGet and HttpDelete: what Orthanc 1.10.1 does, and what luabroker does instead."""
    ours, theirs, web = lua_pair
    # An empty or non-table `headers` throws a C++ exception in Orthanc that pcall cannot catch: the whole
    # call fails with "Internal error". luabroker: {} is no headers, anything else is bad parameters (nil).
    for script in [f"print(pcall(HttpGet, '{web.url}/x', {{}}))", f"print(pcall(HttpGet, '{web.url}/x', 'h'))",
                   f"print(pcall(HttpDelete, '{web.url}/x', {{}}))", "print(pcall(RestApiGet, '/system', true, {}))"]:
        status, text = execute(theirs, script)
        assert status == 500 and json.loads(text)["OrthancStatus"] == -1, script
    assert execute(ours, f"print(HttpGet('{web.url}/x', {{}}), HttpGet('{web.url}/x', 'h'))") == (200, "ok GET, nil\n")
    assert execute(ours, f"print(HttpDelete('{web.url}/x', {{}}), RestApiGet('/system', true, {{}}) ~= nil)") == (
        200, "SUCCESS, true\n")
    # HttpDelete without an answer: Orthanc's exception escapes pcall (500, error 9); ours is a Lua error.
    status, text = execute(theirs, "print(pcall(HttpDelete, 'http://127.0.0.1:1/x'))")
    assert status == 500 and json.loads(text)["OrthancStatus"] == 9
    status, text = execute(ours, "print(pcall(HttpDelete, 'http://127.0.0.1:1/x'))")
    assert status == 200 and text.startswith("false, HttpDelete(): no answer from http://127.0.0.1:1/x")
    # SetHttpTimeout is not in Orthanc 1.10.1 (later versions have it).
    assert execute(theirs, "print(SetHttpTimeout)") == (200, "nil\n")
    assert execute(ours, "print(select('#', SetHttpTimeout(5)), pcall(SetHttpTimeout, 'x'))") == (200, "0, true\n")


def test_lua_version_and_compatibility_functions(lua_pair) -> None:
    """Orthanc 1.10.1 (Debian, Lua 5.3) has bit32 and math.pow; luabroker's Lua 5.4 has neither."""
    ours, theirs, _ = lua_pair
    script = "print(_VERSION, bit32 ~= nil, math.pow ~= nil)"
    assert execute(theirs, script) == (200, "Lua 5.3, true, true\n")
    assert execute(ours, script) == (200, "Lua 5.4, false, false\n")


def test_execute_script_is_refused_when_disabled(luabroker) -> None:
    peer = start_orthanc()
    try:
        answers = [(a.status_code, a.text) for a in (client.post("/tools/execute-script", content=b"print(1)")
                                                     for client in (luabroker().http, peer.client))]
    finally:
        peer.stop()
    assert answers[0] == answers[1] == (403, "")


CALLBACKS = r"""
stored = {}
calls = {}
function ReceivedInstanceFilter(tags, origin, info)
  local p = tags.PatientID
  if p == 'REJECT' then return false end
  if p == 'NUMBER' then return 1 end
  if p == 'ERROR' then error('boom') end
  if p == 'NOTHING' then return end
  return true
end
function ReceivedCStoreInstanceFilter(tags, origin, info)
  local p = tags.PatientID
  if p == 'CSONE' then return 1 end
  if p == 'CSSTATUS' then return 0xA801 end
  if p == 'CSSTRING' then return 'x' end
  if p == 'CSTRUE' then return true end
  return 0
end
function OnStoredInstance(id, tags, metadata, origin)
  stored[#stored + 1] = tags.PatientID
  if tags.PatientID == 'FAILS' then error('boom in OnStoredInstance') end
end
function IncomingHttpRequestFilter(method, uri, ip, username, headers)
  if uri ~= '/tools/execute-script' then
    calls[#calls + 1] = DumpJson({method, uri, ip, username, headers['x-test'] or 'none', headers['x-rep'] or 'none',
                                  headers['X-Test'] or 'none'}, true)
  end
  if string.find(uri, 'deny') then return false end
  if string.find(uri, 'number') then return 1 end
  if string.find(uri, 'nothing') then return end
  return true
end
"""
REPORT = "for _, c in ipairs(calls) do print(c) end print(table.concat(stored, ' ')) calls = {} stored = {}"


def c_store(port: int, aet: str, patient_id: str) -> int:
    ds = samples.minimal(patient_id)
    samples.encode(ds)  # gives it its file meta information
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established
    try:
        pause_reactor(assoc)  # else, on a loaded machine, pynetdicom can lose the response
        return assoc.send_c_store(ds).Status
    finally:
        assoc.release()


def raw_get(url: str, path: str) -> int:
    """A GET whose path is sent exactly as given (no client normalises it)."""
    connection = http.client.HTTPConnection(httpx.URL(url).host, httpx.URL(url).port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def with_callbacks(luabroker) -> Iterator[dict[str, tuple[httpx.Client, int, str, str]]]:
    peer = start_orthanc(CALLBACKS, ExecuteLuaEnabled=True)
    try:
        # Orthanc drops an event whose callback raised; luabroker parks it, unless told to do as Orthanc.
        server = luabroker({"scripts.lua": CALLBACKS}, ExecuteLuaEnabled=True,
                           LuaSandbox={"CallTimeout": 2, "HardTimeout": 6, "EventLuaErrors": "Log"})
        yield {"luabroker": (server.http, server.dicom_port, server.aet, str(server.http.base_url)),
               "orthanc": (peer.client, peer.dicom_port, peer.aet, peer.url)}
    finally:
        peer.stop()


def rest_outcome(answer: httpx.Response) -> tuple[int, Any]:
    body = answer.json() if answer.content else None
    if isinstance(body, dict) and "OrthancStatus" in body:
        return answer.status_code, (body["OrthancStatus"], body["Message"])
    return answer.status_code, body.get("Status") if isinstance(body, dict) else body


def test_filters_and_stored_callback_behave_as_in_orthanc(with_callbacks) -> None:
    seen = {}
    for name, (client, _, _, _) in with_callbacks.items():
        outcomes = [rest_outcome(client.post("/instances", content=samples.encode(samples.minimal(pid))))
                    for pid in ["REJECT", "NUMBER", "ERROR", "NOTHING", "FAILS", "OK"]]
        # A filter defined later through execute-script is never used.
        assert execute(client, "function ReceivedInstanceFilter() return false end") == (200, "")
        outcomes.append(rest_outcome(client.post("/instances", content=samples.encode(samples.minimal("LATER")))))
        client.get("/system")  # the last event is delivered before this answer's filter call
        seen[name] = outcomes
    assert seen["luabroker"] == seen["orthanc"] == [
        (200, "FilteredOut"),
        (500, (2034, "The Lua function is not a predicate (only true/false outputs allowed)")),
        (500, (2031, "Cannot execute a Lua command")),
        (500, (2034, "The Lua function is not a predicate (only true/false outputs allowed)")),
        (200, "Success"), (200, "Success"), (200, "Success")]


def test_stored_callback_errors_are_logged_and_later_events_delivered(with_callbacks) -> None:
    reports = {}
    for name, (client, _, _, _) in with_callbacks.items():
        for pid in ["FAILS", "OK"]:
            assert client.post("/instances", content=samples.encode(samples.minimal(pid))).status_code == 200
        reports[name] = poll_report(client, "FAILS OK")
    assert reports["luabroker"] == reports["orthanc"]


def poll_report(client: httpx.Client, stored: str) -> str:
    """The report once ``stored`` is the list of stored patients (events are asynchronous in both)."""
    deadline = time.monotonic() + 30
    lines: list[str] = []
    while time.monotonic() < deadline:
        status, text = execute(client, "print(table.concat(stored, ' '))")
        assert status == 200
        if text.strip() == stored:
            return text
        lines.append(text)
        time.sleep(0.1)
    raise AssertionError(f"OnStoredInstance did not see {stored}: {lines[-1:]}")


def test_incoming_http_request_filter_gets_orthancs_arguments(with_callbacks) -> None:
    seen = {}
    for name, (client, _, _, _) in with_callbacks.items():
        execute(client, REPORT)
        answers = [(a.status_code, a.json()["OrthancStatus"] if a.status_code == 500 else a.text[:0])
                   for a in (client.get("/deny", params={"x": "1"}), client.get("/number"), client.get("/nothing"),
                             client.get("/system", headers=[("X-Test", "A"), ("X-Rep", "1"), ("X-Rep", "2")]))]
        seen[name] = answers, execute(client, REPORT)
    assert seen["luabroker"] == seen["orthanc"]
    answers, (_, report) = seen["orthanc"]
    assert answers == [(403, ""), (500, 2034), (500, 2034), (200, "")]
    assert report.splitlines()[-2] == '["GET","/system","127.0.0.1","","A","1","none"]'


def test_incoming_http_request_filter_uri_of_an_unusual_spelling(with_callbacks) -> None:
    """*Deviation*: luabroker gives the filter the path as routed (empty and ``.`` segments and a
    trailing slash removed); Orthanc 1.10.1 merges repeated slashes, removes ``.`` segments and keeps a
    trailing slash."""
    reports = {}
    for name, (client, _, _, url) in with_callbacks.items():
        execute(client, REPORT)
        for path in ["/system//", "//system", "/tools//x//y/", "/a/./b", "/syst%65m"]:
            raw_get(url, path)
        reports[name] = [json.loads(line)[1] for line in execute(client, REPORT)[1].splitlines()[:-1]]
    assert reports["orthanc"] == ["/system/", "/system", "/tools/x/y/", "/a/b", "/system"]
    assert reports["luabroker"] == ["/system", "/system", "/tools/x/y", "/a/b", "/system"]


def test_cstore_filter_meaning_is_orthancs_announced_one_not_its_code(with_callbacks) -> None:
    """*Deviation*: Orthanc 1.10.1 discards on 0 and stores on any other number, answering 0x0000 to both;
    luabroker accepts on 0 and answers any other number as the DIMSE status of a discarded instance."""
    seen = {}
    for name, (client, port, aet, _) in with_callbacks.items():
        statuses = [c_store(port, aet, pid) for pid in ["REJECT", "ERROR", "CSSTRING", "CSTRUE", "CSZERO", "CSONE",
                                                        "CSSTATUS"]]
        patients = sorted(client.get(f"/patients/{p}").json()["MainDicomTags"]["PatientID"]
                          for p in client.get("/patients").json())
        seen[name] = statuses, patients
    # The same for what is not the number's meaning: ReceivedInstanceFilter first, and non-numbers.
    assert seen["orthanc"][0][:4] == seen["luabroker"][0][:4] == [0, 0xA700, 0xA700, 0xA700]
    assert seen["orthanc"] == ([0, 0xA700, 0xA700, 0xA700, 0, 0, 0], ["CSONE", "CSSTATUS"])
    assert seen["luabroker"] == ([0, 0xA700, 0xA700, 0xA700, 0, 1, 0xA801], ["CSZERO"])

