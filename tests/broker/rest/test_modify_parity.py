"""Modification and anonymization, luabroker against a real Orthanc 1.10: the same files, the same
requests, the same answers (files compared tag by tag, generated identifiers aside)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from broker.core.levels import Level
from broker.core.store import Store
from tests.support import dicom_samples as samples
from tests.support import factory
from tests.support.modification_samples import Client, differences, peer_answer
from tests.support.orthanc_peer import OrthancPeer

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPGExtended.dcm"]
LEVELS = ["patients", "studies", "series", "instances"]


def routing_file() -> bytes:
    """An instance with what the auto-routing samples change: StationName, MilitaryRank, private tags."""
    return factory.to_bytes(factory.make_instances(1, routing_tags=True)[0])


def sequence_file() -> bytes:
    """An instance with nested sequences, private tags inside them, and a Latin-1 patient name."""
    return samples.kitchen_sink()


@pytest.fixture
def both(orthanc_peer: OrthancPeer, store: Store) -> tuple[OrthancPeer, Client, dict[str, str]]:
    orthanc_peer.clear()
    client = Client(SimpleNamespace(store=store))
    ids = {}
    for name, data in [(name, samples.sample_file(name)) for name in FILES] + \
                      [("routing", routing_file()), ("sequences", sequence_file())]:
        ours = client.post("/instances", data).json()
        assert ours == orthanc_peer.upload(data)
        ids[name] = ours["ID"]
    return orthanc_peer, client, ids


INSTANCE_REQUESTS: list[dict[str, Any]] = [
    {},
    {"Replace": {"StationName": "My Medical Device"}, "Remove": ["MilitaryRank"], "RemovePrivateTags": True},
    {"Replace": {"0008,1010": "A", "0010-1080": "B", "00081030": "Study", "InstitutionName": None}},
    {"Keep": ["SOPInstanceUID"], "Force": True},
    {"Replace": {"PatientID": "NEW", "PatientName": "New^Name"}, "Force": True},
    {"Replace": {"StudyInstanceUID": "1.2.3.4"}, "Force": True},
    {"Replace": {"SeriesInstanceUID": "1.2.3.5", "SOPInstanceUID": "1.2.3.6"}, "Force": True},
    {"Replace": {"Rows": "-1", "SliceThickness": "1\\2", "ImageType": "A\\B", "StationName": "Müller"}},
    {"Replace": {"StationName": "日本"}},
    {"Replace": {"ReferencedImageSequence": [{"ReferencedSOPInstanceUID": "1.2", "ReferencedSOPClassUID": "1.3"},
                                             [], {}]}},
    {"Replace": {"ProcedureCodeSequence[0].CodeMeaning": "changed",
                 "ProcedureCodeSequence[*].CodeValue": "all", "ProcedureCodeSequence[5].CodeValue": "none"}},
    {"Remove": ["ProcedureCodeSequence[*].CodeValue", "ProcedureCodeSequence[0].0040,0260"]},
    {"Remove": ["StationName"], "Replace": {"StationName": "wins"}},
    {"Replace": {"StationName": "loses"}, "Keep": ["StationName"]},
    {"RemovePrivateTags": True, "Keep": ["0011,1001"]},
    {"Replace": {"0011,1002": "replaced private", "0051,1010": "no creator"}},
    {"Replace": {"DimensionIndexPointer": "0010,0010", "RealWorldValueFirstValueMapped": "5"}},
    {"Replace": {"SpecificCharacterSet": "ISO_IR 192", "StationName": "日本"}},  # other values keep their bytes
    {"Transcode": "1.2.840.10008.1.2"},
    {"Unknown": 12, "Asynchronous": True},
]


def test_instance_modify_equals_orthancs(both) -> None:
    peer, client, ids = both
    for name, instance in ids.items():
        for body in INSTANCE_REQUESTS:
            ours = client.post(f"/instances/{instance}/modify", body)
            theirs = peer_answer(peer, "POST", f"/instances/{instance}/modify", body)
            assert (ours.status, ours.kind, ours.orthanc_status) == \
                (theirs.status, theirs.kind, theirs.orthanc_status), (name, body, ours.body[:300])
            if ours.status == 200:
                assert ours.content_type == theirs.content_type == "application/dicom"
                assert differences(ours.body, theirs.body) == [], (name, body)


def test_routing_modification_changes_what_the_samples_check(both) -> None:
    """The AutoroutingModification sample's request: StationName set, MilitaryRank and private tags gone."""
    peer, client, ids = both
    from broker.core.dicom_parse import parse_dicom

    body = {"Replace": {"StationName": "My Medical Device"}, "Remove": ["MilitaryRank"], "RemovePrivateTags": True}
    answer = client.post(f"/instances/{ids['routing']}/modify", body)
    elements = parse_dicom(answer.body).top_level()
    assert elements[0x00081010].value.rstrip(b" ") == b"My Medical Device"
    assert 0x00101080 not in elements
    assert not [tag for tag in elements if tag >> 16 & 1]
    assert 0x00510010 not in elements


