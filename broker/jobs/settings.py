"""The settings of the jobs engine, read from the configuration once.

Orthanc's options: ``ConcurrentJobs`` (worker threads, default 2), ``JobsHistorySize`` (completed jobs
kept, default 10), ``SaveJobs`` (persist the jobs across a restart, default true). luabroker's own,
in the ``Jobs`` section (docs/jobs.md)::

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
from typing import Any

from broker.config import ConfigError
from broker.jobs.backoff import RetryPolicy

TRANSFER_FAILURE_MODES = ("fail", "continue")


class JobsSettingsError(ConfigError):
    """An option of the jobs engine with a wrong value; the message names it and says what is expected."""


def _number(section: dict[str, Any], name: str, default: float, *, minimum: float, prefix: str = "") -> float:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise JobsSettingsError(f"Option '{prefix}{name}' has value {value!r}; expected a number >= {minimum}")
    return float(value)


def _integer(section: dict[str, Any], name: str, default: int, *, minimum: int, prefix: str = "") -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise JobsSettingsError(f"Option '{prefix}{name}' has value {value!r}; expected an integer >= {minimum}")
    return value


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

    @classmethod
    def from_config(cls, config: Any) -> "JobsSettings":
        raw: dict[str, Any] = dict(getattr(config, "raw", None) or {})
        section = raw.get("Jobs", {})
        if not isinstance(section, dict):
            raise JobsSettingsError(f"Option 'Jobs' has value {section!r}; expected an object")
        persist = raw.get("SaveJobs", True)
        if not isinstance(persist, bool):
            raise JobsSettingsError(f"Option 'SaveJobs' has value {persist!r}; expected a boolean")
        mode = section.get("LuaTransferFailure", "fail")
        if mode not in TRANSFER_FAILURE_MODES:
            raise JobsSettingsError(f"Option 'Jobs.LuaTransferFailure' has value {mode!r}; expected "
                                    "\"fail\" or \"continue\"")
        trusted = bool(raw.get("LuaTrustedScripts"))  # trusted mode: the script set may run host programs
        enabled = section.get("CallSystemEnabled", trusted)
        if not isinstance(enabled, bool):
            raise JobsSettingsError(f"Option 'Jobs.CallSystemEnabled' has value {enabled!r}; expected a boolean")
        return cls(
            workers=_integer(raw, "ConcurrentJobs", 2, minimum=1),
            history_size=_integer(raw, "JobsHistorySize", 10, minimum=0),
            persist=persist,
            default_local_aet=getattr(config, "dicom_aet", "ORTHANC"),
            retry=RetryPolicy(
                max_attempts=_integer(section, "RetryAttempts", 4, minimum=1, prefix="Jobs."),
                initial_delay_s=_number(section, "RetryDelay", 2.0, minimum=0, prefix="Jobs."),
                max_delay_s=_number(section, "RetryMaxDelay", 60.0, minimum=0, prefix="Jobs."),
            ),
            lua_trailing_timeout_s=_number(section, "LuaTrailingTimeout", 5.0, minimum=0, prefix="Jobs."),
            lua_transfer_failure=mode,
            call_system_enabled=enabled,
            call_system_timeout_s=_number(section, "CallSystemTimeout", 60.0, minimum=0.1, prefix="Jobs."),
        )
