"""``Sandbox``: one supervised Lua child process, the public face of this package.

The broker asks a ``Sandbox`` to call functions; the sandbox keeps a process ready to answer. When the
process is lost (exit, signal, hard timeout, protocol error) the call that saw it raises, the state goes
to BACKOFF and a new process is started (spawn, ``ready``, scripts reloaded, ``Initialize``) after
``next_delay``: proactively by a small supervisor thread, or by the next call if its time has come.
Too many failures within the window open the circuit (QUARANTINED) until the cooldown ends.

A restart takes the warm spare (``sandbox/spare.py``) when there is one: a process already spawned and
past its ``ready``, so only the scripts are loaded. The supervisor thread watches the serving process
and the spare through pidfds, so a process killed while idle is replaced at once, and prepares the
next spare after each restart.

The decisions (when to restart, when to quarantine) live in ``RestartSchedule``, which takes the time as
an argument so tests drive it without sleeping; ``Sandbox`` only applies them. Every state change goes
through ``Sandbox._change_state``, which logs it and counts it.
"""
from __future__ import annotations

import collections
import datetime
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from sandbox import memory
from sandbox.channel import CallInfo, ChannelClosed, LogHandler, RpcHandler, SandboxChannel
from sandbox.errors import (
    BuiltinError,
    LuaError,
    SandboxCrashed,
    SandboxError,
    SandboxTimeout,
    SandboxUnavailable,
    ScriptLoadError,
)
from sandbox.isolation import Isolation, IsolationPlan, LayerReport, plan
from sandbox.limits import BackoffPolicy, Limits, next_delay
from sandbox.process import DEFAULT_SHIM, ChildProcess, Layer, find_interpreter, wait_any
from sandbox.spare import Prepared, Spare, prepare
from sandbox.states import RESTARTABLE_STATES, STARTABLE_STATES, STOPPED_STATES, TRANSITIONS, State

log = logging.getLogger("sandbox.supervisor")

#: How long ``stop()`` lets the shim exit by itself after its input is closed.
STOP_GRACE_S = 1.0
#: Bytes of a load frame that are not the script's source or chunk name (the message envelope).
LOAD_FRAME_OVERHEAD = 64
#: The longest the supervisor waits before it looks again whether an idle READY process (and the
#: spare) is still there; their pidfds wake it at once when they die, so this only matters where the
#: kernel gives no pidfd. A process killed from outside is restarted before the next call needs it,
#: and the status page does not show a dead pid as ready.
LIVENESS_CHECK_S = 1.0
#: States in which the supervisor keeps a warm spare (once the sandbox has been READY).
SPARE_STATES = frozenset({State.READY, State.BACKOFF, State.QUARANTINED})

T = TypeVar("T")


@dataclass(frozen=True)
class ScriptSource:
    """A script to load at every (re)start. ``path`` names the chunk (``"@" + path``) in Lua's messages."""

    path: str
    source: str | bytes


#: The built-in call of the shim's ``require``: the sandbox answers it from ``SandboxConfig.modules``,
#: without the broker's handler (it is no Orthanc built-in, and needs nothing of the broker's).
REQUIRE = "require"


@dataclass(frozen=True)
class LuaModule:
    """A module that the scripts' ``require(name)`` loads: its Lua source, sent as text when first
    required, or None for a binary module (a ``.so``), which is named only to be refused clearly.
    ``path`` names the chunk (``"@" + path``) in Lua's messages."""

    name: str
    path: str
    source: bytes | None


