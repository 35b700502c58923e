"""Tenants (issue 13, docs/tenants.md) on a real server: two tenants beside the default one, each with
its own scripts, AET, users and data. An instance sent to a tenant's AET runs that tenant's filter and
callback only; neither tenant sees the other's globals, resources (REST, ``RestApi*`` with path
tricks, C-FIND, lists, ``/changes``, ``/statistics``) or audit entries; an administrator reaches both."""
from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from broker.config import Config, ConfigError
from broker.dicom.sockets import NODELAY_HANDLERS
from tests.broker.dicom.test_retrieve_scp import c_get, c_move, identifier
from tests.integration.operations_helpers import COUNTING, FAST_LIMITS, HOSTILE
from tests.integration.test_lua_modules import DICOMUTIL, module_folder
from tests.support.factory import make_instances, to_bytes
from tests.support.waiting import wait_until

SCRIPT = """
TENANT = '{tenant}'
GLOBAL_OF_{tenant} = 'secret of {tenant}'
function ReceivedInstanceFilter(tags, origin, info)
  return tags.PatientID ~= 'REFUSED_BY_{tenant}'
end
function OnStoredInstance(id, tags, metadata, origin)
  RestApiPut('/instances/' .. id .. '/metadata/Handler',
             TENANT .. ' saw ' .. tostring(GLOBAL_OF_A) .. ', ' .. tostring(GLOBAL_OF_B))
end
"""

USERS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw", "carol": "carol-pw"}


def tenant_options(**extra: Any) -> dict[str, Any]:
    return {"AuthenticationEnabled": True, "RegisteredUsers": USERS, "TenantAdministrators": ["admin"],
            "ExecuteLuaEnabled": True, "UserMetadata": {"Handler": 1024}, "DicomAlwaysAllowFind": True,
            "LuaScripts": [],
            "Tenants": {"A": {"DicomAets": ["AET_A"], "Users": ["alice"], "LuaScripts": ["a.lua"]},
                        "B": {"DicomAets": ["AET_B"], "Users": ["bob"], "LuaScripts": ["b.lua"]}},
            **extra}


@pytest.fixture
def two_tenants(luabroker: Any) -> Any:
    server = luabroker({"a.lua": SCRIPT.format(tenant="A"), "b.lua": SCRIPT.format(tenant="B")}, **tenant_options())
    clients = {user: server.client(auth=(user, password)) for user, password in USERS.items()}
    yield server, clients
    for client in clients.values():
        client.close()


def _instances(client: httpx.Client) -> list[str]:
    answer = client.get("/instances")
    assert answer.status_code == 200, answer.text
    return sorted(answer.json())


def _patient_ids(client: httpx.Client) -> set[str]:
    return {client.get(f"/patients/{p}").json()["MainDicomTags"]["PatientID"] for p in client.get("/patients").json()}


def _execute(client: httpx.Client, source: str) -> str:
    answer = client.post("/tools/execute-script", content=source.encode())
    assert answer.status_code == 200, answer.text
    return answer.text


def _c_find_patients(server: Any, called_aet: str) -> set[str]:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=called_aet, evt_handlers=NODELAY_HANDLERS)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "*"
    try:
        return {str(identifier.PatientID) for status, identifier in
                assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind)
                if status and status.Status in (0xFF00, 0xFF01)}
    finally:
        assoc.release()


def test_each_tenant_runs_its_own_filter_and_callback_and_sees_its_own_globals_only(two_tenants):
    server, clients = two_tenants
    for tenant in ("A", "B"):
        sent = [make_instances(1, patient_id=pid)[0] for pid in (f"P_{tenant}", "REFUSED_BY_A", "REFUSED_BY_B")]
        statuses = server.c_store(sent, called_aet=f"AET_{tenant}")
        assert statuses[0] == 0x0000
        server.wait_events(tenant=tenant)

    for tenant, user in (("A", "alice"), ("B", "bob")):
        other = "B" if tenant == "A" else "A"
        client = clients[user]
        # Its own filter refused its own test patient; the other tenant's refusal did not apply here.
        assert _patient_ids(client) == {f"P_{tenant}", f"REFUSED_BY_{other}"}
        for instance in _instances(client):
            handler = client.get(f"/instances/{instance}/metadata/Handler")
            assert handler.text == ("A saw secret of A, nil" if tenant == "A" else "B saw nil, secret of B")
        # execute-script runs in the user's tenant, whose globals are its own.
        assert _execute(client, "print(TENANT, tostring(GLOBAL_OF_A), tostring(GLOBAL_OF_B))").strip() == \
            ("A, secret of A, nil" if tenant == "A" else "B, nil, secret of B")
    # The default tenant (users named by no tenant) received nothing and runs no script.
    assert _instances(clients["carol"]) == []
    assert _execute(clients["carol"], "print(tostring(TENANT))").strip() == "nil"


