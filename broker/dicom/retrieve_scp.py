"""C-MOVE and C-GET SCP (Patient Root and Study Root), as Orthanc 1.10.1 answers them.

What the identifier names is found by ``broker.core.retrieve``; who may ask is
``broker.dicom.permissions`` (``DicomAlwaysAllowMove``/``AllowMove``, ``DicomAlwaysAllowGet``/``AllowGet``;
a request that is not allowed aborts the association, as in Orthanc).

C-MOVE. The destination is the modality of ``DicomModalities`` whose AET is the Move Destination, and the
sub-operations are C-STOREs of ``StoreScu`` (``services.scu``: the modality's ``LocalAet`` or ``DicomAet``
as calling AET, transcoding as for ``/modalities/{name}/store``), each carrying the Move Originator (the
calling AET and the C-MOVE's message id). With ``SynchronousCMove`` (the default) the instances are sent
one per response, in one call of the SCU and so on one association, as Orthanc opens one connection per
C-MOVE; otherwise they go in a ``DicomModalityStore`` job (description ``C-MOVE``, with the retries and
``OnJob*`` events of every job) and the responses come at once. Either way the responses are
Orthanc's: after the n-th sub-operation, Pending with n completed and the rest remaining, the last one
Success; 0xC000 (*unable to process*) with no counts when the identifier names nothing, the destination
is unknown (Orthanc does not answer 0xA801 there), or a sub-operation fails.

C-GET. The instances come back on the same association, as C-STOREs for which the requestor proposed the
storage SOP class with the SCP role: in the stored syntax when accepted, else transcoded to an accepted
uncompressed one (if the calling modality allows transcoding). Responses are Orthanc's: a Pending one
after each sub-operation, then Success, 0xB000 when some failed or had a warning, 0xA702 when all failed
(without a Failed SOP Instance UID List, as Orthanc); 0xC000 when the identifier names nothing, or an
instance has no context it can go in (which ends the request).

C-CANCEL, as DCMTK's providers under Orthanc: before each response the request looks for a C-CANCEL of
its message id (``Request.cancelled``). Once it saw one, Orthanc's handlers (which ignore DCMTK's flag)
still perform that step's sub-operation; its response is then 0xFE00 (*Cancel*) with the counts and the
remaining count, and the last. A C-GET also notices a C-CANCEL that came during its C-STORE (DCMTK reads
it while waiting for the C-STORE response): that sub-operation is not counted, and 0xFE00 ends the C-GET.
An asynchronous C-MOVE's job goes on: only the responses stop.

pynetdicom serves C-MOVE by opening its own association to the destination, with its own AE, and C-GET
with its own counting; neither is Orthanc's. So on each association this module takes the C-MOVE and
C-GET requests of its SOP classes before pynetdicom's service classes see them (``on_accepted``), and
sends the responses itself, on the reactor thread, as pynetdicom's service classes do.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from pydicom.multival import MultiValue
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext

from broker.config.network import Modality
from broker.core.dicom_file import read_part10
from broker.core.retrieve import NothingToRetrieve, Retrieval, instances_of, resolve_get, resolve_move
from broker.dicom.negotiation import GET_SOP_CLASSES, MOVE_SOP_CLASSES
from broker.dicom.permissions import is_allowed
from broker.dicom.scu import DicomNetworkError, InstanceResult, sendable
from broker.errors import OrthancError
from broker.jobs.transfers import DicomModalityStoreJob

if TYPE_CHECKING:
    from broker.services import Services

log = logging.getLogger("luabroker.dicom")


SUCCESS = 0x0000
PENDING = 0xFF00
SUB_OPERATIONS_FAILED = 0xB000  # Warning: sub-operations complete, one or more failures (or warnings)
ALL_SUB_OPERATIONS_FAILED = 0xA702  # Refused: out of resources, unable to perform sub-operations
UNABLE_TO_PROCESS = 0xC000
CANCEL = 0xFE00  # Cancel: sub-operations terminated due to cancel indication


@dataclass
class Progress:
    """The sub-operations of one request, as its responses count them."""

    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def move_status(self, cancelled: bool) -> int:
        """The response of a C-MOVE after a sub-operation: Cancel when a C-CANCEL was seen before it,
        else Pending while some remain, else Success."""
        return CANCEL if cancelled else PENDING if self.remaining else SUCCESS


class Request:
    """One C-MOVE or C-GET being answered: its association, context and responses."""

    def __init__(self, assoc: Association, primitive: C_MOVE | C_GET, context: PresentationContext) -> None:
        self.assoc = assoc
        self.primitive = primitive
        self.context = context
        syntax = context.transfer_syntax[0]
        self._encoding = (syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
        self.calling_aet = str(assoc.requestor.ae_title).strip()

    def identifier(self) -> dict[str, str]:
        """The text values of the request's identifier by keyword (a list joined with ``\\``); binary
        values and sequences are left out, as Orthanc's summary of it."""
        dataset = decode(cast(BytesIO, self.primitive.Identifier), *self._encoding)
        values: dict[str, str] = {}
        for element in dataset:
            if not element.keyword or element.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"):
                continue
            value = element.value
            if value is None:
                values[element.keyword] = ""
            elif isinstance(value, MultiValue):
                values[element.keyword] = "\\".join(str(item) for item in value)
            else:
                values[element.keyword] = str(value)
        return values

    def cancelled(self) -> bool:
        """Whether a C-CANCEL of this request came since the last time this was asked (DCMTK's
        ``DIMSE_checkForCancelRQ``; pynetdicom keeps the C-CANCELs it receives aside by message id)."""
        return self.assoc.dimse.cancel_req.pop(cast(int, self.primitive.MessageID), None) is not None

    def respond(self, status: int, progress: Progress | None = None) -> None:
        """One response with the counts of ``progress`` (none: zeros); the remaining count in a Pending or
        Cancel response only, and no Failed SOP Instance UID List, as Orthanc 1.10.1 (through DCMTK)
        answers."""
        response = C_MOVE() if isinstance(self.primitive, C_MOVE) else C_GET()
        response.MessageIDBeingRespondedTo = self.primitive.MessageID
        response.AffectedSOPClassUID = self.primitive.AffectedSOPClassUID
        response.Status = status
        progress = progress or Progress(0)
        if status in (PENDING, CANCEL):
            response.NumberOfRemainingSuboperations = progress.remaining
        response.NumberOfCompletedSuboperations = progress.completed
        response.NumberOfFailedSuboperations = progress.failed
        response.NumberOfWarningSuboperations = progress.warning
        self.assoc.dimse.send_msg(response, cast(int, self.context.context_id))
        # An association that answers is not idle; pynetdicom restarts its idle timer (DicomScpTimeout)
        # only on what it receives, and would abort it after a synchronous C-MOVE longer than that.
        self.assoc.dul._idle_timer.restart()


