"""The export folder: the split rule, claiming and publishing the folder, the content hash.

An export is written into a hidden sibling folder and renamed into place only when it
is complete, with ``manifest.json`` written last; so a folder with a manifest is a whole
export, and an interrupted one leaves nothing that looks like one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import heapq
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bot.export.privacy import normalise

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = ".prefloop-export.lock"
PRODUCER = "prefloop"
SCHEMA_VERSION = 1
SPLIT_RULE = (
    "a prompt is in the test split when the first 8 bytes of "
    "sha256(f'{seed}\\0{normalised prompt}'), read as a big-endian integer and divided by "
    "2**64, are below test_fraction; normalised = NFKC, case-folded, every run of "
    "non-word characters one space, trimmed"
)
HASH_RULE = (
    "sha256 of the output of `sha256sum` over every file of the export except "
    "manifest.json, sorted by path in byte order; in the folder: find . -type f ! -name "
    "manifest.json -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum"
)


class ExportError(RuntimeError):
    """The export cannot be made (and nothing was overwritten); the message says why."""


def split_of(prompt: str, seed: int, test_fraction: float, *, normalised: bool = False) -> str:
    """The split of a prompt ("train" or "test"): deterministic, the same in every export."""
    text = prompt if normalised else normalise(prompt)
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def is_our_export(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("producer") == PRODUCER


@contextlib.contextmanager
def claimed(out: Path, *, replace: bool = True) -> Iterator[Path]:
    """Check that ``out`` may be written; yield the hidden folder to write into.

    Refused: a file, a non-empty folder that is not an earlier prefloop export, and an
    earlier export when ``replace`` is false. Exports into one parent folder take turns
    (a lock file there); holding it, leftovers of interrupted exports are removed.
    """
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ExportError(f"{out} exists and is not a folder; refusing to overwrite it")
        if any(out.iterdir()):
            if not is_our_export(out):
                raise ExportError(
                    f"{out} exists and is not a prefloop export (it has no prefloop "
                    "manifest.json); refusing to overwrite it: choose a new folder or empty it"
                )
            if not replace:
                raise ExportError(
                    f"{out} holds an earlier export; an incremental export needs a new "
                    "folder (replacing that one would lose its picks for good)"
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(out.parent / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(
                f"another export is writing into {out.parent}; try again when it has finished"
            ) from None
        for leftover in out.parent.glob(".*.prefloop-partial-*"):
            log.warning("removing %s, left by an interrupted export", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        staging = out.parent / f".{out.name}.prefloop-partial-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        yield staging
    finally:
        os.close(lock)  # releases the lock


def publish(staging: Path, out: Path) -> None:
    """Move the finished export into place, replacing an earlier export there."""
    if out.exists() and any(out.iterdir()):
        old = out.parent / f".{out.name}.prefloop-old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            out.rmdir()  # an empty folder the user made for us
        os.rename(staging, out)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(
    entries: Iterable[tuple[str, str]], *sorted_runs: Iterable[tuple[str, str]]
) -> str:
    """The export's content hash (see HASH_RULE) from (path, sha256) pairs.

    ``entries`` may come in any order (a few files); each of ``sorted_runs`` must already
    be in path order (the images, generated in order without holding them in memory).
    """
    digest = hashlib.sha256()
    merged: Iterator[tuple[str, str]] = heapq.merge(
        sorted(entries, key=_path_bytes), *sorted_runs, key=_path_bytes
    )
    for path, sha in merged:
        digest.update(f"{sha}  {path}\n".encode())
    return digest.hexdigest()


def _path_bytes(entry: tuple[str, str]) -> bytes:
    return entry[0].encode()


def write_manifest(staging: Path, manifest: dict[str, Any]) -> None:
    (staging / MANIFEST).write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
