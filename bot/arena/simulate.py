"""Simulated people for the people's gate: does it promote what is better, and only that?

A population of raters judges mixed sets directly (no images are made): each image has
a hidden quality, drawn from its version's distribution (the contender's is shifted by
``shift``); a rater picks the image whose quality plus their own noise (Gumbel, each
rater with their own scale) is highest. The contender's true win rate in a set layout
is then measured over many sets, never assumed; ``shift_for`` finds the shift that
gives a wanted win rate.

A run of the gate sees one judged set after another and consults the test after every
one, as the retrain loop's looks would if they came after each pick (the most peeking
possible). ``gate_runs`` does that for many runs at once with numpy: its decision rule
is the one of bot/arena/sequential.py's ``judge`` read through the interval's convexity
(the interval lies above 1/2 exactly when 1/2 is outside it and the estimate is above
it), and ``judge_every_set`` is the plain loop over ``judge`` that it is checked against.
``naive_runs`` is what the gate must not be: a fixed-n one-sided binomial test at the
same level, re-run after every set.

Used by ``python -m bench.arena`` (the table in docs/arena.md) and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.arena.sequential import PRIOR, judge

PROMOTE, REJECT, UNDECIDED = 1, -1, 0
Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Population:
    """The raters: how many, and how noisy (each rater's Gumbel scale is drawn once)."""

    raters: int = 200
    noise: float = 1.0  # the median rater's noise scale, in units of the quality spread
    spread: float = 0.5  # lognormal sigma of the raters' scales around it
    seed: int = 0

    def scales(self) -> Floats:
        rng = np.random.default_rng(self.seed)
        return self.noise * np.exp(self.spread * rng.standard_normal(self.raters))


@dataclass(frozen=True)
class Layout:
    """A mixed set: ``per_version`` images of each version (2 + 2 by default)."""

    per_version: int = 2
    quality_sd: float = 1.0  # the spread of image quality within a version


def picks(
    rng: np.random.Generator,
    shift: float,
    shape: tuple[int, ...],
    population: Population = Population(),
    layout: Layout = Layout(),
) -> Floats:
    """One judged set per cell of ``shape``: 1.0 when the rater picked a contender image."""
    k = layout.per_version
    quality = rng.normal(0.0, layout.quality_sd, (*shape, 2 * k))
    quality[..., :k] += shift  # the first k images are the contender's
    scales = population.scales()
    rater = rng.integers(population.raters, size=shape)
    seen = quality + rng.gumbel(size=(*shape, 2 * k)) * scales[rater][..., None]
    return (np.argmax(seen, axis=-1) < k).astype(np.float64)


def true_win_rate(
    shift: float,
    population: Population = Population(),
    layout: Layout = Layout(),
    sets: int = 400_000,
    seed: int = 1,
) -> float:
    """The contender's win rate in this population and layout, measured over ``sets``."""
    return float(picks(np.random.default_rng(seed), shift, (sets,), population, layout).mean())


def shift_for(
    win_rate: float,
    population: Population = Population(),
    layout: Layout = Layout(),
    sets: int = 100_000,
    seed: int = 2,
) -> float:
    """The quality shift whose win rate is ``win_rate`` (bisection on common draws)."""
    rng = np.random.default_rng(seed)
    k = layout.per_version
    quality = rng.normal(0.0, layout.quality_sd, (sets, 2 * k))
    scales = population.scales()[rng.integers(population.raters, size=sets)]
    seen = quality + rng.gumbel(size=(sets, 2 * k)) * scales[:, None]
    bump = np.zeros(2 * k)
    bump[:k] = 1.0

    def rate(shift: float) -> float:
        return float((np.argmax(seen + shift * bump, axis=-1) < k).mean())

    low, high = -5.0, 5.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if rate(middle) < win_rate else (low, middle)
    return (low + high) / 2


# ----- the gate over many runs ---------------------------------------------------------


def _log_gamma_table(size: int) -> Floats:
    """lgamma(h / 2) for h = 0 .. size - 1 (win counts are multiples of 1/2: ties)."""
    return np.array([math.inf] + [math.lgamma(h / 2) for h in range(1, size)])


def log_mixture(wins: Floats, n: Floats, p: float, prior: tuple[float, float] = PRIOR) -> Floats:
    """sequential.log_mixture for arrays of (wins, n): the evidence against ``p``."""
    a, b = prior
    losses = n - wins
    table = _log_gamma_table(int(2 * (float(np.max(n)) + a + b)) + 4)

    def lgamma(x: Floats) -> Floats:
        return table[np.rint(2 * x).astype(np.int64)]

    log_beta = lgamma(a + wins) + lgamma(b + losses) - lgamma(a + b + n)
    prior_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    p = min(max(p, 1e-12), 1 - 1e-12)
    return log_beta - prior_beta - wins * math.log(p) - losses * math.log(1 - p)


@dataclass(frozen=True)
class GateSettings:
    """The gate's settings that a simulated run uses (settings.arena's, by default)."""

    confidence: float = 0.95
    min_effect: float = 0.02
    max_comparisons: int | None = 2000

    def keywords(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "min_effect": self.min_effect,
            "max_comparisons": self.max_comparisons,
        }


@dataclass(frozen=True)
class Runs:
    """Many runs of a gate: each run's decision (PROMOTE, REJECT, UNDECIDED) and the
    judged sets it took (the sets seen when undecided)."""

    decision: NDArray[np.int64]
    sets: NDArray[np.int64]

    @property
    def promoted(self) -> float:
        return float(np.mean(self.decision == PROMOTE))

    @property
    def rejected(self) -> float:
        return float(np.mean(self.decision == REJECT))

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.sets, q))


