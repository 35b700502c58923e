"""Jobs across a restart: one row per job in ``<StorageDirectory>/jobs.sqlite``, or with the index in
PostgreSQL in the ``jobs`` table of the tenant's schema there (so that the coordinator of any node
resumes them; docs/postgresql.md).

A file of its own, not the index: a running job saves its progress often (throttled to every
``save_interval_s`` while it runs, at once on every state change), and those writes must not queue
behind the index's single writer, which C-STORE ingest uses; the index schema stays owned by
``broker.core``; and deleting ``jobs.sqlite`` forgets the jobs without touching a stored instance.
The price is that a job's state and its ``OnJob*`` outbox row (in the index) are two commits: the
``announce`` column records the event a state change still has to write to the outbox, and
``JobsEngine.start`` writes those left over by a crash. Events are therefore at least once, like
every outbox event.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.core.database import Backend, Cursor
from broker.core.index import SqliteBackend

FILE_NAME = "jobs.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,
    type          TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    state         TEXT NOT NULL,
    created       DOUBLE PRECISION NOT NULL,
    changed       DOUBLE PRECISION NOT NULL,
    runtime       DOUBLE PRECISION NOT NULL,
    error_code    INTEGER NOT NULL,
    error_details TEXT NOT NULL,
    failures      INTEGER NOT NULL,
    retry_at      DOUBLE PRECISION,
    synchronous   INTEGER NOT NULL,
    payload       TEXT NOT NULL,
    announce      TEXT
)
"""
_COLUMNS = ("id", "seq", "type", "priority", "state", "created", "changed", "runtime", "error_code",
            "error_details", "failures", "retry_at", "synchronous", "payload", "announce")


@dataclass(frozen=True)
class StoredJob:
    id: str
    seq: int
    type: str
    priority: int
    state: str
    created: float
    changed: float
    runtime: float
    error_code: int
    error_details: str
    failures: int
    retry_at: float | None   # wall-clock time of the next attempt (state Retry)
    synchronous: bool
    payload: dict[str, Any]
    announce: str | None


class JobStore:
    """The jobs table. Thread-safe (one connection behind a lock; writes are small)."""

    def __init__(self, backend: Backend) -> None:
        """``backend``: the database (``in_file`` for ``jobs.sqlite``; the tenant's ``PostgresBackend``)."""
        self._backend = backend
        #: Where the jobs are, for the log.
        self.where = str(getattr(backend, "path", "the PostgreSQL index"))
        self._lock = threading.Lock()
        self._db = backend.connect()
        self._db.execute(_SCHEMA)

    @classmethod
    def in_file(cls, path: Path) -> JobStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(str(path)) as db:
            db.execute("PRAGMA journal_mode=WAL")
        db.close()
        return cls(SqliteBackend(path))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _execute(self, statement: str, parameters: Any = ()) -> list[Any]:
        """Run one statement; a connection the database dropped is replaced, and the statement run again."""
        with self._lock:
            try:
                return self._fetch(self._db.execute(statement, parameters))
            except Exception:
                if self._backend.alive(self._db):
                    raise
                self._db = self._backend.connect()
                return self._fetch(self._db.execute(statement, parameters))

    @staticmethod
    def _fetch(cursor: Cursor) -> list[Any]:
        return cursor.fetchall() if cursor.description is not None else []  # psycopg: no rows, nothing to fetch

    def save(self, job: StoredJob) -> None:
        row = (job.id, job.seq, job.type, job.priority, job.state, job.created, job.changed, job.runtime,
               job.error_code, job.error_details, job.failures, job.retry_at, int(job.synchronous),
               json.dumps(job.payload, separators=(",", ":")), job.announce)
        self._execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
                      f"ON CONFLICT (id) DO UPDATE SET "
                      + ", ".join(f"{column} = excluded.{column}" for column in _COLUMNS[1:]), row)

    def announced(self, job_id: str, kind: str) -> None:
        """The ``kind`` event of ``job_id`` is in the outbox now."""
        self._execute("UPDATE jobs SET announce = NULL WHERE id = ? AND announce = ?", (job_id, kind))

    def delete(self, job_id: str) -> None:
        self._execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def load(self) -> Iterator[StoredJob]:
        """Every saved job, in submission order. A row that cannot be read is skipped by the caller."""
        rows = self._execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY seq")
        for row in rows:
            values = dict(zip(_COLUMNS, row, strict=True))
            try:
                payload = json.loads(values["payload"])
            except ValueError:
                payload = None
            values["payload"] = payload
            values["synchronous"] = bool(values["synchronous"])
            yield StoredJob(**values)
