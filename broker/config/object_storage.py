"""The ``AwsS3Storage`` section: the storage area in S3-compatible object storage instead of the folder of
``StorageDirectory``, in the style of Orthanc's AWS S3 plugin::

    "AwsS3Storage": {
      "BucketName": "pacs-files",          // required
      "Region": "eu-west-1",
      "AccessKey": "AKIA...", "SecretKey": "...",   // optional: else boto3's default credentials
      "Endpoint": "http://minio:9000",     // optional: a server other than AWS (MinIO, Ceph, ...)
      "VirtualAddressing": false,          // path-style addressing, as MinIO and most local servers need
      "RootPath": "luabroker",             // optional: a prefix of every key
      "StorageStructure": "flat",          // "flat": <RootPath>/<uuid>; "legacy": <RootPath>/<xx>/<yy>/<uuid>
      "ConnectionTimeout": 30, "RequestTimeout": 1200
    }

The plugin's ``StorageEncryption``, ``MigrationFromFileSystemEnabled`` and ``HybridMode`` are refused.
"""
from __future__ import annotations

from dataclasses import dataclass

from broker.config.options import ConfigError, Section

#: The plugin's options that luabroker does not implement: refused rather than silently ignored.
_REFUSED = ("StorageEncryption", "MigrationFromFileSystemEnabled", "HybridMode")


@dataclass(frozen=True)
class ObjectStorageSettings:
    bucket_name: str
    region: str = ""
    access_key: str | None = None
    secret_key: str | None = None
    endpoint: str | None = None
    virtual_addressing: bool = True
    root_path: str = ""
    storage_structure: str = "flat"
    connection_timeout: float = 30.0
    request_timeout: float = 1200.0


def read_object_storage(options: Section) -> ObjectStorageSettings | None:
    if "AwsS3Storage" not in options:
        return None
    section = options.section("AwsS3Storage")
    for name in _REFUSED:
        if name in section:
            raise ConfigError(f"Option '{section.label(name)}' is not supported by luabroker")
    bucket = section.option("BucketName", str, "", lambda v: bool(v.strip()), "(not empty)")
    return ObjectStorageSettings(
        bucket_name=bucket,
        region=section.option("Region", str, ""),
        access_key=section.option("AccessKey", str, "") or None,
        secret_key=section.option("SecretKey", str, "") or None,
        endpoint=section.option("Endpoint", str, "") or None,
        virtual_addressing=section.option("VirtualAddressing", bool, True),
        root_path=section.option("RootPath", str, "").strip("/"),
        storage_structure=section.option("StorageStructure", str, "flat", lambda v: v in ("flat", "legacy"),
                                         '"flat" or "legacy"'),
        connection_timeout=section.option("ConnectionTimeout", float, 30.0, lambda v: v > 0, "> 0"),
        request_timeout=section.option("RequestTimeout", float, 1200.0, lambda v: v > 0, "> 0"),
    )
