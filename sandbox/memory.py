"""What a sandbox's processes hold in memory, read from ``/proc/<pid>/status`` and
``/proc/<pid>/smaps_rollup``, for the status page.

``rss_kib`` is ``VmRSS``: every resident page the process maps, including the pages of shared
libraries (libc, liblua) that all sandboxes and the broker share, so the figures of several processes
must not be added up as if they were private. ``anon_kib`` is ``RssAnon``: the pages only this
process holds (the Lua heap, stacks, malloc's arenas); that is what another sandbox process costs.
``pss_kib`` is ``Pss``, the proportional set size: each resident page divided by the number of
processes that map it, so the figures of several processes add up to what they cost the machine
together (the measure of ``smem``). It is there only where the kernel lets this process read
``smaps_rollup`` (Linux 4.14 and later; the same user, or root).
"""
from __future__ import annotations

from typing import Any

from sandbox.process import ChildProcess, stat_fields


def figures(pid: int) -> dict[str, int] | None:
    """``{"rss_kib", "anon_kib", "pss_kib"}`` of ``pid`` (``pss_kib`` when readable), or None when it
    is gone or cannot be read."""
    found = _fields(f"/proc/{pid}/status", ("VmRSS", "RssAnon"))
    if found is None or "VmRSS" not in found:
        return None  # gone, or a zombie: no memory left to report
    numbers = {"rss_kib": found["VmRSS"], "anon_kib": found.get("RssAnon", 0)}
    rollup = _fields(f"/proc/{pid}/smaps_rollup", ("Pss",))
    if rollup is not None and "Pss" in rollup:
        numbers["pss_kib"] = rollup["Pss"]
    return numbers


def _fields(path: str, names: tuple[str, ...]) -> dict[str, int] | None:
    """The ``name: value kB`` lines of a ``/proc`` file that are in ``names``; None when unreadable."""
    found: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in names:
                    found[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return found


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (field 4 of ``/proc/<pid>/stat``), or None when it is gone."""
    fields = stat_fields(pid)
    try:
        return int(fields[1]) if fields is not None else None
    except (ValueError, IndexError):
        return None


def of(process: ChildProcess | None) -> dict[str, Any] | None:
    """The interpreter's figures and, under bubblewrap, its monitor's; ``rss_kib``, ``anon_kib`` and
    ``pss_kib`` (when every process has it) are their sums (see the module docstring about shared
    pages: only the sum of ``pss_kib`` is what the processes cost together)."""
    if process is None:
        return None
    pids = [("lua", process.interpreter_pid)]
    if process.wrapper is not None and process.pid != process.interpreter_pid:
        reaper = parent_pid(process.interpreter_pid)
        if reaper not in (None, process.pid):  # a bubblewrap without --as-pid-1 keeps its own pid 1
            pids.append((f"{process.wrapper} pid 1", reaper))
        pids.append((process.wrapper, process.pid))
    processes: list[tuple[str, int, dict[str, int]]] = []
    for what, pid in pids:
        numbers = figures(pid)
        if numbers is not None:
            processes.append((what, pid, numbers))
    total = {kind: sum(numbers[kind] for _, _, numbers in processes) for kind in ("rss_kib", "anon_kib", "pss_kib")
             if all(kind in numbers for _, _, numbers in processes)}
    return {**total, "processes": [{"process": what, "pid": pid, **numbers} for what, pid, numbers in processes]}
