"""``POST /tools/bulk-content`` against a real Orthanc 1.10.1: the same resources' JSON, in the same
order, with their metadata, brought to a ``Level``, and the same errors."""
from __future__ import annotations

import json
from typing import Any

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

from .test_orthanc_parity import our_call, peer_call, strip


def test_bulk_content_answers_as_orthanc(orthanc_peer: OrthancPeer, client: Any) -> None:
    peer = orthanc_peer
    peer.clear()
    stored = []
    for data in (samples.sample_file("CT_small.dcm"), samples.sample_file("MR_small.dcm"), *samples.series_of(2)):
        answer = client.post("/instances", data)
        assert answer == peer.upload(data)
        stored.append(answer)
    ct, mr, first, second = stored
    bodies: list[Any] = [
        {"Resources": [ct["ParentPatient"], ct["ParentStudy"], ct["ParentSeries"], ct["ID"]]},
        {"Resources": [mr["ID"], ct["ParentPatient"], "nope", mr["ID"]], "Short": True},
        {"Resources": [first["ParentStudy"]], "Full": True, "Metadata": False},
        {"Resources": [first["ParentPatient"], ct["ID"]], "Level": "Instance"},
        {"Resources": [second["ID"], first["ID"]], "Level": "Series"},
        {"Resources": [mr["ID"]], "Level": "Patients"},
    ]
    for body in bodies:
        raw = json.dumps(body).encode()
        ours = client.call("POST", "/tools/bulk-content", raw)
        theirs = peer.client.post("/tools/bulk-content", content=raw)
        assert (ours.status, theirs.status_code) == (200, 200), body
        assert strip(ours.json()) == strip(theirs.json()), body
    for body in [{"Resources": "x"}, {}, {"Resources": [ct["ID"]], "Level": "Nope"},
                 {"Resources": [ct["ID"]], "Metadata": 3}, [ct["ID"]], "not json"]:
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        assert our_call(client, "POST", "/tools/bulk-content", raw) == peer_call(peer, "POST", "/tools/bulk-content",
                                                                                 raw), body
