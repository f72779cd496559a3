"""Read-only time series for the admins' plots: the dataset's growth and the votes per day.

Times are bucketed in UTC. The growth is counted per hour while the data span three days
or less, per day after that (a year of data is a few hundred points, not millions). Each
function takes the session first and never writes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import (
    Choice,
    ChoiceEvent,
    Generation,
    Image,
    ModelStatus,
    ModelVersion,
    User,
    VoteKind,
)

Unit = Literal["hour", "day"]
HOURLY_SPAN = timedelta(days=3)  # data spanning this or less are counted per hour


@dataclass(frozen=True)
class Growth:
    """New generations, images and votes per bucket (``unit`` long), oldest first."""

    unit: Unit
    buckets: list[datetime]  # UTC
    generations: list[int]
    images: list[int]
    votes: list[int]  # current votes (one per member and set), by when they were cast


@dataclass(frozen=True)
class DailyVotes:
    """Votes per UTC day by kind (pick, tie, none), oldest day first."""

    days: list[datetime]
    counts: dict[str, list[int]]  # kind -> per day


def _bucket(unit: Unit, column: Any) -> ColumnElement[datetime]:
    """The UTC hour or day ``column`` falls in (the unit inline, not a parameter: GROUP BY
    repeats the expression, and two parameters would be two expressions to PostgreSQL)."""
    assert unit in ("hour", "day")
    return func.date_trunc(literal_column(f"'{unit}'"), func.timezone("UTC", column))


async def growth(session: AsyncSession) -> Growth:
    """New generations (by request time), images (by their set's finish) and votes per
    hour or day; empty lists when nothing was collected yet."""
    first, last = (
        await session.execute(
            select(
                func.least(
                    select(func.min(Generation.requested_at)).scalar_subquery(),
                    select(func.min(Choice.chosen_at)).scalar_subquery(),
                ),
                func.greatest(
                    select(func.max(Generation.requested_at)).scalar_subquery(),
                    select(func.max(Choice.chosen_at)).scalar_subquery(),
                ),
            )
        )
    ).one()
    if first is None:
        return Growth("day", [], [], [], [])
    unit: Unit = "hour" if last - first <= HOURLY_SPAN else "day"
    series: list[dict[datetime, int]] = []
    requested = _bucket(unit, Generation.requested_at)
    made = _bucket(unit, func.coalesce(Generation.finished_at, Generation.requested_at))
    voted = _bucket(unit, Choice.chosen_at)
    for query in (
        select(requested, func.count()).group_by(requested),
        select(made, func.count())
        .select_from(Image)
        .join(Generation, Generation.id == Image.generation_id)
        .group_by(made),
        select(voted, func.count()).group_by(voted),
    ):
        series.append({_utc(at): int(n) for at, n in (await session.execute(query)).all()})
    buckets = sorted(set().union(*series))
    return Growth(unit, buckets, *([s.get(b, 0) for b in buckets] for s in series))


async def daily_votes(session: AsyncSession) -> DailyVotes:
    """Current votes per UTC day (by when they were cast), by kind."""
    day = _bucket("day", Choice.chosen_at)
    rows = (
        await session.execute(select(day, Choice.kind, func.count()).group_by(day, Choice.kind))
    ).all()
    per_day: dict[datetime, dict[str, int]] = defaultdict(dict)
    for at, kind, count in rows:
        per_day[_utc(at)][kind] = int(count)
    days = sorted(per_day)
    kinds = [k.value for k in VoteKind]
    return DailyVotes(days, {k: [per_day[d].get(k, 0) for d in days] for k in kinds})


async def data_version(session: AsyncSession) -> tuple[Any, ...]:
    """A marker that changes when the data the admin pages summarise change: new sets,
    images, votes or model versions, a promotion or rollback, a member forgotten. Cheap
    (maxima, mostly of indexed columns), so a cache can ask it on every request."""
    row = (
        await session.execute(
            select(
                select(func.max(Generation.id)).scalar_subquery(),
                select(func.max(Generation.finished_at)).scalar_subquery(),
                select(func.max(Image.id)).scalar_subquery(),
                select(func.max(ChoiceEvent.id)).scalar_subquery(),
                select(func.max(Choice.chosen_at)).scalar_subquery(),
                select(func.max(ModelVersion.id)).scalar_subquery(),
                select(func.max(ModelVersion.promoted_at)).scalar_subquery(),
                select(func.array_agg(ModelVersion.id))
                .where(ModelVersion.status == ModelStatus.active)
                .scalar_subquery(),
                select(func.max(User.forgotten_at)).scalar_subquery(),
            )
        )
    ).one()
    return tuple(tuple(x) if isinstance(x, list) else x for x in row)


def _utc(moment: datetime) -> datetime:
    """``date_trunc`` of a UTC wall time gives a naive timestamp: it is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
