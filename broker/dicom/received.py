"""What an instance received by C-STORE becomes, whoever opened the association: the DICOM server
(``broker.dicom.scp``) or our own C-GET (``broker.dicom.retrieve_scu``, which receives its instances
on the association it opened).

``store_received`` stores it and answers its DIMSE status. ``part10_bytes`` rebuilds the Part-10
file from the received bytes (file meta + the dataset as encoded by the peer, never decoded and
re-encoded here); ``status_for`` turns a failure to store it into a DIMSE status, in one place: a filter
that fails answers 0xA700 (Orthanc's ``Refused: Out of resources``), a file that cannot be parsed 0xC000
(``Cannot understand``), a ``ReceivedCStoreInstanceFilter`` refusal its own status.

``RECEIVER_HANDLERS`` spare each association that receives instances what pynetdicom does per message
and nobody reads (``lighten``): its logging handlers while its logger would print nothing, and the
pydicom dataset it builds to encode each C-STORE response.
"""
from __future__ import annotations

import logging
import struct
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import evt
from pynetdicom._handlers import standard_dimse_recv_handler, standard_dimse_sent_handler
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu_primitives import P_DATA

from broker.core.dicom_file import file_meta_bytes
from broker.core.origin import Origin
from broker.errors import ErrorCode, OrthancError, RefusedByFilter

if TYPE_CHECKING:
    from broker.core.store import Store

log = logging.getLogger("luabroker.dicom")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
_PREAMBLE = b"\x00" * 128 + b"DICM"


def status_for(exc: Exception) -> int:
    if isinstance(exc, RefusedByFilter):
        return exc.dimse_status
    if isinstance(exc, OrthancError) and exc.code is ErrorCode.BAD_FILE_FORMAT:
        return CANNOT_UNDERSTAND
    return OUT_OF_RESOURCES


def part10_bytes(event: evt.Event) -> bytes:
    """The received instance as a DICOM file: preamble, ``DICM``, file meta, the raw dataset.

    The file meta is this implementation's (``dicom_file.file_meta_bytes``), not pynetdicom's
    (``event.file_meta`` would build and deep-copy a dataset), so that a file stored by C-STORE has the
    layout of the same file stored by Orthanc (``PixelDataOffset``).
    """
    request = cast(C_STORE, event.request)  # the handler of EVT_C_STORE only
    meta = file_meta_bytes(request.AffectedSOPClassUID, request.AffectedSOPInstanceUID or "",
                           event.context.transfer_syntax)
    return b"".join((_PREAMBLE, meta, cast(BytesIO, request.DataSet).getvalue()))


def store_received(store: Store, event: evt.Event, origin: Origin) -> int:
    """Store the instance of an ``EVT_C_STORE`` as ``POST /instances`` would, with ``origin``; its DIMSE
    status. Every failure is a status, never a dropped association."""
    try:
        result = store.store_instance(part10_bytes(event), origin)
    except Exception as exc:
        status = status_for(exc)
        (log.warning if isinstance(exc, OrthancError) else log.exception)(
            "C-STORE from %s refused with status 0x%04X: %s", origin.remote_aet, status, exc)
        return status
    log.debug("C-STORE from %s: %s %s", origin.remote_aet, result.status, result.instance_id)
    return SUCCESS


def store_response_command(response: C_STORE) -> bytes | None:
    """The command set of a C-STORE response as pynetdicom encodes it (implicit VR little endian, its
    group length first), or None when ``response`` is not the plain one the SCP sends (a status, the
    two UIDs, no error comment nor offending element nor data set)."""
    responded_to, status = response.MessageIDBeingRespondedTo, response.Status
    sop_class, sop_instance = response.AffectedSOPClassUID, response.AffectedSOPInstanceUID
    if (responded_to is None or status is None or not sop_class or not sop_instance or response.DataSet is not None
            or response.OffendingElement is not None or response.ErrorComment is not None):
        return None
    body = b"".join((_ui(0x0002, sop_class), _US.pack(0, 0x0100, 2, 0x8001), _US.pack(0, 0x0120, 2, responded_to),
                     _US.pack(0, 0x0800, 2, 0x0101), _US.pack(0, 0x0900, 2, status), _ui(0x1000, sop_instance)))
    return _UL.pack(0, 0x0000, 4, len(body)) + body


_US = struct.Struct("<HHIH")
_UL = struct.Struct("<HHII")


def _ui(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def lighten(event: evt.Event) -> None:
    """``EVT_CONN_OPEN``: the association answers C-STORE requests without the per-message work that
    nobody reads (about 1 ms of CPU an instance on a small CT).

    pynetdicom's standard DIMSE handlers format every message for its logger (reading the command set
    through pydicom's attribute access) even when the logger prints nothing: they are unbound unless the
    ``pynetdicom`` logger prints INFO when the association opens (``/tools/log-level-dicom``). A C-STORE
    response is encoded from bytes (``store_response_command``) when no handler is bound to
    ``EVT_DIMSE_SENT``; anything else goes through pynetdicom's ``send_msg``."""
    assoc = event.assoc
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        assoc.unbind(evt.EVT_DIMSE_RECV, standard_dimse_recv_handler)
        assoc.unbind(evt.EVT_DIMSE_SENT, standard_dimse_sent_handler)
    dimse = assoc.dimse
    send_msg = dimse.send_msg

    def send(primitive: Any, context_id: int) -> None:
        command = store_response_command(primitive) if type(primitive) is C_STORE else None
        limit = dimse.maximum_pdu_size
        if command is None or assoc.get_handlers(evt.EVT_DIMSE_SENT) or (limit and len(command) + 6 > limit):
            send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, b"\x03" + command))  # last fragment of a command
        dimse.dul.send_pdu(pdata)

    dimse.send_msg = send  # type: ignore[method-assign]  # this association only


RECEIVER_HANDLERS: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, lighten)]
