"""The REST side of the jobs engine, against a DCMTK storescp: ``POST /modalities/{name}/store`` in all
its forms, ``/jobs`` and ``/jobs/{id}`` as Orthanc answers them, the verbs, retries of a receiver that
is down, and a job that survives a restart of the broker."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.factory import make_instances, to_bytes
from tests.support.ports import free_port
from tests.support.receivers import StoreScpProcess
from tests.support.waiting import wait_until

JOB_KEYS = {"CompletionTime", "Content", "CreationTime", "EffectiveRuntime", "ErrorCode", "ErrorDescription",
            "ErrorDetails", "ID", "Priority", "Progress", "State", "Timestamp", "Type"}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[StoreScpProcess]:
    scp = StoreScpProcess(tmp_path / "received", "+xa")
    yield scp
    scp.stop()


def upload(server: Any, count: int = 1) -> list[str]:
    return [server.http.post("/instances", content=to_bytes(ds)).json()["ID"] for ds in make_instances(count)]


def test_synchronous_store_answers_the_job_content(luabroker: Any, receiver: StoreScpProcess) -> None:
    server = luabroker(DicomModalities={"sample": receiver.modality()})
    first, second = upload(server, 2)
    answer = server.http.post("/modalities/sample/store", content=first)          # a bare id
    assert answer.status_code == 200
    assert answer.json() == {"Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 1,
                             "LocalAet": "LUABROKER", "ParentResources": [first], "RemoteAet": "STORESCP"}
    study = server.http.get(f"/instances/{first}/study").json()["ID"]
    answer = server.http.post("/modalities/sample/store", json=[study]).json()      # a list; a study expands
    assert (answer["InstancesCount"], answer["ParentResources"]) == (2, [study])
    answer = server.http.post("/modalities/sample/store", json={"Resources": [second], "LocalAet": "HELLO"}).json()
    assert answer["LocalAet"] == "HELLO"
    received = wait_until(lambda: len(receiver.files()) >= 2 and receiver.files())  # one file per UID
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(
        server.http.get(f"/instances/{i}/simplified-tags").json()["SOPInstanceUID"] for i in (first, second))
    assert server.http.post("/modalities/sample/store", json=[]).json() == {
        "Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 0, "LocalAet": "LUABROKER",
        "RemoteAet": "STORESCP"}


def test_asynchronous_store_answers_a_job_that_get_jobs_describes(luabroker: Any, receiver: StoreScpProcess) -> None:
    server = luabroker(DicomModalities={"sample": receiver.modality()})
    [instance] = upload(server)
    answer = server.http.post("/modalities/sample/store",
                              json={"Resources": [instance], "Asynchronous": True, "Priority": 3}).json()
    assert set(answer) == {"ID", "Path"} and answer["Path"] == f"/jobs/{answer['ID']}"
    info = wait_until(lambda: (lambda i: i if i["State"] == "Success" else None)(
        server.http.get(answer["Path"]).json()))
    assert set(info) == JOB_KEYS
    assert (info["Type"], info["Priority"], info["Progress"], info["ErrorCode"], info["ErrorDescription"]) == (
        "DicomModalityStore", 3, 100, 0, "Success")
    assert info["Content"]["RemoteAet"] == "STORESCP" and info["Content"]["InstancesCount"] == 1
    assert answer["ID"] in server.http.get("/jobs").json()
    assert [job["ID"] for job in server.http.get("/jobs?expand").json()] == [answer["ID"]]
    again = server.http.post("/modalities/sample/store", json={"Resources": [instance], "Synchronous": False})
    assert set(again.json()) == {"ID", "Path"}


@pytest.mark.parametrize("body, status, code, details", [
    (b"nonexistent", 400, 15, "Must provide a JSON value"),
    (b'["bad"]', 400, 15, "This string is not a valid Orthanc identifier: bad"),
    (b'{"Other": 1}', 400, 15, 'Missing field in JSON: "Resources"'),
    (b"42", 400, 15, "Must provide a JSON object, or a JSON array of strings"),
    (b'"12345678-12345678-12345678-12345678-12345678"', 404, 17, None),
])
def test_store_request_errors_answer_as_orthanc(luabroker: Any, body: bytes, status: int, code: int,
                                                details: str | None) -> None:
    server = luabroker(DicomModalities={"sample": ["X", "127.0.0.1", free_port()]})
    answer = server.http.post("/modalities/sample/store", content=body)
    assert answer.status_code == status
    assert answer.json()["OrthancStatus"] == code
    if details:
        assert answer.json()["Details"] == details


def test_unknown_modality_and_peer(luabroker: Any) -> None:
    server = luabroker()
    [instance] = upload(server)
    answer = server.http.post("/modalities/unknown/store", content=instance)
    assert (answer.status_code, answer.json()["OrthancStatus"], answer.json()["Details"]) == (
        404, 7, "No modality with symbolic name: unknown")
    answer = server.http.post("/peers/unknown/store", content=instance)
    assert (answer.status_code, answer.json()["Details"]) == (404, "No peer with symbolic name: unknown")


def test_job_verbs_and_unknown_jobs(luabroker: Any, receiver: StoreScpProcess) -> None:
    server = luabroker(DicomModalities={"sample": receiver.modality()})
    [instance] = upload(server)
    job_id = server.http.post("/modalities/sample/store",
                              json={"Resources": [instance], "Asynchronous": True}).json()["ID"]
    wait_until(lambda: server.http.get(f"/jobs/{job_id}").json()["State"] == "Success")
    assert server.http.get("/jobs/nonexistent").status_code == 404
    for verb in ("cancel", "pause", "resume", "resubmit"):
        answer = server.http.post(f"/jobs/nonexistent/{verb}")
        assert (answer.status_code, answer.content) == (400, b"")
    assert server.http.post(f"/jobs/{job_id}/resume").status_code == 400     # not paused
    assert server.http.post(f"/jobs/{job_id}/resubmit").status_code == 400   # has not failed
    for verb in ("cancel", "pause"):                                          # nothing to do: {}
        answer = server.http.post(f"/jobs/{job_id}/{verb}")
        assert (answer.status_code, answer.json()) == (200, {})
    assert server.http.get(f"/jobs/{job_id}").json()["State"] == "Success"


def test_synchronous_store_to_a_receiver_that_is_down_fails_at_once(luabroker: Any) -> None:
    server = luabroker(DicomModalities={"down": ["DOWN", "127.0.0.1", free_port()]},
                       Jobs={"RetryAttempts": 5, "RetryDelay": 120})
    [instance] = upload(server)
    started = time.monotonic()
    answer = server.http.post("/modalities/down/store", content=instance)
    # No automatic retry for a synchronous job: one would wait 120 s first.
    assert time.monotonic() - started < 60
    assert (answer.status_code, answer.json()["OrthancStatus"]) == (500, 9)
    assert "Connection refused" in answer.json()["Details"]


def test_asynchronous_store_retries_then_fails_and_resubmit_sends(luabroker: Any, tmp_path: Path) -> None:
    port = free_port()
    server = luabroker(DicomModalities={"later": ["STORESCP", "127.0.0.1", port]},
                       Jobs={"RetryAttempts": 3, "RetryDelay": 0.3})
    [instance] = upload(server)
    job = server.http.post("/modalities/later/store", json={"Resources": [instance], "Asynchronous": True}).json()
    wait_until(lambda: server.http.get(job["Path"]).json()["State"] == "Retry", message="state Retry")
    failed = wait_until(lambda: (lambda i: i if i["State"] == "Failure" else None)(server.http.get(job["Path"]).json()),
                        message="state Failure")
    assert (failed["ErrorCode"], failed["ErrorDescription"]) == (9, "Error in the network protocol")
    receiver = StoreScpProcess(tmp_path / "later", "+xa", port=port)
    try:
        assert server.http.post(f"{job['Path']}/resubmit").json() == {}
        wait_until(lambda: server.http.get(job["Path"]).json()["State"] == "Success", message="state Success")
        assert len(receiver.files()) == 1
    finally:
        receiver.stop()


def test_a_job_survives_a_restart_of_the_broker(luabroker: Any, tmp_path: Path) -> None:
    port = free_port()
    options = {"StorageDirectory": str(tmp_path / "shared"),
               "DicomModalities": {"later": ["STORESCP", "127.0.0.1", port]},
               "Jobs": {"RetryAttempts": 10, "RetryDelay": 60}}
    first = luabroker(**options)
    [instance] = upload(first)
    job = first.http.post("/modalities/later/store", json={"Resources": [instance], "Asynchronous": True,
                                                           "Priority": 4}).json()
    wait_until(lambda: first.http.get(job["Path"]).json()["State"] == "Retry", message="state Retry")
    paused = first.http.post("/modalities/later/store", json={"Resources": [instance], "Asynchronous": True}).json()
    wait_until(lambda: first.http.get(paused["Path"]).json()["State"] == "Retry", message="second in Retry")
    first.http.post(f"{paused['Path']}/pause")
    first.stop(timeout=60)  # waits for the server thread to end, rather than a fixed second
    receiver = StoreScpProcess(tmp_path / "later", "+xa", port=port)
    try:
        second = luabroker(**{**options, "Jobs": {"RetryAttempts": 10, "RetryDelay": 0.1}})
        assert sorted(second.http.get("/jobs").json()) == sorted([job["ID"], paused["ID"]])
        restored = second.http.get(job["Path"]).json()
        assert (restored["State"], restored["Priority"], restored["Type"]) == ("Retry", 4, "DicomModalityStore")
        assert second.http.get(paused["Path"]).json()["State"] == "Paused"
        # the saved retry time is a minute away: pause and resume make it run now
        second.http.post(f"{job['Path']}/pause")
        second.http.post(f"{job['Path']}/resume")
        second.http.post(f"{paused['Path']}/resume")
        for path in (job["Path"], paused["Path"]):
            wait_until(lambda path=path: second.http.get(path).json()["State"] == "Success", message=f"{path} Success")
        assert len(receiver.files()) >= 1
    finally:
        receiver.stop()
