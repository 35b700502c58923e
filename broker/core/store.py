"""The store: the one place that writes the index and the storage area.

``Store.store_instance(data, origin)`` parses the file once (``broker.core.dicom_parse``), computes
Orthanc's ids, asks ``instance_filter`` (set by the scripting bridge for ``ReceivedInstanceFilter``),
writes the file, then in ONE index transaction creates the missing patient/study/series, the instance,
its attachment and metadata, and a ``StoredInstance`` outbox event; then it calls ``on_event()`` so
that the dispatcher wakes up. A crash between the file write and the commit leaves an orphan file and
no index row; a failed transaction removes the file. Deletions, metadata changes and stability also
write their outbox events in the transaction of the change.
"""
from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from broker.core import changes, maintags
from broker.core.bounds import UNBOUNDED, InputBounds
from broker.core.cfind import FindAnswers, FindRequest, find_answers
from broker.core.compression import NONE, Encoded, encode, stored_bytes
from broker.core.database import Backend
from broker.core.dicom_file import read_lenient
from broker.core.dicom_json import Charset, JsonFormat, dataset_to_json, summary
from broker.core.dicom_parse import BINARY_VRS, DicomFile, DicomFormatError, parse_dicom
from broker.core.encodings import LATIN1, Encoding
from broker.core.exports import ExportsLog
from broker.core.find import Finder, FindQuery, lookup
from broker.core.ids import ResourceIds
from broker.core.index import (
    DICOM_ATTACHMENT,
    DICOM_UNTIL_PIXEL_DATA,
    Attachment,
    AttachmentSizes,
    Index,
    IndexTransaction,
    ResourceRow,
)
from broker.core.levels import Level
from broker.core.metadata import MetadataNames, MetadataType, is_user_metadata, now_iso
from broker.core.origin import Origin, RequestOrigin
from broker.core.outbox import Outbox
from broker.core.recycling import NO_LIMITS, Deletion, StorageLimits, recycle
from broker.core.storage import Storage, StorageArea
from broker.core.tags import (
    CARDIAC_NUMBER_OF_IMAGES,
    IMAGE_INDEX,
    IMAGES_IN_ACQUISITION,
    INSTANCE_NUMBER,
    NUMBER_OF_SLICES,
    NUMBER_OF_TEMPORAL_POSITIONS,
    NUMBER_OF_TIME_SLICES,
    PATIENT_ID,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)
from broker.core.token_bucket import TokenBucket
from broker.errors import ErrorCode, OrthancError

log = logging.getLogger(__name__)

INDEX_FILE_NAME = "index.sqlite"
SUCCESS = "Success"
ALREADY_STORED = "AlreadyStored"
FILTERED_OUT = "FilteredOut"

_IDENTIFIERS = ((STUDY_INSTANCE_UID, "StudyInstanceUID", "0020,000D"),
                (SERIES_INSTANCE_UID, "SeriesInstanceUID", "0020,000E"),
                (SOP_INSTANCE_UID, "SOPInstanceUID", "0008,0018"))
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


def parse_integer(text: str | None) -> int | None:
    """Orthanc's ``lexical_cast<int64_t>``: an optional sign and digits, nothing else."""
    return int(text) if text is not None and _INTEGER.match(text) else None


@dataclass(frozen=True, slots=True)
class StoreResult:
    status: str  # "Success" | "AlreadyStored" | "FilteredOut"
    instance_id: str
    parent_patient: str
    parent_study: str
    parent_series: str

    @property
    def path(self) -> str:
        return f"/instances/{self.instance_id}"

    def to_json(self) -> dict[str, str]:
        """Orthanc's answer to ``POST /instances``."""
        return {"ID": self.instance_id, "ParentPatient": self.parent_patient, "ParentSeries": self.parent_series,
                "ParentStudy": self.parent_study, "Path": self.path, "Status": self.status}


