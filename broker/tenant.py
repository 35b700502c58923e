"""One tenant's part of a server (docs/tenants.md), and which tenant a request belongs to.

A ``Tenant`` is what a server ran alone before tenants existed, minus the front ends: its store (an
index and a storage area of its own, so no query of one tenant can reach another's rows), its services
(REST API, jobs, modalities and peers, audit log), its script set and sandboxes, its event dispatcher,
stability monitor and heartbeat, and with several workers its links to the coordinator (each keyed by
the tenant's storage directory). The front ends are the server's: ``Tenancy`` hands each association
(by DICOM port, then called AET) and each HTTP request (by user) to its tenant.

A configuration without ``Tenants`` has one tenant, ``default``, with the server's options and storage
directory: exactly the server it was before.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from broker.config import Config
from broker.config.postgresql import tenant_schema
from broker.config.tenants import DEFAULT_TENANT
from broker.core.attachments import Attachments, ContentTypes
from broker.core.audit import AuditLog
from broker.core.cluster import EventClaims, NotificationListener, Notifier
from broker.core.compression import NONE, ZLIB
from broker.core.object_storage import ObjectStorage
from broker.core.postgres import PostgresBackend
from broker.core.stability import StabilityMonitor
from broker.core.store import Store
from broker.dicom.find_scu import FindScu
from broker.dicom.negotiation import AcceptedContexts
from broker.dicom.queries import QueryArchive
from broker.dicom.retrieve_scu import RetrieveScu
from broker.dicom.scu import StoreScu
from broker.events import EventDispatcher
from broker.jobs import JobsEngine, create_engine
from broker.jobs.archives import ArchiveOutputs
from broker.metrics import Metrics, StateCollector
from broker.network import NetworkRegistry
from broker.peers import PeerClient
from broker.rest import (
    archives,
    attachments,
    audit,
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
from broker.scripting.lua_jobs import LuaJobs
from broker.scripting.script_log import ScriptLog
from broker.services import Services
from broker.workers import settings
from broker.workers.jobs_handoff import SERVICE as JOBS_SERVICE
from broker.workers.jobs_handoff import JobsHandoff, JobsListener
from broker.workers.local_socket import coordinator_endpoint
from broker.workers.rest_forward import SERVICE as REST_SERVICE
from broker.workers.rest_forward import RestForward, RestListener
from broker.workers.siblings import ControlServer, Siblings, cluster_listener
from broker.workers.wakeup import WakeupListener, WakeupSender


class Tenant:
    """The store, services, script set and event machinery of one tenant."""

    def __init__(self, name: str, config: Config, *, worker: int | None, coordinating: Callable[[], bool],
                 stop_server: Callable[[bool], None]) -> None:
        """``worker``: the number of this worker process, None in a single process; ``coordinating``:
        whether this process holds the coordinator lease; ``stop_server``: ``POST /tools/shutdown``."""
        self.name = name
        self.config = config
        self.worker = worker
        self.coordinating = coordinating
        config.storage_directory.mkdir(parents=True, exist_ok=True)
        postgresql = config.postgresql
        index = PostgresBackend(postgresql.conninfo, tenant_schema(name)) \
            if postgresql.enable_index else None
        store = Store(config.storage_directory, user_metadata=config.user_metadata, bounds=config.input_bounds,
                      default_encoding=config.default_encoding, limits=config.storage_limits,
                      store_md5=config.store_md5, stable_age=config.stable_age, ingest_rate=config.maximum_ingest_rate,
                      index_backend=index,
                      storage=ObjectStorage(config.object_storage) if config.object_storage is not None else None)
        store.compression = ZLIB if config.storage_compression else NONE
        store.event_backlog_limit = config.event_backlog_limit or None
        self.services = services = Services(config=config, store=store, metrics=Metrics())
        services.attachments = Attachments(store, ContentTypes(config.user_content_types))
        services.audit = AuditLog(store.index)
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
                                           server_control.routes, queries.routes, audit.routes,
                                           legacy_queries.routes, retrievals.routes,
                                           *([worklists.routes] if config.worklists.enabled else [])])
        # The saved jobs are the coordinator's, which resumes them. A worker hands its asynchronous
        # jobs (an asynchronous C-MOVE, a filter's RestApiPost) to the coordinator, and runs the
        # synchronous ones a filter script waits for itself, unsaved.
        services.jobs = create_engine(services, persistent=worker is None)
        if worker is not None:
            services.jobs.handoff = JobsHandoff(coordinator_endpoint(config, store.index, JOBS_SERVICE))
        services.archive_outputs = ArchiveOutputs(config.jobs.media_archive_size)
        services.lua_jobs = LuaJobs(services, services.jobs, services.jobs.settings)
        services.script_log = ScriptLog(config.lua_log_limits, services.metrics)
        services.scripts = ScriptSet(services, name)
        services.stop_server = stop_server
        services.owns_server = name == DEFAULT_TENANT
        self.control: ControlServer | None = None
        self.cluster_listener: NotificationListener | None = None  # the cluster's settings, reloads (PostgreSQL)
        if worker is not None:
            services.siblings = Siblings(services, self.worker_status)
            services.rest.forward = RestForward(coordinator_endpoint(config, store.index, REST_SERVICE),
                                                held=coordinating)
            self.control = ControlServer(services, self.worker_status)
        # The figures of the whole index are the coordinator's to report (one process, not each).
        services.metrics.registry.register(StateCollector(services, services.metrics.started,
                                                          with_index=coordinating))
        # The nodes sharing a PostgreSQL index claim each event in it, and wake the coordinator through it
        # (broker.core.cluster); the workers of one machine share a local socket.
        self._cluster = (postgresql.conninfo, tenant_schema(name)) if postgresql.enable_index else None
        claims = EventClaims(*self._cluster) if self._cluster is not None else None
        self.dispatcher = EventDispatcher(store.outbox, services.scripts, config.event_max_attempts,
                                          metrics=services.metrics, park_lua_errors=config.event_lua_errors_park,
                                          claims=claims)
        self.stability = StabilityMonitor(store)
        self.heartbeat = HeartBeat(services.scripts, config.lua_heartbeat_period)
        # Who is told of a committed event: the dispatcher, in the coordinator; otherwise the coordinator.
        self.wakeup: WakeupSender | Notifier | None = None
        if worker is not None:
            self.wakeup = Notifier(*self._cluster) if self._cluster is not None \
                else WakeupSender(config.storage_directory)
        store.on_event = self.dispatcher.wake if self.wakeup is None else self.wakeup
        self.wakeup_listener: WakeupListener | NotificationListener | None = None
        self.jobs_listener: JobsListener | None = None
        self.rest_listener: RestListener | None = None
        self._worker_jobs: JobsEngine | None = None  # a worker's own engine, once it is the coordinator
        self.coordinator_started = False  # the main sandbox, dispatcher, stability monitor, heartbeat run
        services.scripts.on_change(self.dispatcher.wake)

    def __repr__(self) -> str:
        return f"Tenant({self.name!r})"

    def worker_status(self, metrics: bool) -> dict[str, Any]:
        """What this worker says of itself to the coordinator: for ``GET /lua/status``, and with
        ``metrics`` its metrics' exposition too (``/tools/metrics-prometheus``)."""
        status: dict[str, Any] = {"Pid": os.getpid(), "Worker": self.worker, "Coordinator": self.coordinating(),
                                  "Sandboxes": self.services.scripts.status()}
        if metrics:
            status["Metrics"] = self.services.metrics.render().decode()
        return status

    def start(self) -> None:
        """What runs in every process from the start: the runtime settings changed before this worker
        started, its control socket, the filter sandbox and the jobs engine (a single process resumes
        the saved jobs; a worker runs only those submitted in it)."""
        if self.worker is not None:
            changed = settings.load(self.services)
            if changed is not None:
                settings.apply(self.services, changed)
            self.cluster_listener = cluster_listener(self.services)
            if self.cluster_listener is not None:
                self.cluster_listener.start()
        if self.control is not None:
            self.control.start()
        self.services.scripts.start_filter()
        self.services.store.instance_filter = InstanceFilter(self.services.scripts)
        self.services.jobs.start()

    def take_coordinator_role(self) -> None:
        """A worker that took the lease: the saved jobs resume here, and the events and jobs of the other
        workers come here."""
        services = self.services
        self._worker_jobs = services.jobs
        services.jobs = create_engine(services)
        services.lua_jobs = LuaJobs(services, services.jobs, services.jobs.settings)
        services.jobs.start()
        services.store.on_event = self.dispatcher.wake
        self.wakeup_listener = NotificationListener(*self._cluster, lambda _payload: self.dispatcher.wake()) \
            if self._cluster is not None else WakeupListener(self.config.storage_directory, self.dispatcher.wake)
        self.wakeup_listener.start()
        self.jobs_listener = JobsListener(self.config, services.jobs)
        self.jobs_listener.publish(services.store.index, JOBS_SERVICE, self.config)
        self.jobs_listener.start()

    def start_coordinating(self) -> None:
        """The roles that run once: the main sandbox and ``Initialize``, the event dispatcher, the
        stability monitor and the heartbeat; with several workers, the REST routes the others forward.
        Raises ``ScriptLoadError`` when the main scripts do not load."""
        self.services.scripts.start_main()
        self.dispatcher.start()
        self.stability.start()
        self.heartbeat.start()
        self.coordinator_started = True
        if self.worker is not None:
            self.rest_listener = RestListener(self.config, self.services.rest)
            self.rest_listener.publish(self.services.store.index, REST_SERVICE, self.config)
            self.rest_listener.start()

    def stop(self) -> None:
        """Stop, once the front ends are stopped: the routes forwarded here, then the heartbeat and
        stability monitor, the pending events delivered, the jobs (after the events, which submit Lua
        jobs), ``Finalize`` and the sandboxes, the clients, the store."""
        if self.rest_listener is not None:
            self.rest_listener.stop()
        if self.coordinator_started:
            self.heartbeat.stop()
            self.stability.stop()
            self.dispatcher.stop()
        for listener in (self.wakeup_listener, self.jobs_listener):
            if listener is not None:
                listener.stop()
        self.services.jobs.stop()
        if self._worker_jobs is not None:
            self._worker_jobs.stop()
        if self.wakeup is not None:
            self.wakeup.close()
        if self.dispatcher.claims is not None:
            self.dispatcher.claims.close()
        self.services.scripts.stop()
        if self.control is not None:
            self.control.stop()
        if self.cluster_listener is not None:
            self.cluster_listener.stop()
        self.services.scu.close()  # releases the kept associations
        self.services.peers.close()
        self.services.lua_http.close()
        self.services.store.close()


