"""The budget of a call (``sandbox.budget``) and the memory cap at every call, on the product's shim.

Review findings: a call that spends its time in built-ins had no wall-clock limit (45 slow ``HttpPost``
held a call for 45 s on 0.02 s of CPU), nothing bounded the total of built-in and nested calls, and
a short call could keep 763 MB in a global because the heap was checked only by the count hook.
"""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from sandbox import CallBounds, LuaError, SandboxError, State
from tests.security.security_helpers import LIMITS

#: One second of wall-clock time per call; the CPU and hard deadlines stay those of LIMITS.
TIGHT = replace(LIMITS, hard_timeout_s=1.0, bounds=CallBounds(wall_s=1.0))


def slow(seconds: float):
    """A built-in that keeps the broker busy, as an HTTP request to a slow host does."""
    def handler(args: list) -> str:
        time.sleep(seconds)
        return "done"
    return handler


def test_time_spent_in_builtins_counts_against_the_wall_clock_limit(make_sandbox, rpc):
    rpc.handlers["HttpGet"] = slow(0.2)
    sandbox = make_sandbox("""
        calls = 0
        function Spend()
          for i = 1, 45 do calls = calls + 1; HttpGet() end
          return 'finished'
        end
        function Calls() return calls end
    """, limits=TIGHT)
    with pytest.raises(LuaError, match=r"wall-clock limit exceeded \(1 s"):
        sandbox.call("Spend", [])
    made = sandbox.call("Calls", []).value
    assert 1 <= made < 45, "the call went on after its wall-clock time"
    assert sandbox.state is State.READY and sandbox.status()["restarts"] == 0, "a soft stop keeps the process"


def test_pcall_does_not_catch_the_stop(make_sandbox, rpc):
    rpc.handlers["HttpGet"] = slow(0.2)
    sandbox = make_sandbox("""
        function Stubborn()
          local caught = 0
          for i = 1, 45 do
            local ok = pcall(HttpGet)
            if not ok then caught = caught + 1 end
          end
          return caught
        end
    """, limits=TIGHT)
    with pytest.raises(LuaError, match="wall-clock limit exceeded"):
        sandbox.call("Stubborn", [])


def test_the_number_of_builtin_calls_of_one_call_is_capped(make_sandbox, rpc):
    limits = replace(LIMITS, bounds=CallBounds(max_builtin_calls=50))
    sandbox = make_sandbox("""
        function Chatty(n) for i = 1, n do RestApiGet(i) end return n end
    """, limits=limits)
    assert sandbox.call("Chatty", [50]).value == 50
    with pytest.raises(LuaError, match=r"too many built-in calls \(more than 50 in one call\)"):
        sandbox.call("Chatty", [51])
    assert sandbox.call("Chatty", [50]).value == 50, "the count is per top-level call"


def test_nested_calls_share_the_top_level_budget(make_sandbox, rpc):
    """A built-in that calls back into the sandbox (RestApiPost('/tools/execute-script') at every
    level): the fan-out stops at the cap on nested calls, not at 2 ** depth."""
    limits = replace(LIMITS, bounds=CallBounds(max_nested_calls=20))
    sandbox = make_sandbox("""
        entered = 0
        function Fan(depth)
          entered = entered + 1
          if depth < 30 then RestApiPost(depth + 1); RestApiPost(depth + 1) end
          return depth
        end
        function Entered() return entered end
    """, limits=limits)
    refused: list[str] = []

    def spawn(args: list) -> None:
        try:
            sandbox.call("Fan", [args[0]])
        except SandboxError as exc:  # what RestApiPost turns into nil
            refused.append(str(exc))
        except LuaError:
            pass
    rpc.handlers["RestApiPost"] = spawn
    with pytest.raises(LuaError, match="too many nested calls"):
        sandbox.call("Fan", [0])
    assert sandbox.call("Entered", []).value <= 21
    assert refused and all("too many nested calls (more than 20 in one call)" in text for text in refused)


# -------------------------------------------------------------------------------------- memory

KEEP_IN_GLOBAL = """
    function Keep(mb) kept = string.rep('x', mb * 1024 * 1024) return #kept end
    function Drop() kept = nil return true end
    function Alive() return 'yes' end
"""


def test_a_short_call_cannot_keep_more_than_the_memory_cap_in_a_global(make_sandbox):
    sandbox = make_sandbox(KEEP_IN_GLOBAL)  # the cap of LIMITS is 64 MiB
    assert sandbox.call("Keep", [8]).value == 8 * 1024 * 1024
    pid = sandbox.status()["pid"]
    with pytest.raises(LuaError, match=r"memory limit exceeded \(65536 KiB\): the scripts keep"):
        sandbox.call("Keep", [80])  # one allocation: the count hook never sees it
    # The process is restarted cleanly, and says why.
    status = sandbox.status()
    assert status["failures"] == 1
    assert "the scripts keep" in status["last_error"]["text"]
    assert sandbox.call("Alive", []).value == "yes"
    assert sandbox.status()["pid"] != pid


def test_garbage_of_a_call_does_not_count_against_the_cap(make_sandbox):
    sandbox = make_sandbox("function Churn() local t = string.rep('x', 80 * 1024 * 1024) return #t end")
    assert sandbox.call("Churn", []).value == 80 * 1024 * 1024
    assert sandbox.status()["failures"] == 0


def test_a_builtin_call_over_the_memory_cap_is_refused_before_it_runs(make_sandbox, rpc):
    seen: list[list] = []
    rpc.handlers["RestApiPut"] = lambda args: seen.append(args)
    sandbox = make_sandbox("""
        function Hoard()
          local big = string.rep('y', 80 * 1024 * 1024)
          local ok, err = pcall(RestApiPut, #big)
          return 'went on after ' .. tostring(err)
        end
    """)
    with pytest.raises(LuaError, match=r"memory limit exceeded \(65536 KiB\)"):
        sandbox.call("Hoard", [])
    assert seen == []
