"""Following one retrain run until it ends: its status, stage and progress as they change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import RetrainRun
from bot.retrain import UNFINISHED

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class RunState:
    """Where a retrain run is now, as a front end shows it."""

    run_id: int
    status: str
    stage: str | None
    progress: str | None  # the trainer's last progress line while it runs
    summaries: tuple[str, ...]  # one line per decision (HPS, adapter) once it ended
    error: str | None

    @property
    def ended(self) -> bool:
        return self.status not in UNFINISHED


async def read_run(sessions: async_sessionmaker[AsyncSession], run_id: int) -> RunState:
    """A retrain run's state now; LookupError when there is no such run."""
    async with sessions() as session:
        run = await session.get(RetrainRun, run_id)
    if run is None:
        raise LookupError(f"there is no retrain run {run_id}")
    decisions = (run.outcome or {}).values()
    return RunState(
        run_id=run.id,
        status=str(run.status),
        stage=run.stage,
        progress=run.progress,
        summaries=tuple(decision.get("summary", "") for decision in decisions),
        error=run.error,
    )


async def follow_run(
    sessions: async_sessionmaker[AsyncSession],
    run_id: int,
    *,
    on_change: Callable[[RunState], None] | None = None,
) -> RunState:
    """Wait until a retrain run ends and return its final state.

    ``on_change`` is called with the state whenever its status, stage or progress line
    changes. The stages record these with plain UPDATEs and send no notification, so this
    reads the run's row (one primary-key lookup) every ``POLL_SECONDS``; the trainer's
    progress is itself recorded at most every 2 s. Bound the wait with ``asyncio.timeout``.
    """
    shown: tuple[str, str | None, str | None] | None = None
    while True:
        state = await read_run(sessions, run_id)
        now = (state.status, state.stage, state.progress)
        if now != shown:
            shown = now
            if on_change is not None:
                on_change(state)
        if state.ended:
            return state
        await asyncio.sleep(POLL_SECONDS)