class Tenancy:
    """The tenants of a server, and which one each association and HTTP request belongs to."""

    def __init__(self, config: Config, tenants: list[Tenant]) -> None:
        self.default = tenants[0]
        assert self.default.name == DEFAULT_TENANT
        self.tenants = tenants
        self.by_name = {tenant.name: tenant for tenant in tenants}
        self._declared = {declared.name: declared for declared in config.tenants}
        self._by_aet = {aet.strip(): self.by_name[declared.name]
                        for declared in config.tenants for aet in declared.dicom_aets}
        self._by_port = {declared.dicom_port: self.by_name[declared.name]
                         for declared in config.tenants if declared.dicom_port is not None}
        self._by_user = {user: self.by_name[declared.name] for declared in config.tenants for user in declared.users}
        self._aets = {id(tenant.services): self._called_aets(tenant) for tenant in tenants}
        self.administrators = frozenset(config.tenant_administrators)
        self.authentication = config.authentication_enabled
        self.ports = (config.dicom_port, *self._by_port)

    def _called_aets(self, tenant: Tenant) -> tuple[str, ...]:
        """The AETs a tenant is called: its ``DicomAets``, or the ``DicomAet`` it runs with."""
        declared = self._declared.get(tenant.name)
        return tuple(aet.strip() for aet in (declared.dicom_aets if declared is not None else ())) \
            or (tenant.config.dicom_aet,)

    def __iter__(self) -> Iterator[Tenant]:
        return iter(self.tenants)

    def for_association(self, port: int, called_aet: str) -> Tenant:
        """The tenant of an association: the one whose own port it came to; on the server's port, the one
        that owns the called AET, else the default tenant."""
        return self._by_port.get(port) or self._by_aet.get(called_aet.strip(), self.default)

    # What the DICOM server asks (``broker.dicom.scp.Tenants``).
    def all_services(self) -> list[Services]:
        return [tenant.services for tenant in self.tenants]

    def services_for(self, port: int, called_aet: str) -> Services:
        return self.for_association(port, called_aet).services

    def called_aets(self, services: Services) -> tuple[str, ...]:
        return self._aets[id(services)]

    def for_user(self, username: str) -> Tenant:
        """The tenant of an HTTP user (the default tenant for a user no tenant names, or no user)."""
        return self._by_user.get(username, self.default)

    def administers(self, username: str) -> bool:
        """Whether a user reaches every tenant (``/tenants/...``): the ``TenantAdministrators``; without
        authentication, every client that may connect (there is no user to keep apart)."""
        return username in self.administrators if self.authentication else True

    def describe(self, tenant: Tenant) -> dict[str, Any]:
        """``GET /tenants/{name}``: what the tenant owns."""
        config, declared = tenant.config, self._declared.get(tenant.name)
        return {"Name": tenant.name, "DicomAets": list(self._aets[id(tenant.services)]),
                "DicomPort": declared.dicom_port if declared is not None else config.dicom_port,
                "Users": sorted(declared.users) if declared is not None else [],
                "StorageDirectory": str(config.storage_directory),
                "Scripts": [str(path) for path in config.lua_scripts]}
