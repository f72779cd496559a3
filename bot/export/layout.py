"""The export folder: the split rule, claiming and publishing the folder, the content hash.

An export is written into a hidden sibling folder and renamed into place only when it
is complete, with ``manifest.json`` written last; so a folder with a manifest is a whole
export, and an interrupted one leaves nothing that looks like one.

Publishing is durable and replaces an earlier export without a gap: every file is
fsynced before the rename and the parent folder after it, and the two folders swap
atomically (Linux ``renameat2(RENAME_EXCHANGE)``). Where the filesystem cannot swap, the
earlier export is renamed aside first; a crash between that and the rename into place
leaves it as ``.OUT.prefloop-old-*``, which the next export into the folder renames
back. Leftovers of either kind beside a complete export are removed then.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
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
PARTIAL = "prefloop-partial"  # .OUT.prefloop-partial-*: an export being written
OLD = "prefloop-old"  # .OUT.prefloop-old-*: an earlier export, renamed aside to replace it
PRODUCER = "prefloop"
SCHEMA_VERSION = 3  # 2: keyed ids, file_path under preference_images/; 3: vote fields
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
    (a lock file there); holding it, leftovers of interrupted exports are cleaned up
    first (see :func:`recover`).
    """
    if (out.exists() or out.is_symlink()) and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(out.parent / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(
                f"another export is writing into {out.parent}; try again when it has finished"
            ) from None
        recover(out.parent)
        _check_target(out, replace)
        staging = out.parent / f".{out.name}.{PARTIAL}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        yield staging
    finally:
        os.close(lock)  # releases the lock


def _check_target(out: Path, replace: bool) -> None:
    """Refuse to write over anything but nothing, an empty folder or an earlier export."""
    if not out.is_dir() or not any(out.iterdir()):
        return
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


def recover(parent: Path) -> None:
    """Clean up after interrupted exports into ``parent`` (call it holding the lock).

    A partial export is removed. An earlier export renamed aside (``.OUT.prefloop-old-*``)
    goes back to ``OUT`` when nothing complete is there (the replace stopped between its
    two renames), and is removed when ``OUT`` holds a complete export.
    """
    for leftover in parent.glob(f".*.{PARTIAL}-*"):
        log.warning("removing %s, left by an interrupted export", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
    # The newest first: were there several, the latest earlier export is the one to keep.
    olds = sorted(parent.glob(f".*.{OLD}-*"), key=_mtime, reverse=True)
    for old in olds:
        target = parent / old.name[1:].rsplit(f".{OLD}-", 1)[0]
        if is_our_export(target):
            log.warning("removing %s: %s holds a complete export", old, target)
            shutil.rmtree(old, ignore_errors=True)
        elif _absent_or_empty(target) and is_our_export(old):
            log.warning("restoring %s from %s, left by an interrupted replace", target, old)
            with contextlib.suppress(FileNotFoundError):
                target.rmdir()
            os.rename(old, target)
            fsync_dir(parent)
        else:
            log.warning("leaving %s alone: %s holds something else", old, target)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _absent_or_empty(path: Path) -> bool:
    if not path.exists() and not path.is_symlink():
        return True
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def publish(staging: Path, out: Path) -> None:
    """Move the finished export into place, durably, replacing an earlier export there.

    Every file is fsynced already (the writers and the manifest do it); here the folders
    are, then the rename, then the parent. An earlier export is swapped out atomically,
    or (where the filesystem cannot swap) renamed aside first: see :func:`recover`.
    """
    with os.scandir(staging) as entries:  # an export has one level of folders
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                fsync_dir(Path(entry.path))
    fsync_dir(staging)
    if out.is_dir() and any(out.iterdir()):
        if exchange(staging, out):
            fsync_dir(out.parent)
            shutil.rmtree(staging, ignore_errors=True)  # now the earlier export
            return
        old = out.parent / f".{out.name}.{OLD}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        try:
            os.rename(staging, out)  # a crash before this: recover() renames old back
        except BaseException:
            with contextlib.suppress(OSError):  # still running: put it back at once
                os.rename(old, out)
            raise
        fsync_dir(out.parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        out.rmdir()  # an empty folder the user made for us
    os.rename(staging, out)
    fsync_dir(out.parent)


AT_FDCWD = -100
RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step; False where the system or filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not Linux, or a C library without it
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def fsync_file(path: str | Path) -> None:
    """Flush a file's data to disk (a crash after this cannot lose what it holds)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries to disk (files created, renamed or linked in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """The manifest, written last and fsynced: its presence means the export is whole."""
    with (staging / MANIFEST).open("w", encoding="utf-8") as file:
        file.write(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        file.flush()
        os.fsync(file.fileno())
