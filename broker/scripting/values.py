"""JSON values on their way to Lua, converted as Orthanc's ``PushJson`` does (spec section 1a)."""
from __future__ import annotations

from typing import Any


def to_lua(value: Any) -> Any:
    """Orthanc's JSON → Lua rules, applied before msgpack.

    A JSON null becomes nil, so null-valued keys are absent; every number becomes a Lua float, as
    Orthanc pushes them (``lua_pushnumber``: ``2`` reads as ``2.0`` in Lua 5.3 and later).
    """
    if isinstance(value, dict):
        return {str(k): to_lua(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [to_lua(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def lua_tostring(value: Any) -> str:
    """A number as Lua's ``tostring`` writes it (``%.14g`` for floats, ``.0`` kept for integral ones)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan" if str(value) == "nan" else "-nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        text = f"{value:.14g}"
        return text + ".0" if all(c not in text for c in ".en") else text
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)
