"""Helpers of the operations tests (circuit breaker, reload): hostile Lua, short deadlines, a sandbox's
status, and a watcher that keeps the server busy with C-ECHO and ``GET /system``."""
from __future__ import annotations

import threading
import time
from typing import Any

from tests.support.server import echo

#: C-level pattern matching that backtracks for ages: the count hook never fires inside
#: ``string.find``, so only the broker's hard deadline (SIGKILL) stops it.
REDOS = "string.find(string.rep('a', 3e4), string.rep('a-', 20) .. 'b')"

#: A hostile tenant (the noisy neighbour of tests/integration/test_tenants.py and bench/noisy_neighbour.py):
#: a ReDoS filter and a callback that always raises.
HOSTILE = f"""
function ReceivedInstanceFilter(tags, origin, info)
  if tags.PatientID == 'REDOS' then {REDOS} end
  return true
end
function OnStoredInstance(id)
  error('tenant A crashes on every instance')
end
"""

#: Its neighbour: counts each instance's first OnStoredInstance (print(COUNT) in execute-script).
COUNTING = """
SEEN, COUNT = {}, 0
function OnStoredInstance(id, tags, metadata, origin)
  if not SEEN[id] then SEEN[id] = true; COUNT = COUNT + 1 end
end
"""


#: Short deadlines so that each hung call costs one second.
FAST_LIMITS = {"CallTimeout": 0.5, "HardTimeout": 1}


def sandbox(running: Any, role: str) -> dict[str, Any]:
    return next(s for s in running.http.get("/lua/status").json()["Sandboxes"] if s["role"] == role)


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

    def __enter__(self) -> Watcher:
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

