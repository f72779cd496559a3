"""Admins' control sets: mark a finished set with a known worse and/or best image, unmark
it, list every control set with how its votes scored.

A mark is retroactive: scoring is a query (:mod:`bot.controls.scoring`), so the votes cast
on a set before it was marked are scored from then on, and an unmark unscores them.
Image numbers here are 0-based indexes; front ends show and take 1-based numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.controls.scoring import CONTROL_VOTES_SQL
from bot.db.models import ControlKind, Generation, GenerationStatus, Image
from bot.domain import Refusal
from bot.picks.record import gone


@dataclass(frozen=True)
class ControlSet:
    """A control set, and how the votes on it scored so far."""

    generation_id: int
    kind: str  # a corruption (made by the worker) or "marked" (by an admin)
    worse: int | None  # 0-based index of the known worse image
    best: int | None  # 0-based index of the known best image (marks only)
    by: str | None  # the admin of a mark
    n_images: int
    status: str
    prompt: str
    requested_at: datetime
    votes: int  # current votes on the set
    scored: int  # of those, scored
    correct: int  # of those, right

    def describe(self, quote: Callable[[str], str] = str) -> str:
        """One line for an admin (image numbers 1-based); ``quote`` makes the prompt safe
        to show (Discord's markdown escape)."""
        known = []
        if self.worse is not None:
            known.append(f"image {self.worse + 1} worse")
        if self.best is not None:
            known.append(f"image {self.best + 1} best")
        made = f"marked by {self.by}" if self.kind == ControlKind.marked else self.kind
        prompt = self.prompt if len(self.prompt) <= 40 else self.prompt[:39] + "…"
        return (
            f"#{self.generation_id} ({made}; {', '.join(known)}; {self.status}): "
            f"{self.votes} votes, {self.scored} scored, {self.correct} right — {quote(prompt)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "requested_at": self.requested_at.isoformat()}


async def mark(
    sessions: async_sessionmaker[AsyncSession],
    generation_id: int,
    *,
    worse: int | None = None,
    best: int | None = None,
    actor: str,
) -> ControlSet:
    """Mark a finished set: image ``worse`` known worse and/or ``best`` known best.

    A mark replaces an earlier mark of the set. Refused: neither image given, the same
    image as both, a missing or unfinished generation, a mixed set (the arena's), a set
    the worker corrupted (its answer is known already), an image out of range or withheld.
    """
    if worse is None and best is None:
        raise Refusal("Give the known worse image, the known best one, or both.", code="no_mark")
    if worse is not None and worse == best:
        raise Refusal(
            f"Image {worse + 1} cannot be both the worse and the best image.", code="bad_mark"
        )
    async with sessions.begin() as session:
        row = (
            await session.execute(
                select(
                    Generation.status,
                    Generation.n_images,
                    Generation.comparison_id,
                    Generation.control_kind,
                )
                .where(Generation.id == generation_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise gone(generation_id)
        _check_markable(generation_id, row.status, row.comparison_id, row.control_kind)
        withheld = set(
            await session.scalars(
                select(Image.index).where(Image.generation_id == generation_id, Image.nsfw)
            )
        )
        for index in (worse, best):
            if index is None:
                continue
            if not 0 <= index < row.n_images:
                raise Refusal(
                    f"Generation #{generation_id} has images 1 to {row.n_images}; "
                    f"there is no image {index + 1}.",
                    code="bad_index",
                )
            if index in withheld:
                raise Refusal(
                    f"Image {index + 1} of generation #{generation_id} was withheld by the "
                    "safety filter; nobody saw it.",
                    code="withheld",
                )
        await session.execute(
            update(Generation)
            .where(Generation.id == generation_id)
            .values(
                control_kind=ControlKind.marked.value,
                control_worse=worse,
                control_best=best,
                control_by=actor,
            )
        )
    found = await control_sets(sessions, generation_id)
    return found[0]


def _check_markable(
    generation_id: int, status: str, comparison_id: int | None, control_kind: str | None
) -> None:
    if comparison_id is not None:
        raise Refusal(
            f"Generation #{generation_id} is a mixed set of the arena (comparison "
            f"{comparison_id}); a mixed set cannot be a control set.",
            code="mixed",
        )
    if control_kind is not None and control_kind != ControlKind.marked:
        raise Refusal(
            f"Generation #{generation_id} is already a control set ({control_kind}, made by "
            "the worker); its answer is known and cannot be marked.",
            code="corrupted",
        )
    if status != GenerationStatus.done:
        raise Refusal(
            f"Generation #{generation_id} is {status}; only a finished set can be marked.",
            code="unfinished",
        )


async def unmark(sessions: async_sessionmaker[AsyncSession], generation_id: int) -> ControlSet:
    """Remove an admin's mark; the set's votes are no longer scored. Returns the mark as
    it was. Refused for a missing generation, an unmarked set, and a corrupted one."""
    async with sessions.begin() as session:
        kind = (
            await session.execute(
                select(Generation.control_kind)
                .where(Generation.id == generation_id)
                .with_for_update()
            )
        ).first()
        if kind is None:
            raise gone(generation_id)
        if kind[0] is None:
            raise Refusal(f"Generation #{generation_id} is not marked.", code="not_marked")
        if kind[0] != ControlKind.marked:
            raise Refusal(
                f"Generation #{generation_id} is a control set made by the worker "
                f"({kind[0]}); only an admin's mark can be removed.",
                code="corrupted",
            )
        (before,) = await _sets(session, generation_id)
        await session.execute(
            update(Generation)
            .where(Generation.id == generation_id)
            .values(control_kind=None, control_worse=None, control_best=None, control_by=None)
        )
    return before


_CONTROL_SETS = f"""
SELECT g.id, g.control_kind, g.control_worse, g.control_best, g.control_by, g.n_images,
       g.status, g.prompt, g.requested_at,
       count(v.user_id) AS votes, count(v.correct) AS scored,
       count(*) FILTER (WHERE v.correct) AS correct
  FROM generations g
  LEFT JOIN ({CONTROL_VOTES_SQL}) v ON v.generation_id = g.id
 WHERE g.control_kind IS NOT NULL
   AND (CAST(:generation AS bigint) IS NULL OR g.id = :generation)
 GROUP BY g.id
 ORDER BY g.id DESC
 LIMIT :limit
"""


async def control_sets(
    sessions: async_sessionmaker[AsyncSession], generation_id: int | None = None, limit: int = 1000
) -> list[ControlSet]:
    """The control sets, newest first (at most ``limit``), or the one of ``generation_id``."""
    async with sessions() as session:
        return await _sets(session, generation_id, limit)


async def _sets(
    session: AsyncSession, generation_id: int | None = None, limit: int = 1000
) -> list[ControlSet]:
    rows = await session.execute(text(_CONTROL_SETS), {"generation": generation_id, "limit": limit})
    return [
        ControlSet(
            r.id,
            r.control_kind,
            r.control_worse,
            r.control_best,
            r.control_by,
            r.n_images,
            str(r.status),
            r.prompt,
            r.requested_at,
            int(r.votes),
            int(r.scored),
            int(r.correct),
        )
        for r in rows
    ]
