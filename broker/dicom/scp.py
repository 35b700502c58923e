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

Tenants (docs/tenants.md): each association is served by the handlers of its tenant, chosen by the
port it came to, then by the AET it calls (``routed``); one tenant needs no routing.
"""
from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

from pynetdicom import AE, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from broker.config import Config
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


class Tenants(Protocol):
    """Whose each association is (``broker.tenant.Tenancy``): the ports to listen on, every tenant's
    services, and the services of an association by the port it came to and the AET it calls."""

    ports: tuple[int, ...]

    def all_services(self) -> list[Services]: ...

    def services_for(self, port: int, called_aet: str) -> Services: ...

    def called_aets(self, services: Services) -> tuple[str, ...]:
        """The AETs a tenant may be called (``DicomCheckCalledAet``)."""


def called_aet(assoc: Any) -> str:
    """The AET the peer called (the association's request; empty before it arrived)."""
    request = assoc.requestor.primitive
    return str(request.called_ae_title).strip() if request is not None else ""


def routed(tables: dict[int, list[EventHandlerType]], route: Callable[[Any], Services]) -> list[EventHandlerType]:
    """One handler per event, which runs the handlers of that event of the tenant ``route`` gives for
    the association (in their order; the last one's answer is the answer). ``tables``: each tenant's
    handlers, by ``id`` of its services."""
    by_event: dict[Any, dict[int, list[Callable[..., Any]]]] = {}
    for key, handlers in tables.items():
        for event, handler in handlers:  # type: ignore[misc]  # ours never carry arguments
            by_event.setdefault(event, {}).setdefault(key, []).append(handler)

    def dispatch_for(per_tenant: dict[int, list[Callable[..., Any]]]) -> Callable[[evt.Event], Any]:
        def dispatch(event: evt.Event) -> Any:
            answer = None
            for handler in per_tenant.get(id(route(event.assoc)), ()):
                answer = handler(event)
            return answer
        return dispatch
    return [(event, dispatch_for(per_tenant)) for event, per_tenant in by_event.items()]


class TenantScp:
    """The C-STORE and C-ECHO handlers of one tenant."""

    def __init__(self, services: Services) -> None:
        self.services = services

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

    def handlers(self, slots: AssociationSlots, aets: tuple[str, ...]) -> list[EventHandlerType]:
        """Every handler of an association of this tenant, ``slots`` (the server's) first: a refused
        association needs no contexts. ``aets``: what ``DicomCheckCalledAet`` lets it be called."""
        services, config = self.services, self.services.config
        return [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, self.handle_echo),
                (evt.EVT_C_FIND, c_find_handler(services)), *slots.handlers, *services.dicom_contexts.handlers,
                *RetrieveScp(services).handlers, *NODELAY_HANDLERS, *RECEIVER_HANDLERS,
                *bounded_messages(services.store.bounds.max_dicom_message), *WAKEUP_HANDLERS,
                *CalledAetCheck(services.network, aets, config.network.check_called_aet).handlers,
                *KnownCallerCheck(services.network, not config.dicom_allows_unknown_callers).handlers]


class StoreScp:
    """The DICOM server: an association server on ``DicomPort`` and on each tenant's own port, each
    association served by the handlers of its tenant (``Tenants``)."""

    def __init__(self, config: Config, tenants: Tenants) -> None:
        self.config = config
        self.tenants = tenants
        self.servers: list[Any] = []

    def start(self) -> None:
        config = self.config
        slots = AssociationSlots(config.dicom_scp_maximum_associations)  # one count for the whole server
        tables = {id(services): TenantScp(services).handlers(slots, self.tenants.called_aets(services))
                  for services in self.tenants.all_services()}
        for port in self.tenants.ports:
            ae = AE(ae_title=config.dicom_aet)
            ae.maximum_pdu_size = 0  # no limit on what peers may send us: fewer, larger P-DATA PDUs
            ae.acse_timeout = config.dicom_scp_acse_timeout  # also the ARTIM timer of a connection that sends nothing
            ae.network_timeout = config.dicom_scp_timeout
            ae.dimse_timeout = config.dicom_scp_timeout
            ae.maximum_associations = UNCOUNTED
            ae.add_supported_context(Verification)  # the contexts of each association: broker.dicom.negotiation
            if len(tables) == 1:  # one tenant: its handlers, without routing
                handlers = next(iter(tables.values()))
            else:
                def route(assoc: Any, port: int = port) -> Services:
                    return self.tenants.services_for(port, called_aet(assoc))
                handlers = routed(tables, route)
            address = ("0.0.0.0", port)
            if not config.supervised:
                server = ae.start_server(address, block=False, evt_handlers=handlers)
            else:  # every worker process listens on the port; the kernel spreads the connections
                server = ae.make_server(address, evt_handlers=handlers, server_class=SharedPortServer)
                ae._servers.append(server)  # as start_server does: shutdown() takes it out
                threading.Thread(target=server.serve_forever, name="dicom-acceptor", daemon=True).start()
            self.servers.append(server)
            log.info("DICOM server listening on port %d as %s", port, config.dicom_aet)

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
        self.servers = []
