"""What an operator sees of a script set and what it counts: ``GET /lua/status``, the restarts and
failures behind the sandbox metrics, the call metrics, and the log lines of a quarantine.

Plain functions over versions (and a ``Meter``), so the lifecycle, the dispatch and the callback
runner can all report here without knowing one another.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from broker.scripting.callbacks import CALLBACKS, Kind, Role
from broker.scripting.version import ScriptVersion
from sandbox import State

log = logging.getLogger("luabroker.scripting")


class Meter:
    """The script set's instruments. Looked up at each use: a server may run without metrics, and
    ``services.metrics`` is set after the script set is built."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def _metrics(self) -> Any:
        return getattr(self.services, "metrics", None)

    def count(self, instrument: str, *labels: str) -> None:
        metrics = self._metrics()
        if metrics is not None:
            getattr(metrics, instrument).labels(*labels).inc()

    def observe_call(self, name: str, role: Role, seconds: float | None, outcome: str) -> None:
        metrics = self._metrics()
        if metrics is not None:
            metrics.observe_call(name, role.value, seconds, outcome)

    def audit(self, tenant: str, action: str, actor: str, **fields: Any) -> None:
        """An entry of the audit log (``AuditLog.note``), when the server keeps one."""
        audit = getattr(self.services, "audit", None)
        if audit is not None:
            audit.note(tenant, action, actor, **fields)


def no_process_counts() -> dict[str, dict[str, int]]:
    """Restarts and failures per role, all zero: where the counts of stopped versions accumulate."""
    return {role.value: {"restarts": 0, "failures": 0} for role in Role}


def add_process_counts(totals: dict[str, dict[str, int]], versions: Iterable[ScriptVersion]) -> None:
    """Add the restarts and failures of ``versions``' processes to ``totals`` (in place)."""
    for version in versions:
        for entry in version.sandbox_status():
            totals[entry["role"]]["restarts"] += entry["restarts"]
            totals[entry["role"]]["failures"] += entry["failures"]


def overview(current: ScriptVersion, retiring: Iterable[ScriptVersion], last_reload: dict[str, Any] | None,
             failure_policy: Mapping[str, str]) -> dict[str, Any]:
    """``GET /lua/status``: the current version, quarantine, policies, processes, replaced versions."""
    quarantined = current.quarantined_roles()
    return {
        **current.summary(),
        "Quarantined": bool(quarantined),
        "QuarantinedRoles": quarantined,
        "FilterFailurePolicy": dict(failure_policy),
        "LastReload": last_reload,
        "Sandboxes": current.sandbox_status(),
        "Retiring": [{**version.summary(), "Sandboxes": version.sandbox_status()} for version in retiring],
    }


def watch_quarantine(version: ScriptVersion, role: Role, outcome: str, failure_policy: Mapping[str, str],
                     tenant: str, meter: Meter) -> None:
    """Log once when a process of this version is quarantined (and write it in the audit log), and
    once when it serves again."""
    sandbox = version.sandboxes[role]
    if outcome in ("timeout", "crashed", "unavailable"):
        if sandbox.state is State.QUARANTINED and role not in version.reported_quarantine:
            version.reported_quarantine.add(role)
            status = sandbox.status()
            affected = [name for name, callback in CALLBACKS.items()
                        if callback.kind is Kind.FILTER and callback.role is role]
            policies = ", ".join([f"{name} fails {failure_policy[name]}" for name in affected]
                                 + (["events wait"] if role is Role.MAIN else []))
            log.error("Lua scripts %s QUARANTINED: the %s process failed too often; calls are refused for "
                      "%.0f s (%s); last error: %s. POST /lua/reset (or SIGHUP) retries now.",
                      version.short, role.value, status["retry_in_s"] or 0, policies,
                      (status["last_error"] or {}).get("text"),
                      extra={"tenant": tenant, "role": role.value, "version": version.digest})
            meter.audit(tenant, "sandbox.quarantined", "server", Role=role.value, Version=version.digest,
                        RetryInS=status["retry_in_s"], LastError=(status["last_error"] or {}).get("text"))
    elif outcome in ("ok", "lua_error") and role in version.reported_quarantine:
        version.reported_quarantine.discard(role)
        log.warning("Lua scripts %s: the %s process serves again after its quarantine", version.short, role.value,
                    extra={"tenant": tenant, "role": role.value})
