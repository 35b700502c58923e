"""Helpers of the operations tests (circuit breaker, reload, metrics): hostile Lua, DICOM echo, metric
values read from the real ``/tools/metrics-prometheus`` answer."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor

#: C-level pattern matching that backtracks for ages: the count hook never fires inside
#: ``string.find``, so only the broker's hard deadline (SIGKILL) stops it.
REDOS = "string.find(string.rep('a', 3e4), string.rep('a-', 20) .. 'b')"

#: Short deadlines so that each hung call costs one second.
FAST_LIMITS = {"CallTimeout": 0.5, "HardTimeout": 1}


def echo(running: Any) -> int:
    """C-ECHO over a fresh association; the status (or -1 if no association)."""
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running.dicom_port, ae_title=running.aet, evt_handlers=NODELAY_HANDLERS)
    if not assoc.is_established:
        return -1
    try:
        pause_reactor(assoc)  # else, on a loaded machine, pynetdicom can lose the response
        return assoc.send_c_echo().Status
    finally:
        assoc.release()


def sandbox(running: Any, role: str) -> dict[str, Any]:
    return next(s for s in running.http.get("/lua/status").json()["Sandboxes"] if s["role"] == role)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def metrics(running: Any) -> dict[tuple[str, frozenset], float]:
    """Every sample of the metrics endpoint: (name, labels) → value."""
    answer = running.http.get("/tools/metrics-prometheus")
    assert answer.status_code == 200, answer.text
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric(running: Any, name: str, **labels: str) -> float:
    return metrics(running).get((name, frozenset(labels.items())), 0.0)


class Watcher:
    """A thread that keeps asking the server for C-ECHO and ``GET /system`` and records every answer
    that is not a success, and the slowest one: the server must keep answering while Lua hangs."""

    def __init__(self, running: Any) -> None:
        self.running = running
        self.failures: list[str] = []
        self.rounds = 0
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with self.running.client() as http:
            while not self._stop.is_set():
                started = time.monotonic()
                status = echo(self.running)
                if status != 0:
                    self.failures.append(f"C-ECHO answered {status}")
                answer = http.get("/system")
                if answer.status_code != 200:
                    self.failures.append(f"GET /system answered {answer.status_code}")
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.rounds += 1
                self._stop.wait(0.05)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
