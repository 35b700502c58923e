"""The outbox: the durable event log, each event written in the same transaction as the change it
reports. ``broker.core.changes`` lists the kinds: which are Orthanc's changes (``GET /changes``) and
which a Lua callback consumes. ``level`` is Orthanc's level name, ``resource_id`` the public id.
Payloads, for the kinds a callback consumes:

* ``StoredInstance`` (level ``Instance``): ``{"origin": Origin.to_dict(), "metadata": {name: value},
  "tags": simplified tags}``. Written for every successful store, duplicates included (then with the
  existing instance's metadata), as Orthanc fires ``OnStoredInstance`` for both.
* ``Deleted``: one per resource that disappeared, in Orthanc's order (``Store.delete``); ``{}``.
* ``UpdatedMetadata`` (``{"Metadata": name}``), ``UpdatedAttachment`` (``{"Attachment": name}``):
  a user metadata or attachment was written or deleted.
* ``StableSeries``, ``StableStudy``, ``StablePatient``: no new instance for ``StableAge`` seconds;
  ``{"tags": main tags, "metadata": {name: value}}`` as they were when it became stable.
* ``JobSubmitted``, ``JobSuccess``, ``JobFailure`` (no level; ``resource_id`` is the job id): written by
  the jobs engine (``broker.jobs``) through ``append``; ``{}``.

The dispatcher reads ``pending()`` in ``seq`` order, and for each event calls ``mark_done`` or
``record_failure`` (which re-queues it, or parks it: a dead letter kept for inspection). ``changes``
and ``last_change`` read Orthanc's changes, as its ``GetChanges`` and ``GetLastChange``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.core.index import Index
from broker.core.metadata import now_iso


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    seq: int
    kind: str
    level: str | None
    resource_id: str | None
    payload: dict[str, Any]
    attempts: int
    state: str = "pending"
    last_error: str | None = None
    created: str = ""


_COLUMNS = "seq, kind, level, resource_id, payload, attempts, state, last_error, created"


def _event(row: tuple[Any, ...]) -> OutboxEvent:
    seq, kind, level, resource_id, payload, attempts, state, last_error, created = row
    return OutboxEvent(seq, kind, level, resource_id, json.loads(payload) if payload else {}, attempts, state,
                       last_error, created)


class Outbox:
    def __init__(self, index: Index) -> None:
        self._index = index

    def append(self, kind: str, resource_id: str | None, payload: dict[str, Any] | None = None) -> int:
        """Write one event that no index change carries (the jobs engine's ``Job*`` events); returns its seq."""
        with self._index.write() as tx:
            return tx.append_event(kind, None, resource_id, payload or {}, now_iso())

    def pending(self, limit: int = 100) -> list[OutboxEvent]:
        """The oldest pending events, in order."""
        with self._index.read() as tx:
            rows = tx.connection.execute(f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT ?",
                                         (limit,)).fetchall()
        return [_event(row) for row in rows]

    def pending_count(self, at_most: int) -> int:
        """How many events wait for delivery, counted up to ``at_most``."""
        with self._index.read() as tx:
            count: int = tx.connection.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE state = 'pending' LIMIT ?) AS waiting",
                (at_most,)).fetchone()[0]
        return count

    def get(self, seq: int) -> OutboxEvent | None:
        with self._index.read() as tx:
            row = tx.connection.execute(f"SELECT {_COLUMNS} FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return _event(row) if row else None

    def mark_done(self, seq: int) -> None:
        """Delivered: the payload (a whole instance's tags, for ``StoredInstance``) is not kept."""
        with self._index.write() as tx:
            tx.connection.execute("UPDATE outbox SET state = 'done', payload = NULL WHERE seq = ?", (seq,))

    def record_failure(self, seq: int, error: str, park: bool) -> None:
        """Count a failed delivery; ``park=True`` moves the event out of the queue (dead letter)."""
        with self._index.write() as tx:
            tx.connection.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, state = ? WHERE seq = ?",
                (error, "parked" if park else "pending", seq))

    def parked(self) -> list[OutboxEvent]:
        with self._index.read() as tx:
            rows = tx.connection.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state = 'parked' ORDER BY seq").fetchall()
        return [_event(row) for row in rows]

    def requeue(self, seq: int) -> bool:
        """Put a parked event back in the queue (attempts kept). False if it was not parked."""
        with self._index.write() as tx:
            return tx.connection.execute("UPDATE outbox SET state = 'pending' WHERE seq = ? AND state = 'parked'",
                                         (seq,)).rowcount > 0

    def counts(self) -> dict[str, int]:
        """The events a callback consumes, by state (the ``logged`` changes that none consumes are left
        out)."""
        counts = {"pending": 0, "done": 0, "parked": 0}
        with self._index.read() as tx:
            for state, count in tx.connection.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
                if state in counts:
                    counts[state] = count
        return counts

    # Orthanc's changes.
    def changes(self, since: int, limit: int) -> tuple[list[OutboxEvent], bool]:
        """The changes after ``since``, at most ``limit``, and whether there are no more (``Done``)."""
        with self._index.read() as tx:
            rows = tx.connection.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE listed = 1 AND seq > ? ORDER BY seq LIMIT ?",
                (since, limit + 1)).fetchall()
        return [_event(row) for row in rows[:limit]], len(rows) <= limit

    def last_change(self) -> OutboxEvent | None:
        with self._index.read() as tx:
            row = tx.connection.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE listed = 1 ORDER BY seq DESC LIMIT 1").fetchone()
        return _event(row) if row else None

    def last_seq(self) -> int:
        """The last sequence number ever given (Orthanc's ``GetLastChangeIndex``), 0 before the first."""
        return self._index.last_sequence_value("outbox")

    def clear_changes(self) -> None:
        """``DELETE /changes``: nothing is listed any more; the events stay for their delivery."""
        with self._index.write() as tx:
            tx.connection.execute("UPDATE outbox SET listed = 0 WHERE listed = 1")