@dataclass(frozen=True)
class SandboxConfig:
    """What to run and how to bound it. ``initialize`` is a global function called after every (re)load.

    ``isolation`` chooses the OS layers (``sandbox/isolation.py``; default: every layer the host
    allows). ``trusted`` names the scripts that asked for trusted mode (``LuaTrustedScripts``); when it
    is not empty the whole process runs trusted: the scripts get ``io``, ``os.execute``,
    ``os.getenv``, ``os.remove``, ``os.rename``, ``os.tmpname``, a writable working directory and
    file output up to ``isolation.trusted_file_size_mb``, and lose bubblewrap, Landlock and unshare.
    ``spare``: keep one warm spare process, so that a restart only loads the scripts
    (``sandbox/spare.py``); it costs one more idle process per sandbox. ``modules``: what ``require``
    finds; the process has no file access, so a module is only ever one of these.
    """

    name: str
    role: str
    scripts: tuple[ScriptSource, ...] = ()
    interpreter: str | None = None
    shim: str | None = None
    limits: Limits = Limits()
    backoff: BackoffPolicy = BackoffPolicy()
    initialize: str | None = None
    isolation: Isolation = Isolation()
    trusted: tuple[str, ...] = ()
    spare: bool = True
    modules: tuple[LuaModule, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.trusted, tuple) or not all(isinstance(p, str) for p in self.trusted):
            raise ValueError("SandboxConfig.trusted must be a tuple of script paths")


@dataclass(frozen=True)
class CallResult:
    """``defined`` is False when the global function does not exist (``value`` is then None)."""

    defined: bool
    value: Any
    prints: list[str] = field(default_factory=list)


