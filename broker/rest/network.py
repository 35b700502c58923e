"""REST endpoints of the remote ends: ``/modalities`` and ``/peers`` (Orthanc 1.10's answers).

``GET /modalities`` lists the symbolic names (``?expand``: each modality's configuration);
``GET /modalities/{name}`` lists what can be done with it (the sub-routes this server has; an unknown
name is a bare 404 there, Orthanc's error 7 elsewhere);
``GET /modalities/{name}/configuration``; ``PUT /modalities/{name}`` with any form accepted in the
configuration file; ``DELETE /modalities/{name}``; ``POST /modalities/{name}/echo`` (200 ``{}``) and
``POST /tools/dicom-echo`` (to a modality given in the body), both followed by a C-FIND with
``"CheckFind": true``. The same
for ``/peers``, whose configuration never shows passwords or header values, plus
``GET /peers/{name}/system``. Changes made here live until the server stops, as in Orthanc. A script
(``RestApi*``) gets the peers redacted as well: no password in a URL, no secret user property.

Handlers need ``services.network`` (``NetworkRegistry``), ``services.scu`` (``StoreScu``) and
``services.peers`` (``PeerClient``).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydicom.uid import generate_uid

from broker.config.network import Modality, Peer
from broker.core.dicom_file import peek_meta
from broker.core.levels import Level
from broker.core.tags import STUDY_INSTANCE_UID
from broker.dicom.scu import DicomNetworkError
from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.json_fields import read_boolean, read_unsigned
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.scripting.redaction import shown_to
from broker.services import Services

routes = RouteTable()


def _children(services: Services, prefix: str) -> list[str]:
    """The sub-routes of ``prefix/{name}/…`` that the server has (Orthanc lists its own)."""
    head = prefix + "/{name}/"
    names = {route.pattern[len(head):] for route in services.rest.routes if route.pattern.startswith(head)}
    return sorted(name for name in names if name and "/" not in name)


def _parse_body(request: RestRequest, parse: Callable[[Any], Any]) -> Any:
    try:
        value = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The body is not valid JSON") from None
    return parse(value)


def _empty() -> RestResponse:
    return RestResponse.text("")


# Modalities.
@routes.get("/modalities")
def list_modalities(request: RestRequest, services: Services) -> Any:
    modalities = services.network.modalities()
    if "expand" in request.query:
        return {name: modality.to_json() for name, modality in modalities.items()}
    return list(modalities)


@routes.get("/modalities/{name}")
def get_modality(request: RestRequest, services: Services) -> Any:
    if not services.network.has_modality(request.params["name"]):
        raise BareHttpStatus(404, f"Unknown modality: {request.params['name']}")
    return _children(services, "/modalities")


@routes.get("/modalities/{name}/configuration")
def get_modality_configuration(request: RestRequest, services: Services) -> Any:
    return services.network.modality(request.params["name"]).to_json()


@routes.put("/modalities/{name}", coordinator=True)
def put_modality(request: RestRequest, services: Services) -> RestResponse:
    services.network.put_modality(request.params["name"], _parse_body(request, Modality.parse))
    services.settings_changed()
    return _empty()


@routes.delete("/modalities/{name}", coordinator=True)
def delete_modality(request: RestRequest, services: Services) -> RestResponse:
    services.network.delete_modality(request.params["name"])
    services.settings_changed()
    return _empty()


@routes.post("/modalities/{name}/echo")
def echo_modality(request: RestRequest, services: Services) -> Any:
    """C-ECHO; the body may be ``{"Timeout": seconds}``. 200 ``{}``, or error 9 saying what failed."""
    return _echo(services, services.network.modality(request.params["name"]), _echo_options(request.body))


@routes.post("/tools/dicom-echo")
def echo_any(request: RestRequest, services: Services) -> Any:
    """C-ECHO to a modality given in the body, in any form of ``DicomModalities`` (with ``Timeout``)."""
    body = _parse_body(request, lambda value: value)
    return _echo(services, Modality.parse(body), body if isinstance(body, dict) else {})


@routes.post("/modalities/{name}/store-straight")
def store_straight(request: RestRequest, services: Services) -> Any:
    """C-STORE of the DICOM file in the body, which is not stored here (Orthanc 1.6.1); the answer
    names what was sent."""
    modality = services.network.modality(request.params["name"])
    if peek_meta(request.body) is None:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The body is not a DICOM file with its file meta information")
    try:
        report = services.scu.store(modality, [request.body]).check()
    except DicomNetworkError as exc:
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL, exc.details or exc.message) from None
    [result] = report.results
    return {"SOPClassUID": result.sop_class_uid, "SOPInstanceUID": result.sop_instance_uid}


def _echo_options(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        options = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The body is not valid JSON") from None
    return options if isinstance(options, dict) else {}


def _echo(services: Services, modality: Modality, options: dict[str, Any]) -> dict[str, Any]:
    """C-ECHO, then, with ``"CheckFind": true`` (default: ``DicomEchoChecksFind``), a C-FIND at the study
    level for a new Study Instance UID, which fails when the modality does not let us query it."""
    timeout = None
    if "Timeout" in options:
        timeout = read_unsigned(options, "Timeout") or None
    check_find = (read_boolean(options, "CheckFind") if "CheckFind" in options
                  else services.config.network.dicom.echo_checks_find)
    services.scu.echo(modality, timeout=timeout)
    if check_find:
        services.find_scu.find(modality, Level.STUDY, {STUDY_INSTANCE_UID: generate_uid()}, normalize=False,
                               encoding=services.store.default_encoding, timeout=timeout)
    return {}


# Peers.
@routes.get("/peers")
def list_peers(request: RestRequest, services: Services) -> Any:
    peers = services.network.peers()
    if "expand" in request.query:
        return shown_to(request.origin, services.config, {name: peer.public_json() for name, peer in peers.items()})
    return list(peers)


@routes.get("/peers/{name}")
def get_peer(request: RestRequest, services: Services) -> Any:
    if not services.network.has_peer(request.params["name"]):
        raise BareHttpStatus(404, f"Unknown peer: {request.params['name']}")
    return _children(services, "/peers")


@routes.get("/peers/{name}/configuration")
def get_peer_configuration(request: RestRequest, services: Services) -> Any:
    return shown_to(request.origin, services.config, services.network.peer(request.params["name"]).public_json())


@routes.put("/peers/{name}", coordinator=True)
def put_peer(request: RestRequest, services: Services) -> RestResponse:
    services.network.put_peer(request.params["name"], _parse_body(request, Peer.parse))
    services.settings_changed()
    return _empty()


@routes.delete("/peers/{name}", coordinator=True)
def delete_peer(request: RestRequest, services: Services) -> RestResponse:
    services.network.delete_peer(request.params["name"])
    services.settings_changed()
    return _empty()


@routes.get("/peers/{name}/system")
def get_peer_system(request: RestRequest, services: Services) -> Any:
    return services.peers.system(services.network.peer(request.params["name"]))
