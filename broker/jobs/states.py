"""The states of a job, named as Orthanc names them (``JobState`` in Orthanc's ``Enumerations.h``).

No dependencies: the engine, the persistence and the REST handlers share these names.

::

    submit ──► Pending ──► Running ──► Success
                 ▲  ▲        │  │ └──► Failure ──(resubmit)──► Pending
                 │  │        │  └────► Retry ──(delay)──► Pending
                 │  └────────┴───────► Paused ──(resume)──► Pending
                 └──────── (broker stopped while Running: Pending again at restart)
"""
from __future__ import annotations

import enum


class JobState(str, enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILURE = "Failure"
    PAUSED = "Paused"
    RETRY = "Retry"


#: Final states: the job is in the history, only ``resubmit`` (after a failure) brings it back.
COMPLETED_STATES = frozenset({JobState.SUCCESS, JobState.FAILURE})
#: States in which a job waits for a worker (Retry: once its delay has passed).
WAITING_STATES = frozenset({JobState.PENDING, JobState.RETRY})
