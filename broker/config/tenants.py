"""The ``Tenants`` section: several script sets on one server, each with what it owns (docs/tenants.md).

::

    "Tenants": {
      "radiology": {
        "DicomAets": ["RADIO"],            // the called AETs whose associations are the tenant's
        "DicomPort": 4343,                 // optional: a port of its own (any called AET there)
        "Users": ["alice"],                // names of RegisteredUsers: their HTTP requests are the tenant's
        "LuaScripts": ["radiology.lua"],
        "LuaModulesPath": ["lua-modules/radiology"],
        "LuaSandbox": {"MemoryLimitMB": 64, "EventBacklogLimit": 1000},
        "DicomModalities": {...}, "OrthancPeers": {...},
        "MaximumStorageSize": 10000, "MaximumIngestRate": 200
      }
    }

A tenant runs with a configuration of its own (``TenantConfig.config``): the server's, with the
tenant's object laid over it. What it owns is never inherited: its scripts, modules, modalities, peers
and storage limits are the tenant's alone (none when it sets none), and its storage limits refuse
rather than recycle (``MaximumStorageMode`` is ``Reject`` unless the tenant says otherwise). Its
``LuaSandbox`` members are laid over the server's, so the server's isolation applies to every tenant.
Its data lives in ``<StorageDirectory>/tenants/<name>``, an index and a storage area of its own.

The server's own options (``LuaScripts``, ``DicomAet``, users named by no tenant) make the ``default``
tenant, which a configuration without ``Tenants`` has alone, exactly as before.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.config.options import ConfigError, Section, bad_value

if TYPE_CHECKING:
    from broker.config import Config

DEFAULT_TENANT = "default"
TENANTS_FOLDER = "tenants"

#: What a tenant's object may set; anything else is refused (a misspelt limit must not go unnoticed).
TENANT_OPTIONS = ("DicomAets", "DicomPort", "Users", "LuaScripts", "LuaTrustedScripts", "LuaModulesPath",
                  "LuaExposeSecrets", "LuaSandbox", "LuaHeartBeatPeriod", "DicomModalities", "OrthancPeers",
                  "MaximumStorageSize", "MaximumPatientCount", "MaximumStorageMode", "MaximumIngestRate",
                  "StableAge", "DicomAlwaysAllowEcho", "DicomAlwaysAllowStore", "DicomAlwaysAllowFind",
                  "DicomAlwaysAllowFindWorklist", "DicomAlwaysAllowMove", "DicomAlwaysAllowGet")
#: The server's options that a tenant does not inherit: what it owns.
OWNED = ("LuaScripts", "LuaTrustedScripts", "LuaModulesPath", "DicomModalities", "OrthancPeers",
         "MaximumStorageSize", "MaximumPatientCount", "MaximumStorageMode", "MaximumIngestRate")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class TenantConfig:
    """One tenant of the ``Tenants`` section."""

    name: str
    dicom_aets: tuple[str, ...]
    dicom_port: int | None
    users: tuple[str, ...]
    config: Config


def read_tenants(server: Config, options: Section, read: Callable[[dict[str, Any], Path, Path | None], Config]
                 ) -> tuple[TenantConfig, ...]:
    """The tenants of ``server`` (``options``: its raw options), checked against each other and the
    server; ``read`` is ``Config.from_json``, which reads each tenant's configuration."""
    section = options.section("Tenants")
    tenants = []
    for name, value in section.values.items():
        if not _NAME.match(name) or name == DEFAULT_TENANT:
            raise ConfigError(f"Option 'Tenants' has a tenant named {name!r}; a tenant's name is 1 to 64 letters, "
                              f"digits, '-' or '_', and not {DEFAULT_TENANT!r} (the server's own)")
        tenant = section.section(name)
        for key in tenant.values:
            if key not in TENANT_OPTIONS:
                raise ConfigError(f"Option '{tenant.label(key)}' is not a tenant's option; expected some of "
                                  f"{', '.join(TENANT_OPTIONS)}")
        aets = tenant.option("DicomAets", list, [], lambda v: all(isinstance(a, str) and 0 < len(a) <= 16 for a in v),
                             "of AETs (1 to 16 characters each)")
        users = tenant.option("Users", list, [], lambda v: all(isinstance(u, str) for u in v), "of user names")
        port = tenant.get("DicomPort")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise bad_value(tenant.label("DicomPort"), port, "an integer in [1, 65535]")
        for user in users:
            if user not in server.registered_users:
                raise ConfigError(f"Tenants.{name}.Users names {user!r}, which is not in 'RegisteredUsers'")
        merged = {key: value for key, value in server.raw.items()
                  if key not in (*OWNED, "Tenants", "TenantAdministrators")}
        merged.update(tenant.values)
        # What its scripts may see of the users (GetOrthancConfiguration): its own only.
        merged["RegisteredUsers"] = {user: server.registered_users[user] for user in users}
        if server.lua_admin_users is not None:
            merged["LuaAdminUsers"] = [user for user in server.lua_admin_users if user in users]
        merged["LuaSandbox"] = {**options.section("LuaSandbox").values, **tenant.section("LuaSandbox").values}
        merged["DicomAet"] = aets[0] if aets else server.dicom_aet
        merged["StorageDirectory"] = str(server.storage_directory / TENANTS_FOLDER / name)
        if isinstance(merged.get("AwsS3Storage"), dict):  # its objects under a prefix of its own, as its folder
            root = str(merged["AwsS3Storage"].get("RootPath", "")).strip("/")
            merged["AwsS3Storage"] = {**merged["AwsS3Storage"],
                                      "RootPath": "/".join(part for part in (root, TENANTS_FOLDER, name) if part)}
        merged.setdefault("MaximumStorageMode", "Reject")
        try:
            config = read(merged, server.base_dir, server.path)
        except ConfigError as exc:
            raise ConfigError(f"In tenant {name!r} (Tenants.{name}): {exc}") from None
        tenants.append(TenantConfig(name, tuple(aets), port, tuple(users), config))
    _check_claims(server, tenants)
    return tuple(tenants)


def _check_claims(server: Config, tenants: list[TenantConfig]) -> None:
    """Each AET, port and user belongs to one tenant at most, and tenants with users need authentication
    (without it no request has a user, so every request is the default's)."""
    aets: dict[str, str] = {server.dicom_aet: DEFAULT_TENANT}
    ports: dict[int, str] = {server.dicom_port: DEFAULT_TENANT, server.http_port: "HttpPort"}
    users: dict[str, str] = {name: "TenantAdministrators" for name in server.tenant_administrators}
    for tenant in tenants:
        for aet in tenant.dicom_aets:
            if aet in aets:
                raise ConfigError(f"Tenants.{tenant.name}.DicomAets names {aet!r}, which already belongs to "
                                  f"{aets[aet]!r}")
            aets[aet] = tenant.name
        if tenant.dicom_port is not None:
            if tenant.dicom_port in ports:
                raise ConfigError(f"Tenants.{tenant.name}.DicomPort is {tenant.dicom_port}, which "
                                  f"{ports[tenant.dicom_port]!r} uses already")
            ports[tenant.dicom_port] = tenant.name
        for user in tenant.users:
            if user in users:
                raise ConfigError(f"Tenants.{tenant.name}.Users names {user!r}, who already belongs to {users[user]!r}")
            users[user] = tenant.name
        if tenant.users and not server.authentication_enabled:
            raise ConfigError(f"Tenants.{tenant.name}.Users needs 'AuthenticationEnabled': without authentication "
                              "no request has a user name")

