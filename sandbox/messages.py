"""The messages of the wire, one dataclass each, decoded by a single ``match``.

broker → Lua:  ``["call", id, function, args, opts]``, ``["load", id, source, chunkname]``,
               ``["reply", id, ok, value]`` or ``["reply", id, false, reason, {"stop": true}]``
Lua → broker:  ``["ready", info]``, ``["rpc", id, builtin, args]``,
               ``["result", id, ok, value]`` or ``["result", id, ok, value, extra]``,
               ``["log", level, text]``

``opts`` of a call is a map: ``keepStrings`` (bool, how the first return value is converted, Orthanc's
``GetJson`` rule) and ``cpu`` (soft CPU-seconds limit of this call). The ``value`` of a successful
``result`` is ``{"defined": bool, "value": v}`` for a call, and ``{"functions": [names]}`` for a load
(the global functions the scripts defined, once the chunk ran). A failed ``result`` carries the error
text.

A ``reply`` with ``{"stop": true}`` ends the call that made the rpc: the budget of its top-level call
is spent (``sandbox.budget``); the shim raises ``reason`` as a kill that no ``pcall`` catches.

The fifth element of a ``result``, ``extra``, is a map present only when it has something to say.
``functions`` (of a call, ok or not, or of a load that failed) is there when the call changed the
set of global functions the scripts defined (``function OnStoredInstance() ... end`` run inside a
callback or ``Initialize``): it carries the complete new list, sorted. ``restart`` (a reason) is there
when the Lua heap is still over its cap once the call is over: the scripts hold more than the memory
limit in their globals, and the process must be restarted. Names of the shim's own globals
(``print``, the built-ins, the libraries) are never listed. The list may keep a name whose global was
since overwritten by a non-function (until the next change): the broker then calls it and gets
``defined: false``; it never misses a function that exists.

``info`` of ``ready`` is ``{"lua": version, "builtins": [names], "trusted": bool}``.
A ``log`` with level ``"print"`` is a line written by the script's ``print``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.framing import ProtocolError


@dataclass(frozen=True)
class Ready:
    info: dict[str, Any]


@dataclass(frozen=True)
class Rpc:
    id: int
    builtin: str
    args: list[Any]


@dataclass(frozen=True)
class Result:
    id: int
    ok: bool
    value: Any
    #: The new list of script-defined global functions, when the call changed it (else ``None``).
    functions: tuple[str, ...] | None = None
    #: Why the process must be restarted after this call (the heap is over its cap), else ``None``.
    restart: str | None = None


@dataclass(frozen=True)
class Log:
    level: str
    text: str


Incoming = Ready | Rpc | Result | Log


def call_message(call_id: int, function: str, args: list[Any], opts: dict[str, Any]) -> list[Any]:
    return ["call", call_id, function, args, opts]


def load_message(call_id: int, source: str | bytes, chunkname: str) -> list[Any]:
    return ["load", call_id, source, chunkname]


def reply_message(rpc_id: int, ok: bool, value: Any, *, stop: bool = False) -> list[Any]:
    return ["reply", rpc_id, ok, value, {"stop": True}] if stop else ["reply", rpc_id, ok, value]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")


def _valid_extra(extra: dict[Any, Any]) -> bool:
    functions, restart = extra.get("functions"), extra.get("restart")
    return (bool(extra) and set(extra) <= {"functions", "restart"}
            and (functions is None or (isinstance(functions, list) and all(isinstance(f, str) for f in functions)))
            and (restart is None or isinstance(restart, (str, bytes))))


def decode_incoming(message: Any) -> Incoming:
    """Validate the shape of a message from the child (untrusted) and type it."""
    match message:
        case ["ready", dict() as info]:
            return Ready(info)
        case ["rpc", int() as rpc_id, str() as builtin, list() as args]:
            return Rpc(rpc_id, builtin, args)
        case ["result", int() as call_id, bool() as ok, value]:
            return Result(call_id, ok, value)
        case ["result", int() as call_id, bool() as ok, value, dict() as extra] if _valid_extra(extra):
            functions = extra.get("functions")
            restart = extra.get("restart")
            return Result(call_id, ok, value, None if functions is None else tuple(functions),
                          None if restart is None else _text(restart))
        case ["log", str() as level, str() | bytes() as text]:
            return Log(level, _text(text))
    raise ProtocolError(f"unexpected message from the sandbox: {str(message)[:200]}")
