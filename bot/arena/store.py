"""Arena control: open a comparison of a contender against the serving version, stop it,
and say where it stands.

One comparison is open at a time (the partial unique index ``uq_comparisons_one_open``):
mixed sets draw from exactly two versions, and a second contender would split the votes.
The service checks first to say which one is open, and the index settles two admins
racing each other. It audits nothing itself: the front ends audit who asked (as they do
for promotions).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.arena.outcomes import Outcome, one_per_set, outcomes
from bot.arena.sequential import Judgement, judge
from bot.arena.versions import Version, label
from bot.config import ArenaSettings, Settings
from bot.db.models import Comparison, ComparisonStatus, Generation, GenerationStatus
from bot.domain import Refusal
from bot.registry import ModelRegistry


class _Serving(enum.Enum):
    serving = "serving"


SERVING = _Serving.serving  # start()'s default baseline: the adapter serving now


@dataclass(frozen=True)
class ComparisonView:
    """A comparison as the front ends see it (no ORM row leaves the core)."""

    id: int
    baseline: Version
    contender: Version
    status: str
    share: float | None  # None: the arena.share setting
    retrain_run_id: int | None
    started_by: str | None
    started_at: datetime
    ended_at: datetime | None
    decision: dict[str, Any]

    def share_or(self, default: float) -> float:
        """The share in effect: its own, else ``default`` (the arena.share setting)."""
        return default if self.share is None else self.share

    @property
    def title(self) -> str:
        return f"comparison {self.id}: {label(self.contender)} vs {label(self.baseline)}"

    @classmethod
    def of(cls, row: Comparison) -> ComparisonView:
        return cls(
            row.id,
            row.baseline_version_id,
            row.contender_version_id,
            row.status.value,
            row.share,
            row.retrain_run_id,
            row.started_by,
            row.started_at,
            row.ended_at,
            dict(row.decision or {}),
        )


@dataclass(frozen=True)
class ArenaStatus:
    """The open comparison (or the last one) and the evidence so far."""

    comparison: ComparisonView | None
    share: float  # in effect: the comparison's own, else the setting
    share_from_settings: bool
    mixed_sets: int  # made (done)
    judged_sets: int  # mixed sets with at least one counted pick
    picks: int  # counted picks on its mixed sets (several members may pick one set)
    judgement: Judgement | None
    expires_at: datetime | None

    @property
    def open(self) -> bool:
        return self.comparison is not None and self.comparison.status == "open"

    def lines(self) -> list[str]:
        """Plain sentences, for the CLI and Discord alike."""
        c = self.comparison
        if c is None:
            return ["No comparison has been opened yet (`prefloop arena start VERSION`)."]
        who = f"retrain run {c.retrain_run_id}" if c.retrain_run_id else (c.started_by or "?")
        head = f"{c.title}, {c.status}, started {c.started_at:%Y-%m-%d %H:%M} UTC by {who}"
        if c.ended_at:
            head += f", ended {c.ended_at:%Y-%m-%d %H:%M} UTC"
        lines = [head]
        if self.open:
            source = "the arena.share setting" if self.share_from_settings else "this comparison"
            if self.share <= 0:
                lines.append(
                    f"share 0 ({source}): no mixed sets are being made; set "
                    "PREFLOOP_ARENA__SHARE or start it with --share"
                )
            else:
                lines.append(f"share {self.share:.0%} of /imagine requests ({source})")
        lines.append(
            f"{self.mixed_sets} mixed sets made, {self.judged_sets} judged, {self.picks} picks"
        )
        if self.judgement is not None:
            decision = self.judgement.decision or "none yet"
            lines.append(
                f"{self.judgement.describe()}; decision: {decision} ({self.judgement.reason})"
            )
        if self.open and self.expires_at:
            lines.append(f"deadline {self.expires_at:%Y-%m-%d %H:%M} UTC")
        if c.decision:
            said = c.decision.get("summary") or ", ".join(f"{k} {v}" for k, v in c.decision.items())
            lines.append(f"decision: {said}")
        return lines

    def describe(self) -> str:
        return "\n".join(self.lines())


class ArenaService:
    """Start, stop and report the comparison members judge with their picks."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ModelRegistry,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.registry = registry

    async def start(
        self,
        contender: Version,
        *,
        actor: str,
        share: float | None = None,
        baseline: Version | _Serving = SERVING,
        retrain_run_id: int | None = None,
    ) -> ComparisonView:
        """Open a comparison of ``contender`` against ``baseline`` (the adapter serving now).

        Refused while one is open (says which), for an unknown version or one that is not
        a generator adapter, for the baseline itself, and for a share outside [0, 1].
        """
        if share is not None and not 0.0 <= share <= 1.0:
            raise Refusal(
                f"A share is between 0 and 1 (the fraction of /imagine requests made as mixed "
                f"sets); got {share}.",
                code="bad_share",
            )
        async with self.sessions() as session:
            if (held := await open_comparison(session)) is not None:
                raise _already_open(held)
        if isinstance(baseline, _Serving):
            serving = await self.registry.active("generator_adapter")
            baseline = serving.id if serving else None
        else:
            await self._adapter(baseline)
        await self._adapter(contender)
        if contender == baseline:
            raise Refusal(
                f"{label(contender)} is the baseline (the version serving now): a comparison "
                "needs a different contender.",
                code="same_version",
            )
        try:
            async with self.sessions.begin() as session:
                row = Comparison(
                    baseline_version_id=baseline,
                    contender_version_id=contender,
                    share=share,
                    started_by=actor,
                    retrain_run_id=retrain_run_id,
                )
                session.add(row)
                await session.flush()  # a racing start stops here (the unique index)
                await session.refresh(row)
                return ComparisonView.of(row)
        except IntegrityError:
            async with self.sessions() as session:
                held = await open_comparison(session)
            if held is None:  # pragma: no cover - stopped between the two
                raise
            raise _already_open(held) from None

    async def stop(self, actor: str, *, reason: str | None = None) -> ComparisonView | None:
        """Stop the open comparison (also one a retrain run opened); None when none is open.

        Its decision records who stopped it and the evidence at that moment.
        """
        async with self.sessions.begin() as session:
            row = await open_row(session, lock=True)
            if row is None:
                return None
            found = await outcomes(session, row.id)
            judgement = judge_comparison(
                ComparisonView.of(row), found, self.settings.arena, datetime.now(UTC)
            )
            summary = f"stopped by {actor}"
            if row.retrain_run_id is not None:
                summary += f" (retrain run {row.retrain_run_id}'s people's gate; not promoted)"
            if reason:
                summary += f": {reason}"
            decision = {
                "decision": "stopped",
                "by": actor,
                "reason": reason,
                "summary": summary,
                "judgement": judgement_dict(judgement),
            }
            await stop_row(session, row, decision)
            await session.refresh(row)
            return ComparisonView.of(row)

    async def current(self) -> ComparisonView | None:
        """The open comparison, or None."""
        async with self.sessions() as session:
            return await open_comparison(session)

    async def status(self, comparison_id: int | None = None) -> ArenaStatus:
        """The open comparison (else the last one, or ``comparison_id``) and its evidence."""
        async with self.sessions() as session:
            if comparison_id is not None:
                row = await session.get(Comparison, comparison_id)
                if row is None:
                    raise Refusal(f"There is no comparison {comparison_id}.", code="no_comparison")
            else:
                row = await open_row(session) or await session.scalar(
                    select(Comparison).order_by(Comparison.id.desc()).limit(1)
                )
            if row is None:
                return ArenaStatus(None, self.settings.arena.share, True, 0, 0, 0, None, None)
            made = await session.scalar(
                select(func.count())
                .select_from(Generation)
                .where(
                    Generation.comparison_id == row.id,
                    Generation.status == GenerationStatus.done,
                )
            )
            found = await outcomes(session, row.id)
            view = ComparisonView.of(row)
        judgement = judge_comparison(view, found, self.settings.arena, datetime.now(UTC))
        return ArenaStatus(
            view,
            view.share_or(self.settings.arena.share),
            view.share is None,
            int(made or 0),
            len({o.generation_id for o in found}),
            len(found),
            judgement,
            view.started_at + timedelta(days=self.settings.arena.max_days),
        )

    async def _adapter(self, version: Version) -> None:
        if version is None:
            return  # the bare base model
        found = await self.registry.get(version)  # refuses an unknown id
        if found.kind != "generator_adapter":
            raise Refusal(
                f"Version {version} is an {found.kind} model, not a generator adapter: the "
                "arena compares generators (see `prefloop models list generator_adapter`).",
                code="wrong_kind",
            )


