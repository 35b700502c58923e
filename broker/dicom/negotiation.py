"""What the DICOM server accepts, decided for each association request from what it proposes.

Orthanc accepts the storage SOP classes it knows in the transfer syntaxes of
``AcceptedTransferSyntaxes``, and, with ``UnknownSopClassAccepted``, any other SOP class as storage;
C-ECHO and the C-FIND models always (who may query is checked for each request), the Modality Worklist
model only when the worklist server is enabled (``Worklists.Enable``, as Orthanc accepts it only when a
worklist plugin is loaded). Both settings change
at run time (``PUT /tools/accepted-transfer-syntaxes``, ``PUT /tools/unknown-sop-class-accepted``) and
apply to the next association, so the contexts are built on ``EVT_REQUESTED`` (before negotiation)
rather than once on the AE.

pynetdicom serves a C-STORE only for a SOP class it knows as storage; an unknown one that is accepted
is registered as such with ``pynetdicom.register_uid`` (its public way), once per UID, up to
``MAX_REGISTERED`` UIDs per process, past which unknown SOP classes are refused.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

from pydicom.uid import UID, UID_dictionary
from pynetdicom import AllStoragePresentationContexts, build_context, evt, register_uid
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
    uid_to_service_class,
)

log = logging.getLogger("luabroker.dicom")

STORAGE_SOP_CLASSES = frozenset(str(context.abstract_syntax) for context in AllStoragePresentationContexts)
#: The C-FIND models served (broker.dicom.find_scp), in the transfer syntaxes of C-ECHO.
FIND_SOP_CLASSES = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
#: The C-MOVE and C-GET models served (broker.dicom.retrieve_scp), in the transfer syntaxes of C-ECHO.
MOVE_SOP_CLASSES = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
GET_SOP_CLASSES = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
#: The Modality Worklist model (broker.dicom.worklist_scp), served when the worklists are enabled.
WORKLIST_SOP_CLASS = str(ModalityWorklistInformationFind)
VERIFICATION_TRANSFER_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
MAX_REGISTERED = 10000
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _preference(transfer_syntax: str) -> int:
    """Orthanc's preference among the accepted syntaxes a storage context proposes (pynetdicom takes
    the acceptor's first): Explicit, then Implicit VR Little Endian, then the others in their order.
    A C-GET requestor such as getscu proposes all three uncompressed ones and gets Explicit."""
    preferred = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    return preferred.index(transfer_syntax) if transfer_syntax in preferred else len(preferred)


def uid_to_keyword(uid: str) -> str:
    entry = UID_dictionary.get(uid)
    return (entry[4] or entry[0]) if entry else uid


class AcceptedContexts:
    """The accepted transfer syntaxes and whether unknown SOP classes are accepted, read by every new
    association; ``handlers`` binds it to the SCP."""

    def __init__(self, transfer_syntaxes: Iterable[str], unknown_sop_class_accepted: bool, *,
                 worklists: bool = False) -> None:
        self.transfer_syntaxes = tuple(transfer_syntaxes)
        self.unknown_sop_class_accepted = unknown_sop_class_accepted
        self.worklists = worklists

    @property
    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_REQUESTED, self.on_requested)]

    def on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        if request is None or assoc.is_rejected or assoc.is_aborted:  # refused already (no slot)
            return
        assoc.acceptor.supported_contexts = self.contexts_for(request.presentation_context_definition_list)

    def contexts_for(self, requested: Iterable[PresentationContext]) -> list[PresentationContext]:
        """One supported context per proposed abstract syntax that is accepted (the transfer syntax is
        then chosen by pynetdicom's negotiation among the proposed and accepted ones)."""
        transfer_syntaxes = sorted(self.transfer_syntaxes, key=_preference)
        contexts: dict[str, PresentationContext] = {}
        for proposed in requested:
            uid = str(proposed.abstract_syntax)
            if uid in contexts:
                continue
            if uid == Verification or uid in FIND_SOP_CLASSES or uid in MOVE_SOP_CLASSES + GET_SOP_CLASSES \
                    or (self.worklists and uid == WORKLIST_SOP_CLASS):
                contexts[uid] = build_context(uid, list(VERIFICATION_TRANSFER_SYNTAXES))
            elif transfer_syntaxes and (uid in STORAGE_SOP_CLASSES or self._accept_unknown(uid)):
                contexts[uid] = build_context(uid, transfer_syntaxes)
                # Either role, as proposed: a C-GET requestor takes the SCP role for storage.
                contexts[uid].scu_role = contexts[uid].scp_role = True
        return list(contexts.values())

    def conformance_statement(self) -> str:
        """What the DICOM server serves, as text (``/tools/dicom-conformance``)."""
        def section(title: str, lines: Iterable[str]) -> list[str]:
            return ["", "-" * len(title), title, "-" * len(title), "", *lines]

        storage = sorted((uid_to_keyword(uid), uid) for uid in STORAGE_SOP_CLASSES)
        title = "DICOM Conformance Statement of luabroker"
        lines = ["=" * len(title), title, "=" * len(title)]
        lines += section("Echo SCP Conformance", [f"  Verification | {Verification}"])
        find = FIND_SOP_CLASSES + ((WORKLIST_SOP_CLASS,) if self.worklists else ())
        lines += section("Find SCP Conformance", [f"  {uid_to_keyword(uid)} | {uid}" for uid in find])
        lines += section("Move SCP Conformance", [f"  {uid_to_keyword(uid)} | {uid}" for uid in MOVE_SOP_CLASSES])
        lines += section("Get SCP Conformance", [f"  {uid_to_keyword(uid)} | {uid}" for uid in GET_SOP_CLASSES])
        lines += section("Store SCP Conformance", [f"  {keyword} | {uid}" for keyword, uid in storage])
        lines += section("Transfer syntaxes accepted by the Store SCP", [f"  {uid}" for uid in self.transfer_syntaxes])
        lines += section("Unknown SOP classes", ["  accepted as storage" if self.unknown_sop_class_accepted
                                                  else "  refused"])
        return "\n".join(lines) + "\n"

    def _accept_unknown(self, uid: str) -> bool:
        if not self.unknown_sop_class_accepted or not _UID.match(uid) or len(uid) > 64:
            return False
        return register_as_storage(uid)


_registered: set[str] = set()  # pynetdicom's registry is per process, so this one is too
_registering = threading.Lock()


def register_as_storage(uid: str) -> bool:
    """Make pynetdicom serve C-STOREs of an unknown SOP class; False for a SOP class that pynetdicom
    knows for another service (a C-FIND model, say), or when too many are registered."""
    with _registering:
        if uid in _registered:
            return True
        if uid_to_service_class(UID(uid)) is not ServiceClass:
            return False
        if len(_registered) >= MAX_REGISTERED:
            log.warning("Refusing the unknown SOP class %s: %d are registered already", uid, MAX_REGISTERED)
            return False
        register_uid(uid, "UnknownStorage_" + uid.replace(".", "_"), StorageServiceClass)
        _registered.add(uid)
        return True
