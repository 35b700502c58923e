"""``/tools/...``: the server settings that Orthanc lets clients change at run time, until the server
stops (none of them is written back to the configuration, as in Orthanc).

* ``/tools/default-encoding``: GET the name, PUT a name (any case) → the name;
* ``/tools/accepted-transfer-syntaxes``: GET the list; PUT a JSON list of patterns, or one pattern
  (``*`` and ``?``), as JSON or plain text → the list of syntaxes now accepted by the C-STORE SCP
  (among the 42 Orthanc 1.10 knows);
* ``/tools/unknown-sop-class-accepted``: GET ``0`` or ``1``; PUT ``0``/``1``/``true``/``false``;
* ``/tools/log-level`` and ``/tools/log-level-{category}``: ``default``, ``verbose`` or ``trace``
  (Python's WARNING, INFO and DEBUG) for every category, or for one (``LOG_CATEGORIES``); GET of the
  whole answers the most verbose category.

And the read-only ones: ``/tools/now``, ``/tools/now-local``, ``/tools/dicom-conformance``, ``/plugins``
(none), ``POST /tools/invalidate-tags`` (nothing is cached: a no-op).

With several worker processes (issue 12) these become shared settings; today they live in the
process that serves the call.
"""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from broker.core.encodings import encoding_named
from broker.core.transfer_syntaxes import matching_transfer_syntaxes
from broker.errors import ErrorCode, OrthancError
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse, boolean_body
from broker.services import Services

routes = RouteTable()


def _text(request: RestRequest) -> str:
    return request.body.decode("utf-8", "replace")


@routes.get("/tools/default-encoding")
def get_default_encoding(request: RestRequest, services: Services) -> RestResponse:
    return RestResponse.text(services.store.default_encoding.name)


@routes.put("/tools/default-encoding", coordinator=True)
def put_default_encoding(request: RestRequest, services: Services) -> RestResponse:
    """Files stored before keep the main tags they were indexed with."""
    encoding = encoding_named(_text(request))
    services.store.default_encoding = encoding
    services.settings_changed()
    return RestResponse.text(encoding.name)


@routes.get("/tools/accepted-transfer-syntaxes")
def get_accepted_transfer_syntaxes(request: RestRequest, services: Services) -> Any:
    return list(services.dicom_contexts.transfer_syntaxes)


def _lenient_json(text: str) -> Any:
    """The JSON value at the start of ``text``, as JsonCpp reads it in Orthanc (trailing characters
    ignored: ``1.2.840.10008.1.*`` is the number 1.2), or ``text`` itself when none is there."""
    try:
        value, _ = json.JSONDecoder().raw_decode(text.strip())
    except ValueError:
        return text
    return value


@routes.put("/tools/accepted-transfer-syntaxes", coordinator=True)
def put_accepted_transfer_syntaxes(request: RestRequest, services: Services) -> Any:
    """The body is read as Orthanc reads it: JSON if it starts with a JSON value, a plain pattern
    otherwise; a JSON value that is neither a string nor a list of strings is refused."""
    body = _lenient_json(_text(request))
    patterns = [body] if isinstance(body, str) else body
    if not isinstance(patterns, list) or not all(isinstance(pattern, str) for pattern in patterns):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Expected a string or a list of strings")
    services.dicom_contexts.transfer_syntaxes = matching_transfer_syntaxes(patterns)
    services.settings_changed()
    return list(services.dicom_contexts.transfer_syntaxes)


@routes.get("/tools/unknown-sop-class-accepted")
def get_unknown_sop_class_accepted(request: RestRequest, services: Services) -> RestResponse:
    return RestResponse.text("1" if services.dicom_contexts.unknown_sop_class_accepted else "0")


@routes.put("/tools/unknown-sop-class-accepted", coordinator=True)
def put_unknown_sop_class_accepted(request: RestRequest, services: Services) -> RestResponse:
    services.dicom_contexts.unknown_sop_class_accepted = boolean_body(request)
    services.settings_changed()
    return RestResponse.text("")


#: Orthanc's log categories, and the Python loggers of each (the first one answers GET).
LOG_CATEGORIES: dict[str, tuple[str, ...]] = {
    "generic": ("luabroker", "sandbox"),
    "http": ("luabroker.http", "uvicorn"),
    "dicom": ("luabroker.dicom", "pynetdicom"),
    "plugins": ("luabroker.plugins",),
    "sqlite": ("luabroker.index",),
    "lua": ("luabroker.lua", "luabroker.scripting"),
    "jobs": ("luabroker.jobs",),
}
_VERBOSITIES = {"default": logging.WARNING, "verbose": logging.INFO, "trace": logging.DEBUG}


def _verbosity(category: str) -> int:
    return logging.getLogger(LOG_CATEGORIES[category][0]).getEffectiveLevel()


def _verbosity_name(level: int) -> str:
    return "trace" if level <= logging.DEBUG else "verbose" if level <= logging.INFO else "default"


def _set_verbosity(categories: list[str], request: RestRequest, services: Services) -> RestResponse:
    services.check_owns_server("Changing the log level")
    name = _text(request)
    if name not in _VERBOSITIES:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                           f'Verbosity can be "default", "verbose" or "trace": {name}')
    for category in categories:
        for logger in LOG_CATEGORIES[category]:
            logging.getLogger(logger).setLevel(_VERBOSITIES[name])
    services.settings_changed()
    return RestResponse.text("")


@routes.get("/tools/log-level")
def get_log_level(request: RestRequest, services: Services) -> RestResponse:
    return RestResponse.text(_verbosity_name(min(_verbosity(category) for category in LOG_CATEGORIES)))


@routes.put("/tools/log-level", coordinator=True)
def put_log_level(request: RestRequest, services: Services) -> RestResponse:
    return _set_verbosity(list(LOG_CATEGORIES), request, services)


def _category_routes(category: str) -> None:
    def get_category(request: RestRequest, services: Services) -> RestResponse:
        return RestResponse.text(_verbosity_name(_verbosity(category)))

    def put_category(request: RestRequest, services: Services) -> RestResponse:
        return _set_verbosity([category], request, services)

    routes.add("GET", f"/tools/log-level-{category}", get_category)
    routes.add("PUT", f"/tools/log-level-{category}", put_category, coordinator=True)


for _category in LOG_CATEGORIES:
    _category_routes(_category)


@routes.get("/tools/now", inline=True)
def get_now(request: RestRequest, services: Services) -> RestResponse:
    return RestResponse.text(datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))


@routes.get("/tools/now-local", inline=True)
def get_now_local(request: RestRequest, services: Services) -> RestResponse:
    return RestResponse.text(datetime.now().strftime("%Y%m%dT%H%M%S"))


@routes.get("/tools/dicom-conformance")
def get_dicom_conformance(request: RestRequest, services: Services) -> RestResponse:
    return RestResponse.text(services.dicom_contexts.conformance_statement())


@routes.post("/tools/invalidate-tags")
def invalidate_tags(request: RestRequest, services: Services) -> RestResponse:
    """Orthanc drops its cache of the tags of stored files; luabroker reads them from the file."""
    return RestResponse.text("")


@routes.get("/plugins")
def get_plugins(request: RestRequest, services: Services) -> Any:
    return []
