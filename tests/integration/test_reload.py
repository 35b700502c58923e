"""Reload without restart: ``POST /lua/reload`` and SIGHUP load the scripts into fresh processes and
swap them in; a C-STORE in progress loses nothing, each event is handled by exactly one version, and a
broken script keeps the old version."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from broker.scripting.version import sources_digest
from sandbox import ScriptSource
from tests.support.factory import make_instances, to_bytes
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def handler(tag: str) -> str:
    """A version of the scripts: its filter accepts, its OnStoredInstance appends ``tag`` to the
    instance's HandledBy metadata (so two versions handling one event would leave two tags)."""
    return f"""-- version {tag}
function ReceivedInstanceFilter(tags, origin, info)
  return true
end

function OnStoredInstance(id, tags, metadata, origin)
  local uri = '/instances/' .. id .. '/metadata/HandledBy'
  local previous = RestApiGet(uri)
  RestApiPut(uri, (previous and previous .. ',' or '') .. '{tag}')
end
"""


def digest_of(root: Path, *names: str) -> str:
    return sources_digest([ScriptSource(name, (root / name).read_bytes()) for name in names])


@pytest.mark.slow
def test_reload_during_c_store_loses_nothing_and_each_event_is_handled_by_one_version(luabroker):
    server = luabroker({"handler.lua": handler("v1")}, UserMetadata={"HandledBy": 1024})
    first = server.http.get("/lua/status").json()["Version"]
    assert first == digest_of(server.root, "handler.lua")
    instances = make_instances(400, series=2)
    batches = [instances[0::2], instances[1::2]]

    def count_stored() -> int:
        return server.http.get("/statistics").json()["CountInstances"]

    with ThreadPoolExecutor(2) as pool:
        storing = [pool.submit(server.c_store, batch) for batch in batches]
        answers = []
        # Each reload once another quarter of the instances is stored (not after a fixed time, which a
        # fast machine could outlast with the whole store): the first one comes with 300 still to go.
        for quarter, tag in enumerate(("v2", "v3", "v4"), 1):
            target = quarter * len(instances) // 4
            wait_until(lambda t=target: count_stored() >= t or all(f.done() for f in storing),
                            timeout=120, interval=0.01)
            (server.root / "handler.lua").write_text(handler(tag))
            answers.append((tag, any(not f.done() for f in storing), server.http.post("/lua/reload")))
        statuses = [s for future in storing for s in future.result()]
    server.wait_events(timeout=60)

    assert answers[0][1], "the first reload must happen while the C-STORE is still running"
    assert [a.status_code for _, _, a in answers] == [200, 200, 200], [a.text for _, _, a in answers]
    assert statuses == [0x0000] * len(instances)
    stored = server.http.get("/instances").json()
    assert len(stored) == len(instances)
    handled = {i: server.http.get(f"/instances/{i}/metadata/HandledBy").text for i in stored}
    assert all(value in ("v1", "v2", "v3", "v4") for value in handled.values()), \
        [v for v in handled.values() if v not in ("v1", "v2", "v3", "v4")][:5]
    assert len(set(handled.values())) >= 2  # the events really were spread over versions

    final = answers[-1][2].json()
    assert final["Changed"] is True and final["Version"] == digest_of(server.root, "handler.lua")
    status = server.http.get("/lua/status").json()
    assert status["Version"] == final["Version"] != first
    assert {s["Version"] for s in status["Sandboxes"]} == {final["Version"]}
    assert all(s["state"] == "READY" for s in status["Sandboxes"])
    assert status["LastReload"]["Succeeded"] is True
    wait_until(lambda: server.http.get("/lua/status").json()["Retiring"] == [], 30)


LIFECYCLE = """
function Initialize() print('Initialize {tag}') end
function Finalize() print('Finalize {tag}') end
"""


