"""Receivers for the jobs tests: a DCMTK ``storescp`` on a free port, and waiting helpers."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pydicom

from orthanc_peer import free_port

STORESCP = shutil.which("storescp")


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``condition()`` until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message} (last value: {value!r})")
        time.sleep(interval)


@dataclass
class StoreScp:
    """``storescp`` (DCMTK) writing every received instance to ``directory``."""

    directory: Path
    port: int
    aet: str = "STORESCP"
    process: subprocess.Popen | None = None

    @classmethod
    def start(cls, directory: Path, aet: str = "STORESCP", port: int | None = None) -> "StoreScp":
        if STORESCP is None:
            raise FileNotFoundError("storescp (DCMTK) is not installed")
        directory.mkdir(parents=True, exist_ok=True)
        receiver = cls(directory, port or free_port(), aet)
        env = {**os.environ, "TCP_NODELAY": "1"}
        receiver.process = subprocess.Popen(
            [STORESCP, "--aetitle", aet, "--output-directory", str(directory), "+xa", str(receiver.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_until(receiver._listening, timeout=10, message="storescp to listen")
        return receiver

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"storescp exited with {self.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def received(self) -> list[pydicom.Dataset]:
        """Every instance received so far (files completely written), by SOP Instance UID."""
        datasets = []
        for path in sorted(self.directory.iterdir()):
            try:
                datasets.append(pydicom.dcmread(path))
            except Exception:  # still being written
                continue
        return datasets

    def modality(self) -> list[Any]:
        """The ``DicomModalities`` entry of this receiver."""
        return [self.aet, "127.0.0.1", self.port]
