"""Real receivers for the tests that send, all on 127.0.0.1: DCMTK's storescp, a pynetdicom SCP that
records its associations, and a small HTTP service that records its requests; with their fixtures."""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from broker.dicom.sockets import NODELAY_HANDLERS
from tests.support.ports import free_port

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
HAS_DCMTK = shutil.which("storescp") is not None


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (read from /proc, so the listener sees nothing)."""
    wanted = f"0100007F:{port:04X}"
    wanted_any = f"00000000:{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and (parts[1] in (wanted, wanted_any) or parts[1].endswith(f":{port:04X}")):
                return True
    return False


class StoreScpProcess:
    """``storescp`` in a temporary directory; ``files()`` are the received instances, ``log()`` its
    verbose output, ``associations()`` how many associations it received."""

    def __init__(self, directory: Path, *flags: str, aet: str = "STORESCP", port: int | None = None) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.aet = aet
        self.log_path = directory.parent / f"{directory.name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            ["storescp", "-v", "-aet", aet, "-od", str(directory), *flags, str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=DCMTK_ENV)
        deadline = time.monotonic() + 10
        while not listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"storescp did not start: {self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def associations(self) -> int:
        return self.log().count("Association Received")

    def files(self) -> list[pydicom.Dataset]:
        """The instances received so far, skipping a file storescp is still writing."""
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

    def wait_files(self, count: int, timeout: float = 10) -> list[pydicom.Dataset]:
        deadline = time.monotonic() + timeout
        while len(list(self.directory.iterdir())) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.files()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@dataclass
class RecordingScp:
    """A pynetdicom SCP that records each association (calling AET), each C-STORE (the dataset and
    the transfer syntax it came in) and each C-FIND (its identifier and the information model);
    ``status`` is what it answers to C-STORE, ``find_answers`` what it answers to every C-FIND."""

    aet: str = "RECORDER"
    transfer_syntaxes: list[str] = field(default_factory=lambda: list(ALL_TRANSFER_SYNTAXES))
    status: int = 0x0000
    require_called_aet: bool = False
    port: int = field(default_factory=free_port)
    requested: list[str] = field(default_factory=list)
    released: int = 0
    stored: list[tuple[pydicom.Dataset, str, str]] = field(default_factory=list)
    #: The C-STORE request of each instance stored (its Move Originator, ...) and its calling AET.
    requests: list[tuple[Any, str]] = field(default_factory=list)
    #: The identifier of each C-FIND, its information model (SOP class UID) and its calling AET.
    queries: list[tuple[pydicom.Dataset, str, str]] = field(default_factory=list)
    find_answers: list[pydicom.Dataset] = field(default_factory=list)
    server: Any = None

    def start(self) -> RecordingScp:
        ae = AE(ae_title=self.aet)
        ae.require_called_aet = self.require_called_aet
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, self.transfer_syntaxes)
        ae.add_supported_context(Verification)
        for model in (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind):
            ae.add_supported_context(model, self.transfer_syntaxes)
        handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_RELEASED, self._on_released),
                    (evt.EVT_C_STORE, self._on_store), (evt.EVT_C_FIND, self._on_find), *NODELAY_HANDLERS]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def _on_requested(self, event: evt.Event) -> None:
        self.requested.append(event.assoc.requestor.primitive.calling_ae_title)

    def _on_released(self, event: evt.Event) -> None:
        self.released += 1

    def _on_store(self, event: evt.Event) -> int:
        self.stored.append((event.dataset, str(event.context.transfer_syntax), event.assoc.requestor.ae_title))
        self.requests.append((event.request, event.assoc.requestor.ae_title))
        return self.status

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int, pydicom.Dataset | None]]:
        self.queries.append((event.identifier, str(event.request.AffectedSOPClassUID), event.assoc.requestor.ae_title))
        for answer in self.find_answers:
            yield 0xFF00, answer
        yield 0x0000, None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        value = self.header("Authorization")
        if not value or not value.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return user, password


class WebService:
    """A tiny HTTP service on a free loopback port. Routes: ``/echo`` (200, ``ok <method>``), ``/status/N``
    (status N, body ``nope``), ``/slow`` (answers after 2 s), ``/binary`` (bytes 0..255), ``/redirect?to=URL``
    (302), anything else 200 ``ok``. Every request is recorded in ``requests``."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                service.requests.append(Seen(self.command, self.path, list(self.headers.items()), body))
                path, _, query = self.path.partition("?")
                status, answer, extra = 200, f"ok {self.command}".encode(), {}
                if path.startswith("/status/"):
                    status, answer = int(path.rsplit("/", 1)[1]), b"nope"
                elif path == "/slow":
                    time.sleep(2)
                elif path == "/binary":
                    answer = bytes(range(256))
                elif path == "/redirect":
                    status, answer, extra = 302, b"", {"Location": query.partition("=")[2]}
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                try:
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def last(self, path: str) -> Seen:
        matching = [r for r in self.requests if r.path.split("?")[0] == path]
        assert matching, f"the service saw no request for {path}: {[r.path for r in self.requests]}"
        return matching[-1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., StoreScpProcess]]:
    """``storescp(*flags)`` starts a DCMTK storescp (``+xa``: accept all syntaxes; ``+xi``: implicit
    VR little endian only) in a temporary directory; stopped after the test."""
    if not HAS_DCMTK:
        pytest.skip("DCMTK is not installed (apt-get install dcmtk)")
    started: list[StoreScpProcess] = []

    def start(*flags: str, aet: str = "STORESCP") -> StoreScpProcess:
        receiver = StoreScpProcess(tmp_path / f"storescp{len(started)}", *flags, aet=aet)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def recording_scp() -> Iterator[Callable[..., RecordingScp]]:
    """``recording_scp(**options)`` starts a pynetdicom SCP that records associations, C-STOREs and
    C-FINDs."""
    started: list[RecordingScp] = []

    def start(**options: Any) -> RecordingScp:
        scp = RecordingScp(**options).start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


@pytest.fixture
def web_service() -> Iterator[WebService]:
    service = WebService()
    yield service
    service.stop()