def test_reload_runs_initialize_on_the_new_version_then_finalize_on_the_old(luabroker, caplog):
    caplog.set_level(logging.WARNING, logger="luabroker.lua")
    server = luabroker({"life.lua": LIFECYCLE.replace("{tag}", "v1")})
    (server.root / "life.lua").write_text(LIFECYCLE.replace("{tag}", "v2"))
    assert server.http.post("/lua/reload").status_code == 200
    wait_until(lambda: server.http.get("/lua/status").json()["Retiring"] == [], 30)

    said = [r.getMessage().partition(": Lua says: ")[2] for r in caplog.records if ": Lua says: " in r.getMessage()]
    assert said == ["Initialize v1", "Initialize v2", "Finalize v1"]


def test_reload_with_a_broken_script_keeps_the_old_version(luabroker):
    server = luabroker({"handler.lua": handler("v1")}, UserMetadata={"HandledBy": 1024})
    before = server.http.get("/lua/status").json()["Version"]
    good = handler("v2")
    script = server.root / "handler.lua"

    script.write_text("-- a comment\nfunction OnStoredInstance(\n  x = = 1\nend\n")
    syntax = server.http.post("/lua/reload")
    script.write_text("local x = nil\nprint(x.field)\n")
    runtime = server.http.post("/lua/reload")
    script.write_text(good)
    config = json.loads((server.root / "config.json").read_text())
    (server.root / "config.json").write_text(json.dumps({**config, "LuaScripts": ["handler.lua", "missing.lua"]}))
    missing = server.http.post("/lua/reload")

    assert (syntax.status_code, syntax.json()["OrthancStatus"]) == (400, 2031)
    assert "handler.lua:3:" in syntax.json()["Details"] and before in syntax.json()["Details"]
    assert runtime.status_code == 400
    assert "handler.lua:2: attempt to index a nil value (local 'x')" in runtime.json()["Details"]
    assert missing.status_code == 400 and "missing.lua" in missing.json()["Details"]

    status = server.http.get("/lua/status").json()
    assert status["Version"] == before
    assert status["LastReload"]["Succeeded"] is False and "missing.lua" in status["LastReload"]["Error"]
    assert all(s["state"] == "READY" for s in status["Sandboxes"])
    instance = server.http.post("/instances", content=to_bytes(make_instances(1)[0])).json()["ID"]
    server.wait_events()
    assert server.http.get(f"/instances/{instance}/metadata/HandledBy").text == "v1"  # the old version serves

    # The configuration file's LuaScripts is read again: a fixed list loads.
    (server.root / "extra.lua").write_text("EXTRA = true\n")
    (server.root / "config.json").write_text(json.dumps({**config, "LuaScripts": ["handler.lua", "extra.lua"]}))
    fixed = server.http.post("/lua/reload")
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["Scripts"] == ["handler.lua", "extra.lua"]
    assert fixed.json()["Version"] == digest_of(server.root, "handler.lua", "extra.lua")


def test_sighup_reloads_the_scripts_of_a_running_server(tmp_path):
    http_port = free_port()
    (tmp_path / "hello.lua").write_text("function Initialize() print('one') end\n")
    (tmp_path / "config.json").write_text(json.dumps({
        "HttpPort": http_port, "DicomPort": free_port(), "StorageDirectory": "storage", "Workers": 1,
        "LuaScripts": ["hello.lua"]}))
    process = subprocess.Popen([sys.executable, "-m", "broker.cli", str(tmp_path / "config.json")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)

    def status() -> dict:
        try:
            return http.get("/lua/status").json()
        except httpx.HTTPError:
            return {}

    try:
        wait_until(lambda: {s.get("state") for s in status().get("Sandboxes", [])} == {"READY"}, 30,
                   message="every sandbox READY")
        before = status()["Version"]
        (tmp_path / "hello.lua").write_text("function Initialize() print('two') end\n")
        os.kill(process.pid, signal.SIGHUP)
        wait_until(lambda: status().get("Version") not in (None, before), 30, message="a new version")
        assert status()["LastReload"]["Reason"] == "SIGHUP"
        assert status()["Version"] == digest_of(tmp_path, "hello.lua")
    finally:
        http.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        reader.join(timeout=5)
    assert any("Lua says: two" in line for line in output), output
    assert any("luabroker has stopped" in line for line in output), output  # a clean stop, not a kill
