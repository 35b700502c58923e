"""``ScriptSet``: the scripts of one tenant as the core and the front ends see them, and the gateway
between them and the sandbox processes.

A facade over four parts, each in its own module and depending only on those after it:
``lifecycle`` (the current version: start, reload and swap, reset, retire, stop), ``invoke`` (running
callbacks: filters and their failure policy, notifications and their journals), ``dispatch`` (every
``rpc`` from the processes to a built-in) and ``status`` (what an operator sees, the metrics).

The filter process serves the ingest path (``ReceivedInstanceFilter``), so a slow ``OnStoredInstance``
in the main process never stalls C-STORE. Every call runs on the version current when it started.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from broker.scripting import status
from broker.scripting.callbacks import roles
from broker.scripting.dispatch import BuiltinDispatcher
from broker.scripting.invoke import CallbackRunner
from broker.scripting.lifecycle import Lifecycle
from broker.scripting.version import ScriptVersion
from sandbox import CallResult


class ScriptSet:
    def __init__(self, services: Any, tenant: str = "default") -> None:
        self.services = services
        self.tenant = tenant
        meter = status.Meter(services)
        self.runner = CallbackRunner(tenant, meter, services.config.lua_filter_failure_policy,
                                     roles(services.config.supervised))
        self.lifecycle = Lifecycle(services, tenant, BuiltinDispatcher(services, tenant, meter), self.runner, meter)

    # -- the current version -------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """SHA-256 of the current sources (names and contents, in load order)."""
        return self.lifecycle.current.digest

    def on_change(self, listener: Callable[[], None]) -> None:
        """``listener()`` is called after a reload or a reset (the event dispatcher retries at once)."""
        self.lifecycle.on_change(listener)

    def start_filter(self) -> None:
        self.lifecycle.start_filter()

    def start_main(self) -> None:
        self.lifecycle.start_main()

    def stop(self) -> None:
        self.lifecycle.stop()

    def reload(self, reason: str = "reload", *, wait: bool = True) -> ScriptVersion:
        return self.lifecycle.reload(reason, wait=wait)

    def reset(self, *, wait: bool = True) -> list[str]:
        return self.lifecycle.reset(wait=wait)

    # -- callbacks -----------------------------------------------------------------------------------
    def defines(self, name: str) -> bool:
        """Whether the current version may define the callback: the fast path that skips a round
        trip per instance (see ``ScriptVersion.defines``)."""
        return self.lifecycle.current.defines(name, self.runner.roles[name])

    def notify(self, name: str, args: list[Any], *, delivery: Hashable | None = None,
               attempt: int | None = None) -> CallResult | None:
        """Run a NOTIFY callback on the current version (``CallbackRunner.notify``)."""
        with self.lifecycle.pinned() as version:
            return self.runner.notify(version, name, args, delivery=delivery, attempt=attempt)

    def delivery_writes(self, delivery: Hashable) -> list[str]:
        return self.runner.delivery_writes(delivery)

    def end_delivery(self, delivery: Hashable | None) -> None:
        self.runner.end_delivery(delivery)

    def call_filter(self, name: str, args: list[Any]) -> CallResult | None:
        """Run a FILTER callback on the current version (``CallbackRunner.call_filter``)."""
        with self.lifecycle.pinned() as version:
            return self.runner.call_filter(version, name, args)

    def execute(self, source: bytes) -> list[str]:
        """``/tools/execute-script``: run a chunk in the main process; its globals persist (until a
        restart or a reload)."""
        with self.lifecycle.pinned() as version:
            return self.runner.execute(version, source)

    # -- what an operator sees -----------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """One entry per process of the current version (``Sandbox.status()`` plus ``Version``)."""
        return self.lifecycle.current.sandbox_status()

    def overview(self) -> dict[str, Any]:
        """``GET /lua/status``."""
        current, retiring, _ = self.lifecycle.snapshot()
        return status.overview(current, retiring, self.lifecycle.last_reload, self.runner.failure_policy)

    def retiring_count(self) -> int:
        return self.lifecycle.retiring_count()

    def process_totals(self) -> dict[str, dict[str, int]]:
        """Restarts and failures per role, over every version this set has run (for metrics)."""
        current, retiring, totals = self.lifecycle.snapshot()
        status.add_process_counts(totals, [current, *retiring])
        return totals