class IncomingInstance:
    """An instance on its way into the store: parsed once, with its ids and summary.

    Raises ``OrthancError``: ``BAD_FILE_FORMAT`` (400) for bytes that are not a well-formed DICOM file,
    pass one of ``bounds`` or lack a UID value, ``INEXISTENT_TAG`` (404, as Orthanc) when a UID tag
    is missing.
    """

    def __init__(self, data: bytes, origin: Origin, bounds: InputBounds = InputBounds(),
                 default_encoding: Encoding = LATIN1) -> None:
        self.data = data
        self.origin = origin
        if not data:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Received an empty DICOM file")
        try:
            self.file: DicomFile = parse_dicom(data, bounds)
        except DicomFormatError as exc:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT,
                               f"Cannot parse an invalid DICOM file (size: {len(data)} bytes): {exc}") from None
        self.charset = Charset.of(self.file.elements, default_encoding)
        self.summary: dict[int, str | None] = summary(self.file.elements, maintags.SUMMARY_TAGS, self.charset)
        self.ids = self._compute_ids()
        self._lock = threading.Lock()
        self._simplified: dict[str, Any] | None = None
        self._dataset: pydicom.Dataset | None = None
        # Extra system metadata (``Store.store_instance(metadata=..., ancestor_metadata=...)``).
        self.extra_metadata: dict[int, str] = {}
        self.ancestor_metadata: dict[Level, dict[int, str]] = {}

    def _compute_ids(self) -> ResourceIds:
        uids = []
        for tag, name, number in _IDENTIFIERS:
            if tag not in self.summary:
                raise OrthancError(ErrorCode.INEXISTENT_TAG, f"The DICOM file has no {name} ({number}); "
                                   "every instance needs StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID")
            value = self.summary[tag]
            if not value:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"The DICOM file has an empty {name} ({number})")
            uids.append(value)
        return ResourceIds.from_uids(self.summary.get(PATIENT_ID) or "", *uids)

    @property
    def instance_id(self) -> str:
        return self.ids.instance

    @property
    def has_pixel_data(self) -> bool:
        return self.file.has_pixel_data

    @property
    def transfer_syntax_uid(self) -> str:
        return self.file.transfer_syntax

    def simplified_tags(self) -> dict[str, Any]:
        """The dataset as ``/instances/{id}/simplified-tags`` shows it (computed once)."""
        if self._simplified is None:
            self._simplified = dataset_to_json(self.file.elements, JsonFormat.HUMAN, self.charset)
        return self._simplified

    def full_tags(self) -> dict[str, Any]:
        return dataset_to_json(self.file.elements, JsonFormat.FULL, self.charset)

    @property
    def dataset(self) -> pydicom.Dataset:
        """The file as a pydicom ``Dataset``, read on first use and kept."""
        with self._lock:
            if self._dataset is None:
                self._dataset = read_lenient(self.data)
            return self._dataset


@dataclass(frozen=True, slots=True)
class DeleteResult:
    remaining_ancestor: ResourceRow | None
    deleted: tuple[ResourceRow, ...]

    def to_json(self) -> dict[str, Any]:
        """Orthanc's answer to ``DELETE /{level}/{id}``."""
        ancestor = self.remaining_ancestor
        if ancestor is None:
            return {"RemainingAncestor": None}
        return {"RemainingAncestor": {"ID": ancestor.public_id,
                                      "Path": f"/{ancestor.level.plural}/{ancestor.public_id}",
                                      "Type": ancestor.level.label}}


@dataclass(frozen=True, slots=True)
class Statistics:
    count_patients: int
    count_studies: int
    count_series: int
    count_instances: int
    disk_size: int                 # as stored (compressed)
    uncompressed_size: int


@dataclass(slots=True)
class ResourceView:
    """What the REST layer needs to describe one resource (read in one transaction)."""

    level: Level
    public_id: str
    parent: str | None
    children: list[str]
    main_tags: dict[str, str]
    patient_tags: dict[str, str] | None
    metadata: dict[int, str]
    is_stable: bool
    attachment: Attachment | None = None
    children_index_in_series: list[str | None] = field(default_factory=list)


