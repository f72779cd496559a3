"""What the job queue holds now: the jobs waiting or running, as ``prefloop jobs`` lists them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@dataclass(frozen=True)
class QueuedJob:
    """A procrastinate job that is waiting (``todo``) or running (``doing``)."""

    id: int
    queue: str
    task: str
    status: str
    attempts: int
    scheduled_at: datetime | None  # None: to run as soon as a worker is free
    since: datetime | None  # its last event (deferred, started, retried …)


# procrastinate's own tables: its list_jobs gives one status at a time and no event times.
_UNFINISHED_JOBS = text(
    "SELECT id, queue_name, task_name, status, attempts, scheduled_at, "
    "(SELECT max(at) FROM procrastinate_events e WHERE e.job_id = j.id) "
    "FROM procrastinate_jobs j WHERE status IN ('todo', 'doing') "
    "ORDER BY id"
)


async def unfinished_jobs(sessions: async_sessionmaker[AsyncSession]) -> list[QueuedJob]:
    """The jobs waiting or running, oldest first."""
    async with sessions() as session:
        rows = (await session.execute(_UNFINISHED_JOBS)).all()
    return [QueuedJob(*row) for row in rows]
