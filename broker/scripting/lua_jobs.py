"""The broker side of Orthanc's deferred "Lua job" (spec section 4).

``OnStoredInstance`` and ``OnStable*`` run through ``_CallWithJob`` (lua-runtime/jobs.lua): the
operations the helpers recorded come back, converted with keepStrings=false, once the callback has
returned; ``LuaJobs.submit`` adds them to the current "Lua" job, a ``SequenceOfOperations`` job
(description "Lua", priority 0, at most 1000 operations) that keeps receiving the operations of later
callbacks until it has finished or is full. If the callback raised, the broker never calls ``submit``:
the operations are discarded.

Each operation is parsed as Orthanc's ``LuaScripting::ParseOperation`` parses it, and wired with
Orthanc's rule: a non-empty ``Resource`` is the operation's own input; ``''`` connects it to the
outputs of the previous operation of the same callback (the first one then gets no input). A bad
operation (unknown modality or peer, bad ``Replace``/``Remove``, ``Arguments`` not a list, ...) is a
submission error, logged as "Error while processing Lua events": the operations before it are kept
and run, it and the later ones are dropped.
"""
from __future__ import annotations

import logging
import math
import threading
from typing import Any

from broker.config.jobs import JobsSettings
from broker.errors import ErrorCode, OrthancError
from broker.jobs.engine import JobsEngine
from broker.jobs.operations import (
    DeleteOperation,
    ModifyOperation,
    Operation,
    StorePeerOperation,
    StoreScuOperation,
    SystemCallOperation,
)
from broker.jobs.sequence import JobClosed, SequenceOfOperationsJob
from broker.services import Services

log = logging.getLogger("luabroker.lua")

LUA_JOB_DESCRIPTION = "Lua"
LUA_JOB_PRIORITY = 0


