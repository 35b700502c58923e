"""C-MOVE and C-GET SCP (broker/dicom/retrieve_scp.py): DCMTK's movescu and getscu, pynetdicom as a
second client, and a real Orthanc 1.10.1 answering the same requests where statuses and counts matter."""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from broker.dicom.negotiation import GET_SOP_CLASSES, MOVE_SOP_CLASSES
from broker.dicom.sockets import NODELAY_HANDLERS
from tests.support import dicom_samples as samples
from tests.support.factory import make_instances, to_bytes
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer
from tests.support.receivers import DCMTK_ENV, HAS_DCMTK, RecordingScp
from tests.support.server import Running
from tests.support.waiting import wait_until

COUNTS = ("Status", "NumberOfRemainingSuboperations", "NumberOfCompletedSuboperations",
          "NumberOfFailedSuboperations", "NumberOfWarningSuboperations")
needs_dcmtk = pytest.mark.skipif(not HAS_DCMTK, reason="DCMTK is not installed")
needs_orthanc = pytest.mark.skipif(ORTHANC_BINARY is None, reason="Orthanc is not installed")


def identifier(level: str, **values: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def responses(status_and_identifiers: Any) -> list[dict[str, Any]] | str:
    """Each response of a C-MOVE/C-GET as {element: value}; "aborted" when the association ended."""
    answers: list[dict[str, Any]] = []
    for status, found in status_and_identifiers:
        if status is None or "Status" not in status:
            return "aborted"
        answer = {keyword: status[keyword].value for keyword in COUNTS if keyword in status}
        if found is not None and "FailedSOPInstanceUIDList" in found:
            answer["FailedSOPInstanceUIDList"] = found.FailedSOPInstanceUIDList
        answers.append(answer)
    return answers


def c_move(port: int, aet: str, destination: str, query: Dataset, *, calling: str = "MOVESCU",
           model: str = StudyRootQueryRetrieveInformationModelMove) -> list[dict[str, Any]] | str:
    ae = AE(ae_title=calling)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, evt_handlers=NODELAY_HANDLERS)
    assert assoc.is_established
    try:
        return responses(assoc.send_c_move(query, destination, model))
    finally:
        if assoc.is_established:
            assoc.release()


def c_get(port: int, aet: str, query: Dataset, *, calling: str = "GETSCU", status: int = 0x0000,
          sop_class: str = CTImageStorage, syntaxes: list[str] | None = None
          ) -> tuple[list[dict[str, Any]] | str, list[tuple[Dataset, str]]]:
    """A C-GET from pynetdicom, which proposes ``sop_class`` in ``syntaxes`` (pynetdicom's default:
    uncompressed) with the SCP role and stores what comes back with ``status``: (responses, [(dataset,
    transfer syntax)])."""
    received: list[tuple[Dataset, str]] = []

    def on_store(event: evt.Event) -> int:
        received.append((event.dataset, str(event.context.transfer_syntax)))
        return status

    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, ext_neg=[build_role(sop_class, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store), *NODELAY_HANDLERS])
    assert assoc.is_established
    try:
        return responses(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)), received
    finally:
        if assoc.is_established:
            assoc.release()


def received_uids(receiver: RecordingScp) -> list[str]:
    return [str(ds.SOPInstanceUID) for ds, _, _ in receiver.stored]


def modalities(*receivers: RecordingScp, **extra: Any) -> dict[str, Any]:
    """``DicomModalities``: the receivers, and the calling AETs of the tests' SCUs."""
    table: dict[str, Any] = {receiver.aet.lower(): [receiver.aet, "127.0.0.1", receiver.port] for receiver in receivers}
    table.update({"movescu": ["MOVESCU", "127.0.0.1", 1], "getscu": ["GETSCU", "127.0.0.1", 1],
                  "nomove": {"AET": "NOMOVE", "Host": "127.0.0.1", "Port": 1, "AllowMove": False, "AllowGet": False}})
    table.update(extra)
    return table


def loaded(luabroker: Callable[..., Running], instances: list[Dataset], **options: Any) -> Running:
    server = luabroker(**options)
    for ds in instances:
        assert server.http.post("/instances", content=to_bytes(ds)).status_code == 200
    return server


