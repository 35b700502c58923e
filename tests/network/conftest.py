"""Fixtures of the network tests: receivers on loopback, and the in-process server of the integration
tests (``luabroker``)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from integration.conftest import luabroker  # noqa: F401  (the same in-process server fixture)
from network_helpers import HAS_DCMTK, RecordingScp, StoreScpProcess, WebService


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
    """``recording_scp(**options)`` starts a pynetdicom SCP that records associations and C-STOREs."""
    started: list[RecordingScp] = []

    def start(**options) -> RecordingScp:
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
