"""The reactors of an accepted association wait for work (``broker.dicom.sockets.WAKEUP_HANDLERS``):
messages still flow both ways, a release still ends the association, and the wake-up goes with it."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from broker.dicom import sockets
from broker.dicom.sockets import NODELAY_HANDLERS, WAKEUP_HANDLERS, pause_reactor
from tests.support.ports import free_port


@pytest.fixture
def server() -> Iterator[tuple[int, Any]]:
    ae = AE(ae_title="WAKEUP")
    ae.add_supported_context(Verification)
    port = free_port()
    running = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[*WAKEUP_HANDLERS, *NODELAY_HANDLERS])
    yield port, running
    running.shutdown()


def test_an_association_that_waits_for_work_answers_and_ends(server: tuple[int, Any]) -> None:
    port, running = server
    client = AE()
    client.add_requested_context(Verification)
    assoc = client.associate("127.0.0.1", port, ae_title="WAKEUP", evt_handlers=NODELAY_HANDLERS)
    assert assoc.is_established
    (accepted,) = running.active_associations
    wakeup = sockets._DUL_WAKEUPS[accepted.dul]
    assert accepted in sockets._ASSOCIATION_WAKEUPS
    for _ in range(20):
        time.sleep(0.01)  # idle long enough for both reactors to wait
        pause_reactor(assoc)  # the client's own reactor race (see pause_reactor)
        assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    deadline = time.monotonic() + 10
    while accepted.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not accepted.is_alive() and accepted.is_released
    assert wakeup.reader.fileno() == -1  # closed with the connection


def test_other_sleeps_sleep() -> None:
    began = time.monotonic()
    sockets._DUL_TIME.sleep(0.02)  # no wake-up for this thread
    sockets._ASSOCIATION_TIME.sleep(sockets.IDLE_SLEEP)
    assert time.monotonic() - began >= 0.02
    assert sockets._DUL_TIME.monotonic() > 0  # the rest of the time module
