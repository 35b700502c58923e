"""A real ``luabroker`` process (``python -m broker.cli config.json``), for the tests that stop, kill or
restart the whole server: ``write_config`` writes its configuration, the ``processes`` fixture starts
it (and stops what still runs at teardown)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.postgres import on_postgresql
from tests.support.waiting import wait_until

REPOSITORY = Path(__file__).resolve().parents[2]

#: Generous: a start or a stop of a server with its sandboxes on a loaded machine (many xdist workers).
START_S = 60


class LuabrokerProcess:
    """``python -m broker.cli config.json`` in ``root``, its output gathered line by line."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config: dict[str, Any] = json.loads((root / "config.json").read_text())
        self.process = subprocess.Popen([sys.executable, "-m", "broker.cli", str(root / "config.json")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        cwd=REPOSITORY)
        self.output: list[str] = []
        self._reader = threading.Thread(target=lambda: self.output.extend(self.process.stdout),  # type: ignore[arg-type]
                                        daemon=True)
        self._reader.start()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.config['HttpPort']}", timeout=60)

    def lines(self, text: str) -> int:
        return sum(text in line for line in list(self.output))

    def get(self, path: str) -> Any:
        """The JSON answer, or None while the server does not answer (stopped, restarting)."""
        try:
            answer = self.http.get(path)
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def wait_ready(self, count: int = 1) -> None:
        """Wait until the server has been ready ``count`` times (once per start, resets included)."""
        wait_until(lambda: self.lines("luabroker is ready") >= count or self.process.poll() is not None,
                   START_S, message=f"start number {count}")
        assert self.process.poll() is None, "".join(self.output)
        wait_until(lambda: self.get("/system"), START_S, message="an answer to GET /system")

    def wait_exit(self) -> int:
        status = self.process.wait(timeout=START_S)
        self._reader.join(timeout=10)
        self.http.close()
        return status

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=START_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.http.close()


@pytest.fixture
def processes() -> Any:
    """Start ``LuabrokerProcess``es; whatever still runs at teardown gets SIGTERM."""
    started: list[LuabrokerProcess] = []

    def start(root: Path) -> LuabrokerProcess:
        started.append(LuabrokerProcess(root))
        return started[-1]

    yield start
    for process in started:
        process.close()


def write_config(root: Path, **options: Any) -> dict[str, Any]:
    """A configuration of one process (``Workers: 1``) unless ``options`` say otherwise; its index in
    PostgreSQL with ``LUABROKER_TEST_INDEX=postgresql`` (``tests/support/postgres.py``)."""
    config = on_postgresql({"Name": "first", "HttpPort": free_port(), "DicomPort": free_port(), "DicomAet": "LUABROKER",
                            "StorageDirectory": "storage", "LuaSandbox": {"CallTimeout": 2, "HardTimeout": 6},
                            "Workers": 1, **options}, root)
    (root / "config.json").write_text(json.dumps(config))
    return config

