"""The options of one script set: ``LuaScripts``, ``LuaTrustedScripts``, ``LuaModulesPath``,
``LuaExposeSecrets`` and the ``LuaSandbox`` section (limits, quarantine, failure policies, isolation, log bounds).

``ScriptOptions`` groups them because they are what a tenant sets for itself: the ``Tenants`` section
(``broker.config.tenants``) reads each tenant's configuration from the server's options with the
tenant's object laid over them, its ``LuaSandbox`` members over the server's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from broker.config.options import ConfigError, Section, bad_value
from sandbox import BackoffPolicy, CallBounds, Isolation, Limits

#: The answers of ``LuaSandbox.FilterFailurePolicy``: refuse (the default) or accept.
FAILURE_POLICIES = ("closed", "open")
_ISOLATION_LAYERS = ("Bubblewrap", "Seccomp", "Landlock", "Unshare")
_ISOLATION_MEMBERS = (*_ISOLATION_LAYERS, "User", "Group", "TrustedFileSizeMB")


@dataclass(frozen=True)
class ScriptLogLimits:
    """``LuaSandbox.LogRateLimit`` (``LinesPerSecond``, ``Burst``) and ``LuaSandbox.LogLineMaxLength``."""

    lines_per_second: float = 50.0
    burst: int = 500
    max_line_length: int = 4096


@dataclass(frozen=True)
class ScriptOptions:
    """What a script set runs with; every field is an option a tenant may override."""

    #: ``LuaScripts``: loaded in order into both sandbox processes; read again by a reload.
    lua_scripts: tuple[Path, ...] = ()
    #: ``LuaTrustedScripts``: scripts of ``LuaScripts`` run in trusted mode (io, os.execute, ...).
    lua_trusted_scripts: tuple[Path, ...] = ()
    #: ``LuaModulesPath``: folders of the pure-Lua modules that ``require`` loads; read again by a reload.
    lua_modules_path: tuple[Path, ...] = ()
    #: ``LuaExposeSecrets``: scripts read passwords and keys of the configuration as written (Orthanc).
    lua_expose_secrets: bool = False
    lua_limits: Limits = field(default_factory=Limits)
    lua_backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    #: ``LuaSandbox.EventMaxAttempts``: failed deliveries of one event before it is parked.
    event_max_attempts: int = 5
    #: ``LuaSandbox.EventLuaErrors``: ``Park`` (a callback that raises is retried, then parked, as a
    #: crash is) or ``Log`` (Orthanc's: the error is logged and the event is done).
    event_lua_errors_park: bool = True
    #: ``LuaSandbox.EventBacklogLimit``: events waiting for delivery past which new instances are
    #: refused (C-STORE 0xA700, REST 503); 0: no bound.
    event_backlog_limit: int = 100_000
    #: ``LuaHeartBeatPeriod``: seconds between the end of an ``OnHeartBeat`` and the next; 0: never.
    lua_heartbeat_period: float = 0.0
    #: ``LuaSandbox.FilterFailurePolicy``: each filter's answer when its process cannot run it.
    lua_filter_failure_policy: dict[str, str] = field(default_factory=dict)
    #: ``LuaSandbox.Isolation``: the OS layers of the sandbox processes (docs/security.md).
    lua_isolation: Isolation = field(default_factory=Isolation)
    #: ``LuaSandbox.WarmSpare``: each sandbox keeps a spare process, so a restart only loads the scripts
    #: (a few ms instead of a spawn); false halves the idle processes (docs/operations.md).
    lua_warm_spare: bool = True
    #: ``LuaSandbox.LogRateLimit`` and ``LuaSandbox.LogLineMaxLength``: the bounds of the scripts' log.
    lua_log_limits: ScriptLogLimits = field(default_factory=ScriptLogLimits)


def read_script_options(options: Section, base_dir: Path) -> ScriptOptions:
    """The options of a script set; paths are relative to ``base_dir`` (the configuration's directory)."""
    scripts = _paths(options, "LuaScripts")
    sandbox = options.section("LuaSandbox")
    limits = _limits(sandbox)
    return ScriptOptions(
        lua_scripts=tuple(_absolute(base_dir, path) for path in scripts),
        lua_trusted_scripts=_trusted(options, base_dir, scripts),
        lua_modules_path=tuple(_absolute(base_dir, path) for path in _paths(options, "LuaModulesPath")),
        lua_expose_secrets=options.option("LuaExposeSecrets", bool, False),
        lua_limits=limits,
        lua_backoff=_backoff(sandbox),
        event_max_attempts=sandbox.option("EventMaxAttempts", int, 5, lambda n: n >= 1, ">= 1"),
        event_lua_errors_park=sandbox.option("EventLuaErrors", str, "Park", lambda v: v in ("Park", "Log"),
                                             '"Park" or "Log"') == "Park",
        event_backlog_limit=sandbox.option("EventBacklogLimit", int, 100_000, lambda n: n >= 0, ">= 0"),
        lua_heartbeat_period=options.option("LuaHeartBeatPeriod", float, 0.0, lambda v: v >= 0, ">= 0"),
        lua_filter_failure_policy=_filter_failure_policy(sandbox),
        lua_isolation=_isolation(sandbox.section("Isolation")),
        lua_warm_spare=sandbox.option("WarmSpare", bool, True),
        lua_log_limits=_log_limits(sandbox),
    )


def read_interpreter(options: Section) -> str | None:
    """``LuaInterpreter`` (or ``LuaSandbox.Interpreter``); None: the sandbox finds one on ``PATH``."""
    name = "LuaInterpreter" if "LuaInterpreter" in options else "LuaSandbox.Interpreter"
    value = options.get("LuaInterpreter", options.section("LuaSandbox").get("Interpreter"))
    if value is not None and not isinstance(value, str):
        raise bad_value(name, value, "a string")
    return value


def _absolute(base_dir: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else base_dir / path


def _paths(options: Section, name: str) -> list[str]:
    """``LuaScripts`` or ``LuaModulesPath``: a list of paths, or (the seed: "A comma-separated list of
    paths can be specified") one string."""
    paths = options.get(name, [])
    if isinstance(paths, str):
        paths = [p.strip() for p in paths.split(",") if p.strip()]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise bad_value(name, paths, "a list of paths or a comma-separated string")
    return paths


def _trusted(options: Section, base_dir: Path, scripts: list[str]) -> tuple[Path, ...]:
    """``LuaTrustedScripts``: the scripts of ``LuaScripts`` that need ``io``/``os.execute``; the whole
    script set then runs in trusted mode (docs/security.md)."""
    value = options.get("LuaTrustedScripts", [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise bad_value("LuaTrustedScripts", value, "a list of paths")
    configured = {_absolute(base_dir, p) for p in scripts}
    trusted = tuple(_absolute(base_dir, p) for p in value)
    for path in trusted:
        if path not in configured:
            raise ConfigError(f"Option 'LuaTrustedScripts' names {str(path)!r}, which is not in 'LuaScripts'")
    return trusted


def _limits(sandbox: Section) -> Limits:
    base = Limits()
    soft = sandbox.option("CallTimeout", float, base.soft_cpu_s, lambda v: v > 0, "> 0")
    hard = sandbox.option("HardTimeout", float, max(base.hard_timeout_s, soft + 5), lambda v: v > soft,
                          f"> {soft:g} (CallTimeout)")
    return Limits(
        soft_cpu_s=soft,
        hard_timeout_s=hard,
        memory_kb=sandbox.option("MemoryLimitMB", int, base.memory_kb // 1024, lambda v: v > 0, "> 0") * 1024,
        address_space_mb=sandbox.option("AddressSpaceMB", int, base.address_space_mb, lambda v: v >= 64, ">= 64"),
        nice=sandbox.option("Nice", int, base.nice, lambda v: 0 <= v <= 19, "in [0, 19]"),
        bounds=_bounds(sandbox, hard),
    )


def _bounds(sandbox: Section, hard: float) -> CallBounds:
    """What bounds one call beyond its CPU and working time (docs/security.md, "Bounds of a call")."""
    base = CallBounds()
    return CallBounds(
        wall_s=sandbox.option("WallTimeout", float, max(base.wall_s, hard), lambda v: v >= hard,
                              f">= {hard:g} (HardTimeout)"),
        max_builtin_calls=sandbox.option("MaxBuiltinCalls", int, base.max_builtin_calls, lambda v: v >= 1, ">= 1"),
        max_nested_calls=sandbox.option("MaxNestedCalls", int, base.max_nested_calls, lambda v: v >= 0, ">= 0"),
        busy_timeout_s=sandbox.option("BusyTimeout", float, base.busy_timeout_s, lambda v: v >= 0, ">= 0"),
    )


def _backoff(sandbox: Section) -> BackoffPolicy:
    base = BackoffPolicy()
    return BackoffPolicy(
        max_failures=sandbox.option("QuarantineAfter", int, base.max_failures, lambda v: v >= 1, ">= 1"),
        window_s=sandbox.option("QuarantineWindow", float, base.window_s, lambda v: v > 0, "> 0"),
        cooldown_s=sandbox.option("QuarantineCooldown", float, base.cooldown_s, lambda v: v >= 0, ">= 0"),
        max_call_wait_s=sandbox.option("RestartWait", float, base.max_call_wait_s, lambda v: v > 0, "> 0"),
    )


#: The filter callbacks, whose failure policy ``LuaSandbox.FilterFailurePolicy`` sets. They are declared
#: in ``broker.scripting.callbacks``, a layer above the configuration (docs/architecture.md), so the
#: names are repeated here; tests/broker/test_config_options.py checks that both lists agree.
FILTER_CALLBACKS = ("ReceivedInstanceFilter", "ReceivedCStoreInstanceFilter", "IncomingHttpRequestFilter",
                    "IncomingFindRequestFilter", "IncomingWorklistRequestFilter", "OutgoingFindRequestFilter")


def _filter_failure_policy(sandbox: Section) -> dict[str, str]:
    """``LuaSandbox.FilterFailurePolicy``: what each filter answers when its process cannot run it
    (dead, timed out, quarantined); "closed" (refuse) unless set to "open" (accept)."""
    filters = FILTER_CALLBACKS
    value = sandbox.section("FilterFailurePolicy")
    policy = {name: "closed" for name in filters}
    for name, mode in value.values.items():
        if name not in policy:
            raise ConfigError(f"Option '{sandbox.label('FilterFailurePolicy')}' names {name!r}, which is not a "
                              f"filter; expected one of {', '.join(filters)}")
        if mode not in FAILURE_POLICIES:
            raise bad_value(value.label(name), mode, '"closed" or "open"')
        policy[name] = mode
    return policy


def _unknown_members(section: Section, known: tuple[str, ...]) -> None:
    for key in section.values:
        if key not in known:
            raise ConfigError(f"Option '{section.name}' has an unknown member {key!r}; "
                              f"expected some of {', '.join(known)}")


def _isolation(isolation: Section) -> Isolation:
    """``LuaSandbox.Isolation``: which OS layers contain the sandbox processes (docs/security.md).
    Each layer is "auto" (used when the host allows it), "required" (refuse to start without it) or
    "off"; ``User`` is the account children run as when the broker runs as root ("off" keeps root)."""
    _unknown_members(isolation, _ISOLATION_MEMBERS)
    modes = {}
    for key in _ISOLATION_LAYERS:
        mode = isolation.get(key, "auto")
        if mode not in ("auto", "required", "off"):
            raise bad_value(isolation.label(key), mode, '"auto", "required" or "off"')
        modes[key.lower()] = mode
    user = isolation.get("User", "nobody")
    group = isolation.get("Group")
    for key, item, what in (("User", user, 'a user name, a non-zero uid, or "off"'),
                            ("Group", group, "a group name or a non-zero gid")):
        if item is not None and (isinstance(item, bool) or not isinstance(item, (str, int)) or item in ("", 0)):
            raise bad_value(isolation.label(key), item, what)
    size = isolation.option("TrustedFileSizeMB", int, 1024, lambda v: v >= 0, ">= 0")
    return Isolation(**modes, user=None if user == "off" else user, group=group, trusted_file_size_mb=size)


def _log_limits(sandbox: Section) -> ScriptLogLimits:
    """``LuaSandbox.LogRateLimit`` (``LinesPerSecond``, ``Burst``: a token bucket per tenant) and
    ``LuaSandbox.LogLineMaxLength``: what scripts may write to the server's log."""
    base = ScriptLogLimits()
    rate = sandbox.section("LogRateLimit")
    _unknown_members(rate, ("LinesPerSecond", "Burst"))
    return ScriptLogLimits(
        lines_per_second=rate.option("LinesPerSecond", float, base.lines_per_second, lambda v: v > 0, "> 0"),
        burst=rate.option("Burst", int, base.burst, lambda v: v >= 1, ">= 1"),
        max_line_length=sandbox.option("LogLineMaxLength", int, base.max_line_length, lambda v: v >= 80, ">= 80"),
    )
