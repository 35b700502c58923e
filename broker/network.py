"""The modalities and peers the broker talks to, by symbolic name, as they are now.

The configuration gives the initial tables (``DicomModalities`` and ``OrthancPeers``, read by
``broker.config.network``); ``PUT``/``DELETE /modalities/{name}`` and ``/peers/{name}`` change them at
run time. The changes live in memory only, as in Orthanc without ``DicomModalitiesInDatabase``.

A calling AET or a Move Destination names the modalities whose AET is the same by ``same_aet``, the one
comparison of AETs (Orthanc's ``IsSameAETitle``): the configured AET as written, the one from the wire
without its padding, case ignored (ASCII, as Orthanc's ``ToLowerCase``) unless ``StrictAetComparison``.
``DicomCheckModalityHost`` is carried here too, for ``broker.dicom.permissions``, which applies it.
"""
from __future__ import annotations

import string
import threading
from collections.abc import Mapping

from broker.config.network import Modality, Peer
from broker.errors import ErrorCode, OrthancError

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


class NetworkRegistry:
    """The modalities and peers by symbolic name; safe to read and change from any thread.

    ``strict_aet_comparison`` is ``StrictAetComparison``; ``check_modality_host`` is
    ``DicomCheckModalityHost`` (a caller must also come from its modality's ``Host``)."""

    def __init__(self, modalities: Mapping[str, Modality] | None = None,
                 peers: Mapping[str, Peer] | None = None, *, strict_aet_comparison: bool = False,
                 check_modality_host: bool = False) -> None:
        self.strict_aet_comparison = strict_aet_comparison
        self.check_modality_host = check_modality_host
        self._lock = threading.Lock()
        self._modalities: dict[str, Modality] = dict(modalities or {})
        self._peers: dict[str, Peer] = dict(peers or {})

    # Modalities.
    def modalities(self) -> dict[str, Modality]:
        with self._lock:
            return dict(sorted(self._modalities.items()))

    def modality(self, name: str) -> Modality:
        """The modality, or Orthanc's error for an unknown name (``InexistentItem``, 404)."""
        with self._lock:
            found = self._modalities.get(name)
        if found is None:
            raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"No modality with symbolic name: {name}")
        return found

    def same_aet(self, received: str, configured: str) -> bool:
        """Whether an AET received on the wire (a calling AET, a Move Destination) is ``configured``."""
        received = received.strip()  # the padding of the wire, which DCMTK drops too
        if self.strict_aet_comparison:
            return received == configured
        return received.translate(_ASCII_LOWER) == configured.translate(_ASCII_LOWER)

    def modalities_with_aet(self, aet: str) -> list[tuple[str, Modality]]:
        """The modalities (name, modality) whose AET is ``aet`` (received on the wire), in name order,
        the order of Orthanc's lookups."""
        return [(name, modality) for name, modality in self.modalities().items() if self.same_aet(aet, modality.aet)]

    def has_modality(self, name: str) -> bool:
        with self._lock:
            return name in self._modalities

    def put_modality(self, name: str, modality: Modality) -> None:
        with self._lock:
            self._modalities[name] = modality

    def replace(self, modalities: Mapping[str, Modality], peers: Mapping[str, Peer]) -> None:
        """All the modalities and peers at once (another worker process changed them: docs/workers.md)."""
        with self._lock:
            self._modalities = dict(modalities)
            self._peers = dict(peers)

    def delete_modality(self, name: str) -> None:
        with self._lock:
            if self._modalities.pop(name, None) is None:
                raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Unknown DICOM modality with symbolic name: {name}")

    # Peers.
    def peers(self) -> dict[str, Peer]:
        with self._lock:
            return dict(sorted(self._peers.items()))

    def peer(self, name: str) -> Peer:
        """The peer, or Orthanc's error for an unknown name (``UnknownResource``, 404)."""
        with self._lock:
            found = self._peers.get(name)
        if found is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No peer with symbolic name: {name}")
        return found

    def has_peer(self, name: str) -> bool:
        with self._lock:
            return name in self._peers

    def put_peer(self, name: str, peer: Peer) -> None:
        with self._lock:
            self._peers[name] = peer

    def delete_peer(self, name: str) -> None:
        with self._lock:
            if self._peers.pop(name, None) is None:
                raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Unknown Orthanc peer: {name}")
