"""The child process as the kernel sees it: environment, cwd, descriptors, rlimits, process group."""
from __future__ import annotations

import os
import resource
import tempfile

import pytest

from sandbox import Limits, LuaError, SandboxCrashed, SandboxError
from sandbox.layers import RlimitLayer
from sandbox.process import STDERR_TAIL_BYTES, ChildProcess, SpawnSpec, find_interpreter
from tests.support.sandboxes import FAKE_SHIM, SHIMS, process_exists, sandbox_workdirs
from tests.support.waiting import wait_until


def read_limits(pid: int) -> dict[str, tuple[str, str]]:
    limits = {}
    with open(f"/proc/{pid}/limits") as f:
        next(f)
        for line in f:
            name = line[:26].strip()
            soft, hard = line[26:].split()[:2]
            limits[name] = (soft, hard)
    return limits


def test_child_has_clean_env_empty_cwd_and_rlimits(make_sandbox):
    sandbox = make_sandbox("x = 1", limits=Limits(address_space_mb=512, open_files=24, cpu_lifetime_s=3600))
    sandbox.start()
    pid = sandbox.status()["pid"]

    with open(f"/proc/{pid}/environ", "rb") as f:
        assert f.read() == b""
    cwd = os.readlink(f"/proc/{pid}/cwd")
    assert os.path.basename(cwd).startswith("luabroker-sandbox-")
    assert os.listdir(cwd) == []
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid

    limits = read_limits(pid)
    assert limits["Max address space"] == (str(512 << 20), str(512 << 20))
    assert limits["Max open files"] == ("24", "24")
    assert limits["Max file size"] == ("0", "0")
    assert limits["Max core file size"] == ("0", "0")
    assert limits["Max cpu time"] == ("3600", "3605")
    assert sandbox.status()["layers"] == ["rlimits"]

    sandbox.stop()
    assert not os.path.exists(cwd)
    assert not process_exists(pid)


def test_argv_is_interpreter_dash_E_shim_and_limit_flags(make_sandbox):
    sandbox = make_sandbox("function Flags() return shim_flags() end",
                           limits=Limits(memory_kb=4096, max_log_lines=7, soft_cpu_s=2.5))
    sandbox.start()
    pid = sandbox.status()["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")[:-1]
    assert argv == [find_interpreter().encode(), b"-E", FAKE_SHIM.encode(), b"--memory-kb=4096",
                    b"--max-log-lines=7", b"--cpu=2.5", b"--max-frame=%d" % (64 << 20)]
    assert sandbox.call("Flags", []).value == {"memory-kb": "4096", "max-log-lines": "7", "cpu": "2.5",
                                               "max-frame": str(64 << 20)}


def test_address_space_limit_turns_a_huge_allocation_into_a_lua_error(make_sandbox):
    sandbox = make_sandbox("function Grow() return #string.rep('x', 300 * 1024 * 1024) end\n"
                           "function Ok() return 'still here' end",
                           limits=Limits(address_space_mb=64))
    sandbox.start()
    pid = sandbox.status()["pid"]
    with pytest.raises(LuaError, match="not enough memory"):
        sandbox.call("Grow", [])
    assert sandbox.call("Ok", []).value == "still here"
    assert sandbox.status()["pid"] == pid


def test_kill_takes_down_the_whole_process_group(make_sandbox):
    sandbox = make_sandbox(
        "function Spawn() local p = io.popen('echo $$; exec /bin/sleep 30') return tonumber(p:read('l')) end")
    sandbox.start()
    grandchild = sandbox.call("Spawn", []).value
    assert process_exists(grandchild)
    assert os.getpgid(grandchild) == sandbox.status()["pid"]
    sandbox.stop()
    wait_until(lambda: not process_exists(grandchild), timeout=3)


def test_grandchildren_die_with_a_child_that_exits_by_itself(make_sandbox):
    sandbox = make_sandbox(
        "function Spawn() local p = io.popen('echo $$; exec /bin/sleep 30') return tonumber(p:read('l')) end\n"
        "function Die() exit(5) end")
    sandbox.start()
    grandchild = sandbox.call("Spawn", []).value
    with pytest.raises(SandboxCrashed):
        sandbox.call("Die", [])
    wait_until(lambda: not process_exists(grandchild), timeout=3)


def test_stderr_is_kept_as_a_capped_tail(make_sandbox):
    sandbox = make_sandbox("function Noisy() io.stderr:write(string.rep('a', 100000) .. 'THE END') exit(1) end")
    sandbox.start()
    with pytest.raises(SandboxCrashed) as info:
        sandbox.call("Noisy", [])
    assert info.value.stderr_tail.endswith("THE END")
    assert len(info.value.stderr_tail) == STDERR_TAIL_BYTES
    assert "THE END" in str(info.value)


def test_no_working_directory_is_left_behind(make_sandbox, tmp_path, monkeypatch):
    # A temporary directory of this test's own: other sandboxes on the machine (parallel test runs)
    # create and remove theirs in the shared /tmp meanwhile.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    before = sandbox_workdirs()
    sandbox = make_sandbox("function Die() exit(1) end")
    sandbox.start()
    with pytest.raises(SandboxCrashed):
        sandbox.call("Die", [])
    sandbox.stop()
    assert sandbox_workdirs() - before == set()


def test_rlimit_layer_adds_one_after_spawn_step_and_no_preexec():
    layer = RlimitLayer(Limits(open_files=32, address_space_mb=256, cpu_lifetime_s=100))
    spec = layer.apply(SpawnSpec(argv=("x",), cwd="/"))
    assert len(spec.after_spawn) == 1 and spec.preexec == () and spec.argv == ("x",) and layer.name == "rlimits"
    wanted = layer.rlimits()
    assert wanted[resource.RLIMIT_NOFILE] == (32, 32)
    assert wanted[resource.RLIMIT_AS] == (256 << 20, 256 << 20)
    assert wanted[resource.RLIMIT_CPU] == (100, 105)
    assert wanted[resource.RLIMIT_FSIZE] == wanted[resource.RLIMIT_CORE] == (0, 0)


def test_spawn_applies_layers_in_order_and_reports_them():
    class Tag:
        def __init__(self, name):
            self.name = name

        def apply(self, spec):
            from dataclasses import replace
            return replace(spec, argv=("/usr/bin/env", f"TAG={self.name}", *spec.argv))

    child = ChildProcess.spawn(find_interpreter(), str(SHIMS / "echo.lua"), [], [Tag("outer"), Tag("inner")])
    try:
        assert child.layers == ("outer", "inner")
        assert child.argv[:3] == ("/usr/bin/env", "TAG=inner", "/usr/bin/env")
    finally:
        child.kill()
        child.release_pipes()


def test_find_interpreter_resolves_to_an_absolute_path_and_fails_clearly():
    assert find_interpreter("lua5.4") == "/usr/bin/lua5.4"
    assert os.path.isabs(find_interpreter())
    with pytest.raises(SandboxError, match="no Lua interpreter found: no-such-lua"):
        find_interpreter("no-such-lua")
