"""Recording a vote: one statement checks and writes it, a refusal says what stood in the way.

A member's current vote on a set is one of: a pick of image k, "No favourite" (a tie)
or "None are good". A vote is the hot path of every button click, so the checks (the
generation is done, a picked image exists and is not withheld, the member is not
banned) and the write (the member's row on a first click, the current vote, the
history) are one SQL statement; :func:`check_vote` turns what it found into the
member's refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import queries
from bot.db.models import Frontend, GenerationStatus, VoteKind
from bot.domain import Refusal, UserRef, Vote, VoteResult


async def record_choice(
    sessions: async_sessionmaker[AsyncSession],
    generation_id: int,
    user: UserRef,
    vote: int | VoteKind | Vote,
) -> VoteResult:
    """Record ``user``'s vote on a generation: an int picks that image (0-based),
    ``VoteKind.tie`` says "No favourite", ``VoteKind.none`` "None are good".

    Idempotent: the same vote again changes nothing; another vote replaces it and the
    history keeps both. One statement, a member's first click included.
    """
    vote = Vote.of(vote)
    if vote.index is not None and not 0 <= vote.index < 4:
        raise Refusal(
            f"There is no image {vote.index + 1}; images are numbered 1 to 4.", code="bad_index"
        )
    async with sessions.begin() as session:
        row = await record_vote(session, generation_id, user.frontend, user.external_id, vote)
        check_vote(generation_id, vote, row)
        if row.user_id is None:  # a concurrent first click created them meanwhile
            await queries.ensure_user(session, user.frontend, user.external_id)
            row = await record_vote(session, generation_id, user.frontend, user.external_id, vote)
            check_vote(generation_id, vote, row)
    previous = Vote(VoteKind(row.previous_kind), row.previous_index) if row.previous_kind else None
    new_voter = row.changed and previous is None
    return VoteResult(
        generation_id,
        vote,
        previous,
        row.changed,
        row.requested_by == row.user_id,
        row.voters_before + new_voter,
    )


def check_vote(generation_id: int, vote: Vote, row: VoteRow) -> None:
    """Refuse a vote on a missing, unfinished or failed generation, a pick of a missing or
    withheld image, or a vote by a banned member (``row``: what the statement found)."""
    if row.status is None:
        raise gone(generation_id)
    if row.status == GenerationStatus.failed:
        raise Refusal("This generation failed, so there is nothing to vote on.", code="failed")
    if row.status != GenerationStatus.done:
        raise Refusal("These images are not ready yet.", code="not_ready")
    if vote.index is not None:
        if not 0 <= vote.index < (row.n_images or 0):
            raise Refusal(
                f"There is no image {vote.index + 1} here; pick 1 to {row.n_images}.",
                code="bad_index",
            )
        if row.nsfw:
            raise Refusal("That image was withheld by the safety filter.", code="withheld")
    if row.banned:
        raise banned_voter()


def banned_voter() -> Refusal:
    """The answer to a banned member's vote (or their asking for a set to vote on)."""
    return Refusal("You are banned from prefloop; your votes are not recorded.", code="banned")


def gone(generation_id: int) -> Refusal:
    """The refusal for a generation that was deleted (or never existed)."""
    return Refusal(
        f"Generation #{generation_id} no longer exists (it may have been deleted).", code="gone"
    )


# :index is NULL for a tie or "none" (no image: the images join finds nothing). The upsert
# compares (kind, image_index) as a pair, so a pick of image 2 and a tie differ.
_RECORD_VOTE = text(
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
        SELECT c.kind, c.image_index FROM choices c JOIN member m ON c.user_id = m.id
        WHERE c.generation_id = :generation
    ), changed AS (
        INSERT INTO choices (generation_id, user_id, kind, image_index)
        SELECT :generation, m.id, CAST(:kind AS varchar), :index FROM target t, member m
        WHERE t.status = 'done' AND NOT m.banned
          AND (CAST(:kind AS varchar) <> 'pick' OR t.nsfw IS FALSE)
        ON CONFLICT ON CONSTRAINT uq_choices_generation_user DO UPDATE
            SET kind = EXCLUDED.kind, image_index = EXCLUDED.image_index, chosen_at = now()
            WHERE (choices.kind, choices.image_index)
                  IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.image_index)
        RETURNING generation_id, user_id, kind, image_index, chosen_at
    ), logged AS (
        INSERT INTO choice_history (generation_id, user_id, kind, image_index, chosen_at)
        SELECT generation_id, user_id, kind, image_index, chosen_at FROM changed
    )
    SELECT t.status, t.n_images, t.requested_by, t.nsfw, m.id AS user_id, m.banned,
           EXISTS (SELECT 1 FROM changed) AS changed,
           (SELECT kind FROM previous) AS previous_kind,
           (SELECT image_index FROM previous) AS previous_index,
           (SELECT count(*) FROM choices WHERE generation_id = :generation) AS voters_before
    FROM (SELECT 1) AS one
    LEFT JOIN target t ON true
    LEFT JOIN member m ON true
    """
)


@dataclass(frozen=True)
class VoteRow:
    """What one vote statement found and did; ``status`` None = no such generation."""

    status: str | None
    n_images: int | None
    requested_by: int | None
    nsfw: bool | None
    user_id: int | None
    banned: bool | None
    changed: bool
    previous_kind: str | None
    previous_index: int | None
    voters_before: int


async def record_vote(
    session: AsyncSession, generation_id: int, frontend: Frontend, external_id: str, vote: Vote
) -> VoteRow:
    """Check and record a vote in ONE statement (the hot path of every button click).

    A member seen for the first time gets their row in the same statement (the insert
    runs only when no row was found, so a known member's click burns no id). The vote
    is written only when the generation is done, a picked image exists and is not
    withheld, and the member is not banned; the returned row says which check failed (a
    refusal rolls the new member back with it). The upsert changes the row only when
    (kind, image) differs (re-checked under the row lock, so concurrent double clicks
    agree), and only a change is appended to the history. ``user_id`` is None only when
    another first click of the same member created the row after this statement's
    snapshot: call again.
    """
    row = await session.execute(
        _RECORD_VOTE,
        {
            "generation": generation_id,
            "kind": vote.kind.value,
            "index": vote.index,
            "frontend": frontend.value,
            "external_id": external_id,
        },
    )
    return VoteRow(*row.one())
