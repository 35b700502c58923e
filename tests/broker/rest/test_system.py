"""``/system``, ``/statistics`` and ``/tools/generate-uid``."""
from __future__ import annotations

import re
import uuid

from tests.support import dicom_samples as samples


def test_system_answers_orthancs_keys_with_our_identity(client) -> None:
    system = client.get("/system")
    assert system == {"ApiVersion": 16, "CheckRevisions": False, "DatabaseBackendPlugin": None,
                      "DatabaseVersion": 6, "DicomAet": "LUABROKER", "DicomPort": 4242, "HttpPort": 8042,
                      "IsHttpServerSecure": False, "Name": "luabroker-test", "PluginsEnabled": False,
                      "StorageAreaPlugin": None, "Version": "1.10.1",
                      "LuabrokerVersion": system["LuabrokerVersion"]}
    assert re.match(r"^\d+\.\d+", system["LuabrokerVersion"])


def test_statistics_count_and_size(client) -> None:
    data = samples.sample_file("CT_small.dcm")
    client.post("/instances", data)
    assert client.get("/statistics") == {
        "CountInstances": 1, "CountPatients": 1, "CountSeries": 1, "CountStudies": 1,
        "TotalDiskSize": str(len(data)), "TotalDiskSizeMB": 0,
        "TotalUncompressedSize": str(len(data)), "TotalUncompressedSizeMB": 0}


def test_generate_uid_per_level(client) -> None:
    uid = client.get("/tools/generate-uid", level="study").decode()
    assert re.match(r"^[0-9]+(\.[0-9]+)+$", uid) and len(uid) <= 64
    assert client.get("/tools/generate-uid", level="series") != client.get("/tools/generate-uid", level="series")
    uuid.UUID(client.get("/tools/generate-uid", level="patient").decode())
    assert client.call("GET", "/tools/generate-uid").status == 404
    assert client.call("GET", "/tools/generate-uid", level="foo").kind == "bare"



def test_json_and_error_bodies_end_as_orthancs(orthanc_peer, luabroker) -> None:
    """A JSON answer ends with its closing bracket and an error document with a newline, byte for
    byte as Orthanc's (a script comparing ``RestApiGet``'s string sees the same)."""
    orthanc_peer.clear()
    server = luabroker()
    data = samples.sample_file("CT_small.dcm")
    assert server.http.post("/instances", content=data).json() == orthanc_peer.upload(data)
    for method, path, body in (("GET", "/patients", None), ("GET", "/studies", None),
                               ("POST", "/tools/find", b'{"Level": "Series", "Query": {}}')):
        ours = server.http.request(method, path, content=body)
        theirs = orthanc_peer.client.request(method, path, content=body)
        assert ours.status_code == theirs.status_code == 200 and ours.content == theirs.content, path
    bad = b'{"Level": "Nope", "Query": {}}'
    ours, theirs = server.http.post("/tools/find", content=bad), orthanc_peer.client.post("/tools/find", content=bad)
    assert ours.status_code == theirs.status_code == 400
    assert ours.content.endswith(b"}\n") and theirs.content.endswith(b"}\n")
