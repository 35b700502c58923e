"""The index: an SQLite database (WAL) of resources, metadata, attachments, unstable resources and the
event outbox. See ``docs/storage.md`` for the schema.

Concurrency: one writer connection behind a lock (writes are serialised by SQLite anyway; the lock
spares the busy-retry loop), and a small pool of reader connections (WAL lets readers run beside the
writer; a pool, not one per thread, because every DICOM association is a new thread).
``write()`` and ``read()`` open a transaction and yield an ``IndexTransaction``; a read made by the
thread that holds the write transaction goes through it, so it sees its own changes.
"""
from __future__ import annotations

import json
import queue
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.core import changes
from broker.core.database import Backend, Connection, Cursor
from broker.core.levels import Level

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    internal_id  INTEGER PRIMARY KEY,
    level        INTEGER NOT NULL,             -- 0 patient, 1 study, 2 series, 3 instance
    public_id    TEXT NOT NULL UNIQUE,         -- Orthanc's id (SHA-1 of the DICOM UIDs)
    parent_id    INTEGER REFERENCES resources(internal_id) ON DELETE CASCADE,
    main_tags    TEXT NOT NULL,                -- JSON: Orthanc's MainDicomTags of the level
    patient_tags TEXT                          -- JSON, studies only: the patient's main tags
);
CREATE INDEX IF NOT EXISTS resources_by_parent ON resources(parent_id);
CREATE INDEX IF NOT EXISTS resources_by_level ON resources(level);

