"""``OnHeartBeat``: called every ``LuaHeartBeatPeriod`` seconds, as Orthanc's heartbeat thread does.

The next call is ``period`` seconds after the *end* of the previous one, so a slow call delays the
next instead of piling calls up. It is not an event: not written to the outbox, not retried; an error
is logged. Only a script set that defines ``OnHeartBeat`` in its ``LuaScripts`` when the server starts
gets calls (as in Orthanc, defining it later through execute-script starts nothing). ``GetCurrentEvent()``
is nil there, and the Lua job helpers do nothing, as in Orthanc (``_CallWithJob`` is not used).
"""
from __future__ import annotations

import logging
import threading

from broker.scripting.bridge import ScriptSet
from sandbox import LuaError, SandboxError

log = logging.getLogger("luabroker.heartbeat")


class HeartBeat:
    def __init__(self, scripts: ScriptSet, period: float) -> None:
        self.scripts = scripts
        self.period = period
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{scripts.tenant}", daemon=True)

    def start(self) -> None:
        if self.period > 0 and self.scripts.defines("OnHeartBeat"):
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.wait(self.period):
            try:
                self.scripts.notify("OnHeartBeat", [])
            except LuaError as exc:
                log.error("Error in OnHeartBeat: %s", exc)
            except SandboxError as exc:
                log.warning("OnHeartBeat could not run: %s", exc)