def test_a_tenant_sees_nothing_of_the_other_one(two_tenants):
    server, clients = two_tenants
    shared = make_instances(1, patient_id="SHARED")[0]
    assert server.c_store([*make_instances(2, patient_id="ONLY_A"), shared], called_aet="AET_A") == [0] * 3
    assert server.c_store([make_instances(1, patient_id="ONLY_B")[0], shared], called_aet="AET_B") == [0] * 2
    server.wait_events(tenant="A")
    server.wait_events(tenant="B")
    alice, bob, admin = clients["alice"], clients["bob"], clients["admin"]
    a_instances, b_instances = _instances(alice), _instances(bob)
    assert len(a_instances) == 3 and len(b_instances) == 2
    only_a = sorted(set(a_instances) - set(b_instances))
    assert len(only_a) == 2  # the shared instance has the same id in both: two resources

    for instance in only_a:
        for path in (f"/instances/{instance}", f"/instances/{instance}/file", f"/instances/{instance}/tags",
                     f"/instances/../instances/{instance}", f"//instances//{instance}",
                     f"/tenants/A/instances/{instance}"):
            assert bob.get(path).status_code == 404, path
        assert bob.delete(f"/instances/{instance}").status_code == 404
    assert _patient_ids(bob) == {"ONLY_B", "SHARED"}
    found = bob.post("/tools/find", json={"Level": "Patient", "Query": {"PatientID": "*"}}).json()
    assert len(found) == 2
    changes = bob.get("/changes", params={"limit": 1000}).json()
    assert {change["ID"] for change in changes["Changes"] if change["ResourceType"] == "Instance"} == set(b_instances)
    assert bob.get("/statistics").json()["CountInstances"] == 2
    assert _c_find_patients(server, "AET_B") == {"ONLY_B", "SHARED"}
    assert _c_find_patients(server, "AET_A") == {"ONLY_A", "SHARED"}

    # B's scripts: RestApiGet of A's instance, whatever the spelling of the path, is as if absent (the
    # spellings with '..' or '//' are refused for any id, as Orthanc does); B's own instance is found.
    probe = """
    for _, id in ipairs({{'{a}', '{b}'}}) do
      for _, path in ipairs({{'/instances/' .. id, '/instances/../instances/' .. id, '//instances//' .. id,
                             '/instances/%2e%2e/instances/' .. id, '/patients/../instances/' .. id}}) do
        local ok, answer = pcall(RestApiGet, path)
        print(id == '{a}' and 'A' or 'B', ok and answer ~= nil and 'found' or 'absent')
      end
    end
    """
    lines = _execute(bob, probe.format(a=only_a[0], b=b_instances[0])).split("\n")
    assert "A, found" not in lines and lines.count("A, absent") == 5
    assert "B, found" in lines

    # The shared instance deleted by A stays B's.
    assert alice.delete(f"/instances/{sorted(set(a_instances) & set(b_instances))[0]}").status_code == 200
    assert _instances(bob) == b_instances
    # Each tenant's audit log is its own.
    assert {entry["Tenant"] for entry in bob.get("/audit").json()} == {"B"}

    # The administrator reaches every tenant, by its name.
    assert admin.get("/tenants").json() == ["default", "A", "B"]
    assert admin.get("/tenants/A").json()["DicomAets"] == ["AET_A"]
    assert sorted(admin.get("/tenants/A/instances").json()) == _instances(alice)
    assert admin.get(f"/tenants/A/instances/{only_a[0]}").status_code == 200
    assert admin.get("/tenants/B/statistics").json()["CountInstances"] == 2
    assert admin.get("/tenants/nobody/instances").status_code == 404
    assert alice.get("/tenants").status_code == 404  # not an administrator: the path is not there


