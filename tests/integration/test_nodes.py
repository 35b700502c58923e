"""Several luabroker nodes on one PostgreSQL index and one storage area (issue 14; docs/postgresql.md,
"Several nodes"): three real ``python -m broker.cli`` servers, each with its own ports, sharing a
throwaway PostgreSQL cluster's database and one folder, as nodes on several machines share a mounted
folder. Instances go to all three; the nodes elect one coordinator, which delivers every event; one node
killed with SIGKILL in the middle of the ingest loses nothing, and its pending events are delivered by
the others; every node gives the same REST answers."""
from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from broker.dicom.sockets import NODELAY_HANDLERS
from tests.support.factory import make_instances
from tests.support.process import START_S, LuabrokerProcess, write_config
from tests.support.s3 import keys
from tests.support.waiting import wait_until

#: Each node's script: every OnStoredInstance says when it begins and ends, and on which node.
SCRIPT = """
function OnStoredInstance(id, tags, metadata, origin)
  HttpPost('{url}/begin/' .. id, '{node}')
  RestApiPut('/instances/' .. id .. '/metadata/Delivered', '{node}')
  HttpPost('{url}/end/' .. id, '{node}')
end
"""


class Deliveries:
    """A loopback HTTP service that the scripts tell of each delivery: ``begins`` and ``ends`` count
    them by instance, ``nodes`` says which nodes delivered each instance, ``overlaps`` lists every
    callback that began while another run of it had begun and not ended (the instance, when, on which
    nodes: a run cut by the death of its node never ends). A delivery takes at least ``pause`` seconds,
    so that an ingest leaves events pending."""

    def __init__(self, pause: float = 0.02) -> None:
        self.begins: Counter[str] = Counter()
        self.ends: Counter[str] = Counter()
        self.nodes: dict[str, list[str]] = {}
        self.overlaps: list[tuple[str, float, list[str]]] = []
        self._running: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        deliveries = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                node = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                _, what, instance = self.path.split("/")
                with deliveries._lock:
                    running = deliveries._running.setdefault(instance, [])
                    if what == "begin":
                        if running:
                            deliveries.overlaps.append((instance, time.monotonic(), list(running)))
                        running.append(node)
                        deliveries.begins[instance] += 1
                        deliveries.nodes.setdefault(instance, []).append(node)
                    else:
                        running.remove(node)
                        deliveries.ends[instance] += 1
                if what == "begin":
                    time.sleep(pause)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self._lock:
            return sum(self.begins.values())

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def deliveries() -> Iterator[Deliveries]:
    service = Deliveries()
    yield service
    service.stop()


def start_node(processes: Any, tmp_path: Path, database: str, url: str, number: int,
               **options: Any) -> LuabrokerProcess:
    """Node ``number`` of the nodes sharing ``database`` and the folder ``tmp_path / "storage"``, serving;
    ``options``: more of its configuration."""
    root = tmp_path / f"node{number}"
    root.mkdir()
    (root / "route.lua").write_text(SCRIPT.format(url=url, node=f"node{number}"))
    write_config(root, Name=f"node{number}", StorageDirectory=str(tmp_path / "storage"), LuaScripts=["route.lua"],
                 UserMetadata={"Delivered": 1024},
                 PostgreSQL={"EnableIndex": True, "ConnectionUri": database, "NodeName": f"node{number}"},
                 **options)
    node = processes(root)
    wait_until(lambda: node.lines("serves DICOM") >= 1 or node.process.poll() is not None, START_S,
               message="a node serving")
    assert node.process.poll() is None, "".join(node.output)
    wait_until(lambda: node.get("/system"), START_S, message="an answer to GET /system")
    return node


def start_nodes(processes: Any, tmp_path: Path, database: str, url: str, count: int = 3,
                **options: Any) -> list[LuabrokerProcess]:
    return [start_node(processes, tmp_path, database, url, number, **options) for number in range(count)]


def coordinator(nodes: list[LuabrokerProcess]) -> LuabrokerProcess:
    """The node whose worker holds the coordinator role (it says so in its log)."""
    wait_until(lambda: sum(node.lines("takes the coordinator role") for node in nodes) >= 1, START_S,
               message="a coordinator elected")
    [holder] = [node for node in nodes if node.lines("takes the coordinator role")]
    return holder


