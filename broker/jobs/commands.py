"""Orthanc's ``SetOfCommandsJob``: commands run in order, one per step, so that pause, cancel and a clean
stop take effect between two of them. A command that fails fails the job, unless ``Permissive``: then
it is kept in ``failed`` and the next one runs. The transfers (``broker.jobs.transfers``: one instance
sent per command) and the retrievals (``broker.jobs.retrievals``: one C-MOVE or C-GET per command) are
such jobs; a resubmitted one resumes at the command that failed (docs/jobs.md)."""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Generic, TypeVar

from broker.errors import OrthancError
from broker.jobs.model import Job, JobContext, StepResult, TransferError

C = TypeVar("C")


class CommandsJob(Job, Generic[C]):
    def __init__(self, commands: Iterable[C], *, permissive: bool = False, position: int = 0,
                 failed: Iterable[C] = ()) -> None:
        self._lock = threading.Lock()
        self.commands = list(commands)
        self.permissive = permissive
        self.position = position
        self.failed = list(failed)

    def run(self, context: JobContext, command: C) -> None:
        """Run one command; ``TransferError`` or ``OrthancError`` when it fails."""
        raise NotImplementedError

    def step(self, context: JobContext) -> StepResult:
        with self._lock:
            if self.position >= len(self.commands):
                return StepResult.success()
            command = self.commands[self.position]
        try:
            self.run(context, command)
        except (OrthancError, TransferError):
            if not self.permissive:
                raise
            with self._lock:
                self.failed.append(command)
        with self._lock:
            self.position += 1
            done = self.position >= len(self.commands)
        return StepResult.success() if done else StepResult.proceed()

    def progress(self) -> float:
        with self._lock:
            return 1.0 if not self.commands else self.position / len(self.commands)
