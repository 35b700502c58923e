"""The client's address is the connection's peer, as Orthanc reads it from the socket: a request's
``X-Forwarded-For`` or ``Forwarded`` header changes nothing (uvicorn would trust them from loopback by
default), so a local client can neither pass for a remote one nor hide from the HTTP filter's ``ip``."""
from __future__ import annotations

from typing import Any

import pytest

from tests.broker.http.test_paths import send

FILTER = """
function IncomingHttpRequestFilter(method, uri, ip, username, headers)
  return ip == '127.0.0.1'
end
"""


@pytest.mark.parametrize("header", ["X-Forwarded-For: 10.1.2.3", "Forwarded: for=10.1.2.3",
                                    "X-Real-IP: 10.1.2.3"])
def test_a_forwarding_header_does_not_change_the_clients_address(luabroker: Any, header: str) -> None:
    server = luabroker({"filter.lua": FILTER})
    status, _ = send(server, "GET", "/system", headers=[header])
    assert status == 200  # neither refused as remote (RemoteAccessAllowed: false) nor by the filter
