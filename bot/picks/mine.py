"""What a member can read about themselves: their vote on a set, their sets and votes, and
everything of theirs for a copy of their data (read-only); and whether a stored image is
one members are shown.

Nothing here says which sets were mixed or control sets, or which version made which
image: a member's copy holds what they asked for, what they were shown and what they said.
An image the safety filter withheld is never shown: a member's copy says that it was
withheld, and nothing that finds its file (no storage key, no hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Choice, ChoiceEvent, Generation, GenerationStatus, Image, User, VoteKind
from bot.domain import UserRef, Vote

# The parameters a member chose or was given; the rest of ``params`` (which versions made a
# mixed set, a control set's answer) must not reach them.
MEMBER_PARAMS = ("steps", "guidance", "width", "height", "seeds")
LISTED = 500  # "My data" lists a member's latest sets and votes, this many of each


@dataclass(frozen=True)
class MySet:
    """A set the member asked for, and their own vote on it."""

    id: int
    prompt: str
    status: GenerationStatus
    requested_at: datetime
    vote: Vote | None


@dataclass(frozen=True)
class MyVote:
    """The member's current vote on another member's set."""

    generation_id: int
    vote: Vote
    chosen_at: datetime


@dataclass(frozen=True)
class MyImage:
    index: int
    storage_key: str | None  # None when withheld
    sha256: str | None  # None when withheld
    seed: int
    width: int
    height: int
    withheld: bool  # flagged by the safety filter: never shown, left out of a copy


@dataclass(frozen=True)
class MyPrompt:
    """One of the member's generations, as their copy of their data lists it."""

    id: int
    prompt: str
    negative_prompt: str
    n_images: int
    params: dict[str, Any]
    status: GenerationStatus
    error: str | None
    requested_at: datetime
    finished_at: datetime | None
    images: list[MyImage]


@dataclass(frozen=True)
class MyVoteEvent:
    """A vote or re-vote of the member, in order (their current votes are the last ones)."""

    generation_id: int
    vote: Vote
    chosen_at: datetime
    current: bool


@dataclass(frozen=True)
class MyData:
    member: UserRef
    prompts: list[MyPrompt]
    votes: list[MyVoteEvent]


def vote_from(kind: str, index: int | None) -> Vote:
    """A vote as a ``choices`` row stores it."""
    return Vote(VoteKind(kind), index)


def _member(user: UserRef) -> Any:
    return (
        select(User.id)
        .where(User.frontend == user.frontend, User.external_id == user.external_id)
        .scalar_subquery()
    )


async def vote_of(
    sessions: async_sessionmaker[AsyncSession], generation_id: int, user: UserRef
) -> Vote | None:
    """``user``'s current vote on a set, or None."""
    async with sessions() as session:
        row = (
            await session.execute(
                select(Choice.kind, Choice.image_index).where(
                    Choice.generation_id == generation_id, Choice.user_id == _member(user)
                )
            )
        ).first()
    return vote_from(row.kind, row.image_index) if row else None


async def image_shown(sessions: async_sessionmaker[AsyncSession], key: str) -> bool:
    """Whether the stored file ``key`` is an image members are shown: some image row has
    it and the safety filter did not withhold it (one query)."""
    async with sessions() as session:
        found = await session.scalar(
            select(Image.id).where(Image.storage_key == key, Image.nsfw.is_(False)).limit(1)
        )
    return found is not None


