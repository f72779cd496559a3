"""The active HPS's live agreement with members' picks, and the retrain it may ask for."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.arena.agreement import active_agreement, live_agreement
from bot.db.models import HPSScore, Image, RetrainRun, RetrainStatus
from bot.jobs.app import build_app
from bot.names import AGREEMENT_TASK
from bot.retrain.tasks import check_agreement
from tests.support.arena_rows import START, add_set, add_users, add_version

AGREE = [3.0, 1.0]  # the HPS prefers image 0 (the one picked below)
DISAGREE = [1.0, 3.0]
TIE = [2.0, 2.0]  # half a hit


async def picks(platform: Any, hps: int, pattern: list[list[float]], *, start: int = 0) -> None:
    """One set and one pick (image 0) per entry, a minute apart, scored by ``hps``."""
    (user,) = await add_users(platform, 1)
    for k, scores in enumerate(pattern):
        at = START + timedelta(minutes=start + k)
        await add_set(platform, user, [None, None], {user: 0}, at=at, scores={hps: scores})


async def test_agreement_over_the_window_and_its_trend(platform: Any) -> None:
    hps = await add_version(platform, "hps", active=True)
    other_hps = await add_version(platform, "hps")
    # Oldest first: 4 outside the window, then 8 in it: blocks of 2 at 100%, 50%, 75%, 0%.
    await picks(platform, hps, [DISAGREE] * 4)
    window = [AGREE, AGREE, AGREE, DISAGREE, AGREE, TIE, DISAGREE, DISAGREE]
    await picks(platform, hps, window, start=10)
    (user,) = await add_users(platform, 1)
    # Not counted: a set the active HPS scored only in part, and one scored by another HPS.
    late = START + timedelta(hours=1)
    await add_set(platform, user, [None, None], {user: 0}, at=late, scores={other_hps: AGREE})
    partial = await add_set(platform, user, [None, None], {user: 1}, at=late)
    async with platform.sessions.begin() as session:  # the HPS scored one of its two images
        image = await session.scalar(select(Image.id).where(Image.generation_id == partial))
        session.add(HPSScore(image_id=image, hps_version_id=hps, score=9.0))

    found = await active_agreement(platform.sessions, window=8)
    assert found is not None and found.hps_version_id == hps
    assert found.picks == 8 and found.full
    assert found.agreement == pytest.approx(4.5 / 8)
    assert [b.agreement for b in found.trend] == [1.0, 0.5, 0.75, 0.0]
    assert [b.picks for b in found.trend] == [2, 2, 2, 2]
    assert found.trend[0].first_at < found.trend[-1].last_at
    assert "agrees with 56.2% of the last 8 picks" in found.describe()
    assert "100% → 50% → 75% → 0%" in found.describe()

    async with platform.sessions() as session:
        wide = await live_agreement(session, hps, window=50, blocks=4)
    assert wide.picks == 12 and not wide.full and wide.agreement == pytest.approx(4.5 / 12)
    assert "window not full: 50" in wide.describe()
    async with platform.sessions() as session:
        other = await live_agreement(session, other_hps, window=50)
    assert (other.picks, other.agreement) == (1, 1.0)


async def test_no_active_hps_no_agreement(platform: Any) -> None:
    assert await active_agreement(platform.sessions, window=10) is None
    hps = await add_version(platform, "hps", active=True)
    found = await active_agreement(platform.sessions, window=10)
    assert found is not None and found.agreement is None and found.trend == []
    assert f"HPS #{hps} has scored no picked set yet" in found.describe()


async def test_low_agreement_asks_for_one_retrain_per_hps(platform: Any) -> None:
    platform.settings.arena.agreement_window = 4
    hps = await add_version(platform, "hps", active=True)
    await picks(platform, hps, [DISAGREE, AGREE, DISAGREE])
    assert await check_agreement(platform) is None  # the option is off
    platform.settings.retrain.agreement_below = 0.5
    assert await check_agreement(platform) is None  # the window is not full
    await picks(platform, hps, [DISAGREE], start=10)  # 1 of 4 agree: 25% < 50%

    request = await check_agreement(platform)
    assert request is not None and request.created and request.trigger == "agreement"
    async with platform.sessions.begin() as session:
        run = await session.scalar(select(RetrainRun).where(RetrainRun.id == request.run_id))
        assert run is not None and run.requested_by == f"hps:{hps}"
        await session.execute(  # it ran, and kept this HPS
            update(RetrainRun).where(RetrainRun.id == run.id).values(status=RetrainStatus.succeeded)
        )
    assert await check_agreement(platform) is None  # not again for the same HPS

    newer = await add_version(platform, "hps")
    await platform.registry.promote(newer)
    await picks(platform, newer, [DISAGREE] * 4, start=20)
    again = await check_agreement(platform)
    assert again is not None and again.created and again.run_id != request.run_id
    async with platform.sessions() as session:
        runs = list(await session.scalars(select(RetrainRun.requested_by).order_by(RetrainRun.id)))
    assert runs == [f"hps:{hps}", f"hps:{newer}"]


async def test_high_agreement_asks_for_nothing(platform: Any) -> None:
    platform.settings.arena.agreement_window = 4
    platform.settings.retrain.agreement_below = 0.5
    hps = await add_version(platform, "hps", active=True)
    await picks(platform, hps, [AGREE, AGREE, DISAGREE, TIE])  # 62.5%
    assert await check_agreement(platform) is None


def test_the_trigger_is_a_periodic_task_only_when_set(platform: Any) -> None:
    def periodic() -> set[str]:
        app = build_app(platform.database_url, platform.settings.worker, platform.settings.retrain)
        return {task.task.name for task in app.periodic_registry.periodic_tasks.values()}

    assert AGREEMENT_TASK not in periodic()
    platform.settings.retrain.agreement_below = 0.6
    assert AGREEMENT_TASK in periodic()
