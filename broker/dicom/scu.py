"""C-STORE and C-ECHO SCU: sending instances to the modalities of ``DicomModalities``.

``StoreScu.store(modality, files)`` sends Part-10 files over an association that is **kept open and
reused**, keyed by (modality, calling AET), until it has been idle for ``DicomAssociationCloseDelay``
seconds (default 5; 0 releases it at the end of each call), as Orthanc does for its Lua jobs. A
background thread releases idle associations; ``close()`` releases all of them.

Presentation contexts. For each SOP class, one context per stored transfer syntax, plus Explicit and
Implicit VR Little Endian, so the receiver can accept the stored syntax or an uncompressed one. An
instance whose SOP class or syntax the open association did not propose makes the association be
re-opened with both sets. An instance goes out in its stored syntax when the receiver accepted it;
otherwise (if the modality's ``AllowTranscoding`` and ``TranscodeDicomProtocol`` are on, the
defaults) it is transcoded with pydicom to an accepted uncompressed syntax, decompressing pixel data
through pydicom's pixel handlers when needed; its SOP Instance UID is kept. An instance that cannot be
transcoded fails alone, with a message.

Every socket has TCP_NODELAY (``broker.dicom.sockets``). Failures of the association (connection
refused, rejected, aborted, no answer) raise ``DicomNetworkError`` (Orthanc's ``NetworkProtocol``,
error 9); a refused C-STORE (status 0xA7xx, 0xC000, …) is recorded for that instance in the
``StoreReport`` and the next instance is sent.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from broker.config.network import DicomOptions, Modality
from broker.core.dicom_file import peek_meta, read_part10, transcode_to_accepted
from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor
from broker.errors import ErrorCode, OrthancError
from broker.network import NetworkRegistry

log = logging.getLogger("luabroker.dicom")

#: Always proposed next to the stored syntax, as Orthanc does.
FALLBACK = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: C-STORE statuses that mean "stored" (0x0000, and the warnings: coercion, elements discarded, …).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
#: At most this many presentation contexts in one association request (PS3.8: odd ids 1..255).
MAX_CONTEXTS = 128


class DicomNetworkError(OrthancError):
    """Talking to a modality failed: the message says with whom and what happened. Orthanc's
    ``NetworkProtocol`` error (9, HTTP 500). ``status`` is the DIMSE status when there was one;
    ``report`` what a ``store`` had done before the failure."""

    def __init__(self, message: str, *, status: int | None = None, report: StoreReport | None = None) -> None:
        super().__init__(ErrorCode.NETWORK_PROTOCOL, message)
        self.status = status
        self.report = report


@dataclass
class InstanceResult:
    """One instance of a ``store`` call."""

    sop_instance_uid: str
    sop_class_uid: str
    #: The DIMSE status of the C-STORE; None when the instance was not sent (unreadable, not transcodable).
    status: int | None
    #: The transfer syntax it was sent in ("" if not sent).
    transfer_syntax: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status in STORED


@dataclass
class StoreReport:
    """What ``StoreScu.store`` did, instance by instance."""

    remote_aet: str
    local_aet: str
    results: list[InstanceResult] = field(default_factory=list)
    #: Associations opened by this call (0 when an open one was reused for everything).
    associations_opened: int = 0

    @property
    def sent(self) -> list[str]:
        """SOP Instance UIDs the receiver stored."""
        return [r.sop_instance_uid for r in self.results if r.ok]

    @property
    def failures(self) -> list[InstanceResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def check(self) -> StoreReport:
        """Raise ``DicomNetworkError`` naming the first failed instance, if any; else return self."""
        failures = self.failures
        if failures:
            first = failures[0]
            raise DicomNetworkError(f'C-STORE to AET "{self.remote_aet}": {len(failures)} of {len(self.results)} '
                                    f"instances failed; first: {first.sop_instance_uid}: {first.error}",
                                    status=first.status, report=self)
        return self


@dataclass
class _Instance:
    dataset: Dataset
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


@dataclass
class Link:
    """One open association and what it proposed."""

    assoc: Association
    proposed: dict[str, set[str]]
    last_used: float = field(default_factory=time.monotonic)
    message_id: int = 0

    def next_message_id(self) -> int:
        self.message_id = self.message_id % 0xFFFF + 1
        return self.message_id

    @property
    def alive(self) -> bool:
        return bool(self.assoc.is_established)

    def proposes(self, sop_class: str, transfer_syntax: str) -> bool:
        syntaxes = self.proposed.get(sop_class, set())
        return transfer_syntax in syntaxes and all(ts in syntaxes for ts in FALLBACK)


def _resolve(host: str) -> str:
    """pynetdicom wants an IP address; Orthanc accepts host names too."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DicomNetworkError(f"Cannot resolve the host name {host!r}: {exc}") from exc
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first
    return str(infos[0][4][0])


