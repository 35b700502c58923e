"""The bound on one DIMSE message received by the DICOM server: ``MaximumDicomMessageSize``.

pynetdicom reads each PDU whole, of the length its header claims, and gathers the P-DATA fragments of
a message in memory until its last one, with no limit: a peer that sends one endless C-STORE would
fill the server's memory (a C-STORE is refused by status only once whole). Here, on each association,
a PDU longer than the bound closes the connection before it is read, and a P-DATA that would take its
message past the bound drops the message and aborts the association (the DUL's invalid-message path,
A-ABORT), before it is added. Nothing of that message is stored; the instances acknowledged before it
stay.
"""
from __future__ import annotations

import logging
from typing import Any

from pynetdicom import evt
from pynetdicom.events import EventHandlerType

log = logging.getLogger("luabroker.dicom")


def bounded_messages(limit: int | None) -> list[EventHandlerType]:
    """The handlers that bound each received message to ``limit`` bytes of dataset (none: no bound)."""
    if limit is None:
        return []

    def on_open(event: evt.Event) -> None:
        assoc = event.assoc
        dimse, socket = assoc.dimse, assoc.dul.socket
        if socket is None:  # no connection: nothing will be received
            return
        receive, recv = dimse.receive_primitive, socket.recv

        def refuse(size: int, what: str) -> None:
            log.warning("DICOM %s from %s over MaximumDicomMessageSize (%d bytes, at most %d): association "
                        "aborted", what, assoc.requestor.ae_title, size, limit)

        def bounded_recv(nr_bytes: int) -> bytearray:
            # The DUL reads a whole PDU at once, of the length its header claims: one PDU may not hold more.
            if nr_bytes > limit:
                refuse(nr_bytes, "PDU")
                raise OSError("PDU over MaximumDicomMessageSize")  # the DUL closes the connection
            return recv(nr_bytes)

        def bounded(primitive: Any) -> None:
            message = dimse.message
            held = message.data_set.tell() if message is not None and message.data_set is not None else 0
            incoming = sum(len(data) for _, data in primitive.presentation_data_value_list)
            if held + incoming > limit:
                dimse.message = None  # the memory goes with it
                refuse(held + incoming, "message")
                dimse.dul.event_queue.put("Evt19")  # pynetdicom's invalid message: A-ABORT
                return
            receive(primitive)

        dimse.receive_primitive = bounded  # type: ignore[method-assign]  # this association only
        socket.recv = bounded_recv  # type: ignore[method-assign]  # this association only

    return [(evt.EVT_CONN_OPEN, on_open)]
