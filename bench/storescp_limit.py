"""The reference limit of the ingest rows: DCMTK's ``storescp`` receiving the same files.

``storescp`` parses nothing it does not need, keeps no index and runs no script, so its rate on the
same files, client and machine is what the DICOM transport and the disk allow; a server's "share of
the limit" is its rate divided by this one. It runs with ``--fork`` (one child process per association,
so four associations are received in parallel as by the servers), writes every object into a fresh
temporary directory on the same disk as the servers' storage, with ``TCP_NODELAY=1`` like storescu.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.ingest import store
from tests.support.ports import free_port

AET = "BENCH"


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 10) -> None:
    """Return once something accepts TCP connections on ``port``; fail if ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"storescp exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"storescp did not listen on {port}")


def measure_storescp(files: list[Path], associations: int, warmup: list[Path]) -> float:
    """Instances/s of ``storescp`` for ``files`` over ``associations`` parallel storescu, after ``warmup``
    (the same clock as ``bench.ingest.measure``: first association to last C-STORE response)."""
    with tempfile.TemporaryDirectory(prefix="bench-storescp-") as tmp:
        port = free_port()
        process = subprocess.Popen(["storescp", "--fork", "-aet", AET, "-od", tmp, str(port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "TCP_NODELAY": "1"})
        try:
            wait_listening(port, process)
            store(port, AET, [warmup])
            groups = [files[i::associations] for i in range(associations)]
            seconds = store(port, AET, groups)
            received = len(os.listdir(tmp))
            assert received == len(files) + len(warmup), f"storescp wrote {received} files"
            return len(files) / seconds
        finally:
            process.terminate()
            process.wait(10)
