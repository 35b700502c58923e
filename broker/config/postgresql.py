"""The ``PostgreSQL`` section: the index in PostgreSQL instead of SQLite, in the style of Orthanc's
PostgreSQL plugin::

    "PostgreSQL": {
      "EnableIndex": true,         // the index (resources, metadata, the event log, the audit log) in PostgreSQL
      "Host": "localhost", "Port": 5432, "Database": "orthanc", "Username": "orthanc", "Password": "orthanc",
      "ConnectionUri": "postgresql://user:password@host:5432/database",   // instead of the five above
      "EnableSsl": false,          // sslmode=require
      "NodeName": "node-a",        // luabroker's own: this node among those sharing the database
      "NodeAddress": "10.0.0.5"    // luabroker's own: where the other nodes reach this one's coordinator
    }

The storage area stays a folder (``StorageDirectory``; ``EnableStorage`` is refused). Each tenant's
index is a schema of that database (``public`` for the default tenant, ``tenant_<name>`` for the others).
"""
from __future__ import annotations

from dataclasses import dataclass

from broker.config.options import ConfigError, Section
from broker.config.tenants import DEFAULT_TENANT

DEFAULT_SCHEMA = "public"


@dataclass(frozen=True)
class PostgresSettings:
    enable_index: bool = False
    connection_uri: str | None = None
    host: str = "localhost"
    port: int = 5432
    database: str = "orthanc"
    username: str = "orthanc"
    password: str = ""
    enable_ssl: bool = False
    #: luabroker's own: this node's name (``NodeName``; default: host name and HTTP port) and the
    #: address its coordinator listens on for the other nodes (``NodeAddress``).
    node_name: str = ""
    node_address: str = "127.0.0.1"

    @property
    def conninfo(self) -> str:
        """What psycopg connects with: ``ConnectionUri``, or libpq's ``key=value`` form of the others."""
        if self.connection_uri:
            return self.connection_uri
        pairs = {"host": self.host, "port": str(self.port), "dbname": self.database, "user": self.username,
                 "password": self.password, **({"sslmode": "require"} if self.enable_ssl else {})}
        return " ".join(f"{key}='{_escaped(value)}'" for key, value in pairs.items() if value)


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def tenant_schema(tenant: str) -> str:
    """The schema of a tenant's index."""
    return DEFAULT_SCHEMA if tenant == DEFAULT_TENANT else f"tenant_{tenant}"


def read_postgresql(options: Section) -> PostgresSettings:
    section = options.section("PostgreSQL")
    if section.option("EnableStorage", bool, False):
        raise ConfigError(f"Option '{section.label('EnableStorage')}' is not supported: the storage area is the "
                          "folder of StorageDirectory (a mounted folder shared by the nodes)")
    base = PostgresSettings()
    return PostgresSettings(
        enable_index=section.option("EnableIndex", bool, False),
        connection_uri=section.option("ConnectionUri", str, "") or None,
        host=section.option("Host", str, base.host),
        port=section.option("Port", int, base.port, lambda p: 0 < p < 65536, "in [1, 65535]"),
        database=section.option("Database", str, base.database),
        username=section.option("Username", str, base.username),
        password=section.option("Password", str, base.password),
        enable_ssl=section.option("EnableSsl", bool, False),
        node_name=section.option("NodeName", str, ""),
        node_address=section.option("NodeAddress", str, base.node_address),
    )
