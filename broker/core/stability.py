"""Stable resources: the thread that writes the ``Stable*`` events (Orthanc's unstable resources monitor).

A patient, study or series is unstable from the store of one of its instances until ``StableAge``
seconds pass without another; then its ``StablePatient``/``StableStudy``/``StableSeries`` event is
written, in the same transaction that forgets the deadline (``Store.emit_stable_events``). The
deadlines live in the index, so a resource still pending when the server stops becomes stable after
the restart, and its event is written once. Orthanc polls every 0.5 s; this thread sleeps until the
next deadline, at most that long (a new resource's deadline is ``StableAge`` away, never sooner).

With several processes, this runs in the one that holds the coordinator role (``design.md``).
"""
from __future__ import annotations

import logging
import time

from broker.core.store import Store
from broker.core.ticker import Ticker

log = logging.getLogger("luabroker.stability")

POLL_S = 0.5


class StabilityMonitor:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._ticker = Ticker("stability", self._check)

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    def _check(self) -> float:
        """Write the events of the resources that became stable; the wait until the next deadline."""
        try:
            self.store.emit_stable_events()
            deadline = self.store.next_stable_deadline()
        except Exception:  # the index is closing, or a bug: log, and try again later
            log.exception("Cannot check the unstable resources")
            deadline = None
        return POLL_S if deadline is None else min(max(deadline - time.time(), 0.0), POLL_S)
