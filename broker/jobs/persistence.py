"""Jobs across a restart: one row per job in ``<StorageDirectory>/jobs.sqlite``.

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

FILE_NAME = "jobs.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,
    type          TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    state         TEXT NOT NULL,
    created       REAL NOT NULL,
    changed       REAL NOT NULL,
    runtime       REAL NOT NULL,
    error_code    INTEGER NOT NULL,
    error_details TEXT NOT NULL,
    failures      INTEGER NOT NULL,
    retry_at      REAL,
    synchronous   INTEGER NOT NULL,
    payload       TEXT NOT NULL,
    announce      TEXT
);
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

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def save(self, job: StoredJob) -> None:
        row = (job.id, job.seq, job.type, job.priority, job.state, job.created, job.changed, job.runtime,
               job.error_code, job.error_details, job.failures, job.retry_at, int(job.synchronous),
               json.dumps(job.payload, separators=(",", ":")), job.announce)
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(_COLUMNS))})", row)

    def announced(self, job_id: str, kind: str) -> None:
        """The ``kind`` event of ``job_id`` is in the outbox now."""
        with self._lock:
            self._db.execute("UPDATE jobs SET announce = NULL WHERE id = ? AND announce = ?", (job_id, kind))

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def load(self) -> Iterator[StoredJob]:
        """Every saved job, in submission order. A row that cannot be read is skipped by the caller."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY seq").fetchall()
        for row in rows:
            values = dict(zip(_COLUMNS, row, strict=True))
            try:
                payload = json.loads(values["payload"])
            except ValueError:
                payload = None
            values["payload"] = payload
            values["synchronous"] = bool(values["synchronous"])
            yield StoredJob(**values)
