"""What the nodes sharing one PostgreSQL index coordinate through it (docs/postgresql.md, "Several
nodes"): the coordinator lease, the claim of an event being delivered, the wake-up of the
coordinator's dispatcher, and where the coordinator listens for the other nodes.

- **The coordinator lease** (``PostgresLease``) is a session advisory lock, held by a connection of
  its own for as long as the coordinator lives: PostgreSQL releases it when that connection ends,
  however the process ends (kill -9, a machine lost: TCP keepalives end the session). Every worker of
  every node tries for it; the one that gets it takes the coordinator role. A holder whose connection
  breaks can no longer know that it holds the lease, and another node may take it: it stops at once
  (``on_lost``), and its supervisor starts it again as a worker that waits for the role.
- **The claim of an event** (``EventClaims``) is an advisory lock on the event's sequence number, taken
  with ``pg_try_advisory_lock`` (it skips what another holds, as ``FOR UPDATE SKIP LOCKED`` does) on a
  connection of the dispatcher, for the time of one delivery: an event is delivered by one node at a
  time even in the second between a lost lease and its holder's exit. A row lock (``FOR UPDATE``) would
  be held by a transaction left open for the time of a Lua callback, whose own writes (a
  ``RestApiDelete`` of the instance) wait for the rows it locks: a deadlock.
- **Wake-ups** (``Notifier``, ``NotificationListener``) are ``NOTIFY`` and ``LISTEN`` on a channel of
  the tenant's schema: the node that committed an event tells the coordinator's dispatcher, wherever
  it runs. A lost one costs nothing (the dispatcher looks every second).
- **Endpoints** (``publish_endpoint``, ``find_endpoint``): where the coordinator listens for the calls
  the other nodes forward (its REST routes, the jobs handed to it), and the secret that admits them,
  written by the coordinator when it takes the role. Whoever may read the index may call them: the
  database is the trust boundary of a cluster, as it is of the index itself.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from broker.core.lease import StorageInUse

log = logging.getLogger("luabroker.cluster")

#: How often a worker waiting for the coordinator role tries for it, and how often its holder checks
#: that its connection (hence the lease) is still there.
LEASE_POLL_S = 0.25
LEASE_CHECK_S = 1.0

#: The connection's TCP keepalives: a node on a machine that vanished (no FIN, no RST) loses its session,
#: hence its lease and its claims, within about 20 s.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 5, "keepalives_count": 3}


def _connect(conninfo: str) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo, autocommit=True, **KEEPALIVES)  # type: ignore[arg-type]


class _Session:
    """A connection of one's own (its session holds advisory locks), opened again once the server
    dropped it. Its queries and its closing go one at a time: libpq's connection must not be closed by
    one thread while another runs a query on it."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.current: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def fetchone(self, statement: str, parameters: Any = ()) -> Any:
        """The first row of ``statement``; raises ``psycopg.Error``."""
        with self._lock:
            if self.current is None or self.current.closed or self.current.broken:
                self.current = _connect(self.conninfo)
            return self.current.execute(statement, parameters).fetchone()

    def close(self) -> None:
        with self._lock:
            if self.current is not None:
                try:
                    self.current.close()
                except psycopg.Error:
                    pass
                self.current = None


class PostgresLease:
    """The coordinator lease of the nodes sharing one database (the interface of
    ``broker.core.lease.CoordinatorLease``)."""

    def __init__(self, conninfo: str, on_lost: Callable[[], None]) -> None:
        """``on_lost``: called (from a thread of its own) when the holder's connection broke."""
        self.on_lost = on_lost
        self._session = _Session(conninfo)
        self._held = False
        self._released = threading.Event()

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> None:
        """Take the lease now, or raise ``StorageInUse``."""
        if not self._try():
            raise StorageInUse("another luabroker holds the coordinator role of this PostgreSQL database")

    def wait(self) -> None:
        """Take the lease, trying every ``LEASE_POLL_S`` until it is free (or ``release()``); a failed
        connection is tried again. Raises ``OSError`` when released before it got it."""
        while not self._released.is_set():
            try:
                if self._try():
                    return
            except psycopg.Error as exc:
                log.warning("Cannot reach PostgreSQL for the coordinator lease (trying again): %s", exc)
                self._session.close()
            self._released.wait(LEASE_POLL_S)
        raise OSError("stopped while waiting for the coordinator role")

    def _try(self, watch: bool = True) -> bool:
        row = self._session.fetchone("SELECT pg_try_advisory_lock(hashtext('luabroker:coordinator'), 0)")
        if row is None or not row[0]:
            return False
        self._held = True
        if watch:
            threading.Thread(target=self._watch, name="coordinator-lease", daemon=True).start()
        return True

    def _watch(self) -> None:
        """While held: a connection that breaks is a lease lost (another node may take it now)."""
        while not self._released.wait(LEASE_CHECK_S):
            try:
                self._session.fetchone("SELECT 1")
            except psycopg.Error as exc:
                if self._released.is_set() or self._taken_again(exc):
                    continue
                self._held = False
                log.critical("The connection that held the coordinator lease broke (%s), and another node holds "
                             "it now: giving the role up", exc)
                self.on_lost()
                return

    def _taken_again(self, exc: Exception) -> bool:
        """After the lease's connection broke (PostgreSQL restarted, its session ended): whether this
        process took the lease again at once, nobody having taken it meanwhile."""
        self._session.close()
        try:
            if self._try(watch=False):
                log.warning("The connection that held the coordinator lease broke (%s); lease taken again", exc)
                return True
        except psycopg.Error:
            pass
        return False

    def release(self) -> None:
        self._released.set()
        self._held = False
        self._session.close()


