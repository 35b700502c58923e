"""Several luabroker nodes on one PostgreSQL (issue 14; docs/postgresql.md): the demo and the benchmark.

Starts a throwaway PostgreSQL cluster from Debian's ``postgresql`` package (``initdb`` in a temporary
folder, as ``tests/support/postgres.py`` does), then N brokers on this machine, each with its own
DICOM and HTTP ports and its own ``NodeName``, sharing the database and one storage folder (what a
mounted folder is to nodes on several machines). DCMTK's ``storescu`` spreads the ingest over the
nodes (``TCP_NODELAY=1``). Each node's ``OnStoredInstance`` writes its own name in the instance's
``DeliveredBy`` metadata, so that the index says which node delivered each event; ``CalledAET`` (each
node has its own AET) says which node received the instance.

    python -m bench.nodes demo [--count 60]                 # make scale-demo: 3 nodes, where it all went
    python -m bench.nodes bench [--count 600] [--rounds 3]   # instances/s with 1, 2 and 3 nodes
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.ingest import store
from tests.support.factory import make_instances, write_files
from tests.support.ports import free_port
from tests.support.postgres import new_database, start_cluster, stop_cluster

SCRIPT = """
function OnStoredInstance(id, tags, metadata, origin)
  RestApiPut('/instances/' .. id .. '/metadata/DeliveredBy', '{node}')
