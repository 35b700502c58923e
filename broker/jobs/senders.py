"""The one place where jobs reach the network clients: ``services.network`` (the modalities and peers
by symbolic name, ``broker.network``), ``services.scu`` (C-STORE SCU, ``broker.dicom.scu``),
``services.retrieve_scu`` (C-MOVE and C-GET SCU, ``broker.dicom.retrieve_scu``) and ``services.peers``
(HTTP to Orthanc peers, ``broker.peers``).

Every failed send becomes a ``TransferError``, transient or not, so that the engine applies one retry
policy to every kind of receiver; a failed association is transient. Tests give jobs a fake with the
methods they use.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from broker.config.network import Modality
from broker.dicom.scu import DicomNetworkError
from broker.errors import ErrorCode, OrthancError
from broker.jobs.model import TransferError
from broker.services import Services


class Senders(Protocol):
    def modality(self, name: str) -> Any:
        """The modality (``aet``, ``local_aet``, ...), or ``OrthancError`` for an unknown name."""

    def peer(self, name: str) -> Any:
        """The peer (``url``, ...), or ``OrthancError`` for an unknown name."""

    def store_to_modality(self, name: str, data: bytes, local_aet: str | None,
                          move_originator: tuple[str, int] | None = None) -> None:
        """C-STORE one DICOM file (a sub-operation of the C-MOVE ``move_originator`` = (AET, message
        id), if any); ``TransferError`` if it did not reach the modality."""

    def store_to_peer(self, name: str, data: bytes, compress: bool = False) -> None:
        """POST one DICOM file to ``<peer>/instances`` (gzipped with ``compress``); ``TransferError``
        if it did not get there."""

    def move(self, modality: Modality, target_aet: str, request: Mapping[int, str | None], local_aet: str,
             timeout: float | None) -> None:
        """C-MOVE of the resource ``request`` names to ``target_aet``; ``TransferError`` when the
        association fails, ``OrthancError`` when the modality refused."""

    def get(self, modality: Modality, request: Mapping[int, str | None], local_aet: str,
            timeout: float | None) -> int:
        """C-GET of the resource ``request`` names; the number of instances stored. Errors as ``move``."""


class NetworkSenders:
    """``Senders`` over the services of a server."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def _service(self, name: str, what: str) -> Any:
        service = getattr(self.services, name, None)
        if service is None:
            raise OrthancError(ErrorCode.NOT_IMPLEMENTED, f"This server has no {what}")
        return service

    def modality(self, name: str) -> Any:
        return self._service("network", "DicomModalities registry").modality(name)

    def peer(self, name: str) -> Any:
        return self._service("network", "OrthancPeers registry").peer(name)

    def store_to_modality(self, name: str, data: bytes, local_aet: str | None,
                          move_originator: tuple[str, int] | None = None) -> None:
        modality = self.modality(name)
        scu = self._service("scu", "C-STORE SCU")
        with _transient_association():
            report = scu.store(modality, [data], local_aet=local_aet or None, move_originator=move_originator)
        failures = report.failures
        if failures:  # the receiver answered a failure status, or the file could not be sent at all
            first = failures[0]
            transient = first.status is not None and (first.status & 0xFF00) == 0xA700  # out of resources
            raise TransferError(first.error or f'C-STORE to AET "{report.remote_aet}" failed', transient=transient)

    def move(self, modality: Modality, target_aet: str, request: Mapping[int, str | None], local_aet: str,
             timeout: float | None) -> None:
        scu = self._service("retrieve_scu", "C-MOVE SCU")
        with _transient_association():
            scu.move(modality, target_aet, request, encoding=self.services.store.default_encoding,
                     local_aet=local_aet, timeout=timeout)

    def get(self, modality: Modality, request: Mapping[int, str | None], local_aet: str,
            timeout: float | None) -> int:
        scu = self._service("retrieve_scu", "C-GET SCU")
        with _transient_association():
            report = scu.get(modality, request, encoding=self.services.store.default_encoding,
                             local_aet=local_aet, timeout=timeout)
        return int(report.received)

    def store_to_peer(self, name: str, data: bytes, compress: bool = False) -> None:
        peer = self.peer(name)
        client = self._service("peers", "client for Orthanc peers")
        try:
            client.store(peer, data, compress=compress)
        except OrthancError as exc:
            status = getattr(exc, "remote_status", None) or getattr(exc, "status", None)
            transient = not isinstance(status, int) or status >= 500 or status in (408, 429)
            raise TransferError(exc.details or exc.message, transient=transient) from exc
        except Exception as exc:  # transport errors
            raise TransferError(f"Cannot send to the Orthanc peer {getattr(peer, 'url', name)}: {exc}",
                                transient=True) from exc


@contextmanager
def _transient_association() -> Iterator[None]:
    """A failed association (refused, rejected, aborted, timed out) as a transient ``TransferError``."""
    try:
        yield
    except DicomNetworkError as exc:
        raise TransferError(exc.details or exc.message, transient=True) from exc
