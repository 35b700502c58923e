"""A throwaway PostgreSQL cluster for the tests (issue 14): Debian's ``postgresql`` package, ``initdb`` in
a temporary folder, a server on a free loopback port, stopped when the session ends.

``postgres_database`` gives each test a database of its own in that cluster (its connection string).
With ``LUABROKER_TEST_INDEX=postgresql`` in the environment, every server the ``luabroker`` fixture
starts, and every configuration ``write_config`` writes, has its index in a database of that cluster
(one per storage directory): the second pass of ``make test`` runs the suite so, less the tests that
choose their back end themselves (``index_backend``, ``postgres_database``), which the first ran on each.
PostgreSQL refuses to run as root: as root (CI), the cluster runs as the ``postgres`` account that the
package creates. Without the package, the tests that need it are skipped with the reason.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from broker.core.database import Backend
from broker.core.postgres import PostgresBackend
from tests.support.ports import free_port

#: The environment variable that puts the ``luabroker`` fixture's servers on PostgreSQL.
INDEX_VARIABLE = "LUABROKER_TEST_INDEX"


def postgres_bin() -> Path | None:
    """The folder of the newest installed server's programs (``/usr/lib/postgresql/<version>/bin``)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Cluster:
    directory: Path
    port: int
    user: str = "luabroker"

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.getuid() == 0 else command


def start_cluster() -> Cluster:
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    directory = Path(tempfile.mkdtemp(prefix="luabroker-pg-"))
    if os.getuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    cluster = Cluster(directory, free_port())
    subprocess.run(_as_server_user([str(binaries / "initdb"), "-D", str(directory / "data"), "-U", cluster.user,
                                    "--auth=trust", "-E", "UTF8", "--no-sync"]),
                   check=True, capture_output=True)
    options = f"-p {cluster.port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(directory / "data"), "-o", options,
                                    "-l", str(directory / "server.log"), "-w", "start"]),
                   check=True, capture_output=True)
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    binaries = postgres_bin()
    assert binaries is not None
    subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(cluster.directory / "data"), "-m",
                                    "immediate", "stop"]), capture_output=True)
    shutil.rmtree(cluster.directory, ignore_errors=True)


_shared: Cluster | None = None
_databases: dict[Path, str] = {}


def shared_cluster() -> Cluster:
    """The cluster of this test process, started at the first call and stopped at its exit."""
    global _shared
    if _shared is None:
        _shared = start_cluster()
        atexit.register(stop_cluster, _shared)
    return _shared


#: The fixtures of the tests that choose their back end themselves.
CHOOSING_FIXTURES = frozenset({"postgres_cluster", "postgres_database", "index_backend"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``LUABROKER_TEST_INDEX=postgresql`` (the second pass of ``make test``), leave out the tests
    that choose their back end themselves: the first pass ran them on each."""
    if os.environ.get(INDEX_VARIABLE) != "postgresql":
        return
    chosen = [item for item in items if CHOOSING_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if chosen:
        config.hook.pytest_deselected(items=chosen)
        items[:] = [item for item in items if item not in chosen]


@pytest.fixture(scope="session")
def postgres_cluster() -> Cluster:
    return shared_cluster()


def database_for(storage_directory: Path) -> str:
    """The database of the server of ``storage_directory`` with ``LUABROKER_TEST_INDEX=postgresql``: a new
    one for a new storage directory, the same for a server started again on it."""
    storage_directory = storage_directory.resolve()
    if storage_directory not in _databases:
        _databases[storage_directory] = new_database(shared_cluster())
    return _databases[storage_directory]


def on_postgresql(options: dict[str, Any], root: Path) -> dict[str, Any]:
    """``options`` of a server whose files are in ``root``, with its index in PostgreSQL when the
    environment asks for it (``INDEX_VARIABLE``) and the options do not say otherwise."""
    if os.environ.get(INDEX_VARIABLE) != "postgresql" or "PostgreSQL" in options:
        return options
    database = database_for(root / options.get("StorageDirectory", "luabroker-data"))
    return {**options, "PostgreSQL": {"EnableIndex": True, "ConnectionUri": database}}


def new_database(cluster: Cluster) -> str:
    """A new, empty database of ``cluster``; its connection string (dropped with the cluster)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.uri(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return cluster.uri(name)


@pytest.fixture
def postgres_database(postgres_cluster: Cluster) -> Iterator[str]:
    """A new, empty database; its connection string."""
    uri = new_database(postgres_cluster)
    try:
        yield uri
    finally:
        with psycopg.connect(postgres_cluster.uri(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{uri.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def index_backend(request: pytest.FixtureRequest) -> Iterator[Backend | None]:
    """Each back end of the index in turn: SQLite (None: the store's own file), then PostgreSQL (a new
    schema in the session's cluster: cheaper than a database per test, and what a tenant gets)."""
    if request.param == "sqlite":
        yield None
        return
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield PostgresBackend(cluster.uri(), schema)
    with psycopg.connect(cluster.uri(), autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
