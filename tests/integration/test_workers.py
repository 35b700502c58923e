"""Several worker processes (``Workers: 2``) on a real ``luabroker`` (``python -m broker.cli``): they share
the DICOM port, one of them holds the coordinator role, and the role moves when its holder dies; no
acknowledged instance is lost and every ``OnStoredInstance`` is delivered, whichever process is killed;
a reload over HTTP reaches every worker's filter; shutdown, SIGTERM and reset end or restart them all."""
from __future__ import annotations

import os
import re
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from broker.core.lease import StorageInUse
from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor
from tests.integration.test_fault_drills import DELIVERY_RECORDER
from tests.support.factory import make_instances, to_bytes
from tests.support.ports import free_port
from tests.support.process import START_S, LuabrokerProcess, write_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

REFUSE_ALL = """
function ReceivedInstanceFilter(tags, origin, info)
  return false
end
"""


def start(processes: Any, tmp_path: Path, script: str = DELIVERY_RECORDER, **options: Any) -> LuabrokerProcess:
    (tmp_path / "recorder.lua").write_text(script)
    write_config(tmp_path, Workers=2, LuaScripts=["recorder.lua"], UserMetadata={"Delivered": 1024}, **options)
    server: LuabrokerProcess = processes(tmp_path)
    server.wait_ready()
    wait_until(lambda: server.lines("serves DICOM") >= 2, START_S, message="two workers serving")
    return server


def workers(server: LuabrokerProcess) -> list[int]:
    """The pids of the worker processes of the supervisor ``server``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server.process.pid and b"--worker" in command:
            found.append(int(entry.name))
    return sorted(found)


def coordinator(server: LuabrokerProcess) -> int:
    """The pid of the worker that took the coordinator role last (each says so in its log; the lease is
    a file with SQLite, a lock in the database with PostgreSQL)."""
    taken = [line for line in list(server.output) if "takes the coordinator role" in line]
    assert taken, "no worker has taken the coordinator role"
    found = re.search(r"worker (\d+) takes the coordinator role", taken[-1])
    assert found is not None
    return int(found.group(1))


def associate(server: LuabrokerProcess) -> Any:
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", server.config["DicomPort"], ae_title="LUABROKER", evt_handlers=NODELAY_HANDLERS)
    assert assoc.is_established
    return assoc


def store_one(server: LuabrokerProcess, ds: Any) -> int | None:
    """C-STORE on a new association: the status, or None when no answer came (the server was killed)."""
    try:
        assoc = associate(server)
    except AssertionError:
        return None
    try:
        pause_reactor(assoc)
        status = assoc.send_c_store(ds)
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


def holders(pids: list[int], port: int) -> dict[int, int]:
    """For each pid, how many established TCP connections to ``port`` it holds (``/proc``)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    counts = dict.fromkeys(pids, 0)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                counts[inodes[fields[9]]] += 1
    return counts


