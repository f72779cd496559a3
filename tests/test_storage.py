"""One storage interface, a local folder and an S3 bucket behind it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.storage import LocalStorage, S3Storage, Storage, StorageError


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


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with start_s3() as endpoint:
        yield endpoint


@pytest.fixture(params=["folder", "s3"])
def storage(request: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    if request.param == "folder":
        return LocalStorage(tmp_path / "store")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Storage("s3://prefloop/images-test", endpoint_url=endpoint, region="us-east-1")


async def test_put_returns_a_content_key_and_reads_back(storage: Storage) -> None:
    data = b"\x89PNG fake image bytes"
    key, digest = await storage.put(data, "png")
    assert digest == hashlib.sha256(data).hexdigest()
    assert key.endswith(f"{digest}.png") and digest[:2] in key
    assert await storage.get(key) == data
    assert await storage.exists(key)


async def test_same_bytes_same_key(storage: Storage) -> None:
    first, _ = await storage.put(b"same", "png")
    second, _ = await storage.put(b"same", "png")
    assert first == second


async def test_missing_key_is_a_clear_error(storage: Storage) -> None:
    key, _ = await storage.put(b"to delete", "png")
    await storage.delete(key)
    assert not await storage.exists(key)
    with pytest.raises(StorageError, match="missing"):
        await storage.get(key)
    await storage.delete(key)  # deleting twice is fine


async def test_local_keys_cannot_escape_the_folder(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    with pytest.raises(StorageError, match="outside"):
        await store.get("../../etc/passwd")


async def test_local_store_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    key, _ = await store.put(b"x" * 1000, "png")
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert files == [store.local_path(key)]
