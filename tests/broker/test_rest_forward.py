"""The forwarding of the coordinator's REST routes (``broker.workers.rest_forward``), both ends in this
process over a real abstract Unix socket: the call arrives whole, the answer and the errors come back
as the coordinator gave them, and a missing coordinator is a 503 after the wait for an election."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from broker.config import Config
from broker.config.postgresql import PostgresSettings
from broker.core.database import Backend
from broker.core.index import Index
from broker.core.origin import Origin
from broker.core.postgres import PostgresBackend
from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.rest.api import RestApi
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.workers import rest_forward
from broker.workers.local_socket import coordinator_endpoint
from broker.workers.rest_forward import RestForward, RestListener

routes = RouteTable()
seen: list[RestRequest] = []


@routes.post("/echo/{name}", coordinator=True)
def echo(request: RestRequest, services: Any) -> RestResponse:
    seen.append(request)
    response = RestResponse.binary(b"\x00\xff" + request.body, "application/dicom")
    response.headers["Content-Disposition"] = f'filename="{request.params["name"]}"'
    return response


@routes.get("/fails", coordinator=True)
def fails(request: RestRequest, services: Any) -> None:
    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, "no such thing", http_status=410)


@routes.get("/bare", coordinator=True)
def bare(request: RestRequest, services: Any) -> None:
    raise BareHttpStatus(405, "not that way", {"Allow": "POST"})


@routes.get("/local")
def local(request: RestRequest, services: Any) -> str:
    return "here"


def link_config(tmp_path: Path, backend: Backend | None) -> tuple[Config, Index | None]:
    """The configuration and index of the workers: on one machine (SQLite: a Unix socket), or nodes
    sharing a PostgreSQL index (TCP, where the index says)."""
    if backend is None:
        return Config(storage_directory=tmp_path), None
    assert isinstance(backend, PostgresBackend)
    config = Config(storage_directory=tmp_path, postgresql=PostgresSettings(enable_index=True,
                                                                            connection_uri=backend.conninfo))
    return config, Index(backend=backend)


def apis(config: Config, index: Index | None, held: bool = False) -> tuple[RestApi, RestApi]:
    """A worker's API, whose coordinator's routes go to ``coordinator``'s (``held``: it is the
    coordinator itself)."""
    worker, coordinator = RestApi(SimpleNamespace(), [routes]), RestApi(SimpleNamespace(), [routes])  # type: ignore[arg-type]
    worker.forward = RestForward(coordinator_endpoint(config, index, rest_forward.SERVICE),  # type: ignore[arg-type]
                                 held=lambda: held)
    return worker, coordinator


@pytest.fixture
def listening(tmp_path: Path, index_backend: Backend | None) -> Any:
    config, index = link_config(tmp_path, index_backend)
    worker, coordinator = apis(config, index)
    listener = RestListener(config, coordinator)
    if index is not None:
        listener.publish(index, rest_forward.SERVICE, config)
    listener.start()
    seen.clear()
    yield worker
    listener.stop()
    if index is not None:
        index.close()


def test_a_call_arrives_whole_and_its_answer_comes_back(listening: RestApi) -> None:
    origin = Origin.rest("10.1.2.3", "alice")
    answer = listening.handle(RestRequest("POST", "/echo/x.dcm", {"a": "1"}, {"accept": "*/*"}, b"body\x00", origin))
    assert (answer.status, answer.body, answer.content_type) == (200, b"\x00\xffbody\x00", "application/dicom")
    assert answer.headers == {"Content-Disposition": 'filename="x.dcm"'}
    [request] = seen
    assert (request.query, request.headers, request.body, request.origin) == ({"a": "1"}, {"accept": "*/*"},
                                                                             b"body\x00", origin)


def test_the_errors_come_back_as_the_coordinator_raised_them(listening: RestApi) -> None:
    with pytest.raises(OrthancError) as error:
        listening.handle(RestRequest("GET", "/fails"))
    assert (error.value.code, error.value.details, error.value.http_status) == (ErrorCode.UNKNOWN_RESOURCE,
                                                                                "no such thing", 410)
    with pytest.raises(BareHttpStatus) as answer:
        listening.handle(RestRequest("GET", "/bare"))
    assert (answer.value.http_status, answer.value.details, answer.value.headers) == (405, "not that way",
                                                                                      {"Allow": "POST"})


def test_the_coordinator_runs_its_routes_itself_and_a_worker_the_others(tmp_path: Path) -> None:
    config, _ = link_config(tmp_path, None)
    coordinator, _ = apis(config, None, held=True)  # nobody listens: nothing may be forwarded
    assert coordinator.handle(RestRequest("POST", "/echo/y", body=b"!")).body == b"\x00\xff!"
    worker, _ = apis(config, None)
    assert worker.handle(RestRequest("GET", "/local")).body == b'"here"'


def test_without_a_coordinator_a_call_is_a_503_after_the_wait_for_an_election(
        tmp_path: Path, index_backend: Backend | None, monkeypatch: Any) -> None:
    monkeypatch.setattr(rest_forward, "ELECTION_PATIENCE_S", 0.3)
    config, index = link_config(tmp_path, index_backend)
    worker, _ = apis(config, index)
    with pytest.raises(OrthancError) as error:
        worker.handle(RestRequest("GET", "/fails"))
    assert error.value.http_status == 503


def test_a_node_without_the_coordinators_secret_is_refused(tmp_path: Path, postgres_database: str) -> None:
    """Between nodes the coordinator listens on TCP: only a peer that read its secret in the index is
    answered."""
    config, index = link_config(tmp_path, PostgresBackend(postgres_database))
    assert index is not None
    worker, coordinator = apis(config, index)
    listener = RestListener(config, coordinator)
    listener.publish(index, rest_forward.SERVICE, config)
    listener.start()
    seen.clear()
    try:
        assert worker.handle(RestRequest("GET", "/local")).body == b'"here"'  # a route of its own
        with index.write() as tx:
            tx.connection.execute("UPDATE coordinator_endpoints SET secret = ?", ("0" * 32,))
        with pytest.raises(OrthancError) as error:
            worker.handle(RestRequest("POST", "/echo/z", body=b"!"))
        assert error.value.http_status == 500 and "did not answer" in error.value.details
        assert seen == []
    finally:
        listener.stop()
        index.close()
