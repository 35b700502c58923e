"""Orthanc's ``SequenceOfOperationsJob``: the job behind the deferred Lua helpers (spec section 4).

Operations run strictly in order; each one processes its inputs one per step: first its original
inputs (instance ids given directly), then the outputs of the operation connected to it. After the
last operation, the job waits ``trailing_timeout`` seconds for more operations (later callbacks add
to the same job), then succeeds. Unlike Orthanc, the lock is not held while an operation runs, so a
callback that adds operations never waits for a C-STORE in progress.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from broker.jobs.model import Job, JobContext, StepResult, job_type
from broker.jobs.operations import OPERATION_TYPES, Operation


class JobClosed(Exception):
    """The job finished (or failed): operations go to a new job."""


@dataclass
class _Slot:
    operation: Operation
    original_inputs: list[str] = field(default_factory=list)
    work_inputs: list[str] = field(default_factory=list)
    next: list[int] = field(default_factory=list)
    current: int = 0

    def done(self) -> bool:
        return self.current >= len(self.original_inputs) + len(self.work_inputs)

    def input(self) -> str:
        if self.current < len(self.original_inputs):
            return self.original_inputs[self.current]
        return self.work_inputs[self.current - len(self.original_inputs)]


@job_type
class SequenceOfOperationsJob(Job):
    type = "SequenceOfOperations"

    def __init__(self, description: str = "Lua", trailing_timeout_s: float = 5.0) -> None:
        self.description = description
        self.trailing_timeout_s = trailing_timeout_s
        self._cond = threading.Condition()
        self._slots: list[_Slot] = []
        self._current = 0
        self._closed = False
        self._interrupted = False

    # -- building (LuaJobs) --------------------------------------------------------------------------
    @contextmanager
    def editing(self) -> Iterator[SequenceOfOperationsJob]:
        """Hold the job while operations are added; ``JobClosed`` if it has finished."""
        with self._cond:
            if self._closed:
                raise JobClosed()
            yield self
            self._cond.notify_all()

    def add_operation(self, operation: Operation) -> int:
        """(inside ``editing``) Append an operation; returns its index."""
        self._slots.append(_Slot(operation))
        return len(self._slots) - 1

    def add_input(self, index: int, instance_id: str) -> None:
        self._slots[index].original_inputs.append(instance_id)

    def connect(self, source: int, target: int) -> None:
        """The outputs of operation ``source`` become inputs of the later operation ``target``."""
        assert source < target < len(self._slots) and source >= self._current
        self._slots[source].next.append(target)

    def count(self) -> int:
        with self._cond:
            return len(self._slots)

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    # -- running -------------------------------------------------------------------------------------
    def step(self, context: JobContext) -> StepResult:
        with self._cond:
            if self._current == len(self._slots):
                deadline = time.monotonic() + self.trailing_timeout_s
                while self._current == len(self._slots) and not self._interrupted:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._interrupted:
                    self._interrupted = False
                    return StepResult.proceed()
                if self._current == len(self._slots):
                    self._closed = True  # no operation came during the trailing timeout: the job is over
                    return StepResult.success()
            while self._current < len(self._slots) and self._slots[self._current].done():
                self._current += 1
            if self._current == len(self._slots):
                return StepResult.proceed()
            slot = self._slots[self._current]
            value = slot.input()
        outputs = slot.operation.apply(context, value)  # may raise TransferError: the input stays
        with self._cond:
            slot.current += 1
            for target in slot.next:
                self._slots[target].work_inputs.extend(outputs)
        return StepResult.proceed()

    def interrupt(self) -> None:
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()

    def stopped(self, reason: str) -> None:
        with self._cond:
            self._interrupted = False
            if reason in ("success", "failure", "canceled"):
                self._closed = True

    def progress(self) -> float:
        with self._cond:
            return self._current / (len(self._slots) + 1)

    def content(self) -> dict[str, Any]:
        with self._cond:
            return {"CountOperations": len(self._slots), "Description": self.description}

    def operations(self) -> list[dict[str, Any]]:
        """The operations with their inputs (for tests and diagnostics)."""
        with self._cond:
            return [{"Operation": slot.operation.serialize(), "OriginalInputs": list(slot.original_inputs),
                     "WorkInputs": list(slot.work_inputs), "Next": list(slot.next), "Current": slot.current}
                    for slot in self._slots]

    def serialize(self) -> dict[str, Any]:
        with self._cond:
            return {"Description": self.description, "TrailingTimeout": self.trailing_timeout_s,
                    "Current": self._current, "Closed": self._closed,
                    "Operations": [{"Operation": slot.operation.serialize(), "OriginalInputs": slot.original_inputs,
                                    "WorkInputs": slot.work_inputs, "Next": slot.next, "Current": slot.current}
                                   for slot in self._slots]}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> SequenceOfOperationsJob:
        job = cls(data.get("Description", "Lua"), float(data.get("TrailingTimeout", 5.0)))
        for entry in data["Operations"]:
            operation = entry["Operation"]
            kind = OPERATION_TYPES[operation["Type"]]
            job._slots.append(_Slot(kind.unserialize(operation), list(entry["OriginalInputs"]),
                                    list(entry["WorkInputs"]), [int(i) for i in entry["Next"]], int(entry["Current"])))
        job._current = int(data.get("Current", 0))
        # A job read back after a restart no longer receives operations: new callbacks start a new job.
        job._closed = True
        return job
