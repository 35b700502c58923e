"""``/audit``: the audit log (``broker.core.audit``; docs/audit.md), to read, export as JSON lines and
verify. When ``LuaAdminUsers`` is set, only those users read it (as they alone change the engine)."""
from __future__ import annotations

from typing import Any

from broker.core.audit import export_lines
from broker.errors import ErrorCode, OrthancError
from broker.rest.lua import require_lua_admin
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable()


@routes.get("/audit")
def audit_entries(request: RestRequest, services: Services) -> Any:
    """The entries, oldest first: ``since`` (a ``Seq``, 0 by default), ``limit`` (all by default) and
    ``tenant`` (every tenant's by default) narrow them."""
    require_lua_admin(request, services)
    return services.audit.entries(request.query.get("tenant"), _number(request, "since") or 0,
                                  _number(request, "limit"))


@routes.get("/audit/export")
def audit_export(request: RestRequest, services: Services) -> RestResponse:
    """The same entries as JSON lines, each with its ``Hash``: ``python -m broker.core.audit`` verifies
    such a file."""
    require_lua_admin(request, services)
    entries = services.audit.entries(request.query.get("tenant"), _number(request, "since") or 0)
    response = RestResponse(200, "".join(export_lines(entries)).encode(), "application/x-ndjson")
    response.headers["Content-Disposition"] = 'filename="audit.jsonl"'
    return response


@routes.get("/audit/verify")
def audit_verify(request: RestRequest, services: Services) -> Any:
    """Whether the chain holds: the number of entries that do, the head hash, and the first entry
    that does not, with why."""
    require_lua_admin(request, services)
    return services.audit.verify().to_json()


def _number(request: RestRequest, name: str) -> int | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"'{name}' must be a non-negative integer")
    return int(value)