class Store:
    def __init__(self, root: Path, *, user_metadata: Mapping[str, int] | None = None,
                 on_event: Callable[[], None] | None = None, stable_age: float = 60.0,
                 sync_storage: bool = False, store_md5: bool = True, index_path: Path | None = None,
                 bounds: InputBounds = InputBounds(), default_encoding: Encoding = LATIN1,
                 limits: StorageLimits = NO_LIMITS, ingest_rate: float = 0.0,
                 index_backend: Backend | None = None, storage: Storage | None = None) -> None:
        """``index_backend``: where the index lives (PostgreSQL: ``broker.core.postgres``); by default the
        SQLite file ``index_path``, or ``index.sqlite`` in ``root``. ``storage``: where the files go (a
        bucket: ``broker.core.object_storage``); by default the folder ``root``."""
        self.root = Path(root)
        self.storage: Storage = storage or StorageArea(self.root, sync=sync_storage)
        self.index = Index(Path(index_path) if index_path else self.root / INDEX_FILE_NAME,
                           synchronous="FULL" if sync_storage else "NORMAL", backend=index_backend)
        self.outbox = Outbox(self.index)
        self.exports = ExportsLog(self.index)
        self.metadata_names = MetadataNames(user_metadata)
        self.on_event = on_event
        self.instance_filter: Callable[[IncomingInstance], bool] | None = None
        self.stable_age = stable_age if stable_age > 0 else 60.0  # Orthanc: StableAge <= 0 means 60
        self.store_md5 = store_md5
        #: ``StorageCompression``: attachments written from now on are compressed (``broker.core.compression``).
        self.compression = NONE
        #: What input may cost (``broker.core.bounds``): files coming in, and for the HTTP door and the
        #: ZIP reader, request bodies and archives.
        self.bounds = bounds
        #: Orthanc's ``DefaultEncoding``: how files without a Specific Character Set are read (set from
        #: the configuration, changed by ``PUT /tools/default-encoding`` until the server stops).
        self.default_encoding = default_encoding
        #: ``MaximumStorageSize``, ``MaximumPatientCount``, ``OverwriteInstances``.
        self.limits = limits
        #: ``LuaSandbox.EventBacklogLimit``: while this many events wait for delivery, new instances are
        #: refused (``backlog_full``); None: no bound.
        self.event_backlog_limit: int | None = None
        #: ``MaximumIngestRate``: new instances a second, one second's worth saved up; None: no bound.
        self._ingest = TokenBucket(ingest_rate, max(1, math.ceil(ingest_rate)), time.monotonic()) \
            if ingest_rate > 0 else None
        self._ingest_lock = threading.Lock()

    def close(self) -> None:
        self.index.close()

    # Ingest.
    def store_instance(self, data: bytes, origin: Origin, *, metadata: Mapping[int, str] | None = None,
                       ancestor_metadata: Mapping[Level, Mapping[int, str]] | None = None) -> StoreResult:
        """Store one DICOM file. ``metadata`` (instance) and ``ancestor_metadata`` (patient, study,
        series) are extra system metadata written in the same transaction, as Orthanc's
        ``DicomInstanceToStore::AddMetadata`` (``ModifiedFrom``/``AnonymizedFrom`` of a modified copy);
        they are not written for a duplicate (``AlreadyStored``)."""
        incoming = IncomingInstance(data, origin, self.bounds, self.default_encoding)
        incoming.extra_metadata = dict(metadata or {})
        incoming.ancestor_metadata = {Level(level): dict(values) for level, values in (ancestor_metadata or {}).items()}
        return self.store_incoming(incoming)

    def store_incoming(self, incoming: IncomingInstance) -> StoreResult:
        ids = incoming.ids
        if self.backlog_full():
            raise OrthancError(ErrorCode.FULL_STORAGE, f"{self.event_backlog_limit} events wait for their Lua "
                               "callbacks (LuaSandbox.EventBacklogLimit): new instances are refused until the "
                               "scripts catch up (GET /lua/status)", http_status=503)
        if self._ingest is not None:
            with self._ingest_lock:
                admitted = self._ingest.take(time.monotonic())
            if not admitted:
                raise OrthancError(ErrorCode.FULL_STORAGE, f"More than {self._ingest.rate:g} instances a second "
                                   "(MaximumIngestRate): this instance is refused; send it again later",
                                   http_status=429)
        instance_filter = self.instance_filter
        if instance_filter is not None and not _accepted(instance_filter, incoming):
            return StoreResult(FILTERED_OUT, ids.instance, ids.patient, ids.study, ids.series)
        tags = incoming.simplified_tags()
        with self.index.read(snapshot=False) as tx:
            known = tx.find(ids.instance) is not None
        encoded = encode(incoming.data, self.compression, self.store_md5)
        written: list[str] = [] if known and not self.limits.overwrite else [self.storage.write(encoded.stored)]
        obsolete: list[str] = []  # files of the instances replaced or recycled, removed once committed
        try:
            with self.index.write() as tx:
                status = self._index_instance(tx, incoming, encoded, tags, written, obsolete)
        except BaseException as exc:
            for file_uuid in written:
                self.storage.remove(file_uuid)
            if isinstance(exc, sqlite3.Error):
                raise OrthancError(ErrorCode.DATABASE, f"The index refused the instance: {exc}") from exc
            raise
        if status == ALREADY_STORED:
            obsolete.extend(written)
        for file_uuid in obsolete:
            self.storage.remove(file_uuid)
        self._notify()
        return StoreResult(status, ids.instance, ids.patient, ids.study, ids.series)

    def _index_instance(self, tx: IndexTransaction, incoming: IncomingInstance, encoded: Encoded,
                        tags: dict[str, Any], written: list[str], obsolete: list[str]) -> str:
        ids, origin, summary_ = incoming.ids, incoming.origin, incoming.summary
        now = now_iso()
        existing = tx.find(ids.instance)
        if existing is not None and self.limits.overwrite:  # Orthanc deletes it (and the parents left empty)
            obsolete.extend(self._delete_in(tx, existing, now).files)
            existing = None
        if existing is not None:
            metadata = tx.metadata(existing.internal_id)
            tx.append_event(changes.STORED_INSTANCE, Level.INSTANCE, ids.instance,
                            self._stored_payload(origin, metadata, tags), now)
            return ALREADY_STORED
        if not written:  # deleted since the check made before writing the file
            written.append(self.storage.write(encoded.stored))

        patient = self._find_or_create(tx, Level.PATIENT, ids.patient, None, summary_)
        study = self._find_or_create(tx, Level.STUDY, ids.study, patient[0], summary_)
        series = self._find_or_create(tx, Level.SERIES, ids.series, study[0], summary_)
        instance_id = tx.create(Level.INSTANCE, ids.instance, series[0],
                                maintags.extract_main_tags(Level.INSTANCE, summary_))
        tx.add_attachment(instance_id, DICOM_ATTACHMENT, written[0], encoded.size, encoded.md5, encoded.compressed_size,
                          encoded.compressed_md5, encoded.compression)
        offset = incoming.file.pixel_data_offset
        if self.compression and offset is not None:
            # As Orthanc with StorageCompression: the file up to its pixel data, kept apart so that reading
            # the tags does not inflate the pixels.
            head = encode(incoming.data[:offset], self.compression, self.store_md5)
            written.append(self.storage.write(head.stored))
            tx.add_attachment(instance_id, DICOM_UNTIL_PIXEL_DATA, written[-1], head.size, head.md5,
                              head.compressed_size, head.compressed_md5, head.compression)

        rows: list[tuple[int, int, str]] = [(internal_id, MetadataType.LAST_UPDATE, now)
                                            for internal_id in (series[0], study[0], patient[0])]
        if series[1]:
            expected = expected_number_of_instances(summary_)
            if expected is not None:
                rows.append((series[0], MetadataType.EXPECTED_NUMBER_OF_INSTANCES, str(expected)))
            rows.append((series[0], MetadataType.REMOTE_AET, _remote_aet(origin)))
        metadata = instance_metadata(incoming, now)
        if incoming.extra_metadata:
            metadata = dict(sorted({**metadata, **incoming.extra_metadata}.items()))
        rows.extend((instance_id, number, value) for number, value in metadata.items())
        ancestors = {Level.PATIENT: patient[0], Level.STUDY: study[0], Level.SERIES: series[0]}
        for level, values in incoming.ancestor_metadata.items():
            rows.extend((ancestors[level], number, value) for number, value in values.items())
        tx.set_metadata_many(rows)

        tx.touch_patient(patient[0])
        obsolete.extend(recycle(tx, self.limits, patient[0], self._delete_in, now))
        deadline = time.time() + self.stable_age
        tx.mark_unstable([(series[0], Level.SERIES, ids.series, deadline), (study[0], Level.STUDY, ids.study, deadline),
                          (patient[0], Level.PATIENT, ids.patient, deadline)])
        # Orthanc's changes, in its order: the new resources from the instance up, then a series that
        # this instance completes.
        for level, public_id, created in ((Level.INSTANCE, ids.instance, True), (Level.SERIES, ids.series, series[1]),
                                          (Level.STUDY, ids.study, study[1]), (Level.PATIENT, ids.patient, patient[1])):
            if created:
                tx.append_event(changes.new(level), level, public_id, {}, now)
        expected = expected_number_of_instances(summary_)
        if expected is not None and series_status(
                expected, tx.children_metadata(series[0], MetadataType.INDEX_IN_SERIES)) == COMPLETE:
            tx.append_event(changes.COMPLETED_SERIES, Level.SERIES, ids.series, {}, now)
        tx.append_event(changes.STORED_INSTANCE, Level.INSTANCE, ids.instance,
                        self._stored_payload(origin, metadata, tags), now)
        return SUCCESS

    @staticmethod
    def _find_or_create(tx: IndexTransaction, level: Level, public_id: str, parent_id: int | None,
                        summary_: dict[int, str | None]) -> tuple[int, bool]:
        """(internal id, created?) of the resource ``public_id``."""
        row = tx.find(public_id)
        if row is not None:
            if row.level is not level:
                raise OrthancError(ErrorCode.DATABASE, f"The id {public_id} is already used by a {row.level.label}")
            return row.internal_id, False
        patient_tags = maintags.extract_main_tags(Level.PATIENT, summary_) if level is Level.STUDY else None
        return tx.create(level, public_id, parent_id, maintags.extract_main_tags(level, summary_), patient_tags), True

    def _stored_payload(self, origin: Origin, metadata: dict[int, str], tags: dict[str, Any]) -> dict[str, Any]:
        return {"origin": origin.to_dict(), "metadata": self._named(metadata), "tags": tags}

    def _named(self, metadata: Mapping[int, str]) -> dict[str, str]:
        return {self.metadata_names.name(number): value for number, value in sorted(metadata.items())}

    def _notify(self) -> None:
        if self.on_event is not None:
            try:
                self.on_event()
            except Exception:
                log.exception("on_event callback failed; the events stay in the outbox")

    # Reading.
    def _find(self, tx: IndexTransaction, level: Level, public_id: str) -> ResourceRow:
        row = tx.find_at(level, public_id)
        if row is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No {level.label.lower()} with id {public_id}")
        return row

    def exists(self, level: Level, public_id: str) -> bool:
        with self.index.read(snapshot=False) as tx:
            return tx.find_at(level, public_id) is not None

    def list_ids(self, level: Level, since: int = 0, limit: int | None = None) -> list[str]:
        with self.index.read(snapshot=False) as tx:
            return [row.public_id for row in tx.list_level(level, since, limit)]

    def view(self, level: Level, public_id: str) -> ResourceView | None:
        """Everything the REST layer shows of one resource, or None if there is no such resource."""
        with self.index.read() as tx:
            row = tx.find_at(level, public_id)
            return None if row is None else self._view(tx, row)

    def views(self, level: Level, public_ids: list[str] | None = None, since: int = 0,
              limit: int | None = None) -> list[ResourceView]:
        """Views of the given resources (or of a page of the whole level), skipping vanished ones."""
        with self.index.read() as tx:
            if public_ids is None:
                rows = tx.list_level(level, since, limit)
            else:
                rows = [row for row in (tx.find_at(level, public_id) for public_id in public_ids) if row is not None]
            return [self._view(tx, row) for row in rows]

    def _view(self, tx: IndexTransaction, row: ResourceRow) -> ResourceView:
        parent = tx.get(row.parent_id) if row.parent_id is not None else None
        main, patient = tx.main_tags(row.internal_id)
        view = ResourceView(row.level, row.public_id, parent.public_id if parent else None, [], main, patient,
                            tx.metadata(row.internal_id), True)
        if row.level is Level.INSTANCE:
            view.attachment = tx.attachment(row.internal_id)
        else:
            view.children = [child.public_id for child in tx.children(row.internal_id)]
            deadline = tx.unstable_deadline(row.internal_id)
            view.is_stable = deadline is None or deadline <= time.time()
        if row.level is Level.SERIES:
            view.children_index_in_series = tx.children_metadata(row.internal_id, MetadataType.INDEX_IN_SERIES)
        return view

    def related(self, level: Level, public_id: str, target: Level) -> list[str]:
        """Ids of the resources at ``target`` below ``public_id`` (all of them) or above it (its ancestor)."""
        with self.index.read() as tx:
            row = self._find(tx, level, public_id)
            if target > level:
                # Orthanc's order: level by level, each parent's children put in front of the previous ones.
                current = [row]
                for _ in range(target - level):
                    following: list[ResourceRow] = []
                    for parent in current:
                        following = tx.children(parent.internal_id) + following
                    current = following
                return [r.public_id for r in current]
            while row.level is not target:
                row = tx.parent(row)
            return [row.public_id]

    def find(self, query: FindQuery) -> list[str]:
        """``/tools/find`` (``broker.core.find``): the ids of the matching resources, in index order."""
        with self.index.read() as tx:
            return Finder(tx, self.instance_tags).find(query)

    def cfind(self, request: FindRequest) -> FindAnswers:
        """A C-FIND query over the index (``broker.core.cfind``)."""
        with self.index.read() as tx:
            return find_answers(tx, self.instance_tags, request)

    def lookup(self, identifier: str) -> list[tuple[Level, str]]:
        with self.index.read() as tx:
            return lookup(tx, identifier)

    def attachment_sizes(self, level: Level, public_id: str) -> AttachmentSizes:
        """The sizes of the attachments of the resource and its descendants."""
        with self.index.read() as tx:
            row = self._find(tx, level, public_id)
            return tx.attachment_sizes([r.internal_id for r in tx.subtree(row.internal_id)])

    def child_instances(self, public_id: str) -> list[str]:
        """The instances of a resource of any level (Orthanc's ``GetChildInstances``)."""
        with self.index.read() as tx:
            row = tx.find(public_id)
        if row is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No resource with id {public_id}")
        return [public_id] if row.level is Level.INSTANCE else self.related(row.level, public_id, Level.INSTANCE)

    def read_instance(self, instance_id: str) -> tuple[bytes, Attachment]:
        """The DICOM file of an instance and its attachment record."""
        with self.index.read() as tx:
            row = self._find(tx, Level.INSTANCE, instance_id)
            attachment = tx.attachment(row.internal_id)
        if attachment is None:
            raise OrthancError(ErrorCode.INEXISTENT_FILE, f"Instance {instance_id} has no DICOM attachment")
        return self.read_attachment(attachment), attachment

    def read_attachment(self, attachment: Attachment, *, as_stored: bool = False) -> bytes:
        """The data of an attachment (``as_stored``: the bytes of its file, compressed or not)."""
        blob = self.storage.read(attachment.uuid)
        if as_stored:
            return blob
        try:
            return stored_bytes(blob, attachment.compression)
        except (ValueError, zlib.error) as exc:
            raise OrthancError(ErrorCode.CORRUPTED_FILE,
                               f"The attachment {attachment.uuid} cannot be read: {exc}") from exc

    def parsed_instance(self, instance_id: str) -> DicomFile:
        data, _ = self.read_instance(instance_id)
        try:
            return parse_dicom(data, UNBOUNDED)
        except DicomFormatError as exc:
            raise OrthancError(ErrorCode.CORRUPTED_FILE,
                               f"The stored file of {instance_id} is unreadable: {exc}") from exc

    def instance_tags(self, instance_id: str, fmt: JsonFormat, ignore_length: frozenset[int] = frozenset()
                      ) -> dict[str, Any]:
        parsed = self.parsed_instance(instance_id)
        return dataset_to_json(parsed.elements, fmt, Charset.of(parsed.elements, self.default_encoding),
                               ignore_length=ignore_length)

    def instance_header(self, instance_id: str, fmt: JsonFormat) -> dict[str, Any]:
        """The file meta information (``/instances/{id}/header``), binary elements left out as Orthanc does."""
        parsed = self.parsed_instance(instance_id)
        elements = [element for element in parsed.meta_elements if element.vr not in BINARY_VRS]
        return dataset_to_json(elements, fmt, Charset(None), top_level=False)

    def statistics(self) -> Statistics:
        with self.index.read() as tx:
            counts = tx.counts()
            size, uncompressed = tx.total_size(), tx.total_uncompressed_size()
        return Statistics(counts[Level.PATIENT], counts[Level.STUDY], counts[Level.SERIES], counts[Level.INSTANCE],
                          size, uncompressed)

    # Global properties.
    def increment_global_sequence(self, name: str) -> int:
        """The next value of a persistent counter (Orthanc's ``IncrementGlobalSequence``), from 1."""
        with self.index.write() as tx:
            return tx.increment_global(name)

    # Metadata.
    def metadata(self, level: Level, public_id: str) -> dict[str, str]:
        """All metadata of a resource, by name, in Orthanc's order (by number)."""
        with self.index.read() as tx:
            row = self._find(tx, level, public_id)
            return self._named(tx.metadata(row.internal_id))

    def get_metadata(self, level: Level, public_id: str, name: str) -> str | None:
        number = self.metadata_names.number(name)
        with self.index.read() as tx:
            row = self._find(tx, level, public_id)
            return tx.get_metadata(row.internal_id, number)

    def set_metadata(self, level: Level, public_id: str, name: str, value: str) -> None:
        number = self._user_number(name)
        with self.index.write() as tx:
            row = self._find(tx, level, public_id)
            tx.set_metadata(row.internal_id, number, value)
            tx.append_event(changes.UPDATED_METADATA, level, public_id, {"Metadata": self.metadata_names.name(number)},
                            now_iso())
        self._notify()

    def delete_metadata(self, level: Level, public_id: str, name: str) -> bool:
        """Remove a user metadata; False if it was not set."""
        number = self._user_number(name)
        with self.index.write() as tx:
            row = self._find(tx, level, public_id)
            deleted = tx.delete_metadata(row.internal_id, number)
            if deleted:
                tx.append_event(changes.UPDATED_METADATA, level, public_id,
                                {"Metadata": self.metadata_names.name(number)}, now_iso())
        if deleted:
            self._notify()
        return deleted

    def _user_number(self, name: str) -> int:
        number = self.metadata_names.number(name)
        if not is_user_metadata(number):
            raise OrthancError(ErrorCode.BAD_REQUEST, f"Metadata {name!r} is not user metadata (1024..65535); "
                               "only user metadata can be changed", http_status=403)
        return number

    # Deletion.
    def delete(self, level: Level, public_id: str) -> DeleteResult | None:
        """Delete a resource, its descendants and the ancestors left empty; None if it does not exist."""
        with self.index.write() as tx:
            row = tx.find_at(level, public_id)
            if row is None:
                return None
            deletion = self._delete_in(tx, row, now_iso())
        for file_uuid in deletion.files:
            self.storage.remove(file_uuid)
        self._notify()
        return DeleteResult(deletion.remaining, tuple(deletion.deleted))

    @staticmethod
    def _delete_in(tx: IndexTransaction, row: ResourceRow, now: str) -> Deletion:
        """Delete ``row``, its descendants and the ancestors left empty, with their ``Deleted`` events,
        in the transaction ``tx``; the caller removes the files once it is committed.

        The events come in Orthanc's order (its SQLite triggers'): the descendants depth first, each
        resource after its children, children in the order they were created; then the ancestors left
        empty, the topmost first; then ``row`` itself."""
        subtree = tx.subtree(row.internal_id)
        files = tx.attachment_uuids(r.internal_id for r in subtree)
        tx.delete([row.internal_id])
        remaining = None
        emptied: list[ResourceRow] = []
        child = row
        while child.parent_id is not None:
            parent = tx.parent(child)
            if tx.has_children(parent.internal_id):
                remaining = parent
                break
            emptied.append(parent)
            tx.delete([parent.internal_id])
            child = parent
        deleted = _descendants_first(subtree, row) + emptied[::-1] + [row]
        for gone in deleted:
            tx.append_event(changes.DELETED, gone.level, gone.public_id, {}, now)
            tx.forget_resource_events(gone.public_id)
        return Deletion(deleted, files, remaining)

    # Reconstruction.
    def reconstruct(self, level: Level, public_id: str) -> None:
        """Read the files of the resource's instances again, and set the main tags of each instance and
        of its ancestors (the last instance of a parent has the last word) and their SOP class
        metadata, as Orthanc's ``/reconstruct`` (after a modification that kept the UIDs, say)."""
        for instance in self.related(level, public_id, Level.INSTANCE) if level is not Level.INSTANCE \
                else [public_id]:
            data, _ = self.read_instance(instance)
            summary_ = IncomingInstance(data, Origin.lua(), UNBOUNDED, self.default_encoding).summary
            with self.index.write() as tx:
                row = self._find(tx, Level.INSTANCE, instance)
                sop_class = summary_.get(SOP_CLASS_UID)
                if sop_class:
                    tx.set_metadata(row.internal_id, MetadataType.SOP_CLASS_UID, sop_class)
                while True:
                    patient = maintags.extract_main_tags(Level.PATIENT, summary_) if row.level is Level.STUDY else None
                    tx.set_main_tags(row.internal_id, maintags.extract_main_tags(row.level, summary_), patient)
                    if row.parent_id is None:
                        break
                    row = tx.parent(row)

    # Protection.
    def _patient(self, tx: IndexTransaction, public_id: str) -> ResourceRow:
        row = tx.find_at(Level.PATIENT, public_id)
        if row is None:  # Orthanc answers 400 here, not 404
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"No patient with id {public_id}")
        return row

    def is_protected(self, patient_id: str) -> bool:
        with self.index.read() as tx:
            return tx.is_protected(self._patient(tx, patient_id).internal_id)

    def set_protected(self, patient_id: str, protected: bool) -> None:
        """A protected patient is never recycled (``MaximumStorageSize``, ``MaximumPatientCount``)."""
        with self.index.write() as tx:
            tx.set_protected(self._patient(tx, patient_id).internal_id, protected)

    def backlog_full(self) -> bool:
        """Whether ``event_backlog_limit`` events wait for delivery (counted up to the limit only: cheap
        while the scripts keep up)."""
        limit = self.event_backlog_limit
        return limit is not None and self.outbox.pending_count(limit) >= limit

    # Stability.
    def next_stable_deadline(self) -> float | None:
        """When the next unstable resource becomes stable (Unix time), None if there is none."""
        with self.index.read() as tx:
            return tx.next_unstable_deadline()

    def emit_stable_events(self, now: float | None = None) -> int:
        """Write a ``Stable`` event for each resource without a new instance for ``stable_age`` seconds."""
        now = time.time() if now is None else now
        count = 0
        with self.index.write() as tx:
            stamp = now_iso()
            for row in tx.due_unstable(now):
                main, _ = tx.main_tags(row.internal_id)
                payload = {"tags": main, "metadata": self._named(tx.metadata(row.internal_id))}
                tx.append_event(changes.stable(row.level), row.level, row.public_id, payload, stamp)
                tx.clear_unstable(row.internal_id)
                count += 1
        if count:
            self._notify()
        return count


