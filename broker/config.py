"""Orthanc's JSON configuration, read once and mapped to typed settings.

The file is Orthanc's: comments are allowed, unknown options are kept (in ``raw``, which is also what
``GetOrthancConfiguration()`` returns) and ignored. Orthanc names are mapped to attributes in exactly
one place, ``Config.from_json``. Our own options have Orthanc-style names and are documented in
``docs/configuration.md``.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, TypeVar

from broker.core.bounds import MIB, InflateBound, InputBounds
from broker.scripting.script_log import ScriptLogLimits
from sandbox import BackoffPolicy, CallBounds, Isolation, Limits

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration file or option that cannot be used; the message says which and why."""


_COMMENT_OR_STRING = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)


def strip_json_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments, leaving string literals untouched (as Orthanc's parser)."""
    return _COMMENT_OR_STRING.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)


def load_json_file(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(strip_json_comments(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"Cannot read the configuration file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"The configuration file {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"The configuration file {path} must contain a JSON object")
    return value


def _option(raw: dict[str, Any], name: str, kind: type[T] | tuple[type, ...], default: T,
            check: Callable[[Any], bool] | None = None, label: str | None = None) -> T:
    """``raw[name]`` checked; ``label`` is the name in the message when it differs (a nested option)."""
    value = raw.get(name, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)) or (check and not check(value)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"Option '{label or name}' has value {value!r}; expected {expected}")
    return value  # type: ignore[return-value]


def default_interpreter() -> str:
    for candidate in ("lua5.4", "lua5.3", "lua"):
        found = shutil.which(candidate)
        if found:
            return found
    raise ConfigError("No Lua interpreter found on PATH (tried lua5.4, lua5.3, lua); "
                      "install lua5.4 or set 'LuaInterpreter'")


@dataclass(frozen=True)
class Config:
    raw: dict[str, Any] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)
    name: str = "luabroker"
    http_port: int = 8042
    http_bind: str = "0.0.0.0"
    dicom_port: int = 4242
    dicom_aet: str = "ORTHANC"
    dicom_server_enabled: bool = True
    storage_directory: Path = Path("luabroker-data")
    lua_scripts: tuple[Path, ...] = ()
    execute_lua_enabled: bool = False
    remote_access_allowed: bool = False
    authentication_enabled: bool = False
    registered_users: dict[str, str] = field(default_factory=dict)
    http_describe_errors: bool = True
    user_metadata: dict[str, int] = field(default_factory=dict)
    lua_interpreter: str | None = None
    lua_limits: Limits = field(default_factory=Limits)
    lua_backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    event_max_attempts: int = 5
    lua_filter_failure_policy: dict[str, str] = field(default_factory=dict)
    #: ``LuaSandbox.Isolation``: the OS layers of the sandbox processes (docs/security.md).
    lua_isolation: Isolation = field(default_factory=Isolation)
    #: ``LuaTrustedScripts``: scripts of ``LuaScripts`` run in trusted mode (io, os.execute, ...).
    lua_trusted_scripts: tuple[Path, ...] = ()
    #: ``LuaExposeSecrets``: scripts read passwords and keys of the configuration as written (Orthanc).
    lua_expose_secrets: bool = False
    #: ``LuaAdminUsers``: the users who may run execute-script and the /lua operator POSTs; None: anyone.
    lua_admin_users: tuple[str, ...] | None = None
    #: ``LuaSandbox.LogRateLimit`` and ``LuaSandbox.LogLineMaxLength``: the bounds of the scripts' log.
    lua_log_limits: ScriptLogLimits = field(default_factory=ScriptLogLimits)
    #: ``MaximumHttpBodySize``, ``MaximumDicomElements``, ``MaximumInflatedSize``,
    #: ``MaximumCompressionRatio``: what one upload may cost (docs/security.md, "Bounds on input").
    input_bounds: InputBounds = field(default_factory=InputBounds)
    #: ``DicomScpTimeout`` (Orthanc): seconds an association may stay idle; None: no limit.
    dicom_scp_timeout: float | None = 30.0
    #: ``DicomScpAcseTimeout``: seconds a new connection has to send its association request.
    dicom_scp_acse_timeout: float = 10.0
    #: ``DicomScpMaximumAssociations``: associations served at once (connections still to ask for one
    #: do not count).
    dicom_scp_maximum_associations: int = 32
    #: The file (or directory) this configuration was read from; ``POST /lua/reload`` reads it again.
    path: Path | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any], base_dir: Path) -> "Config":
        scripts = raw.get("LuaScripts", [])
        if isinstance(scripts, str):  # the seed: "A comma-separated list of paths can be specified"
            scripts = [s.strip() for s in scripts.split(",") if s.strip()]
        if not isinstance(scripts, list) or not all(isinstance(s, str) for s in scripts):
            raise ConfigError(f"Option 'LuaScripts' has value {scripts!r}; expected a list of paths "
                              "or a comma-separated string")
        users = _option(raw, "RegisteredUsers", dict, {})
        if not all(isinstance(v, str) for v in users.values()):
            raise ConfigError("Option 'RegisteredUsers' must map user names to password strings")
        user_metadata = _option(raw, "UserMetadata", dict, {})
        if not all(isinstance(v, int) and 1024 <= v <= 65535 for v in user_metadata.values()):
            raise ConfigError("Option 'UserMetadata' must map names to integers in [1024, 65535]")
        remote = _option(raw, "RemoteAccessAllowed", bool, False)
        # Orthanc: authentication defaults to on as soon as remote access is allowed.
        auth = _option(raw, "AuthenticationEnabled", bool, remote)
        sandbox = _option(raw, "LuaSandbox", dict, {})
        interpreter = raw.get("LuaInterpreter", sandbox.get("Interpreter"))
        if interpreter is not None and not isinstance(interpreter, str):
            raise ConfigError(f"Option 'LuaInterpreter' has value {interpreter!r}; expected a string")
        storage = Path(_option(raw, "StorageDirectory", str, "luabroker-data"))
        return cls(
            raw=raw,
            base_dir=base_dir,
            name=_option(raw, "Name", str, "luabroker"),
            http_port=_option(raw, "HttpPort", int, 8042, lambda p: 0 <= p < 65536),
            http_bind="0.0.0.0" if remote else "127.0.0.1",
            dicom_port=_option(raw, "DicomPort", int, 4242, lambda p: 0 <= p < 65536),
            dicom_aet=_option(raw, "DicomAet", str, "ORTHANC", lambda a: 0 < len(a) <= 16),
            dicom_server_enabled=_option(raw, "DicomServerEnabled", bool, True),
            storage_directory=storage if storage.is_absolute() else base_dir / storage,
            lua_scripts=tuple(p if p.is_absolute() else base_dir / p for p in map(Path, scripts)),
            execute_lua_enabled=_option(raw, "ExecuteLuaEnabled", bool, False),
            remote_access_allowed=remote,
            authentication_enabled=auth,
            registered_users=users,
            http_describe_errors=_option(raw, "HttpDescribeErrors", bool, True),
            user_metadata=user_metadata,
            lua_interpreter=interpreter,
            lua_limits=_limits(sandbox),
            lua_backoff=_backoff(sandbox),
            event_max_attempts=_option(sandbox, "EventMaxAttempts", int, 5, lambda n: n >= 1),
            lua_filter_failure_policy=_filter_failure_policy(sandbox),
            lua_isolation=_layers(sandbox),
            lua_trusted_scripts=_trusted(raw, base_dir, scripts),
            lua_expose_secrets=_option(raw, "LuaExposeSecrets", bool, False),
            lua_admin_users=_admin_users(raw, users, auth),
            lua_log_limits=_log_limits(sandbox),
            input_bounds=_input_bounds(raw),
            dicom_scp_timeout=_option(raw, "DicomScpTimeout", float, 30.0, lambda v: v >= 0) or None,
            dicom_scp_acse_timeout=_option(raw, "DicomScpAcseTimeout", float, 10.0, lambda v: v > 0),
            dicom_scp_maximum_associations=_option(raw, "DicomScpMaximumAssociations", int, 32, lambda v: v >= 1),
        )

    @classmethod
    def load(cls, path: str | Path | None) -> "Config":
        """Read a configuration file, or every ``*.json`` of a directory (merged in name order, as
        Orthanc does). ``None`` gives the defaults, relative to the current directory."""
        if path is None:
            return cls.from_json({}, Path.cwd())
        path = Path(path).resolve()
        if path.is_dir():
            raw: dict[str, Any] = {}
            for file in sorted(path.glob("*.json")):
                raw.update(load_json_file(file))
            return replace(cls.from_json(raw, path), path=path)
        return replace(cls.from_json(load_json_file(path), path.parent), path=path)


