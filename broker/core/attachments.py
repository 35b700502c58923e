"""Attachments at every level (Orthanc's ``/{level}/{id}/attachments``): the DICOM file of an
instance, and user-defined ones (``UserContentType``, numbers 1024 to 65535) at any level.

A name is a system one (``dicom``, ``dicom-as-json``, ``dicom-until-pixel-data``), a configured user
name, or a number. Only user attachments can be written or deleted (403 otherwise, as Orthanc). A
changed attachment is a new file: the index row is replaced in one transaction and the old file is
removed once it is committed, so a failure loses neither.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from broker.core import changes
from broker.core.compression import NONE, ZLIB, encode
from broker.core.index import Attachment
from broker.core.levels import Level
from broker.core.metadata import now_iso
from broker.core.store import Store
from broker.errors import BareHttpStatus, ErrorCode, OrthancError

DICOM = 1
SYSTEM_TYPES = {"dicom": DICOM, "dicom-as-json": 2, "dicom-until-pixel-data": 3}
FIRST_USER_TYPE, LAST_USER_TYPE = 1024, 65535


@dataclass(frozen=True)
class ContentTypes:
    """``UserContentType``: name → (number, MIME type)."""

    user: dict[str, tuple[int, str]] = field(default_factory=dict)

    def number(self, name: str) -> int:
        if name in SYSTEM_TYPES:
            return SYSTEM_TYPES[name]
        if name in self.user:
            return self.user[name][0]
        if name.isdigit():
            return int(name)
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Unknown attachment: {name}")

    def name(self, number: int) -> str:
        for name, value in SYSTEM_TYPES.items():
            if value == number:
                return name
        return next((name for name, (value, _) in self.user.items() if value == number), str(number))

    def mime(self, number: int) -> str:
        if number == DICOM:
            return "application/dicom"
        return next((mime for value, mime in self.user.values() if value == number and mime),
                    "application/octet-stream")


def info(attachment: Attachment) -> dict[str, Any]:
    return {"CompressedMD5": attachment.stored_md5, "CompressedSize": attachment.stored_size,
            "ContentType": attachment.content_type, "UncompressedMD5": attachment.md5,
            "UncompressedSize": attachment.size, "Uuid": attachment.uuid}


class Attachments:
    def __init__(self, store: Store, types: ContentTypes) -> None:
        self.store = store
        self.types = types

    def list(self, level: Level, public_id: str) -> list[Attachment]:
        with self.store.index.read() as tx:
            return tx.attachments(self._row(tx, level, public_id).internal_id)

    def get(self, level: Level, public_id: str, name: str) -> Attachment:
        number = self.types.number(name)
        with self.store.index.read() as tx:
            attachment = tx.attachment(self._row(tx, level, public_id).internal_id, number)
        if attachment is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No attachment {name} on {public_id}")
        return attachment

    def put(self, level: Level, public_id: str, name: str, data: bytes) -> Attachment:
        number = self._writable(name)
        return self._replace(level, public_id, number, data, self.store.compression)

    def delete(self, level: Level, public_id: str, name: str) -> None:
        number = self._writable(name)
        with self.store.index.write() as tx:
            row = self._row(tx, level, public_id)
            attachment = tx.attachment(row.internal_id, number)
            if attachment is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No attachment {name} on {public_id}")
            tx.delete_attachment(row.internal_id, number)
            tx.append_event(changes.UPDATED_ATTACHMENT, level, public_id, {"Attachment": self.types.name(number)},
                            now_iso())
        self.store.storage.remove(attachment.uuid)

    def set_compression(self, level: Level, public_id: str, name: str, compressed: bool) -> None:
        """``compress`` / ``uncompress``: the same data written again, compressed or not."""
        attachment = self.get(level, public_id, name)
        if (attachment.compression == ZLIB) != compressed:
            self._replace(level, public_id, attachment.content_type, self.store.read_attachment(attachment),
                          ZLIB if compressed else NONE, keep_revision=True)

    def verify_md5(self, level: Level, public_id: str, name: str) -> None:
        attachment = self.get(level, public_id, name)
        data = self.store.read_attachment(attachment)
        if attachment.md5 is not None and hashlib.md5(data).hexdigest() != attachment.md5:
            raise OrthancError(ErrorCode.CORRUPTED_FILE, f"The MD5 of the attachment {name} of {public_id} differs")

    def _writable(self, name: str) -> int:
        number = self.types.number(name)
        if not FIRST_USER_TYPE <= number <= LAST_USER_TYPE:
            raise BareHttpStatus(403, f"The attachment {name} is not a user attachment (1024..65535)")
        return number

    def _row(self, tx: Any, level: Level, public_id: str) -> Any:
        row = tx.find_at(level, public_id)
        if row is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No {level.label.lower()} with id {public_id}")
        return row

    def _replace(self, level: Level, public_id: str, number: int, data: bytes, compression: int, *,
                 keep_revision: bool = False) -> Attachment:
        encoded = encode(data, compression, with_md5=True)
        file_uuid = self.store.storage.write(encoded.stored)
        try:
            with self.store.index.write() as tx:
                row = self._row(tx, level, public_id)
                old = tx.attachment(row.internal_id, number)
                revision = 0 if old is None else old.revision + (0 if keep_revision else 1)
                if old is not None:
                    tx.delete_attachment(row.internal_id, number)
                tx.add_attachment(row.internal_id, number, file_uuid, encoded.size, encoded.md5,
                                  encoded.compressed_size, encoded.compressed_md5, encoded.compression, revision)
                if not keep_revision:
                    tx.append_event(changes.UPDATED_ATTACHMENT, level, public_id,
                                    {"Attachment": self.types.name(number)}, now_iso())
                attachment = tx.attachment(row.internal_id, number)
        except BaseException:
            self.store.storage.remove(file_uuid)
            raise
        if old is not None:
            self.store.storage.remove(old.uuid)
        assert attachment is not None
        return attachment
