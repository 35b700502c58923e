"""A thread serving one Unix socket of the abstract namespace until stopped: the coordinator's wake-up
datagrams (``wakeup``), each worker's status (``siblings``), the jobs handed to the coordinator
(``jobs_handoff``).

A socket of the abstract namespace is open to every process of the machine's network namespace (it
has no file, hence no permissions): a stream server answers only a peer that ``is_sibling``, checked
with ``SO_PEERCRED``. A wake-up datagram carries nothing, so anyone may send one.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
import time
from typing import Any

from sandbox.memory import parent_pid

log = logging.getLogger("luabroker.workers")

#: The largest request or answer on a stream socket (a status with its metrics, a serialized job).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def is_sibling(connection: socket.socket) -> bool:
    """Whether the peer runs as this user and has this process's parent (the supervisor; not init,
    which a worker whose supervisor died shares with every orphan)."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", credentials)
    parent = os.getppid()
    return uid == os.getuid() and parent != 1 and parent_pid(pid) == parent


class LocalSocketServer:
    """Binds ``address`` (listening, for a stream socket) and calls ``serve_once`` in a thread."""

    def __init__(self, kind: socket.SocketKind, address: bytes, name: str) -> None:
        self.socket = socket.socket(socket.AF_UNIX, kind)
        self.socket.bind(address)
        if kind == socket.SOCK_STREAM:
            self.socket.listen(8)
        self._stopping = False  # read by serve_once: an empty read after stop() is the end
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def serve_once(self) -> None:
        """Wait for one datagram or connection and handle it; raises ``OSError`` once stopped."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stopping:
            try:
                self.serve_once()
            except OSError:
                if not self._stopping:
                    log.exception("The local socket of thread %s failed", self._thread.name)
                return

    def stop(self) -> None:
        """End the thread: the shutdown wakes it out of its wait, which then fails."""
        self._stopping = True
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.socket.close()
        self._thread.join(5)


def read_all(connection: socket.socket, limit: int | None = MAX_MESSAGE_BYTES) -> bytes:
    """What the peer sends until it shuts its side down (``limit`` bytes at most; None: no limit)."""
    chunks, size = [], 0
    while chunk := connection.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            raise ValueError("message too large")
    return b"".join(chunks)


#: How often a peer tries again to connect while nobody listens (a coordinator is being elected).
RETRY_S = 0.1


def exchange(address: bytes, message: bytes, timeout: float | None, patience: float = 0.0,
             limit: int | None = MAX_MESSAGE_BYTES) -> bytes:
    """Send ``message`` on the stream socket ``address`` and return the answer. While nobody listens
    there, try again for ``patience`` seconds; ``timeout`` bounds each wait of the socket (None: the
    answer comes when it comes, or the peer's end ends the wait). Raises ``OSError`` (nobody listening
    after ``patience``, a timeout, the peer gone) or ``ValueError`` (an answer over ``limit``)."""
    deadline = time.monotonic() + patience
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            try:
                connection.connect(address)
            except ConnectionRefusedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(RETRY_S)
                continue
            connection.sendall(message)
            connection.shutdown(socket.SHUT_WR)
            return read_all(connection, limit)


def ask(address: bytes, request: dict[str, Any], timeout: float, patience: float = 0.0) -> dict[str, Any]:
    """One JSON request and its JSON answer on the stream socket ``address`` (``exchange``); raises
    ``OSError`` or ``ValueError`` (not a JSON object)."""
    answer = json.loads(exchange(address, json.dumps(request, default=str).encode(), timeout, patience))
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    return answer


class RequestServer(LocalSocketServer):
    """A stream server of one JSON request and one JSON answer per connection, for siblings only."""

    def __init__(self, address: bytes, name: str, timeout: float) -> None:
        super().__init__(socket.SOCK_STREAM, address, name)
        self.timeout = timeout

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def serve_once(self) -> None:
        connection, _ = self.socket.accept()
        with connection:
            if not is_sibling(connection):
                log.warning("%s: refused a process that is not a worker of this server", self._thread.name)
                return
            try:
                connection.settimeout(self.timeout)
                request = json.loads(read_all(connection))
                answer = self.answer(request) if isinstance(request, dict) else {"Error": "not a JSON object"}
            except OSError:
                return  # the peer went away
            except Exception as exc:  # a bad request, or a failure to answer it: said to the peer
                log.exception("%s: cannot answer a request", self._thread.name)
                answer = {"Error": str(exc)}
            try:
                connection.sendall(json.dumps(answer, default=str).encode())
            except OSError:
                pass
