"""Which set a member should rate next: other members' done sets (the Pick-a-Pic loop).

A member who opens "Rate others' sets" gets a finished set that another member asked
for, with at least two images shown (one image leaves nothing to compare), that they
have not voted on yet. Sets whose requester is banned or was forgotten are left out
(exports leave their votes out too). Mixed and control sets come up like any other set:
a rater must not be able to tell them apart. Sets with the fewest votes come first, so
the votes spread; among those, the newest. A member may skip a set (the web page keeps
the skipped ids in its session): it comes up again only after the others.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import and_, exists, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Choice, Generation, GenerationStatus, Image, User
from bot.domain import UserRef


async def next_to_rate(
    sessions: async_sessionmaker[AsyncSession], user: UserRef, skip: Collection[int] = ()
) -> int | None:
    """The id of the set ``user`` should rate next, or None when there is none (one query).

    ``skip``: sets the member passed over ("Skip"), left out this time.
    """
    me = (
        select(User.id)
        .where(User.frontend == user.frontend, User.external_id == user.external_id)
        .scalar_subquery()
    )
    shown = (
        select(func.count())
        .select_from(Image)
        .where(Image.generation_id == Generation.id, Image.nsfw.is_(False))
        .scalar_subquery()
    )
    votes = (
        select(func.count())
        .select_from(Choice)
        .where(Choice.generation_id == Generation.id)
        .scalar_subquery()
    )
    voted = exists().where(and_(Choice.generation_id == Generation.id, Choice.user_id == me))
    query = (
        select(Generation.id)
        .join(User, User.id == Generation.requested_by)
        .where(
            Generation.status == GenerationStatus.done,
            Generation.requested_by.is_distinct_from(me),  # a member never seen: every set
            User.forgotten_at.is_(None),
            User.banned.is_(False),
            ~voted,
            shown >= 2,
            Generation.id.not_in(list(skip)) if skip else true(),
        )
        .order_by(votes, Generation.finished_at.desc().nulls_last(), Generation.id.desc())
        .limit(1)
    )
    async with sessions() as session:
        return await session.scalar(query)
