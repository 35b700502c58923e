"""``module``, ``module-patient``, ``shared-tags``, ``instances-tags`` and ``statistics`` of every
resource, compared with a real Orthanc."""
from __future__ import annotations

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

from .test_orthanc_parity import our_call, peer_call

LEVELS = ["patients", "studies", "series", "instances"]


def test_views_answer_as_orthanc(orthanc_peer: OrthancPeer, client) -> None:
    peer = orthanc_peer
    peer.clear()
    files = [samples.sample_file(name) for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")]
    files += [samples.kitchen_sink(), *samples.series_of(3, CardiacNumberOfImages="3", SeriesDescription="S")]
    for data in files:
        assert client.post("/instances", data) == peer.upload(data)
    compared = 0
    for level in LEVELS:
        for public_id in client.get(f"/{level}"):
            views = ("module", "statistics", "shared-tags", "instances-tags")
            paths = [f"/{level}/{public_id}/{view}" for view in views]
            if level == "studies":
                paths.append(f"/studies/{public_id}/module-patient")
            for path in paths:
                for query in ({}, {"simplify": ""}, {"short": ""}):
                    ours, theirs = our_call(client, "GET", path, **query), peer_call(peer, "GET", path, **query)
                    assert ours == theirs, path
                    if ours[0] == 200:
                        assert client.get(path, **query) == peer.get(path, **query), (path, query)
                        compared += 1
    assert compared > 100
    for path in ("/patients/nope/statistics", "/studies/nope/shared-tags", "/instances/nope/module"):
        assert our_call(client, "GET", path) == peer_call(peer, "GET", path)
