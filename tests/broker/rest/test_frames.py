"""The frames of an instance and their pixel views, compared with a real Orthanc: raw bytes, integer
images (PNG, JPEG and PAM), MATLAB text and numpy files, all byte for byte."""
from __future__ import annotations

import gzip
from typing import Any

import numpy as np

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

from .test_orthanc_parity import peer_call

FILES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_2frame.dcm",
         "rtplan.dcm"]


def signed_with_rescale() -> bytes:
    pixels = np.array([[-5, 0, 300], [-28304, 32767, 7]], dtype="<i2")
    return samples.encode(samples.minimal(
        patient_id="IMG", Rows=2, Columns=3, BitsAllocated=16, BitsStored=16, HighBit=15, SamplesPerPixel=1,
        PixelRepresentation=1, PhotometricInterpretation="MONOCHROME2", PixelData=pixels.tobytes(),
        RescaleSlope="2", RescaleIntercept="-10"))


def eight_bits() -> bytes:
    return samples.encode(samples.minimal(
        patient_id="IMG8", Rows=2, Columns=2, BitsAllocated=8, BitsStored=8, HighBit=7, SamplesPerPixel=1,
        PixelRepresentation=0, PhotometricInterpretation="MONOCHROME2", PixelData=bytes([1, 2, 3, 250])))


def one_bit(columns: int) -> bytes:
    """A binary image, as segmentations store theirs: Orthanc reads its pixels as 0 and 255 (and refuses
    rows that do not fill whole bytes)."""
    bits = np.random.default_rng(1).integers(0, 2, 8 * columns, dtype=np.uint8)
    pixels = np.packbits(bits, bitorder="little").tobytes()
    return samples.encode(samples.minimal(
        patient_id=f"BIN{columns}", Rows=8, Columns=columns, BitsAllocated=1, BitsStored=1, HighBit=0,
        SamplesPerPixel=1, PixelRepresentation=0, PhotometricInterpretation="MONOCHROME2",
        PixelData=pixels + b"\x00" * (len(pixels) % 2)))


def body_of(content: bytes, content_type: str, path: str) -> Any:
    if content_type.startswith("application/gzip"):
        return gzip.decompress(content)
    if content_type.startswith("application/json"):
        return content.decode().split()
    return content


def compare(peer: OrthancPeer, client, target: str, accept: str | None = None) -> None:
    path, _, query_text = target.partition("?")
    query = dict(item.split("=") for item in query_text.split("&") if item)
    headers = {"accept": accept} if accept else {}
    ours = client.call("GET", path, headers=headers, **query)
    theirs = peer.client.get(path, params=query, headers=headers)
    assert ours.status == theirs.status_code, (target, accept)
    if ours.status != 200:
        if not accept:
            assert (ours.status, ours.kind, ours.orthanc_status) == peer_call(peer, "GET", path, **query), target
        return
    their_type = theirs.headers.get("content-type", "")
    assert ours.content_type.split(";")[0] == their_type.split(";")[0], (target, accept)
    assert body_of(ours.body, ours.content_type, path) == body_of(theirs.content, their_type, path), (target, accept)


def test_frames_answer_as_orthanc(orthanc_peer: OrthancPeer, client) -> None:
    peer = orthanc_peer
    peer.clear()
    files = [samples.sample_file(name) for name in FILES]
    files += [signed_with_rescale(), eight_bits(), one_bit(8), one_bit(4)]
    ids = []
    for data in files:
        answer = client.post("/instances", data)
        assert answer == peer.upload(data)
        ids.append(answer["ID"])
    for instance in ids:
        base = f"/instances/{instance}"
        compare(peer, client, f"{base}/frames")
        for frame in range(len(client.get(f"{base}/frames")) + 1):
            for view in ("raw", "raw.gz", "image-uint8", "image-uint16", "image-int16", "matlab", "numpy",
                         "numpy?rescale=0"):
                compare(peer, client, f"{base}/frames/{frame}/{view}")
            for view in ("image-uint8", "image-uint16", "image-int16"):
                compare(peer, client, f"{base}/frames/{frame}/{view}", "image/x-portable-arbitrarymap")
                compare(peer, client, f"{base}/frames/{frame}/{view}", "image/jpeg")
        for view in ("image-uint8", "image-uint16", "matlab", "numpy", "numpy?rescale=0"):
            compare(peer, client, f"{base}/{view}")
        compare(peer, client, f"{base}/frames/x/raw")
