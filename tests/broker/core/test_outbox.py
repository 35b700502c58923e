"""The outbox API used by the event dispatcher: order, done, retry, park."""
from __future__ import annotations

from pathlib import Path

import pytest

from broker.core.database import Backend
from broker.core.origin import Origin
from broker.core.store import Store
from tests.support import dicom_samples as samples


@pytest.fixture
def store(tmp_path: Path, index_backend: Backend | None) -> Store:
    store = Store(tmp_path, index_backend=index_backend)
    for _ in range(3):
        store.store_instance(samples.encode(samples.minimal()), Origin.lua())
    yield store
    store.close()


def test_pending_events_come_in_sequence_order(store: Store) -> None:
    events = store.outbox.pending()
    assert [e.seq for e in events] == sorted(e.seq for e in events) and len(events) == 3
    assert store.outbox.pending(limit=2) == events[:2]
    assert all(e.state == "pending" and e.created for e in events)


def test_done_events_leave_the_queue(store: Store) -> None:
    first = store.outbox.pending()[0]
    store.outbox.mark_done(first.seq)
    assert first.seq not in [e.seq for e in store.outbox.pending()]
    assert store.outbox.counts() == {"pending": 2, "done": 1, "parked": 0}  # the "logged" changes: not counted


def test_failure_keeps_the_event_at_the_head_with_one_more_attempt(store: Store) -> None:
    first = store.outbox.pending()[0]
    store.outbox.record_failure(first.seq, "SandboxCrashed: killed", park=False)
    again = store.outbox.pending()[0]
    assert (again.seq, again.attempts, again.last_error) == (first.seq, 1, "SandboxCrashed: killed")


def test_parked_event_is_a_dead_letter_until_requeued(store: Store) -> None:
    first = store.outbox.pending()[0]
    store.outbox.record_failure(first.seq, "timeout", park=True)
    assert [e.seq for e in store.outbox.parked()] == [first.seq]
    assert first.seq not in [e.seq for e in store.outbox.pending()]
    assert store.outbox.counts()["parked"] == 1
    assert store.outbox.requeue(first.seq) is True
    assert store.outbox.pending()[0].seq == first.seq and store.outbox.pending()[0].attempts == 1
    assert store.outbox.requeue(first.seq) is False


def test_events_survive_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.store_instance(samples.encode(samples.minimal()), Origin.lua())
    store.close()
    store = Store(tmp_path)
    try:
        assert [e.kind for e in store.outbox.pending()] == ["StoredInstance"]
    finally:
        store.close()
