"""Fixtures shared by every test package."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

# pytest puts tests/ first on sys.path; the repository root must come before it, or the plain
# directory tests/broker hides the broker package when pytest is run as `pytest` (not `python -m`).
ROOT = str(Path(__file__).resolve().parents[1])
if sys.path[:1] != [ROOT]:
    sys.path.insert(0, ROOT)

from orthanc_peer import ORTHANC_BINARY, OrthancPeer  # noqa: E402


@pytest.fixture(scope="session")
def orthanc_peer() -> Iterator[OrthancPeer]:
    """A real Orthanc (Debian package) on free ports in a temporary directory, shared by the session.

    Tests that need an empty peer call ``orthanc_peer.clear()``. Skipped when Orthanc is not installed.
    """
    if ORTHANC_BINARY is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc); comparison tests need it")
    peer = OrthancPeer.create().start()
    try:
        yield peer
    finally:
        peer.stop()