@contextmanager
def associations(server: LuabrokerProcess, context: str, calling: str, count: int = 12) -> Iterator[list[Any]]:
    """``count`` associations open at once, released at the end: the kernel spreads them over both
    workers (all on one: 2 chances in 2^count)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(context)
    opened = [ae.associate("127.0.0.1", server.config["DicomPort"], ae_title="LUABROKER",
                           evt_handlers=NODELAY_HANDLERS) for _ in range(count)]
    try:
        assert all(assoc.is_established for assoc in opened)
        yield opened
    finally:
        for assoc in opened:
            if assoc.is_established:
                assoc.release()


def send_each(opened: list[Any], datasets: list[Any]) -> list[int]:
    """One C-STORE on each association of ``opened``; the statuses."""
    statuses = []
    for assoc, ds in zip(opened, datasets, strict=True):
        pause_reactor(assoc)
        statuses.append(assoc.send_c_store(ds).Status)
    return statuses


@contextmanager
def connections(server: LuabrokerProcess, count: int = 12) -> Iterator[list[httpx.Client]]:
    """``count`` HTTP clients, each with its own connection kept open (a first ``GET /system`` opens
    it): the kernel spreads them over both workers (all on one: 2 chances in 2^count)."""
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{server.config['HttpPort']}", timeout=60)
               for _ in range(count)]
    try:
        assert [client.get("/system").status_code for client in clients] == [200] * count
        yield clients
    finally:
        for client in clients:
            client.close()


def delivered(server: LuabrokerProcess, ids: list[str]) -> bool:
    return delivered_through(server.http, ids)


def delivered_through(client: httpx.Client, ids: list[str]) -> bool:
    return all(client.get(f"/instances/{i}/metadata/Delivered").status_code == 200 for i in ids)


def test_the_workers_share_the_dicom_port_and_every_instance_is_delivered(processes: Any, tmp_path: Path) -> None:
    server = start(processes, tmp_path)
    pids = workers(server)
    with associations(server, CTImageStorage, "STORESCU", 16) as opened:
        wait_until(lambda: sum(holders(pids, server.config["DicomPort"]).values()) == 16,
                   message="the 16 associations accepted")
        assert all(count > 0 for count in holders(pids, server.config["DicomPort"]).values())
        statuses = send_each(opened, make_instances(16))
    assert statuses == [0] * 16
    ids = server.http.get("/instances").json()
    assert len(ids) == 16
    # The events written by the worker that is not the coordinator reach the coordinator's dispatcher.
    wait_until(lambda: delivered(server, ids), message="every OnStoredInstance delivered")
    assert server.get("/lua/status")["Events"]["pending"] == 0
    # Each line of the log says which process wrote it.
    assert all(any(f"[{pid}]" in line for line in server.output) for pid in pids)
    # The coordinator shows every worker: in /lua/status, and in the metrics (each sample labelled with
    # its worker, but the figures of the whole index once).
    status = server.get("/lua/status")["Workers"]
    assert [worker["Pid"] for worker in status] == pids
    assert [worker["Pid"] for worker in status if worker["Coordinator"]] == [coordinator(server)]
    for worker in status:
        roles = {sandbox["role"]: sandbox["state"] for sandbox in worker["Sandboxes"]}
        assert roles["filter"] == "READY"
        assert (roles["main"] == "READY") == worker["Coordinator"]
    metrics = server.http.get("/tools/metrics-prometheus").text
    filter_calls = [line for line in metrics.splitlines()
                    if line.startswith('luabroker_lua_calls_total{callback="ReceivedInstanceFilter"')]
    assert {line.split('worker="')[1].split('"')[0] for line in filter_calls} == {str(pid) for pid in pids}
    assert sum(float(line.rsplit(" ", 1)[1]) for line in filter_calls) == 16
    assert [line for line in metrics.splitlines() if line.startswith("orthanc_count_instances")] == [
        "orthanc_count_instances 16.0"]


@pytest.mark.parametrize("victim", ["coordinator", "worker"])
def test_kill9_of_a_worker_during_c_store_loses_nothing(processes: Any, tmp_path: Path, victim: str) -> None:
    server = start(processes, tmp_path)
    first = coordinator(server)
    target = first if victim == "coordinator" else next(pid for pid in workers(server) if pid != first)
    instances = make_instances(60)
    acknowledged: list[str] = []
    killed = threading.Event()

    def ingest() -> None:
        for index, ds in enumerate(instances):
            if index == 20:
                os.kill(target, signal.SIGKILL)
                killed.set()
            if store_one(server, ds) == 0:
                acknowledged.append(ds.SOPInstanceUID)

    thread = threading.Thread(target=ingest)
    thread.start()
    thread.join(START_S * 3)
    assert killed.is_set() and not thread.is_alive()
    # The supervisor starts a worker again; with the coordinator dead, the other worker took its role.
    wait_until(lambda: len(workers(server)) == 2 and target not in workers(server), START_S,
               message="the killed worker started again")
    wait_until(lambda: server.get("/system") is not None and coordinator(server) != target, START_S,
               message="a coordinator answering HTTP")
    if victim == "coordinator":
        assert server.lines("takes the coordinator role") == 2
    else:
        assert coordinator(server) == first
    # Ingest went on: the last stores were answered by the surviving (or the restarted) worker.
    assert {ds.SOPInstanceUID for ds in instances[-10:]} <= set(acknowledged)
    stored = {server.http.get(f"/instances/{i}").json()["MainDicomTags"]["SOPInstanceUID"]: i
              for i in server.http.get("/instances").json()}
    assert set(acknowledged) <= set(stored)
    wait_until(lambda: delivered(server, [stored[uid] for uid in acknowledged]), START_S,
               message="every acknowledged instance delivered to OnStoredInstance")


HTTP_FILTER = DELIVERY_RECORDER + """
function IncomingHttpRequestFilter(method, uri, ip, username, headers)
  return uri ~= '/tools/generate-uid'