def test_instance_errors_equal_orthancs(both) -> None:
    peer, client, ids = both
    instance = ids["CT_small.dcm"]
    bodies: list[Any] = [
        {"Replace": {"PatientID": "X"}}, {"Replace": {"SOPInstanceUID": "1.2.3"}},
        {"Replace": {"StudyInstanceUID": "1.2.3"}}, {"Remove": ["PatientID"]}, {"Remove": ["PatientID"], "Force": True},
        {"Remove": ["SOPInstanceUID"], "Force": True}, {"Keep": ["SOPInstanceUID"]},
        {"Replace": {"StationName": 12345}}, {"Replace": {"StationName": 1.5}}, {"Replace": {"StationName": True}},
        {"Replace": {"StationName": {"a": 1}}}, {"Replace": {"StationName": ["a"]}}, {"Replace": {"StationName": []}},
        {"Replace": {"Rows": "abc"}}, {"Replace": {"Rows": "70000"}}, {"Replace": {"Rows": " 12 "}},
        {"Replace": {"Rows": None}}, {"Replace": {"Rows": "1\\2"}}, {"Replace": {"Rows": "0x10"}},
        {"Replace": {"ReferencedImageSequence": "abc"}}, {"Replace": {"ReferencedImageSequence": [1]}},
        {"Replace": {"NoSuchTag": "x"}}, {"Remove": ["NoSuchTag"]}, {"Remove": [12]}, {"Remove": "StationName"},
        {"Replace": []}, {"RemovePrivateTags": "yes"}, {"Force": 1}, [], "notjson", b"",
        {"Replace": {"ReferencedImageSequence.CodeValue": "x"}}, {"Remove": ["ReferencedImageSequence[0]"]},
        {"Transcode": "1.2.3"}, {"Transcode": 12}, {"PrivateCreator": 12}, {"Replace": {"PixelData": "abc"}},
    ]
    for body in bodies:
        raw = body if isinstance(body, bytes) else None
        ours = client.post(f"/instances/{instance}/modify", raw if raw is not None else body)
        theirs = peer_answer(peer, "POST", f"/instances/{instance}/modify", raw if raw is not None else body)
        assert (ours.status, ours.kind, ours.orthanc_status) == \
            (theirs.status, theirs.kind, theirs.orthanc_status), body
    for path in ["/instances/nope/modify", "/instances/nope/anonymize"]:
        assert client.post(path, {}).status == peer_answer(peer, "POST", path, {}).status == 404
    for body in [{"DicomVersion": "2023b"}, {"DicomVersion": 12}, {"Replace": {"PatientID": "x"}}, "bad",
                 {"KeepPrivateTags": 1}]:
        ours = client.post(f"/instances/{instance}/anonymize", body)
        theirs = peer_answer(peer, "POST", f"/instances/{instance}/anonymize", body)
        assert (ours.status, ours.kind, ours.orthanc_status) == \
            (theirs.status, theirs.kind, theirs.orthanc_status), body


