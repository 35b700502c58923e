"""The store: ingest (statuses, filter, metadata, outbox, atomicity), deletion, metadata, stability."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from broker.core.database import Backend
from broker.core.index import IndexTransaction
from broker.core.levels import Level
from broker.core.origin import Origin
from broker.core.store import INDEX_FILE_NAME, IncomingInstance, Store
from broker.errors import ErrorCode, OrthancError
from tests.support import dicom_samples as samples

REPO = Path(__file__).resolve().parents[3]
REST = Origin.rest("10.0.0.7", "alice")
DICOM = Origin.dicom("10.0.0.8", "MODALITY", "LUABROKER")


@pytest.fixture
def events() -> list[int]:
    return []


@pytest.fixture
def store(tmp_path: Path, events: list[int], index_backend: Backend | None) -> Store:
    store = Store(tmp_path / "store", user_metadata={"Sample": 1024, "Other": 2001},
                  on_event=lambda: events.append(1), index_backend=index_backend)
    yield store
    store.close()


def stored_files(store: Store) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file() and not p.name.startswith(INDEX_FILE_NAME)]


def test_store_answers_success_with_orthanc_ids(store: Store, events: list[int]) -> None:
    data = samples.sample_file("CT_small.dcm")
    result = store.store_instance(data, REST)
    assert result.to_json() == {
        "ID": "f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917af",
        "ParentPatient": "fa558bce-587a86d3-ad0da9b3-9d043d9d-4f5c5718",
        "ParentSeries": "93034833-163e42c3-bc9a428b-194620cf-2c5799e5",
        "ParentStudy": "8a8cf898-ca27c490-d0c7058c-929d0581-2bbf104d",
        "Path": "/instances/f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917af",
        "Status": "Success"}
    assert [p.read_bytes() for p in stored_files(store)] == [data]
    assert store.read_instance(result.instance_id)[0] == data
    assert events == [1]


def test_file_is_laid_out_by_uuid_like_orthanc(store: Store) -> None:
    result = store.store_instance(samples.sample_file("CT_small.dcm"), REST)
    _, attachment = store.read_instance(result.instance_id)
    assert stored_files(store) == [store.root / attachment.uuid[:2] / attachment.uuid[2:4] / attachment.uuid]


def test_stored_instance_event_carries_origin_metadata_and_tags(store: Store) -> None:
    result = store.store_instance(samples.sample_file("CT_small.dcm"), REST)
    [event] = store.outbox.pending()
    assert (event.kind, event.level, event.resource_id, event.attempts) == ("StoredInstance", "Instance",
                                                                            result.instance_id, 0)
    assert event.payload["origin"] == REST.to_dict()
    assert event.payload["metadata"] == store.metadata(Level.INSTANCE, result.instance_id)
    assert event.payload["tags"]["PatientName"] == "CompressedSamples^CT1"
    assert event.payload["tags"]["PixelData"] is None


def test_metadata_depends_on_the_origin(store: Store) -> None:
    rest = store.metadata(Level.INSTANCE, store.store_instance(samples.encode(samples.minimal()), REST).instance_id)
    assert {k: v for k, v in rest.items() if k != "ReceptionDate"} == {
        "RemoteAET": "", "Origin": "RestApi", "TransferSyntax": "1.2.840.10008.1.2.1",
        "SopClassUid": "1.2.840.10008.5.1.4.1.1.7", "RemoteIP": "10.0.0.7", "HttpUsername": "alice"}
    dicom = store.metadata(Level.INSTANCE, store.store_instance(samples.encode(samples.minimal()), DICOM).instance_id)
    assert dicom["RemoteAET"] == "MODALITY" and dicom["CalledAET"] == "LUABROKER" and dicom["RemoteIP"] == "10.0.0.8"
    assert "HttpUsername" not in dicom
    lua = store.metadata(Level.INSTANCE,
                         store.store_instance(samples.encode(samples.minimal()), Origin.lua()).instance_id)
    assert lua["Origin"] == "Lua" and lua["RemoteAET"] == "" and "RemoteIP" not in lua
    assert len(rest["ReceptionDate"]) == 15 and rest["ReceptionDate"][8] == "T"


def test_index_in_series_and_pixel_offset_are_recorded(store: Store) -> None:
    result = store.store_instance(samples.sample_file("CT_small.dcm"), REST)
    metadata = store.metadata(Level.INSTANCE, result.instance_id)
    assert metadata["IndexInSeries"] == "1" and metadata["PixelDataOffset"] == "6288"
    assert list(metadata) == ["IndexInSeries", "ReceptionDate", "RemoteAET", "Origin", "TransferSyntax",
                              "SopClassUid", "RemoteIP", "HttpUsername", "PixelDataOffset"]


def test_duplicate_is_already_stored_without_new_file_but_with_an_event(store: Store, events: list[int]) -> None:
    data = samples.sample_file("CT_small.dcm")
    first = store.store_instance(data, REST)
    metadata = store.metadata(Level.INSTANCE, first.instance_id)
    again = store.store_instance(data, DICOM)
    assert again.status == "AlreadyStored" and again.instance_id == first.instance_id
    assert len(stored_files(store)) == 1
    second = store.outbox.pending()[1]
    assert second.kind == "StoredInstance" and second.payload["metadata"] == metadata
    assert second.payload["origin"] == DICOM.to_dict()
    assert events == [1, 1]


def test_filter_returning_false_filters_out_and_writes_nothing(store: Store, events: list[int]) -> None:
    seen: list[IncomingInstance] = []

    def refuse(incoming: IncomingInstance) -> bool:
        seen.append(incoming)
        return False

    store.instance_filter = refuse
    result = store.store_instance(samples.sample_file("CT_small.dcm"), REST)
    assert result.status == "FilteredOut" and result.instance_id == "f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917af"
    assert result.to_json()["Path"] == "/instances/f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917af"
    assert stored_files(store) == [] and store.list_ids(Level.PATIENT) == []
    assert store.outbox.counts() == {"pending": 0, "done": 0, "parked": 0} and events == []
    incoming = seen[0]
    assert incoming.has_pixel_data and incoming.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert incoming.simplified_tags()["PatientID"] == "1CT1"
    assert incoming.dataset.PatientID == "1CT1"


def test_filter_is_asked_about_duplicates_too(store: Store) -> None:
    data = samples.sample_file("CT_small.dcm")
    store.store_instance(data, REST)
    store.instance_filter = lambda incoming: False
    assert store.store_instance(data, REST).status == "FilteredOut"
    assert len(store.outbox.pending()) == 1


@pytest.mark.parametrize("error", [OrthancError(ErrorCode.NOT_LUA_PREDICATE, "returned nil"), ValueError("bug")])
def test_filter_raising_fails_the_store_and_writes_nothing(store: Store, events: list[int], error: Exception) -> None:
    def broken(incoming: IncomingInstance) -> bool:
        raise error

    store.instance_filter = broken
    with pytest.raises(OrthancError) as raised:
        store.store_instance(samples.sample_file("CT_small.dcm"), REST)
    assert raised.value.code in (ErrorCode.NOT_LUA_PREDICATE, ErrorCode.INTERNAL_ERROR)
    assert stored_files(store) == [] and store.list_ids(Level.INSTANCE) == [] and events == []
    assert store.outbox.pending() == []


@pytest.mark.parametrize("data", [b"", b"hello", b"\x00" * 300, samples.sample_file("MR_truncated.dcm"),
                                  samples.sample_file("rtplan_truncated.dcm")])
def test_bad_file_is_refused_with_400_and_nothing_is_stored(store: Store, data: bytes) -> None:
    with pytest.raises(OrthancError) as raised:
        store.store_instance(data, REST)
    assert raised.value.code is ErrorCode.BAD_FILE_FORMAT and raised.value.http_status == 400
    assert raised.value.details
    assert stored_files(store) == [] and store.outbox.pending() == []


def test_file_without_uids_is_refused_with_404_like_orthanc(store: Store) -> None:
    with pytest.raises(OrthancError) as raised:
        store.store_instance(samples.sample_file("priv_SQ.dcm"), REST)
    assert raised.value.code is ErrorCode.INEXISTENT_TAG and "StudyInstanceUID" in raised.value.details
    with pytest.raises(OrthancError) as raised:
        store.store_instance(samples.encode(samples.minimal(SeriesInstanceUID="")), REST)
    assert raised.value.code is ErrorCode.BAD_FILE_FORMAT


def test_failed_transaction_removes_the_written_file(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(IndexTransaction, "append_event", fail)
    with pytest.raises(OrthancError) as raised:
        store.store_instance(samples.sample_file("CT_small.dcm"), REST)
    assert raised.value.code is ErrorCode.DATABASE
    assert stored_files(store) == [] and store.list_ids(Level.PATIENT) == []
    monkeypatch.undo()
    assert store.store_instance(samples.sample_file("CT_small.dcm"), REST).status == "Success"


def test_crash_between_file_write_and_commit_leaves_no_index_row(tmp_path: Path) -> None:
    root = tmp_path / "store"
    script = f"""
