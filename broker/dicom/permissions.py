"""Which peers may ask the DICOM server for what, as Orthanc's ``IsAllowedRequest``.

A kind of request (C-FIND, C-MOVE, C-GET, ...) is allowed from any caller when its ``DicomAlwaysAllow*``
option is on. Otherwise the modalities of ``DicomModalities`` with the calling AET decide (the AETs compared
by ``NetworkRegistry.same_aet``):

- none: refused;
- one: its ``Allow*`` permission, and, with ``DicomCheckModalityHost``, the caller's IP address must be its
  ``Host`` as written (a host name never matches, as in Orthanc);
- several: allowed when every one of them allows it, or, with ``DicomCheckModalityHost``, when one that
  allows it has the caller's address as ``Host``.

Orthanc refuses a request that is not allowed by aborting the association (``allowed_or_aborted``).

Before any request, ``DicomCheckCalledAet`` (``CalledAetCheck``) rejects an association that does not call
``DicomAet``, as Orthanc's ``IsMyAETitle``; and when no ``DicomAlwaysAllow*`` option is on (``Echo`` and
``Store`` are on by default), an association from an AET that no modality has is rejected
(``KnownCallerCheck``, as Orthanc's ``IsAllowedConnection``).
"""
from __future__ import annotations

import logging
from typing import Any

from pynetdicom import evt
from pynetdicom.events import EventHandlerType

from broker.network import NetworkRegistry

log = logging.getLogger("luabroker.dicom")

#: A-ASSOCIATE-RJ: rejected permanent, by the service user, called AE title not recognised (Orthanc's).
_CALLED_AET_NOT_RECOGNISED = (0x01, 0x01, 0x07)
#: A-ASSOCIATE-RJ: rejected permanent, by the service user, calling AE title not recognised (Orthanc's).
_CALLING_AET_NOT_RECOGNISED = (0x01, 0x01, 0x03)


def is_allowed(network: NetworkRegistry, calling_aet: str, permission: str, *, always: bool,
               remote_ip: str) -> bool:
    """``permission`` is the ``Modality`` attribute (``"allow_move"``, ``"allow_get"``, ...); ``remote_ip``
    the caller's address."""
    if always:
        return True
    modalities = [modality for _, modality in network.modalities_with_aet(calling_aet)]
    check_host = network.check_modality_host
    if len(modalities) == 1:
        only = modalities[0]
        return (not check_host or only.host == remote_ip) and bool(getattr(only, permission))
    allowing = [modality for modality in modalities if getattr(modality, permission)]
    if check_host and any(modality.host == remote_ip for modality in allowing):
        return True
    return bool(modalities) and len(allowing) == len(modalities)


def allowed_or_aborted(event: evt.Event, network: NetworkRegistry, permission: str, *, always: bool,
                       option: str, label: str) -> bool:
    """Whether the request of ``event`` is allowed (``is_allowed``); when it is not, say why and abort
    the association, as Orthanc does. ``option`` (``DicomAlwaysAllowFind``, ...) and ``label``
    (``C-FIND``, ...) name the request in the log."""
    assoc = event.assoc
    remote_aet, remote_ip = assoc.requestor.ae_title, assoc.requestor.address
    if is_allowed(network, remote_aet, permission, always=always, remote_ip=remote_ip):
        return True
    log.warning("%s from AET %s on IP %s refused: not allowed by DicomModalities (nor %s); aborting the association",
                label, remote_aet, remote_ip, option)
    assoc.abort()
    return False


class _AssociationCheck:
    """A check of each association request before any request, which rejects it as Orthanc does;
    ``handlers`` is empty when ``enabled`` is false."""

    def __init__(self, network: NetworkRegistry, enabled: bool) -> None:
        self.network = network
        self.enabled = enabled

    @property
    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_REQUESTED, self.on_requested)] if self.enabled else []

    def refusal(self, request: Any) -> tuple[tuple[int, int, int], str] | None:
        """The A-ASSOCIATE-RJ (result, source, reason) and why, for a request to refuse; else None."""
        raise NotImplementedError

    def on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        if request is None or assoc.is_rejected or assoc.is_aborted:  # refused already (no slot)
            return
        refused = self.refusal(request)
        if refused is None:
            return
        log.warning("Association from %s at %s rejected: %s", request.calling_ae_title, assoc.requestor.address,
                    refused[1])
        assoc.acse.send_reject(*refused[0])
        assoc.kill()


class KnownCallerCheck(_AssociationCheck):
    """Orthanc's ``IsAllowedConnection``: with every ``DicomAlwaysAllow*`` option off (``enabled``), an
    association from a calling AET that no modality of ``DicomModalities`` has is rejected before any
    request."""

    def refusal(self, request: Any) -> tuple[tuple[int, int, int], str] | None:
        if self.network.modalities_with_aet(str(request.calling_ae_title)):
            return None
        return _CALLING_AET_NOT_RECOGNISED, "no modality of DicomModalities has this AET, and every " \
                                            "DicomAlwaysAllow* option is off"


class CalledAetCheck(_AssociationCheck):
    """``DicomCheckCalledAet``: the association request must call one of ``aets`` (compared by
    ``same_aet``): the server's ``DicomAet``, or a tenant's ``DicomAets``."""

    def __init__(self, network: NetworkRegistry, aets: tuple[str, ...], enabled: bool) -> None:
        super().__init__(network, enabled)
        self.aets = aets

    def refusal(self, request: Any) -> tuple[tuple[int, int, int], str] | None:
        if any(self.network.same_aet(str(request.called_ae_title), aet) for aet in self.aets):
            return None
        return _CALLED_AET_NOT_RECOGNISED, f"it calls {request.called_ae_title}, not {' or '.join(self.aets)} " \
                                           "(DicomCheckCalledAet)"