def send(node: LuabrokerProcess, datasets: list[Any]) -> list[int]:
    """C-STORE each dataset on one association to ``node``; the statuses."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.config["DicomPort"], ae_title="LUABROKER", evt_handlers=NODELAY_HANDLERS)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds).Status for ds in datasets]
    finally:
        assoc.release()


def kill_node(node: LuabrokerProcess) -> None:
    """SIGKILL every process of a node at once (supervisor, workers, sandboxes): a machine lost."""
    pids = [node.process.pid]
    for pid in pids:  # the list grows as children are found
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            pids.extend(int(child) for child in children.read_text().split())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.process.wait(timeout=START_S)


def answers(node: LuabrokerProcess, ids: list[str]) -> dict[str, Any]:
    """What a node answers to the routes of the index, and to one of the coordinator's (``/jobs``)."""
    http = node.http
    patients = sorted(http.get("/patients").json())
    return {"instances": sorted(http.get("/instances").json()), "patients": patients,
            "patient": [http.get(f"/patients/{p}").json() for p in patients],
            "studies": sorted(http.get("/studies").json()), "statistics": http.get("/statistics").json(),
            "changes": http.get("/changes", params={"limit": 10000}).json(),
            "delivered": {i: http.get(f"/instances/{i}/metadata/Delivered").status_code for i in ids},
            "find": http.post("/tools/find", json={"Level": "Instance", "Query": {"PatientID": "NODE*"}}).json(),
            "jobs": http.get("/jobs").json()}


def test_three_nodes_share_the_ingest_and_a_killed_node_loses_nothing(processes: Any, tmp_path: Path,
                                                                      postgres_database: str,
                                                                      deliveries: Deliveries) -> None:
    nodes = start_nodes(processes, tmp_path, postgres_database, deliveries.url)
    holder = coordinator(nodes)
    # Every node takes instances; one coordinator delivers every event, whichever node stored it.
    first = make_instances(30, patient_id="NODE_A")
    for number, node in enumerate(nodes):
        assert send(node, first[number * 10:(number + 1) * 10]) == [0] * 10
    wait_until(lambda: deliveries.count() >= 3, message="deliveries under way")

    # The coordinator's node dies in the middle of the ingest and of the deliveries; the others go on
    # receiving, one of them takes the role and delivers what the dead one had not.
    survivors = [node for node in nodes if node is not holder]
    second = make_instances(20, patient_id="NODE_B")
    statuses: list[list[int]] = []
    senders = [threading.Thread(target=lambda n=n, i=i: statuses.append(send(n, second[i * 10:(i + 1) * 10])))
               for i, n in enumerate(survivors)]
    for sender in senders:
        sender.start()
    kill_node(holder)
    killed = time.monotonic()
    for sender in senders:
        sender.join(START_S)
    assert statuses == [[0] * 10, [0] * 10]

    ids = sorted(survivors[0].http.get("/instances").json())
    assert len(ids) == 50  # every acknowledged instance, stored once
    wait_until(lambda: len(deliveries.ends) == 50, 120, message="every OnStoredInstance delivered")
    successor = coordinator(survivors)
    assert set(deliveries.begins) == set(ids)  # at least once each
    # Never twice at the same time: a second run began only after the first ended, or after its node died.
    dead = holder.config["Name"]
    assert [o for o in deliveries.overlaps if o[1] < killed or set(o[2]) != {dead}] == []
    # The events of the first batch that the dead coordinator had not delivered (of instances stored on
    # every node, the dead one's included) were delivered by its successor.
    alive = successor.config["Name"]
    first_ids = survivors[0].http.post("/tools/find", json={"Level": "Instance",
                                                            "Query": {"PatientID": "NODE_A"}}).json()
    assert len(first_ids) == 30
    assert any(deliveries.nodes[i][-1] == alive for i in first_ids)
    assert all(set(nodes_of) <= {dead, alive} for nodes_of in deliveries.nodes.values())
    wait_until(lambda: successor.get("/lua/status")["Events"]["pending"] == 0, message="no event pending")

    # Every node gives the same answers, the coordinator's routes included (forwarded to it).
    first_answers, second_answers = (answers(node, ids) for node in survivors)
    assert first_answers == second_answers
    assert set(first_answers["delivered"].values()) == {200}
    assert len(first_answers["find"]) == 50


