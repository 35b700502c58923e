"""``/instances/{id}/preview``: the images equal Orthanc 1.10's (both decode JPEG with DCMTK; the PNG
and JPEG bytes are the same too), and the statuses of the odd cases."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from broker.core import preview
from broker.core.dicom_file import read_dataset
from broker.core.store import Store
from tests.support import dicom_samples as samples
from tests.support.modification_samples import Client, peer_answer
from tests.support.orthanc_peer import OrthancPeer

# Files Orthanc 1.10 (Debian, no plugin) can preview, across the transfer syntaxes, with the largest
# pixel difference allowed (none: the same decoders).
DECODED_BY_BOTH = {
    "CT_small.dcm": 0,                      # 16-bit signed, explicit little endian
    "MR_small.dcm": 0,                      # 16-bit
    "MR_small_implicit.dcm": 0,
    "MR_small_bigendian.dcm": 0,
    "image_dfl.dcm": 0,                     # deflated
    "MR_small_RLE.dcm": 0,                  # RLE
    "SC_rgb_rle.dcm": 0,                    # RGB
    "SC_rgb_jpeg_dcmtk.dcm": 0,             # JPEG baseline, colour
    "JPGExtended.dcm": 0,                   # JPEG extended, 12 bits
    "JPEG-lossy.dcm": 0,                    # JPEG extended, 12 bits, unusual markers (DCMTK only)
    "SC_rgb_jpeg_gdcm.dcm": 0,              # JPEG lossless
    "MR_small_jpeg_ls_lossless.dcm": 0,     # JPEG-LS
    "examples_palette.dcm": 0,              # PALETTE COLOR
    "examples_ybr_color.dcm": 0,            # JPEG, YBR
    "SC_rgb_rle_2frame.dcm": 0,             # first frame of a multi-frame instance
}
# Files neither previews: no pixel data, 32-bit grayscale.
UNDECODABLE = ["rtplan.dcm", "rtdose.dcm", "test-SR.dcm", "SC_ybr_full_422_uncompressed.dcm"]
# Files Orthanc 1.10 without plugins answers 415 for, and luabroker previews (docs/rest-deviations.md).
ONLY_OURS = ["JPEG2000.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle_16bit.dcm"]


def unique(name: str) -> bytes:
    """A test file with a SOPInstanceUID of its own (several of pydicom's files share theirs)."""
    ds = read_dataset(samples.sample_file(name))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def both(orthanc_peer: OrthancPeer, store: Store) -> tuple[OrthancPeer, Client, dict[str, str]]:
    orthanc_peer.clear()
    client = Client(SimpleNamespace(store=store))
    ids = {}
    for name in list(DECODED_BY_BOTH) + UNDECODABLE + ONLY_OURS:
        data = unique(name)
        ids[name] = client.post("/instances", data).json()["ID"]
        assert orthanc_peer.upload(data)["ID"] == ids[name]
    return orthanc_peer, client, ids


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data))).astype(int)


def test_png_previews_equal_orthancs(both) -> None:
    peer, client, ids = both
    for name, tolerance in DECODED_BY_BOTH.items():
        path = f"/instances/{ids[name]}/preview"
        ours, theirs = client.call("GET", path), peer_answer(peer, "GET", path)
        assert (ours.status, theirs.status) == (200, 200), name
        assert ours.content_type == theirs.content_type == "image/png"
        a, b = pixels(ours.body), pixels(theirs.body)
        assert a.shape == b.shape, name
        assert np.abs(a - b).max() <= tolerance, (name, np.abs(a - b).max())
        assert ours.body == theirs.body, name  # and the same PNG bytes as libpng's


