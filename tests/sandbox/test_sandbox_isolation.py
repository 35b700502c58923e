"""The OS layers: how they are chosen, probed, reported and applied (sandbox/isolation.py, layers.py).

The host decides what is available; tests that need a layer skip with the probe's reason when it is
not, and tests of the decision logic replace a probe with a stub.
"""
from __future__ import annotations

import logging
import os
import signal
from dataclasses import replace

import pytest

from sandbox import Isolation, IsolationError, Limits, SandboxError, State, isolation
from sandbox.layers import (
    BubblewrapLayer,
    LandlockLayer,
    Probe,
    RlimitLayer,
    SeccompLayer,
    UnshareLayer,
    UserLayer,
    can_prlimit,
    ordered,
    probe_rlimits,
    resolve_user,
)
from sandbox.process import DEFAULT_SHIM, ChildProcess, SpawnSpec, find_interpreter
from sandbox.runtime import readable_shim
from tests.support.sandboxes import process_exists
from tests.support.waiting import wait_until

# What the children read: a staged copy when this checkout is closed to the sandbox uid (CI clones
# under /root), as the isolation plan does.
SHIM = readable_shim(str(DEFAULT_SHIM))
LIMITS = Limits(address_space_mb=512, open_files=24, cpu_lifetime_s=3600)


@pytest.fixture(autouse=True)
def fresh_probes():
    isolation.clear_cache()
    yield
    isolation.clear_cache()


def plan(iso: Isolation, trusted: bool = False, shim: str = SHIM) -> isolation.IsolationPlan:
    return isolation.plan(iso, limits=LIMITS, interpreter=find_interpreter(), shim=shim, trusted=trusted)


def limits_of(pid: int) -> dict[str, tuple[str, str]]:
    with open(f"/proc/{pid}/limits") as f:
        next(f)
        return {line[:26].strip(): tuple(line[26:].split()[:2]) for line in f}


def status_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def report_of(p: isolation.IsolationPlan) -> dict[str, isolation.LayerReport]:
    return {r.layer: r for r in p.report}


# ------------------------------------------------------------------------------------ the plan


def test_the_report_covers_every_layer_and_active_ones_are_applied_in_order():
    p = plan(Isolation())
    assert set(report_of(p)) == {"rlimits", "user", "bubblewrap", "seccomp", "landlock", "unshare"}
    assert [r.layer for r in p.report if r.active] == [name for name in
                                                        ("rlimits", "user", "bubblewrap", "seccomp", "landlock",
                                                         "unshare") if name in p.active]
    assert p.active == [layer.name for layer in ordered(p.layers)]
    assert p.active[0] == "rlimits"
    for r in p.report:
        assert r.detail, r


def test_none_means_rlimits_only():
    p = plan(Isolation.none())
    assert p.active == ["rlimits"]
    assert all(r.mode == "off" for r in p.report if r.layer != "rlimits")


def test_off_is_explicit_and_says_so():
    r = report_of(plan(Isolation(seccomp="off")))["seccomp"]
    assert not r.active and r.mode == "off" and "turned off" in r.detail


def test_a_required_layer_that_is_unavailable_refuses_to_start(monkeypatch, make_sandbox):
    monkeypatch.setattr(isolation, "probe_bubblewrap", lambda: (Probe(False, "bwrap is not installed (test)"), None))
    with pytest.raises(IsolationError, match=r"bubblewrap is 'required' but unavailable here: bwrap is not "
                                             r"installed \(test\)"):
        plan(Isolation(bubblewrap="required"))
    sandbox = make_sandbox("x = 1", shim=SHIM, isolation=Isolation(bubblewrap="required"))
    with pytest.raises(IsolationError):
        sandbox.start()
    assert sandbox.state is State.FATAL
    assert "required" in sandbox.status()["last_error"]["text"]


def test_without_bubblewrap_the_fallbacks_take_over(monkeypatch):
    monkeypatch.setattr(isolation, "probe_bubblewrap", lambda: (Probe(False, "no namespaces here (test)"), None))
    p = plan(Isolation())
    report = report_of(p)
    assert not report["bubblewrap"].active and "no namespaces here" in report["bubblewrap"].detail
    for name in ("landlock", "unshare", "seccomp"):
        if not report[name].active:
            pytest.skip(f"{name} unavailable here: {report[name].detail}")
    assert isinstance(next(layer for layer in p.layers if layer.name == "seccomp"), SeccompLayer)
    assert not next(layer for layer in p.layers if layer.name == "seccomp").via_bubblewrap


