"""A real luabroker in this process: HTTP on a free loopback port, DICOM on another, real sandboxes.

The ``luabroker`` fixture starts as many as a test asks for; ``echo`` and ``metric`` ask a running one
over DICOM and HTTP as a client would.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification  # type: ignore[attr-defined]

from broker.config import Config
from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor
from broker.server import Server, run_in_thread
from tests.support.ports import free_port
from tests.support.postgres import on_postgresql


@dataclass
class Running:
    server: Server
    root: Path
    http: httpx.Client
    thread: threading.Thread

    def client(self, auth: tuple[str, str] | None = None) -> httpx.Client:
        """Another HTTP client (e.g. with other credentials); closed by the caller."""
        return httpx.Client(base_url=self.http.base_url, timeout=60, auth=auth)

    @property
    def dicom_port(self) -> int:
        return self.server.config.dicom_port

    @property
    def aet(self) -> str:
        return self.server.config.dicom_aet

    def execute(self, source: str) -> httpx.Response:
        return self.http.post("/tools/execute-script", content=source.encode())

    def stop(self, timeout: float = 30.0) -> None:
        """A clean stop, as on SIGTERM (the fixture's teardown then has nothing left to do)."""
        self.server.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server did not stop"

    def wait_events(self, timeout: float = 30.0, tenant: str = "default") -> None:
        assert self.server.tenancy.by_name[tenant].dispatcher.wait_idle(timeout), "events still pending"

    def c_store(self, datasets: list[Any], calling_aet: str = "STORESCU", called_aet: str | None = None,
                port: int | None = None) -> list[int]:
        """Send ``datasets`` over one pynetdicom association (to ``called_aet`` on ``port``, by default
        the server's); the statuses, in order."""
        ae = AE(ae_title=calling_aet)
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(MRImageStorage)
        assoc = ae.associate("127.0.0.1", port or self.dicom_port, ae_title=called_aet or self.aet,
                             evt_handlers=NODELAY_HANDLERS)
        assert assoc.is_established
        try:
            statuses = []
            for ds in datasets:
                pause_reactor(assoc)  # else, on a loaded machine, pynetdicom can lose a response
                statuses.append(assoc.send_c_store(ds).Status)
            return statuses
        finally:
            assoc.release()


@pytest.fixture
def luabroker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Running]]:
    """``luabroker(scripts={"name.lua": source}, **options)`` starts a server; stopped at teardown.
    With ``LUABROKER_TEST_INDEX=postgresql``, its index is in PostgreSQL (``tests/support/postgres.py``)."""
    started: list[tuple[Server, Any, httpx.Client]] = []

    def start(scripts: dict[str, str] | None = None, **options: Any) -> Running:
        root = tmp_path / f"server{len(started)}"
        root.mkdir()
        for name, source in (scripts or {}).items():
            (root / name).write_text(source)
        raw = {"Name": "test", "HttpPort": free_port(), "DicomPort": free_port(), "DicomAet": "LUABROKER",
               "StorageDirectory": "storage", "LuaScripts": list(scripts or {}),
               "LuaSandbox": {"CallTimeout": 2, "HardTimeout": 6}}
        raw = on_postgresql({**raw, **options}, root)
        (root / "config.json").write_text(json.dumps(raw))
        server = Server(Config.load(root / "config.json"))
        thread = run_in_thread(server)
        client = httpx.Client(base_url=f"http://127.0.0.1:{raw['HttpPort']}", timeout=60)
        started.append((server, thread, client))
        return Running(server, root, client, thread)

    yield start
    for server, thread, client in started:
        client.close()
        server.request_stop()
        thread.join(timeout=30)


def echo(running: Running) -> int:
    """C-ECHO over a fresh association; the status (or -1 if no association)."""
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running.dicom_port, ae_title=running.aet, evt_handlers=NODELAY_HANDLERS)
    if not assoc.is_established:
        return -1
    try:
        pause_reactor(assoc)  # else, on a loaded machine, pynetdicom can lose the response
        return assoc.send_c_echo().Status
    finally:
        assoc.release()


def metrics(running: Running) -> dict[tuple[str, frozenset], float]:
    """Every sample of the metrics endpoint: (name, labels) → value."""
    answer = running.http.get("/tools/metrics-prometheus")
    assert answer.status_code == 200, answer.text
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric(running: Running, name: str, **labels: str) -> float:
    return metrics(running).get((name, frozenset(labels.items())), 0.0)
