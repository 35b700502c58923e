"""The process the operator starts when ``Workers`` is above 1: it starts the worker processes, starts
again the one that dies, passes the signals on, and ends them all on a stop. It runs no script, holds
no index connection and serves nothing, so nothing a script or a peer does can bring it down (the
model of supervisor and gunicorn's arbiter; docs/workers.md).

It waits for signals with ``sigwaitinfo`` (blocked, so none is lost while it handles another), never
polls:

- SIGCHLD: a worker ended. Its exit status says why: ``SHUTDOWN_EXIT`` (the coordinator served
  ``POST /tools/shutdown``) stops the server, ``RESET_EXIT`` (``POST /tools/reset``) stops it and has
  the caller start it again, ``CANNOT_START`` (a configuration or a script that does not load, a port
  in use) stops it with that status while no worker has served yet (a server that cannot start
  refuses to start, as Orthanc); anything else, and ``CANNOT_START`` once the server has served (a
  worker killed while the scripts on disk were broken must not take the others down), is a worker to
  start again, at once, or after a growing pause when it keeps dying young.
- SIGTERM, SIGINT: every worker gets SIGTERM and stops cleanly (workers that do not within
  ``STOP_TIMEOUT_S`` are killed); exit status 0.
- SIGHUP: passed on to every worker (each reloads its scripts).
- SIGUSR1: from the coordinator, once ``POST /lua/reload`` succeeded there: SIGHUP to every other
  worker (``si_pid`` says who asked).
- SIGUSR2: from the coordinator, asked to shut down or reset: SIGTERM to every other worker at once,
  before the coordinator's own stop releases the lease (a worker must not take the role of a server
  that is stopping); its exit status then says which it was.
- SIGRTMIN: from a worker that serves (its DICOM and HTTP servers listen): the server has started.

A worker started here gets SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``), so a kill -9 of
the supervisor never leaves workers serving without one.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from broker.config import Config
from broker.core.lease import ServerLock
from broker.workers import settings
from broker.workers.ports import shared_socket

log = logging.getLogger("luabroker.workers")

CANNOT_START = 1
RESET_EXIT = 3
SHUTDOWN_EXIT = 4

#: How long a stop waits for the workers to stop cleanly before it kills them: more than a worker's
#: own bounded stop (HTTP grace, the start-up in progress, the pending events).
STOP_TIMEOUT_S = 150.0
#: A worker that lived less than this is restarted after a pause that doubles each time, up to
#: ``MAX_RESTART_PAUSE_S``: a worker that cannot live does not spin the machine.
YOUNG_S = 10.0
MAX_RESTART_PAUSE_S = 10.0

SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
           signal.SIGRTMIN}
_PR_SET_PDEATHSIG = 1


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    pause: float = 0.0        # before the next start, when it keeps dying young
    due: float | None = None  # when to start it again (monotonic)


class Supervisor:
    def __init__(self, config: Config, config_path: str | None, verbose: bool = False) -> None:
        self.config = config
        self.config_path = config_path
        self.verbose = verbose
        self.workers = [Worker(index) for index in range(config.workers)]
        self.lock = ServerLock.of(config)
        self._ports: tuple[int, int] = (config.dicom_port, config.http_port)
        self._guards: list[socket.socket] = []  # the ports reserved for the workers
        self._stopping = False  # the coordinator asked for a stop: no worker is started again
        self._served = False  # a worker has served: from now on, one that cannot start is retried

    def run(self) -> bool:
        """Serve until a stop; True when the stop was a reset (the caller starts again). Raises
        ``StorageInUse`` or ``OSError`` (a port in use) when the server cannot start, and
        ``SystemExit(CANNOT_START)`` when a worker could not."""
        self.lock.acquire()
        for tenant in (self.config, *(declared.config for declared in self.config.tenants)):
            settings.forget(tenant)  # the changes of the last run end with it
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            self._ports = self._reserve_ports()
            for worker in self.workers:
                self._start(worker)
            log.warning("luabroker supervisor %d runs %d workers: DICOM %s on port %d, HTTP on %s:%d",
                        os.getpid(), len(self.workers), self.config.dicom_aet, self._ports[0],
                        self.config.http_bind, self._ports[1])
            return self._serve()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            for guard in self._guards:
                guard.close()
            self.lock.release()

    def _reserve_ports(self) -> tuple[int, int]:
        """The DICOM and HTTP ports (and the tenants' DICOM ports), port 0 resolved (every worker must
        use the same ones), after a check that nobody else uses them. Each stays bound here (with
        ``SO_REUSEPORT``, not listening: it gets no connection), so that no other program takes it
        between two workers."""
        dicom_port = self.config.dicom_port
        if self.config.dicom_server_enabled:
            dicom_port = self._reserve("0.0.0.0", dicom_port)
            for tenant in self.config.tenants:  # the tenants' own DICOM ports
                if tenant.dicom_port is not None:
                    self._reserve("0.0.0.0", tenant.dicom_port)
        return dicom_port, self._reserve(self.config.http_bind, self.config.http_port)

    def _reserve(self, host: str, port: int) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))  # no SO_REUSEPORT: fails if anyone listens there
            port = probe.getsockname()[1]
        self._guards.append(shared_socket(host, port))
        return port

    def _command(self, worker: Worker) -> list[str]:
        command = [sys.executable, "-m", "broker.cli", "--worker", str(worker.index),
                   "--dicom-port", str(self._ports[0]), "--http-port", str(self._ports[1])]
        if self.verbose:
            command.append("--verbose")
        if self.config_path is not None:
            command.append(self.config_path)
        return command

    def _start(self, worker: Worker) -> None:
        worker.process = subprocess.Popen(self._command(worker),  # noqa: PLW1509 (no thread here)
                                          preexec_fn=functools.partial(_worker_pre_exec, os.getpid()))
        worker.started = time.monotonic()
        worker.due = None
        log.info("worker %d started: pid %d", worker.index, worker.process.pid)

    def _serve(self) -> bool:
        while True:
            timeout = self._next_due()
            info = (signal.sigwaitinfo(SIGNALS) if timeout is None
                    else signal.sigtimedwait(SIGNALS, max(timeout, 0.0)))
            if info is None:  # a restart is due
                self._start_due()
                continue
            if info.si_signo == signal.SIGCHLD:
                outcome = self._reap()
                if outcome is not None:
                    return self._stop_all(outcome)
            elif info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.warning("luabroker supervisor: %s received, stopping the workers",
                            signal.Signals(info.si_signo).name)
                return self._stop_all(0)
            elif info.si_signo == signal.SIGHUP:
                log.warning("SIGHUP received: every worker reloads its Lua scripts")
                self._signal_all(signal.SIGHUP)
            elif info.si_signo == signal.SIGUSR1:
                self._signal_all(signal.SIGHUP, spare=info.si_pid)
            elif info.si_signo == signal.SIGUSR2:
                self._stopping = True
                self._signal_all(signal.SIGTERM, spare=info.si_pid)
            elif info.si_signo == signal.SIGRTMIN:
                self._served = True

    def _reap(self) -> int | None:
        """Handle the workers that ended; the exit status of the server when one ends it."""
        for worker in self.workers:
            process = worker.process
            if process is None or process.poll() is None:
                continue
            status = process.returncode
            worker.process = None
            if status == SHUTDOWN_EXIT:
                log.warning("luabroker: the coordinator was asked to shut down; stopping the workers")
                return 0
            if status == RESET_EXIT:
                log.warning("luabroker: the coordinator was asked to reset; stopping the workers")
                return RESET_EXIT
            if status == CANNOT_START and not self._served:
                log.error("luabroker: worker %d could not start; stopping the server", worker.index)
                return CANNOT_START
            if self._stopping:
                continue
            young = time.monotonic() - worker.started < YOUNG_S
            worker.pause = min(max(worker.pause * 2, 0.1), MAX_RESTART_PAUSE_S) if young else 0.0
            log.error("luabroker worker %d (pid %d) ended (%s); starting it again%s", worker.index, process.pid,
                      _describe(status), f" in {worker.pause:.1f} s" if worker.pause else "")
            worker.due = time.monotonic() + worker.pause
        if self._stopping and all(worker.process is None for worker in self.workers):
            return 0  # the coordinator that asked for the stop ended without saying which
        self._start_due()
        return None

    def _next_due(self) -> float | None:
        dues = [worker.due for worker in self.workers if worker.due is not None]
        return None if not dues else min(dues) - time.monotonic()

    def _start_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.due is not None and worker.due <= now:
                self._start(worker)

    def _signal_all(self, signum: int, spare: int | None = None) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.pid != spare:
                try:
                    worker.process.send_signal(signum)
                except ProcessLookupError:
                    pass

    def _stop_all(self, status: int) -> bool:
        """SIGTERM to every worker, wait for them (SIGKILL past ``STOP_TIMEOUT_S``); True for a reset.
        Raises ``SystemExit(CANNOT_START)`` when a worker could not start."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while True:
            for worker in self.workers:
                if worker.process is not None and worker.process.poll() is not None:
                    worker.process = None
            if all(worker.process is None for worker in self.workers):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.error("luabroker: workers still running %.0f s after SIGTERM; killing them", STOP_TIMEOUT_S)
                self._signal_all(signal.SIGKILL)
                for worker in self.workers:
                    if worker.process is not None:
                        worker.process.wait()
                        worker.process = None
                break
            signal.sigtimedwait({signal.SIGCHLD}, remaining)
        if status == CANNOT_START:
            raise SystemExit(CANNOT_START)
        log.warning("luabroker has stopped (supervisor)")
        return status == RESET_EXIT


def _worker_pre_exec(supervisor: int) -> None:
    """In the new worker, before it runs: ignore SIGHUP until the worker handles it (a worker that is
    starting reads the scripts anyway, and SIGHUP's default action would end it), take the signals back
    (the supervisor blocks them), and ask for SIGTERM when the supervisor dies (or end now if it died
    during the fork)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor:
        os._exit(0)


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"
