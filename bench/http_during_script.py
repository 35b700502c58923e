"""HTTP while a script spins: latency of ``GET /system`` on an idle luabroker, then while
``/tools/execute-script`` runs ``while true do end`` in the main sandbox (issue 7, finding 1).

The server is started fresh as a separate process (as ``bench/ingest.py`` does). Orthanc is not
measured side by side: it runs execute-script under the lock that its HTTP filter check takes, and has
no limit on a script's time, so the same spin makes its HTTP wait until the server is killed.

    python -m bench.http_during_script [--requests 300]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.ingest import start


def latencies(client: httpx.Client, count: int) -> list[float]:
    """Seconds of each of ``count`` sequential ``GET /system``."""
    out = []
    for _ in range(count):
        began = time.perf_counter()
        assert client.get("/system").status_code == 200
        out.append(time.perf_counter() - began)
    return out


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return (f"median {statistics.median(values) * 1000:6.2f} ms, p95 {p95 * 1000:6.2f} ms, "
            f"max {ordered[-1] * 1000:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        process, http, _, _ = start("luabroker", Path(tmp), "", ExecuteLuaEnabled=True,
                                    LuaSandbox={"CallTimeout": 60, "HardTimeout": 70})
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=30) as client:
                latencies(client, 50)  # warm-up
                idle = latencies(client, args.requests)
                spin = threading.Thread(target=lambda: httpx.post(f"http://127.0.0.1:{http}/tools/execute-script",
                                                                  content="while true do end", timeout=120))
                spin.start()
                time.sleep(0.5)
                busy = client.get("/lua/status").json()["Sandboxes"]
                assert any(s["busy_with"] == "execute-script" for s in busy), "the spin did not start"
                spinning = latencies(client, args.requests)
                still = any(s["busy_with"] == "execute-script" for s in client.get("/lua/status").json()["Sandboxes"])
                assert still, "the spin ended before the measurement did; raise CallTimeout"
        finally:
            process.terminate()
            process.wait(30)
    print(f"GET /system, {args.requests} sequential requests")
    print(f"  idle server:                    {summary(idle)}")
    print(f"  execute-script spinning in Lua: {summary(spinning)}")
    print(f"  ratio spinning/idle (median):   {statistics.median(spinning) / statistics.median(idle):.2f}")


if __name__ == "__main__":
    main()
