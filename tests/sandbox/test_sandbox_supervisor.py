"""Sandbox lifecycle: start, script loading, Initialize, restart after failures, backoff, quarantine, stop."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from sandbox import (
    BackoffPolicy,
    Limits,
    LuaError,
    SandboxCrashed,
    SandboxError,
    SandboxTimeout,
    SandboxUnavailable,
    ScriptLoadError,
)
from sandbox.states import State
from tests.support.sandboxes import SHIMS, process_exists
from tests.support.waiting import wait_until

COUNTER = "counter = 0\nfunction Inc() counter = counter + 1 return counter end\nfunction Crash() exit(9) end"


# ------------------------------------------------------------------------------------------ start


def test_start_loads_scripts_in_order_and_reports_functions_and_builtins(make_sandbox):
    sandbox = make_sandbox("base = 40\nfunction Two() return 2 end", "function Answer() return base + Two() end")
    sandbox.start()
    assert sandbox.state is State.READY
    assert sandbox.call("Answer", []).value == 42
    assert sandbox.defined_functions() == {"Two", "Answer"}
    assert sandbox.builtin_names() == {"Echo", "Fail", "Boom"}


def test_undefined_function_is_reported_not_raised(make_sandbox):
    sandbox = make_sandbox("x = 1")
    sandbox.start()
    result = sandbox.call("ReceivedInstanceFilter", [{}])
    assert (result.defined, result.value, result.prints) == (False, None, [])


def test_script_load_error_names_file_and_line(make_sandbox):
    sandbox = make_sandbox(("/etc/orthanc/ok.lua", "x = 1"),
                           ("/etc/orthanc/filter.lua", "local a = 1\nlocal b = = 2\n"))
    with pytest.raises(ScriptLoadError) as info:
        sandbox.start()
    assert info.value.path == "/etc/orthanc/filter.lua"
    assert "/etc/orthanc/filter.lua:2:" in str(info.value)
    assert "unexpected symbol" in str(info.value)
    assert sandbox.state is State.FATAL
    assert sandbox.status()["pid"] is None
    with pytest.raises(SandboxUnavailable, match="FATAL"):
        sandbox.call("Anything", [])


def test_runtime_error_at_script_top_level_is_a_load_error(make_sandbox):
    sandbox = make_sandbox(("scripts/main.lua", "x = 1\n\nerror('missing option')\n"))
    with pytest.raises(ScriptLoadError, match=r"scripts/main\.lua:3: missing option"):
        sandbox.start()


def test_missing_interpreter_is_fatal(make_sandbox):
    sandbox = make_sandbox("x = 1", interpreter="no-such-lua-interpreter")
    with pytest.raises(SandboxError, match="no Lua interpreter found"):
        sandbox.start()
    assert sandbox.state is State.FATAL


def test_missing_shim_is_fatal(make_sandbox):
    sandbox = make_sandbox("x = 1", shim="/nonexistent/shim.lua")
    with pytest.raises(SandboxError, match="does not exist"):
        sandbox.start()
    assert sandbox.state is State.FATAL


def test_start_twice_is_refused(make_sandbox):
    sandbox = make_sandbox("x = 1")
    sandbox.start()
    with pytest.raises(SandboxError, match="already READY"):
        sandbox.start()


def test_initialize_runs_after_load_and_may_define_functions(make_sandbox, recorder):
    sandbox = make_sandbox("function Initialize() rpc('Echo', 'init') function Late() return 'late' end end",
                           initialize="Initialize")
    sandbox.start()
    assert [(b, a, i.function) for b, a, i in recorder.calls] == [("Echo", ["init"], "Initialize")]
    assert "Late" in sandbox.defined_functions()
    assert sandbox.call("Late", []).value == "late"


def test_initialize_error_is_logged_and_ignored(make_sandbox, recorder):
    sandbox = make_sandbox("function Initialize() error('no config', 0) end\nfunction Ok() return 1 end",
                           initialize="Initialize")
    sandbox.start()
    assert sandbox.state is State.READY
    assert ("test", "error", "Initialize() failed: no config") in recorder.logs
    assert sandbox.call("Ok", []).value == 1


def test_initialize_may_call_back_into_its_own_sandbox(make_sandbox, recorder):
    sandbox = make_sandbox("function Initialize() ready = rpc('Reenter') end\n"
                           "function Helper() return 'helped' end\nfunction Ready() return ready end",
                           initialize="Initialize")
    recorder.handlers["Reenter"] = lambda args, info: sandbox.call("Helper", []).value
    sandbox.start()
    assert sandbox.call("Ready", []).value == "helped"


def test_shim_that_dies_before_ready_counts_as_failures_and_gets_quarantined(make_sandbox):
    sandbox = make_sandbox(shim=str(SHIMS / "exit_at_start.lua"),
                           backoff=BackoffPolicy(max_failures=3, base_s=0.01, cooldown_s=30))
    with pytest.raises(SandboxCrashed) as info:
        sandbox.start()
    assert "giving up before ready" in str(info.value) and info.value.returncode == 3
    wait_until(lambda: sandbox.state is State.QUARANTINED)
    status = sandbox.status()
    assert status["failures"] == 3 and status["restarts"] == 0
    assert status["transitions"]["STARTING"] == 3
    with pytest.raises(SandboxUnavailable, match="quarantined"):
        sandbox.call("Anything", [])


def test_shim_that_never_says_ready_times_out(make_sandbox):
    sandbox = make_sandbox(shim=str(SHIMS / "silent.lua"), limits=Limits(hard_timeout_s=0.3),
                           backoff=BackoffPolicy(initial_s=60))
    with pytest.raises(SandboxTimeout):
        sandbox.start()
    assert sandbox.state is State.BACKOFF


def test_garbage_instead_of_ready_is_a_protocol_error(make_sandbox):
    sandbox = make_sandbox(shim=str(SHIMS / "garbage_at_start.lua"), backoff=BackoffPolicy(initial_s=60))
    with pytest.raises(SandboxCrashed, match="protocol error"):
        sandbox.start()


# ---------------------------------------------------------------------------------------- restart


def test_crashed_process_is_restarted_and_scripts_reloaded(make_sandbox, recorder):
    sandbox = make_sandbox(COUNTER + "\nfunction Initialize() rpc('Echo', 'init') end", initialize="Initialize")
    sandbox.start()
    first_pid = sandbox.status()["pid"]
    assert [sandbox.call("Inc", []).value for _ in range(3)] == [1, 2, 3]
    with pytest.raises(SandboxCrashed) as info:
        sandbox.call("Crash", [])
    assert info.value.returncode == 9
    assert sandbox.call("Inc", []).value == 1  # fresh globals: the script ran again
    status = sandbox.status()
    assert status["pid"] != first_pid and status["restarts"] == 1 and status["failures"] == 1
    assert status["last_error"]["text"].startswith("sandbox 'test': process")
    assert sum(1 for b, a, i in recorder.calls if i.function == "Initialize") == 2


def test_supervisor_thread_restarts_without_waiting_for_a_call(make_sandbox):
    sandbox = make_sandbox(COUNTER)
    sandbox.start()
    pid = sandbox.status()["pid"]
    with pytest.raises(SandboxCrashed):
        sandbox.call("Crash", [])
    wait_until(lambda: sandbox.state is State.READY)
    new_pid = sandbox.status()["pid"]
    assert new_pid not in (None, pid) and process_exists(new_pid)


def test_a_process_killed_while_idle_is_restarted_before_the_next_call(make_sandbox):
    sandbox = make_sandbox(COUNTER)
    sandbox.start()
    pid = sandbox.status()["pid"]
    assert sandbox.call("Inc", []).value == 1
    os.kill(pid, signal.SIGKILL)
    # No call comes: the supervisor notices by itself, so the status never shows a dead pid for long.
    wait_until(lambda: sandbox.status()["restarts"] == 1 and sandbox.state is State.READY)
    status = sandbox.status()
    assert status["pid"] != pid and process_exists(status["pid"]) and status["failures"] == 1
    assert "killed by SIGKILL" in status["last_error"]["text"] and "while idle" in status["last_error"]["text"]
    assert sandbox.call("Inc", []).value == 1  # the next call finds a fresh process, no failure of its own
    assert sandbox.status()["failures"] == 1


def test_call_during_backoff_waits_for_a_near_restart(make_sandbox):
    # A backoff long enough to still be running when the next line looks (a thread can be held up on a
    # loaded machine), and a call wait no restart can exhaust: the call is answered, not refused.
    sandbox = make_sandbox(COUNTER, backoff=BackoffPolicy(initial_s=2.0, jitter=0, max_call_wait_s=120))
    sandbox.start()
    with pytest.raises(SandboxCrashed):
        sandbox.call("Crash", [])
    assert sandbox.state is State.BACKOFF
    assert sandbox.call("Inc", []).value == 1  # during the backoff: answered by the restarted process
    assert sandbox.status()["restarts"] == 1 and sandbox.status()["failures"] == 1


def test_call_during_a_long_backoff_is_refused_with_the_retry_time(make_sandbox):
    sandbox = make_sandbox(COUNTER, backoff=BackoffPolicy(initial_s=30, jitter=0, max_call_wait_s=0.2))
    sandbox.start()
    with pytest.raises(SandboxCrashed):
        sandbox.call("Crash", [])
    with pytest.raises(SandboxUnavailable, match="next attempt in") as info:
        sandbox.call("Inc", [])
    # Refused without waiting for the restart: most of the 30 s backoff is still ahead.
    assert info.value.state == "BACKOFF" and 25 < info.value.retry_in_s <= 30
    assert 25 < sandbox.status()["retry_in_s"] <= 30


def test_five_fast_crashes_quarantine_the_sandbox(make_sandbox):
    sandbox = make_sandbox(COUNTER, backoff=BackoffPolicy(cooldown_s=30))
    sandbox.start()
    for _ in range(5):
        with pytest.raises(SandboxCrashed):
            sandbox.call("Crash", [])
    assert sandbox.state is State.QUARANTINED
    with pytest.raises(SandboxUnavailable, match="quarantined") as info:
        sandbox.call("Inc", [])
    assert info.value.state == "QUARANTINED" and 25 < info.value.retry_in_s <= 30
    status = sandbox.status()
    assert status["failures"] == 5 and status["restarts"] == 4 and status["pid"] is None
    assert status["transitions"]["QUARANTINED"] == 1


def test_quarantine_ends_after_cooldown_and_a_relapse_quarantines_at_once(make_sandbox):
    # The counts of transitions, not the state (a 0.4 s cooldown may be over when a held-up thread looks).
    sandbox = make_sandbox(COUNTER, backoff=BackoffPolicy(max_failures=2, base_s=0.01, cooldown_s=0.4))
    sandbox.start()
    for _ in range(2):
        with pytest.raises(SandboxCrashed):
            sandbox.call("Crash", [])
    assert sandbox.status()["transitions"]["QUARANTINED"] == 1
    wait_until(lambda: sandbox.state is State.READY, timeout=60)  # half-open restart
    with pytest.raises(SandboxCrashed):
        sandbox.call("Crash", [])
    assert sandbox.status()["transitions"]["QUARANTINED"] == 2  # one failure was enough


def test_lua_errors_do_not_count_as_failures(make_sandbox):
    sandbox = make_sandbox("function Bad() error('nope') end", backoff=BackoffPolicy(max_failures=2))
    sandbox.start()
    pid = sandbox.status()["pid"]
    for _ in range(5):
        with pytest.raises(LuaError, match="nope"):
            sandbox.call("Bad", [])
    assert sandbox.state is State.READY and sandbox.status()["pid"] == pid
    assert sandbox.status()["failures"] == 0


def test_waiting_callers_move_to_the_new_process(make_sandbox):
    sandbox = make_sandbox(COUNTER + "\nfunction Slow() busy(0.3) exit(1) end")
    sandbox.start()
    crashed = []
    slow = threading.Thread(target=lambda: crashed.append(pytest.raises(SandboxCrashed, sandbox.call, "Slow", [])))
    slow.start()
    time.sleep(0.1)  # Slow holds the process now; the next call queues behind it
    assert sandbox.call("Inc", []).value == 1  # served by the restarted process, not failed
    slow.join()
    assert len(crashed) == 1 and sandbox.status()["failures"] == 1


# ------------------------------------------------------------------------------- execute, status


def test_execute_returns_prints_and_defines_functions(make_sandbox):
    sandbox = make_sandbox("x = 41")
    sandbox.start()
    assert sandbox.execute("print('a') print(x + 1)\nfunction Late() return 'late' end") == ["a", "42"]
    assert "Late" in sandbox.defined_functions()
    assert sandbox.call("Late", []).value == "late"
    with pytest.raises(LuaError, match=r'\[string "line"\]:1:') as info:
        sandbox.execute("print('before') error('boom')")
    assert info.value.prints == ["before"]


def test_status_reports_the_process_and_its_configuration(make_sandbox):
    sandbox = make_sandbox("x = 1", limits=Limits(hard_timeout_s=3))
    assert sandbox.status()["state"] == "STOPPED"
    sandbox.start()
    status = sandbox.status()
    assert status["name"] == "test" and status["role"] == "main" and status["state"] == "READY"
    assert process_exists(status["pid"]) and status["lua"] == "Lua 5.4"
    assert status["limits"]["hard_timeout_s"] == 3 and status["layers"] == ["rlimits"]
    assert status["restarts"] == 0 and status["last_error"] is None and status["uptime_s"] >= 0
    assert status["started_at"].endswith("+00:00")


# ------------------------------------------------------------------------------------------- stop


def test_stop_ends_the_process_and_refuses_later_calls(make_sandbox):
    sandbox = make_sandbox(COUNTER)
    sandbox.start()
    pid = sandbox.status()["pid"]
    sandbox.stop()
    assert sandbox.state is State.STOPPED and not process_exists(pid)
    with pytest.raises(SandboxUnavailable, match="STOPPED"):
        sandbox.call("Inc", [])
    sandbox.start()  # a stopped sandbox can start again
    assert sandbox.call("Inc", []).value == 1


def test_stop_during_a_call_kills_it_promptly(make_sandbox, recorder):
    # Stopped once Spin runs (a fixed sleep could stop it before the call); no deadline can end Spin first.
    spinning = threading.Event()
    recorder.handlers["Started"] = lambda args, info: spinning.set()
    sandbox = make_sandbox("function Spin() rpc('Started') while true do end end",
                           limits=Limits(soft_cpu_s=600, hard_timeout_s=600))
    sandbox.start()
    errors = []

    def spin():
        try:
            sandbox.call("Spin", [])
        except SandboxError as exc:
            errors.append(exc)
    thread = threading.Thread(target=spin)
    thread.start()
    assert spinning.wait(60)
    sandbox.stop()
    thread.join(60)
    assert not thread.is_alive(), "the call outlived the stop"
    assert len(errors) == 1 and isinstance(errors[0], SandboxCrashed), errors
    assert sandbox.state is State.STOPPED
    assert sandbox.status()["failures"] == 0  # stopping is not a failure
