"""The other worker processes of a server, as one worker sees them: what it asks of them (through the
supervisor, by signal) and what it learns from them (their status, on a local socket).

Every worker answers on a Unix stream socket of the abstract namespace named after the storage
directory and its pid (``StatusServer``): one JSON document per connection, then the connection
closes. The coordinator reads them for ``GET /lua/status`` and the metrics, so that an operator sees
every process through the one HTTP front end. The siblings are the children of the supervisor
(``/proc/<supervisor>/task/<supervisor>/children``), so a worker that died and was started again is
found under its new pid, and a dead one is not looked for.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.workers.local_socket import LocalSocketServer
from broker.workers.wakeup import storage_key

log = logging.getLogger("luabroker.workers")

#: How long the coordinator waits for one worker's status: a worker busy ingesting answers in
#: milliseconds (a thread of its own), a stuck one must not hold ``GET /lua/status``.
STATUS_TIMEOUT_S = 2.0
MAX_STATUS_BYTES = 16 * 1024 * 1024


def status_address(storage_directory: Path, pid: int) -> bytes:
    return b"\0luabroker-status-" + storage_key(storage_directory) + f"-{pid}".encode()


class Siblings:
    """What one worker asks of the others, and reads from them."""

    def __init__(self, storage_directory: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.storage_directory = storage_directory
        self.snapshot = snapshot  # this worker's own status

    def reload(self) -> None:
        """After ``POST /lua/reload`` succeeded here: the supervisor has every other worker reload."""
        os.kill(os.getppid(), signal.SIGUSR1)

    def stop(self) -> None:
        """The whole server stops (``/tools/shutdown``, ``/tools/reset``): the supervisor stops every
        other worker at once, before this one lets the coordinator role go."""
        os.kill(os.getppid(), signal.SIGUSR2)

    def pids(self) -> list[int]:
        """The other workers now running (the supervisor's children)."""
        supervisor = os.getppid()
        try:
            children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        except OSError:
            return []
        return [int(pid) for pid in children if int(pid) != os.getpid()]

    def statuses(self) -> list[dict[str, Any]]:
        """The status of every worker, this one included, by pid (``{"Pid": n, "Error": ...}`` for one
        that did not answer)."""
        return sorted([self.snapshot(), *(self._status(pid) for pid in self.pids())],
                      key=lambda status: status["Pid"])

    def _status(self, pid: int) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(STATUS_TIMEOUT_S)
                connection.connect(status_address(self.storage_directory, pid))
                chunks = []
                size = 0
                while chunk := connection.recv(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_STATUS_BYTES:
                        raise ValueError("status too large")
            status: dict[str, Any] = json.loads(b"".join(chunks))
            return status
        except (OSError, ValueError) as exc:  # starting, stopping, or stuck: say so, do not fail
            return {"Pid": pid, "Error": f"no status: {exc}"}


class StatusServer(LocalSocketServer):
    """A worker's end: answers each connection with ``snapshot()`` as JSON."""

    def __init__(self, storage_directory: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        super().__init__(socket.SOCK_STREAM, status_address(storage_directory, os.getpid()), "worker-status")
        self.snapshot = snapshot

    def serve_once(self) -> None:
        connection, _ = self.socket.accept()
        with connection:
            try:
                connection.settimeout(STATUS_TIMEOUT_S)
                connection.sendall(json.dumps(self.snapshot(), default=str).encode())
            except Exception:  # a reader that went away, or a snapshot that failed: next one
                log.exception("Cannot send this worker's status")
