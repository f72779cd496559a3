"""Ties and "None are good" on mixed sets: a draw (0.5) between the set's two versions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from bot.arena.agreement import live_agreement
from bot.arena.leaderboard import leaderboard
from bot.arena.outcomes import outcomes
from bot.db.models import Image
from tests.support.arena_rows import START, add_set, add_users, add_version


async def test_a_tie_or_none_on_a_mixed_set_is_a_draw_between_its_versions(
    platform: Any,
) -> None:
    arena = platform.service.arena
    adapter = await add_version(platform)
    opened = await arena.start(adapter, actor="cli:admin")
    requester, other = await add_users(platform, 2)
    versions = [None, adapter, adapter, None]
    tie = await add_set(
        platform, requester, versions, {requester: "tie", other: 1}, comparison_id=opened.id
    )
    none = await add_set(platform, requester, versions, {other: "none"}, comparison_id=opened.id)
    won = await add_set(platform, requester, versions, {requester: 2}, comparison_id=opened.id)
    await add_set(platform, requester, [None, None], {other: "tie"})  # not a mixed set

    async with platform.sessions() as session:
        found = await outcomes(session, opened.id)
    by_set = {(o.generation_id, o.rater): o for o in found}
    draw = by_set[(tie, requester)]
    assert draw.score == 0.5 and {draw.winner, draw.loser} == {None, adapter}
    assert draw.by_requester
    assert by_set[(tie, other)].score == 1.0 and by_set[(tie, other)].winner == adapter
    assert by_set[(none, other)].score == 0.5
    assert {by_set[(none, other)].winner, by_set[(none, other)].loser} == {None, adapter}
    assert by_set[(won, requester)].score == 1.0 and len(found) == 4

    status = await arena.status()  # one observation per set: the requester's vote first
    assert status.judged_sets == 3 and status.judgement is not None
    assert status.judgement.wins == pytest.approx(0.5 + 0.5 + 1.0)
    assert status.judgement.estimate == pytest.approx(2.0 / 3)
    board = await leaderboard(platform.sessions, platform.settings, bootstrap=20)
    rated = {r.version: r for r in board.ratings.ratings}
    assert rated[adapter].score == pytest.approx(0.5 + 1 + 0.5 + 1)  # draws count half
    assert rated[None].score == pytest.approx(0.5 + 0.5)


async def test_a_draw_is_between_the_versions_still_shown(platform: Any) -> None:
    """A tie on a set whose first image was withheld is still a draw of both versions;
    a set left with one version's images compares nothing."""
    adapter = await add_version(platform)
    opened = await platform.service.arena.start(adapter, actor="cli:admin")
    (user,) = await add_users(platform, 1)
    shown = await add_set(
        platform, user, [None, adapter, None], {user: "tie"}, comparison_id=opened.id
    )
    alone = await add_set(platform, user, [None, adapter], {user: "none"}, comparison_id=opened.id)
    async with platform.sessions.begin() as session:
        for generation, index in ((shown, 0), (alone, 1)):
            await session.execute(
                update(Image)
                .where(Image.generation_id == generation, Image.index == index)
                .values(nsfw=True)
            )
        found = await outcomes(session, opened.id)
    assert [(o.generation_id, o.score) for o in found] == [(shown, 0.5)]
    assert {found[0].winner, found[0].loser} == {None, adapter}


async def test_the_live_hps_agreement_counts_picks_only(platform: Any) -> None:
    hps = await add_version(platform, "hps", active=True)
    (user,) = await add_users(platform, 1)
    for k, vote in enumerate([0, "tie", "none", 0]):
        at = START + timedelta(minutes=k)
        await add_set(platform, user, [None, None], {user: vote}, at=at, scores={hps: [3.0, 1.0]})
    async with platform.sessions() as session:
        found = await live_agreement(session, hps, window=10)
    assert found.picks == 2 and found.agreement == 1.0
