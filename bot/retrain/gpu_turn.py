"""One GPU, two users: generation waits while a training stage runs (docs/operations.md).

When the retrain loop trains on the GPU that generation uses (``retrain.gpus`` is 1 and
neither side is set to the CPU), a training stage takes a PostgreSQL advisory lock
exclusively and every generation takes it shared, across all processes on the database.
So a stage starts once the images being made are done, and generations queued while it
runs wait (members see "queued") instead of running out of GPU memory beside it. With
several GPUs, or training on the CPU, nothing waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.names import GPU_LOCK

if TYPE_CHECKING:
    from bot.runtime import Platform


def shares_gpu(settings: Settings) -> bool:
    """Do training stages and generation use the same GPU?"""
    retrain, generator = settings.retrain, settings.generator
    return retrain.gpus == 1 and "cpu" not in (retrain.device, generator.device)


@asynccontextmanager
async def _holding(
    sessions: async_sessionmaker[AsyncSession], shared: bool, *, wait: bool = True
) -> AsyncIterator[bool]:
    """Hold the GPU lock; yields whether it is held (always, unless ``wait`` is False and
    someone else held it or waited for it)."""
    if shared:
        take = func.pg_advisory_lock_shared if wait else func.pg_try_advisory_lock_shared
        give = func.pg_advisory_unlock_shared
    else:
        take = func.pg_advisory_lock if wait else func.pg_try_advisory_lock
        give = func.pg_advisory_unlock
    engine = sessions.kw["bind"]
    # One connection of its own holds the lock throughout, outside any transaction (a
    # pooled connection handed back would let the next taker "re-enter" the lock).
    async with engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = await connection.scalar(select(take(GPU_LOCK)))
        except BaseException:
            # Given up while waiting: the server may have granted the lock just then, and
            # a pooled connection would keep it. Close this one instead (that frees it).
            await connection.invalidate()
            raise
        held = wait or bool(got)  # the waiting forms return void once they hold it
        try:
            yield held
        finally:
            if held:
                try:
                    await connection.execute(select(give(GPU_LOCK)))
                except BaseException:
                    await connection.invalidate()
                    raise


@asynccontextmanager
async def training_turn(platform: Platform) -> AsyncIterator[None]:
    """Hold the GPU for a training stage (waits for running generations to finish)."""
    if not shares_gpu(platform.settings):
        yield
        return
    async with _holding(platform.sessions, shared=False):
        yield


@asynccontextmanager
async def generation_turn(
    sessions: async_sessionmaker[AsyncSession], enabled: bool
) -> AsyncIterator[None]:
    """Hold the GPU, shared with other generations, for one generation."""
    if not enabled:
        yield
        return
    async with _holding(sessions, shared=True):
        yield


@asynccontextmanager
async def spare_turn(
    sessions: async_sessionmaker[AsyncSession], enabled: bool
) -> AsyncIterator[bool]:
    """A shared GPU turn for optional work (scoring new images), only if one is free now:
    yields whether it is. Never waits: a stage queued or running means not this time."""
    if not enabled:
        yield True
        return
    async with _holding(sessions, shared=True, wait=False) as held:
        yield held
