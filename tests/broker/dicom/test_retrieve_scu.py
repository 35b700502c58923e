"""The C-MOVE and C-GET SCU: luabroker retrieves from a real Orthanc 1.10 (loaded with the C-FIND SCP's
corpus) by ``/modalities/{name}/move``, ``/modalities/{name}/get`` and ``/queries/{id}/retrieve``; the
jobs answer as Orthanc's own answer the same requests (Orthanc retrieving from itself to luabroker), and
bad requests fail as in Orthanc."""
from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from broker.config.network import Modality
from broker.core.dicom_json import JsonFormat
from broker.core.tags import QUERY_RETRIEVE_LEVEL, STUDY_INSTANCE_UID
from broker.jobs.retrievals import DicomGetScuJob, DicomMoveScuJob
from tests.broker.dicom.test_find_scp import (  # noqa: F401 (orthanc: the fixture, Orthanc with the corpus)
    SERIES_1A,
    SERIES_1B,
    STUDY_1,
    orthanc,
)
from tests.support.orthanc_peer import OrthancPeer
from tests.support.waiting import wait_until

#: (Level, Resources, the SOP Instance UIDs they name in the corpus).
REQUESTS = [
    ("Patient", [{"PatientID": "P1"}], {f"{SERIES_1A}.1", f"{SERIES_1A}.2", f"{SERIES_1B}.1"}),
    ("Study", [{"StudyInstanceUID": STUDY_1}], {f"{SERIES_1A}.1", f"{SERIES_1A}.2", f"{SERIES_1B}.1"}),
    ("Series", [{"StudyInstanceUID": STUDY_1, "SeriesInstanceUID": SERIES_1A, "Modality": "CT"}],
     {f"{SERIES_1A}.1", f"{SERIES_1A}.2"}),
    ("Instance", [{"StudyInstanceUID": STUDY_1, "SeriesInstanceUID": SERIES_1B, "SOPInstanceUID": f"{SERIES_1B}.1"},
                  {"0020,000d": STUDY_1, "0020,000e": SERIES_1A, "0008,0018": f"{SERIES_1A}.2"}],
     {f"{SERIES_1A}.2", f"{SERIES_1B}.1"}),
]


@pytest.fixture
def pair(request: pytest.FixtureRequest, luabroker: Any) -> tuple[Any, httpx.Client]:
    """A luabroker with the modality ``peer`` (the Orthanc with the corpus), known to that Orthanc as
    ``luabroker`` (its C-MOVE destination, allowed to C-GET) and ``self``; and Orthanc's client."""
    peer: OrthancPeer = request.getfixturevalue("orthanc")
    server = luabroker(DicomModalities={"peer": [peer.aet, "127.0.0.1", peer.dicom_port]})
    client = peer.client
    assert client is not None
    assert client.put("/modalities/luabroker", json=[server.aet, "127.0.0.1", server.dicom_port]).is_success
    assert client.put("/modalities/self", json=[peer.aet, "127.0.0.1", peer.dicom_port]).is_success
    return server, client


def sop_instance_uids(http: httpx.Client) -> set[str]:
    return {instance["MainDicomTags"]["SOPInstanceUID"] for instance in http.get("/instances?expand").json()}


def unordered_query(content: dict[str, Any]) -> dict[str, Any]:
    """A job's content with its ``Query`` in a stable order (the answers of two SCPs come in their orders)."""
    return {**content, "Query": sorted(content["Query"], key=json.dumps)}


