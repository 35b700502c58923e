"""The PS3.15 basic profile as Orthanc 1.10 applies it: one file holding nearly every public tag is
anonymized by luabroker and by a real Orthanc with each ``DicomVersion``, and the results must be
equal, generated identifiers aside (which must correspond one to one)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from broker.core.anonymize import anonymization_request, profiles
from broker.core.dicom_file import read_dataset
from broker.core.modify import Modifier, modify_instance_bytes
from broker.core.store import Store
from tests.support import dicom_samples as samples
from tests.support.modification_samples import Client, differences, every_tag_file, peer_answer
from tests.support.orthanc_peer import OrthancPeer

VERSIONS = ["2021b", "2017c", "2008"]


@pytest.fixture(scope="module")
def every_tag() -> bytes:
    return every_tag_file()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "store")
    yield store
    store.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_profile_equals_orthancs(orthanc_peer: OrthancPeer, store: Store, every_tag: bytes, version: str) -> None:
    orthanc_peer.clear()
    client = Client(SimpleNamespace(store=store))
    instance = client.post("/instances", every_tag).json()["ID"]
    assert orthanc_peer.upload(every_tag)["ID"] == instance
    body = {"DicomVersion": version}
    ours = client.post(f"/instances/{instance}/anonymize", body)
    theirs = peer_answer(orthanc_peer, "POST", f"/instances/{instance}/anonymize", body)
    assert (ours.status, theirs.status) == (200, 200)
    assert differences(ours.body, theirs.body, ignore={"0012,0063"}) == []
    method = read_dataset(ours.body).DeidentificationMethod
    assert method.startswith("luabroker ") and f"PS 3.15-{version} Table E.1-1" in method


def test_each_group_of_the_profile(every_tag: bytes) -> None:
    """Removed tags are gone, cleared ones empty, identifiers new: at the first level and in sequences."""
    table = profiles()["2021b"]
    original = read_dataset(every_tag)
    request = anonymization_request({}, next_patient_name=lambda: "Anonymized7")
    anonymized = read_dataset(modify_instance_bytes(every_tag, request))
    for tag in table["remove"]:
        if tag in original:
            assert tag not in anonymized, f"{tag:08X}"
    for tag in table["clear"]:
        if tag in original:
            element = anonymized[tag]
            assert (len(element.value) == 0) if element.VR == "SQ" else element.value in ("", None), f"{tag:08X}"
    for tag in table["uid"]:
        if tag in original:
            assert anonymized[tag].value != original[tag].value, f"{tag:08X}"
    assert anonymized.PatientName == "Anonymized7"
    assert anonymized.PatientIdentityRemoved == "YES"
    assert len(anonymized.PatientID) == 36  # a UUID
    for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert getattr(anonymized, name) != getattr(original, name)
    assert not [element.tag for element in anonymized if element.tag.is_private]
    # Inside a kept sequence: removed, cleared, private and identifiers as at the first level;
    # the same original identifier gets the same new one wherever it appears.
    item = anonymized.ReferencedImageSequence[0]
    assert "InstitutionName" not in item and "PatientAge" not in item and "PatientWeight" not in item
    assert item.StudyDate == "" and item.CodeValue == "C1" and item.Rows == 5
    assert not [element.tag for element in item if element.tag.is_private]
    assert "ContentSequence" not in item and "InstitutionCodeSequence" not in item
    assert item.FrameOfReferenceUID == anonymized.FrameOfReferenceUID != original.FrameOfReferenceUID
    assert item.PatientName == "Name^InItem"  # Orthanc keeps PatientName inside sequences
    assert len(item.PatientID) == 36 and item.PatientID != anonymized.PatientID
    assert len(anonymized.ContentSequence) == 0  # cleared at the first level: an empty sequence
    # Overlays and curves are kept by Orthanc 1.10's profile.
    assert 0x60004000 in anonymized and 0x50000005 in anonymized


def test_overrides_and_deidentification_method() -> None:
    data = samples.kitchen_sink()
    plain = read_dataset(modify_instance_bytes(data, anonymization_request({})))
    assert plain.DeidentificationMethod.endswith("PS 3.15-2021b Table E.1-1 Basic Profile")
    assert len(str(plain.PatientName)) == 36  # no counter given: a UUID, as Orthanc's core does
    kept = read_dataset(modify_instance_bytes(data, anonymization_request(
        {"Keep": ["PatientName"], "KeepPrivateTags": True}, next_patient_name=lambda: "never")))
    assert str(kept.PatientName) == "Müller^Jürgen"
    assert "DeidentificationMethod" not in kept  # the profile was changed: no claim about it
    assert kept[0x00111001].value == "unknown private value"
    replaced = read_dataset(modify_instance_bytes(data, anonymization_request(
        {"Replace": {"StudyDescription": "kept text"}, "Remove": ["Modality"]})))
    assert replaced.StudyDescription == "kept text" and "Modality" not in replaced
    assert "DeidentificationMethod" not in replaced


def _referencing_pair() -> list[bytes]:
    """Two instances of one series; the second references the first (ReferencedSOPInstanceUID)."""
    first, second = [read_dataset(data) for data in samples.series_of(2)]
    reference = Dataset()
    reference.ReferencedSOPClassUID = first.SOPClassUID
    reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = Sequence([reference])
    second.FrameOfReferenceUID = first.FrameOfReferenceUID = "1.2.3.4.5.6"
    return [samples.encode(first), samples.encode(second)]


def test_identifiers_are_consistent_across_the_instances_of_a_request() -> None:
    first, second = _referencing_pair()
    modifier = Modifier(anonymization_request({}, next_patient_name=lambda: "Anonymized1"))
    new_first = read_dataset(modify_instance_bytes(first, modifier.request, modifier=modifier))
    new_second = read_dataset(modify_instance_bytes(second, modifier.request, modifier=modifier))
    assert new_second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_first.SOPInstanceUID
    assert new_first.StudyInstanceUID == new_second.StudyInstanceUID
    assert new_first.SeriesInstanceUID == new_second.SeriesInstanceUID
    assert new_first.FrameOfReferenceUID == new_second.FrameOfReferenceUID != "1.2.3.4.5.6"
    assert new_first.PatientID == new_second.PatientID
    assert new_first.PatientName == new_second.PatientName == "Anonymized1"


def test_study_anonymization_keeps_references_like_orthanc(orthanc_peer: OrthancPeer, store: Store) -> None:
    orthanc_peer.clear()
    client = Client(SimpleNamespace(store=store))
    for data in _referencing_pair():
        assert client.post("/instances", data).json() == orthanc_peer.upload(data)
    study = client.get("/studies")[0]
    results = []
    for server in ("ours", "theirs"):
        answer = (client.post(f"/studies/{study}/anonymize", {}) if server == "ours"
                  else peer_answer(orthanc_peer, "POST", f"/studies/{study}/anonymize", {}))
        assert answer.status == 200
        new_study = json.loads(answer.body)["ID"]
        get = client.get if server == "ours" else orthanc_peer.get
        files = []
        for instance in get(f"/studies/{new_study}/instances"):
            files.append(client.get(f"/instances/{instance['ID']}/file") if server == "ours"
                         else orthanc_peer.client.get(f"/instances/{instance['ID']}/file").content)
        datasets = sorted((read_dataset(f) for f in files), key=lambda ds: int(ds.InstanceNumber))
        assert datasets[1].ReferencedImageSequence[0].ReferencedSOPInstanceUID == datasets[0].SOPInstanceUID
        results.append(files)
    for ours, theirs in zip(*[sorted(r, key=lambda f: int(read_dataset(f).InstanceNumber)) for r in results],
                           strict=True):
        assert differences(ours, theirs, ignore={"0012,0063"}) == []
