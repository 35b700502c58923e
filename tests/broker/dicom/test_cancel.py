"""C-CANCEL during a C-FIND, a C-MOVE and a C-GET (broker/dicom/find_scp.py, retrieve_scp.py), each asked
of luabroker and of a real Orthanc 1.10.1, which must answer alike.

A C-CANCEL races the responses by nature; here it cannot. The server is held at a known step while the
C-CANCEL is sent, and released only once the server has it: the C-FIND's filter waits for a C-ECHO to a
holder, the C-MOVE for its first C-STORE to the destination; a C-GET's requestor sends the C-CANCEL before
the C-STORE response it is asked for, on the same association, so the order is the wire's.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from broker.dicom.sockets import NODELAY_HANDLERS
from tests.broker.dicom.test_retrieve_scp import COUNTS, identifier, loaded
from tests.support.factory import make_instances, to_bytes
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer
from tests.support.ports import free_port
from tests.support.server import Running
from tests.support.waiting import wait_until

MESSAGE_ID = 7
CANCEL, PENDING, SUCCESS = 0xFE00, 0xFF00, 0x0000
#: Holds the C-FIND in its filter, between DCMTK's first look for a C-CANCEL and the first answer.
HOLDING_FILTER = """
function IncomingFindRequestFilter(query, origin)
  RestApiPost('/modalities/holder/echo', '{}')
  return query
end
"""


@dataclass
class Holder:
    """A pynetdicom SCP whose C-ECHO and C-STORE handlers wait for ``release`` (``held`` is set while
    one waits); it records the SOP Instance UIDs stored."""

    aet: str
    port: int = field(default_factory=free_port)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    stored: list[str] = field(default_factory=list)
    server: Any = None

    def start(self) -> Holder:
        ae = AE(ae_title=self.aet)
        ae.add_supported_context(Verification)
        ae.add_supported_context(CTImageStorage)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_ECHO, self._hold), (evt.EVT_C_STORE, self._on_store), *NODELAY_HANDLERS])
        return self

    def _hold(self, event: evt.Event) -> int:
        self.held.set()
        assert self.release.wait(60), "the test never released the holder"
        return SUCCESS

    def _on_store(self, event: evt.Event) -> int:
        self.stored.append(str(event.dataset.SOPInstanceUID))
        return self._hold(event)

    def modality(self) -> list[Any]:
        return [self.aet, "127.0.0.1", self.port]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def holder() -> Iterator[Holder]:
    started = Holder("HOLDER").start()
    yield started
    started.stop()


@dataclass
class Target:
    """A server under test: where it listens, and how to tell that a C-CANCEL sent on ``assoc`` reached it."""

    port: int
    aet: str
    has_cancel: Callable[[Association], bool]


def luabroker_has_cancel(assoc: Association) -> bool:
    """luabroker runs in this process: its side of ``assoc`` has recorded the C-CANCEL."""
    local_port = assoc.dul.socket.socket.getsockname()[1]
    return any(isinstance(thread, Association) and thread.is_acceptor and thread.requestor.port == local_port
               and MESSAGE_ID in thread.dimse.cancel_req for thread in threading.enumerate())


def orthanc_has_cancel(server_port: int) -> Callable[[Association], bool]:
    """Orthanc is busy elsewhere, not reading this association: the C-CANCEL waits, unread, in its socket
    (``/proc/net/tcp``: its receive queue is not empty), where DCMTK's next check reads it."""
    def check(assoc: Association) -> bool:
        client_port = assoc.dul.socket.socket.getsockname()[1]
        ends = (f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}")
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if (fields[1], fields[2]) == ends:
                return int(fields[4].split(":")[1], 16) > 0
        return False
    return check


def both(luabroker: Callable[..., Running], instances: list[Dataset], options: dict[str, Any],
         scenario: Callable[[Target], Any], scripts: dict[str, str] | None = None) -> tuple[Any, Any]:
    """``scenario`` run against a luabroker and an Orthanc with the same options and instances."""
    server = loaded(luabroker, instances, scripts=scripts, **options)
    ours = scenario(Target(server.dicom_port, server.aet, luabroker_has_cancel))
    if ORTHANC_BINARY is None:
        pytest.skip("Orthanc is not installed: nothing to compare with")
    orthanc = OrthancPeer.create(**options)
    if scripts:
        for name, source in scripts.items():
            (orthanc.workdir / name).write_text(source)
        orthanc.extra_config["LuaScripts"] = [str(orthanc.workdir / name) for name in scripts]
    orthanc.start()
    try:
        for ds in instances:
            orthanc.upload(to_bytes(ds))
        return ours, scenario(Target(orthanc.dicom_port, orthanc.aet, orthanc_has_cancel(orthanc.dicom_port)))
    finally:
        orthanc.stop()


def associate(target: Target, *contexts: str, calling: str = "CANCELLER", **options: Any) -> Association:
    ae = AE(ae_title=calling)
    for context in contexts:
        ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", target.port, ae_title=target.aet, **options)
    assert assoc.is_established
    return assoc