end
"""


def test_every_worker_serves_http_and_the_coordinators_routes_run_in_the_coordinator(processes: Any,
                                                                                      tmp_path: Path) -> None:
    server = start(processes, tmp_path, HTTP_FILTER, ExecuteLuaEnabled=True)
    pids = workers(server)
    with connections(server) as clients:
        assert all(count > 0 for count in holders(pids, server.config["HttpPort"]).values())
        # The routes of the index: each worker answers them itself, from the shared index.
        ids = [client.post("/instances", content=to_bytes(ds)).json()["ID"]
               for client, ds in zip(clients, make_instances(12), strict=True)]
        assert all(sorted(client.get("/instances").json()) == sorted(ids) for client in clients)
        wait_until(lambda: delivered(server, ids), message="every OnStoredInstance delivered")
        # The coordinator's routes run in the coordinator, whichever worker received the call: one
        # main sandbox counts every execute-script, one jobs registry, one answer of /lua/status.
        counts = [client.post("/tools/execute-script", content="calls = (calls or 0) + 1 print(calls)").text
                  for client in clients]
        assert counts == [f"{n}\n" for n in range(1, 13)]
        assert {client.get("/jobs/nope").status_code for client in clients} == {404}
        assert {tuple(worker["Pid"] for worker in client.get("/lua/status").json()["Workers"]
                      if worker["Coordinator"]) for client in clients} == {(coordinator(server),)}
        # IncomingHttpRequestFilter runs in the filter sandbox of the worker that received the request.
        assert {client.get("/tools/generate-uid?level=patient").status_code for client in clients} == {403}
    metrics = server.http.get("/tools/metrics-prometheus").text
    assert {line.split('worker="')[1].split('"')[0] for line in metrics.splitlines()
            if line.startswith('luabroker_lua_calls_total{callback="IncomingHttpRequestFilter"')} == {
        str(pid) for pid in pids}


def test_http_goes_on_when_the_coordinator_is_killed(processes: Any, tmp_path: Path) -> None:
    server = start(processes, tmp_path, ExecuteLuaEnabled=True)
    first = coordinator(server)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: first not in workers(server), START_S, message="the killed coordinator gone")
    with connections(server) as clients:
        # A call to the coordinator's routes waits for the next coordinator, then is answered there.
        answers = [client.post("/tools/execute-script", content="print(42)") for client in clients]
        assert [(answer.status_code, answer.text) for answer in answers] == [(200, "42\n")] * 12
        assert coordinator(server) != first
        assert {client.get("/lua/status").json()["Workers"][0]["Pid"] for client in clients} == {
            min(workers(server))}


JOBS_FILTER = """
function ReceivedCStoreInstanceFilter(tags, origin, info)
  -- /jobs is the coordinator's: the filter of another worker gets it through the forward
  if #ParseJson(RestApiGet('/jobs')) == 1 then return 0 end
  return 0xA700