def test_the_nodes_answer_alike_share_jobs_and_settings_and_each_has_its_own_lock(
        processes: Any, tmp_path: Path, postgres_database: str, deliveries: Deliveries) -> None:
    nodes = start_nodes(processes, tmp_path, postgres_database, deliveries.url, count=2)
    assert send(nodes[1], make_instances(4, patient_id="NODE_C")) == [0] * 4
    ids = sorted(nodes[0].http.get("/instances").json())
    wait_until(lambda: len(deliveries.ends) == 4, message="every OnStoredInstance delivered")
    assert answers(nodes[0], ids) == answers(nodes[1], ids)
    # A job submitted on either node is the coordinator's, listed by both.
    archive = nodes[1].http.post(f"/patients/{answers(nodes[0], ids)['patients'][0]}/archive",
                                 json={"Asynchronous": True}).json()
    wait_until(lambda: nodes[0].get(f"/jobs/{archive['ID']}") is not None, message="the job seen by both")
    assert nodes[0].get("/jobs") == nodes[1].get("/jobs")
    # A setting changed over HTTP on one node is the cluster's: every node applies it, and so does a
    # node started later.
    modality = {"AET": "PACS", "Host": "127.0.0.1", "Port": 104}
    assert nodes[1].http.put("/modalities/pacs", json=modality).status_code == 200
    assert nodes[0].http.put("/tools/default-encoding", content="Latin1").status_code == 200
    for node in nodes:
        wait_until(lambda node=node: "pacs" in (node.get("/modalities") or [])
                   and node.http.get("/tools/default-encoding").text == "Latin1", message="the settings applied")
    late = start_node(processes, tmp_path, postgres_database, deliveries.url, 2)
    assert late.get("/modalities") == ["pacs"]
    assert late.http.get("/tools/default-encoding").text == "Latin1"
    # POST /lua/reload reloads every node's scripts (each from its own files), not only the node of the
    # coordinator: a filter added there applies to the instances that the other nodes receive.
    blocking = "function ReceivedInstanceFilter(tags) return tags.PatientID ~= 'BLOCKED' end\n"
    for number in range(3):
        script = tmp_path / f"node{number}" / "route.lua"
        script.write_text(blocking + script.read_text())
    holder = coordinator(nodes)
    assert holder.http.post("/lua/reload").status_code == 200
    others = [node for node in (*nodes, late) if node is not holder]
    for node in others:
        wait_until(lambda node=node: node.lines("Lua scripts reloaded (POST /lua/reload on node") >= 1,
                   message="the other nodes reloaded")
    for node in others:  # filtered out: answered as a success (as Orthanc does), and not stored
        assert send(node, make_instances(1, patient_id="BLOCKED")) == [0]
    assert holder.http.post("/tools/find", json={"Level": "Instance", "Query": {"PatientID": "BLOCKED"}}).json() == []
    # Each node has its own lock in the shared folder; another node of the same name is refused.
    storage = tmp_path / "storage"
    assert {path.name for path in storage.glob("server-*.lock")} == {f"server-node{n}.lock" for n in range(3)}
    twin = tmp_path / "twin"
    twin.mkdir()
    write_config(twin, StorageDirectory=str(storage),
                 PostgreSQL={"EnableIndex": True, "ConnectionUri": postgres_database, "NodeName": "node1"})
    refused = processes(twin)
    assert refused.wait_exit() == 1
    assert any("used by another luabroker" in line for line in refused.output), refused.output


def test_a_coordinator_whose_lease_is_taken_over_gives_the_role_up(processes: Any, tmp_path: Path,
                                                                   postgres_database: str,
                                                                   deliveries: Deliveries) -> None:
    """The session that holds the lease ends (a network cut between that node and PostgreSQL) and someone
    else takes the lease at once (here the test itself, so that the old holder cannot take it back):
    the old holder, which can no longer know that it holds it, exits; its supervisor starts it again as
    a worker that waits, and once the lease is free a coordinator is elected again and delivers."""
    nodes = start_nodes(processes, tmp_path, postgres_database, deliveries.url, count=2)
    holder = coordinator(nodes)
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        [(session,)] = admin.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                     "AND objid = 0 AND objsubid = 2").fetchall()
        taken = admin.execute("SELECT pg_terminate_backend(%s, 10000), "
                              "pg_try_advisory_lock(hashtext('luabroker:coordinator'), 0)", (session,)).fetchone()
        if taken != (True, True):  # the other node was quicker: then it is the new coordinator
            assert taken is not None and taken[0]
        wait_until(lambda: holder.lines("giving the role up") == 1, START_S, message="the old holder gives it up")
        wait_until(lambda: holder.lines("serves DICOM") == 2, START_S, message="its worker started again")
    assert holder.process.poll() is None
    wait_until(lambda: sum(node.lines("takes the coordinator role") for node in nodes) == 2, START_S,
               message="a coordinator elected again")
    # The cluster goes on: an instance sent to the old holder's node is delivered by the new coordinator.
    assert send(holder, make_instances(1, patient_id="NODE_D")) == [0]
    wait_until(lambda: len(deliveries.ends) == 1, message="delivered")


def test_nodes_share_a_bucket_as_their_storage_area(processes: Any, tmp_path: Path, postgres_database: str,
                                                    deliveries: Deliveries, s3_bucket: dict[str, Any]) -> None:
    """The storage area shared as S3-compatible object storage instead of a mounted folder."""
    nodes = start_nodes(processes, tmp_path, postgres_database, deliveries.url, count=2, AwsS3Storage=s3_bucket)
    [dataset] = make_instances(1, patient_id="NODE_S3")
    assert send(nodes[1], [dataset]) == [0]
    [instance] = nodes[0].http.get("/instances").json()
    files = [node.http.get(f"/instances/{instance}/file").content for node in nodes]
    assert files[0] == files[1] and pydicom.dcmread(io.BytesIO(files[0])).SOPInstanceUID == dataset.SOPInstanceUID
    assert len(keys(s3_bucket)) >= 1
    assert not [path for path in (tmp_path / "storage").rglob("*") if path.is_file() and len(path.name) == 36]
    wait_until(lambda: len(deliveries.ends) == 1, message="delivered")
