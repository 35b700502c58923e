"""The two transfer jobs of the REST API: ``DicomModalityStore`` (``POST /modalities/{name}/store``,
and the asynchronous C-MOVE of ``broker.dicom.retrieve_scp``) and ``OrthancPeerStore``
(``POST /peers/{name}/store``). Each step sends one instance.

As Orthanc's ``SetOfInstancesJob`` (``broker.jobs.commands``, an instance per command): the named
resources (patients, studies, series, instances) are expanded to their instances when the job is
created; a failed instance fails the job, unless ``Permissive`` (then it is counted in
``FailedInstancesCount`` and the job goes on). Unlike Orthanc, a transient failure is retried with
backoff first (see ``broker.jobs.engine``), and a resubmitted job resumes at the instance that failed
instead of sending everything again.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from broker.core.dicom_file import CannotTranscode, transcoded
from broker.jobs.commands import CommandsJob
from broker.jobs.model import JobContext, job_type

MEGA_BYTES = 1024 * 1024
log = logging.getLogger("luabroker.jobs")


class InstancesJob(CommandsJob[str]):
    """Sends its commands, instance ids, one per step; ``parents`` are the resources the request named."""

    description = "REST API"

    def __init__(self, instances: Iterable[str], parents: Iterable[str] = (), *, permissive: bool = False,
                 position: int = 0, failed: Iterable[str] = (), description: str = "REST API") -> None:
        super().__init__(instances, permissive=permissive, position=position, failed=failed)
        self.parents = list(parents)
        self.description = description

    def send(self, context: JobContext, instance_id: str, data: bytes) -> None:
        raise NotImplementedError

    def run(self, context: JobContext, instance_id: str) -> None:
        data, _ = context.services.store.read_instance(instance_id)
        self.send(context, instance_id, data)

    def base_content(self) -> dict[str, Any]:
        content: dict[str, Any] = {"Description": self.description, "FailedInstancesCount": len(self.failed),
                                   "InstancesCount": len(self.commands)}
        if self.parents:
            content["ParentResources"] = list(self.parents)
        return content

    def base_serialize(self) -> dict[str, Any]:
        with self._lock:
            return {"Instances": list(self.commands), "ParentResources": list(self.parents),
                    "Permissive": self.permissive, "Position": self.position, "FailedInstances": list(self.failed),
                    "Description": self.description}

    @staticmethod
    def base_options(data: dict[str, Any]) -> dict[str, Any]:
        return {"instances": data["Instances"], "parents": data.get("ParentResources", []),
                "permissive": bool(data.get("Permissive", False)), "position": int(data.get("Position", 0)),
                "failed": data.get("FailedInstances", []), "description": data.get("Description", "REST API")}


@job_type
class DicomModalityStoreJob(InstancesJob):
    type = "DicomModalityStore"

    def __init__(self, modality: str, remote_aet: str, local_aet: str | None, instances: Iterable[str],
                 parents: Iterable[str] = (), *, default_local_aet: str = "ORTHANC",
                 move_originator: tuple[str, int] | None = None, **options: Any) -> None:
        super().__init__(instances, parents, **options)
        self.modality = modality
        self.remote_aet = remote_aet
        self.local_aet = local_aet            # None: the modality's LocalAet, else DicomAet
        self.default_local_aet = default_local_aet
        self.move_originator = move_originator  # (AET, message id) of the C-MOVE this job serves, if any

    def send(self, context: JobContext, instance_id: str, data: bytes) -> None:
        context.senders.store_to_modality(self.modality, data, self.local_aet, self.move_originator)

    def content(self) -> dict[str, Any]:
        content = self.base_content()
        content["LocalAet"] = self.local_aet or self.default_local_aet
        content["RemoteAet"] = self.remote_aet
        if self.move_originator is not None:
            content["MoveOriginatorAET"], content["MoveOriginatorID"] = self.move_originator
        return content

    def serialize(self) -> dict[str, Any]:
        return {**self.base_serialize(), "Modality": self.modality, "RemoteAet": self.remote_aet,
                "LocalAet": self.local_aet, "DefaultLocalAet": self.default_local_aet,
                "MoveOriginator": list(self.move_originator) if self.move_originator else None}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> DicomModalityStoreJob:
        originator = data.get("MoveOriginator")
        return cls(data["Modality"], data["RemoteAet"], data.get("LocalAet"),
                   default_local_aet=data.get("DefaultLocalAet", "ORTHANC"),
                   move_originator=(str(originator[0]), int(originator[1])) if originator else None,
                   **cls.base_options(data))


@job_type
class OrthancPeerStoreJob(InstancesJob):
    type = "OrthancPeerStore"

    def __init__(self, peer: str, url: str, instances: Iterable[str], parents: Iterable[str] = (), *,
                 size: int = 0, transcode: str | None = None, compress: bool = False, **options: Any) -> None:
        super().__init__(instances, parents, **options)
        self.peer = peer
        self.url = url
        self.size = size
        self.transcode = transcode  # as Orthanc: an instance that cannot be transcoded goes as stored
        self.compress = compress

    def send(self, context: JobContext, instance_id: str, data: bytes) -> None:
        if self.transcode is not None:
            try:
                data = transcoded(data, self.transcode)
            except CannotTranscode as exc:
                log.warning("Cannot transcode instance %s, sending it as stored: %s", instance_id, exc)
        context.senders.store_to_peer(self.peer, data, compress=self.compress)
        with self._lock:
            self.size += len(data)

    def content(self) -> dict[str, Any]:
        content = self.base_content()
        content.update({"Compress": self.compress, "Peer": [self.url], "Size": str(self.size),
                        "SizeMB": self.size // MEGA_BYTES})
        if self.transcode is not None:
            content["Transcode"] = self.transcode
        return content

    def serialize(self) -> dict[str, Any]:
        return {**self.base_serialize(), "Peer": self.peer, "Url": self.url, "Size": self.size,
                "Transcode": self.transcode, "Compress": self.compress}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> OrthancPeerStoreJob:
        return cls(data["Peer"], data.get("Url", ""), size=int(data.get("Size", 0)), transcode=data.get("Transcode"),
                   compress=bool(data.get("Compress", False)), **cls.base_options(data))
