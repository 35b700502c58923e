"""The coordinator's REST routes, answered whichever worker received the call.

Every worker serves HTTP on the shared port, and answers most routes itself: the index and the storage
area are shared. The routes marked ``coordinator`` (``broker.rest.router``) answer from state that
lives in the coordinator's memory: the jobs, the queries of the C-FIND SCU, the Lua sandboxes that run
execute-script and the events, the settings it pushes to every worker, the status and metrics of all.
A worker that does not hold the role sends such a call, already authenticated and filtered, to the
coordinator, which runs it with the caller's origin and sends the answer back (``RestForward`` and
``RestListener``). The same holds for a ``RestApi*`` call of a worker's filter script, which takes the
same ``RestApi``.

The coordinator listens on a Unix stream socket of the abstract namespace named after the storage
directory and serves only another worker of this server (``local_socket.is_sibling``); with the index
in PostgreSQL, on a TCP port that the other nodes find in the index (``local_socket.coordinator_address``,
each call preceded by the secret of the coordinator's term); the call and
its answer are msgpack maps, the body as bytes. While a coordinator is being elected (its holder
died), a worker tries for up to ``ELECTION_PATIENCE_S`` before it answers 503.
"""
from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack

from broker.config import Config
from broker.core.origin import Origin
from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.http.threads import MAX_THREADS
from broker.rest.api import RestApi
from broker.rest.types import RestRequest, RestResponse
from broker.workers.local_socket import Endpoint, LocalSocketServer, coordinator_address, exchange, read_all

log = logging.getLogger("luabroker.workers")

#: How long a worker waits for a coordinator to listen (one is elected as soon as the last one died).
ELECTION_PATIENCE_S = 30.0

_DECODING_ERRORS = (ValueError, KeyError, TypeError, msgpack.UnpackException)


#: The name of the coordinator's endpoint (``local_socket.coordinator_address``).
SERVICE = "rest"


class RestForward:
    """A worker's end (``RestApi.forward``): runs a coordinator's route in the coordinator.

    No bound of its own on the wait for the answer: the coordinator bounds the call as it bounds the
    same call received directly (a script's ``WallTimeout``, a job's timeouts), and its end, however
    it ends, closes the socket and ends the wait with a 500."""

    def __init__(self, endpoint: Endpoint, held: Callable[[], bool]) -> None:
        """``held``: whether this process holds the coordinator role now."""
        self.endpoint = endpoint
        self._held = held

    def needed(self) -> bool:
        return not self._held()

    def __call__(self, request: RestRequest) -> RestResponse:
        message = msgpack.packb({"Method": request.method, "Path": request.path, "Query": dict(request.query),
                                 "Headers": dict(request.headers), "Body": request.body,
                                 "Origin": request.origin.to_dict()})
        try:
            answer = msgpack.unpackb(exchange(self.endpoint, message, None, ELECTION_PATIENCE_S, limit=None))
        except ConnectionRefusedError:
            raise OrthancError(ErrorCode.INTERNAL_ERROR, "No coordinator process to answer; try again",
                               http_status=503) from None
        except (OSError, *_DECODING_ERRORS) as exc:
            raise OrthancError(ErrorCode.INTERNAL_ERROR, f"The coordinator process did not answer: {exc}") from exc
        return _response(answer)


class RestListener(LocalSocketServer):
    """The coordinator's end: answers the calls the other workers forward, each in a thread of its own
    (a call may wait long: a synchronous job, execute-script)."""

    def __init__(self, config: Config, rest: RestApi) -> None:
        super().__init__(socket.SOCK_STREAM, coordinator_address(config, SERVICE), "rest-forward")
        self.rest = rest
        self._pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="rest-forward")

    def serve_once(self) -> None:
        connection, _ = self.socket.accept()
        self._pool.submit(self._admitted, connection)

    def _admitted(self, connection: socket.socket) -> None:
        if self.admit(connection):
            self._answer(connection)
        else:
            connection.close()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            try:
                request = _request(msgpack.unpackb(read_all(connection, limit=None)))
            except OSError:
                return  # the worker went away
            except _DECODING_ERRORS as exc:
                answer = _error(OrthancError(ErrorCode.INTERNAL_ERROR, f"Bad forwarded call: {exc}"))
            else:
                answer = _answer(self.rest, request)
            try:
                connection.sendall(msgpack.packb(answer))
            except OSError:
                pass

    def stop(self) -> None:
        """No new call; a call in progress ends on its own (its answer may find the worker gone)."""
        super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _request(call: dict[str, Any]) -> RestRequest:
    return RestRequest(call["Method"], call["Path"], call["Query"], call["Headers"], call["Body"],
                       Origin.from_dict(call["Origin"]))


def _answer(rest: RestApi, request: RestRequest) -> dict[str, Any]:
    try:
        response = rest.handle(request)
    except (OrthancError, BareHttpStatus) as exc:
        return _error(exc)
    except Exception as exc:  # as the HTTP server's 500, said to the worker that waits
        log.exception("A forwarded call failed: %s %s", request.method, request.path)
        return _error(OrthancError(ErrorCode.INTERNAL_ERROR, str(exc)))
    return {"Status": response.status, "Body": response.body, "ContentType": response.content_type,
            "Headers": response.headers}


def _error(exc: OrthancError | BareHttpStatus) -> dict[str, Any]:
    if isinstance(exc, BareHttpStatus):
        return {"Bare": [exc.http_status, exc.details, exc.headers]}
    return {"Orthanc": [int(exc.code), exc.details, exc.http_status]}


def _response(answer: dict[str, Any]) -> RestResponse:
    """The coordinator's answer, or its error raised here as it was raised there."""
    if "Orthanc" in answer:
        code, details, status = answer["Orthanc"]
        raise OrthancError(ErrorCode(code), details, http_status=status)
    if "Bare" in answer:
        status, details, headers = answer["Bare"]
        raise BareHttpStatus(status, details, headers)
    return RestResponse(answer["Status"], answer["Body"], answer["ContentType"], answer["Headers"])
