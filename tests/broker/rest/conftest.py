"""A REST API over a fresh store, called in-process (no HTTP server), as the Lua door calls it."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from broker.config import Config
from broker.core.database import Backend
from broker.core.origin import Origin
from broker.core.store import Store
from broker.errors import BareHttpStatus, OrthancError
from broker.rest import archives, create, find, frames, instances, resources, system, tools, views
from broker.rest.api import RestApi
from broker.rest.types import RestRequest, RestResponse

CLIENT = Origin.rest("127.0.0.1", "")


@dataclass
class Answer:
    """A REST answer as the HTTP door would send it: ``kind`` is ``body``, ``bare`` or ``error``."""

    status: int
    kind: str
    body: bytes = b""
    orthanc_status: int | None = None
    content_type: str = ""
    headers: dict[str, str] | None = None

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    def __init__(self, api: RestApi) -> None:
        self.api = api

    def call(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
             **query: str) -> Answer:
        request = RestRequest(method, path, query=query, body=body, origin=CLIENT, headers=headers or {})
        try:
            response: RestResponse = self.api.handle(request)
        except BareHttpStatus as exc:
            return Answer(exc.http_status, "bare")
        except OrthancError as exc:
            return Answer(exc.http_status, "error", exc.details.encode(), int(exc.code))
        return Answer(response.status, "body", response.body, None, response.content_type, response.headers)

    def get(self, path: str, **query: str) -> Any:
        answer = self.call("GET", path, **query)
        assert (answer.status, answer.kind) == (200, "body"), answer
        return answer.json() if answer.content_type == "application/json" else answer.body

    def post(self, path: str, body: bytes) -> Any:
        answer = self.call("POST", path, body)
        assert (answer.status, answer.kind) == (200, "body"), answer
        return answer.json()


def make_services(store: Store) -> SimpleNamespace:
    config = Config.from_json({"Name": "luabroker-test", "DicomAet": "LUABROKER"}, Path("/etc/luabroker"))
    # A single process: a runtime setting changed has no other worker to reach.
    return SimpleNamespace(store=store, config=config, settings_changed=lambda: None)


@pytest.fixture
def store(tmp_path: Path, index_backend: Backend | None) -> Iterator[Store]:
    store = Store(tmp_path / "store", user_metadata={"Sample": 1024, "Other": 2001}, index_backend=index_backend)
    yield store
    store.close()


@pytest.fixture
def client(store: Store) -> Client:
    tables = [resources.routes, instances.routes, system.routes, tools.routes, find.routes, views.routes,
              frames.routes, create.routes, archives.routes]
    return Client(RestApi(make_services(store), tables))
