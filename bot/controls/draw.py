"""Control sets at submit time: whether a request becomes one, and its plan.

Inside the submit's transaction, after the arena's draw (a set is mixed, control or plain:
a mixed set is never a control set): with probability ``controls.share``, for a member who
has voted on at least ``controls.min_rated_others`` sets other members asked for, the set
becomes a control set. Its corruption is drawn from ``controls.kinds``, the image made
worse uniformly from the set's, and a wrong prompt from ``controls.wrong_prompts`` (so a
retried job repeats it). Nothing tells the member: the set looks like any other.
"""

from __future__ import annotations

import random

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import ControlSettings
from bot.controls.plan import ControlPlan
from bot.db.models import Choice, ControlKind, Generation


async def rated_others(session: AsyncSession, member_id: int) -> int:
    """On how many sets other members asked for this member has a vote now."""
    count = await session.scalar(
        select(func.count())
        .select_from(Choice)
        .join(Generation, Generation.id == Choice.generation_id)
        .where(Choice.user_id == member_id, Generation.requested_by != member_id)
    )
    return int(count or 0)


async def draw(
    session: AsyncSession,
    member_id: int,
    n_images: int,
    settings: ControlSettings,
    rng: random.Random,
) -> ControlPlan | None:
    """The plan of a control set of ``n_images`` images, or None: a plain set.

    ``rng`` decides first (no query for the requests it lets through plain).
    """
    if n_images < 2 or settings.share <= 0 or rng.random() >= settings.share:
        return None
    wanted = settings.min_rated_others
    if wanted > 0 and await rated_others(session, member_id) < wanted:
        return None
    kind = ControlKind(rng.choice(settings.kinds))
    worse = rng.randrange(n_images)
    prompt = rng.choice(settings.wrong_prompts) if kind == ControlKind.wrong_prompt else None
    return ControlPlan(kind, worse, prompt)
