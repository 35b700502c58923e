"""The versions of a script set over time: start, reload and swap, reset, retire, stop.

The set has one current ``ScriptVersion`` (the sources, their SHA-256, a main and a filter sandbox).
Every call pins the version it starts on (``pinned``), so a reload can build a new version in fresh
processes, swap it in atomically once both processes are ready, and stop the old one after its last
call. An event is delivered by exactly one version: the one current when its delivery started.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from broker.scripting.callbacks import Role
from broker.scripting.invoke import CallbackRunner
from broker.scripting.status import Meter, add_process_counts, no_process_counts
from broker.scripting.version import ScriptVersion, iso, read_modules, read_scripts, script_name
from sandbox import CallInfo, State

log = logging.getLogger("luabroker.scripting")

#: What an in-flight call of a replaced version is given to finish, at least (then its processes stop).
MIN_DRAIN_S = 60.0


class ReloadError(Exception):
    """A reload that was refused; the previous version stays. ``http_status`` is 400 when the scripts
    or the configuration are at fault (``str()`` names the file, and the line for a Lua error)."""

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


class Lifecycle:
    """The current version of one script set, the replaced ones still finishing, and the operator's
    reloads and resets (one at a time)."""

    def __init__(self, services: Any, tenant: str, rpc_handler: Callable[[str, list[Any], CallInfo], Any],
                 runner: CallbackRunner, meter: Meter) -> None:
        self.services = services
        self.tenant = tenant
        self.rpc_handler = rpc_handler
        self.runner = runner  # Finalize of the versions that stop
        self.meter = meter
        self._lock = threading.Lock()          # _current, _retiring, _stopped_counts
        self._reload_lock = threading.Lock()   # one reload or reset at a time
        self._reload_owner: int | None = None  # the thread holding it (Initialize may call /lua/reload)
        self._current = self._new_version(services.config)
        self._retiring: dict[ScriptVersion, threading.Thread] = {}
        self._stopped_counts = no_process_counts()  # restarts and failures of the versions that stopped
        self._roles: list[Role] = []  # the processes this server process runs, in start order
        self._stopping = False
        self.last_reload: dict[str, Any] | None = None
        self._listeners: list[Callable[[], None]] = []

    @property
    def current(self) -> ScriptVersion:
        return self._current

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

    def snapshot(self) -> tuple[ScriptVersion, list[ScriptVersion], dict[str, dict[str, int]]]:
        """The current version, the replaced ones still running, and (a copy of) the restarts and
        failures of those that stopped, taken together."""
        with self._lock:
            counts = {role: dict(numbers) for role, numbers in self._stopped_counts.items()}
            return self._current, list(self._retiring), counts

    def retiring_count(self) -> int:
        return len(self._retiring)

    def on_change(self, listener: Callable[[], None]) -> None:
        """``listener()`` is called after a reload or a reset (the event dispatcher retries at once)."""
        self._listeners.append(listener)

    def start_filter(self) -> None:
        """Load the scripts into the filter process; a script that fails to load raises
        ``ScriptLoadError`` (the server refuses to start, as Orthanc does)."""
        self._current.sandboxes[Role.FILTER].start()
        self._roles.append(Role.FILTER)

    def start_main(self) -> None:
        """Load the scripts into the main process and run ``Initialize``: called once the front ends
        are up, as Orthanc queues ``Initialize`` once the server is up; in a worker process, once it
        takes the coordinator role. Under the reload lock: a reload in progress ends first, so the main
        process started is the current version's."""
        with self._exclusive(wait=True):
            self._current.sandboxes[Role.MAIN].start()
            self._roles.append(Role.MAIN)
            self._audit_version("scripts.deployed", "server start", self._current)

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
            self.runner.finalize(current)
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
            if not self._roles:
                raise ReloadError("the scripts are not started yet; try again once the server is up", 503)
            started = time.monotonic()
            try:
                version = self._new_version(self._fresh_config())
            except Exception as exc:  # ConfigError: a bad configuration file, a missing script
                self._reload_failed(reason, str(exc))
                raise ReloadError(str(exc), 400) from exc
            try:
                version.start(self._roles)
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
            self.last_reload = {"At": iso(time.time()), "Reason": reason, "Succeeded": True,
                                "Version": version.digest, "Previous": old.digest, "Error": None,
                                "DurationS": round(time.monotonic() - started, 3)}
            self.meter.count("reloads", "ok")
            if Role.MAIN in self._roles:  # the process that runs the events speaks for the server
                self._audit_version("scripts.reloaded", reason, version, Previous=old.digest)
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
                self.meter.count("resets", role.value)
                self.meter.audit(self.tenant, "sandbox.reset", "POST /lua/reset", Role=role.value,
                                 Version=version.digest)
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
        modules = read_modules(scripts_config.lua_modules_path, scripts_config.base_dir)
        trusted = tuple(script_name(path, scripts_config.base_dir) for path in scripts_config.lua_trusted_scripts)
        return ScriptVersion(scripts, tenant=self.tenant, config=self.services.config,
                             rpc_handler=self.rpc_handler, on_log=self._on_log, trusted=trusted, modules=modules)

    def _fresh_config(self) -> Any:
        """The configuration file read again (the running one if it did not come from a file)."""
        config = self.services.config
        if config.path is None:
            return config
        from broker.config import Config

        return Config.load(config.path).tenant(self.tenant)

    def _reload_failed(self, reason: str, message: str) -> None:
        self.last_reload = {"At": iso(time.time()), "Reason": reason, "Succeeded": False,
                            "Version": None, "Previous": self._current.digest, "Error": message}
        self.meter.count("reloads", "failed")
        if Role.MAIN in self._roles:
            self.meter.audit(self.tenant, "scripts.reload_failed", reason, Version=self._current.digest, Error=message)
        log.error("Lua scripts NOT reloaded (%s), version %s stays: %s", reason, self._current.short, message,
                  extra={"tenant": self.tenant})

    def _audit_version(self, action: str, actor: str, version: ScriptVersion, **fields: Any) -> None:
        """A deployment in the audit log: the version's SHA-256 and each script's and module's."""
        self.meter.audit(self.tenant, action, actor, Version=version.digest, **fields, Scripts=[
            {"Path": script.path, "SHA256": _sha256(script.source)} for script in version.scripts], Modules=[
            {"Name": module.name, "Path": module.path, "SHA256": _sha256(module.source or b"")}
            for module in version.modules])

    def _retire(self, old: ScriptVersion) -> None:
        """Let the replaced version finish its calls, run its ``Finalize``, stop its processes."""
        limit = max(MIN_DRAIN_S, 4 * self.services.config.lua_limits.hard_timeout_s)
        if not old.wait_idle(limit, lambda: self._stopping):
            log.warning("Lua scripts %s: %d call(s) still running after %.0f s; stopping the old processes",
                        old.short, old.in_flight, limit)
        self.runner.finalize(old)
        old.stop()
        with self._lock:
            add_process_counts(self._stopped_counts, [old])
            self._retiring.pop(old, None)
        log.info("Lua scripts %s: stopped (replaced)", old.short)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("a script-change listener failed")

    def _on_log(self, sandbox: str, level: str, text: str) -> None:
        """A line of a sandbox process (``print`` included): escaped, attributed, rate-limited."""
        self.services.script_log.line(self.tenant, sandbox, level, text)


def _sha256(source: str | bytes) -> str:
    return hashlib.sha256(source if isinstance(source, bytes) else source.encode("utf-8")).hexdigest()
