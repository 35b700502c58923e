"""TCP_NODELAY on every DICOM socket we open, as SCP and as SCU.

Loopback TCP on these machines suffers delayed ACKs; without TCP_NODELAY each small PDU can wait
40 ms. pynetdicom calls ``EVT_CONN_OPEN`` handlers on both sides as soon as a connection exists.
"""
from __future__ import annotations

import socket

from pynetdicom import evt
from pynetdicom.events import EventHandlerType


def set_nodelay(event: evt.Event) -> None:
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY_HANDLERS: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, set_nodelay)]
