"""Attachments at every level, ``StorageCompression`` and ``UserContentType``, side by side with a
real Orthanc configured alike."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer

pytestmark = pytest.mark.skipif(ORTHANC_BINARY is None, reason="needs Orthanc (apt-get install orthanc)")
TYPES = {"sample": 1024, "pdf": [1025, "application/pdf"]}


@pytest.fixture
def pair(luabroker, request) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    options: dict[str, Any] = {"UserContentType": TYPES, **getattr(request, "param", {})}
    peer = OrthancPeer.create(**options).start()
    try:
        ours = luabroker(**options).http
        data = samples.sample_file("CT_small.dcm")
        assert ours.post("/instances", content=data).json() == peer.client.post("/instances", content=data).json()
        yield ours, peer.client
    finally:
        peer.stop()


def both(pair, method: str, path: str, body: bytes = b"") -> bytes:
    ours, theirs = (client.request(method, path, content=body) for client in pair)
    assert ours.status_code == theirs.status_code, (method, path, ours.text, theirs.text)
    if ours.status_code == 200:
        if path.endswith("/info"):
            mine, yours = ours.json(), theirs.json()
            assert mine.pop("Uuid") and yours.pop("Uuid")
            assert mine == yours, path
        elif theirs.headers.get("content-type", "").startswith("application/json"):
            assert ours.json() == theirs.json(), (method, path)
        elif not path.endswith("/uuid"):
            assert ours.content == theirs.content, (method, path)
            assert ours.headers["content-type"].split(";")[0] == theirs.headers["content-type"].split(";")[0], path
    elif theirs.content:
        assert ours.json()["OrthancStatus"] == theirs.json()["OrthancStatus"], (method, path)
    return ours.content


VIEWS = ["", "/size", "/md5", "/compressed-size", "/compressed-md5", "/is-compressed", "/info", "/data",
         "/compressed-data", "/uuid"]


def test_attachments_answer_as_orthanc(pair) -> None:
    instance = pair[0].get("/instances").json()[0]
    patient = pair[0].get("/patients").json()[0]
    base = f"/instances/{instance}/attachments"
    both(pair, "GET", base)
    both(pair, "GET", f"{base}?full")
    for name in ("dicom", "nope", "1025", "sample", "dicom-until-pixel-data", "dicom-as-json"):
        for view in VIEWS:
            both(pair, "GET", f"{base}/{name}{view}")
    for method, path, body in [
            ("PUT", "sample", b"hello"), ("PUT", "sample", b"hello2"), ("GET", "sample/data", b""),
            ("PUT", "1030", b"x"), ("PUT", "dicom", b"x"), ("PUT", "nope", b"x"),
            ("PUT", "dicom-until-pixel-data", b"x"), ("POST", "sample/compress", b""), ("GET", "sample/info", b""),
            ("GET", "sample/compressed-data", b""), ("GET", "sample/is-compressed", b""),
            ("POST", "sample/verify-md5", b""), ("POST", "sample/uncompress", b""),
            ("GET", "sample/compressed-size", b""), ("DELETE", "dicom", b""), ("DELETE", "sample", b""),
            ("DELETE", "sample", b""), ("DELETE", "1030", b""), ("POST", "nope/compress", b"")]:
        both(pair, method, f"{base}/{path}", body)
    both(pair, "GET", f"{base}?full")
    both(pair, "PUT", f"/patients/{patient}/attachments/pdf", b"%PDF-1.4")
    both(pair, "GET", f"/patients/{patient}/attachments/pdf/data")
    both(pair, "GET", f"/patients/{patient}/attachments")
    both(pair, "GET", f"/patients/{patient}/statistics")
    both(pair, "GET", "/statistics")
    both(pair, "GET", "/instances/nope/attachments")
    both(pair, "POST", f"{base}/dicom/compress")
    for view in VIEWS:
        both(pair, "GET", f"{base}/dicom{view}")
    both(pair, "GET", f"/instances/{instance}/file")
    both(pair, "GET", "/statistics")


@pytest.mark.parametrize("pair", [{"StorageCompression": True}], indirect=True)
def test_storage_compression_stores_compressed_files_that_read_back_the_same(pair) -> None:
    ours = pair[0]
    data = samples.sample_file("CT_small.dcm")
    instance = ours.get("/instances").json()[0]
    base = f"/instances/{instance}/attachments/dicom"
    for view in VIEWS:
        both(pair, "GET", base + view)
    assert ours.get(f"/instances/{instance}/file").content == data
    assert ours.get(f"{base}/md5").text == hashlib.md5(data).hexdigest()
    stats = ours.get("/statistics").json()  # the file, and the part of it before its pixel data
    assert int(stats["TotalDiskSize"]) < len(data) < int(stats["TotalUncompressedSize"])
    both(pair, "GET", f"/instances/{instance}/attachments")
    both(pair, "GET", "/statistics")
    both(pair, "POST", f"{base}/uncompress")
    assert ours.get(f"{base}/is-compressed").text == "0"
    assert ours.get(f"/instances/{instance}/file").content == data
    both(pair, "GET", "/statistics")
