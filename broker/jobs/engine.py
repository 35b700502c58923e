"""The jobs engine: a registry of jobs, a small pool of worker threads, persistence and ``OnJob*`` events.

As Orthanc's ``JobsEngine``/``JobsRegistry``: a submitted job is Pending; a worker takes the pending
job of highest priority (then the oldest) and runs it step by step until it succeeds or fails; pause,
cancel and a clean stop take effect between two steps. Completed jobs stay in the history
(``JobsHistorySize``, oldest forgotten first). Unlike Orthanc, a transfer that fails for a transient
reason is retried with exponential backoff before the job fails (asynchronous jobs only; see
``broker.jobs.backoff`` and docs/jobs.md).

Every state change is saved (``broker.jobs.persistence``); a job that was running when the broker
stopped is Pending again at the next start, and resumes from its last saved step. ``announce(kind,
job_id)`` writes the ``JobSubmitted`` / ``JobSuccess`` / ``JobFailure`` outbox events that the event
dispatcher delivers to ``OnJobSubmitted`` / ``OnJobSuccess`` / ``OnJobFailure``.

Locks: the engine's condition guards the records; a job's own lock is taken inside it (``serialize``,
``interrupt``), never the other way round, and no engine lock is held while a step runs.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from broker.config.jobs import JobsSettings
from broker.errors import ErrorCode, OrthancError
from broker.jobs.backoff import next_delay
from broker.jobs.model import (
    CANCELED_JOB,
    JOB_TYPES,
    Job,
    JobContext,
    StepKind,
    StepResult,
    TransferError,
    describe_error,
)
from broker.jobs.persistence import FILE_NAME, JobStore, StoredJob
from broker.jobs.senders import NetworkSenders
from broker.jobs.states import COMPLETED_STATES, JobState
from broker.services import Services

log = logging.getLogger("luabroker.jobs")

JOB_SUBMITTED, JOB_SUCCESS, JOB_FAILURE = "JobSubmitted", "JobSuccess", "JobFailure"


def iso_time(wall: float) -> str:
    """Orthanc's job timestamps (boost ``to_iso_string``, UTC): ``20240101T120000.123456``."""
    moment = datetime.fromtimestamp(wall, UTC)
    text = moment.strftime("%Y%m%dT%H%M%S")
    return f"{text}.{moment.microsecond:06d}" if moment.microsecond else text


@dataclass
class JobRecord:
    """The engine's bookkeeping of one job (Orthanc's ``JobHandler``)."""

    id: str
    job: Job
    priority: int
    state: JobState
    created: float                 # wall clock
    changed: float                 # wall clock of the last state change
    seq: int                       # submission order: FIFO among equal priorities
    synchronous: bool = False
    runtime: float = 0.0           # seconds spent in steps
    error_code: int = 0
    error_details: str = ""
    failures: int = 0              # consecutive failed attempts of the current step
    retry_at: float | None = None  # monotonic time of the next attempt (state Retry)
    pause_requested: bool = False
    cancel_requested: bool = False
    ready: bool = True             # False until OnJobSubmitted is in the outbox
    last_saved: float = field(default=0.0)


