"""Scoring votes on control sets: the one place that says which vote was right.

The rules (shared by every reader: raters' reliability, the export, reports):

- a vote on a control set is CORRECT when it is a pick of an image that is not the
  set's ``control_worse`` and, when ``control_best`` is set, is that image;
- a tie ("No favourite") is wrong: one image was visibly worse;
- "None are good" is wrong only when ``control_best`` is set (one image was good);
  with only a known worse image it is not scored (all may be bad);
- a vote is not scored either when the set shows fewer than two images, or when the
  image its answer rests on (``control_worse``, ``control_best``) was withheld by the
  safety filter: the member never saw it.

``chance`` is the probability that a random clicker, clicking one of the set's Pick
buttons uniformly, is right: (n-1)/n when only the worse image is known, 1/n when the best
is, where n is the number of images the set shows (its Pick buttons). Summed over scored
votes it is the number of right answers a random clicker would expect.

The queries are plain SQL without bound parameters, so a synchronous (psycopg) reader
can run them as they are; the async functions below run them on a SQLAlchemy session.
Every current vote (``choices``) counts, banned members' too: admins judge them by it.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# One row per current vote on a control set: user_id, generation_id, correct, chance,
# ordered by user_id, generation_id.
# correct: true / false, NULL = not scored; chance: NULL exactly when correct is NULL.
CONTROL_VOTES_SQL = """
SELECT c.user_id, c.generation_id,
       CASE WHEN NOT s.answerable THEN NULL
            WHEN c.kind = 'pick' THEN c.image_index IS DISTINCT FROM g.control_worse
                                  AND (g.control_best IS NULL OR c.image_index = g.control_best)
            WHEN c.kind = 'tie' THEN false
            WHEN c.kind = 'none' AND g.control_best IS NOT NULL THEN false
       END AS correct,
       CASE WHEN NOT s.answerable THEN NULL
            WHEN c.kind NOT IN ('pick', 'tie', 'none') THEN NULL
            WHEN c.kind = 'none' AND g.control_best IS NULL THEN NULL
            WHEN g.control_best IS NOT NULL THEN 1.0::float8 / s.shown
            ELSE (s.shown - 1)::float8 / s.shown
       END AS chance
  FROM choices c
  JOIN generations g ON g.id = c.generation_id AND g.control_kind IS NOT NULL
  CROSS JOIN LATERAL (
       SELECT count(*) AS shown,
              count(*) >= 2
              AND (g.control_worse IS NULL OR coalesce(bool_or(i.index = g.control_worse), false))
              AND (g.control_best IS NULL OR coalesce(bool_or(i.index = g.control_best), false))
              AS answerable
         FROM images i
        WHERE i.generation_id = g.id AND NOT i.nsfw
  ) s
 ORDER BY c.user_id, c.generation_id
"""

# One row per member with at least one scored control vote: user_id, scored (votes
# scored), correct (of those, right), chance_sum (a random clicker's expected right ones).
CONTROL_RECORD_SQL = f"""
SELECT v.user_id,
       count(*) AS scored,
       count(*) FILTER (WHERE v.correct) AS correct,
       sum(v.chance) AS chance_sum
  FROM ({CONTROL_VOTES_SQL}) v
 WHERE v.correct IS NOT NULL
 GROUP BY v.user_id
 ORDER BY v.user_id
"""


class ControlVote(NamedTuple):
    """One member's current vote on a control set, scored (see the module's rules)."""

    user_id: int
    generation_id: int
    correct: bool | None  # None: not scored
    chance: float | None  # a random clicker's chance to be right; None when not scored


class ControlRecord(NamedTuple):
    """A member's record on control sets: their scored votes, the right ones, and the
    number of right ones a random clicker would expect on the same votes."""

    user_id: int
    scored: int
    correct: int
    chance_sum: float


async def control_votes(
    session: AsyncSession, *, user_id: int | None = None, generation_id: int | None = None
) -> list[ControlVote]:
    """Every current vote on a control set (of one member, of one set), scored.

    Ordered by member, then set.
    """
    rows = await session.execute(
        text(
            f"SELECT * FROM ({CONTROL_VOTES_SQL}) v "
            "WHERE (CAST(:user AS bigint) IS NULL OR v.user_id = :user) "
            "AND (CAST(:generation AS bigint) IS NULL OR v.generation_id = :generation) "
            "ORDER BY v.user_id, v.generation_id"
        ),
        {"user": user_id, "generation": generation_id},
    )
    return [
        ControlVote(
            int(r.user_id),
            int(r.generation_id),
            r.correct,
            None if r.chance is None else float(r.chance),
        )
        for r in rows
    ]


async def control_record(session: AsyncSession, user_id: int | None = None) -> list[ControlRecord]:
    """Per member, their record on control sets: rows (user_id, scored, correct, chance_sum).

    The contract, for whoever builds on it (raters' reliability weights):

    - one row per member with at least one SCORED vote on a control set, ordered by
      ``user_id``; a member without one has no row (no evidence: use the prior);
      ``user_id`` given: that member's row only (an empty list when they have none);
    - ``scored`` >= 1 is the number of their scored votes, ``correct`` <= ``scored`` the
      right ones (a Beta posterior: prior + correct successes, scored - correct failures);
    - ``chance_sum`` (a float, 0 < chance_sum < scored) is what a random clicker would
      expect to get right on the same votes, e.g. to tell accuracy from luck;
    - the scoring follows this module's rules exactly (ties wrong, "none" wrong only with
      a known best, chance (n-1)/n or 1/n). Marking a set is retroactive: the votes cast
      on it before the mark are scored from then on.

    :data:`CONTROL_RECORD_SQL` is the same query for every member, for a synchronous reader.
    """
    sql = CONTROL_RECORD_SQL
    params: dict[str, int] = {}
    if user_id is not None:
        sql = f"SELECT * FROM ({CONTROL_RECORD_SQL}) r WHERE r.user_id = :user"
        params = {"user": user_id}
    rows = await session.execute(text(sql), params)
    return [
        ControlRecord(int(r.user_id), int(r.scored), int(r.correct), float(r.chance_sum))
        for r in rows
    ]
