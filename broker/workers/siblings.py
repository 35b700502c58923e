"""The other worker processes of a server, as one worker sees them: what it asks of them (through the
supervisor, by signal; or directly, on their control socket) and what it learns from them.

Every worker answers on a Unix stream socket of the abstract namespace named after the storage
directory and its pid (``ControlServer``): one JSON request per connection, one JSON answer.
``{"Metrics": false}`` asks for its status (for ``GET /lua/status``; with ``true``, its metrics too),
so that an operator sees every process through the one HTTP front end; ``{"Settings": {...}}`` has
it apply the runtime settings (``broker.workers.settings``). The siblings are the children of the supervisor
(``/proc/<supervisor>/task/<supervisor>/children``), so a worker that died and was started again is
found under its new pid, and a dead one is not looked for.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.config.postgresql import tenant_schema
from broker.core.cluster import NotificationListener
from broker.scripting.lifecycle import ReloadError
from broker.services import Services
from broker.workers import settings
from broker.workers.local_socket import LocalEndpoint, RequestServer, ask, storage_key
from sandbox.layers import child_pids
from sandbox.process import stat_fields

#: How long a worker waits for another one's answer: a worker busy ingesting answers in milliseconds
#: (a thread of its own), a stuck one must not hold ``GET /lua/status`` or a ``PUT``.
CONTROL_TIMEOUT_S = 2.0
STOP_POLL_S = 0.05


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not reaped yet, does not)."""
    fields = stat_fields(pid)
    return fields is not None and b"Z" not in fields[:1]


#: The payload of the notification of a reload: ``reload <NodeName>`` (the node whose workers its
#: supervisor signals already).
RELOADED = "reload "


def cluster_listener(services: Services) -> NotificationListener | None:
    """On PostgreSQL: what has this worker follow what the coordinator changed for the whole cluster,
    whichever node it is on: the runtime settings (``broker.workers.settings``) and a ``POST /lua/reload``
    made on another node. None on SQLite, where the supervisor and the control sockets reach every worker."""
    if not services.config.postgresql.enable_index:
        return None

    def notified(payload: str) -> None:
        if payload == settings.SETTINGS_CHANGED:
            changed = settings.load(services)
            if changed is not None:
                settings.apply(services, changed)
        elif payload.startswith(RELOADED) and payload[len(RELOADED):] != services.config.node_name:
            try:
                services.scripts.reload(f"POST /lua/reload on node {payload[len(RELOADED):]}")
            except ReloadError:
                pass  # logged by the script set; the version in use stays

    return NotificationListener(services.config.postgresql.conninfo, tenant_schema(services.scripts.tenant),
                                notified, "control")


def control_address(storage_directory: Path, pid: int) -> bytes:
    return b"\0luabroker-control-" + storage_key(storage_directory) + f"-{pid}".encode()


class Siblings:
    """What one worker asks of the others, and reads from them."""

    def __init__(self, services: Services, snapshot: Callable[[bool], dict[str, Any]]) -> None:
        self.services = services
        self.storage_directory = services.config.storage_directory
        self.snapshot = snapshot  # this worker's own status
        self.supervisor = os.getppid()

    def _tell_supervisor(self, signum: int) -> None:
        """A signal to the supervisor, unless it died (this worker is then stopping: PR_SET_PDEATHSIG)
        and the parent is now someone else."""
        if os.getppid() == self.supervisor:
            os.kill(self.supervisor, signum)

    def reload(self) -> None:
        """After ``POST /lua/reload`` succeeded here: the supervisor has every other worker reload; on
        PostgreSQL, a notification has the workers of the other nodes reload too (``cluster_listener``)."""
        self._tell_supervisor(signal.SIGUSR1)
        config = self.services.config
        if config.postgresql.enable_index:
            with self.services.store.index.write() as tx:
                settings.notify_cluster(tx, self.services, RELOADED + config.node_name)

    def serving(self) -> None:
        """This worker serves: the server has started (the supervisor retries a worker that cannot
        start from now on, instead of stopping the server)."""
        self._tell_supervisor(signal.SIGRTMIN)

    def stop(self) -> None:
        """The whole server stops (``/tools/shutdown``, ``/tools/reset``): the supervisor stops every
        other worker at once, before this one lets the coordinator role go."""
        self._tell_supervisor(signal.SIGUSR2)

    def wait_alone(self, timeout: float) -> bool:
        """Wait until no other worker runs (after ``stop``), ``timeout`` at most; whether they all
        ended. The coordinator of a server that stops lets its role go only then: a worker whose
        SIGTERM is not handled yet (a loaded machine) must not find the role free and take it."""
        deadline = time.monotonic() + timeout
        while any(_running(pid) for pid in self.pids()):
            if time.monotonic() > deadline:
                return False
            time.sleep(STOP_POLL_S)  # the supervisor reaps them; no event reaches this process
        return True

    def share_settings(self) -> None:
        """After a ``PUT`` changed a runtime setting here: every other worker applies them before this
        returns (one that does not answer in time gets them at its next start)."""
        current = settings.current(self.services)
        settings.save(self.services, current)
        for pid in self.pids():
            self._ask(pid, {"Settings": current})

    def pids(self) -> list[int]:
        """The other workers now running (the supervisor's children)."""
        supervisor = self.supervisor
        if os.getppid() != supervisor:  # the supervisor died: its children are no longer known here
            return []
        return [pid for pid in child_pids(supervisor) if pid != os.getpid()]

    def statuses(self, metrics: bool = False) -> list[dict[str, Any]]:
        """The status of every worker, this one included, by pid (``{"Pid": n, "Error": ...}`` for one
        that did not answer)."""
        return sorted([self.snapshot(metrics), *(self._ask(pid, {"Metrics": metrics}) for pid in self.pids())],
                      key=lambda status: status["Pid"])

    def _ask(self, pid: int, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return ask(LocalEndpoint(control_address(self.storage_directory, pid)), request, CONTROL_TIMEOUT_S)
        except (OSError, ValueError) as exc:  # starting, stopping, or stuck: say so, do not fail
            return {"Pid": pid, "Error": f"no answer: {exc}"}


class ControlServer(RequestServer):
    """A worker's end: its status, or the runtime settings applied."""

    def __init__(self, services: Services, snapshot: Callable[[bool], dict[str, Any]]) -> None:
        super().__init__(control_address(services.config.storage_directory, os.getpid()), "worker-control",
                         CONTROL_TIMEOUT_S)
        self.services = services
        self.snapshot = snapshot

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if "Settings" in request:
            settings.apply(self.services, request["Settings"])
            return {"Pid": os.getpid(), "Applied": True}
        return self.snapshot(bool(request.get("Metrics")))
