"""``DicomModalities`` and ``OrthancPeers`` in every form Orthanc accepts, and the errors it gives for
the rest; checked against a real Orthanc where it can answer (``PUT /modalities/x`` parses a body
exactly as the configuration file is parsed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.config import Config, ConfigError
from broker.config.network import DicomOptions, Modality, Peer
from broker.errors import ErrorCode, OrthancError
from broker.network import NetworkRegistry


def network(raw: dict, base_dir: str = "/etc/orthanc", aet: str = "ME"):
    """The network options of a configuration (``DicomAet`` set to ``aet``)."""
    return Config.from_json({"DicomAet": aet, **raw}, Path(base_dir)).network

MODALITY_FORMS = [
    ["AETA", "127.0.0.1", 1111],
    ["AETB", "host.example", 104, "GE"],
    ["AETC", "127.0.0.1", "4242"],  # a numeric string is a port too
    ["AETD", "127.0.0.1", 11112, "SyngoVia"],  # obsolete name, mapped as Orthanc does
    ["AETE", "127.0.0.1", 11112, "ClearCanvas"],
    {"AET": "OBJ", "Host": "10.0.0.1", "Port": 11112},
    {"AET": "OBJ", "Host": "h", "Port": "7", "Manufacturer": "Vitrea", "LocalAet": "LOCAL", "Timeout": 3,
     "AllowStore": False, "AllowEcho": False, "AllowTranscoding": False, "UseDicomTls": False},
    {"AET": "OBJ", "Host": "h", "Port": 7, "AllowStorageCommitment": False},
    {"AET": "", "Host": "h", "Port": 7},
]
BAD_MODALITIES = [
    (["A", "h"], ErrorCode.BAD_FILE_FORMAT),
    (["A", "h", 1, "GE", "x"], ErrorCode.BAD_FILE_FORMAT),
    ([1, "h", 1], ErrorCode.BAD_FILE_FORMAT),
    (["A", "h", 1.5], ErrorCode.BAD_FILE_FORMAT),
    (["A", "h", "x104"], ErrorCode.BAD_FILE_FORMAT),
    (["A", "h", 0], ErrorCode.PARAMETER_OUT_OF_RANGE),
    (["A", "h", 65535], ErrorCode.PARAMETER_OUT_OF_RANGE),
    (["A", "h", 1, "StoreScp"], ErrorCode.PARAMETER_OUT_OF_RANGE),
    (["A", "h", 1, "generic"], ErrorCode.PARAMETER_OUT_OF_RANGE),
    ({"aet": "A", "host": "h", "port": 7}, ErrorCode.BAD_FILE_FORMAT),
    ({"AET": "A", "Port": 7}, ErrorCode.BAD_FILE_FORMAT),
    ({"AET": "A", "Host": "h"}, ErrorCode.BAD_FILE_FORMAT),
    ({"AET": "A", "Host": "h", "Port": 7, "Timeout": -1}, ErrorCode.BAD_FILE_FORMAT),
    ({"AET": "A", "Host": "h", "Port": 7, "AllowEcho": "yes"}, ErrorCode.BAD_FILE_FORMAT),
    (5, ErrorCode.BAD_FILE_FORMAT),
]
PEER_FORMS = [
    ["http://127.0.0.1:8042"],  # a trailing slash is added
    ["https://peer.example/orthanc/", "user", "secret"],
    ["127.0.0.1:8042"],  # no scheme: accepted as is
    ["http://h:1/", "user", ""],
    {"Url": "http://h:2"},
    {"URL": "http://h:2"},
    {"Url": "http://h:2", "Username": "u", "Password": "p", "HttpHeaders": {"X-Token": "t", "a": "b"},
     "Timeout": 5, "Pkcs11": False, "Site": "north", "Primary": True, "Rank": 3},
]
BAD_PEERS = [
    (["http://h:1/", "u"], ErrorCode.BAD_FILE_FORMAT),
    (["http://h:1/", "", "p"], ErrorCode.BAD_FILE_FORMAT),
    (["ftp://h:1"], ErrorCode.BAD_FILE_FORMAT),
    ([""], ErrorCode.BAD_FILE_FORMAT),
    ({}, ErrorCode.BAD_FILE_FORMAT),
    ({"Url": "http://h:2", "HttpHeaders": {"A": 1}}, ErrorCode.BAD_FILE_FORMAT),
    ({"Url": "http://h:2", "Extra": 1.5}, ErrorCode.BAD_FILE_FORMAT),
    ({"Url": "http://h:2", "Timeout": "5"}, ErrorCode.BAD_FILE_FORMAT),
]


class TestModalityForms:
    def test_array_forms(self):
        assert Modality.parse(["AETA", "127.0.0.1", 1111]) == Modality("AETA", "127.0.0.1", 1111)
        assert Modality.parse(["AETB", "h", 104, "GE"]).manufacturer == "GE"
        assert Modality.parse(["AETC", "h", " 4242 "]).port == 4242

    def test_object_form_reads_every_option(self):
        modality = Modality.parse(MODALITY_FORMS[6])
        assert (modality.aet, modality.host, modality.port, modality.manufacturer) == ("OBJ", "h", 7, "Vitrea")
        assert (modality.local_aet, modality.timeout) == ("LOCAL", 3)
        assert not modality.allow_store and not modality.allow_echo and not modality.allow_transcoding
        assert modality.allow_find and modality.allow_move

    def test_storage_commitment_sets_both_permissions(self):
        modality = Modality.parse(MODALITY_FORMS[7])
        assert not modality.allow_n_action and not modality.allow_event_report

    @pytest.mark.parametrize("value, code", BAD_MODALITIES)
    def test_bad_forms_give_orthancs_error(self, value, code):
        with pytest.raises(OrthancError) as caught:
            Modality.parse(value)
        assert caught.value.code is code


class TestPeerForms:
    def test_array_forms(self):
        assert Peer.parse(["http://127.0.0.1:8042"]) == Peer("http://127.0.0.1:8042/")
        peer = Peer.parse(["https://p/", "user", "secret"])
        assert (peer.username, peer.password, peer.auth) == ("user", "secret", ("user", "secret"))

    def test_object_form_keeps_headers_and_user_properties(self):
        peer = Peer.parse(PEER_FORMS[6])
        assert peer.headers == {"X-Token": "t", "a": "b"}
        assert peer.timeout == 5 and peer.auth == ("u", "p")
        assert peer.public_json() == {"Url": "http://h:2/", "Username": "u", "Password": None, "Pkcs11": False,
                                      "Timeout": 5, "HttpHeaders": ["X-Token", "a"], "Primary": "1",
                                      "Rank": "3", "Site": "north"}

    def test_credentials_need_both_parts_to_be_sent(self):
        assert Peer.parse(["http://h/", "user", ""]).auth is None

    @pytest.mark.parametrize("value, code", BAD_PEERS)
    def test_bad_forms_give_orthancs_error(self, value, code):
        with pytest.raises(OrthancError) as caught:
            Peer.parse(value)
        assert caught.value.code is code


class TestRegistry:
    def test_from_config_reads_both_tables(self):
        options = network({"DicomModalities": {"b": ["B", "h", 1], "a": {"AET": "A", "Host": "h", "Port": 2}},
                           "OrthancPeers": {"p": ["http://h/"]}})
        registry = NetworkRegistry(options.modalities, options.peers)
        assert list(registry.modalities()) == ["a", "b"]
        assert registry.modality("a").aet == "A"
        assert registry.peer("p").url == "http://h/"

    def test_a_bad_entry_stops_start_up_naming_it(self):
        with pytest.raises(ConfigError, match="'DicomModalities' has a bad entry 'x'.*range"):
            network({"DicomModalities": {"x": ["A", "h", 0]}})
        with pytest.raises(ConfigError, match="'OrthancPeers'.*'p'"):
            network({"OrthancPeers": {"p": ["ftp://h"]}})
        with pytest.raises(ConfigError, match="expected an object"):
            network({"DicomModalities": [["A", "h", 1]]})

    def test_unknown_names_give_orthancs_errors(self):
        registry = NetworkRegistry()
        with pytest.raises(OrthancError) as modality:
            registry.modality("nope")
        assert modality.value.code is ErrorCode.INEXISTENT_ITEM
        assert modality.value.details == "No modality with symbolic name: nope"
        with pytest.raises(OrthancError) as peer:
            registry.peer("nope")
        assert peer.value.code is ErrorCode.UNKNOWN_RESOURCE
        with pytest.raises(OrthancError, match="Unknown DICOM modality with symbolic name: nope"):
            registry.delete_modality("nope")
        with pytest.raises(OrthancError, match="Unknown Orthanc peer: nope"):
            registry.delete_peer("nope")

    def test_put_and_delete_at_run_time(self):
        registry = NetworkRegistry()
        registry.put_modality("x", Modality("X", "h", 1))
        registry.put_peer("p", Peer("http://h/"))
        assert registry.has_modality("x") and registry.has_peer("p")
        registry.delete_modality("x")
        registry.delete_peer("p")
        assert not registry.modalities() and not registry.peers()


class TestOptions:
    def test_defaults_are_orthancs(self):
        options = network({})
        assert options.dicom == DicomOptions("ME", 5, 10)
        assert (options.dicom.transcode, options.strict_aet_comparison, options.check_modality_host) == \
            (True, False, False)
        http = options.http
        assert (http.timeout, http.proxy, http.verify_peers, http.ca_certificates) == (60, "", True, "")
        assert http.lua_allowed_hosts is None

    def test_values_and_rules(self):
        options = network({"DicomAssociationCloseDelay": 0, "HttpTimeout": 0, "HttpProxy": "proxy:3128",
                           "HttpsVerifyPeers": False, "HttpsCACertificates": "ca.pem",
                           "LuaHttpAllowedHosts": ["*.Example.org"], "TranscodeDicomProtocol": False,
                           "StrictAetComparison": True, "DicomCheckModalityHost": True})
        assert options.dicom.association_close_delay == 0
        assert (options.dicom.transcode, options.strict_aet_comparison, options.check_modality_host) == \
            (False, True, True)
        http = options.http
        assert http.effective_timeout() == 60  # <= 0 means 60, as Orthanc
        assert http.proxy_url() == "http://proxy:3128"
        assert http.ca_certificates == "/etc/orthanc/ca.pem"
        assert http.ssl_context() is False
        assert http.lua_allowed_hosts == ("*.example.org",)

    @pytest.mark.parametrize("raw", [
        {"DicomAssociationCloseDelay": -1}, {"DicomScuTimeout": "10"}, {"HttpTimeout": "x"},
        {"HttpsVerifyPeers": "yes"}, {"LuaHttpAllowedHosts": "localhost"}, {"LuaHttpAllowedHosts": [""]},
        {"StrictAetComparison": 1}, {"DicomCheckModalityHost": "true"}, {"TranscodeDicomProtocol": None},
    ])
    def test_bad_values_are_refused(self, raw):
        with pytest.raises(ConfigError, match=list(raw)[0]):
            network(raw, "/")


class TestSameAnswersAsOrthanc:
    """Each form PUT to a real Orthanc and parsed here: same acceptance, same error code, same JSON."""

    def _compare(self, orthanc_peer, kind: str, value, ours):
        answer = orthanc_peer.client.put(f"/{kind}/parity", content=json.dumps(value))
        try:
            try:
                parsed = ours(value)
            except OrthancError as exc:
                assert answer.status_code == exc.http_status, (value, answer.text)
                assert answer.json()["OrthancStatus"] == int(exc.code), value
                return
            assert answer.status_code == 200, (value, answer.text)
            theirs = orthanc_peer.get(f"/{kind}/parity/configuration")
            assert (parsed.to_json() if kind == "modalities" else parsed.public_json()) == theirs
        finally:
            orthanc_peer.client.delete(f"/{kind}/parity")

    def test_modalities(self, orthanc_peer):
        for value in MODALITY_FORMS + [bad for bad, _ in BAD_MODALITIES]:
            self._compare(orthanc_peer, "modalities", value, Modality.parse)

    def test_peers(self, orthanc_peer):
        for value in PEER_FORMS + [bad for bad, _ in BAD_PEERS]:
            self._compare(orthanc_peer, "peers", value, Peer.parse)