class RestartSchedule:
    """Failure bookkeeping, pure apart from ``rand``: when to restart, when to quarantine.

    The n-th failure within ``policy.window_s`` schedules a restart ``next_delay(n - 1)`` later; the
    ``policy.max_failures``-th quarantines for ``policy.cooldown_s``. After a quarantine one restart is
    tried ("half-open"); a failure before the next successful call quarantines again at once.
    """

    def __init__(self, policy: BackoffPolicy, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._rand = rand
        self.failures: collections.deque[float] = collections.deque()
        self.retry_at: float | None = None
        self.half_open = False

    def reset(self) -> None:
        self.failures.clear()
        self.retry_at = None
        self.half_open = False

    def record_failure(self, now: float) -> State:
        """A process was lost at ``now``; returns BACKOFF or QUARANTINED and sets ``retry_at``."""
        while self.failures and self.failures[0] <= now - self.policy.window_s:
            self.failures.popleft()
        self.failures.append(now)
        if self.half_open or len(self.failures) >= self.policy.max_failures:
            self.failures.clear()
            self.half_open = False
            self.retry_at = now + self.policy.cooldown_s
            return State.QUARANTINED
        self.retry_at = now + next_delay(len(self.failures) - 1, self.policy, self._rand())
        return State.BACKOFF

    def record_success(self) -> None:
        """A call completed on a live process: a half-open circuit closes."""
        self.half_open = False

    def transition(self, state: State, now: float) -> State:
        """The state to move to at ``now``: STARTING when a restart is due, else ``state`` unchanged."""
        if state in RESTARTABLE_STATES and self.retry_at is not None and now >= self.retry_at:
            if state is State.QUARANTINED:
                self.half_open = True
            self.retry_at = None
            return State.STARTING
        return state

    def seconds_until_retry(self, now: float) -> float | None:
        return None if self.retry_at is None else max(0.0, self.retry_at - now)


class Sandbox:
    """One supervised sandbox process: calls, execute-script, status, start/stop. Thread-safe.

    ``rpc_handler(builtin, args, info)`` serves the script's built-in calls on the calling thread; it may
    call back into this sandbox (nested call). Raise ``BuiltinError`` to make the Lua stub raise.
    ``on_log(sandbox_name, level, text)`` receives every log line of the child (``print`` included).
    ``layers`` overrides the containment layers (tests); by default ``start()`` probes the host and
    applies what ``config.isolation`` asks for (``sandbox/isolation.py``), and logs what is active.
    """

    def __init__(self, config: SandboxConfig, rpc_handler: RpcHandler, on_log: LogHandler | None = None,
                 *, layers: Sequence[Layer] | None = None) -> None:
        self.config = config
        self._rpc_handler = rpc_handler
        self._modules = {module.name: module for module in config.modules}
        self._on_log = on_log
        self._plan: IsolationPlan | None = None
        if layers is not None:
            self._plan = IsolationPlan(tuple(layers), tuple(
                LayerReport(layer.name, "explicit", True, "given by the caller") for layer in layers))
        self._shim = os.path.abspath(config.shim or str(DEFAULT_SHIM))
        self._cond = threading.Condition(threading.Lock())
        self._schedule = RestartSchedule(config.backoff)
        self._state = State.STOPPED
        self._generation = 0
        self._channel: SandboxChannel | None = None
        self._starting: tuple[int, SandboxChannel] | None = None  # (thread id, channel) during a start
        self._info: dict[str, Any] = {}
        self._defined: frozenset[str] = frozenset()
        self._interpreter: str | None = None
        self._restarts = 0
        self._failures_total = 0
        self._last_error: tuple[str, float] | None = None
        self._failed_at: float | None = None  # monotonic time of the last failure
        self._last_start: dict[str, Any] | None = None
        self._spare = Spare(config.name)
        self._transitions: collections.Counter[str] = collections.Counter()
        self._supervisor: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> State:
        return self._state

    def start(self) -> None:
        """Spawn, wait for ``ready``, load every script in order, run ``initialize``; then READY.

        Raises ``ScriptLoadError`` (state FATAL) when a script does not load, ``SandboxError`` (FATAL)
        when no interpreter or shim is found; any other failure is recorded like a crash (BACKOFF, the
        supervisor keeps trying) and re-raised.
        """
        with self._cond:
            if self._state not in STARTABLE_STATES:
                raise SandboxError(f"sandbox {self.name!r} is already {self._state.value}")
            self._generation += 1
            generation = self._generation
            self._schedule.reset()
            self._change_state(State.STARTING, "start requested")
        try:
            self._interpreter = find_interpreter(self.config.interpreter)
            if not os.path.isfile(self._shim):
                raise SandboxError(f"the Lua shim {self._shim} does not exist")
            if self._plan is None:
                self._plan = plan(self.config.isolation, limits=self.config.limits, interpreter=self._interpreter,
                                  shim=self._shim, trusted=bool(self.config.trusted))
                self._log_plan(self._plan)
        except SandboxError as exc:
            self._fatal(generation, exc)
            raise
        try:
            self._bring_up(generation)
        except ScriptLoadError as exc:
            self._fatal(generation, exc)
            raise
        except Exception as exc:
            with self._cond:
                if generation == self._generation:
                    self._record_failure(exc)
            self._start_supervisor(generation)
            raise
        self._start_supervisor(generation)

    def call(self, function: str, args: list[Any], *, keep_strings: bool = False,
             cpu_s: float | None = None) -> CallResult:
        """Call the global Lua function ``function(*args)``.

        Raises ``LuaError`` if it raised (process alive), ``SandboxTimeout`` / ``SandboxCrashed`` if the
        process was lost during the call (it is restarted), ``SandboxUnavailable`` if no process could
        take the call within ``backoff.max_call_wait_s``.
        """
        limits = self.config.limits
        opts = {"keepStrings": keep_strings, "cpu": limits.soft_cpu_s if cpu_s is None else cpu_s}
        timeout_s = limits.hard_timeout_for(cpu_s)
        defined, value, prints = self._with_channel(
            lambda channel: channel.call(function, list(args), opts, timeout_s))
        return CallResult(defined, value, prints)

    def execute(self, source: str | bytes, chunkname: str = "line") -> list[str]:
        """Load and run a chunk in the script environment (execute-script, the name of the call: its
        built-ins see ``CallInfo.function == "execute-script"``); returns the printed lines.

        Functions it defines are visible to later calls until the process is restarted (a restart
        reloads only the configured scripts). Raises ``LuaError`` if the chunk fails.
        """
        def run(channel: SandboxChannel) -> list[str]:
            functions, prints = channel.load(source, chunkname, self.config.limits.hard_timeout_s,
                                             label="execute-script")
            with self._cond:
                if channel is self._channel:
                    self._defined = frozenset(functions)
            return prints

        return self._with_channel(run)

    def defined_functions(self) -> frozenset[str]:
        """Global functions the scripts defined, kept current after every load and every call that
        changed them (a callback or Initialize may define one). Names of the shim's own globals are
        not listed. While a process restarts, the list of the previous one."""
        return self._defined

    @property
    def layers(self) -> list[str]:
        """The active containment layers (empty before the first ``start()``)."""
        return self._plan.active if self._plan is not None else []

    def builtin_names(self) -> frozenset[str]:
        """The built-ins the shim declared in its ``ready`` frame."""
        names = self._info.get("builtins", [])
        return frozenset(n for n in names if isinstance(n, str)) if isinstance(names, list) else frozenset()

    def status(self) -> dict[str, Any]:
        """A snapshot for REST and logs: state, pid, restarts, last error, layers, limits, uptime, the
        memory of the processes, the last (re)start and the spare."""
        with self._cond:
            channel = self._channel
            now = time.monotonic()
            process = channel.process if channel is not None else None
            retry_in = self._schedule.seconds_until_retry(now) if self._state in RESTARTABLE_STATES else None
            snapshot = {
                "name": self.name,
                "role": self.config.role,
                "state": self._state.value,
                "pid": process.interpreter_pid if process else None,
                "busy_with": channel.busy_with if channel is not None else None,
                "interpreter": self._interpreter,
                "lua": self._info.get("lua"),
                "restarts": self._restarts,
                "failures": self._failures_total,
                "recent_failures": len(self._schedule.failures),
                "retry_in_s": retry_in,
                "last_error": None if self._last_error is None else {
                    "text": self._last_error[0], "at": _iso(self._last_error[1])},
                "layers": self._plan.active if self._plan is not None else [],
                "isolation": self._plan.as_status() if self._plan is not None else [],
                "trusted": list(self.config.trusted),
                "wrapper_pid": process.pid if process is not None and process.wrapper else None,
                "limits": asdict(self.config.limits),
                "backoff": asdict(self.config.backoff),
                "started_at": _iso(process.started_at) if process else None,
                "uptime_s": round(now - process.started_monotonic, 3) if process else None,
                "transitions": dict(self._transitions),
                "last_start": None if self._last_start is None else dict(self._last_start),
            }
        # /proc is read outside the lock: a status page never holds up a restart.
        return {**snapshot, "memory": memory.of(process),
                "spare": self._spare.status() if self.config.spare else None}

    def stop(self) -> None:
        """Clean stop: close the child's stdin, wait briefly, then kill. Calls after it are refused."""
        with self._cond:
            if self._state in (State.STOPPED, State.STOPPING):
                return
            self._generation += 1
            channel, self._channel = self._channel, None
            starting, self._starting = self._starting, None
            self._change_state(State.STOPPING, "stop requested", channel)
            supervisor, self._supervisor = self._supervisor, None
        self._spare.close()
        if starting is not None:
            starting[1].process.kill()
        if channel is not None:
            channel.close(STOP_GRACE_S)
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(STOP_GRACE_S + 1)
        with self._cond:
            if self.state is State.STOPPING:  # not if a start came in while the lock was free
                self._change_state(State.STOPPED, "stopped", channel)

    # ------------------------------------------------------------------------------ calls and states

    def _with_channel(self, operation: Callable[[SandboxChannel], T]) -> T:
        """Run ``operation`` on a live channel, recording a lost process as a failure."""
        wait_until = time.monotonic() + self.config.backoff.max_call_wait_s
        while True:
            channel = self._acquire(wait_until)
            if channel.reap_if_exited():
                # Died while idle, before the supervisor noticed: nothing was sent, so the call is not
                # lost; it moves on to the next process (the spare, when one is warm).
                self._on_channel_failure(channel, channel.failure())
                continue
            try:
                result = operation(channel)
            except ChannelClosed:
                # Lost before our frame was written (another call killed it): retry on the next process.
                self._on_channel_failure(channel, channel.failure())
                continue
            except (SandboxCrashed, SandboxTimeout) as exc:
                self._on_channel_failure(channel, exc)
                raise
            except LuaError:
                self._on_done(channel)
                raise
            except BaseException:
                # Anything else that left the channel dead (an interrupt mid-call) is a lost process too.
                if not channel.alive:
                    self._on_channel_failure(channel, channel.failure())
                raise
            self._on_done(channel)
            return result

    def _acquire(self, wait_until: float) -> SandboxChannel:
        """A READY channel; restarts on demand when due; waits up to ``wait_until`` for one in progress."""
        while True:
            with self._cond:
                if self._starting is not None and self._starting[0] == threading.get_ident():
                    # Initialize's built-ins calling back into this sandbox while it starts.
                    if self._starting[1].alive:
                        return self._starting[1]
                    raise SandboxUnavailable(f"sandbox {self.name!r} lost its process while starting",
                                             self._state.value)
                state = self._state
                if state is State.READY and self._channel is not None:
                    return self._channel
                now = time.monotonic()
                if state in STOPPED_STATES:
                    raise SandboxUnavailable(f"sandbox {self.name!r} is {state.value}", state.value)
                if state in RESTARTABLE_STATES and self._schedule.transition(state, now) is State.STARTING:
                    self._change_state(State.STARTING, f"restart on demand after {self._last_error_text()}")
                    generation = self._generation
                else:
                    generation = None
                    retry_at = self._schedule.retry_at
                    if state is State.QUARANTINED:
                        raise SandboxUnavailable(
                            f"sandbox {self.name!r} is quarantined for {self._schedule.seconds_until_retry(now):.1f} s "
                            f"more after repeated failures; last error: {self._last_error_text()}",
                            state.value, retry_at)
                    if state is State.BACKOFF and retry_at is not None and retry_at > wait_until:
                        raise SandboxUnavailable(
                            f"sandbox {self.name!r} is restarting after a failure; next attempt in "
                            f"{retry_at - now:.1f} s; last error: {self._last_error_text()}", state.value, retry_at)
                    if now >= wait_until:
                        raise SandboxUnavailable(f"sandbox {self.name!r} is still {state.value}", state.value, retry_at)
                    wake = wait_until if retry_at is None or state is State.STARTING else min(wait_until, retry_at)
                    self._cond.wait(max(0.0, wake - now))
            if generation is not None:
                self._restart(generation)

    def _on_done(self, channel: SandboxChannel) -> None:
        """A call came back from a live process; the channel may have retired it right after (the
        scripts hold more than the memory cap): that is recorded as a failure, with its reason."""
        if not channel.alive:
            self._on_channel_failure(channel, channel.failure())
            return
        with self._cond:
            self._schedule.record_success()

    def _on_channel_failure(self, channel: SandboxChannel, exc: BaseException | None) -> None:
        with self._cond:
            if channel is not self._channel:
                return  # already recorded (nested call), or a stale process of a restart / stop
            self._channel = None
            self._record_failure(exc if exc is not None else SandboxCrashed("the process was lost"), channel)

    def _record_failure(self, exc: BaseException, channel: SandboxChannel | None = None) -> None:
        """Caller holds the lock. Counts the failure and moves to BACKOFF or QUARANTINED."""
        now = time.monotonic()
        text = str(exc) or type(exc).__name__
        self._failures_total += 1
        self._failed_at = now
        self._last_error = (text, time.time())
        new_state = self._schedule.record_failure(now)
        if new_state is State.QUARANTINED:
            reason = f"quarantined for {self.config.backoff.cooldown_s:g} s after: {text}"
        else:
            reason = f"restart in {self._schedule.seconds_until_retry(now):.2f} s after: {text}"
        self._change_state(new_state, reason, channel)

    def _fatal(self, generation: int, exc: BaseException) -> None:
        with self._cond:
            if generation == self._generation:
                self._failures_total += 1
                self._last_error = (str(exc), time.time())
                self._change_state(State.FATAL, str(exc))

    def _change_state(self, new: State, reason: str, channel: SandboxChannel | None = None) -> None:
        """The one place where the state changes. Caller holds the lock."""
        old = self._state
        if new not in TRANSITIONS[old]:
            allowed = ", ".join(sorted(state.value for state in TRANSITIONS[old]))
            raise RuntimeError(f"sandbox {self.name!r}: cannot go from {old.value} to {new.value} "
                               f"({reason}); allowed: {allowed}")
        self._state = new
        self._transitions[new.value] += 1
        channel = channel or self._channel
        pid = channel.process.pid if channel is not None else None
        level = logging.WARNING if new in (State.BACKOFF, State.QUARANTINED, State.FATAL) else logging.INFO
        log.log(level, "sandbox %s (%s) pid %s: %s -> %s (%s)", self.name, self.config.role, pid,
                old.value, new.value, reason,
                extra={"sandbox": self.name, "role": self.config.role, "pid": pid,
                       "from_state": old.value, "to_state": new.value, "reason": reason})
        self._cond.notify_all()

    def _log_plan(self, isolation_plan: IsolationPlan) -> None:
        """The start-up lines: which layers are active (at WARNING, the default level, so an operator
        always sees them, as Orthanc's own start-up lines), and a loud warning for trusted mode."""
        extra = {"sandbox": self.name, "role": self.config.role, "layers": isolation_plan.active}
        log.warning("sandbox %s (%s): isolation %s", self.name, self.config.role, isolation_plan.summary(),
                    extra=extra)
        missing = [r for r in isolation_plan.report if not r.active and r.mode == "auto"
                   and not r.detail.startswith(("not needed", "off for trusted"))]
        if missing:
            log.warning("sandbox %s (%s): running without %s: %s", self.name, self.config.role,
                        ", ".join(r.layer for r in missing), "; ".join(f"{r.layer}: {r.detail}" for r in missing),
                        extra=extra)
        if self.config.trusted:
            log.warning("sandbox %s (%s) runs in TRUSTED mode because of LuaTrustedScripts (%s): every script "
                        "of this process gets io, os.execute, os.getenv, os.remove, os.rename, os.tmpname and "
                        "io.popen, may write files, and runs without bubblewrap, Landlock and unshare",
                        self.name, self.config.role, ", ".join(self.config.trusted), extra=extra)

    def _on_functions(self, channel: SandboxChannel, functions: frozenset[str]) -> None:
        """A load or a call reported a new list of script-defined functions."""
        with self._cond:
            if channel is self._channel:
                self._defined = functions

    def _last_error_text(self) -> str:
        return self._last_error[0] if self._last_error else "no error recorded"

    # -------------------------------------------------------------------------------- (re)starting

    def _spawn(self) -> SandboxChannel:
        """A new process under the planned layers, with its channel; nothing sent to it yet."""
        limits = self.config.limits
        assert self._interpreter is not None and self._plan is not None
        # --cpu is the shim's budget for loads (a call carries its own in opts.cpu).
        flags = [f"--memory-kb={limits.memory_kb}", f"--max-log-lines={limits.max_log_lines}",
                 f"--cpu={limits.soft_cpu_s:g}", f"--max-frame={limits.max_frame}"]
        if self.config.trusted:
            flags.append("--trusted")
        process = ChildProcess.spawn(self._interpreter, self._plan.shim or self._shim, flags, self._plan.layers,
                                     trusted=bool(self.config.trusted))
        return SandboxChannel(process, name=self.name, role=self.config.role, rpc_handler=self._serve_builtin,
                              on_log=self._on_log, max_frame=limits.max_frame, max_log_lines=limits.max_log_lines,
                              on_functions=self._on_functions, bounds=limits.bounds)

    def _bring_up(self, generation: int, restart: bool = False) -> None:
        """Prepare a process (the warm spare, else a new one), load the scripts, run ``initialize``,
        then install it as READY. State is STARTING. Raises on failure."""
        began = time.monotonic()

        def starting(channel: SandboxChannel) -> None:
            with self._cond:
                if generation == self._generation:
                    self._starting = (threading.get_ident(), channel)
                    return
            channel.kill("stopped while starting")
            raise SandboxUnavailable(f"sandbox {self.name!r} was stopped while starting", self._state.value)

        spare = self._spare.take()
        if spare is not None:
            starting(spare.channel)
            prepared = spare
        else:
            prepared = prepare(self._spawn, self.config.limits.hard_timeout_s, starting)
        channel = prepared.channel
        try:
            defined = self._load_scripts(channel)
            if self.config.initialize and self.config.initialize in defined:
                self._run_initialize(channel)
                defined = channel.functions  # Initialize may have defined functions
            failure = channel.failure()
            if failure is not None:  # retired after a load or Initialize that left the heap over its cap
                raise failure
        except BaseException:
            channel.kill("start failed")
            raise
        finally:
            with self._cond:
                if self._starting is not None and self._starting[1] is channel:
                    self._starting = None
        with self._cond:
            if generation == self._generation:
                self._channel = channel
                self._info = prepared.info
                self._defined = defined
                self._last_start = self._start_figures(prepared, began, spare is not None, restart)
                self._change_state(State.READY, f"{len(self.config.scripts)} script(s) loaded"
                                   + (" into the warm spare" if spare is not None else ""), channel)
                if self.config.spare:
                    self._spare.open()
                return
        channel.kill("stopped while starting")
        raise SandboxUnavailable(f"sandbox {self.name!r} was stopped while starting", State.STOPPED.value)

    def _start_figures(self, prepared: Prepared, began: float, from_spare: bool, restart: bool) -> dict[str, Any]:
        """``last_start`` of the status: how long the (re)start took. Caller holds the lock.

        ``ready_s``: from STARTING to READY (the scripts and ``Initialize``, plus the spawn when no
        spare was warm); ``spawn_to_ready_s``: the process's own spawn to its ``ready`` frame (done
        ahead for a spare); ``recovery_s``: from the failure to READY, backoff included."""
        now = time.monotonic()
        return {
            "at": _iso(time.time()),
            "restart": restart,
            "from_spare": from_spare,
            "ready_s": round(now - began, 4),
            "spawn_to_ready_s": round(prepared.ready_s, 4),
            "recovery_s": round(now - self._failed_at, 4) if restart and self._failed_at is not None else None,
        }

    def _serve_builtin(self, builtin: str, args: list[Any], info: CallInfo) -> Any:
        """The built-in calls of the process: ``require`` answered here, the others by the broker."""
        if builtin == REQUIRE:
            return self._module(args)
        return self._rpc_handler(builtin, args, info)

    def _module(self, args: list[Any]) -> dict[str, Any]:
        """What ``require(name)`` loads: the module's chunk name and source, or why it cannot."""
        name = args[0] if args and isinstance(args[0], str) else None
        module = self._modules.get(name) if name is not None else None
        if module is None:
            raise BuiltinError(f"module '{name}' not found: require loads the Lua files of LuaModulesPath only"
                               + ("" if self._modules else " (none is configured)"))
        if module.source is None:
            raise BuiltinError(f"module '{name}' is a binary module ({module.path}): only Lua source is loaded")
        if module.source.startswith(b"\x1bLua"):
            raise BuiltinError(f"module '{name}' ({module.path}) is a precompiled binary chunk: only Lua source "
                               "is loaded")
        return {"chunkname": "@" + module.path, "source": module.source}

    def _load_scripts(self, channel: SandboxChannel) -> frozenset[str]:
        defined: frozenset[str] = frozenset()
        for script in self.config.scripts:
            room = self.config.limits.max_frame - LOAD_FRAME_OVERHEAD - len(script.path.encode()) - 1
            if len(script.source) > room:
                # Refused here, before it costs the child anything; a restart cannot fix it (FATAL).
                raise ScriptLoadError(script.path, f"the script is {len(script.source)} bytes; a script must fit "
                                                   f"in one frame ({room} bytes with Limits.max_frame "
                                                   f"{self.config.limits.max_frame})")
            try:
                functions, _ = channel.load(script.source, "@" + script.path, self.config.limits.hard_timeout_s)
            except LuaError as exc:
                raise ScriptLoadError(script.path, exc.message) from None
            defined = frozenset(functions)  # the list is of all global functions after the chunk ran
        return defined

    def _run_initialize(self, channel: SandboxChannel) -> None:
        """Call ``initialize``; a Lua error is logged and ignored (Orthanc's rule for Initialize)."""
        name = self.config.initialize
        assert name is not None
        limits = self.config.limits
        try:
            channel.call(name, [], {"keepStrings": False, "cpu": limits.soft_cpu_s}, limits.hard_timeout_s)
        except LuaError as exc:
            log.warning("sandbox %s (%s): %s() failed: %s", self.name, self.config.role, name, exc.message)
            if self._on_log is not None:
                try:
                    self._on_log(self.name, "error", f"{name}() failed: {exc.message}")
                except Exception:
                    log.exception("sandbox %s: on_log callback failed", self.name)

    def _restart(self, generation: int) -> None:
        """Bring a process up (state already STARTING); a failure is recorded, not raised."""
        try:
            self._bring_up(generation, restart=True)
        except BaseException as exc:
            with self._cond:
                if generation == self._generation and self._state is State.STARTING:
                    self._record_failure(exc)
            if not isinstance(exc, Exception):
                raise
            return
        with self._cond:
            self._restarts += 1

    def _start_supervisor(self, generation: int) -> None:
        with self._cond:
            if generation != self._generation or self._supervisor is not None:
                return
            self._supervisor = threading.Thread(target=self._supervise, args=(generation,),
                                                name=f"sandbox-{self.name}-supervisor", daemon=True)
            self._supervisor.start()

    def _supervise(self, generation: int) -> None:
        """Restart when the schedule says so, prepare the warm spare, and watch the serving process
        (and the spare) through their pidfds, so one that dies while idle is replaced at once; exits
        when the sandbox is stopped."""
        while True:
            watched: SandboxChannel | None = None
            fill = False
            with self._cond:
                if generation != self._generation:
                    return
                now = time.monotonic()
                restart = (self._state in RESTARTABLE_STATES
                           and self._schedule.transition(self._state, now) is State.STARTING)
                spare_in = self._spare.wanted_in(now) if self._state in SPARE_STATES else None
                if restart:
                    self._change_state(State.STARTING, f"restart after {self._last_error_text()}")
                elif spare_in == 0:
                    fill = True
                elif self._state is State.READY and self._channel is not None:
                    watched = self._channel
                else:
                    retry_in = self._schedule.seconds_until_retry(now) if self._state in RESTARTABLE_STATES else None
                    waits = [w for w in (retry_in, spare_in) if w is not None]
                    self._cond.wait(min(waits) if waits else None)
            if restart:
                self._restart(generation)
            elif fill:
                self._spare.fill(self._spawn, self.config.limits.hard_timeout_s)
            elif watched is not None:
                # Leaving READY means losing the process (or stopping, which ends it): its pidfd wakes us.
                wait_any([watched.process, *self._spare.watched()],
                         LIVENESS_CHECK_S if spare_in is None else min(spare_in, LIVENESS_CHECK_S))
                if watched.reap_if_exited():
                    self._on_channel_failure(watched, watched.failure())
                elif watched.process.exited():
                    # A call holds the dead process: it records the failure itself, which wakes us.
                    with self._cond:
                        if self._channel is watched:
                            self._cond.wait(LIVENESS_CHECK_S)
                self._spare.drop_if_dead()


def _iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="milliseconds")


__all__ = ["Sandbox", "SandboxConfig", "ScriptSource", "CallResult", "CallInfo", "RestartSchedule"]
