"""The operations of a "Lua" job (``SequenceOfOperations``), one class per Orthanc operation.

``apply(context, instance_id)`` processes one input and returns the outputs passed to the connected
operation (spec section 4.5):

* ``store-scu`` / ``store-peer``: send the instance. Orthanc logs a failed send and passes the input
  on anyway; luabroker raises ``TransferError`` instead (the engine retries, then fails the job, so a
  later ``Delete`` never runs after a failed send), unless ``Jobs.LuaTransferFailure`` is
  ``"continue"``. An instance that cannot be read is logged and passed on, as in Orthanc.
* ``modify``: the modified copy (new SOPInstanceUID) is stored with origin ``Lua`` and metadata
  ``ModifiedFrom``, which runs ``ReceivedInstanceFilter`` and ``OnStoredInstance`` again; its id is the
  output, only on success.
* ``delete``: deletes the instance; no output.
* ``call-system``: runs ``command args... <file>`` on a temporary copy of the instance, only in
  trusted mode (``Jobs.CallSystemEnabled``); passes the input on if the command succeeded.
"""
from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from broker.core.levels import Level
from broker.core.metadata import MetadataType
from broker.core.modify import modify_instance_bytes
from broker.core.modify_request import ModifyRequest
from broker.core.origin import Origin
from broker.core.store import Store, StoreResult
from broker.errors import OrthancError
from broker.jobs.model import JobContext, TransferError

log = logging.getLogger("luabroker.jobs")


class Operation(ABC):
    type: ClassVar[str]

    @abstractmethod
    def apply(self, context: JobContext, instance_id: str) -> list[str]:
        ...

    @abstractmethod
    def serialize(self) -> dict[str, Any]:
        """``{"Type": ..., ...}``, read back by ``unserialize``."""

    @classmethod
    @abstractmethod
    def unserialize(cls, data: dict[str, Any]) -> Operation:
        ...


OPERATION_TYPES: dict[str, type[Operation]] = {}


def operation_type(cls: type[Operation]) -> type[Operation]:
    assert cls.type not in OPERATION_TYPES, f"Operation {cls.type} is registered twice"
    OPERATION_TYPES[cls.type] = cls
    return cls


def _read(context: JobContext, instance_id: str, what: str) -> bytes | None:
    try:
        data, _ = context.services.store.read_instance(instance_id)
        return data
    except OrthancError as exc:
        log.error("Lua: Unable to %s instance %s: %s", what, instance_id, exc)
        return None


class _Transfer(Operation):
    destination: str

    def send(self, context: JobContext, data: bytes) -> None:
        raise NotImplementedError

    def apply(self, context: JobContext, instance_id: str) -> list[str]:
        data = _read(context, instance_id, "send")
        if data is None:
            return [instance_id]  # as Orthanc: logged, the input is passed on
        try:
            self.send(context, data)
        except TransferError as exc:
            if context.settings.lua_transfer_failure != "continue":
                raise
            log.error("Lua: Unable to send instance %s to %s: %s", instance_id, self.destination, exc.details)
        return [instance_id]


@operation_type
class StoreScuOperation(_Transfer):
    type = "store-scu"

    def __init__(self, modality: str, local_aet: str | None) -> None:
        self.modality = modality
        self.local_aet = local_aet  # None: the modality's LocalAet, else DicomAet

    @property
    def destination(self) -> str:  # type: ignore[override]
        return f"modality {self.modality}"

    def send(self, context: JobContext, data: bytes) -> None:
        context.senders.store_to_modality(self.modality, data, self.local_aet)

    def serialize(self) -> dict[str, Any]:
        return {"Type": self.type, "Modality": self.modality, "LocalAet": self.local_aet}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> StoreScuOperation:
        return cls(data["Modality"], data.get("LocalAet"))


