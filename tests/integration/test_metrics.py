"""``GET /tools/metrics-prometheus``: Orthanc's text format, counters that move with the calls, one
registry per server."""
from __future__ import annotations

import os
import signal

from tests.support.factory import make_instances, to_bytes
from tests.support.server import metric, metrics
from tests.support.waiting import wait_until

SCRIPTS = """
function ReceivedInstanceFilter(tags, origin, info)
  return true
end

function OnStoredInstance(id, tags, metadata, origin)
  if tags.PatientID == 'FAIL' then error('deliberate') end
end
"""


def test_metrics_move_with_calls_in_orthancs_text_format(luabroker):
    server = luabroker({"scripts.lua": SCRIPTS}, ExecuteLuaEnabled=True)
    answer = server.http.get("/tools/metrics-prometheus")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    before = metrics(server)
    assert before[("orthanc_count_instances", frozenset())] == 0
    filter_calls = ("luabroker_lua_calls_total",
                    frozenset({("callback", "ReceivedInstanceFilter"), ("role", "filter")}))
    assert before.get(filter_calls, 0) == 0

    assert server.c_store(make_instances(3)) == [0] * 3
    server.http.post("/instances", content=to_bytes(make_instances(1, patient_id="FAIL")[0]))
    server.wait_events()
    server.execute("print(1)")

    after = metrics(server)
    assert after[filter_calls] == 4
    assert after[("luabroker_lua_call_duration_seconds_count",
                  frozenset({("callback", "ReceivedInstanceFilter"), ("role", "filter")}))] == 4
    # The failing event is tried EventMaxAttempts (5) times, then parked.
    assert metric(server, "luabroker_lua_calls_total", callback="OnStoredInstance", role="main") == 3 + 5
    assert metric(server, "luabroker_lua_errors_total", callback="OnStoredInstance", role="main") == 5
    assert metric(server, "luabroker_lua_calls_total", callback="execute-script", role="main") == 1
    assert metric(server, "luabroker_events_deliveries_total", outcome="done") == 3
    assert metric(server, "luabroker_events_deliveries_total", outcome="lua_error") == 4
    assert metric(server, "luabroker_events_deliveries_total", outcome="parked") == 1
    assert after[("luabroker_events_parked", frozenset())] == 1
    assert after[("orthanc_count_instances", frozenset())] == 4
    assert after[("orthanc_count_patients", frozenset())] == 2
    assert after[("luabroker_events_pending", frozenset())] == 0
    assert after[("luabroker_lua_sandbox_state", frozenset({("role", "main"), ("state", "READY")}))] == 1
    assert after[("luabroker_lua_quarantined", frozenset({("role", "filter")}))] == 0
    version = server.http.get("/lua/status").json()["Version"]
    assert after[("luabroker_lua_scripts_info", frozenset({("version", version)}))] == 1
    memory = {kind: after[("luabroker_lua_sandbox_memory_bytes",
                           frozenset({("role", "main"), ("process", "serving"), ("kind", kind)}))]
              for kind in ("rss", "anon", "pss")
              if ("luabroker_lua_sandbox_memory_bytes",
                  frozenset({("role", "main"), ("process", "serving"), ("kind", kind)})) in after}
    assert 0 < memory["anon"] < memory["rss"]
    if os.geteuid() == 0:  # smaps_rollup of a sandbox under another uid: readable by root only
        assert 0 < memory["pss"] < memory["rss"]

    # Reloads and restarts are counted across versions (a replaced version's numbers are kept).
    pid = next(s["pid"] for s in server.http.get("/lua/status").json()["Sandboxes"] if s["role"] == "main")
    os.kill(pid, signal.SIGKILL)
    server.execute("print(2)")  # finds the process gone; the supervisor restarts it
    wait_until(lambda: metric(server, "luabroker_lua_sandbox_restarts_total", role="main") >= 1)
    assert server.http.post("/lua/reload").status_code == 200
    assert metric(server, "luabroker_lua_reloads_total", result="ok") == 1
    assert metric(server, "luabroker_lua_sandbox_restarts_total", role="main") >= 1


def test_two_servers_in_one_process_have_their_own_metrics(luabroker):
    one = luabroker({"scripts.lua": SCRIPTS})
    two = luabroker()
    assert one.c_store(make_instances(2)) == [0, 0]
    assert metric(one, "orthanc_count_instances") == 2
    assert metric(two, "orthanc_count_instances") == 0
    assert metric(one, "luabroker_lua_calls_total", callback="ReceivedInstanceFilter", role="filter") == 2
    assert metric(two, "luabroker_lua_calls_total", callback="ReceivedInstanceFilter", role="filter") == 0


def test_metrics_disabled_answer_an_empty_text(luabroker):
    server = luabroker(MetricsEnabled=False)
    answer = server.http.get("/tools/metrics-prometheus")
    assert (answer.status_code, answer.text) == (200, "")
    assert server.http.get("/tools/metrics").json() is False