def _first(hit: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Per row, the index of the first True (the row's length when none)."""
    any_hit = hit.any(axis=1)
    return np.where(any_hit, np.argmax(hit, axis=1), hit.shape[1]).astype(np.int64)


def gate_runs(
    observations: Floats,
    *,
    confidence: float = 0.95,
    min_effect: float = 0.02,
    max_comparisons: int | None = 2000,
) -> Runs:
    """The people's gate over each row of ``observations`` (runs x sets), looking after
    every set: the decision ``judge`` gives at the first look that decides."""
    runs, length = observations.shape
    if max_comparisons is not None:
        length = min(length, max_comparisons)
    wins = np.cumsum(observations[:, :length], axis=1)
    n = np.broadcast_to(np.arange(1, length + 1, dtype=np.float64), wins.shape)
    threshold = math.log(1 / (1 - confidence))
    promote = (log_mixture(wins, n, 0.5) >= threshold) & (wins / n > 0.5)
    bar = 0.5 + min_effect
    reject = (log_mixture(wins, n, bar) >= threshold) & (wins / n < bar)
    first_promote, first_reject = _first(promote), _first(reject)
    decision = np.full(runs, UNDECIDED, dtype=np.int64)
    sets = np.full(runs, length, dtype=np.int64)
    promoted = (first_promote < length) & (first_promote <= first_reject)
    rejected = ~promoted & (first_reject < length)
    decision[promoted], sets[promoted] = PROMOTE, first_promote[promoted] + 1
    decision[rejected], sets[rejected] = REJECT, first_reject[rejected] + 1
    if max_comparisons is not None and length == max_comparisons:
        decision[decision == UNDECIDED] = REJECT  # the deadline in judged sets
    return Runs(decision, sets)


def judge_every_set(
    observations: Sequence[float],
    *,
    confidence: float = 0.95,
    min_effect: float = 0.02,
    max_comparisons: int | None = 2000,
) -> tuple[int, int]:
    """One run through ``judge`` itself, after every set: (decision, judged sets)."""
    for n in range(1, len(observations) + 1):
        verdict = judge(
            observations[:n],
            confidence=confidence,
            min_effect=min_effect,
            max_comparisons=max_comparisons,
        )
        if verdict.decision is not None:
            return (PROMOTE if verdict.decision == "promote" else REJECT), n
    return UNDECIDED, len(observations)


def naive_runs(observations: Floats, *, confidence: float = 0.95) -> Runs:
    """A fixed-n one-sided binomial test (is the win rate above 1/2?) at ``confidence``,
    re-run after every set; promote the first time it says yes. Not to be used."""
    length = observations.shape[1]
    wins = np.cumsum(observations, axis=1)
    critical = binomial_critical(length, 1 - confidence)
    promote = wins >= critical[None, :]
    first = _first(promote)
    decision = np.where(first < length, PROMOTE, UNDECIDED).astype(np.int64)
    return Runs(decision, np.minimum(first + 1, length))


def binomial_critical(length: int, alpha: float) -> Floats:
    """For n = 1 .. length: the fewest wins whose one-sided binomial p-value (at 1/2)
    is at most ``alpha`` (n + 1 when none is)."""
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, length + 1)))])
    critical = np.empty(length)
    for n in range(1, length + 1):
        k = np.arange(n + 1)
        pmf = np.exp(log_factorial[n] - log_factorial[k] - log_factorial[n - k] - n * math.log(2))
        tail = np.cumsum(pmf[::-1])[::-1]  # P(X >= k)
        passing = np.nonzero(tail <= alpha)[0]
        critical[n - 1] = passing[0] if passing.size else n + 1
    return critical


def covered(observations: Floats, win_rate: float, *, confidence: float = 0.95) -> float:
    """Share of runs whose always-valid interval held ``win_rate`` at every look."""
    wins = np.cumsum(observations, axis=1)
    n = np.broadcast_to(np.arange(1, wins.shape[1] + 1, dtype=np.float64), wins.shape)
    outside = log_mixture(wins, n, win_rate) >= math.log(1 / (1 - confidence))
    return float(np.mean(~outside.any(axis=1)))
