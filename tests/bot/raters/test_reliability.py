"""The reliability weight: careful raters near 1, random clickers near 0, newcomers the prior."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest

from bot.raters.reliability import (
    ControlResult,
    Evidence,
    SharedVote,
    beta_interval,
    fit_population,
    regularized_beta,
    reliability,
)

PRIOR: dict[str, Any] = {"prior_careful": 0.8, "careful_accuracy": 0.95}


def test_beta_distribution_function_and_interval() -> None:
    assert regularized_beta(0.4, 2, 3) == pytest.approx(0.5248, abs=1e-9)  # 1 - 0.6^4 - 4*.4*.6^3
    assert regularized_beta(0.3, 1, 1) == pytest.approx(0.3)
    uniform = beta_interval(1, 1)
    assert (uniform.low, uniform.mean, uniform.high) == pytest.approx((0.025, 0.5, 0.975))
    ten_right = beta_interval(11, 1)  # x^11 = 0.025 -> x = 0.025 ** (1 / 11)
    assert ten_right.low == pytest.approx(0.025 ** (1 / 11), abs=1e-9)


def test_a_newcomer_weighs_the_prior() -> None:
    found = reliability(Evidence(1), careful_agreement=0.6, **PRIOR)
    assert found.weight == pytest.approx(0.8)
    assert (found.controls, found.accuracy, found.agreement) == (0, None, None)


def test_control_sets_move_the_weight_both_ways() -> None:
    right = [ControlResult(True, 0.5)] * 6
    wrong = [ControlResult(False, 0.5)] * 3 + [ControlResult(True, 0.5)] * 3
    careful = reliability(Evidence(1, right), careful_agreement=None, **PRIOR)
    clicker = reliability(Evidence(2, wrong), careful_agreement=None, **PRIOR)
    assert careful.weight > 0.99
    assert clicker.weight < 0.05
    assert clicker.accuracy is not None and clicker.accuracy.mean == pytest.approx(0.5)
    assert (clicker.controls, clicker.correct, clicker.chance) == (6, 3, 0.5)


def test_an_easy_control_says_little() -> None:
    """Being right where a random click is right 3 times in 4 is weak evidence."""
    easy = reliability(Evidence(1, [ControlResult(True, 0.75)]), careful_agreement=None, **PRIOR)
    hard = reliability(Evidence(1, [ControlResult(True, 0.25)]), careful_agreement=None, **PRIOR)
    assert 0.8 < easy.weight < hard.weight


def population(seed: int, n: int = 100, random_share: float = 0.3) -> list[Evidence]:
    """Careful raters agree with others 60% of the time and get controls right 95% of the
    time; random clickers agree 25% (four images) and get controls right 75%."""
    rng = random.Random(seed)
    raters = []
    for rater in range(n):
        careful = rater >= n * random_share
        controls = [
            ControlResult(rng.random() < (0.95 if careful else 0.75), 0.75) for _ in range(4)
        ]
        shared = [
            SharedVote(float(rng.random() < (0.6 if careful else 0.25)), 0.25) for _ in range(10)
        ]
        raters.append(Evidence(rater, controls, shared))
    return raters


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_clickers_are_told_from_careful_raters(seed: int) -> None:
    raters = population(seed)
    fitted = fit_population(raters, **PRIOR)
    weights = fitted.raters
    clickers = statistics.mean(weights[r].weight for r in range(30))
    careful = statistics.mean(weights[r].weight for r in range(30, 100))
    assert clickers < 0.35 < 0.85 < careful
    # The careful raters' agreement is estimated near its true 60%, above the plain mean
    # that the clickers drag down.
    plain = statistics.mean(v.agreement for e in raters for v in e.shared)
    assert fitted.careful_agreement is not None
    assert plain < fitted.careful_agreement
    assert fitted.careful_agreement == pytest.approx(0.6, abs=0.06)


def test_no_shared_sets_means_no_agreement_estimate() -> None:
    fitted = fit_population([Evidence(1, [ControlResult(True, 0.5)])], **PRIOR)
    assert fitted.careful_agreement is None
    assert fitted.raters[1].weight > 0.8