end
"""


def test_a_filter_scripts_call_to_a_coordinator_route_is_answered_by_the_coordinator(processes: Any,
                                                                                       tmp_path: Path) -> None:
    server = start(processes, tmp_path, JOBS_FILTER)
    first, *others = make_instances(13)
    stored = server.http.post("/instances", content=to_bytes(first)).json()
    assert server.http.post(f"/studies/{stored['ParentStudy']}/archive", json={"Synchronous": False}).is_success
    pids = workers(server)
    with associations(server, CTImageStorage, "STORESCU") as opened:
        assert all(count > 0 for count in holders(pids, server.config["DicomPort"]).values())
        statuses = []
        for assoc, ds in zip(opened, others, strict=True):
            pause_reactor(assoc)
            statuses.append(assoc.send_c_store(ds).Status)
    assert statuses == [0] * 12  # every worker's filter saw the coordinator's one job


def test_a_reload_over_http_reaches_the_filter_of_every_worker(processes: Any, tmp_path: Path) -> None:
    server = start(processes, tmp_path)
    (tmp_path / "recorder.lua").write_text(REFUSE_ALL)
    answer = server.http.post("/lua/reload")
    assert answer.status_code == 200 and answer.json()["Changed"], answer.text
    wait_until(lambda: server.lines("Lua scripts reloaded") == 2, START_S, message="both workers reloaded")
    assert server.lines("Lua scripts reloaded (POST /lua/reload)") == 1
    assert server.lines("Lua scripts reloaded (SIGHUP)") == 1
    # 16 associations: both workers answer (see above), and both filter out now (with a success status,
    # as Orthanc answers an instance its filter refused).
    statuses = [store_one(server, ds) for ds in make_instances(16)]
    assert statuses == [0] * 16
    assert server.http.get("/instances").json() == []


def test_a_shutdown_over_http_stops_every_worker(processes: Any, tmp_path: Path) -> None:
    server = start(processes, tmp_path)
    pids = workers(server)
    assert server.http.post("/tools/shutdown").json() == {}
    assert server.wait_exit() == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    # The other worker was stopped before the coordinator let the role go: nobody took it over.
    assert server.lines("takes the coordinator role") == 1


def test_sigterm_to_the_supervisor_stops_every_worker_cleanly(processes: Any, tmp_path: Path) -> None:
    server = start(processes, tmp_path)
    pids = workers(server)
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert server.lines("luabroker has stopped") == 3  # both workers, then the supervisor


def test_the_workers_stop_cleanly_when_the_supervisor_is_killed(processes: Any, tmp_path: Path) -> None:
    server = start(processes, tmp_path)
    pids = workers(server)
    server.process.send_signal(signal.SIGKILL)
    server.wait_exit()
    wait_until(lambda: all(not Path(f"/proc/{pid}").exists() for pid in pids), START_S,
               message="the workers' end")
    # Each worker's clean stop (SIGTERM from the kernel), read from the pipe they still held.
    wait_until(lambda: server.lines("luabroker has stopped") == 2, START_S, message="two clean stops")


def test_a_reset_starts_new_workers_in_the_same_supervisor(processes: Any, tmp_path: Path) -> None:
    server = start(processes, tmp_path)
    before = workers(server)
    assert server.lines("luabroker is ready") == 1, "".join(server.output)
    assert server.http.post("/tools/reset").json() == {}
    wait_until(lambda: server.lines("luabroker is restarting (reset)") == 1, START_S, message="the re-execution")
    server.wait_ready(2)
    wait_until(lambda: len(workers(server)) == 2, START_S, message="two new workers")
    assert server.process.poll() is None
    assert not set(workers(server)) & set(before), "".join(server.output)


FIND_FILTER = """
function IncomingFindRequestFilter(query, origin)
  query['0010,0020'] = 'P1'
  return query
