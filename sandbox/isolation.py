"""Which OS layers a sandbox gets: the configuration, the probes, the plan, the report.

``Isolation`` is the operator's choice per layer (``LuaSandbox.Isolation`` in the broker's
configuration): ``"auto"`` uses a layer when the host allows it, ``"required"`` refuses to start
without it, ``"off"`` turns it off (the only way to lose a layer the host allows). ``plan`` probes the
host and returns the layers to apply plus a report of every layer: active or not, and why.

Probing is done by trial: the interpreter is started under the layers found so far plus the candidate
and must read the shim and answer on its stdout (for seccomp, ``Seccomp: 2`` must show in its
status). So a layer reported active is known to work with the others on this host, for this
interpreter, shim directory and uid. Results are cached per process: the host does not change under a
running broker.

Trusted mode (``trusted``: the scripts named in ``LuaTrustedScripts``) keeps rlimits (with file output
allowed), the dedicated uid and a reduced seccomp filter; bubblewrap, Landlock and unshare are off,
because the point of trusted mode is to reach the host's files and programs.
"""
from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox.errors import SandboxError
from sandbox.layers import (
    TRUSTED_MAX_PROCESSES,
    BubblewrapLayer,
    BubblewrapOptions,
    RlimitLayer,
    SeccompLayer,
    UnshareLayer,
    UserLayer,
    ordered,
    probe_bubblewrap,
    probe_landlock,
    probe_rlimits,
    probe_seccomp,
    probe_unshare,
    probe_user,
    resolve_user,
)
from sandbox.limits import Limits
from sandbox.process import ChildProcess, Layer
from sandbox.runtime import readable_shim

MODES = ("auto", "required", "off")
#: Seconds a trial child has to say ``ready``.
TRIAL_TIMEOUT_S = 5.0


class IsolationError(SandboxError):
    """A layer the configuration requires is not available (or the configuration is contradictory)."""


@dataclass(frozen=True)
class Isolation:
    """The operator's choice of OS layers. Defaults: every layer the host allows, children as nobody.

    ``user``/``group``: the account children run as when the broker runs as root (a name or a number;
    the group defaults to the user's primary group); ``None`` keeps the broker's uid.
    ``trusted_file_size_mb``: RLIMIT_FSIZE of trusted processes (untrusted ones get 0).
    """

    bubblewrap: str = "auto"
    seccomp: str = "auto"
    landlock: str = "auto"
    unshare: str = "auto"
    user: str | int | None = "nobody"
    group: str | int | None = None
    trusted_file_size_mb: int = 1024

    def __post_init__(self) -> None:
        for name in ("bubblewrap", "seccomp", "landlock", "unshare"):
            if getattr(self, name) not in MODES:
                raise ValueError(f"Isolation.{name}={getattr(self, name)!r}; expected one of {', '.join(MODES)}")
        if self.trusted_file_size_mb < 0:
            raise ValueError("Isolation.trusted_file_size_mb must not be negative")

    @classmethod
    def none(cls) -> Isolation:
        """rlimits only: for tests of the process model, never for scripts you do not trust."""
        return cls(bubblewrap="off", seccomp="off", landlock="off", unshare="off", user=None)


@dataclass(frozen=True)
class LayerReport:
    """One line of the report: ``mode`` is the configured one ("always" for rlimits)."""

    layer: str
    mode: str
    active: bool
    detail: str


