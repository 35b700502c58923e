"""Which peers may ask the DICOM server for what, as Orthanc's ``IsAllowedRequest``.

A kind of request (C-MOVE, C-GET, ...) is allowed from any calling AET when its ``DicomAlwaysAllow*``
option is on; otherwise only from a modality of ``DicomModalities`` with that AET whose ``Allow*``
permission is on. Orthanc refuses a request that is not allowed by aborting the association.
"""
from __future__ import annotations

from broker.network import NetworkRegistry


def is_allowed(network: NetworkRegistry, calling_aet: str, permission: str, *, always: bool) -> bool:
    """``permission`` is the ``Modality`` attribute (``"allow_move"``, ``"allow_get"``, ...)."""
    return always or any(getattr(modality, permission) for _, modality in network.modalities_with_aet(calling_aet))