def judge_comparison(
    comparison: ComparisonView, found: list[Outcome], arena: ArenaSettings, now: datetime
) -> Judgement:
    """Where the evidence of ``found`` (its outcomes) stands, under the arena settings.

    The one place the figures are made: the people's gate (bot/retrain/people.py)
    decides on them, and ``prefloop arena status`` / ``stop`` report them, so the two can
    never disagree. The deadline is counted to the comparison's end, or to ``now``
    while it is open.
    """
    until = comparison.ended_at or now
    return judge(
        contender_scores(found, comparison.contender, comparison.baseline),
        confidence=arena.confidence,
        min_effect=arena.min_effect,
        max_comparisons=arena.max_comparisons,
        expired=until - comparison.started_at >= timedelta(days=arena.max_days),
    )


def contender_scores(found: list[Outcome], contender: Version, baseline: Version) -> list[float]:
    """One observation per judged set (see one_per_set): the contender's score in it.

    A set whose counted pick is not between the two versions says nothing of them and
    is left out.
    """
    return [
        o.score if o.winner == contender else 1.0 - o.score
        for o in one_per_set(found)
        if {o.winner, o.loser} == {contender, baseline}
    ]


def judgement_dict(judgement: Judgement) -> dict[str, Any]:
    """A judgement as JSON (for a comparison's decision and the reports)."""
    return {
        "n": judgement.n,
        "wins": judgement.wins,
        "estimate": judgement.estimate,
        "interval": list(judgement.interval),
        "decision": judgement.decision,
        "reason": judgement.reason,
        "confidence": judgement.confidence,
    }


