"""Helpers shared by the sandbox tests (a uniquely named module: test directories have no __init__.py)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

SHIMS = Path(__file__).resolve().parent / "shims"
FAKE_SHIM = str(SHIMS / "fakeshim.lua")


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes (for the supervisor thread's work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def process_exists(pid: int) -> bool:
    """True while ``pid`` is a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def sandbox_workdirs() -> set[str]:
    tmp = os.environ.get("TMPDIR", "/tmp")
    return {name for name in os.listdir(tmp) if name.startswith("luabroker-sandbox-")}
