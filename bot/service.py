"""The use cases every front end calls: Discord, the CLI and the web.

Each use case is one transaction. A refusal raises :class:`Refusal` with a message meant
for the member, and writes nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection
from typing import Any

from sqlalchemy import delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.arena.mixing import draw
from bot.arena.store import ArenaService
from bot.config import Settings
from bot.controls.draw import draw as draw_control
from bot.db import queries, reports
from bot.db.models import (
    AdminAction,
    Choice,
    ChoiceEvent,
    Frontend,
    Generation,
    GenerationStatus,
    Image,
    User,
    VoteKind,
)
from bot.domain import (
    Forgotten,
    GenerationOptions,
    GenerationView,
    ImageView,
    QueueStatus,
    Refusal,
    RetrainRunView,
    Stats,
    Submitted,
    UserRef,
    Vote,
    VoteResult,
)
from bot.export.tasks import QueuedExport, request_export
from bot.names import GENERATE_QUEUE, GENERATE_TASK
from bot.picks import mine
from bot.picks.queue import next_to_rate
from bot.picks.record import banned_voter, gone, record_choice
from bot.picks.rules import PromptRules
from bot.raters.store import RaterService
from bot.registry import ModelRegistry
from bot.retrain.triggers import RetrainRequest, request_retrain, runs
from bot.storage import Storage
from bot.sweep import Swept, sweep_store

log = logging.getLogger(__name__)


class CollectionService:
    """prompt -> images -> pick, and the data requests around it."""

    # Draw which requests become mixed sets and control sets; tests give an instance seeded ones.
    mixing_rng: random.Random = random.SystemRandom()
    control_rng: random.Random = random.SystemRandom()

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        storage: Storage,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.storage = storage
        self.rules = PromptRules(settings)
        self.registry = registry or ModelRegistry(sessions)  # trained models and which serve
        self.arena = ArenaService(sessions, settings, self.registry)  # comparisons of versions
        self.raters = RaterService(sessions, settings)  # reliability and agreement, for admins

    # ----- submit -------------------------------------------------------------------

    async def submit_prompt(
        self,
        user: UserRef,
        prompt: str,
        n: int | None = None,
        options: GenerationOptions | None = None,
        *,
        delivery: dict[str, Any] | None = None,
    ) -> Submitted:
        """Validate and queue one generation of ``n`` images (default from the settings).

        ``delivery`` is the front end's own note of where to answer (kept with the row).
        """
        options = options or GenerationOptions()
        n = self.settings.generator.images_per_prompt if n is None else n
        prompt = self.rules.text(prompt)
        negative = self.rules.text(options.negative_prompt, "negative prompt", optional=True)
        seeds = self.rules.seeds(n, options.seed)
        negative = _join(self.settings.generator.negative_prompt, negative)
        return await self._enqueue(user, prompt, negative, seeds, delivery)

    async def reroll(
        self, generation_id: int, user: UserRef, *, delivery: dict[str, Any] | None = None
    ) -> Submitted:
        """The same prompt again with new seeds: a new generation, requested by ``user``.

        The prompt is checked against today's rules (a word blocked since it was first
        submitted is refused), and ``user`` as any submitter is (banned, queue full).
        """
        async with self.sessions() as session:
            old = (
                await session.execute(
                    select(
                        Generation.prompt, Generation.negative_prompt, Generation.n_images
                    ).where(Generation.id == generation_id)
                )
            ).first()
        if old is None:
            raise gone(generation_id)
        prompt = self.rules.text(old.prompt)
        self.rules.refuse_blocked(old.negative_prompt, "negative prompt")
        seeds = self.rules.seeds(old.n_images, None)
        return await self._enqueue(user, prompt, old.negative_prompt, seeds, delivery)

    async def _enqueue(
        self,
        user: UserRef,
        prompt: str,
        negative: str,
        seeds: list[int],
        delivery: dict[str, Any] | None,
    ) -> Submitted:
        async with self.sessions.begin() as session:
            await queries.lock_member(session, user.frontend, user.external_id)
            member = await queries.find_user(session, user.frontend, user.external_id)
            if member:
                await self._check_member(session, member)
            member = member or await queries.ensure_user(session, user.frontend, user.external_id)
            params = self.rules.params(seeds)
            mixed = await draw(session, member.id, seeds, self.settings.arena, self.mixing_rng)
            if mixed is not None:  # images from two versions (see bot/arena/mixing.py)
                seeds = params["seeds"] = mixed.seeds
                params["versions"] = mixed.versions
            control = None  # a set is mixed, or a control set (bot/controls/draw.py), or plain
            if mixed is None:
                control = await draw_control(
                    session, member.id, len(seeds), self.settings.controls, self.control_rng
                )
            if control is not None:
                params["control"] = control.to_params()
            generation = Generation(
                prompt=prompt,
                negative_prompt=negative,
                n_images=len(seeds),
                params=params,
                requested_by=member.id,
                delivery=delivery,
                comparison_id=mixed.comparison_id if mixed else None,
                **(control.columns() if control else {}),
            )
            session.add(generation)
            await session.flush()
            generation.job_id = await queries.defer_job(
                session,
                task=GENERATE_TASK,
                queue=GENERATE_QUEUE,
                args={"generation_id": generation.id},
            )
            position = await queries.queue_position(session, generation.id)
        return Submitted(generation.id, generation.job_id, position, seeds, prompt)

    async def _check_member(self, session: AsyncSession, member: queries.UserRow) -> None:
        if member.banned:
            reason = f" ({member.banned_reason})" if member.banned_reason else ""
            raise Refusal(f"You are banned from prefloop{reason}.", code="banned")
        waiting = await queries.unfinished_generations(session, member.id)
        limit = self.settings.limits.max_queued_per_user
        if len(waiting) >= limit:
            listed = ", ".join(f"#{g}" for g in waiting)
            raise Refusal(
                f"You already have {len(waiting)} generations waiting ({listed}); the limit "
                f"is {limit}. Try again when one has finished.",
                code="queue_full",
                details={"waiting": waiting},
            )

    # ----- vote ---------------------------------------------------------------------

    async def record_choice(
        self, generation_id: int, user: UserRef, vote: int | VoteKind | Vote
    ) -> VoteResult:
        """Record ``user``'s vote: an int picks that image (0-based), ``VoteKind.tie`` is
        "No favourite", ``VoteKind.none`` "None are good". Idempotent; a change is kept
        in the history (see bot/picks/record.py)."""
        return await record_choice(self.sessions, generation_id, user, vote)

    async def vote_of(self, generation_id: int, user: UserRef) -> Vote | None:
        """``user``'s current vote on a set (None: they have not voted on it)."""
        return await mine.vote_of(self.sessions, generation_id, user)

    async def next_to_rate(self, user: UserRef, skip: Collection[int] = ()) -> int | None:
        """Another member's set for ``user`` to rate next (bot/picks/queue.py), or None;
        sets in ``skip`` (passed over) only when no other is left."""
        async with self.sessions() as session:
            member = await queries.find_user(session, user.frontend, user.external_id)
        if member and member.banned:  # their votes would be refused: say so at once
            raise banned_voter()
        found = await next_to_rate(self.sessions, user, skip)
        if found is None and skip:
            found = await next_to_rate(self.sessions, user)
        return found

    # ----- look ---------------------------------------------------------------------

    async def get_generation(self, generation_id: int) -> GenerationView:
        """A generation and its shown images; a refusal when it does not exist."""
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(Generation, User.frontend, User.external_id)
                    .join(User, User.id == Generation.requested_by)
                    .where(Generation.id == generation_id)
                )
            ).first()
            if row is None:
                raise gone(generation_id)
            generation, frontend, external_id = row
            images = (
                await session.scalars(
                    select(Image).where(Image.generation_id == generation_id).order_by(Image.index)
                )
            ).all()
            pickers = (
                await session.execute(
                    select(func.count())
                    .select_from(Choice)
                    .where(Choice.generation_id == generation_id)
                )
            ).scalar_one()
        shown = [_image_view(i) for i in images if not i.nsfw]
        return GenerationView(
            id=generation.id,
            prompt=generation.prompt,
            negative_prompt=generation.negative_prompt,
            status=generation.status,
            requested_by=UserRef(frontend, external_id),
            n_images=generation.n_images,
            params=generation.params,
            generator_version=generation.generator_version,
            adapter_version_id=generation.adapter_version_id,
            error=generation.error,
            requested_at=generation.requested_at,
            finished_at=generation.finished_at,
            images=shown,
            withheld=len(images) - len(shown),
            delivery=generation.delivery,
            delivered=generation.delivered_at is not None,
            pickers=pickers,
            comparison_id=generation.comparison_id,
        )

    async def queue_position(self, generation_id: int) -> int:
        """1 + the queued generations ahead of this one."""
        async with self.sessions() as session:
            return await queries.queue_position(session, generation_id)

    async def my_sets(self, user: UserRef) -> list[mine.MySet]:
        """``user``'s latest sets with their own vote on each (bot/picks/mine.py)."""
        return await mine.my_sets(self.sessions, user)

    async def my_votes(self, user: UserRef) -> list[mine.MyVote]:
        """``user``'s current votes on other members' sets, latest first."""
        return await mine.my_votes_on_others(self.sessions, user)

    async def my_data(self, user: UserRef) -> mine.MyData:
        """Everything of ``user``'s, for a copy of their data: prompts, images, votes."""
        return await mine.my_data(self.sessions, user)

    async def undelivered(self, frontend: Frontend, limit: int = 100) -> list[int]:
        """Finished generations of this front end that it has not shown yet, oldest first."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Generation.id)
                .join(User, User.id == Generation.requested_by)
                .where(
                    Generation.delivered_at.is_(None),
                    Generation.delivery.is_not(None),
                    Generation.status.in_((GenerationStatus.done, GenerationStatus.failed)),
                    User.frontend == frontend,
                )
                .order_by(Generation.finished_at)
                .limit(limit)
            )
            return list(rows)

    async def mark_delivered(self, generation_id: int) -> bool:
        """Record that the result was shown; False when someone already had."""
        async with self.sessions.begin() as session:
            return await queries.mark_delivered(session, generation_id)

    async def stats(self, user: UserRef | None = None) -> Stats:
        """The dataset's size, the active models, and ``user``'s own numbers if given."""
        async with self.sessions() as session:
            return await reports.dataset_stats(session, user)

    async def queue_status(self) -> QueueStatus:
        """Queued and running generations, live workers, the latest outcomes."""
        async with self.sessions() as session:
            return await reports.queue_status(session, self.settings.worker.stalled_after)

    # ----- members ------------------------------------------------------------------

    async def forget_user(self, user: UserRef) -> Forgotten:
        """Delete the member's picks and prompts (with their images) for a data request.

        The member row stays, marked ``forgotten_at``, so exports can leave them out.
        Image files no other generation uses are removed from the store afterwards; the
        front ends' delivery notes of the deleted generations are returned so that they
        can take down what they posted.
        """
        async with self.sessions.begin() as session:
            # No submit of theirs may slip in meanwhile.
            await queries.lock_member(session, user.frontend, user.external_id)
            member = await queries.find_user(session, user.frontend, user.external_id)
            if member is None:
                return Forgotten(0, 0, [])
            # Locked before their images are read: a job recording images holds the same
            # row lock (bot.generation.runner), so its images are either committed and deleted
            # here, or it finds the generation gone afterwards and deletes its own files.
            rows = await queries.lock_generations(session, member.id)
            own = [generation_id for generation_id, _ in rows]
            picks = await session.execute(delete(Choice).where(Choice.user_id == member.id))
            await session.execute(delete(ChoiceEvent).where(ChoiceEvent.user_id == member.id))
            keys = await queries.delete_images(session, own)
            deleted = await queries.delete_generations(session, own)
            await session.execute(
                update(User).where(User.id == member.id).values(forgotten_at=func.now())
            )
            still_used = await queries.referenced_keys(session, sorted(keys))
        orphans = sorted(keys - still_used)
        for key in orphans:
            try:
                await self.storage.delete(key)
            except Exception:  # the rows are gone; a stray file must not undo that answer
                log.exception("could not delete %s of a forgotten member", key)
        notes = [note for _, note in rows if note]
        return Forgotten(deleted, queries.rowcount(picks), orphans, notes)

    async def sweep_store(
        self, *, grace_minutes: float | None = None, dry_run: bool = False
    ) -> Swept:
        """Delete store files no image row references (bot/sweep.py: :func:`sweep_store`)."""
        return await sweep_store(
            self.sessions, self.storage, self.settings, grace_minutes=grace_minutes, dry_run=dry_run
        )

    async def ban_user(self, user: UserRef, reason: str | None = None) -> None:
        """Stop a member from submitting and picking (their past data stays)."""
        async with self.sessions.begin() as session:
            member = await queries.ensure_user(session, user.frontend, user.external_id)
            await session.execute(
                update(User).where(User.id == member.id).values(banned=True, banned_reason=reason)
            )

    async def unban_user(self, user: UserRef) -> bool:
        """Lift a ban; False when the member was not banned."""
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(User)
                .where(
                    User.frontend == user.frontend,
                    User.external_id == user.external_id,
                    User.banned,
                )
                .values(banned=False, banned_reason=None)
            )
            return queries.rowcount(result) > 0

    async def update_delivery(self, generation_id: int, **changes: Any) -> bool:
        """Merge ``changes`` into the front end's delivery note of a generation; False when
        the generation is gone (deleted, e.g. its member asked to be forgotten)."""
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Generation)
                .where(Generation.id == generation_id)
                .values(
                    delivery=func.coalesce(Generation.delivery, literal({}, JSONB)).op("||")(
                        literal(changes, JSONB)
                    )
                )
            )
            return queries.rowcount(result) > 0

    async def audit(
        self,
        actor: UserRef,
        action: str,
        *,
        target: str | None = None,
        allowed: bool = True,
        **details: Any,
    ) -> None:
        """Write an admin action (or a refused attempt at one) to the audit log."""
        async with self.sessions.begin() as session:
            session.add(
                AdminAction(
                    actor=str(actor), action=action, target=target, details=details, allowed=allowed
                )
            )

    async def request_export(self, **options: Any) -> QueuedExport:
        """Queue a dataset export job (format, rater, incremental; see bot.export)."""
        return await request_export(self.sessions, self.settings, **options)

    async def request_retrain(
        self, *, trigger: str, requested_by: str | None = None
    ) -> RetrainRequest:
        """Queue the retrain loop, or say which run is already queued or running."""
        return await request_retrain(self.sessions, trigger=trigger, requested_by=requested_by)

    async def last_retrain(self) -> RetrainRunView | None:
        """The latest retrain run (None before the first)."""
        latest = await runs(self.sessions, 1)
        return latest[0] if latest else None

    async def workers_alive(self, within_seconds: float) -> int:
        """How many queue workers sent a heartbeat in the last ``within_seconds``."""
        async with self.sessions() as session:
            return await queries.live_workers(session, within_seconds)


def _image_view(image: Image) -> ImageView:
    return ImageView(
        image.index,
        image.storage_key,
        image.sha256,
        image.seed,
        image.width,
        image.height,
        image.nsfw,
        image.adapter_version_id,
    )


def _join(*parts: str) -> str:
    return ", ".join(p for p in parts if p)
