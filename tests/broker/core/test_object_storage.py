"""The storage area in S3-compatible object storage (``AwsS3Storage``; ``broker.core.object_storage``),
against a local S3 server (``tests/support/s3.py``): the objects and their keys, the errors, the
configuration, and a whole server storing, reading and deleting through it."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest

from broker.config import Config, ConfigError
from broker.config.object_storage import ObjectStorageSettings
from broker.core.object_storage import ObjectStorage
from broker.errors import ErrorCode, OrthancError
from broker.server import Server
from tests.support.factory import make_instances
from tests.support.ports import free_port
from tests.support.s3 import keys


def settings(section: dict[str, Any], **changes: Any) -> ObjectStorageSettings:
    config = Config.from_json({"AwsS3Storage": {**section, **changes}}, Path("."))
    assert config.object_storage is not None
    return config.object_storage


def test_an_object_is_written_read_and_removed_under_its_key(s3_bucket: dict[str, Any]) -> None:
    flat = ObjectStorage(settings(s3_bucket, RootPath="/files/"))
    legacy = ObjectStorage(settings(s3_bucket, StorageStructure="legacy"))
    first, second = flat.write(b"\x00first"), legacy.write(b"second")
    assert keys(s3_bucket) == sorted([f"files/{first}", f"{second[0:2]}/{second[2:4]}/{second}"])
    assert (flat.read(first), legacy.read(second)) == (b"\x00first", b"second")
    flat.remove(first)
    flat.remove(first)  # idempotent
    assert keys(s3_bucket) == [f"{second[0:2]}/{second[2:4]}/{second}"]
    with pytest.raises(OrthancError) as missing:
        flat.read(first)
    assert (missing.value.code, missing.value.http_status) == (ErrorCode.INEXISTENT_FILE, 404)


def test_a_bucket_that_cannot_be_used_stops_the_start(s3_bucket: dict[str, Any]) -> None:
    with pytest.raises(OSError, match="Cannot use the bucket 'nowhere'"):
        ObjectStorage(settings(s3_bucket, BucketName="nowhere"))
    with pytest.raises(OSError):  # nobody listens there
        ObjectStorage(settings(s3_bucket, Endpoint=f"http://127.0.0.1:{free_port()}", ConnectionTimeout=2))


def test_the_section_is_checked(tmp_path: Path) -> None:
    for bad in ({}, {"BucketName": ""}, {"BucketName": "b", "StorageStructure": "tree"},
                {"BucketName": "b", "StorageEncryption": {"Enable": True}},
                {"BucketName": "b", "MigrationFromFileSystemEnabled": True}, {"BucketName": "b", "RequestTimeout": 0}):
        with pytest.raises(ConfigError):
            Config.from_json({"AwsS3Storage": bad}, tmp_path)
    assert Config.from_json({}, tmp_path).object_storage is None
    # A tenant's objects are under a prefix of its own, as its files are under a folder of its own.
    config = Config.from_json({"AwsS3Storage": {"BucketName": "b", "RootPath": "pacs"}, "DicomAet": "MAIN",
                               "Tenants": {"A": {"DicomAets": ["AET_A"]}}}, tmp_path)
    tenant = config.tenant("A").object_storage
    assert tenant is not None and (tenant.bucket_name, tenant.root_path) == ("b", "pacs/tenants/A")


def test_a_server_stores_reads_and_deletes_its_files_in_the_bucket(luabroker: Any, s3_bucket: dict[str, Any]) -> None:
    server = luabroker(AwsS3Storage=s3_bucket, DicomAet="MAIN", Tenants={"A": {"DicomAets": ["AET_A"]}})
    first, second = make_instances(2, patient_id="IN_S3")
    assert server.c_store([first]) == [0]
    assert server.c_store([second], called_aet="AET_A") == [0]
    [instance] = server.http.get("/instances").json()
    read_back = pydicom.dcmread(io.BytesIO(server.http.get(f"/instances/{instance}/file").content))
    assert read_back.SOPInstanceUID == first.SOPInstanceUID
    stored = keys(s3_bucket)
    assert len([key for key in stored if not key.startswith("tenants/")]) >= 1
    assert any(key.startswith("tenants/A/") for key in stored)
    # No file of an instance in the storage folder: only the index and the server's own files.
    files = [path for path in (server.root / "storage").rglob("*") if path.is_file()]
    assert all(path.name.startswith(("index.sqlite", "jobs.sqlite", "server", "coordinator")) for path in files), files
    assert server.http.delete(f"/instances/{instance}").status_code == 200
    assert [key for key in keys(s3_bucket) if not key.startswith("tenants/")] == []
    assert any(key.startswith("tenants/A/") for key in keys(s3_bucket))


def test_a_server_whose_bucket_cannot_be_used_gives_back_its_locks(tmp_path: Path, s3_bucket: dict[str, Any],
                                                                   postgres_database: str) -> None:
    """It does not start, and keeps neither the storage directory nor the coordinator lease."""
    options = {"StorageDirectory": str(tmp_path / "storage"), "HttpPort": free_port(), "DicomPort": free_port(),
               "PostgreSQL": {"EnableIndex": True, "ConnectionUri": postgres_database}}
    with pytest.raises(OSError, match="Cannot use the bucket 'missing'"):
        Server(Config.from_json({**options, "AwsS3Storage": {**s3_bucket, "BucketName": "missing"}}, tmp_path))
    server = Server(Config.from_json(options, tmp_path))  # neither is taken
    server.lease.release()
    server.server_lock.release()
