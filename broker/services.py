"""The services of one server, passed to every REST handler and built-in (context is passed, never
ambient)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.errors import ErrorCode, OrthancError

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.config import Config
    from broker.core.attachments import Attachments
    from broker.core.audit import AuditLog
    from broker.core.store import Store
    from broker.dicom.find_scu import FindScu
    from broker.dicom.negotiation import AcceptedContexts
    from broker.dicom.queries import QueryArchive
    from broker.dicom.retrieve_scu import RetrieveScu
    from broker.dicom.scu import StoreScu
    from broker.jobs import JobsEngine
    from broker.jobs.archives import ArchiveOutputs
    from broker.metrics import Metrics
    from broker.network import NetworkRegistry
    from broker.peers import PeerClient
    from broker.rest.api import RestApi
    from broker.scripting.bridge import ScriptSet
    from broker.scripting.http_client import LuaHttpClient
    from broker.scripting.lua_jobs import LuaJobs
    from broker.scripting.script_log import ScriptLog
    from broker.workers.siblings import Siblings


@dataclass
class Services:
    """Built by ``broker.server.Server`` in dependency order: the fields after ``metrics`` need the
    services themselves (handlers and built-ins reach each other through them), so they are set right
    after construction, before anything runs."""

    config: Config
    store: Store
    metrics: Metrics
    attachments: Attachments = field(init=False)  # the attachments of every level (broker/core/attachments.py)
    audit: AuditLog = field(init=False)  # deployments, reloads, quarantines, scripts' privileged actions
    network: NetworkRegistry = field(init=False)  # DicomModalities and OrthancPeers (broker/network.py)
    dicom_contexts: AcceptedContexts = field(init=False)  # what the DICOM server accepts (SOP classes, syntaxes)
    scu: StoreScu = field(init=False)  # C-STORE/C-ECHO SCU with association reuse
    find_scu: FindScu = field(init=False)  # C-FIND SCU (broker/dicom/find_scu.py)
    queries: QueryArchive = field(init=False)  # the C-FIND SCU queries kept for /queries
    retrieve_scu: RetrieveScu = field(init=False)  # C-MOVE and C-GET SCU (broker/dicom/retrieve_scu.py)
    peers: PeerClient = field(init=False)  # HTTP client of OrthancPeers
    lua_http: LuaHttpClient = field(init=False)  # the Lua Http* built-ins' client
    rest: RestApi = field(init=False)  # the REST handlers, for HTTP and for RestApi* from Lua
    jobs: JobsEngine = field(init=False)  # the jobs engine (broker/jobs)
    archive_outputs: ArchiveOutputs = field(init=False)  # the archives of asynchronous jobs, to download
    lua_jobs: LuaJobs = field(init=False)  # the deferred "Lua" jobs of SendToModality & co.
    scripts: ScriptSet = field(init=False)  # the script set: its sandboxes, reload, callbacks
    script_log: ScriptLog = field(init=False)  # what scripts write to the log: escaped, rate-limited
    #: Ask the server to stop (``POST /tools/shutdown``), or with ``reset=True`` to stop and start again
    #: (``POST /tools/reset``). Returns at once: the stop runs after the caller's answer (broker/server.py).
    stop_server: Callable[[bool], None] = field(init=False)
    #: The other worker processes (docs/workers.md): to have them reload, to read their status. None
    #: in a single process.
    siblings: Siblings | None = None
    #: The tenant whose requests may act on the whole server (shutdown, reset, log levels): the default
    #: one. Another tenant's requests get 403 there (docs/tenants.md).
    owns_server: bool = True

    def check_owns_server(self, what: str) -> None:
        """Refuse (403) ``what`` to a tenant other than the default one: it would reach every tenant."""
        if not self.owns_server:
            raise OrthancError(ErrorCode.BAD_REQUEST, f"{what} acts on the whole server, which only the server's "
                               "operator may do, not a tenant (docs/tenants.md)", http_status=403)

    def settings_changed(self) -> None:
        """A ``PUT``/``DELETE`` changed a runtime setting (accepted transfer syntaxes, unknown SOP
        classes, default encoding, modalities, peers, log levels): every other worker process applies
        it too (``broker.workers.settings``)."""
        if self.siblings is not None:
            self.siblings.share_settings()
