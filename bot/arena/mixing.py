"""Mixed sets at submit time: whether a request becomes one, and which image each version makes.

While a comparison is open, a share of /imagine requests (the comparison's own share, or
the ``arena.share`` setting) draw their images from its two versions: the baseline makes
half, the contender the other half, with the SAME seeds (each version starts from the
same noise, so a pick compares the versions rather than the luck of a seed), and the
positions are shuffled so a member cannot tell which is which. A member gets at most
``arena.daily_cap`` mixed sets in 24 hours, so nobody sees only experiments.

The draw happens inside the submit's transaction (the member's row is locked there, so
two submits of one member cannot both slip under the cap); the worker reads the plan
from ``params["versions"]`` and ``params["seeds"]``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.arena.store import open_comparison
from bot.arena.versions import Version
from bot.config import ArenaSettings
from bot.db.models import Generation

CAP_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class MixedPlan:
    """A mixed set: the comparison it belongs to, and per image its seed and version."""

    comparison_id: int
    seeds: list[int]
    versions: list[Version]


def plan_mixed(
    seeds: list[int], baseline: Version, contender: Version, rng: random.Random
) -> tuple[list[int], list[Version]]:
    """Seeds and versions per image index of a mixed set of ``len(seeds)`` images.

    The contender makes n // 2, the baseline the rest; both use the first seeds of the
    request (the baseline's images seeds[:n - n//2], the contender's seeds[:n//2]), so
    each contender image has a baseline twin from the same noise. Positions are then
    shuffled by ``rng``.
    """
    n = len(seeds)
    made = [(seed, baseline) for seed in seeds[: n - n // 2]]
    made += [(seed, contender) for seed in seeds[: n // 2]]
    rng.shuffle(made)
    return [seed for seed, _ in made], [version for _, version in made]


async def mixed_sets_today(session: AsyncSession, member_id: int) -> int:
    """How many mixed sets the member asked for in the last 24 hours."""
    count = await session.scalar(
        select(func.count())
        .select_from(Generation)
        .where(
            Generation.requested_by == member_id,
            Generation.comparison_id.is_not(None),
            Generation.requested_at > func.now() - CAP_WINDOW,
        )
    )
    return int(count or 0)


async def draw(
    session: AsyncSession,
    member_id: int,
    seeds: list[int],
    settings: ArenaSettings,
    rng: random.Random,
) -> MixedPlan | None:
    """Whether this request becomes a mixed set, and its plan; None: a plain set.

    Mixed when a comparison is open, its share is above 0, ``rng`` draws under it, the
    set has two images or more, and the member is under the daily cap.
    """
    if len(seeds) < 2:  # one image compares nothing
        return None
    comparison = await open_comparison(session)
    if comparison is None:
        return None
    share = comparison.share_or(settings.share)
    if share <= 0 or rng.random() >= share:
        return None
    if await mixed_sets_today(session, member_id) >= settings.daily_cap:
        return None
    planned, versions = plan_mixed(seeds, comparison.baseline, comparison.contender, rng)
    return MixedPlan(comparison.id, planned, versions)
