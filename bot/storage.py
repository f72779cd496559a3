"""The image store: content-addressed keys, a local folder by default, S3 when configured.

A key is derived from the file's SHA-256 (``images/ab/cd/abcd….png``), so writing the
same bytes twice stores them once and a key never points at changed content. Workers on
other machines write to the same S3 bucket the bot reads from.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from bot.config import Settings


class StorageError(RuntimeError):
    """A stored file is missing or the store cannot be reached."""


def content_key(data: bytes, suffix: str) -> tuple[str, str]:
    """(key, sha256 hex) for ``data``; ``suffix`` is the file type, e.g. ``png``."""
    digest = hashlib.sha256(data).hexdigest()
    return f"images/{digest[:2]}/{digest[2:4]}/{digest}.{suffix}", digest


class Storage(Protocol):
    """What the rest of prefloop needs from a store."""

    async def put(self, data: bytes, suffix: str) -> tuple[str, str]:
        """Store ``data``; return (key, sha256)."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`StorageError` when missing."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error if it is already gone)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A path on this machine's disk, when the store is a local folder."""
        ...


class LocalStorage:
    """Files under one folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def local_path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"key {key!r} points outside the store")
        return path

    async def put(self, data: bytes, suffix: str) -> tuple[str, str]:
        return await asyncio.to_thread(self._put, data, suffix)  # hashing too: off the loop

    def _put(self, data: bytes, suffix: str) -> tuple[str, str]:
        key, digest = content_key(data, suffix)
        self._write(self.local_path(key), data)
        return key, digest

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        if path.exists():
            return  # same key, same content
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def get(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self.local_path(key).read_bytes)
        except FileNotFoundError:
            raise StorageError(f"image file {key} is missing from {self.root}") from None

    async def exists(self, key: str) -> bool:
        return self.local_path(key).exists()

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.local_path(key).unlink()


class S3Storage:
    """Objects in an S3-compatible bucket (AWS, MinIO, R2 …) under an optional prefix."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, region: str | None = None):
        import boto3

        parsed = urlparse(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def local_path(self, key: str) -> None:
        return None

    async def put(self, data: bytes, suffix: str) -> tuple[str, str]:
        return await asyncio.to_thread(self._put, data, suffix)  # hashing too: off the loop

    def _put(self, data: bytes, suffix: str) -> tuple[str, str]:
        key, digest = content_key(data, suffix)
        self.client.put_object(
            Bucket=self.bucket, Key=self._object(key), Body=data, ContentType=f"image/{suffix}"
        )
        return key, digest

    async def get(self, key: str) -> bytes:
        try:
            response = await asyncio.to_thread(
                self.client.get_object, Bucket=self.bucket, Key=self._object(key)
            )
        except self.client.exceptions.NoSuchKey:
            raise StorageError(f"image {key} is missing from s3://{self.bucket}") from None
        return await asyncio.to_thread(response["Body"].read)

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await asyncio.to_thread(
                self.client.head_object, Bucket=self.bucket, Key=self._object(key)
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(
            self.client.delete_object, Bucket=self.bucket, Key=self._object(key)
        )


def make_storage(settings: Settings) -> Storage:
    """The store the settings name: ``s3://…``, a folder/``file://`` URL, or data_dir/store."""
    url = settings.storage.url
    if url and url.startswith("s3://"):
        return S3Storage(
            url, endpoint_url=settings.storage.s3_endpoint_url, region=settings.storage.s3_region
        )
    if url:
        return LocalStorage(Path(url.removeprefix("file://")))
    return LocalStorage(settings.data_dir / "store")