def test_the_tenants_section_is_checked():
    def config(**tenants: Any) -> Config:
        return Config.from_json({"AuthenticationEnabled": True, "RegisteredUsers": USERS, "Tenants": tenants},
                                __import__("pathlib").Path("/etc"))

    with pytest.raises(ConfigError, match="belongs to 'A'"):
        config(A={"DicomAets": ["X"]}, B={"DicomAets": ["X"]})
    with pytest.raises(ConfigError, match="not in 'RegisteredUsers'"):
        config(A={"Users": ["mallory"]})
    with pytest.raises(ConfigError, match="'Tenants.A.LuaScript' is not a tenant's option"):
        config(A={"LuaScript": ["a.lua"]})
    with pytest.raises(ConfigError, match="not 'default'"):
        config(default={})
    with pytest.raises(ConfigError, match=r"In tenant 'A' .*MemoryLimitMB"):
        config(A={"LuaSandbox": {"MemoryLimitMB": 0}})
    tenant = config(A={"DicomAets": ["X"], "LuaSandbox": {"MemoryLimitMB": 32}}).tenant("A")
    assert tenant.dicom_aet == "X" and tenant.lua_limits.memory_kb == 32 * 1024
    assert tenant.storage_limits.reject  # a quota refuses; it does not recycle the tenant's data
    assert tenant.storage_directory.parts[-2:] == ("tenants", "A")


def test_quotas_refuse_new_work_and_lose_nothing(luabroker):
    spin = "function OnStoredInstance(id) while true do end end"
    server = luabroker({"spin.lua": spin}, **tenant_options(Tenants={
        "S": {"DicomAets": ["AET_S"], "Users": ["alice"], "MaximumStorageSize": 1,
              "LuaSandbox": {"MemoryLimitMB": 16}},
        "E": {"DicomAets": ["AET_E"], "Users": ["bob"], "LuaScripts": ["spin.lua"],
              "LuaSandbox": {"EventBacklogLimit": 2}},
        "R": {"DicomAets": ["AET_R"], "Users": ["carol"], "MaximumIngestRate": 0.01}}))
    alice, bob, carol = (server.client(auth=(user, USERS[user])) for user in ("alice", "bob", "carol"))

    # Stored bytes: 1 MB; the instance that would pass it is refused, those before it stay.
    instances = make_instances(60, patient_id="BIG")
    statuses = server.c_store(instances, called_aet="AET_S")
    accepted = statuses.index(0xA700)
    assert accepted > 0 and set(statuses[:accepted]) == {0} and set(statuses[accepted:]) == {0xA700}
    assert len(_instances(alice)) == accepted
    assert alice.get("/statistics").json()["TotalDiskSizeMB"] <= 1
    refused = alice.post("/instances", content=to_bytes(make_instances(1, patient_id="MORE")[0]))
    assert refused.status_code == 500 and "MaximumStorageSize" in refused.json()["Details"]
    assert server.c_store(make_instances(1), called_aet="LUABROKER") == [0]  # other tenants go on

    # Queued events: 2 wait for a callback that never ends; the third instance is refused.
    statuses = server.c_store(make_instances(4, patient_id="QUEUED"), called_aet="AET_E")
    assert statuses[:2] == [0, 0] and statuses[2:] == [0xA700, 0xA700]
    refused = bob.post("/instances", content=to_bytes(make_instances(1, patient_id="MORE")[0]))
    assert refused.status_code == 503 and "EventBacklogLimit" in refused.json()["Details"]
    assert len(_instances(bob)) == 2

    # Sandbox memory: S's scripts have 16 MB, R's the server's default.
    big = "local t = {} for i = 1, 2000000 do t[i] = i end print(#t)"  # about 32 MB
    refused = alice.post("/tools/execute-script", content=big)
    assert refused.status_code == 500 and "memory limit exceeded" in refused.text
    assert _execute(carol, big) == "2000000\n"

    # Ingest rate: one instance in 100 s; the next one is refused until then.
    first, second = make_instances(2, patient_id="RATE")
    assert carol.post("/instances", content=to_bytes(first)).status_code == 200
    refused = carol.post("/instances", content=to_bytes(second))
    assert refused.status_code == 429 and "MaximumIngestRate" in refused.json()["Details"]
    assert server.c_store([second], called_aet="AET_R") == [0xA700]
    assert len(_instances(carol)) == 1
    for client in (alice, bob, carol):
        client.close()


