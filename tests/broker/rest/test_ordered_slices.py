"""``/series/{id}/ordered-slices`` compared with a real Orthanc: series ordered by position (volumes),
by IndexInSeries (sequences, ties included), with multi-frame instances, and series that cannot be
ordered."""
from __future__ import annotations

import random
import warnings

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

from .test_orthanc_parity import our_call, peer_call

AXIAL = "1\\0\\0\\0\\1\\0"
OBLIQUE = "0.70710678\\0.70710678\\0\\0\\0\\-1"


def series(*instances: dict[str, object]) -> list[bytes]:
    """One series of one study, an instance per dictionary of attributes (None: no such attribute; bytes:
    the value as written, even when it is no valid DICOM, as ``NumberOfFrames`` "x")."""
    study, uid = generate_uid(), generate_uid()
    files = []
    for attributes in instances:
        ds = samples.minimal(patient_id="SLICES", StudyInstanceUID=study, SeriesInstanceUID=uid)
        for name, value in attributes.items():
            tag = tag_for_keyword(name)
            if isinstance(value, bytes):
                ds[tag] = RawDataElement(BaseTag(tag), dictionary_VR(tag), len(value), value, 0, False, True)
            elif value is not None:
                setattr(ds, name, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the invalid values, on purpose
            files.append(samples.encode(ds))
    return files


def positioned(z_values: list[float], orientation: str = AXIAL, **attributes: object) -> list[bytes]:
    """Instances at ``z`` along the normal of ``orientation`` (axial: the z axis; oblique: (-1, 1, 0))."""
    def position(t: float) -> str:
        return f"-10\\20.5\\{t}" if orientation == AXIAL else f"{-t}\\{t}\\5"
    return series(*({"ImagePositionPatient": position(z), "ImageOrientationPatient": orientation,
                     "InstanceNumber": str(number + 1), **attributes} for number, z in enumerate(z_values)))


def numbered(numbers: list[str | None], **attributes: object) -> list[bytes]:
    return series(*({"InstanceNumber": number, **attributes} for number in numbers))


def sample_series() -> dict[str, list[bytes]]:
    rng = random.Random(7)
    shuffled = [float(z) for z in range(-20, 20, 4)]
    rng.shuffle(shuffled)
    multi = series({"InstanceNumber": "2", "NumberOfFrames": "3"}, {"InstanceNumber": "1"},
                   {"InstanceNumber": "3", "NumberOfFrames": b" 2 "}, {"InstanceNumber": "4", "NumberOfFrames": b"x "},
                   {"InstanceNumber": "5", "NumberOfFrames": "0"})
    return {
        "volume, uploaded shuffled": positioned(shuffled),
        "volume along an oblique normal": positioned([3.5, -1.25, 0.0, 7.0], OBLIQUE),
        "volume with spaces in the values": series(*({"ImagePositionPatient": f" 0 \\ 0 \\{z} ".encode(),
                                                       "ImageOrientationPatient": AXIAL} for z in (2, 1, 3))),
        "volume of multi-frame instances": positioned([2.0, 1.0], NumberOfFrames="4"),
        "positions too close: by number": positioned([1.0, 1.0, 0.0, 2.0]),
        "a position missing: by number": series({"ImagePositionPatient": "0\\0\\1", "ImageOrientationPatient": AXIAL,
                                                 "InstanceNumber": "2"}, {"InstanceNumber": "1"}),
        "an instance not parallel: by number": series(
            {"ImagePositionPatient": "0\\0\\1", "ImageOrientationPatient": AXIAL, "InstanceNumber": "2"},
            {"ImagePositionPatient": "0\\0\\2", "ImageOrientationPatient": "0\\1\\0\\0\\0\\1", "InstanceNumber": "1"}),
        "a bad position: by number": series(
            {"ImagePositionPatient": "0\\0\\1", "ImageOrientationPatient": AXIAL, "InstanceNumber": "2"},
            {"ImagePositionPatient": "0\\0\\1\\4", "ImageOrientationPatient": AXIAL, "InstanceNumber": "1"}),
        "no positions": numbered(["3", "1", "2", "10"]),
        "a negative number wraps around": numbered(["-1", "2", "1"]),
        "multi-frame sequence": multi,
        "twenty ties": numbered(["5"] * 20),
        "ties among many": numbered([str(n % 3) for n in range(40)]),
        "close positions, then ties": positioned([0.0] * 9 + [1.0e-7] * 9, InstanceNumber="1"),
        "one instance": numbered([None]),
        "a number missing": numbered(["1", None, "3"]),
    }


def test_ordered_slices_answer_as_orthanc(orthanc_peer: OrthancPeer, client) -> None:
    peer = orthanc_peer
    peer.clear()
    kinds = set()
    for name, files in sample_series().items():
        answers = [client.post("/instances", data) for data in files]
        assert answers == [peer.upload(data) for data in files], name
        path = f"/series/{answers[0]['ParentSeries']}/ordered-slices"
        ours, theirs = our_call(client, "GET", path), peer_call(peer, "GET", path)
        assert ours == theirs, name
        if ours[0] == 200:
            assert client.get(path) == peer.get(path), name
            kinds.add(client.get(path)["Type"])
    assert kinds == {"Volume", "Sequence"}
    instance = client.get("/instances")[0]
    for path in ("/series/nope/ordered-slices", f"/series/{instance}/ordered-slices"):
        assert our_call(client, "GET", path) == peer_call(peer, "GET", path)


def test_more_frames_than_listed_are_refused(client) -> None:
    """A file may declare 2**32 - 1 frames; Orthanc would try to list them all (each a string)."""
    answer = client.post("/instances", numbered(["1"], NumberOfFrames=b"-1")[0])
    refused = client.call("GET", f"/series/{answer['ParentSeries']}/ordered-slices")
    assert (refused.status, refused.kind, refused.orthanc_status) == (500, "error", 4)
