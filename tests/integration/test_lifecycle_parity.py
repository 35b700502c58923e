"""The lifecycle events (issue 10), side by side with a real Orthanc 1.10.1: the same script, the same
operations, the same sequence of ``OnStoredInstance``, ``OnUpdated*``, ``OnStable*`` and ``OnDeleted*``
calls, and the same ``/changes`` (sequence numbers aside)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.factory import make_instances, to_bytes
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer
from tests.support.receivers import WebService

pytestmark = pytest.mark.skipif(ORTHANC_BINARY is None, reason="needs Orthanc (apt-get install orthanc)")

#: Each callback posts one line to the recorder: its name, its id, and what it was told.
RECORDER = """
local function record(...) HttpPost('{url}', table.concat({{...}}, ' ')) end
function OnStoredInstance(id, tags, metadata, origin) record('OnStoredInstance', id, origin.RequestOrigin) end
function OnStablePatient(id, tags, metadata)
  record('OnStablePatient', id, tags.PatientID, tostring(metadata.LastUpdate ~= nil))
end
function OnStableStudy(id, tags, metadata)
  record('OnStableStudy', id, tags.StudyInstanceUID, tostring(tags.PatientID), tostring(metadata.LastUpdate ~= nil))
end
function OnStableSeries(id, tags, metadata)
  record('OnStableSeries', id, tags.SeriesInstanceUID, tags.Modality, tostring(metadata.RemoteAET))
end
for _, level in ipairs({{'Patient', 'Study', 'Series', 'Instance'}}) do
  _G['OnDeleted' .. level] = function(id) record('OnDeleted' .. level, id) end
  _G['OnUpdated' .. level] = function(id) record('OnUpdated' .. level, id) end
end
"""


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def calls(service: WebService, path: str) -> list[str]:
    return [request.body.decode() for request in service.requests if request.path == path]


def scenario_files() -> tuple[list[bytes], bytes]:
    """Three instances of a study of two series and one of another patient; a late instance of the
    first series."""
    first = make_instances(3, series=2, patient_id="LIFE")
    late = make_instances(1, patient_id="LIFE")[0]
    late.StudyInstanceUID, late.SeriesInstanceUID = first[0].StudyInstanceUID, first[0].SeriesInstanceUID
    return [to_bytes(ds) for ds in first + make_instances(1, patient_id="OTHER")], to_bytes(late)


def run_scenario(client: httpx.Client, service: WebService, path: str, files: list[bytes], late: bytes) -> None:
    """Stores, a duplicate, metadata and attachment changes, stability, a late instance, deletions."""
    ids = [client.post("/instances", content=data).json() for data in files]
    client.post("/instances", content=files[0]).raise_for_status()  # AlreadyStored
    instance, series, study = ids[0]["ID"], ids[0]["ParentSeries"], ids[0]["ParentStudy"]
    client.put(f"/instances/{instance}/metadata/1024", content=b"x").raise_for_status()
    client.delete(f"/instances/{instance}/metadata/1024").raise_for_status()
    client.put(f"/series/{series}/attachments/1025", content=b"y").raise_for_status()

    def stable() -> bool:  # every level: a patient becomes stable after its studies
        return all(client.get(f"/studies/{i['ParentStudy']}").json()["IsStable"]
                   and client.get(f"/patients/{i['ParentPatient']}").json()["IsStable"] for i in ids)
    wait_until(stable)
    client.post("/instances", content=late).raise_for_status()
    wait_until(stable)
    client.delete(f"/instances/{ids[1]['ID']}").raise_for_status()
    client.delete(f"/studies/{study}").raise_for_status()
    wait_until(lambda: any(line.startswith("OnDeletedStudy") for line in calls(service, path)))


def test_the_same_operations_make_the_same_calls_and_changes(luabroker: Any, web_service: WebService) -> None:
    peer = OrthancPeer.create()
    (peer.workdir / "recorder.lua").write_text(RECORDER.format(url=f"{web_service.url}/orthanc"))
    peer.extra_config["LuaScripts"] = [str(peer.workdir / "recorder.lua")]
    peer.start()
    try:
        server = luabroker({"recorder.lua": RECORDER.format(url=f"{web_service.url}/luabroker")}, StableAge=1)
        files, late = scenario_files()
        run_scenario(peer.client, web_service, "/orthanc", files, late)
        run_scenario(server.http, web_service, "/luabroker", files, late)
        theirs, ours = calls(web_service, "/orthanc"), calls(web_service, "/luabroker")
        assert ours == theirs
        assert {line.split()[0] for line in ours} >= {"OnStoredInstance", "OnUpdatedInstance", "OnUpdatedSeries",
                                                       "OnStableSeries", "OnStableStudy", "OnStablePatient",
                                                       "OnDeletedInstance", "OnDeletedSeries", "OnDeletedStudy",
                                                       "OnDeletedPatient"}

        def changes(client: httpx.Client) -> list[tuple[str, str, str, str]]:
            answer = client.get("/changes", params={"limit": 1000}).json()
            assert answer["Done"] is True and answer["Last"] == answer["Changes"][-1]["Seq"]
            return [(c["ChangeType"], c["ResourceType"], c["ID"], c["Path"]) for c in answer["Changes"]]
        assert changes(server.http) == changes(peer.client)
    finally:
        peer.stop()
