"""Fault drills: the sandbox dies, loops or fails to load; the server keeps every instance and event."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.support.factory import make_instances, to_bytes
from tests.support.waiting import wait_until

#: 25 s together: `pytest -m "not slow"` skips them locally; `make test` runs them.
pytestmark = pytest.mark.slow

DELIVERY_RECORDER = """
function ReceivedInstanceFilter(tags, origin, info)
  return tags.Modality == 'CT'
end

function OnStoredInstance(instanceId, tags, metadata, origin)
  local previous = RestApiGet('/instances/' .. instanceId .. '/metadata/Delivered')
  local count = (previous and tonumber(previous) or 0) + 1
  RestApiPut('/instances/' .. instanceId .. '/metadata/Delivered', tostring(count))
end
"""


def _pids(server) -> dict[str, int]:
    return {s["role"]: s["pid"] for s in server.server.services.scripts.status() if s.get("pid")}


def test_kill9_of_both_sandboxes_during_c_store_loses_nothing(luabroker):
    server = luabroker({"recorder.lua": DELIVERY_RECORDER}, UserMetadata={"Delivered": 1024})
    instances = make_instances(200)
    kills = []
    done = threading.Event()

    def killer() -> None:
        while not done.is_set() and len(kills) < 6:
            time.sleep(0.15)
            role = "main" if len(kills) % 2 == 0 else "filter"
            pid = _pids(server).get(role)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # restarted between the status read and the kill
                    continue
                kills.append((role, pid))

    thread = threading.Thread(target=killer)
    thread.start()
    # In four parts, the next one only after a kill since the previous one: both processes are killed
    # while instances are in flight, even where 200 instances take less than the 0.15 s between kills.
    statuses = []
    try:
        for part in range(4):
            before = len(kills)
            statuses += server.c_store(instances[part::4])
            wait_until(lambda b=before: len(kills) > b or not thread.is_alive(), timeout=60)
    finally:
        done.set()
        thread.join()
    server.wait_events(timeout=60)

    assert {role for role, _ in kills} == {"main", "filter"}, "the drill must have killed both processes"
    assert statuses == [0x0000] * 200
    stored = server.http.get("/instances").json()
    assert len(stored) == 200
    undelivered = [i for i in stored if server.http.get(f"/instances/{i}/metadata/Delivered").status_code != 200]
    assert undelivered == []
    # The last kill may still be restarting (the supervisor restarts in the background).
    wait_until(lambda: sum(s["restarts"] for s in server.http.get("/lua/status").json()["Sandboxes"])
               >= len(kills))
    status = server.http.get("/lua/status").json()
    assert status["Events"].get("parked", 0) == 0


def test_infinite_loop_in_execute_script_fails_after_the_deadline_and_next_script_runs(luabroker):
    # The CPU limit, and a hard deadline it cannot lose to on a loaded machine (that one would restart
    # the process and lose `kept`).
    server = luabroker(ExecuteLuaEnabled=True, LuaSandbox={"CallTimeout": 2, "HardTimeout": 120, "WallTimeout": 120})
    server.execute("kept = 'still here'")
    looping = server.execute("while true do end")
    assert looping.status_code == 500
    assert looping.json()["OrthancStatus"] == 2031
    assert "cpu time limit exceeded" in looping.json()["Details"], looping.json()["Details"]
    assert server.execute("print(42, kept)").text == "42, still here\n"


def test_infinite_loop_in_a_filter_refuses_the_instance_and_ingest_goes_on(luabroker):
    server = luabroker({"filter.lua": """
        function ReceivedInstanceFilter(tags)
          if tags.PatientID == 'LOOP' then while true do end end
          return true
        end"""})
    looping = make_instances(1, patient_id="LOOP")
    fine = make_instances(1, patient_id="FINE")
    assert server.c_store(looping + fine) == [0xA700, 0x0000]
    assert len(server.http.get("/instances").json()) == 1


def test_script_that_fails_to_load_stops_start_up_naming_file_and_line(tmp_path):
    (tmp_path / "broken.lua").write_text("-- a comment\nfunction OnStoredInstance(\n  x = = 1\nend\n")
    (tmp_path / "config.json").write_text(json.dumps({
        "HttpPort": 0, "DicomPort": 0, "Workers": 1, "LuaScripts": ["broken.lua"], "StorageDirectory": "storage"}))
    run = subprocess.run([sys.executable, "-m", "broker.cli", str(tmp_path / "config.json")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "broken.lua:3:" in run.stderr, run.stderr


def test_script_that_errors_at_load_time_stops_start_up(tmp_path):
    (tmp_path / "fails.lua").write_text("local x = nil\nprint(x.field)\n")
    (tmp_path / "config.json").write_text(json.dumps({
        "HttpPort": 0, "DicomPort": 0, "Workers": 1, "LuaScripts": "fails.lua", "StorageDirectory": "storage"}))
    run = subprocess.run([sys.executable, "-m", "broker.cli", str(tmp_path / "config.json")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "fails.lua:2: attempt to index a nil value (local 'x')" in run.stderr, run.stderr


def test_on_stored_instance_error_is_parked_and_does_not_block_later_events(luabroker):
    server = luabroker({"cb.lua": """
        function OnStoredInstance(id, tags)
          if tags.PatientID == 'BAD' then error('deliberate') end
          RestApiPut('/instances/' .. id .. '/metadata/Delivered', 'yes')
        end"""}, UserMetadata={"Delivered": 1024})
    bad = server.http.post("/instances", content=to_bytes(make_instances(1, patient_id="BAD")[0])).json()["ID"]
    good = server.http.post("/instances", content=to_bytes(make_instances(1, patient_id="GOOD")[0])).json()["ID"]
    server.wait_events()
    assert server.http.get(f"/instances/{bad}/metadata/Delivered").status_code == 404
    assert server.http.get(f"/instances/{good}/metadata/Delivered").text == "yes"
    [parked] = server.http.get("/lua/events/parked").json()
    assert (parked["Kind"], parked["ResourceId"], parked["Attempts"]) == ("StoredInstance", bad, 5)
    assert "deliberate" in parked["LastError"]


def test_with_event_lua_errors_log_an_error_drops_the_event_as_orthanc(luabroker):
    server = luabroker({"cb.lua": "function OnStoredInstance(id) error('deliberate') end"},
                       LuaSandbox={"CallTimeout": 2, "HardTimeout": 6, "EventLuaErrors": "Log"})
    server.http.post("/instances", content=to_bytes(make_instances(1)[0])).raise_for_status()
    server.wait_events()
    assert server.http.get("/lua/events/parked").json() == []
    assert server.http.get("/lua/status").json()["Events"] == {"pending": 0, "done": 1, "parked": 0}



def test_clean_stop_delivers_pending_events_then_runs_finalize(luabroker, caplog):
    caplog.set_level(logging.WARNING, logger="luabroker.lua")
    server = luabroker({"lifecycle.lua": """
        function Initialize() print('Initialize') end
        function OnStoredInstance(id) print('stored ' .. id) end
        function Finalize() print('Finalize') end"""})
    ids = [server.http.post("/instances", content=to_bytes(ds)).json()["ID"] for ds in make_instances(3)]

    server.stop()

    said = [r.getMessage().partition(": Lua says: ")[2] for r in caplog.records if ": Lua says: " in r.getMessage()]
    assert said[0] == "Initialize" and said[-1] == "Finalize"
    assert sorted(said[1:-1]) == sorted(f"stored {i}" for i in ids)