@operation_type
class StorePeerOperation(_Transfer):
    type = "store-peer"

    def __init__(self, peer: str) -> None:
        self.peer = peer

    @property
    def destination(self) -> str:  # type: ignore[override]
        return f"peer {self.peer}"

    def send(self, context: JobContext, data: bytes) -> None:
        context.senders.store_to_peer(self.peer, data)

    def serialize(self) -> dict[str, Any]:
        return {"Type": self.type, "Peer": self.peer}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> StorePeerOperation:
        return cls(data["Peer"])


@operation_type
class ModifyOperation(Operation):
    type = "modify"

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request  # {Replace, Remove, RemovePrivateTags}, as recorded by the script
        self._parsed: Any = None

    def parsed(self) -> Any:
        """The ``ModifyRequest`` (raises ``OrthancError`` for a bad one: a submission error)."""
        if self._parsed is None:
            self._parsed = ModifyRequest.from_json(self.request)
        return self._parsed

    def apply(self, context: JobContext, instance_id: str) -> list[str]:
        data = _read(context, instance_id, "modify")
        if data is None:
            return []
        try:
            modified = modify_instance_bytes(data, self.parsed(), new_sop_instance_uid=True)
            result = store_modified(context.services.store, modified, instance_id)
        except Exception as exc:  # OrthancError, and whatever a broken file makes the modifier raise
            log.error("Lua: Unable to modify instance %s: %s", instance_id, exc)
            return []
        if result.status == "FilteredOut":
            log.warning("Lua: the modified copy of instance %s was filtered out", instance_id)
            return []
        return [result.instance_id]

    def serialize(self) -> dict[str, Any]:
        return {"Type": self.type, "Request": self.request}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> ModifyOperation:
        return cls(data["Request"])


def store_modified(store: Store, data: bytes, original_id: str) -> StoreResult:
    """Store a modified copy with origin ``Lua`` and metadata ``ModifiedFrom``."""
    return store.store_instance(data, Origin.lua(), metadata={MetadataType.MODIFIED_FROM: original_id})


@operation_type
class DeleteOperation(Operation):
    type = "delete"

    def apply(self, context: JobContext, instance_id: str) -> list[str]:
        try:
            if context.services.store.delete(Level.INSTANCE, instance_id) is None:
                log.warning("Lua: cannot delete instance %s: it does not exist (any more)", instance_id)
        except OrthancError as exc:
            log.error("Lua: Unable to delete instance %s: %s", instance_id, exc)
        return []

    def serialize(self) -> dict[str, Any]:
        return {"Type": self.type}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> DeleteOperation:
        return cls()


@operation_type
class SystemCallOperation(Operation):
    type = "call-system"

    def __init__(self, command: str, arguments: list[str]) -> None:
        self.command = command
        self.arguments = arguments

    def apply(self, context: JobContext, instance_id: str) -> list[str]:
        settings = context.settings
        if not settings.call_system_enabled:
            log.error("Lua: CallSystem(%s) refused for instance %s: system calls run only in trusted mode "
                      "(LuaTrustedScripts, or \"Jobs\": {\"CallSystemEnabled\": true})", self.command, instance_id)
            return []
        data = _read(context, instance_id, "run a system call on")
        if data is None:
            return []
        handle, path = tempfile.mkstemp(suffix=".dcm", prefix="luabroker-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            completed = subprocess.run([self.command, *self.arguments, path], stdin=subprocess.DEVNULL,
                                       capture_output=True, timeout=settings.call_system_timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("Lua: Failed system call - %s: %s", self.command, exc)
            return []
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        if completed.returncode != 0:
            log.error("Lua: Failed system call - %s exited with status %d: %s", self.command, completed.returncode,
                      completed.stderr.decode("utf-8", "replace")[-2000:])
            return []
        return [instance_id]

    def serialize(self) -> dict[str, Any]:
        return {"Type": self.type, "Command": self.command, "Arguments": self.arguments}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> SystemCallOperation:
        return cls(data["Command"], list(data.get("Arguments", [])))