def _read_instance(data: bytes) -> _Instance:
    try:
        ds = read_part10(data)
        meta = ds.file_meta
        return _Instance(ds, str(ds.get("SOPClassUID", meta.get("MediaStorageSOPClassUID", ""))),
                         str(ds.get("SOPInstanceUID", meta.get("MediaStorageSOPInstanceUID", ""))),
                         str(meta.TransferSyntaxUID))
    except Exception as exc:  # pydicom raises many kinds for a bad file
        raise ValueError(f"not a DICOM file with file meta information: {exc}") from exc


def sendable(dataset: Dataset, syntax: str, accepted: Sequence[str], *, allow_transcoding: bool,
             receiver: str) -> tuple[Dataset, str]:
    """``dataset``, stored in ``syntax``, as it may go to ``receiver``, which accepted the syntaxes
    ``accepted`` for its SOP class: as stored when it accepted that syntax, else transcoded to an accepted
    uncompressed one if ``allow_transcoding``. Returns the dataset and its syntax; raises ``ValueError``
    saying why it cannot be sent. Shared by this SCU and the C-GET SCP (``broker.dicom.retrieve_scp``)."""
    if syntax in accepted:
        return dataset, syntax
    if not allow_transcoding:
        raise ValueError(f'AET "{receiver}" does not accept {UID(syntax).name} and transcoding is '
                         "disabled (AllowTranscoding of the modality, or TranscodeDicomProtocol)")
    uid = dataset.get("SOPInstanceUID", "")
    try:
        transcoded, target = transcode_to_accepted(dataset, syntax, accepted)
    except ValueError as exc:
        raise ValueError(f"cannot transcode {uid} for \"{receiver}\": {exc}") from exc
    log.info("C-STORE to %s: %s transcoded from %s to %s", receiver, uid, UID(syntax).name, UID(target).name)
    return transcoded, target