def cancelled_while_held(target: Target, holder: Holder, assoc: Association, send: Callable[[], Any],
                         model: str) -> list[Any]:
    """Start the request (``send`` gives its responses), wait until the server is held, send the C-CANCEL,
    wait until the server has it, release; the responses."""
    holder.held.clear()
    holder.release.clear()
    answers: list[Any] = []
    requesting = threading.Thread(target=lambda: answers.extend(send()))
    requesting.start()
    try:
        wait_until(holder.held.is_set, message="the server held by the holder")
        assoc.send_c_cancel(MESSAGE_ID, query_model=model)
        wait_until(lambda: target.has_cancel(assoc), message="the C-CANCEL at the server")
    finally:
        holder.release.set()
        requesting.join(60)
        assoc.release()
    return answers


def test_c_find_cancelled_between_answers(luabroker: Callable[..., Running], holder: Holder) -> None:
    """The C-CANCEL comes while the query runs: the first answer is sent, then 0xFE00 ends the C-FIND."""
    instances = [ds for patient in ("P1", "P2", "P3") for ds in make_instances(1, patient_id=patient)]

    def scenario(target: Target) -> list[int]:
        assoc = associate(target, PatientRootQueryRetrieveInformationModelFind, evt_handlers=NODELAY_HANDLERS)
        query = identifier("PATIENT", PatientID="*")
        return cancelled_while_held(target, holder, assoc, lambda: [
            status.Status for status, _ in
            assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind, msg_id=MESSAGE_ID)],
            PatientRootQueryRetrieveInformationModelFind)

    options = {"DicomAlwaysAllowFind": True, "DicomModalities": {"holder": holder.modality()}}
    ours, orthanc = both(luabroker, instances, options, scenario, scripts={"hold.lua": HOLDING_FILTER})
    assert ours == orthanc == [PENDING, CANCEL]


def counts(responses: Iterator[tuple[Dataset, Any]]) -> list[dict[str, int]]:
    return [{keyword: status[keyword].value for keyword in COUNTS if keyword in status} for status, _ in responses]


def test_c_move_cancelled_during_a_sub_operation(luabroker: Callable[..., Running], holder: Holder) -> None:
    """The C-CANCEL comes during the first C-STORE: as in Orthanc (whose handler ignores DCMTK's flag), the
    next sub-operation is still performed, and its response is 0xFE00 with the counts."""
    instances = make_instances(4)

    def scenario(target: Target) -> tuple[list[dict[str, int]], int]:
        holder.stored.clear()
        assoc = associate(target, StudyRootQueryRetrieveInformationModelMove, evt_handlers=NODELAY_HANDLERS)
        query = identifier("STUDY", StudyInstanceUID=instances[0].StudyInstanceUID)
        answers = cancelled_while_held(target, holder, assoc, lambda: counts(assoc.send_c_move(
            query, holder.aet, StudyRootQueryRetrieveInformationModelMove, msg_id=MESSAGE_ID)),
            StudyRootQueryRetrieveInformationModelMove)
        return answers, len(holder.stored)

    options = {"DicomModalities": {"holder": holder.modality(), "canceller": ["CANCELLER", "127.0.0.1", 1]},
               "DicomAssociationCloseDelay": 0}
    ours, orthanc = both(luabroker, instances, options, scenario)
    assert ours == orthanc == ([
        {"Status": PENDING, "NumberOfRemainingSuboperations": 3, "NumberOfCompletedSuboperations": 1,
         "NumberOfFailedSuboperations": 0, "NumberOfWarningSuboperations": 0},
        {"Status": CANCEL, "NumberOfRemainingSuboperations": 2, "NumberOfCompletedSuboperations": 2,
         "NumberOfFailedSuboperations": 0, "NumberOfWarningSuboperations": 0}], 2)


def test_c_get_cancelled_during_a_sub_operation(luabroker: Callable[..., Running]) -> None:
    """The C-CANCEL comes before the response to the second C-STORE: that sub-operation is not counted,
    and 0xFE00 ends the C-GET."""
    instances = make_instances(4)

    def scenario(target: Target) -> tuple[list[dict[str, int]], int]:
        received: list[str] = []

        def on_store(event: evt.Event) -> int:
            received.append(str(event.dataset.SOPInstanceUID))
            if len(received) == 2:
                event.assoc.send_c_cancel(MESSAGE_ID, query_model=StudyRootQueryRetrieveInformationModelGet)
            return SUCCESS

        assoc = associate(target, StudyRootQueryRetrieveInformationModelGet, CTImageStorage,
                          ext_neg=[build_role(CTImageStorage, scp_role=True)],
                          evt_handlers=[(evt.EVT_C_STORE, on_store), *NODELAY_HANDLERS])
        query = identifier("STUDY", StudyInstanceUID=instances[0].StudyInstanceUID)
        try:
            answers = counts(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet, msg_id=MESSAGE_ID))
        finally:
            assoc.release()
        return answers, len(received)

    ours, orthanc = both(luabroker, instances, {"DicomAlwaysAllowGet": True}, scenario)
    assert ours == orthanc == ([
        {"Status": PENDING, "NumberOfRemainingSuboperations": 3, "NumberOfCompletedSuboperations": 1,
         "NumberOfFailedSuboperations": 0, "NumberOfWarningSuboperations": 0},
        {"Status": CANCEL, "NumberOfRemainingSuboperations": 3, "NumberOfCompletedSuboperations": 1,
         "NumberOfFailedSuboperations": 0, "NumberOfWarningSuboperations": 0}], 2)