def as_string(value: Any) -> str:
    """jsoncpp's ``asString()``, which Orthanc applies to ``Resource``, ``Modality``, ``LocalAet``, ...:
    null is ``""``, numbers and booleans are written out; an array or object is an error."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, str):
        return value
    raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Type is not convertible to string: {value!r}")


def _argument(value: Any) -> str:
    """One item of ``CallSystem``'s ``Arguments``: a string or a number (Orthanc writes floats with
    ``lexical_cast<std::string>(asFloat())``)."""
    if isinstance(value, (str, bytes)):
        return as_string(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, "CallSystem: each argument must be a string or a number")
    if isinstance(value, int):
        return str(value)
    single = float(f"{value:.9g}")
    return str(int(single)) if single.is_integer() and not math.isinf(single) else f"{single:.9g}"


class LuaJobs:
    """Turns the recorded operations into the current "Lua" job of the jobs engine."""

    def __init__(self, services: Services, engine: JobsEngine, settings: JobsSettings) -> None:
        self.services = services
        self.engine = engine
        self.settings = settings
        self._lock = threading.Lock()
        self._current: SequenceOfOperationsJob | None = None
        self._current_id: str | None = None

    @property
    def current_id(self) -> str | None:
        """The id of the "Lua" job receiving operations now (None before the first one)."""
        return self._current_id

    def submit(self, operations: Any, source: str = "") -> str | None:
        """Add the operations recorded by one callback (``source`` names it in the logs) to the current
        "Lua" job, or to a new one; returns the job id (None when nothing was added). Never raises:
        problems are logged, as Orthanc logs the errors of its event thread."""
        if operations is None or operations == []:
            return None
        if not isinstance(operations, list):
            log.error("Error while processing Lua events: %s: _AccessJob() did not give a list of operations "
                      "(is the global _job overwritten?)", source)
            return None
        with self._lock:
            job, new = self._job()
            added = 0
            try:
                with job.editing():
                    added = self._add(job, operations, source)
            except JobClosed:  # finished between _job() and editing(): take a fresh one
                job, new = self._fresh(), True
                with job.editing():
                    added = self._add(job, operations, source)
            if added:
                self._audit(operations[:added], source)
            if new and added:
                try:
                    job_id = self.engine.submit(job, LUA_JOB_PRIORITY)
                except OrthancError as exc:  # the engine is stopping
                    log.error("Error while processing Lua events: %s: %d operation(s) dropped: %s",
                              source or "Lua callback", added, exc)
                    return None
                self._current, self._current_id = job, job_id
            elif added and self._current_id is not None:
                self.engine.touch(self._current_id)
            return self._current_id if added else None

    def _audit(self, operations: list[Any], source: str) -> None:
        """The operations in the audit log: what, on which resource, towards whom."""
        audit = getattr(self.services, "audit", None)
        if audit is None:
            return
        summary = [{"Operation": op.get("Operation"), "Resource": op.get("Resource"),
                    "Target": op.get("Modality") or op.get("Peer") or op.get("Command")}
                   for op in operations if isinstance(op, dict)]
        audit.note(self.services.scripts.tenant, "script.job", f"script:{source}", Operations=summary)

    def _job(self) -> tuple[SequenceOfOperationsJob, bool]:
        job = self._current
        if job is None or job.closed or job.count() >= self.settings.lua_max_operations:
            return self._fresh(), True
        return job, False

    def _fresh(self) -> SequenceOfOperationsJob:
        return SequenceOfOperationsJob(LUA_JOB_DESCRIPTION, self.settings.lua_trailing_timeout_s)

    def _add(self, job: SequenceOfOperationsJob, operations: list[Any], source: str) -> int:
        """(inside ``job.editing()``) Parse and wire each operation in order; stop at the first bad one."""
        added, previous = 0, None
        for position, entry in enumerate(operations):
            try:
                if not isinstance(entry, dict) or "Operation" not in entry or "Resource" not in entry:
                    raise OrthancError(ErrorCode.INTERNAL_ERROR, f"operation {position + 1} is not an object with "
                                       "'Operation' and 'Resource'")
                operation = self.parse(entry)
                resource = as_string(entry["Resource"])
            except Exception as exc:  # OrthancError; anything else is a bug, reported the same way
                details = (exc.details or exc.message) if isinstance(exc, OrthancError) else repr(exc)
                log.error("Error while processing Lua events: %s: %s (operation %d of %d; %d kept, the rest "
                          "dropped)", source or "Lua callback", details, position + 1, len(operations), added)
                break
            index = job.add_operation(operation)
            if resource:
                job.add_input(index, resource)
            elif previous is not None:
                job.connect(previous, index)
            previous = index
            added += 1
        return added

    def parse(self, entry: dict[str, Any]) -> Operation:
        """One recorded operation → an ``Operation`` (Orthanc's ``ParseOperation``); ``OrthancError`` for
        a bad one."""
        kind = as_string(entry.get("Operation"))
        senders = self.engine.context.senders
        if kind == "delete":
            return DeleteOperation()
        if kind == "store-scu":
            name = as_string(entry.get("Modality"))
            senders.modality(name)  # unknown → "No modality with symbolic name: ..."
            local_aet = as_string(entry["LocalAet"]) if entry.get("LocalAet") is not None else None
            return StoreScuOperation(name, local_aet)
        if kind == "store-peer":
            name = as_string(entry.get("Peer"))
            senders.peer(name)      # unknown → "No peer with symbolic name: ..."
            return StorePeerOperation(name)
        if kind == "modify":
            request: dict[str, Any] = {key: entry[key] for key in ("Replace", "Remove", "RemovePrivateTags")
                                       if key in entry}
            operation = ModifyOperation(request)
            operation.parsed()      # a bad Replace/Remove is a submission error, as in Orthanc
            return operation
        if kind == "call-system":
            arguments = entry.get("Arguments")
            if not isinstance(arguments, list):
                raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, "CallSystem: the arguments must be a list")
            return SystemCallOperation(as_string(entry.get("Command")), [_argument(a) for a in arguments])
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown Lua operation: {kind!r}")
