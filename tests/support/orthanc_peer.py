"""A real Orthanc (the Debian package) started on free ports in a temporary directory.

Used as the reference peer: tests upload the same files to it and to luabroker and compare answers.
``OrthancPeer.create(**options).start()`` returns once ``/system`` answers; ``stop()`` terminates it
(SIGTERM, then SIGKILL) and removes its directory. The session fixture ``orthanc_peer`` shares one
(per xdist worker); ``OrthancPeer.create().with_recorder()`` gives one whose ``OnStoredInstance``
arguments can be read back with ``stored_events()``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ports import free_port

ORTHANC_BINARY = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)

# A Lua script for Orthanc that appends the arguments of each OnStoredInstance to stored.jsonl.
RECORDER_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  local f = io.open('stored.jsonl', 'a')
  f:write(DumpJson({ID = instanceId, Tags = tags, Metadata = metadata, Origin = origin}) .. '\\n')
  f:close()
end
"""


@dataclass
class OrthancPeer:
    """One running Orthanc. ``client`` is an ``httpx.Client`` on its REST API."""

    workdir: Path
    http_port: int
    dicom_port: int
    aet: str = "ORTHANCPEER"
    extra_config: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @classmethod
    def create(cls, **extra_config: Any) -> OrthancPeer:
        if ORTHANC_BINARY is None:
            raise FileNotFoundError("Orthanc is not installed (apt-get install orthanc)")
        return cls(Path(tempfile.mkdtemp(prefix="orthanc-peer-")), free_port(), free_port(), extra_config=extra_config)

    def config(self) -> dict[str, Any]:
        return {
            "Name": "OrthancPeer",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "StableAge": 1,
            **self.extra_config,
        }

    def with_recorder(self) -> OrthancPeer:
        """Install ``RECORDER_LUA`` (call before ``start``)."""
        script = self.workdir / "recorder.lua"
        script.write_text(RECORDER_LUA)
        self.extra_config["LuaScripts"] = [str(script)]
        return self

    def stored_events(self) -> list[dict[str, Any]]:
        """What the recorder saw, oldest first (Lua drops null values: absent keys)."""
        path = self.workdir / "stored.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def start(self, timeout: float = 30.0) -> OrthancPeer:
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        log = open(self.workdir / "orthanc.log", "wb")
        self.process = subprocess.Popen([ORTHANC_BINARY, str(config_path)], stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.workdir, start_new_session=True)
        self.client = httpx.Client(base_url=self.url, timeout=30.0)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.workdir / 'orthanc.log'}")
            try:
                if self.client.get("/system").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Orthanc did not answer within {timeout} s; see {self.workdir / 'orthanc.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    # Convenience for tests.
    def upload(self, data: bytes) -> dict[str, Any]:
        answer = self.client.post("/instances", content=data)
        answer.raise_for_status()
        return answer.json()

    def get(self, path: str, **params: Any) -> Any:
        answer = self.client.get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    def clear(self) -> None:
        """Delete every patient, so that tests start from an empty peer."""
        for patient in self.get("/patients"):
            self.client.delete(f"/patients/{patient}")


@pytest.fixture(scope="session")
def orthanc_peer() -> Iterator[OrthancPeer]:
    """A real Orthanc shared by the session (one per xdist worker): it takes a second to start.

    Tests that need an empty peer call ``orthanc_peer.clear()``. Skipped when Orthanc is not installed.
    """
    if ORTHANC_BINARY is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc); comparison tests need it")
    peer = OrthancPeer.create().start()
    try:
        yield peer
    finally:
        peer.stop()
