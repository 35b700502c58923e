"""Association slots and timeouts of the DICOM server (issue 7, finding 4).

40 TCP connections that sent nothing used to take every association slot of pynetdicom: a real
C-ECHO was refused until they timed out. Durations are only bounded generously here, to prove that
a configured short timeout was used rather than the 30 s default.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor

needs_dcmtk = pytest.mark.skipif(shutil.which("echoscu") is None, reason="DCMTK is not installed")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
NOT_THE_DEFAULT = 20.0  # seconds: well under the 30 s default timeouts, well over a configured 1 s


def idle_connections(stack: ExitStack, port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections to ``port`` that send nothing (closed when ``stack`` closes)."""
    return [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30)) for _ in range(count)]


def is_open(sock: socket.socket) -> bool:
    """True if the server has not closed ``sock`` (nothing to read, no EOF)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def associate(port: int, aet: str):
    ae = AE(ae_title="SLOTS")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 30
    return ae.associate("127.0.0.1", port, ae_title=aet, evt_handlers=NODELAY_HANDLERS)


@needs_dcmtk
def test_idle_connections_leave_the_association_slots_free(luabroker) -> None:
    server = luabroker(DicomScpMaximumAssociations=4, DicomScpAcseTimeout=60)
    with ExitStack() as stack:
        idle = idle_connections(stack, server.dicom_port, 40)

        echo = subprocess.run(["echoscu", "-aec", server.aet, "127.0.0.1", str(server.dicom_port)],
                              capture_output=True, text=True, timeout=60, env=DCMTK_ENV)

        assert echo.returncode == 0, echo.stderr
        assert all(is_open(sock) for sock in idle)  # the echo did not wait for them to go


def test_connection_that_sends_nothing_is_closed_after_the_acse_timeout(luabroker) -> None:
    server = luabroker(DicomScpAcseTimeout=1)
    with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=NOT_THE_DEFAULT) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server; a socket timeout here fails the test
        assert time.monotonic() - started < NOT_THE_DEFAULT


def test_associations_beyond_the_maximum_are_refused_until_one_ends(luabroker) -> None:
    server = luabroker(DicomScpMaximumAssociations=2)
    first, second = associate(server.dicom_port, server.aet), associate(server.dicom_port, server.aet)
    try:
        assert first.is_established and second.is_established

        third = associate(server.dicom_port, server.aet)
        assert third.is_rejected
        primitive = third.acceptor.primitive
        assert (primitive.result, primitive.result_source, primitive.diagnostic) == (0x02, 0x03, 0x02)

        first.release()
        deadline = time.monotonic() + NOT_THE_DEFAULT
        while True:  # the server's thread of the released association ends just after the release
            fourth = associate(server.dicom_port, server.aet)
            if fourth.is_established or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert fourth.is_established
        pause_reactor(fourth)  # else, on a loaded machine, pynetdicom can lose the response
        assert fourth.send_c_echo().Status == 0x0000
        fourth.release()
    finally:
        for assoc in (first, second):
            if assoc.is_established:
                assoc.release()


def test_idle_association_is_aborted_after_dicom_scp_timeout(luabroker) -> None:
    server = luabroker(DicomScpTimeout=1)
    assoc = associate(server.dicom_port, server.aet)
    assert assoc.is_established
    deadline = time.monotonic() + NOT_THE_DEFAULT
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert assoc.is_aborted
