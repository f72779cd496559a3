"""The evidence about raters, from the database: control-set results and shared sets.

The queries take no bound parameters, so the async service (SQLAlchemy) and the export
(a psycopg snapshot) run the very same SQL and fit the very same weights.

- A vote on a control set is scored by bot/controls/scoring.py (the one rule: a pick of
  an image other than the known-worse one, and the known-best one where there is one, is
  right; a tie is wrong; "None are good" counts only where a best image is known), with a
  random clicker's chance of being right.
- A **shared set** is an ordinary (not control) set with at least ``min_votes`` voters;
  each vote's agreement is the share of the set's other votes in the same category
  (pick k, tie or none), against a chance agreement of 1 / n.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.controls.scoring import CONTROL_VOTES_SQL
from bot.raters.reliability import ControlResult, Evidence, Population, SharedVote, fit_population

#: The category of a vote, for agreement: the picked image's index, or the vote's kind.
CATEGORY = "CASE WHEN c.kind = 'pick' THEN c.image_index::text ELSE c.kind END"

#: The sets whose votes show agreement (of ``generations g``): ordinary (not control) and done.
ORDINARY_SET = "g.control_kind IS NULL AND g.status = 'done'"


SHARED_VOTES = f"""
WITH votes AS (
    SELECT c.user_id, c.generation_id, g.n_images, {CATEGORY} AS category,
           count(*) OVER (PARTITION BY c.generation_id) AS voters,
           count(*) OVER (PARTITION BY c.generation_id, {CATEGORY}) AS same
      FROM choices c
      JOIN generations g ON g.id = c.generation_id
     WHERE {ORDINARY_SET}
)
SELECT user_id, generation_id, (same - 1)::float / (voters - 1) AS agreement,
       1.0 / n_images AS chance
  FROM votes
 WHERE voters >= {{min_votes:d}}
 ORDER BY user_id, generation_id
"""


def shared_votes_sql(min_votes: int) -> str:
    """The shared-set query for sets with at least ``min_votes`` (≥ 2) voters."""
    return SHARED_VOTES.format(min_votes=max(2, int(min_votes)))


def gather(control_rows: Iterable[Any], shared_rows: Iterable[Any]) -> list[Evidence]:
    """Per-rater evidence from the two queries' rows (unscored control votes dropped)."""
    controls: dict[int, list[ControlResult]] = defaultdict(list)
    shared: dict[int, list[SharedVote]] = defaultdict(list)
    for user_id, _generation, correct, chance in control_rows:
        if correct is not None:
            controls[int(user_id)].append(ControlResult(bool(correct), float(chance)))
    for user_id, _generation, agreement, chance in shared_rows:
        shared[int(user_id)].append(SharedVote(float(agreement), float(chance)))
    return [
        Evidence(rater, tuple(controls.get(rater, ())), tuple(shared.get(rater, ())))
        for rater in sorted(controls.keys() | shared.keys())
    ]


def fit(evidence: list[Evidence], settings: Settings) -> Population:
    """The population's weights under ``settings.raters`` (a :class:`RaterSettings`)."""
    return fit_population(
        evidence,
        prior_careful=settings.raters.prior_careful,
        careful_accuracy=settings.raters.careful_accuracy,
    )


async def load_population(session: AsyncSession, settings: Settings) -> Population:
    """Every rater's reliability, read through an async SQLAlchemy session (the fit, pure
    Python over every vote, in a worker thread: the event loop serves the bot meanwhile)."""
    controls = (await session.execute(text(CONTROL_VOTES_SQL))).all()
    shared = (await session.execute(text(shared_votes_sql(settings.raters.min_votes)))).all()
    return await asyncio.to_thread(lambda: fit(gather(controls, shared), settings))


def load_population_sync(conn: psycopg.Connection[Any], settings: Settings) -> Population:
    """The same, through a psycopg connection (the export's snapshot)."""
    controls = conn.execute(CONTROL_VOTES_SQL).fetchall()
    shared = conn.execute(shared_votes_sql(settings.raters.min_votes)).fetchall()
    return fit(gather(controls, shared), settings)
