"""``Archive`` jobs: the asynchronous form of ``/{level}/{id}/archive``, ``/media`` and
``/tools/create-archive|media`` (``"Synchronous": false``). The ZIP is written to a temporary file
kept for ``GET /jobs/{id}/archive``; only the last ``MediaArchiveSize`` are kept (Orthanc's
``MediaArchive``), the older ones are removed. An archive is not kept across a restart: the job then
makes it again.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

from broker.core.archive import hierarchical_names, reader, write_archive, write_media
from broker.jobs.model import Job, JobContext, StepResult, job_type

MEGA_BYTES = 1024 * 1024


class ArchiveOutputs:
    """The archives kept for download: the last ``size`` ones, the others removed from disk."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: deque[ArchiveJob] = deque()
        self._lock = threading.Lock()

    def keep(self, job: ArchiveJob) -> None:
        with self._lock:
            self._kept.append(job)
            while len(self._kept) > self.size:
                self._kept.popleft().discard()


@job_type
class ArchiveJob(Job):
    type = "Archive"

    def __init__(self, instances: list[str], media: bool, transcode: str | None = None,
                 description: str = "REST API") -> None:
        self.instances = instances
        self.media = media
        self.transcode = transcode
        self.description = description
        self.path: Path | None = None
        self.archive_size = 0
        self.uncompressed_size = 0
        self._lock = threading.Lock()

    def step(self, context: JobContext) -> StepResult:
        store = context.services.store
        read = reader(store, self.transcode)
        data = write_media(self.instances, read) if self.media else \
            write_archive(hierarchical_names(store, self.instances), read)
        handle, name = tempfile.mkstemp(prefix="luabroker-archive-", suffix=".zip")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        with self._lock:
            self.path = Path(name)
            self.archive_size = len(data)
            self.uncompressed_size = sum(store.read_instance(i)[1].size for i in self.instances)
        context.services.archive_outputs.keep(self)
        return StepResult.success()

    def output(self) -> bytes | None:
        """The ZIP, while it is kept."""
        with self._lock:
            return self.path.read_bytes() if self.path is not None and self.path.exists() else None

    def discard(self) -> None:
        with self._lock:
            if self.path is not None:
                self.path.unlink(missing_ok=True)
                self.path = None

    def progress(self) -> float:
        with self._lock:
            return 1.0 if self.path is not None else 0.0

    def content(self) -> dict[str, Any]:
        with self._lock:
            return {"Description": self.description, "InstancesCount": len(self.instances),
                    "ArchiveSize": str(self.archive_size), "ArchiveSizeMB": self.archive_size // MEGA_BYTES,
                    "UncompressedSize": str(self.uncompressed_size),
                    "UncompressedSizeMB": self.uncompressed_size // MEGA_BYTES}

    def serialize(self) -> dict[str, Any]:
        return {"Instances": self.instances, "Media": self.media, "Transcode": self.transcode,
                "Description": self.description}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> ArchiveJob:
        return cls(list(data["Instances"]), bool(data["Media"]), data.get("Transcode"),
                   data.get("Description", "REST API"))
