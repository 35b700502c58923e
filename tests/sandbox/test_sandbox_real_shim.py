"""The same Sandbox against the product's shim (lua-runtime/shim.lua): the contract of messages.py end to end.

Skipped until the shim exists. These tests assume only what messages.py documents plus the shim's
stated duties (soft CPU limit, memory cap, print as log frames, script environment without ``io``).
"""
from __future__ import annotations

import os
import signal
import threading

import pytest

from sandbox import BuiltinError, Limits, LuaError, SandboxCrashed, SandboxTimeout, ScriptLoadError
from sandbox.process import DEFAULT_SHIM
from sandbox.states import State


@pytest.fixture
def real(make_sandbox):
    def make(*scripts, **kwargs):
        sandbox = make_sandbox(*scripts, shim=str(DEFAULT_SHIM), **kwargs)
        sandbox.start()
        return sandbox
    return make


def test_real_shim_says_ready_and_declares_builtins(real):
    sandbox = real("function Hello(name) return 'hello ' .. name end")
    assert sandbox.state is State.READY
    assert "5.4" in str(sandbox.status()["lua"]) or "5.3" in str(sandbox.status()["lua"])
    assert sandbox.builtin_names(), "the ready frame lists no built-ins"
    assert "Hello" in sandbox.defined_functions()
    assert sandbox.call("Hello", ["world"]).value == "hello world"
    assert sandbox.call("NotDefinedAnywhere", []).defined is False


def test_real_shim_captures_prints(real):
    sandbox = real("function Talk() print('a', 1) print('b') return true end")
    assert sandbox.call("Talk", []).prints == ["a, 1", "b"]  # Orthanc joins print arguments with ", "


def test_real_shim_lua_error_keeps_the_process(real):
    sandbox = real("function Bad() error('nope') end\nfunction Ok() return 1 end")
    pid = sandbox.status()["pid"]
    with pytest.raises(LuaError, match="nope"):
        sandbox.call("Bad", [])
    assert sandbox.call("Ok", []).value == 1 and sandbox.status()["pid"] == pid


def test_real_shim_soft_cpu_limit_is_a_lua_error_that_pcall_cannot_hide(real):
    sandbox = real("function Spin() while true do end end\n"
                   "function Hide() local ok = pcall(function() while true do end end) while true do end end\n"
                   "function Ok() return 1 end", limits=Limits(soft_cpu_s=0.2, hard_timeout_s=120))
    pid = sandbox.status()["pid"]
    for function in ("Spin", "Hide"):
        with pytest.raises(LuaError, match=r"cpu time limit exceeded \(0\.2 s\)"):
            sandbox.call(function, [])
    assert sandbox.call("Ok", []).value == 1 and sandbox.status()["pid"] == pid


def test_real_shim_memory_cap_is_a_lua_error(real):
    sandbox = real("function Grow() local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 64) .. i end end\n"
                   "function Ok() return 1 end",
                   limits=Limits(memory_kb=32 * 1024, soft_cpu_s=60, hard_timeout_s=120))
    pid = sandbox.status()["pid"]
    with pytest.raises(LuaError, match=r"memory limit exceeded"):
        sandbox.call("Grow", [])
    assert sandbox.call("Ok", []).value == 1 and sandbox.status()["pid"] == pid


def test_real_shim_script_environment_has_no_io_or_os_execute(real):
    sandbox = real("function Probe() return {type(io), os and type(os.execute) or 'nil', type(debug)} end")
    assert sandbox.call("Probe", []).value == ["nil", "nil", "nil"]


def test_real_shim_script_load_error_names_file_and_line(make_sandbox):
    sandbox = make_sandbox(("/etc/orthanc/filter.lua", "x = 1\nlocal = 2\n"), shim=str(DEFAULT_SHIM))
    with pytest.raises(ScriptLoadError, match=r"/etc/orthanc/filter\.lua:2:"):
        sandbox.start()


def test_real_shim_execute_returns_prints(real):
    sandbox = real("x = 41")
    assert sandbox.execute("print(x + 1)") == ["42"]


def test_real_shim_builtin_error_reaches_the_script(real, recorder):
    sandbox = real("function Probe(name) local ok, err = pcall(_G[name], '/x') return {ok, tostring(err)} end")
    name = sorted(sandbox.builtin_names())[0]

    def fail(args, info):
        raise BuiltinError("refused by the broker")
    recorder.handlers[name] = fail
    ok, err = sandbox.call("Probe", [name]).value
    assert ok is False and "refused by the broker" in err
    assert recorder.calls and recorder.calls[-1][0] == name


