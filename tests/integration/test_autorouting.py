"""The auto-routing scripts of the seed (``lua.rst``, "Auto-routing of DICOM images") and the REST
variant ``AutoroutingModification``, against real receivers: a DCMTK ``storescp`` and a real Orthanc,
as modality and as peer. The receiving side is checked for the exact instances and tag changes; the
source becomes empty where the script deletes. Then the calling AET of ``SendToModality(id, m, aet)``,
and a receiver that is down."""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.support.factory import make_instances, to_bytes
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer
from tests.support.ports import free_port
from tests.support.receivers import StoreScpProcess
from tests.support.waiting import wait_until

ONE_LINER = """
function OnStoredInstance(instanceId, tags, metadata)
Delete(SendToModality(instanceId, 'sample'))
end
"""

CONDITIONAL = """
function OnStoredInstance(instanceId, tags, metadata)
-- Extract the value of the "PatientName" DICOM tag
local patientName = string.lower(tags['PatientName'])

if string.find(patientName, 'david') ~= nil then
-- Only route patients whose name contains "David"
Delete(SendToModality(instanceId, 'sample'))

else
-- Delete the patients that are not called "David"
Delete(instanceId)
end
end
"""

MODIFICATION = """
function OnStoredInstance(instanceId, tags, metadata)
-- Ignore the instances that result from a modification to avoid
-- infinite loops
if (metadata['ModifiedFrom'] == nil and
metadata['AnonymizedFrom'] == nil) then

-- The tags to be replaced
local replace = {}
replace['StationName'] = 'My Medical Device'

-- The tags to be removed
local remove = { 'MilitaryRank' }

-- Modify the instance, send it, then delete the modified instance
Delete(SendToModality(ModifyInstance(instanceId, replace, remove, true), 'sample'))

-- Delete the original instance
Delete(instanceId)
end
end
"""

REST_MODIFICATION = """
function OnStoredInstance(instanceId, tags, metadata, origin)
-- Ignore the instances that result from the present Lua script to
-- avoid infinite loops
if origin['RequestOrigin'] ~= 'Lua' then

-- The tags to be replaced
local replace = {}
replace['StationName'] = 'My Medical Device'
replace['0031-1020'] = 'Some private tag'

-- The tags to be removed
local remove = { 'MilitaryRank' }

-- Modify the instance
local command = {}
command['Replace'] = replace
command['Remove'] = remove
local modifiedFile = RestApiPost('/instances/' .. instanceId .. '/modify', DumpJson(command, true))

-- Upload the modified instance to the Orthanc database so that
-- it can be sent by Orthanc to other modalities
local modifiedId = ParseJson(RestApiPost('/instances/', modifiedFile)) ['ID']

-- Send the modified instance to another modality
RestApiPost('/modalities/sample/store', modifiedId)

-- Delete the original and the modified instances
RestApiDelete('/instances/' .. instanceId)
RestApiDelete('/instances/' .. modifiedId)
end
end
"""

JOBS = {"LuaTrailingTimeout": 0.3, "RetryAttempts": 3, "RetryDelay": 0.2}
needs_orthanc = pytest.mark.skipif(ORTHANC_BINARY is None, reason="Orthanc is not installed")


class DcmtkReceiver:
    kind = "storescp"

    def __init__(self, directory: Path) -> None:
        self.scp = StoreScpProcess(directory, "+xa")

    def modality(self) -> list[Any]:
        return self.scp.modality()

    def instances(self) -> list[pydicom.Dataset]:
        return self.scp.files()

    def stop(self) -> None:
        self.scp.stop()


class OrthancReceiver:
    kind = "orthanc"

    def __init__(self, peer: OrthancPeer) -> None:
        self.peer = peer
        peer.clear()

    def modality(self) -> list[Any]:
        return [self.peer.aet, "127.0.0.1", self.peer.dicom_port]

    def instances(self) -> list[pydicom.Dataset]:
        assert self.peer.client is not None
        return [pydicom.dcmread(io.BytesIO(self.peer.client.get(f"/instances/{i}/file").content))
                for i in self.peer.get("/instances")]

    def stop(self) -> None:
        pass


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancPeer]:
    if ORTHANC_BINARY is None:
        pytest.skip("Orthanc is not installed")
    # Orthanc knows luabroker (its DicomAet is LUABROKER in the test fixture), so it accepts its stores.
    peer = OrthancPeer.create(DicomModalities={"luabroker": ["LUABROKER", "127.0.0.1", 4242]}).start()
    yield peer
    peer.stop()


