"""``ScriptSet``: the two sandbox processes that run one set of scripts, and the gateway between them
and the core.

The filter process serves the ingest path (``ReceivedInstanceFilter``), so a slow
``OnStoredInstance`` in the main process never stalls C-STORE. Every ``rpc`` from either process goes
through ``dispatch``; every callback goes through ``call_filter`` or ``notify``. A filter whose process
is dead, timed out or quarantined fails closed: the instance (or request) is refused, never let through
unchecked.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from broker.errors import ErrorCode, OrthancError
from broker.scripting.builtins import BUILTINS, CallContext
from broker.scripting.callbacks import CALLBACKS, Kind, Role
from broker.scripting.values import to_lua
from sandbox import (BuiltinError, CallInfo, CallResult, LuaError, Sandbox, SandboxConfig, SandboxCrashed,
                     SandboxError, ScriptSource)

log = logging.getLogger("luabroker.scripting")


class ScriptSet:
    def __init__(self, services: Any, tenant: str = "default") -> None:
        self.services = services
        self.tenant = tenant
        config = services.config
        scripts = tuple(_read_script(path, config.base_dir) for path in config.lua_scripts)
        self.sandboxes: dict[Role, Sandbox] = {
            role: Sandbox(
                SandboxConfig(name=f"{tenant}/{role.value}", role=role.value, scripts=scripts,
                              interpreter=config.lua_interpreter, limits=config.lua_limits,
                              backoff=config.lua_backoff,
                              initialize="Initialize" if role is Role.MAIN else None),
                self.dispatch, self._on_log)
            for role in Role
        }
        self._execute_used = False

    @property
    def main(self) -> Sandbox:
        return self.sandboxes[Role.MAIN]

    @property
    def filter(self) -> Sandbox:
        return self.sandboxes[Role.FILTER]

    # -- lifecycle ---------------------------------------------------------------------------------
    def start_filter(self) -> None:
        """Load the scripts into the filter process; a script that fails to load raises
        ``ScriptLoadError`` (the server refuses to start, as Orthanc does)."""
        self.filter.start()

    def start_main(self) -> None:
        """Load the scripts into the main process and run ``Initialize``: called once the front ends
        are up, as Orthanc queues ``Initialize`` once the server is up."""
        self.main.start()

    def stop(self) -> None:
        """Run ``Finalize`` (the caller drained the events first), then stop both processes."""
        try:
            self.notify("Finalize", [])
        except SandboxError as exc:
            log.warning("Finalize failed: %s", exc)
        for sandbox in self.sandboxes.values():
            sandbox.stop()

    # -- the two directions of the gateway -----------------------------------------------------------
    def dispatch(self, name: str, args: list[Any], info: CallInfo) -> Any:
        """The one entry of every ``rpc`` from Lua: look up, run, and answer or raise for Lua."""
        function = BUILTINS.get(name)
        if function is None:
            raise BuiltinError(f"{name} is not a built-in of this server")
        context = CallContext(self.services, self.tenant, info.sandbox, info.function)
        return function(context, args)

    def call(self, name: str, args: list[Any], *, keep_strings: bool = False) -> CallResult:
        callback = CALLBACKS[name]
        return self.sandboxes[callback.role].call(name, to_lua(args), keep_strings=keep_strings)

    def defines(self, name: str) -> bool:
        """Whether the callback may be defined: the fast path that skips a round trip per instance.

        The filter process only ever runs the ``LuaScripts`` files, so its answer is exact (a filter
        installed later through execute-script is never used, as in Orthanc). In the main process,
        execute-script can define anything, so once it ran the answer is "maybe"."""
        sandbox = self.sandboxes[CALLBACKS[name].role]
        return name in sandbox.defined_functions() or (sandbox is self.main and self._execute_used)

    def notify(self, name: str, args: list[Any]) -> CallResult:
        """Run a NOTIFY callback. ``LuaError`` (the script failed) and ``SandboxError`` (the process
        died, timed out or is quarantined) propagate: the outbox dispatcher decides what they mean."""
        assert CALLBACKS[name].kind is Kind.NOTIFY, f"{name} is not a notification"
        return self.call(name, args)

    def call_filter(self, name: str, args: list[Any]) -> CallResult | None:
        """Run a FILTER callback; ``None`` when it is not defined (the filter accepts).

        A Lua error or a dead sandbox becomes an ``OrthancError`` (the caller refuses the input)."""
        assert CALLBACKS[name].kind is Kind.FILTER, f"{name} is not a filter"
        if not self.defines(name):
            return None
        try:
            try:
                result = self.call(name, args)
            except SandboxCrashed as exc:
                # The process died under this call (killed, or crashed on something else): it is
                # restarted at once, and the input gets one more chance before it is refused.
                log.warning("%s: the sandbox died during the call (%s); trying once more", name, exc)
                result = self.call(name, args)
        except LuaError as exc:
            raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, f"{name}: {exc}") from exc
        except SandboxError as exc:
            raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA,
                               f"{name} could not run ({exc}); refusing (fail closed)") from exc
        return result if result.defined else None

    def execute(self, source: bytes) -> list[str]:
        """``/tools/execute-script``: run a chunk in the main process; its globals persist."""
        self._execute_used = True
        return self.main.execute(source, "line")

    def status(self) -> list[dict[str, Any]]:
        return [sandbox.status() for sandbox in self.sandboxes.values()]

    def _on_log(self, sandbox: str, level: str, text: str) -> None:
        if level == "print":
            log.warning("Lua says: %s", text, extra={"tenant": self.tenant, "sandbox": sandbox})
        else:
            log.log(logging.getLevelName(level.upper()) if isinstance(logging.getLevelName(level.upper()), int)
                    else logging.INFO, "%s: %s", sandbox, text)


def _read_script(path: Path, base_dir: Path) -> ScriptSource:
    """The script's source, named by its path relative to the configuration file when it lies below
    it: Lua cuts chunk names at 60 characters, and error messages must still name the file."""
    try:
        name = path.relative_to(base_dir) if path.is_relative_to(base_dir) else path
        return ScriptSource(str(name), path.read_bytes())
    except OSError as exc:
        from broker.config import ConfigError
        raise ConfigError(f"Cannot read the Lua script {path} listed in 'LuaScripts': {exc.strerror}") from exc
