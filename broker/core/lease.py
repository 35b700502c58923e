"""The coordinator lease of a storage directory: which process runs what must run once over one index
(the event dispatcher and the main sandbox, stable-resource detection, the jobs engine).

An exclusive ``flock`` on ``coordinator.lock`` in the storage directory, which the kernel releases when
its holder exits, however it exits (kill -9 included): so the role is never held by a dead process, and
no file needs cleaning up. The holder writes its pid in the file, for the message of whoever finds it
taken.

luabroker runs as one process today, which holds the lease from start to stop: a second server started
on a storage directory that one already serves refuses to start, instead of running a second dispatcher
and jobs engine over the same index (each event delivered twice, each job run twice). With several
worker processes on one machine (docs/architecture.md, "Scaling"), every worker will ask for it and the
one that gets it takes the coordinator role; when it dies, the next one that gets it takes over.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import BinaryIO

FILE_NAME = "coordinator.lock"


class StorageInUse(OSError):
    """Another process holds the lease of this storage directory."""


class CoordinatorLease:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME
        # A file object rather than a bare descriptor: if its owner is dropped without a clean stop
        # (a constructor that failed half-way), collecting it closes the file, which releases the lock.
        self._file: BinaryIO | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        """Take the lease, or raise ``StorageInUse`` naming the process that holds it."""
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+b")  # held until release
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read(32).decode("ascii", "replace").strip() or "unknown"
            file.close()
            raise StorageInUse(f"the storage directory {self.path.parent} is used by another luabroker "
                               f"(pid {holder}); one server per storage directory") from None
        file.truncate(0)
        file.write(f"{os.getpid()}\n".encode())
        file.flush()
        self._file = file

    def release(self) -> None:
        """Give the lease up (the clean stop); closing the file releases the lock."""
        if self._file is not None:
            self._file.close()
            self._file = None
