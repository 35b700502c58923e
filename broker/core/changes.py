"""The kinds of event in the event log (``broker.core.outbox``): which ones are Orthanc's changes, listed
by ``GET /changes``, and which ones are delivered to the Lua callbacks.

Observed on Orthanc 1.10.1 (``tests/integration/test_lifecycle_parity.py`` compares both servers):

======================================================  ==========  ==========================
kind                                                    /changes    delivered to
======================================================  ==========  ==========================
NewInstance, NewSeries, NewStudy, NewPatient            listed      (nothing)
CompletedSeries                                         listed      (nothing)
StableSeries, StableStudy, StablePatient                listed      ``OnStable<Level>``
UpdatedMetadata, UpdatedAttachment                      listed      ``OnUpdated<Level>``
Deleted                                                 no          ``OnDeleted<Level>``
StoredInstance (duplicates included)                    no          ``OnStoredInstance``
JobSubmitted, JobSuccess, JobFailure                    no          ``OnJob*``
======================================================  ==========  ==========================

A listed change leaves ``/changes`` when its resource is deleted (Orthanc's ``Changes`` rows go with
their resource) or on ``DELETE /changes``; the event stays in the log for its delivery. Orthanc
signals ``NewChildInstance`` to its plugins only, and logs no ``Modified*``/``Anonymized*`` change
for the modifications of 1.10: neither is written here.
"""
from __future__ import annotations

from broker.core.levels import Level

STORED_INSTANCE = "StoredInstance"
DELETED = "Deleted"
UPDATED_METADATA = "UpdatedMetadata"
UPDATED_ATTACHMENT = "UpdatedAttachment"
COMPLETED_SERIES = "CompletedSeries"
JOB_KINDS = ("JobSubmitted", "JobSuccess", "JobFailure")


def new(level: Level) -> str:
    """``NewPatient``, ``NewStudy``, ``NewSeries`` or ``NewInstance``."""
    return f"New{level.label}"


def stable(level: Level) -> str:
    """``StablePatient``, ``StableStudy`` or ``StableSeries``."""
    return f"Stable{level.label}"


STABLE_LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES)
STABLE_KINDS = frozenset(stable(level) for level in STABLE_LEVELS)

#: Orthanc's logged changes: ``GET /changes`` lists them.
LISTED = frozenset({*(new(level) for level in Level), COMPLETED_SERIES, *STABLE_KINDS, UPDATED_METADATA,
                    UPDATED_ATTACHMENT})
#: The kinds a Lua callback consumes: written ``pending`` for the dispatcher; the others are born ``logged``.
DELIVERED = frozenset({STORED_INSTANCE, DELETED, *STABLE_KINDS, UPDATED_METADATA, UPDATED_ATTACHMENT, *JOB_KINDS})
