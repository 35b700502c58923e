"""Transcoding as Orthanc 1.10 does it, compared with a real Orthanc: the same transfer syntaxes, and
the same encoded pixel data byte for byte (both run DCMTK's codecs with the same parameters); the
syntaxes only luabroker writes; and Elscint's private PMSCT_RLE1 pixels."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pydicom
from pydicom.encaps import generate_frames

from broker.core import psmct_rle1
from broker.core.dicom_file import transcoded
from broker.core.preview import decode_frame
from broker.core.store import Store
from tests.support import dicom_samples as samples
from tests.support.modification_samples import Client, peer_answer
from tests.support.orthanc_peer import OrthancPeer

SOURCES = ["MR_small.dcm",                     # 16-bit grayscale, explicit little endian
           "SC_rgb_small_odd.dcm",             # 8-bit RGB, odd columns
           "SC_rgb_jpeg_dcmtk.dcm",            # JPEG baseline (lossy), colour
           "JPGExtended.dcm",                  # JPEG extended, 12 bits
           "MR_small_jpeg_ls_lossless.dcm",    # JPEG-LS
           "MR_small_RLE.dcm"]                 # RLE
TARGETS = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
           "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
           "1.2.840.10008.1.2.4.80"]
# Orthanc 1.10 without plugins cannot write these (500, and its server goes down for some files);
# luabroker writes them with pydicom.
ONLY_OURS = ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"]
# JPEG-LS near-lossless: Orthanc's DCMTK crashes the whole server after a few of these (orthanc-tests
# only tries it with the GDCM plugin); luabroker's codec runs in a process of its own.
NOT_COMPARED = "1.2.840.10008.1.2.4.81"
# An odd-length JPEG-LS bitstream: Orthanc 1.10.1 pads it with a byte past its buffer and, now and
# then, goes down.
ORTHANC_CRASHES = {("SC_rgb_small_odd.dcm", "1.2.840.10008.1.2.4.80")}


def frames(data: bytes) -> tuple[str, list[bytes]]:
    """The transfer syntax and the frames; the byte that pads an odd JPEG-LS bitstream after its end
    marker is left out (Orthanc's is whatever its buffer held, luabroker's a zero)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if not ds["PixelData"].is_undefined_length:
        return str(ds.file_meta.TransferSyntaxUID), [ds.PixelData]
    fragments = list(generate_frames(ds.PixelData, number_of_frames=count))
    return str(ds.file_meta.TransferSyntaxUID), [f[:-1] if f[-3:-1] == b"\xff\xd9" else f for f in fragments]


def test_transcoded_instances_equal_orthancs(orthanc_peer: OrthancPeer, store: Store) -> None:
    peer = orthanc_peer
    peer.clear()
    client = Client(SimpleNamespace(store=store))
    compared = 0
    written: list[bool] = []
    for name in SOURCES:
        data = samples.sample_file(name)
        instance = client.post("/instances", data).json()["ID"]
        assert peer.upload(data)["ID"] == instance
        for target in TARGETS + ONLY_OURS:
            body = {"Transcode": target, "Keep": ["SOPInstanceUID"], "Force": True}
            ours = client.post(f"/instances/{instance}/modify", body)
            if target in ONLY_OURS:  # pydicom's encoders refuse some images (JPEG 2000 of 3 x 3 pixels)
                assert ours.status in (200, 500), (name, target)
                written.append(ours.status == 200 and frames(ours.body)[0] == target)
                continue
            if (name, target) in ORTHANC_CRASHES:
                continue
            theirs = peer_answer(peer, "POST", f"/instances/{instance}/modify", body)
            assert ours.status == theirs.status, (name, target, ours)
            if ours.status != 200:  # 16 bits to JPEG baseline: Orthanc's transcoder refuses
                continue
            # The pixel data Orthanc writes, byte for byte (for lossy targets: with a new SOP Instance
            # UID on both sides, as DCMTK gives one).
            assert frames(ours.body) == frames(theirs.body), (name, target)
            compared += 1
    assert compared >= 45 and written.count(True) >= 10


def test_resource_transcoding_keeps_what_cannot_be_transcoded(orthanc_peer: OrthancPeer, store: Store) -> None:
    """JPEG baseline holds 8 bits: a 16-bit series keeps its syntax, an 8-bit one is transcoded."""
    peer = orthanc_peer
    peer.clear()
    client = Client(SimpleNamespace(store=store))
    for name, expected in (("MR_small.dcm", "1.2.840.10008.1.2.1"), ("SC_rgb_small_odd.dcm", "1.2.840.10008.1.2.4.50")):
        answer = client.post("/instances", samples.sample_file(name)).json()
        peer.upload(samples.sample_file(name))
        body = {"Transcode": "1.2.840.10008.1.2.4.50"}
        ours = client.post(f"/series/{answer['ParentSeries']}/modify", body).json()
        theirs = peer_answer(peer, "POST", f"/series/{answer['ParentSeries']}/modify", body).json()
        assert ours.keys() == theirs.keys() and ours["Transcode"] == theirs["Transcode"]
        [new] = client.get(f"/series/{ours['ID']}/instances")
        [their_new] = peer.get(f"/series/{theirs['ID']}/instances")
        assert frames(client.get(f"/instances/{new['ID']}/file"))[0] == expected
        assert peer.client.get(f"/instances/{their_new['ID']}/metadata/TransferSyntax").text == expected


