"""The options of the jobs engine.

Orthanc's: ``ConcurrentJobs`` (worker threads, default 2), ``JobsHistorySize`` (completed jobs kept,
default 10), ``SaveJobs`` (persist the jobs across a restart, default true). luabroker's own, in the
``Jobs`` section (docs/jobs.md)::

    "Jobs": {
      "RetryAttempts": 4,          // attempts of a transfer, the first included (1 = no retry)
      "RetryDelay": 2,             // seconds before the first retry, doubled at each one...
      "RetryMaxDelay": 60,         // ...up to this
      "LuaTrailingTimeout": 5,     // seconds a "Lua" job waits for more operations (Orthanc: 5)
      "LuaTransferFailure": "fail",// "fail": a failed send stops the Lua job (default);
                                   // "continue": Orthanc's behaviour, the input is passed on
      "CallSystemEnabled": ...,    // CallSystem() operations run only in trusted mode: default true
                                   // when LuaTrustedScripts is not empty, else false
      "CallSystemTimeout": 60      // seconds a CallSystem() command may run
    }
"""
from __future__ import annotations

from dataclasses import dataclass, field

from broker.config.options import Section, bad_value

TRANSFER_FAILURE_MODES = ("fail", "continue")


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` counts every attempt, the first included (1 = no retry); the delays are
    computed by ``broker.jobs.backoff.next_delay``."""

    max_attempts: int = 4
    initial_delay_s: float = 2.0
    multiplier: float = 2.0
    max_delay_s: float = 60.0
    jitter: float = 0.1  # each delay is drawn in [d * (1 - jitter), d * (1 + jitter)]

    def allows_retry(self, failures: int) -> bool:
        """Whether another attempt follows the ``failures``-th consecutive failure."""
        return failures < self.max_attempts


@dataclass(frozen=True)
class JobsSettings:
    workers: int = 2
    history_size: int = 10
    persist: bool = True
    default_local_aet: str = "ORTHANC"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lua_trailing_timeout_s: float = 5.0
    lua_max_operations: int = 1000
    lua_transfer_failure: str = "fail"
    call_system_enabled: bool = False
    call_system_timeout_s: float = 60.0
    #: Minimum seconds between two saves of a running job's progress (state changes are saved at once).
    save_interval_s: float = 0.5
    #: ``MediaArchiveSize``: archives of asynchronous jobs kept for ``GET /jobs/{id}/archive``.
    media_archive_size: int = 1


def read_jobs_settings(options: Section, local_aet: str, trusted: bool) -> JobsSettings:
    """The jobs engine's settings; ``local_aet`` is ``DicomAet``, ``trusted`` whether the script set runs
    in trusted mode (it may then run host programs, so ``CallSystem`` is on by default)."""
    jobs = options.section("Jobs")
    mode = jobs.get("LuaTransferFailure", "fail")
    if mode not in TRANSFER_FAILURE_MODES:
        raise bad_value(jobs.label("LuaTransferFailure"), mode, '"fail" or "continue"')
    return JobsSettings(
        workers=options.option("ConcurrentJobs", int, 2, lambda v: v >= 1, ">= 1"),
        history_size=options.option("JobsHistorySize", int, 10, lambda v: v >= 0, ">= 0"),
        persist=options.option("SaveJobs", bool, True),
        default_local_aet=local_aet,
        retry=RetryPolicy(
            max_attempts=jobs.option("RetryAttempts", int, 4, lambda v: v >= 1, ">= 1"),
            initial_delay_s=jobs.option("RetryDelay", float, 2.0, lambda v: v >= 0, ">= 0"),
            max_delay_s=jobs.option("RetryMaxDelay", float, 60.0, lambda v: v >= 0, ">= 0"),
        ),
        lua_trailing_timeout_s=jobs.option("LuaTrailingTimeout", float, 5.0, lambda v: v >= 0, ">= 0"),
        lua_transfer_failure=mode,
        call_system_enabled=jobs.option("CallSystemEnabled", bool, trusted),
        call_system_timeout_s=jobs.option("CallSystemTimeout", float, 60.0, lambda v: v >= 0.1, ">= 0.1"),
        media_archive_size=options.option("MediaArchiveSize", int, 1, lambda v: v >= 1, ">= 1"),
    )
