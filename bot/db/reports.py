"""Read-only reports for members and admins: dataset size and queue state (session first)."""

from __future__ import annotations

from sqlalchemy import ScalarSelect, SQLColumnExpression, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import queries
from bot.db.models import (
    Base,
    Choice,
    ChoiceEvent,
    DatasetExport,
    Generation,
    GenerationStatus,
    Image,
    User,
    VoteKind,
)
from bot.domain import QueueStatus, Stats, UserRef
from bot.registry import active_versions


def _count(model: type[Base], *where: SQLColumnExpression[bool]) -> ScalarSelect[int]:
    return select(func.count()).select_from(model).where(*where).scalar_subquery()


def _votes(kind: VoteKind, *where: SQLColumnExpression[bool]) -> ScalarSelect[int]:
    return _count(Choice, Choice.kind == kind.value, *where)


async def dataset_stats(session: AsyncSession, user: UserRef | None = None) -> Stats:
    """Members, generations by status, images, votes of each kind, active models;
    ``user``'s own too."""
    by_status = dict(
        (
            await session.execute(
                select(Generation.status, func.count()).group_by(Generation.status)
            )
        ).all()
    )
    requester_picks = (
        select(func.count())
        .select_from(Choice)
        .join(Generation, Generation.id == Choice.generation_id)
        .where(Generation.requested_by == Choice.user_id, Choice.kind == VoteKind.pick.value)
        .scalar_subquery()
    )
    members, banned, images, flagged, picks, ties, nones, votes, events, requester = (
        await session.execute(
            select(
                _count(User),
                _count(User, User.banned),
                _count(Image),
                _count(Image, Image.nsfw),
                _votes(VoteKind.pick),
                _votes(VoteKind.tie),
                _votes(VoteKind.none),
                _count(Choice),
                _count(ChoiceEvent),
                requester_picks,
            )
        )
    ).one()
    active = await active_versions(session)
    mine: tuple[int | None, ...] = (None,) * 4
    if user:
        mine = await _member_numbers(session, user)
    return Stats(
        members=members,
        banned=banned,
        generations={s.value: int(by_status.get(s, 0)) for s in GenerationStatus},
        images=images,
        flagged_images=flagged,
        picks=picks,
        ties=ties,
        nones=nones,
        requester_picks=requester,
        repicks=events - votes,
        active_models={version.kind: version.uri for version in active},
        member_generations=mine[0],
        member_picks=mine[1],
        member_ties=mine[2],
        member_nones=mine[3],
        active_versions={version.kind: version.id for version in active},
    )


async def _member_numbers(session: AsyncSession, user: UserRef) -> tuple[int, int, int, int]:
    """The member's prompts, picks, ties and "none" votes (zeros for a stranger)."""
    member = await queries.find_user(session, user.frontend, user.external_id)
    if member is None:
        return 0, 0, 0, 0
    mine = Choice.user_id == member.id
    generations, picks, ties, nones = (
        await session.execute(
            select(
                _count(Generation, Generation.requested_by == member.id),
                _votes(VoteKind.pick, mine),
                _votes(VoteKind.tie, mine),
                _votes(VoteKind.none, mine),
            )
        )
    ).one()
    return int(generations), int(picks), int(ties), int(nones)


async def queue_status(session: AsyncSession, stalled_after: float) -> QueueStatus:
    """Queued and running generations, live workers, the latest outcomes."""
    counts = dict(
        (
            await session.execute(
                select(Generation.status, func.count())
                .where(Generation.status.in_(queries.UNFINISHED))
                .group_by(Generation.status)
            )
        ).all()
    )
    oldest, last_done = (
        await session.execute(
            select(
                select(func.min(Generation.requested_at))
                .where(Generation.status == GenerationStatus.queued)
                .scalar_subquery(),
                select(func.max(Generation.finished_at))
                .where(Generation.status == GenerationStatus.done)
                .scalar_subquery(),
            )
        )
    ).one()
    failure = (
        await session.execute(
            select(Generation.id, Generation.error)
            .where(Generation.status == GenerationStatus.failed)
            .order_by(Generation.finished_at.desc())
            .limit(1)
        )
    ).first()
    export = (
        await session.execute(
            select(DatasetExport.created_at, DatasetExport.counts, DatasetExport.out_path)
            .order_by(DatasetExport.id.desc())
            .limit(1)
        )
    ).first()
    return QueueStatus(
        queued=int(counts.get(GenerationStatus.queued, 0)),
        running=int(counts.get(GenerationStatus.running, 0)),
        workers=await queries.live_workers(session, stalled_after),
        oldest_queued_at=oldest,
        last_done_at=last_done,
        last_failure=(failure[0], failure[1] or "") if failure else None,
        last_export=(
            (export[0], sum(export[1].get("instances", {}).values()), export[2]) if export else None
        ),
    )
