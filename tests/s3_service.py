"""A real S3-compatible HTTP server for the tests: moto's server mode, in-process, on 127.0.0.1.

moto honours conditional writes (``If-None-Match: *`` answers 412 on an existing key, on a PUT and
on ``CompleteMultipartUpload``), multipart uploads and presigned URLs, and starts in ~10 ms, so one
server serves the whole session and each test gets a fresh bucket. Requests travel over real HTTP
through botocore, as they would to AWS or SeaweedFS; nothing is mocked inside the process under
test. Registered in tests/conftest.py's ``pytest_plugins``.

Fixtures:
    s3_server: ``http://127.0.0.1:<port>`` of the session's moto server.
    s3_url: ``s3://<fresh bucket>/moss``, with ``MOSS_S3_ENDPOINT_URL`` and the AWS credential
        variables set for the test (via monkeypatch).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

ACCESS_KEY = "moss-test-key"
SECRET_KEY = "moss-test-secret"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Start moto's threaded server once per session; yields its endpoint URL."""
    pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    """A boto3 client of the test server (for setting up and inspecting buckets)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
        ),
    )


@pytest.fixture
def s3_url(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on the test server: ``s3://<bucket>/moss``, env set for the test."""
    bucket = f"moss-{secrets.token_hex(6)}"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MOSS_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    client = s3_client(s3_server)
    client.create_bucket(Bucket=bucket)
    try:
        yield f"s3://{bucket}/moss"
    finally:  # moto keeps objects in memory: free them
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", ()):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
        client.close()
