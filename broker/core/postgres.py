"""The index in PostgreSQL (issue 14, the ``PostgreSQL`` section; docs/postgresql.md), with psycopg 3.

The same queries as SQLite (``broker.core.index``: ``?`` placeholders, which ``PostgresConnection``
turns into psycopg's ``%s``), over this schema: the SQLite one with PostgreSQL's types (``BIGSERIAL``
keys, ``BIGINT`` sizes, ``BYTEA`` payloads, ``DOUBLE PRECISION`` deadlines). Each tenant has a schema of
its own in the database (``public`` for the default tenant), as it has an index file of its own with
SQLite. Writes are serialised across every process and machine by a transaction-level advisory lock
per schema (as SQLite serialises them per file); reads run beside them, a snapshot read in
``REPEATABLE READ``.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from broker.core.database import Connection, Cursor

#: The version of this schema (the index's ``SCHEMA_VERSION`` reads the same tables); a database of a
#: newer one is refused.
SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    internal_id  BIGSERIAL PRIMARY KEY,
    level        INTEGER NOT NULL,
    public_id    TEXT NOT NULL UNIQUE,
    parent_id    BIGINT REFERENCES resources(internal_id) ON DELETE CASCADE,
    main_tags    TEXT NOT NULL,
    patient_tags TEXT
);
CREATE INDEX IF NOT EXISTS resources_by_parent ON resources(parent_id);
CREATE INDEX IF NOT EXISTS resources_by_level ON resources(level);
CREATE TABLE IF NOT EXISTS metadata (
    internal_id BIGINT NOT NULL REFERENCES resources(internal_id) ON DELETE CASCADE,
    type        INTEGER NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (internal_id, type)
);
CREATE TABLE IF NOT EXISTS attachments (
    internal_id     BIGINT NOT NULL REFERENCES resources(internal_id) ON DELETE CASCADE,
    content_type    INTEGER NOT NULL,
    uuid            TEXT NOT NULL,
    size            BIGINT NOT NULL,
    md5             TEXT,
    compressed_size BIGINT,
    compressed_md5  TEXT,
    compression     INTEGER NOT NULL DEFAULT 0,
    revision        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (internal_id, content_type)
);
CREATE TABLE IF NOT EXISTS unstable (
    internal_id BIGINT PRIMARY KEY REFERENCES resources(internal_id) ON DELETE CASCADE,
    level       INTEGER NOT NULL,
    public_id   TEXT NOT NULL,
    deadline    DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq         BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL,
    level       TEXT,
    resource_id TEXT,
    payload     BYTEA,
    attempts    INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'pending',
    last_error  TEXT,
    created     TEXT NOT NULL,
    listed      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox(state, seq);
CREATE INDEX IF NOT EXISTS outbox_listed ON outbox(seq) WHERE listed = 1;
CREATE INDEX IF NOT EXISTS outbox_listed_by_resource ON outbox(resource_id) WHERE listed = 1;
CREATE INDEX IF NOT EXISTS outbox_pending_by_resource ON outbox(resource_id) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS patients (
    internal_id BIGINT PRIMARY KEY REFERENCES resources(internal_id) ON DELETE CASCADE,
    recycling   BIGINT NOT NULL,
    protected   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS patients_by_recycling ON patients(protected, recycling);
CREATE TABLE IF NOT EXISTS exports (
    seq         BIGSERIAL PRIMARY KEY,
    level       INTEGER NOT NULL,
    public_id   TEXT NOT NULL,
    remote      TEXT NOT NULL,
    date        TEXT NOT NULL,
    identifiers TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq    BIGINT PRIMARY KEY,
    tenant TEXT NOT NULL,
    entry  TEXT NOT NULL,
    hash   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS global_properties (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS coordinator_endpoints (
    service TEXT PRIMARY KEY,
    host    TEXT NOT NULL,
    port    INTEGER NOT NULL,
    secret  TEXT NOT NULL,
    node    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runtime_settings (
    id       INTEGER PRIMARY KEY,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
)
"""


def _identifier(name: str) -> str:
    """``name`` quoted as a PostgreSQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@functools.lru_cache(maxsize=512)
def _translated(statement: str) -> str:
    """The index's SQL in psycopg's placeholders (a literal ``%`` doubled first)."""
    return statement.replace("%", "%%").replace("?", "%s")


class PostgresConnection:
    """A psycopg connection in autocommit mode that speaks the index's SQL (``broker.core.database``)."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    @property
    def in_transaction(self) -> bool:
        return self._connection.info.transaction_status is not TransactionStatus.IDLE

    @property
    def alive(self) -> bool:
        """False once the server dropped the connection (psycopg learns it when a query fails)."""
        return not (self._connection.broken or self._connection.closed)

    def execute(self, statement: str, parameters: Any = (), /) -> Cursor:
        return self._connection.execute(_translated(statement), parameters)

    def executemany(self, statement: str, parameters: Iterable[Any], /) -> Cursor:
        cursor = self._connection.cursor()
        cursor.executemany(_translated(statement), list(parameters))
        return cursor

    def close(self) -> None:
        self._connection.close()


class PostgresBackend:
    """The index of one tenant: the schema ``schema`` of the database that ``conninfo`` names."""

    #: One writer at a time per schema, across every process and machine (the lock ends with the
    #: transaction).
    begin_write: tuple[str, ...] = ("BEGIN", "SELECT pg_advisory_xact_lock(hashtext('luabroker:' || current_schema()))")
    #: Several queries that must agree (a resource and its children) see one snapshot.
    begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ"
    #: A dropped reader connection is found by the BEGIN, and replaced, before the read.
    begins_every_read = True

    def __init__(self, conninfo: str, schema: str = "public") -> None:
        self.conninfo = conninfo
        self.schema = schema

    def connect(self) -> Connection:
        connection = PostgresConnection(psycopg.connect(self.conninfo, autocommit=True))
        connection.execute(f"SET search_path TO {_identifier(self.schema)}")
        return connection

    def prepare(self, connection: Connection) -> None:
        """Create the schema and its tables (once, whichever node starts first), or check its version."""
        connection.execute("BEGIN")
        try:
            connection.execute("SELECT pg_advisory_xact_lock(hashtext('luabroker:schema'))")
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_identifier(self.schema)}")
            for statement in SCHEMA.split(";"):
                connection.execute(statement)
            row = connection.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise RuntimeError(f"The PostgreSQL index (schema {self.schema!r}) has version {row[0]}; this "
                                   f"luabroker reads version {SCHEMA_VERSION}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def alive(self, connection: Connection) -> bool:
        return not isinstance(connection, PostgresConnection) or connection.alive

    def last_sequence_value(self, connection: Connection, table: str) -> int:
        sequence = connection.execute("SELECT pg_get_serial_sequence(?, 'seq')", (table,)).fetchone()[0]
        row = connection.execute(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}").fetchone()
        return int(row[0])
