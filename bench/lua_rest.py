"""Wall time of one ``RestApiGet('/patients')`` made from Lua, in luabroker and in Orthanc.

Method: one ``POST /tools/execute-script`` runs ``calls`` of ``RestApiGet('/patients')`` in a loop; the
same script with the call replaced by a no-op is timed too, and the per-call time is the difference of
the two request times divided by ``calls``, so the HTTP request, the compilation of the script and the
loop itself cancel out. The two scripts alternate ``repeats`` times and the medians are subtracted.

Why not a clock inside Lua: both sandboxes have ``os.clock``, but it is the CPU time of the process.
In Orthanc the call runs in the same process, so it would be close to wall time; in luabroker the Lua
process waits while the broker answers the call, so ``os.clock`` would leave the call out. ``os.time``
counts whole seconds. The archive is empty (each server started fresh), so ``/patients`` is ``[]``.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.ingest import start

CALLS = """local answered = 0
for i = 1, {n} do
  if RestApiGet('/patients') ~= nil then answered = answered + 1 end
end
if answered ~= {n} then error('RestApiGet failed ' .. ({n} - answered) .. ' times') end
"""

EMPTY = """local answered = 0
for i = 1, {n} do
  if i ~= nil then answered = answered + 1 end
end
if answered ~= {n} then error('the loop did not run') end
"""


def timed(client: httpx.Client, script: str) -> float:
    """Seconds of one execute-script request, which must succeed."""
    began = time.perf_counter()
    answer = client.post("/tools/execute-script", content=script)
    seconds = time.perf_counter() - began
    if answer.status_code != 200:
        raise RuntimeError(f"execute-script answered {answer.status_code}: {answer.text[:300]}")
    return seconds


def per_call(kind: str, calls: int, repeats: int) -> float:
    """Microseconds per ``RestApiGet('/patients')`` in a fresh ``kind`` server (median of ``repeats``)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-luarest-{kind}-") as tmp:
        process, http, _, _ = start(kind, Path(tmp), "", ExecuteLuaEnabled=True)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=120) as client:
                timed(client, CALLS.format(n=min(calls, 200)))  # warm-up: first calls, caches, sandbox
                timed(client, EMPTY.format(n=calls))
                full, empty = [], []
                for _ in range(repeats):
                    full.append(timed(client, CALLS.format(n=calls)))
                    empty.append(timed(client, EMPTY.format(n=calls)))
        finally:
            process.terminate()
            process.wait(30)
    return (statistics.median(full) - statistics.median(empty)) / calls * 1e6
