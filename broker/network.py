"""The modalities and peers the broker talks to, by symbolic name, as they are now.

The configuration gives the initial tables (``DicomModalities`` and ``OrthancPeers``, read by
``broker.config.network``); ``PUT``/``DELETE /modalities/{name}`` and ``/peers/{name}`` change them at
run time. The changes live in memory only, as in Orthanc without ``DicomModalitiesInDatabase``.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping

from broker.config.network import Modality, Peer
from broker.errors import ErrorCode, OrthancError


class NetworkRegistry:
    """The modalities and peers by symbolic name; safe to read and change from any thread."""

    def __init__(self, modalities: Mapping[str, Modality] | None = None,
                 peers: Mapping[str, Peer] | None = None) -> None:
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

    def modalities_with_aet(self, aet: str) -> list[tuple[str, Modality]]:
        """The modalities (name, modality) whose AET is ``aet``, in name order; compared without case and
        surrounding spaces, as Orthanc does without ``StrictAetComparison``."""
        wanted = aet.strip().upper()
        return [(name, modality) for name, modality in self.modalities().items()
                if modality.aet.strip().upper() == wanted]

    def has_modality(self, name: str) -> bool:
        with self._lock:
            return name in self._modalities

    def put_modality(self, name: str, modality: Modality) -> None:
        with self._lock:
            self._modalities[name] = modality

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
