"""What the store records and sends to ``OnStoredInstance``, compared with a real Orthanc that records
the arguments of its own ``OnStoredInstance`` (REST, DICOM and Lua origins)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE

from broker.core.levels import Level
from broker.core.origin import Origin
from broker.core.store import Store
from broker.dicom.sockets import pause_reactor
from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer

IGNORED_METADATA = {"ReceptionDate"}  # a time stamp: differs by nature


@pytest.fixture(scope="module")
def recording_peer() -> Iterator[OrthancPeer]:
    if ORTHANC_BINARY is None:
        pytest.skip("Orthanc is not installed")
    peer = OrthancPeer.create(ExecuteLuaEnabled=True).with_recorder().start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path)
    yield store
    store.close()


def c_store(peer: OrthancPeer, data: bytes, calling_aet: str) -> None:
    ds = pydicom.dcmread(BytesIO(data))
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", peer.dicom_port, ae_title=peer.aet)
    assert assoc.is_established
    try:
        pause_reactor(assoc)  # else, on a loaded machine, pynetdicom can lose the response
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()


def recorded(peer: OrthancPeer, instance_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        events = [e for e in peer.stored_events() if e["ID"] == instance_id]
        if events:
            return events[-1]
        time.sleep(0.05)
    raise AssertionError(f"Orthanc did not record OnStoredInstance for {instance_id}")


def as_lua(value: Any) -> Any:
    """What a JSON value becomes after Lua and DumpJson: nulls dropped, numeric strings as numbers."""
    if isinstance(value, dict):
        return {k: as_lua(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [as_lua(v) for v in value]
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return int(number) if number.is_integer() and abs(number) < 2**31 else number
    return value


def lua_equal(ours: Any, theirs: Any) -> bool:
    ours = as_lua(ours)
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(lua_equal(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(lua_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    if isinstance(ours, float) or isinstance(theirs, float):
        return isinstance(theirs, (int, float)) and abs(float(ours) - float(theirs)) < 1e-9 * max(1, abs(theirs))
    return ours == theirs


def without(mapping: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "kitchen_sink"])
def test_rest_store_metadata_and_event_equal_orthancs(recording_peer: OrthancPeer, store: Store, name: str) -> None:
    data = samples.kitchen_sink() if name == "kitchen_sink" else samples.sample_file(name)
    recording_peer.clear()
    instance = recording_peer.upload(data)["ID"]
    store.store_instance(data, Origin.rest("127.0.0.1", ""))
    theirs = recording_peer.get(f"/instances/{instance}/metadata", expand="")
    ours = store.metadata(Level.INSTANCE, instance)
    assert without(ours, IGNORED_METADATA) == without(theirs, IGNORED_METADATA)
    assert list(ours) == recording_peer.get(f"/instances/{instance}/metadata")

    event = recorded(recording_peer, instance)
    payload = store.outbox.pending()[-1].payload
    assert lua_equal(payload["tags"], event["Tags"])
    assert lua_equal(without(payload["metadata"], IGNORED_METADATA), without(event["Metadata"], IGNORED_METADATA))
    assert Origin.from_dict(payload["origin"]).to_lua() == event["Origin"]


def test_dicom_store_metadata_equal_orthancs(recording_peer: OrthancPeer, store: Store) -> None:
    data = samples.sample_file("CT_small.dcm")
    recording_peer.clear()
    c_store(recording_peer, data, "PARITYSCU")
    instance = "f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917af"
    store.store_instance(data, Origin.dicom("127.0.0.1", "PARITYSCU", recording_peer.aet))
    theirs = recording_peer.get(f"/instances/{instance}/metadata", expand="")
    ours = store.metadata(Level.INSTANCE, instance)
    # DCMTK rewrites the file meta information of a received instance, which moves PixelData.
    ignored = IGNORED_METADATA | {"PixelDataOffset"}
    assert without(ours, ignored) == without(theirs, ignored)
    assert Origin.from_dict(store.outbox.pending()[-1].payload["origin"]).to_lua() == recorded(
        recording_peer, instance)["Origin"]
    series = "93034833-163e42c3-bc9a428b-194620cf-2c5799e5"
    assert without(store.metadata(Level.SERIES, series), {"LastUpdate"}) == without(
        recording_peer.get(f"/series/{series}/metadata", expand=""), {"LastUpdate"})


def test_lua_store_metadata_equal_orthancs(recording_peer: OrthancPeer, store: Store) -> None:
    data = samples.sample_file("MR_small.dcm")
    recording_peer.clear()
    instance = recording_peer.upload(data)["ID"]
    script = (f"local f = RestApiGet('/instances/{instance}/file') "
              f"RestApiDelete('/instances/{instance}') RestApiPost('/instances', f)")
    assert recording_peer.client.post("/tools/execute-script", content=script).status_code == 200
    store.store_instance(data, Origin.lua())
    theirs = recording_peer.get(f"/instances/{instance}/metadata", expand="")
    ours = store.metadata(Level.INSTANCE, instance)
    assert without(ours, IGNORED_METADATA) == without(theirs, IGNORED_METADATA)
    assert Origin.from_dict(store.outbox.pending()[-1].payload["origin"]).to_lua() == recorded(
        recording_peer, instance)["Origin"]


def test_duplicate_event_carries_the_first_metadata_like_orthanc(recording_peer: OrthancPeer, store: Store) -> None:
    data = samples.sample_file("CT_small.dcm")
    recording_peer.clear()
    instance = recording_peer.upload(data)["ID"]
    c_store(recording_peer, data, "SECONDSCU")
    store.store_instance(data, Origin.rest("127.0.0.1", ""))
    store.store_instance(data, Origin.dicom("127.0.0.1", "SECONDSCU", recording_peer.aet))
    theirs = [e for e in recording_peer.stored_events() if e["ID"] == instance][-2:]
    ours = [e.payload for e in store.outbox.pending()]
    assert theirs[1]["Metadata"]["Origin"] == "RestApi" and ours[1]["metadata"]["Origin"] == "RestApi"
    assert theirs[1]["Origin"]["RequestOrigin"] == "DicomProtocol"
    assert Origin.from_dict(ours[1]["origin"]).to_lua() == theirs[1]["Origin"]