class JobsEngine:
    def __init__(self, context: JobContext, settings: JobsSettings, *, store: JobStore | None = None,
                 announce: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.context = context
        self.settings = settings
        self._store = store
        self._announce_fn = announce
        self._clock = clock
        self._wall = wall
        self._cond = threading.Condition()
        self._announce_lock = threading.Lock()
        self._records: dict[str, JobRecord] = {}
        self._completed: list[str] = []
        self._seq = 0
        self._workers: list[threading.Thread] = []
        self._started = False
        self._stopping = False
        #: Set in a worker process that is not the coordinator: takes an asynchronous job to the
        #: coordinator's engine and returns its id there (``broker.workers.jobs_handoff``).
        self.handoff: Callable[[Job, int], str] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the saved jobs (running ones become Pending), write the events a crash left unwritten,
        start the workers."""
        leftovers = self._load()
        for job_id, kind in leftovers:
            self._announce(job_id, kind)
        with self._cond:
            self._started = True
        for index in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"jobs-worker-{index}", daemon=True)
            self._workers.append(thread)
            thread.start()
        log.info("The jobs engine has started with %d worker(s)", self.settings.workers)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current steps: running jobs are saved as Pending and resume at the next start."""
        with self._cond:
            self._stopping = True
            for record in self._records.values():
                if record.state is JobState.RUNNING:
                    record.job.interrupt()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._store is not None:
            with self._cond:
                store, self._store = self._store, None
            store.close()

    # -- submission --------------------------------------------------------------------------------
    def submit(self, job: Job, priority: int = 0, *, synchronous: bool = False) -> str:
        """Queue a job; returns its id. ``OnJobSubmitted`` is written before any worker can run it."""
        if self.handoff is not None and not synchronous:
            return self.handoff(job, priority)
        now = self._wall()
        with self._cond:
            if self._stopping:
                raise OrthancError(ErrorCode.BAD_SEQUENCE_OF_CALLS, "The jobs engine is stopping")
            self._seq += 1
            record = JobRecord(str(uuid.uuid4()), job, int(priority), JobState.PENDING, now, now, self._seq,
                               synchronous=synchronous, ready=False)
            self._records[record.id] = record
            self._save(record, announce=JOB_SUBMITTED)
        log.info("New %s job submitted with priority %d: %s", job.type, record.priority, record.id)
        self._announce(record.id, JOB_SUBMITTED)
        with self._cond:
            record.ready = True
            self._cond.notify_all()
        return record.id

    def submit_and_wait(self, job: Job, priority: int = 0, timeout: float | None = None) -> dict[str, Any]:
        """Orthanc's synchronous submission: run the job (no automatic retry) and answer its public
        content, or raise the error it failed with."""
        job_id = self.submit(job, priority, synchronous=True)
        record = self.wait(job_id, timeout)
        if record.state is JobState.FAILURE:
            raise _orthanc_error(record.error_code, record.error_details)
        return record.job.content()

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job is completed (Success or Failure); returns its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            record = self._records.get(job_id)
            if record is None:
                raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Unknown job: {job_id}")
            while record.state not in COMPLETED_STATES:
                if self._stopping:
                    raise OrthancError(ErrorCode.INTERNAL_ERROR, "The server is stopping; the job will resume "
                                       f"at the next start: {job_id}")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise OrthancError(ErrorCode.TIMEOUT, f"The job {job_id} did not complete in time")
                self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
            return record

    def touch(self, job_id: str) -> None:
        """A job changed outside a step (a Lua job received operations): save it."""
        with self._cond:
            record = self._records.get(job_id)
            if record is not None:
                self._save(record)

    # -- the operator's verbs (Orthanc's return values: False = unknown job, or not allowed) ----------
    def cancel(self, job_id: str) -> bool:
        announce = None
        with self._cond:
            record = self._records.get(job_id)
            if record is None:
                log.warning("Unknown job: %s", job_id)
                return False
            if record.state in (JobState.PENDING, JobState.RETRY, JobState.PAUSED):
                announce = self._complete(record, StepResult.failure(CANCELED_JOB), "canceled")
            elif record.state is JobState.RUNNING:
                record.cancel_requested = True
                record.job.interrupt()
        if announce:
            self._announce(job_id, announce)
        return True

    def pause(self, job_id: str) -> bool:
        with self._cond:
            record = self._records.get(job_id)
            if record is None:
                log.warning("Unknown job: %s", job_id)
                return False
            if record.state in (JobState.PENDING, JobState.RETRY):
                self._change(record, JobState.PAUSED)
                record.job.stopped("paused")
                self._save(record)
            elif record.state is JobState.RUNNING:
                record.pause_requested = True
                record.job.interrupt()
            return True

    def resume(self, job_id: str) -> bool:
        with self._cond:
            record = self._records.get(job_id)
            if record is None or record.state is not JobState.PAUSED:
                log.warning("Cannot resume a job that is not paused: %s", job_id)
                return False
            self._change(record, JobState.PENDING)
            self._save(record)
            self._cond.notify_all()
            return True

    def resubmit(self, job_id: str) -> bool:
        with self._cond:
            record = self._records.get(job_id)
            if record is None or record.state is not JobState.FAILURE:
                log.warning("Cannot resubmit a job that has not failed: %s", job_id)
                return False
            record.job.resubmitted()
            if job_id in self._completed:
                self._completed.remove(job_id)
            record.runtime = 0.0
            record.failures = 0
            self._change(record, JobState.PENDING)
            self._save(record)
            self._cond.notify_all()
            return True

    # -- questions ---------------------------------------------------------------------------------
    def ids(self) -> list[str]:
        with self._cond:
            return sorted(self._records)

    def state(self, job_id: str) -> JobState | None:
        with self._cond:
            record = self._records.get(job_id)
            return None if record is None else record.state

    def job(self, job_id: str) -> Job | None:
        """The job itself (for its output), or None for an unknown one."""
        with self._cond:
            record = self._records.get(job_id)
            return None if record is None else record.job

    def info(self, job_id: str) -> dict[str, Any] | None:
        """Orthanc's ``GET /jobs/{id}`` JSON, or None for an unknown job."""
        with self._cond:
            record = self._records.get(job_id)
            return None if record is None else self._format(record)

    def infos(self) -> list[dict[str, Any]]:
        with self._cond:
            return [self._format(self._records[job_id]) for job_id in sorted(self._records)]

    def _format(self, record: JobRecord) -> dict[str, Any]:
        now = self._wall()
        progress = min(max(record.job.progress(), 0.0), 1.0)
        answer: dict[str, Any] = {
            "ID": record.id,
            "Priority": record.priority,
            "ErrorCode": record.error_code,
            "ErrorDescription": describe_error(record.error_code),
            "ErrorDetails": record.error_details,
            "State": record.state.value,
            "Timestamp": iso_time(now),
            "CreationTime": iso_time(record.created),
            "EffectiveRuntime": round(record.runtime, 3),
            "Progress": int(round(progress * 100)),
            "Type": record.job.type,
            "Content": record.job.content(),
        }
        if record.state is JobState.RUNNING and progress > 0.01 and record.runtime > 0:
            answer["EstimatedTimeOfArrival"] = iso_time(now + record.runtime / progress * (1 - progress))
        if record.state in COMPLETED_STATES:
            answer["CompletionTime"] = iso_time(record.changed)
        return answer

    # -- workers -----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                record = self._next_ready()
                while record is None:
                    if self._stopping:
                        return
                    self._cond.wait(self._wait_time())
                    record = self._next_ready()
                self._change(record, JobState.RUNNING)
                record.error_code, record.error_details = 0, ""
                self._save(record)
            try:
                self._run(record)
            except Exception:  # a bug in the engine must not kill the worker
                log.exception("The jobs engine failed while running job %s", record.id)

    def _next_ready(self) -> JobRecord | None:
        if self._stopping:
            return None
        now = self._clock()
        best: JobRecord | None = None
        for record in self._records.values():
            if record.state is JobState.RETRY and record.retry_at is not None and record.retry_at <= now:
                log.info("Retrying job: %s", record.id)
                self._change(record, JobState.PENDING)
                self._save(record)
            if record.state is JobState.PENDING and record.ready:
                if best is None or (record.priority, -record.seq) > (best.priority, -best.seq):
                    best = record
        return best

    def _wait_time(self) -> float:
        now = self._clock()
        waits = [record.retry_at - now for record in self._records.values()
                 if record.state is JobState.RETRY and record.retry_at is not None]
        return min([1.0, *waits]) if waits else 1.0

    def _run(self, record: JobRecord) -> None:
        reason = "shutdown"
        result: StepResult | None = None
        while True:
            with self._cond:
                if record.cancel_requested:
                    reason, result = "canceled", StepResult.failure(CANCELED_JOB)
                    break
                if record.pause_requested:
                    reason = "paused"
                    break
                if self._stopping:
                    reason = "shutdown"
                    break
            started = self._clock()
            outcome = self._step(record)
            with self._cond:
                record.runtime += self._clock() - started
                if outcome.kind is StepKind.CONTINUE:
                    record.failures = 0
                    self._save(record, throttled=True)
                    continue
            result, reason = outcome, outcome.kind.value
            break
        announce = None
        with self._cond:
            if reason in ("success", "failure", "canceled"):
                assert result is not None
                announce = self._complete(record, result, reason)
            elif reason == "retry":
                assert result is not None
                record.error_code, record.error_details = result.code, result.details
                record.retry_at = self._clock() + result.retry_in_s
                self._change(record, JobState.RETRY)
                record.job.stopped("retry")
                self._save(record)
            else:  # paused, or the engine stops: Pending again at the next start
                self._change(record, JobState.PAUSED if reason == "paused" else JobState.PENDING)
                record.job.stopped(reason)
                self._save(record)
            record.pause_requested = record.cancel_requested = False
            self._cond.notify_all()
        if announce:
            self._announce(record.id, announce)

    def _step(self, record: JobRecord) -> StepResult:
        try:
            return record.job.step(self.context)
        except TransferError as exc:
            record.failures += 1
            policy = self.settings.retry
            if exc.transient and not record.synchronous and policy.allows_retry(record.failures):
                delay = next_delay(record.failures, policy)
                log.warning("Job %s (%s): %s; attempt %d of %d failed, retrying in %.1f s", record.id,
                            record.job.type, exc.details, record.failures, policy.max_attempts, delay)
                return StepResult.retry(delay, exc.code, exc.details)
            attempts = f" after {record.failures} attempt(s)" if exc.transient and not record.synchronous else ""
            log.error("Job %s (%s) failed%s: %s", record.id, record.job.type, attempts, exc.details)
            return StepResult.failure(exc.code, exc.details)
        except OrthancError as exc:
            log.error("Job %s (%s) failed: %s", record.id, record.job.type, exc)
            return StepResult.failure(exc.code, exc.details or exc.message)
        except Exception as exc:
            log.exception("Job %s (%s) failed with an unexpected error", record.id, record.job.type)
            return StepResult.failure(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    # -- state changes (under the lock) -------------------------------------------------------------
    def _change(self, record: JobRecord, state: JobState) -> None:
        record.state = state
        record.changed = self._wall()
        if state is not JobState.RETRY:
            record.retry_at = None

    def _complete(self, record: JobRecord, result: StepResult, reason: str) -> str:
        """Success or Failure; returns the event to announce (outside the lock)."""
        success = result.kind is StepKind.SUCCESS
        if not success:
            record.error_code, record.error_details = result.code, result.details
        self._change(record, JobState.SUCCESS if success else JobState.FAILURE)
        record.job.stopped(reason)
        announce = JOB_SUCCESS if success else JOB_FAILURE
        self._save(record, announce=announce)
        self._completed.append(record.id)
        log.info("Job has completed with %s: %s", reason, record.id)
        while len(self._completed) > self.settings.history_size:
            forgotten = self._completed.pop(0)
            self._records.pop(forgotten, None)
            if self._store is not None:
                self._store.delete(forgotten)
        self._cond.notify_all()
        return announce

    # -- persistence and events --------------------------------------------------------------------
    def _save(self, record: JobRecord, *, announce: str | None = None, throttled: bool = False) -> None:
        if self._store is None:
            return
        now = self._clock()
        if throttled and now - record.last_saved < self.settings.save_interval_s:
            return
        record.last_saved = now
        retry_wall = None
        if record.retry_at is not None:
            retry_wall = self._wall() + (record.retry_at - now)
        try:
            payload = record.job.serialize()
            self._store.save(StoredJob(record.id, record.seq, record.job.type, record.priority, record.state.value,
                                       record.created, record.changed, record.runtime, record.error_code,
                                       record.error_details, record.failures, retry_wall, record.synchronous,
                                       payload, announce))
        except Exception:
            log.exception("Could not save job %s; it may be lost at a restart", record.id)

    def _announce(self, job_id: str, kind: str) -> None:
        if self._announce_fn is None:
            return
        with self._announce_lock:
            try:
                self._announce_fn(kind, job_id)
            except Exception:
                log.exception("Could not write the %s event of job %s; it is written at the next start", kind, job_id)
                return
            store = self._store
            if store is not None:
                try:
                    store.announced(job_id, kind)
                except Exception:
                    log.exception("Could not record that the %s event of job %s was written", kind, job_id)

    def _load(self) -> list[tuple[str, str]]:
        """Read the saved jobs back; returns the (job id, event) pairs still to announce."""
        if self._store is None:
            return []
        leftovers: list[tuple[str, str]] = []
        now_wall, now = self._wall(), self._clock()
        completed: list[JobRecord] = []
        with self._cond:
            for stored in self._store.load():
                cls = JOB_TYPES.get(stored.type)
                try:
                    if cls is None:
                        raise ValueError(f"unknown job type {stored.type!r}")
                    if stored.payload is None:
                        raise ValueError("its saved content is not JSON")
                    job = cls.unserialize(stored.payload)
                    state = JobState(stored.state)
                except Exception as exc:
                    log.warning("Cannot read back job %s from the previous execution, skipping it: %s", stored.id, exc)
                    continue
                if state is JobState.RUNNING:
                    state = JobState.PENDING
                record = JobRecord(stored.id, job, stored.priority, state, stored.created, stored.changed, stored.seq,
                                   synchronous=stored.synchronous, runtime=stored.runtime,
                                   error_code=stored.error_code, error_details=stored.error_details,
                                   failures=stored.failures)
                if state is JobState.RETRY:
                    record.retry_at = now + max(0.0, (stored.retry_at or now_wall) - now_wall)
                self._records[record.id] = record
                self._seq = max(self._seq, stored.seq)
                if state in COMPLETED_STATES:
                    completed.append(record)
                if stored.announce:
                    leftovers.append((record.id, stored.announce))
            self._completed = [record.id for record in sorted(completed, key=lambda r: r.changed)]
            while len(self._completed) > self.settings.history_size:
                forgotten = self._completed.pop(0)
                self._records.pop(forgotten, None)
                self._store.delete(forgotten)
        if self._records:
            log.warning("The jobs engine read back %d job(s) from %s", len(self._records), self._store.where)
        return leftovers


def _orthanc_error(code: int, details: str) -> OrthancError:
    try:
        return OrthancError(ErrorCode(code), details)
    except ValueError:
        text = describe_error(code)
        return OrthancError(ErrorCode.INTERNAL_ERROR, f"{text}: {details}" if details else text)


def create_engine(services: Services, *, persistent: bool = True) -> JobsEngine:
    """The engine of a server: settings from the configuration, ``<StorageDirectory>/jobs.sqlite`` or
    the ``jobs`` table of the PostgreSQL index (unless ``SaveJobs`` is false, or not ``persistent``:
    the engine of a worker process that is not the coordinator, whose jobs nobody else may resume),
    the network clients of ``services``, events into the outbox."""
    settings = services.config.jobs
    store = None
    if settings.persist and persistent:
        store = JobStore(services.store.index.backend) if services.config.postgresql.enable_index \
            else JobStore.in_file(services.store.root / FILE_NAME)

    def announce(kind: str, job_id: str) -> None:
        services.store.outbox.append(kind, job_id)
        wake = services.store.on_event
        if wake is not None:
            wake()

    return JobsEngine(JobContext(services, settings, NetworkSenders(services)), settings, store=store,
                      announce=announce)