class StoreScu:
    """C-STORE and C-ECHO to the modalities of a ``NetworkRegistry``."""

    def __init__(self, network: NetworkRegistry, options: DicomOptions | None = None) -> None:
        self.network = network
        self.options = options or DicomOptions()
        self._lock = threading.Lock()
        self._links: dict[tuple[Modality, str], Link] = {}
        self._key_locks: dict[tuple[Modality, str], threading.Lock] = {}
        self._wake = threading.Condition(self._lock)
        self._closer: threading.Thread | None = None
        self._closed = False

    # Public API.
    def store(self, modality: str | Modality, files: Iterable[bytes], local_aet: str | None = None,
              move_originator: tuple[str, int] | None = None,
              each: Callable[[InstanceResult], bool] | None = None) -> StoreReport:
        """Send each Part-10 file of ``files``, in order, to ``modality`` (a symbolic name or a
        ``Modality``), calling as ``local_aet``, else the modality's ``LocalAet``, else ``DicomAet``.

        ``move_originator`` = (AET, message id) of the C-MOVE this store answers, if any. ``each`` is told
        the result of every instance as it comes, and stops the sending by answering False: a synchronous
        C-MOVE answers each sub-operation with it, on one association whatever the close delay. Returns a
        ``StoreReport`` (use ``.check()`` to raise on refused instances). Raises ``DicomNetworkError``
        when the association fails (with ``.report`` of what was sent before), ``OrthancError``
        ``InexistentItem`` for an unknown modality name."""
        remote = self.remote(modality)
        local = local_aet or remote.local_aet or self.options.default_aet
        key = (remote, local)
        report = StoreReport(remote_aet=remote.aet, local_aet=local)
        planned = self._plan(files)
        with self._key_lock(key):
            link = self._take(key)
            try:
                for data in (files if planned is None else planned[0]):
                    link = self._store_one(remote, local, link, data, report, move_originator,
                                           planned[1] if planned else {})
                    if each is not None and not each(report.results[-1]):
                        break
            except DicomNetworkError as exc:
                exc.report = report
                if link is not None:
                    self._drop(link)
                link = None
                raise
            finally:
                if link is not None:
                    self._give_back(key, link)
        return report

    def echo(self, modality: str | Modality, local_aet: str | None = None, timeout: float | None = None) -> None:
        """C-ECHO on a new association; returns when the modality answered Success, else raises
        ``DicomNetworkError``."""
        remote = self.remote(modality)
        local = local_aet or remote.local_aet or self.options.default_aet
        link = self.associate(remote, local, {str(Verification): set(FALLBACK)}, timeout=timeout, operation="C-ECHO")
        try:
            if not any(cx.abstract_syntax == Verification for cx in link.assoc.accepted_contexts):
                raise DicomNetworkError(f'C-ECHO to AET "{remote.aet}": the Verification SOP class was not accepted')
            pause_reactor(link.assoc)
            status = link.assoc.send_c_echo(msg_id=link.next_message_id())
            code = status.get("Status") if status else None
            if code != 0x0000:
                detail = "no answer (association aborted)" if code is None else f"status 0x{code:04X}"
                raise DicomNetworkError(f'C-ECHO to AET "{remote.aet}" failed: {detail}', status=code)
        finally:
            self.release(link)

    def open_associations(self) -> int:
        """How many associations are kept open for reuse now."""
        with self._lock:
            return sum(1 for link in self._links.values() if link.alive)

    def close(self) -> None:
        """Release every kept association and stop the closer thread (server stop)."""
        with self._lock:
            self._closed = True
            links = list(self._links.values())
            self._links.clear()
            self._wake.notify_all()
        for link in links:
            self.release(link)
        if self._closer is not None:
            self._closer.join(timeout=5)

    # One instance.
    def _store_one(self, remote: Modality, local: str, link: Link | None, data: bytes, report: StoreReport,
                   move_originator: tuple[str, int] | None, wanted: dict[str, set[str]]) -> Link | None:
        try:
            instance = _read_instance(bytes(data))
        except ValueError as exc:
            report.results.append(InstanceResult("", "", None, error=str(exc)))
            return link
        if not instance.sop_class_uid or not instance.sop_instance_uid:
            report.results.append(InstanceResult(instance.sop_instance_uid, instance.sop_class_uid, None,
                                                 error="the file has no SOP Class UID or SOP Instance UID"))
            return link
        reused = link is not None and link.alive and link.proposes(instance.sop_class_uid, instance.transfer_syntax)
        if not reused:
            proposal = self._proposal(link, instance, wanted)
            if link is not None:
                self.release(link)
            link = self.associate(remote, local, proposal, operation="C-STORE")
            report.associations_opened += 1
        assert link is not None
        lost = (f'C-STORE to AET "{remote.aet}": the association was aborted (or not answered) while sending '
                f"{instance.sop_instance_uid}")
        try:
            result = self._send(remote, link, instance, move_originator)
        except _AssociationLost:
            self._drop(link)
            if not reused:
                raise DicomNetworkError(lost) from None
            # A kept association the peer had dropped: one more try on a new one.
            link = self.associate(remote, local, dict(link.proposed), operation="C-STORE")
            report.associations_opened += 1
            try:
                result = self._send(remote, link, _read_instance(bytes(data)), move_originator)
            except _AssociationLost:
                self._drop(link)
                raise DicomNetworkError(lost) from None
        report.results.append(result)
        link.last_used = time.monotonic()
        return link

    def _send(self, remote: Modality, link: Link, instance: _Instance,
              move_originator: tuple[str, int] | None) -> InstanceResult:
        accepted = [cx.transfer_syntax[0] for cx in link.assoc.accepted_contexts
                    if cx.abstract_syntax == instance.sop_class_uid]
        result = InstanceResult(instance.sop_instance_uid, instance.sop_class_uid, None)
        if not accepted:
            result.error = f'AET "{remote.aet}" accepted no presentation context for SOP class {instance.sop_class_uid}'
            return result
        try:
            dataset, syntax = sendable(instance.dataset, instance.transfer_syntax, accepted,
                                       allow_transcoding=remote.allow_transcoding and self.options.transcode,
                                       receiver=remote.aet)
        except ValueError as exc:
            result.error = str(exc)
            return result
        result.transfer_syntax = syntax
        if not link.alive:
            raise _AssociationLost()
        originator_aet, originator_id = move_originator if move_originator else (None, None)
        try:
            pause_reactor(link.assoc)
            status = link.assoc.send_c_store(dataset, msg_id=link.next_message_id(), originator_aet=originator_aet,
                                             originator_id=originator_id)
        except RuntimeError as exc:  # "must be established": the peer released or aborted it
            raise _AssociationLost() from exc
        except (ValueError, AttributeError) as exc:  # pydicom could not encode it
            result.error = f"cannot encode {instance.sop_instance_uid}: {exc}"
            return result
        code = status.get("Status") if status else None
        if code is None:
            raise _AssociationLost()
        result.status = int(code)
        if code not in STORED:
            result.error = f'C-STORE to AET "{remote.aet}" refused {instance.sop_instance_uid} with status 0x{code:04X}'
            log.warning("%s", result.error)
        return result

    # Associations.
    def remote(self, modality: str | Modality) -> Modality:
        """The modality named (or given), refused when it asks for DICOM TLS, which luabroker lacks."""
        remote = modality if isinstance(modality, Modality) else self.network.modality(modality)
        if remote.use_dicom_tls:
            raise DicomNetworkError(f'AET "{remote.aet}" requires DICOM TLS (UseDicomTls), which luabroker '
                                    "does not support")
        return remote

    @staticmethod
    def _plan(files: Iterable[bytes]) -> tuple[Sequence[bytes], dict[str, set[str]]] | None:
        """For a sequence of files, the contexts all of them need (one association for a mixed
        batch); None for an iterator, which is read lazily."""
        if not isinstance(files, Sequence):
            return None
        wanted: dict[str, set[str]] = {}
        for data in files:
            found = peek_meta(bytes(data))
            if found is not None:
                wanted.setdefault(found[0], set(FALLBACK)).add(found[1])
        return files, wanted

    @staticmethod
    def _proposal(link: Link | None, instance: _Instance, wanted: dict[str, set[str]]) -> dict[str, set[str]]:
        """The current instance's contexts first, then those of the open association and of the batch,
        up to ``MAX_CONTEXTS``."""
        proposal: dict[str, set[str]] = {instance.sop_class_uid: {instance.transfer_syntax, *FALLBACK}}
        count = len(proposal[instance.sop_class_uid])
        for source in (link.proposed if link else {}, wanted):
            for sop_class, syntaxes in source.items():
                for syntax in sorted(syntaxes | set(FALLBACK)):
                    if syntax not in proposal.setdefault(sop_class, set()) and count < MAX_CONTEXTS:
                        proposal[sop_class].add(syntax)
                        count += 1
        return {sop_class: syntaxes for sop_class, syntaxes in proposal.items() if syntaxes}

    def associate(self, remote: Modality, local: str, proposal: dict[str, set[str]], *,
                  timeout: float | None = None, operation: str, per_syntax: bool = True,
                  scp_roles: Iterable[str] = (), handlers: Sequence[EventHandlerType] = ()) -> Link:
        """An association to ``remote`` calling as ``local`` with these contexts (SOP class → transfer
        syntaxes): the one place for the timeouts, TCP_NODELAY and the errors of an association
        (``DicomNetworkError``), used by every SCU. ``per_syntax``: one context per transfer syntax, so
        that a C-STORE is offered its stored syntax; else one per SOP class, with all its syntaxes (more
        SOP classes fit in the 128 contexts). ``scp_roles``: the SOP classes for which we also
        propose the SCP role (a C-GET receives its instances as C-STOREs on the association it opened),
        served by ``handlers``."""
        seconds = timeout or remote.timeout or self.options.scu_timeout or None
        ae = AE(ae_title=local)
        ae.acse_timeout = seconds
        ae.dimse_timeout = seconds
        ae.connection_timeout = seconds
        ae.network_timeout = None  # an idle kept association is released by us, not by pynetdicom
        for sop_class, syntaxes in proposal.items():
            for group in ([[syntax] for syntax in sorted(syntaxes)] if per_syntax else [sorted(syntaxes)]):
                ae.add_requested_context(sop_class, group)
        connected = threading.Event()
        bound = [*NODELAY_HANDLERS, *handlers, (evt.EVT_CONN_OPEN, lambda event: connected.set())]
        roles: list[Any] = [build_role(sop_class, scp_role=True) for sop_class in scp_roles]
        address = _resolve(remote.host)
        where = f'DicomAssociation - {operation} to AET "{remote.aet}" ({remote.host}:{remote.port}) as "{local}"'
        assoc = ae.associate(address, remote.port, ae_title=remote.aet, evt_handlers=bound, ext_neg=roles or None)
        if assoc.is_established:
            log.debug("%s: association established", where)
            return Link(assoc, {k: set(v) for k, v in proposal.items()})
        if not connected.is_set():
            raise DicomNetworkError(f"{where}: TCP Initialization Error: {self._connect_error(address, remote.port)}")
        if assoc.is_rejected and assoc.acceptor.primitive is not None:
            primitive = assoc.acceptor.primitive
            raise DicomNetworkError(f"{where}: association rejected ({primitive.result_str}, by the "
                                    f"{primitive.source_str}: {primitive.reason_str})")
        raise DicomNetworkError(f"{where}: association aborted or not answered during negotiation")

    @staticmethod
    def _connect_error(address: str, port: int) -> str:
        """Why a TCP connection fails (pynetdicom only says that it did): one short retry to ask."""
        try:
            with socket.create_connection((address, port), timeout=2):
                return "the connection was closed during association negotiation"
        except OSError as exc:
            return exc.strerror or str(exc) or type(exc).__name__

    def release(self, link: Link) -> None:
        """Release the association, or abort it when the peer is gone."""
        try:
            if link.assoc.is_established:
                link.assoc.release()
        except Exception:  # a peer that vanished: abort is all there is left
            link.assoc.abort()

    def _drop(self, link: Link) -> None:
        try:
            link.assoc.abort()
        except Exception:
            pass

    # Reuse.
    def _key_lock(self, key: tuple[Modality, str]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _take(self, key: tuple[Modality, str]) -> Link | None:
        with self._lock:
            link = self._links.pop(key, None)
        if link is not None and not link.alive:
            return None
        return link

    def _give_back(self, key: tuple[Modality, str], link: Link) -> None:
        if self.options.association_close_delay <= 0 or self._closed or not link.alive:
            self.release(link)
            return
        link.last_used = time.monotonic()
        with self._lock:
            self._links[key] = link
            if self._closer is None:
                self._closer = threading.Thread(target=self._close_idle, name="scu-closer", daemon=True)
                self._closer.start()
            self._wake.notify_all()

    def _close_idle(self) -> None:
        """The background closer: releases each kept association once idle for the close delay."""
        delay = self.options.association_close_delay
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    expired = [self._links.pop(key) for key, link in list(self._links.items())
                               if now - link.last_used >= delay or not link.alive]
                    if expired:
                        break
                    wait = min((link.last_used + delay - now for link in self._links.values()), default=None)
                    self._wake.wait(timeout=None if wait is None else max(wait, 0.05))
            for link in expired:
                log.debug("Releasing the idle association to %s", link.assoc.acceptor.ae_title)
                self.release(link)


class _AssociationLost(Exception):
    """The association died under a C-STORE (aborted by the peer, or no answer within the timeout)."""
