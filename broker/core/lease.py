"""The locks of a storage directory: which process serves it (``ServerLock``), and which one runs what
must run once over its index (``CoordinatorLease``: the event dispatcher and the main sandbox,
stable-resource detection, the jobs engine, the HTTP front end).

Each is an exclusive ``flock`` on a file in the storage directory, which the kernel releases when its
holder exits, however it exits (kill -9 included): so no role is ever held by a dead process, and no
file needs cleaning up. The holder writes its pid in the file, for the message of whoever finds it
taken.

With one process (``Workers: 1``) the server takes both at start and refuses to start when either is
taken: a second server on a storage directory that one already serves would run a second dispatcher
and jobs engine over the same index (each event delivered twice, each job run twice). With several
(docs/workers.md) the supervisor holds the server lock, and every worker waits for the coordinator
lease (``wait``): the one that gets it takes the coordinator role, and when it dies the next one in
line takes over at once.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from broker.config import Config


class StorageInUse(OSError):
    """Another process holds this lock of the storage directory."""


class StorageLock:
    """One exclusive lock file of a storage directory (see the module's docstring)."""

    file_name = "server.lock"

    def __init__(self, directory: Path, file_name: str | None = None, shared: bool = False) -> None:
        """``shared``: a lock that other holders of a shared one may hold at the same time (not an
        exclusive one)."""
        self.path = directory / (file_name or self.file_name)
        self.shared = shared
        # A file object rather than a bare descriptor: if its owner is dropped without a clean stop
        # (a constructor that failed half-way), collecting it closes the file, which releases the lock.
        self._file: BinaryIO | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock now, or raise ``StorageInUse`` naming the process that holds it."""
        if self._file is None:
            self._take(self._mode | fcntl.LOCK_NB)

    def wait(self) -> None:
        """Take the lock, waiting as long as another process holds it (the kernel wakes the waiter
        when the holder releases it or dies: no polling)."""
        if self._file is None:
            self._take(self._mode)

    @property
    def _mode(self) -> int:
        return fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX

    def _take(self, operation: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+b")  # held until release
        try:
            fcntl.flock(file.fileno(), operation)
        except BlockingIOError:
            file.seek(0)
            holder = file.read(32).decode("ascii", "replace").strip() or "unknown"
            file.close()
            raise StorageInUse(f"the storage directory {self.path.parent} is used by another luabroker "
                               f"(pid {holder}); one server per storage directory") from None
        except BaseException:
            file.close()
            raise
        if not self.shared:  # several hold a shared lock: none is named
            file.truncate(0)
            file.write(f"{os.getpid()}\n".encode())
            file.flush()
        self._file = file

    def release(self) -> None:
        """Give the lock up (the clean stop); closing the file releases it."""
        if self._file is not None:
            self._file.close()
            self._file = None


class ServerLock(StorageLock):
    """Held by the one server (or supervisor of workers) that serves the storage directory."""

    file_name = "server.lock"

    @classmethod
    def of(cls, config: Config) -> ServerLock | NodeLock:
        """The lock of ``config``'s server: with the index in PostgreSQL, that of its node."""
        return NodeLock(config) if config.postgresql.enable_index else cls(config.storage_directory)


class NodeLock:
    """With the index in PostgreSQL, several nodes share one storage area (docs/postgresql.md): each
    holds ``server.lock`` shared (so that a server of its own, on SQLite, cannot start there) and its own
    ``server-<NodeName>.lock`` (so that two nodes of one name cannot)."""

    def __init__(self, config: Config) -> None:
        directory = config.storage_directory
        self._locks = (StorageLock(directory, ServerLock.file_name, shared=True),
                       StorageLock(directory, f"server-{safe_file_name(config.node_name)}.lock"))

    @property
    def held(self) -> bool:
        return all(lock.held for lock in self._locks)

    def acquire(self) -> None:
        try:
            for lock in self._locks:
                lock.acquire()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for lock in self._locks:
            lock.release()


def safe_file_name(name: str) -> str:
    """A node's name as part of a file name."""
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in name)


class CoordinatorLease(StorageLock):
    """Held by the process that has the coordinator role."""

    file_name = "coordinator.lock"
