"""Zips made while they are sent: a member's copy of their data, and an export's folder.

Both write into one :class:`ZipSink` (not seekable, so zipfile writes a data descriptor
after each entry instead of seeking back) and hand over what was written so far, so a
download starts at once and never sits whole in memory. Files that are compressed
already (images, parquet, weights, zips) are stored as they are, the rest deflated.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import zipfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from bot.domain import Vote
from bot.picks.mine import MyData, MyImage
from bot.storage import Storage, StorageError

log = logging.getLogger(__name__)
STORED = {".png", ".jpg", ".jpeg", ".webp", ".parquet", ".safetensors", ".zip"}  # not deflated
BLOCK = 1 << 20  # a folder's files are read and zipped this much at a time


class ZipSink(io.RawIOBase):
    """A write-only stream that hands over what was written so far."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def compression(name: str) -> int:
    """How to put the file ``name`` in a zip: stored when it is compressed already."""
    stored = PurePosixPath(name).suffix.lower() in STORED
    return zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED


# ----- a member's copy of their data ---------------------------------------------------


async def member_zip(storage: Storage, data: MyData) -> AsyncIterator[bytes]:
    """The member's zip: each image as it is read from the store (zipped in a thread),
    then data.json naming the file of each image (null: withheld or missing)."""
    sink = ZipSink()
    archive = zipfile.ZipFile(sink, "w")  # not seekable: each entry is written once, in order
    files: dict[tuple[int, int], str] = {}
    for prompt in data.prompts:
        for image in prompt.images:
            if image.withheld or image.storage_key is None:
                continue  # flagged by the safety filter: never shown, not handed out
            try:
                content = await storage.get(image.storage_key)
            except StorageError as error:
                log.warning("a member's copy leaves out %s: %s", image.storage_key, error)
                continue
            suffix = image.storage_key.rsplit(".", 1)[-1] if "." in image.storage_key else "png"
            name = f"images/{prompt.id}_{image.index + 1}.{suffix}"
            await asyncio.to_thread(archive.writestr, name, content, compression(name))
            files[(prompt.id, image.index)] = name
            yield sink.take()
    document = json.dumps(_document(data, files), indent=2, ensure_ascii=False).encode()
    await asyncio.to_thread(archive.writestr, "data.json", document, compression("data.json"))
    await asyncio.to_thread(archive.close)
    yield sink.take()


def _document(data: MyData, files: dict[tuple[int, int], str]) -> dict[str, Any]:
    """data.json: the member's prompts (with their images' files) and votes. A withheld
    image is listed as withheld, without what would find its file (key, hash)."""

    def stamp(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    def said(vote: Vote) -> dict[str, Any]:
        return {
            "kind": vote.kind.value,
            "image": vote.index + 1 if vote.index is not None else None,
        }

    return {
        "member": str(data.member),
        "exported_at": datetime.now(UTC).isoformat(),
        "prompts": [
            {
                "set": p.id,
                "prompt": p.prompt,
                "negative_prompt": p.negative_prompt,
                "images_asked": p.n_images,
                "params": p.params,
                "status": p.status.value,
                "error": p.error,
                "requested_at": stamp(p.requested_at),
                "finished_at": stamp(p.finished_at),
                "images": [_image(p.id, i, files) for i in p.images],
            }
            for p in data.prompts
        ],
        "votes": [
            {"set": v.generation_id, **said(v.vote), "at": stamp(v.chosen_at), "current": v.current}
            for v in data.votes
        ],
    }


def _image(prompt: int, image: MyImage, files: dict[tuple[int, int], str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"image": image.index + 1, "file": files.get((prompt, image.index))}
    if not image.withheld:
        entry |= {"storage_key": image.storage_key, "sha256": image.sha256}
    return entry | {
        "seed": image.seed,
        "width": image.width,
        "height": image.height,
        "withheld": image.withheld,
    }


# ----- an export's folder --------------------------------------------------------------


def folder_zip(folder: Path) -> Iterator[bytes]:
    """A zip of ``folder``'s regular files (links are not followed), under the folder's
    name: a plain generator, which Starlette runs in a worker thread."""
    sink = ZipSink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:
        for path in _files(folder):
            name = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            info = zipfile.ZipInfo.from_file(path, name)
            info.compress_type = compression(name)
            with (
                path.open("rb") as source,
                archive.open(info, "w", force_zip64=info.file_size >= 1 << 31) as target,
            ):
                while data := source.read(BLOCK):
                    target.write(data)
                    if chunk := sink.take():
                        yield chunk
            if chunk := sink.take():
                yield chunk
    yield sink.take()


def _files(folder: Path) -> Iterator[Path]:
    for directory, folders, names in os.walk(folder):  # does not follow links
        folders.sort()
        for name in sorted(names):
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():
                yield path
