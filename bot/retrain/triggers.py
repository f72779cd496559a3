"""Asking for a retrain: one run at a time, the picks since the last run, runs whose job ended.

The schedule and new-picks triggers are periodic tasks (bot/retrain/tasks.py) that ask
here, as an admin does through the service.

A partial unique index on ``retrain_runs`` (migration 0005) lets at most one run be
queued or running; a request while one is says which, and since when.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import queries
from bot.db.models import Choice, RetrainRun, RetrainStatus, VoteKind
from bot.domain import RetrainRunView
from bot.names import MAINTENANCE_QUEUE, RETRAIN_LOCK, RETRAIN_TASK

log = logging.getLogger(__name__)

UNFINISHED = (RetrainStatus.queued, RetrainStatus.running)


@dataclass(frozen=True)
class RetrainRequest:
    run_id: int
    job_id: int | None
    created: bool  # False: one was already queued or running, this is that one
    status: RetrainStatus
    since: datetime  # when it was queued (or started, once running)
    trigger: str


async def request_retrain(
    sessions: async_sessionmaker[AsyncSession], *, trigger: str, requested_by: str | None = None
) -> RetrainRequest:
    """Queue a retrain, unless one is queued or running: then say which, and since when."""
    try:
        async with sessions.begin() as session:
            if (current := await _unfinished(session)) is not None:
                return _request(current, created=False)
            run = RetrainRun(
                trigger=trigger, requested_by=requested_by, status=RetrainStatus.queued
            )
            session.add(run)
            await session.flush()  # a second request racing this one stops here (unique index)
            run.job_id = await queries.defer_job(
                session,
                task=RETRAIN_TASK,
                queue=MAINTENANCE_QUEUE,
                args={"run_id": run.id},
                lock=RETRAIN_LOCK,
            )
            await session.flush()
            await session.refresh(run)
            return _request(run, created=True)
    except IntegrityError:
        async with sessions() as session:
            current = await _unfinished(session)
        if current is None:  # pragma: no cover - finished between the two reads
            raise
        return _request(current, created=False)


async def _unfinished(session: AsyncSession) -> RetrainRun | None:
    return await session.scalar(select(RetrainRun).where(RetrainRun.status.in_(UNFINISHED)))


def _request(run: RetrainRun, *, created: bool) -> RetrainRequest:
    since = run.started_at or run.created_at
    return RetrainRequest(run.id, run.job_id, created, run.status, since, run.trigger)


async def runs(sessions: async_sessionmaker[AsyncSession], limit: int = 10) -> list[RetrainRunView]:
    """The latest runs, newest first."""
    async with sessions() as session:
        rows = await session.scalars(select(RetrainRun).order_by(RetrainRun.id.desc()).limit(limit))
        return [RetrainRunView.of(row) for row in rows]


async def picks_since_last_run(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Picks recorded after the last run began (all picks when none has run).

    Votes that pick an image only: "No favourite" and "None are good" are kept, but the
    HPS preference data a retrain starts from is picks.
    """
    async with sessions() as session:
        last = await session.scalar(select(func.max(RetrainRun.created_at)))
        query = select(func.count()).select_from(Choice).where(Choice.kind == VoteKind.pick)
        if last is not None:
            query = query.where(Choice.chosen_at > last)
        return int(await session.scalar(query) or 0)


async def mark_abandoned_in(session: AsyncSession, run_id: int, reason: str) -> None:
    """Fail a run whose job will not run again (its worker died once too often)."""
    await session.execute(
        update(RetrainRun)
        .where(RetrainRun.id == run_id, RetrainRun.status.in_(UNFINISHED))
        .values(status=RetrainStatus.failed, error=reason, finished_at=func.now())
    )


async def recover_orphaned_runs(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """Queue a new job for unfinished runs whose job ended; every worker's reaper calls it."""
    async with sessions.begin() as session:
        orphans = await requeue_orphaned_runs(session)
    for run_id in orphans:
        log.warning("retrain %s lost its job (its worker stopped); queued again", run_id)
    return orphans


async def requeue_orphaned_runs(session: AsyncSession) -> list[int]:
    """Queue a new job for unfinished runs whose job ended (the worker stopped mid-run)."""
    orphans = list(
        await session.scalars(
            text(
                "SELECT r.id FROM retrain_runs r "
                "LEFT JOIN procrastinate_jobs j ON j.id = r.job_id "
                "WHERE r.status IN ('queued', 'running') "
                "AND (j.id IS NULL OR j.status NOT IN ('todo', 'doing')) "
                "FOR UPDATE OF r SKIP LOCKED"
            )
        )
    )
    for run_id in orphans:
        job_id = await queries.defer_job(
            session,
            task=RETRAIN_TASK,
            queue=MAINTENANCE_QUEUE,
            args={"run_id": run_id},
            lock=RETRAIN_LOCK,
        )
        await session.execute(
            update(RetrainRun).where(RetrainRun.id == run_id).values(job_id=job_id)
        )
    return orphans
