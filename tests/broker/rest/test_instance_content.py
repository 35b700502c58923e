"""``/instances/{id}/content/...`` and ``/instances/{id}/header``, compared with a real Orthanc on
files with sequences, private tags, native and encapsulated pixel data, implicit and explicit VR."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

from .test_orthanc_parity import our_call, peer_call

FILES = ["CT_small.dcm", "rtplan.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small.dcm"]


def answer_of(status_kind: tuple[int, str, Any], body: bytes) -> tuple[Any, ...]:
    status, kind, orthanc_status = status_kind
    if status != 200:
        return status, kind, orthanc_status
    try:
        return status, json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return status, body


@pytest.fixture
def uploaded(orthanc_peer: OrthancPeer, client) -> list[str]:
    orthanc_peer.clear()
    files = [samples.sample_file(name) for name in FILES]
    files += [samples.kitchen_sink(), samples.implicit(samples.minimal(patient_id="IMPLICIT"))]
    ids = []
    for data in files:
        ours = client.post("/instances", data)
        assert ours == orthanc_peer.upload(data)
        ids.append(ours["ID"])
    return ids


def compare(peer: OrthancPeer, client, path: str, **query: str) -> Any:
    ours = client.call("GET", path, **query)
    theirs = peer.client.get(path, params=query)
    expected = answer_of(peer_call(peer, "GET", path, **query), theirs.content)
    got = answer_of(our_call(client, "GET", path, **query), ours.body)
    assert got == expected, path
    return got[1] if got[0] == 200 else None


def walk(peer: OrthancPeer, client, base: str, depth: int = 0) -> int:
    """Every path under ``base`` that lists something, down to the leaves; returns how many were compared."""
    listing = compare(peer, client, base)
    count = 1
    if isinstance(listing, list) and depth < 4:
        for name in listing:
            count += walk(peer, client, f"{base}/{name}", depth + 1)
    return count


def test_every_path_of_the_content_answers_as_orthanc(orthanc_peer: OrthancPeer, client, uploaded) -> None:
    total = sum(walk(orthanc_peer, client, f"/instances/{instance}/content") for instance in uploaded)
    assert total > 300


def test_tags_by_name_and_errors_answer_as_orthanc(orthanc_peer: OrthancPeer, client, uploaded) -> None:
    ct, plan, jpeg = uploaded[:3]
    for path in (f"/instances/{ct}/content/PatientName", f"/instances/{ct}/content/0010,0010",
                 f"/instances/{ct}/content/00100010", f"/instances/{ct}/content/NoSuchKeyword",
                 f"/instances/{ct}/content/0010-0010/0", f"/instances/{ct}/content/7fe0-0010/1",
                 f"/instances/{ct}/content/7fe0-0010/x", f"/instances/{ct}/content/0002-0010",
                 f"/instances/{ct}/content/0009-0010/0", f"/instances/{plan}/content/BeamSequence/9",
                 f"/instances/{plan}/content/BeamSequence/a", f"/instances/{plan}/content/BeamSequence/0/BeamName",
                 f"/instances/{jpeg}/content/PixelData", f"/instances/{jpeg}/content/7fe0-0010/0",
                 f"/instances/{jpeg}/content/7fe0-0010/5", "/instances/nope/content",
                 f"/instances/{ct}/content/0008-0005/0/0010-0010"):
        compare(orthanc_peer, client, path)


def test_the_header_answers_as_orthanc(orthanc_peer: OrthancPeer, client, uploaded) -> None:
    for instance in uploaded:
        for query in ({}, {"simplify": ""}, {"short": ""}):
            assert compare(orthanc_peer, client, f"/instances/{instance}/header", **query)