@pytest.fixture(params=["storescp", pytest.param("orthanc", marks=needs_orthanc)])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "storescp":
        scp = DcmtkReceiver(tmp_path / "received")
        yield scp
        scp.stop()
    else:
        yield OrthancReceiver(request.getfixturevalue("orthanc"))


def upload(server: Any, datasets: list[pydicom.Dataset]) -> list[str]:
    return [server.http.post("/instances", content=to_bytes(ds)).json()["ID"] for ds in datasets]


def received(receiver: Any, count: int) -> list[pydicom.Dataset]:
    return wait_until(lambda: (lambda found: found if len(found) >= count else None)(receiver.instances()),
                      message=f"{count} instance(s) at the {receiver.kind} receiver")


def source_empty(server: Any) -> None:
    wait_until(lambda: server.http.get("/instances").json() == [], message="the source to be empty")


def has_private_tags(ds: pydicom.Dataset) -> bool:
    return any(element.tag.is_private for element in ds)


def test_one_liner_routes_every_instance_and_empties_the_source(luabroker: Any, receiver: Any) -> None:
    server = luabroker({"autorouting.lua": ONE_LINER}, DicomModalities={"sample": receiver.modality()}, Jobs=JOBS)
    datasets = make_instances(3)
    upload(server, datasets)
    source_empty(server)
    got = received(receiver, 3)
    assert sorted(ds.SOPInstanceUID for ds in got) == sorted(ds.SOPInstanceUID for ds in datasets)


def test_conditional_routes_only_david_and_deletes_the_rest(luabroker: Any, receiver: Any) -> None:
    server = luabroker({"conditional.lua": CONDITIONAL}, DicomModalities={"sample": receiver.modality()}, Jobs=JOBS)
    davids = make_instances(2, patient_id="D1", patient_name="Smith^David")
    other = make_instances(1, patient_id="O1", patient_name="Doe^John")
    upload(server, davids + other)
    source_empty(server)
    got = received(receiver, 2)
    server.server.services.jobs.wait(server.server.services.lua_jobs.current_id, timeout=20)
    assert sorted(ds.SOPInstanceUID for ds in receiver.instances()) == sorted(ds.SOPInstanceUID for ds in davids)
    assert all("david" in str(ds.PatientName).lower() for ds in got)


def check_modified(got: list[pydicom.Dataset], originals: list[pydicom.Dataset], *, private_removed: bool) -> None:
    assert len(got) == len(originals)
    assert {ds.SOPInstanceUID for ds in got}.isdisjoint(ds.SOPInstanceUID for ds in originals)  # new UIDs
    assert {ds.SeriesInstanceUID for ds in got} == {ds.SeriesInstanceUID for ds in originals}
    for ds in got:
        assert ds.StationName == "My Medical Device"
        assert "MilitaryRank" not in ds
        if private_removed:
            assert not has_private_tags(ds) and (0x0051, 0x0010) not in ds


def test_modify_instance_chain_routes_modified_copies(luabroker: Any, receiver: Any) -> None:
    server = luabroker({"modification.lua": MODIFICATION}, DicomModalities={"sample": receiver.modality()}, Jobs=JOBS)
    originals = make_instances(2, routing_tags=True)
    upload(server, originals)
    source_empty(server)
    got = received(receiver, 2)
    server.server.services.jobs.wait(server.server.services.lua_jobs.current_id, timeout=20)
    check_modified(receiver.instances(), originals, private_removed=True)
    assert len(got) == 2


def test_rest_variant_routes_the_modified_copy(luabroker: Any, receiver: Any) -> None:
    server = luabroker({"rest.lua": REST_MODIFICATION}, DicomModalities={"sample": receiver.modality()}, Jobs=JOBS)
    originals = make_instances(2, routing_tags=True)
    upload(server, originals)
    source_empty(server)
    got = received(receiver, 2)
    check_modified(got, originals, private_removed=False)
    for ds in got:
        assert ds[0x0031, 0x1020].value in (b"Some private tag", "Some private tag")
        assert (0x0051, 0x0010) in ds   # this variant keeps the private tags


