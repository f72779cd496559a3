"""How often the active HPS agrees with members' live picks: its top-1 on the latest picks.

The held-out top-1 of a refit HPS is measured once, on data it was chosen for; the live
figure follows the picks as they come. A pick counts when the active HPS scored every
image its set showed (the worker writes ``hps_scores`` at generation time): the HPS
agrees when the picked image has the highest score, and ties share the credit as in
training/hps/evaluate.py (two images tied at the top: half a hit). Only picks count
("No favourite" and "None are good" name no image for a top-1 to agree with), and
control sets (bot/controls) do not: one of their images was made worse on purpose.

The retrain loop's ``agreement`` trigger (bot/retrain/tasks.py) asks for a retrain when
the figure over a full window falls below ``retrain.agreement_below``, once per HPS
version: the run records which HPS it was for (:func:`already_triggered`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import RetrainRun
from bot.registry import active_versions
from training.hps.evaluate import credits

TRIGGER = "agreement"  # the retrain_runs.trigger of the runs it asks for
BLOCKS = 4


@dataclass(frozen=True)
class Block:
    """The agreement over consecutive picks (part of the window)."""

    picks: int
    agreement: float
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class Agreement:
    hps_version_id: int
    window: int
    picks: int  # scored picks in the window (at most ``window``)
    agreement: float | None  # top-1 over them; None without any
    trend: list[Block]  # the same figure over consecutive blocks, oldest first

    @property
    def full(self) -> bool:
        return self.picks >= self.window

    def describe(self) -> str:
        if self.agreement is None:
            return (
                f"HPS #{self.hps_version_id} has scored no picked set yet "
                f"(window {self.window} picks)"
            )
        trend = " → ".join(f"{b.agreement:.0%}" for b in self.trend)
        full = "" if self.full else f" (window not full: {self.window})"
        return (
            f"HPS #{self.hps_version_id} agrees with {self.agreement:.1%} of the last "
            f"{self.picks} picks{full}; trend, oldest first: {trend}"
        )


_SCORED_PICKS = text(
    """
    SELECT c.id, c.chosen_at, c.image_index,
           array_agg(i.index ORDER BY i.index), array_agg(s.score ORDER BY i.index)
      FROM choices c
      JOIN users u ON u.id = c.user_id
      JOIN generations g ON g.id = c.generation_id
      JOIN images i ON i.generation_id = c.generation_id AND NOT i.nsfw
      LEFT JOIN hps_scores s ON s.image_id = i.id AND s.hps_version_id = :hps
     WHERE c.kind = 'pick' AND NOT u.banned AND u.forgotten_at IS NULL AND g.control_kind IS NULL
     GROUP BY c.id, c.chosen_at, c.image_index
    HAVING count(s.score) = count(*) AND count(*) >= 2 AND bool_or(i.index = c.image_index)
     ORDER BY c.chosen_at DESC, c.id DESC
     LIMIT :window
    """
)


async def live_agreement(
    session: AsyncSession, hps_version_id: int, window: int, blocks: int = BLOCKS
) -> Agreement:
    """Top-1 agreement of ``hps_version_id`` with the last ``window`` scored picks."""
    rows = list(await session.execute(_SCORED_PICKS, {"hps": hps_version_id, "window": window}))
    rows.reverse()  # oldest first
    hits: list[tuple[datetime, float]] = []
    for _, chosen_at, picked, indices, scores in rows:
        top1, _ = credits([float(s) for s in scores], list(indices).index(picked))
        hits.append((chosen_at, top1))
    overall = sum(h for _, h in hits) / len(hits) if hits else None
    return Agreement(hps_version_id, window, len(hits), overall, _trend(hits, blocks))


async def active_agreement(
    sessions: async_sessionmaker[AsyncSession], window: int, blocks: int = BLOCKS
) -> Agreement | None:
    """:func:`live_agreement` of the active HPS; None when no HPS is active."""
    async with sessions() as session:
        active = {v.kind: v for v in await active_versions(session)}
        hps = active.get("hps")
        if hps is None:
            return None
        return await live_agreement(session, hps.id, window, blocks)


def requested_by(hps_version_id: int) -> str:
    """What an agreement-triggered run records as its requester: the HPS it was for."""
    return f"hps:{hps_version_id}"


async def already_triggered(
    sessions: async_sessionmaker[AsyncSession], hps_version_id: int
) -> bool:
    """Has low agreement already asked for a run for this HPS version (any outcome)?"""
    async with sessions() as session:
        found = await session.scalar(
            select(RetrainRun.id)
            .where(
                RetrainRun.trigger == TRIGGER,
                RetrainRun.requested_by == requested_by(hps_version_id),
            )
            .limit(1)
        )
    return found is not None


def _trend(hits: list[tuple[datetime, float]], blocks: int) -> list[Block]:
    if not hits:
        return []
    blocks = max(1, min(blocks, len(hits)))
    trend = []
    for k in range(blocks):
        part = hits[k * len(hits) // blocks : (k + 1) * len(hits) // blocks]
        trend.append(Block(len(part), sum(h for _, h in part) / len(part), part[0][0], part[-1][0]))
    return trend
