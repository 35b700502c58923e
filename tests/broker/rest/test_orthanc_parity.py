"""The same files uploaded to luabroker and to a real Orthanc 1.10: the answers must be equal, but for
a short explicit list of fields that differ by nature."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

# Time stamps and file names differ by nature; IsStable depends on StableAge and timing.
IGNORED_KEYS = {"FileUuid", "LastUpdate", "ReceptionDate", "IsStable"}
LEVELS = ["patients", "studies", "series", "instances"]
CHILDREN = {"patients": ["studies", "series", "instances"], "studies": ["series", "instances", "patient"],
            "series": ["instances", "study", "patient"], "instances": ["series", "study", "patient"]}


def strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in IGNORED_KEYS}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def peer_call(peer: OrthancPeer, method: str, path: str, body: bytes = b"", **query: str) -> tuple[int, str, Any]:
    answer = peer.client.request(method, path, content=body, params=query)
    if not answer.content:
        return answer.status_code, "bare" if answer.status_code != 200 else "body", None
    if answer.status_code != 200:
        return answer.status_code, "error", json.loads(answer.content)["OrthancStatus"]
    return answer.status_code, "body", None


def our_call(client, method: str, path: str, body: bytes = b"", **query: str) -> tuple[int, str, Any]:
    answer = client.call(method, path, body, **query)
    kind = "body" if answer.kind == "body" and answer.body == b"" and answer.status == 200 else answer.kind
    return answer.status, kind, answer.orthanc_status


@pytest.fixture
def both(orthanc_peer: OrthancPeer, client) -> tuple[OrthancPeer, Any]:
    orthanc_peer.clear()
    files = [samples.sample_file(name) for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm")]
    files += [samples.kitchen_sink(), samples.utf8_long_main_tags(), *samples.series_of(3, CardiacNumberOfImages="3")]
    files += samples.series_of(2, NumberOfSlices=2, NumberOfTimeSlices=1)[:1]
    for data in files:
        assert client.post("/instances", data) == orthanc_peer.upload(data)
    return orthanc_peer, client


def test_resource_answers_equal_orthancs(both) -> None:
    peer, client = both
    for level in LEVELS:
        ids = client.get(f"/{level}")
        assert ids == peer.get(f"/{level}")
        assert strip(client.get(f"/{level}", expand="")) == strip(peer.get(f"/{level}", expand=""))
        assert strip(client.get(f"/{level}", expand="false")) == strip(peer.get(f"/{level}", expand="false"))
        assert client.get(f"/{level}", since="2", limit="2") == peer.get(f"/{level}", since="2", limit="2")
        for public_id in ids:
            base = f"/{level}/{public_id}"
            assert strip(client.get(base)) == strip(peer.get(base))
            assert client.get(f"{base}/metadata") == peer.get(f"{base}/metadata")
            assert strip(client.get(f"{base}/metadata", expand="")) == strip(peer.get(f"{base}/metadata", expand=""))
            for related in CHILDREN[level]:
                assert strip(client.get(f"{base}/{related}")) == strip(peer.get(f"{base}/{related}")), related


def test_tag_answers_equal_orthancs(both) -> None:
    peer, client = both
    for instance in client.get("/instances"):
        base = f"/instances/{instance}"
        assert client.get(f"{base}/tags") == peer.get(f"{base}/tags")
        assert client.get(f"{base}/simplified-tags") == peer.get(f"{base}/simplified-tags")
        assert client.get(f"{base}/tags", simplify="") == peer.get(f"{base}/tags", simplify="")
        assert client.get(f"{base}/tags", short="") == peer.get(f"{base}/tags", short="")
        assert client.get(f"{base}/file") == peer.client.get(f"{base}/file").content


def test_statistics_equal_orthancs(both) -> None:
    peer, client = both
    assert client.get("/statistics") == peer.get("/statistics")


def test_delete_answers_equal_orthancs(both) -> None:
    peer, client = both
    series = next(s for s in client.get("/series", expand="") if len(s["Instances"]) == 3)
    steps = [f"/instances/{series['Instances'][0]}", f"/series/{series['ID']}", f"/instances/{series['Instances'][0]}"]
    patients = client.get("/patients")
    steps += [f"/patients/{patients[0]}", f"/studies/{client.get('/studies')[-1]}"]
    for path in steps:
        ours, theirs = client.call("DELETE", path), peer.client.delete(path)
        assert ours.status == theirs.status_code, path
        assert (ours.json() if ours.body else None) == (theirs.json() if theirs.content else None), path
    for level in LEVELS:
        assert client.get(f"/{level}") == peer.get(f"/{level}")
    assert client.get("/statistics") == peer.get("/statistics")


def test_error_answers_equal_orthancs(both) -> None:
    peer, client = both
    instance = client.get("/instances")[0]
    requests = [
        ("GET", "/instances/nope", b"", {}),
        ("GET", "/instances/nope/tags", b"", {}),
        ("GET", "/instances/nope/metadata", b"", {}),
        ("GET", "/instances/nope/patient", b"", {}),
        ("GET", "/patients/nope/instances", b"", {}),
        ("GET", f"/series/{instance}", b"", {}),
        ("DELETE", "/instances/nope", b"", {}),
        ("GET", f"/instances/{instance}/metadata/Foo", b"", {}),
        ("GET", f"/instances/{instance}/metadata/CalledAET", b"", {}),
        ("PUT", f"/instances/{instance}/metadata/ReceptionDate", b"x", {}),
        ("PUT", f"/instances/{instance}/metadata/1023", b"x", {}),
        ("PUT", f"/instances/{instance}/metadata/65536", b"x", {}),
        ("PUT", f"/instances/{instance}/metadata/Foo", b"x", {}),
        ("PUT", "/instances/nope/metadata/3000", b"x", {}),
        ("DELETE", f"/instances/{instance}/metadata/3000", b"", {}),
        ("DELETE", f"/instances/{instance}/metadata/ReceptionDate", b"", {}),
        ("PUT", f"/instances/{instance}/metadata/3000", b"x", {}),
        ("GET", f"/instances/{instance}/metadata/3000", b"", {}),
        ("DELETE", f"/instances/{instance}/metadata/3000", b"", {}),
        ("POST", "/instances", b"hello", {}),
        ("POST", "/instances", b"", {}),
        ("POST", "/instances/", samples.sample_file("MR_truncated.dcm"), {}),
        ("POST", "/instances", samples.sample_file("priv_SQ.dcm"), {}),
        ("GET", "/patients", b"", {"limit": "1"}),
        ("GET", "/patients", b"", {"since": "1"}),
        ("GET", "/patients", b"", {"since": "a", "limit": "2"}),
        ("GET", "/tools/generate-uid", b"", {}),
        ("GET", "/tools/generate-uid", b"", {"level": "foo"}),
        ("GET", "/nothing/here", b"", {}),
        ("PUT", "/instances", b"", {}),
        ("POST", "/statistics", b"", {}),
    ]
    for method, path, body, query in requests:
        assert our_call(client, method, path, body, **query) == peer_call(peer, method, path, body, **query), \
            (method, path, query)


def test_system_has_orthancs_keys(orthanc_peer: OrthancPeer, client) -> None:
    ours, theirs = client.get("/system"), orthanc_peer.get("/system")
    assert ours.keys() == theirs.keys() | {"LuabrokerVersion"}  # ours, besides (docs/rest-deviations.md)
    # Version too: version-gated clients compare it with theirs, so it is the release we answer like.
    same = ["ApiVersion", "CheckRevisions", "DatabaseBackendPlugin", "DatabaseVersion", "IsHttpServerSecure",
            "StorageAreaPlugin", "Version"]
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
