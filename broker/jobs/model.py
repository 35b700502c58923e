"""What a job is to the engine: a small contract, the result of one step, and the errors of a step.

A job is advanced by ``step(context)``, one small unit of work at a time (one instance sent, one
operation applied), so that pause, cancel and a clean stop take effect between steps. A job knows how
to serialize itself; ``JOB_TYPES`` maps Orthanc's type names (``DicomModalityStore``, ...) to the
classes that read them back after a restart.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from broker.errors import ERROR_TABLE, ErrorCode
from broker.services import Services

#: Orthanc error codes used by jobs that ``broker.errors.ErrorCode`` does not list.
CANCELED_JOB = 37
_JOB_ERROR_MESSAGES = {CANCELED_JOB: "This job was canceled"}


def describe_error(code: int) -> str:
    """Orthanc's ``ErrorDescription`` for an error code."""
    if code in _JOB_ERROR_MESSAGES:
        return _JOB_ERROR_MESSAGES[code]
    try:
        return ERROR_TABLE[ErrorCode(code)].message
    except (ValueError, KeyError):
        return f"Error {code}"


class StepKind(enum.Enum):
    CONTINUE = "continue"
    SUCCESS = "success"
    FAILURE = "failure"
    RETRY = "retry"


@dataclass(frozen=True)
class StepResult:
    kind: StepKind
    code: int = 0
    details: str = ""
    retry_in_s: float = 0.0

    @classmethod
    def proceed(cls) -> StepResult:
        return cls(StepKind.CONTINUE)

    @classmethod
    def success(cls) -> StepResult:
        return cls(StepKind.SUCCESS)

    @classmethod
    def failure(cls, code: int, details: str = "") -> StepResult:
        return cls(StepKind.FAILURE, int(code), details)

    @classmethod
    def retry(cls, delay_s: float, code: int, details: str) -> StepResult:
        return cls(StepKind.RETRY, int(code), details, delay_s)


class TransferError(Exception):
    """A send to a modality or a peer failed. ``transient`` failures (connection refused or lost,
    association rejected, timeout, HTTP 5xx) are retried with backoff by asynchronous jobs; the
    others (the receiver refused the instance) fail the job at once."""

    def __init__(self, details: str, *, transient: bool = True, code: int = ErrorCode.NETWORK_PROTOCOL) -> None:
        super().__init__(details)
        self.details = details
        self.transient = transient
        self.code = int(code)


@dataclass
class JobContext:
    """What a step may use: the server's services, the engine settings and the senders (the network
    clients, behind one small interface so tests can fake the receivers)."""

    services: Services
    settings: Any
    senders: Any


class Job(ABC):
    """The contract between the engine and a job type."""

    #: Orthanc's job type (``Type`` in ``GET /jobs/{id}``); also the key of ``JOB_TYPES``.
    type: ClassVar[str]

    @abstractmethod
    def step(self, context: JobContext) -> StepResult:
        """Do one unit of work. Raises ``TransferError`` for a failed send, ``OrthancError`` for
        anything else that fails the job (any other exception fails it as an internal error)."""

    @abstractmethod
    def progress(self) -> float:
        """Between 0 and 1."""

    @abstractmethod
    def content(self) -> dict[str, Any]:
        """Orthanc's public ``Content`` of the job (also the answer of a synchronous submission)."""

    @abstractmethod
    def serialize(self) -> dict[str, Any]:
        """A JSON object from which ``unserialize`` rebuilds the job (its progress included)."""

    @classmethod
    @abstractmethod
    def unserialize(cls, data: dict[str, Any]) -> Job:
        ...

    def stopped(self, reason: str) -> None:
        """The engine stopped running the job: ``success``, ``failure``, ``canceled``, ``paused``,
        ``retry`` or ``shutdown``."""

    def resubmitted(self) -> None:
        """A failed job goes back to Pending. luabroker's jobs resume where they failed (Orthanc's
        restart from the beginning): see docs/jobs.md."""

    def interrupt(self) -> None:
        """Cut short any wait inside ``step`` (the engine stops, or the job is paused or canceled)."""


JOB_TYPES: dict[str, type[Job]] = {}


def job_type(cls: type[Job]) -> type[Job]:
    """Class decorator: register a job type for unserialization."""
    assert cls.type not in JOB_TYPES, f"Job type {cls.type} is registered twice"
    JOB_TYPES[cls.type] = cls
    return cls