end
"""


def test_the_find_filter_runs_in_the_filter_sandbox_of_whichever_worker_answers(processes: Any,
                                                                                tmp_path: Path) -> None:
    server = start(processes, tmp_path, FIND_FILTER, DicomAlwaysAllowFind=True)
    pids = workers(server)
    for patient in ("P1", "P2"):
        assert server.http.post("/instances", content=to_bytes(make_instances(1, patient_id=patient)[0])).is_success
    found = []
    with associations(server, StudyRootQueryRetrieveInformationModelFind, "FINDSCU") as opened:
        for assoc in opened:
            query = Dataset()
            query.QueryRetrieveLevel, query.PatientID, query.StudyInstanceUID = "STUDY", "*", ""
            pause_reactor(assoc)
            found.append([identifier.PatientID for status, identifier in
                          assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                          if status.Status in (0xFF00, 0xFF01)])
    assert found == [["P1"]] * 12  # the filter replaced the query on every association
    calls = [line for line in server.http.get("/tools/metrics-prometheus").text.splitlines()
             if line.startswith('luabroker_lua_calls_total{callback="IncomingFindRequestFilter"')]
    assert {line.split('role="')[1].split('"')[0] for line in calls} == {"filter"}
    assert {line.split('worker="')[1].split('"')[0] for line in calls} == {str(pid) for pid in pids}


def test_an_asynchronous_c_move_on_any_worker_is_a_job_of_the_coordinator(processes: Any, tmp_path: Path,
                                                                          recording_scp: Any) -> None:
    receiver = recording_scp(aet="DEST")
    server = start(processes, tmp_path, SynchronousCMove=False, JobsHistorySize=100,
                   DicomModalities={"movescu": ["MOVESCU", "127.0.0.1", 1]})
    pids = workers(server)
    # A modality declared at run time is known to every worker: the destination of their C-MOVEs.
    assert server.http.put("/modalities/dest", json=["DEST", "127.0.0.1", receiver.port]).is_success
    ds = make_instances(1)[0]
    assert server.http.post("/instances", content=to_bytes(ds)).is_success
    with associations(server, StudyRootQueryRetrieveInformationModelMove, "MOVESCU") as opened:
        served = holders(pids, server.config["DicomPort"])
        assert all(count > 0 for count in served.values())  # both workers answer C-MOVEs
        query = Dataset()
        query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", ds.StudyInstanceUID
        for assoc in opened:
            pause_reactor(assoc)
            statuses = [status.Status for status, _ in
                        assoc.send_c_move(query, "DEST", StudyRootQueryRetrieveInformationModelMove)]
            assert statuses[-1] == 0x0000
    # Every move is a job the coordinator lists and runs, whichever worker received it.
    jobs = server.http.get("/jobs?expand").json()
    assert len(jobs) == 12 and {job["Type"] for job in jobs} == {"DicomModalityStore"}
    wait_until(lambda: all(server.http.get(f"/jobs/{job['ID']}").json()["State"] == "Success" for job in jobs),
               START_S, message="the jobs' success")
    assert len(receiver.stored) == 12


def refused_everywhere(server: LuabrokerProcess) -> bool:
    """Whether 12 associations proposing CT in Explicit VR Little Endian only get no context accepted
    (both workers: see above)."""
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    answers = []
    for _ in range(12):
        assoc = ae.associate("127.0.0.1", server.config["DicomPort"], ae_title="LUABROKER",
                             evt_handlers=NODELAY_HANDLERS)
        answers.append(bool(assoc.is_established and assoc.accepted_contexts))
        if assoc.is_established:
            assoc.release()
    return not any(answers)


def test_a_setting_changed_over_http_applies_to_every_worker_and_to_a_restarted_one(processes: Any,
                                                                                    tmp_path: Path) -> None:
    server = start(processes, tmp_path)
    assert not refused_everywhere(server)
    answer = server.http.put("/tools/accepted-transfer-syntaxes", json=["1.2.840.10008.1.2"])
    assert answer.json() == ["1.2.840.10008.1.2"]
    assert refused_everywhere(server)  # at once: the PUT answered once every worker had applied it
    other = next(pid for pid in workers(server) if pid != coordinator(server))
    os.kill(other, signal.SIGKILL)
    wait_until(lambda: server.lines("serves DICOM") >= 3, START_S, message="the killed worker started again")
    assert refused_everywhere(server)  # the new worker read the change at its start
    assert server.http.put("/tools/accepted-transfer-syntaxes", json=["1.2.840.10008.1.2.1"]).is_success
    assert not refused_everywhere(server)


def test_a_worker_that_cannot_start_again_does_not_stop_the_others(processes: Any, tmp_path: Path) -> None:
    server = start(processes, tmp_path)
    (tmp_path / "recorder.lua").write_text("function ReceivedInstanceFilter(")  # broken on disk
    other = next(pid for pid in workers(server) if pid != coordinator(server))
    os.kill(other, signal.SIGKILL)
    wait_until(lambda: server.lines("luabroker: cannot start") >= 2, START_S, message="two failed restarts")
    assert server.process.poll() is None and server.get("/system") is not None
    assert store_one(server, make_instances(1)[0]) == 0  # the coordinator still receives
    (tmp_path / "recorder.lua").write_text(DELIVERY_RECORDER)  # mended: the next attempt starts
    wait_until(lambda: server.lines("serves DICOM") >= 3, START_S, message="the worker back")
    assert len(workers(server)) == 2


def test_a_script_that_does_not_load_stops_the_start(processes: Any, tmp_path: Path) -> None:
    (tmp_path / "recorder.lua").write_text("function ReceivedInstanceFilter(")
    write_config(tmp_path, Workers=2, LuaScripts=["recorder.lua"])
    server: LuabrokerProcess = processes(tmp_path)
    assert server.wait_exit() == 1
    assert server.lines("luabroker: cannot start") >= 1
    assert server.lines("recorder.lua:1") >= 1  # the file and line, as with one process
    assert server.lines("could not start; stopping the server") == 1


def test_a_port_in_use_stops_the_start_with_a_clear_error(processes: Any, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        (tmp_path / "recorder.lua").write_text(DELIVERY_RECORDER)
        write_config(tmp_path, Workers=2, DicomPort=taken.getsockname()[1])
        server: LuabrokerProcess = processes(tmp_path)
        assert server.wait_exit() == 1
    assert server.lines("luabroker: cannot start") == 1
    assert server.lines("Address already in use") == 1


def test_a_second_server_on_the_same_storage_refuses_to_start(processes: Any, tmp_path: Path) -> None:
    from broker.config import Config
    from broker.server import Server

    server = start(processes, tmp_path)
    with pytest.raises(StorageInUse, match="one server per storage directory"):
        Server(Config.load(tmp_path / "config.json"))
    assert server.get("/system") is not None


def test_every_worker_keeps_the_tenants_apart(processes: Any, tmp_path: Path) -> None:
    """Two tenants (docs/tenants.md) on two workers: A by its AET on the server's port, B on a port of
    its own. Whichever worker takes an association or an HTTP connection, the instance goes to its
    tenant, its event reaches that tenant's main sandbox in the coordinator, and each user sees its own
    tenant only; each tenant's coordinator routes run in one main sandbox of its own."""
    (tmp_path / "recorder.lua").write_text(DELIVERY_RECORDER)
    users = {"alice": "alice-pw", "bob": "bob-pw", "root": "root-pw"}
    b_port = free_port()
    write_config(tmp_path, Workers=2, LuaScripts=[], UserMetadata={"Delivered": 1024}, AuthenticationEnabled=True,
                 RegisteredUsers=users, TenantAdministrators=["root"], ExecuteLuaEnabled=True,
                 Tenants={"A": {"DicomAets": ["AET_A"], "Users": ["alice"], "LuaScripts": ["recorder.lua"]},
                          "B": {"DicomPort": b_port, "Users": ["bob"], "LuaScripts": ["recorder.lua"]}})
    server = processes(tmp_path)
    server.http.auth = ("root", users["root"])
    server.wait_ready()
    wait_until(lambda: server.lines("serves DICOM") >= 2, START_S, message="two workers serving")
    for port, called in ((server.config["DicomPort"], "AET_A"), (b_port, "ANYTHING")):
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(CTImageStorage)
        opened = [ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=NODELAY_HANDLERS) for _ in range(8)]
        try:
            assert all(assoc.is_established for assoc in opened)
            assert send_each(opened, make_instances(8)) == [0] * 8
        finally:
            for assoc in opened:
                assoc.release()
    base = f"http://127.0.0.1:{server.config['HttpPort']}"
    seen: dict[str, list[str]] = {}
    for user in ("alice", "bob"):
        clients = [httpx.Client(base_url=base, timeout=60, auth=(user, users[user])) for _ in range(8)]
        try:
            answers = [sorted(client.get("/instances").json()) for client in clients]
            assert len(answers[0]) == 8 and all(answer == answers[0] for answer in answers)
            seen[user] = answers[0]
            wait_until(partial(delivered_through, clients[0], answers[0]),
                       message=f"every OnStoredInstance of {user}'s tenant")
            counts = [client.post("/tools/execute-script", content="calls = (calls or 0) + 1 print(calls)").text
                      for client in clients]
            assert counts == [f"{n}\n" for n in range(1, 9)]
        finally:
            for client in clients:
                client.close()
    assert not set(seen["alice"]) & set(seen["bob"])
    with httpx.Client(base_url=base, timeout=60, auth=("root", users["root"])) as root:
        assert root.get("/instances").json() == []  # the default tenant's
        for tenant, user in (("A", "alice"), ("B", "bob")):
            assert sorted(root.get(f"/tenants/{tenant}/instances").json()) == seen[user]
            status = root.get(f"/tenants/{tenant}/lua/status").json()
            assert status["Events"]["pending"] == 0
            assert len(status["Workers"]) == 2
            assert all({s["role"]: s["state"] for s in worker["Sandboxes"]}["filter"] == "READY"
                       for worker in status["Workers"])
