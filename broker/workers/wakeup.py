"""The wake-up of the coordinator by the other worker processes: one datagram on a local socket.

A worker that committed an event (a stored instance) tells the coordinator's event dispatcher at
once, instead of leaving it to find the event at its next look (``EventDispatcher``: 1 s). The event
itself is in the index, so the datagram carries nothing and may be lost without harm: a coordinator
being elected, or one whose queue is full, finds the event anyway. Datagrams on a Unix socket in the
abstract namespace (Linux): no file to create or clean up, and the name follows from the storage
directory, so the processes of one server find each other and those of another server never do.
"""
from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from broker.workers.local_socket import LocalSocketServer, storage_key


def address(storage_directory: Path) -> bytes:
    """The abstract socket name of the coordinator of ``storage_directory``."""
    return b"\0luabroker-wake-" + storage_key(storage_directory)


class WakeupSender:
    """What a worker calls after each commit that wrote an event; never blocks, never raises."""

    def __init__(self, storage_directory: Path) -> None:
        self.address = address(storage_directory)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def __call__(self) -> None:
        try:
            self._socket.sendto(b"!", self.address)
        except OSError:  # no coordinator listening yet, or its queue is full: it will look anyway
            pass

    def close(self) -> None:
        self._socket.close()


class WakeupListener(LocalSocketServer):
    """The coordinator's end: calls ``on_wake()`` for each datagram (many at once: once)."""

    def __init__(self, storage_directory: Path, on_wake: Callable[[], None]) -> None:
        super().__init__(socket.SOCK_DGRAM, address(storage_directory), "wakeup")
        self.on_wake = on_wake

    def serve_once(self) -> None:
        if not self.socket.recv(64) and self._stopping:
            raise OSError("the wake-up socket was shut down")
        self.socket.setblocking(False)
        try:  # drain what else arrived: one wake-up for all of them
            while self.socket.recv(64):
                pass
        except BlockingIOError:
            pass
        finally:
            self.socket.setblocking(True)
        self.on_wake()
