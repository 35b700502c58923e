"""TCP_NODELAY on every DICOM socket we open, as SCP and as SCU; reactors that wait for work on the
associations the server accepts.

Loopback TCP on these machines suffers delayed ACKs; without TCP_NODELAY each small PDU can wait
40 ms. pynetdicom calls ``EVT_CONN_OPEN`` handlers on both sides as soon as a connection exists.

pynetdicom runs two polling loops per association, each sleeping 1 ms when it found nothing to do:
the DUL reactor (socket in, PDUs out) and the association reactor (DIMSE messages to serve). An idle
association cost 6 % of a core, and each C-STORE waited up to a millisecond at each of three hand-offs
(request decoded, request served, response queued). ``WAKEUP_HANDLERS`` make those idle sleeps waits
that end as soon as there is work: the DUL's on its peer's socket or on a byte written when a PDU is
queued for it, the association's on an event set when a DIMSE message or an ACSE primitive is queued
for it. They still end after ``WAIT_CAP`` seconds, so that what pynetdicom checks on each turn (its
timers, a killed reactor, a dead DUL) is seen as before, only later.
"""
from __future__ import annotations

import queue
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pynetdicom.association
import pynetdicom.dul
from pynetdicom import evt
from pynetdicom.events import EventHandlerType


def set_nodelay(event: evt.Event) -> None:
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY_HANDLERS: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, set_nodelay)]


def pause_reactor(assoc: Any) -> None:
    """Stop pynetdicom's reactor thread of ``assoc`` for real before a ``send_c_*`` on it.

    pynetdicom's ``send_c_*`` pause the association's reactor so it does not take the response off
    the queue, but their handshake reads a flag (``_is_paused``) that the reactor also sets for an
    instant on each turn of its loop while it is *not* paused: seen then, the send goes ahead, the
    reactor takes the response as an "unexpected C-STORE service message", and the sender waits for
    its DIMSE timeout (30 s) and gets no status. The window is tiny, but a loaded machine (the GIL
    switching threads inside it) hits it. Here the pause ends only once the reactor thread waits on
    its checkpoint; ``send_c_*`` then find it paused, and release it when they have the response.
    """
    checkpoint = assoc._reactor_checkpoint
    checkpoint.clear()
    waiters = checkpoint._cond._waiters  # non-empty while the reactor thread waits on the checkpoint
    while not waiters and assoc.is_alive() and not assoc._kill:
        time.sleep(0.0001)


#: pynetdicom's idle sleep, in both reactors (``DULServiceProvider._run_loop_delay``, and the constant of
#: ``Association._run_reactor``): the only sleep a wake-up replaces.
IDLE_SLEEP = 0.001
#: The longest an idle reactor waits without a wake-up.
WAIT_CAP = 0.05


class _DulWakeup:
    """What ends a DUL reactor's idle sleep: its peer's socket readable, or a byte on ``reader``."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def notify(self) -> None:
        try:
            self.writer.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed (the association is over)
            pass

    def wait(self, dul: Any, seconds: float) -> None:
        peer = getattr(dul.socket, "socket", None)
        try:
            if peer is None or (hasattr(peer, "pending") and peer.pending()):  # TLS may hold decrypted data
                time.sleep(seconds)
                return
            select.select([peer, self.reader], [], [], WAIT_CAP)
            while self.reader.recv(4096):
                pass
        except (OSError, ValueError):  # a closed socket, or no wake-up pending
            return

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


class _AssociationWakeup:
    """What ends an association reactor's idle sleep: a DIMSE message or an ACSE primitive queued."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def wait(self, assoc: Any, seconds: float) -> None:
        self.event.wait(WAIT_CAP)
        self.event.clear()  # cleared before the reactor looks at its queues: a later put sets it again


def _notify_on_put(target: queue.Queue[Any], notify: Callable[[], None]) -> None:
    put = target.put

    def put_and_notify(item: Any, block: bool = True, timeout: float | None = None) -> None:
        put(item, block, timeout)
        notify()
    target.put = put_and_notify  # type: ignore[method-assign]  # this queue only


class _ReactorTime(ModuleType):
    """The ``time`` module as one of pynetdicom's modules sees it: ``sleep(IDLE_SLEEP)`` in a reactor
    thread that has a wake-up in ``wakeups`` (its own loop's idle sleep: a DUL's in ``pynetdicom.dul``,
    an association's in ``pynetdicom.association``) waits on it; any other sleep sleeps."""

    def __init__(self, wakeups: weakref.WeakKeyDictionary[threading.Thread, Any]) -> None:
        super().__init__("time")
        self.wakeups = wakeups

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        thread = threading.current_thread()
        wakeup = self.wakeups.get(thread) if seconds == IDLE_SLEEP else None
        if wakeup is None:
            time.sleep(seconds)
        else:
            wakeup.wait(thread, seconds)


_DUL_WAKEUPS: weakref.WeakKeyDictionary[threading.Thread, _DulWakeup] = weakref.WeakKeyDictionary()
_ASSOCIATION_WAKEUPS: weakref.WeakKeyDictionary[threading.Thread, _AssociationWakeup] = weakref.WeakKeyDictionary()
_DUL_TIME, _ASSOCIATION_TIME = _ReactorTime(_DUL_WAKEUPS), _ReactorTime(_ASSOCIATION_WAKEUPS)


def wake_reactors(event: evt.Event) -> None:
    """``EVT_CONN_OPEN``: the association's two reactors wait for work instead of polling."""
    assoc = event.assoc
    dul = assoc.dul
    if dul._run_loop_delay != IDLE_SLEEP:
        return
    pynetdicom.dul.time = _DUL_TIME
    pynetdicom.association.time = _ASSOCIATION_TIME
    dul_wakeup, assoc_wakeup = _DulWakeup(), _AssociationWakeup()
    _notify_on_put(dul.to_provider_queue, dul_wakeup.notify)
    _notify_on_put(dul.to_user_queue, assoc_wakeup.event.set)
    _notify_on_put(assoc.dimse.msg_queue, assoc_wakeup.event.set)
    _DUL_WAKEUPS[dul] = dul_wakeup
    _ASSOCIATION_WAKEUPS[assoc] = assoc_wakeup


def close_wakeup(event: evt.Event) -> None:
    """``EVT_CONN_CLOSE``: the socket pair of the DUL's wake-up goes with the connection."""
    wakeup = _DUL_WAKEUPS.get(event.assoc.dul)
    if wakeup is not None:
        wakeup.close()


WAKEUP_HANDLERS: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, wake_reactors), (evt.EVT_CONN_CLOSE, close_wakeup)]
