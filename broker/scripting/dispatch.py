"""The one entry of every ``rpc`` from Lua: look the built-in up, run it, answer or raise for Lua.

Writes made during a journaled delivery go through its journal (replayed, not applied again, when a
cut attempt of the same delivery already applied them; see ``broker.scripting.journal``).
"""
from __future__ import annotations

import logging
from typing import Any

from broker.scripting import journal as journals
from broker.scripting.builtins import BUILTINS, WRITING_BUILTINS, CallContext
from broker.scripting.status import Meter
from sandbox import BuiltinError, CallInfo

log = logging.getLogger("luabroker.scripting")


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
        if journal is None or name not in WRITING_BUILTINS:
            return function(context, args)

        def replayed(write: Any) -> None:
            callback = journal.callback or info.function
            self.meter.count("replayed_writes", callback)
            log.warning("%s: %s was applied by the attempt that was cut; not applied again", callback,
                        write.label, extra={"tenant": self.tenant, "sandbox": info.sandbox})

        return journal.run(name, args, lambda: function(context, args), replayed)
