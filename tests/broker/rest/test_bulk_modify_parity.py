"""``/tools/bulk-modify`` and ``/tools/bulk-anonymize``, luabroker against a real Orthanc 1.10: the same
files, the same requests, the same statuses and error codes, the same answer keys and the same number
of new resources per level."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from broker.core.store import Store
from tests.support import dicom_samples as samples
from tests.support import factory
from tests.support.modification_samples import Client, peer_answer
from tests.support.orthanc_peer import OrthancPeer
from tests.support.waiting import job_succeeded

LEVELS = ["patients", "studies", "series", "instances"]
BULKS = ["/tools/bulk-modify", "/tools/bulk-anonymize"]


@pytest.fixture
def both(orthanc_peer: OrthancPeer, store: Store) -> tuple[OrthancPeer, Client, dict[str, dict[str, str]]]:
    """CT_small, MR_small and a two-series study of four instances, on both servers."""
    orthanc_peer.clear()
    client = Client(SimpleNamespace(store=store))
    files = [samples.sample_file("CT_small.dcm"), samples.sample_file("MR_small.dcm")]
    files += [factory.to_bytes(ds) for ds in factory.make_instances(4, series=2, routing_tags=True)]
    ids = {}
    for index, data in enumerate(files):
        ours = client.post("/instances", data).json()
        assert ours == orthanc_peer.upload(data)
        ids[["ct", "mr", "s0", "s1", "s2", "s3"][index]] = ours
    return orthanc_peer, client, ids


def counts(client: Client, peer: OrthancPeer) -> tuple[list[int], list[int]]:
    return [len(client.get(f"/{level}")) for level in LEVELS], [len(peer.get(f"/{level}")) for level in LEVELS]


def same_status(ours: Any, theirs: Any) -> tuple[tuple, tuple]:
    return (ours.status, ours.kind, ours.orthanc_status), (theirs.status, theirs.kind, theirs.orthanc_status)


def test_bad_bodies_answer_as_orthanc(both) -> None:
    peer, client, ids = both
    ct = ids["ct"]["ID"]
    bodies: list[Any] = [
        b"", b"notjson", [], "text", {}, {"Resources": "x"}, {"Resources": [1]}, {"Resources": None},
        {"Resources": ["nope"]}, {"Resources": [ct, "nope"]},
        {"Resources": [ct], "Level": "Nope"}, {"Resources": [ct], "Level": 3}, {"Resources": [ct], "Level": None},
        {"Resources": "x", "Level": "x"}, {"Resources": ["nope"], "Level": "x"},
        {"Resources": [ct], "KeepSource": "x"}, {"Resources": ["nope"], "KeepSource": "x"},
        {"Resources": "x", "KeepSource": "x"},
        {"Resources": [ct], "Transcode": "1.2.3"}, {"Resources": [ct], "Transcode": 5},
        {"Resources": ["nope"], "Transcode": "1.2.3"},
        {"Resources": [ct], "Priority": "x"}, {"Resources": [ct], "Asynchronous": "x"},
        {"Resources": [ct], "Synchronous": 1}, {"Resources": ["nope"], "Asynchronous": "x"},
        {"Resources": ["nope"], "Replace": {"PatientID": "x"}}, {"Resources": [ct], "Replace": {"PatientID": "x"}},
        {"Resources": [ct], "Replace": {"PatientID": "x"}, "Force": True, "Level": "Study"},
        {"Resources": [], "Replace": {"PatientID": "x"}, "Force": True, "Level": "Study"},
        {"Resources": [ct], "Replace": {"StudyInstanceUID": "1.2"}, "Force": True, "Level": "Series"},
        {"Resources": [ct], "Remove": ["PatientID"], "Force": True},
        {"Resources": [ct], "Replace": {"StationName": 12}},
        {"Resources": [ct], "DicomVersion": "x"}, {"Resources": [ct], "KeepPrivateTags": "x"},
        {"Resources": [ct], "RemovePrivateTags": "x"},
    ]
    for url in BULKS:
        for body in bodies:
            ours = client.post(url, body)
            theirs = peer_answer(peer, "POST", url, body)
            assert same_status(ours, theirs)[0] == same_status(ours, theirs)[1], (url, body, ours.body[:300])
            ours_counts, their_counts = counts(client, peer)
            assert ours_counts == their_counts, (url, body)


def check_answer(client: Client, ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert list(ours) == list(theirs)
    assert {key: value for key, value in ours.items() if key != "Resources"} == \
        {key: value for key, value in theirs.items() if key != "Resources"}
    assert Counter(item["Type"] for item in ours["Resources"]) == Counter(item["Type"] for item in theirs["Resources"])
    order = ["Instance", "Series", "Study", "Patient"]
    assert [item["Type"] for item in ours["Resources"]] == \
        sorted((item["Type"] for item in ours["Resources"]), key=order.index)
    for item in ours["Resources"]:
        assert sorted(item) == ["ID", "Path", "Type"]
        assert client.call("GET", item["Path"]).status == 200, item
        assert item["Path"].endswith("/" + item["ID"])
    for level in order:
        listed = [item["ID"] for item in ours["Resources"] if item["Type"] == level]
        assert listed == sorted(listed)


RUNS: list[tuple[str, Any]] = [
    ("/tools/bulk-modify", lambda ids: {"Resources": []}),
    ("/tools/bulk-anonymize", lambda ids: {"Resources": []}),
    ("/tools/bulk-modify", lambda ids: {"Resources": [ids["ct"]["ID"], ids["mr"]["ParentSeries"]],
                                        "Replace": {"StationName": "Bulk"}}),
    ("/tools/bulk-modify", lambda ids: {"Resources": [ids["s0"]["ParentPatient"], ids["mr"]["ParentSeries"]],
                                        "Level": "Series", "Replace": {"StationName": "Y"},
                                        "Transcode": "1.2.840.10008.1.2"}),
    ("/tools/bulk-modify", lambda ids: {"Resources": [ids["s0"]["ParentStudy"], ids["ct"]["ParentStudy"]],
                                        "Level": "study", "Replace": {"StudyDescription": "D"}}),
    ("/tools/bulk-modify", lambda ids: {"Resources": [ids["s0"]["ParentStudy"]], "Level": "studies"}),
    ("/tools/bulk-modify", lambda ids: {"Resources": [ids["s1"]["ID"]], "Level": "IMAGES"}),
    ("/tools/bulk-modify", lambda ids: {"Resources": [ids["s0"]["ParentPatient"]], "Force": True,
                                        "Replace": {"PatientID": "BULKPID"}}),
    ("/tools/bulk-modify", lambda ids: {"Resources": [ids["mr"]["ParentStudy"]], "Level": "Patient", "Force": True,
                                        "Replace": {"PatientID": "BULKPID2"}, "KeepSource": False}),
    ("/tools/bulk-anonymize", lambda ids: {"Resources": [ids["s0"]["ParentPatient"], ids["ct"]["ID"]]}),
    ("/tools/bulk-anonymize", lambda ids: {"Resources": [ids["s2"]["ParentSeries"], ids["ct"]["ParentSeries"]],
                                           "KeepSource": False, "Level": "Nope", "DicomVersion": "2017c"}),
    ("/tools/bulk-anonymize", lambda ids: {"Resources": [ids["s0"]["ID"], ids["s0"]["ID"]],
                                           "Replace": {"PatientName": "Same"}}),
]


@pytest.mark.parametrize("url,make_body", RUNS)
def test_runs_answer_and_store_as_orthanc(both, url: str, make_body: Any) -> None:
    peer, client, ids = both
    body = make_body(ids)
    ours = client.post(url, body)
    theirs = peer_answer(peer, "POST", url, body)
    assert same_status(ours, theirs)[0] == same_status(ours, theirs)[1] == (200, "body", None), (ours.body[:300])
    check_answer(client, ours.json(), theirs.json())
    ours_counts, their_counts = counts(client, peer)
    assert ours_counts == their_counts


def test_an_instance_listed_twice_fails_as_orthanc(both) -> None:
    """Orthanc does not merge the instances of overlapping resources: the second copy of an instance is
    already stored, and the request fails (500 ``CannotStoreInstance``) after storing the others.
    (Studies of one instance: how many copies of a larger one are stored before the failure depends
    on the order of its instances, which is the index's order in Orthanc and the ids' order here.)"""
    peer, client, ids = both
    for url, body in [("/tools/bulk-modify", {"Resources": [ids["ct"]["ID"], ids["ct"]["ParentStudy"]],
                                              "Replace": {"StationName": "Twice"}}),
                      ("/tools/bulk-anonymize", {"Resources": [ids["mr"]["ID"], ids["mr"]["ParentPatient"]]})]:
        ours = client.post(url, body)
        theirs = peer_answer(peer, "POST", url, body)
        assert same_status(ours, theirs)[0] == same_status(ours, theirs)[1] == (500, "error", 2018), url
        ours_counts, their_counts = counts(client, peer)
        assert ours_counts == their_counts, url


def test_a_permissive_bulk_skips_the_failed_copy_as_orthanc(both) -> None:
    peer, client, ids = both
    body = {"Resources": [ids["ct"]["ID"], ids["ct"]["ParentStudy"], ids["mr"]["ID"]],
            "Replace": {"StationName": "Twice"}, "Permissive": True}
    ours = client.post("/tools/bulk-modify", body)
    theirs = peer_answer(peer, "POST", "/tools/bulk-modify", body)
    assert same_status(ours, theirs)[0] == same_status(ours, theirs)[1] == (200, "body", None)
    for answer in (ours.json(), theirs.json()):  # the copy that failed is skipped, and not counted
        assert (answer["FailedInstancesCount"], answer["InstancesCount"]) == (0, 3)
    check_answer(client, ours.json(), theirs.json())
    ours_counts, their_counts = counts(client, peer)
    assert ours_counts == their_counts


def test_asynchronous_bulks_run_as_resource_modification_jobs(luabroker) -> None:
    http = luabroker().http
    ct = http.post("/instances", content=samples.sample_file("CT_small.dcm")).json()
    mr = http.post("/instances", content=samples.sample_file("MR_small.dcm")).json()
    body = {"Resources": [ct["ParentStudy"], mr["ID"]], "Replace": {"StationName": "Async"}, "Level": "Series"}
    info = job_succeeded(http, http.post("/tools/bulk-modify", json={**body, "Asynchronous": True}).json())
    assert info["Type"] == "ResourceModification"
    content = info["Content"]
    assert content["IsAnonymization"] is False and content["InstancesCount"] == 2
    assert Counter(item["Type"] for item in content["Resources"]) == {"Instance": 2, "Series": 2, "Study": 2,
                                                                      "Patient": 2}
    for item in content["Resources"]:
        if item["Type"] == "Instance":
            assert http.get(f"{item['Path']}/content/0008-1010").text.rstrip() == "Async"
    synchronous = http.post("/tools/bulk-modify", json=body).json()
    assert list(content) == list(synchronous)
    # The CT's patient now holds the original, the job's copy and two synchronous copies (of both), each in
    # a series of its own.
    info = job_succeeded(http, http.post("/tools/bulk-anonymize", json={"Resources": [ct["ParentPatient"]],
                                                                   "Synchronous": False, "KeepSource": False}).json())
    content = info["Content"]
    assert content["IsAnonymization"] is True and content["InstancesCount"] == 4
    assert Counter(item["Type"] for item in content["Resources"]) == {"Instance": 4, "Series": 4, "Study": 1,
                                                                      "Patient": 1}
    patient = next(item for item in content["Resources"] if item["Type"] == "Patient")
    assert http.get(patient["Path"]).json()["MainDicomTags"]["PatientName"].startswith("Anonymized")
    assert ct["ID"] not in http.get("/instances").json() and mr["ID"] in http.get("/instances").json()


def test_a_bulk_job_survives_serialization() -> None:
    from broker.core.levels import Level
    from broker.jobs.modification import ResourceModificationJob

    job = ResourceModificationJob(Level.SERIES, False, {"Resources": ["a"]}, None, ["i1"], True, None, {}, bulk=True)
    again = ResourceModificationJob.unserialize(job.serialize())
    assert again.bulk and again.level is Level.SERIES and again.content()["Resources"] == []
    older = {key: value for key, value in job.serialize().items() if key != "Bulk"}  # saved before bulks existed
    assert not ResourceModificationJob.unserialize(older).bulk
