"""Scoring votes on control sets (the shared rules), marks and their refusals, retroactively."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from bot.arena.agreement import live_agreement
from bot.controls.marking import control_sets, mark, unmark
from bot.controls.scoring import (
    CONTROL_RECORD_SQL,
    CONTROL_VOTES_SQL,
    ControlRecord,
    ControlVote,
    control_record,
    control_votes,
)
from bot.db.engine import libpq_url
from bot.domain import Refusal
from tests.support.arena_rows import add_set, add_users, add_version
from tests.support.database import sql


async def _set(platform: Any, requester: int, n: int, **control: Any) -> int:
    """A done set of ``n`` images; ``control``: its control columns."""
    generation = await add_set(platform, requester, [None] * n, {})
    if control:
        columns = ", ".join(f"control_{k} = :{k}" for k in control)
        await sql(
            platform, f"UPDATE generations SET {columns} WHERE id = :g", g=generation, **control
        )
    return generation


async def _vote(platform: Any, generation: int, user: int, vote: str | int) -> None:
    kind, index = ("pick", vote) if isinstance(vote, int) else (vote, None)
    await sql(
        platform,
        "INSERT INTO choices (generation_id, user_id, kind, image_index) VALUES (:g, :u, :k, :i)",
        g=generation,
        u=user,
        k=kind,
        i=index,
    )


async def _votes(platform: Any, **where: Any) -> dict[tuple[int, int], tuple[Any, Any]]:
    async with platform.sessions() as session:
        found = await control_votes(session, **where)
    return {(v.user_id, v.generation_id): (v.correct, v.chance) for v in found}


async def test_each_vote_is_scored_by_the_shared_rules(platform: Any) -> None:
    owner, u1, u2, u3, u4 = await add_users(platform, 5)
    worse_only = await _set(platform, owner, 4, kind="blur", worse=1)
    both = await _set(platform, owner, 3, kind="marked", worse=0, best=2, by="cli:admin")
    best_only = await _set(platform, owner, 2, kind="marked", best=1, by="cli:admin")
    plain = await _set(platform, owner, 2)
    for generation, votes in {
        worse_only: {u1: 0, u2: 1, u3: "tie", u4: "none"},
        both: {u1: 2, u2: 1, u3: "none", u4: "tie"},
        best_only: {u1: 0, u2: 1, u3: "none"},
        plain: {u1: 0, u2: "tie"},
    }.items():
        for user, vote in votes.items():
            await _vote(platform, generation, user, vote)

    assert await _votes(platform) == {
        # Only the worse image known (n = 4): right unless it is picked; a tie is wrong;
        # "none" is not scored (all four may be bad).
        (u1, worse_only): (True, pytest.approx(3 / 4)),
        (u2, worse_only): (False, pytest.approx(3 / 4)),
        (u3, worse_only): (False, pytest.approx(3 / 4)),
        (u4, worse_only): (None, None),
        # The best known (n = 3): only the best is right; "none" and a tie are wrong.
        (u1, both): (True, pytest.approx(1 / 3)),
        (u2, both): (False, pytest.approx(1 / 3)),
        (u3, both): (False, pytest.approx(1 / 3)),
        (u4, both): (False, pytest.approx(1 / 3)),
        (u1, best_only): (False, pytest.approx(1 / 2)),
        (u2, best_only): (True, pytest.approx(1 / 2)),
        (u3, best_only): (False, pytest.approx(1 / 2)),
        # plain: no rows at all
    }
    assert set(await _votes(platform, user_id=u1)) == {
        (u1, worse_only),
        (u1, both),
        (u1, best_only),
    }
    assert set(await _votes(platform, generation_id=best_only)) == {
        (u1, best_only),
        (u2, best_only),
        (u3, best_only),
    }

    async with platform.sessions() as session:
        records = await control_record(session)
        (mine,) = await control_record(session, user_id=u1)
        assert await control_record(session, user_id=owner) == []  # no scored vote: no row
    assert records == [
        ControlRecord(u1, 3, 2, pytest.approx(3 / 4 + 1 / 3 + 1 / 2)),
        ControlRecord(u2, 3, 1, pytest.approx(3 / 4 + 1 / 3 + 1 / 2)),
        ControlRecord(u3, 3, 0, pytest.approx(3 / 4 + 1 / 3 + 1 / 2)),
        ControlRecord(u4, 1, 0, pytest.approx(1 / 3)),  # its "none" without a best: unscored
    ]
    assert mine == records[0] and mine.scored == mine[1]  # a tuple with names

    # The same SQL, as it is, through a synchronous psycopg connection (the export's way).
    with psycopg.connect(libpq_url(platform.database_url)) as conn:
        synced = [ControlRecord(*row) for row in conn.execute(CONTROL_RECORD_SQL)]
        rows = [ControlVote(*row) for row in conn.execute(CONTROL_VOTES_SQL)]
    assert synced == records and len(rows) == 11


async def test_an_answer_nobody_saw_is_not_scored(platform: Any) -> None:
    owner, rater = await add_users(platform, 2)
    hidden_worse = await _set(platform, owner, 3, kind="noise", worse=2)
    hidden_best = await _set(platform, owner, 3, kind="marked", best=0, by="cli:admin")
    shown_two = await _set(platform, owner, 3, kind="invert", worse=0)
    await sql(
        platform,
        "UPDATE images SET nsfw = true WHERE (generation_id = :a AND index = 2) "
        "OR (generation_id = :b AND index = 0) OR (generation_id = :c AND index = 2)",
        a=hidden_worse,
        b=hidden_best,
        c=shown_two,
    )
    for generation in (hidden_worse, hidden_best, shown_two):
        await _vote(platform, generation, rater, 1)
    assert await _votes(platform) == {
        (rater, hidden_worse): (None, None),  # withheld: the member never saw it
        (rater, hidden_best): (None, None),
        (rater, shown_two): (True, pytest.approx(1 / 2)),  # two Pick buttons shown
    }


async def test_a_mark_scores_the_votes_already_cast_and_an_unmark_unscores_them(
    platform: Any,
) -> None:
    owner, u1, u2 = await add_users(platform, 3)
    generation = await _set(platform, owner, 3)
    await _vote(platform, generation, u1, 0)
    await _vote(platform, generation, u2, 2)
    assert await _votes(platform) == {}

    marked = await mark(platform.sessions, generation, worse=2, actor="cli:admin")
    assert (marked.kind, marked.worse, marked.best, marked.by) == ("marked", 2, None, "cli:admin")
    assert (marked.votes, marked.scored, marked.correct) == (2, 2, 1)
    assert await _votes(platform) == {
        (u1, generation): (True, pytest.approx(2 / 3)),
        (u2, generation): (False, pytest.approx(2 / 3)),
    }
    again = await mark(platform.sessions, generation, best=2, actor="cli:other")
    assert (again.worse, again.best, again.by, again.correct) == (None, 2, "cli:other", 1)
    assert (await _votes(platform))[(u2, generation)] == (True, pytest.approx(1 / 3))

    before = await unmark(platform.sessions, generation)
    assert before.best == 2 and await _votes(platform) == {}
    assert await control_sets(platform.sessions) == []


async def test_marks_refused_with_a_reason(platform: Any) -> None:
    (owner,) = await add_users(platform, 1)
    done = await _set(platform, owner, 2)
    corrupted = await _set(platform, owner, 2, kind="blur", worse=0)
    version = await add_version(platform)
    mixed = await add_set(platform, owner, [None, version], {})
    await sql(platform, "INSERT INTO comparisons (contender_version_id) VALUES (:v)", v=version)
    await sql(platform, "UPDATE generations SET comparison_id = 1 WHERE id = :g", g=mixed)
    running = await _set(platform, owner, 2)
    await sql(platform, "UPDATE generations SET status = 'running' WHERE id = :g", g=running)
    await sql(
        platform, "UPDATE images SET nsfw = true WHERE generation_id = :g AND index = 1", g=done
    )

    async def refused(generation: int, **answer: Any) -> str:
        with pytest.raises(Refusal) as caught:
            await mark(platform.sessions, generation, actor="cli:admin", **answer)
        return caught.value.message

    assert "the known worse image, the known best one, or both" in await refused(done)
    assert "cannot be both the worse and the best" in await refused(done, worse=0, best=0)
    assert "no longer exists" in await refused(999, worse=0)
    assert "mixed set of the arena" in await refused(mixed, worse=0)
    assert "already a control set (blur" in await refused(corrupted, best=1)
    assert "is running; only a finished set" in await refused(running, worse=0)
    assert "has images 1 to 2; there is no image 3" in await refused(done, worse=2)
    assert "withheld by the safety filter" in await refused(done, best=1)
    for generation, message in (
        (done, "is not marked"),
        (corrupted, "made by the worker (blur)"),
        (999, "no longer exists"),
    ):
        with pytest.raises(Refusal, match=re.escape(message)):
            await unmark(platform.sessions, generation)
    async with platform.engine.connect() as connection:  # nothing was written
        marked = await connection.scalar(
            text("SELECT count(*) FROM generations WHERE control_kind = 'marked'")
        )
    assert marked == 0


async def test_control_sets_do_not_count_in_the_live_hps_agreement(platform: Any) -> None:
    hps = await add_version(platform, "hps", active=True)
    (user,) = await add_users(platform, 1)
    await add_set(platform, user, [None, None], {user: 0}, scores={hps: [3.0, 1.0]})
    control = await add_set(platform, user, [None, None], {user: 0}, scores={hps: [1.0, 3.0]})
    await sql(
        platform,
        "UPDATE generations SET control_kind = 'blur', control_worse = 1 WHERE id = :g",
        g=control,
    )
    async with platform.sessions() as session:
        found = await live_agreement(session, hps, window=10)
    assert found.picks == 1 and found.agreement == 1.0
