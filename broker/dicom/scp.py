"""C-ECHO and C-STORE SCP on ``DicomAet``/``DicomPort`` (and C-FIND: ``broker.dicom.find_scp``, on the
worklists ``broker.dicom.worklist_scp``; C-MOVE and C-GET: ``broker.dicom.retrieve_scp``).

The C-STORE handler rebuilds the Part-10 file from the received bytes and hands it to the same
``Store`` as ``POST /instances``, with origin ``DicomProtocol``; errors become DIMSE statuses
(``broker.dicom.received``, shared with the C-GET SCU).

Timeouts and slots (issue 7, finding 4): a connection has ``DicomScpAcseTimeout`` seconds to send its
association request, an association may stay idle ``DicomScpTimeout`` seconds (Orthanc's option, also
the wait for each DIMSE message), and at most ``DicomScpMaximumAssociations`` associations are served
at once, counted from their request on (``broker.dicom.slots``). What is accepted (SOP classes,
transfer syntaxes) is decided for each request (``broker.dicom.negotiation``).
"""
from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from broker.core.origin import Origin
from broker.dicom.message_bound import bounded_messages
from broker.dicom.permissions import CalledAetCheck, KnownCallerCheck, allowed_or_aborted
from broker.dicom.received import RECEIVER_HANDLERS, SUCCESS, store_received
from broker.dicom.retrieve_scp import RetrieveScp
from broker.dicom.slots import UNCOUNTED, AssociationSlots
from broker.dicom.sockets import NODELAY_HANDLERS, WAKEUP_HANDLERS
from broker.dicom.worklist_scp import c_find_handler
from broker.services import Services

log = logging.getLogger("luabroker.dicom")

#: DIMSE "Refused: Not authorized", the status of a request refused by ``DicomAlwaysAllow*``; the
#: association is aborted, as in Orthanc, so no peer receives it.
NOT_AUTHORIZED = 0x0124


class SharedPortServer(ThreadedAssociationServer):
    """The association server of a worker process: binds with ``SO_REUSEPORT``, so that every worker
    listens on ``DicomPort`` and the kernel hands each new connection to one of them."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class StoreScp:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.server: Any = None

    def handle_store(self, event: evt.Event) -> int:
        config = self.services.config
        if not allowed_or_aborted(event, self.services.network, "allow_store", always=config.dicom_always_allow_store,
                                  option="DicomAlwaysAllowStore", label="C-STORE"):
            return NOT_AUTHORIZED  # never sent: the association is aborted
        assoc = event.assoc
        # CalledAET is the title the peer called, which the server accepts whatever it is (as Orthanc).
        called = assoc.requestor.primitive.called_ae_title if assoc.requestor.primitive else assoc.acceptor.ae_title
        origin = Origin.dicom(assoc.requestor.address, assoc.requestor.ae_title, str(called).strip())
        return store_received(self.services.store, event, origin)

    def handle_echo(self, event: evt.Event) -> int:
        config = self.services.config
        if not allowed_or_aborted(event, self.services.network, "allow_echo", always=config.dicom_always_allow_echo,
                                  option="DicomAlwaysAllowEcho", label="C-ECHO"):
            return NOT_AUTHORIZED  # never sent: the association is aborted
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
        handlers: list[EventHandlerType] = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, self.handle_echo),
                                            (evt.EVT_C_FIND, c_find_handler(self.services)), *slots.handlers,
                                            *self.services.dicom_contexts.handlers,
                                            *RetrieveScp(self.services).handlers, *NODELAY_HANDLERS, *RECEIVER_HANDLERS,
                                            *bounded_messages(self.services.store.bounds.max_dicom_message),
                                            *WAKEUP_HANDLERS,
                                            *CalledAetCheck(self.services.network, config.dicom_aet,
                                                            config.network.check_called_aet).handlers,
                                            *KnownCallerCheck(self.services.network,
                                                              not config.dicom_allows_unknown_callers).handlers]
        address = ("0.0.0.0", config.dicom_port)
        if config.workers == 1:
            self.server = ae.start_server(address, block=False, evt_handlers=handlers)
        else:  # every worker process listens on the port; the kernel spreads the connections
            self.server = ae.make_server(address, evt_handlers=handlers, server_class=SharedPortServer)
            ae._servers.append(self.server)  # as start_server does: shutdown() takes it out
            threading.Thread(target=self.server.serve_forever, name="dicom-acceptor", daemon=True).start()
        log.info("DICOM server listening on port %d as %s", config.dicom_port, config.dicom_aet)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