end
"""


@dataclass
class Node:
    name: str
    aet: str
    http: int
    dicom: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"


def start_node(number: int, workdir: Path, database: str | None, workers: int) -> Node:
    """Node ``number``; ``database``: None for a server of its own on SQLite (the reference)."""
    name, aet, http, dicom = f"node{number}", f"NODE{number}", free_port(), free_port()
    root = workdir / name
    root.mkdir()
    (root / "deliver.lua").write_text(SCRIPT.format(node=name))
    config = {"Name": name, "HttpPort": http, "DicomPort": dicom, "DicomAet": aet, "Workers": workers,
              "StorageDirectory": str(workdir / "storage"), "LuaScripts": [str(root / "deliver.lua")],
              "UserMetadata": {"DeliveredBy": 1024}, "RemoteAccessAllowed": True, "AuthenticationEnabled": False,
              **({"PostgreSQL": {"EnableIndex": True, "ConnectionUri": database, "NodeName": name}}
                 if database else {})}
    (root / "config.json").write_text(json.dumps(config))
    log = root / "server.log"
    process = subprocess.Popen([sys.executable, "-m", "broker.cli", str(root / "config.json")], cwd=root,
                               stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True)
    return Node(name, aet, http, dicom, process, log)


def wait_serving(nodes: list[Node]) -> None:
    deadline = time.monotonic() + 90
    for node in nodes:
        while True:
            try:
                if httpx.get(f"{node.url}/system", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if node.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} did not start; its log:\n{node.log.read_text()[-2000:]}")
            time.sleep(0.1)


def coordinator(nodes: list[Node]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for node in nodes:
            if "takes the coordinator role" in node.log.read_text(errors="replace"):
                return node.name
        time.sleep(0.1)
    raise RuntimeError("no node took the coordinator role")


def wait_delivered(node: Node, timeout: float = 600) -> float:
    """Wait until no event is pending; returns when (``time.perf_counter``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = httpx.get(f"{node.url}/lua/status", timeout=60).json()["Events"]
        if events["pending"] == 0:
            return time.perf_counter()
        time.sleep(0.05)
    raise RuntimeError("events still pending")


@contextmanager
def cluster_of(count: int, workers: int, sqlite: bool = False) -> Iterator[tuple[list[Node], Path]]:
    """A PostgreSQL cluster and ``count`` nodes on one new database, stopped at the end (``sqlite``: one
    server on SQLite instead, the reference)."""
    cluster = start_cluster()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-nodes-") as tmp:
            workdir = Path(tmp)
            database = None if sqlite else new_database(cluster)
            nodes = [start_node(number, workdir, database, workers) for number in range(count)]
            try:
                wait_serving(nodes)
                yield nodes, workdir
            finally:
                for node in nodes:
                    node.process.terminate()
                for node in nodes:
                    try:
                        node.process.wait(60)
                    except subprocess.TimeoutExpired:
                        node.process.kill()
    finally:
        stop_cluster(cluster)


def ingest(nodes: list[Node], files: list[Path], associations: int) -> float:
    """Spread ``files`` over ``associations`` storescu runs, round robin over the nodes; seconds."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    began = time.perf_counter()
    runs = []
    for index in range(associations):
        node = nodes[index % len(nodes)]
        runs.append(subprocess.Popen(["storescu", "-aec", node.aet, "127.0.0.1", str(node.dicom),
                                      *map(str, files[index::associations])], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for run in runs:
        _, err = run.communicate()
        if run.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - began


def demo(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="scale-demo-files-") as tmp:
        files = write_files(make_instances(count, series=3, patient_id="DEMO"), Path(tmp))
        print("Starting PostgreSQL (a throwaway cluster) and three luabroker nodes ...", flush=True)
        with cluster_of(3, workers=1) as (nodes, workdir):
            print(f"  coordinator: {coordinator(nodes)}")
            for node in nodes:
                print(f"  {node.name}: DICOM {node.aet} on port {node.dicom}, HTTP on {node.http}")
            print(f"Sending {count} instances with storescu, spread over the three nodes ...", flush=True)
            ingest(nodes, files, 3)
            wait_delivered(nodes[0])
            ids = httpx.get(f"{nodes[0].url}/instances", timeout=60).json()
            received: Counter[str] = Counter()
            delivered: Counter[str] = Counter()
            where = []
            with httpx.Client(base_url=nodes[1].url, timeout=60) as http:
                for instance in ids:
                    called = http.get(f"/instances/{instance}/metadata/CalledAET").text
                    by = http.get(f"/instances/{instance}/metadata/DeliveredBy").text
                    received[called] += 1
                    delivered[by] += 1
                    where.append((instance, called, by))
            print(f"\n{'instance':<46} {'received by':<12} {'OnStoredInstance ran on'}")
            for instance, called, by in where[:10]:
                print(f"{instance:<46} {called:<12} {by}")
            if len(where) > 10:
                print(f"... and {len(where) - 10} more")
            print(f"\n{'node':<8} {'instances received':>20} {'events delivered':>18}")
            for node in nodes:
                print(f"{node.name:<8} {received[node.aet]:>20} {delivered[node.name]:>18}")
            same = all(httpx.get(f"{node.url}/statistics", timeout=60).json()
                       == httpx.get(f"{nodes[0].url}/statistics", timeout=60).json() for node in nodes)
            print(f"\n{len(ids)} instances stored; every node answers the same /statistics: {same}")
            print(f"(storage folder shared by the nodes: {workdir / 'storage'})")


def cpu_seconds(sessions: set[int]) -> dict[str, float]:
    """CPU time (user + system) of the live processes: of the brokers (their sessions), of PostgreSQL's."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {"brokers": 0.0, "postgresql": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            command = (stat.parent / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        seconds = (int(fields[11]) + int(fields[12])) / ticks
        if int(fields[3]) in sessions:
            totals["brokers"] += seconds
        elif command.startswith(b"postgres"):
            totals["postgresql"] += seconds
    return totals


@dataclass
class Sample:
    stored: float     # instances/s acknowledged
    delivered: float  # instances/s with every OnStoredInstance run
    cpu: dict[str, float]  # cores busy on average until every event was delivered, by kind


def measure(count_nodes: int, files: list[Path], warmup: list[Path], associations: int, workers: int,
            sqlite: bool = False) -> Sample:
    with cluster_of(count_nodes, workers, sqlite) as (nodes, _):
        if not sqlite:
            coordinator(nodes)
        store(nodes[0].dicom, nodes[0].aet, [warmup])
        wait_delivered(nodes[0])
        sessions = {node.process.pid for node in nodes}
        before = cpu_seconds(sessions)
        began = time.perf_counter()
        seconds = ingest(nodes, files, associations)
        delivered = wait_delivered(nodes[0]) - began
        after = cpu_seconds(sessions)
        stored = len(httpx.get(f"{nodes[0].url}/instances", timeout=60).json())
        assert stored == len(files) + len(warmup), f"{stored} instances stored"
        return Sample(len(files) / seconds, len(files) / delivered,
                      {kind: (after[kind] - before[kind]) / delivered for kind in after})


def bench(count: int, rounds: int, associations: int, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-nodes-files-") as tmp:
        files = write_files(make_instances(count, series=5), Path(tmp) / "data")
        warmup = write_files(make_instances(10, patient_id="WARMUP"), Path(tmp) / "warmup")
        print(f"C-STORE of {count} small CT instances, {associations} associations spread over the nodes, "
              f"Workers {workers} per node, OnStoredInstance writing a metadata; PostgreSQL index; "
              f"median of {rounds} rounds on {os.cpu_count()} cores")
        print(f"{'nodes':>5} {'stored/s':>9} {'delivered/s':>12} {'vs 1 node':>10} {'cores: brokers':>15} "
              f"{'PostgreSQL':>11}")
        first = None
        for count_nodes, sqlite in ((1, True), (1, False), (2, False), (3, False)):
            samples = [measure(count_nodes, files, warmup, associations, workers, sqlite) for _ in range(rounds)]
            stored = statistics.median(sample.stored for sample in samples)
            delivered = statistics.median(sample.delivered for sample in samples)
            brokers = statistics.median(sample.cpu["brokers"] for sample in samples)
            postgresql = statistics.median(sample.cpu["postgresql"] for sample in samples)
            if sqlite:
                print(f"{'SQLite':>5} {stored:>9.0f} {delivered:>12.0f} {'':>10} {brokers:>15.2f} {'':>11}", flush=True)
                continue
            first = first or stored
            print(f"{count_nodes:>5} {stored:>9.0f} {delivered:>12.0f} {stored / first:>10.2f} {brokers:>15.2f} "
                  f"{postgresql:>11.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("what", choices=("demo", "bench"))
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--associations", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1, help="Workers of each node")
    args = parser.parse_args()
    if args.what == "demo":
        demo(args.count or 60)
    else:
        bench(args.count or 600, args.rounds, args.associations, args.workers)


if __name__ == "__main__":
    main()