def _descendants_first(subtree: list[ResourceRow], root: ResourceRow) -> list[ResourceRow]:
    """The resources below ``root`` (``subtree``: it and its descendants), each after its own children,
    children in the order of their internal ids (the order they were created)."""
    children: dict[int, list[ResourceRow]] = {}
    for resource in sorted(subtree, key=lambda r: r.internal_id):
        if resource.parent_id is not None:
            children.setdefault(resource.parent_id, []).append(resource)
    ordered: list[ResourceRow] = []

    def visit(parent: ResourceRow) -> None:
        for child in children.get(parent.internal_id, []):
            visit(child)
            ordered.append(child)
    visit(root)
    return ordered


def _accepted(instance_filter: Callable[[IncomingInstance], bool], incoming: IncomingInstance) -> bool:
    try:
        return bool(instance_filter(incoming))
    except OrthancError:
        raise
    except Exception as exc:  # a broken filter fails the store, it does not crash the caller
        raise OrthancError(ErrorCode.INTERNAL_ERROR, f"The instance filter failed: {exc!r}") from exc


def _remote_aet(origin: Origin) -> str:
    return origin.remote_aet if origin.request_origin is RequestOrigin.DICOM_PROTOCOL else ""


def instance_metadata(incoming: IncomingInstance, now: str) -> dict[int, str]:
    """The metadata Orthanc 1.10 attaches to a new instance, by number."""
    origin, summary_ = incoming.origin, incoming.summary
    metadata: dict[int, str] = {
        MetadataType.RECEPTION_DATE: now,
        MetadataType.REMOTE_AET: _remote_aet(origin),
        MetadataType.ORIGIN: origin.request_origin.value,
        MetadataType.TRANSFER_SYNTAX: incoming.transfer_syntax_uid,
    }
    if origin.request_origin in (RequestOrigin.REST_API, RequestOrigin.DICOM_PROTOCOL):
        metadata[MetadataType.REMOTE_IP] = origin.remote_ip
    if origin.request_origin is RequestOrigin.DICOM_PROTOCOL:
        metadata[MetadataType.CALLED_AET] = origin.called_aet
    if origin.request_origin is RequestOrigin.REST_API:
        metadata[MetadataType.HTTP_USERNAME] = origin.username
    if incoming.file.pixel_data_offset is not None:
        metadata[MetadataType.PIXEL_DATA_OFFSET] = str(incoming.file.pixel_data_offset)
    sop_class_uid = summary_.get(SOP_CLASS_UID)
    if sop_class_uid is not None:
        metadata[MetadataType.SOP_CLASS_UID] = sop_class_uid
    for tag in (INSTANCE_NUMBER, IMAGE_INDEX):
        if tag in summary_:
            index = summary_[tag]
            if index is not None:
                metadata[MetadataType.INDEX_IN_SERIES] = index.strip()
            break
    return dict(sorted(metadata.items()))


