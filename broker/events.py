"""The outbox dispatcher: delivers the durable events of a script set to its main process, in order,
at least once.

Each change is written to the outbox table in the same transaction as the change itself (see
``broker.core``). One dispatcher thread per script set reads the pending events in sequence order and
runs the callback that consumes each (``callbacks.for_event``: ``OnStoredInstance``, ``OnStable*``,
``OnDeleted*``, ``OnUpdated*``, ``OnJob*``) on the version of the scripts that is current when the
delivery starts (a reload never splits one event between two versions). What a failure means:

- the script raised (``LuaError``): with ``LuaSandbox.EventLuaErrors`` ``Park`` (the default), the
  event is tried again at once, and parked after ``max_attempts`` failed attempts, so that an event
  the script cannot handle now is kept for a replay once it is fixed; with ``Log``, the error is
  logged and the event is done, as Orthanc logs and swallows errors of queued callbacks;
- the process died or hit the hard deadline (``SandboxCrashed``/``SandboxTimeout``): the event stays
  at the head of the queue with one more attempt, and is delivered again to the restarted process;
  the writes the cut attempt made are not applied a second time (``broker.scripting.journal``);
  after ``max_attempts`` it is parked (a poison event), visible through ``GET /lua/events/parked``,
  and the queue moves on;
- the sandbox is restarting or quarantined (``SandboxUnavailable``): nothing is counted, the
  dispatcher waits (until the retry time, a reload or a reset) and tries again.

With the index in PostgreSQL, each delivery holds a claim on its event (``claims``), so that two nodes
never deliver one event at the same time, even while the coordinator role moves between them.

A callback can tell a redelivery: ``GetCurrentEvent()`` gives it the event's ``Seq`` and ``Attempt``.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from typing import Any, Protocol

from broker.core.outbox import Outbox, OutboxEvent
from broker.metrics import Metrics
from broker.scripting.bridge import ScriptSet
from broker.scripting.callbacks import for_event
from sandbox import LuaError, SandboxError, SandboxUnavailable

log = logging.getLogger("luabroker.events")


class Claims(Protocol):
    def claim(self, seq: int) -> AbstractContextManager[bool]: ...

    def close(self) -> None: ...


class EventDispatcher:
    def __init__(self, outbox: Outbox, scripts: ScriptSet, max_attempts: int = 5, batch: int = 100,
                 metrics: Metrics | None = None, park_lua_errors: bool = True, claims: Claims | None = None) -> None:
        """``claims``: with several nodes (PostgreSQL), each event is delivered under a claim that no
        other node's dispatcher holds (``broker.core.cluster.EventClaims``)."""
        self.outbox = outbox
        self.claims = claims
        self.scripts = scripts
        self.max_attempts = max_attempts
        self.park_lua_errors = park_lua_errors
        self.batch = batch
        self.metrics = metrics
        self._pause = 0.2        # how long to wait before retrying an event that could not be delivered
        self._waiting: int | None = None  # the event waiting for the sandbox (logged once)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"events-{scripts.tenant}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Called by the store after each commit that wrote an event."""
        self._idle.clear()
        self._wake.set()

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Deliver what is pending (bounded), then stop: ``Finalize`` must come after the last event."""
        self.wait_idle(drain_timeout)
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=drain_timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no event is pending (for a clean stop, and for tests)."""
        self.wake()
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            pause = 1.0
            try:
                delivered_all = self._deliver_pending()
                if not delivered_all:
                    pause = self._pause
            except Exception:  # a bug here must not silently stop event delivery
                log.exception("The event dispatcher failed; retrying in 1 s")
                delivered_all = False
                time.sleep(1.0)
            if delivered_all:
                self._idle.set()
            self._wake.wait(timeout=pause)

    def _deliver_pending(self) -> bool:
        """Deliver events until none is pending; False if one must wait for a restart."""
        while not self._stopping.is_set():
            events = self.outbox.pending(self.batch)
            if not events:
                return True
            for event in events:
                if not self._claimed_delivery(event):
                    return False
        return False

    def _claimed_delivery(self, event: OutboxEvent) -> bool:
        """Deliver ``event`` under its claim (``claims``): False while another node holds it. An event
        that no callback consumes is only marked done: no claim needed."""
        if self.claims is None or for_event(event) is None:
            return self._deliver(event)
        with self.claims.claim(event.seq) as claimed:
            if not claimed:
                return False  # the queue waits: the events after it may be of the same resource
            current = self.outbox.get(event.seq)  # it may have been delivered before the claim
            return current is None or current.state != "pending" or self._deliver(current)

    def _deliver(self, event: OutboxEvent) -> bool:
        callback = for_event(event)
        if callback is None:
            self._done(event, "skipped")
            return True
        try:
            result = self.scripts.notify(callback.name, callback.arguments(event), delivery=event.seq,
                                         attempt=event.attempts + 1)
        except LuaError as exc:
            log.error("Error while processing Lua events: %s failed for %s: %s", callback.name,
                      event.resource_id, exc)
            if self.park_lua_errors:
                return self._failed(event, callback.name, exc)
            self._done(event, "lua_error")
            return True
        except SandboxUnavailable as exc:
            if self._waiting != event.seq:
                self._waiting = event.seq
                log.warning("%s for event %d waits for the sandbox: %s", callback.name, event.seq, exc)
            retry_in = exc.retry_in_s
            self._pause = 0.2 if retry_in is None else min(max(retry_in, 0.05), 5.0)
            return False
        except SandboxError as exc:
            return self._failed(event, callback.name, exc)
        if callback.job and result is not None:
            self._submit_lua_job(callback.name, event, result.value)
        self._done(event, "done" if result is not None else "skipped")
        return True

    def _failed(self, event: OutboxEvent, name: str, exc: Exception) -> bool:
        """Count a failed attempt; True once the event is parked (it no longer blocks the queue)."""
        park = event.attempts + 1 >= self.max_attempts
        writes = self.scripts.delivery_writes(event.seq)
        error = f"{type(exc).__name__}: {exc}"
        if writes:
            error += f"; writes already applied (not repeated on retry): {', '.join(writes[:20])}"
        self.outbox.record_failure(event.seq, error[:4000], park)
        lua_error = isinstance(exc, LuaError)
        if not lua_error:
            log.error("%s for event %d was cut (%s); %s", name, event.seq, exc,
                      f"parked after {event.attempts + 1} attempts" if park else "it will be delivered again")
        elif park:
            log.error("%s for event %d parked after %d failed attempts", name, event.seq, event.attempts + 1)
        if park:
            self.scripts.end_delivery(event.seq)
        self._count("parked" if park else ("lua_error" if lua_error else "cut"))
        self._pause = 0.0
        return park

    def _submit_lua_job(self, name: str, event: OutboxEvent, operations: Any) -> None:
        """The operations a [J] callback recorded (SendToModality & co.), once it returned successfully."""
        lua_jobs = getattr(self.scripts.services, "lua_jobs", None)
        if lua_jobs is None:
            if operations:
                log.error("Error while processing Lua events: %s recorded %d operation(s), but this server has "
                          "no jobs engine", name, len(operations) if isinstance(operations, list) else 1)
            return
        lua_jobs.submit(operations, f"{name}({event.resource_id})")

    def _done(self, event: OutboxEvent, outcome: str) -> None:
        self.outbox.mark_done(event.seq)
        self.scripts.end_delivery(event.seq)
        if self._waiting is not None:
            log.warning("Event delivery resumed")
            self._waiting = None
        self._count(outcome)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.event_deliveries.labels(outcome).inc()
