"""C-MOVE and C-GET SCU: asking a modality of ``DicomModalities`` for resources, to be sent to a target AET
(C-MOVE, Orthanc 1.10's ``DicomControlUserConnection::Move``) or back on the association we opened
(C-GET, which Orthanc has as an SCU since 1.12.6).

One request names one resource by a map of tags (a C-FIND answer, or one of the ``Resources`` of
``/modalities/{name}/move``) whose ``QueryRetrieveLevel`` gives the level. As Orthanc, only the
identifiers of that level are sent (``RETRIEVE_KEYS``: the Patient ID; the Study Instance UID; the Study
and Series Instance UIDs; the Study, Series and SOP Instance UIDs), each one required ("Missing tag",
400), with the fix of the ``GenericNoUniversalWildcard``/``GenericNoWildcardInDates`` manufacturers.

C-MOVE. The association proposes what Orthanc's does (``CONTROL_PROPOSAL``) and the request goes in the
Study Root model at every level, as Orthanc sends it (a patient-level C-MOVE included). The final status
must be Success (or Pending, which Orthanc accepts too); 0xC000 fails with HTTP 422 ("unable to process -
resource not found ?"), any other status, warnings included, with ``NetworkProtocol``.

C-GET. The association proposes the C-GET models of both roots (Patient Root at the patient level, Study
Root at the others) and, with the SCP role, pynetdicom's 120 most common storage SOP classes (the limit of
128 contexts leaves no room for all of them) in the transfer syntaxes the DICOM server accepts. Each
instance received is stored as ``POST /instances`` would (filters, events), with the origin of a
C-STORE from the modality to our calling AET (``broker.dicom.received``). The final status must be
Success: a warning (some sub-operations failed) fails the request, saying how many instances arrived.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom import StoragePresentationContexts, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from broker.config.network import Modality
from broker.core.encodings import Encoding
from broker.core.levels import Level
from broker.core.origin import Origin
from broker.core.tags import (
    PATIENT_ID,
    QUERY_RETRIEVE_LEVEL,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    format_tag,
)
from broker.dicom.find_scu import (
    CONTROL_PROPOSAL,
    GENERIC_SYNTAXES,
    LEVEL_NAMES,
    final_status,
    identifier_of,
    without_universal_wildcards,
)
from broker.dicom.received import SUCCESS, store_received
from broker.dicom.scu import Link, StoreScu
from broker.dicom.sockets import pause_reactor
from broker.errors import ErrorCode, OrthancError

if TYPE_CHECKING:
    from broker.core.store import Store

log = logging.getLogger("luabroker.dicom")

#: The identifiers that name a resource of each level in a C-MOVE (Orthanc's ``Move``; also what
#: constrains a query for the children of an answer, ``/queries/{id}/answers/{n}/query-*``).
RETRIEVE_KEYS = {Level.PATIENT: (PATIENT_ID,), Level.STUDY: (STUDY_INSTANCE_UID,),
                 Level.SERIES: (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID),
                 Level.INSTANCE: (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)}
_UNABLE_TO_PROCESS = 0xC000
#: Orthanc accepts a final Pending (0xFF00) from a C-MOVE as well as Success.
PENDING = 0xFF00
_STORAGE_CLASSES = tuple(str(context.abstract_syntax) for context in StoragePresentationContexts)


def level_of(request: Mapping[int, str | None]) -> Level:
    """The level of a retrieve request: its ``QueryRetrieveLevel`` (Orthanc's ``InternalError`` without)."""
    value = request.get(QUERY_RETRIEVE_LEVEL)
    if not value:
        raise OrthancError(ErrorCode.INTERNAL_ERROR, "A retrieve request without QueryRetrieveLevel")
    return Level.parse(value.strip())


def retrieve_keys(request: Mapping[int, str | None], level: Level) -> dict[int, str]:
    """The identifiers of ``request`` that name its resource at ``level`` (Orthanc's ``TestAndCopyTag``)."""
    keys = {}
    for tag in RETRIEVE_KEYS[level]:
        value = request.get(tag)
        if value is None:
            raise OrthancError(ErrorCode.BAD_REQUEST, f"Missing tag {format_tag(tag)}")
        keys[tag] = value
    return keys


@dataclass
class GetReport:
    """What one C-GET brought: how many instances were stored, and how many the peer failed to send."""

    received: int = 0
    refused: int = 0


class RetrieveScu:
    """C-MOVE and C-GET to the modalities, over associations opened by a ``StoreScu``; what a C-GET
    receives goes to ``store``, in one of the transfer syntaxes ``accepted_syntaxes()`` gives (those the
    DICOM server accepts when the C-GET starts)."""

    def __init__(self, scu: StoreScu, store: Store,
                 accepted_syntaxes: Callable[[], Iterable[str]] = lambda: GENERIC_SYNTAXES) -> None:
        self.scu = scu
        self.store = store
        self.accepted_syntaxes = accepted_syntaxes

    def _identifier(self, modality: Modality, request: Mapping[int, str | None], encoding: Encoding) -> Dataset:
        level = level_of(request)
        fields = without_universal_wildcards(retrieve_keys(request, level), modality.manufacturer)
        fields[QUERY_RETRIEVE_LEVEL] = LEVEL_NAMES[level]
        return identifier_of(fields, encoding)

    def move(self, modality: Modality, target_aet: str, request: Mapping[int, str | None], *, encoding: Encoding,
             local_aet: str | None = None, timeout: float | None = None) -> None:
        """Ask ``modality`` to C-STORE the resource ``request`` names to ``target_aet``; returns when it
        answered Success. Raises ``DicomNetworkError`` when the association fails, ``OrthancError`` for a
        request it could not serve."""
        identifier = self._identifier(modality, request, encoding)
        with self._association(modality, CONTROL_PROPOSAL, "C-MOVE", local_aet, timeout) as link:
            if not _accepts(link, StudyRootQueryRetrieveInformationModelMove):
                raise OrthancError(ErrorCode.DICOM_MOVE_UNAVAILABLE, f"Remote AET is {modality.aet}")
            pause_reactor(link.assoc)
            responses = link.assoc.send_c_move(identifier, target_aet, StudyRootQueryRetrieveInformationModelMove,
                                               msg_id=link.next_message_id())
            code = final_status(responses, modality, "C-MOVE")
        if code not in (SUCCESS, PENDING):
            raise _failure("C-MOVE", modality, code, "resource not found ?")
        log.info('C-MOVE SCU: AET "%s" sent %s to AET "%s"', modality.aet, format_request(request), target_aet)

    def get(self, modality: Modality, request: Mapping[int, str | None], *, encoding: Encoding,
            local_aet: str | None = None, timeout: float | None = None) -> GetReport:
        """Ask ``modality`` for the instances of the resource ``request`` names and store them; returns
        when it answered Success, with what was stored."""
        identifier = self._identifier(modality, request, encoding)
        model = PatientRootQueryRetrieveInformationModelGet if level_of(request) is Level.PATIENT \
            else StudyRootQueryRetrieveInformationModelGet
        proposal = {str(model): set(GENERIC_SYNTAXES),
                    **{sop_class: set(self.accepted_syntaxes()) for sop_class in _STORAGE_CLASSES}}
        report = GetReport()
        calling = modality.local_aet or local_aet or self.scu.options.default_aet

        def on_store(event: evt.Event) -> int:
            status = store_received(self.store, event, Origin.dicom(modality.host, modality.aet, calling))
            if status == SUCCESS:
                report.received += 1
            else:
                report.refused += 1
            return status

        with self._association(modality, proposal, "C-GET", local_aet, timeout, per_syntax=False,
                               scp_roles=_STORAGE_CLASSES, handlers=[(evt.EVT_C_STORE, on_store)]) as link:
            if not _accepts(link, model):
                raise OrthancError(ErrorCode.NETWORK_PROTOCOL, "The C-GET command is not supported by the "
                                   f"remote SCP: Remote AET is {modality.aet}")
            pause_reactor(link.assoc)
            responses = link.assoc.send_c_get(identifier, model, msg_id=link.next_message_id())
            code = final_status(responses, modality, "C-GET")
        if code != SUCCESS:
            raise _failure("C-GET", modality, code, "resource not found ?",
                           f"; {report.received} instance(s) received, {report.refused} refused here")
        log.info('C-GET SCU: %d instance(s) of %s received from AET "%s"', report.received, format_request(request),
                 modality.aet)
        return report

    @contextmanager
    def _association(self, modality: Modality, proposal: dict[str, set[str]], operation: str,
                     local_aet: str | None, timeout: float | None, *, per_syntax: bool = True,
                     scp_roles: Iterable[str] = (), handlers: Sequence[EventHandlerType] = ()) -> Iterator[Link]:
        """An association to ``modality``, released when the block ends whatever happened in it."""
        remote = self.scu.remote(modality)
        local = remote.local_aet or local_aet or self.scu.options.default_aet
        link = self.scu.associate(remote, local, proposal, timeout=timeout, operation=operation,
                                  per_syntax=per_syntax, scp_roles=scp_roles, handlers=handlers)
        try:
            yield link
        finally:
            self.scu.release(link)


def _accepts(link: Link, model: str) -> bool:
    return any(cx.abstract_syntax == model for cx in link.assoc.accepted_contexts)


def _failure(operation: str, modality: Modality, code: int, not_found: str, more: str = "") -> OrthancError:
    failed = f'{operation} SCU to AET "{modality.aet}" has failed with DIMSE status 0x{code:04X}'
    if code == _UNABLE_TO_PROCESS:
        return OrthancError(ErrorCode.NETWORK_PROTOCOL, f"{failed} (unable to process - {not_found}){more}",
                            http_status=422)
    return OrthancError(ErrorCode.NETWORK_PROTOCOL, failed + more)


def format_request(request: Mapping[int, str | None]) -> str:
    """A request for the logs: its tags and values."""
    return ", ".join(f"{format_tag(tag)}={value}" for tag, value in sorted(request.items()))
