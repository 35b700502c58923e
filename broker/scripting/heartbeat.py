"""``OnHeartBeat``: called every ``LuaHeartBeatPeriod`` seconds, as Orthanc's heartbeat thread does.

The next call is ``period`` seconds after the *end* of the previous one, so a slow call delays the
next instead of piling calls up. It is not an event: not written to the outbox, not retried; an error
is logged. Only a script set that defines ``OnHeartBeat`` in its ``LuaScripts`` when the server starts
gets calls (as in Orthanc, defining it later through execute-script starts nothing). ``GetCurrentEvent()``
is nil there, and the Lua job helpers do nothing, as in Orthanc (``_CallWithJob`` is not used).
"""
from __future__ import annotations

import logging

from broker.core.ticker import Ticker
from broker.scripting.bridge import ScriptSet
from sandbox import LuaError, SandboxError

log = logging.getLogger("luabroker.heartbeat")


class HeartBeat:
    def __init__(self, scripts: ScriptSet, period: float) -> None:
        self.scripts = scripts
        self.period = period
        self._ticker = Ticker(f"heartbeat-{scripts.tenant}", self._beat, first_delay=period)

    @property
    def running(self) -> bool:
        return self._ticker.running

    def start(self) -> None:
        if self.period > 0 and self.scripts.defines("OnHeartBeat"):
            self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    def _beat(self) -> float:
        try:
            self.scripts.notify("OnHeartBeat", [])
        except LuaError as exc:
            log.error("Error in OnHeartBeat: %s", exc)
        except SandboxError as exc:
            log.warning("OnHeartBeat could not run: %s", exc)
        return self.period
