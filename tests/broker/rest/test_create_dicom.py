"""``/tools/create-dicom`` compared with a real Orthanc: the same bodies make instances with the same
tags and pixels (but for what each server generates: UIDs, a PatientID, the dates and times of now),
and the same errors."""
from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
from PIL import Image

from tests.support.orthanc_peer import OrthancPeer

from .test_orthanc_parity import our_call, peer_call

GENERATED = {"0008,0012", "0008,0013", "0008,0018", "0008,0020", "0008,0021", "0008,0022", "0008,0023",
             "0008,0030", "0008,0031", "0008,0032", "0008,0033", "0010,0020", "0020,000d", "0020,000e"}
META_GENERATED = {"0002,0000", "0002,0003", "0002,0012", "0002,0013"}


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image(mode: str, size: tuple[int, int], fmt: str = "PNG") -> str:
    array = np.arange(size[0] * size[1] * (3 if mode == "RGB" else 1), dtype=np.uint16 if mode == "I;16" else np.uint8)
    shaped = array.reshape((size[1], size[0], 3) if mode == "RGB" else (size[1], size[0]))
    buffer = io.BytesIO()
    Image.fromarray(shaped).save(buffer, fmt)
    return data_uri(f"image/{fmt.lower()}", buffer.getvalue())


def created(peer: OrthancPeer, client, body: Any) -> tuple[str, str] | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = "/tools/create-dicom"
    ours, theirs = our_call(client, "POST", path, raw), peer_call(peer, "POST", path, raw)
    assert ours == theirs, body
    if ours[0] != 200:
        return None
    mine = client.call("POST", "/tools/create-dicom", raw).json()
    yours = peer.client.post("/tools/create-dicom", content=raw).json()
    assert mine.keys() == yours.keys(), body
    return mine["ID"], yours["ID"]


def assert_same_instance(peer: OrthancPeer, client, ids: tuple[str, str]) -> dict[str, Any]:
    mine, yours = ids
    ours = client.get(f"/instances/{mine}/tags", short="")
    theirs = peer.get(f"/instances/{yours}/tags", short="")
    assert {k: v for k, v in ours.items() if k not in GENERATED} == \
        {k: v for k, v in theirs.items() if k not in GENERATED}
    assert ours.keys() == theirs.keys()
    header = client.get(f"/instances/{mine}/header", short="")
    assert {k: v for k, v in header.items() if k not in META_GENERATED} == \
        {k: v for k, v in peer.get(f"/instances/{yours}/header", short="").items() if k not in META_GENERATED}
    if "7fe0,0010" in ours:
        assert client.call("GET", f"/instances/{mine}/content/7fe0-0010/0").body == \
            peer.client.get(f"/instances/{yours}/content/7fe0-0010/0").content
    return ours


def test_created_instances_equal_orthancs(orthanc_peer: OrthancPeer, client) -> None:
    peer = orthanc_peer
    peer.clear()
    bodies: list[Any] = [
        {"Tags": {"PatientName": "Test", "StudyDescription": "d"}},
        {"PatientName": "Legacy", "Modality": "OT"},
        {"Tags": {"PatientName": "Seq", "ReferencedStudySequence": [
            {"ReferencedSOPClassUID": "1.2", "ReferencedSOPInstanceUID": "1.3"}, {}]}},
        {"Tags": {"PatientName": "Gray"}, "Content": image("L", (3, 2))},
        {"Tags": {"PatientName": "Color"}, "Content": image("RGB", (2, 3))},
        {"Tags": {"PatientName": "Wide"}, "Content": image("I;16", (4, 2))},
        {"PatientName": "Legacy image", "PixelData": image("L", (2, 2))},
        {"Tags": {"PatientName": "Pdf"}, "Content": data_uri("application/pdf", b"%PDF-1.4 nothing")},
        {"Tags": {"PatientName": "Binary", "0009,0010": "Creator", "0009,1001": data_uri("application/octet-stream",
                                                                                         b"\x01\x02")}},
        {"Tags": {"PatientName": "Jodé", "SpecificCharacterSet": "ISO_IR 192"}},
    ]
    for body in bodies:
        ids = created(peer, client, body)
        assert ids is not None, body
        assert_same_instance(peer, client, ids)
    for body in ({"Tags": {"PatientName": 3}}, {"Tags": {"Nope": "x"}}, b"nope", {"Tags": {}, "Parent": "nope"},
                 {"Tags": []}, {"Tags": {"PatientName": "x"}, "Content": "nope"}, {"Tags": {"SOPInstanceUID": "1.2"}},
                 {"Tags": {"SpecificCharacterSet": "1.2.3"}}):
        assert created(peer, client, body) is None, body


def test_an_instance_created_in_a_parent_joins_it(orthanc_peer: OrthancPeer, client) -> None:
    peer = orthanc_peer
    peer.clear()
    ids = created(peer, client, {"Tags": {"PatientName": "Parent", "PatientID": "P1", "StudyDescription": "d",
                                          "StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4"}, "Force": True})
    assert ids is not None
    study = client.get(f"/instances/{ids[0]}/study")["ID"]
    assert study == peer.get(f"/instances/{ids[1]}/study")["ID"]  # same UIDs, same ids
    child = created(peer, client, {"Tags": {"SeriesDescription": "child"}, "Parent": study})
    assert child is not None
    tags = assert_same_instance(peer, client, child)
    assert (tags["0010,0020"], tags["0020,000d"], tags["0008,1030"]) == ("P1", "1.2.3", "d")
    assert client.get(f"/instances/{child[0]}/study")["ID"] == study
    assert created(peer, client, {"Tags": {}, "Parent": ids[0]}) is None  # an instance cannot be a parent


def test_a_list_of_images_makes_one_multi_frame_instance(client) -> None:
    """A documented deviation: Orthanc 1.10 makes a series of its own of such a list."""
    body = {"Tags": {"PatientName": "Frames"}, "Content": [image("L", (3, 2)), image("L", (3, 2))]}
    answer = client.call("POST", "/tools/create-dicom", json.dumps(body).encode()).json()
    assert client.get(f"/instances/{answer['ID']}/frames") == [0, 1]
