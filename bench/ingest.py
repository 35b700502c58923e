"""Ingest benchmark: C-STORE of small CT instances into luabroker and into a real Orthanc, same run.

Both servers load the same Lua script: a ``ReceivedInstanceFilter`` and an ``OnStoredInstance`` that
calls ``RestApiGet``. DCMTK's ``storescu`` is the client (with ``TCP_NODELAY=1``), one process per
association; the clock runs from the first association to the last C-STORE response. Each server is
started fresh (new storage) as a separate process. Prints instances/s and luabroker/Orthanc ratios.

    python -m bench.ingest [--count 500] [--rounds 3]

Run from the repository root: the instance factory and the free ports are the tests' (``tests.support``).
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
from pathlib import Path

import httpx

from tests.support.factory import make_instances, write_files
from tests.support.orthanc_peer import ORTHANC_BINARY
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
function ReceivedInstanceFilter(tags, origin, info)
  return tags.Modality == 'CT'
end

function OnStoredInstance(instanceId, tags, metadata, origin)
  local instance = RestApiGet('/instances/' .. instanceId)
  if instance == nil then error('RestApiGet failed for ' .. instanceId) end
end
"""


def start(kind: str, workdir: Path, script: str = SCRIPT, workers: int = 1,
          **options: object) -> tuple[subprocess.Popen, int, int, str]:
    """A fresh server (``kind``: luabroker or orthanc) with ``script`` and ``options`` in its configuration
    (``workers``: luabroker's ``Workers``); returns the process, its HTTP and DICOM ports and its AET
    once ``/system`` answers."""
    http, dicom, aet = free_port(), free_port(), "BENCH"
    (workdir / "bench.lua").write_text(script)
    config = {"Name": kind, "HttpPort": http, "DicomPort": dicom, "DicomAet": aet,
              "StorageDirectory": str(workdir / "storage"), "IndexDirectory": str(workdir / "storage"),
              "LuaScripts": [str(workdir / "bench.lua")], "RemoteAccessAllowed": True,
              "AuthenticationEnabled": False, "Plugins": [], **({"Workers": workers} if kind == "luabroker" else {}),
              **options}
    (workdir / "config.json").write_text(json.dumps(config))
    command = ([ORTHANC_BINARY] if kind == "orthanc" else [sys.executable, "-m", "broker.cli"])
    # Orthanc's DICOM stack is DCMTK, which reads TCP_NODELAY from the environment like storescu.
    process = subprocess.Popen([*command, str(workdir / "config.json")], cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=open(workdir / "server.log", "wb"), start_new_session=True,
                               env={**os.environ, "TCP_NODELAY": "1"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http}/system", timeout=1).status_code == 200:
                return process, http, dicom, aet
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    process.wait(30)
    # The log's end in the message: the working directory is usually a temporary one, gone by the time
    # anyone reads the error.
    log_tail = (workdir / "server.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{kind} did not start within 60 s; the end of its log:\n{log_tail}")


def store(dicom: int, aet: str, groups: list[list[Path]]) -> float:
    """Run one storescu per group in parallel; seconds from start to the last response."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    began = time.perf_counter()
    runs = [subprocess.Popen(["storescu", "-aec", aet, "127.0.0.1", str(dicom), *map(str, files)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for files in groups]
    for run in runs:
        _, err = run.communicate()
        if run.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - began


def measure(kind: str, files: list[Path], associations: int, warmup: list[Path], workers: int = 1) -> float:
    """Instances per second into a fresh server; ``workers``: luabroker's ``Workers`` option."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        process, http, dicom, aet = start(kind, Path(tmp), workers=workers)
        try:
            store(dicom, aet, [warmup])
            groups = [files[i::associations] for i in range(associations)]
            seconds = store(dicom, aet, groups)
            stored = len(httpx.get(f"http://127.0.0.1:{http}/instances", timeout=60).json())
            assert stored == len(files) + len(warmup), f"{kind} stored {stored} instances"
            return len(files) / seconds
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if ORTHANC_BINARY is None:
        sys.exit("Orthanc is not installed (apt-get install orthanc)")
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        files = write_files(make_instances(args.count, series=5), Path(tmp) / "data")
        warmup = write_files(make_instances(20, patient_id="WARMUP"), Path(tmp) / "warmup")
        print(f"C-STORE of {args.count} small CT instances (CT_small.dcm, {files[0].stat().st_size} bytes), "
              f"Lua filter + OnStoredInstance calling RestApiGet; median of {args.rounds} rounds")
        print(f"{'associations':>12} {'luabroker/s':>12} {'Orthanc/s':>10} {'ratio':>6}")
        for associations in (1, 4):
            ours, theirs = [], []
            for _ in range(args.rounds):  # interleaved, so both see the same machine load
                ours.append(measure("luabroker", files, associations, warmup))
                theirs.append(measure("orthanc", files, associations, warmup))
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"{associations:>12} {a:>12.0f} {b:>10.0f} {a / b:>6.2f}")


if __name__ == "__main__":
    main()
