"""The outbox dispatcher: delivers the durable events of a script set to its main process, in order,
at least once.

Each change is written to the outbox table in the same transaction as the change itself (see
``broker.core``). One dispatcher thread per script set reads the pending events in sequence order and
runs the matching NOTIFY callback. What a failure means:

- the script raised (``LuaError``): the event is handled, the error logged, as Orthanc logs and
  swallows errors of queued callbacks;
- the process died or hit the hard deadline (``SandboxCrashed``/``SandboxTimeout``): the event stays
  at the head of the queue with one more attempt, and is delivered again to the restarted process;
  after ``max_attempts`` it is parked (a poison event), visible through ``GET /lua/events/parked``;
- the sandbox is restarting or quarantined (``SandboxUnavailable``): nothing is counted, the
  dispatcher waits and tries again.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from broker.scripting.bridge import ScriptSet
from broker.scripting.callbacks import NOTIFY_BY_EVENT_KIND, stored_instance_args
from sandbox import LuaError, SandboxError, SandboxUnavailable

log = logging.getLogger("luabroker.events")

_ARGUMENT_BUILDERS = {
    "OnStoredInstance": lambda event: stored_instance_args(event.resource_id, event.payload),
}


class EventDispatcher:
    def __init__(self, outbox: Any, scripts: ScriptSet, max_attempts: int = 5, batch: int = 100) -> None:
        self.outbox = outbox
        self.scripts = scripts
        self.max_attempts = max_attempts
        self.batch = batch
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
            try:
                delivered_all = self._deliver_pending()
            except Exception:  # a bug here must not silently stop event delivery
                log.exception("The event dispatcher failed; retrying in 1 s")
                delivered_all = False
                time.sleep(1.0)
            if delivered_all:
                self._idle.set()
            self._wake.wait(timeout=1.0 if delivered_all else 0.2)

    def _deliver_pending(self) -> bool:
        """Deliver events until none is pending; False if one must wait for a restart."""
        while not self._stopping.is_set():
            events = self.outbox.pending(self.batch)
            if not events:
                return True
            for event in events:
                if not self._deliver(event):
                    return False
        return False

    def _deliver(self, event: Any) -> bool:
        callback = NOTIFY_BY_EVENT_KIND.get(event.kind)
        if callback is None or not self.scripts.defines(callback.name):
            self.outbox.mark_done(event.seq)
            return True
        try:
            self.scripts.notify(callback.name, _ARGUMENT_BUILDERS[callback.name](event))
        except LuaError as exc:
            log.error("Error while processing Lua events: %s failed for %s: %s", callback.name,
                      event.resource_id, exc)
        except SandboxUnavailable as exc:
            log.warning("%s for event %d waits for the sandbox: %s", callback.name, event.seq, exc)
            return False
        except SandboxError as exc:
            park = event.attempts + 1 >= self.max_attempts
            self.outbox.record_failure(event.seq, f"{type(exc).__name__}: {exc}", park)
            log.error("%s for event %d was cut (%s); %s", callback.name, event.seq, exc,
                      "parked after %d attempts" % (event.attempts + 1) if park else "it will be delivered again")
            return park  # a parked event no longer blocks the queue
        self.outbox.mark_done(event.seq)
        return True