def test_real_shim_top_level_loop_hits_the_soft_limit_at_load(make_sandbox):
    sandbox = make_sandbox(("loops.lua", "x = 1\nwhile true do end\n"), shim=str(DEFAULT_SHIM),
                           limits=Limits(soft_cpu_s=0.2, hard_timeout_s=120))
    # The shim's --cpu budget, not the broker's hard deadline.
    with pytest.raises(ScriptLoadError, match=r"loops\.lua.*cpu time limit exceeded \(0\.2 s\)"):
        sandbox.start()


def test_real_shim_nested_call_through_a_builtin(real, recorder):
    sandbox = real("function Outer() return 'outer:' .. tostring(RestApiPost('/tools/x', 'body')) end\n"
                   "function Inner(x) print('inner') return 'inner:' .. x end")
    nested = []

    def post(args, info):
        result = sandbox.call("Inner", [args[0]])
        nested.append((info.depth, result.prints))
        return result.value
    recorder.handlers["RestApiPost"] = post
    value = sandbox.call("Outer", []).value
    assert value.startswith("outer:") and "inner:/tools/x" in value
    assert nested == [(1, ["inner"])]
    assert recorder.calls[0][1][:2] == ["/tools/x", "body"]


def test_real_shim_hard_deadline_kills_then_restart_reloads_and_initializes(make_sandbox, recorder):
    sandbox = make_sandbox("count = 0\nfunction Initialize() count = 100 end\n"
                           "function Spin() while true do end end\nfunction Inc() count = count + 1 return count end",
                           shim=str(DEFAULT_SHIM), initialize="Initialize",
                           limits=Limits(soft_cpu_s=30, hard_timeout_s=0.4))
    sandbox.start()
    assert sandbox.call("Inc", []).value == 101
    with pytest.raises(SandboxTimeout):
        sandbox.call("Spin", [])
    assert sandbox.call("Inc", []).value == 101
    assert sandbox.status()["restarts"] == 1


def test_real_shim_killed_mid_call_is_restarted(real, recorder):
    # Killed once Spin runs (a fixed delay could land before the call); no deadline can end Spin first.
    spinning = threading.Event()
    recorder.handlers["RestApiPost"] = lambda args, info: spinning.set()
    sandbox = real("function Spin() RestApiPost('/spinning', '') while true do end end\n"
                   "function Ok() return 'ok' end", limits=Limits(soft_cpu_s=600, hard_timeout_s=600))
    pid = sandbox.status()["pid"]
    killer = threading.Thread(target=lambda: spinning.wait(60) and os.kill(pid, signal.SIGKILL))
    killer.start()
    try:
        with pytest.raises(SandboxCrashed, match="SIGKILL"):
            sandbox.call("Spin", [])
    finally:
        spinning.set()
        killer.join()
    assert sandbox.call("Ok", []).value == "ok" and sandbox.status()["pid"] != pid


def test_real_shim_child_env_is_clean(real):
    sandbox = real("x = 1")
    pid = sandbox.status()["pid"]
    with open(f"/proc/{pid}/environ", "rb") as f:
        # bubblewrap sets PWD after --clearenv; nothing else gets through.
        assert f.read() in (b"", b"PWD=/\0")
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]


def test_real_shim_functions_defined_by_initialize_and_callbacks_are_known(real):
    sandbox = real("function Initialize() function OnStableStudy() end end\n"
                   "function Enable() function OnStoredInstance() return 'stored' end end")
    assert sandbox.defined_functions() == {"Initialize", "Enable"}  # no initialize configured here
    sandbox.call("Initialize", [])
    assert "OnStableStudy" in sandbox.defined_functions()
    assert "OnStoredInstance" not in sandbox.defined_functions()
    sandbox.call("Enable", [])
    assert "OnStoredInstance" in sandbox.defined_functions()
    assert sandbox.call("OnStoredInstance", []).value == "stored"


def test_real_shim_initialize_defining_functions_is_seen_at_ready(make_sandbox):
    sandbox = make_sandbox("function Initialize() function Late() return 'late' end end", shim=str(DEFAULT_SHIM),
                           initialize="Initialize")
    sandbox.start()
    assert sandbox.defined_functions() == {"Initialize", "Late"}
