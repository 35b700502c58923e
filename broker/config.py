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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from sandbox import BackoffPolicy, Limits

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
            check: Callable[[Any], bool] | None = None) -> T:
    value = raw.get(name, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)) or (check and not check(value)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"Option '{name}' has value {value!r}; expected {expected}")
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
            return cls.from_json(raw, path)
        return cls.from_json(load_json_file(path), path.parent)


def _limits(sandbox: dict[str, Any]) -> Limits:
    base = Limits()
    soft = _option(sandbox, "CallTimeout", float, base.soft_cpu_s, lambda v: v > 0)
    return Limits(
        soft_cpu_s=soft,
        hard_timeout_s=_option(sandbox, "HardTimeout", float, max(base.hard_timeout_s, soft + 5), lambda v: v > soft),
        memory_kb=_option(sandbox, "MemoryLimitMB", int, base.memory_kb // 1024, lambda v: v > 0) * 1024,
        address_space_mb=_option(sandbox, "AddressSpaceMB", int, base.address_space_mb, lambda v: v >= 64),
    )


def _backoff(sandbox: dict[str, Any]) -> BackoffPolicy:
    base = BackoffPolicy()
    return BackoffPolicy(
        max_failures=_option(sandbox, "QuarantineAfter", int, base.max_failures, lambda v: v >= 1),
    )
