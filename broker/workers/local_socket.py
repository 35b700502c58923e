"""A thread serving one Unix socket of the abstract namespace until stopped: the coordinator's wake-up
datagrams (``wakeup``) and each worker's status (``siblings``)."""
from __future__ import annotations

import logging
import socket
import threading

log = logging.getLogger("luabroker.workers")


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
