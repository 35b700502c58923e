"""``/tools/find`` and ``/tools/lookup``, side by side with a real Orthanc: the same files, the same
queries, the same answers (sets of ids, since neither server promises an order) and the same errors."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

from .test_orthanc_parity import our_call, peer_call, strip

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm"]


@pytest.fixture
def both(orthanc_peer: OrthancPeer, client) -> tuple[OrthancPeer, Any]:
    orthanc_peer.clear()
    files = [samples.sample_file(name) for name in FILES]
    files += [samples.encode(samples.minimal(patient_id="Brackets", PatientName="MyName2[]", StationName="SMR4-MP3",
                                             StudyDate="20080819", PatientBirthDate="20080505", Modality="US"))]
    files += [samples.encode(samples.minimal(patient_id="ozp00SjY2xG", PatientName="Jodé^Sébastien",
                                             AccessionNumber="ACC-42"))]
    for data in files:
        assert client.post("/instances", data) == orthanc_peer.upload(data)
    return orthanc_peer, client


def same(peer: OrthancPeer, client, path: str, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ours, theirs = our_call(client, "POST", path, raw), peer_call(peer, "POST", path, raw)
    assert ours == theirs, body
    if ours[0] != 200:
        return None
    answer = client.call("POST", path, raw).json()
    expected = peer.client.post(path, content=raw).json()
    assert sorted(json.dumps(item, sort_keys=True) for item in strip(answer)) == \
        sorted(json.dumps(item, sort_keys=True) for item in strip(expected)), body
    return answer


QUERIES: list[Any] = [
    {"Level": "Patient", "Query": {}},
    {"Level": "patient", "Query": {}},
    {"Level": "INSTANCE", "Query": {}},
    {"Level": "Patient", "Query": {"PatientName": ""}},
    {"Level": "Patient", "Query": {"PatientName": "*"}},
    {"Level": "Study", "Query": {"StudyDate": "2004-"}},
    {"Level": "Study", "Query": {"StudyDate": "-2004"}},
    {"Level": "Study", "Query": {"StudyDate": "20040101-20041231"}},
    {"Level": "Series", "Query": {"StudyDate": "20040119"}},
    {"Level": "Instance", "Query": {"Modality": "CT\\MR"}},
    {"Level": "Series", "Query": {"0008,0060": "mr"}},
    {"Level": "Series", "Query": {"0008,0060": "mr"}, "CaseSensitive": True},
    {"Level": "Series", "Query": {"Modality": "m?"}},
    {"Level": "Instance", "Query": {"SliceThickness": "5.000000"}},
    {"Level": "Instance", "Query": {"SliceThickness": "*"}},
    {"Level": "Instance", "Query": {"SliceThickness": ""}},
    {"Level": "Patient", "Query": {"StudyDate": "2004*"}},
    {"Level": "Instance", "Query": {"StudyInstanceUID": "*"}},
    {"Level": "Instance", "Query": {"StudyID": "*"}},
    {"Level": "Instance", "Query": {"RetrieveAETitle": "*"}},
    {"Level": "Instance", "Query": {"StudyDescription": "*"}},
    {"Level": "Instance", "Query": {"ImageType": "ORIGINAL\\PRIMARY\\AXIAL"}},
    {"Level": "Instance", "Query": {"ImageType": "*AXIAL*"}},
    {"Level": "Study", "Query": {"Modality": "*"}},
    {"Level": "Study", "Query": {"SeriesDescription": ""}},
    {"Level": "Series", "Query": {"InstanceNumber": "1"}},
    {"Level": "Instance", "Query": {"StudyTime": "10-12"}},
    {"Level": "Instance", "Query": {"SeriesNumber": "1-5"}},
    {"Level": "Study", "Query": {"SeriesDescription": "*"}},
    {"Level": "Study", "Query": {"PatientName": "C?*"}},
    {"Level": "Series", "Query": {"PatientName": "\\"}},
    {"Level": "Study", "Query": {"ModalitiesInStudy": "CT\\RTPLAN"}},
    {"Level": "Study", "Query": {"ModalitiesInStudy": "US"}},
    {"Level": "Study", "Query": {"ModalitiesInStudy": ""}},
    {"Level": "Study", "Query": {"ModalitiesInStudy": "*"}},
    {"Level": "Series", "Query": {"PatientName": "MyName2[*]"}},
    {"Level": "Patient", "Query": {"PatientName": "MyName2*"}},
    {"Level": "Series", "Query": {"StationName": "SMR4-MP3"}, "CaseSensitive": True},
    {"Level": "Study", "Query": {"PatientName": "*NE*", "StudyDate": "20080819"}, "CaseSensitive": True},
    {"Level": "Study", "Query": {"PatientName": "*ne*", "PatientBirthDate": "20080101-20081231"}},
    {"Level": "Patient", "Query": {"PatientID": "OZP00SjY2xG"}, "CaseSensitive": True},
    {"Level": "Patient", "Query": {"PatientID": "OZP00SjY2xG"}},
    {"Level": "Patient", "Query": {"PatientName": "jode^sebastien"}},
    {"Level": "Patient", "Query": {"PatientName": "jodé^sébastien"}},
    {"Level": "Instance", "Query": {"PatientID": "1CT1"}, "Expand": True},
    {"Level": "Series", "Query": {"Modality": "CT"}, "Expand": True},
    {"Level": "Study", "Query": {}, "Expand": True, "Short": True},
    {"Level": "Study", "Query": {}, "Expand": True, "Full": True},
    {"Level": "Patient", "Query": {}, "Limit": 0},
    {"Level": "Instance", "Query": {"PatientName": "*"}, "Limit": 100},
    # errors
    {"Query": {}}, {"Level": "Patient"}, {"Level": "Nope", "Query": {}}, {"Level": 3, "Query": {}},
    {"Level": "Patient", "Query": {"PatientName": 3}}, {"Level": "Patient", "Query": []},
    {"Level": "Series", "Query": {"Nope": "mr"}}, {"Level": "Patient", "Query": {}, "Limit": -1},
    {"Level": "Patient", "Query": {}, "Limit": "2"}, {"Level": "Patient", "Query": {}, "Since": -2},
    {"Level": "Patient", "Query": {}, "Expand": "yes"}, {"Level": "Patient", "Query": {}, "CaseSensitive": 1},
    b"nope", b"[]",
]


def test_find_answers_as_orthanc(both) -> None:
    peer, client = both
    for query in QUERIES:
        same(peer, client, "/tools/find", query)


def test_limit_and_since_page_through_the_same_resources(both) -> None:
    peer, client = both
    everything = client.post("/tools/find", json.dumps({"Level": "Instance", "Query": {}}).encode())
    pages = [client.post("/tools/find", json.dumps({"Level": "Instance", "Query": {}, "Since": i, "Limit": 1}).encode())
             for i in range(len(everything) + 1)]
    assert [page[0] for page in pages[:-1]] == everything and pages[-1] == []
    assert len(client.post("/tools/find", json.dumps({"Level": "Instance", "Query": {}, "Limit": 3}).encode())) == 3


def test_lookup_answers_as_orthanc(both) -> None:
    peer, client = both
    plan = client.get("/instances/" + client.get("/instances")[2])["MainDicomTags"]["SOPInstanceUID"]
    for body in (b"1CT1", b"1ct1", b" 1CT1 ", b"", b"nothing", b"ACC-42", b"ozp00sjy2xg", plan.encode(),
                 b"1.3.6.1.4.1.5962.1.2.1.20040119072730.12322", b"1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"):
        same(peer, client, "/tools/lookup", body)
