"""Agreement across the dataset: sets voted by several members, overall and per week."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from bot.arena.versions import Version
from bot.config import Settings
from bot.raters.agreement import dataset_agreement, dataset_agreement_sync, summary
from tests.support.arena_rows import add_set, add_users
from tests.support.database import sql
from tests.support.raters import add_vote

FOUR: list[Version] = [None] * 4
TWO: list[Version] = [None, None]


async def test_agreement_overall_per_week_and_on_picks(platform: Any, settings: Settings) -> None:
    a, b, c, d = await add_users(platform, 4)
    # The week of Monday 2025-12-29: [1, 1, 2] and [0, tie] (requested late on the Sunday).
    await add_set(platform, a, FOUR, {a: 1, b: 1, c: 2}, at=datetime(2026, 1, 1, tzinfo=UTC))
    tied = await add_set(platform, a, TWO, {a: 0}, at=datetime(2026, 1, 4, 23, 30, tzinfo=UTC))
    await add_vote(platform, tied, b, "tie")
    # The week of 2026-01-05: [3, 3, none, none].
    monday = datetime(2026, 1, 5, 0, 30, tzinfo=UTC)
    later = await add_set(platform, b, FOUR, {a: 3, b: 3}, at=monday)
    await add_vote(platform, later, c, "none")
    await add_vote(platform, later, d, "none")
    # Left out: a set with one voter, and a control set (its answer is known).
    await add_set(platform, a, FOUR, {a: 0}, at=monday)
    blurred = await add_set(platform, a, FOUR, {a: 0, b: 1, c: 2}, at=monday)
    await sql(
        platform,
        "UPDATE generations SET control_kind = 'blur', control_worse = 3 WHERE id = :g",
        g=blurred,
    )

    async with platform.sessions() as session:
        found = await dataset_agreement(session)
    with psycopg.connect(settings.database_url or "") as conn:
        assert dataset_agreement_sync(conn) == found  # the export's path: the same numbers

    overall = found["overall"]
    # Pairwise: shares 2/6, 0/2, 4/12 of agreeing ordered pairs; their mean.
    assert (overall["units"], overall["labels"]) == (3, 9)
    assert overall["pairwise"] == pytest.approx(2 / 9)
    # Alpha: 9 labels, observed 2 + 2 + 8/3 = 20/3 off-diagonal coincidences, expected
    # 81 - (4 + 1 + 1 + 1 + 4 + 4) = 66 ordered pairs: 1 - 8 (20/3) / 66 = 19/99.
    assert overall["alpha"] == pytest.approx(19 / 99)
    # Picks only: [1, 1, 2] and [3, 3] ([0] alone is no longer a pair).
    assert overall["picks"] == {
        "units": 2,
        "labels": 5,
        "pairwise": pytest.approx(2 / 3),
        "alpha": pytest.approx(1 - 4 * 2 / 16),
    }

    first, second = found["weeks"]
    assert first["week"] == "2025-12-29" and second["week"] == "2026-01-05"
    assert (first["units"], first["labels"]) == (2, 5)
    assert first["pairwise"] == pytest.approx(1 / 6)
    assert first["alpha"] == pytest.approx(1 - 4 * 4 / 18)
    assert first["picks"]["pairwise"] == pytest.approx(1 / 3)
    assert first["picks"]["alpha"] == pytest.approx(0.0)
    assert (second["units"], second["labels"]) == (1, 4)
    assert second["pairwise"] == pytest.approx(1 / 3)
    assert second["alpha"] == pytest.approx(0.0)
    # Two picks of the same image: full agreement, and no variation for alpha to judge.
    assert second["picks"] == {"units": 1, "labels": 2, "pairwise": 1.0, "alpha": None}

    assert summary(found) == (
        "pairwise 22.2%, alpha 0.19 on 3 sets (9 votes); picks only 66.7% on 2 sets"
    )


async def test_no_shared_sets_yet(platform: Any) -> None:
    (a,) = await add_users(platform, 1)
    await add_set(platform, a, FOUR, {a: 2})
    async with platform.sessions() as session:
        found = await dataset_agreement(session)
    empty = {"units": 0, "labels": 0, "pairwise": None, "alpha": None}
    assert found == {"overall": {**empty, "picks": empty}, "weeks": []}
    assert summary(found) == "no set has votes from two members yet"
