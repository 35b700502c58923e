"""One server: the store, the script set, the event dispatcher and the two front ends, started and
stopped in the order that keeps every instance and event safe.

Start: store → filter sandbox (a script that fails to load stops here, as Orthanc refuses to start) →
DICOM and HTTP → main sandbox and ``Initialize`` (Orthanc queues ``Initialize`` once the server is up)
→ event dispatcher, stability monitor, heartbeat. Stop: front ends → heartbeat and stability monitor →
pending events delivered → ``Finalize`` → sandboxes → store.
SIGHUP (when the server runs in the main thread) reloads the scripts, as ``POST /lua/reload`` does.

SIGTERM, SIGINT and ``POST /tools/shutdown`` all take that one stop path; ``POST /tools/reset`` takes it
too, and ``run()`` then returns True: starting again is its caller's part (``broker.cli`` re-executes
the process; see there why).
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import uvicorn

from broker.config import Config
from broker.core.attachments import Attachments, ContentTypes
from broker.core.compression import NONE, ZLIB
from broker.core.lease import CoordinatorLease
from broker.core.stability import StabilityMonitor
from broker.core.store import Store
from broker.dicom.find_scu import FindScu
from broker.dicom.negotiation import AcceptedContexts
from broker.dicom.queries import QueryArchive
from broker.dicom.retrieve_scu import RetrieveScu
from broker.dicom.scp import StoreScp
from broker.dicom.scu import StoreScu
from broker.events import EventDispatcher
from broker.http.app import build_app
from broker.jobs import create_engine
from broker.jobs.archives import ArchiveOutputs
from broker.metrics import Metrics, StateCollector
from broker.network import NetworkRegistry
from broker.peers import PeerClient
from broker.rest import (
    archives,
    attachments,
    changes,
    create,
    exports,
    find,
    frames,
    instances,
    jobs,
    legacy_queries,
    lua,
    metrics,
    modification,
    network,
    preview,
    queries,
    resources,
    retrievals,
    server_control,
    system,
    tools,
    views,
    worklists,
)
from broker.rest.api import RestApi
from broker.scripting.bridge import ScriptSet
from broker.scripting.filters import InstanceFilter
from broker.scripting.heartbeat import HeartBeat
from broker.scripting.http_client import LuaHttpClient
from broker.scripting.lifecycle import ReloadError
from broker.scripting.lua_jobs import LuaJobs
from broker.scripting.script_log import ScriptLog
from broker.services import Services

log = logging.getLogger("luabroker")


#: How long a stop waits for HTTP requests in progress before it goes on (and stops the sandboxes,
#: which ends a request still waiting on a script): a script spinning in execute-script must not hold
#: a SIGTERM for its whole wall-clock budget.
HTTP_SHUTDOWN_GRACE_S = 10

#: How long a stop waits for the end of a start-up still in progress (``Initialize``); past it, the stop
#: goes on anyway. Larger than the longest call a sandbox allows by default (WallTimeout, 60 s).
STARTER_JOIN_S = 90


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        # Before the index is opened: one server per storage directory (broker/core/lease.py).
        self.lease = CoordinatorLease(config.storage_directory)
        self.lease.acquire()
        store = Store(config.storage_directory, user_metadata=config.user_metadata, bounds=config.input_bounds,
                      default_encoding=config.default_encoding, limits=config.storage_limits,
                      store_md5=config.store_md5, stable_age=config.stable_age)
        store.compression = ZLIB if config.storage_compression else NONE
        store.event_backlog_limit = config.event_backlog_limit or None
        self.services = services = Services(config=config, store=store, metrics=Metrics())
        services.attachments = Attachments(store, ContentTypes(config.user_content_types))
        services.network = NetworkRegistry(config.network.modalities, config.network.peers,
                                           strict_aet_comparison=config.network.strict_aet_comparison,
                                           check_modality_host=config.network.check_modality_host)
        services.dicom_contexts = AcceptedContexts(config.accepted_transfer_syntaxes, config.unknown_sop_class_accepted,
                                                   worklists=config.worklists.enabled)
        services.scu = StoreScu(services.network, config.network.dicom)
        services.find_scu = FindScu(services.scu)
        services.retrieve_scu = RetrieveScu(services.scu, store, lambda: services.dicom_contexts.transfer_syntaxes)
        services.queries = QueryArchive(config.network.dicom.query_retrieve_size)
        services.peers = PeerClient(services.network, config.network.http)
        services.lua_http = LuaHttpClient(config.network.http)
        services.rest = RestApi(services, [resources.routes, system.routes, lua.routes, metrics.routes,
                                           network.routes, jobs.routes, modification.routes, preview.routes,
                                           exports.routes, changes.routes, tools.routes, instances.routes,
                                           find.routes, views.routes, attachments.routes,
                                           frames.routes, create.routes, archives.routes,
                                           server_control.routes, queries.routes,
                                           legacy_queries.routes, retrievals.routes,
                                           *([worklists.routes] if config.worklists.enabled else [])])
        services.jobs = create_engine(services)
        services.archive_outputs = ArchiveOutputs(config.jobs.media_archive_size)
        services.lua_jobs = LuaJobs(services, services.jobs, services.jobs.settings)
        services.script_log = ScriptLog(config.lua_log_limits, services.metrics)
        services.scripts = ScriptSet(services)
        services.stop_server = lambda reset: self.request_stop(reset=reset)
        services.metrics.registry.register(StateCollector(services, services.metrics.started))
        self.dispatcher = EventDispatcher(store.outbox, services.scripts, config.event_max_attempts,
                                          metrics=services.metrics, park_lua_errors=config.event_lua_errors_park)
        self.stability = StabilityMonitor(store)
        self.heartbeat = HeartBeat(services.scripts, config.lua_heartbeat_period)
        store.on_event = self.dispatcher.wake
        services.scripts.on_change(self.dispatcher.wake)
        self.dicom = StoreScp(services)
        self.http = uvicorn.Server(uvicorn.Config(
            build_app(services), host=config.http_bind, port=config.http_port, log_level="warning",
            lifespan="off", access_log=False, timeout_graceful_shutdown=HTTP_SHUTDOWN_GRACE_S))
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.reset_requested = False  # POST /tools/reset: run() returns True
        self._starter: threading.Thread | None = None

    def run(self) -> bool:
        """Start everything, serve until SIGINT/SIGTERM (or ``request_stop``), then stop cleanly.
        Returns True when the stop was a reset (``POST /tools/reset``): the caller starts a server again
        with the configuration read anew, as Orthanc's ``main`` loops on ``StartOrthanc``. Raises what
        made start-up fail (``ScriptLoadError``, a port in use, ...)."""
        scripts = self.services.scripts
        scripts.start_filter()
        self.services.store.instance_filter = InstanceFilter(scripts)
        self.services.jobs.start()  # saved jobs resume
        previous = self._catch_signals()
        try:
            if self.config.dicom_server_enabled:
                self.dicom.start()
            self._starter = threading.Thread(target=self._finish_start, name="start", daemon=True)
            self._starter.start()
            self.http.run()
        finally:
            for signum, handler in previous.items():
                if handler is not None:  # None: a handler installed outside Python, cannot be restored
                    signal.signal(signum, handler)
            self._stop()
        if self.failure is not None:
            raise self.failure
        if not self.http.started:
            raise OSError(f"The HTTP server could not listen on {self.config.http_bind}:{self.config.http_port}")
        return self.reset_requested

    def _finish_start(self) -> None:
        while not self.http.started and not self.http.should_exit:
            threading.Event().wait(0.01)
        if self.http.should_exit:
            return
        try:
            self.services.scripts.start_main()
            self.dispatcher.start()
            self.stability.start()
            self.heartbeat.start()
        except BaseException as exc:  # ScriptLoadError in the main process: refuse to run
            self.failure = exc
            self.http.should_exit = True
            return
        log.warning("luabroker is ready: HTTP on %s:%d, DICOM %s on port %d", self.config.http_bind,
                    self.config.http_port, self.config.dicom_aet, self.config.dicom_port)
        self.ready.set()

    def request_stop(self, reset: bool = False) -> None:
        """Ask for the clean stop (SIGTERM, ``POST /tools/shutdown``); with ``reset``, ask ``run()`` to
        return True once stopped (``POST /tools/reset``). Returns at once, from any thread: the stop runs
        in the thread of ``run()`` after uvicorn has let the requests in progress finish, the one that
        asked included, so a REST handler or a Lua ``RestApiPost`` gets its answer and never waits on
        the stop. A reset asked once stays asked, as in Orthanc."""
        if reset:
            self.reset_requested = True
        self.http.should_exit = True

    def reload_scripts(self, reason: str = "reload") -> bool:
        """Reload the scripts (``POST /lua/reload`` and SIGHUP); False (and a logged error) if the new
        version did not load and the old one stays."""
        try:
            self.services.scripts.reload(reason)
        except ReloadError:
            return False  # ScriptSet logged why
        return True

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
        self.dicom.stop()
        if self._starter is not None:
            # A stop asked during start-up (a script's Initialize calling /tools/reset, a SIGTERM then):
            # the rest of the start (main sandbox, dispatcher) must be over before its parts are stopped.
            # Initialize is bounded by the sandbox's own deadlines.
            self._starter.join(STARTER_JOIN_S)
        if self.ready.is_set():
            self.heartbeat.stop()
            self.stability.stop()
            self.dispatcher.stop()
        self.services.jobs.stop()  # after the events, which submit Lua jobs
        self.services.scripts.stop()
        self.services.scu.close()  # releases the kept associations
        self.services.peers.close()
        self.services.lua_http.close()
        self.services.store.close()
        self.lease.release()
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

