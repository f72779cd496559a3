"""A generation that failed for good: marked so, announced, with a sentence a member can read.

The runner calls these on a job's last attempt, the stalled-job reaper when a dead
worker's job has no attempt left.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import queries
from bot.db.models import Generation, GenerationStatus, User
from training.generator import GeneratorLoadError


async def mark_failed(
    sessions: async_sessionmaker[AsyncSession], generation_id: int, message: str
) -> None:
    """Mark a generation failed for good and announce it, with ``message`` for the member."""
    async with sessions.begin() as session:
        await mark_failed_in(session, generation_id, message)


async def mark_failed_in(session: AsyncSession, generation_id: int, message: str) -> None:
    """:func:`mark_failed` inside the caller's transaction (no-op once it is finished)."""
    row = (
        await session.execute(
            update(Generation)
            .where(Generation.id == generation_id, Generation.status.in_(queries.UNFINISHED))
            .values(status=GenerationStatus.failed, finished_at=func.now(), error=message)
            .returning(Generation.requested_by)
        )
    ).first()
    if row is None:
        return
    frontend = await session.scalar(select(User.frontend).where(User.id == row[0]))
    await queries.notify_finished(session, generation_id, "failed", str(frontend))


def describe_failure(error: BaseException) -> str:
    """A plain sentence a member can read; it is shown publicly, next to their prompt.

    Never the exception's own text: that may hold server paths, model names or other
    members' data. The details are in the worker's log (``run`` logs the error), and
    admins find the generation under "last failure" in ``/admin status``.
    """
    if isinstance(error, asyncio.CancelledError):
        return "The worker was stopped while making these images; please try again."
    if "out of memory" in str(error).lower():
        return "The GPU ran out of memory; try fewer images or a smaller size."
    if isinstance(error, GeneratorLoadError):
        return "The image model could not be loaded; please try again later."
    return "Something went wrong while making these images; please try again later."
