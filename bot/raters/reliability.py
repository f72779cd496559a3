"""A rater's reliability weight from control sets and agreement with other raters.

Pure arithmetic, no database: the queries that gather the evidence live beside this
module, and the synthetic-rater experiment feeds it simulated evidence.

The model has two kinds of rater. A **careful** rater gets a control set right with
probability ``careful_accuracy`` and agrees with another voter on a shared set as often
as careful raters do on this data (``agreement``, estimated here). A **random clicker**
is right on a control set by chance (the share of Pick buttons that are right) and
agrees with another voter by chance (one over the number of choices). Before any
evidence a rater is careful with probability ``prior_careful``; the weight is the
posterior probability that they are careful, so a proven random clicker's votes weigh
about nothing, a proven careful rater's about one, and a newcomer's the prior.

Control results are also summarised the way admins read them: accuracy with a Beta
posterior (uniform prior) and its 95% interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: Below this the careful raters' agreement carries no information (it is chance).
_MIN_SEPARATION = 0.02


@dataclass(frozen=True)
class ControlResult:
    """One scored vote on a control set: right or wrong, and a random clicker's chance."""

    correct: bool
    chance: float


@dataclass(frozen=True)
class SharedVote:
    """One vote on a set others voted on too: the share of the other votes it agrees with,
    and the chance that a random vote agrees with another (one over the choices)."""

    agreement: float
    chance: float


@dataclass(frozen=True)
class Evidence:
    """Everything known about one rater."""

    rater: int
    controls: Sequence[ControlResult] = field(default_factory=tuple)
    shared: Sequence[SharedVote] = field(default_factory=tuple)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Reliability:
    """What admins see of a rater, and the weight their votes get in training."""

    rater: int
    controls: int  # scored control votes
    correct: int
    chance: float | None  # a random clicker's mean chance on those controls
    accuracy: Interval | None  # Beta(1 + right, 1 + wrong): mean and 95% interval
    shared: int  # votes on sets others voted on too
    agreement: float | None  # mean share of the other votes they agree with
    weight: float  # P(careful | evidence)


@dataclass(frozen=True)
class Population:
    """The fitted model of all raters: each one's reliability and the careful raters'
    agreement rate it was judged against."""

    raters: dict[int, Reliability]
    careful_agreement: float | None
    prior_careful: float


def reliability(
    evidence: Evidence,
    *,
    prior_careful: float,
    careful_accuracy: float,
    careful_agreement: float | None,
) -> Reliability:
    """One rater's reliability; ``careful_agreement`` None ignores agreement evidence."""
    log_careful = math.log(prior_careful)
    log_random = math.log1p(-prior_careful)
    for result in evidence.controls:
        chance = _clip(result.chance)
        if result.correct:
            log_careful += math.log(careful_accuracy)
            log_random += math.log(chance)
        else:
            log_careful += math.log1p(-careful_accuracy)
            log_random += math.log1p(-chance)
    if careful_agreement is not None:
        for vote in evidence.shared:
            chance = _clip(vote.chance)
            careful = _clip(max(careful_agreement, chance + _MIN_SEPARATION))
            a = min(max(vote.agreement, 0.0), 1.0)
            log_careful += a * math.log(careful) + (1 - a) * math.log1p(-careful)
            log_random += a * math.log(chance) + (1 - a) * math.log1p(-chance)
    weight = 1.0 / (1.0 + math.exp(min(log_random - log_careful, 700.0)))
    right = sum(1 for r in evidence.controls if r.correct)
    n = len(evidence.controls)
    return Reliability(
        rater=evidence.rater,
        controls=n,
        correct=right,
        chance=sum(r.chance for r in evidence.controls) / n if n else None,
        accuracy=beta_interval(1 + right, 1 + n - right) if n else None,
        shared=len(evidence.shared),
        agreement=(
            sum(v.agreement for v in evidence.shared) / len(evidence.shared)
            if evidence.shared
            else None
        ),
        weight=weight,
    )


def fit_population(
    evidence: Iterable[Evidence],
    *,
    prior_careful: float,
    careful_accuracy: float,
    rounds: int = 20,
) -> Population:
    """Every rater's reliability, with the careful raters' agreement rate estimated from
    the data: alternately weight the raters and re-estimate that rate as the
    weight-averaged agreement (random clickers drag the plain average towards chance)."""
    raters = list(evidence)
    shared_total = sum(len(e.shared) for e in raters)
    careful_agreement: float | None = None
    if shared_total:
        careful_agreement = sum(v.agreement for e in raters for v in e.shared) / shared_total
    found: dict[int, Reliability] = {}
    for _ in range(rounds if shared_total else 1):
        found = {
            e.rater: reliability(
                e,
                prior_careful=prior_careful,
                careful_accuracy=careful_accuracy,
                careful_agreement=careful_agreement,
            )
            for e in raters
        }
        if not shared_total:
            break
        weighted = sum(found[e.rater].weight * len(e.shared) for e in raters)
        if weighted <= 0:
            break
        updated = (
            sum(found[e.rater].weight * v.agreement for e in raters for v in e.shared) / weighted
        )
        if careful_agreement is not None and abs(updated - careful_agreement) < 1e-6:
            break
        careful_agreement = updated
    return Population(found, careful_agreement, prior_careful)


def beta_interval(a: float, b: float, level: float = 0.95) -> Interval:
    """The mean and central ``level`` interval of Beta(a, b)."""
    tail = (1 - level) / 2
    return Interval(a / (a + b), beta_quantile(tail, a, b), beta_quantile(1 - tail, a, b))


def beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b), by bisection on its distribution function."""
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if regularized_beta(middle, a, b) < q:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the Beta(a, b) distribution function, by Lentz's continued fraction."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _continued_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(1 - x, b, a) / b


def _continued_fraction(x: float, a: float, b: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return result


def _clip(p: float) -> float:
    return min(max(p, 1e-6), 1 - 1e-6)
