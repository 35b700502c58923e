"""The services of one server, passed to every REST handler and built-in (context is passed, never
ambient)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.config import Config
    from broker.dicom.scu import StoreScu
    from broker.network import NetworkRegistry
    from broker.peers import PeerClient
    from broker.scripting.http_client import LuaHttpClient
    from broker.metrics import Metrics
    from broker.core.store import Store
    from broker.rest.api import RestApi
    from broker.scripting.bridge import ScriptSet
    from broker.jobs import JobsEngine
    from broker.scripting.lua_jobs import LuaJobs


@dataclass
class Services:
    config: "Config"
    store: "Store"
    rest: "RestApi"
    scripts: "ScriptSet"
    metrics: "Metrics | None" = None
    network: "NetworkRegistry | None" = None  # DicomModalities and OrthancPeers (broker/network.py)
    scu: "StoreScu | None" = None  # C-STORE/C-ECHO SCU with association reuse
    peers: "PeerClient | None" = None  # HTTP client of OrthancPeers
    lua_http: "LuaHttpClient | None" = None  # the Lua Http* built-ins' client
    jobs: "JobsEngine | None" = None  # the jobs engine (broker/jobs)
    lua_jobs: "LuaJobs | None" = None  # the deferred "Lua" jobs of SendToModality & co.
