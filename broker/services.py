"""The services of one server, passed to every REST handler and built-in (context is passed, never
ambient)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.config import Config
    from broker.core.store import Store
    from broker.rest.api import RestApi
    from broker.scripting.bridge import ScriptSet


@dataclass
class Services:
    config: "Config"
    store: "Store"
    rest: "RestApi"
    scripts: "ScriptSet"
