"""``DefaultEncoding`` and ``/tools/default-encoding``, side by side with a real Orthanc: the same file
without a Specific Character Set reads the same under each default encoding."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from broker.config import Config, ConfigError
from broker.core.encodings import ENCODINGS
from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

from .test_orthanc_parity import our_call, peer_call

# The words of Orthanc's issue 32, and others, in a file without Specific Character Set.
WORDS = {"cp1251": "Рентгенография", "utf-8": "Рентгенография", "iso8859_5": "Рентгенография",
         "iso8859_7": "Ακτινογραφία"}


def without_charset(text: str, codec: str) -> bytes:
    ds = samples.minimal(patient_id="ENC")
    raw = text.encode(codec)
    raw += b" " * (len(raw) % 2)
    ds[0x0008103E] = RawDataElement(Tag(0x0008103E), "LO", len(raw), raw, 0, False, True)
    return samples.encode(ds)


@pytest.fixture
def peer(orthanc_peer: OrthancPeer) -> Iterator[OrthancPeer]:
    orthanc_peer.clear()
    yield orthanc_peer
    orthanc_peer.client.put("/tools/default-encoding", content=b"Latin1").raise_for_status()
    orthanc_peer.clear()


def test_every_encoding_name_is_answered_as_orthanc(peer: OrthancPeer, client) -> None:
    assert client.get("/tools/default-encoding") == peer.client.get("/tools/default-encoding").content == b"Latin1"
    for name in [*ENCODINGS, "nope", "latin1", ""]:
        assert our_call(client, "PUT", "/tools/default-encoding", name.encode()) == \
            peer_call(peer, "PUT", "/tools/default-encoding", name.encode()), name
        assert client.get("/tools/default-encoding") == peer.client.get("/tools/default-encoding").content


@pytest.mark.parametrize("name, codec", [("Windows1251", "cp1251"), ("Latin1", "cp1251"), ("Utf8", "utf-8"),
                                         ("Cyrillic", "iso8859_5"), ("Greek", "iso8859_7")])
def test_a_file_without_charset_reads_as_in_orthanc(peer: OrthancPeer, client, name: str, codec: str) -> None:
    assert client.call("PUT", "/tools/default-encoding", name.encode()).status == 200
    assert peer_call(peer, "PUT", "/tools/default-encoding", name.encode())[0] == 200
    data = without_charset(WORDS[codec], codec)
    instance = client.post("/instances", data)["ID"]
    assert peer.upload(data)["ID"] == instance
    ours = client.get(f"/instances/{instance}/simplified-tags")
    assert ours == peer.get(f"/instances/{instance}/simplified-tags")
    assert (ours["SeriesDescription"] == WORDS[codec]) == (name != "Latin1")
    series = client.get(f"/instances/{instance}/series")["MainDicomTags"]
    assert series == peer.get(f"/instances/{instance}/series")["MainDicomTags"]


def test_the_configuration_names_an_encoding() -> None:
    assert Config.from_json({"DefaultEncoding": "Utf8"}, Config().base_dir).default_encoding is ENCODINGS["Utf8"]
    assert Config.from_json({"DefaultEncoding": "latin2"}, Config().base_dir).default_encoding.name == "Latin2"
    with pytest.raises(ConfigError, match="DefaultEncoding"):
        Config.from_json({"DefaultEncoding": "utf-8"}, Config().base_dir)


def test_iso_2022_escape_sequences_are_decoded_as_in_orthanc(peer: OrthancPeer, client) -> None:
    """Japanese (ISO 2022 IR 87) values are 7-bit, escape sequences included: they still need decoding."""
    ds = samples.minimal(patient_id="JIS")
    raw = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"
    raw += b" " * (len(raw) % 2)
    ds[0x00080005] = RawDataElement(Tag(0x00080005), "CS", 16, b"\\ISO 2022 IR 87", 0, False, True)
    ds[0x00100010] = RawDataElement(Tag(0x00100010), "PN", len(raw), raw, 0, False, True)
    data = samples.encode(ds)
    instance = client.post("/instances", data)["ID"]
    assert peer.upload(data)["ID"] == instance
    ours = client.get(f"/instances/{instance}/simplified-tags")
    assert ours == peer.get(f"/instances/{instance}/simplified-tags")
    assert ours["PatientName"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert client.get(f"/patients/{client.get('/patients')[0]}")["MainDicomTags"]["PatientName"] == ours["PatientName"]
