"""A population of raters built directly: careful members and a random clicker.

Careful raters pick the same image on ordinary sets and never the known-worse one on
control sets; the clicker picks the worse image of every control set and disagrees with
the others everywhere. Votes go in as rows (the arena's helpers), control sets are marked
by SQL, as the control-set mixer and /admin control would mark them.
"""

from __future__ import annotations

from typing import Any

from bot.arena.versions import Version
from bot.db.models import User
from bot.domain import UserRef
from tests.support.arena_rows import add_set
from tests.support.database import sql

FOUR: list[Version] = [None] * 4
WORSE = 3  # the corrupted image of every control set here


async def add_member(platform: Any, member: str) -> int:
    """A member row for ``frontend:id``; its database id."""
    ref = UserRef.parse(member)
    async with platform.sessions.begin() as session:
        row = User(frontend=ref.frontend, external_id=ref.external_id)
        session.add(row)
        await session.flush()
        return row.id


async def add_vote(platform: Any, generation: int, user: int, kind: str) -> None:
    """A "tie" or "none" vote of ``user`` (a users.id) on a set, as a row."""
    await sql(
        platform,
        "INSERT INTO choices (generation_id, user_id, kind) VALUES (:g, :u, :k)",
        g=generation,
        u=user,
        k=kind,
    )


async def mark_control(platform: Any, generation: int, worse: int = WORSE) -> None:
    await sql(
        platform,
        "UPDATE generations SET control_kind = 'blur', control_worse = :worse WHERE id = :g",
        g=generation,
        worse=worse,
    )


async def careful_and_clicker(
    platform: Any, careful: list[int], clicker: int, *, controls: int = 6, shared: int = 6
) -> None:
    """``controls`` control sets and ``shared`` ordinary sets voted on by everyone."""
    for k in range(controls):
        picks: dict[int, int | str] = {**{member: k % WORSE for member in careful}, clicker: WORSE}
        await mark_control(platform, await add_set(platform, careful[0], FOUR, picks))
    for k in range(shared):
        picks = {**{member: k % 4 for member in careful}, clicker: (k + 1) % 4}
        await add_set(platform, careful[0], FOUR, picks)
