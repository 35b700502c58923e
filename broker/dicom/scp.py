"""C-ECHO and C-STORE SCP on ``DicomAet``/``DicomPort`` (and C-FIND: ``broker.dicom.find_scp``; C-MOVE
and C-GET: ``broker.dicom.retrieve_scp``).

The C-STORE handler rebuilds the Part-10 file from the received bytes (file meta + the dataset as
encoded by the peer, never decoded and re-encoded here) and hands it to the same ``Store`` as
``POST /instances``, with origin ``DicomProtocol``. Errors become DIMSE statuses in one place,
``status_for``: a filter that fails answers 0xA700 (Orthanc's ``Refused: Out of resources``), a file
that cannot be parsed 0xC000 (``Cannot understand``), a ``ReceivedCStoreInstanceFilter`` refusal its
own status.

Timeouts and slots (issue 7, finding 4): a connection has ``DicomScpAcseTimeout`` seconds to send its
association request, an association may stay idle ``DicomScpTimeout`` seconds (Orthanc's option, also
the wait for each DIMSE message), and at most ``DicomScpMaximumAssociations`` associations are served
at once, counted from their request on (``broker.dicom.slots``). What is accepted (SOP classes,
transfer syntaxes) is decided for each request (``broker.dicom.negotiation``).
"""
from __future__ import annotations

import logging
from io import BytesIO
from typing import Any, cast

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from broker.core.dicom_file import file_meta
from broker.core.origin import Origin
from broker.dicom.find_scp import FindScp
from broker.dicom.retrieve_scp import RetrieveScp
from broker.dicom.slots import UNCOUNTED, AssociationSlots
from broker.dicom.sockets import NODELAY_HANDLERS
from broker.errors import ErrorCode, OrthancError, RefusedByFilter
from broker.services import Services

log = logging.getLogger("luabroker.dicom")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


def status_for(exc: Exception) -> int:
    if isinstance(exc, RefusedByFilter):
        return exc.dimse_status
    if isinstance(exc, OrthancError) and exc.code is ErrorCode.BAD_FILE_FORMAT:
        return CANNOT_UNDERSTAND
    return OUT_OF_RESOURCES


def part10_bytes(event: evt.Event) -> bytes:
    """The received instance as a DICOM file: preamble, ``DICM``, file meta, the raw dataset.

    The file meta is this implementation's (``dicom_file.file_meta``), not pynetdicom's, so that a
    file stored by C-STORE has the layout of the same file stored by Orthanc (``PixelDataOffset``).
    """
    request = cast(C_STORE, event.request)  # the handler of EVT_C_STORE only
    meta = file_meta(request.AffectedSOPClassUID, request.AffectedSOPInstanceUID,
                     event.context.transfer_syntax)
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    buffer.write(cast(BytesIO, request.DataSet).getvalue())
    return buffer.getvalue()


class StoreScp:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.server: Any = None

    def handle_store(self, event: evt.Event) -> int:
        assoc = event.assoc
        # CalledAET is the title the peer called, which the server accepts whatever it is (as Orthanc).
        called = assoc.requestor.primitive.called_ae_title if assoc.requestor.primitive else assoc.acceptor.ae_title
        origin = Origin.dicom(assoc.requestor.address, assoc.requestor.ae_title, str(called).strip())
        try:
            result = self.services.store.store_instance(part10_bytes(event), origin)
        except Exception as exc:  # every failure is a DIMSE status, never a dropped association
            status = status_for(exc)
            (log.warning if isinstance(exc, OrthancError) else log.exception)(
                "C-STORE from %s refused with status 0x%04X: %s", origin.remote_aet, status, exc)
            return status
        log.debug("C-STORE from %s: %s %s", origin.remote_aet, result.status, result.instance_id)
        return SUCCESS

    def start(self) -> None:
        config = self.services.config
        ae = AE(ae_title=config.dicom_aet)
        ae.maximum_pdu_size = 0  # no limit on what peers may send us: fewer, larger P-DATA PDUs
        ae.acse_timeout = config.dicom_scp_acse_timeout  # also the ARTIM timer of a connection that sends nothing
        ae.network_timeout = config.dicom_scp_timeout
        ae.dimse_timeout = config.dicom_scp_timeout
        ae.maximum_associations = UNCOUNTED
        slots = AssociationSlots(config.dicom_scp_maximum_associations)
        ae.add_supported_context(Verification)  # the contexts of each association: broker.dicom.negotiation
        # The slot is taken first: a refused association needs no contexts.
        handlers: list[EventHandlerType] = [(evt.EVT_C_STORE, self.handle_store),
                                            (evt.EVT_C_FIND, FindScp(self.services).handle_find), *slots.handlers,
                                            *self.services.dicom_contexts.handlers,
                                            *RetrieveScp(self.services).handlers, *NODELAY_HANDLERS]
        self.server = ae.start_server(("0.0.0.0", config.dicom_port), block=False, evt_handlers=handlers)
        log.info("DICOM server listening on port %d as %s", config.dicom_port, config.dicom_aet)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
