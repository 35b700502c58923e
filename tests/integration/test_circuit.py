"""Supervision at the broker level: a hostile filter opens the circuit while DICOM and HTTP keep
answering, the failure policy decides what a filter that cannot run answers, an operator resets the
circuit, a poison event is parked, and the writes of a killed callback are not applied twice."""
from __future__ import annotations

import pytest

from broker.config import Config, ConfigError
from broker.scripting.callbacks import CALLBACKS, Kind
from tests.integration.operations_helpers import FAST_LIMITS, REDOS, Watcher, sandbox
from tests.support.factory import make_instances, to_bytes
from tests.support.server import echo, metric
from tests.support.waiting import wait_until

REDOS_FILTER = f"""
function ReceivedInstanceFilter(tags, origin, info)
  if tags.PatientID == 'REDOS' then {REDOS} end
  return true
end
"""

REDOS_HTTP_FILTER = f"""
function IncomingHttpRequestFilter(method, uri, ip, username, headers)
  if uri == '/redos' then {REDOS} end
  return true
end
"""


def _store_until_quarantined(server, role: str, expected_status: int, limit: int = 8) -> int:
    """Send REDOS instances one by one until ``role`` is quarantined; between two, C-ECHO and HTTP
    must answer. Returns how many it took."""
    for attempt in range(1, limit + 1):
        assert server.c_store(make_instances(1, patient_id="REDOS")) == [expected_status]
        assert echo(server) == 0x0000
        assert server.http.get("/system").status_code == 200
        if sandbox(server, role)["state"] == "QUARANTINED":
            return attempt
    raise AssertionError(f"the {role} process was never quarantined: {sandbox(server, role)}")


def test_redos_filter_opens_the_circuit_and_the_filter_fails_closed_until_reset(luabroker):
    server = luabroker({"filter.lua": REDOS_FILTER},
                       LuaSandbox={**FAST_LIMITS, "QuarantineAfter": 3, "QuarantineCooldown": 600})

    with Watcher(server) as watcher:
        attempts = _store_until_quarantined(server, "filter", 0xA700)
        # Quarantined: the filter fails closed at once, over DICOM and over REST.
        assert server.c_store(make_instances(1, patient_id="FINE")) == [0xA700]
        refused = server.http.post("/instances", content=to_bytes(make_instances(1, patient_id="FINE")[0]))
        # The watcher's rounds depend on the machine's speed: wait for them rather than expect them.
        wait_until(lambda: watcher.rounds > 5 or bool(watcher.failures), timeout=120)
    assert attempts == 3
    assert watcher.failures == [] and watcher.rounds > 5, (watcher.failures, watcher.rounds)
    assert refused.status_code == 500
    assert refused.json()["OrthancStatus"] == 2031
    assert "failure policy: closed" in refused.json()["Details"]
    assert server.http.get("/instances").json() == []

    status = server.http.get("/lua/status").json()
    assert status["Quarantined"] is True and status["QuarantinedRoles"] == ["filter"]
    assert status["FilterFailurePolicy"]["ReceivedInstanceFilter"] == "closed"
    assert sandbox(server, "main")["state"] == "READY"  # the other process is not affected
    assert metric(server, "luabroker_lua_quarantined", role="filter") == 1
    assert metric(server, "luabroker_lua_timeouts_total", callback="ReceivedInstanceFilter", role="filter") == 3
    assert metric(server, "luabroker_lua_filter_fallbacks_total", callback="ReceivedInstanceFilter",
                  policy="closed") >= 4

    reset = server.http.post("/lua/reset")
    assert reset.status_code == 200 and reset.json()["Reset"] == ["filter"]
    assert sandbox(server, "filter")["state"] == "READY"
    assert server.http.get("/lua/status").json()["Quarantined"] is False
    assert server.c_store(make_instances(1, patient_id="FINE")) == [0x0000]
    assert server.http.post("/lua/reset").json()["Reset"] == []  # nothing left to reset
    # The audit log has the quarantine and the operator's reset.
    actions = [(entry["Action"], entry.get("Role")) for entry in server.http.get("/audit").json()]
    assert ("sandbox.quarantined", "filter") in actions
    assert actions.index(("sandbox.quarantined", "filter")) < actions.index(("sandbox.reset", "filter"))