def test_instance_anonymize_equals_orthancs(both) -> None:
    peer, client, ids = both
    requests: list[dict[str, Any]] = [
        {}, {"DicomVersion": "2017c"}, {"DicomVersion": "2008"}, {"KeepPrivateTags": True},
        {"Keep": ["StationName", "ProcedureCodeSequence"], "Remove": ["Modality"], "Replace": {"PatientName": "Hi"}},
        {"Replace": {"StudyInstanceUID": "1.2.3.4", "PatientID": "kept"}, "Force": True},
        {"Remove": ["ProcedureCodeSequence[0].CodeValue"], "Replace": {"ProcedureCodeSequence[*].CodeMeaning": "x"}},
    ]
    for name, instance in ids.items():
        for body in requests:
            ours = client.post(f"/instances/{instance}/anonymize", body)
            theirs = peer_answer(peer, "POST", f"/instances/{instance}/anonymize", body)
            assert (ours.status, theirs.status) == (200, 200), (name, body)
            assert differences(ours.body, theirs.body, ignore={"0012,0063"}) == [], (name, body)


def _compare_resource_results(peer: OrthancPeer, client: Client, ours: dict, theirs: dict,
                              before: tuple[set[str], set[str]]) -> None:
    """``before``: the instance ids of each server before the modification (the new ones are the others)."""
    assert ours.keys() == theirs.keys()
    for key in ("Description", "FailedInstancesCount", "InstancesCount", "IsAnonymization", "Type", "Transcode"):
        assert ours.get(key) == theirs.get(key), key
    assert ours["Path"] == f"/{Level.from_label(ours['Type']).plural}/{ours['ID']}"
    our_instances = sorted(set(client.get("/instances")) - before[0])
    their_instances = sorted(set(peer.get("/instances")) - before[1])
    assert len(our_instances) == len(their_instances) == ours["InstancesCount"]
    # Each new instance equals Orthanc's, matched by InstanceNumber; metadata keys and origin equal.
    def by_number(get: Any, ids: list[str]) -> dict[str, str]:
        return {get(f"/instances/{i}/simplified-tags").get("InstanceNumber", ""): i for i in ids}
    mine, yours = by_number(client.get, our_instances), by_number(peer.get, their_instances)
    assert mine.keys() == yours.keys()
    for number, instance in mine.items():
        ours_md = client.get(f"/instances/{instance}/metadata", expand="")
        theirs_md = peer.get(f"/instances/{yours[number]}/metadata", expand="")
        assert ours_md.keys() == theirs_md.keys()
        for key in ("ModifiedFrom", "AnonymizedFrom", "Origin", "RemoteIP", "HttpUsername", "TransferSyntax"):
            assert ours_md.get(key) == theirs_md.get(key), key
        ours_file = client.get(f"/instances/{instance}/file")
        theirs_file = peer.client.get(f"/instances/{yours[number]}/file").content
        assert differences(ours_file, theirs_file, ignore={"0012,0063"}) == []
    for number, instance in mine.items():
        for plural, single in (("patients", "patient"), ("studies", "study"), ("series", "series")):
            ours_parent = client.get(f"/instances/{instance}/{single}")["ID"]
            theirs_parent = peer.get(f"/instances/{yours[number]}/{single}")["ID"]
            ours_md = client.get(f"/{plural}/{ours_parent}/metadata", expand="")
            theirs_md = peer.get(f"/{plural}/{theirs_parent}/metadata", expand="")
            assert {k: v for k, v in ours_md.items() if k != "LastUpdate"} == \
                   {k: v for k, v in theirs_md.items() if k != "LastUpdate"}, (plural, number)
        for plural, single in (("patients", "patient"), ("studies", "study"), ("series", "series"),
                               ("instances", "")):
            ours_json = client.get(f"/instances/{instance}/{single}" if single else f"/instances/{instance}")
            theirs_json = peer.get(f"/instances/{yours[number]}/{single}" if single else f"/instances/{yours[number]}")
            for key in ("ModifiedFrom", "AnonymizedFrom"):  # the original's id: the same on both
                assert ours_json.get(key) == theirs_json.get(key), (plural, key)
        assert client.get(f"/instances/{instance}").keys() & {"ModifiedFrom", "AnonymizedFrom"}


