"""The one entry of every ``rpc`` from Lua: look the built-in up, run it, answer or raise for Lua.

Writes made during a journaled delivery go through its journal (replayed, not applied again, when a
cut attempt of the same delivery already applied them; see ``broker.scripting.journal``). Every call
of an audited built-in that runs (a replayed write does not) is written to the audit log.
"""
from __future__ import annotations

import logging
from typing import Any

from broker.scripting import journal as journals
from broker.scripting.builtins import AUDITED_BUILTINS, BUILTINS, WRITING_BUILTINS, CallContext
from broker.scripting.redaction import redact
from broker.scripting.status import Meter
from sandbox import BuiltinError, CallInfo

log = logging.getLogger("luabroker.scripting")

#: Audited built-ins whose second argument is not a body (headers).
_NO_BODY = frozenset({"HttpGet", "HttpDelete", "RestApiDelete"})


class BuiltinDispatcher:
    """The ``rpc_handler`` of every sandbox process of one script set."""

    def __init__(self, services: Any, tenant: str, meter: Meter) -> None:
        self.services = services
        self.tenant = tenant
        self.meter = meter

    def __call__(self, name: str, args: list[Any], info: CallInfo) -> Any:
        function = BUILTINS.get(name)
        if function is None:
            raise BuiltinError(f"{name} is not a built-in of this server")
        context = CallContext(self.services, self.tenant, info.sandbox, info.function)
        journal = journals.active()
        # During an event the journal knows the callback (_CallWithJob runs several under its own name).
        callback = journal.callback if journal is not None and journal.callback else info.function

        def run() -> Any:
            if name in AUDITED_BUILTINS:
                return self._audited(name, function, args, info.sandbox, callback, context)
            return function(context, args)

        if journal is None or name not in WRITING_BUILTINS:
            return run()

        def replayed(write: Any) -> None:
            self.meter.count("replayed_writes", callback)
            log.warning("%s: %s was applied by the attempt that was cut; not applied again", callback,
                        write.label, extra={"tenant": self.tenant, "sandbox": info.sandbox})

        return journal.run(name, args, run, replayed)

    def _audited(self, name: str, function: Any, args: list[Any], sandbox: str, callback: str,
                 context: CallContext) -> Any:
        """Run a privileged built-in and write it to the audit log: which, on what (a URL without its
        password), the size of the body, who (the callback, the process and its version), and how it
        ended (``ok``; ``failed`` when it answered nil or false, as a refused call does; ``error``)."""
        outcome = "error"
        try:
            value = function(context, args)
            outcome = "failed" if value is None or value is False else "ok"
            return value
        finally:
            body = args[1] if len(args) > 1 and isinstance(args[1], (str, bytes)) and name not in _NO_BODY else None
            self.meter.audit(self.tenant, f"script.{name}", f"script:{callback}",
                             Target=redact(args[0]) if args and isinstance(args[0], str) else None,
                             Bytes=len(body) if body is not None else None, Sandbox=sandbox, Outcome=outcome)
