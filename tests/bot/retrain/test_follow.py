"""Following a retrain run (what `prefloop retrain --wait` shows) until it ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import update

from bot.db.models import RetrainRun
from bot.retrain import follow
from bot.retrain.follow import RunState, follow_run, read_run
from bot.retrain.triggers import request_retrain
from bot.runtime import Platform


async def test_following_a_run_shows_each_change_and_returns_how_it_ended(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follow, "POLL_SECONDS", 0.01)
    run_id = (await request_retrain(platform.sessions, trigger="test")).run_id
    seen: list[tuple[str, str | None, str | None]] = []
    changed = asyncio.Event()

    def on_change(state: RunState) -> None:
        seen.append((state.status, state.stage, state.progress))
        changed.set()

    async def advance(**values: Any) -> None:
        await changed.wait()  # the follower saw the state before: one change at a time
        changed.clear()
        async with platform.sessions.begin() as session:
            await session.execute(
                update(RetrainRun).where(RetrainRun.id == run_id).values(**values)
            )

    async def stages() -> None:
        await advance(status="running", stage="export")
        await advance(progress="step 3/10")
        await advance(
            status="succeeded",
            stage=None,
            progress=None,
            outcome={"hps": {"summary": "HPS 2 promoted"}, "adapter": {"summary": "kept"}},
        )

    async with asyncio.timeout(60):
        driver = asyncio.create_task(stages())
        ended = await follow_run(platform.sessions, run_id, on_change=on_change)
        await driver
    assert seen == [
        ("queued", None, None),
        ("running", "export", None),
        ("running", "export", "step 3/10"),
        ("succeeded", None, None),
    ]
    assert ended.ended and ended.summaries == ("HPS 2 promoted", "kept") and ended.error is None


async def test_a_failed_run_ends_the_wait_with_its_error(platform: Platform) -> None:
    run_id = (await request_retrain(platform.sessions, trigger="test")).run_id
    async with platform.sessions.begin() as session:
        await session.execute(
            update(RetrainRun)
            .where(RetrainRun.id == run_id)
            .values(status="failed", stage="hps", error="the trainer exited with 1")
        )
    async with asyncio.timeout(60):
        ended = await follow_run(platform.sessions, run_id)
    assert (ended.status, ended.stage, ended.error) == (
        "failed",
        "hps",
        "the trainer exited with 1",
    )
    with pytest.raises(LookupError, match="no retrain run 99"):
        await read_run(platform.sessions, 99)
