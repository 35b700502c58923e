"""The wake-up of the coordinator by the other worker processes: one datagram on a local socket.

A worker that committed an event (a stored instance) tells the coordinator's event dispatcher at
once, instead of leaving it to find the event at its next look (``EventDispatcher``: 1 s). The event
itself is in the index, so the datagram carries nothing and may be lost without harm: a coordinator
being elected, or one whose queue is full, finds the event anyway. Datagrams on a Unix socket in the
abstract namespace (Linux): no file to create or clean up, and the name follows from the storage
directory, so the processes of one server find each other and those of another server never do.
"""
from __future__ import annotations

import hashlib
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("luabroker.workers")


def storage_key(storage_directory: Path) -> bytes:
    """What names the local sockets of the processes serving ``storage_directory``."""
    return hashlib.sha1(str(storage_directory.resolve()).encode()).hexdigest()[:20].encode()


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


class WakeupListener:
    """The coordinator's end: calls ``on_wake()`` for each datagram (many at once: once)."""

    def __init__(self, storage_directory: Path, on_wake: Callable[[], None]) -> None:
        self.on_wake = on_wake
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(address(storage_directory))
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="wakeup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._socket.recv(64)
                self._socket.setblocking(False)
                try:  # drain what else arrived: one wake-up for all of them
                    while self._socket.recv(64):
                        pass
                except BlockingIOError:
                    pass
                finally:
                    self._socket.setblocking(True)
            except OSError:
                if self._stopping:
                    return
                log.exception("The coordinator's wake-up socket failed")
                return
            if not self._stopping:
                self.on_wake()

    def stop(self) -> None:
        self._stopping = True
        try:
            # Wake the thread out of recv, then close.
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()
        self._thread.join(5)
