"""What a sandbox's processes hold in memory, read from ``/proc/<pid>/status``, for the status page.

``rss_kib`` is ``VmRSS``: every resident page the process maps, including the pages of shared
libraries (libc, liblua) that all sandboxes and the broker share, so the figures of several processes
must not be added up as if they were private. ``anon_kib`` is ``RssAnon``: the pages only this
process holds (the Lua heap, stacks, malloc's arenas); that is what another sandbox process costs.
"""
from __future__ import annotations

from typing import Any

from sandbox.process import ChildProcess


def figures(pid: int) -> dict[str, int] | None:
    """``{"rss_kib", "anon_kib"}`` of ``pid``, or None when it is gone or cannot be read."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon"):
                    found[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if "VmRSS" not in found:
        return None  # a zombie: no memory left to report
    return {"rss_kib": found["VmRSS"], "anon_kib": found.get("RssAnon", 0)}


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def of(process: ChildProcess | None) -> dict[str, Any] | None:
    """The interpreter's figures and, under bubblewrap, its monitor's; ``rss_kib`` and ``anon_kib``
    are their sums (see the module docstring about shared pages)."""
    if process is None:
        return None
    pids = [("lua", process.interpreter_pid)]
    if process.wrapper is not None and process.pid != process.interpreter_pid:
        reaper = parent_pid(process.interpreter_pid)
        if reaper not in (None, process.pid):  # a bubblewrap without --as-pid-1 keeps its own pid 1
            pids.append((f"{process.wrapper} pid 1", reaper))
        pids.append((process.wrapper, process.pid))
    processes = []
    for what, pid in pids:
        numbers = figures(pid)
        if numbers is not None:
            processes.append({"process": what, "pid": pid, **numbers})
    return {"rss_kib": sum(p["rss_kib"] for p in processes), "anon_kib": sum(p["anon_kib"] for p in processes),
            "processes": processes}
