"""HTTP never waits on a script (review finding 1), and a call's built-ins count against its
wall-clock budget end to end (finding 2).

Before: once execute-script had run, every request asked the main process about
``IncomingHttpRequestFilter`` and waited for it without limit; a script spinning in execute-script
held ``GET /system`` and ``POST /lua/reset`` until it was killed, and a script calling its own server
deadlocked until its HTTP timeout.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.waiting import wait_until

SPIN = "while true do end"
#: A long CPU budget, so the spinning script holds the main process for the whole test; the test
#: kills the process at the end (a restart is part of what the server must survive anyway).
LONG = {"CallTimeout": 120, "HardTimeout": 130, "WallTimeout": 130, "BusyTimeout": 0.5}
ALLOW_ALL = "function IncomingHttpRequestFilter(method, uri, ip, username, headers) return true end\n"


class Spinner:
    """An execute-script that spins in a thread of its own until the main process is killed."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.answer: httpx.Response | httpx.HTTPError | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.client() as client:
            try:
                self.answer = client.post("/tools/execute-script", content=SPIN.encode())
            except httpx.HTTPError as exc:  # the server stopped under it
                self.answer = exc

    def start(self) -> Spinner:
        self.thread.start()
        wait_until(lambda: still_spinning(self.server))
        return self

    def stop(self) -> None:
        pid = main_pid(self.server)
        if pid is not None and self.thread.is_alive():
            os.kill(pid, signal.SIGKILL)
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def main_pid(server: Any) -> int | None:
    return next((s["pid"] for s in server.server.services.scripts.status() if s["role"] == "main"), None)


@pytest.fixture
def spinning(luabroker) -> Iterator[Any]:
    """``spinning(scripts, **options)``: a server whose main process is busy in execute-script."""
    spinners: list[Spinner] = []

    def start(scripts: dict[str, str] | None = None, **options: Any) -> Any:
        sandbox = {**LONG, **options.pop("LuaSandbox", {})}
        server = luabroker(scripts, ExecuteLuaEnabled=True, LuaSandbox=sandbox, **options)
        spinners.append(Spinner(server).start())
        return server

    yield start
    for spinner in spinners:
        spinner.stop()


