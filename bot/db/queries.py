"""Queries the use cases share. Each takes the session first and never commits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Frontend, Generation, GenerationStatus, Image, User

GENERATION_CHANNEL = "prefloop_generation"  # pg_notify channel: a generation finished
PROGRESS_CHANNEL = "prefloop_progress"  # pg_notify channel: step k of n

UNFINISHED = (GenerationStatus.queued, GenerationStatus.running)


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched. The session types every result as a plain Result;
    for these statements it is a CursorResult, which counts them."""
    return cast(CursorResult[Any], result).rowcount or 0


@dataclass(frozen=True)
class UserRow:
    id: int
    banned: bool
    banned_reason: str | None


async def find_user(session: AsyncSession, frontend: Frontend, external_id: str) -> UserRow | None:
    """The member with this front-end id, or None if they never came by."""
    row = (
        await session.execute(
            select(User.id, User.banned, User.banned_reason).where(
                User.frontend == frontend, User.external_id == external_id
            )
        )
    ).first()
    return UserRow(*row) if row else None


async def ensure_user(session: AsyncSession, frontend: Frontend, external_id: str) -> UserRow:
    """The member's row, created on first sight (safe under concurrent first clicks)."""
    found = await find_user(session, frontend, external_id)
    if found:
        return found
    await session.execute(
        insert(User)
        .values(frontend=frontend, external_id=external_id)
        .on_conflict_do_nothing(constraint="uq_users_frontend_id")
    )
    created = await find_user(session, frontend, external_id)
    assert created is not None
    return created


async def lock_member(session: AsyncSession, frontend: Frontend, external_id: str) -> None:
    """Serialise one member's submissions until the transaction ends (queue limits hold)."""
    key = f"{frontend.value}:{external_id}"
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


async def unfinished_generations(session: AsyncSession, user_id: int) -> list[int]:
    """Ids of the member's queued or running generations, oldest first."""
    rows = await session.execute(
        select(Generation.id)
        .where(Generation.requested_by == user_id, Generation.status.in_(UNFINISHED))
        .order_by(Generation.id)
    )
    return list(rows.scalars())


async def queue_position(session: AsyncSession, generation_id: int) -> int:
    """1 + the number of queued generations submitted before this one."""
    ahead = await session.scalar(
        select(func.count())
        .select_from(Generation)
        .where(Generation.status == GenerationStatus.queued, Generation.id < generation_id)
    )
    return int(ahead or 0) + 1


async def defer_job(
    session: AsyncSession,
    *,
    task: str,
    queue: str,
    args: dict[str, Any],
    lock: str | None = None,
    delay: float | None = None,
) -> int:
    """Queue a procrastinate job inside the caller's transaction; return its id.

    procrastinate's own ``defer`` runs on its own connection; calling its versioned SQL
    function here instead makes the job and the rows that need it commit together.
    ``delay``: seconds before a worker may take it (procrastinate's ``schedule_in``).
    """
    job_id = await session.scalar(
        text(
            "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW("
            "CAST(:queue AS varchar), CAST(:task AS varchar), 0, CAST(:lock AS text), "
            "NULL::text, CAST(:args AS jsonb), "
            "now() + CAST(:delay AS double precision) * interval '1 second'"
            ")::procrastinate_job_to_defer_v1]))"
        ),
        {"queue": queue, "task": task, "lock": lock, "args": json.dumps(args), "delay": delay},
    )
    assert job_id is not None
    return int(job_id)


async def notify(session: AsyncSession, channel: str, payload: dict[str, Any]) -> None:
    """pg_notify, delivered when (and only if) the caller's transaction commits."""
    await session.execute(select(func.pg_notify(channel, json.dumps(payload))))


async def lock_generations(
    session: AsyncSession, user_id: int
) -> list[tuple[int, dict[str, Any] | None]]:
    """(id, delivery note) of the member's generations, locked until the transaction ends.

    A job records its images under the generation's row lock, so after this no job can
    add images to them, and any job that had is committed and seen by the next statement.
    """
    rows = await session.execute(
        select(Generation.id, Generation.delivery)
        .where(Generation.requested_by == user_id)
        .order_by(Generation.id)
        .with_for_update()
    )
    return [(int(r[0]), r[1]) for r in rows]


