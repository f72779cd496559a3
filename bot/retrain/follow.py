"""Following one retrain run until it ends: its status, stage and progress as they change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.arena.outcomes import one_per_set, outcomes
from bot.db.models import Comparison, RetrainRun
from bot.retrain.triggers import UNFINISHED

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
    judged_sets: int | None = None  # while people judge its adapter: the sets judged so far

    @property
    def ended(self) -> bool:
        return self.status not in UNFINISHED

    @property
    def judged_by_people(self) -> bool:
        """Waiting on members' picks, which takes days: a follower stops here."""
        return self.status == "running" and self.stage == "people"

    @property
    def note(self) -> str | None:
        """What a follower says when it stops before the end."""
        if not self.judged_by_people:
            return None
        return (
            f"judged by people: {self.judged_sets or 0} judged sets so far; "
            "`prefloop arena status` shows progress"
        )


async def read_run(sessions: async_sessionmaker[AsyncSession], run_id: int) -> RunState:
    """A retrain run's state now; LookupError when there is no such run."""
    async with sessions() as session:
        run = await session.get(RetrainRun, run_id)
        judged = None
        if run is not None and run.stage == "people" and run.status == "running":
            comparison = await session.scalar(
                select(Comparison.id)
                .where(Comparison.retrain_run_id == run_id)
                .order_by(Comparison.id.desc())
                .limit(1)
            )
            if comparison is not None:
                judged = len(one_per_set(await outcomes(session, comparison)))
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
        judged_sets=judged,
    )


async def follow_run(
    sessions: async_sessionmaker[AsyncSession],
    run_id: int,
    *,
    on_change: Callable[[RunState], None] | None = None,
) -> RunState:
    """Wait until a retrain run ends (or waits on people's picks) and return its state.

    ``on_change`` is called with the state whenever its status, stage or progress line
    changes. The stages record these with plain UPDATEs and send no notification, so this
    reads the run's row (one primary-key lookup) every ``POLL_SECONDS``; the trainer's
    progress is itself recorded at most every 2 s. Bound the wait with ``asyncio.timeout``.
    A run whose adapter members judge (stage ``people``) takes days: the state returned
    then is not ended, and its ``note`` says so.
    """
    shown: tuple[str, str | None, str | None] | None = None
    while True:
        state = await read_run(sessions, run_id)
        now = (state.status, state.stage, state.progress)
        if now != shown:
            shown = now
            if on_change is not None:
                on_change(state)
        if state.ended or state.judged_by_people:
            return state
        await asyncio.sleep(POLL_SECONDS)
