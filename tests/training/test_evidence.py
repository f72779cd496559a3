"""The paired evidence of the model gates: sign test, interval, decision, items needed."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from training.evidence import (
    Decision,
    Paired,
    decide,
    items_needed,
    minimum_items,
    paired,
    sign_test,
)


def test_the_sign_test_is_the_exact_binomial_tail() -> None:
    assert sign_test(2, 0) == 0.25
    assert sign_test(5, 0) == 1 / 32
    assert sign_test(17, 3) == (1140 + 190 + 20 + 1) / 2**20  # about 0.0013
    assert sign_test(3, 3) == 42 / 64
    assert sign_test(0, 4) == 1.0
    assert sign_test(0, 0) == 1.0  # nothing differs: no evidence at all


def test_the_fewest_items_that_can_decide() -> None:
    assert minimum_items(0.05) == 5  # 0.5^4 = 0.0625, 0.5^5 = 0.031
    assert minimum_items(0.01) == 7
    assert minimum_items(1 / 32) == 6  # strictly below alpha


def test_paired_counts_ties_and_bootstraps_the_mean_difference() -> None:
    evidence = paired([1.0, 0.5, 0.0, 0.0, -1.0, 1.0])
    assert (evidence.n, evidence.better, evidence.worse, evidence.equal) == (6, 3, 1, 2)
    assert evidence.mean_difference == pytest.approx(1.5 / 6)
    assert evidence.p_value == sign_test(3, 1) == 5 / 16
    low, high = evidence.interval
    assert -1.0 <= low < evidence.mean_difference < high <= 1.0
    assert paired([1.0, 0.5, 0.0, 0.0, -1.0, 1.0]) == evidence  # seeded: the same figures
    assert paired([0.2] * 4).interval == (0.2, 0.2)  # no spread, no width


def test_trying_several_and_keeping_the_best_pays_in_the_p_value() -> None:
    assert paired([1.0] * 5, tests=2).p_value == 2 / 32
    assert paired([1.0, -1.0], tests=2).p_value == 1.0  # capped
    # Tried again with more candidates (two methods on the same items): recomputed from
    # the counts, also when the first p-value was capped.
    assert paired([1.0] * 5, tests=2).tried(4) == paired([1.0] * 5, tests=4)
    assert paired([1.0] * 5, tests=40).p_value == 1.0  # capped ...
    assert paired([1.0] * 5, tests=40).tried(2).p_value == 2 / 32  # ... yet recomputed
    assert paired([1.0] * 5).tried(40).p_value == 1.0


def test_three_items_all_better_are_not_enough() -> None:
    evidence = paired([1.0, 1.0, 1.0])
    assert evidence.p_value == 0.125 and evidence.interval == (1.0, 1.0)
    assert decide(evidence, 0.95) == Decision(
        better=False, looks_better=True, needed=5, at_least=True
    )


def test_twenty_items_seventeen_better_are_better() -> None:
    evidence = paired([1.0] * 17 + [-1.0] * 3)
    assert evidence.p_value == pytest.approx(0.0012884, abs=1e-7)
    assert evidence.interval[0] > 0
    assert decide(evidence, 0.95) == Decision(better=True, looks_better=True)
    assert not decide(evidence, 0.999).better  # the confidence is the admin's
    assert decide(evidence, 0.999).needed == items_needed(17, 3, 0, 0.001) == 30


def test_a_significant_sign_but_an_interval_reaching_zero_is_not_enough() -> None:
    """Many small gains and a few large losses: the signs say better, the mean does not."""
    evidence = paired([0.1] * 15 + [-0.6] * 2)
    assert evidence.mean_difference > 0 and evidence.p_value < 0.05 < evidence.interval[1]
    assert evidence.interval[0] <= 0
    assert decide(evidence, 0.95) == Decision(  # more items, at any rate
        better=False, looks_better=True, needed=18, at_least=True
    )


def test_not_looking_better_asks_for_nothing() -> None:
    assert decide(paired([1.0, -1.0, 0.0]), 0.95) == Decision(better=False, looks_better=False)
    assert decide(paired([-1.0] * 10), 0.95) == Decision(better=False, looks_better=False)
    assert decide(paired([0.0] * 10), 0.95) == Decision(better=False, looks_better=False)
    assert items_needed(3, 3, 4, 0.05) is None and items_needed(0, 0, 9, 0.05) is None


def test_items_needed_at_the_observed_shares() -> None:
    # Every differing item better: the fewest that can decide, scaled up by the ties.
    assert items_needed(3, 0, 0, 0.05) == 5
    assert items_needed(2, 0, 1, 0.05) == math.ceil(5 * 3 / 2) == 8
    # 70% of the differing items better, half the items tied: 37 differing ones, doubled.
    assert items_needed(7, 3, 10, 0.05) == 74
    # 60% better: about 158 (the normal approximation says about 152).
    assert items_needed(60, 40, 0, 0.05) == 158
    # Barely better: beyond the exact search, the normal approximation.
    assert 3500 < (items_needed(52, 48, 0, 0.05) or 0) < 4200
    # The estimate gives the power it promises: exact at 37 differing items, 70% better.
    from training.evidence import _power

    assert _power(37, 0.7, 0.05) >= 0.8 > _power(36, 0.7, 0.05)


def test_a_gate_files_evidence_reads_back_or_is_refused() -> None:
    evidence = paired([1.0, 0.0, -0.5, 2.0])
    assert Paired.from_dict({"against": "base", **evidence.to_dict()}) == evidence
    for broken in (
        {},
        {**evidence.to_dict(), "interval": None},
        {**evidence.to_dict(), "better": 4},  # the counts do not add up
        {**evidence.to_dict(), "p_value": 3.0},
    ):
        with pytest.raises(ValueError):
            Paired.from_dict(broken)


def test_the_hps_stage_reads_each_picks_credit_back_from_the_scores() -> None:
    from training.gate import _top1_credits

    examples = [SimpleNamespace(images=[0, 0]), SimpleNamespace(images=[0, 0, 0])]
    # Pick 1: the picked image tied with the other (half credit); pick 2: beaten once.
    scored = SimpleNamespace(name="c", picked_scores=[2.0, 1.0], other_scores=[2.0, 3.0, 0.5])
    assert _top1_credits(scored, examples) == [0.5, 0.0]
    short = SimpleNamespace(name="c", picked_scores=[2.0, 1.0], other_scores=[2.0, 3.0])
    with pytest.raises(ValueError):
        _top1_credits(short, examples)


def test_the_credits_read_back_are_those_the_evaluation_averaged() -> None:
    """Through the real ``evaluate`` (its scorer scripted): one credit per pick, in order,
    whose mean is the evaluation's top-1, over groups of 2-4 images with ties and a NaN."""
    from pathlib import Path

    from training.data import Example
    from training.gate import _top1_credits
    from training.hps.evaluate import credits, evaluate

    scores = [
        [1.0, 3.0, 2.0],
        [3.0, 3.0],
        [5.0, 1.0, 0.0, 2.0],
        [float("nan"), 1.0],
        [2.0, 2.0, 2.0],
    ]
    chosen = [1, 0, 3, 1, 2]
    examples = [
        Example(str(i), "p", tuple(Path(f"{i}-{k}.png") for k in range(len(s))), c)
        for i, (s, c) in enumerate(zip(scores, chosen, strict=True))
    ]

    class Scripted:
        source = "scripted"

        def score_groups(self, groups: list[Any]) -> list[list[float]]:
            return scores[: len(groups)]

    result = evaluate(Scripted(), examples, bootstrap=0)
    read_back = _top1_credits(result, examples)
    assert read_back == [credits(s, c)[0] for s, c in zip(scores, chosen, strict=True)]
    assert read_back == [1.0, 0.5, 0.0, 0.0, pytest.approx(1 / 3)]
    assert sum(read_back) / len(read_back) == pytest.approx(result.top1)