@needs_orthanc
@pytest.mark.parametrize("script", ["Delete(SendToPeer(instanceId, 'orthanc'))",
                                    "Delete(SendToPeer(ModifyInstance(instanceId, {StationName='My Medical Device'}, "
                                    "{'MilitaryRank'}, true), 'orthanc')) Delete(instanceId)"])
def test_send_to_peer_routes_to_a_real_orthanc(luabroker: Any, orthanc: OrthancPeer, script: str) -> None:
    orthanc.clear()
    source = ("function OnStoredInstance(instanceId, tags, metadata)\n"
              "if metadata['ModifiedFrom'] == nil then " + script + " end\nend\n")
    server = luabroker({"peer.lua": source}, OrthancPeers={"orthanc": [orthanc.url]}, Jobs=JOBS)
    originals = make_instances(2, routing_tags=True)
    upload(server, originals)
    source_empty(server)
    receiver = OrthancReceiver.__new__(OrthancReceiver)
    receiver.peer = orthanc
    got = received(receiver, 2)
    if "ModifyInstance" in script:
        check_modified(got, originals, private_removed=True)
    else:
        assert sorted(ds.SOPInstanceUID for ds in got) == sorted(ds.SOPInstanceUID for ds in originals)


@needs_orthanc
def test_send_to_modality_uses_the_calling_aet_of_a_global(luabroker: Any, orthanc: OrthancPeer) -> None:
    orthanc.clear()
    script = """
    function OnStoredInstance(instanceId, tags, metadata, origin)
      SendToModality(instanceId, 'orthanctest', aet)
    end
    """
    server = luabroker({"aet.lua": script}, ExecuteLuaEnabled=True, Jobs=JOBS,
                       DicomModalities={"orthanctest": [orthanc.aet, "127.0.0.1", orthanc.dicom_port]})

    def remote_aet_of_next_upload() -> str:
        before = set(orthanc.get("/instances"))
        upload(server, make_instances(1))
        new = wait_until(lambda: set(orthanc.get("/instances")) - before, message="a new instance at Orthanc")
        assert orthanc.client is not None
        return orthanc.client.get(f"/instances/{new.pop()}/metadata/RemoteAET").text

    assert server.execute('aet = "HELLO"').status_code == 200
    assert remote_aet_of_next_upload() == "HELLO"
    assert server.execute("aet = nill").status_code == 200   # the typo of orthanc-tests: nil
    assert remote_aet_of_next_upload() == "LUABROKER"          # the default DicomAet


def test_receiver_down_retries_then_fails_and_deletes_nothing(luabroker: Any) -> None:
    script = """
    failures = {}
    function OnStoredInstance(instanceId, tags, metadata)
      Delete(SendToModality(instanceId, 'sample'))
    end
    function OnJobFailure(jobId) table.insert(failures, jobId) end
    """
    server = luabroker({"down.lua": script}, ExecuteLuaEnabled=True, Jobs=JOBS,
                       DicomModalities={"sample": ["DOWN", "127.0.0.1", free_port()]})
    instances = upload(server, make_instances(2))
    server.wait_events()
    job_id = server.server.services.lua_jobs.current_id
    states = set()

    def failed() -> bool:
        states.add(server.http.get(f"/jobs/{job_id}").json()["State"])
        return "Failure" in states

    wait_until(failed, interval=0.02, message="the Lua job to fail")
    assert "Retry" in states                                   # it was retried before failing
    info = server.http.get(f"/jobs/{job_id}").json()
    assert (info["ErrorCode"], info["Type"]) == (9, "SequenceOfOperations")
    assert "Connection refused" in info["ErrorDetails"]
    wait_until(lambda: json.loads(server.execute("print(DumpJson(failures))").text) == [job_id],
               message="OnJobFailure")
    assert sorted(server.http.get("/instances").json()) == sorted(instances)   # nothing deleted
