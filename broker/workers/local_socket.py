"""A thread serving one socket until stopped, and the client's end: the coordinator's wake-up
datagrams (``wakeup``), each worker's status (``siblings``), the jobs handed to the coordinator
(``jobs_handoff``), the REST routes forwarded to it (``rest_forward``).

The workers of one server talk over Unix sockets of the abstract namespace, named after the storage
directory. Such a socket is open to every process of the machine's network namespace (it has no file,
hence no permissions): a stream server answers only a peer that ``is_sibling``, checked with
``SO_PEERCRED``. A wake-up datagram carries nothing, so anyone may send one.

The nodes sharing a PostgreSQL index reach their coordinator over TCP instead (``coordinator_address``,
``ClusterEndpoint``): it listens on its node's ``NodeAddress`` and writes where, with a secret of its
term, in the index (``broker.core.cluster``); a peer is admitted once it has sent that secret.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from broker.core.cluster import find_endpoint, publish_endpoint
from sandbox.memory import parent_pid

if TYPE_CHECKING:
    from broker.config import Config
    from broker.core.index import Index

log = logging.getLogger("luabroker.workers")

#: The largest request or answer on a stream socket (a status with its metrics, a serialized job).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def is_sibling(connection: socket.socket) -> bool:
    """Whether the peer runs as this user and has this process's parent (the supervisor; not init,
    which a worker whose supervisor died shares with every orphan)."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", credentials)
    parent = os.getppid()
    return uid == os.getuid() and parent != 1 and parent_pid(pid) == parent


#: The length of a cluster endpoint's secret (hex characters), sent first by the peer.
SECRET_BYTES = 32
#: How long a peer of a cluster endpoint has to send the secret.
ADMISSION_TIMEOUT_S = 5.0

Address = bytes | tuple[str, int]


