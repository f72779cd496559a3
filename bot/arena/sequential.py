"""The people's gate: is the contender's win rate above 50%? Valid however often we look.

Each judged mixed set gives one observation x in [0, 1]: 1 when the member picked the
contender's image, 0 when they picked the baseline's (0.5 would be a tie). The test
keeps a confidence sequence for the mean win rate p: Robbins' beta mixture,

    M_n(p) = B(a + S, b + F) / B(a, b) / (p^S (1 - p)^F),   S = sum x, F = n - S,

is, at the true p, a nonnegative supermartingale (for x in {0, 1} it is a likelihood
ratio mixed over alternatives; for x in [0, 1] the integrand is convex in x, so its mean
is at most 1). By Ville's inequality it ever reaches 1/alpha with probability at most
alpha, so ``{p : M_n(p) < 1/alpha}`` holds the true p at every n at once, with
probability 1 - alpha: checking after every pick does not inflate the error (a fixed-n
test re-run after every pick would promote an equal contender far more often).

Decisions: promote once the whole interval is above 1/2 (the wrong-promotion rate is at
most alpha); reject once it is below 1/2 + ``min_effect`` (the contender cannot be
worth it), or at the deadline (a number of judged sets, or days).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Decision = Literal["promote", "reject"]
PRIOR = (1.0, 1.0)  # Beta(a, b) mixing weights over the alternatives: uniform


@dataclass(frozen=True)
class Judgement:
    """Where the evidence stands after ``n`` judged sets."""

    n: int
    wins: float  # the contender's (a tie counts half)
    estimate: float  # wins / n (0.5 before any)
    interval: tuple[float, float]  # the always-valid confidence interval of the win rate
    decision: Decision | None  # None: keep collecting
    reason: str
    confidence: float

    def describe(self) -> str:
        low, high = self.interval
        return (
            f"{self.n} judged sets, contender's win rate {self.estimate:.1%} "
            f"(always-valid {self.confidence:.0%} interval {low:.1%}–{high:.1%})"
        )


def log_mixture(wins: float, n: int, p: float, prior: tuple[float, float] = PRIOR) -> float:
    """log M_n(p): the evidence against a win rate of ``p`` after ``n`` observations."""
    a, b = prior
    losses = n - wins
    p = min(max(p, 1e-12), 1 - 1e-12)
    return (
        _log_beta(a + wins, b + losses)
        - _log_beta(a, b)
        - wins * math.log(p)
        - losses * math.log(1 - p)
    )


def interval(
    wins: float, n: int, alpha: float, prior: tuple[float, float] = PRIOR
) -> tuple[float, float]:
    """The always-valid (1 - alpha) confidence interval of the win rate after ``n``."""
    if n == 0:
        return 0.0, 1.0
    threshold = math.log(1 / alpha)
    centre = min(max(wins / n, 1e-9), 1 - 1e-9)

    def outside(p: float) -> bool:
        return log_mixture(wins, n, p, prior) >= threshold

    def edge(inside: float, out: float) -> float:
        if not outside(out):
            return out  # the interval reaches the end of [0, 1]
        for _ in range(60):
            middle = (inside + out) / 2
            if outside(middle):
                out = middle
            else:
                inside = middle
        return inside

    return edge(centre, 0.0), edge(centre, 1.0)


def judge(
    observations: Sequence[float],
    *,
    confidence: float = 0.95,
    min_effect: float = 0.02,
    max_comparisons: int | None = None,
    expired: bool = False,
    prior: tuple[float, float] = PRIOR,
) -> Judgement:
    """The gate's state after ``observations`` (each in [0, 1], oldest first).

    ``expired``: the deadline in days has passed (the caller knows the clock).
    """
    n = len(observations)
    wins = float(sum(observations))
    alpha = 1 - confidence
    low, high = interval(wins, n, alpha, prior)
    estimate = wins / n if n else 0.5
    decision: Decision | None = None
    if low > 0.5:
        decision, reason = "promote", f"its win rate is above 50% at {confidence:.0%} confidence"
    elif high < 0.5 + min_effect:
        decision = "reject"
        reason = f"its win rate is below {0.5 + min_effect:.0%} at {confidence:.0%} confidence"
    elif max_comparisons is not None and n >= max_comparisons:
        decision, reason = "reject", f"no decision within {max_comparisons} judged sets"
    elif expired:
        decision, reason = "reject", "no decision before the deadline"
    else:
        reason = "collecting votes"
    return Judgement(n, wins, estimate, (low, high), decision, reason, confidence)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
