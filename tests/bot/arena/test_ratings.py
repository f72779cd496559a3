"""Bradley–Terry ratings: known strengths recovered, ties, the cluster bootstrap, head-to-head."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.arena.ratings import ELO, Match, fit, head_to_head, rate

STRENGTHS = {None: 0.0, 1: 0.6, 2: 1.2, 3: -0.6}  # log-strengths; the base is the anchor


def synthetic(sets: int, seed: int, raters: int = 3) -> list[Match]:
    """Mixed sets of two random versions; each set's raters share the set's verdict more
    often than chance would (a set is a cluster: its picks are not independent)."""
    rng = np.random.default_rng(seed)
    versions = list(STRENGTHS)
    matches = []
    for s in range(sets):
        a, b = (versions[k] for k in rng.choice(len(versions), 2, replace=False))
        p = 1 / (1 + math.exp(-(STRENGTHS[a] - STRENGTHS[b])))
        first = rng.random() < p
        for _ in range(int(rng.integers(1, raters + 1))):
            won = first if rng.random() < 0.7 else rng.random() < p  # raters mostly agree
            winner, loser = (a, b) if won else (b, a)
            matches.append(Match(winner, loser, cluster=s, prompt=f"prompt {s % 40}"))
    return matches


def test_recovers_the_order_and_roughly_the_strengths() -> None:
    matches = synthetic(3000, seed=1, raters=1)
    found = fit(matches)
    assert sorted(found, key=lambda v: found[v]) == [3, None, 1, 2]
    assert found[None] == 0.0
    for version, strength in STRENGTHS.items():
        assert found[version] == pytest.approx(strength, abs=0.15)


def test_the_cluster_bootstrap_interval_covers_and_is_seeded() -> None:
    matches = synthetic(800, seed=2)
    rated = rate(matches, bootstrap=300, seed=5)
    assert rated.anchor is None and rated.sets == 800 and rated.matches == len(matches)
    assert [r.version for r in rated.ratings] == [2, 1, None, 3]
    for r in rated.ratings:
        assert r.low <= r.rating <= r.high
        truth = STRENGTHS[r.version] * ELO
        assert r.low - 1e-9 <= truth <= r.high + 1e-9, (r, truth)
    assert rate(matches, bootstrap=300, seed=5) == rated  # deterministic
    # Resampling whole sets is wider than pretending every pick is independent.
    loose = [Match(m.winner, m.loser, cluster=None) for m in matches]
    naive = rate(loose, bootstrap=300, seed=5)
    width = {r.version: r.high - r.low for r in rated.ratings}
    assert all(width[r.version] > r.high - r.low for r in naive.ratings if r.version is not None)


def test_coverage_over_repeated_experiments() -> None:
    """The 95% interval of version 2 holds its true strength in most of 20 experiments."""
    covered = 0
    for seed in range(20):
        rated = rate(synthetic(300, seed=100 + seed), bootstrap=200, seed=seed)
        r = next(r for r in rated.ratings if r.version == 2)
        covered += r.low <= STRENGTHS[2] * ELO <= r.high
    assert covered >= 16


def test_ties_count_half_a_win_each() -> None:
    tied = [Match(1, None, score=0.5, cluster=k) for k in range(50)]
    assert fit(tied)[1] == pytest.approx(0.0, abs=1e-9)
    # 30 wins and 40 ties against 30 losses: a 60% score, log-odds log(1.5) (nearly: the prior)
    mixed = (
        [Match(1, None) for _ in range(30)]
        + [Match(None, 1) for _ in range(30)]
        + [Match(1, None, score=0.5) for _ in range(40)]
    )
    assert fit(mixed)[1] == pytest.approx(0.0, abs=1e-9)
    leaning = [Match(1, None) for _ in range(60)] + [Match(None, 1) for _ in range(40)]
    assert fit(leaning)[1] == pytest.approx(math.log(1.5), abs=0.01)
    halves = [Match(1, None, score=0.6) for _ in range(100)]  # a fractional score
    assert fit(halves)[1] == pytest.approx(math.log(1.5), abs=0.01)


def test_head_to_head_counts_wins_and_prompts() -> None:
    matches = [
        Match(1, None, prompt="cat"),
        Match(1, None, prompt="cat"),
        Match(None, 1, prompt="cat"),
        Match(None, 1, prompt="dog"),
        Match(1, None, prompt="owl", score=0.5),
        Match(2, 1, prompt="cat"),
    ]
    pairs = {(h.a, h.b): h for h in head_to_head(matches)}
    assert set(pairs) == {(None, 1), (1, 2)}
    base_vs_1 = pairs[(None, 1)]
    assert base_vs_1.comparisons == 5
    assert base_vs_1.wins_a == pytest.approx(2.5)  # dog, one cat, half the owl tie
    assert base_vs_1.win_rate_a == pytest.approx(0.5)
    # prompts: cat (1 of 3: lost), dog (won), owl (tied: half) -> 1.5 / 3
    assert base_vs_1.prompts == 3 and base_vs_1.prompt_win_rate_a == pytest.approx(0.5)
    one_vs_2 = pairs[(1, 2)]
    assert (one_vs_2.comparisons, one_vs_2.wins_a, one_vs_2.prompt_win_rate_a) == (1, 0.0, 0.0)
    counted = {r.version: r.comparisons for r in rate(matches, bootstrap=0).ratings}
    assert counted == {None: 5, 1: 6, 2: 1}


def test_edge_cases_stay_finite() -> None:
    empty = rate([])
    assert empty.ratings == [] and empty.head_to_head == [] and empty.sets == 0
    alone = rate([], [None], bootstrap=50)
    assert [(r.version, r.rating, r.comparisons) for r in alone.ratings] == [(None, 0.0, 0)]
    # An adapter that won every one of 200 sets: ahead, and finite thanks to the prior.
    always = rate([Match(4, None, cluster=k) for k in range(200)], bootstrap=50)
    top = always.ratings[0]
    assert top.version == 4 and 0 < top.rating < 3000 and math.isfinite(top.high)
    assert always.anchor is None
    # Without the base, the lowest id is the anchor.
    no_base = rate([Match(7, 5), Match(5, 7), Match(7, 5)], bootstrap=0)
    assert no_base.anchor == 5 and {r.version: r.rating for r in no_base.ratings}[5] == 0.0
    with pytest.raises(ValueError):
        fit([Match(1, 1)])