def _limits(sandbox: dict[str, Any]) -> Limits:
    base = Limits()
    soft = _option(sandbox, "CallTimeout", float, base.soft_cpu_s, lambda v: v > 0)
    hard = _option(sandbox, "HardTimeout", float, max(base.hard_timeout_s, soft + 5), lambda v: v > soft)
    return Limits(
        soft_cpu_s=soft,
        hard_timeout_s=hard,
        memory_kb=_option(sandbox, "MemoryLimitMB", int, base.memory_kb // 1024, lambda v: v > 0) * 1024,
        address_space_mb=_option(sandbox, "AddressSpaceMB", int, base.address_space_mb, lambda v: v >= 64),
        bounds=_bounds(sandbox, hard),
    )


def _bounds(sandbox: dict[str, Any], hard: float) -> CallBounds:
    """What bounds one call beyond its CPU and working time (docs/security.md, "Bounds of a call")."""
    base = CallBounds()
    return CallBounds(
        wall_s=_option(sandbox, "WallTimeout", float, max(base.wall_s, hard), lambda v: v >= hard),
        max_builtin_calls=_option(sandbox, "MaxBuiltinCalls", int, base.max_builtin_calls, lambda v: v >= 1),
        max_nested_calls=_option(sandbox, "MaxNestedCalls", int, base.max_nested_calls, lambda v: v >= 0),
        busy_timeout_s=_option(sandbox, "BusyTimeout", float, base.busy_timeout_s, lambda v: v >= 0),
    )


def _backoff(sandbox: dict[str, Any]) -> BackoffPolicy:
    base = BackoffPolicy()
    return BackoffPolicy(
        max_failures=_option(sandbox, "QuarantineAfter", int, base.max_failures, lambda v: v >= 1),
        window_s=_option(sandbox, "QuarantineWindow", float, base.window_s, lambda v: v > 0),
        cooldown_s=_option(sandbox, "QuarantineCooldown", float, base.cooldown_s, lambda v: v >= 0),
    )


def _filter_failure_policy(sandbox: dict[str, Any]) -> dict[str, str]:
    """``LuaSandbox.FilterFailurePolicy``: what each filter answers when its process cannot run it
    (dead, timed out, quarantined); "closed" (refuse) unless set to "open" (accept)."""
    from broker.scripting.callbacks import CALLBACKS, Kind

    filters = [name for name, callback in CALLBACKS.items() if callback.kind is Kind.FILTER]
    value = _option(sandbox, "FilterFailurePolicy", dict, {})
    policy = {name: "closed" for name in filters}
    for name, mode in value.items():
        if name not in policy:
            raise ConfigError(f"Option 'LuaSandbox.FilterFailurePolicy' names {name!r}, which is not a filter; "
                              f"expected one of {', '.join(filters)}")
        if mode not in ("closed", "open"):
            raise ConfigError(f"Option 'LuaSandbox.FilterFailurePolicy.{name}' has value {mode!r}; "
                              "expected \"closed\" or \"open\"")
        policy[name] = mode
    return policy


def _layers(sandbox: dict[str, Any]) -> Isolation:
    """``LuaSandbox.Isolation``: which OS layers contain the sandbox processes (docs/security.md).
    Each layer is "auto" (used when the host allows it), "required" (refuse to start without it) or
    "off"; ``User`` is the account children run as when the broker runs as root ("off" keeps root)."""
    value = _option(sandbox, "Isolation", dict, {})
    known = ("Bubblewrap", "Seccomp", "Landlock", "Unshare", "User", "Group", "TrustedFileSizeMB")
    for key in value:
        if key not in known:
            raise ConfigError(f"Option 'LuaSandbox.Isolation' has an unknown member {key!r}; "
                              f"expected some of {', '.join(known)}")
    modes = {}
    for key in ("Bubblewrap", "Seccomp", "Landlock", "Unshare"):
        mode = value.get(key, "auto")
        if mode not in ("auto", "required", "off"):
            raise ConfigError(f"Option 'LuaSandbox.Isolation.{key}' has value {mode!r}; "
                              'expected "auto", "required" or "off"')
        modes[key.lower()] = mode
    user = value.get("User", "nobody")
    group = value.get("Group")
    for key, item, what in (("User", user, 'a user name, a non-zero uid, or "off"'),
                            ("Group", group, "a group name or a non-zero gid")):
        if item is not None and (isinstance(item, bool) or not isinstance(item, (str, int)) or item in ("", 0)):
            raise ConfigError(f"Option 'LuaSandbox.Isolation.{key}' has value {item!r}; expected {what}")
    size = _option(value, "TrustedFileSizeMB", int, 1024, lambda v: v >= 0)
    return Isolation(**modes, user=None if user == "off" else user, group=group, trusted_file_size_mb=size)


def _trusted(raw: dict[str, Any], base_dir: Path, scripts: list[str]) -> tuple[Path, ...]:
    """``LuaTrustedScripts``: the scripts of ``LuaScripts`` that need ``io``/``os.execute``; the whole
    script set then runs in trusted mode (docs/security.md)."""
    value = raw.get("LuaTrustedScripts", [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"Option 'LuaTrustedScripts' has value {value!r}; expected a list of paths")
    configured = {Path(p) if Path(p).is_absolute() else base_dir / p for p in scripts}
    trusted = tuple(Path(p) if Path(p).is_absolute() else base_dir / p for p in value)
    for path in trusted:
        if path not in configured:
            raise ConfigError(f"Option 'LuaTrustedScripts' names {str(path)!r}, which is not in 'LuaScripts'")
    return trusted


def _admin_users(raw: dict[str, Any], users: dict[str, str], authentication: bool) -> tuple[str, ...] | None:
    """``LuaAdminUsers``: names of ``RegisteredUsers``; only they may run execute-script and the
    operator's ``POST /lua/...`` (docs/security.md). Absent: anyone who passes authentication."""
    value = raw.get("LuaAdminUsers")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ConfigError(f"Option 'LuaAdminUsers' has value {value!r}; expected a list of user names")
    for name in value:
        if name not in users:
            raise ConfigError(f"Option 'LuaAdminUsers' names {name!r}, which is not in 'RegisteredUsers'")
    if not authentication:
        raise ConfigError("Option 'LuaAdminUsers' needs 'AuthenticationEnabled': without authentication no "
                          "request has a user name")
    return tuple(value)


def _log_limits(sandbox: dict[str, Any]) -> ScriptLogLimits:
    """``LuaSandbox.LogRateLimit`` (``LinesPerSecond``, ``Burst``: a token bucket per tenant) and
    ``LuaSandbox.LogLineMaxLength``: what scripts may write to the server's log."""
    base = ScriptLogLimits()
    rate = _option(sandbox, "LogRateLimit", dict, {}, label="LuaSandbox.LogRateLimit")
    for key in rate:
        if key not in ("LinesPerSecond", "Burst"):
            raise ConfigError(f"Option 'LuaSandbox.LogRateLimit' has an unknown member {key!r}; "
                              "expected some of LinesPerSecond, Burst")
    return ScriptLogLimits(
        lines_per_second=_option(rate, "LinesPerSecond", float, base.lines_per_second, lambda v: v > 0,
                                 "LuaSandbox.LogRateLimit.LinesPerSecond"),
        burst=_option(rate, "Burst", int, base.burst, lambda v: v >= 1, "LuaSandbox.LogRateLimit.Burst"),
        max_line_length=_option(sandbox, "LogLineMaxLength", int, base.max_line_length, lambda v: v >= 80,
                                "LuaSandbox.LogLineMaxLength"),
    )


def _input_bounds(raw: dict[str, Any]) -> InputBounds:
    """The bounds on input (docs/security.md, "Bounds on input"). As Orthanc's ``MaximumStorageSize``,
    sizes are in MB (MiB) and 0 means no limit."""
    base, inflate = InputBounds(), InflateBound()

    def size_mb(name: str, default: int | None) -> int | None:
        return _option(raw, name, int, (default or 0) // MIB, lambda v: v >= 0) * MIB or None

    elements = _option(raw, "MaximumDicomElements", int, base.max_elements or 0, lambda v: v >= 0)
    ratio = _option(raw, "MaximumCompressionRatio", float, inflate.max_ratio or 0.0, lambda v: v == 0 or v >= 1)
    return InputBounds(max_body=size_mb("MaximumHttpBodySize", base.max_body), max_elements=elements or None,
                       inflate=InflateBound(max_size=size_mb("MaximumInflatedSize", inflate.max_size),
                                            max_ratio=ratio or None))