def raw_get(server: Any, path: str) -> str:
    """The status line of a GET sent as is (an HTTP client would normalise the dot segments)."""
    with socket.create_connection((server.http.base_url.host, server.http.base_url.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        return sock.makefile("rb").readline().decode()


def still_spinning(server: Any) -> bool:
    """The main process is in the spinner's call (as ``GET /lua/status`` shows an operator)."""
    return any(s["role"] == "main" and s["busy_with"] == "execute-script"
               for s in server.server.services.scripts.status())


def test_requests_do_not_wait_for_a_main_process_busy_in_execute_script(spinning):
    server = spinning()
    assert server.http.get("/system").status_code == 200
    assert server.http.get("/patients").json() == []
    status = server.http.get("/lua/status")
    assert status.status_code == 200
    assert [s["busy_with"] for s in status.json()["Sandboxes"] if s["role"] == "main"] == ["execute-script"]
    assert server.http.post("/lua/reset").json()["Reset"] == []
    assert still_spinning(server), "the answers must come while the script still holds the process"


@pytest.mark.slow
def test_a_stop_does_not_wait_for_the_budget_of_a_spinning_script(spinning):
    server = spinning()  # the spin may run for 120 s
    server.stop(timeout=60)  # raises if the server is still running then
    assert not still_spinning(server)


def test_a_second_execute_script_is_refused_after_the_busy_timeout(spinning):
    server = spinning()
    answer = server.execute("print('second')")
    assert answer.status_code == 503
    assert "busy" in answer.json()["Details"]
    assert still_spinning(server)


@pytest.mark.parametrize("policy, status", [("closed", 500), ("open", 200)])
def test_a_defined_filter_on_a_busy_process_waits_a_bounded_time_then_follows_its_policy(spinning, policy, status):
    server = spinning({"filter.lua": ALLOW_ALL},
                      LuaSandbox={"FilterFailurePolicy": {"IncomingHttpRequestFilter": policy}})
    answer = server.http.get("/system")
    assert answer.status_code == status
    if policy == "closed":  # refused, as when the filter fails, and saying why
        assert "is busy with execute-script" in answer.json()["Details"]
        assert "failure policy: closed" in answer.json()["Details"]
    assert still_spinning(server)


def test_operator_endpoints_skip_the_filter_of_a_busy_process(spinning):
    server = spinning({"filter.lua": ALLOW_ALL})
    assert server.http.get("/system").status_code == 500  # closed: the filter could not run
    assert server.http.get("/lua/status").status_code == 200
    assert server.http.post("/lua/reset").status_code == 200
    assert server.http.get("/lua/events/parked").json() == []
    # Only the operator's own paths, matched whole: a path that only begins like one is filtered.
    assert raw_get(server, "/lua/status/../../system").startswith("HTTP/1.1 500")
    assert raw_get(server, "/lua/statusx").startswith("HTTP/1.1 500")
    assert still_spinning(server)


def test_functions_defined_by_execute_script_are_known_without_asking_the_process(luabroker):
    server = luabroker(ExecuteLuaEnabled=True)
    assert server.execute("x = 1").status_code == 200
    assert server.http.get("/system").status_code == 200
    deny = "function IncomingHttpRequestFilter(method, uri) return uri ~= '/system' end"
    assert server.execute(deny).status_code == 200
    assert server.http.get("/system").status_code == 403
    assert server.http.get("/patients").status_code == 200


def test_a_script_calling_its_own_server_does_not_deadlock(luabroker):
    server = luabroker(ExecuteLuaEnabled=True, LuaSandbox={"BusyTimeout": 0.5})
    url = str(server.http.base_url).rstrip("/")
    answer = server.execute(f"print(HttpGet('{url}/system') ~= nil)\n"
                            f"print(HttpPost('{url}/tools/execute-script', 'print(1)'))")
    assert answer.status_code == 200
    lines = answer.text.splitlines()
    assert lines[0] == "true"  # no filter defined: the inner request never asks the busy process
    assert lines[1] == ""  # the inner execute-script is refused (503) after 0.5 s, not deadlocked


def test_slow_builtins_cannot_hold_a_call_past_its_wall_clock_budget(luabroker):
    """The review's case: SetHttpTimeout(1) and 45 HttpPost to the server's own execute-script."""
    server = luabroker(ExecuteLuaEnabled=True,
                       LuaSandbox={"CallTimeout": 2, "HardTimeout": 3, "WallTimeout": 3, "BusyTimeout": 1})
    url = str(server.http.base_url).rstrip("/")
    answer = server.execute(f"""
        SetHttpTimeout(1)
        for i = 1, 45 do
          pcall(HttpPost, '{url}/tools/execute-script', 'print(1)')
        end
        print('finished')""")
    assert answer.status_code == 500
    assert "wall-clock limit exceeded (3 s" in answer.json()["Details"]
    assert server.http.get("/system").status_code == 200
    assert server.execute("print('alive')").text == "alive\n", "the soft stop keeps the process"


def test_a_fan_out_of_nested_execute_scripts_stops_at_the_budget(luabroker):
    """Each level runs two execute-scripts through RestApiPost (2 ** 10 in all, without the cap)."""
    server = luabroker(ExecuteLuaEnabled=True, LuaSandbox={"MaxNestedCalls": 50})
    answer = server.execute("""
        local function fan(depth)
          if depth == 0 then return 'x = 1' end
          return string.format('for i = 1, 2 do RestApiPost(%q, %q) end', '/tools/execute-script', fan(depth - 1))
        end
        RestApiPost('/tools/execute-script', fan(10))
        print('finished')""")
    assert answer.status_code == 500
    assert "too many nested calls (more than 50 in one call)" in answer.json()["Details"]
    assert server.execute("print('alive')").text == "alive\n"
