"""Bounds on uploads (issue 7, finding 3): ZIP archives of ``POST /instances`` and HTTP bodies."""
from __future__ import annotations

import asyncio
import io
import json
import struct
import tracemalloc
import zipfile
from collections.abc import Iterable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from broker.core.bounds import MIB
from broker.errors import ErrorCode
from broker.http.app import build_app
from broker.http.body import SPOOL_THRESHOLD
from broker.rest import resources, system
from broker.rest.api import RestApi
from broker.tenant import Tenancy
from tests.support import dicom_samples as samples


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def blank_image(size: int) -> bytes:
    """A valid instance whose pixel data is ``size`` zero bytes: it deflates about 1000:1."""
    image = samples.minimal(NumberOfFrames=size // MIB, Rows=1024, Columns=1024, SamplesPerPixel=1,
                            PhotometricInterpretation="MONOCHROME2",
                            BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0)
    image.PixelData = bytes(size)
    return samples.encode(image)


def understate_size(archive: bytes, entry: int, size: int) -> bytes:
    """The archive with the uncompressed size of its ``entry``-th central directory record set to ``size``."""
    position = -1
    for _ in range(entry + 1):
        position = archive.index(b"PK\x01\x02", position + 1)
    return archive[:position + 24] + struct.pack("<I", size) + archive[position + 28:]


def instance_count(client) -> int:
    return client.get("/statistics")["CountInstances"]


# ZIP archives.
def test_zip_entry_that_inflates_a_thousandfold_is_refused_with_413_and_nothing_stored(client) -> None:
    archive = zip_of({"small.dcm": samples.encode(samples.minimal()), "bomb.dcm": blank_image(80 * MIB)})
    assert len(archive) < MIB

    answer = client.call("POST", "/instances", archive)

    assert (answer.status, answer.kind, answer.orthanc_status) == (413, "error", ErrorCode.BAD_REQUEST)
    assert b"bomb.dcm" in answer.body and b"MaximumCompressionRatio" in answer.body
    assert instance_count(client) == 0


def test_zip_whose_entries_together_inflate_too_much_is_refused(client) -> None:
    # Each entry is under the 64 MiB grace; the archive as a whole inflates 1000:1.
    archive = zip_of({f"{n}.dcm": blank_image(30 * MIB) for n in range(3)})

    answer = client.call("POST", "/instances", archive)

    assert (answer.status, answer.kind) == (413, "error")
    assert b"the ZIP archive inflates" in answer.body
    assert instance_count(client) == 0


def test_zip_of_blank_images_within_the_grace_size_is_stored(client) -> None:
    archive = zip_of({f"{n}.dcm": blank_image(4 * MIB) for n in range(3)})

    answers = client.post("/instances", archive)

    assert [answer["Status"] for answer in answers] == ["Success"] * 3


def test_zip_entry_larger_than_its_header_says_is_refused_with_400_after_the_entries_before_it(client) -> None:
    first = samples.encode(samples.minimal())
    archive = understate_size(zip_of({"first.dcm": first, "liar.dcm": blank_image(8 * MIB)}), entry=1, size=1000)

    answer = client.call("POST", "/instances", archive)

    assert (answer.status, answer.kind, answer.orthanc_status) == (400, "error", ErrorCode.BAD_FILE_FORMAT)
    assert b"liar.dcm" in answer.body
    assert instance_count(client) == 1  # the entry before it stays stored


def test_zip_whose_central_directory_lists_too_many_entries_is_refused_before_reading_it(client) -> None:
    # 100,000 empty entries with 40-character names: a central directory of 8.6 MB in a 15 MB archive.
    archive = zip_of({f"{n:040d}": b"" for n in range(100_000)}, zipfile.ZIP_STORED)

    answer = client.call("POST", "/instances", archive)

    assert (answer.status, answer.kind) == (413, "error")
    assert b"central directory" in answer.body


# HTTP bodies, through the real starlette app (driven over ASGI with the chunks a server would pass).
@pytest.fixture
def http_app(store) -> Any:
    """The HTTP app over the store of the REST tests, with ``MaximumHttpBodySize`` at 16 MiB."""
    store.bounds = replace(store.bounds, max_body=16 * MIB)
    config = SimpleNamespace(name="luabroker-test", dicom_aet="LUABROKER", dicom_port=4242, http_port=8042,
                             raw={}, remote_access_allowed=False, authentication_enabled=False, registered_users={},
                             http_describe_errors=True, tenants=(), tenant_administrators=())
    services = SimpleNamespace(store=store, config=config, scripts=SimpleNamespace(defines=lambda name: False))
    services.rest = RestApi(services, [resources.routes, system.routes])
    return build_app(Tenancy(config, [SimpleNamespace(name="default", services=services, config=config)]))


def post(app: Any, path: str, chunks: Iterable[bytes], length: int | None = None) -> tuple[int, bytes, int]:
    """POST ``chunks`` to ``app``: (status, body, bytes of the request body the app read). Without
    ``length``, the body is sent as HTTP/1.1 sends a body of unknown length: chunked."""
    headers = [(b"host", b"localhost"),
               (b"content-length", str(length).encode()) if length is not None else (b"transfer-encoding", b"chunked")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8042)}
    pending, read, answer = iter(chunks), 0, {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal read
        chunk = next(pending, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return answer["status"], answer["body"], read


def chunked(data: bytes | memoryview, size: int = 64 * 1024) -> Iterable[bytes]:
    view = memoryview(data)
    return (bytes(view[start:start + size]) for start in range(0, len(view), size))


def test_body_declared_larger_than_the_maximum_is_refused_with_413_before_it_is_read(http_app, client) -> None:
    status, body, read = post(http_app, "/instances", chunked(bytes(17 * MIB)), length=17 * MIB)

    assert status == 413 and read == 0
    error = json.loads(body)
    assert (error["HttpStatus"], error["OrthancStatus"]) == (413, ErrorCode.BAD_REQUEST)
    assert "MaximumHttpBodySize" in error["Details"]
    assert instance_count(client) == 0


def test_body_without_length_is_refused_with_413_once_it_passes_the_maximum(http_app, client) -> None:
    status, body, read = post(http_app, "/instances", chunked(bytes(64 * MIB)))

    assert status == 413
    assert 16 * MIB < read < 17 * MIB  # the rest was never read
    assert instance_count(client) == 0


def test_large_body_is_spooled_and_arrives_whole(http_app, client) -> None:
    data = blank_image(2 * SPOOL_THRESHOLD)

    status, body, _ = post(http_app, "/instances", chunked(data), length=len(data))

    assert status == 200, body
    assert client.get(f"/instances/{json.loads(body)['ID']}/file") == data


def test_large_body_is_held_once_in_memory(http_app) -> None:
    # starlette's Request.body() held every chunk and their join: twice the body.
    data = b"x" * (12 * MIB)
    tracemalloc.start()
    try:
        status, _, _ = post(http_app, "/instances", chunked(data), length=len(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert status == 400  # not a DICOM file
    assert peak < 1.5 * len(data)
