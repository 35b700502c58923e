"""``POST /instances/{id}/export`` compared with a real Orthanc, whose Debian build has Orthanc
1.12's ``RestApiWriteToFileSystemEnabled`` (backported against CVE-2023-33466): off by default, an
empty 403; on, the files written, the answers and the errors."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from broker.config import Config
from broker.core.origin import Origin
from broker.core.store import Store
from broker.errors import BareHttpStatus
from broker.rest import instances, resources
from broker.rest.api import RestApi
from broker.rest.types import RestRequest
from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer

from .conftest import Client
from .test_orthanc_parity import our_call, peer_call

ENABLED = {"RestApiWriteToFileSystemEnabled": True}


@pytest.fixture
def writing_client(store: Store) -> Client:
    config = Config.from_json(ENABLED, Path("/etc/luabroker"))
    return Client(RestApi(SimpleNamespace(store=store, config=config),  # type: ignore[arg-type]
                          [resources.routes, instances.routes]))


@pytest.fixture(scope="module")
def writing_peer() -> Iterator[OrthancPeer]:
    if ORTHANC_BINARY is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc); comparison tests need it")
    peer = OrthancPeer.create(**ENABLED).start()
    try:
        yield peer
    finally:
        peer.stop()


def test_export_is_off_by_default_as_orthanc(orthanc_peer: OrthancPeer, client, tmp_path: Path) -> None:
    peer = orthanc_peer
    peer.clear()
    assert Config().rest_api_write_to_file_system_enabled is False
    data = samples.sample_file("CT_small.dcm")
    instance = client.post("/instances", data)["ID"]
    assert peer.upload(data)["ID"] == instance
    target = str(tmp_path / "out.dcm").encode()
    for path in (f"/instances/{instance}/export", "/instances/nope/export"):
        assert our_call(client, "POST", path, target) == peer_call(peer, "POST", path, target) == (403, "bare", None)
    assert not (tmp_path / "out.dcm").exists()


def test_export_writes_the_file_as_orthanc(writing_peer: OrthancPeer, writing_client: Client, tmp_path: Path) -> None:
    peer, client = writing_peer, writing_client
    data = samples.sample_file("CT_small.dcm")
    instance = client.post("/instances", data)["ID"]
    assert peer.upload(data)["ID"] == instance
    path = f"/instances/{instance}/export"
    ours, theirs = tmp_path / "ours.dcm", tmp_path / "theirs.dcm"
    ours.write_bytes(b"an older file, overwritten")
    theirs.write_bytes(b"an older file, overwritten")
    answer, expected = client.call("POST", path, str(ours).encode()), peer.client.post(path, content=str(theirs))
    orthancs = (expected.status_code, expected.content, expected.headers["content-type"])
    assert (answer.status, answer.body, answer.content_type) == orthancs == (200, b"{}", "application/json")
    assert ours.read_bytes() == client.get(f"/instances/{instance}/file") == theirs.read_bytes() == data
    for target in (str(tmp_path / "missing" / "x.dcm"), str(tmp_path), ""):
        assert our_call(client, "POST", path, target.encode()) == peer_call(peer, "POST", path, target.encode())
    assert our_call(client, "POST", path, b"") == (500, "error", 14)
    unknown = "/instances/nope/export"
    assert our_call(client, "POST", unknown, str(ours).encode()) == peer_call(peer, "POST", unknown, str(ours).encode())


def test_scripts_may_not_export(writing_client: Client, tmp_path: Path) -> None:
    """Even when it is on: a script's code is not trusted, and the file would be written by the server."""
    instance = writing_client.post("/instances", samples.sample_file("CT_small.dcm"))["ID"]
    target = tmp_path / "out.dcm"
    request = RestRequest("POST", f"/instances/{instance}/export", body=str(target).encode(), origin=Origin.lua())
    with pytest.raises(BareHttpStatus) as refused:
        writing_client.api.handle(request)
    assert refused.value.http_status == 403
    assert not target.exists()
