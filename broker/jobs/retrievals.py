"""The retrieve jobs: ``DicomMoveScu`` (``POST /modalities/{name}/move``, ``/queries/{id}/retrieve``,
``/queries/{id}/answers/{n}/retrieve``) and ``DicomGetScu`` (``POST /modalities/{name}/get``).

As Orthanc's ``DicomMoveScuJob``, a ``SetOfCommandsJob``: one command per resource to retrieve, each a
map of tags with its ``QueryRetrieveLevel`` (``broker.dicom.retrieve_scu`` sends the identifiers of that
level), run in order, one per step; a failed command fails the job unless ``Permissive``. The public
``Content`` is Orthanc's: ``Description``, ``LocalAet``, ``RemoteAet`` and ``Query``, the list of the
commands in the request's DICOM format (``Short`` by default; for an answer of ``/queries``, only its
level and identifiers, as Orthanc keeps them). ``DicomGetScu`` adds ``ReceivedInstancesCount``.

The modality is kept as it was configured when the job was made (Orthanc keeps its parameters in the
job), so a job resumed after a restart asks the same peer. An association that fails (refused, aborted,
no answer) is a transient ``TransferError``, retried with backoff by an asynchronous job.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from broker.config.network import Modality
from broker.core.dicom_json import JsonFormat, map_to_json
from broker.core.tags import SPECIFIC_CHARACTER_SET, format_tag, parse_tag
from broker.jobs.commands import CommandsJob
from broker.jobs.model import JobContext, job_type

#: A command: a map of tags (Orthanc's ``DicomMap``) that names one resource.
Command = dict[int, str | None]


class RetrieveJob(CommandsJob[Command]):
    """The commands of a C-MOVE or C-GET to ``modality``, calling as ``local_aet``."""

    def __init__(self, modality: Modality, local_aet: str, commands: Iterable[Mapping[int, str | None]], *,
                 timeout: float | None = None, query_format: JsonFormat = JsonFormat.SHORT,
                 permissive: bool = False, position: int = 0, failed: Iterable[Command] = (),
                 description: str = "REST API") -> None:
        # Orthanc removes the SpecificCharacterSet its DicomMap → dataset conversion adds.
        super().__init__([{tag: value for tag, value in command.items() if tag != SPECIFIC_CHARACTER_SET}
                          for command in commands], permissive=permissive, position=position, failed=failed)
        self.modality = modality
        self.local_aet = local_aet
        self.timeout = timeout
        self.query_format = query_format
        self.description = description

    def content(self) -> dict[str, Any]:
        return {"Description": self.description, "LocalAet": self.local_aet, "RemoteAet": self.modality.aet,
                "Query": [map_to_json(command, self.query_format) for command in self.commands]}

    def serialize(self) -> dict[str, Any]:
        with self._lock:
            return {"Remote": self.modality.to_json(), "LocalAet": self.local_aet, "Timeout": self.timeout,
                    "Commands": [_saved(command) for command in self.commands],
                    "QueryFormat": self.query_format.value, "Permissive": self.permissive,
                    "Position": self.position, "Failed": [_saved(command) for command in self.failed],
                    "Description": self.description}

    @staticmethod
    def base_options(data: dict[str, Any]) -> dict[str, Any]:
        return {"modality": Modality.parse(data["Remote"]), "local_aet": data["LocalAet"],
                "commands": [_loaded(command) for command in data["Commands"]],
                "timeout": data.get("Timeout"), "query_format": JsonFormat(data.get("QueryFormat", "short")),
                "permissive": bool(data.get("Permissive", False)), "position": int(data.get("Position", 0)),
                "failed": [_loaded(command) for command in data.get("Failed", [])],
                "description": data.get("Description", "REST API")}


def _saved(command: Command) -> dict[str, str | None]:
    return {format_tag(tag): value for tag, value in command.items()}


def _loaded(saved: dict[str, str | None]) -> Command:
    return {parse_tag(key): value for key, value in saved.items()}


@job_type
class DicomMoveScuJob(RetrieveJob):
    """C-MOVE of each command to ``target_aet``."""

    type = "DicomMoveScu"

    def __init__(self, modality: Modality, local_aet: str, target_aet: str,
                 commands: Iterable[Mapping[int, str | None]], **options: Any) -> None:
        super().__init__(modality, local_aet, commands, **options)
        self.target_aet = target_aet

    def run(self, context: JobContext, command: Command) -> None:
        context.senders.move(self.modality, self.target_aet, command, self.local_aet, self.timeout)

    def serialize(self) -> dict[str, Any]:
        return {**super().serialize(), "TargetAet": self.target_aet}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> DicomMoveScuJob:
        options = cls.base_options(data)
        return cls(options.pop("modality"), options.pop("local_aet"), data["TargetAet"], options.pop("commands"),
                   **options)


@job_type
class DicomGetScuJob(RetrieveJob):
    """C-GET of each command: the instances come back to this server."""

    type = "DicomGetScu"

    def __init__(self, modality: Modality, local_aet: str, commands: Iterable[Mapping[int, str | None]], *,
                 received: int = 0, **options: Any) -> None:
        super().__init__(modality, local_aet, commands, **options)
        self.received = received

    def run(self, context: JobContext, command: Command) -> None:
        count = context.senders.get(self.modality, command, self.local_aet, self.timeout)
        with self._lock:
            self.received += count

    def content(self) -> dict[str, Any]:
        with self._lock:
            return {**super().content(), "ReceivedInstancesCount": self.received}

    def serialize(self) -> dict[str, Any]:
        return {**super().serialize(), "ReceivedInstancesCount": self.received}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> DicomGetScuJob:
        options = cls.base_options(data)
        return cls(options.pop("modality"), options.pop("local_aet"), options.pop("commands"),
                   received=int(data.get("ReceivedInstancesCount", 0)), **options)
