"""One loaded version of the scripts: their sources, the SHA-256 that names them, and the pair of
sandbox processes (main and filter) that run them.

A ``ScriptSet`` has one current version; a reload builds a new one next to it and swaps. Callers pin
the version they use for the length of a call (``enter``/``leave``), so a version that was replaced
is stopped only once its last call has finished.
"""
from __future__ import annotations

import datetime
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from broker.config import ConfigError
from broker.scripting.callbacks import Role
from sandbox import LuaModule, Sandbox, SandboxConfig, ScriptSource, State

#: The most bytes of Lua source that the folders of ``LuaModulesPath`` may hold: each process keeps
#: them in the broker's memory, and a module crosses to a process in one frame.
MAX_MODULES_BYTES = 16 * 1024 * 1024


def sources_digest(scripts: Sequence[ScriptSource], modules: Sequence[LuaModule] = ()) -> str:
    """SHA-256 of the scripts, in load order: for each, the length of its name, the name (UTF-8), the
    length of its source and the source, lengths as 8-byte big-endian integers; then, when there
    are modules, the same for each by name, named ``require:<name>:<path>`` (a binary module with an
    empty source), so that a changed module makes a new version."""
    digest = hashlib.sha256()
    parts = [(script.path, script.source) for script in scripts]
    parts += [(f"require:{module.name}:{module.path}", module.source or b"") for module in modules]
    for name, source in parts:
        for part in (name.encode("utf-8"), source if isinstance(source, bytes) else source.encode("utf-8")):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


def script_name(path: Path, base_dir: Path) -> str:
    """A script's name: its path relative to the configuration file when it lies below it (Lua cuts
    chunk names at 60 characters, and error messages must still name the file)."""
    return str(path.relative_to(base_dir) if path.is_relative_to(base_dir) else path)


def read_scripts(paths: Sequence[Path], base_dir: Path) -> tuple[ScriptSource, ...]:
    return tuple(_read_script(path, base_dir) for path in paths)


def _read_script(path: Path, base_dir: Path) -> ScriptSource:
    try:
        return ScriptSource(script_name(path, base_dir), path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"Cannot read the Lua script {path} listed in 'LuaScripts': {exc.strerror}") from exc


def read_modules(folders: Sequence[Path], base_dir: Path) -> tuple[LuaModule, ...]:
    """The modules that ``require`` finds in the folders of ``LuaModulesPath``, by name, in the order of
    Lua's own search (``?.lua;?/init.lua`` then the C path): the first folder first; in a folder
    ``a/b.lua`` is ``a.b``, ``a/init.lua`` is ``a`` when there is no ``a.lua``, and a ``.so`` is a
    binary module, kept only to be refused by name. Hidden files and folders are skipped."""
    found: dict[str, tuple[tuple[int, int], LuaModule]] = {}
    total = 0
    for rank, folder in enumerate(folders):
        if not folder.is_dir():
            raise ConfigError(f"Option 'LuaModulesPath' names {str(folder)!r}, which is not a folder")
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts) or path.suffix not in (".lua", ".so") \
                    or not path.is_file():
                continue
            parts = relative.with_suffix("").parts
            kind = {".so": 2}.get(path.suffix, 1 if parts[-1] == "init" and len(parts) > 1 else 0)
            name = ".".join(parts[:-1] if kind == 1 else parts)
            try:
                source = path.read_bytes() if kind < 2 else None
            except OSError as exc:
                raise ConfigError(f"Cannot read the Lua module {path} (LuaModulesPath): {exc.strerror}") from exc
            total += len(source or b"")
            if total > MAX_MODULES_BYTES:
                raise ConfigError(f"The folders of 'LuaModulesPath' hold more than {MAX_MODULES_BYTES} bytes of Lua")
            if name not in found or (rank, kind) < found[name][0]:
                found[name] = ((rank, kind), LuaModule(name, script_name(path, base_dir), source))
    return tuple(module for _, (_, module) in sorted(found.items()))


def iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="milliseconds")


class ScriptVersion:
    """The sandboxes of one version of the scripts, and the count of calls that use them."""

    def __init__(self, scripts: tuple[ScriptSource, ...], *, tenant: str, config: Any,
                 rpc_handler: Callable[..., Any], on_log: Callable[[str, str, str], None],
                 trusted: tuple[str, ...] = (), modules: tuple[LuaModule, ...] = ()) -> None:
        self.scripts = scripts
        self.modules = modules
        self.trusted = trusted
        self.digest = sources_digest(scripts, modules)
        self.loaded_at = time.time()
        #: Roles whose quarantine was already reported (logged once per episode).
        self.reported_quarantine: set[Role] = set()
        self.sandboxes: dict[Role, Sandbox] = {
            role: Sandbox(
                SandboxConfig(name=f"{tenant}/{role.value}@{self.digest[:12]}", role=role.value, scripts=scripts,
                              interpreter=config.lua_interpreter, limits=config.lua_limits,
                              backoff=config.lua_backoff, isolation=config.lua_isolation, trusted=trusted,
                              initialize="Initialize" if role is Role.MAIN else None, spare=config.lua_warm_spare,
                              modules=modules),
                rpc_handler, on_log)
            for role in Role
        }
        self._cond = threading.Condition()
        self._in_flight = 0

    @property
    def short(self) -> str:
        return self.digest[:12]

    @property
    def names(self) -> list[str]:
        return [script.path for script in self.scripts]

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, roles: Iterable[Role] = (Role.FILTER, Role.MAIN)) -> None:
        """Load into fresh processes, filter first, then main (which runs ``Initialize``): those of
        ``roles``, the roles this server process runs (a worker without the coordinator role has no
        main process). If any fails, all are stopped and the error (``ScriptLoadError`` names file and
        line) is raised."""
        try:
            for role in (Role.FILTER, Role.MAIN):
                if role in roles:
                    self.sandboxes[role].start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for sandbox in self.sandboxes.values():
            sandbox.stop()

    # -- calls in flight ---------------------------------------------------------------------------
    def enter(self) -> None:
        with self._cond:
            self._in_flight += 1

    def leave(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def wait_idle(self, timeout: float, abort: Callable[[], bool]) -> bool:
        """Wait until no call uses this version (True), the timeout passes or ``abort()`` (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._in_flight > 0 and not abort():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
            return self._in_flight == 0

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- questions ---------------------------------------------------------------------------------
    def defines(self, name: str, role: Role) -> bool:
        """Whether the callback is defined, as the process last reported: after every load, every
        execute-script and every call that changed its functions. Known without asking the process,
        so a busy process is never waited on for a callback it does not define."""
        return name in self.sandboxes[role].defined_functions()

    def quarantined_roles(self) -> list[str]:
        return [role.value for role, sandbox in self.sandboxes.items() if sandbox.state is State.QUARANTINED]

    def sandbox_status(self) -> list[dict[str, Any]]:
        return [{**sandbox.status(), "Version": self.digest} for sandbox in self.sandboxes.values()]

    def summary(self) -> dict[str, Any]:
        return {"Version": self.digest, "Scripts": self.names, "LoadedAt": iso(self.loaded_at),
                "InFlight": self._in_flight}