def test_trusted_mode_keeps_rlimits_user_and_a_reduced_seccomp_only():
    p = plan(Isolation(), trusted=True)
    report = report_of(p)
    for name in ("bubblewrap", "landlock", "unshare"):
        assert not report[name].active and report[name].detail == "off for trusted scripts"
    rlimits = next(layer for layer in p.layers if layer.name == "rlimits")
    assert rlimits.file_size_bytes == 1024 * 1024 * 1024
    if report["seccomp"].active:
        assert "trusted profile" in report["seccomp"].detail


@pytest.mark.parametrize("layer", ["Bubblewrap", "Landlock", "Unshare"])
def test_trusted_scripts_cannot_require_a_file_system_layer(layer):
    with pytest.raises(IsolationError, match=f"{layer} is 'required'"):
        plan(Isolation(**{layer.lower(): "required"}), trusted=True)


def test_the_plan_is_probed_once_per_configuration(monkeypatch):
    first = plan(Isolation())
    monkeypatch.setattr(isolation, "trial", lambda *a, **k: pytest.fail("probed twice"))
    assert plan(Isolation()) is first


def test_isolation_rejects_unknown_modes():
    with pytest.raises(ValueError, match="bubblewrap"):
        Isolation(bubblewrap="yes")


# ------------------------------------------------------------------------------ rlimits, ordering


def test_prlimit_after_spawn_is_in_place_before_spawn_returns():
    """The ordering the design relies on: limits are set before ``spawn`` returns, so before the channel
    can send the first frame (and the shim runs no script before it)."""
    layer = RlimitLayer(LIMITS, via_command=False)
    child = ChildProcess.spawn(find_interpreter(), SHIM, [], [layer])
    try:
        limits = limits_of(child.interpreter_pid)
        assert limits["Max address space"] == (str(512 << 20),) * 2
        assert limits["Max open files"] == ("24", "24")
        assert limits["Max file size"] == ("0", "0") and limits["Max core file size"] == ("0", "0")
        assert limits["Max cpu time"] == ("3600", "3605")
    finally:
        child.kill()
        child.release_pipes()


