"""What admins see of raters: each member's votes, control accuracy, agreement and weight,
and the dataset's agreement. Never shown to members (only the CLI and /admin read it).

The weights are fitted afresh on every call from the evidence queries
(:mod:`bot.raters.evidence`), the same ones the export uses for its ``rater_weight``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.db.models import Choice, User, VoteKind
from bot.domain import Refusal, UserRef
from bot.raters.agreement import dataset_agreement
from bot.raters.evidence import load_population
from bot.raters.reliability import Evidence, Population, Reliability, reliability

Sort = Literal["weight", "votes"]


@dataclass(frozen=True)
class RaterView:
    """One member as a rater, with the population they were judged in."""

    member: str  # frontend:external_id, as admins name members
    banned: bool
    votes: int
    ties: int
    nones: int
    reliability: Reliability
    careful_agreement: float | None  # how often careful raters agree, fitted on the data
    prior_careful: float

    @property
    def weight(self) -> float:
        return self.reliability.weight

    def as_dict(self) -> dict[str, Any]:
        r = self.reliability
        return {
            "member": self.member,
            "banned": self.banned,
            "votes": self.votes,
            "ties": self.ties,
            "nones": self.nones,
            "controls": r.controls,
            "correct": r.correct,
            "accuracy": r.accuracy.mean if r.accuracy else None,
            "accuracy_low": r.accuracy.low if r.accuracy else None,
            "accuracy_high": r.accuracy.high if r.accuracy else None,
            "chance": r.chance,
            "shared": r.shared,
            "agreement": r.agreement,
            "weight": r.weight,
        }

    def controls_text(self) -> str:
        r = self.reliability
        if not r.controls or r.accuracy is None or r.chance is None:
            return "no scored control sets"
        return (
            f"{r.correct} of {r.controls} right, accuracy {r.accuracy.mean:.2f} "
            f"[{r.accuracy.low:.2f}, {r.accuracy.high:.2f}] (a random clicker: {r.chance:.2f})"
        )

    def agreement_text(self) -> str:
        r = self.reliability
        if not r.shared or r.agreement is None:
            return "no sets shared with other raters"
        careful = (
            f" (careful raters: {100 * self.careful_agreement:.0f}%)"
            if self.careful_agreement is not None
            else ""
        )
        agrees = f"agrees with {100 * r.agreement:.0f}% of the other votes"
        return f"{r.shared} shared sets, {agrees}{careful}"

    def lines(self, name: str | None = None) -> list[str]:
        """The rater in words, for an admin; ``name``: how to call them (their id)."""
        picks = self.votes - self.ties - self.nones
        return [
            f"{name or self.member}{' (banned)' if self.banned else ''}: "
            f"weight {self.weight:.2f}, "
            f"the chance they vote carefully rather than click at random "
            f"(a newcomer: {self.prior_careful:.2f})",
            f"votes: {self.votes} ({picks} picks, {self.ties} no favourite, "
            f"{self.nones} none are good)",
            f"control sets: {self.controls_text()}; accuracy is the Beta posterior mean "
            "with its 95% interval",
            f"agreement: {self.agreement_text()}",
        ]


class RaterService:
    """The raters' reliability and the dataset's agreement, for admins."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    async def dataset_agreement(self) -> dict[str, Any]:
        """Pairwise agreement and alpha, overall and per week (see bot.raters.agreement)."""
        async with self.sessions() as session:
            return await dataset_agreement(session)

    async def raters(self, *, sort: Sort = "weight", limit: int | None = None) -> list[RaterView]:
        """Every member who has voted: lowest weight first (``"weight"``, the likeliest
        random clickers on top) or most votes first (``"votes"``); ``limit`` of them."""
        async with self.sessions() as session:
            population = await load_population(session, self.settings)
            rows = (await session.execute(_members())).all()
        views = [self._view(population, row) for row in rows]
        if sort == "votes":
            views.sort(key=lambda v: (-v.votes, v.member))
        else:
            views.sort(key=lambda v: (v.weight, -v.votes, v.member))
        return views if limit is None else views[:limit]

    async def rater(self, user: UserRef) -> RaterView:
        """One member as a rater; a refusal for someone prefloop has never seen."""
        async with self.sessions() as session:
            row = (
                await session.execute(
                    _members(outer=True).where(
                        User.frontend == user.frontend, User.external_id == user.external_id
                    )
                )
            ).first()
            if row is None:
                raise Refusal(f"{user} has never used prefloop.", code="unknown_member")
            population = await load_population(session, self.settings)
        return self._view(population, row)

    def _view(self, population: Population, row: Any) -> RaterView:
        user_id, frontend, external_id, banned, votes, ties, nones = row
        found = population.raters.get(user_id) or reliability(
            Evidence(user_id),  # no evidence yet: the prior
            prior_careful=self.settings.raters.prior_careful,
            careful_accuracy=self.settings.raters.careful_accuracy,
            careful_agreement=population.careful_agreement,
        )
        return RaterView(
            member=str(UserRef(frontend, external_id)),
            banned=bool(banned),
            votes=int(votes),
            ties=int(ties),
            nones=int(nones),
            reliability=found,
            careful_agreement=population.careful_agreement,
            prior_careful=population.prior_careful,
        )


def _members(*, outer: bool = False) -> Any:
    """Members with their vote counts: those who voted (or, ``outer``, everyone)."""
    return (
        select(
            User.id,
            User.frontend,
            User.external_id,
            User.banned,
            func.count(Choice.id),
            func.count(Choice.id).filter(Choice.kind == VoteKind.tie.value),
            func.count(Choice.id).filter(Choice.kind == VoteKind.none.value),
        )
        .select_from(User)
        .join(Choice, Choice.user_id == User.id, isouter=outer)
        .group_by(User.id)
    )
