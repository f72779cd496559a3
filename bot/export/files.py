"""Writing an export's files: the images (linked or copied from the store) and the records.

Two layouts share one interface, ``add(candidate, split, contain_name)`` returning the
reason a pick could not be written (its image files are gone) or None:

- :class:`HpsWriter`: the HPS v1 release layout, ``preference_images/{id}_{k}.{ext}``
  and ``preference_{train,test}.json``, written as streams; ``file_path`` entries carry
  the folder (``"preference_images/{id}_{k}.png"``), as the release's own JSON does.
- :class:`ParquetWriter`: ``{train,test}.parquet``, one row per vote, images embedded.

Both write prefloop's vote fields (:func:`extension`): the vote's kind, the rater's
weight and the control flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bot.export.layout import fsync_file
from bot.export.picks import Candidate, Picture, Reason
from bot.storage import LocalStorage, Storage, StorageError

SPLITS = ("train", "test")
IMAGES = "preference_images"


class ImageSource:
    """Where images come from: hard links into a local store, else copies or downloads.

    Copies and downloads are fsynced as they are written (a link adds no data: the
    folder's own fsync at publishing covers it).
    """

    def __init__(self, storage: Storage, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.storage = storage
        self.loop = loop
        self.local = isinstance(storage, LocalStorage)
        self.root = str(storage.root) if isinstance(storage, LocalStorage) else ""
        self.can_link = True
        self.linked = self.copied = 0
        self.missing: list[str] = []

    def path(self, key: str) -> str:
        """The file of ``key`` in a local store (string joins: this runs per image)."""
        if ".." in key or key.startswith("/"):
            raise StorageError(f"key {key!r} points outside the store")
        return os.path.join(self.root, key)

    def place(self, key: str, dest: str) -> bool:
        """Put the image ``key`` at ``dest``; False (and noted) when its file is gone."""
        if not self.local:
            data = self.read(key)
            if data is None:
                return False
            with open(dest, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            self.copied += 1
            return True
        source = self.path(key)
        if self.can_link:
            try:
                os.link(source, dest)
                self.linked += 1
                return True
            except FileNotFoundError:
                return self._gone(key)
            except OSError as error:  # another filesystem, or links not allowed there
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                self.can_link = False
        try:
            shutil.copyfile(source, dest)
        except FileNotFoundError:
            return self._gone(key)
        fsync_file(dest)
        self.copied += 1
        return True

    def read(self, key: str) -> bytes | None:
        """The image's bytes, or None (noted) when its file is gone."""
        try:
            if self.local:
                with open(self.path(key), "rb") as file:
                    return file.read()
            assert self.loop is not None, "a remote store needs the event loop"
            return asyncio.run_coroutine_threadsafe(self.storage.get(key), self.loop).result()
        except (FileNotFoundError, StorageError):
            self._gone(key)
            return None

    def _gone(self, key: str) -> bool:
        self.missing.append(key)
        return False


def suffix(picture: Picture) -> str:
    return picture.key.rsplit(".", 1)[-1] if "." in picture.key else "png"


def position(kept: list[Picture], index: int | None) -> int | None:
    """Where the image ``index`` (of the generation) is among the written images."""
    for k, picture in enumerate(kept):
        if picture.index == index:
            return k
    return None


def extension(candidate: Candidate, kept: list[Picture]) -> dict[str, Any]:
    """prefloop's vote fields: kind, the rater's weight and the control flags (indexes into
    the written images, like ``human_preference``)."""
    return {
        "vote": candidate.vote,
        "rater_weight": round(candidate.rater_weight, 6),
        "control": candidate.control,
        "control_worse": position(kept, candidate.control_worse),
        "control_best": position(kept, candidate.control_best),
    }


def record(
    candidate: Candidate, names: list[str], kept: list[Picture], contain_name: bool
) -> dict[str, Any]:
    """One instance as the HPS layout writes it (the first six fields are HPS v1's).

    ``file_path`` holds paths relative to the export folder, ``preference_images/…``, as
    the HPS v1 release's JSON does (its readers join the dataset folder with each).
    ``human_preference`` is null for a tie or "none are good".
    """
    return {
        "id": candidate.id,
        "prompt": candidate.prompt,
        "file_path": [f"{IMAGES}/{name}" for name in names],
        "human_preference": position(kept, candidate.chosen),
        "user_hash": candidate.user_hash,
        "contain_name": contain_name,
        "generation_id": candidate.generation,
        "image_index": [p.index for p in kept],
        "seeds": [p.seed for p in kept],
        "generator_version": candidate.generator_version,
        "adapter_version_id": candidate.adapter_version_id,
        "image_adapter_version_ids": [p.adapter_version_id for p in kept],
        "mixed": candidate.mixed,
        "rater_is_requester": candidate.rater_is_requester,
        "created_at": candidate.created_at.isoformat(),
        **extension(candidate, kept),
    }


class HpsWriter:
    """preference_images/ and the two JSON lists, streamed; remembers what it wrote
    compactly (ids and digests) so that the content hash needs no second pass."""

    ID_BYTES = 16  # an instance id is 32 hex digits

    def __init__(self, staging: Path, source: ImageSource) -> None:
        self.staging = staging
        self.source = source
        (staging / IMAGES).mkdir()
        self.images = str(staging / IMAGES) + os.sep
        self.files = {
            s: (staging / f"preference_{s}.json").open("w", encoding="utf-8") for s in SPLITS
        }
        self.counts = dict.fromkeys(SPLITS, 0)
        self.image_count = 0
        self._ids = bytearray()  # ID_BYTES per instance
        self._sizes = bytearray()
        self._digests = bytearray()
        self._suffixes = bytearray()  # per image, an index into _suffix_names
        self._suffix_names: dict[str, int] = {}

    def add(self, candidate: Candidate, split: str, contain_name: bool) -> Reason | None:
        names: list[str] = []
        kept: list[Picture] = []
        suffixes = []
        for picture in candidate.pictures:
            ext = suffix(picture)
            name = f"{candidate.id}_{len(names)}.{ext}"
            if not self.source.place(picture.key, self.images + name):
                if picture.index == candidate.chosen:
                    return self._undo(names, Reason.missing_file)
                continue
            names.append(name)
            kept.append(picture)
            suffixes.append(ext)
        if len(names) < 2:
            return self._undo(names, Reason.missing_file)
        file = self.files[split]
        file.write(",\n" if self.counts[split] else "[\n")
        file.write(json.dumps(record(candidate, names, kept, contain_name), ensure_ascii=False))
        self.counts[split] += 1
        self.image_count += len(kept)
        self._ids += bytes.fromhex(candidate.id)
        self._sizes.append(len(kept))
        for picture, ext in zip(kept, suffixes, strict=True):
            self._digests += bytes.fromhex(picture.sha256)
            self._suffixes.append(self._suffix_names.setdefault(ext, len(self._suffix_names)))
        return None

    def _undo(self, names: list[str], reason: Reason) -> Reason:
        for name in names:
            os.unlink(self.images + name)
        return reason

    def close(self) -> list[Path]:
        for split, file in self.files.items():
            file.write("\n]\n" if self.counts[split] else "[]\n")
            file.flush()
            os.fsync(file.fileno())
            file.close()
        return [self.staging / f"preference_{s}.json" for s in SPLITS]

    def abort(self) -> None:
        """Close the files without finishing them (the export is being thrown away)."""
        for file in self.files.values():
            with contextlib.suppress(OSError):
                file.close()

    def image_entries(self) -> Iterator[tuple[str, str]]:
        """(path, sha256) of every image, in path byte order, for the content hash.

        What it needs was kept compactly while writing: about 8 + 33 bytes per image.
        """
        names = list(self._suffix_names)
        width = self.ID_BYTES
        count = len(self._sizes)
        starts = array("q", bytes(8 * count))
        total = 0
        for i, size in enumerate(self._sizes):
            starts[i] = total
            total += size
        # Ids have one length, so ordering by id orders the files as their full names do.
        for i in sorted(range(count), key=lambda i: self._ids[width * i : width * i + width]):
            ident = self._ids[width * i : width * i + width].hex()
            for k in range(self._sizes[i]):
                n = starts[i] + k
                digest = self._digests[32 * n : 32 * n + 32].hex()
                yield f"{IMAGES}/{ident}_{k}.{names[self._suffixes[n]]}", digest


def parquet_schema() -> Any:
    import pyarrow as pa

    utc = pa.timestamp("us", tz="UTC")
    fields = [
        ("id", pa.string(), {"dtype": "string", "_type": "Value"}),
        ("generation_id", pa.string(), {"dtype": "string", "_type": "Value"}),
        ("prompt", pa.string(), {"dtype": "string", "_type": "Value"}),
        (
            "images",
            pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            {"feature": {"_type": "Image"}, "_type": "Sequence"},
        ),
        (
            "image_ids",
            pa.list_(pa.string()),
            {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
        ),
        ("human_preference", pa.int8(), {"dtype": "int8", "_type": "Value"}),
        ("user_hash", pa.string(), {"dtype": "string", "_type": "Value"}),
        ("contain_name", pa.bool_(), {"dtype": "bool", "_type": "Value"}),
        ("rater_is_requester", pa.bool_(), {"dtype": "bool", "_type": "Value"}),
        (
            "seeds",
            pa.list_(pa.int64()),
            {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "Sequence"},
        ),
        ("generator_version", pa.string(), {"dtype": "string", "_type": "Value"}),
        ("adapter_version_id", pa.int64(), {"dtype": "int64", "_type": "Value"}),
        (
            "image_adapter_version_ids",
            pa.list_(pa.int64()),
            {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "Sequence"},
        ),
        ("mixed", pa.bool_(), {"dtype": "bool", "_type": "Value"}),
        ("created_at", utc, {"dtype": "timestamp[us, tz=UTC]", "_type": "Value"}),
        ("requested_at", utc, {"dtype": "timestamp[us, tz=UTC]", "_type": "Value"}),
        ("vote", pa.string(), {"dtype": "string", "_type": "Value"}),
        ("rater_weight", pa.float64(), {"dtype": "float64", "_type": "Value"}),
        ("control", pa.string(), {"dtype": "string", "_type": "Value"}),
        ("control_worse", pa.int8(), {"dtype": "int8", "_type": "Value"}),
        ("control_best", pa.int8(), {"dtype": "int8", "_type": "Value"}),
    ]
    # The `datasets` library reads this to decode `images` as PIL images.
    features = {name: feature for name, _, feature in fields}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return pa.schema([(name, kind) for name, kind, _ in fields], metadata=metadata)


class ParquetWriter:
    """train.parquet and test.parquet, written in row groups of bounded size."""

    ROW_GROUP_BYTES = 32 << 20
    ROW_GROUP_ROWS = 1000

    def __init__(self, staging: Path, source: ImageSource) -> None:
        import pyarrow.parquet as pq

        self.staging = staging
        self.source = source
        self.schema = parquet_schema()
        self.paths = {s: staging / f"{s}.parquet" for s in SPLITS}
        self.writers = {s: pq.ParquetWriter(self.paths[s], self.schema) for s in SPLITS}
        self.rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        self.buffered = dict.fromkeys(SPLITS, 0)
        self.counts = dict.fromkeys(SPLITS, 0)
        self.image_count = 0

    def add(self, candidate: Candidate, split: str, contain_name: bool) -> Reason | None:
        images: list[dict[str, Any]] = []
        kept: list[Picture] = []
        for picture in candidate.pictures:
            data = self.source.read(picture.key)
            if data is None:
                if picture.index == candidate.chosen:
                    return Reason.missing_file
                continue
            images.append(
                {"bytes": data, "path": f"{candidate.id}_{len(images)}.{suffix(picture)}"}
            )
            kept.append(picture)
        if len(images) < 2:
            return Reason.missing_file
        self.rows[split].append(
            {
                "id": candidate.id,
                "generation_id": candidate.generation,
                "prompt": candidate.prompt,
                "images": images,
                "image_ids": [f"{candidate.generation}_{p.index}" for p in kept],
                "human_preference": position(kept, candidate.chosen),
                "user_hash": candidate.user_hash,
                "contain_name": contain_name,
                "rater_is_requester": candidate.rater_is_requester,
                "seeds": [p.seed for p in kept],
                "generator_version": candidate.generator_version,
                "adapter_version_id": candidate.adapter_version_id,
                "image_adapter_version_ids": [p.adapter_version_id for p in kept],
                "mixed": candidate.mixed,
                "created_at": candidate.created_at,
                "requested_at": candidate.requested_at,
                **extension(candidate, kept),
            }
        )
        self.counts[split] += 1
        self.image_count += len(kept)
        self.buffered[split] += sum(len(image["bytes"]) for image in images)
        if (
            self.buffered[split] >= self.ROW_GROUP_BYTES
            or len(self.rows[split]) >= self.ROW_GROUP_ROWS
        ):
            self._flush(split)
        return None

    def _flush(self, split: str) -> None:
        import pyarrow as pa

        if self.rows[split]:
            table = pa.Table.from_pylist(self.rows[split], schema=self.schema)
            self.writers[split].write_table(table)
        self.rows[split] = []
        self.buffered[split] = 0

    def close(self) -> list[Path]:
        for split in SPLITS:
            self._flush(split)
            self.writers[split].close()
            fsync_file(self.paths[split])
        return list(self.paths.values())

    def abort(self) -> None:
        """Close the files without writing what is buffered (the export is thrown away)."""
        self.rows = {s: [] for s in SPLITS}
        for writer in self.writers.values():
            with contextlib.suppress(Exception):
                writer.close()

    def image_entries(self) -> Iterator[tuple[str, str]]:
        return iter(())  # the images live inside the Parquet files
