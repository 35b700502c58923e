"""The ``/tools`` endpoints about the server itself, automatic directories and XML answers, side by
side with a real Orthanc."""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from broker.rest.tools import LOG_CATEGORIES
from tests.support.orthanc_peer import OrthancPeer
from tests.support.ports import free_port


@pytest.fixture
def pair(luabroker, orthanc_peer: OrthancPeer) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    orthanc_peer.clear()
    loggers = [logging.getLogger(name) for names in LOG_CATEGORIES.values() for name in names]
    levels = [logger.level for logger in loggers]
    yield luabroker().http, orthanc_peer.client
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    orthanc_peer.client.put("/tools/log-level", content=b"default")


def same(pair, method: str, path: str, body: bytes = b"", **headers: str) -> httpx.Response:
    ours, theirs = (client.request(method, path, content=body, headers=headers) for client in pair)
    assert ours.status_code == theirs.status_code, (method, path, body, ours.text, theirs.text)
    if ours.status_code == 200:
        assert ours.content == theirs.content, (method, path, body)
    elif theirs.content:
        assert ours.json()["OrthancStatus"] == theirs.json()["OrthancStatus"], (method, path, body)
    return ours


def test_log_levels_answer_as_orthanc(pair) -> None:
    same(pair, "GET", "/tools/log-level")
    for category in LOG_CATEGORIES:
        same(pair, "GET", f"/tools/log-level-{category}")
    for level in ("verbose", "trace", "default", "nope", "Verbose", ""):
        same(pair, "PUT", "/tools/log-level", level.encode())
        same(pair, "GET", "/tools/log-level")
        same(pair, "GET", "/tools/log-level-dicom")
    same(pair, "PUT", "/tools/log-level-dicom", b"trace")
    same(pair, "GET", "/tools/log-level")
    same(pair, "GET", "/tools/log-level-http")
    assert logging.getLogger("luabroker.dicom").getEffectiveLevel() == logging.DEBUG
    same(pair, "GET", "/tools/log-level-nope")
    same(pair, "PUT", "/tools/log-level-nope", b"default")


def test_tools_are_listed_and_unknown_paths_are_404(pair) -> None:
    ours, theirs = (client.get("/tools").json() for client in pair)
    assert ours == sorted(ours) and set(ours) <= set(theirs)
    assert {"now", "dicom-conformance", "invalidate-tags", "log-level-http", "default-encoding"} <= set(ours)
    for path in ("/tools/nope", "/nope", "/nope/nope.html", "/system/nope"):
        same(pair, "GET", path)
    same(pair, "POST", "/tools/invalidate-tags")
    same(pair, "GET", "/tools/invalidate-tags")


def test_xml_is_answered_when_asked(pair) -> None:
    same(pair, "GET", "/statistics", accept="application/xml")
    same(pair, "GET", "/statistics", accept="application/xml;q=0.9, application/json")
    listing = same(pair, "GET", "/instances", accept="application/xml")
    assert listing.headers["content-type"].startswith("application/xml")
    tools = ET.fromstring(pair[0].get("/tools", headers={"accept": "application/xml"}).content)
    assert [item.text for item in tools.iter("item")] == pair[0].get("/tools").json()


def test_now_and_conformance(pair) -> None:
    ours = pair[0]
    for path, zone in (("/tools/now", UTC), ("/tools/now-local", None)):
        text = ours.get(path).text
        stamp = datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=zone)
        assert abs((datetime.now(zone) - stamp).total_seconds()) < 3600
    statement = ours.get("/tools/dicom-conformance").text
    assert "1.2.840.10008.5.1.4.1.1.2" in statement and "1.2.840.10008.1.2.4.50" in statement
    assert ours.get("/plugins").json() == []


def test_dicom_echo_to_a_modality_in_the_body(pair, luabroker) -> None:
    ours = pair[0]
    target = luabroker()
    for body in ([target.aet, "127.0.0.1", target.dicom_port],
                 {"AET": target.aet, "Host": "127.0.0.1", "Port": target.dicom_port, "Timeout": 5}):
        answer = ours.post("/tools/dicom-echo", json=body)
        assert (answer.status_code, answer.json()) == (200, {})
    same(pair, "POST", "/tools/dicom-echo", f'["X", "127.0.0.1", {free_port()}]'.encode())
    same(pair, "POST", "/tools/dicom-echo", b"nope")
    same(pair, "POST", "/tools/dicom-echo", b'{"AET": "X"}')
