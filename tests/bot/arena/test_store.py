"""Arena control: start, stop and status of a comparison, through the service."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from bot.arena.sequential import judge
from bot.db.models import Comparison, RetrainRun, RetrainStatus
from bot.domain import Refusal
from tests.support.arena_rows import add_comparison, add_set, add_users, add_version
from tests.support.database import count


async def refused(call: Any) -> Refusal:
    with pytest.raises(Refusal) as caught:
        await call
    return caught.value


async def test_start_refuses_what_cannot_be_compared(platform: Any) -> None:
    arena = platform.service.arena
    hps = await add_version(platform, "hps")
    adapter = await add_version(platform)

    same = await refused(arena.start(None, actor="cli:admin"))  # the base serves
    assert same.code == "same_version" and "base is the baseline" in same.message
    assert (await refused(arena.start(hps, actor="cli:admin"))).code == "wrong_kind"
    assert (await refused(arena.start(99, actor="cli:admin"))).code == "no_version"
    bad = await refused(arena.start(adapter, actor="cli:admin", share=1.5))
    assert bad.code == "bad_share" and "between 0 and 1" in bad.message
    assert await count(platform, "comparisons") == 0

    opened = await arena.start(adapter, actor="cli:admin", share=0.25)
    assert (opened.baseline, opened.contender, opened.status) == (None, adapter, "open")
    assert opened.share == 0.25 and opened.started_by == "cli:admin"
    second = await add_version(platform)
    held = await refused(arena.start(second, actor="discord:1"))
    assert held.code == "comparison_open" and held.details == {"comparison_id": opened.id}
    assert f"comparison {opened.id}: adapter #{adapter} vs base is already open" in held.message
    assert "by cli:admin" in held.message
    assert await count(platform, "admin_actions") == 0  # the front ends audit, not the service


async def test_the_serving_adapter_is_the_baseline(platform: Any) -> None:
    serving = await add_version(platform, active=True)
    opened = await platform.service.arena.start(None, actor="cli:admin")  # the base contends
    assert (opened.baseline, opened.contender) == (serving, None)


async def test_two_admins_starting_at_once_open_one(platform: Any) -> None:
    a, b = await add_version(platform), await add_version(platform)
    arena = platform.service.arena
    results = await asyncio.gather(
        arena.start(a, actor="cli:one"), arena.start(b, actor="cli:two"), return_exceptions=True
    )
    opened = [r for r in results if not isinstance(r, BaseException)]
    refusals = [r for r in results if isinstance(r, Refusal)]
    assert len(opened) == 1 and len(refusals) == 1
    assert refusals[0].code == "comparison_open"
    assert await count(platform, "comparisons") == 1


async def test_stop_records_who_and_the_evidence(platform: Any) -> None:
    arena = platform.service.arena
    assert await arena.stop("cli:admin") is None  # none open
    adapter = await add_version(platform)
    opened = await arena.start(adapter, actor="cli:admin")
    stopped = await arena.stop("cli:bob", reason="wrong adapter")
    assert stopped is not None and stopped.id == opened.id and stopped.status == "stopped"
    assert stopped.ended_at is not None
    assert stopped.decision["by"] == "cli:bob" and stopped.decision["decision"] == "stopped"
    assert stopped.decision["summary"] == "stopped by cli:bob: wrong adapter"
    assert stopped.decision["judgement"]["n"] == 0
    assert await arena.stop("cli:bob") is None
    status = await arena.status()  # the last one, closed
    assert status.comparison == stopped and not status.open
    assert "decision: stopped by cli:bob: wrong adapter" in status.describe()
    reopened = await arena.start(adapter, actor="cli:admin")  # a closed one blocks nothing
    assert reopened.id != opened.id


async def test_a_retrain_runs_comparison_may_be_stopped(platform: Any) -> None:
    adapter = await add_version(platform)
    async with platform.sessions.begin() as session:
        run = RetrainRun(trigger="cli", status=RetrainStatus.running)
        session.add(run)
        await session.flush()
        session.add(
            Comparison(
                baseline_version_id=None, contender_version_id=adapter, retrain_run_id=run.id
            )
        )
    status = await platform.service.arena.status()
    assert f"by retrain run {run.id}" in status.describe()
    stopped = await platform.service.arena.stop("discord:7")
    assert stopped is not None and stopped.retrain_run_id == run.id
    assert stopped.decision["summary"] == (
        f"stopped by discord:7 (retrain run {run.id}'s people's gate; not promoted)"
    )


async def test_status_counts_sets_and_judges_one_pick_per_set(platform: Any) -> None:
    arena = platform.service.arena
    empty = await arena.status()
    assert empty.comparison is None and empty.judgement is None
    assert "No comparison has been opened yet" in empty.describe()

    adapter = await add_version(platform)
    opened = await arena.start(adapter, actor="cli:admin")
    requester, other, third = await add_users(platform, 3)
    versions = [None, adapter, adapter, None]  # the contender makes images 1 and 2
    expected = []
    for k in range(12):
        contender_won = k % 3 != 0  # 8 of 12
        picked = 1 if contender_won else 0
        picks = {other: 3 - picked, requester: picked} if k < 6 else {other: picked}
        if k == 5:
            picks[third] = picked
        await add_set(platform, requester, versions, picks, comparison_id=opened.id)
        expected.append(1.0 if contender_won else 0.0)  # the requester's pick when they made one
    await add_set(platform, requester, versions, {})  # an unjudged mixed set …
    await add_set(platform, requester, [None, None], {other: 0})  # … and an ordinary one

    status = await arena.status()
    assert status.open and status.comparison is not None
    assert status.comparison.id == opened.id
    assert status.mixed_sets == 12 and status.judged_sets == 12
    assert status.picks == 12 + 6 + 1  # several members picked some sets
    settings = platform.settings.arena
    assert status.judgement == judge(
        expected,
        confidence=settings.confidence,
        min_effect=settings.min_effect,
        max_comparisons=settings.max_comparisons,
    )
    assert status.judgement is not None and status.judgement.estimate == pytest.approx(8 / 12)
    assert status.share == 0.0 and status.share_from_settings
    text = status.describe()
    assert "no mixed sets are being made" in text and "12 mixed sets made, 12 judged" in text
    assert "12 judged sets, contender's win rate 66.7%" in text

    platform.settings.arena.share = 0.3
    assert (
        "share 30% of /imagine requests (the arena.share setting)"
        in (await arena.status()).describe()
    )


async def test_a_comparison_past_its_deadline_is_rejected(platform: Any) -> None:
    adapter = await add_version(platform)
    comparison = await add_comparison(platform, None, adapter)
    long_ago = datetime.now(UTC) - timedelta(days=platform.settings.arena.max_days + 1)
    async with platform.sessions.begin() as session:
        await session.execute(
            update(Comparison).where(Comparison.id == comparison).values(started_at=long_ago)
        )
    status = await platform.service.arena.status()
    assert status.judgement is not None and status.judgement.decision == "reject"
    assert status.judgement.reason == "no decision before the deadline"
