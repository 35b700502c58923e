"""The event log as Orthanc's change log: what each change writes, in which order, and what leaves
``/changes`` (the outbox's ``changes``); compared with a real Orthanc in
tests/integration/test_lifecycle_parity.py."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from broker.core.database import Backend
from broker.core.levels import Level
from broker.core.origin import Origin
from broker.core.recycling import StorageLimits
from broker.core.store import Store
from broker.errors import OrthancError
from tests.support import dicom_samples as samples

REST = Origin.rest("127.0.0.1", "")


def listed(store: Store) -> list[tuple[str, str | None]]:
    changes, done = store.outbox.changes(0, 1000)
    assert done
    return [(change.kind, change.resource_id) for change in changes]


def delivered(store: Store, kind: str) -> list[tuple[str | None, str | None]]:
    return [(event.level, event.resource_id) for event in store.outbox.pending() if event.kind == kind]


@pytest.fixture
def open_store(tmp_path: Path, index_backend: Backend | None) -> Callable[..., Store]:
    """A store in ``tmp_path``, on each back end of the index in turn."""
    return lambda **options: Store(tmp_path, index_backend=index_backend, **options)


def test_a_first_instance_lists_its_new_resources_from_the_instance_up(open_store: Callable[..., Store]) -> None:
    store = open_store()
    try:
        [first, second] = samples.series_of(2)
        a = store.store_instance(first, REST)
        b = store.store_instance(second, REST)
        store.store_instance(second, REST)  # AlreadyStored: delivered, never listed
        assert listed(store) == [("NewInstance", a.instance_id), ("NewSeries", a.parent_series),
                                 ("NewStudy", a.parent_study), ("NewPatient", a.parent_patient),
                                 ("NewInstance", b.instance_id)]
        assert [i for _, i in delivered(store, "StoredInstance")] == [a.instance_id, b.instance_id, b.instance_id]
    finally:
        store.close()


def test_completed_series_is_listed_when_the_expected_instances_are_there(open_store: Callable[..., Store]) -> None:
    store = open_store()
    try:
        files = samples.series_of(3, CardiacNumberOfImages="3")
        for data in files[:2]:
            store.store_instance(data, REST)
        assert "CompletedSeries" not in [kind for kind, _ in listed(store)]
        series = store.store_instance(files[2], REST).parent_series
        assert listed(store)[-1] == ("CompletedSeries", series)
    finally:
        store.close()


def test_a_deletion_is_delivered_in_orthancs_order_and_leaves_the_list(open_store: Callable[..., Store]) -> None:
    store = open_store(stable_age=30)
    try:
        study, series = generate_uid(), [generate_uid(), generate_uid()]
        a, b, other = (store.store_instance(samples.encode(samples.minimal(
            patient_id="TREE", StudyInstanceUID=study, SeriesInstanceUID=series[index])), REST) for index in (0, 0, 1))
        store.emit_stable_events(now=time.time() + 31)
        store.delete(Level.STUDY, a.parent_study)
        # Below the study depth first, children in the order stored; the emptied patient; the study.
        assert delivered(store, "Deleted") == [
            ("Instance", a.instance_id), ("Instance", b.instance_id), ("Series", a.parent_series),
            ("Instance", other.instance_id), ("Series", other.parent_series),
            ("Patient", a.parent_patient), ("Study", a.parent_study)]
        assert listed(store) == []  # every change was about a deleted resource
        assert [e.kind for e in store.outbox.pending() if e.kind.startswith("Stable")] == []  # skipped
    finally:
        store.close()


def test_recycling_and_overwriting_deliver_deleted_events(open_store: Callable[..., Store]) -> None:
    store = open_store(limits=StorageLimits(max_patients=1, overwrite=True))
    try:
        first = store.store_instance(samples.encode(samples.minimal(patient_id="OLD")), REST)
        data = samples.encode(samples.minimal(patient_id="NEW"))
        second = store.store_instance(data, REST)
        # The recycled patient: below it depth first, then itself.
        assert [i for _, i in delivered(store, "Deleted")] == [
            first.instance_id, first.parent_series, first.parent_study, first.parent_patient]
        store.store_instance(data, REST)  # overwritten: the old copy is deleted first
        # The instance, after the parents it emptied, the topmost first.
        assert [i for _, i in delivered(store, "Deleted")][-4:] == [
            second.parent_patient, second.parent_study, second.parent_series, second.instance_id]
    finally:
        store.close()


def test_delete_changes_empties_the_list_but_keeps_the_events(open_store: Callable[..., Store]) -> None:
    store = open_store()
    try:
        store.store_instance(samples.encode(samples.minimal()), REST)
        last = store.outbox.last_seq()
        store.outbox.clear_changes()
        assert listed(store) == [] and store.outbox.last_change() is None
        assert store.outbox.last_seq() == last and len(store.outbox.pending()) == 1
    finally:
        store.close()


def test_a_full_event_backlog_refuses_new_instances_and_keeps_what_is_stored(open_store: Callable[..., Store]) -> None:
    store = open_store()
    store.event_backlog_limit = 2
    try:
        for _ in range(2):
            store.store_instance(samples.encode(samples.minimal()), REST)
        with pytest.raises(OrthancError) as refused:
            store.store_instance(samples.encode(samples.minimal()), REST)
        assert refused.value.http_status == 503 and "EventBacklogLimit" in refused.value.details
        assert store.statistics().count_instances == 2
        store.outbox.mark_done(store.outbox.pending()[0].seq)  # the scripts catch up
        store.store_instance(samples.encode(samples.minimal()), REST)
        assert store.statistics().count_instances == 3
    finally:
        store.close()
