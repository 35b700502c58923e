"""``/modalities`` and ``/peers`` over HTTP on the real server: configuration, run-time changes, C-ECHO
to a DCMTK storescp and to a port where nothing listens, with Orthanc's answers."""
from __future__ import annotations

import json

from tests.support.ports import free_port


def test_modalities_from_the_configuration(luabroker):
    server = luabroker(DicomModalities={"b": ["B", "127.0.0.1", 104], "a": {"AET": "A", "Host": "h", "Port": 11112,
                                                                             "LocalAet": "ME"}})
    http = server.http
    assert http.get("/modalities").json() == ["a", "b"]
    expanded = http.get("/modalities", params={"expand": ""}).json()
    assert expanded["a"]["LocalAet"] == "ME" and expanded["b"]["Port"] == 104
    assert expanded["b"] == http.get("/modalities/b/configuration").json()
    assert {"configuration", "echo"} <= set(http.get("/modalities/a").json())
    unknown = http.get("/modalities/nope")
    assert unknown.status_code == 404 and unknown.content == b""
    assert http.get("/modalities/nope/configuration").json()["OrthancStatus"] == 7


def test_put_and_delete_a_modality(luabroker):
    http = luabroker().http
    answer = http.put("/modalities/new", content=json.dumps(["NEW", "127.0.0.1", "4242", "GE"]))
    assert answer.status_code == 200 and answer.content == b""
    assert http.get("/modalities/new/configuration").json()["Manufacturer"] == "GE"
    bad = http.put("/modalities/new", content=json.dumps(["NEW", "127.0.0.1", 0]))
    assert bad.status_code == 400 and bad.json()["OrthancStatus"] == 3
    assert "range [1..65534]" in bad.json()["Details"]
    assert http.put("/modalities/new", content=b"not json").json()["OrthancStatus"] == 15
    assert http.delete("/modalities/new").status_code == 200
    missing = http.delete("/modalities/new")
    assert missing.status_code == 404 and missing.json()["OrthancStatus"] == 7
    assert missing.json()["Details"] == "Unknown DICOM modality with symbolic name: new"
    assert http.get("/modalities").json() == []


def test_echo_to_storescp_and_to_a_port_where_nothing_listens(luabroker, storescp):
    receiver = storescp("+xa")
    server = luabroker(DicomModalities={"scp": [receiver.aet, "127.0.0.1", receiver.port],
                                        "down": ["DOWN", "127.0.0.1", free_port()]})

    ok = server.http.post("/modalities/scp/echo", content=b"")
    assert ok.status_code == 200 and ok.json() == {}
    assert server.http.post("/modalities/scp/echo", content=json.dumps({"Timeout": 3})).json() == {}
    assert receiver.associations() == 2

    down = server.http.post("/modalities/down/echo", content=b"")
    assert down.status_code == 500
    error = down.json()
    assert (error["OrthancStatus"], error["Message"]) == (9, "Error in the network protocol")
    assert 'AET "DOWN"' in error["Details"] and "Connection refused" in error["Details"]

    unknown = server.http.post("/modalities/nope/echo", content=b"")
    assert unknown.status_code == 404 and unknown.json()["Details"] == "No modality with symbolic name: nope"


def test_echo_calls_with_dicom_aet_or_the_modalitys_local_aet(luabroker, recording_scp):
    scp = recording_scp()
    server = luabroker(DicomModalities={"plain": [scp.aet, "127.0.0.1", scp.port],
                                        "own": {"AET": scp.aet, "Host": "127.0.0.1", "Port": scp.port,
                                                "LocalAet": "OWNAET"}})
    assert server.http.post("/modalities/plain/echo").status_code == 200
    assert server.http.post("/modalities/own/echo").status_code == 200
    assert scp.requested == [server.aet, "OWNAET"]


def test_peers(luabroker, orthanc_peer):
    server = luabroker(OrthancPeers={"orthanc": [orthanc_peer.url],
                                     "secret": {"Url": "http://127.0.0.1:1", "Username": "u", "Password": "p",
                                                "HttpHeaders": {"X-Token": "t"}}})
    http = server.http
    assert http.get("/peers").json() == ["orthanc", "secret"]
    assert http.get("/peers", params={"expand": ""}).json()["secret"] == {
        "HttpHeaders": ["X-Token"], "Password": None, "Pkcs11": False, "Timeout": 0, "Url": "http://127.0.0.1:1/",
        "Username": "u"}
    assert {"configuration", "system"} <= set(http.get("/peers/orthanc").json())
    assert http.get("/peers/orthanc/system").json()["DicomAet"] == orthanc_peer.aet
    down = http.get("/peers/secret/system")
    assert down.status_code == 500 and down.json()["OrthancStatus"] == 9

    assert http.put("/peers/new", content=json.dumps(["http://127.0.0.1:9"])).status_code == 200
    assert http.get("/peers/new/configuration").json()["Url"] == "http://127.0.0.1:9/"
    assert http.delete("/peers/new").status_code == 200
    missing = http.delete("/peers/new")
    assert missing.status_code == 404 and missing.json()["Details"] == "Unknown Orthanc peer: new"
    assert http.get("/peers/new").status_code == 404
    assert http.get("/peers/new/configuration").json()["OrthancStatus"] == 17
    assert http.get("/peers/new/system").json()["Details"] == "No peer with symbolic name: new"
