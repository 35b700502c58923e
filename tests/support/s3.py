"""A local S3-compatible server for the object storage tests (``AwsS3Storage``): moto's ``moto_server``,
started once per pytest process on a free loopback port. MinIO, the usual choice, is in no package
registry this project installs from; ``moto_server`` speaks S3's HTTP protocol (signatures, buckets,
objects) as a separate process, so the tests go through boto3 and the network as with any server.

``s3_bucket`` gives a test a new, empty bucket: the ``AwsS3Storage`` section that names it.
"""
from __future__ import annotations

import atexit
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.support.ports import free_port

CREDENTIALS = {"AccessKey": "luabroker-test", "SecretKey": "luabroker-test-secret", "Region": "us-east-1"}

_server: tuple[subprocess.Popen[bytes], str] | None = None


def s3_endpoint() -> str:
    """The URL of this process's server, started at the first call and stopped at its exit."""
    global _server
    if _server is None:
        binary = Path(sys.executable).parent / "moto_server"
        if not binary.exists():
            pytest.skip("moto_server is not installed (pip install 'moto[server]')")
        port = free_port()
        process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(endpoint, timeout=2)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        atexit.register(process.terminate)
        _server = (process, endpoint)
    return _server[1]


def client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name=CREDENTIALS["Region"],
                        aws_access_key_id=CREDENTIALS["AccessKey"], aws_secret_access_key=CREDENTIALS["SecretKey"])


@pytest.fixture
def s3_bucket() -> dict[str, Any]:
    """A new, empty bucket on the local server: the ``AwsS3Storage`` section that names it."""
    endpoint = s3_endpoint()
    name = f"test-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=name)
    return {"BucketName": name, "Endpoint": endpoint, "VirtualAddressing": False, **CREDENTIALS}


def keys(section: dict[str, Any]) -> list[str]:
    """Every key of the bucket that ``section`` names."""
    listed = client(section["Endpoint"]).list_objects_v2(Bucket=section["BucketName"])
    return sorted(item["Key"] for item in listed.get("Contents", []))
