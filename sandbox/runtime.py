"""Where the children read the shim from: the repository's ``lua-runtime/``, or a staged copy.

When the broker runs as root its children run as another uid (``LuaSandbox.Isolation.User``, nobody
by default), which must be able to read the shim and its modules. A checkout under a private
directory (``/root/...``, mode 700) is not readable by that uid, and the server must not depend on
where it was cloned. So when any directory on the way to the shim is closed to other users, the
runtime's files are copied once per broker process into a fresh directory under the system's
temporary directory: owned by root, ``0755``/``0644``, read-only to the children, removed at exit.
"""
from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

_lock = threading.Lock()
_staged: dict[str, str] = {}


def _open_to_others(path: Path) -> bool:
    """Whether a user with no relation to the owner can reach ``path``'s directory and read its files."""
    directory = path.parent
    for ancestor in [directory, *directory.parents]:
        if not os.stat(ancestor).st_mode & stat.S_IXOTH:
            return False
    if not os.stat(directory).st_mode & stat.S_IROTH:
        return False
    return all(os.stat(entry).st_mode & stat.S_IROTH for entry in directory.iterdir() if entry.is_file())


def readable_shim(shim: str) -> str:
    """The path of a shim that the sandbox's uid can read: ``shim`` itself when other users can read
    it, or when the children run with our own uid; otherwise the staged copy."""
    path = Path(shim).resolve()
    if os.geteuid() != 0 or _open_to_others(path):
        return str(path)
    with _lock:
        staged = _staged.get(str(path))
        if staged is None:
            target = Path(tempfile.mkdtemp(prefix="luabroker-runtime-"))
            target.chmod(0o755)
            for entry in path.parent.iterdir():
                if entry.is_file() and entry.suffix == ".lua":
                    shutil.copyfile(entry, target / entry.name)
                    (target / entry.name).chmod(0o644)
            atexit.register(shutil.rmtree, target, True)
            staged = _staged[str(path)] = str(target / path.name)
    return staged
