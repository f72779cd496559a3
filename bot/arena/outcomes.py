"""What members' votes on mixed sets say: one outcome per vote, a comparison of two versions.

A mixed set shows images of two versions; a member's pick of an image of version W is a
win of W over the set's other version L (a score of 1 for W). Images of the picked
version are equal in this reading: the pick compares versions, not images. "No
favourite" (a tie) and "None are good" say neither version is better: a draw, a score
of 0.5 (the winner and loser of a draw are just the set's two versions). Flagged images
are shown to no one and a pick cannot point at one; a set whose remaining images all
come from one version compares nothing and gives no outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.arena.versions import Version


@dataclass(frozen=True)
class Outcome:
    """One member's vote on a mixed set, read as a comparison of two versions."""

    comparison_id: int
    generation_id: int
    prompt: str
    rater: int  # users.id of the member who voted
    by_requester: bool  # the member who asked for the set voted
    winner: Version
    loser: Version
    score: float  # the winner's: 1 for a pick, 0.5 for a tie or "none" (a draw)
    chosen_at: datetime


# A pick's "picked" image is the one it names; a tie's or a "none" vote's is the set's
# first shown image, so that "other" is the set's other version and the draw is between
# the two.
_OUTCOMES = text(
    """
    SELECT g.comparison_id, g.id, g.prompt, c.user_id, c.user_id = g.requested_by,
           picked.adapter_version_id, other.adapter_version_id, c.chosen_at,
           CASE WHEN c.kind = 'pick' THEN 1.0 ELSE 0.5 END
      FROM choices c
      JOIN generations g ON g.id = c.generation_id
      JOIN users u ON u.id = c.user_id
      JOIN LATERAL (
           SELECT i.adapter_version_id FROM images i
            WHERE i.generation_id = g.id
              AND CASE WHEN c.kind = 'pick' THEN i.index = c.image_index ELSE NOT i.nsfw END
            ORDER BY i.index
            LIMIT 1) picked ON true
      JOIN LATERAL (
           SELECT i.adapter_version_id FROM images i
            WHERE i.generation_id = g.id AND NOT i.nsfw
              AND i.adapter_version_id IS DISTINCT FROM picked.adapter_version_id
            LIMIT 1) other ON true
     WHERE g.comparison_id IS NOT NULL
       AND (CAST(:comparison AS bigint) IS NULL OR g.comparison_id = :comparison)
       AND NOT u.banned AND u.forgotten_at IS NULL
     ORDER BY c.chosen_at, c.id
    """
)


async def outcomes(session: AsyncSession, comparison_id: int | None = None) -> list[Outcome]:
    """Every current vote on a mixed set (of one comparison, or of all), oldest first.

    Banned and forgotten members' votes do not count.
    """
    rows = await session.execute(_OUTCOMES, {"comparison": comparison_id})
    return [
        Outcome(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], float(row[8]), row[7])
        for row in rows
    ]


def one_per_set(found: list[Outcome]) -> list[Outcome]:
    """One outcome per mixed set, in the order sets were first judged: the requester's
    vote when they made one, else the earliest other vote.

    Several members may vote on one set and their votes are not independent; a
    sequential test counts each set once (see bot/arena/sequential.py).
    """
    chosen: dict[int, Outcome] = {}
    for outcome in found:  # oldest first
        held = chosen.get(outcome.generation_id)
        if held is None or (outcome.by_requester and not held.by_requester):
            chosen[outcome.generation_id] = outcome
    first_seen: dict[int, datetime] = {}
    for outcome in found:
        first_seen.setdefault(outcome.generation_id, outcome.chosen_at)
    return sorted(chosen.values(), key=lambda o: (first_seen[o.generation_id], o.generation_id))