def test_a_hostile_tenant_does_not_hurt_its_neighbour(luabroker):
    """Tenant A's filter runs a ReDoS and its callback raises, on instances sent in a loop, while tenant
    B ingests 500 instances: B loses none and runs every callback, A's circuit opens, B stays healthy.
    (B's ingest rate beside A, against without A, is a benchmark row: ``bench/noisy_neighbour.py``.)"""
    server = luabroker({"a.lua": HOSTILE, "b.lua": COUNTING}, **tenant_options(
        LuaSandbox={**FAST_LIMITS, "QuarantineAfter": 3, "QuarantineCooldown": 600, "EventMaxAttempts": 2}))
    admin = server.client(auth=("admin", USERS["admin"]))
    stop = threading.Event()
    hostile_rounds = []

    def hostile() -> None:
        while not stop.is_set():
            server.c_store(make_instances(1, patient_id="REDOS") + make_instances(1, patient_id="CRASH"),
                           called_aet="AET_A")
            hostile_rounds.append(1)

    thread = threading.Thread(target=hostile, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(hostile_rounds) >= 1, timeout=120)  # A is at it before B starts
        sent = make_instances(500, patient_id="B_PATIENT", series=5)
        statuses = [status for start in range(0, 500, 100)
                    for status in server.c_store(sent[start:start + 100], called_aet="AET_B")]
        server.wait_events(tenant="B", timeout=120)
        wait_until(lambda: admin.get("/tenants/A/lua/status").json()["Quarantined"], timeout=120)
    finally:
        stop.set()
        thread.join(120)
    assert statuses == [0] * 500
    assert admin.get("/tenants/B/statistics").json()["CountInstances"] == 500
    assert _execute(server.client(auth=("bob", USERS["bob"])), "print(COUNT)").strip() == "500"
    b_status = admin.get("/tenants/B/lua/status").json()
    assert b_status["Quarantined"] is False
    assert {sandbox["state"] for sandbox in b_status["Sandboxes"]} == {"READY"}
    assert admin.get("/tenants/B/lua/events/parked").json() == []
    admin.close()


def test_each_tenant_requires_the_modules_of_its_own_folders(luabroker, tmp_path):
    """``require('dicomutil')`` loads from the tenant's ``LuaModulesPath``; another tenant, whose folders
    do not hold it, cannot load it; ``require('os')`` and a binary chunk fail clearly in both; a reload
    of one tenant that changed its module is that tenant's new version only."""
    folder = module_folder(tmp_path)
    other = tmp_path / "b-modules"
    other.mkdir()
    server = luabroker(**tenant_options(Tenants={
        "A": {"DicomAets": ["AET_A"], "Users": ["alice"], "LuaModulesPath": [str(folder)]},
        "B": {"DicomAets": ["AET_B"], "Users": ["bob"], "LuaModulesPath": [str(other)]}}))
    alice, bob = (server.client(auth=(user, USERS[user])) for user in ("alice", "bob"))
    assert _execute(alice, "print(require('dicomutil').describe({PatientID = 'P1', Modality = 'CT'}))") == "P1/CT\n"
    assert "module 'dicomutil' not found" in _execute(bob, "print(pcall(require, 'dicomutil'))")
    for client in (alice, bob):
        assert "module 'os' not found" in _execute(client, "print(pcall(require, 'os'))")
    assert "precompiled binary chunk" in _execute(alice, "print(pcall(require, 'compiled'))")
    b_version = bob.get("/lua/status").json()["Version"]
    (folder / "dicomutil.lua").write_text(DICOMUTIL.replace("'/'", "'|'"))
    assert alice.post("/lua/reload").json()["Changed"] is True
    assert bob.post("/lua/reload").json()["Changed"] is False
    assert bob.get("/lua/status").json()["Version"] == b_version
    assert _execute(alice, "print(require('dicomutil').describe({PatientID = 'P'}))") == "P|?\n"
    alice.close()
    bob.close()


