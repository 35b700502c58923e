"""Answer formats compared with a real Orthanc: main tags ``?short``/``?full``, ``?ignore-length``,
DICOMweb JSON of ``/file``, series ``numpy``, gzip-encoded uploads."""
from __future__ import annotations

import gzip
import json

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

from .test_orthanc_parity import our_call, peer_call, strip


def upload_both(peer: OrthancPeer, client, files: list[bytes]) -> list[dict]:
    peer.clear()
    answers = []
    for data in files:
        answer = client.post("/instances", data)
        assert answer == peer.upload(data)
        answers.append(answer)
    return answers


def test_main_tags_short_and_full_answer_as_orthanc(orthanc_peer: OrthancPeer, client) -> None:
    [answer] = upload_both(orthanc_peer, client, [samples.sample_file("CT_small.dcm")])
    paths = [f"/{level}" for level in ("patients", "studies", "series", "instances")]
    paths += [f"/patients/{answer['ParentPatient']}", f"/studies/{answer['ParentStudy']}",
              f"/series/{answer['ParentSeries']}/instances", f"/instances/{answer['ID']}/study"]
    for path in paths:
        for query in ({"short": ""}, {"full": ""}, {"simplify": ""}, {"expand": "", "short": ""},
                      {"expand": "", "full": ""}):
            assert strip(client.get(path, **query)) == strip(orthanc_peer.get(path, **query)), (path, query)
    query = json.dumps({"Level": "Study", "Query": {}, "Expand": True}).encode()
    ours = client.call("POST", "/tools/find", query, short="").json()
    theirs = orthanc_peer.client.post("/tools/find", content=query, params={"short": ""}).json()
    assert strip(ours) == strip(theirs), (ours, theirs)


def test_ignore_length_answers_as_orthanc(orthanc_peer: OrthancPeer, client) -> None:
    [answer] = upload_both(orthanc_peer, client, [samples.utf8_long_main_tags()])
    instance, series = answer["ID"], answer["ParentSeries"]
    long_tags = [key for key, tag in client.get(f"/instances/{instance}/tags").items() if tag["Type"] == "TooLong"]
    assert long_tags
    names = [client.get(f"/instances/{instance}/tags")[key]["Name"] for key in long_tags]
    for ignore in (long_tags[0].replace(",", "-"), *names):
        for path in (f"/instances/{instance}/tags", f"/instances/{instance}/simplified-tags",
                     f"/series/{series}/instances-tags", f"/instances/{instance}/module"):
            for query in ({}, {"simplify": ""}, {"short": ""}):
                query = {**query, "ignore-length": ignore}
                assert client.get(path, **query) == orthanc_peer.get(path, **query), (path, query)


def test_dicomweb_json_of_a_file_answers_as_orthanc(orthanc_peer: OrthancPeer, client) -> None:
    files = [samples.sample_file(name) for name in ("CT_small.dcm", "rtplan.dcm")]
    for answer in upload_both(orthanc_peer, client, files):
        path = f"/instances/{answer['ID']}/file"
        ours = client.call("GET", path, headers={"accept": "application/dicom+json"})
        theirs = orthanc_peer.client.get(path, headers={"Accept": "application/dicom+json"})
        assert ours.content_type == theirs.headers["content-type"] == "application/dicom+json"
        assert ours.json() == theirs.json(), path


def test_series_numpy_answers_as_orthanc(orthanc_peer: OrthancPeer, client) -> None:
    pixels = {"Rows": 2, "Columns": 2, "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "SamplesPerPixel": 1,
              "PixelRepresentation": 0, "PhotometricInterpretation": "MONOCHROME2"}
    files = [samples.encode(samples.minimal(patient_id="NP", InstanceNumber=str(3 - n), PixelData=bytes([n] * 8),
                                            **pixels)) for n in range(3)]
    series = upload_both(orthanc_peer, client, [f for f in files])[0]["ParentSeries"]
    # Same series: the files share their UIDs but for the instance.
    for query in ({}, {"rescale": "0"}, {"rescale": "true", "compress": "0"}):
        path = f"/series/{series}/numpy"
        ours = client.call("GET", path, **query)
        assert ours.body == orthanc_peer.client.get(path, params=query).content, query
    assert our_call(client, "GET", "/series/nope/numpy") == peer_call(orthanc_peer, "GET", "/series/nope/numpy")


def test_gzip_uploads_answer_as_orthanc(orthanc_peer: OrthancPeer, luabroker) -> None:
    orthanc_peer.clear()
    ours = luabroker().http
    data = samples.sample_file("CT_small.dcm")
    for encoding, body in (("gzip", gzip.compress(data)), ("GZIP", gzip.compress(data)), ("nope", data),
                           ("identity", data), ("gzip", data), ("", gzip.compress(data))):
        answers = [client.post("/instances", content=body, headers={"Content-Encoding": encoding})
                   for client in (ours, orthanc_peer.client)]
        assert answers[0].status_code == answers[1].status_code, encoding
        if answers[1].status_code == 200:
            assert answers[0].json() == answers[1].json()
