"""What the nodes sharing one PostgreSQL index coordinate through it (``broker.core.cluster``), on a
real PostgreSQL: the coordinator lease, the claims on events, the wake-ups, and the saved jobs."""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from broker.core.cluster import EventClaims, NotificationListener, Notifier, PostgresLease
from broker.core.lease import StorageInUse
from broker.core.postgres import PostgresBackend
from broker.jobs.persistence import JobStore, StoredJob
from tests.support.waiting import wait_until


def terminate(database: str, connection: Any) -> None:
    """End the session of ``connection`` from the server's side (a PostgreSQL restart, a network cut)."""
    pid = connection.info.backend_pid
    with psycopg.connect(database, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def test_one_node_holds_the_lease_and_the_next_takes_it_when_it_goes(postgres_database: str) -> None:
    lost: list[str] = []
    first = PostgresLease(postgres_database, on_lost=lambda: lost.append("first"))
    second = PostgresLease(postgres_database, on_lost=lambda: lost.append("second"))
    first.acquire()
    with pytest.raises(StorageInUse):
        second.acquire()
    waiter = threading.Thread(target=second.wait, daemon=True)
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive() and not second.held
    first.release()
    waiter.join(30)
    assert second.held and not first.held and lost == []
    second.release()


def test_a_holder_whose_session_ends_takes_the_lease_again_unless_another_node_has_it(postgres_database: str) -> None:
    lost: list[str] = []
    first = PostgresLease(postgres_database, on_lost=lambda: lost.append("first"))
    first.acquire()
    session = first._session.fetchone('SELECT pg_backend_pid()')[0]
    terminate(postgres_database, first._session.current)  # nobody else wants it: taken again at once

    def taken_again() -> bool:
        with psycopg.connect(postgres_database) as admin:
            holders = admin.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchall()
        return bool(holders) and holders[0][0] != session

    wait_until(taken_again, 30, message="the lease taken again")
    assert first.held
    second = PostgresLease(postgres_database, on_lost=lambda: lost.append("second"))
    with pytest.raises(StorageInUse):
        second.acquire()
    assert lost == []
    # Now another node waits: when the holder's session ends, the other takes the lease and the holder
    # learns that it lost it (it must stop coordinating).
    waiter = threading.Thread(target=second.wait, daemon=True)
    waiter.start()
    terminate(postgres_database, first._session.current)
    waiter.join(30)
    assert second.held
    wait_until(lambda: lost == ["first"], 30, message="the first holder told it lost the lease")
    assert not first.held
    first.release()
    second.release()


def test_an_event_is_claimed_by_one_dispatcher_at_a_time(postgres_database: str) -> None:
    mine, theirs = EventClaims(postgres_database, "public"), EventClaims(postgres_database, "public")
    other_tenant = EventClaims(postgres_database, "tenant_b")
    try:
        with mine.claim(7) as claimed:
            assert claimed
            with theirs.claim(7) as second:
                assert not second  # skipped: another node delivers it
            with theirs.claim(8) as other_event, other_tenant.claim(7) as other_schema:
                assert other_event and other_schema
        with theirs.claim(7) as after:
            assert after
    finally:
        for claims in (mine, theirs, other_tenant):
            claims.close()


def test_a_claim_ends_with_its_session(postgres_database: str) -> None:
    """A node that dies in the middle of a delivery leaves the event to the others."""
    mine, theirs = EventClaims(postgres_database, "public"), EventClaims(postgres_database, "public")
    try:
        with mine.claim(9) as claimed:
            assert claimed
            terminate(postgres_database, mine._session.current)
            with theirs.claim(9) as second:
                assert second
    finally:
        mine.close()
        theirs.close()


def test_a_notification_wakes_the_listener_of_its_schema_only(postgres_database: str) -> None:
    woken: dict[str, threading.Event] = {"public": threading.Event(), "tenant_b": threading.Event()}
    listeners = [NotificationListener(postgres_database, schema, lambda _payload, event=event: event.set())
                 for schema, event in woken.items()]
    notifier = Notifier(postgres_database, "public")
    for listener in listeners:
        listener.start()
    try:
        # The listener may not listen yet: notify until it hears.
        wait_until(lambda: notifier() or woken["public"].wait(0.2), 30, message="a wake-up")
        assert not woken["tenant_b"].is_set()
    finally:
        notifier.close()
        for listener in listeners:
            listener.stop()


def test_the_saved_jobs_live_in_the_tenants_schema(postgres_database: str) -> None:
    """The coordinator of any node resumes them; a dropped connection costs nothing."""
    job = StoredJob(id="j1", seq=1, type="Archive", priority=0, state="Pending", created=1.7e9 + 0.123456,
                    changed=1.7e9 + 0.5, runtime=0.0, error_code=0, error_details="", failures=0, retry_at=None,
                    synchronous=False, payload={"Resources": ["x"]}, announce="JobSubmitted")
    backend = PostgresBackend(postgres_database, "tenant_jobs")
    backend.prepare(backend.connect())  # the index's schema, which the store creates first
    store = JobStore(backend)
    store.save(job)
    store.save(replace(job, state="Running"))
    terminate(postgres_database, store._db._connection)  # type: ignore[attr-defined]
    store.announced("j1", "JobSubmitted")
    store.close()
    again = JobStore(PostgresBackend(postgres_database, "tenant_jobs"))
    [loaded] = list(again.load())
    assert (loaded.state, loaded.created, loaded.payload, loaded.announce) == ("Running", job.created,
                                                                                {"Resources": ["x"]}, None)
    again.close()
