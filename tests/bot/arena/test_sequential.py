"""The people's gate's test under continuous peeking, checked by simulation (seeded).

The claims of docs/arena.md at a smaller scale: an equal or worse contender is promoted
in at most 1 - confidence of the runs however often the gate looks; a clearly better one
is promoted; the interval holds the true win rate at every look; a fixed-n test re-run
after every set does not keep its level (and so fails the same check).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.arena import simulate
from bot.arena.sequential import interval, judge

RUNS = 300
LENGTH = 2000  # the default max_comparisons
ALPHA = 0.05


def _bound(rate: float = ALPHA, runs: int = RUNS) -> float:
    """``rate`` plus 2.5 binomial standard errors over ``runs``: what sampling allows."""
    return rate + 2.5 * math.sqrt(rate * (1 - rate) / runs)


@pytest.fixture(scope="module")
def equal() -> np.ndarray:
    """Runs of an equal contender (no quality shift: a true win rate of exactly 1/2)."""
    return simulate.picks(np.random.default_rng(140), 0.0, (RUNS, LENGTH))


def test_the_simulated_gate_decides_as_judge_does_after_every_set() -> None:
    rng = np.random.default_rng(7)
    for p in (0.4, 0.5, 0.6, 0.75):
        observations = (rng.random((12, 300)) < p).astype(np.float64)
        observations[:, ::7] = 0.5  # some ties too
        fast = simulate.gate_runs(observations, max_comparisons=300)
        for row in range(len(observations)):
            slow = simulate.judge_every_set(list(observations[row]), max_comparisons=300)
            assert slow == (fast.decision[row], fast.sets[row]), (p, row)
    assert set(fast.decision) >= {simulate.PROMOTE}


def test_an_equal_contender_is_rarely_promoted_however_often_the_gate_looks(
    equal: np.ndarray,
) -> None:
    runs = simulate.gate_runs(equal, confidence=1 - ALPHA)
    assert runs.promoted <= _bound()
    assert runs.promoted + runs.rejected == 1.0  # every run ends (the deadline at the latest)
    # The same check fails for what does not hold its level under peeking: a fixed-n
    # binomial test re-run after every set, and the gate at a far lower confidence.
    naive = simulate.naive_runs(equal, confidence=1 - ALPHA)
    assert naive.promoted > 0.2 > _bound()
    assert simulate.gate_runs(equal, confidence=0.5).promoted > _bound()


def test_a_worse_contender_is_rarely_promoted_and_soon_rejected() -> None:
    shift = simulate.shift_for(0.45, sets=20_000)
    worse = simulate.picks(np.random.default_rng(141), shift, (RUNS, LENGTH))
    runs = simulate.gate_runs(worse)
    assert runs.promoted <= _bound()
    assert runs.rejected >= 0.95 and runs.quantile(0.5) < 1000


def test_a_clearly_better_contender_is_promoted_soon() -> None:
    shift = simulate.shift_for(0.75, sets=20_000)
    rate = simulate.true_win_rate(shift, sets=50_000)
    assert 0.73 < rate < 0.77  # measured, as the bench does
    better = simulate.picks(np.random.default_rng(142), shift, (RUNS, LENGTH))
    runs = simulate.gate_runs(better)
    assert runs.promoted >= 0.95
    assert runs.quantile(0.5) < 60 and runs.quantile(0.9) < 150


def test_the_interval_holds_the_true_win_rate_at_every_look(equal: np.ndarray) -> None:
    assert simulate.covered(equal, 0.5) >= 1 - _bound()
    shift = simulate.shift_for(0.65, sets=20_000)
    rate = simulate.true_win_rate(shift, sets=50_000)
    better = simulate.picks(np.random.default_rng(143), shift, (RUNS, 500))
    assert simulate.covered(better, rate) >= 1 - _bound()
    assert simulate.covered(better, 0.5) < 0.1  # and leaves a wrong rate out


def test_judge_reports_its_figures_and_its_deadlines() -> None:
    verdict = judge([1.0] * 24 + [0.0] * 13)
    assert verdict.decision is None and verdict.reason == "collecting votes"
    assert verdict.describe().startswith("37 judged sets, contender's win rate 64.9% (")
    low, high = verdict.interval
    assert low < 0.5 < verdict.estimate < high
    assert judge([1.0] * 30).decision == "promote"
    assert judge([0.0] * 30).decision == "reject"
    assert judge([1.0, 0.0] * 5, max_comparisons=10).reason == "no decision within 10 judged sets"
    assert judge([1.0, 0.0], expired=True).reason == "no decision before the deadline"
    assert interval(0, 0, ALPHA) == (0.0, 1.0)
    wider, narrower = interval(30, 60, 0.01), interval(30, 60, 0.1)
    assert wider[0] < narrower[0] < 0.5 < narrower[1] < wider[1]
