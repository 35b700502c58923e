"""``PeerClient`` against a real Orthanc, with and without HTTP authentication, and against a local
service that shows what was sent."""
from __future__ import annotations

import pytest

from broker.config.network import HttpOptions, Peer
from broker.errors import ErrorCode, OrthancError
from broker.network import NetworkRegistry
from broker.peers import PeerClient, PeerError
from tests.support.factory import make_instances, to_bytes
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer
from tests.support.ports import free_port


@pytest.fixture
def clients():
    made: list[PeerClient] = []

    def make(peers: dict[str, Peer] | None = None, **options) -> PeerClient:
        made.append(PeerClient(NetworkRegistry(peers=peers or {}), HttpOptions(**options)))
        return made[-1]

    yield make
    for client in made:
        client.close()


ALICE = ("alice", "wonderland")


class SecuredOrthancPeer(OrthancPeer):
    """An Orthanc that requires HTTP Basic: the helper's own client (which polls ``/system`` until
    Orthanc answers 200) logs in as alice."""

    @property  # type: ignore[override]
    def client(self):
        return self.__dict__.get("_client")

    @client.setter
    def client(self, value) -> None:
        if value is not None:
            value.auth = ALICE
        self.__dict__["_client"] = value


@pytest.fixture(scope="module")
def secured_orthanc():
    if ORTHANC_BINARY is None:
        pytest.skip("Orthanc is not installed")
    peer = SecuredOrthancPeer.create(AuthenticationEnabled=True, RegisteredUsers=dict([ALICE])).start()
    try:
        yield peer
    finally:
        peer.stop()


def test_store_posts_the_file_to_the_peer(orthanc_peer, clients):
    orthanc_peer.clear()
    ds = make_instances(1)[0]
    client = clients({"orthanc": Peer.parse([orthanc_peer.url])})

    answer = client.store("orthanc", to_bytes(ds))

    assert answer["Status"] == "Success"
    assert orthanc_peer.get(f"/instances/{answer['ID']}")["MainDicomTags"]["SOPInstanceUID"] == ds.SOPInstanceUID
    assert client.system("orthanc")["DicomAet"] == orthanc_peer.aet


def test_store_sends_the_peers_credentials(secured_orthanc, clients):
    ds = make_instances(1)[0]
    client = clients({"good": Peer.parse([secured_orthanc.url, "alice", "wonderland"]),
                      "object": Peer.parse({"Url": secured_orthanc.url, "Username": "alice",
                                            "Password": "wonderland"}),
                      "anonymous": Peer.parse([secured_orthanc.url]),
                      "wrong": Peer.parse([secured_orthanc.url, "alice", "nope"])})

    assert client.store("good", to_bytes(ds))["Status"] == "Success"
    assert client.store("object", to_bytes(ds))["Status"] == "AlreadyStored"
    for name in ("anonymous", "wrong"):
        with pytest.raises(PeerError) as caught:
            client.store(name, to_bytes(ds))
        assert caught.value.status == 401 and caught.value.code is ErrorCode.NETWORK_PROTOCOL
    assert len(secured_orthanc.get("/instances")) == 1


def test_store_sends_the_peers_headers_with_their_case(web_service, clients):
    client = clients({"svc": Peer.parse({"Url": web_service.url + "/orthanc", "HttpHeaders": {"X-Api-Key": "k1"}})})
    with pytest.raises(PeerError, match="not JSON"):  # the service answers "ok POST"
        client.store("svc", b"DICM")
    seen = web_service.last("/orthanc/instances")
    assert seen.method == "POST" and seen.body == b"DICM"
    assert ("X-Api-Key", "k1") in seen.headers
    assert seen.header("Content-Type") == "application/dicom"


def test_a_peer_that_is_down_or_unknown(clients):
    client = clients({"down": Peer.parse([f"http://127.0.0.1:{free_port()}"])})
    with pytest.raises(PeerError) as caught:
        client.store("down", b"x")
    assert caught.value.status is None and "http://127.0.0.1" in caught.value.details
    with pytest.raises(OrthancError) as unknown:
        client.store("nope", b"x")
    assert unknown.value.code is ErrorCode.UNKNOWN_RESOURCE
