"""Fast recovery as the operator sees it: ``GET /lua/status`` shows the memory of every sandbox
process, the warm spare and the last restart; a kill -9 of the main process is answered by the spare
with fresh globals; the metrics carry the memory and the spare. No test asserts a timing."""
from __future__ import annotations

import os
import signal
from typing import Any

from tests.support.sandboxes import process_exists
from tests.support.server import metric
from tests.support.waiting import wait_until


def main_sandbox(server: Any) -> dict[str, Any]:
    return next(s for s in server.http.get("/lua/status").json()["Sandboxes"] if s["role"] == "main")


def test_a_kill_is_answered_by_the_warm_spare_and_status_shows_the_figures(luabroker):
    server = luabroker({"scripts.lua": "function Get() return kept end"}, ExecuteLuaEnabled=True)
    wait_until(lambda: all(s["spare"]["warm"] for s in server.http.get("/lua/status").json()["Sandboxes"]),
               timeout=60)
    main = main_sandbox(server)
    assert main["memory"]["rss_kib"] > 0 and main["memory"]["processes"][0]["pid"] == main["pid"]
    assert main["spare"]["memory"]["processes"][0]["pid"] == main["spare"]["pid"]
    assert main["last_start"]["restart"] is False
    assert server.execute("kept = 'before the kill' print(kept)").text == "before the kill\n"

    os.kill(main["pid"], signal.SIGKILL)
    wait_until(lambda: not process_exists(main["pid"]))
    answer = server.execute("print(kept)")
    assert answer.status_code == 200 and answer.text == "nil\n"  # a fresh Lua state
    after = main_sandbox(server)
    assert after["pid"] == main["spare"]["pid"] and after["restarts"] == 1
    assert after["last_start"]["restart"] and after["last_start"]["from_spare"]
    assert after["last_start"]["recovery_s"] is not None

    assert metric(server, "luabroker_lua_sandbox_memory_bytes", role="main", process="serving", kind="rss") > 0
    wait_until(lambda: metric(server, "luabroker_lua_spare_warm", role="main") == 1, timeout=60)


def test_without_a_warm_spare_a_kill_spawns_a_new_process(luabroker):
    """``LuaSandbox.WarmSpare: false``: no spare is kept, and a restart spawns its process as before."""
    server = luabroker({"scripts.lua": "function Get() return kept end"}, ExecuteLuaEnabled=True,
                       LuaSandbox={"WarmSpare": False, "CallTimeout": 2, "HardTimeout": 6})
    main = main_sandbox(server)
    assert all(s["spare"] is None for s in server.http.get("/lua/status").json()["Sandboxes"])
    os.kill(main["pid"], signal.SIGKILL)
    wait_until(lambda: not process_exists(main["pid"]))
    assert server.execute("print(kept)").text == "nil\n"
    after = main_sandbox(server)
    assert after["restarts"] == 1 and after["last_start"]["from_spare"] is False and after["spare"] is None