def progress(count: int) -> list[dict[str, int]]:
    """Orthanc's responses to a C-MOVE of ``count`` instances that all went through."""
    pending = [{"Status": 0xFF00, "NumberOfRemainingSuboperations": count - done,
                "NumberOfCompletedSuboperations": done, "NumberOfFailedSuboperations": 0,
                "NumberOfWarningSuboperations": 0} for done in range(1, count)]
    return pending + [{"Status": 0x0000, "NumberOfCompletedSuboperations": count, "NumberOfFailedSuboperations": 0,
                       "NumberOfWarningSuboperations": 0}]


UNABLE_TO_PROCESS = [{"Status": 0xC000, "NumberOfCompletedSuboperations": 0, "NumberOfFailedSuboperations": 0,
                      "NumberOfWarningSuboperations": 0}]


@needs_dcmtk
def test_movescu_retrieves_a_study_to_storescp(luabroker: Callable[..., Running], storescp: Any) -> None:
    receiver = storescp()
    instances = make_instances(3)
    server = loaded(luabroker, instances, DicomModalities={"storescp": receiver.modality(),
                                                           "movescu": ["MOVESCU", "127.0.0.1", 1]})
    done = subprocess.run(["movescu", "-aet", "MOVESCU", "-aec", server.aet, "-aem", receiver.aet, "-S",
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={instances[0].StudyInstanceUID}",
                           "127.0.0.1", str(server.dicom_port)], env=DCMTK_ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    stored = receiver.wait_files(3, timeout=30)
    assert sorted(str(ds.SOPInstanceUID) for ds in stored) == sorted(str(ds.SOPInstanceUID) for ds in instances)


@pytest.mark.parametrize("level", ["PATIENT", "STUDY", "SERIES", "IMAGE"])
def test_c_move_of_each_level(luabroker: Callable[..., Running], recording_scp: Any, level: str) -> None:
    receiver = recording_scp(aet="DEST")
    instances = make_instances(4, series=2)
    server = loaded(luabroker, instances, DicomModalities=modalities(receiver))
    first = instances[0]
    study_root = StudyRootQueryRetrieveInformationModelMove
    query, model, expected = {
        "PATIENT": (identifier(level, PatientID="P1"), PatientRootQueryRetrieveInformationModelMove, instances),
        "STUDY": (identifier(level, StudyInstanceUID=first.StudyInstanceUID), study_root, instances),
        "SERIES": (identifier(level, StudyInstanceUID=first.StudyInstanceUID,
                              SeriesInstanceUID=first.SeriesInstanceUID),
                   study_root, [instances[0], instances[2]]),
        "IMAGE": (identifier(level, SOPInstanceUID=instances[1].SOPInstanceUID), study_root, [instances[1]]),
    }[level]
    assert c_move(server.dicom_port, server.aet, "DEST", query, model=model) == progress(len(expected))
    assert sorted(received_uids(receiver)) == sorted(str(ds.SOPInstanceUID) for ds in expected)
    # Each C-STORE names the C-MOVE it serves; the calling AET is DicomAet.
    assert {(request.MoveOriginatorApplicationEntityTitle, calling) for request, calling in receiver.requests} == \
        {("MOVESCU", "LUABROKER")}


def test_unknown_destination_and_nothing_matching(luabroker: Callable[..., Running], recording_scp: Any) -> None:
    receiver = recording_scp(aet="DEST")
    instances = make_instances(1)
    server = loaded(luabroker, instances, DicomModalities=modalities(receiver))
    study = identifier("STUDY", StudyInstanceUID=instances[0].StudyInstanceUID)
    assert c_move(server.dicom_port, server.aet, "NOWHERE", study) == UNABLE_TO_PROCESS
    assert c_move(server.dicom_port, server.aet, "DEST", identifier("STUDY", StudyInstanceUID="1.2.3")) == \
        UNABLE_TO_PROCESS
    assert receiver.stored == []


def test_who_may_move(luabroker: Callable[..., Running], recording_scp: Any) -> None:
    """Unknown AETs and modalities without ``AllowMove`` are refused (the association is aborted, as
    Orthanc does), unless ``DicomAlwaysAllowMove``."""
    receiver = recording_scp(aet="DEST")
    instances = make_instances(1)
    study = identifier("STUDY", StudyInstanceUID=instances[0].StudyInstanceUID)
    strict = loaded(luabroker, instances, DicomModalities=modalities(receiver))
    assert c_move(strict.dicom_port, strict.aet, "DEST", study, calling="STRANGER") == "aborted"
    assert c_move(strict.dicom_port, strict.aet, "DEST", study, calling="NOMOVE") == "aborted"
    assert c_move(strict.dicom_port, strict.aet, "DEST", study, calling="movescu") == progress(1)  # AETs: no case
    lenient = loaded(luabroker, instances, DicomModalities=modalities(receiver), DicomAlwaysAllowMove=True)
    assert c_move(lenient.dicom_port, lenient.aet, "DEST", study, calling="STRANGER") == progress(1)


@needs_orthanc
def test_a_synchronous_move_uses_one_association(luabroker: Callable[..., Running], recording_scp: Any) -> None:
    """One association per C-MOVE for all its sub-operations, even with ``DicomAssociationCloseDelay`` 0,
    as Orthanc (one connection per C-MOVE)."""
    instances = make_instances(3)
    study = identifier("STUDY", StudyInstanceUID=instances[0].StudyInstanceUID)

    def associations(port: int, aet: str, receiver: RecordingScp) -> tuple[list[str], int]:
        for _ in range(2):
            assert c_move(port, aet, "DEST", study) == progress(3)
        return [calling == aet for calling in receiver.requested], len(receiver.stored)

    options = {"DicomAssociationCloseDelay": 0}
    receiver = recording_scp(aet="DEST")
    orthanc = OrthancPeer.create(DicomModalities=modalities(receiver), **options).start()
    try:
        for ds in instances:
            orthanc.upload(to_bytes(ds))
        expected = associations(orthanc.dicom_port, orthanc.aet, receiver)
    finally:
        orthanc.stop()
    receiver = recording_scp(aet="DEST")
    server = loaded(luabroker, instances, DicomModalities=modalities(receiver), **options)
    assert associations(server.dicom_port, server.aet, receiver) == expected == ([True, True], 6)


def test_asynchronous_move_is_a_job(luabroker: Callable[..., Running], recording_scp: Any) -> None:
    """With ``SynchronousCMove`` false the C-MOVE answers at once; its job retries a refused C-STORE
    (the destination first answers 0xA700, out of resources) and runs the ``OnJob*`` callbacks."""
    receiver = recording_scp(aet="DEST", status=0xA700)
    instances = make_instances(3)
    script = """
    events = {}
    function OnJobSubmitted(jobId) table.insert(events, 'submitted ' .. jobId) end
    function OnJobSuccess(jobId) table.insert(events, 'success ' .. jobId) end
    """
    server = loaded(luabroker, instances, scripts={"jobs.lua": script}, ExecuteLuaEnabled=True,
                    DicomModalities=modalities(receiver), SynchronousCMove=False,
                    Jobs={"RetryAttempts": 6, "RetryDelay": 0.5})  # retries for 15 s: time to flip the status
    study = identifier("STUDY", StudyInstanceUID=instances[0].StudyInstanceUID)
    assert c_move(server.dicom_port, server.aet, "DEST", study) == progress(3)
    wait_until(lambda: receiver.stored, message="a first, refused, C-STORE")
    receiver.status = 0x0000
    [job_id] = server.http.get("/jobs").json()
    wait_until(lambda: server.http.get(f"/jobs/{job_id}").json()["State"] == "Success", message="the job's success")
    job = server.http.get(f"/jobs/{job_id}").json()
    assert job["Type"] == "DicomModalityStore"
    content = job["Content"]
    assert (content["Description"], content["RemoteAet"], content["LocalAet"], content["InstancesCount"],
            content["MoveOriginatorAET"]) == ("C-MOVE", "DEST", "LUABROKER", 3, "MOVESCU")
    stored = received_uids(receiver)  # the refused instance is there twice: refused, then stored
    assert sorted(set(stored)) == sorted(str(ds.SOPInstanceUID) for ds in instances) and len(stored) > 3
    wait_until(lambda: server.execute("print(#events)").text.strip() == "2", message="the job's events")
    assert server.execute("for _, e in ipairs(events) do print(e) end").text.splitlines() == [
        f"submitted {job_id}", f"success {job_id}"]


@needs_dcmtk
def test_getscu_retrieves_a_series(luabroker: Callable[..., Running], tmp_path: Path) -> None:
    instances = make_instances(4, series=2)
    server = loaded(luabroker, instances, DicomModalities=modalities())
    first = instances[0]
    target = tmp_path / "got"
    target.mkdir()
    done = subprocess.run(["getscu", "-aet", "GETSCU", "-aec", server.aet, "-S", "-k", "QueryRetrieveLevel=SERIES",
                           "-k", f"StudyInstanceUID={first.StudyInstanceUID}",
                           "-k", f"SeriesInstanceUID={first.SeriesInstanceUID}", "-od", str(target),
                           "127.0.0.1", str(server.dicom_port)], env=DCMTK_ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    got = sorted(str(pydicom.dcmread(path).SOPInstanceUID) for path in target.iterdir())
    assert got == sorted([str(instances[0].SOPInstanceUID), str(instances[2].SOPInstanceUID)])


def test_c_get_statuses(luabroker: Callable[..., Running]) -> None:
    instances = make_instances(2)
    server = loaded(luabroker, instances, DicomModalities=modalities())
    study = identifier("STUDY", StudyInstanceUID=instances[0].StudyInstanceUID)
    answers, received = c_get(server.dicom_port, server.aet, study)
    assert len(received) == 2
    assert [answer["Status"] for answer in answers] == [0xFF00, 0xFF00, 0x0000]
    assert answers[-1]["NumberOfCompletedSuboperations"] == 2
    answers, _ = c_get(server.dicom_port, server.aet, study, status=0xA700)  # every sub-operation refused
    assert (answers[-1]["Status"], answers[-1]["NumberOfFailedSuboperations"]) == (0xA702, 2)
    assert c_get(server.dicom_port, server.aet, identifier("STUDY", StudyInstanceUID="1.2.3"))[0] == UNABLE_TO_PROCESS
    assert c_get(server.dicom_port, server.aet, study, calling="STRANGER")[0] == "aborted"


def move_scenarios(port: int, aet: str, instances: list[Dataset]) -> dict[str, Any]:
    """The answers to the C-MOVEs where Orthanc's statuses and counts matter."""
    first = instances[0]
    study = identifier("STUDY", StudyInstanceUID=first.StudyInstanceUID)
    no_level = Dataset()
    no_level.SeriesInstanceUID = first.SeriesInstanceUID
    return {
        "study": c_move(port, aet, "DEST", study),
        "list with an unknown UID": c_move(port, aet, "DEST", identifier(
            "STUDY", StudyInstanceUID=f"{first.StudyInstanceUID}\\1.2.3")),
        "nothing matching": c_move(port, aet, "DEST", identifier("STUDY", StudyInstanceUID="1.2.3")),
        "unknown destination": c_move(port, aet, "NOWHERE", study),
        "refusing destination": c_move(port, aet, "REFUSER", study),
        "unknown caller": c_move(port, aet, "DEST", study, calling="STRANGER"),
        "caller without AllowMove": c_move(port, aet, "DEST", study, calling="NOMOVE"),
        "no level": c_move(port, aet, "DEST", no_level),
        "accession number": c_move(port, aet, "DEST", identifier("STUDY", AccessionNumber="ACC1")),
        "empty accession number": c_move(port, aet, "DEST", identifier(
            "STUDY", AccessionNumber="", StudyInstanceUID=first.StudyInstanceUID)),
        "empty identifiers": c_move(port, aet, "DEST", identifier("STUDY", AccessionNumber="", StudyInstanceUID="")),
        "accession number at patient level": c_move(port, aet, "DEST", identifier("PATIENT", AccessionNumber="ACC1")),
    }


@needs_orthanc
@pytest.mark.parametrize("synchronous", [True, False])
def test_c_move_answers_as_orthanc(luabroker: Callable[..., Running], recording_scp: Any, synchronous: bool) -> None:
    receiver = recording_scp(aet="DEST")
    refuser = recording_scp(aet="REFUSER", status=0xA700)
    instances = make_instances(3)
    for ds in instances:
        ds.AccessionNumber = "ACC1"
    table = modalities(receiver, refuser)
    orthanc = OrthancPeer.create(DicomModalities=table, SynchronousCMove=synchronous).start()
    try:
        for ds in instances:
            orthanc.upload(to_bytes(ds))
        expected = move_scenarios(orthanc.dicom_port, orthanc.aet, instances)
        orthanc_jobs = [orthanc.get(f"/jobs/{job}") for job in orthanc.get("/jobs")]
    finally:
        orthanc.stop()
    server = loaded(luabroker, instances, DicomModalities=table, SynchronousCMove=synchronous)
    assert move_scenarios(server.dicom_port, server.aet, instances) == expected
    jobs = [server.http.get(f"/jobs/{job}").json() for job in server.http.get("/jobs").json()]
    assert len(jobs) == len(orthanc_jobs)  # one per C-MOVE that matched, when asynchronous
    assert all(job["Content"]["LocalAet"] == server.aet for job in jobs)  # DicomAet, Orthanc's too
    wanted = ("Description", "InstancesCount", "RemoteAet", "MoveOriginatorAET", "MoveOriginatorID")
    assert sorted([job["Content"].get(key) for key in wanted] for job in jobs) == \
        sorted([job["Content"].get(key) for key in wanted] for job in orthanc_jobs)


def get_scenarios(port: int, aet: str, instances: list[Dataset]) -> dict[str, Any]:
    """The answers to the C-GETs where Orthanc's statuses and counts matter (not the stored datasets)."""
    study = identifier("STUDY", StudyInstanceUID=instances[0].StudyInstanceUID)
    return {
        "study": c_get(port, aet, study)[0],
        "every sub-operation refused": c_get(port, aet, study, status=0xA700)[0],
        "a warning": c_get(port, aet, study, status=0xB000)[0],
        "list with an unknown UID": c_get(port, aet, identifier(
            "STUDY", StudyInstanceUID=f"{instances[0].StudyInstanceUID}\\1.2.3"))[0],
        "nothing matching": c_get(port, aet, identifier("STUDY", StudyInstanceUID="1.2.3"))[0],
        "unknown caller": c_get(port, aet, study, calling="STRANGER")[0],
        "caller without AllowGet": c_get(port, aet, study, calling="NOMOVE")[0],
    }


@needs_orthanc
def test_c_get_answers_as_orthanc(luabroker: Callable[..., Running]) -> None:
    instances = make_instances(2)
    table = modalities()
    orthanc = OrthancPeer.create(DicomModalities=table).start()
    try:
        for ds in instances:
            orthanc.upload(to_bytes(ds))
        expected = get_scenarios(orthanc.dicom_port, orthanc.aet, instances)
    finally:
        orthanc.stop()
    server = loaded(luabroker, instances, DicomModalities=table)
    assert get_scenarios(server.dicom_port, server.aet, instances) == expected


@needs_orthanc
@pytest.mark.parametrize("transcode", [True, False])
def test_c_get_transcodes_as_orthanc(luabroker: Callable[..., Running], transcode: bool) -> None:
    """A JPEG instance asked for in Explicit VR Little Endian only: transcoded, unless the calling
    modality has ``AllowTranscoding`` false, or ``TranscodeDicomProtocol`` is false, where the C-GET ends
    with 0xC000 (one failed)."""
    jpeg = pydicom.dcmread(samples.TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm")
    query = identifier("STUDY", StudyInstanceUID=jpeg.StudyInstanceUID)
    table = modalities(strict={"AET": "STRICT", "Host": "127.0.0.1", "Port": 1, "AllowTranscoding": False})

    def scenarios(port: int, aet: str) -> list[Any]:
        answers = []
        for calling in ("GETSCU", "STRICT"):
            responses_, received = c_get(port, aet, query, calling=calling, sop_class=jpeg.SOPClassUID,
                                         syntaxes=[ExplicitVRLittleEndian])
            answers.append((responses_, [(str(ds.SOPInstanceUID), syntax) for ds, syntax in received]))
        return answers

    orthanc = OrthancPeer.create(DicomModalities=table, TranscodeDicomProtocol=transcode).start()
    try:
        orthanc.upload(to_bytes(jpeg))
        expected = scenarios(orthanc.dicom_port, orthanc.aet)
    finally:
        orthanc.stop()
    server = loaded(luabroker, [jpeg], DicomModalities=table, TranscodeDicomProtocol=transcode)
    assert scenarios(server.dicom_port, server.aet) == expected
    assert expected[0][1] == ([(str(jpeg.SOPInstanceUID), ExplicitVRLittleEndian)] if transcode else [])


def test_the_conformance_statement_lists_move_and_get(luabroker: Callable[..., Running]) -> None:
    statement = luabroker().http.get("/tools/dicom-conformance").text
    assert "Move SCP Conformance" in statement and "Get SCP Conformance" in statement
    for uid in (*MOVE_SOP_CLASSES, *GET_SOP_CLASSES):
        assert uid in statement
