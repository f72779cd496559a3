"""The evidence queries: agreement on shared sets, and one fit for the service and the export.

(Votes on control sets are scored by bot/controls/scoring.py: tests/bot/controls/test_scoring.py.)
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import text

from bot.arena.versions import Version
from bot.config import Settings
from bot.raters.evidence import (
    gather,
    load_population,
    load_population_sync,
    shared_votes_sql,
)
from tests.support.arena_rows import add_set, add_users
from tests.support.raters import add_vote


async def test_agreement_on_shared_sets(platform: Any, settings: Settings) -> None:
    a, b, c, d = await add_users(platform, 4)
    four: list[Version] = [None] * 4
    two: list[Version] = [None, None]
    shared = await add_set(platform, a, four, {a: 1, b: 1, c: 2})
    await add_vote(platform, shared, d, "tie")
    await add_set(platform, a, four, {a: 0})  # one voter: not shared
    tied = await add_set(platform, a, two, {})
    await add_vote(platform, tied, c, "tie")
    await add_vote(platform, tied, d, "tie")

    async with platform.sessions() as session:
        found = {
            (row.user_id, row.generation_id): (round(row.agreement, 4), float(row.chance))
            for row in (await session.execute(text(shared_votes_sql(2)))).all()
        }
    third = round(1 / 3, 4)
    assert found == {
        (a, shared): (third, 0.25),
        (b, shared): (third, 0.25),
        (c, shared): (0.0, 0.25),
        (d, shared): (0.0, 0.25),
        (c, tied): (1.0, 0.5),
        (d, tied): (1.0, 0.5),
    }
    # The async and the export's psycopg path fit the same weights.
    async with platform.sessions() as session:
        fitted = await load_population(session, settings)
    with psycopg.connect(settings.database_url or "") as conn:
        again = load_population_sync(conn, settings)
    assert fitted == again
    assert set(fitted.raters) == {a, b, c, d}


def test_gather_drops_unscored_votes() -> None:
    evidence = gather([(1, 10, True, 0.75), (1, 11, None, 0.75), (2, 10, False, 0.5)], [])
    assert [(e.rater, len(e.controls), len(e.shared)) for e in evidence] == [(1, 1, 0), (2, 1, 0)]
