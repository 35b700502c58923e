"""The jobs engine with jobs of its own (no network): states, priority, the operator's verbs, retries
with backoff, persistence across a restart, the OnJob* announcements, the "Lua" sequence job."""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.errors import ErrorCode, OrthancError
from broker.jobs import (
    JOB_FAILURE,
    JOB_SUBMITTED,
    JOB_SUCCESS,
    Job,
    JobClosed,
    JobContext,
    JobsEngine,
    JobsSettings,
    JobState,
    SequenceOfOperationsJob,
    StepResult,
    TransferError,
)
from broker.jobs.backoff import RetryPolicy, next_delay
from broker.jobs.model import job_type
from broker.jobs.operations import DeleteOperation, StoreScuOperation
from broker.jobs.persistence import JobStore
from tests.support.waiting import wait_until

GATES: dict[str, threading.Event] = {}
TURNSTILES: dict[str, threading.Semaphore] = {}  # a step takes one permit: the test counts the steps
ATTEMPTS: dict[str, list[float]] = {}


@job_type
class CountingJob(Job):
    """``steps`` steps; the step at ``position == fail_at`` raises ``failures`` times first; a ``gate``
    name makes every step wait for that event, or take a permit of that turnstile."""

    type = "TestCounting"

    def __init__(self, name: str, steps: int = 1, *, position: int = 0, fail_at: int = -1, failures: int = 0,
                 transient: bool = True, gate: str = "", error: str = "transfer") -> None:
        self.name, self.steps, self.position = name, steps, position
        self.fail_at, self.failures, self.transient, self.gate, self.error = fail_at, failures, transient, gate, error

    def step(self, context: JobContext) -> StepResult:
        if self.gate in TURNSTILES:
            TURNSTILES[self.gate].acquire(timeout=10)
        elif self.gate:
            GATES[self.gate].wait(10)
        if self.position == self.fail_at and self.failures > 0:
            self.failures -= 1
            ATTEMPTS.setdefault(self.name, []).append(time.monotonic())
            if self.error == "orthanc":
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, "no such thing")
            raise TransferError(f"{self.name}: connection refused", transient=self.transient)
        ATTEMPTS.setdefault(self.name, []).append(time.monotonic())
        self.position += 1
        return StepResult.success() if self.position >= self.steps else StepResult.proceed()

    def progress(self) -> float:
        return self.position / self.steps

    def content(self) -> dict[str, Any]:
        return {"Name": self.name, "Position": self.position}

    def serialize(self) -> dict[str, Any]:
        return {"Name": self.name, "Steps": self.steps, "Position": self.position}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> CountingJob:
        return cls(data["Name"], data["Steps"], position=data["Position"])