def expected_number_of_instances(summary_: Mapping[int, str | None]) -> int | None:
    """Orthanc's ``ComputeExpectedNumberOfInstances``; None when it cannot be computed."""
    def number(tag: int) -> int | None:
        return parse_integer(summary_.get(tag))
    pairs = ((IMAGES_IN_ACQUISITION, NUMBER_OF_TEMPORAL_POSITIONS), (NUMBER_OF_SLICES, NUMBER_OF_TIME_SLICES))
    for first, second in pairs:
        if summary_.get(first) is not None and summary_.get(second) is not None:
            a, b = number(first), number(second)
            if a is None or b is None:
                return None
            return a * b if a * b > 0 else None
    if summary_.get(CARDIAC_NUMBER_OF_IMAGES) is not None:
        count = number(CARDIAC_NUMBER_OF_IMAGES)
        return count if count is not None and count > 0 else None
    return None


COMPLETE = "Complete"


def series_status(expected: int | None, indexes: list[str | None]) -> str:
    """Orthanc's ``GetSeriesStatus``: Unknown, Missing, Complete or Inconsistent, from the expected
    number of instances and the ``IndexInSeries`` of each."""
    if expected is None:
        return "Unknown"
    seen: set[int] = set()
    for text in indexes:
        index = parse_integer(text)
        if index is None:
            return "Unknown"
        if not 0 < index <= expected or index in seen:
            return "Inconsistent"
        seen.add(index)
    return COMPLETE if len(seen) == expected else "Missing"
