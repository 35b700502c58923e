"""Running callbacks on a version of the scripts, and what a failure means for each kind.

Every call is counted and timed (``observed``). A FILTER whose process is dead, timed out or
quarantined is answered by its failure policy (``LuaSandbox.FilterFailurePolicy``, closed by default:
the input is refused). A NOTIFY lets ``LuaError`` and ``SandboxError`` through (the outbox dispatcher
decides what they mean) and keeps the journal of a cut delivery for the next attempt. A Lua error or
a wrong return type always fails, as in Orthanc.

The caller pins the version (``Lifecycle.pinned``) and passes it in: this module knows nothing of
reloads.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from broker.errors import ErrorCode, OrthancError
from broker.scripting import journal as journals
from broker.scripting.callbacks import CALLBACKS, Kind, Role
from broker.scripting.journal import Journal
from broker.scripting.status import Meter, watch_quarantine
from broker.scripting.values import to_lua
from broker.scripting.version import ScriptVersion
from sandbox import CallResult, LuaError, SandboxCrashed, SandboxError, SandboxTimeout, SandboxUnavailable

log = logging.getLogger("luabroker.scripting")

#: How a call ended, by the exception that ended it (the ``outcome`` label of the call metrics).
_OUTCOMES: dict[type[BaseException], str] = {
    LuaError: "lua_error", SandboxTimeout: "timeout", SandboxCrashed: "crashed", SandboxUnavailable: "unavailable",
}

CLOSED, OPEN = "closed", "open"


class CallbackRunner:
    """Calls into the processes of a version for one script set: its filter policies, the journals of
    its deliveries, its metrics."""

    def __init__(self, tenant: str, meter: Meter, configured_policy: Mapping[str, str],
                 roles: Mapping[str, Role]) -> None:
        self.tenant = tenant
        self.meter = meter
        self.roles = roles  # which process runs each callback (``callbacks.roles``)
        self.failure_policy: dict[str, str] = {
            name: configured_policy.get(name, CLOSED)
            for name, callback in CALLBACKS.items() if callback.kind is Kind.FILTER}
        self._deliveries: dict[Hashable, Journal] = {}

    def call(self, version: ScriptVersion, name: str, args: list[Any], *, keep_strings: bool = False) -> CallResult:
        """One call into the version's process for ``name``, counted and timed."""
        callback = CALLBACKS[name]
        role = self.roles[name]
        sandbox = version.sandboxes[role]
        with self.observed(version, role, name):
            if not callback.job:
                return sandbox.call(name, to_lua(args), keep_strings=keep_strings or callback.keep_strings)
            # Orthanc's [J] callbacks: _InitializeJob(), the callback, then _AccessJob() as the value
            # (keepStrings=false), in one round trip (lua-runtime/jobs.lua); false: not a function.
            result = sandbox.call("_CallWithJob", [name, *to_lua(args)], keep_strings=False)
            return CallResult(result.value is not False, None if result.value is False else result.value,
                              result.prints)

    @contextmanager
    def observed(self, version: ScriptVersion, role: Role, name: str) -> Iterator[None]:
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
            self.meter.observe_call(name, role, None if outcome == "unavailable" else time.perf_counter() - started,
                                    outcome)
            watch_quarantine(version, role, outcome, self.failure_policy, self.tenant, self.meter)

    def notify(self, version: ScriptVersion, name: str, args: list[Any], *,
               delivery: Hashable | None = None, attempt: int | None = None) -> CallResult | None:
        """Run a NOTIFY callback; ``None`` when the version does not define it.

        ``LuaError`` (the script failed) and ``SandboxError`` (the process died, timed out or is
        quarantined) propagate: the outbox dispatcher decides what they mean. With ``delivery`` (the
        event's key), the writes of an attempt that raised or was cut are remembered, and the next
        attempt of the same delivery does not apply them again (see ``journal``); ``end_delivery``
        forgets them (the dispatcher calls it once the event is done or parked).
        ``attempt``: which attempt at the delivery this is (1 = the first), for ``GetCurrentEvent()``."""
        assert CALLBACKS[name].kind is Kind.NOTIFY, f"{name} is not a notification"
        if not version.defines(name, self.roles[name]):
            self.end_delivery(delivery)
            return None
        journal = None if delivery is None else self._deliveries.setdefault(delivery, Journal(name, delivery))
        with journals.recording(journal, attempt):
            try:
                result = self.call(version, name, args)
            except (LuaError, SandboxCrashed, SandboxTimeout, SandboxUnavailable):
                raise  # raised, cut or not started: the journal is kept for a next attempt
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

    def call_filter(self, version: ScriptVersion, name: str, args: list[Any]) -> CallResult | None:
        """Run a FILTER callback; ``None`` when it is not defined (the filter accepts), or when it could
        not run and its failure policy is ``open``.

        A Lua error, or a process that could not run it under the ``closed`` policy, becomes an
        ``OrthancError`` (the caller refuses the input)."""
        assert CALLBACKS[name].kind is Kind.FILTER, f"{name} is not a filter"
        if not version.defines(name, self.roles[name]):
            return None
        journal = Journal(name)
        try:
            try:
                with journals.recording(journal):
                    result = self.call(version, name, args)
            except SandboxCrashed as exc:
                # The process died under this call (killed, or crashed on something else): it is
                # restarted at once, and the input gets one more chance before the policy applies.
                log.warning("%s: the sandbox died during the call (%s); trying once more", name, exc)
                with journals.recording(journal):
                    result = self.call(version, name, args)
        except LuaError as exc:
            raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, f"{name}: {exc}") from exc
        except (SandboxCrashed, SandboxTimeout, SandboxUnavailable) as exc:
            policy = self.failure_policy.get(name, CLOSED)
            self.meter.count("filter_fallbacks", name, policy)
            if policy == OPEN:
                log.warning("%s could not run (%s); accepting (failure policy: open)", name, exc,
                            extra={"tenant": self.tenant})
                return None
            raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA,
                               f"{name} could not run ({exc}); refusing (failure policy: closed)") from exc
        except SandboxError as exc:
            raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, f"{name} could not run: {exc}") from exc
        return result if result.defined else None

    def execute(self, version: ScriptVersion, source: bytes) -> list[str]:
        """Run a chunk in the version's main process (``/tools/execute-script``)."""
        with self.observed(version, Role.MAIN, "execute-script"):
            return version.sandboxes[Role.MAIN].execute(source, "line")

    def finalize(self, version: ScriptVersion) -> None:
        """``Finalize`` of a version that stops; its failure is logged, never raised."""
        if not version.defines("Finalize", Role.MAIN):
            return
        try:
            self.call(version, "Finalize", CALLBACKS["Finalize"].arguments())
        except LuaError as exc:
            log.warning("Finalize of version %s failed: %s", version.short, exc)
        except SandboxError as exc:
            log.warning("Finalize of version %s could not run: %s", version.short, exc)
