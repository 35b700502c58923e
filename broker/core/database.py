"""What the index needs of a database (``broker.core.index``): a connection that runs SQL with ``?``
placeholders, and a back end that opens such connections and owns the schema.

Two back ends: SQLite, the embedded default (``broker.core.index.SqliteBackend``), and PostgreSQL
(``broker.core.postgres.PostgresBackend``, the ``PostgreSQL`` section). The index's SQL is written once,
in the subset both speak (``INSERT ... RETURNING``, ``ON CONFLICT ... DO UPDATE``, ``WITH RECURSIVE``,
partial indexes); what differs (the schema, its versions and upgrades, how a write transaction starts,
a sequence's high-water mark) is the back end's.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol


class Cursor(Protocol):
    """The answer of ``Connection.execute``: sqlite3's cursor, psycopg's."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """One connection in autocommit mode: transactions are the explicit ``BEGIN``/``COMMIT`` of the
    index. sqlite3's ``Connection`` is one as it is."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """A database behind the index."""

    #: What ``write()`` runs to open a write transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
    #: ``BEGIN`` and a transaction-level advisory lock, one writer at a time across every node).
    begin_write: tuple[str, ...]
    #: What a snapshot read runs first (several queries that must agree).
    begin_read: str
    #: Whether a single-query read begins too (``Index.read(snapshot=False)``): for a server that may
    #: drop a pooled connection, the ``BEGIN`` finds it out before the query, and a new one is taken.
    begins_every_read: bool

    def connect(self) -> Connection:
        """A new connection (the writer's, or one of the readers')."""

    def prepare(self, connection: Connection) -> None:
        """Create the schema, or upgrade it to the version this luabroker reads; raise ``RuntimeError``
        for a newer one."""

    def alive(self, connection: Connection) -> bool:
        """Whether ``connection`` still works (a server may drop it); the index replaces one that does
        not, and pools only those that do."""

    def last_sequence_value(self, connection: Connection, table: str) -> int:
        """The last key ``table``'s sequence gave (never reused, even after its rows are deleted)."""
