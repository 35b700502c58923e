"""The options of job-submitting endpoints, read as Orthanc 1.10 reads them: ``Synchronous`` (or else
``Asynchronous``), ``Priority``, ``Transcode`` and the flags, with the same error, the same details and
in the same order when several are wrong (``broker/rest/job_options.py``, ``broker/json_fields.py``)."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

MODALITY, PEER = "joboptionsm", "joboptionsp"
BAD_OPTIONS = [
    {"Priority": "x", "Asynchronous": True}, {"Priority": 1.5}, {"Synchronous": "x"}, {"Asynchronous": 1},
    {"Transcode": 5}, {"Transcode": "1.2.3"}, {"Transcode": 5, "Priority": "x", "Synchronous": "y"},
    {"KeepSource": 3, "Priority": "x"}, {"Compress": 5}, {"Permissive": 3, "Synchronous": "y"},
    {"LocalAet": 5}, {"Synchronous": True, "Asynchronous": "x", "Priority": "x"},
]
ENDPOINTS = ["/studies/{study}/archive", "/studies/{study}/media", "/tools/create-archive", "/studies/{study}/modify",
             "/studies/{study}/anonymize", "/tools/bulk-modify", "/studies/{study}/split", "/studies/{study}/merge",
             f"/peers/{PEER}/store", f"/modalities/{MODALITY}/store"]


def answer(response: Any) -> tuple[int, int | None, str | None]:
    if response.status_code < 400 or not response.content:
        return response.status_code, None, None
    document = response.json()
    return response.status_code, document.get("OrthancStatus"), document.get("Details")


@pytest.fixture
def both(luabroker: Any, orthanc_peer: OrthancPeer) -> Any:
    unreachable = ["NOWHERE", "127.0.0.1", 1]
    server = luabroker(DicomModalities={MODALITY: unreachable}, OrthancPeers={PEER: {"Url": "http://127.0.0.1:1/"}})
    orthanc_peer.clear()
    assert orthanc_peer.client.put(f"/modalities/{MODALITY}", json=unreachable).status_code == 200
    assert orthanc_peer.client.put(f"/peers/{PEER}", json={"Url": "http://127.0.0.1:1/"}).status_code == 200
    for data in (samples.sample_file("CT_small.dcm"), samples.sample_file("MR_small.dcm")):
        assert server.http.post("/instances", content=data).json() == orthanc_peer.upload(data)
    studies = sorted(orthanc_peer.get("/studies"))
    yield server, orthanc_peer, studies
    orthanc_peer.client.delete(f"/modalities/{MODALITY}")
    orthanc_peer.client.delete(f"/peers/{PEER}")


def test_bad_options_are_answered_as_orthanc(both: Any) -> None:
    server, peer, (study, other) = both
    series = peer.get(f"/studies/{study}")["Series"]
    for template in ENDPOINTS:
        path = template.format(study=study)
        for options in BAD_OPTIONS:
            # KeepSource: a request whose options are all valid runs, and must leave the study in place.
            body = {"Resources": [other if "merge" in path else study], "Series": series, "Level": "Study",
                    "KeepSource": True, **options}
            if "split" in path or "merge" in path:  # what Orthanc reads first must be valid
                body.pop("Level")
            ours = answer(server.http.post(path, content=json.dumps(body)))
            theirs = answer(peer.client.post(path, content=json.dumps(body)))
            if theirs[0] >= 500:  # a valid request to an unreachable peer: the network error's text differs
                ours, theirs = ours[:2], theirs[:2]
            assert ours == theirs, (path, options)


def test_a_negative_priority_is_a_job_as_in_orthanc(both: Any) -> None:
    server, peer, (study, _) = both
    for path in (f"/studies/{study}/archive", f"/studies/{study}/modify"):
        body = json.dumps({"Priority": -3, "Asynchronous": True, "Replace": {"StudyDescription": "x"}})
        ours, theirs = server.http.post(path, content=body), peer.client.post(path, content=body)
        assert ours.status_code == theirs.status_code == 200
        assert set(ours.json()) == set(theirs.json()) == {"ID", "Path"}
        assert server.http.get(f"/jobs/{ours.json()['ID']}").json()["Priority"] == -3


def test_split_and_merge_check_their_study_and_sources_as_orthanc(both: Any) -> None:
    server, peer, (study, other) = both
    series, other_series = peer.get(f"/studies/{study}")["Series"][0], peer.get(f"/studies/{other}")["Series"][0]
    instance, other_instance = (peer.get(f"/series/{s}")["Instances"][0] for s in (series, other_series))
    unknown = "0a9b3153-2512774b-2d9580de-1fc3dcf6-3bd83918"
    cases = [
        (f"/studies/{unknown}/split", {"Series": [series]}), (f"/studies/{study}/split", {"Series": ["nope"]}),
        (f"/studies/{study}/split", {"Series": [other_series], "Priority": "x"}),
        (f"/studies/{study}/split", {"Instances": [other_instance]}),
        (f"/studies/{study}/split", {"Instances": ["nope"]}), (f"/studies/{study}/split", {"Series": []}),
        (f"/studies/{unknown}/merge", {"Resources": [other]}), (f"/studies/{study}/merge", {"Resources": [study]}),
        (f"/studies/{study}/merge", {"Resources": [series]}), (f"/studies/{study}/merge", {"Resources": [instance]}),
        (f"/studies/{study}/merge", {"Resources": [other_series, "nope"], "KeepSource": 4}),
        (f"/studies/{study}/merge", {"Resources": [other_series], "KeepSource": 4}),
    ]
    for path, body in cases:
        ours = answer(server.http.post(path, content=json.dumps(body)))
        theirs = answer(peer.client.post(path, content=json.dumps(body)))
        assert theirs[0] >= 400, (path, body)
        assert ours == theirs, (path, body)
