"""The storage area: one file per attachment, named by a random UUID, laid out as Orthanc does
(``<root>/<uuid[0:2]>/<uuid[2:4]>/<uuid>``).

A file is written before the index transaction that references it commits, so a crash in between
leaves an orphan file and no index row, never an index row without its file. Writes are not fsync'd
by default (``sync=False``): the index uses WAL with ``synchronous=NORMAL``, so a killed process loses
nothing (the kernel still holds the data) while a power loss may lose the last instances, file and
row together. ``sync=True`` (Orthanc's ``SyncStorageArea``) fsyncs each file and its directory.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol

from broker.errors import ErrorCode, OrthancError


class Storage(Protocol):
    """What the store needs of a storage area: this folder, or a bucket (``broker.core.object_storage``)."""

    def write(self, data: bytes) -> str: ...

    def read(self, file_uuid: str) -> bytes: ...

    def remove(self, file_uuid: str) -> None: ...


class StorageArea:
    def __init__(self, root: Path, *, sync: bool = False) -> None:
        self.root = Path(root)
        self.sync = sync
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, file_uuid: str) -> Path:
        return self.root / file_uuid[0:2] / file_uuid[2:4] / file_uuid

    def write(self, data: bytes) -> str:
        """Store ``data`` under a new UUID and return it."""
        file_uuid = str(uuid.uuid4())
        directory = os.path.join(self.root, file_uuid[0:2], file_uuid[2:4])
        path = os.path.join(directory, file_uuid)
        try:
            handle = self._create(directory, path)
            with handle:
                handle.write(data)
                if self.sync:
                    handle.flush()
                    os.fsync(handle.fileno())
            if self.sync:
                self._fsync_directory(directory)
        except OSError as exc:
            self.remove(file_uuid)
            raise OrthancError(ErrorCode.CANNOT_WRITE_FILE,
                               f"Cannot write {path}: {exc.strerror}; check the free space and the "
                               "permissions of the storage directory") from exc
        return file_uuid

    @staticmethod
    def _create(directory: str, path: str) -> BinaryIO:
        for _ in range(2):
            try:
                return open(path, "xb")
            except FileNotFoundError:  # first file of this directory, or a delete just removed it
                os.makedirs(directory, exist_ok=True)
        return open(path, "xb")

    def read(self, file_uuid: str) -> bytes:
        try:
            return self.path(file_uuid).read_bytes()
        except FileNotFoundError as exc:
            raise OrthancError(ErrorCode.INEXISTENT_FILE,
                               f"The file {file_uuid} is missing from the storage area {self.root}") from exc

    def remove(self, file_uuid: str) -> None:
        """Remove a file if it exists (idempotent), then its two directories if they became empty."""
        path = self.path(file_uuid)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        for directory in (path.parent, path.parent.parent):
            try:
                os.rmdir(directory)
            except OSError:  # not empty (or already gone): keep it
                break

    @staticmethod
    def _fsync_directory(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
