"""``Ticker``: a daemon thread that runs one task again and again, each time after the delay the last
run asked for, until it is stopped (the stability monitor, the Lua heartbeat)."""
from __future__ import annotations

import threading
from collections.abc import Callable


class Ticker:
    def __init__(self, name: str, task: Callable[[], float], first_delay: float = 0.0) -> None:
        """``task()`` runs, then returns how many seconds to wait before its next run; the first run
        comes after ``first_delay``. ``task`` handles its own errors: one that escapes stops the thread."""
        self._task = task
        self._first_delay = first_delay
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop and wait for the run in progress, if any (10 s at most)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        delay = self._first_delay
        while not self._stopping.wait(delay):
            delay = self._task()
