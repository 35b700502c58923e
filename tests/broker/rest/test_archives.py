"""Archives and DICOM media compared with a real Orthanc: the same entries (names for archives,
files for both), a DICOMDIR that indexes the same instances, uploads of media, and errors."""
from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pydicom

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer
from tests.support.waiting import job_succeeded

from .test_orthanc_parity import our_call, peer_call


def contents(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        return {name: opened.read(name) for name in opened.namelist()}


def indexed(dicomdir: bytes) -> set[str]:
    ds = pydicom.dcmread(io.BytesIO(dicomdir))
    return {str(record.ReferencedSOPInstanceUIDInFile) for record in ds.DirectoryRecordSequence
            if "ReferencedSOPInstanceUIDInFile" in record}


def file_set_id(dicomdir: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(dicomdir)).FileSetID)


def fetch(peer: OrthancPeer, client, method: str, path: str, body: Any = None) -> tuple[bytes, bytes]:
    raw = b"" if body is None else json.dumps(body).encode()
    ours = client.call(method, path, raw)
    theirs = peer.client.request(method, path, content=raw)
    assert (ours.status, theirs.status_code) == (200, 200), (path, ours)
    assert ours.content_type == "application/zip" == theirs.headers["content-type"]
    return ours.body, theirs.content


def test_archives_and_media_hold_what_orthancs_hold(orthanc_peer: OrthancPeer, client) -> None:
    peer = orthanc_peer
    peer.clear()
    files = [samples.sample_file(name) for name in ("CT_small.dcm", "MR_small.dcm")]
    files += samples.series_of(2, SeriesDescription="Séries", StudyDescription="Étude")
    for data in files:
        assert client.post("/instances", data) == peer.upload(data)
    resources = [("patients", p) for p in client.get("/patients")] + [("studies", s) for s in client.get("/studies")]
    resources += [("series", s) for s in client.get("/series")]
    for plural, public_id in resources:
        for method, body in (("GET", None), ("POST", {})):
            ours, theirs = fetch(peer, client, method, f"/{plural}/{public_id}/archive", body)
            assert contents(ours) == contents(theirs), (plural, method)
            ours, theirs = fetch(peer, client, method, f"/{plural}/{public_id}/media", body)
            mine, yours = contents(ours), contents(theirs)
            assert list(mine) == list(yours)  # IMAGES/IM0, ..., then DICOMDIR
            assert file_set_id(mine["DICOMDIR"]) == file_set_id(yours["DICOMDIR"]) == "ORTHANC_MEDIA"
            assert indexed(mine.pop("DICOMDIR")) == indexed(yours.pop("DICOMDIR"))
            assert mine == yours
    everything = {"Resources": client.get("/patients")}
    ours, theirs = fetch(peer, client, "POST", "/tools/create-archive", everything)
    assert contents(ours) == contents(theirs)
    ours, theirs = fetch(peer, client, "POST", "/tools/create-media", everything)
    mine, yours = contents(ours), contents(theirs)
    assert list(mine) == list(yours) and indexed(mine.pop("DICOMDIR")) == indexed(yours.pop("DICOMDIR"))
    assert sorted(mine.values()) == sorted(yours.values())
    series = client.get("/series")[0]
    for path, body in ((f"/series/{series}/archive", {"Transcode": "1.2.840.10008.1.2"}),
                       (f"/series/{series}/media", {"Transcode": "1.2.840.10008.1.2.1"})):
        ours, theirs = fetch(peer, client, "POST", path, body)
        for data in [v for k, v in contents(ours).items() if k != "DICOMDIR"]:
            assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == body["Transcode"]
    for method, path, body in (("GET", "/patients/nope/archive", None), ("POST", "/tools/create-archive", {}),
                               ("POST", f"/series/{series}/archive", None),
                               ("POST", "/tools/create-archive", {"Resources": ["nope"]}),
                               ("POST", f"/series/{series}/media", {"Transcode": "nope"})):
        raw = b"" if body is None else json.dumps(body).encode()
        assert our_call(client, method, path, raw) == peer_call(peer, method, path, raw), path


def test_a_media_archive_uploads_its_instances_back(orthanc_peer: OrthancPeer, client) -> None:
    answer = client.post("/instances", samples.sample_file("CT_small.dcm"))
    media = client.call("GET", f"/studies/{answer['ParentStudy']}/media").body
    client.call("DELETE", f"/instances/{answer['ID']}")
    [stored] = client.post("/instances", media)
    assert (stored["ID"], stored["Status"]) == (answer["ID"], "Success")


def test_asynchronous_archives_are_jobs_whose_last_archive_is_kept(orthanc_peer: OrthancPeer, luabroker) -> None:
    peer = orthanc_peer
    peer.clear()
    ours = luabroker().http
    data = samples.sample_file("CT_small.dcm")
    series = ours.post("/instances", content=data).json()["ParentSeries"]
    peer.upload(data)

    def run(client, kind: str) -> tuple[str, dict[str, Any]]:
        job = client.post(f"/series/{series}/{kind}", json={"Synchronous": False}).json()
        return job["ID"], job_succeeded(client, job)

    first, first_info = run(ours, "archive")
    _, their_info = run(peer.client, "archive")
    assert first_info["Type"] == their_info["Type"] == "Archive"
    assert {k: v for k, v in first_info["Content"].items() if "Size" not in k or "MB" in k} == \
        {k: v for k, v in their_info["Content"].items() if "Size" not in k or "MB" in k}
    assert list(contents(ours.get(f"/jobs/{first}/archive").content)) == \
        list(contents(ours.get(f"/series/{series}/archive").content))
    second, _ = run(ours, "media")
    assert ours.get(f"/jobs/{first}/archive").status_code == 404  # MediaArchiveSize 1: replaced
    assert "DICOMDIR" in contents(ours.get(f"/jobs/{second}/archive").content)