def test_open_policy_accepts_instances_while_the_filter_cannot_run(luabroker):
    server = luabroker({"filter.lua": REDOS_FILTER},
                       LuaSandbox={**FAST_LIMITS, "QuarantineAfter": 2, "QuarantineCooldown": 600,
                                   "FilterFailurePolicy": {"ReceivedInstanceFilter": "open"}})

    # A call cut by the hard deadline is answered by the policy too: accepted.
    attempts = _store_until_quarantined(server, "filter", 0x0000)
    assert attempts == 2
    assert server.c_store(make_instances(3, patient_id="FINE")) == [0x0000] * 3
    assert len(server.http.get("/instances").json()) == 2 + 3
    assert metric(server, "luabroker_lua_filter_fallbacks_total", callback="ReceivedInstanceFilter",
                  policy="open") >= 5


def test_http_filter_fails_closed_while_quarantined_and_dicom_goes_on(luabroker):
    server = luabroker({"http.lua": REDOS_HTTP_FILTER},
                       LuaSandbox={**FAST_LIMITS, "QuarantineAfter": 2, "QuarantineCooldown": 600})

    assert server.http.get("/redos").status_code == 500
    assert server.http.get("/redos").status_code == 500
    assert server.http.get("/system").status_code == 500  # closed: every request is refused
    assert echo(server) == 0x0000
    assert server.c_store(make_instances(1)) == [0x0000]  # no HTTP filter on the DICOM door

    # HTTP is closed, /lua/reset included: the operator's way in is SIGHUP (a reload), as here.
    assert server.server.reload_scripts("test")
    assert server.http.get("/system").status_code == 200


def test_http_filter_with_open_policy_serves_requests_while_quarantined(luabroker):
    server = luabroker({"http.lua": REDOS_HTTP_FILTER},
                       LuaSandbox={**FAST_LIMITS, "QuarantineAfter": 2, "QuarantineCooldown": 600,
                                   "FilterFailurePolicy": {"IncomingHttpRequestFilter": "open"}})
    server.http.get("/redos")
    server.http.get("/redos")
    wait_until(lambda: sandbox(server, "main")["state"] == "QUARANTINED", 5)
    assert server.http.get("/system").status_code == 200


POISON = f"""
function OnStoredInstance(id, tags)
  if tags.PatientID == 'POISON' then {REDOS} end
  RestApiPut('/instances/' .. id .. '/metadata/Delivered', 'yes')
end
"""


def test_poison_event_is_parked_after_the_retry_limit_and_later_events_are_delivered(luabroker):
    server = luabroker({"poison.lua": POISON}, UserMetadata={"Delivered": 1024},
                       LuaSandbox={**FAST_LIMITS, "EventMaxAttempts": 2, "QuarantineAfter": 10})
    poison = server.http.post("/instances", content=to_bytes(make_instances(1, patient_id="POISON")[0])).json()["ID"]
    later = [server.http.post("/instances", content=to_bytes(ds)).json()["ID"] for ds in make_instances(3)]
    server.wait_events()

    parked = server.http.get("/lua/events/parked").json()
    assert [(p["ResourceId"], p["Kind"], p["Attempts"]) for p in parked] == [(poison, "StoredInstance", 2)]
    assert "SandboxTimeout" in parked[0]["LastError"]
    assert all(server.http.get(f"/instances/{i}/metadata/Delivered").text == "yes" for i in later)
    assert server.http.get(f"/instances/{poison}/metadata/Delivered").status_code == 404
    assert server.http.get("/lua/status").json()["Events"]["parked"] == 1
    assert metric(server, "luabroker_events_parked") == 1
    assert metric(server, "luabroker_events_deliveries_total", outcome="parked") == 1

    # The operator puts it back: one more cut delivery parks it again (its attempts are kept).
    assert server.http.post(f"/lua/events/parked/{parked[0]['Seq']}/requeue").status_code == 200
    wait_until(lambda: [p["Attempts"] for p in server.http.get("/lua/events/parked").json()] == [3], 20)
    assert server.http.post("/lua/events/parked/999999/requeue").status_code == 404