def test_modalities_peers_jobs_and_retrievals_are_the_tenants_own(luabroker, recording_scp):
    receiver = recording_scp(aet="DEST")
    both = {"dest": [receiver.aet, "127.0.0.1", receiver.port], "movescu": ["MOVESCU", "127.0.0.1", 1]}
    server = luabroker(**tenant_options(DicomAlwaysAllowGet=True, Tenants={
        "A": {"DicomAets": ["AET_A"], "Users": ["alice"], "DicomModalities": {**both, "onlya": ["X", "127.0.0.1", 1]},
              "OrthancPeers": {"peer": ["http://127.0.0.1:1/"]}},
        "B": {"DicomAets": ["AET_B"], "Users": ["bob"], "DicomModalities": both}}))
    alice, bob = (server.client(auth=(user, USERS[user])) for user in ("alice", "bob"))
    instances = make_instances(2, patient_id="ONLY_A")
    assert server.c_store(instances, called_aet="AET_A") == [0, 0]
    study = alice.get("/studies").json()[0]
    instance = _instances(alice)[0]

    assert alice.get("/modalities").json() == ["dest", "movescu", "onlya"] and bob.get("/modalities").json() == [
        "dest", "movescu"]
    assert alice.get("/peers").json() == ["peer"] and bob.get("/peers").json() == []
    assert server.client().get("/modalities").status_code == 401  # no user, no tenant
    # B's scripts reach B's modalities only, with B's data only (RestApiPost answers nil on an error).
    sent = "print(RestApiPost('/modalities/{m}/store', '{i}') == nil)"
    assert _execute(bob, sent.format(m="onlya", i=instance)) == "true\n"
    assert _execute(bob, sent.format(m="dest", i=instance)) == "true\n"
    assert receiver.stored == []

    job = alice.post("/tools/create-archive", json={"Resources": [study], "Asynchronous": True}).json()["ID"]
    assert alice.get(f"/jobs/{job}").status_code == 200
    assert bob.get(f"/jobs/{job}").status_code == 404 and job not in bob.get("/jobs").json()

    # C-MOVE and C-GET on B's AET do not find A's study; on A's AET they do.
    query = identifier("STUDY", StudyInstanceUID=instances[0].StudyInstanceUID)
    assert c_move(server.dicom_port, "AET_B", "DEST", query)[-1]["NumberOfCompletedSuboperations"] == 0
    assert receiver.stored == []
    answers, received = c_get(server.dicom_port, "AET_B", query)
    assert received == [] and answers[-1]["NumberOfCompletedSuboperations"] == 0
    assert c_move(server.dicom_port, "AET_A", "DEST", query)[-1]["NumberOfCompletedSuboperations"] == 2
    assert len(receiver.stored) == 2
    answers, received = c_get(server.dicom_port, "AET_A", query)
    assert len(received) == 2
    alice.close()
    bob.close()


def test_a_tenant_cannot_act_on_the_whole_server_nor_see_the_other_users(two_tenants):
    server, clients = two_tenants
    alice = clients["alice"]
    for method, path, body in (("POST", "/tools/shutdown", ""), ("POST", "/tools/reset", ""),
                               ("PUT", "/tools/log-level", "verbose")):
        refused = alice.request(method, path, content=body)
        assert refused.status_code == 403 and "whole server" in refused.json()["Details"], path
    assert server.thread.is_alive() and clients["carol"].get("/system").status_code == 200
    users = _execute(alice, "for name in pairs(GetOrthancConfiguration().RegisteredUsers) do print(name) end")
    assert users.split() == ["alice"]
    assert "Tenants" not in _execute(alice, "for name in pairs(GetOrthancConfiguration()) do print(name) end").split()
