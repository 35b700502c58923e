"""The filters that guard the doors: what an instance or an HTTP request must pass, and what a C-FIND
(on the index or on the worklists) asks or, sent by the C-FIND SCU, is asked.

Return types are checked as Orthanc checks them (spec section 2): a predicate must return a boolean
(otherwise ``NotLuaPredicate``, 2034), ``ReceivedCStoreInstanceFilter`` a number (otherwise
``LuaReturnsNoString``, 2035). ``ReceivedCStoreInstanceFilter`` follows the meaning Orthanc 1.10.0
announced (0 accepts, anything else is the DIMSE status answered), not the inverted 1.10–1.12.4 code;
docs/lua-api.md says so.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.dataset import Dataset

from broker.core.encodings import Encoding
from broker.core.origin import RequestOrigin
from broker.core.tags import parse_tag
from broker.core.worklist_query import dataset_from_json, dataset_json
from broker.errors import ErrorCode, OrthancError, RefusedByFilter
from broker.scripting.bridge import ScriptSet
from broker.scripting.callbacks import CALLBACKS
from broker.scripting.redaction import hide_credentials


def _predicate(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OrthancError(ErrorCode.NOT_LUA_PREDICATE, f"{name} must return true or false, not {value!r}")
    return value


class InstanceFilter:
    """The store's ``instance_filter``: runs in the filter process, before anything is written."""

    def __init__(self, scripts: ScriptSet) -> None:
        self.scripts = scripts

    def __call__(self, incoming: Any) -> bool:
        scripts = self.scripts
        is_dicom = incoming.origin.request_origin is RequestOrigin.DICOM_PROTOCOL
        general = scripts.defines("ReceivedInstanceFilter")
        cstore = is_dicom and scripts.defines("ReceivedCStoreInstanceFilter")
        if not (general or cstore):
            return True
        # One builder for both filters: they get the same arguments.
        args = CALLBACKS["ReceivedInstanceFilter"].arguments(incoming.simplified_tags(), incoming.origin.to_lua(),
                                                             incoming.has_pixel_data, incoming.transfer_syntax_uid)
        if general:
            result = scripts.call_filter("ReceivedInstanceFilter", args)
            if result is not None and not _predicate("ReceivedInstanceFilter", result.value):
                return False
        if cstore:
            result = scripts.call_filter("ReceivedCStoreInstanceFilter", args)
            if result is not None:
                status = result.value
                if isinstance(status, bool) or not isinstance(status, (int, float)):
                    raise OrthancError(ErrorCode.LUA_RETURNS_NO_STRING,
                                       f"ReceivedCStoreInstanceFilter must return a number, not {status!r}")
                if int(status) != 0:
                    raise RefusedByFilter(int(status) & 0xFFFF)
        return True


def http_request_allowed(scripts: ScriptSet, method: str, uri: str, ip: str, username: str,
                         headers: Iterable[tuple[str, str]]) -> bool:
    """``IncomingHttpRequestFilter``: True to serve the request, False to answer 403.

    With ``AuthenticationEnabled`` the ``Authorization`` header is a login the broker has checked: it
    holds a registered user's password, and the filter gets the user name instead (``username``), so
    the header's credentials are hidden unless ``LuaExposeSecrets`` (Orthanc passes them)."""
    if not scripts.defines("IncomingHttpRequestFilter"):
        return True
    config = scripts.services.config
    if config.authentication_enabled and not config.lua_expose_secrets:
        headers = [(name, hide_credentials(value) if name.lower() == "authorization" else value)
                   for name, value in headers]
    args = CALLBACKS["IncomingHttpRequestFilter"].arguments(method, uri, ip, username, headers)
    result = scripts.call_filter("IncomingHttpRequestFilter", args)
    return True if result is None else _predicate("IncomingHttpRequestFilter", result.value)


def filtered_find_query(scripts: ScriptSet, query: Mapping[int, str], remote_ip: str, remote_aet: str,
                        called_aet: str, manufacturer: str) -> dict[int, str] | None:
    """``IncomingFindRequestFilter``: the query that replaces ``query``, or None when the filter is not
    defined (or, under the ``open`` failure policy, could not run)."""
    return _replaced_query(scripts, "IncomingFindRequestFilter", query, remote_ip, remote_aet, called_aet,
                           manufacturer)


def filtered_worklist_query(scripts: ScriptSet, query: Dataset, remote_ip: str, remote_aet: str, called_aet: str,
                            manufacturer: str, default_encoding: Encoding) -> Dataset | None:
    """``IncomingWorklistRequestFilter``: the query that replaces ``query``, rebuilt from the table the
    script returns as Orthanc rebuilds it (``dataset_from_json``: anything but a table of tags to strings
    and lists of such tables is ``LuaBadOutput``), or None as for ``filtered_find_query``."""
    name = "IncomingWorklistRequestFilter"
    if not scripts.defines(name):
        return None
    result = scripts.call_filter(name, CALLBACKS[name].arguments(dataset_json(query), remote_ip, remote_aet,
                                                                 called_aet, manufacturer))
    if result is None:
        return None
    try:
        return dataset_from_json(result.value, default_encoding)
    except OrthancError as exc:
        raise OrthancError(ErrorCode.LUA_BAD_OUTPUT, f"{name}: {exc.details or exc.message}") from None


def filtered_outgoing_query(scripts: ScriptSet, query: Mapping[int, str], remote_aet: str) -> dict[int, str] | None:
    """``OutgoingFindRequestFilter``, before the C-FIND SCU sends ``query`` to the AET ``remote_aet``:
    the query that replaces it, or None as for ``filtered_find_query``."""
    return _replaced_query(scripts, "OutgoingFindRequestFilter", query, remote_aet)


def _replaced_query(scripts: ScriptSet, name: str, *arguments: Any) -> dict[int, str] | None:
    """Run the find filter ``name`` and read its answer by Orthanc's rules: a table (an empty one is an
    empty query) whose keys are tags, in hexadecimal or by name, and whose values are strings; anything
    else is ``LuaBadOutput``."""
    if not scripts.defines(name):
        return None
    result = scripts.call_filter(name, CALLBACKS[name].arguments(*arguments))
    if result is None:
        return None
    table = result.value
    if table == []:  # an empty Lua table
        return {}
    if not isinstance(table, dict):
        raise OrthancError(ErrorCode.LUA_BAD_OUTPUT, f"{name}: the script must return a table, not {table!r}")
    if not all(isinstance(value, str) for value in table.values()):
        raise OrthancError(ErrorCode.LUA_BAD_OUTPUT,
                           f"{name}: the script must return a table mapping names of DICOM tags to strings")
    return {parse_tag(str(key)): value for key, value in table.items()}