RESOURCE_CASES = [
    ("studies", {"Replace": {"StationName": "My Medical Device"}, "Remove": ["MilitaryRank"],
                 "RemovePrivateTags": True}),
    ("series", {"Replace": {"SeriesDescription": "changed"}}),
    ("patients", {"Replace": {"PatientID": "NEWPID"}, "Force": True}),
    ("studies/anonymize", {}),
    ("series/anonymize", {"Keep": ["SeriesDescription"]}),
    ("series/anonymize", {"Keep": ["(0008,103e)", "(0008,1140)[*].(0008,1155)"]}),
    ("patients/anonymize", {"DicomVersion": "2017c"}),
    ("series-with-a-study-id", {"Replace": {"StationName": "a study id at the series level"}}),
    ("studies", {"Transcode": "1.2.840.10008.1.2", "Replace": {"StationName": "T"}}),
]


@pytest.mark.parametrize("kind,body", RESOURCE_CASES)
def test_resource_modify_and_anonymize_equal_orthancs(orthanc_peer: OrthancPeer, store: Store, kind: str,
                                                      body: dict) -> None:
    peer = orthanc_peer
    peer.clear()
    client = Client(SimpleNamespace(store=store))
    for ds in factory.make_instances(4, series=2, routing_tags=True):
        data = factory.to_bytes(ds)
        assert client.post("/instances", data).json() == peer.upload(data)
    study = client.get("/studies")[0]
    ids = {"studies": study, "series": client.get(f"/studies/{study}/series")[0]["ID"],
           "patients": client.get("/patients")[0]}
    level, _, operation = kind.partition("/")
    if level == "series-with-a-study-id":
        path = f"/series/{study}/modify"
    else:
        path = f"/{level}/{ids[level]}/{operation or 'modify'}"
    before = (set(client.get("/instances")), set(peer.get("/instances")))
    ours = client.post(path, body)
    theirs = peer_answer(peer, "POST", path, body)
    assert (ours.status, theirs.status) == (200, 200), (path, body, ours.body[:300])
    _compare_resource_results(peer, client, ours.json(), theirs.json(), before)
    for plural in LEVELS:
        assert len(client.get(f"/{plural}")) == len(peer.get(f"/{plural}")), plural


def test_resource_errors_and_keep_source_equal_orthancs(orthanc_peer: OrthancPeer, store: Store) -> None:
    peer = orthanc_peer
    peer.clear()
    client = Client(SimpleNamespace(store=store))
    for ds in factory.make_instances(2):
        data = factory.to_bytes(ds)
        assert client.post("/instances", data).json() == peer.upload(data)
    study = client.get("/studies")[0]
    patient = client.get("/patients")[0]
    cases = [
        (f"/studies/{study}/modify", {"Replace": {"StationName": 12}}),
        (f"/studies/{study}/modify", {"Replace": {"PatientID": "x"}}),
        (f"/studies/{study}/modify", {"Replace": {"PatientID": "x"}, "Force": True}),
        (f"/patients/{patient}/modify", {}),
        (f"/series/{study}/modify", {"Replace": {"StudyInstanceUID": "1.2"}, "Force": True}),
        (f"/studies/{study}/modify", {"KeepSource": "no"}),
        (f"/studies/{study}/modify", {"Transcode": "1.2.3"}),
        ("/studies/nope/modify", {"KeepSource": "no"}),
        ("/studies/nope/modify", {"Synchronous": "x"}),
        ("/studies/nope/modify", {}),
        ("/patients/nope/anonymize", {}),
        (f"/studies/{study}/modify", {"Synchronous": "x"}),
        (f"/studies/{study}/modify", {"Priority": "x"}),
        (f"/studies/{study}/modify", "notjson"),
    ]
    for path, body in cases:
        ours = client.post(path, body)
        theirs = peer_answer(peer, "POST", path, body)
        assert (ours.status, ours.kind, ours.orthanc_status) == (theirs.status, theirs.kind, theirs.orthanc_status), \
            (path, body)
    # KeepSource: false removes the originals, on both.
    body = {"Replace": {"StationName": "moved"}, "KeepSource": False}
    ours, theirs = (client.post(f"/studies/{study}/modify", body),
                    peer_answer(peer, "POST", f"/studies/{study}/modify", body))
    assert (ours.status, theirs.status) == (200, 200)
    assert client.call("GET", f"/studies/{study}").status == peer.client.get(f"/studies/{study}").status_code == 404
    for level in LEVELS:
        assert len(client.get(f"/{level}")) == len(peer.get(f"/{level}")), level


