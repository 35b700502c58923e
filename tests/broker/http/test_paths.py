"""Paths as Orthanc routes them: empty and ``.`` segments are ignored, ``..`` goes up, a trailing ``/``
is accepted (issue 9).

Orthanc's own integration suite joins ``http://host:8042/`` with ``/tools/...``, so every one of its
requests starts with ``//``; before, each answered 404.
"""
from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from tests.support.factory import make_instances, to_bytes


def send(server: Any, method: str, path: str, body: bytes = b"", headers: list[str] | None = None) -> tuple[int, bytes]:
    """Status and body of a request sent as written (an HTTP client may rewrite the path)."""
    extra = "".join(f"{header}\r\n" for header in headers or [])
    with socket.create_connection((server.http.base_url.host, server.http.base_url.port), timeout=30) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        answer = sock.makefile("rb").read()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


@pytest.mark.parametrize("path", ["//system", "/system/", "//system//", "///system", "/./system", "/system/.",
                                  "/patients/../system", "/../system", "/tools/x/../../system",
                                  "/patients/..%2fsystem"])
def test_empty_and_dot_segments_and_a_trailing_slash_are_ignored_and_dot_dot_goes_up(luabroker: Any, path: str) -> None:
    server = luabroker()
    status, body = send(server, "GET", path)
    assert status == 200
    assert json.loads(body)["DicomAet"] == server.aet


def test_a_resource_is_reached_through_empty_segments(luabroker: Any) -> None:
    server = luabroker()
    [instance] = make_instances(1)
    status, body = send(server, "POST", "//instances", to_bytes(instance))
    assert status == 200
    stored = json.loads(body)["ID"]
    status, body = send(server, "GET", f"//instances//{stored}/")
    assert (status, json.loads(body)["ID"]) == (200, stored)
    assert send(server, "DELETE", f"/instances//{stored}")[0] == 200
    assert send(server, "GET", f"//instances/{stored}")[0] == 404


def test_an_unknown_path_is_still_unknown(luabroker: Any) -> None:
    server = luabroker()
    assert send(server, "GET", "//no-such//thing")[0] == 404


def test_the_http_filter_sees_the_path_that_is_served(luabroker: Any) -> None:
    # A filter that refuses one path must refuse every spelling of it that reaches the same resource.
    server = luabroker({"filter.lua": """
        function IncomingHttpRequestFilter(method, uri, ip, username, headers)
          return uri ~= '/tools/generate-uid'
        end
    """})
    assert send(server, "GET", "/tools/generate-uid?level=study")[0] == 403
    assert send(server, "GET", "//tools//generate-uid/?level=study")[0] == 403
    assert send(server, "GET", "/system/../tools/generate-uid?level=study")[0] == 403
    assert send(server, "GET", "//system")[0] == 200


@pytest.mark.parametrize("method, path, body", [("GET", "/no-such/thing", b""), ("POST", "/instances", b"xx"),
                                                ("POST", "/tools/find", b"{"), ("GET", "/instances/xx", b"")])
def test_errors_have_orthancs_status_headers_and_document(luabroker: Any, orthanc_peer: Any, method: str,
                                                          path: str, body: bytes) -> None:
    server = luabroker()
    ours = server.http.request(method, path, content=body)
    theirs = orthanc_peer.client.request(method, path, content=body)
    assert ours.status_code == theirs.status_code >= 400
    assert "content-type" not in ours.headers and "content-type" not in theirs.headers
    assert bool(ours.content) == bool(theirs.content)
    if theirs.content:
        assert json.loads(ours.content).keys() == json.loads(theirs.content).keys()
