"""Fixtures shared by the integration tests."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.orthanc_peer import OrthancPeer
from tests.support.receivers import WebService

#: The configuration both servers of ``lua_pair`` get: execute-script on, and custom values whose
#: Lua forms are compared (an integer, a float, a list, a null).
LUA_PAIR_OPTIONS = {"ExecuteLuaEnabled": True, "Custom": {"Answer": 42, "Ratio": 0.5, "List": [1, 2], "Null": None}}


@pytest.fixture
def lua_pair(luabroker, web_service: WebService) -> Iterator[tuple]:
    """(luabroker's HTTP client, a real Orthanc's, a web service for the ``Http*`` built-ins): the
    same scripts run on both."""
    peer = OrthancPeer.create(**LUA_PAIR_OPTIONS).start()
    try:
        yield luabroker(**LUA_PAIR_OPTIONS).http, peer.client, web_service
    finally:
        peer.stop()
