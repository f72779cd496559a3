"""One export, start to finish: snapshot -> filter -> split -> files -> manifest -> record.

The whole run is synchronous (a database cursor and file system calls) and is meant to
run in a thread: :func:`export_dataset` does that for async callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import threading
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args

import psycopg
from psycopg.types.json import Jsonb

import bot.export.layout as layout
from bot.config import Settings
from bot.db.engine import libpq_url
from bot.export.files import HpsWriter, ImageSource, ParquetWriter
from bot.export.picks import (
    Rater,
    Reason,
    classify,
    count_deferred,
    open_snapshot,
    stream_picks,
)
from bot.export.privacy import IdHasher, NameMatcher, UserHasher, load_secret, normalise
from bot.export.selection import RaterWeights, Selection, Tally, Votes
from bot.raters.agreement import dataset_agreement_sync
from bot.storage import Storage

log = logging.getLogger(__name__)

Format = Literal["hps", "parquet"]


def is_format(name: str) -> TypeGuard[Format]:
    return name in get_args(Format)


AGREEMENT_RULE = (
    "over every ordinary (not control) finished set with votes from two members or more "
    "in the database when the export read it (not only this export's window): pairwise "
    "agreement and Krippendorff's alpha (nominal) of the votes' categories (the picked "
    "image, tie or none), overall and per UTC week by when the set was requested; 'picks' "
    "the same over picks alone, the ceiling to hold a model's top-1 accuracy against"
)
MISSING_LISTED = 100  # missing files named in the manifest (all are counted)


@dataclass(frozen=True)
class ExportOptions:
    out: Path
    format: Format = "hps"
    rater: Rater = Rater.requester
    since: datetime | None = None
    incremental: bool = False  # start where the last export of this format and rater ended
    votes: Votes | None = None  # picks or all; None: the format's default (hps picks)
    controls: bool | None = None  # write votes on control sets; None: the format's default
    test_fraction: float | None = None  # None: the settings' value
    seed: int | None = None


@dataclass
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    seconds: float
    recorded: bool = True
    warnings: list[str] = field(default_factory=list)

    @property
    def instances(self) -> int:
        return sum(self.manifest["counts"]["instances"].values())

    @property
    def noun(self) -> str:
        """What its instances are: picks, or votes (of every kind)."""
        return "picks" if self.manifest["votes"]["votes"] == "picks" else "votes"


async def export_dataset(
    database_url: str, storage: Storage, settings: Settings, options: ExportOptions
) -> ExportResult:
    """Write an export (in a thread, so an event loop keeps running meanwhile).

    Cancelling the caller stops the export at the next pick and removes what it wrote.
    """
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    work = functools.partial(
        run_export, database_url, storage, settings, options, loop=loop, stop=stop
    )
    running = loop.run_in_executor(None, work)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(Exception):
            await running  # let it clean up before saying we stopped
        raise


def run_export(
    database_url: str,
    storage: Storage,
    settings: Settings,
    options: ExportOptions,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    stop: threading.Event | None = None,
) -> ExportResult:
    started = time.perf_counter()
    url = libpq_url(database_url)
    out = Path(options.out).expanduser().absolute()
    fraction = (
        settings.export.test_fraction if options.test_fraction is None else options.test_fraction
    )
    if not 0.0 <= fraction < 1.0:
        raise layout.ExportError(f"the test fraction must be in [0, 1), got {fraction}")
    seed = settings.export.split_seed if options.seed is None else options.seed
    secret = settings.export.user_hash_secret
    try:
        key = load_secret(settings.data_dir, secret.get_secret_value() if secret else None)
    except ValueError as error:
        raise layout.ExportError(str(error)) from None
    hasher = UserHasher(key)
    ids = IdHasher(key)  # Discord shows generation ids publicly: publish keyed ones
    names = NameMatcher.from_file(settings.export.person_names_file)
    selection = Selection.of(options.format, options.votes, options.controls)
    since = options.since
    if options.incremental:
        since = last_cutoff(url, options.format, options.rater, selection) or since

    with layout.claimed(out, replace=not options.incremental) as staging:
        source = ImageSource(storage, loop)
        writer: HpsWriter | ParquetWriter | None = None
        try:
            conn, window = open_snapshot(url, since)
            with conn:
                weights = RaterWeights(conn, settings)  # on the snapshot the votes come from
                agreement = dataset_agreement_sync(conn)
                writer = (HpsWriter if options.format == "hps" else ParquetWriter)(staging, source)
                excluded: Counter[str] = Counter()
                tally = Tally(selection)
                read = 0
                prompts = {"train": array("q"), "test": array("q")}  # keys, to count distinct
                for row in stream_picks(conn, window, options.rater):
                    read += 1
                    if stop is not None and stop.is_set():
                        raise layout.ExportError("the export was cancelled")
                    found = classify(row, hasher, ids)
                    if isinstance(found, Reason):
                        excluded[found] += 1
                        continue
                    tally.seen(found)
                    unwanted = selection.left_out(found)
                    if unwanted:
                        tally.left_out[unwanted] += 1
                        continue
                    found.rater_weight = weights.weight(found.rater)
                    text = normalise(found.prompt)  # once: split, names and counting use it
                    split = layout.split_of(text, seed, fraction, normalised=True)
                    missing = writer.add(found, split, names(text, normalised=True))
                    if missing:
                        excluded[missing] += 1
                    else:
                        prompts[split].append(_prompt_key(text))
                        tally.wrote(found)
                        weights.written.add(found.rater)
                deferred = count_deferred(conn, window, options.rater)
            written = writer.close()
            files = [(p.relative_to(staging).as_posix(), layout.file_sha256(p)) for p in written]
            digest = layout.content_hash(files, writer.image_entries())
            manifest = _manifest(
                options,
                window,
                fraction,
                seed,
                key,
                names,
                writer,
                source,
                excluded,
                read,
                deferred,
                prompts,
                digest,
            )
            manifest |= {
                "votes": tally.votes(),
                "controls": tally.controls(),
                "raters": weights.summary(),
                "agreement": {**agreement, "rule": AGREEMENT_RULE},
            }
            layout.write_manifest(staging, manifest)
            if stop is not None and stop.is_set():
                raise layout.ExportError("the export was cancelled")
            layout.publish(staging, out)
        except BaseException:
            if writer is not None:
                writer.abort()
            layout.discard(staging)
            raise
    result = ExportResult(out, manifest, time.perf_counter() - started)
    try:
        record_export(url, options, selection, out, window, manifest)
    except psycopg.Error as error:
        result.recorded = False
        result.warnings.append(
            f"the export is complete but could not be recorded ({error}); the next "
            "--incremental export will include its picks again"
        )
    return result


def _prompt_key(normalised: str) -> int:
    digest = hashlib.blake2b(normalised.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _distinct(keys: array[int]) -> int:
    """How many different prompt keys (a transient set; the keys themselves are compact)."""
    return len(set(keys))


def _manifest(
    options: ExportOptions,
    window: Any,
    fraction: float,
    seed: int,
    key: bytes,
    names: NameMatcher,
    writer: HpsWriter | ParquetWriter,
    source: ImageSource,
    excluded: Counter[str],
    read: int,
    deferred: int,
    prompts: dict[str, array[int]],
    digest: str,
) -> dict[str, Any]:
    try:
        ours = version("prefloop")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        ours = "unknown"
    layout_name = (
        "HPS v1 release: preference_images/{id}_{k}.{ext}, preference_{train,test}.json"
        if options.format == "hps"
        else "Parquet: train.parquet, test.parquet (one row per vote, images embedded)"
    )
    return {
        "producer": layout.PRODUCER,
        "prefloop_version": ours,
        "schema_version": layout.SCHEMA_VERSION,
        "format": options.format,
        "layout": layout_name,
        "created_at": datetime.now(UTC).isoformat(),
        "snapshot_at": window.snapshot_at.isoformat(),
        "picks": {
            "rater": str(options.rater),
            "since": window.since.isoformat() if window.since else None,
            "until": window.cutoff.isoformat(),
            "incremental": options.incremental,
        },
        "split": {
            "by": "prompt",
            "seed": seed,
            "test_fraction": fraction,
            "rule": layout.SPLIT_RULE,
        },
        "counts": {
            "instances": dict(writer.counts),
            "prompts": {split: _distinct(keys) for split, keys in prompts.items()},
            "images": writer.image_count,
            "picks_read": read,
            "excluded": {reason.value: excluded.get(reason.value, 0) for reason in Reason},
            "deferred_to_next_export": deferred,
            "images_linked": source.linked,
            "images_copied": source.copied,
        },
        "filters": {
            "banned_member": "the picker or the prompt's author is banned",
            "forgotten_member": "the picker or the prompt's author asked to be forgotten",
            "incomplete_generation": "the generation failed or has not finished",
            "unsafe_image": "the picked image was flagged by the safety checker "
            "(other flagged images are dropped from their instance)",
            "too_few_images": "fewer than 2 images are left without the flagged ones",
            "missing_file": "the picked image's file, or all but one, is missing from the store "
            "(other missing images are dropped from their instance)",
        },
        "missing_files": {"count": len(source.missing), "first": source.missing[:MISSING_LISTED]},
        "user_hash": {
            "rule": "first 32 hex digits of HMAC-SHA256(key, '<frontend>:<member id>')",
            "key_fingerprint": hashlib.sha256(b"prefloop user hash key\0" + key).hexdigest()[:16],
        },
        "ids": {
            "rule": "id: first 32 hex digits of HMAC-SHA256(key, 'pick\\0<pick id>'); "
            "generation_id: the same of 'generation\\0<generation id>'; the user_hash key",
            "stable": "across exports made with the same key (see user_hash.key_fingerprint)",
        },
        "contain_name": {
            "rule": "a listed name appears as whole consecutive words of the normalised prompt",
            "names_listed": len(names.names),
        },
        "content_hash": {"sha256": digest, "rule": layout.HASH_RULE},
    }


def last_cutoff(url: str, format: str, rater: str, selection: Selection) -> datetime | None:
    """Where the last recorded export of this format, rater and selection ended.

    A series of one selection never skips the votes another one left out. Exports
    recorded without a selection were made before ties and control sets existed: they
    hold every vote of their window, so they start any series.
    """
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT max(cutoff) FROM dataset_exports WHERE format = %s AND rater = %s "
            "AND (counts -> 'selection' IS NULL OR counts -> 'selection' = %s)",
            (format, str(rater), Jsonb(selection.as_dict())),
        ).fetchone()
    return row[0] if row else None


def record_export(
    url: str,
    options: ExportOptions,
    selection: Selection,
    out: Path,
    window: Any,
    manifest: dict[str, Any],
) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO dataset_exports (format, rater, out_path, since, cutoff, snapshot_at, "
            "counts, content_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                options.format,
                str(options.rater),
                str(out),
                window.since,
                window.cutoff,
                window.snapshot_at,
                Jsonb({**manifest["counts"], "selection": selection.as_dict()}),
                manifest["content_hash"]["sha256"],
            ),
        )
