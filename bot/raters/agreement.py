"""Agreement across the dataset: how often members who voted on the same set agree.

This is the ceiling any preference model can reach on our data (the HPS paper: humans
agree 42.0% top-1, HPS reaches 43.5%). It reads the same sets the raters' agreement
evidence does (:mod:`bot.raters.evidence`): ordinary sets (not control sets) that are
done and voted by at least two members; each set is a *unit* whose labels are its votes'
categories (the picked image's index as text, ``"tie"`` or ``"none"``). The measures are
:func:`training.agreement.agreement`'s: pairwise agreement and Krippendorff's alpha
(nominal), over every set and per week (UTC weeks from Monday, by when the set was
requested).

Besides all votes, each entry carries ``"picks"``: the same measures over the picks alone
(ties and "none" votes dropped, then sets with two picks or more). That is the number to
hold against a model's top-1 accuracy, which the paper measures on picks: a model names
one image, and so does a pick, never a tie.

The query takes no bound parameters, so the async service and the export's psycopg
snapshot run the very same SQL. The result is a JSON-able dict::

    {"overall": {"units", "labels", "pairwise", "alpha", "picks": {...}},
     "weeks": [{"week": "2026-11-30", "units", ..., "picks": {...}}, ...]}   # oldest first
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.raters.evidence import CATEGORY, ORDINARY_SET
from training.agreement import agreement

#: The labels that are picks (an image's index); the others are "tie" and "none".
_KINDS = ("tie", "none")

#: One row per ordinary done set with two voters or more: its UTC week and its labels.
UNITS = f"""
SELECT to_char(date_trunc('week', g.requested_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS week,
       array_agg({CATEGORY} ORDER BY c.user_id) AS labels
  FROM choices c
  JOIN generations g ON g.id = c.generation_id
 WHERE {ORDINARY_SET}
 GROUP BY g.id
HAVING count(*) >= 2
 ORDER BY week, g.id
"""


def summarise(rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """The overall and per-week agreement of ``(week, labels)`` rows (see the module)."""
    overall: list[list[str]] = []
    weeks: dict[str, list[list[str]]] = defaultdict(list)
    for week, labels in rows:
        unit = [str(label) for label in labels]
        overall.append(unit)
        weeks[str(week)].append(unit)
    return {
        "overall": measure(overall),
        "weeks": [{"week": week, **measure(weeks[week])} for week in sorted(weeks)],
    }


def measure(units: list[list[str]]) -> dict[str, Any]:
    """All votes' agreement, with the picks-only measures under ``"picks"``."""
    picks = [[label for label in unit if label not in _KINDS] for unit in units]
    return {**agreement(units).as_dict(), "picks": agreement(picks).as_dict()}


async def dataset_agreement(session: AsyncSession) -> dict[str, Any]:
    """The dataset's agreement, read through an async SQLAlchemy session (measured in a
    worker thread: pure Python over every voted set)."""
    rows = (await session.execute(text(UNITS))).all()
    return await asyncio.to_thread(summarise, rows)


def dataset_agreement_sync(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The same, through a psycopg connection (the export's snapshot, for its manifest)."""
    return summarise(conn.execute(UNITS).fetchall())


def summary(found: dict[str, Any]) -> str:
    """One line for people: pairwise agreement and alpha over all votes, and on picks."""
    overall = found["overall"]
    if not overall["units"]:
        return "no set has votes from two members yet"
    picks = overall["picks"]
    line = (
        f"pairwise {_percent(overall['pairwise'])}, alpha {_number(overall['alpha'])} "
        f"on {overall['units']} sets ({overall['labels']} votes)"
    )
    if picks["units"]:
        line += f"; picks only {_percent(picks['pairwise'])} on {picks['units']} sets"
    return line


def week_line(week: dict[str, Any]) -> str:
    """One week's agreement, for a list of recent weeks."""
    return (
        f"week of {week['week']}: pairwise {_percent(week['pairwise'])}, "
        f"alpha {_number(week['alpha'])} on {week['units']} sets"
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
