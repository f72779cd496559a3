"""Recording a pick: one statement checks and writes it, a refusal says what stood in the way.

A pick is the hot path of every button click, so the checks (the generation is done,
the image exists and is not withheld, the member is not banned) and the write (the
member's row on a first click, the current pick, the history) are one SQL statement;
:func:`check_pick` turns what it found into the member's refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import queries
from bot.db.models import Frontend, GenerationStatus
from bot.domain import PickResult, Refusal, UserRef


async def record_choice(
    sessions: async_sessionmaker[AsyncSession], generation_id: int, user: UserRef, index: int
) -> PickResult:
    """Record that ``user`` prefers image ``index`` (0-based) of a generation.

    Idempotent: the same pick again changes nothing; another image replaces the pick
    and the history keeps both. One statement, a member's first click included.
    """
    if not 0 <= index < 4:
        raise Refusal(
            f"There is no image {index + 1}; images are numbered 1 to 4.", code="bad_index"
        )
    async with sessions.begin() as session:
        row = await record_pick(session, generation_id, user.frontend, user.external_id, index)
        check_pick(generation_id, index, row)
        if row.user_id is None:  # a concurrent first click created them meanwhile
            await queries.ensure_user(session, user.frontend, user.external_id)
            row = await record_pick(session, generation_id, user.frontend, user.external_id, index)
            check_pick(generation_id, index, row)
    new_picker = row.changed and row.previous is None
    return PickResult(
        generation_id,
        index,
        row.previous,
        row.changed,
        row.requested_by == row.user_id,
        row.pickers_before + new_picker,
    )


def check_pick(generation_id: int, index: int, row: PickRow) -> None:
    """Refuse a pick of a missing, unfinished or failed generation, a missing or withheld
    image, or by a banned member (``row`` is what the pick statement found)."""
    if row.status is None:
        raise gone(generation_id)
    if row.status == GenerationStatus.failed:
        raise Refusal("This generation failed, so there is nothing to pick.", code="failed")
    if row.status != GenerationStatus.done:
        raise Refusal("These images are not ready yet.", code="not_ready")
    if not 0 <= index < (row.n_images or 0):
        raise Refusal(
            f"There is no image {index + 1} here; pick 1 to {row.n_images}.", code="bad_index"
        )
    if row.nsfw:
        raise Refusal("That image was withheld by the safety filter.", code="withheld")
    if row.banned:
        raise Refusal("You are banned from prefloop; your picks are not recorded.", code="banned")


def gone(generation_id: int) -> Refusal:
    """The refusal for a generation that was deleted (or never existed)."""
    return Refusal(
        f"Generation #{generation_id} no longer exists (it may have been deleted).", code="gone"
    )


_RECORD_PICK = text(
    """
    WITH target AS (
        SELECT g.status, g.n_images, g.requested_by, i.nsfw
        FROM generations g
        LEFT JOIN images i ON i.generation_id = g.id AND i.index = :index
        WHERE g.id = :generation
    ), found AS (
        SELECT id, banned FROM users WHERE frontend = :frontend AND external_id = :external_id
    ), created AS (
        INSERT INTO users (frontend, external_id)
        SELECT CAST(:frontend AS frontend), :external_id WHERE NOT EXISTS (SELECT 1 FROM found)
        ON CONFLICT ON CONSTRAINT uq_users_frontend_id DO NOTHING
        RETURNING id, banned
    ), member AS (
        SELECT id, banned FROM found UNION ALL SELECT id, banned FROM created
    ), previous AS (
        SELECT c.image_index FROM choices c JOIN member m ON c.user_id = m.id
        WHERE c.generation_id = :generation
    ), changed AS (
        INSERT INTO choices (generation_id, user_id, image_index)
        SELECT :generation, m.id, :index FROM target t, member m
        WHERE t.status = 'done' AND t.nsfw IS FALSE AND NOT m.banned
        ON CONFLICT ON CONSTRAINT uq_choices_generation_user DO UPDATE
            SET image_index = EXCLUDED.image_index, chosen_at = now()
            WHERE choices.image_index <> EXCLUDED.image_index
        RETURNING generation_id, user_id, image_index, chosen_at
    ), logged AS (
        INSERT INTO choice_history (generation_id, user_id, image_index, chosen_at)
        SELECT generation_id, user_id, image_index, chosen_at FROM changed
    )
    SELECT t.status, t.n_images, t.requested_by, t.nsfw, m.id AS user_id, m.banned,
           EXISTS (SELECT 1 FROM changed) AS changed,
           (SELECT image_index FROM previous) AS previous,
           (SELECT count(*) FROM choices WHERE generation_id = :generation) AS pickers_before
    FROM (SELECT 1) AS one
    LEFT JOIN target t ON true
    LEFT JOIN member m ON true
    """
)


@dataclass(frozen=True)
class PickRow:
    """What one pick statement found and did; ``status`` None = no such generation."""

    status: str | None
    n_images: int | None
    requested_by: int | None
    nsfw: bool | None
    user_id: int | None
    banned: bool | None
    changed: bool
    previous: int | None
    pickers_before: int


async def record_pick(
    session: AsyncSession, generation_id: int, frontend: Frontend, external_id: str, index: int
) -> PickRow:
    """Check and record a pick in ONE statement (the hot path of every button click).

    A member seen for the first time gets their row in the same statement (the insert
    runs only when no row was found, so a known member's click burns no id). The pick
    is written only when the generation is done, the image exists and is not withheld,
    and the member is not banned; the returned row says which check failed (a refusal
    rolls the new member back with it). The upsert changes the row only when the index
    differs (re-checked under the row lock, so concurrent double clicks agree), and only
    a change is appended to the history. ``user_id`` is None only when another first
    click of the same member created the row after this statement's snapshot: call again.
    """
    row = await session.execute(
        _RECORD_PICK,
        {
            "generation": generation_id,
            "index": index,
            "frontend": frontend.value,
            "external_id": external_id,
        },
    )
    return PickRow(*row.one())