class LocalSocketServer:
    """Binds ``address`` (listening, for a stream socket) and calls ``serve_once`` in a thread: a Unix
    socket of the abstract namespace (``bytes``), or a TCP ``(host, port)`` of a cluster, whose peers
    are admitted by ``secret``."""

    def __init__(self, kind: socket.SocketKind, address: Address, name: str) -> None:
        if isinstance(address, bytes):
            self.socket = socket.socket(socket.AF_UNIX, kind)
            self.secret: bytes | None = None
        else:
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
            self.socket = socket.socket(family, kind)
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.secret = secrets.token_hex(SECRET_BYTES // 2).encode()
        self.socket.bind(address)
        if kind == socket.SOCK_STREAM:
            self.socket.listen(64)
        self._stopping = False  # read by serve_once: an empty read after stop() is the end
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def admit(self, connection: socket.socket) -> bool:
        """Whether to answer this peer: a worker of this server (Unix), or one that knows the secret (TCP)."""
        if self.secret is None:
            admitted = is_sibling(connection)
        else:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.settimeout(ADMISSION_TIMEOUT_S)
            try:
                received = b""
                while len(received) < SECRET_BYTES and (chunk := connection.recv(SECRET_BYTES - len(received))):
                    received += chunk
            except OSError:
                received = b""
            connection.settimeout(None)
            admitted = hmac.compare_digest(received, self.secret)
        if not admitted:
            log.warning("%s: refused a peer that is not a worker of this server", self._thread.name)
        return admitted

    def publish(self, index: Index, service: str, config: Config) -> None:
        """With a cluster: write where this listener is, for the other nodes (``broker.core.cluster``)."""
        if self.secret is not None:
            host, port = self.socket.getsockname()[:2]
            publish_endpoint(index, service, host, port, self.secret.decode(), config.node_name)

    def start(self) -> None:
        self._thread.start()

    def serve_once(self) -> None:
        """Wait for one datagram or connection and handle it; raises ``OSError`` once stopped."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stopping:
            try:
                self.serve_once()
            except OSError:
                if not self._stopping:
                    log.exception("The local socket of thread %s failed", self._thread.name)
                return

    def stop(self) -> None:
        """End the thread: the shutdown wakes it out of its wait, which then fails."""
        self._stopping = True
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.socket.close()
        self._thread.join(5)


def read_all(connection: socket.socket, limit: int | None = MAX_MESSAGE_BYTES) -> bytes:
    """What the peer sends until it shuts its side down (``limit`` bytes at most; None: no limit)."""
    chunks, size = [], 0
    while chunk := connection.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            raise ValueError("message too large")
    return b"".join(chunks)


#: How often a peer tries again to connect while nobody listens (a coordinator is being elected).
RETRY_S = 0.1


class Endpoint(Protocol):
    """Where a peer connects: ``connect`` raises ``ConnectionRefusedError`` while nobody listens."""

    def connect(self, timeout: float | None) -> socket.socket: ...


class LocalEndpoint:
    """A Unix stream socket of the abstract namespace (the workers of one server)."""

    def __init__(self, address: bytes) -> None:
        self.address = address

    def connect(self, timeout: float | None) -> socket.socket:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(timeout)
        try:
            connection.connect(self.address)
        except BaseException:
            connection.close()
            raise
        return connection


class ClusterEndpoint:
    """The coordinator of the nodes sharing a PostgreSQL index, where its index says it listens."""

    def __init__(self, index: Index, service: str) -> None:
        self.index = index
        self.service = service

    def connect(self, timeout: float | None) -> socket.socket:
        found = find_endpoint(self.index, self.service)
        if found is None:
            raise ConnectionRefusedError(f"no coordinator has listened for {self.service} yet")
        host, port, secret = found
        connection = socket.create_connection((host, port), timeout=timeout)
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.sendall(secret.encode())
        except BaseException:
            connection.close()
            raise
        return connection


def coordinator_address(config: Config, service: str) -> Address:
    """Where the coordinator listens for ``service`` (``rest``, ``jobs``): a Unix socket named after the
    storage directory; with PostgreSQL, a TCP port of its node's ``NodeAddress``."""
    if config.postgresql.enable_index:
        return (config.postgresql.node_address, 0)
    return f"\0luabroker-{service}-".encode() + storage_key(config.storage_directory)


def coordinator_endpoint(config: Config, index: Index, service: str) -> Endpoint:
    """How a worker reaches the coordinator's ``service`` (see ``coordinator_address``)."""
    address = coordinator_address(config, service)
    return LocalEndpoint(address) if isinstance(address, bytes) else ClusterEndpoint(index, service)


def storage_key(storage_directory: Path) -> bytes:
    """What names the local sockets of the processes serving ``storage_directory``."""
    return hashlib.sha1(str(storage_directory.resolve()).encode()).hexdigest()[:20].encode()


def exchange(endpoint: Endpoint, message: bytes, timeout: float | None, patience: float = 0.0,
             limit: int | None = MAX_MESSAGE_BYTES) -> bytes:
    """Send ``message`` to ``endpoint`` and return the answer. While nobody listens there, try again
    for ``patience`` seconds; ``timeout`` bounds each wait of the socket (None: the answer comes when
    it comes, or the peer's end ends the wait). Raises ``OSError`` (nobody listening after
    ``patience``, a timeout, the peer gone) or ``ValueError`` (an answer over ``limit``)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            connection = endpoint.connect(timeout)
        except ConnectionRefusedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(RETRY_S)
            continue
        with connection:
            connection.sendall(message)
            connection.shutdown(socket.SHUT_WR)
            return read_all(connection, limit)


def ask(endpoint: Endpoint, request: dict[str, Any], timeout: float, patience: float = 0.0) -> dict[str, Any]:
    """One JSON request and its JSON answer at ``endpoint`` (``exchange``); raises ``OSError`` or
    ``ValueError`` (not a JSON object)."""
    answer = json.loads(exchange(endpoint, json.dumps(request, default=str).encode(), timeout, patience))
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    return answer


class RequestServer(LocalSocketServer):
    """A stream server of one JSON request and one JSON answer per connection, for siblings only."""

    def __init__(self, address: Address, name: str, timeout: float) -> None:
        super().__init__(socket.SOCK_STREAM, address, name)
        self.timeout = timeout

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def serve_once(self) -> None:
        connection, _ = self.socket.accept()
        with connection:
            if not self.admit(connection):
                return
            try:
                connection.settimeout(self.timeout)
                request = json.loads(read_all(connection))
                answer = self.answer(request) if isinstance(request, dict) else {"Error": "not a JSON object"}
            except OSError:
                return  # the peer went away
            except Exception as exc:  # a bad request, or a failure to answer it: said to the peer
                log.exception("%s: cannot answer a request", self._thread.name)
                answer = {"Error": str(exc)}
            try:
                connection.sendall(json.dumps(answer, default=str).encode())
            except OSError:
                pass
