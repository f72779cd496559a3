"""A local S3 server for tests (moto's server mode), and a platform moved onto it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def start_s3() -> Iterator[str]:
    """A local S3 server (moto's server mode) with an empty bucket "prefloop"."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="prefloop")
        yield endpoint
    finally:
        server.stop()


@contextmanager
def platform_on_s3(platform: Any, monkeypatch: pytest.MonkeyPatch, prefix: str) -> Iterator[str]:
    """The platform's store (and its service) switched to a local S3 server under
    ``s3://prefloop/<prefix>``, as every process would build it; yields the endpoint."""
    from bot.storage import make_storage

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with start_s3() as endpoint:
        platform.settings.storage.url = f"s3://prefloop/{prefix}"
        platform.settings.storage.s3_endpoint_url = endpoint
        platform.settings.storage.s3_region = "us-east-1"
        platform.storage = make_storage(platform.settings)
        platform.service = type(platform.service)(
            platform.sessions, platform.settings, platform.storage
        )
        yield endpoint
