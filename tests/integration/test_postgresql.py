"""The index in PostgreSQL (issue 14, scope 1; docs/postgresql.md) on a real server and a real
PostgreSQL (a throwaway cluster, ``tests/support/postgres.py``): C-STORE and REST store into it, the
Lua callbacks get their events from it, a restart finds everything again, and each tenant's index is a
schema of its own."""
from __future__ import annotations

from typing import Any

import psycopg
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from broker.config import Config, ConfigError
from broker.core.origin import Origin
from broker.core.postgres import PostgresBackend
from broker.core.store import Store
from tests.integration.test_workers import associations, delivered, send_each
from tests.support.factory import make_instances, to_bytes
from tests.support.process import START_S, write_config
from tests.support.waiting import wait_until

RECORDER = """
function OnStoredInstance(id, tags, metadata, origin)
  RestApiPut('/instances/' .. id .. '/metadata/Delivered', '1')
end
"""


def test_a_server_stores_and_delivers_through_postgresql_and_finds_it_all_after_a_restart(
        luabroker: Any, postgres_database: str) -> None:
    options = {"PostgreSQL": {"EnableIndex": True, "ConnectionUri": postgres_database},
               "UserMetadata": {"Delivered": 1024},
               "AuthenticationEnabled": True, "RegisteredUsers": {"alice": "pw", "root": "pw"},
               "TenantAdministrators": ["root"],
               "Tenants": {"A": {"DicomAets": ["AET_A"], "Users": ["alice"], "LuaScripts": ["recorder.lua"]}}}
    server = luabroker({"recorder.lua": RECORDER}, **options)
    root = server.client(auth=("root", "pw"))
    alice = server.client(auth=("alice", "pw"))
    assert server.c_store(make_instances(3, patient_id="ON_PG")) == [0, 0, 0]
    assert server.c_store(make_instances(2, patient_id="A_ON_PG"), called_aet="AET_A") == [0, 0]
    assert alice.post("/instances", content=to_bytes(make_instances(1, patient_id="A_REST")[0])).status_code == 200
    server.wait_events()
    server.wait_events(tenant="A")
    default_ids, a_ids = sorted(root.get("/instances").json()), sorted(alice.get("/instances").json())
    assert len(default_ids) == 3 and len(a_ids) == 3
    assert all(root.get(f"/instances/{i}/metadata/Delivered").text == "1" for i in default_ids)
    assert all(alice.get(f"/instances/{i}/metadata/Delivered").text == "1" for i in a_ids)
    assert root.get("/changes").json()["Last"] > 0
    # Nothing of it in an index.sqlite; the rows are in PostgreSQL, each tenant in its schema.
    assert not list(server.root.rglob("index.sqlite"))
    with psycopg.connect(postgres_database) as connection:
        counts = {schema: connection.execute(f'SELECT COUNT(*) FROM "{schema}".resources WHERE level = 3'
                                             ).fetchone()[0] for schema in ("public", "tenant_A")}
    assert counts == {"public": 3, "tenant_A": 3}
    root.close()
    alice.close()
    server.stop()

    again = luabroker({"recorder.lua": RECORDER}, **{**options, "StorageDirectory": str(server.root / "storage")})
    with again.client(auth=("alice", "pw")) as alice:
        assert sorted(alice.get("/instances").json()) == a_ids
        assert alice.get(f"/instances/{a_ids[0]}/file").content  # the file, from the same storage area
    with again.client(auth=("root", "pw")) as root:
        assert sorted(root.get("/instances").json()) == default_ids


def test_the_postgresql_section_is_checked(tmp_path: Any) -> None:
    config = Config.from_json({"PostgreSQL": {"EnableIndex": True, "Host": "db", "Port": 5433, "Database": "pacs",
                                              "Username": "u", "Password": "it's"}}, tmp_path)
    assert config.postgresql.conninfo == "host='db' port='5433' dbname='pacs' user='u' password='it\\'s'"
    uri = Config.from_json({"PostgreSQL": {"ConnectionUri": "postgresql://u@db/pacs"}}, tmp_path).postgresql
    assert uri.conninfo == "postgresql://u@db/pacs" and not uri.enable_index
    for bad in ({"EnableStorage": True}, {"Port": 0}, {"EnableIndex": "yes"}):
        try:
            Config.from_json({"PostgreSQL": bad}, tmp_path)
        except ConfigError:
            continue
        raise AssertionError(f"{bad} was accepted")


def test_two_worker_processes_share_the_postgresql_index(processes: Any, tmp_path: Any,
                                                         postgres_database: str) -> None:
    """``Workers: 2`` on PostgreSQL: both processes write the one index (their writes serialised by the
    advisory lock), and every event reaches the coordinator's dispatcher."""
    (tmp_path / "recorder.lua").write_text(RECORDER)
    write_config(tmp_path, Workers=2, LuaScripts=["recorder.lua"], UserMetadata={"Delivered": 1024},
                 PostgreSQL={"EnableIndex": True, "ConnectionUri": postgres_database})
    server = processes(tmp_path)
    server.wait_ready()
    wait_until(lambda: server.lines("serves DICOM") >= 2, START_S, message="two workers serving")
    with associations(server, CTImageStorage, "STORESCU", 12) as opened:
        assert send_each(opened, make_instances(12)) == [0] * 12
    ids = server.http.get("/instances").json()
    assert len(ids) == 12
    wait_until(lambda: delivered(server, ids), message="every OnStoredInstance delivered")
    assert server.get("/lua/status")["Events"]["pending"] == 0


def test_the_index_goes_on_after_postgresql_dropped_its_connections(tmp_path: Any, postgres_database: str) -> None:
    """A restart of PostgreSQL (here: every connection of the index terminated) costs no more than the
    calls in flight: the next write and read open new connections, and nothing stored is lost."""
    store = Store(tmp_path, index_backend=PostgresBackend(postgres_database))
    try:
        first, second = make_instances(2)
        store.store_instance(to_bytes(first), Origin.lua())
        with store.index.read() as tx:  # a pooled reader connection, to be dropped too
            assert tx.counts()
        with psycopg.connect(postgres_database, autocommit=True) as admin:
            dropped = admin.execute("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        assert dropped >= 2  # the writer and the reader
        result = store.store_instance(to_bytes(second), Origin.lua())
        assert result.status == "Success"
        assert store.statistics().count_instances == 2
        assert len(store.outbox.pending()) == 2
    finally:
        store.close()
