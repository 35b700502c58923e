"""The SQLite index: transactions, re-entrance, reader pool."""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from broker.core.index import READER_POOL_SIZE, SCHEMA_VERSION, Index
from broker.core.levels import Level


@pytest.fixture
def index(tmp_path: Path) -> Index:
    index = Index(tmp_path / "index.sqlite")
    yield index
    index.close()


def test_index_runs_in_wal_mode(index: Index) -> None:
    with index.read() as tx:
        assert tx.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_failed_write_rolls_back_everything(index: Index) -> None:
    with pytest.raises(RuntimeError):
        with index.write() as tx:
            tx.create(Level.PATIENT, "p", None, {})
            raise RuntimeError("boom")
    with index.read() as tx:
        assert tx.find("p") is None
    with index.write() as tx:
        tx.create(Level.PATIENT, "p", None, {})


def test_write_is_reentrant_and_the_writer_reads_its_own_changes(index: Index) -> None:
    with index.write() as outer:
        outer.create(Level.PATIENT, "p", None, {"PatientID": "x"})
        with index.write() as inner:
            inner.create(Level.STUDY, "s", outer.find("p").internal_id, {}, {})
        with index.read() as tx:
            assert tx.find("s") is not None
    with index.read() as tx:
        assert [row.public_id for row in tx.subtree(tx.find("p").internal_id)] == ["p", "s"]


def test_readers_are_pooled_not_one_per_thread(index: Index) -> None:
    with index.write() as tx:
        tx.create(Level.PATIENT, "p", None, {})
    barrier = threading.Barrier(READER_POOL_SIZE + 8)
    found: list[bool] = []

    def read() -> None:
        with index.read() as tx:
            barrier.wait()
            found.append(tx.find("p") is not None)

    threads = [threading.Thread(target=read) for _ in range(READER_POOL_SIZE + 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == [True] * (READER_POOL_SIZE + 8)
    assert index._readers.qsize() == READER_POOL_SIZE


def test_an_index_of_schema_1_is_migrated_when_opened(tmp_path: Path) -> None:
    """A store written by the luabroker of schema 1 (attachments without compression columns) opens,
    keeps its rows, and reads its attachments as uncompressed."""
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE resources (internal_id INTEGER PRIMARY KEY, level INTEGER NOT NULL, public_id TEXT NOT NULL
            UNIQUE, parent_id INTEGER, main_tags TEXT NOT NULL, patient_tags TEXT);
        CREATE TABLE attachments (internal_id INTEGER NOT NULL, content_type INTEGER NOT NULL, uuid TEXT NOT NULL,
            size INTEGER NOT NULL, md5 TEXT, PRIMARY KEY (internal_id, content_type)) WITHOUT ROWID;
        INSERT INTO resources VALUES (1, 3, 'instance-id', NULL, '{}', NULL);
        INSERT INTO attachments VALUES (1, 1, 'file-uuid', 1234, NULL);
        PRAGMA user_version = 1;
    """)
    old.close()
    index = Index(path)
    try:
        with index.read() as tx:
            attachment = tx.attachment(1)
            assert attachment is not None
            assert (attachment.uuid, attachment.size, attachment.stored_size, attachment.compression) == (
                "file-uuid", 1234, 1234, 0)
            assert tx.total_size() == tx.total_uncompressed_size() == 1234
        assert index._writer.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    finally:
        index.close()
    Index(path).close()  # opens again without migrating twice


def test_an_index_of_schema_2_gets_orthancs_change_names(tmp_path: Path) -> None:
    """Schema 2 wrote ``Stable`` and ``Updated`` events that no callback consumed; schema 3 names them
    as Orthanc's changes, and lists nothing of the old log in /changes."""
    path = tmp_path / "old.sqlite"
    Index(path).close()
    old = sqlite3.connect(path)
    old.executescript("""
        DROP INDEX outbox_listed; DROP INDEX outbox_listed_by_resource; DROP INDEX outbox_pending_by_resource;
        ALTER TABLE outbox DROP COLUMN listed;
        INSERT INTO outbox (kind, level, resource_id, payload, created) VALUES
            ('Stable', 'Study', 's', '{}', 'x'), ('Updated', 'Series', 'a', '{"Metadata":"m"}', 'x'),
            ('Updated', 'Series', 'b', '{"Attachment":"n"}', 'x'), ('StoredInstance', 'Instance', 'i', '{}', 'x');
        PRAGMA user_version = 2;
    """)
    old.close()
    index = Index(path)
    try:
        rows = index._writer.execute("SELECT kind, resource_id, listed FROM outbox ORDER BY seq").fetchall()
        assert rows == [("StableStudy", "s", 0), ("UpdatedMetadata", "a", 0), ("UpdatedAttachment", "b", 0),
                        ("StoredInstance", "i", 0)]
    finally:
        index.close()