def test_jpeg_and_pam_previews_equal_orthancs(both) -> None:
    peer, client, ids = both
    for name in ["CT_small.dcm", "MR_small.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm"]:
        path = f"/instances/{ids[name]}/preview"
        for quality in (None, "50"):
            query = {} if quality is None else {"quality": quality}
            ours = client.call("GET", path, headers={"accept": "image/jpeg"}, **query)
            theirs = peer_answer(peer, "GET", path, headers={"Accept": "image/jpeg"}, **query)
            assert ours.content_type == theirs.content_type == "image/jpeg"
            assert ours.body == theirs.body, (name, quality)  # both libjpeg-turbo, with the same settings
        ours = client.call("GET", path, headers={"accept": preview.PAM})
        theirs = peer_answer(peer, "GET", path, headers={"Accept": preview.PAM})
        assert ours.content_type == theirs.content_type == preview.PAM
        assert ours.body == theirs.body, name  # PAM: the decoded pixels, byte for byte


def test_statuses_equal_orthancs(both) -> None:
    peer, client, ids = both
    ct = ids["CT_small.dcm"]
    cases = [(f"/instances/{ids[name]}/preview", {}, {}) for name in UNDECODABLE]
    cases += [
        ("/instances/nope/preview", {}, {}),
        (f"/instances/{ct}/frames/0/preview", {}, {}),
        (f"/instances/{ct}/frames/1/preview", {}, {}),
        (f"/instances/{ct}/frames/-1/preview", {}, {}),
        (f"/instances/{ct}/frames/abc/preview", {}, {}),
        (f"/instances/{ids['SC_rgb_rle_2frame.dcm']}/frames/1/preview", {}, {}),
        (f"/instances/{ct}/preview", {"accept": "text/html"}, {}),
        (f"/instances/{ct}/preview", {"accept": ""}, {}),
        (f"/instances/{ct}/preview", {"accept": "IMAGE/JPEG"}, {}),
    ]
    for quality in ["0", "1", "100", "101", "abc", ""]:
        cases.append((f"/instances/{ct}/preview", {"accept": "image/jpeg"}, {"quality": quality}))
    for path, headers, query in cases:
        ours = client.call("GET", path, headers=headers, **query)
        theirs = peer_answer(peer, "GET", path, headers=headers, **query)
        assert (ours.status, ours.kind) == (theirs.status, theirs.kind), (path, headers, query)


def test_content_negotiation_equals_orthancs(both) -> None:
    peer, client, ids = both
    path = f"/instances/{ids['MR_small.dcm']}/preview"
    for accept in ["image/png", "image/jpeg", "*/*", "image/*", "image/jpeg;q=0.5, image/png",
                   "image/png, image/jpeg", "image/jpeg, image/png", "image/png;q=0.5, image/jpeg;q=0.5",
                   "image/*;q=0.5, image/jpeg", "*/*, image/jpeg", "text/html, */*",
                   "image/jpeg ; q=0.9 , image/png;q=0.8",
                   "image/png;level=1", "image/jpeg, text/html"]:
        ours = client.call("GET", path, headers={"accept": accept})
        theirs = peer_answer(peer, "GET", path, headers={"Accept": accept})
        assert (ours.status, ours.content_type) == (theirs.status, theirs.content_type), accept
    # Without any Accept header (RestApiGet from Lua): PNG.
    assert client.call("GET", path).content_type == "image/png"


def test_frame_previews() -> None:
    data = samples.sample_file("SC_rgb_rle_2frame.dcm")
    first, second = preview.render_frame(data, 0), preview.render_frame(data, 1)
    assert first.pixels.shape == second.pixels.shape == (100, 100, 3)
    with pytest.raises(preview.NoSuchFrame):
        preview.render_frame(data, 2)
    with pytest.raises(preview.Undecodable):
        preview.render_frame(samples.sample_file("rtplan.dcm"))


def test_decodes_more_than_orthanc_without_plugins(both) -> None:
    """JPEG 2000 (pylibjpeg-openjpeg) and RGB of 16 bits per sample: Orthanc's Debian build answers 415,
    luabroker a preview."""
    peer, client, ids = both
    for name in ONLY_OURS:
        path = f"/instances/{ids[name]}/preview"
        assert peer_answer(peer, "GET", path).status == 415, name
        ours = client.call("GET", path)
        assert ours.status == 200 and pixels(ours.body).max() > 0, name
