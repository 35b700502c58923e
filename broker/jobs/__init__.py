"""The jobs engine (docs/jobs.md): Orthanc's jobs (``DicomModalityStore``, ``OrthancPeerStore``,
``DicomMoveScu``, ``DicomGetScu`` and the "Lua" ``SequenceOfOperations``), run by a small pool of worker
threads, saved across a restart, with ``OnJob*`` events through the outbox and automatic retries of
transfers."""
from broker.config.jobs import JobsSettings
from broker.jobs.engine import JOB_FAILURE, JOB_SUBMITTED, JOB_SUCCESS, JobsEngine, create_engine, iso_time
from broker.jobs.model import JOB_TYPES, Job, JobContext, StepResult, TransferError
from broker.jobs.retrievals import DicomGetScuJob, DicomMoveScuJob
from broker.jobs.sequence import JobClosed, SequenceOfOperationsJob
from broker.jobs.states import COMPLETED_STATES, JobState
from broker.jobs.transfers import DicomModalityStoreJob, OrthancPeerStoreJob

__all__ = ["COMPLETED_STATES", "DicomGetScuJob", "DicomModalityStoreJob", "DicomMoveScuJob", "JOB_FAILURE",
           "JOB_SUBMITTED", "JOB_SUCCESS", "JOB_TYPES", "Job", "JobClosed", "JobContext", "JobState", "JobsEngine",
           "JobsSettings", "OrthancPeerStoreJob", "SequenceOfOperationsJob", "StepResult", "TransferError",
           "create_engine", "iso_time"]
