"""``ScriptSet``: the scripts of one tenant as the core and the front ends see them, and the gateway
between them and the sandbox processes.

The set has one current ``ScriptVersion`` (the sources, their SHA-256, a main and a filter sandbox).
Every call pins the version it starts on, so a reload (``reload``) can build a new version in fresh
processes, swap it in atomically once both processes are ready, and stop the old one after its last
call. An event is delivered by exactly one version: the one current when its delivery started.

The filter process serves the ingest path (``ReceivedInstanceFilter``), so a slow ``OnStoredInstance``
in the main process never stalls C-STORE. Every ``rpc`` from either process goes through ``dispatch``;
every callback through ``call_filter``, ``notify`` or ``execute``. A filter whose process is dead,
timed out or quarantined is answered by its failure policy (``LuaSandbox.FilterFailurePolicy``,
closed by default: the input is refused). A Lua error or a wrong return type always fails, as in Orthanc.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator

from broker.errors import ErrorCode, OrthancError
from broker.scripting import journal as journals
from broker.scripting.builtins import BUILTINS, WRITING_BUILTINS, CallContext
from broker.scripting.callbacks import CALLBACKS, Kind, Role
from broker.scripting.journal import Journal
from broker.scripting.values import to_lua
from broker.scripting.version import ScriptVersion, iso, read_scripts, script_name
from sandbox import (BuiltinError, CallInfo, CallResult, LuaError, Sandbox, SandboxCrashed, SandboxError,
                     SandboxTimeout, SandboxUnavailable, State)

log = logging.getLogger("luabroker.scripting")

#: How a call ended, by the exception that ended it (the ``outcome`` label of the call metrics).
_OUTCOMES: dict[type[BaseException], str] = {
    LuaError: "lua_error", SandboxTimeout: "timeout", SandboxCrashed: "crashed", SandboxUnavailable: "unavailable",
}

CLOSED, OPEN = "closed", "open"
#: What an in-flight call of a replaced version is given to finish, at least (then its processes stop).
MIN_DRAIN_S = 60.0


class ReloadError(Exception):
    """A reload that was refused; the previous version stays. ``http_status`` is 400 when the scripts
    or the configuration are at fault (``str()`` names the file, and the line for a Lua error)."""

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


class ScriptSet:
    def __init__(self, services: Any, tenant: str = "default") -> None:
        self.services = services
        self.tenant = tenant
        config = services.config
        self.failure_policy: dict[str, str] = {
            name: config.lua_filter_failure_policy.get(name, CLOSED)
            for name, callback in CALLBACKS.items() if callback.kind is Kind.FILTER}
        self._lock = threading.Lock()          # _current, _retiring, _totals
        self._reload_lock = threading.Lock()   # one reload or reset at a time
        self._reload_owner: int | None = None  # the thread holding it (Initialize may call /lua/reload)
        self._current = self._new_version(config)
        self._retiring: dict[ScriptVersion, threading.Thread] = {}
        self._totals: dict[str, dict[str, int]] = {role.value: {"restarts": 0, "failures": 0} for role in Role}
        self._started = False
        self._stopping = False
        self._last_reload: dict[str, Any] | None = None
        self._deliveries: dict[Hashable, Journal] = {}
        self._listeners: list[Callable[[], None]] = []

    # -- the current version -------------------------------------------------------------------------
    @property
    def current(self) -> ScriptVersion:
        return self._current

    @property
    def version(self) -> str:
        """SHA-256 of the current sources (names and contents, in load order)."""
        return self._current.digest

    @property
    def main(self) -> Sandbox:
        return self._current.sandboxes[Role.MAIN]

    @property
    def filter(self) -> Sandbox:
        return self._current.sandboxes[Role.FILTER]

    @contextmanager
    def pinned(self) -> Iterator[ScriptVersion]:
        """The current version, kept alive (not stopped by a reload) until the ``with`` ends."""
        with self._lock:
            version = self._current
            version.enter()
        try:
            yield version
        finally:
            version.leave()

    def on_change(self, listener: Callable[[], None]) -> None:
        """``listener()`` is called after a reload or a reset (the event dispatcher retries at once)."""
        self._listeners.append(listener)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start_filter(self) -> None:
        """Load the scripts into the filter process; a script that fails to load raises
        ``ScriptLoadError`` (the server refuses to start, as Orthanc does)."""
        self._current.sandboxes[Role.FILTER].start()

    def start_main(self) -> None:
        """Load the scripts into the main process and run ``Initialize``: called once the front ends
        are up, as Orthanc queues ``Initialize`` once the server is up."""
        self._current.sandboxes[Role.MAIN].start()
        self._started = True

    def stop(self) -> None:
        """Run ``Finalize`` (the caller drained the events first), then stop every process, those of
        replaced versions still finishing included."""
        with self._reload_lock:
            with self._lock:
                self._stopping = True
                current = self._current
                retiring = dict(self._retiring)
            for version in retiring:
                version.wake()
            self._finalize(current)
            current.stop()
            for thread in retiring.values():
                thread.join(timeout=30)

    def reload(self, reason: str = "reload", *, wait: bool = True) -> ScriptVersion:
        """Re-read ``LuaScripts`` (from the configuration file when there is one), load the scripts into
        a new pair of processes, and swap it in once both are ready (``Initialize`` ran on the new main
        process). The replaced version finishes its calls, gets ``Finalize`` and stops, in the
        background. Raises ``ReloadError`` and keeps the current version if anything fails; with
        ``wait=False``, also at once (409) when another reload or reset is in progress."""
        with self._exclusive(wait):
            if self._stopping:
                raise ReloadError("the server is stopping", 503)
            if not self._started:
                raise ReloadError("the scripts are not started yet; try again once the server is up", 503)
            started = time.monotonic()
            try:
                version = self._new_version(self._fresh_config())
            except Exception as exc:  # ConfigError: a bad configuration file, a missing script
                self._reload_failed(reason, str(exc))
                raise ReloadError(str(exc), 400) from exc
            try:
                version.start()
            except Exception as exc:
                from sandbox import ScriptLoadError

                message = str(exc) if isinstance(exc, ScriptLoadError) else f"the new scripts could not start: {exc}"
                self._reload_failed(reason, message)
                raise ReloadError(message, 400 if isinstance(exc, ScriptLoadError) else 500) from exc
            with self._lock:
                old, self._current = self._current, version
                thread = threading.Thread(target=self._retire, args=(old,), daemon=True,
                                          name=f"retire-{old.short}")
                self._retiring[old] = thread
            thread.start()
            self._last_reload = {"At": iso(time.time()), "Reason": reason, "Succeeded": True,
                                 "Version": version.digest, "Previous": old.digest, "Error": None,
                                 "DurationS": round(time.monotonic() - started, 3)}
            self._metrics("reloads", "ok")
            log.warning("Lua scripts reloaded (%s): version %s replaces %s; scripts: %s", reason, version.short,
                        old.short, ", ".join(version.names) or "(none)",
                        extra={"tenant": self.tenant, "version": version.digest})
        self._changed()
        return version

    def reset(self, *, wait: bool = True) -> list[str]:
        """``POST /lua/reset``: bring the current version's quarantined (or fatal) processes back now,
        with a fresh circuit. Returns the roles that were reset. Raises what a restart raised, and
        ``ReloadError`` as ``reload`` does."""
        reset: list[str] = []
        with self._exclusive(wait):
            version = self._current
            version.reported_quarantine.clear()
            for role, sandbox in version.sandboxes.items():
                if sandbox.state not in (State.QUARANTINED, State.FATAL):
                    continue
                log.warning("Lua scripts %s: %s process reset by the operator (was %s)", version.short,
                            role.value, sandbox.state.value, extra={"tenant": self.tenant})
                # Sandbox has no "retry now": stop() then start() gives a fresh process and circuit.
                sandbox.stop()
                sandbox.start()
                reset.append(role.value)
                self._metrics("resets", role.value)
        if reset:
            self._changed()
        return reset

    @contextmanager
    def _exclusive(self, wait: bool) -> Iterator[None]:
        """One reload or reset at a time; the others wait (SIGHUP), or are refused at once (REST: an
        operator endpoint never waits on sandboxes being started). A script that asks for a reload
        while its own version is being loaded (``Initialize`` calling ``/lua/reload``) is refused, not
        deadlocked."""
        if self._reload_owner == threading.get_ident():
            raise ReloadError("a reload or reset is already in progress on this thread", 409)
        if not self._reload_lock.acquire(blocking=wait):
            raise ReloadError("a reload or reset is already in progress; try again when it is over", 409)
        self._reload_owner = threading.get_ident()
        try:
            yield
        finally:
            self._reload_owner = None
            self._reload_lock.release()

    def _new_version(self, scripts_config: Any) -> ScriptVersion:
        """A version (not started) of the scripts that ``scripts_config`` lists (``LuaScripts``, and
        ``LuaTrustedScripts`` among them); limits and isolation always come from the running
        configuration."""
        scripts = read_scripts(scripts_config.lua_scripts, scripts_config.base_dir)
        trusted = tuple(script_name(path, scripts_config.base_dir) for path in scripts_config.lua_trusted_scripts)
        return ScriptVersion(scripts, tenant=self.tenant, config=self.services.config,
                             rpc_handler=self.dispatch, on_log=self._on_log, trusted=trusted)

    def _fresh_config(self) -> Any:
        """The configuration file read again (the running one if it did not come from a file)."""
        config = self.services.config
        if config.path is None:
            return config
        from broker.config import Config

        return Config.load(config.path)

    def _reload_failed(self, reason: str, message: str) -> None:
        self._last_reload = {"At": iso(time.time()), "Reason": reason, "Succeeded": False,
                             "Version": None, "Previous": self._current.digest, "Error": message}
        self._metrics("reloads", "failed")
        log.error("Lua scripts NOT reloaded (%s), version %s stays: %s", reason, self._current.short, message,
                  extra={"tenant": self.tenant})

    def _retire(self, old: ScriptVersion) -> None:
        """Let the replaced version finish its calls, run its ``Finalize``, stop its processes."""
        limit = max(MIN_DRAIN_S, 4 * self.services.config.lua_limits.hard_timeout_s)
        if not old.wait_idle(limit, lambda: self._stopping):
            log.warning("Lua scripts %s: %d call(s) still running after %.0f s; stopping the old processes",
                        old.short, old.in_flight, limit)
        self._finalize(old)
        old.stop()
        with self._lock:
            for entry in old.sandbox_status():
                totals = self._totals[entry["role"]]
                totals["restarts"] += entry["restarts"]
                totals["failures"] += entry["failures"]
            self._retiring.pop(old, None)
        log.info("Lua scripts %s: stopped (replaced)", old.short)

    def _finalize(self, version: ScriptVersion) -> None:
        if not version.defines("Finalize", Role.MAIN):
            return
        try:
            self._call(version, "Finalize", [])
        except LuaError as exc:
            log.warning("Finalize of version %s failed: %s", version.short, exc)
        except SandboxError as exc:
            log.warning("Finalize of version %s could not run: %s", version.short, exc)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("a script-change listener failed")

    # -- the two directions of the gateway -----------------------------------------------------------
    def dispatch(self, name: str, args: list[Any], info: CallInfo) -> Any:
        """The one entry of every ``rpc`` from Lua: look up, run, and answer or raise for Lua.

        Writes made during a journaled delivery go through its journal (replayed, not applied again,
        when a cut attempt of the same delivery already applied them)."""
        function = BUILTINS.get(name)
        if function is None:
            raise BuiltinError(f"{name} is not a built-in of this server")
        context = CallContext(self.services, self.tenant, info.sandbox, info.function)
        journal = journals.active()
        if journal is None or name not in WRITING_BUILTINS:
            return function(context, args)

        def replayed(write: Any) -> None:
            callback = journal.callback or info.function
            self._metrics("replayed_writes", callback)
            log.warning("%s: %s was applied by the attempt that was cut; not applied again", callback,
                        write.label, extra={"tenant": self.tenant, "sandbox": info.sandbox})

        return journal.run(name, args, lambda: function(context, args), replayed)

    def _call(self, version: ScriptVersion, name: str, args: list[Any], *, keep_strings: bool = False) -> CallResult:
        """One call into the version's process for ``name``, counted and timed."""
        callback = CALLBACKS[name]
        sandbox = version.sandboxes[callback.role]
        with self._observed(version, callback.role, name):
            if not callback.job:
                return sandbox.call(name, to_lua(args), keep_strings=keep_strings)
            # Orthanc's [J] callbacks: _InitializeJob(), the callback, then _AccessJob() as the value
            # (keepStrings=false), in one round trip (lua-runtime/jobs.lua); false: not a function.
            result = sandbox.call("_CallWithJob", [name, *to_lua(args)], keep_strings=False)
            return CallResult(result.value is not False, None if result.value is False else result.value,
                              result.prints)

    @contextmanager
    def _observed(self, version: ScriptVersion, role: Role, name: str) -> Iterator[None]:
        """Time and count one call into ``version``'s ``role`` process, and watch for quarantine.

        The outcome is named after how the call ended; a call that never reached a process
        (``unavailable``) has no latency."""
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except BaseException as exc:
            outcome = _OUTCOMES.get(type(exc), "error")
            raise
        finally:
            metrics = self._metrics_object()
            if metrics is not None:
                metrics.observe_call(name, role.value,
                                     None if outcome == "unavailable" else time.perf_counter() - started, outcome)
            self._watch_quarantine(version, role, version.sandboxes[role], outcome)

    def call(self, name: str, args: list[Any], *, keep_strings: bool = False) -> CallResult:
        with self.pinned() as version:
            return self._call(version, name, args, keep_strings=keep_strings)

    def defines(self, name: str) -> bool:
        """Whether the current version may define the callback: the fast path that skips a round
        trip per instance (see ``ScriptVersion.defines``)."""
        return self._current.defines(name, CALLBACKS[name].role)

    def notify(self, name: str, args: list[Any], *, delivery: Hashable | None = None) -> CallResult | None:
        """Run a NOTIFY callback on the current version; ``None`` when that version does not define it.

        ``LuaError`` (the script failed) and ``SandboxError`` (the process died, timed out or is
        quarantined) propagate: the outbox dispatcher decides what they mean. With ``delivery`` (the
        event's key), the writes of an attempt that is cut are remembered, and the next attempt of the
        same delivery does not apply them again (see ``journal``); ``end_delivery`` forgets them."""
        assert CALLBACKS[name].kind is Kind.NOTIFY, f"{name} is not a notification"
        with self.pinned() as version:
            if not version.defines(name, CALLBACKS[name].role):
                self.end_delivery(delivery)
                return None
            journal = None if delivery is None else self._deliveries.setdefault(delivery, Journal(name))
            with journals.recording(journal):
                try:
                    result = self._call(version, name, args)
                except (SandboxCrashed, SandboxTimeout, SandboxUnavailable):
                    raise  # cut (or not started): the journal is kept for the next attempt
                except BaseException:
                    self.end_delivery(delivery)
                    raise
        self.end_delivery(delivery)
        return result

    def delivery_writes(self, delivery: Hashable) -> list[str]:
        """The writes that the cut attempts of ``delivery`` applied (for logs and parked events)."""
        journal = self._deliveries.get(delivery)
        return journal.labels if journal is not None else []

    def end_delivery(self, delivery: Hashable | None) -> None:
        if delivery is not None:
            self._deliveries.pop(delivery, None)

    def call_filter(self, name: str, args: list[Any]) -> CallResult | None:
        """Run a FILTER callback; ``None`` when it is not defined (the filter accepts), or when it could
        not run and its failure policy is ``open``.

        A Lua error, or a process that could not run it under the ``closed`` policy, becomes an
        ``OrthancError`` (the caller refuses the input)."""
        assert CALLBACKS[name].kind is Kind.FILTER, f"{name} is not a filter"
        with self.pinned() as version:
            if not version.defines(name, CALLBACKS[name].role):
                return None
            journal = Journal(name)
            try:
                try:
                    with journals.recording(journal):
                        result = self._call(version, name, args)
                except SandboxCrashed as exc:
                    # The process died under this call (killed, or crashed on something else): it is
                    # restarted at once, and the input gets one more chance before the policy applies.
                    log.warning("%s: the sandbox died during the call (%s); trying once more", name, exc)
                    with journals.recording(journal):
                        result = self._call(version, name, args)
            except LuaError as exc:
                raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, f"{name}: {exc}") from exc
            except (SandboxCrashed, SandboxTimeout, SandboxUnavailable) as exc:
                policy = self.failure_policy.get(name, CLOSED)
                self._metrics("filter_fallbacks", name, policy)
                if policy == OPEN:
                    log.warning("%s could not run (%s); accepting (failure policy: open)", name, exc,
                                extra={"tenant": self.tenant})
                    return None
                raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA,
                                   f"{name} could not run ({exc}); refusing (failure policy: closed)") from exc
            except SandboxError as exc:
                raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, f"{name} could not run: {exc}") from exc
        return result if result.defined else None

    def execute(self, source: bytes) -> list[str]:
        """``/tools/execute-script``: run a chunk in the main process; its globals persist (until a
        restart or a reload)."""
        with self.pinned() as version:
            with self._observed(version, Role.MAIN, "execute-script"):
                return version.sandboxes[Role.MAIN].execute(source, "line")

    # -- what an operator sees ---------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """One entry per process of the current version (``Sandbox.status()`` plus ``Version``)."""
        return self._current.sandbox_status()

    def overview(self) -> dict[str, Any]:
        """``GET /lua/status``: the current version, quarantine, policies, processes, replaced versions."""
        with self._lock:
            current = self._current
            retiring = list(self._retiring)
        quarantined = current.quarantined_roles()
        return {
            **current.summary(),
            "Quarantined": bool(quarantined),
            "QuarantinedRoles": quarantined,
            "FilterFailurePolicy": dict(self.failure_policy),
            "LastReload": self._last_reload,
            "Sandboxes": current.sandbox_status(),
            "Retiring": [{**version.summary(), "Sandboxes": version.sandbox_status()} for version in retiring],
        }

    def retiring_count(self) -> int:
        return len(self._retiring)

    def process_totals(self) -> dict[str, dict[str, int]]:
        """Restarts and failures per role, over every version this set has run (for metrics)."""
        with self._lock:
            totals = {role: dict(numbers) for role, numbers in self._totals.items()}
            versions = [self._current, *self._retiring]
        for version in versions:
            for entry in version.sandbox_status():
                totals[entry["role"]]["restarts"] += entry["restarts"]
                totals[entry["role"]]["failures"] += entry["failures"]
        return totals

    def _watch_quarantine(self, version: ScriptVersion, role: Role, sandbox: Sandbox, outcome: str) -> None:
        """Log once when a process of this version is quarantined, and once when it serves again."""
        if outcome in ("timeout", "crashed", "unavailable"):
            if sandbox.state is State.QUARANTINED and role not in version.reported_quarantine:
                version.reported_quarantine.add(role)
                status = sandbox.status()
                affected = [name for name, callback in CALLBACKS.items()
                            if callback.kind is Kind.FILTER and callback.role is role]
                policies = ", ".join([f"{name} fails {self.failure_policy[name]}" for name in affected]
                                     + (["events wait"] if role is Role.MAIN else []))
                log.error("Lua scripts %s QUARANTINED: the %s process failed too often; calls are refused for "
                          "%.0f s (%s); last error: %s. POST /lua/reset (or SIGHUP) retries now.",
                          version.short, role.value, status["retry_in_s"] or 0, policies,
                          (status["last_error"] or {}).get("text"),
                          extra={"tenant": self.tenant, "role": role.value, "version": version.digest})
        elif outcome in ("ok", "lua_error") and role in version.reported_quarantine:
            version.reported_quarantine.discard(role)
            log.warning("Lua scripts %s: the %s process serves again after its quarantine", version.short, role.value,
                        extra={"tenant": self.tenant, "role": role.value})

    def _metrics_object(self) -> Any:
        return getattr(self.services, "metrics", None)

    def _metrics(self, instrument: str, *labels: str) -> None:
        metrics = self._metrics_object()
        if metrics is not None:
            getattr(metrics, instrument).labels(*labels).inc()

    def _on_log(self, sandbox: str, level: str, text: str) -> None:
        """A line of a sandbox process (``print`` included): escaped, attributed, rate-limited."""
        self.services.script_log.line(self.tenant, sandbox, level, text)
