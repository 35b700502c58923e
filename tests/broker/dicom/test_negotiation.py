"""What the DICOM server accepts: ``AcceptedTransferSyntaxes`` and ``UnknownSopClassAccepted``, their
REST endpoints compared with a real Orthanc, and the C-STORE SCP honouring them for DCMTK's storescu
and pynetdicom."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from broker.config import Config, ConfigError
from broker.core.transfer_syntaxes import ORTHANC_TRANSFER_SYNTAXES
from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor
from tests.broker.rest.test_orthanc_parity import peer_call
from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer
from tests.support.receivers import DCMTK_ENV, HAS_DCMTK

JPEG_FILE = samples.TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm"  # JPEG baseline
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.8.498.4242"


@pytest.fixture
def peer(orthanc_peer: OrthancPeer) -> Iterator[OrthancPeer]:
    yield orthanc_peer
    orthanc_peer.client.put("/tools/accepted-transfer-syntaxes", content=b'"1.2.840.10008.1.*"').raise_for_status()
    orthanc_peer.client.put("/tools/unknown-sop-class-accepted", content=b"0").raise_for_status()


def test_the_settings_are_answered_as_orthanc(peer: OrthancPeer, luabroker) -> None:
    ours = luabroker().http

    def both(method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
        headers = {"Content-Type": content_type}
        answers = [client.request(method, path, content=body, headers=headers) for client in (ours, peer.client)]
        statuses = [a.status_code for a in answers]
        assert statuses[0] == statuses[1], (path, body, [a.text for a in answers])
        if statuses[0] != 200:
            assert peer_call(peer, method, path, body)[2] == answers[0].json()["OrthancStatus"]
        else:
            assert answers[0].content.strip() == answers[1].content.strip(), (path, body)
        return answers[0].content

    assert both("GET", "/tools/accepted-transfer-syntaxes")
    for body, content_type in [(b'["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]', "application/json"),
                               (b"*", "text/plain"), (b'"1.2.840.10008.1.2.4.9?"', "application/json"),
                               (b"nothing", "text/plain"), (b"[1, 2]", "application/json"),
                               (b'{"a": 1}', "application/json"), (b"[]", "application/json"),
                               (b"1.2.840.10008.1.*", "text/plain"), (b" *", "text/plain"), (b"true", "text/plain"),
                               (b'["*.1.2.1", "*.4.5?"] trailing', "application/json")]:
        both("PUT", "/tools/accepted-transfer-syntaxes", body, content_type)
        both("GET", "/tools/accepted-transfer-syntaxes")
    for body in (b"1", b"0", b"true", b"false", b"nope", b"", b"2", b" 1 ", b"True"):
        both("PUT", "/tools/unknown-sop-class-accepted", body, "text/plain")
        both("GET", "/tools/unknown-sop-class-accepted")


def test_the_defaults_are_orthancs(peer: OrthancPeer) -> None:
    config = Config()
    assert list(config.accepted_transfer_syntaxes) == peer.get("/tools/accepted-transfer-syntaxes")
    assert len(ORTHANC_TRANSFER_SYNTAXES) == 42
    assert peer.client.get("/tools/unknown-sop-class-accepted").text.strip() == "0"
    assert config.unknown_sop_class_accepted is False


def test_the_configuration_takes_patterns() -> None:
    config = Config.from_json({"AcceptedTransferSyntaxes": ["1.2.840.10008.1.2", "*.1.2.?"]}, Path("/"))
    assert config.accepted_transfer_syntaxes == ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                                                 "1.2.840.10008.1.2.5")
    assert Config.from_json({"AcceptedTransferSyntaxes": "*.4.50"}, Path("/")).accepted_transfer_syntaxes == (
        "1.2.840.10008.1.2.4.50",)
    with pytest.raises(ConfigError, match="AcceptedTransferSyntaxes"):
        Config.from_json({"AcceptedTransferSyntaxes": [4]}, Path("/"))


@pytest.mark.skipif(not HAS_DCMTK, reason="needs DCMTK")
def test_storescu_of_a_jpeg_file_needs_its_transfer_syntax_accepted(luabroker) -> None:
    server = luabroker(AcceptedTransferSyntaxes=[ImplicitVRLittleEndian, ExplicitVRLittleEndian])

    def storescu() -> subprocess.CompletedProcess:
        command = ["storescu", "-xy", "-aec", server.aet, "127.0.0.1", str(server.dicom_port), str(JPEG_FILE)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=DCMTK_ENV)

    refused = storescu()
    assert "Store SCU Failed" in refused.stderr, refused  # no context for the file's transfer syntax
    assert server.http.get("/instances").json() == []
    assert len(server.http.put("/tools/accepted-transfer-syntaxes", content=b"*").json()) == 42
    accepted = storescu()
    assert accepted.returncode == 0, accepted.stderr
    assert len(server.http.get("/instances").json()) == 1


def send_private_sop_class(port: int, aet: str) -> int | None:
    """C-STORE of an instance of a SOP class nobody knows; the status, None when the context was refused."""
    ds = samples.minimal(SOPClassUID=PRIVATE_SOP_CLASS)
    samples.encode(ds)
    ae = AE(ae_title="PRIVATESCU")
    ae.add_requested_context(PRIVATE_SOP_CLASS, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, evt_handlers=NODELAY_HANDLERS)
    if not assoc.is_established:  # pynetdicom aborts when no context is accepted
        return None
    try:
        pause_reactor(assoc)  # else, on a loaded machine, pynetdicom can lose the response
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_an_unknown_sop_class_is_stored_only_when_accepted(luabroker) -> None:
    server = luabroker()
    assert send_private_sop_class(server.dicom_port, server.aet) is None
    server.http.put("/tools/unknown-sop-class-accepted", content=b"true").raise_for_status()
    assert send_private_sop_class(server.dicom_port, server.aet) == 0
    [instance] = server.http.get("/instances").json()
    assert server.http.get(f"/instances/{instance}/metadata/SopClassUid").text == PRIVATE_SOP_CLASS
    server.http.put("/tools/unknown-sop-class-accepted", content=b"0").raise_for_status()
    assert send_private_sop_class(server.dicom_port, server.aet) is None


def test_the_configuration_accepts_unknown_sop_classes(luabroker) -> None:
    server = luabroker(UnknownSopClassAccepted=True)
    assert send_private_sop_class(server.dicom_port, server.aet) == 0


def test_the_preferred_syntax_of_a_context_is_orthancs(peer: OrthancPeer, luabroker) -> None:
    """When a storage context proposes several accepted syntaxes, the one chosen is Orthanc's choice:
    Explicit, then Implicit VR Little Endian, whatever the proposal's order."""
    ours = luabroker()
    proposals = [[ImplicitVRLittleEndian, "1.2.840.10008.1.2.2", ExplicitVRLittleEndian],
                 ["1.2.840.10008.1.2.2", ImplicitVRLittleEndian], ["1.2.840.10008.1.2.4.50", ImplicitVRLittleEndian],
                 ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.50"]]

    def chosen(port: int, aet: str) -> list[str]:
        answers = []
        for proposal in proposals:
            ae = AE(ae_title="PROPOSER")
            ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", proposal)
            assoc = ae.associate("127.0.0.1", port, ae_title=aet, evt_handlers=NODELAY_HANDLERS)
            answers.append(str(assoc.accepted_contexts[0].transfer_syntax[0]))
            assoc.release()
        return answers

    assert chosen(ours.dicom_port, ours.aet) == chosen(peer.dicom_port, peer.aet) == \
        [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ImplicitVRLittleEndian, "1.2.840.10008.1.2.4.50"]