import os
from broker.core.index import IndexTransaction
from broker.core.origin import Origin
from broker.core.store import Store
from tests.support import dicom_samples

def die(*args, **kwargs):
    os._exit(17)  # the process dies with the transaction open, after the resources were inserted

IndexTransaction.append_event = die
Store({str(root)!r}).store_instance(dicom_samples.encode(dicom_samples.minimal()), Origin.lua())
"""
    process = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert process.returncode == 17, process.stderr
    store = Store(root)
    try:
        assert store.list_ids(Level.PATIENT) == [] and store.list_ids(Level.INSTANCE) == []
        assert store.outbox.counts() == {"pending": 0, "done": 0, "parked": 0}
        assert len(stored_files(store)) == 1  # an orphan file, never an index row without its file
        assert store.store_instance(samples.encode(samples.minimal()), Origin.lua()).status == "Success"
    finally:
        store.close()


def test_concurrent_stores_from_many_threads(store: Store) -> None:
    batches = [samples.series_of(10) for _ in range(6)]
    duplicate = samples.sample_file("CT_small.dcm")
    statuses: list[str] = []
    errors: list[BaseException] = []

    def ingest(batch: list[bytes]) -> None:
        try:
            for data in batch:
                store.store_instance(data, DICOM)
            statuses.append(store.store_instance(duplicate, DICOM).status)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(statuses) == ["AlreadyStored"] * 5 + ["Success"]
    stats = store.statistics()
    assert (stats.count_instances, stats.count_series, stats.count_studies, stats.count_patients) == (61, 7, 7, 2)
    assert len(stored_files(store)) == 61
    assert len(store.outbox.pending(1000)) == 66


def test_delete_cascades_and_removes_empty_parents(store: Store, events: list[int]) -> None:
    first, second, third = samples.series_of(3)
    results = [store.store_instance(data, REST) for data in (first, second, third)]
    other = store.store_instance(samples.encode(samples.minimal(patient_id="TREE")), REST)  # same patient
    events.clear()

    gone = store.delete(Level.INSTANCE, results[0].instance_id)
    assert gone.remaining_ancestor.public_id == results[0].parent_series
    gone = store.delete(Level.SERIES, results[0].parent_series)
    assert gone.remaining_ancestor.level is Level.PATIENT
    assert {r.level for r in gone.deleted} == {Level.SERIES, Level.INSTANCE, Level.STUDY}
    assert len(stored_files(store)) == 1
    gone = store.delete(Level.PATIENT, other.parent_patient)
    assert gone.remaining_ancestor is None
    assert stored_files(store) == [] and store.statistics().count_patients == 0
    assert list(store.root.iterdir()) == [p for p in store.root.iterdir() if p.name.startswith(INDEX_FILE_NAME)]
    deleted = [(e.level, e.resource_id) for e in store.outbox.pending(100) if e.kind == "Deleted"]
    assert ("Instance", results[0].instance_id) in deleted and ("Patient", other.parent_patient) in deleted
    assert len(deleted) == 1 + 4 + 4
    assert store.delete(Level.PATIENT, other.parent_patient) is None
    assert len(events) == 3


def test_delete_refuses_the_wrong_level(store: Store) -> None:
    result = store.store_instance(samples.encode(samples.minimal()), REST)
    assert store.delete(Level.SERIES, result.instance_id) is None
    assert store.exists(Level.INSTANCE, result.instance_id)


def test_user_metadata_by_name_or_number(store: Store) -> None:
    instance = store.store_instance(samples.encode(samples.minimal()), REST).instance_id
    store.set_metadata(Level.INSTANCE, instance, "Sample", "hello")
    store.set_metadata(Level.INSTANCE, instance, "2001", "world")
    store.set_metadata(Level.INSTANCE, instance, "3000", "x")
    assert store.get_metadata(Level.INSTANCE, instance, "1024") == "hello"
    metadata = store.metadata(Level.INSTANCE, instance)
    assert list(metadata)[-3:] == ["Sample", "Other", "3000"] and metadata["Other"] == "world"
    assert store.delete_metadata(Level.INSTANCE, instance, "Sample") is True
    assert store.delete_metadata(Level.INSTANCE, instance, "Sample") is False
    updated = [e for e in store.outbox.pending() if e.kind == "UpdatedMetadata"]
    assert [e.payload for e in updated] == [{"Metadata": "Sample"}, {"Metadata": "Other"}, {"Metadata": "3000"},
                                            {"Metadata": "Sample"}]


@pytest.mark.parametrize("name", ["ReceptionDate", "1", "1023", "65536"])
def test_system_metadata_cannot_be_changed(store: Store, name: str) -> None:
    instance = store.store_instance(samples.encode(samples.minimal()), REST).instance_id
    with pytest.raises(OrthancError) as raised:
        store.set_metadata(Level.INSTANCE, instance, name, "x")
    assert raised.value.http_status == 403


def test_unknown_metadata_name_is_an_inexistent_item(store: Store) -> None:
    instance = store.store_instance(samples.encode(samples.minimal()), REST).instance_id
    with pytest.raises(OrthancError) as raised:
        store.get_metadata(Level.INSTANCE, instance, "Foo")
    assert raised.value.code is ErrorCode.INEXISTENT_ITEM


def test_user_metadata_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="UserMetadata"):
        Store(tmp_path, user_metadata={"Bad": 12})


def test_series_metadata_and_last_update(store: Store) -> None:
    result = store.store_instance(samples.encode(samples.minimal(CardiacNumberOfImages="3")), DICOM)
    series = store.metadata(Level.SERIES, result.parent_series)
    assert series["RemoteAET"] == "MODALITY" and series["ExpectedNumberOfInstances"] == "3"
    for level, public_id in ((Level.STUDY, result.parent_study), (Level.PATIENT, result.parent_patient)):
        assert list(store.metadata(level, public_id)) == ["LastUpdate"]


def test_resources_become_stable_after_stable_age(tmp_path: Path) -> None:
    store = Store(tmp_path, stable_age=30)
    try:
        result = store.store_instance(samples.encode(samples.minimal()), REST)
        assert store.view(Level.SERIES, result.parent_series).is_stable is False
        assert store.emit_stable_events() == 0
        assert store.emit_stable_events(now=time.time() + 31) == 3
        stable = [e for e in store.outbox.pending() if e.kind.startswith("Stable")]
        assert [e.kind for e in stable] == ["StableSeries", "StableStudy", "StablePatient"]  # Orthanc's order
        series = next(e for e in stable if e.level == "Series")
        assert series.payload["tags"]["Modality"] == "OT" and "LastUpdate" in series.payload["metadata"]
        assert store.emit_stable_events(now=time.time() + 31) == 0
        assert store.view(Level.SERIES, result.parent_series).is_stable is True
    finally:
        store.close()


def test_statistics_count_resources_and_bytes(store: Store) -> None:
    data = samples.sample_file("CT_small.dcm")
    store.store_instance(data, REST)
    store.store_instance(samples.sample_file("MR_small.dcm"), REST)
    stats = store.statistics()
    assert (stats.count_patients, stats.count_instances) == (2, 2)
    assert stats.disk_size == len(data) + len(samples.sample_file("MR_small.dcm"))


def test_store_reopens_with_its_content(tmp_path: Path) -> None:
    store = Store(tmp_path)
    result = store.store_instance(samples.sample_file("CT_small.dcm"), REST)
    store.close()
    store = Store(tmp_path)
    try:
        assert store.list_ids(Level.INSTANCE) == [result.instance_id]
        assert store.store_instance(samples.sample_file("CT_small.dcm"), REST).status == "AlreadyStored"
    finally:
        store.close()