CREATE TABLE IF NOT EXISTS metadata (
    internal_id INTEGER NOT NULL REFERENCES resources(internal_id) ON DELETE CASCADE,
    type        INTEGER NOT NULL,              -- Orthanc's metadata number (user metadata >= 1024)
    value       TEXT NOT NULL,
    PRIMARY KEY (internal_id, type)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS attachments (
    internal_id  INTEGER NOT NULL REFERENCES resources(internal_id) ON DELETE CASCADE,
    content_type INTEGER NOT NULL,             -- 1 = the DICOM file, >= 1024 user-defined
    uuid         TEXT NOT NULL,                -- file name in the storage area
    size         INTEGER NOT NULL,             -- uncompressed
    md5          TEXT,                         -- of the uncompressed data
    compressed_size INTEGER,                   -- of the file as stored; NULL: = size (schema 1)
    compressed_md5  TEXT,
    compression  INTEGER NOT NULL DEFAULT 0,   -- 0 none, 1 zlib with its size in front (Orthanc's)
    revision     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (internal_id, content_type)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS unstable (
    internal_id INTEGER PRIMARY KEY REFERENCES resources(internal_id) ON DELETE CASCADE,
    level       INTEGER NOT NULL,
    public_id   TEXT NOT NULL,
    deadline    REAL NOT NULL                  -- Unix time at which the resource becomes stable
);

CREATE TABLE IF NOT EXISTS outbox (            -- the event log (broker/core/changes.py: the kinds)
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,                 -- StoredInstance, NewSeries, StableStudy, Deleted, ...
    level       TEXT,                          -- Patient, Study, Series, Instance
    resource_id TEXT,
    payload     BLOB,                          -- JSON
    attempts    INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'pending',  -- pending, done, parked; logged: no callback consumes it
    last_error  TEXT,
    created     TEXT NOT NULL,
    listed      INTEGER NOT NULL DEFAULT 0     -- 1: one of Orthanc's changes, listed by /changes
);
CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox(state, seq);

CREATE TABLE IF NOT EXISTS patients (
    internal_id INTEGER PRIMARY KEY REFERENCES resources(internal_id) ON DELETE CASCADE,
    recycling   INTEGER NOT NULL,              -- order of the last store: the lowest is recycled first
    protected   INTEGER NOT NULL DEFAULT 0     -- 1: never recycled
);
CREATE INDEX IF NOT EXISTS patients_by_recycling ON patients(protected, recycling);

CREATE TABLE IF NOT EXISTS exports (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, even after DELETE /exports (as Orthanc)
    level       INTEGER NOT NULL,
    public_id   TEXT NOT NULL,
    remote      TEXT NOT NULL,                 -- the symbolic name of the modality or peer
    date        TEXT NOT NULL,
    identifiers TEXT NOT NULL                  -- JSON: PatientID, StudyInstanceUID, ... down to the level
);

CREATE TABLE IF NOT EXISTS audit (             -- the audit log (broker/core/audit.py): append-only, chained
    seq    INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    entry  TEXT NOT NULL,                      -- the entry as canonical JSON
    hash   TEXT NOT NULL                       -- SHA-256 of the previous entry's hash and this entry
);

CREATE TABLE IF NOT EXISTS global_properties (
    name  TEXT PRIMARY KEY,                    -- Orthanc's global properties, e.g. AnonymizationSequence
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

DICOM_ATTACHMENT = 1
DICOM_UNTIL_PIXEL_DATA = 3
READER_POOL_SIZE = 16


@dataclass(frozen=True, slots=True)
class ResourceRow:
    internal_id: int
    level: Level
    public_id: str
    parent_id: int | None


#: Schema 1 → 2: compression and revisions of attachments. 2 → 3: Orthanc's changes in the event log
#: (``listed``), and the kinds of events that had no callback yet named as Orthanc names the changes.
MIGRATIONS = {1: ["ALTER TABLE attachments ADD COLUMN compressed_size INTEGER",
                  "ALTER TABLE attachments ADD COLUMN compressed_md5 TEXT",
                  "ALTER TABLE attachments ADD COLUMN compression INTEGER NOT NULL DEFAULT 0",
                  "ALTER TABLE attachments ADD COLUMN revision INTEGER NOT NULL DEFAULT 0"],
              2: ["ALTER TABLE outbox ADD COLUMN listed INTEGER NOT NULL DEFAULT 0",
                  "UPDATE outbox SET kind = 'Stable' || level WHERE kind = 'Stable'",
                  "UPDATE outbox SET kind = CASE WHEN payload LIKE '%\"Metadata\"%' THEN 'UpdatedMetadata' "
                  "ELSE 'UpdatedAttachment' END WHERE kind = 'Updated'"]}
#: Indexes on columns that a migration adds: created once the migrations ran.
LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS outbox_listed ON outbox(seq) WHERE listed = 1;
CREATE INDEX IF NOT EXISTS outbox_listed_by_resource ON outbox(resource_id) WHERE listed = 1;
CREATE INDEX IF NOT EXISTS outbox_pending_by_resource ON outbox(resource_id) WHERE state = 'pending';
"""


@dataclass(frozen=True, slots=True)
class Attachment:
    uuid: str
    size: int
    md5: str | None
    compressed_size: int | None = None
    compressed_md5: str | None = None
    compression: int = 0
    content_type: int = 1
    revision: int = 0

    @property
    def stored_size(self) -> int:
        return self.size if self.compressed_size is None else self.compressed_size

    @property
    def stored_md5(self) -> str | None:
        return self.md5 if self.compressed_md5 is None else self.compressed_md5


_ATTACHMENT_COLUMNS = "uuid, size, md5, compressed_size, compressed_md5, compression, content_type, revision"


@dataclass(slots=True)
class AttachmentSizes:
    """Disk (as stored) and uncompressed sizes, of every attachment and of the DICOM files only."""
    disk: int = 0
    uncompressed: int = 0
    dicom_disk: int = 0
    dicom_uncompressed: int = 0

    def add(self, attachment: Attachment) -> None:
        self.disk += attachment.stored_size
        self.uncompressed += attachment.size
        if attachment.content_type == DICOM_ATTACHMENT:
            self.dicom_disk += attachment.stored_size
            self.dicom_uncompressed += attachment.size


def _row(values: tuple[Any, ...]) -> ResourceRow:
    return ResourceRow(values[0], Level(values[1]), values[2], values[3])


def _returned(cursor: Cursor) -> int:
    """The key an ``INSERT ... RETURNING`` wrote (SQLite and PostgreSQL alike)."""
    value: int = cursor.fetchone()[0]
    return value


#: ``LIMIT`` without a limit, in both dialects (SQLite reads -1 so, PostgreSQL does not).
NO_LIMIT = 1 << 62
_SET_METADATA = ("INSERT INTO metadata (internal_id, type, value) VALUES (?, ?, ?) "
                 "ON CONFLICT (internal_id, type) DO UPDATE SET value = excluded.value")


class IndexTransaction:
    """The queries of the index, run inside one transaction of one connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._execute = connection.execute

    # Resources.
    def find(self, public_id: str) -> ResourceRow | None:
        row = self._execute("SELECT internal_id, level, public_id, parent_id FROM resources WHERE public_id = ?",
                            (public_id,)).fetchone()
        return _row(row) if row else None

    def find_at(self, level: Level, public_id: str) -> ResourceRow | None:
        row = self.find(public_id)
        return row if row is not None and row.level is level else None

    def get(self, internal_id: int) -> ResourceRow | None:
        row = self._execute("SELECT internal_id, level, public_id, parent_id FROM resources WHERE internal_id = ?",
                            (internal_id,)).fetchone()
        return _row(row) if row else None

    def parent(self, row: ResourceRow) -> ResourceRow:
        """The parent of a row below the patient level (a resource with children is never deleted)."""
        assert row.parent_id is not None
        parent = self.get(row.parent_id)
        assert parent is not None
        return parent

    def create(self, level: Level, public_id: str, parent_id: int | None, main_tags: dict[str, str],
               patient_tags: dict[str, str] | None = None) -> int:
        return _returned(self._execute(
            "INSERT INTO resources (level, public_id, parent_id, main_tags, patient_tags) VALUES (?, ?, ?, ?, ?) "
            "RETURNING internal_id", (int(level), public_id, parent_id, _dump(main_tags),
                                      None if patient_tags is None else _dump(patient_tags))))

    def main_tags(self, internal_id: int) -> tuple[dict[str, str], dict[str, str] | None]:
        main, patient = self._execute("SELECT main_tags, patient_tags FROM resources WHERE internal_id = ?",
                                      (internal_id,)).fetchone()
        return json.loads(main), (json.loads(patient) if patient is not None else None)

    def set_main_tags(self, internal_id: int, main_tags: dict[str, str],
                      patient_tags: dict[str, str] | None = None) -> None:
        self._execute("UPDATE resources SET main_tags = ?, patient_tags = ? WHERE internal_id = ?",
                      (_dump(main_tags), None if patient_tags is None else _dump(patient_tags), internal_id))

    def children(self, internal_id: int) -> list[ResourceRow]:
        return [_row(values) for values in self._execute(
            "SELECT internal_id, level, public_id, parent_id FROM resources WHERE parent_id = ? ORDER BY internal_id",
            (internal_id,))]

    def has_children(self, internal_id: int) -> bool:
        row = self._execute("SELECT 1 FROM resources WHERE parent_id = ? LIMIT 1", (internal_id,)).fetchone()
        return row is not None

    def subtree(self, internal_id: int) -> list[ResourceRow]:
        """The resource and all its descendants, parents before children."""
        return [_row(values) for values in self._execute(
            "WITH RECURSIVE tree(id) AS (SELECT CAST(? AS BIGINT) UNION ALL "
            "SELECT r.internal_id FROM resources r JOIN tree t ON r.parent_id = t.id) "
            "SELECT r.internal_id, r.level, r.public_id, r.parent_id FROM resources r JOIN tree t "
            "ON r.internal_id = t.id ORDER BY r.level, r.internal_id", (internal_id,))]

    def delete(self, internal_ids: Iterable[int]) -> None:
        self.connection.executemany("DELETE FROM resources WHERE internal_id = ?", ((i,) for i in internal_ids))

    def list_level(self, level: Level, since: int = 0, limit: int | None = None) -> list[ResourceRow]:
        rows = self._execute(
            "SELECT internal_id, level, public_id, parent_id FROM resources WHERE level = ? "
            "ORDER BY internal_id LIMIT ? OFFSET ?", (int(level), NO_LIMIT if limit is None else limit, since))
        return [_row(values) for values in rows]

    def counts(self) -> dict[Level, int]:
        counts = {level: 0 for level in Level}
        for level, count in self._execute("SELECT level, COUNT(*) FROM resources GROUP BY level"):
            counts[Level(level)] = count
        return counts

    # Patients: protection and recycling order (a patient without a row is unprotected, and oldest).
    def touch_patient(self, internal_id: int) -> None:
        """The patient received an instance: it is now the last to be recycled."""
        self._execute(
            "INSERT INTO patients (internal_id, recycling) VALUES (?, (SELECT COALESCE(MAX(recycling), 0) + 1 "
            "FROM patients)) ON CONFLICT(internal_id) DO UPDATE SET recycling = excluded.recycling", (internal_id,))

    def is_protected(self, internal_id: int) -> bool:
        row = self._execute("SELECT protected FROM patients WHERE internal_id = ?", (internal_id,)).fetchone()
        return bool(row and row[0])

    def set_protected(self, internal_id: int, protected: bool) -> None:
        self._execute("INSERT INTO patients (internal_id, recycling, protected) VALUES (?, 0, ?) "
                      "ON CONFLICT(internal_id) DO UPDATE SET protected = excluded.protected",
                      (internal_id, int(protected)))

    def oldest_unprotected_patient(self, other_than: int) -> ResourceRow | None:
        row = self._execute(
            "SELECT r.internal_id, r.level, r.public_id, r.parent_id FROM resources r "
            "LEFT JOIN patients p ON p.internal_id = r.internal_id WHERE r.level = ? AND r.internal_id != ? "
            "AND COALESCE(p.protected, 0) = 0 ORDER BY COALESCE(p.recycling, 0), r.internal_id LIMIT 1",
            (int(Level.PATIENT), other_than)).fetchone()
        return _row(row) if row else None

    # Global properties.
    def increment_global(self, name: str) -> int:
        """Add one to the integer global property ``name`` (0 when unset) and return the new value."""
        row = self._execute("SELECT value FROM global_properties WHERE name = ?", (name,)).fetchone()
        value = (int(row[0]) if row else 0) + 1
        self._execute("INSERT INTO global_properties (name, value) VALUES (?, ?) "
                      "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, str(value)))
        return value

    # Metadata.
    def set_metadata(self, internal_id: int, number: int, value: str) -> None:
        self._execute(_SET_METADATA, (internal_id, number, value))

    def set_metadata_many(self, rows: Iterable[tuple[int, int, str]]) -> None:
        self.connection.executemany(_SET_METADATA, rows)

    def metadata(self, internal_id: int) -> dict[int, str]:
        return dict(self._execute("SELECT type, value FROM metadata WHERE internal_id = ? ORDER BY type",
                                  (internal_id,)))

    def get_metadata(self, internal_id: int, number: int) -> str | None:
        row = self._execute("SELECT value FROM metadata WHERE internal_id = ? AND type = ?",
                            (internal_id, number)).fetchone()
        return row[0] if row else None

    def delete_metadata(self, internal_id: int, number: int) -> bool:
        return self._execute("DELETE FROM metadata WHERE internal_id = ? AND type = ?",
                             (internal_id, number)).rowcount > 0

    def children_metadata(self, internal_id: int, number: int) -> list[str | None]:
        """For each child, the value of one metadata (None where it is not set)."""
        return [value for (value,) in self._execute(
            "SELECT m.value FROM resources r LEFT JOIN metadata m ON m.internal_id = r.internal_id AND m.type = ? "
            "WHERE r.parent_id = ? ORDER BY r.internal_id", (number, internal_id))]

    # Attachments.
    def add_attachment(self, internal_id: int, content_type: int, file_uuid: str, size: int, md5: str | None,
                       compressed_size: int | None = None, compressed_md5: str | None = None, compression: int = 0,
                       revision: int = 0) -> None:
        self._execute("INSERT INTO attachments (internal_id, content_type, uuid, size, md5, compressed_size, "
                      "compressed_md5, compression, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (internal_id, content_type, file_uuid, size, md5, compressed_size, compressed_md5, compression,
                       revision))

    def attachment(self, internal_id: int, content_type: int = DICOM_ATTACHMENT) -> Attachment | None:
        row = self._execute(f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE internal_id = ? AND content_type = ?",
                            (internal_id, content_type)).fetchone()
        return Attachment(*row) if row else None

    def attachments(self, internal_id: int) -> list[Attachment]:
        return [Attachment(*row) for row in self._execute(
            f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE internal_id = ? ORDER BY content_type",
            (internal_id,))]

    def delete_attachment(self, internal_id: int, content_type: int) -> None:
        self._execute("DELETE FROM attachments WHERE internal_id = ? AND content_type = ?", (internal_id, content_type))

    def attachment_uuids(self, internal_ids: Iterable[int]) -> list[str]:
        uuids: list[str] = []
        for internal_id in internal_ids:
            uuids.extend(u for (u,) in self._execute("SELECT uuid FROM attachments WHERE internal_id = ?",
                                                     (internal_id,)))
        return uuids

    def attachment_sizes(self, internal_ids: list[int]) -> AttachmentSizes:
        """The sizes of the attachments of these resources."""
        sizes = AttachmentSizes()
        for internal_id in internal_ids:
            for attachment in self.attachments(internal_id):
                sizes.add(attachment)
        return sizes

    def total_size(self) -> int:
        """Bytes of the storage area (compressed sizes)."""
        # int(): PostgreSQL's SUM of integers is a numeric (a Decimal here).
        return int(self._execute("SELECT COALESCE(SUM(COALESCE(compressed_size, size)), 0) FROM attachments"
                                 ).fetchone()[0])

    def total_uncompressed_size(self) -> int:
        return int(self._execute("SELECT COALESCE(SUM(size), 0) FROM attachments").fetchone()[0])

    # Unstable resources (for IsStable and the Stable* events).
    def mark_unstable(self, rows: Iterable[tuple[int, int, str, float]]) -> None:
        self.connection.executemany(
            "INSERT INTO unstable (internal_id, level, public_id, deadline) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(internal_id) DO UPDATE SET deadline = excluded.deadline", rows)

    def unstable_deadline(self, internal_id: int) -> float | None:
        row = self._execute("SELECT deadline FROM unstable WHERE internal_id = ?", (internal_id,)).fetchone()
        return row[0] if row else None

    def due_unstable(self, now: float) -> list[ResourceRow]:
        return [ResourceRow(internal_id, Level(level), public_id, None) for internal_id, level, public_id in
                self._execute("SELECT internal_id, level, public_id FROM unstable WHERE deadline <= ? "
                              "ORDER BY deadline, level DESC, internal_id", (now,))]

    def next_unstable_deadline(self) -> float | None:
        deadline: float | None = self._execute("SELECT MIN(deadline) FROM unstable").fetchone()[0]
        return deadline

    def clear_unstable(self, internal_id: int) -> None:
        self._execute("DELETE FROM unstable WHERE internal_id = ?", (internal_id,))

    # The event log (written in the same transaction as the change it reports).
    def append_event(self, kind: str, level: Level | None, resource_id: str | None, payload: dict[str, Any],
                     created: str) -> int:
        """One event: ``pending`` if a callback consumes its kind, else ``logged``; listed if it is one
        of Orthanc's changes (``broker.core.changes``)."""
        delivered = kind in changes.DELIVERED
        return _returned(self._execute(
            "INSERT INTO outbox (kind, level, resource_id, payload, created, state, listed) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (kind, None if level is None else level.label, resource_id,
             _dump(payload).encode("utf-8") if delivered else None, created, "pending" if delivered else "logged",
             int(kind in changes.LISTED))))

    def forget_resource_events(self, public_id: str) -> None:
        """A resource is deleted: its changes leave ``/changes`` (Orthanc deletes its ``Changes`` rows
        with it), and a ``Stable*`` event not yet delivered is skipped (Orthanc skips a resource that no
        longer exists)."""
        self._execute("UPDATE outbox SET listed = 0 WHERE resource_id = ? AND listed = 1", (public_id,))
        self._execute(f"UPDATE outbox SET state = 'done', payload = NULL WHERE resource_id = ? AND state = 'pending' "
                      f"AND kind IN ({', '.join('?' * len(changes.STABLE_KINDS))})",
                      (public_id, *sorted(changes.STABLE_KINDS)))


_ADD_COLUMN = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+)")


def _adds_an_existing_column(connection: Connection, statement: str) -> bool:
    """Whether a migration adds a column that the table already has: a table that an old index lacked
    entirely was just created in its newest form by ``SCHEMA``."""
    match = _ADD_COLUMN.match(statement)
    if match is None:
        return False
    table, column = match.groups()
    return any(row[1] == column for row in connection.execute(f"PRAGMA table_info({table})"))


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class SqliteBackend:
    """The embedded index: one SQLite file in WAL mode, upgraded in place by ``MIGRATIONS``."""

    begin_write: tuple[str, ...] = ("BEGIN IMMEDIATE",)
    begin_read = "BEGIN"
    begins_every_read = False

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.synchronous = synchronous

    def connect(self) -> Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60.0)
        connection.execute(f"PRAGMA synchronous = {self.synchronous}")
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    def prepare(self, connection: Connection) -> None:
        assert isinstance(connection, sqlite3.Connection)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.executescript(SCHEMA)
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        while version in MIGRATIONS:
            for statement in MIGRATIONS[version]:
                if not _adds_an_existing_column(connection, statement):
                    connection.execute(statement)
            version += 1
            connection.execute(f"PRAGMA user_version = {version}")
        if version not in (0, SCHEMA_VERSION):
            raise RuntimeError(f"The index {self.path} has schema version {version}; this luabroker reads "
                               f"version {SCHEMA_VERSION}")
        connection.executescript(LATE_INDEXES)

    def alive(self, connection: Connection) -> bool:
        return True  # a file: nothing drops the connection

    def last_sequence_value(self, connection: Connection, table: str) -> int:
        row = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return int(row[0]) if row else 0


class Index:
    def __init__(self, path: Path | None = None, *, synchronous: str = "NORMAL",
                 backend: Backend | None = None) -> None:
        """The index in the SQLite file ``path``, or in ``backend`` (PostgreSQL: ``broker.core.postgres``)."""
        if backend is None:
            assert path is not None, "an index needs a file or a back end"
            backend = SqliteBackend(Path(path), synchronous)
        self.backend: Backend = backend
        self._write_lock = threading.RLock()
        self._write_owner: int | None = None
        self._write_depth = 0
        self._readers: queue.LifoQueue[IndexTransaction] = queue.LifoQueue(READER_POOL_SIZE)
        self._closed = False
        self._writer = backend.connect()
        backend.prepare(self._writer)
        self._transaction = IndexTransaction(self._writer)

    def last_sequence_value(self, table: str) -> int:
        """The last ``seq`` of ``table`` (``outbox``, ``exports``) ever given, its rows deleted or not."""
        with self.read(snapshot=False) as tx:
            return self.backend.last_sequence_value(tx.connection, table)

    @contextmanager
    def write(self) -> Iterator[IndexTransaction]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT, ROLLBACK on error); re-entrant per thread."""
        with self._write_lock:
            if self._write_depth:
                self._write_depth += 1
                try:
                    yield self._transaction
                finally:
                    self._write_depth -= 1
                return
            self._begin_write()
            self._write_owner = threading.get_ident()
            self._write_depth = 1
            try:
                yield self._transaction
                self._finish("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _begin_write(self) -> None:
        """Open the write transaction (on a new writer connection if the database dropped the old one)."""
        writer = self._begun(self._writer, self.backend.begin_write)
        if writer is not self._writer:
            self._writer, self._transaction = writer, IndexTransaction(writer)

    def _begun(self, connection: Connection, statements: tuple[str, ...]) -> Connection:
        """``connection`` with a transaction opened by ``statements``; if the database has dropped it
        (PostgreSQL restarted, a network cut), a new connection, closed ``connection`` replaced."""
        try:
            for statement in statements:
                connection.execute(statement)
            return connection
        except Exception:
            if self.backend.alive(connection):
                raise
        connection.close()
        connection = self.backend.connect()
        for statement in statements:
            connection.execute(statement)
        return connection

    def _finish(self, statement: str) -> None:
        self._write_depth = 0
        self._write_owner = None
        self._writer.execute(statement)

    def _rollback(self) -> None:
        """Roll back what is still open (a failed COMMIT included), so the next BEGIN can start."""
        self._write_depth = 0
        self._write_owner = None
        if self._writer.in_transaction and self.backend.alive(self._writer):
            self._writer.execute("ROLLBACK")

    @contextmanager
    def read(self, *, snapshot: bool = True) -> Iterator[IndexTransaction]:
        """A consistent snapshot for several queries (the writer's transaction in the writing thread).
        ``snapshot=False`` for a single query, which SQLite runs in a snapshot of its own: no
        ``BEGIN``/``COMMIT`` round (half the cost of a small read, profiled on ``RestApiGet``)."""
        if self._write_owner == threading.get_ident():
            yield self._transaction
            return
        snapshot = snapshot or self.backend.begins_every_read
        try:
            transaction = self._readers.get_nowait()
        except queue.Empty:
            transaction = IndexTransaction(self.backend.connect())
        if snapshot:
            connection = self._begun(transaction.connection, (self.backend.begin_read,))
            if connection is not transaction.connection:
                transaction = IndexTransaction(connection)
        try:
            yield transaction
        finally:
            if snapshot:
                transaction.connection.execute("COMMIT")
            self._release(transaction)

    def _release(self, transaction: IndexTransaction) -> None:
        if not self._closed and self.backend.alive(transaction.connection):
            try:
                self._readers.put_nowait(transaction)
                return
            except queue.Full:
                pass
        transaction.connection.close()

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._readers.get_nowait().connection.close()
            except queue.Empty:
                break
        with self._write_lock:
            self._writer.close()