class RetrieveScp:
    """The C-MOVE and C-GET SCP of one server; ``handlers`` binds it to the DICOM server."""

    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_ACCEPTED, self.on_accepted)]

    def on_accepted(self, event: evt.Event) -> None:
        """Serve this association's C-MOVE and C-GET requests here, everything else as pynetdicom does.

        ``Association._serve_request`` is where pynetdicom's reactor hands over each request; it is
        replaced on this association only, before its reactor starts."""
        assoc = event.assoc
        serve_others: Callable[[Any, int], None] = assoc._serve_request

        def serve_request(primitive: Any, context_id: int) -> None:
            context = assoc._accepted_cx.get(context_id)
            if (context is None or not isinstance(primitive, (C_MOVE, C_GET)) or not primitive.is_valid_request
                    or context.abstract_syntax not in MOVE_SOP_CLASSES + GET_SOP_CLASSES):
                serve_others(primitive, context_id)
                return
            assoc._is_paused = True  # as pynetdicom does around a service class: C-GET sends on it
            try:
                self.serve(Request(assoc, primitive, context))
            except Exception:  # as pynetdicom: a request that cannot be answered aborts the association
                log.exception("C-MOVE/C-GET from %s failed", assoc.requestor.ae_title)
                assoc.abort()
            finally:
                assoc._is_paused = False

        assoc._serve_request = serve_request  # type: ignore[method-assign, assignment]

    def serve(self, request: Request) -> None:
        config = self.services.config
        is_move = isinstance(request.primitive, C_MOVE)
        permission, always = (("allow_move", config.dicom_always_allow_move) if is_move
                              else ("allow_get", config.dicom_always_allow_get))
        if not is_allowed(self.services.network, request.calling_aet, permission, always=always,
                          remote_ip=request.assoc.requestor.address):
            log.error("%s requests are not allowed for the application entity %s",
                      "C-MOVE" if is_move else "C-GET", request.calling_aet)
            request.assoc.abort()
            return
        identifier = request.identifier()
        try:
            if is_move:
                self._move(request, resolve_move(self.services.store, identifier))
            else:
                self._get(request, resolve_get(self.services.store, identifier))
        except (NothingToRetrieve, OrthancError) as exc:
            log.error("%s from %s: %s", "C-MOVE" if is_move else "C-GET", request.calling_aet, exc)
            request.respond(UNABLE_TO_PROCESS)

    # C-MOVE.
    def _move(self, request: Request, retrieval: Retrieval) -> None:
        primitive = cast(C_MOVE, request.primitive)
        destination = str(primitive.MoveDestination).strip()
        found = self.services.network.modalities_with_aet(destination)
        if not found:
            raise NothingToRetrieve(f'Unknown move destination "{destination}": no modality of DicomModalities '
                                    "has this AET")
        name, modality = found[0]
        instances = instances_of(self.services.store, retrieval)
        originator = (request.calling_aet, cast(int, primitive.MessageID))
        synchronous = self.services.config.synchronous_c_move
        log.info("C-MOVE from %s: %d instances to %s (%s)", request.calling_aet, len(instances), destination,
                 "synchronous" if synchronous else "job")
        if not instances:
            request.respond(SUCCESS)
            return
        if synchronous:
            self._send_now(request, modality, instances, originator)
            return
        job = DicomModalityStoreJob(name, modality.aet, None, instances, retrieval.resources,
                                    default_local_aet=modality.local_aet or self.services.config.dicom_aet,
                                    move_originator=originator, description="C-MOVE")
        self.services.jobs.submit(job)
        progress = Progress(len(instances))
        status = PENDING
        while status == PENDING:  # counted as Orthanc does, before the job has sent anything
            cancelled = request.cancelled()
            progress.completed += 1
            status = progress.move_status(cancelled)
            request.respond(status, progress)

    def _send_now(self, request: Request, modality: Modality, instances: list[str],
                  originator: tuple[str, int]) -> None:
        """A synchronous C-MOVE: one call of the SCU for every instance, a response after each; the first
        failed sub-operation ends it with 0xC000 and no counts, as Orthanc."""
        progress = Progress(len(instances))
        cancelled = request.cancelled()
        failures: list[InstanceResult] = []

        def each(result: InstanceResult) -> bool:
            nonlocal cancelled
            if not result.ok:
                failures.append(result)
                return False
            progress.completed += 1
            status = progress.move_status(cancelled)
            request.respond(status, progress)
            cancelled = request.cancelled()  # before the next sub-operation, where DCMTK looks
            return status == PENDING

        files = (self.services.store.read_instance(instance)[0] for instance in instances)
        try:
            self.services.scu.store(modality, files, move_originator=originator, each=each)
            if failures:
                raise DicomNetworkError(failures[0].error)
        except (DicomNetworkError, OrthancError) as exc:
            log.error("C-MOVE from %s to %s: %s", request.calling_aet, modality.aet, exc)
            request.respond(UNABLE_TO_PROCESS)

    # C-GET.
    def _get(self, request: Request, retrieval: Retrieval) -> None:
        known = self.services.network.modalities_with_aet(request.calling_aet)
        allow_transcoding = self.services.config.network.dicom.transcode and (
            known[0][1].allow_transcoding if known else True)
        instances = instances_of(self.services.store, retrieval)
        progress = Progress(len(instances))
        for index, instance in enumerate(instances):
            cancelled = request.cancelled()
            data, _ = self.services.store.read_instance(instance)
            dataset = read_part10(data)
            accepted = [str(cx.transfer_syntax[0]) for cx in request.assoc.accepted_contexts
                        if cx.abstract_syntax == dataset.get("SOPClassUID") and cx.as_scu]
            try:
                if not accepted:
                    raise ValueError(f"no presentation context with the SCP role for the SOP class "
                                     f"{dataset.get('SOPClassUID')}")
                dataset, _ = sendable(dataset, str(dataset.file_meta.TransferSyntaxUID), accepted,
                                      allow_transcoding=allow_transcoding, receiver=request.calling_aet)
            except ValueError as exc:  # Orthanc ends the C-GET here
                log.error("C-GET from %s: %s", request.calling_aet, exc)
                progress.failed += 1
                request.respond(UNABLE_TO_PROCESS, progress)
                return
            message_id = (cast(int, request.primitive.MessageID) + index) % 0xFFFF + 1
            status = request.assoc.send_c_store(dataset, msg_id=message_id)
            code = status.get("Status") if status else None
            if not request.assoc.is_established:
                return
            if not cancelled and request.cancelled():  # during the C-STORE: that one is not counted
                request.respond(CANCEL, progress)
                return
            if code == SUCCESS:
                progress.completed += 1
            elif code is not None and code & 0xF000 == 0xB000:
                progress.warning += 1
            else:
                progress.failed += 1
            request.respond(CANCEL if cancelled else PENDING, progress)
            if cancelled:
                return
        final = SUCCESS
        if progress.failed or progress.warning:
            final = SUB_OPERATIONS_FAILED
        if progress.failed and progress.failed == progress.total:
            final = ALL_SUB_OPERATIONS_FAILED
        request.respond(CANCEL if request.cancelled() else final, progress)
