"""training/agreement.py: pairwise agreement and Krippendorff's alpha (nominal)."""

from __future__ import annotations

import pytest

from training.agreement import agreement, krippendorff_alpha_nominal, pairwise_agreement

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the nominal example
# (also on Wikipedia): 4 observers, 12 units, missing values left out; alpha = 0.743.
# Columns are units, rows observers A-D; None is a missing value.
RELIABILITY_DATA = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def textbook_units() -> list[list[int]]:
    return [
        [row[unit] for row in RELIABILITY_DATA if row[unit] is not None]
        for unit in range(len(RELIABILITY_DATA[0]))
    ]


def test_krippendorffs_nominal_example() -> None:
    alpha = krippendorff_alpha_nominal(textbook_units())
    assert alpha == pytest.approx(0.743, abs=5e-4)


def test_the_textbook_example_by_hand() -> None:
    # Unit 12 has one value (unpairable) and is left out; 40 pairable values remain.
    result = agreement(textbook_units())
    assert (result.units, result.labels) == (11, 40)
    # Units 1,3,4,5,7,9,10,11 agree fully; unit 2 (2,2,3,2) has 6 of 12 ordered pairs
    # agreeing; unit 6 (1,2,3,4) none; unit 8 (1,1,2,1) 6 of 12.
    assert result.pairwise == pytest.approx((8 + 0.5 + 0 + 0.5) / 11)


def test_hand_computed_small_cases() -> None:
    # One agreeing and one disagreeing pair: half agree, and alpha is exactly chance (0):
    # n_0 = 3, n_1 = 1, n = 4, observed 2, expected 2·3·1 → 1 - 3·2/6.
    units = [["0", "0"], ["0", "1"]]
    assert pairwise_agreement(units) == 0.5
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.0)
    # Always disagreeing in the same way is worse than chance: 1 - 3·4/8.
    assert krippendorff_alpha_nominal([["a", "b"], ["a", "b"]]) == pytest.approx(-0.5)
    assert pairwise_agreement([["a", "b"], ["a", "b"]]) == 0.0
    # Perfect agreement on varied labels.
    assert krippendorff_alpha_nominal([["1", "1"], ["tie", "tie"], ["none", "none"]]) == 1.0
    # Three raters, two agree: 2 of 6 ordered pairs; each unit counts once.
    assert pairwise_agreement([["0", "0", "1"]]) == pytest.approx(1 / 3)
    assert pairwise_agreement([["0", "0", "1"], ["tie", "tie"]]) == pytest.approx(2 / 3)


def test_undefined_cases_are_none() -> None:
    assert pairwise_agreement([]) is None
    assert krippendorff_alpha_nominal([]) is None
    # Single-label units are unpairable.
    assert agreement([["0"], ["1"]]).as_dict() == {
        "units": 0,
        "labels": 0,
        "pairwise": None,
        "alpha": None,
    }
    # Everyone always said the same: nothing varies, alpha is undefined (not 1).
    same = [["2", "2"], ["2", "2", "2"]]
    assert pairwise_agreement(same) == 1.0
    assert krippendorff_alpha_nominal(same) is None


def test_generators_are_accepted() -> None:
    units = [["0", "1"], ["1", "1"]]
    assert agreement(iter(units)) == agreement(units)
    assert krippendorff_alpha_nominal(u for u in units) == krippendorff_alpha_nominal(units)
