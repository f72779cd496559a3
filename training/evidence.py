"""Is a candidate better than what serves? A paired comparison on the same held-out items.

A model gate that compares two point figures ("top-1 66.7% on 3 held-out picks") promotes
on noise when the held-out set is small. Here both models are judged on the same items,
so each item gives one difference d_i (candidate minus serving): for an HPS its top-1
credit on one held-out pick, for an adapter its mean HPS on one held-out prompt. Reported:
how many items went each way, the mean difference with a bootstrap 95% interval, and an
exact one-sided sign test on the items that differ (a binomial test against a fair coin;
for 0/1 credits it is the exact McNemar test). A candidate is ``better`` only when the
sign test's p-value is below 1 - confidence and the interval's lower bound is above 0.

When it looks better but the evidence is short, ``items_needed`` estimates how many held-out
items a decision would take: the sign test reaching the confidence with 80% power, were
the shares of "better" (among the items that differ) and of ties what they are now. Pure
Python: the platform decides with it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from training.hps.evaluate import bootstrap_interval

POWER = 0.8  # the chance a decision is reached, were the candidate as good as it looks
EXACT_UP_TO = 400  # items that differ: above it the estimate uses the normal approximation
BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class Paired:
    """The paired evidence of one candidate against one model on ``n`` held-out items.

    ``tests``: how many candidates were tried on these items and the best one kept (the
    adapter stage judges two ways of serving it); ``p_value`` is then the sign test's
    multiplied by it (Bonferroni), so picking the better of two is no free second chance.
    """

    n: int
    better: int
    worse: int
    equal: int
    mean_difference: float
    interval: tuple[float, float]  # bootstrap 95% interval of the mean difference
    p_value: float
    tests: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "better": self.better,
            "worse": self.worse,
            "equal": self.equal,
            "mean_difference": self.mean_difference,
            "interval": list(self.interval),
            "interval_level": 0.95,
            "p_value": self.p_value,
            "tests": self.tests,
            "test": "exact one-sided sign test on the items that differ",
        }

    def tried(self, tests: int) -> Paired:
        """The same evidence when ``tests`` candidates in all were tried on these items and
        the best kept (the retrain's ``adapter_method`` both: every method's tries): the
        sign test's p-value times ``tests`` (Bonferroni), recomputed from the counts."""
        p_value = min(1.0, tests * sign_test(self.better, self.worse))
        return replace(self, p_value=p_value, tests=tests)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Paired:
        """The evidence a gate file holds; ``ValueError`` when it is not whole or not sane."""
        try:
            low, high = (float(x) for x in data["interval"])
            evidence = cls(
                n=int(data["n"]),
                better=int(data["better"]),
                worse=int(data["worse"]),
                equal=int(data["equal"]),
                mean_difference=float(data["mean_difference"]),
                interval=(low, high),
                p_value=float(data["p_value"]),
                tests=int(data.get("tests", 1)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a paired comparison: {error!r}") from None
        counts = (evidence.better, evidence.worse, evidence.equal)
        if min(counts) < 0 or sum(counts) != evidence.n or not 0 <= evidence.p_value <= 1:
            raise ValueError(f"the paired comparison does not add up: {dict(data)}")
        return evidence


@dataclass(frozen=True)
class Decision:
    """What the evidence says at a confidence.

    ``needed``: held-out items a decision would take (only when the candidate looks better
    but is not shown better); ``at_least``: every item that differed went its way, so the
    estimate is the least it could take, not a likely figure.
    """

    better: bool
    looks_better: bool
    needed: int | None = None
    at_least: bool = False


def paired(
    differences: Sequence[float], *, tests: int = 1, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0
) -> Paired:
    """The evidence of per-item ``differences`` (candidate minus the other, same items)."""
    n = len(differences)
    better = sum(d > 0 for d in differences)
    worse = sum(d < 0 for d in differences)
    if n == 0:
        return Paired(0, 0, 0, 0, 0.0, (0.0, 0.0), 1.0, tests)
    return Paired(
        n=n,
        better=better,
        worse=worse,
        equal=n - better - worse,
        mean_difference=sum(differences) / n,
        interval=bootstrap_interval(differences, rounds, seed),
        p_value=min(1.0, tests * sign_test(better, worse)),
        tests=tests,
    )


def sign_test(better: int, worse: int) -> float:
    """P(at least ``better`` of the ``better + worse`` differing items go the candidate's
    way | each is a fair coin): the exact one-sided p-value; 1 when none differ."""
    k = better + worse
    return sum(math.comb(k, i) for i in range(better, k + 1)) / 2**k


def minimum_items(alpha: float) -> int:
    """The fewest differing items that can ever decide: the smallest m with 0.5^m < alpha."""
    m = 1
    while 0.5**m >= alpha:
        m += 1
    return m


def decide(evidence: Paired, confidence: float) -> Decision:
    """``better`` when the p-value is below 1 - ``confidence`` and the interval excludes 0
    (and anything below it); else whether it looks better and what a decision needs."""
    alpha = 1 - confidence
    looks_better = evidence.better > evidence.worse and evidence.mean_difference > 0
    if evidence.p_value < alpha and evidence.interval[0] > 0 and looks_better:
        return Decision(better=True, looks_better=True)
    if not looks_better:
        return Decision(better=False, looks_better=False)
    needed = items_needed(evidence.better, evidence.worse, evidence.equal, alpha / evidence.tests)
    at_least = evidence.worse == 0
    if needed is None or needed <= evidence.n:  # near the line: more items, at any rate
        needed, at_least = evidence.n + 1, True
    return Decision(better=False, looks_better=True, needed=needed, at_least=at_least)


def items_needed(
    better: int, worse: int, equal: int, alpha: float, power: float = POWER
) -> int | None:
    """Held-out items (ties included) for the sign test to reach ``alpha`` with ``power``,
    were the shares of "better" among differing items and of ties as observed; None when
    it does not look better (no share of "better" above one half)."""
    differing = better + worse
    n = differing + equal
    if differing == 0 or better <= worse:
        return None
    share = better / differing
    m = _differing_needed(share, alpha, power)
    return math.ceil(m * n / differing)  # ties take their share of the items


def _differing_needed(share: float, alpha: float, power: float) -> int:
    start = minimum_items(alpha)
    if share >= 1.0:
        return start  # every differing item goes its way: the fewest that can decide
    z_alpha, z_power = _z(1 - alpha), _z(power)
    guess = ((0.5 * z_alpha + z_power * math.sqrt(share * (1 - share))) / (share - 0.5)) ** 2
    if guess > EXACT_UP_TO:
        return math.ceil(guess)
    m = max(start, int(guess * 0.7))
    while m <= EXACT_UP_TO and _power(m, share, alpha) < power:
        m += 1
    return m


def _power(m: int, share: float, alpha: float) -> float:
    """P(the exact sign test on m differing items rejects at ``alpha`` | P(better) = share)."""
    tail = 0.0
    critical = m + 1  # the fewest "better" that reject: none while the tail is too big
    for c in range(m, -1, -1):
        tail += _pmf(m, c, 0.5)
        if tail >= alpha:
            break
        critical = c
    return sum(_pmf(m, c, share) for c in range(critical, m + 1))


def _pmf(m: int, c: int, share: float) -> float:
    if share <= 0.0 or share >= 1.0:
        return float(c == (m if share >= 1.0 else 0))
    log = (
        math.lgamma(m + 1)
        - math.lgamma(c + 1)
        - math.lgamma(m - c + 1)
        + c * math.log(share)
        + (m - c) * math.log(1 - share)
    )
    return math.exp(log)


def _z(p: float) -> float:
    """The standard normal quantile (bisection on erf: precise enough for an estimate)."""
    low, high = -10.0, 10.0
    for _ in range(100):
        mid = (low + high) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2
