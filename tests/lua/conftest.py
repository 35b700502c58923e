"""Fixtures of the Lua runtime tests: real shims, closed after each test (see shim_driver.py)."""
from __future__ import annotations

import pytest

from tests.lua.shim_driver import Shim


@pytest.fixture
def start_shim():
    """Start shims with command-line flags; all are closed after the test."""
    started: list[Shim] = []

    def start(*flags: str) -> Shim:
        shim = Shim(*flags)
        started.append(shim)
        return shim

    yield start
    for shim in started:
        shim.close()


@pytest.fixture
def shim(start_shim) -> Shim:
    return start_shim()
