"""The use cases every front end calls: Discord, the CLI, later the web.

Each use case is one transaction. A refusal raises :class:`Refusal` with a message meant
for the member, and writes nothing.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.db import queries
from bot.db.models import (
    Choice,
    ChoiceEvent,
    Frontend,
    Generation,
    GenerationStatus,
    Image,
    ModelKind,
    ModelStatus,
    ModelVersion,
    User,
)
from bot.storage import Storage
from training.tokens import fit_prompt

GENERATE_TASK = "prefloop.generate"
GENERATE_QUEUE = "generate"
MAX_SEED = 2**32 - 1
MAX_MEMBER_ID = 100  # users.external_id is varchar(100)


class Refusal(Exception):
    """A request we turn down; ``message`` is written for the member who made it."""

    def __init__(self, message: str, *, code: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details or {}


@dataclass(frozen=True)
class UserRef:
    """A member as a front end knows them: ``discord:1234``, ``cli:alice``."""

    frontend: Frontend
    external_id: str

    def __post_init__(self) -> None:
        if not 0 < len(self.external_id) <= MAX_MEMBER_ID:
            raise Refusal(
                f"A member id has 1 to {MAX_MEMBER_ID} characters; got {len(self.external_id)}.",
                code="bad_member",
            )

    @classmethod
    def parse(cls, text: str, default: Frontend = Frontend.cli) -> UserRef:
        """``frontend:id``, or a bare name for the ``default`` front end."""
        prefix, sep, rest = text.partition(":")
        if sep and prefix in Frontend.__members__:
            return cls(Frontend(prefix), rest)
        return cls(default, text)

    def __str__(self) -> str:
        return f"{self.frontend.value}:{self.external_id}"


@dataclass(frozen=True)
class GenerationOptions:
    """What a member may set besides the prompt."""

    negative_prompt: str = ""
    seed: int | None = None


@dataclass(frozen=True)
class Submitted:
    generation_id: int
    job_id: int
    queue_position: int
    seeds: list[int]


@dataclass(frozen=True)
class PickResult:
    generation_id: int
    index: int
    previous: int | None
    changed: bool
    is_requester: bool
    pickers: int


@dataclass(frozen=True)
class ImageView:
    index: int
    storage_key: str
    sha256: str
    seed: int
    width: int
    height: int
    nsfw: bool


@dataclass(frozen=True)
class GenerationView:
    """A generation as a front end shows it; ``images`` leaves out flagged ones."""

    id: int
    prompt: str
    negative_prompt: str
    status: GenerationStatus
    requested_by: UserRef
    n_images: int
    params: dict[str, Any]
    generator_version: str | None
    adapter_version_id: int | None
    error: str | None
    requested_at: datetime
    finished_at: datetime | None
    images: list[ImageView] = field(default_factory=list)
    withheld: int = 0  # images the safety checker flagged


@dataclass(frozen=True)
class Stats:
    members: int
    banned: int
    generations: dict[str, int]
    images: int
    flagged_images: int
    picks: int
    requester_picks: int
    repicks: int
    active_models: dict[str, str]
    member_generations: int | None = None
    member_picks: int | None = None


@dataclass(frozen=True)
class Forgotten:
    generations: int
    picks: int
    files: list[str]


class CollectionService:
    """prompt -> images -> pick, and the data requests around it."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        storage: Storage,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.storage = storage
        words = "|".join(re.escape(w) for w in settings.limits.blocked_words)
        self._blocked = re.compile(rf"\b({words})\b", re.IGNORECASE) if words else None

    # ----- submit -------------------------------------------------------------------

    async def submit_prompt(
        self,
        user: UserRef,
        prompt: str,
        n: int | None = None,
        options: GenerationOptions | None = None,
    ) -> Submitted:
        """Validate and queue one generation of ``n`` images (default from the settings)."""
        options = options or GenerationOptions()
        n = self.settings.generator.images_per_prompt if n is None else n
        prompt = self._check_prompt(prompt, "prompt")
        negative = self._check_prompt(options.negative_prompt, "negative prompt", optional=True)
        seeds = self._seeds(n, options.seed)
        async with self.sessions.begin() as session:
            await queries.lock_member(session, user.frontend, user.external_id)
            member = await queries.find_user(session, user.frontend, user.external_id)
            if member:
                await self._check_member(session, member)
            member = member or await queries.ensure_user(session, user.frontend, user.external_id)
            generation = Generation(
                prompt=prompt,
                negative_prompt=_join(self.settings.generator.negative_prompt, negative),
                n_images=n,
                params=self._params(seeds),
                requested_by=member.id,
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
        return Submitted(generation.id, generation.job_id, position, seeds)

    def _check_prompt(self, text: str, what: str, *, optional: bool = False) -> str:
        text = " ".join(text.split())
        if not text:
            if optional:
                return ""
            raise Refusal(f"Your {what} is empty: describe the image you want.", code="empty")
        limit = self.settings.limits.max_prompt_chars
        if len(text) > limit:
            raise Refusal(
                f"Your {what} is {len(text)} characters long; the limit is {limit}.",
                code="too_long",
            )
        fit = fit_prompt(text, self.settings.limits.max_prompt_tokens)
        if not fit.fits:
            raise Refusal(
                f"Your {what} is {fit.tokens} CLIP tokens long, and Stable Diffusion reads "
                f"only the first {self.settings.limits.max_prompt_tokens}. This part would "
                f"be cut: «{_ellipsis(fit.cut)}». Shorten it and try again.",
                code="too_many_tokens",
                details={"tokens": fit.tokens, "cut": fit.cut},
            )
        if self._blocked and (found := self._blocked.search(text)):
            raise Refusal(
                f"Your {what} contains a blocked word ({found.group(0)!r}).", code="blocked"
            )
        return text

    def _seeds(self, n: int, seed: int | None) -> list[int]:
        if not 2 <= n <= 4:
            raise Refusal(f"You can ask for 2 to 4 images, not {n}.", code="bad_count")
        if seed is None:
            return [secrets.randbelow(MAX_SEED + 1) for _ in range(n)]
        if not 0 <= seed <= MAX_SEED - 3:
            raise Refusal(f"A seed is a whole number from 0 to {MAX_SEED - 3}.", code="bad_seed")
        return [seed + k for k in range(n)]

    def _params(self, seeds: list[int]) -> dict[str, Any]:
        gen = self.settings.generator
        return {
            "steps": gen.steps,
            "guidance": gen.guidance,
            "width": gen.width,
            "height": gen.height,
            "seeds": seeds,
        }

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

    # ----- pick ---------------------------------------------------------------------

    async def record_choice(self, generation_id: int, user: UserRef, index: int) -> PickResult:
        """Record that ``user`` prefers image ``index`` (0-based) of a generation.

        Idempotent: the same pick again changes nothing; another image replaces the pick
        and the history keeps both. One statement in the usual case.
        """
        if not 0 <= index < 4:
            raise Refusal(
                f"There is no image {index + 1}; images are numbered 1 to 4.", code="bad_index"
            )
        async with self.sessions.begin() as session:
            row = await queries.record_pick(
                session, generation_id, user.frontend, user.external_id, index
            )
            _check_pick(generation_id, index, row)
            if row.user_id is None:  # first time we see this member
                await queries.ensure_user(session, user.frontend, user.external_id)
                row = await queries.record_pick(
                    session, generation_id, user.frontend, user.external_id, index
                )
                _check_pick(generation_id, index, row)
        new_picker = row.changed and row.previous is None
        return PickResult(
            generation_id,
            index,
            row.previous,
            row.changed,
            row.requested_by == row.user_id,
            row.pickers_before + new_picker,
        )

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
                raise _gone(generation_id)
            generation, frontend, external_id = row
            images = (
                await session.scalars(
                    select(Image).where(Image.generation_id == generation_id).order_by(Image.index)
                )
            ).all()
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
        )

    async def undelivered(self, frontend: Frontend, limit: int = 100) -> list[int]:
        """Finished generations of this front end that it has not shown yet, oldest first."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Generation.id)
                .join(User, User.id == Generation.requested_by)
                .where(
                    Generation.delivered_at.is_(None),
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
            by_status = dict(
                (
                    await session.execute(
                        select(Generation.status, func.count()).group_by(Generation.status)
                    )
                ).all()
            )
            totals = (
                await session.execute(
                    select(
                        select(func.count()).select_from(User).scalar_subquery(),
                        select(func.count()).select_from(User).where(User.banned).scalar_subquery(),
                        select(func.count()).select_from(Image).scalar_subquery(),
                        select(func.count()).select_from(Image).where(Image.nsfw).scalar_subquery(),
                        select(func.count()).select_from(Choice).scalar_subquery(),
                        select(func.count()).select_from(ChoiceEvent).scalar_subquery(),
                        select(func.count())
                        .select_from(Choice)
                        .join(Generation, Generation.id == Choice.generation_id)
                        .where(Generation.requested_by == Choice.user_id)
                        .scalar_subquery(),
                    )
                )
            ).one()
            active = dict(
                (
                    await session.execute(
                        select(ModelVersion.kind, ModelVersion.uri).where(
                            ModelVersion.status == ModelStatus.active
                        )
                    )
                ).all()
            )
            mine = await self._member_stats(session, user) if user else (None, None)
        members, banned, images, flagged, picks, events, requester = totals
        return Stats(
            members=members,
            banned=banned,
            generations={s.value: int(by_status.get(s, 0)) for s in GenerationStatus},
            images=images,
            flagged_images=flagged,
            picks=picks,
            requester_picks=requester,
            repicks=events - picks,
            active_models={ModelKind(k).value: v for k, v in active.items()},
            member_generations=mine[0],
            member_picks=mine[1],
        )

    async def _member_stats(self, session: AsyncSession, user: UserRef) -> tuple[int, int]:
        member = await queries.find_user(session, user.frontend, user.external_id)
        if member is None:
            return 0, 0
        generations = await session.scalar(
            select(func.count()).select_from(Generation).where(Generation.requested_by == member.id)
        )
        picks = await session.scalar(
            select(func.count()).select_from(Choice).where(Choice.user_id == member.id)
        )
        return int(generations or 0), int(picks or 0)

    # ----- members ------------------------------------------------------------------

    async def forget_user(self, user: UserRef) -> Forgotten:
        """Delete the member's picks and prompts (with their images) for a data request.

        The member row stays, marked ``forgotten_at``, so exports can leave them out.
        Image files no other generation uses are removed from the store afterwards.
        """
        async with self.sessions.begin() as session:
            await queries.lock_member(
                session, user.frontend, user.external_id
            )  # no submits meanwhile
            member = await queries.find_user(session, user.frontend, user.external_id)
            if member is None:
                return Forgotten(0, 0, [])
            own = list(
                await session.scalars(
                    select(Generation.id).where(Generation.requested_by == member.id)
                )
            )
            keys = set(
                await session.scalars(select(Image.storage_key).where(Image.generation_id.in_(own)))
            )
            picks = await session.execute(delete(Choice).where(Choice.user_id == member.id))
            await session.execute(delete(ChoiceEvent).where(ChoiceEvent.user_id == member.id))
            deleted = await queries.delete_generations(session, own)
            await session.execute(
                update(User).where(User.id == member.id).values(forgotten_at=func.now())
            )
            still_used = set(
                await session.scalars(select(Image.storage_key).where(Image.storage_key.in_(keys)))
            )
        orphans = sorted(keys - still_used)
        for key in orphans:
            await self.storage.delete(key)
        return Forgotten(deleted, picks.rowcount or 0, orphans)

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
            return bool(result.rowcount)

    async def workers_alive(self, within_seconds: float) -> int:
        """How many queue workers sent a heartbeat in the last ``within_seconds``."""
        async with self.sessions() as session:
            return await queries.live_workers(session, within_seconds)


def _check_pick(generation_id: int, index: int, row: queries.PickRow) -> None:
    if row.status is None:
        raise _gone(generation_id)
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


def _gone(generation_id: int) -> Refusal:
    return Refusal(
        f"Generation #{generation_id} no longer exists (it may have been deleted).", code="gone"
    )


def _image_view(image: Image) -> ImageView:
    return ImageView(
        image.index,
        image.storage_key,
        image.sha256,
        image.seed,
        image.width,
        image.height,
        image.nsfw,
    )


def _join(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


def _ellipsis(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
