"""One storage interface, a local folder and an S3 bucket behind it."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.storage import SWEEP_PREFIX, LocalStorage, S3Storage, Storage, StorageError
from tests.support.s3 import start_s3


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
    prefix = f"test-{uuid.uuid4().hex[:8]}"  # the bucket outlives one test
    return S3Storage(f"s3://prefloop/{prefix}", endpoint_url=endpoint, region="us-east-1")


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


# ----- listing and the sweep's guarded delete ---------------------------------------


async def _listed(storage: Storage) -> dict[str, datetime]:
    return {found.key: found.written_at async for found in storage.files()}


async def test_files_lists_every_stored_key_with_its_write_time(storage: Storage) -> None:
    before = datetime.now(UTC) - timedelta(minutes=1)  # S3 keeps whole seconds
    first, _ = await storage.put(b"first", "png")
    second, _ = await storage.put(b"second", "png")
    listed = await _listed(storage)
    assert set(listed) == {first, second}
    assert all(before < written <= datetime.now(UTC) for written in listed.values())


async def test_delete_if_older_deletes_only_files_written_before_the_cutoff(
    storage: Storage,
) -> None:
    key, _ = await storage.put(b"written just now", "png")
    assert not await storage.delete_if_older(key, datetime.now(UTC) - timedelta(minutes=5))
    assert await storage.exists(key)
    assert await storage.delete_if_older(key, datetime.now(UTC) + timedelta(minutes=5))
    assert not await storage.exists(key)
    assert not await storage.delete_if_older(key, datetime.now(UTC) + timedelta(minutes=5))


async def test_storing_bytes_already_there_marks_the_file_fresh(tmp_path: Path) -> None:
    """A job whose image already exists (an orphan, say) must not lose it to the sweep."""
    store = LocalStorage(tmp_path / "store")
    key, _ = await store.put(b"same bytes", "png")
    long_ago = time.time() - 3 * 3600
    os.utime(store.local_path(key), (long_ago, long_ago))
    await store.put(b"same bytes", "png")  # a job storing the same image again
    assert not await store.delete_if_older(key, datetime.now(UTC) - timedelta(hours=1))
    assert await store.get(key) == b"same bytes"


async def test_a_sweep_stopped_halfway_is_undone_by_the_next_listing(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    key, _ = await store.put(b"mid-sweep", "png")
    path = store.local_path(key)
    path.rename(path.with_name(SWEEP_PREFIX + path.name))  # as a crash would leave it
    assert set(await _listed(store)) == {key}
    assert await store.get(key) == b"mid-sweep"
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_signed_urls_on_aws_come_from_the_origin_the_page_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On AWS (no endpoint) a signed URL's host is the bucket's own, not the endpoint's:
    the web page's CSP must name that host; and the signature is SigV4 (R2 takes no other)."""
    import asyncio
    from urllib.parse import urlparse

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = S3Storage("s3://my-bucket/prefloop", region="eu-west-1")
    signed = asyncio.run(store.signed_url("images/ab/cd/abcd.png"))
    parts = urlparse(signed)
    assert f"{parts.scheme}://{parts.netloc}" == store.public_origin
    assert "my-bucket" in parts.netloc  # the bucket's host, not s3.eu-west-1.amazonaws.com
    assert "X-Amz-Signature=" in signed and "AWSAccessKeyId" not in signed