async def delete_images(session: AsyncSession, generation_ids: Sequence[int]) -> set[str]:
    """Delete the image rows of these generations; return their store keys."""
    if not generation_ids:
        return set()
    result = await session.execute(
        delete(Image).where(Image.generation_id.in_(generation_ids)).returning(Image.storage_key)
    )
    return set(result.scalars())


async def referenced_keys(session: AsyncSession, keys: Sequence[str]) -> set[str]:
    """Those of ``keys`` that an image row references."""
    if not keys:
        return set()
    rows = await session.scalars(
        select(Image.storage_key).where(Image.storage_key.in_(keys)).distinct()
    )
    return set(rows)


async def delete_generations(session: AsyncSession, ids: Sequence[int]) -> int:
    """Delete generations (their images and everyone's picks go with them)."""
    if not ids:
        return 0
    result = await session.execute(delete(Generation).where(Generation.id.in_(ids)))
    return rowcount(result)


async def mark_delivered(session: AsyncSession, generation_id: int) -> bool:
    """Record that a front end showed the result; False if it already had."""
    result = await session.execute(
        update(Generation)
        .where(Generation.id == generation_id, Generation.delivered_at.is_(None))
        .values(delivered_at=func.now())
    )
    return rowcount(result) > 0


async def live_workers(session: AsyncSession, within_seconds: float) -> int:
    """Queue workers whose last heartbeat is at most ``within_seconds`` old."""
    count = await session.scalar(
        text(
            "SELECT count(*) FROM procrastinate_workers "
            "WHERE last_heartbeat > now() - make_interval(secs => :seconds)"
        ),
        {"seconds": within_seconds},
    )
    return int(count or 0)


async def notify_finished(
    session: AsyncSession, generation_id: int, status: str, frontend: str
) -> None:
    """Announce that a generation is done or failed (on commit)."""
    await notify(
        session, GENERATION_CHANNEL, {"id": generation_id, "status": status, "frontend": frontend}
    )


async def end_stalled_job(
    session: AsyncSession, job_id: int, seen_worker: int | None, *, give_up: bool
) -> bool:
    """Re-queue (or, with ``give_up``, fail) a job still running under ``seen_worker``.

    Locks the job row and acts only if nobody has touched it since it was seen stalled;
    returns whether it acted. Uses procrastinate's own versioned SQL functions.
    """
    action = (
        "procrastinate_finish_job_v1(id, 'failed'::procrastinate_job_status, false)"
        if give_up
        else "procrastinate_retry_job_v2(id, now(), NULL, NULL, NULL)"
    )
    locked = await session.scalar(
        text(
            "SELECT id FROM procrastinate_jobs WHERE id = :id AND status = 'doing' "
            "AND worker_id IS NOT DISTINCT FROM :worker FOR UPDATE"
        ),
        {"id": job_id, "worker": seen_worker},
    )
    if locked is None:
        return False
    await session.execute(
        text(f"SELECT {action} FROM procrastinate_jobs WHERE id = :id"), {"id": job_id}
    )
    return True


async def fail_abandoned_generations(session: AsyncSession) -> list[tuple[int, str]]:
    """Fail unfinished generations whose job has ended (failed, aborted, cancelled, gone).

    The backstop for every path that could leave a generation ``running`` forever and
    hold one of its member's queue slots. Returns (generation id, front end) pairs.
    """
    rows = await session.execute(
        text(
            """
            UPDATE generations g
               SET status = 'failed', finished_at = now(),
                   error = 'The job making these images stopped; please try again.'
              FROM users u
             WHERE u.id = g.requested_by
               AND g.status IN ('queued', 'running')
               AND NOT EXISTS (
                   SELECT 1 FROM procrastinate_jobs j
                    WHERE j.id = g.job_id AND j.status IN ('todo', 'doing', 'succeeded')
               )
         RETURNING g.id, u.frontend::text
            """
        )
    )
    return [(int(r[0]), r[1]) for r in rows]
