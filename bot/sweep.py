"""The store sweep, and its periodic maintenance task (``storage.sweep_schedule``, daily).

:func:`sweep_store` deletes the files a crash or a lost race left in the store, a
forget's failed file deletes among them (``CollectionService.sweep_store`` calls it;
``prefloop store sweep`` runs it by hand).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from procrastinate import Blueprint, JobContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings, StorageSettings
from bot.db import queries
from bot.names import MAINTENANCE_QUEUE, PLATFORM, SWEEP_PERIODIC, SWEEP_TASK
from bot.storage import Storage

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000  # store keys checked against the images table per query


@dataclass
class Swept:
    """What a sweep of the image store found: files no row references, and what went."""

    files: int = 0  # files in the store
    unreferenced: int = 0  # of those, older than the grace age and referenced by no row
    deleted: int = 0  # of those, deleted (0 in a dry run)
    examples: list[str] = field(default_factory=list)  # the first few unreferenced keys


async def sweep_store(
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    settings: Settings,
    *,
    grace_minutes: float | None = None,
    dry_run: bool = False,
) -> Swept:
    """Delete store files that no image row references, written over the grace age ago.

    They are what a crash or a lost race leaves behind (a job stopped between storing
    and recording its images, a forget whose file delete failed). Files written in the
    last ``grace_minutes`` (default: the setting) are left alone: a running job stores
    its images before it records them, and storing bytes already there marks the file
    fresh. Each file is re-checked for its age as it is deleted.
    """
    grace = settings.storage.sweep_grace_minutes if grace_minutes is None else grace_minutes
    cutoff = datetime.now(UTC) - timedelta(minutes=grace)
    swept = Swept()
    batch: list[str] = []
    async for found in storage.files():
        swept.files += 1
        if found.written_at < cutoff:
            batch.append(found.key)
        if len(batch) >= SWEEP_BATCH:
            await _sweep_batch(sessions, storage, batch, cutoff, dry_run, swept)
            batch = []
    await _sweep_batch(sessions, storage, batch, cutoff, dry_run, swept)
    return swept


async def _sweep_batch(
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    keys: list[str],
    cutoff: datetime,
    dry_run: bool,
    swept: Swept,
) -> None:
    async with sessions() as session:
        used = await queries.referenced_keys(session, keys)
    for key in (k for k in keys if k not in used):
        swept.unreferenced += 1
        if len(swept.examples) < 5:
            swept.examples.append(key)
        if not dry_run and await storage.delete_if_older(key, cutoff):
            swept.deleted += 1
            log.info("swept %s: no row references it", key)


def sweep_blueprint(storage: StorageSettings | None = None) -> Blueprint:
    """The sweep task, on the schedule of ``storage`` (none without it, or when it is off)."""
    blueprint = Blueprint()
    if storage is None or not storage.sweep_schedule:
        return blueprint

    @blueprint.periodic(
        cron=storage.sweep_schedule, periodic_id=SWEEP_PERIODIC, queueing_lock=SWEEP_TASK
    )
    @blueprint.task(name=SWEEP_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
    async def sweep(context: JobContext, timestamp: int) -> str:
        """Delete store files that no row references (see CollectionService.sweep_store)."""
        return await sweep_store_job(context.additional_context[PLATFORM])

    return blueprint


class Parts(Protocol):
    """What a sweep needs of the platform (bot.runtime.Platform has them)."""

    sessions: async_sessionmaker[AsyncSession]
    storage: Storage
    settings: Settings


async def sweep_store_job(platform: Parts) -> str:
    """The body of the periodic store sweep: delete files no row references (see its docs)."""
    swept = await sweep_store(platform.sessions, platform.storage, platform.settings)
    summary = f"store sweep: {swept.files} files, {swept.deleted} unreferenced ones deleted"
    if kept := swept.unreferenced - swept.deleted:
        summary += f", {kept} written again meanwhile (kept)"
    log.info("%s", summary)
    return summary
