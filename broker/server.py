"""One server: the store, the script set, the event dispatcher and the two front ends, started and
stopped in the order that keeps every instance and event safe.

Start: store → filter sandbox (a script that fails to load stops here, as Orthanc refuses to start) →
DICOM and HTTP → main sandbox and ``Initialize`` (Orthanc queues ``Initialize`` once the server is up)
→ event dispatcher. Stop: front ends → pending events delivered → ``Finalize`` → sandboxes → store.
"""
from __future__ import annotations

import logging
import threading
import uvicorn

from broker.config import Config
from broker.core.store import Store
from broker.dicom.scp import StoreScp
from broker.events import EventDispatcher
from broker.http.app import build_app
from broker.rest import lua, resources, system
from broker.rest.api import RestApi
from broker.scripting.bridge import ScriptSet
from broker.scripting.filters import InstanceFilter
from broker.services import Services

log = logging.getLogger("luabroker")


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        store = Store(config.storage_directory, user_metadata=config.user_metadata)
        self.services = services = Services(config=config, store=store, rest=None, scripts=None)  # type: ignore[arg-type]
        services.rest = RestApi(services, [resources.routes, system.routes, lua.routes])
        services.scripts = ScriptSet(services)
        self.dispatcher = EventDispatcher(store.outbox, services.scripts, config.event_max_attempts)
        store.on_event = self.dispatcher.wake
        self.dicom = StoreScp(services)
        self.http = uvicorn.Server(uvicorn.Config(
            build_app(services), host=config.http_bind, port=config.http_port, log_level="warning",
            lifespan="off", access_log=False))
        self.ready = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        """Start everything, serve until SIGINT/SIGTERM (or ``request_stop``), then stop cleanly.
        Raises what made start-up fail (``ScriptLoadError``, a port in use, ...)."""
        scripts = self.services.scripts
        scripts.start_filter()
        self.services.store.instance_filter = InstanceFilter(scripts)
        try:
            if self.config.dicom_server_enabled:
                self.dicom.start()
            threading.Thread(target=self._finish_start, name="start", daemon=True).start()
            self.http.run()
        finally:
            self._stop()
        if self.failure is not None:
            raise self.failure
        if not self.http.started:
            raise OSError(f"The HTTP server could not listen on {self.config.http_bind}:{self.config.http_port}")

    def _finish_start(self) -> None:
        while not self.http.started and not self.http.should_exit:
            threading.Event().wait(0.01)
        if self.http.should_exit:
            return
        try:
            self.services.scripts.start_main()
            self.dispatcher.start()
        except BaseException as exc:  # ScriptLoadError in the main process: refuse to run
            self.failure = exc
            self.http.should_exit = True
            return
        log.warning("luabroker is ready: HTTP on %s:%d, DICOM %s on port %d", self.config.http_bind,
                    self.config.http_port, self.config.dicom_aet, self.config.dicom_port)
        self.ready.set()

    def request_stop(self) -> None:
        self.http.should_exit = True

    def _stop(self) -> None:
        self.dicom.stop()
        if self.ready.is_set():
            self.dispatcher.stop()
        self.services.scripts.stop()
        self.services.store.close()
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

