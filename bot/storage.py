"""The image store: content-addressed keys, a local folder by default, S3 when configured.

A key is derived from the file's SHA-256 (``images/ab/cd/abcd….png``), so writing the
same bytes twice stores them once and a key never points at changed content. Workers on
other machines write to the same S3 bucket the bot reads from.

Writing bytes that are already stored marks the file as written now. The sweep of files
no row references (``CollectionService.sweep_store``) relies on that: it deletes only
files last written before a grace age, so never one a running job is about to record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from bot.config import Settings

KEY_FOLDER = "images"  # every key content_key makes starts with this folder
SWEEP_PREFIX = ".sweeping-"  # a local file being swept: renamed away, not yet deleted


class StorageError(RuntimeError):
    """A stored file is missing or the store cannot be reached."""


@dataclass(frozen=True)
class StoredFile:
    """One key in a store and when its file was last written (UTC)."""

    key: str
    written_at: datetime


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

    def files(self) -> AsyncIterator[StoredFile]:
        """Every image key in the store, with when it was last written; in no set order."""
        ...

    async def delete_if_older(self, key: str, cutoff: datetime) -> bool:
        """Remove ``key`` only if its file was last written before ``cutoff``; say if it was.

        A write of the same bytes racing this call either keeps the file or writes it anew.
        """
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
        try:
            os.utime(path)  # same key, same content: now marked fresh for the sweep
            return
        except FileNotFoundError:
            pass  # not stored (or being swept away right now): write it
        except OSError:
            return  # stored, but not ours to touch (a read-only share)
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

    async def files(self) -> AsyncIterator[StoredFile]:
        """The files under ``images/``, one two-level folder at a time (in a thread)."""
        for top in await asyncio.to_thread(_folders, self.root / KEY_FOLDER):
            for folder in await asyncio.to_thread(_folders, top):
                for found in await asyncio.to_thread(self._files_in, folder):
                    yield found

    def _files_in(self, folder: Path) -> list[StoredFile]:
        entries = list(os.scandir(folder))
        tombs = [e for e in entries if e.name.startswith(SWEEP_PREFIX)]
        for tomb in tombs:  # a sweep stopped halfway: undo it
            _restore(Path(tomb.path), folder / tomb.name.removeprefix(SWEEP_PREFIX))
        found = []
        for entry in sorted(os.scandir(folder) if tombs else entries, key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_file():
                continue  # a write in progress (or a crashed one's temp file)
            written = datetime.fromtimestamp(entry.stat().st_mtime, UTC)
            found.append(StoredFile(Path(entry.path).relative_to(self.root).as_posix(), written))
        return found

    async def delete_if_older(self, key: str, cutoff: datetime) -> bool:
        return await asyncio.to_thread(_delete_if_older, self.local_path(key), cutoff.timestamp())


SIGNED_URL_SECONDS = 3600


class S3Storage:
    """Objects in an S3-compatible bucket (AWS, MinIO, R2 …) under an optional prefix."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, region: str | None = None):
        import boto3

        parsed = urlparse(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        from botocore.config import Config

        # SigV4: what every S3 implementation takes (R2 refuses the old signature, and
        # boto3 still presigns URLs with it for some endpoints unless told).
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(signature_version="s3v4"),
        )

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def local_path(self, key: str) -> None:
        return None

    @property
    def public_origin(self) -> str:
        """Where the browser fetches signed URLs from (the web page's CSP allows it): the
        host of a URL signed for this bucket, e.g. ``https://BUCKET.s3.REGION.amazonaws.com``
        on AWS (not the endpoint's host), the endpoint itself for path-style stores."""
        parts = urlparse(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._object("x")}
            )
        )
        return f"{parts.scheme}://{parts.netloc}"

    async def signed_url(self, key: str, seconds: int = SIGNED_URL_SECONDS) -> str:
        """A URL that serves the image for ``seconds`` to whoever has it (the web page's
        images, for signed-in members only). Signing is local: no request to S3."""
        return str(
            await asyncio.to_thread(
                self.client.generate_presigned_url,
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._object(key)},
                ExpiresIn=seconds,
            )
        )

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

    async def files(self) -> AsyncIterator[StoredFile]:
        """The objects under ``<prefix>/images/``, a listing page (1,000) at a time."""
        start = self._object(KEY_FOLDER + "/")
        pages = iter(
            self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
        )
        skip = len(self._object(""))
        while page := await asyncio.to_thread(next, pages, None):
            for item in page.get("Contents", []):
                yield StoredFile(item["Key"][skip:], item["LastModified"])

    async def delete_if_older(self, key: str, cutoff: datetime) -> bool:
        """Delete the object if it was last written before ``cutoff``.

        S3 has no atomic compare-and-delete, so the check is one request before the
        delete: a job storing these very bytes in that instant (rewriting the object)
        could still lose them. Content keys make that a byte-identical image of an
        unreferenced file older than the grace age, written within one round trip.
        """
        from botocore.exceptions import ClientError

        try:
            head = await asyncio.to_thread(
                self.client.head_object, Bucket=self.bucket, Key=self._object(key)
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        if head["LastModified"] >= cutoff:
            return False
        await self.delete(key)
        return True


def _folders(parent: Path) -> list[Path]:
    """The sub-folders of ``parent`` by name (none when it does not exist)."""
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return []
    return sorted(Path(e.path) for e in entries if e.is_dir() and not e.name.startswith("."))


def _delete_if_older(path: Path, cutoff: float) -> bool:
    """Delete ``path`` if last written before ``cutoff`` (a POSIX time), atomically.

    The file is first renamed away: a writer of the same bytes then either touched it
    before (its time is fresh, so it is put back) or finds it gone and writes it anew.
    """
    tomb = path.with_name(SWEEP_PREFIX + path.name)
    try:
        os.rename(path, tomb)
        if tomb.stat().st_mtime < cutoff:
            tomb.unlink()
            return True
    except FileNotFoundError:  # gone, or put back by another sweep's listing
        return False
    _restore(tomb, path)
    return False


def _restore(tomb: Path, path: Path) -> None:
    """Put a swept file back, unless a writer stored the same bytes there meanwhile."""
    try:
        os.link(tomb, path)
    except FileExistsError:
        pass
    except FileNotFoundError:
        return  # another sweep put it back already
    except OSError:  # a file system without hard links: a rename (same bytes if it replaces)
        with contextlib.suppress(FileNotFoundError):
            os.replace(tomb, path)
        return
    with contextlib.suppress(FileNotFoundError):
        tomb.unlink()


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