@pytest.mark.parametrize(("level", "resources", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_move_from_orthanc_brings_the_instances_and_answers_as_orthanc(pair: Any, level: str,
                                                                       resources: list[dict[str, str]],
                                                                       expected: set[str]) -> None:
    server, orthanc_http = pair
    body = {"Level": level, "Resources": resources, "TargetAet": server.aet}
    ours = server.http.post("/modalities/peer/move", json=body)
    assert ours.status_code == 200, ours.text
    assert sop_instance_uids(server.http) == expected
    theirs = orthanc_http.post("/modalities/self/move", json=body)
    assert ours.json() == theirs.json()


def test_move_to_the_default_target_comes_back_here(pair: Any) -> None:
    """Without ``TargetAet`` the target is our own ``DicomAet``: a plain query/retrieve."""
    server, _ = pair
    answer = server.http.post("/modalities/peer/move", json={"Level": "Series", "Resources": [
        {"StudyInstanceUID": STUDY_1, "SeriesInstanceUID": SERIES_1B}]})
    assert answer.status_code == 200, answer.text
    assert sop_instance_uids(server.http) == {f"{SERIES_1B}.1"}


@pytest.mark.parametrize(("level", "resources", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_get_from_orthanc_stores_the_instances_with_their_origin(pair: Any, level: str,
                                                                  resources: list[dict[str, str]],
                                                                  expected: set[str]) -> None:
    server, orthanc_http = pair
    answer = server.http.post("/modalities/peer/get", json={"Level": level, "Resources": resources})
    assert answer.status_code == 200, answer.text
    assert sop_instance_uids(server.http) == expected
    content = answer.json()
    assert content["ReceivedInstancesCount"] == len(expected)
    assert content["RemoteAet"] == orthanc_http.get("/system").json()["DicomAet"]
    for instance in server.http.get("/instances").json():
        metadata = server.http.get(f"/instances/{instance}/metadata?expand").json()
        assert (metadata["Origin"], metadata["RemoteAET"], metadata["CalledAET"]) == (
            "DicomProtocol", content["RemoteAet"], server.aet)


def test_get_of_nothing_fails_and_stores_nothing(pair: Any) -> None:
    server, _ = pair
    answer = server.http.post("/modalities/peer/get", json={"Level": "Study", "Resources": [
        {"StudyInstanceUID": "1.2.3.4.5.404"}]})
    assert answer.status_code != 200
    assert answer.json()["OrthancStatus"] == 9  # NetworkProtocol: the peer answered a failure
    assert server.http.get("/instances").json() == []


def test_retrieve_of_query_answers_brings_them_and_answers_as_orthanc(pair: Any) -> None:
    server, orthanc_http = pair
    query = {"Level": "Series", "Query": {"StudyInstanceUID": STUDY_1, "Modality": ""}}
    ours = server.http.post("/modalities/peer/query", json=query).json()["Path"]
    theirs = orthanc_http.post("/modalities/self/query", json=query).json()["Path"]
    assert len(server.http.get(f"{ours}/answers").json()) == 2
    # One answer, the target as plain text.
    one = server.http.post(f"{ours}/answers/0/retrieve", content=server.aet.encode())
    assert one.status_code == 200, one.text
    assert len(sop_instance_uids(server.http)) in (1, 2)
    # Every answer, in each DICOM format of the job's Query.
    for options in ({}, {"Full": True}, {"Simplify": True}, {"Short": True, "Timeout": 30}):
        body = {"TargetAet": server.aet, **options}
        mine = server.http.post(f"{ours}/retrieve", json=body)
        reference = orthanc_http.post(f"{theirs}/retrieve", json=body)
        assert mine.status_code == reference.status_code == 200, mine.text
        assert unordered_query(mine.json())["Query"] == unordered_query(reference.json())["Query"]
    assert sop_instance_uids(server.http) == {f"{SERIES_1A}.1", f"{SERIES_1A}.2", f"{SERIES_1B}.1"}
    assert "retrieve" in server.http.get(ours).json()


def test_asynchronous_move_is_a_dicom_move_scu_job(pair: Any) -> None:
    server, _ = pair
    created = server.http.post("/modalities/peer/move", json={
        "Level": "Study", "Resources": [{"StudyInstanceUID": STUDY_1}], "TargetAet": server.aet,
        "Asynchronous": True, "Priority": 3})
    assert created.status_code == 200, created.text
    assert sorted(created.json()) == ["ID", "Path"]
    info = wait_until(lambda: (job := server.http.get(created.json()["Path"]).json())["State"] == "Success" and job,
                      timeout=60, message="the move job never succeeded")
    assert (info["Type"], info["Priority"], info["Progress"]) == ("DicomMoveScu", 3, 100)
    assert info["Content"]["Query"] == [{"0008,0052": "STUDY", "0020,000d": STUDY_1}]
    assert len(sop_instance_uids(server.http)) == 3


#: Requests that fail, to be answered as Orthanc answers them: (modality, body).
BAD_MOVES: list[tuple[str, Any]] = [
    ("peer", "not json"),
    ("peer", []),
    ("peer", {"Level": "Study"}),
    ("peer", {"Resources": {}, "Level": "Study"}),
    ("peer", {"Resources": [], "Level": "Nope"}),
    ("peer", {"Resources": ["x"], "Level": "Study"}),
    ("peer", {"Resources": [{"StudyInstanceUID": 1}], "Level": "Study"}),
    ("peer", {"Resources": [{"NoSuchTag": "1"}], "Level": "Study"}),
    ("peer", {"Resources": [{"PatientID": "P1"}], "Level": "Study"}),
    ("peer", {"Resources": [], "Level": "Study", "LocalAet": 3}),
    ("peer", {"Resources": [], "Level": "Study", "TargetAet": ["X"]}),
    ("peer", {"Resources": [], "Level": "Study", "Timeout": -1}),
    ("nope", {"Resources": [], "Level": "Study"}),
]


@pytest.mark.parametrize(("modality", "body"), BAD_MOVES, ids=[str(b)[:50] for b in BAD_MOVES])
def test_bad_moves_fail_as_in_orthanc(pair: Any, modality: str, body: Any) -> None:
    server, orthanc_http = pair
    content = {"content": body} if isinstance(body, str) else {"json": body}
    ours = server.http.post(f"/modalities/{modality}/move", **content)
    theirs = orthanc_http.post(f"/modalities/{'self' if modality == 'peer' else modality}/move", **content)
    assert (ours.status_code, ours.json().get("OrthancStatus")) == \
        (theirs.status_code, theirs.json().get("OrthancStatus"))


def test_a_move_the_peer_cannot_serve_fails_as_in_orthanc(pair: Any) -> None:
    """A resource the peer has not, and a target it does not know: its failure status, as a failed job."""
    server, orthanc_http = pair
    for body in ({"Level": "Study", "Resources": [{"StudyInstanceUID": "1.2.3.404"}], "TargetAet": server.aet},
                 {"Level": "Study", "Resources": [{"StudyInstanceUID": STUDY_1}], "TargetAet": "NOBODY"}):
        ours = server.http.post("/modalities/peer/move", json=body)
        theirs = orthanc_http.post("/modalities/self/move", json=body)
        assert (ours.status_code, ours.json()["OrthancStatus"]) == (theirs.status_code, theirs.json()["OrthancStatus"])
    assert server.http.get("/instances").json() == []


def test_permissive_move_job_goes_on_after_a_failed_resource(pair: Any) -> None:
    server, _ = pair
    created = server.http.post("/modalities/peer/move", json={
        "Level": "Series", "Permissive": True, "Asynchronous": True, "TargetAet": server.aet, "Resources": [
            {"StudyInstanceUID": STUDY_1, "SeriesInstanceUID": "1.2.3.404"},
            {"StudyInstanceUID": STUDY_1, "SeriesInstanceUID": SERIES_1B}]})
    assert created.status_code == 200, created.text
    wait_until(lambda: server.http.get(created.json()["Path"]).json()["State"] == "Success", timeout=60,
               message="the permissive move job never succeeded")
    assert sop_instance_uids(server.http) == {f"{SERIES_1B}.1"}


def test_a_move_job_that_fails_says_why(pair: Any) -> None:
    server, _ = pair
    created = server.http.post("/modalities/peer/move", json={
        "Level": "Series", "Asynchronous": True, "TargetAet": server.aet, "Resources": [
            {"StudyInstanceUID": STUDY_1, "SeriesInstanceUID": "1.2.3.404"}]})
    job = wait_until(lambda: (info := server.http.get(created.json()["Path"]).json())["State"] == "Failure" and info,
                     timeout=60, message="the move job never failed")
    assert job["ErrorCode"] == 9 and "0xC000" in job["ErrorDetails"]


@pytest.mark.parametrize("job", [
    DicomMoveScuJob(Modality("PEER", "127.0.0.1", 104, local_aet="ME"), "LOCAL", "TARGET",
                    [{QUERY_RETRIEVE_LEVEL: "STUDY", STUDY_INSTANCE_UID: "1.2"}], timeout=7,
                    query_format=JsonFormat.FULL, permissive=True, position=1),
    DicomGetScuJob(Modality("PEER", "10.0.0.1", 11112, manufacturer="GE"), "LOCAL",
                   [{QUERY_RETRIEVE_LEVEL: "SERIES", STUDY_INSTANCE_UID: "1.2", 0x0020000E: "1.2.3"}], received=4),
], ids=["move", "get"])
def test_a_retrieve_job_is_the_same_after_a_restart(job: Any) -> None:
    """What is saved is enough to resume it: the same peer, commands, position and content."""
    again = type(job).unserialize(json.loads(json.dumps(job.serialize())))
    assert again.serialize() == job.serialize()
    assert again.content() == job.content()
    assert again.modality == job.modality
