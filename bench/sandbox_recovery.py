"""Recovery after a kill, and idle memory: how soon ``/tools/execute-script`` answers again once the
main sandbox's interpreter was SIGKILLed, and the memory of every idle sandbox process (issue 12,
item 5).

The server is started fresh as a separate process (as ``bench/http_during_script.py`` does). Each
round waits until the main sandbox is READY (and its spare warm, when it has one) and idle, kills its
interpreter (the pid in ``/lua/status``) and times, from the kill, ``POST /tools/execute-script``
sent back to back until one answers 200; the requests that failed in between are counted. A short
``QuarantineWindow`` and a pause between rounds make every kill the first failure of its burst, whose
restart the schedule makes at once, so no backoff delay is measured. Memory is ``VmRSS`` (every
resident page, shared libraries included) and ``RssAnon`` (the pages only that process holds) from
``/proc/<pid>/status``, for the interpreter, bubblewrap's pid 1 and outer process, and the spare's.

    python -m bench.sandbox_recovery [--rounds 20]
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.ingest import start
from sandbox.memory import figures, parent_pid

#: Seconds between rounds: longer than the quarantine window, so each kill starts a new burst.
PAUSE_S = 1.5
WINDOW_S = 1.0


def memory_kib(pid: int | None) -> str:
    """``VmRSS/RssAnon/Pss KiB`` of ``pid`` (all resident pages / the pages only it holds / its share of
    every page it maps), or "gone"."""
    found = figures(pid) if pid else None
    return f"{found['rss_kib']}/{found['anon_kib']}/{found.get('pss_kib', '?')} KiB" if found else "gone"


def main_sandbox(client: httpx.Client) -> dict[str, Any]:
    return next(s for s in client.get("/lua/status").json()["Sandboxes"] if s["role"] == "main")


def wait_settled(client: httpx.Client, old_pid: int | None) -> dict[str, Any]:
    """The main sandbox once it serves a new process, idle, with its spare warm (if it keeps one)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        main = main_sandbox(client)
        spare = main.get("spare")
        if (main["state"] == "READY" and main["pid"] and main["pid"] != old_pid and main["busy_with"] is None
                and (spare is None or spare.get("warm"))):
            return main
        time.sleep(0.02)
    raise RuntimeError(f"the main sandbox did not settle: {main_sandbox(client)}")


def recovery(client: httpx.Client, pid: int) -> tuple[float, list[str]]:
    """SIGKILL ``pid``; seconds until execute-script answers 200, and the failed answers before it."""
    failed = []
    os.kill(pid, signal.SIGKILL)
    began = time.perf_counter()
    while True:
        answer = client.post("/tools/execute-script", content="print(42)")
        if answer.status_code == 200:
            assert answer.text == "42\n", answer.text
            return time.perf_counter() - began, failed
        details = re.sub(r"\d+", "N", answer.json().get("Details", ""))  # one line per kind of failure
        failed.append(f"{answer.status_code} {details[:160]}")
        if time.perf_counter() - began > 30:
            raise RuntimeError(f"no answer 30 s after the kill: {answer.status_code} {answer.text[:300]}")


def rss_report(client: httpx.Client) -> list[str]:
    """One line per sandbox: the interpreter, bubblewrap's pid 1 and outer process, the spare's."""
    lines = []
    for sandbox in client.get("/lua/status").json()["Sandboxes"]:
        pid, wrapper = sandbox["pid"], sandbox.get("wrapper_pid")
        parts = [f"lua {memory_kib(pid)}"]
        if wrapper:
            reaper = parent_pid(pid)
            if reaper != wrapper:
                parts.append(f"bwrap pid 1 {memory_kib(reaper)}")
            parts.append(f"bwrap outer {memory_kib(wrapper)}")
        spare = sandbox.get("spare") or {}
        if spare.get("pid"):
            parts.append(f"spare: lua {memory_kib(spare['pid'])}, bwrap pid 1 {memory_kib(parent_pid(spare['pid']))}, "
                         f"bwrap outer {memory_kib(spare.get('wrapper_pid'))}")
        lines.append(f"  {sandbox['role']:<7} " + ", ".join(parts))
    return lines


def ms(values: list[float]) -> str:
    return f"best {min(values) * 1000:6.1f} ms, median {statistics.median(values) * 1000:6.1f} ms, " \
           f"max {max(values) * 1000:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        process, http, _, _ = start("luabroker", Path(tmp), "", ExecuteLuaEnabled=True,
                                    LuaSandbox={"QuarantineWindow": WINDOW_S})
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=30) as client:
                for _ in range(20):  # warm-up
                    assert client.post("/tools/execute-script", content="print(42)").status_code == 200
                idle = []
                for _ in range(50):
                    began = time.perf_counter()
                    client.post("/tools/execute-script", content="print(42)")
                    idle.append(time.perf_counter() - began)
                time.sleep(PAUSE_S)
                rss = rss_report(client)
                times, failures = [], []
                pid = wait_settled(client, None)["pid"]
                for _ in range(args.rounds):
                    seconds, failed = recovery(client, pid)
                    times.append(seconds)
                    failures += failed
                    time.sleep(PAUSE_S)
                    main = wait_settled(client, pid)
                    pid = main["pid"]
                last = main.get("last_start")
        finally:
            process.terminate()
            process.wait(30)
    print(f"execute-script 'print(42)' on an idle main sandbox: {ms(idle)}")
    print(f"kill -9 of the main interpreter -> execute-script answered, {args.rounds} rounds: {ms(times)}")
    print(f"  answers that failed in between: {len(failures)}; the last start: {last}")
    for text in sorted(set(failures)):
        print(f"    {failures.count(text)} x {text}")
    print("idle memory (VmRSS/RssAnon/Pss):")
    print("\n".join(rss))


if __name__ == "__main__":
    main()
