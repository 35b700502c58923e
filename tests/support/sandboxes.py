"""What the sandbox and security tests share: the fake shims (``shims/``) and views of the processes."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

SHIMS = Path(__file__).resolve().parent / "shims"
FAKE_SHIM = str(SHIMS / "fakeshim.lua")


def process_exists(pid: int) -> bool:
    """True while ``pid`` is a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
        return False


def sandbox_workdirs() -> set[str]:
    """The sandboxes' working directories that exist now (in this worker's temporary directory)."""
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("luabroker-sandbox-")}