async def open_row(session: AsyncSession, *, lock: bool = False) -> Comparison | None:
    """The open comparison's row (at most one is: a partial unique index), or None.

    ``lock``: held FOR UPDATE to the end of the caller's transaction, for one that
    stops it. The row stays in the core; callers outside it get :func:`open_comparison`.
    """
    query = select(Comparison).where(Comparison.status == ComparisonStatus.open)
    return await session.scalar(query.with_for_update() if lock else query)


async def open_comparison(session: AsyncSession) -> ComparisonView | None:
    """The open comparison, or None (read in the caller's session: the submit path
    draws mixed sets inside its own transaction)."""
    row = await open_row(session)
    return ComparisonView.of(row) if row else None


async def stop_row(session: AsyncSession, row: Comparison, decision: dict[str, Any]) -> None:
    """Mark ``row`` (the open comparison, locked by the caller) stopped now, saying why.

    Mixed sets stop being drawn from it once the caller's transaction commits.
    """
    row.status = ComparisonStatus.stopped
    row.ended_at = datetime.now(UTC)
    row.decision = decision
    await session.flush()


def _already_open(held: ComparisonView) -> Refusal:
    who = f"retrain run {held.retrain_run_id}" if held.retrain_run_id else held.started_by
    return Refusal(
        f"{held.title} is already open (since {held.started_at:%Y-%m-%d %H:%M} UTC, by {who}); "
        "stop it first (`prefloop arena stop` or /admin arena stop).",
        code="comparison_open",
        details={"comparison_id": held.id},
    )
