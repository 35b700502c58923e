"""``GET /patients`` on an empty archive under load, without and with a Lua ``IncomingHttpRequestFilter``.

The load generator is ``wrk`` with 2 threads and 8 keep-alive connections, as in issue 12; a run with a
non-2xx answer or a socket error fails rather than reporting the rate of errors. Where ``wrk`` is not
installed, a Python generator (httpx, one thread and one connection per wrk connection) stands in: it
saturates much sooner, so its figures are lower bounds for both servers, and the runner says so.
Each server is started fresh, warmed for a second, then measured.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.ingest import start

FILTER = """function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  return true
end
"""

THREADS = 2
CONNECTIONS = 8
WARMUP_S = 1


def generator() -> str:
    """What produces the load: ``wrk <version>``, or the Python fallback."""
    if shutil.which("wrk") is None:
        return "Python httpx threads (wrk is not installed: figures are lower bounds)"
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (out.stdout + out.stderr).splitlines()[0].split(" Copyright")[0]


def wrk_rate(url: str, seconds: float) -> float:
    """Requests/s that ``wrk`` reports; raises on any error answer or socket error."""
    out = subprocess.run(["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", url],
                         capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout + out.stderr
    if out.returncode != 0 or "Non-2xx" in text or "Socket errors" in text:
        raise RuntimeError(f"wrk on {url} saw errors:\n{text}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if match is None:
        raise RuntimeError(f"no rate in wrk's output:\n{text}")
    return float(match.group(1))


def python_rate(url: str, seconds: float) -> float:
    """Requests/s of ``CONNECTIONS`` threads, each with its own keep-alive connection, for ``seconds``."""
    counts = [0] * CONNECTIONS
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        with httpx.Client(timeout=30) as client:
            while time.perf_counter() < stop:
                answer = client.get(url)
                if answer.status_code != 200:
                    errors.append(f"{answer.status_code} {answer.text[:200]}")
                    return
                counts[index] += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"GET {url} failed: {errors[0]}")
    return sum(counts) / (time.perf_counter() - began)


def rate(url: str, seconds: float) -> float:
    return wrk_rate(url, seconds) if shutil.which("wrk") else python_rate(url, seconds)


def requests_per_second(kind: str, with_filter: bool, seconds: float, workers: int = 1) -> float:
    """``GET /patients`` per second on a fresh, empty ``kind`` server (with the filter script or none);
    ``workers``: luabroker's ``Workers`` option."""
    with tempfile.TemporaryDirectory(prefix=f"bench-http-{kind}-") as tmp:
        process, http, _, _ = start(kind, Path(tmp), FILTER if with_filter else "", workers=workers)
        try:
            url = f"http://127.0.0.1:{http}/patients"
            assert httpx.get(url, timeout=30).json() == [], "the archive is not empty"
            rate(url, WARMUP_S)
            return rate(url, seconds)
        finally:
            process.terminate()
            process.wait(30)
