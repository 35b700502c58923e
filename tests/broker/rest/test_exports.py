"""``/exports`` and the exports log, side by side with a real Orthanc: both send the same resources to
the same receiver, and their logs must read the same (but for the dates)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer
from tests.support.receivers import RecordingScp

pytestmark = pytest.mark.skipif(ORTHANC_BINARY is None, reason="needs Orthanc (apt-get install orthanc)")


def without_dates(answer: dict[str, Any]) -> dict[str, Any]:
    for export in answer["Exports"]:
        assert len(export.pop("Date")) == len("20260101T120000")
    return answer


@pytest.fixture
def receiver() -> Iterator[RecordingScp]:
    scp = RecordingScp(aet="RECEIVER").start()
    yield scp
    scp.stop()


@pytest.fixture
def pair(luabroker, receiver: RecordingScp) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """luabroker and Orthanc, both logging exports, with the same modality and peer, and the same files."""
    network = {"DicomModalities": {"dest": ["RECEIVER", "127.0.0.1", receiver.port]}}
    peer = OrthancPeer.create(LogExportedResources=True, **network).start()
    try:
        ours = luabroker(LogExportedResources=True, OrthancPeers={"back": [peer.url + "/"]}, **network).http
        peer.client.put("/peers/back", json={"Url": str(ours.base_url) + "/"}).raise_for_status()
        for data in (samples.sample_file("CT_small.dcm"), samples.sample_file("MR_small.dcm")):
            assert ours.post("/instances", content=data).json() == peer.upload(data)
        yield ours, peer.client
    finally:
        peer.stop()


def test_exports_log_reads_as_orthancs(pair) -> None:
    ours, theirs = pair

    def both(method: str, path: str, body: Any = None, **params: str) -> Any:
        answers = [client.request(method, path, params=params, **({} if body is None else {"json": body}))
                   for client in (ours, theirs)]
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        if method == "GET" and path == "/exports":
            first, second = (without_dates(a.json()) for a in answers)
            assert first == second, params
            return first
        return None

    empty = both("GET", "/exports")
    assert empty == {"Exports": [], "Done": True, "Last": 0}
    both("GET", "/exports", last="")
    instance, *_ = ours.get("/instances").json()
    series, *_ = ours.get("/series").json()
    study, *_ = ours.get("/studies").json()
    patients = ours.get("/patients").json()
    both("POST", "/modalities/dest/store", instance)
    both("POST", "/modalities/dest/store", {"Resources": [series, study], "Synchronous": True})
    both("POST", "/modalities/dest/store", patients)
    both("POST", "/peers/back/store", study)
    log = both("GET", "/exports")
    assert [e["ResourceType"] for e in log["Exports"]] == ["Instance", "Series", "Study", "Patient", "Patient", "Study"]
    assert {e["RemoteModality"] for e in log["Exports"]} == {"dest", "back"}
    for params in ({"last": ""}, {"limit": "2"}, {"since": "2", "limit": "2"}, {"since": "5"}, {"since": "9"},
                   {"limit": "0"}, {"limit": "x"}, {"since": "-1", "limit": "-3"}, {"since": "1.5"},
                   {"limit": "4294967296"}, {"since": "2", "limit": " 1"}):
        both("GET", "/exports", **params)
    both("DELETE", "/exports")
    assert both("GET", "/exports") == {"Exports": [], "Done": True, "Last": 0}
    both("POST", "/modalities/dest/store", instance)
    assert both("GET", "/exports")["Last"] == 7  # sequence numbers are not reused after a DELETE


def test_exports_are_logged_only_when_asked(luabroker, receiver: RecordingScp) -> None:
    ours = luabroker(DicomModalities={"dest": ["RECEIVER", "127.0.0.1", receiver.port]}).http
    instance = ours.post("/instances", content=samples.sample_file("CT_small.dcm")).json()["ID"]
    assert ours.post("/modalities/dest/store", content=instance).status_code == 200
    assert len(receiver.stored) == 1
    assert ours.get("/exports").json() == {"Exports": [], "Done": True, "Last": 0}


def test_the_log_outlives_the_resource(luabroker, receiver: RecordingScp) -> None:
    ours = luabroker(LogExportedResources=True, DicomModalities={"dest": ["RECEIVER", "127.0.0.1", receiver.port]}).http
    instance = ours.post("/instances", content=samples.sample_file("CT_small.dcm")).json()
    assert ours.post("/modalities/dest/store", content=instance["ParentSeries"]).status_code == 200
    ours.delete(f"/patients/{instance['ParentPatient']}").raise_for_status()
    [export] = ours.get("/exports").json()["Exports"]
    tags = receiver.stored[0][0]
    assert (export["ID"], export["SeriesInstanceUID"], export["StudyInstanceUID"], export["PatientID"]) == (
        instance["ParentSeries"], tags.SeriesInstanceUID, tags.StudyInstanceUID, tags.PatientID)
    assert "SOPInstanceUID" not in export


def test_store_straight_sends_the_body_without_storing_it(luabroker, receiver: RecordingScp) -> None:
    ours = luabroker(DicomModalities={"dest": ["RECEIVER", "127.0.0.1", receiver.port]}).http
    data = samples.sample_file("CT_small.dcm")
    answer = ours.post("/modalities/dest/store-straight", content=data, headers={"Content-Type": "nope"})
    assert answer.status_code == 200
    assert answer.json() == {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                             "SOPInstanceUID": receiver.stored[0][0].SOPInstanceUID}
    assert ours.get("/instances").json() == []
    refused = ours.post("/modalities/dest/store-straight", content=b"nope")
    assert (refused.status_code, refused.json()["OrthancStatus"]) == (400, 15)
    assert len(receiver.stored) == 1
