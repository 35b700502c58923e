"""The coordinator lease: one server per storage directory, released by a clean stop and by the death
of its holder, however it dies."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.config import Config
from broker.config.postgresql import PostgresSettings
from broker.core.lease import CoordinatorLease, ServerLock, StorageInUse
from broker.server import Server
from tests.support.waiting import wait_until

HOLD = """
import sys, time
from pathlib import Path
from broker.core.lease import CoordinatorLease
lease = CoordinatorLease(Path(sys.argv[1]))
lease.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_holder_is_refused_with_the_pid_of_the_first(tmp_path: Path) -> None:
    first = CoordinatorLease(tmp_path)
    first.acquire()
    with pytest.raises(StorageInUse, match=f"pid {os.getpid()}"):
        CoordinatorLease(tmp_path).acquire()
    first.release()
    again = CoordinatorLease(tmp_path)
    again.acquire()
    assert again.held
    again.release()


def test_the_lease_of_a_killed_process_is_free(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[3])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StorageInUse, match=f"pid {holder.pid}"):
            CoordinatorLease(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        lease = CoordinatorLease(tmp_path)
        wait_until(lambda: _acquired(lease), message="the lease of the killed process was not released")
        lease.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def _acquired(lease: CoordinatorLease) -> bool:
    try:
        lease.acquire()
    except StorageInUse:
        return False
    return True


def test_a_second_server_on_the_same_storage_refuses_to_start(tmp_path: Path, luabroker: Any) -> None:
    storage = tmp_path / "shared-storage"
    first = luabroker(StorageDirectory=str(storage))
    config = tmp_path / "second.json"
    config.write_text(f'{{"StorageDirectory": "{storage}", "HttpPort": 0, "DicomPort": 0}}')
    with pytest.raises(StorageInUse, match="one server per storage directory"):
        Server(Config.load(config))
    assert first.http.get("/system").status_code == 200  # the first one is not disturbed
    first.server.request_stop()
    first.thread.join(30)
    second = Server(Config.load(config))  # free once the first has stopped
    second.lease.release()
    second.server_lock.release()


def test_nodes_of_a_postgresql_cluster_share_a_storage_area_but_not_a_name(tmp_path: Path) -> None:
    """With the index in PostgreSQL several nodes serve one folder, each under its own name; a server on
    SQLite may not start there meanwhile, nor a node while such a server runs."""
    def node(name: str) -> Config:
        return Config(storage_directory=tmp_path, postgresql=PostgresSettings(enable_index=True, node_name=name))

    first, second = ServerLock.of(node("a")), ServerLock.of(node("b"))
    first.acquire()
    second.acquire()
    with pytest.raises(StorageInUse):
        ServerLock.of(node("a")).acquire()
    alone = ServerLock.of(Config(storage_directory=tmp_path))
    with pytest.raises(StorageInUse):
        alone.acquire()
    first.release()
    second.release()
    alone.acquire()
    with pytest.raises(StorageInUse):
        ServerLock.of(node("c")).acquire()
    alone.release()
