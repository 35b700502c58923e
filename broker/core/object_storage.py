"""The storage area in S3-compatible object storage (the ``AwsS3Storage`` section,
``broker.config.object_storage``): one object per attachment, keyed by its random UUID, through boto3.

It has the folder's interface (``broker.core.storage.StorageArea``: ``write``, ``read``, ``remove``),
with the same promise: an object is written before the index transaction that references it commits,
so a crash in between leaves an orphan object, never an index row without its object. A successful
``PUT`` is durable, so there is nothing to fsync. Several nodes sharing a PostgreSQL index share a
bucket as they would share a mounted folder (docs/postgresql.md).
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from broker.config.object_storage import ObjectStorageSettings
from broker.errors import ErrorCode, OrthancError

log = logging.getLogger("luabroker.storage")


class ObjectStorage:
    def __init__(self, settings: ObjectStorageSettings) -> None:
        """Raises ``OSError`` when the bucket cannot be reached (the server must not start then, as
        Orthanc's plugin refuses to)."""
        self.settings = settings
        self.bucket = settings.bucket_name
        self.prefix = f"{settings.root_path}/" if settings.root_path else ""
        self.client: Any = boto3.client(
            "s3", region_name=settings.region or None, endpoint_url=settings.endpoint,
            aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key,
            config=botocore.config.Config(
                s3={"addressing_style": "virtual" if settings.virtual_addressing else "path"},
                connect_timeout=settings.connection_timeout, read_timeout=settings.request_timeout,
                retries={"max_attempts": 3, "mode": "standard"}))
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise OSError(f"Cannot use the bucket {self.bucket!r} of AwsS3Storage: {exc}") from exc

    def key(self, file_uuid: str) -> str:
        if self.settings.storage_structure == "legacy":
            return f"{self.prefix}{file_uuid[0:2]}/{file_uuid[2:4]}/{file_uuid}"
        return f"{self.prefix}{file_uuid}"

    def write(self, data: bytes) -> str:
        """Store ``data`` under a new UUID and return it."""
        file_uuid = str(uuid.uuid4())
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(file_uuid), Body=data)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise OrthancError(ErrorCode.CANNOT_WRITE_FILE,
                               f"Cannot write {self.key(file_uuid)} to the bucket {self.bucket}: {exc}") from exc
        return file_uuid

    def read(self, file_uuid: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self.key(file_uuid))["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise OrthancError(ErrorCode.INEXISTENT_FILE,
                               f"The file {file_uuid} is missing from the bucket {self.bucket}") from exc
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise OrthancError(ErrorCode.STORAGE_AREA_PLUGIN,
                               f"Cannot read {self.key(file_uuid)} from the bucket {self.bucket}: {exc}") from exc
        return body

    def remove(self, file_uuid: str) -> None:
        """Remove an object if it exists (idempotent, as S3's ``DELETE`` is). Never raises, as the folder's
        does not: it runs after the index no longer references the object, or to undo a write whose
        transaction failed, and an object left behind is an orphan, which loses nothing."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(file_uuid))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            log.warning("Cannot remove %s from the bucket %s (left as an orphan): %s", self.key(file_uuid),
                        self.bucket, exc)