CUT_ONCE = f"""
function OnStoredInstance(id, tags)
  if tags.PatientID ~= 'CUT' then return end
  local anchor = '/instances/' .. tags.PatientName .. '/metadata/'
  local deleted = RestApiDelete(anchor .. 'Seed')   -- true once; nil if it ran a second time
  RestApiPut(anchor .. 'DeleteAnswer', tostring(deleted))
  if RestApiGet(anchor .. 'Cut') == nil then
    RestApiPut(anchor .. 'Cut', 'yes')
    {REDOS}  -- the first attempt is killed here, at the hard deadline
  end
  RestApiPut(anchor .. 'Finished', 'yes')
end
"""


def test_writes_of_a_killed_callback_are_not_applied_again_by_its_retry(luabroker):
    server = luabroker({"cut.lua": CUT_ONCE},
                       UserMetadata={"Seed": 1024, "DeleteAnswer": 1025, "Cut": 1026, "Finished": 1027},
                       LuaSandbox={**FAST_LIMITS, "QuarantineAfter": 10})
    anchor = server.http.post("/instances", content=to_bytes(make_instances(1, patient_id="ANCHOR")[0])).json()["ID"]
    assert server.http.put(f"/instances/{anchor}/metadata/Seed", content=b"planted").status_code == 200

    server.http.post("/instances", content=to_bytes(make_instances(1, patient_id="CUT", patient_name=anchor)[0]))
    server.wait_events()

    metadata = server.http.get(f"/instances/{anchor}/metadata", params={"expand": ""}).json()
    assert metadata.get("Seed") is None
    # The retry's RestApiDelete was answered from the journal (true), not run again (nil).
    assert metadata["DeleteAnswer"] == "true"
    assert metadata["Cut"] == "yes" and metadata["Finished"] == "yes"
    assert sandbox(server, "main")["restarts"] >= 1
    assert metric(server, "luabroker_lua_replayed_writes_total", callback="OnStoredInstance") == 2
    assert server.http.get("/lua/events/parked").json() == []


def test_a_bad_failure_policy_stops_start_up_with_a_message(tmp_path):
    with pytest.raises(ConfigError, match=r"FilterFailurePolicy.ReceivedInstanceFilter' has value 'ajar'"):
        Config.from_json({"LuaSandbox": {"FilterFailurePolicy": {"ReceivedInstanceFilter": "ajar"}}}, tmp_path)
    with pytest.raises(ConfigError, match="names 'OnStoredInstance', which is not a filter"):
        Config.from_json({"LuaSandbox": {"FilterFailurePolicy": {"OnStoredInstance": "open"}}}, tmp_path)
    config = Config.from_json({"LuaSandbox": {"FilterFailurePolicy": {"IncomingHttpRequestFilter": "open"},
                                              "QuarantineWindow": 3, "QuarantineCooldown": 7}}, tmp_path)
    filters = [name for name, callback in CALLBACKS.items() if callback.kind is Kind.FILTER]
    assert "ReceivedInstanceFilter" in filters and "IncomingHttpRequestFilter" in filters
    assert config.lua_filter_failure_policy == {name: "open" if name == "IncomingHttpRequestFilter" else "closed"
                                                for name in filters}
    assert (config.lua_backoff.window_s, config.lua_backoff.cooldown_s) == (3, 7)


KILLED_AFTER_RECORDING = f"""
function OnStoredInstance(id, tags)
  Delete(id)  -- recorded in the callback's job: must never run, the callback is killed below
  {REDOS}
end
"""


def test_operations_recorded_by_a_killed_callback_are_never_submitted(luabroker):
    server = luabroker({"killed.lua": KILLED_AFTER_RECORDING},
                       LuaSandbox={**FAST_LIMITS, "EventMaxAttempts": 2, "QuarantineAfter": 10})
    instance = server.http.post("/instances", content=to_bytes(make_instances(1)[0])).json()["ID"]
    server.wait_events()

    assert [p["ResourceId"] for p in server.http.get("/lua/events/parked").json()] == [instance]
    assert server.http.get("/jobs").json() == []
    assert server.http.get(f"/instances/{instance}").status_code == 200
