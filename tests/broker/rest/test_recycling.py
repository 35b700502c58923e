"""Protected patients, recycling (``MaximumPatientCount``, ``MaximumStorageSize``) and
``OverwriteInstances``, side by side with a real Orthanc configured alike."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer

pytestmark = pytest.mark.skipif(ORTHANC_BINARY is None, reason="needs Orthanc (apt-get install orthanc)")


@pytest.fixture
def pair(luabroker, request) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    options: dict[str, Any] = getattr(request, "param", {})
    peer = OrthancPeer.create(**options).start()
    try:
        yield luabroker(**options).http, peer.client
    finally:
        peer.stop()


def both(pair, method: str, path: str, body: bytes = b"", **kwargs: Any) -> list[httpx.Response]:
    answers = [client.request(method, path, content=body, **kwargs) for client in pair]
    ours, theirs = answers
    assert ours.status_code == theirs.status_code, (method, path, body, kwargs, ours.text, theirs.text)
    if ours.status_code == 200 and ours.headers.get("content-type", "").startswith("text/plain"):
        assert ours.text == theirs.text, (method, path, body)
    elif ours.status_code != 200 and theirs.content:
        assert ours.json()["OrthancStatus"] == theirs.json()["OrthancStatus"], (method, path, body)
    return answers


def patient_ids(client: httpx.Client) -> list[str]:
    return sorted(client.get(f"/patients/{patient}").json()["MainDicomTags"]["PatientID"]
                  for patient in client.get("/patients").json())


def upload(pair, patient_id: str, **attributes: Any) -> int:
    data = samples.encode(samples.minimal(patient_id=patient_id, **attributes))
    return both(pair, "POST", "/instances", data)[0].status_code


def test_protection_answers_as_orthanc_through_every_method_faking(pair) -> None:
    upload(pair, "A")
    [patient] = pair[0].get("/patients").json()
    path = f"/patients/{patient}/protected"
    both(pair, "GET", path)
    for body in (b"1", b"0", b"true", b" 0 ", b"2", b"", b"True"):
        both(pair, "PUT", path, body)
        both(pair, "GET", path)
    both(pair, "POST", path, b"1", headers={"X-HTTP-Method-Override": "PUT"})
    assert both(pair, "GET", path)[0].text == "1"
    both(pair, "POST", path, b"0", headers={"X-HTTP-Method-Override": "put"})
    both(pair, "POST", path, b"0", headers={"X-HTTP-Method-Override": "GET"})
    both(pair, "GET", path, b"1", params={"_method": "PUT"})
    assert both(pair, "GET", path)[0].text == "1"
    both(pair, "GET", path, b"1", params={"_method": "POST"})
    both(pair, "DELETE", path)
    both(pair, "PUT", "/patients/nope/protected", b"1")
    both(pair, "GET", "/patients/nope/protected")
    both(pair, "GET", f"/patients/{patient}", params={"_method": "DELETE"})
    assert pair[0].get("/patients").json() == []


@pytest.mark.parametrize("pair", [{"MaximumPatientCount": 2}], indirect=True)
def test_the_patient_stored_to_longest_ago_is_recycled_never_a_protected_one(pair) -> None:
    for patient_id in ("A", "B", "A", "C"):
        assert upload(pair, patient_id) == 200
    assert patient_ids(pair[0]) == patient_ids(pair[1]) == ["A", "C"]
    for client in pair:
        for patient in client.get("/patients").json():
            client.put(f"/patients/{patient}/protected", content=b"1").raise_for_status()
    assert upload(pair, "D") == 500  # the storage is full: nothing can be recycled
    assert patient_ids(pair[0]) == ["A", "C"]
    first = pair[0].get("/patients").json()[0]
    pair[0].put(f"/patients/{first}/protected", content=b"0").raise_for_status()
    pair[1].put(f"/patients/{first}/protected", content=b"0").raise_for_status()
    assert upload(pair, "D") == 200
    assert patient_ids(pair[0]) == patient_ids(pair[1])


@pytest.mark.parametrize("pair", [{"MaximumStorageSize": 1}], indirect=True)
def test_the_storage_size_is_kept_under_its_maximum(pair) -> None:
    pixels = {"Rows": 300, "Columns": 512, "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15,
              "SamplesPerPixel": 1, "PixelRepresentation": 0, "PhotometricInterpretation": "MONOCHROME2",
              "PixelData": bytes(300 * 512 * 2)}  # 300 KiB each: three fit in 1 MB (1 MiB), not four
    for patient_id in ("A", "B", "C", "D"):
        assert upload(pair, patient_id, **pixels) == 200
    assert patient_ids(pair[0]) == patient_ids(pair[1])
    assert patient_ids(pair[0]) == ["B", "C", "D"]
    assert int(pair[0].get("/statistics").json()["TotalDiskSize"]) <= 1024 * 1024


@pytest.mark.parametrize("pair", [{"OverwriteInstances": True}, {}], indirect=True)
def test_a_known_instance_is_replaced_only_with_overwrite_instances(pair) -> None:
    ds = samples.minimal(patient_id="O", PatientName="Before")
    first = [answer.json() for answer in both(pair, "POST", "/instances", samples.encode(ds))]
    ds.PatientName = "After"
    second = [answer.json() for answer in both(pair, "POST", "/instances", samples.encode(ds))]
    assert first[0] == first[1] and second[0] == second[1]
    names = [client.get(f"/instances/{first[0]['ID']}/simplified-tags").json()["PatientName"] for client in pair]
    assert names[0] == names[1] == ("After" if second[0]["Status"] == "Success" else "Before")
