"""``/rendered`` compared with a real Orthanc: the window (given, per frame, top level, or the whole
range) applied to the rescaled values, pixel for pixel; the resized image's size."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer


def multiframe_with_windows() -> bytes:
    """Two 2x2 frames, each with its window in its FrameVOILUTSequence (as Orthanc's
    MultiframeWindowing.dcm)."""
    frames = np.array([[[0, 16], [32, 48]], [[100, 116], [132, 148]]], dtype=np.uint8)
    per_frame = []
    for center, width in ((16, 128), (127, 256)):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = str(center), str(width)
        group = Dataset()
        group.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(group)
    return samples.encode(samples.minimal(
        patient_id="WIN", Rows=2, Columns=2, BitsAllocated=8, BitsStored=8, HighBit=7, SamplesPerPixel=1,
        PixelRepresentation=0, PhotometricInterpretation="MONOCHROME2", NumberOfFrames="2",
        PixelData=frames.tobytes(), PerFrameFunctionalGroupsSequence=Sequence(per_frame)))


def without_pixel_description(photometric: bool) -> bytes:
    """A frame without SamplesPerPixel nor PixelRepresentation, as Orthanc's MultiframeWindowing.dcm:
    DCMTK reads it as unsigned grayscale (and refuses it without a PhotometricInterpretation)."""
    extra = {"PhotometricInterpretation": "MONOCHROME2"} if photometric else {}
    return samples.encode(samples.minimal(
        patient_id=f"BARE{photometric}", Rows=2, Columns=2, BitsAllocated=8, BitsStored=8, HighBit=7,
        PixelData=bytes([0, 16, 32, 48]), WindowCenter="16", WindowWidth="128", **extra))


def pixels(content: bytes) -> list:
    return np.asarray(Image.open(io.BytesIO(content))).tolist()


def test_rendered_frames_equal_orthancs(orthanc_peer: OrthancPeer, luabroker) -> None:
    peer = orthanc_peer
    peer.clear()
    ours = luabroker().http
    files = [samples.sample_file(name) for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm")]
    files += [multiframe_with_windows(), without_pixel_description(True), without_pixel_description(False)]
    ids = []
    for data in files:
        ids.append(ours.post("/instances", content=data).json()["ID"])
        peer.upload(data)
    for instance in ids:
        for path in (f"/instances/{instance}/rendered", f"/instances/{instance}/frames/0/rendered",
                     f"/instances/{instance}/frames/1/rendered"):
            for query in ({}, {"window-center": "127", "window-width": "256"},
                          {"window-center": "16", "window-width": "128"}):
                mine, theirs = ours.get(path, params=query), peer.client.get(path, params=query)
                assert mine.status_code == theirs.status_code, (path, query)
                if mine.status_code == 200:
                    assert pixels(mine.content) == pixels(theirs.content), (path, query)
        for query in ({"width": "64"}, {"height": "30"}, {"width": "64", "height": "20", "smooth": "1"}):
            path = f"/instances/{instance}/rendered"
            mine, theirs = ours.get(path, params=query), peer.client.get(path, params=query)
            assert mine.status_code == theirs.status_code, (path, query)
            if mine.status_code == 200:
                assert Image.open(io.BytesIO(mine.content)).size == Image.open(io.BytesIO(theirs.content)).size, query