def test_reconstruct_reads_the_main_tags_again_as_orthanc(orthanc_peer: OrthancPeer, store: Store) -> None:
    """A modification that keeps the UIDs stores a second instance in the same series; reconstructing
    from it sets the study's and series' main tags from its file."""
    peer = orthanc_peer
    peer.clear()
    client = Client(SimpleNamespace(store=store))
    data = samples.sample_file("CT_small.dcm")
    original = client.post("/instances", data).json()["ID"]
    assert peer.upload(data)["ID"] == original
    study = client.get("/studies")[0]
    body = {"Replace": {"StudyDescription": "hello", "SeriesDescription": "world", "SOPInstanceUID": "1.2.3.4"},
            "Keep": ["StudyInstanceUID", "SeriesInstanceUID"], "Force": True}
    client.post(f"/studies/{study}/modify", body)
    peer_answer(peer, "POST", f"/studies/{study}/modify", body)
    modified = next(i for i in client.get("/instances") if i != original)
    assert modified in peer.get("/instances")
    assert client.post(f"/instances/{modified}/reconstruct", b"{}").status == 200
    assert peer.client.post(f"/instances/{modified}/reconstruct", content=b"{}").status_code == 200
    for level in ("study", "series"):
        ours, theirs = client.get(f"/instances/{original}/{level}"), peer.get(f"/instances/{original}/{level}")
        assert ours["MainDicomTags"] == theirs["MainDicomTags"], level
    assert client.get(f"/instances/{original}/study")["MainDicomTags"]["StudyDescription"] == "hello"


UIDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}


def _tags_without_uids(get: Any, instance: str) -> dict[str, Any]:
    return {k: v for k, v in get(f"/instances/{instance}/simplified-tags").items() if k not in UIDS}


def test_split_and_merge_move_instances_as_orthanc(orthanc_peer: OrthancPeer, store: Store) -> None:
    peer = orthanc_peer
    peer.clear()
    client = Client(SimpleNamespace(store=store))
    files = [samples.sample_file("CT_small.dcm"), samples.sample_file("MR_small.dcm")]
    files += [factory.to_bytes(ds) for ds in factory.make_instances(3, series=2, routing_tags=True)]
    for data in files:
        assert client.post("/instances", data).json() == peer.upload(data)
    ct = client.post("/instances", files[0]).json()
    mr = client.post("/instances", files[1]).json()
    three = client.post("/instances", files[2]).json()
    bodies = [
        ("split", three["ParentStudy"], {"Series": [three["ParentSeries"]], "Replace": {"StudyDescription": "split"},
                                         "Remove": ["AccessionNumber"]}),
        ("split", ct["ParentStudy"], {"Instances": [ct["ID"]], "KeepSource": True}),
        ("merge", mr["ParentStudy"], {"Resources": [ct["ID"]]}),
        ("merge", mr["ParentStudy"], {"Resources": []}),
        ("split", mr["ParentStudy"], {}), ("split", mr["ParentStudy"], {"Instances": []}),
        ("split", mr["ParentStudy"], {"Series": ["nope"]}), ("merge", mr["ParentStudy"], {}),
        ("merge", mr["ParentStudy"], {"Resources": ["nope"]}), ("merge", "nope", {"Resources": []}),
    ]
    for verb, study, body in bodies:
        path = f"/studies/{study}/{verb}"
        ours, theirs = client.post(path, body), peer_answer(peer, "POST", path, body)
        assert (ours.status, ours.kind, ours.orthanc_status) == (theirs.status, theirs.kind, theirs.orthanc_status), \
            (verb, body)
        if ours.status != 200:
            continue
        mine, yours = ours.json(), theirs.json()
        assert mine.keys() == yours.keys() and mine["InstancesCount"] == yours["InstancesCount"], (verb, body)
        for level in ("patients", "studies", "series"):
            assert len(client.get(f"/{level}")) == len(peer.get(f"/{level}")), (verb, level)
        # The copies are the same files but for their UIDs.
        our_new = sorted((_tags_without_uids(client.get, i) for i in set(client.get("/instances")) - set(peer.get(
            "/instances"))), key=repr)
        their_new = sorted((_tags_without_uids(peer.get, i) for i in set(peer.get("/instances")) - set(client.get(
            "/instances"))), key=repr)
        assert our_new == their_new, (verb, body)
