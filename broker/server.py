"""One server: its tenants (``broker.tenant``: each a store, a script set, an event dispatcher) and the
two front ends they share, started and stopped in the order that keeps every instance and event safe.

Start: store → filter sandbox (a script that fails to load stops here, as Orthanc refuses to start) →
DICOM and HTTP → main sandbox and ``Initialize`` (Orthanc queues ``Initialize`` once the server is up)
→ event dispatcher, stability monitor, heartbeat. Stop: front ends → heartbeat and stability monitor →
pending events delivered → ``Finalize`` → sandboxes → store.
SIGHUP (when the server runs in the main thread) reloads every tenant's scripts, as ``POST /lua/reload`` does its own.

SIGTERM, SIGINT and ``POST /tools/shutdown`` all take that one stop path; ``POST /tools/reset`` takes it
too, and ``run()`` then returns True: starting again is its caller's part (``broker.cli`` re-executes
the process; see there why).

With ``Workers`` above 1 (docs/workers.md) each worker process runs a ``Server`` through ``run_worker()``:
the store, the filter sandbox and the DICOM and HTTP front ends (on ports the workers share) from the
start; the coordinator role (the main sandbox and ``Initialize``, the event dispatcher, the stability
monitor, the heartbeat, the persistent jobs engine, the REST routes that answer from its memory) once
it holds the coordinator lease, which it waits for in a thread: the role moves to another worker as
soon as its holder dies.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import uvicorn

from broker.config import Config
from broker.config.tenants import DEFAULT_TENANT
from broker.core.cluster import PostgresLease
from broker.core.lease import CoordinatorLease, ServerLock
from broker.dicom.scp import StoreScp
from broker.http.app import build_app
from broker.scripting.lifecycle import ReloadError
from broker.tenant import Tenancy, Tenant
from broker.workers.ports import shared_socket

log = logging.getLogger("luabroker")


#: How long a stop waits for HTTP requests in progress before it goes on (and stops the sandboxes,
#: which ends a request still waiting on a script): a script spinning in execute-script must not hold
#: a SIGTERM for its whole wall-clock budget.
HTTP_SHUTDOWN_GRACE_S = 10

#: The exit status of a worker that lost the coordinator lease (its supervisor starts it again).
LEASE_LOST_EXIT = 75

#: How often a worker's idle main thread wakes, so that a signal delivered to another thread gets its
#: Python handler run (a blocking wait in the main thread would never run it).
SIGNAL_CHECK_S = 0.5

#: How long the coordinator of a server that stops waits for the other workers to end before it lets
#: the coordinator role go (each stops cleanly within its own bounded stop).
SIBLINGS_STOP_S = 60

#: How long a stop waits for the end of a start-up still in progress (``Initialize``); past it, the stop
#: goes on anyway. Larger than the longest call a sandbox allows by default (WallTimeout, 60 s).
STARTER_JOIN_S = 90


class Server:
    def __init__(self, config: Config, *, worker: int | None = None) -> None:
        """``worker``: the number of this worker process (``run_worker``); None for a single process,
        which runs as ``Workers: 1`` whatever the configuration says (starting several is
        ``broker.cli``'s part, through the supervisor)."""
        if worker is None:
            config = replace(config, workers=1, single_process=True, tenants=tuple(
                replace(tenant, config=replace(tenant.config, workers=1, single_process=True))
                for tenant in config.tenants))
        self.config = config
        self.worker = worker
        # Before the index is opened: one server per storage directory (broker/core/lease.py). A worker
        # process waits for the coordinator lease once it serves (``run_worker``).
        self.server_lock = ServerLock.of(config)
        self.lease: CoordinatorLease | PostgresLease = CoordinatorLease(config.storage_directory)
        if config.postgresql.enable_index:  # the nodes sharing the database elect one (docs/postgresql.md)
            self.lease = PostgresLease(config.postgresql.conninfo, on_lost=self._lease_lost)
        if worker is None:
            self.server_lock.acquire()
        try:
            if worker is None:
                self.lease.acquire()
            self._assemble(config, worker)
        except BaseException:  # a server that could not be built must not keep the storage or the role
            self.lease.release()
            self.server_lock.release()
            raise

    def _assemble(self, config: Config, worker: int | None) -> None:
        """The tenants and the front ends."""
        def stop_server(reset: bool) -> None:
            self.request_stop(reset=reset, asked=True)

        self.tenancy = Tenancy(config, [
            Tenant(name, config.tenant(name), worker=worker, coordinating=lambda: self.coordinating,
                   stop_server=stop_server)
            for name in (DEFAULT_TENANT, *(tenant.name for tenant in config.tenants))])
        #: The default tenant's services: the whole server's when there are no ``Tenants``.
        self.services = self.tenancy.default.services
        self.dicom = StoreScp(config, self.tenancy)
        # proxy_headers off: the client's address is the connection's peer, as in Orthanc; uvicorn would
        # take X-Forwarded-For from any loopback client (RemoteAccessAllowed, the HTTP filter's ip).
        self.http = uvicorn.Server(uvicorn.Config(
            build_app(self.tenancy), host=config.http_bind, port=config.http_port, log_level="warning",
            lifespan="off", access_log=False, proxy_headers=False, timeout_graceful_shutdown=HTTP_SHUTDOWN_GRACE_S))
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.reset_requested = False  # POST /tools/reset: run() returns True
        self.shutdown_requested = False  # POST /tools/shutdown (a worker's exit status tells its supervisor)
        self._starter: threading.Thread | None = None
        self._stopping = threading.Event()  # a worker's main thread waits on it
        self._role_lock = threading.Lock()  # taking the coordinator role, or stopping: one or the other
        self._http_thread: threading.Thread | None = None

    def run(self) -> bool:
        """Start everything, serve until SIGINT/SIGTERM (or ``request_stop``), then stop cleanly.
        Returns True when the stop was a reset (``POST /tools/reset``): the caller starts a server again
        with the configuration read anew, as Orthanc's ``main`` loops on ``StartOrthanc``. Raises what
        made start-up fail (``ScriptLoadError``, a port in use, ...)."""
        def serve() -> None:
            self._starter = threading.Thread(target=self._finish_start, name="start", daemon=True)
            self._starter.start()
            self.http.run()

        self._serve(serve)
        if not self.http.started:
            raise self._not_listening()
        return self.reset_requested

    def run_worker(self) -> bool:
        """Serve as one of several worker processes (``Workers``; started by ``broker.workers``) until
        SIGTERM/SIGINT or, as coordinator, ``request_stop``; then stop cleanly. Returns True for a reset,
        as ``run()``. Raises what made start-up or the taking of the coordinator role fail."""
        def serve() -> None:
            self._http_thread = threading.Thread(target=self._serve_http, name="http", daemon=True)
            self._http_thread.start()
            while not self.http.started and not self._stopping.is_set():
                threading.Event().wait(0.01)
            if self._stopping.is_set():
                return
            self._starter = threading.Thread(target=self._elect, name="coordinator-election", daemon=True)
            self._starter.start()
            log.warning("luabroker worker %d serves DICOM %s on port %d and HTTP on %s:%d", os.getpid(),
                        self.config.dicom_aet, self.config.dicom_port, self.config.http_bind, self.config.http_port)
            assert self.services.siblings is not None
            self.services.siblings.serving()  # the supervisor's to know once, whichever tenant says it
            # With a timeout: Python runs a signal handler in the main thread only, and a SIGTERM that
            # the kernel delivered to another thread does not interrupt a wait without one, so the
            # handler (the stop) would wait for ever.
            while not self._stopping.wait(SIGNAL_CHECK_S):
                pass

        self._serve(serve)
        return self.reset_requested

    def _serve(self, serve: Callable[[], None]) -> None:
        """Start each tenant's part (``Tenant.start``: its filter sandbox, its jobs engine) and the DICOM
        server, run ``serve()`` with the signals caught, then stop cleanly; raise what made the start or
        the serving fail."""
        previous = self._catch_signals()
        try:
            for tenant in self.tenancy:
                tenant.start()
            if self.config.dicom_server_enabled:
                self.dicom.start()
            serve()
        finally:
            for signum, handler in previous.items():
                if handler is not None:  # None: a handler installed outside Python, cannot be restored
                    signal.signal(signum, handler)
            self._stop()
        if self.failure is not None:
            raise self.failure

    @property
    def coordinating(self) -> bool:
        return self.lease.held

    def _lease_lost(self) -> None:
        """The PostgreSQL lease broke and another node may coordinate now: this process must stop
        coordinating at once. A worker exits (its supervisor starts it again, as a worker that waits for
        the role; the events it was delivering are delivered again, at least once); a single process
        stops."""
        if self.worker is not None:
            os._exit(LEASE_LOST_EXIT)
        self.request_stop()

    def _elect(self) -> None:
        """Wait for the coordinator lease, then take the role: the roles that must run once, and the
        REST routes that answer from the coordinator's memory (the jobs, the queries, ...), which the
        other workers forward here."""
        try:
            self.lease.wait()
        except OSError as exc:
            if not self._stopping.is_set():  # (a stop ends the wait of a PostgreSQL lease this way)
                log.error("Cannot wait for the coordinator role: %s", exc)
            return
        with self._role_lock:
            if self._stopping.is_set():
                self.lease.release()
                return
            log.warning("luabroker worker %d takes the coordinator role", os.getpid())
            for tenant in self.tenancy:
                tenant.take_coordinator_role()
        self._finish_start()

    def _serve_http(self) -> None:
        """The HTTP front end of a worker, on the port every worker listens on (``SO_REUSEPORT``: the
        kernel hands each new connection to one of them); its end ends the worker."""
        try:
            self.http.run(sockets=[shared_socket(self.config.http_bind, self.config.http_port)])
            if not self.http.started and self.failure is None:
                self.failure = self._not_listening()
        except BaseException as exc:  # uvicorn exits (SystemExit) when it cannot bind
            self.failure = self.failure or OSError(f"The HTTP server could not start: {exc!r}")
        finally:
            self._stopping.set()

    def _not_listening(self) -> OSError:
        return OSError(f"The HTTP server could not listen on {self.config.http_bind}:{self.config.http_port}")

    def _finish_start(self) -> None:
        while not self.http.started and not self.http.should_exit:
            threading.Event().wait(0.01)
        if self.http.should_exit:
            return
        try:
            for tenant in self.tenancy:
                tenant.start_coordinating()
        except BaseException as exc:  # ScriptLoadError in the main process: refuse to run
            self.failure = exc
            self.http.should_exit = True
            return
        log.warning("luabroker is ready: HTTP on %s:%d, DICOM %s on port %d", self.config.http_bind,
                    self.config.http_port, self.config.dicom_aet, self.config.dicom_port)
        self.ready.set()

    def request_stop(self, reset: bool = False, asked: bool = False) -> None:
        """Ask for the clean stop (SIGTERM, ``POST /tools/shutdown``); with ``reset``, ask ``run()`` to
        return True once stopped (``POST /tools/reset``). Returns at once, from any thread: the stop runs
        in the thread of ``run()`` after uvicorn has let the requests in progress finish, the one that
        asked included, so a REST handler or a Lua ``RestApiPost`` gets its answer and never waits on
        the stop. A reset asked once stays asked, as in Orthanc. ``asked``: by ``POST /tools/shutdown``
        or ``/tools/reset``, not by a signal."""
        if reset:
            self.reset_requested = True
        elif asked:
            self.shutdown_requested = True
        if asked and self.services.siblings is not None:  # the whole server stops: the others now
            self.services.siblings.stop()
        self.http.should_exit = True
        self._stopping.set()

    def reload_scripts(self, reason: str = "reload") -> bool:
        """Reload every tenant's scripts (SIGHUP; ``POST /lua/reload`` reloads its own tenant's); False
        (and a logged error) if a new version did not load and its old one stays."""
        reloaded = True
        for tenant in self.tenancy:
            try:
                tenant.services.scripts.reload(reason)
            except ReloadError:
                reloaded = False  # ScriptSet logged why
        return reloaded

    def _catch_signals(self) -> dict[int, Any]:
        """SIGHUP → reload, in a thread (a handler must not block the event loop). SIGINT/SIGTERM →
        stop: uvicorn handles them while it serves, then restores our handler and raises the signal
        again, which must not kill the process before ``_stop`` (events, ``Finalize``, sandboxes).
        Only the main thread may install handlers: a server run in a thread (tests) reloads over HTTP.
        Returns the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_sighup(signum: int, frame: Any) -> None:
            log.warning("SIGHUP received: reloading the Lua scripts")
            threading.Thread(target=self.reload_scripts, args=("SIGHUP",), name="sighup-reload", daemon=True).start()

        def on_stop(signum: int, frame: Any) -> None:
            self.request_stop()

        previous = {}
        for signum, handler in ((getattr(signal, "SIGHUP", None), on_sighup), (signal.SIGTERM, on_stop),
                                (signal.SIGINT, on_stop)):
            if signum is not None:
                previous[signum] = signal.signal(signum, handler)
        return previous

    def _stop(self) -> None:
        self._stopping.set()
        with self._role_lock:  # the coordinator role is taken before, or not at all
            self.http.should_exit = True
        self.dicom.stop()
        if self._starter is not None and self.coordinating:
            # A stop asked during start-up (a script's Initialize calling /tools/reset, a SIGTERM then):
            # the rest of the start (main sandbox, dispatcher) must be over before its parts are stopped.
            # Initialize is bounded by the sandbox's own deadlines. (A worker still waiting for the
            # coordinator role is not waited for.)
            self._starter.join(STARTER_JOIN_S)
        if self._http_thread is not None:
            self._http_thread.join(HTTP_SHUTDOWN_GRACE_S + 5)
        for tenant in self.tenancy:
            tenant.stop()
        siblings = self.services.siblings
        if siblings is not None and self.coordinating and (self.reset_requested or self.shutdown_requested):
            # The whole server stops (request_stop told the others): none may take the role it leaves.
            if not siblings.wait_alone(SIBLINGS_STOP_S):
                log.error("Other workers still run %.0f s after the stop; letting the coordinator role go",
                          SIBLINGS_STOP_S)
        self.lease.release()
        self.server_lock.release()
        log.warning("luabroker has stopped")


def run_in_thread(server: Server, timeout: float = 30.0) -> threading.Thread:
    """Start ``server.run()`` in a thread and wait until it is ready (tests, benchmarks)."""
    def target() -> None:
        try:
            server.run()
        except BaseException as exc:
            server.failure = server.failure or exc
            server.ready.set()

    thread = threading.Thread(target=target, name="luabroker", daemon=True)
    thread.start()
    if not server.ready.wait(timeout):
        raise TimeoutError("luabroker did not become ready")
    if server.failure is not None:
        raise server.failure
    return thread

