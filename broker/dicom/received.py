"""What an instance received by C-STORE becomes, whoever opened the association: the DICOM server
(``broker.dicom.scp``) or our own C-GET (``broker.dicom.retrieve_scu``, which receives its instances
on the association it opened).

``store_received`` stores it and answers its DIMSE status. ``part10_bytes`` rebuilds the Part-10
file from the received bytes (file meta + the dataset as encoded by the peer, never decoded and
re-encoded here); ``status_for`` turns a failure to store it into a DIMSE status, in one place: a filter
that fails answers 0xA700 (Orthanc's ``Refused: Out of resources``), a file that cannot be parsed 0xC000
(``Cannot understand``), a ``ReceivedCStoreInstanceFilter`` refusal its own status.
"""
from __future__ import annotations

import logging
from io import BytesIO
from typing import TYPE_CHECKING, cast

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

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
