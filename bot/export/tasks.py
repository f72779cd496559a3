"""The export job: queued by an admin (request_export), run on the maintenance queue.

It runs in ``prefloop run``'s process, one at a time, beside the generation worker: an
export spends its time in a thread (database cursor and file links), so the event loop
that serves Discord keeps running.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from procrastinate import Blueprint, JobContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.db import queries
from bot.export.layout import ExportError
from bot.export.picks import Rater
from bot.export.run import ExportOptions, export_dataset
from bot.export.selection import is_votes
from bot.names import EXPORT_LOCK, EXPORT_TASK, MAINTENANCE_QUEUE, PLATFORM
from bot.storage import Storage

log = logging.getLogger(__name__)


def export_blueprint() -> Blueprint:
    """The export task (a new blueprint for each app: an app takes its tasks over)."""
    blueprint = Blueprint()

    @blueprint.task(name=EXPORT_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
    async def export(context: JobContext, /, **args: Any) -> str:
        """Write a dataset export (see bot.export); admins queue it with /admin export."""
        platform = context.additional_context[PLATFORM]
        return await run_export_job(
            platform.database_url, platform.storage, platform.settings, **args
        )

    return blueprint


@dataclass(frozen=True)
class QueuedExport:
    job_id: int
    out: Path


def exports_root(settings: Settings) -> Path:
    """Where export jobs write: ``export.folder``, or data_dir/exports."""
    return Path(settings.export.folder or settings.data_dir / "exports").expanduser().absolute()


def export_folder(settings: Settings, format: str, rater: str) -> Path:
    """A new folder for a job's export: <exports>/<format>-<rater>-<UTC time>-<random>."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    unique = secrets.token_hex(2)  # two requests in one second get two folders
    return exports_root(settings) / f"{format}-{rater}-{stamp}-{unique}"


async def request_export(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    format: str = "hps",
    rater: str = "requester",
    incremental: bool = False,
    votes: str | None = None,
    controls: bool | None = None,
) -> QueuedExport:
    """Queue an export job; exports run one at a time (procrastinate lock).

    ``votes`` (picks or all) and ``controls`` None take the format's defaults (see
    :mod:`bot.export.selection`).
    """
    out = export_folder(settings, format, rater)
    args: dict[str, Any] = {
        "out": str(out),
        "format": format,
        "rater": rater,
        "incremental": incremental,
    }
    if votes is not None:
        args["votes"] = votes
    if controls is not None:
        args["controls"] = controls
    async with sessions.begin() as session:
        job_id = await queries.defer_job(
            session, task=EXPORT_TASK, queue=MAINTENANCE_QUEUE, args=args, lock=EXPORT_LOCK
        )
    return QueuedExport(job_id, out)


async def run_export_job(
    database_url: str, storage: Storage, settings: Settings, **args: Any
) -> str:
    """The body of an export job: write it, and say what was written."""
    votes = args.get("votes")
    if votes is not None and not is_votes(votes):
        raise ExportError(f"unknown votes {votes!r}: use picks or all")
    controls = args.get("controls")
    options = ExportOptions(
        out=Path(args["out"]),
        format=args.get("format", "hps"),
        rater=Rater(args.get("rater", "requester")),
        incremental=bool(args.get("incremental", False)),
        votes=votes,
        controls=None if controls is None else bool(controls),
    )
    done = await export_dataset(database_url, storage, settings, options)
    summary = f"exported {done.instances} {done.noun} to {done.out} in {done.seconds:.1f} s"
    log.info("%s", summary)
    for warning in done.warnings:
        log.warning("%s", warning)
    return summary