class Recorder:
    """The ``announce`` callback: what the engine wrote to the outbox."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.fail_next = 0

    def __call__(self, kind: str, job_id: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("outbox unavailable")
        self.events.append((kind, job_id))

    def of(self, job_id: str) -> list[str]:
        return [kind for kind, ident in self.events if ident == job_id]


def settings(**options: Any) -> JobsSettings:
    defaults: dict[str, Any] = {"workers": 1, "retry": RetryPolicy(max_attempts=3, initial_delay_s=0.05, jitter=0),
                                "lua_trailing_timeout_s": 0.2, "save_interval_s": 0.0}
    defaults.update(options)
    return JobsSettings(**defaults)


def wait_state(engine: JobsEngine, job_id: str, *states: JobState, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.state(job_id) not in states:
        assert time.monotonic() < deadline, f"job {job_id} is {engine.state(job_id)}, not {states}"
        time.sleep(0.01)


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Any]:
    engines: list[JobsEngine] = []

    def make(*, start: bool = True, store: bool = False, recorder: Recorder | None = None, senders: Any = None,
             **options: Any) -> JobsEngine:
        job_store = JobStore.in_file(tmp_path / "jobs.sqlite") if store else None
        engine = JobsEngine(JobContext(None, settings(**options), senders), settings(**options), store=job_store,
                            announce=recorder)
        if start:
            engine.start()
        engines.append(engine)
        return engine

    yield make
    for gate in GATES.values():
        gate.set()
    for turnstile in TURNSTILES.values():
        turnstile.release(1000)
    for engine in engines:
        engine.stop(timeout=5)
    GATES.clear()
    TURNSTILES.clear()
    ATTEMPTS.clear()


# States and the JSON of GET /jobs/{id}.
def test_job_goes_from_pending_to_success_and_is_announced_in_order(make_engine: Any) -> None:
    recorder = Recorder()
    engine = make_engine(recorder=recorder)
    job_id = engine.submit(CountingJob("a", steps=3), priority=5)
    engine.wait(job_id, timeout=10)
    info = engine.info(job_id)
    assert info is not None
    assert set(info) == {"CompletionTime", "Content", "CreationTime", "EffectiveRuntime", "ErrorCode",
                         "ErrorDescription", "ErrorDetails", "ID", "Priority", "Progress", "State", "Timestamp", "Type"}
    assert (info["State"], info["Progress"], info["Priority"], info["Type"]) == ("Success", 100, 5, "TestCounting")
    assert (info["ErrorCode"], info["ErrorDescription"], info["ErrorDetails"]) == (0, "Success", "")
    assert info["Content"] == {"Name": "a", "Position": 3}
    assert len(info["CreationTime"]) >= 15 and info["CreationTime"][8] == "T"
    assert recorder.of(job_id) == [JOB_SUBMITTED, JOB_SUCCESS]
    assert engine.ids() == [job_id]


def test_an_error_fails_the_job_with_its_orthanc_code(make_engine: Any) -> None:
    recorder = Recorder()
    engine = make_engine(recorder=recorder)
    job_id = engine.submit(CountingJob("b", fail_at=0, failures=1, error="orthanc"))
    engine.wait(job_id, timeout=10)
    info = engine.info(job_id)
    assert (info["State"], info["ErrorCode"], info["ErrorDescription"]) == ("Failure", 17, "Unknown resource")
    assert info["ErrorDetails"] == "no such thing" and "CompletionTime" in info
    assert recorder.of(job_id) == [JOB_SUBMITTED, JOB_FAILURE]


def test_higher_priority_runs_first_then_submission_order(make_engine: Any) -> None:
    GATES["busy"] = threading.Event()
    engine = make_engine()
    blocker = engine.submit(CountingJob("blocker", gate="busy"))
    wait_state(engine, blocker, JobState.RUNNING)
    low, high, high2 = (engine.submit(CountingJob("low"), 0), engine.submit(CountingJob("high"), 10),
                        engine.submit(CountingJob("high2"), 10))
    assert engine.state(low) is JobState.PENDING
    GATES["busy"].set()
    for job_id in (low, high, high2):
        engine.wait(job_id, timeout=10)
    assert ATTEMPTS["high"][0] < ATTEMPTS["high2"][0] < ATTEMPTS["low"][0]


# The operator's verbs (Orthanc's answers: False for an unknown job or a verb the state refuses).
def test_cancel_pending_running_and_completed_jobs(make_engine: Any) -> None:
    GATES["g"] = threading.Event()
    recorder = Recorder()
    engine = make_engine(recorder=recorder)
    running = engine.submit(CountingJob("r", steps=50, gate="g"))
    wait_state(engine, running, JobState.RUNNING)
    pending = engine.submit(CountingJob("p"))
    assert engine.cancel(pending) is True
    info = engine.info(pending)
    assert (info["State"], info["ErrorCode"], info["ErrorDescription"]) == ("Failure", 37, "This job was canceled")
    assert engine.cancel(running) is True
    GATES["g"].set()
    wait_state(engine, running, JobState.FAILURE)
    assert engine.info(running)["ErrorCode"] == 37
    assert engine.cancel(running) is True and engine.state(running) is JobState.FAILURE  # nothing to do
    assert engine.cancel("nonexistent") is False
    assert recorder.of(pending) == [JOB_SUBMITTED, JOB_FAILURE]


def test_pause_resume_and_their_refusals(make_engine: Any) -> None:
    GATES["g"] = threading.Event()
    engine = make_engine()
    running = engine.submit(CountingJob("r", steps=1000, gate="g"))
    wait_state(engine, running, JobState.RUNNING)
    pending = engine.submit(CountingJob("p"))
    assert engine.pause(pending) and engine.state(pending) is JobState.PAUSED
    assert engine.resume(running) is False                # not paused
    assert engine.pause(running) is True
    GATES["g"].set()
    wait_state(engine, running, JobState.PAUSED)
    position = engine.info(running)["Content"]["Position"]
    assert 0 < position < 1000
    wait_state(engine, pending, JobState.PAUSED)          # a paused job is not run
    assert engine.resume(pending) is True
    engine.wait(pending, timeout=10)
    assert engine.resume(running) is True
    engine.wait(running, timeout=30)
    assert engine.info(running)["Content"]["Position"] == 1000   # it went on where it stopped
    assert engine.pause("nonexistent") is False and engine.resume("nonexistent") is False


def test_resubmit_a_failed_job_only(make_engine: Any) -> None:
    engine = make_engine(retry=RetryPolicy(max_attempts=1))
    job_id = engine.submit(CountingJob("x", steps=2, fail_at=1, failures=1))
    engine.wait(job_id, timeout=10)
    assert engine.info(job_id)["State"] == "Failure" and engine.info(job_id)["ErrorCode"] == 9
    assert engine.resubmit(job_id) is True
    engine.wait(job_id, timeout=10)
    info = engine.info(job_id)
    assert info["State"] == "Success" and info["Content"]["Position"] == 2  # resumed at the failed step
    assert engine.resubmit(job_id) is False and engine.resubmit("nonexistent") is False


# Automatic retries of transfers (Orthanc has none).
def test_next_delay_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, initial_delay_s=1.0, multiplier=2.0, max_delay_s=5.0, jitter=0)
    assert [next_delay(n, policy) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = RetryPolicy(initial_delay_s=10.0, jitter=0.1)
    delays = [next_delay(1, jittered, random.Random(seed)) for seed in range(20)]
    assert all(9.0 <= d <= 11.0 for d in delays) and len(set(delays)) > 1
    assert policy.allows_retry(9) and not policy.allows_retry(10)


def test_a_transient_failure_is_retried_with_backoff_then_succeeds(make_engine: Any) -> None:
    engine = make_engine(retry=RetryPolicy(max_attempts=4, initial_delay_s=0.1, multiplier=2.0, jitter=0))
    job_id = engine.submit(CountingJob("t", steps=2, fail_at=1, failures=2))
    wait_state(engine, job_id, JobState.RETRY)
    retrying = engine.info(job_id)
    assert retrying["ErrorCode"] == 9 and "connection refused" in retrying["ErrorDetails"]
    engine.wait(job_id, timeout=10)
    assert engine.state(job_id) is JobState.SUCCESS
    attempts = ATTEMPTS["t"]          # step 0 ok, two failures of step 1, then step 1 ok
    gaps = [b - a for a, b in zip(attempts[1:], attempts[2:], strict=False)]
    assert len(attempts) == 4 and gaps[0] >= 0.09 and gaps[1] >= 0.19


def test_retries_end_in_failure_and_on_job_failure(make_engine: Any) -> None:
    recorder = Recorder()
    engine = make_engine(recorder=recorder, retry=RetryPolicy(max_attempts=3, initial_delay_s=0.02, jitter=0))
    job_id = engine.submit(CountingJob("down", fail_at=0, failures=100))
    engine.wait(job_id, timeout=10)
    assert len(ATTEMPTS["down"]) == 3
    info = engine.info(job_id)
    assert (info["State"], info["ErrorCode"]) == ("Failure", 9)
    assert info["ErrorDescription"] == "Error in the network protocol"
    assert recorder.of(job_id) == [JOB_SUBMITTED, JOB_FAILURE]


def test_a_permanent_failure_and_a_synchronous_job_are_not_retried(make_engine: Any) -> None:
    engine = make_engine()
    permanent = engine.submit(CountingJob("perm", fail_at=0, failures=100, transient=False))
    engine.wait(permanent, timeout=10)
    assert len(ATTEMPTS["perm"]) == 1 and engine.state(permanent) is JobState.FAILURE
    with pytest.raises(OrthancError) as raised:
        engine.submit_and_wait(CountingJob("sync", fail_at=0, failures=100))
    assert raised.value.code is ErrorCode.NETWORK_PROTOCOL and len(ATTEMPTS["sync"]) == 1
    assert engine.submit_and_wait(CountingJob("ok", steps=2)) == {"Name": "ok", "Position": 2}


def test_a_paused_retry_waits_for_resume(make_engine: Any) -> None:
    # A retry delay the pause cannot miss on a loaded machine; then past the retry time, still paused.
    engine = make_engine(retry=RetryPolicy(max_attempts=5, initial_delay_s=2.0, jitter=0))
    job_id = engine.submit(CountingJob("pr", fail_at=0, failures=1))
    wait_state(engine, job_id, JobState.RETRY)
    assert engine.pause(job_id) and engine.state(job_id) is JobState.PAUSED
    time.sleep(2.5)  # a lower bound: at least the retry delay has passed
    assert engine.state(job_id) is JobState.PAUSED
    assert engine.resume(job_id)
    engine.wait(job_id, timeout=10)
    assert engine.state(job_id) is JobState.SUCCESS


# Persistence across a restart.
def test_a_pending_job_survives_a_restart(make_engine: Any) -> None:
    first = make_engine(store=True, start=False)
    job_id = first.submit(CountingJob("survivor", steps=2), priority=7)
    paused = first.submit(CountingJob("paused"))
    first.pause(paused)
    first.stop()
    second = make_engine(store=True)
    assert set(second.ids()) == {job_id, paused}
    second.wait(job_id, timeout=10)
    info = second.info(job_id)
    assert (info["State"], info["Priority"], info["Content"]) == ("Success", 7, {"Name": "survivor", "Position": 2})
    assert second.state(paused) is JobState.PAUSED


def test_a_running_job_resumes_after_a_restart_from_its_saved_step(make_engine: Any) -> None:
    TURNSTILES["slow"] = threading.Semaphore(0)
    first = make_engine(store=True)
    job_id = first.submit(CountingJob("long", steps=1000, gate="slow"))
    wait_state(first, job_id, JobState.RUNNING)
    TURNSTILES["slow"].release(3)  # three steps run; the fourth waits, so the job cannot finish before the stop
    wait_until(lambda: first.info(job_id)["Content"]["Position"] >= 3)
    stopper = threading.Thread(target=first.stop, kwargs={"timeout": 60})
    stopper.start()
    wait_until(lambda: first._stopping)
    TURNSTILES["slow"].release(1)  # the step in progress ends; the engine stops before the next one
    stopper.join()
    reached = CountingJob.unserialize({"Name": "long", "Steps": 1000, "Position": 0})
    second = make_engine(store=True, start=False)
    second._load()  # read back only: the job is Pending, at the saved position
    assert second.state(job_id) is JobState.PENDING
    saved = second.info(job_id)["Content"]["Position"]
    assert 3 <= saved < 1000 and reached.position == 0
    second.start()
    second.wait(job_id, timeout=30)
    assert second.info(job_id)["Content"]["Position"] == 1000


def test_an_event_not_written_before_a_crash_is_written_at_the_next_start(make_engine: Any) -> None:
    recorder = Recorder()
    recorder.fail_next = 1                      # the outbox refuses the JobSubmitted event
    first = make_engine(store=True, start=False, recorder=recorder)
    job_id = first.submit(CountingJob("lost"))
    assert recorder.events == []
    first.stop()
    second = make_engine(store=True, recorder=recorder)
    second.wait(job_id, timeout=10)
    assert recorder.of(job_id) == [JOB_SUBMITTED, JOB_SUCCESS]


def test_old_completed_jobs_are_forgotten(make_engine: Any) -> None:
    engine = make_engine(history_size=2, store=True)
    ids = [engine.submit(CountingJob(f"h{i}")) for i in range(4)]
    engine.wait(ids[-1], timeout=10)
    assert engine.ids() == sorted(ids[2:])
    assert engine.info(ids[0]) is None


# The "Lua" sequence job, with fake receivers.
class FakeSenders:
    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.sent: list[tuple[str, bytes, str | None]] = []

    def modality(self, name: str) -> Any:
        return type("M", (), {"aet": name.upper(), "local_aet": ""})()

    def store_to_modality(self, name: str, data: bytes, local_aet: str | None,
                          move_originator: tuple[str, int] | None = None) -> None:
        if self.down:
            raise TransferError(f"connection to {name} refused")
        self.sent.append((name, data, local_aet))


class FakeStore:
    def __init__(self, ids: list[str]) -> None:
        self.instances = {i: i.encode() for i in ids}

    def read_instance(self, instance_id: str) -> tuple[bytes, None]:
        if instance_id not in self.instances:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, instance_id)
        return self.instances[instance_id], None

    def delete(self, level: Any, instance_id: str) -> Any:
        return self.instances.pop(instance_id, None)


def lua_engine(make_engine: Any, ids: list[str], down: bool = False, **options: Any) -> tuple[JobsEngine, Any, Any]:
    senders, store = FakeSenders(down), FakeStore(ids)
    engine = make_engine(senders=senders, **options)
    engine.context.services = type("S", (), {"store": store})()
    return engine, senders, store


def test_sequence_runs_in_order_and_succeeds_after_the_trailing_timeout(make_engine: Any) -> None:
    engine, senders, store = lua_engine(make_engine, ["a", "b"])
    # A trailing timeout the later callback cannot miss on a loaded machine.
    job = SequenceOfOperationsJob(trailing_timeout_s=2.0)
    with job.editing():
        store_op = job.add_operation(StoreScuOperation("sample", None))
        job.add_input(store_op, "a")
        delete_op = job.add_operation(DeleteOperation())
        job.connect(store_op, delete_op)           # Delete(SendToModality(...)) wired through ''
    started = time.monotonic()
    job_id = engine.submit(job)
    wait_state(engine, job_id, JobState.RUNNING)
    time.sleep(0.1)
    with job.editing():                            # a later callback adds to the same job
        later = job.add_operation(StoreScuOperation("sample", "HELLO"))
        job.add_input(later, "b")
    engine.wait(job_id, timeout=30)
    assert time.monotonic() - started >= 2.0
    assert [(n, d, a) for n, d, a in senders.sent] == [("sample", b"a", None), ("sample", b"b", "HELLO")]
    assert list(store.instances) == ["b"]
    info = engine.info(job_id)
    assert info["Content"] == {"CountOperations": 3, "Description": "Lua"} and info["Progress"] == 75
    assert job.closed
    with pytest.raises(JobClosed):
        with job.editing():
            pass


def test_a_failed_send_stops_the_sequence_so_nothing_is_deleted(make_engine: Any) -> None:
    engine, senders, store = lua_engine(make_engine, ["a"], down=True,
                                        retry=RetryPolicy(max_attempts=2, initial_delay_s=0.05, jitter=0))
    job = SequenceOfOperationsJob(trailing_timeout_s=0.1)
    with job.editing():
        send = job.add_operation(StoreScuOperation("sample", None))
        job.add_input(send, "a")
        delete = job.add_operation(DeleteOperation())
        job.add_input(delete, "a")                 # Delete(SendToModality(id)) takes the id directly
    job_id = engine.submit(job)
    engine.wait(job_id, timeout=10)
    assert engine.info(job_id)["State"] == "Failure" and list(store.instances) == ["a"]
    assert job.closed
    senders.down = False
    assert engine.resubmit(job_id)                 # resumes at the failed send
    engine.wait(job_id, timeout=10)
    assert engine.state(job_id) is JobState.SUCCESS and store.instances == {} and len(senders.sent) == 1


def test_orthanc_mode_passes_the_input_on_after_a_failed_send(make_engine: Any) -> None:
    engine, senders, store = lua_engine(make_engine, ["a"], down=True, lua_transfer_failure="continue")
    job = SequenceOfOperationsJob(trailing_timeout_s=0.1)
    with job.editing():
        send = job.add_operation(StoreScuOperation("sample", None))
        job.add_input(send, "a")
        delete = job.add_operation(DeleteOperation())
        job.connect(send, delete)
    job_id = engine.submit(job)
    engine.wait(job_id, timeout=10)
    assert engine.state(job_id) is JobState.SUCCESS and store.instances == {}


def test_lua_jobs_fill_one_job_until_it_is_full(make_engine: Any) -> None:
    from broker.scripting.lua_jobs import LuaJobs

    engine = make_engine(start=False, senders=FakeSenders(), lua_max_operations=3)
    lua_jobs = LuaJobs(None, engine, engine.settings)
    send = {"Operation": "store-scu", "Resource": "a", "Modality": "sample"}
    first = lua_jobs.submit([send, send], "cb1")
    assert lua_jobs.submit([send, {"Operation": "delete", "Resource": ""}], "cb2") == first  # 2 < 3: same job
    third = lua_jobs.submit([send], "cb3")                                                 # 4 >= 3: a new one
    assert third != first and engine.ids() == sorted([first, third])
    assert engine.info(first)["Content"] == {"CountOperations": 4, "Description": "Lua"}
    assert lua_jobs.submit([], "cb4") is None and lua_jobs.submit("junk", "cb5") is None
    assert lua_jobs.submit([{"Operation": "explode", "Resource": "a"}], "cb6") is None    # nothing added


def test_lua_jobs_parse_as_orthanc() -> None:
    from broker.scripting.lua_jobs import _argument, as_string

    assert [as_string(v) for v in (None, "x", 12, 2.0, True)] == ["", "x", "12", "2", "true"]
    assert [_argument(v) for v in ("a", 7, 4.5, 0.1)] == ["a", "7", "4.5", "0.1"]
    with pytest.raises(OrthancError):
        _argument({"x": 1})