def _namespace(schema: str, what: str) -> str:
    """A name unique to a schema (a tenant's index) for an advisory lock or a channel."""
    return f"luabroker_{what}_" + hashlib.sha1(schema.encode()).hexdigest()[:16]


class EventClaims:
    """The claims of one dispatcher on the events of one schema (see the module's docstring)."""

    def __init__(self, conninfo: str, schema: str) -> None:
        self.key = _namespace(schema, "event")
        self._session = _Session(conninfo)

    @contextmanager
    def claim(self, seq: int) -> Iterator[bool]:
        """Yields whether this dispatcher holds event ``seq`` now (False: another node delivers it, or
        the database is out of reach); the claim ends with the block."""
        key = (self.key, seq % 2147483647)
        try:
            row = self._session.fetchone("SELECT pg_try_advisory_lock(hashtext(%s), %s)", key)
        except psycopg.Error as exc:
            log.warning("Cannot claim event %d in PostgreSQL: %s", seq, exc)
            yield False
            return
        claimed = bool(row and row[0])
        try:
            yield claimed
        finally:
            if claimed:
                try:
                    self._session.fetchone("SELECT pg_advisory_unlock(hashtext(%s), %s)", key)
                except psycopg.Error:
                    pass  # the session is gone, and its locks with it

    def close(self) -> None:
        self._session.close()


def channel(schema: str, what: str = "events") -> str:
    """The channel of a schema's notifications: ``events`` (the wake-ups of its dispatcher), ``control``
    (the runtime settings changed, a reload: ``broker.workers.siblings.cluster_listener``)."""
    return _namespace(schema, what)


class Notifier:
    """``NOTIFY`` the coordinator's dispatcher of a committed event; never blocks long, never raises."""

    def __init__(self, conninfo: str, schema: str) -> None:
        self.channel = channel(schema)
        self._session = _Session(conninfo)

    def __call__(self) -> None:
        try:
            self._session.fetchone("SELECT pg_notify(%s, '')", (self.channel,))
        except psycopg.Error:
            pass  # the dispatcher looks every second anyway

    def close(self) -> None:
        self._session.close()


class NotificationListener:
    """``LISTEN`` in a thread, ``on_notify(payload)`` for each notification: the coordinator's, of events
    (``events``), or every worker's, of what the coordinator changed (``control``)."""

    def __init__(self, conninfo: str, schema: str, on_notify: Callable[[str], None], what: str = "events") -> None:
        self.conninfo = conninfo
        self.channel = channel(schema, what)
        self.on_notify = on_notify
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"notifications-{what}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with _connect(self.conninfo) as connection:
                    connection.execute(f'LISTEN "{self.channel}"')
                    while not self._stopping.is_set():
                        for notification in connection.notifies(timeout=LEASE_CHECK_S, stop_after=1):
                            self._notified(notification.payload)
            except psycopg.Error as exc:
                log.warning("Listening for events in PostgreSQL failed (trying again): %s", exc)
                self._stopping.wait(LEASE_CHECK_S)

    def _notified(self, payload: str) -> None:
        try:
            self.on_notify(payload)
        except Exception:  # a failure to act on one notification must not end the listening
            log.exception("Acting on a notification of %s failed", self.channel)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(LEASE_CHECK_S + 5)


def publish_endpoint(index: Any, service: str, host: str, port: int, secret: str, node: str) -> None:
    """Where the coordinator (this process) listens for ``service`` now (``index``: the tenant's
    ``broker.core.index.Index``)."""
    with index.write() as tx:
        tx.connection.execute(
            "INSERT INTO coordinator_endpoints (service, host, port, secret, node) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (service) DO UPDATE SET host = excluded.host, port = excluded.port, "
            "secret = excluded.secret, node = excluded.node", (service, host, port, secret, node))


def find_endpoint(index: Any, service: str) -> tuple[str, int, str] | None:
    """The coordinator's ``(host, port, secret)`` for ``service``, None before any coordinator wrote it."""
    with index.read() as tx:
        row = tx.connection.execute("SELECT host, port, secret FROM coordinator_endpoints WHERE service = ?",
                                    (service,)).fetchone()
    return (str(row[0]), int(row[1]), str(row[2])) if row else None
