"""Fast recovery: the warm spare, the call that finds its process just killed, and the figures of
``status()`` (memory, the last start, the spare). Real lua5.4 processes; no test asserts a timing."""
from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from sandbox import BackoffPolicy, SandboxCrashed, SandboxUnavailable
from sandbox.process import DEFAULT_SHIM
from sandbox.states import State
from tests.support.sandboxes import process_exists
from tests.support.waiting import wait_until

SHIM = str(DEFAULT_SHIM)
COUNTER = "counter = 0\nfunction Inc() counter = counter + 1 return counter end\nfunction Crash() exit(9) end"


def warm_spare(sandbox: Any) -> dict[str, Any]:
    """The spare's status once one is warm (the supervisor prepares it in the background)."""
    wait_until(lambda: sandbox.status()["spare"]["warm"], timeout=60)
    return sandbox.status()["spare"]


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def kill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_exists(pid))


def test_a_killed_process_is_replaced_by_the_spare_with_a_fresh_lua_state(make_sandbox):
    sandbox = make_sandbox("function Get() return x end", shim=SHIM)
    sandbox.start()
    spare = warm_spare(sandbox)
    assert spare["pid"] != sandbox.status()["pid"] and process_exists(spare["pid"])
    sandbox.execute("x = 42")
    assert sandbox.call("Get", []).value == 42
    kill_and_wait(sandbox.status()["pid"])
    assert sandbox.call("Get", []).value is None  # the spare's state: only the scripts ran in it
    status = sandbox.status()
    assert status["pid"] == spare["pid"] and status["state"] == "READY"
    assert status["restarts"] == 1 and status["failures"] == 1
    assert status["last_start"]["restart"] and status["last_start"]["from_spare"]
    assert status["last_start"]["recovery_s"] is not None and status["last_start"]["ready_s"] >= 0
    # ... and the next spare is prepared behind it.
    assert warm_spare(sandbox)["pid"] not in (spare["pid"], None)


def test_the_spare_runs_no_user_code_before_it_is_swapped_in(make_sandbox, recorder):
    sandbox = make_sandbox("RestApiGet('/loaded')\nfunction Initialize() RestApiGet('/initialized') end\n"
                           "function Ok() return 'ok' end", shim=SHIM, initialize="Initialize")
    sandbox.start()
    warm_spare(sandbox)

    def paths() -> list[str]:
        return [args[0] for builtin, args, _ in recorder.calls if builtin == "RestApiGet"]

    assert paths() == ["/loaded", "/initialized"]  # the spare is warm and has run nothing
    kill_and_wait(sandbox.status()["pid"])
    assert sandbox.call("Ok", []).value == "ok"
    assert paths() == ["/loaded", "/initialized"] * 2  # loaded and initialized at the swap
    warm_spare(sandbox)
    assert paths() == ["/loaded", "/initialized"] * 2  # the next spare waits, untouched


def test_a_call_the_dead_process_never_read_runs_on_the_next_process(make_sandbox):
    sandbox = make_sandbox(COUNTER)
    sandbox.start()
    assert sandbox.call("Inc", []).value == 1
    pid = sandbox.status()["pid"]
    os.kill(pid, signal.SIGSTOP)  # alive, so the call is written; stopped, so it is never read
    # Stopped for real (state T): a process still on its way out of read() would take the frame.
    wait_until(lambda: process_state(pid) == "T")
    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(sandbox.call("Inc", []).value))
    caller.start()
    wait_until(lambda: sandbox.status()["busy_with"] == "Inc")
    os.kill(pid, signal.SIGKILL)
    caller.join(60)
    assert answers == [1]  # run once, by the restarted process: not lost, not failed
    status = sandbox.status()
    assert status["pid"] != pid and status["failures"] == 1 and status["restarts"] == 1
    assert "while idle" in status["last_error"]["text"]


def test_a_process_killed_during_a_call_still_fails_that_call(make_sandbox, recorder):
    sandbox = make_sandbox("function Ask() return rpc('Kill') end")
    recorder.handlers["Kill"] = lambda args, info: kill_and_wait(sandbox.status()["pid"])
    sandbox.start()
    with pytest.raises(SandboxCrashed, match="SIGKILL"):
        sandbox.call("Ask", [])