def test_near_lossless_jpeg_ls_stays_within_its_bound() -> None:
    ds = samples.minimal(Rows=64, Columns=64, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
                         SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2")
    ds.PixelData = np.random.default_rng(7).integers(0, 256, (64, 64), dtype=np.uint8).tobytes()
    data = samples.encode(ds)
    original = decode_frame(data).array.astype(int)
    near = transcoded(data, NOT_COMPARED)
    assert frames(near)[0] == NOT_COMPARED
    assert 0 < np.abs(decode_frame(near).array.astype(int) - original).max() <= 2  # dcmcjpls's NEAR: 2


def test_a_transcoding_round_trip_keeps_lossless_pixels() -> None:
    data = samples.sample_file("MR_small.dcm")
    original = decode_frame(data).array
    for target in ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
                   "1.2.840.10008.1.2.2"):
        back = transcoded(transcoded(data, target), "1.2.840.10008.1.2.1")
        assert np.array_equal(decode_frame(back).array, original), target


def test_psmct_rle1_decodes_runs_and_absolute_values() -> None:
    ds = pydicom.Dataset()
    ds.add_new(psmct_rle1.COMPRESSION_TYPE, "CS", "PMSCT_RLE1")
    # 5a e8 03: 1000; 02: +2; a5 02 ff: three times -1; 5a 00 80: 32768; 5a: truncated, ignored.
    ds.add_new(psmct_rle1.CONTENT, "OB", bytes([0x5A, 0xE8, 0x03, 0x02, 0xA5, 0x02, 0xFF, 0x5A, 0x00, 0x80, 0x5A]))
    pixels = np.frombuffer(psmct_rle1.decoded_pixels(ds) or b"", dtype="<u2")
    assert pixels.tolist() == [1000, 1002, 1001, 1000, 999, 32768]
    ds[psmct_rle1.COMPRESSION_TYPE].value = "OTHER"
    assert psmct_rle1.decoded_pixels(ds) is None


def test_peer_store_transcodes_and_compresses_as_orthanc(orthanc_peer: OrthancPeer, luabroker) -> None:
    """``/peers/{name}/store`` with ``Transcode`` (and ``Compress``, a gzipped body): the peer receives
    the instance in that syntax; one that cannot be transcoded is sent as stored."""
    orthanc_peer.clear()
    server = luabroker(OrthancPeers={"orthanc": [orthanc_peer.url]})
    rgb = server.http.post("/instances", content=samples.sample_file("SC_rgb_small_odd.dcm")).json()
    mr = server.http.post("/instances", content=samples.sample_file("MR_small.dcm")).json()
    for compress in (False, True):
        orthanc_peer.clear()
        body = {"Resources": [rgb["ID"], mr["ID"]], "Transcode": "1.2.840.10008.1.2.4.50", "Compress": compress}
        content = server.http.post("/peers/orthanc/store", json=body).json()
        assert (content["Transcode"], content["Compress"], content["FailedInstancesCount"]) == \
            ("1.2.840.10008.1.2.4.50", compress, 0)
        syntaxes = sorted(orthanc_peer.client.get(f"/instances/{i}/metadata/TransferSyntax").text
                          for i in orthanc_peer.get("/instances"))
        assert syntaxes == ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"]  # MR_small: 16 bits
    answer = server.http.post("/peers/orthanc/store", json={"Resources": [mr["ID"]], "Transcode": "nope"})
    assert answer.status_code == 400 and answer.json()["Message"] == "Bad file format"


def test_each_frame_of_a_multi_frame_jpeg_is_decoded_alone() -> None:
    ds = samples.minimal(Rows=16, Columns=24, BitsAllocated=16, BitsStored=12, HighBit=11, PixelRepresentation=0,
                         SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", NumberOfFrames=3)
    pixels = np.random.default_rng(3).integers(0, 4096, (3, 16, 24), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    compressed = transcoded(samples.encode(ds), "1.2.840.10008.1.2.4.70")
    assert len(frames(compressed)[1]) == 3
    for index in range(3):
        assert np.array_equal(decode_frame(compressed, index).array, pixels[index]), index
