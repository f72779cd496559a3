"""Maintenance jobs (dataset exports, the retrain loop and its triggers, the store sweep)
on their own queue.

They run in ``prefloop run``'s process, one at a time, beside the generation worker: an
export spends its time in a thread (database cursor and file links), so the event loop
that serves Discord keeps running.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.db import queries
from bot.names import EXPORT_LOCK, EXPORT_TASK, MAINTENANCE_QUEUE, PLATFORM

if TYPE_CHECKING:
    from bot.runtime import Platform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueuedExport:
    job_id: int
    out: Path


def export_folder(settings: Settings, format: str, rater: str) -> Path:
    """A new folder for a job's export: <exports>/<format>-<rater>-<UTC time>-<random>."""
    root = settings.export.folder or settings.data_dir / "exports"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    unique = secrets.token_hex(2)  # two requests in one second get two folders
    return Path(root).expanduser().absolute() / f"{format}-{rater}-{stamp}-{unique}"


async def request_export(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    format: str = "hps",
    rater: str = "requester",
    incremental: bool = False,
) -> QueuedExport:
    """Queue an export job; exports run one at a time (procrastinate lock)."""
    out = export_folder(settings, format, rater)
    args = {"out": str(out), "format": format, "rater": rater, "incremental": incremental}
    async with sessions.begin() as session:
        job_id = await queries.defer_job(
            session, task=EXPORT_TASK, queue=MAINTENANCE_QUEUE, args=args, lock=EXPORT_LOCK
        )
    return QueuedExport(job_id, out)


async def run_export_job(platform: Platform, **args: Any) -> str:
    """The body of an export job: write it, and say what was written."""
    from bot.export import ExportOptions, Rater, export_dataset

    options = ExportOptions(
        out=Path(args["out"]),
        format=args.get("format", "hps"),
        rater=Rater(args.get("rater", "requester")),
        incremental=bool(args.get("incremental", False)),
    )
    done = await export_dataset(platform.database_url, platform.storage, platform.settings, options)
    summary = f"exported {done.instances} picks to {done.out} in {done.seconds:.1f} s"
    log.info("%s", summary)
    for warning in done.warnings:
        log.warning("%s", warning)
    return summary


async def run_retrain_job(platform: Platform, run_id: int) -> str:
    """The body of a retrain job (see bot.retrain); its outcome goes to the log and Discord."""
    from bot.retrain import Retrain

    return await Retrain(platform, run_id, announce=platform.announce).run()


async def scheduled_retrain(platform: Platform) -> str:
    from bot.retrain import request_retrain

    request = await request_retrain(platform.sessions, trigger="schedule")
    if request.created:
        log.info("scheduled retrain %d queued", request.run_id)
        return f"retrain {request.run_id} queued"
    return f"retrain {request.run_id} is already {request.status}"


async def sweep_store_job(platform: Platform) -> str:
    """The body of the periodic store sweep: delete files no row references (see its docs)."""
    swept = await platform.service.sweep_store()
    summary = f"store sweep: {swept.files} files, {swept.deleted} unreferenced ones deleted"
    if kept := swept.unreferenced - swept.deleted:
        summary += f", {kept} written again meanwhile (kept)"
    log.info("%s", summary)
    return summary


async def serve_maintenance(platform: Platform) -> None:
    """Run maintenance jobs until cancelled.

    On stop, a running export gets the worker's shutdown grace to finish; after that it
    is abandoned cleanly (its hidden folder removed, nothing recorded) and fails. A
    running retrain stops its trainer and is queued again by the reaper; it resumes in
    its run folder.
    """
    from bot.jobs.app import build_app, one_job_worker, run_worker

    settings = platform.settings.worker
    app = build_app(
        platform.database_url, settings, platform.settings.retrain, platform.settings.storage
    )
    async with app.open_async():
        worker = one_job_worker(
            app,
            settings,
            role="prefloop-maintenance",
            queue=MAINTENANCE_QUEUE,
            context={PLATFORM: platform},
        )
        await run_worker(app, worker, settings)