@dataclass(frozen=True)
class IsolationPlan:
    """The layers to apply, the report of every layer, and the shim the children read (a staged copy
    when they run as another uid that cannot read the original: ``sandbox/runtime.py``)."""

    layers: tuple[Layer, ...]
    report: tuple[LayerReport, ...] = field(default_factory=tuple)
    shim: str | None = None

    @property
    def active(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def as_status(self) -> list[dict[str, Any]]:
        return [{"layer": r.layer, "mode": r.mode, "active": r.active, "detail": r.detail} for r in self.report]

    def summary(self) -> str:
        """One log line: the active layers with what they do, then the others with the reason."""
        on = "; ".join(_describe(layer) for layer in self.layers)
        off = "; ".join(f"{r.layer} ({r.mode}): {r.detail}" for r in self.report if not r.active)
        return f"active: {on}" + (f" | not active: {off}" if off else "")


def _describe(layer: Layer) -> str:
    describe = getattr(layer, "describe", None)
    return describe() if callable(describe) else layer.name


_CACHE: dict[tuple[Any, ...], IsolationPlan] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget the probes (tests that change the host's conditions)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def plan(isolation: Isolation, *, limits: Limits, interpreter: str, shim: str,
         trusted: bool = False) -> IsolationPlan:
    """The layers for one sandbox, probed on this host. Raises ``IsolationError`` when a required
    layer is unavailable, when the configured user cannot be used, or when the configuration asks
    bubblewrap, Landlock or unshare to be required for trusted scripts."""
    if isolation.user is not None and os.geteuid() == 0:  # children may run as another uid
        shim = readable_shim(shim)
    key = (isolation, limits, interpreter, os.path.abspath(shim), trusted, os.geteuid())
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            cached = _plan(isolation, limits, interpreter, os.path.abspath(shim), trusted)
            _CACHE[key] = cached
        return cached


def _plan(isolation: Isolation, limits: Limits, interpreter: str, shim: str, trusted: bool) -> IsolationPlan:
    shim_dir = os.path.dirname(shim)
    report: list[LayerReport] = []
    layers: list[Layer] = []

    def add(candidate: Layer, mode: str, found: str, check: str | None = None) -> str | None:
        """Keep ``candidate`` if the shim starts under the layers so far plus it; else why not."""
        trial_layers = ordered(layers + [candidate])
        why = trial(interpreter, shim, trial_layers, check)
        if why is None:
            layers[:] = trial_layers
            report.append(LayerReport(candidate.name, mode, True, found))
        return why

    def unavailable(name: str, mode: str, detail: str) -> None:
        if mode == "required":
            raise IsolationError(f"LuaSandbox.Isolation: {name} is 'required' but unavailable here: {detail}. "
                                 f"Make it available, or set it to 'auto' to run without it.")
        report.append(LayerReport(name, mode, False, detail))

    # user: a dedicated uid when the broker runs as root.
    uid = gid = None
    user_probe = probe_user()
    if isolation.user is None or isolation.user == "off":
        detail = "LuaSandbox.Isolation.User is off: children keep the broker's uid"
        if os.geteuid() == 0:
            detail += " (root: an interpreter exploit would run as root)"
        report.append(LayerReport("user", "off", False, detail))
    elif not user_probe.available:
        report.append(LayerReport("user", str(isolation.user), False, user_probe.detail))
    else:
        try:
            uid, gid = resolve_user(isolation.user, isolation.group)
        except SandboxError as exc:
            raise IsolationError(f"LuaSandbox.Isolation.User {isolation.user!r} / Group {isolation.group!r}: {exc}; "
                                 "name an existing unprivileged account, or \"off\"") from None

    # rlimits: always. NPROC only under a dedicated uid.
    rlimit_probe, via_command = probe_rlimits(uid)
    if not rlimit_probe.available:
        raise IsolationError(f"cannot bound the sandbox processes: {rlimit_probe.detail}")
    rlimits = RlimitLayer(
        limits,
        file_size_bytes=isolation.trusted_file_size_mb * 1024 * 1024 if trusted else 0,
        processes=None if uid is None else (TRUSTED_MAX_PROCESSES if trusted else 0),
        via_command=via_command)
    if uid is not None and gid is not None:
        # Tried together with the limits: the uid decides how they can be set.
        layers.append(UserLayer(uid, gid))
    why = add(rlimits, "always", rlimits.describe())
    if why is not None:
        if uid is not None:
            raise IsolationError(f"the sandbox processes cannot run as uid {uid}, gid {gid} "
                                 f"(LuaSandbox.Isolation.User {isolation.user!r}): {why}. Make the interpreter "
                                 f"and {shim_dir} readable by that user, or choose another one.")
        raise IsolationError(f"the shim does not start even with rlimits only: {why}")
    if uid is not None and gid is not None:
        report.append(LayerReport("user", str(isolation.user), True, f"uid {uid}, gid {gid}"))

    # bubblewrap
    bubblewrap_active = False
    if isolation.bubblewrap == "off":
        report.append(LayerReport("bubblewrap", "off", False, "turned off by LuaSandbox.Isolation.Bubblewrap"))
    elif trusted:
        if isolation.bubblewrap == "required":
            raise IsolationError("LuaSandbox.Isolation.Bubblewrap is 'required', which trusted scripts "
                                 "(LuaTrustedScripts) cannot run under: they need the host's files and programs")
        report.append(LayerReport("bubblewrap", isolation.bubblewrap, False, "off for trusted scripts"))
    else:
        probe, options = probe_bubblewrap()
        if options is None:
            unavailable("bubblewrap", isolation.bubblewrap, probe.detail)
        else:
            first_failure = None
            # /proc or /dev cannot be mounted in some containers: try without them before giving up.
            for proc, dev in ((True, True), (False, True), (False, False)):
                variant = BubblewrapOptions(options.path, options.version, proc, dev, options.disable_userns)
                layer = BubblewrapLayer(variant, shim_dir, interpreter, uid or 65534, gid or 65534)
                why = add(layer, isolation.bubblewrap, layer.describe())
                if why is None:
                    bubblewrap_active = True
                    break
                first_failure = first_failure or why
            if not bubblewrap_active:
                unavailable("bubblewrap", isolation.bubblewrap, f"bwrap fails here: {first_failure}")

    # unshare and landlock: fallbacks when bubblewrap is not active.
    for name, mode in (("unshare", isolation.unshare), ("landlock", isolation.landlock)):
        if mode == "off":
            report.append(LayerReport(name, "off", False, f"turned off by LuaSandbox.Isolation.{name.title()}"))
        elif trusted:
            if mode == "required":
                raise IsolationError(f"LuaSandbox.Isolation.{name.title()} is 'required', which trusted scripts "
                                     "(LuaTrustedScripts) cannot run under")
            report.append(LayerReport(name, mode, False, "off for trusted scripts"))
        elif bubblewrap_active:
            report.append(LayerReport(name, mode, False, "not needed: bubblewrap is active and covers it"))
        else:
            candidate: Layer | None
            if name == "unshare":
                probe, candidate = probe_unshare(), UnshareLayer()
            else:
                probe, candidate = probe_landlock(shim_dir, interpreter)
            if not probe.available or candidate is None:
                unavailable(name, mode, probe.detail)
                continue
            why = add(candidate, mode, _describe(candidate))
            if why is not None:
                unavailable(name, mode, why)

    # seccomp: last, through bubblewrap when it is there.
    if isolation.seccomp == "off":
        report.append(LayerReport("seccomp", "off", False, "turned off by LuaSandbox.Isolation.Seccomp"))
    else:
        probe, program = probe_seccomp(trusted)
        if program is None:
            unavailable("seccomp", isolation.seccomp, probe.detail)
        else:
            candidate = SeccompLayer(program, via_bubblewrap=bubblewrap_active, trusted=trusted)
            why = add(candidate, isolation.seccomp, candidate.describe(), check="seccomp")
            if why is not None:
                unavailable("seccomp", isolation.seccomp, why)

    order = {name: i for i, name in enumerate(("rlimits", "user", "bubblewrap", "seccomp", "landlock", "unshare"))}
    report.sort(key=lambda r: order.get(r.layer, 99))
    return IsolationPlan(tuple(layers), tuple(report), shim)


#: What a trial child runs: read the shim (as the shim's own loader does), answer, wait for stdin's end.
_TRIAL_CODE = "local f = assert(io.open(%s, 'rb')) assert(f:read(1)) f:close() io.write('ok') io.flush() io.read('a')"


def trial(interpreter: str, shim: str, layers: Sequence[Layer], check: str | None = None) -> str | None:
    """Start the interpreter under ``layers``; ``None`` if it could read the shim and answer (and passed
    ``check``), else why not."""
    code = _TRIAL_CODE % _lua_string(shim)
    try:
        child = ChildProcess.start((interpreter, "-E", "-e", code), layers)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        assert child.stdout_fd is not None
        answer = _read_some(child.stdout_fd, 2, TRIAL_TIMEOUT_S)
        if answer != b"ok":
            child.kill()
            tail = child.stderr_tail().strip()
            return f"the interpreter did not start ({child.describe_exit()}){': ' + tail[-300:] if tail else ''}"
        if check == "seccomp" and not _status_field(child.interpreter_pid, "Seccomp").startswith("2"):
            return "the filter is not in force in the child (/proc/<pid>/status shows no Seccomp: 2)"
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        child.kill()
        child.release_pipes()


def _lua_string(text: str) -> str:
    return "'" + "".join(c if c.isalnum() or c in "/._-+ " else f"\\{ord(c)}" for c in text) + "'"


def _read_some(fd: int, count: int, timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while len(data) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not poller.poll(int(remaining * 1000) + 1):
            continue
        chunk = os.read(fd, count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _status_field(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
