"""TCP_NODELAY on every DICOM socket we open, as SCP and as SCU.

Loopback TCP on these machines suffers delayed ACKs; without TCP_NODELAY each small PDU can wait
40 ms. pynetdicom calls ``EVT_CONN_OPEN`` handlers on both sides as soon as a connection exists.
"""
from __future__ import annotations

import socket
import time
from typing import Any

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