def test_prlimit_command_sets_the_limits_before_the_interpreter_starts():
    layer = RlimitLayer(LIMITS, processes=0, via_command=True)
    spec = layer.apply(SpawnSpec(argv=("lua", "-E", "shim.lua"), cwd="/"))
    assert spec.argv[0].endswith("prlimit") and spec.argv[-4:] == ("--", "lua", "-E", "shim.lua")
    assert "--nproc=0:0" in spec.argv and "--fsize=0:0" in spec.argv and spec.preexec == ()
    child = ChildProcess.spawn(find_interpreter(), SHIM, [], [layer])

    def program() -> bytes:
        with open(f"/proc/{child.interpreter_pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0]
    try:
        wait_until(lambda: program() == find_interpreter().encode())  # prlimit exec'd the interpreter
        assert limits_of(child.interpreter_pid)["Max address space"] == (str(512 << 20),) * 2
    finally:
        child.kill()
        child.release_pipes()


@pytest.mark.parametrize("via_command", [False, True])
def test_a_nice_sandbox_runs_with_that_niceness_whichever_way_its_limits_are_set(via_command):
    """``LuaSandbox.Nice`` (a tenant's CPU share): coreutils' nice execs the interpreter, which then
    runs with the niceness, its limits set as usual."""
    layer = RlimitLayer(replace(LIMITS, nice=7), via_command=via_command)
    assert "nice 7" in layer.describe()
    child = ChildProcess.spawn(find_interpreter(), SHIM, [], [layer])

    def program() -> bytes:
        with open(f"/proc/{child.interpreter_pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0]
    try:
        wait_until(lambda: program() == find_interpreter().encode())  # nice (and prlimit) exec'd it
        assert os.getpriority(os.PRIO_PROCESS, child.interpreter_pid) == 7
        assert limits_of(child.interpreter_pid)["Max address space"] == (str(512 << 20),) * 2
    finally:
        child.kill()
        child.release_pipes()


def test_prlimit_is_used_when_allowed_and_the_command_otherwise():
    assert can_prlimit(None) and can_prlimit(os.getuid())
    probe, via_command = probe_rlimits(None)
    assert probe.available and via_command is False
    probe, via_command = probe_rlimits(65534)
    assert probe.available and via_command == (not can_prlimit(65534))


def test_no_step_runs_between_fork_and_exec_under_bubblewrap():
    p = plan(Isolation())
    if "bubblewrap" not in p.active:
        pytest.skip(report_of(p)["bubblewrap"].detail)
    spec = SpawnSpec(argv=("lua",), cwd="/")
    for layer in p.layers:
        spec = layer.apply(spec)
    try:
        assert spec.preexec == () and spec.wrapper == "bubblewrap" and spec.pending_seccomp is None
    finally:
        for fd in spec.pass_fds + spec.parent_fds:
            os.close(fd)


def test_a_planned_seccomp_filter_without_bubblewrap_refuses_to_spawn():
    layer = SeccompLayer(b"\0" * 8, via_bubblewrap=True)
    with pytest.raises(SandboxError, match="no layer installs it"):
        ChildProcess.spawn(find_interpreter(), SHIM, [], [layer])


# ------------------------------------------------------------------------------ each layer alone


def layer_or_skip(name: str, iso: Isolation = Isolation()):
    p = plan(iso)
    r = report_of(p)[name]
    if not r.active:
        pytest.skip(f"{name}: {r.detail}")
    return p


def test_user_layer_runs_the_child_as_the_dedicated_uid():
    p = layer_or_skip("user")
    user = next(layer for layer in p.layers if isinstance(layer, UserLayer))
    assert (user.uid, user.gid) == resolve_user("nobody", None)
    child = ChildProcess.spawn(find_interpreter(), SHIM, [], [user])
    try:
        status = status_of(child.pid)
        assert status["Uid"].split() == [str(user.uid)] * 4 and status["Groups"].strip() == ""
    finally:
        child.kill()
        child.release_pipes()


def test_resolve_user_refuses_root_and_unknown_names():
    with pytest.raises(SandboxError, match="must not be root"):
        resolve_user(0, None)
    with pytest.raises(SandboxError, match="unknown user"):
        resolve_user("no-such-user-here", None)
    assert resolve_user(65534, 65534) == (65534, 65534)


def test_bubblewrap_child_is_the_interpreter_and_dies_with_the_wrapper():
    p = layer_or_skip("bubblewrap")
    child = ChildProcess.spawn(find_interpreter(), SHIM, [], p.layers)
    try:
        assert child.wrapper == "bubblewrap" and child.interpreter_pid != child.pid

        def program() -> bytes:
            with open(f"/proc/{child.interpreter_pid}/cmdline", "rb") as f:
                return f.read().split(b"\0")[0]
        wait_until(lambda: program() == find_interpreter().encode())
        assert status_of(child.interpreter_pid)["NSpid"].split()[-1] == "2"  # pid 2 under bwrap's init
        for kind in ("net", "mnt", "pid", "user", "ipc", "uts", "cgroup"):
            assert os.readlink(f"/proc/{child.interpreter_pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
        interpreter = child.interpreter_pid
    finally:
        child.kill()
        child.release_pipes()
    wait_until(lambda: not process_exists(interpreter), timeout=3)


def test_bubblewrap_reports_a_signal_death_by_name():
    p = layer_or_skip("bubblewrap")
    child = ChildProcess.spawn(find_interpreter(), SHIM, [], p.layers)
    try:
        os.kill(child.interpreter_pid, signal.SIGSEGV)
        assert child.wait(5) == 128 + signal.SIGSEGV
        assert child.describe_exit() == "was killed by SIGSEGV (exit status 139 from bubblewrap)"
    finally:
        child.kill()
        child.release_pipes()


def test_bubblewrap_arguments_have_no_writable_mount():
    p = layer_or_skip("bubblewrap")
    layer = next(layer for layer in p.layers if isinstance(layer, BubblewrapLayer))
    args = layer.arguments()
    for required in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--clearenv"):
        assert required in args
    assert args[args.index("--cap-drop") + 1] == "ALL"
    assert "--bind" not in args and "--tmpfs" not in args and "--dev-bind" not in args
    assert ["--remount-ro", "/"] == args[args.index("--remount-ro"):args.index("--remount-ro") + 2]


def test_landlock_and_unshare_without_bubblewrap():
    p = plan(Isolation(bubblewrap="off"))
    report = report_of(p)
    for name in ("landlock", "unshare"):
        if not report[name].active:
            pytest.skip(f"{name}: {report[name].detail}")
    assert any(isinstance(layer, LandlockLayer) for layer in p.layers)
    assert any(isinstance(layer, UnshareLayer) for layer in p.layers)
    child = ChildProcess.spawn(find_interpreter(), SHIM, [], p.layers)
    try:
        assert os.readlink(f"/proc/{child.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert status_of(child.pid)["Seccomp"] == ("2" if "seccomp" in p.active else "0")
    finally:
        child.kill()
        child.release_pipes()


# ---------------------------------------------------------------------------- the Sandbox's view


def test_sandbox_logs_the_active_layers_at_start_and_lists_them_in_status(make_sandbox, caplog):
    caplog.set_level(logging.INFO, logger="sandbox.supervisor")
    sandbox = make_sandbox("x = 1", shim=SHIM, isolation=Isolation())
    assert sandbox.status()["layers"] == []
    sandbox.start()
    status = sandbox.status()
    assert status["layers"] == sandbox.layers and status["layers"][0] == "rlimits"
    assert {entry["layer"] for entry in status["isolation"]} >= {"rlimits", "bubblewrap", "seccomp"}
    lines = [r.getMessage() for r in caplog.records if "isolation active:" in r.getMessage()]
    assert len(lines) == 1 and all(name in lines[0] for name in status["layers"])
    if "bubblewrap" in status["layers"]:
        assert status["wrapper_pid"] and status["wrapper_pid"] != status["pid"]


def test_trusted_sandbox_warns_loudly_and_gets_a_writable_directory(make_sandbox, caplog, tmp_path):
    sandbox = make_sandbox(("legacy.lua", "function Write(path) local f = assert(io.open(path, 'w')) "
                                          "f:write('data') f:close() return io.open(path):read('a') end\n"
                                          "function Here() return os.getenv('HOME') end\n"
                                          "function Shell() return io.popen('echo shell ok'):read('l') end"),
                           shim=SHIM, isolation=Isolation(), trusted=("legacy.lua",))
    sandbox.start()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "TRUSTED" in r.getMessage()]
    assert len(warnings) == 1 and "legacy.lua" in warnings[0] and "io.popen" in warnings[0]
    assert sandbox.status()["trusted"] == ["legacy.lua"]
    assert "bubblewrap" not in sandbox.status()["layers"]
    home = sandbox.call("Here", [])
    assert home.value and os.path.basename(home.value).startswith("luabroker-sandbox-")
    assert sandbox.call("Write", [home.value + "/out.txt"]).value == "data"
    assert sandbox.call("Shell", []).value == "shell ok"
    pid = sandbox.status()["pid"]
    assert limits_of(pid)["Max file size"] == (str(1024 << 20),) * 2


def test_trusted_must_be_a_tuple_of_paths():
    from sandbox import SandboxConfig
    with pytest.raises(ValueError, match="tuple of script paths"):
        SandboxConfig(name="x", role="main", trusted=True)  # type: ignore[arg-type]


def test_a_child_started_from_a_short_lived_thread_outlives_it():
    """bubblewrap's --die-with-parent is PR_SET_PDEATHSIG, tied to the forking *thread*: every spawn
    goes through one long-lived thread, so a sandbox started by an HTTP worker or a supervisor thread
    does not die with that thread."""
    import threading
    import time

    p = layer_or_skip("bubblewrap")
    children = []
    starter = threading.Thread(target=lambda: children.append(ChildProcess.spawn(find_interpreter(), SHIM, [],
                                                                                 p.layers)))
    starter.start()
    starter.join()
    child = children[0]
    try:
        time.sleep(0.3)
        assert child.poll() is None and process_exists(child.interpreter_pid)
    finally:
        child.kill()
        child.release_pipes()


def test_an_unknown_user_refuses_to_start_naming_the_option():
    with pytest.raises(IsolationError, match="LuaSandbox.Isolation.User 'no-such-user-here'"):
        plan(Isolation(user="no-such-user-here"))


def test_prlimit_after_spawn_reaches_the_interpreter_inside_bubblewrap(make_sandbox):
    """Without a uid change the broker sets the limits itself, on bubblewrap's pid 2 (not on bwrap)."""
    p = plan(Isolation(user=None))
    if "bubblewrap" not in p.active:
        pytest.skip(report_of(p)["bubblewrap"].detail)
    rlimits = next(layer for layer in p.layers if layer.name == "rlimits")
    assert rlimits.via_command is False and rlimits.processes is None
    sandbox = make_sandbox("x = 1", shim=SHIM, isolation=Isolation(user=None), limits=LIMITS)
    sandbox.start()
    status = sandbox.status()
    assert limits_of(status["pid"])["Max address space"] == (str(512 << 20),) * 2
    assert limits_of(status["wrapper_pid"])["Max address space"] != (str(512 << 20),) * 2