def test_a_crash_loop_still_opens_the_circuit(make_sandbox):
    sandbox = make_sandbox(COUNTER, backoff=BackoffPolicy(base_s=0.05, cooldown_s=30))
    sandbox.start()
    warm_spare(sandbox)
    with pytest.raises(SandboxCrashed):
        sandbox.call("Crash", [])
    assert sandbox.call("Inc", []).value == 1
    assert sandbox.status()["last_start"]["from_spare"]  # the restart took the warm spare
    for _ in range(4):  # spares or cold spawns, as fast as the restarts come: the schedule decides
        with pytest.raises(SandboxCrashed):
            sandbox.call("Crash", [])
    assert sandbox.state is State.QUARANTINED
    with pytest.raises(SandboxUnavailable, match="quarantined"):
        sandbox.call("Inc", [])
    status = sandbox.status()
    assert status["failures"] == 5 and status["restarts"] == 4 and status["pid"] is None
    assert status["transitions"]["QUARANTINED"] == 1


def test_a_spare_that_dies_while_it_waits_is_replaced_without_a_failure(make_sandbox):
    sandbox = make_sandbox(COUNTER)
    sandbox.start()
    first = warm_spare(sandbox)
    kill_and_wait(first["pid"])
    wait_until(lambda: sandbox.status()["spare"]["failures"] == 1)
    assert warm_spare(sandbox)["pid"] != first["pid"]  # after spare.RETRY_S
    status = sandbox.status()
    assert status["failures"] == 0 and status["restarts"] == 0 and status["state"] == "READY"
    assert sandbox.call("Inc", []).value == 1


def test_stop_ends_the_spare_too(make_sandbox):
    sandbox = make_sandbox(COUNTER)
    sandbox.start()
    spare = warm_spare(sandbox)
    sandbox.stop()
    wait_until(lambda: not process_exists(spare["pid"]))
    assert sandbox.status()["spare"]["warm"] is False


def test_no_spare_when_the_configuration_says_so(make_sandbox):
    sandbox = make_sandbox(COUNTER, spare=False)
    sandbox.start()
    kill_and_wait(sandbox.status()["pid"])
    assert sandbox.call("Inc", []).value == 1
    status = sandbox.status()
    assert status["spare"] is None and status["last_start"]["from_spare"] is False


def test_status_shows_the_memory_of_every_process_and_the_last_start(make_sandbox):
    sandbox = make_sandbox("x = 1", shim=SHIM)
    sandbox.start()
    status = sandbox.status()
    assert status["last_start"]["restart"] is False and status["last_start"]["recovery_s"] is None
    assert status["last_start"]["spawn_to_ready_s"] > 0
    memory = status["memory"]
    lua = memory["processes"][0]
    assert lua["process"] == "lua" and lua["pid"] == status["pid"] and 0 < lua["anon_kib"] <= lua["rss_kib"]
    assert memory["rss_kib"] == sum(p["rss_kib"] for p in memory["processes"])
    # What they cost together: under what they map (every shared page counted once per mapper).
    if all("pss_kib" in p for p in memory["processes"]):  # readable here: the same user, or root
        assert 0 < memory["pss_kib"] == sum(p["pss_kib"] for p in memory["processes"]) < memory["rss_kib"]
    if status["wrapper_pid"] is not None:  # bubblewrap: its processes are listed too
        assert status["wrapper_pid"] in [p["pid"] for p in memory["processes"]]
    spare = warm_spare(sandbox)
    assert spare["memory"]["processes"][0]["pid"] == spare["pid"] and spare["ready_s"] > 0


def test_the_spare_is_isolated_and_limited_as_the_serving_process(make_sandbox):
    sandbox = make_sandbox("x = 1", shim=SHIM)
    sandbox.start()
    spare = warm_spare(sandbox)
    serving = sandbox.status()

    def limits(pid: int) -> str:
        with open(f"/proc/{pid}/limits") as f:
            return f.read()

    def view(pid: int) -> dict[str, str]:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        namespaces = {kind: os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
                      for kind in ("net", "mnt", "pid", "user", "ipc", "uts")}
        return {"Uid": fields["Uid"], "Gid": fields["Gid"], "Seccomp": fields.get("Seccomp", ""),
                "NoNewPrivs": fields.get("NoNewPrivs", ""), "CapEff": fields["CapEff"], **namespaces}

    assert limits(spare["pid"]) == limits(serving["pid"])
    assert view(spare["pid"]) == view(serving["pid"])
    assert (spare["wrapper_pid"] is None) == (serving["wrapper_pid"] is None)