async def my_counts(sessions: async_sessionmaker[AsyncSession], user: UserRef) -> tuple[int, int]:
    """How many sets the member asked for, and how many current votes they have on other
    members' sets (what :func:`my_sets` and :func:`my_votes_on_others` list the latest of)."""
    me = _member(user)
    async with sessions() as session:
        row = (
            await session.execute(
                select(
                    select(func.count())
                    .select_from(Generation)
                    .where(Generation.requested_by == me)
                    .scalar_subquery(),
                    select(func.count())
                    .select_from(Choice)
                    .join(Generation, Generation.id == Choice.generation_id)
                    .where(Choice.user_id == me, Generation.requested_by.is_distinct_from(me))
                    .scalar_subquery(),
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def my_sets(
    sessions: async_sessionmaker[AsyncSession], user: UserRef, limit: int = LISTED
) -> list[MySet]:
    """The member's latest sets, newest first, with their own vote on each."""
    me = _member(user)
    async with sessions() as session:
        rows = await session.execute(
            select(
                Generation.id,
                Generation.prompt,
                Generation.status,
                Generation.requested_at,
                Choice.kind,
                Choice.image_index,
            )
            .outerjoin(Choice, (Choice.generation_id == Generation.id) & (Choice.user_id == me))
            .where(Generation.requested_by == me)
            .order_by(Generation.id.desc())
            .limit(limit)
        )
        return [
            MySet(r.id, r.prompt, r.status, r.requested_at, vote_from(r.kind, r.image_index))
            if r.kind
            else MySet(r.id, r.prompt, r.status, r.requested_at, None)
            for r in rows
        ]


async def my_votes_on_others(
    sessions: async_sessionmaker[AsyncSession], user: UserRef, limit: int = LISTED
) -> list[MyVote]:
    """The member's current votes on other members' sets, latest first."""
    me = _member(user)
    async with sessions() as session:
        rows = await session.execute(
            select(Choice.generation_id, Choice.kind, Choice.image_index, Choice.chosen_at)
            .join(Generation, Generation.id == Choice.generation_id)
            .where(Choice.user_id == me, Generation.requested_by.is_distinct_from(me))
            .order_by(Choice.chosen_at.desc(), Choice.id.desc())
            .limit(limit)
        )
        return [
            MyVote(r.generation_id, vote_from(r.kind, r.image_index), r.chosen_at) for r in rows
        ]


async def my_data(sessions: async_sessionmaker[AsyncSession], user: UserRef) -> MyData:
    """Everything of the member's: their prompts with their images, every vote they made
    (the history, each marked whether it is their current one). One snapshot."""
    me = _member(user)
    async with sessions() as session, session.begin():
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        generations = (
            await session.scalars(
                select(Generation).where(Generation.requested_by == me).order_by(Generation.id)
            )
        ).all()
        images = (
            await session.scalars(
                select(Image)
                .join(Generation, Generation.id == Image.generation_id)
                .where(Generation.requested_by == me)
                .order_by(Image.generation_id, Image.index)
            )
        ).all()
        current = {
            (r.generation_id, r.kind, r.image_index, r.chosen_at)
            for r in await session.execute(
                select(
                    Choice.generation_id, Choice.kind, Choice.image_index, Choice.chosen_at
                ).where(Choice.user_id == me)
            )
        }
        history = (
            await session.execute(
                select(
                    ChoiceEvent.generation_id,
                    ChoiceEvent.kind,
                    ChoiceEvent.image_index,
                    ChoiceEvent.chosen_at,
                )
                .where(ChoiceEvent.user_id == me)
                .order_by(ChoiceEvent.chosen_at, ChoiceEvent.id)
            )
        ).all()
    by_generation: dict[int, list[MyImage]] = {}
    for image in images:
        by_generation.setdefault(image.generation_id, []).append(
            MyImage(
                image.index,
                None if image.nsfw else image.storage_key,
                None if image.nsfw else image.sha256,
                image.seed,
                image.width,
                image.height,
                image.nsfw,
            )
        )
    prompts = [
        MyPrompt(
            id=g.id,
            prompt=g.prompt,
            negative_prompt=g.negative_prompt,
            n_images=g.n_images,
            params={k: g.params[k] for k in MEMBER_PARAMS if k in g.params},
            status=g.status,
            error=g.error,
            requested_at=g.requested_at,
            finished_at=g.finished_at,
            images=by_generation.get(g.id, []),
        )
        for g in generations
    ]
    votes = [
        MyVoteEvent(
            r.generation_id,
            vote_from(r.kind, r.image_index),
            r.chosen_at,
            (r.generation_id, r.kind, r.image_index, r.chosen_at) in current,
        )
        for r in history
    ]
    return MyData(user, prompts, votes)
