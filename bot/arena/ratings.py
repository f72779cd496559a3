"""Bradley–Terry ratings of generator versions from members' picks on mixed sets.

Model: version i beats version j with probability ``sigmoid(t_i - t_j)``; ``t`` is a
log-strength. A pick is a match with the winner's score 1; a tie (score 0.5) is read as
half a win for each side, i.e. the fit maximises

    sum_m  w_m * [ s_m * log sigmoid(t_a - t_b) + (1 - s_m) * log sigmoid(t_b - t_a) ]

(the "score as a fractional win" reading, as Elo does). A "No favourite" or "None are
good" vote on a mixed set is such a tie (bot/arena/outcomes.py). Why not Davidson's tie
model: its extra tie parameter would mix "equally good" with "equally bad" and be fit
from few votes; the fractional reading needs none, and counts a tie the way the
people's gate (bot/arena/sequential.py) does, half a win.

The fit is Newton's method on that log-likelihood plus a weak Gaussian prior on the
log-strengths (``prior_sd``): without it a version that won every match would have an
infinite rating; with it the rating stays finite and data soon outweighs the prior.
Ratings are reported on the Elo scale (400 points = 10:1 odds), anchored at the bare
base (or, when the base was not compared, the lowest version id) = 0.

Intervals: a percentile bootstrap that resamples mixed SETS, not picks: several members'
picks on one set share its images and prompt and are not independent, so a set is a
cluster and stays whole in every resample. Seeded: the same matches give the same report.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.arena.versions import Version

ELO = 400.0 / math.log(10.0)  # log-strength -> Elo points
PRIOR_SD = 3.0  # log-strength; weak: worth less than half a match per version


@dataclass(frozen=True)
class Match:
    """One comparison of two versions: the winner's score (1 a win, 0.5 a tie), its weight,
    the cluster it belongs to (its mixed set) and its prompt."""

    winner: Version
    loser: Version
    score: float = 1.0
    weight: float = 1.0
    cluster: Hashable = None  # None: a cluster of its own
    prompt: str = ""


@dataclass(frozen=True)
class Rating:
    version: Version
    rating: float  # Elo points, the anchor = 0
    low: float  # the bootstrap interval (equal to rating with no bootstrap)
    high: float
    comparisons: int  # matches it played
    score: float  # its wins (a tie counts half)


@dataclass(frozen=True)
class HeadToHead:
    """Version ``a`` against ``b`` (``a`` the lower version in sort order)."""

    a: Version
    b: Version
    comparisons: int
    wins_a: float  # a tie counts half
    win_rate_a: float
    prompts: int  # distinct prompts they met on
    prompt_win_rate_a: float  # share of those prompts where a won most matches (ties: half)


@dataclass(frozen=True)
class Ratings:
    ratings: list[Rating]  # best first
    head_to_head: list[HeadToHead]
    anchor: Version | None  # the version rated 0; None also when there is nothing to rate
    matches: int
    sets: int  # clusters: the mixed sets the matches came from
    bootstrap: int
    confidence: float


def order(version: Version) -> tuple[int, int]:
    """The base first, then adapters by id."""
    return (0, 0) if version is None else (1, version)


def fit(
    matches: Sequence[Match],
    versions: Iterable[Version] = (),
    *,
    prior_sd: float = PRIOR_SD,
) -> dict[Version, float]:
    """Log-strengths by penalised maximum likelihood, anchored at :func:`anchor_of` = 0."""
    names = _versions(matches, versions)
    if not names:
        return {}
    index = {v: i for i, v in enumerate(names)}
    pairs, won, played = _pair_totals(matches, index)
    theta = _newton(len(names), pairs, won, played, 1.0 / prior_sd**2)
    theta -= theta[index[anchor_of(names)]]
    return {v: float(theta[i]) for v, i in index.items()}


def rate(
    matches: Sequence[Match],
    versions: Iterable[Version] = (),
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    prior_sd: float = PRIOR_SD,
) -> Ratings:
    """Ratings with cluster-bootstrap intervals, comparisons per version, head-to-head.

    ``versions`` adds versions that may have no matches yet (they get the prior's 0).
    """
    names = _versions(matches, versions)
    sets = len({_cluster(m, i) for i, m in enumerate(matches)})
    if not names:
        return Ratings([], [], None, 0, 0, bootstrap, confidence)
    index = {v: i for i, v in enumerate(names)}
    anchor = index[anchor_of(names)]
    precision = 1.0 / prior_sd**2
    pairs, won, played = _pair_totals(matches, index)
    theta = _newton(len(names), pairs, won, played, precision)
    theta -= theta[anchor]

    low, high = theta.copy(), theta.copy()
    if bootstrap > 0 and matches:
        clusters = {
            c: k for k, c in enumerate(dict.fromkeys(_cluster(m, i) for i, m in enumerate(matches)))
        }
        member = np.array([clusters[_cluster(m, i)] for i, m in enumerate(matches)])
        pair_of, s, w = _match_arrays(matches, index, pairs)
        rng = np.random.default_rng(seed)
        draws = np.empty((bootstrap, len(names)))
        for b in range(bootstrap):
            times = np.bincount(
                rng.integers(0, len(clusters), len(clusters)), minlength=len(clusters)
            )
            weight = w * times[member]
            boot_won = np.bincount(pair_of, weights=weight * s, minlength=len(pairs))
            boot_played = np.bincount(pair_of, weights=weight, minlength=len(pairs))
            t = _newton(len(names), pairs, boot_won, boot_played, precision)
            draws[b] = t - t[anchor]
        tail = (1 - confidence) / 2 * 100
        low, high = np.percentile(draws, [tail, 100 - tail], axis=0)

    counts = {v: 0 for v in names}
    scores = {v: 0.0 for v in names}
    for m in matches:
        counts[m.winner] += 1
        counts[m.loser] += 1
        scores[m.winner] += m.score
        scores[m.loser] += 1 - m.score
    rated = [
        Rating(
            v,
            float(theta[i] * ELO),
            float(min(low[i], theta[i]) * ELO),
            float(max(high[i], theta[i]) * ELO),
            counts[v],
            scores[v],
        )
        for v, i in index.items()
    ]
    rated.sort(key=lambda r: (-r.rating, order(r.version)))
    return Ratings(
        rated, head_to_head(matches), names[anchor], len(matches), sets, bootstrap, confidence
    )


def head_to_head(matches: Sequence[Match]) -> list[HeadToHead]:
    """Every pair of versions that met: matches, wins, win rate, and win rate by prompt."""
    played: dict[tuple[Version, Version], list[tuple[str, float]]] = {}
    for m in matches:
        a, b = sorted((m.winner, m.loser), key=order)
        score_a = m.score if m.winner == a else 1 - m.score
        played.setdefault((a, b), []).append((m.prompt, score_a))
    found = []
    for (a, b), games in sorted(
        played.items(), key=lambda item: (order(item[0][0]), order(item[0][1]))
    ):
        wins = sum(s for _, s in games)
        by_prompt: dict[str, list[float]] = {}
        for prompt, s in games:
            by_prompt.setdefault(prompt, []).append(s)
        credit = [
            1.0 if sum(s) > len(s) / 2 else 0.5 if sum(s) == len(s) / 2 else 0.0
            for s in by_prompt.values()
        ]
        found.append(
            HeadToHead(
                a, b, len(games), wins, wins / len(games), len(credit), sum(credit) / len(credit)
            )
        )
    return found


def anchor_of(versions: Iterable[Version]) -> Version:
    """The base when it is among them, else the lowest id."""
    return min(versions, key=order)


def _versions(matches: Sequence[Match], extra: Iterable[Version]) -> list[Version]:
    found = set(extra)
    for m in matches:
        if m.winner == m.loser:
            raise ValueError(f"a match of version {m.winner} against itself")
        if not 0.0 <= m.score <= 1.0:
            raise ValueError(f"a score is in [0, 1]; got {m.score}")
        found.update((m.winner, m.loser))
    return sorted(found, key=order)


def _cluster(match: Match, position: int) -> Hashable:
    return ("match", position) if match.cluster is None else ("set", match.cluster)


def _match_arrays(
    matches: Sequence[Match], index: dict[Version, int], pairs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per match: its pair's row in ``pairs``, the score of the pair's first version, weight."""
    row = {(int(i), int(j)): k for k, (i, j) in enumerate(pairs)}
    pair_of, s, w = [], [], []
    for m in matches:
        i, j = index[m.winner], index[m.loser]
        if i < j:
            pair_of.append(row[(i, j)])
            s.append(m.score)
        else:
            pair_of.append(row[(j, i)])
            s.append(1 - m.score)
        w.append(m.weight)
    return np.array(pair_of, dtype=int), np.array(s), np.array(w)


def _pair_totals(
    matches: Sequence[Match], index: dict[Version, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (i < j) that met, i's weighted score against j, and the weight played."""
    totals: dict[tuple[int, int], list[float]] = {}
    for m in matches:
        i, j = index[m.winner], index[m.loser]
        s = m.score if i < j else 1 - m.score
        key = (min(i, j), max(i, j))
        held = totals.setdefault(key, [0.0, 0.0])
        held[0] += m.weight * s
        held[1] += m.weight
    keys = sorted(totals)
    pairs = np.array(keys, dtype=int).reshape(-1, 2)
    won = np.array([totals[k][0] for k in keys])
    played = np.array([totals[k][1] for k in keys])
    return pairs, won, played


def _newton(
    n: int, pairs: np.ndarray, won: np.ndarray, played: np.ndarray, precision: float
) -> np.ndarray:
    """The penalised log-likelihood's maximum: concave (the prior makes it strictly so),
    so Newton's method from 0 converges; a step is halved while it does not improve."""
    theta = np.zeros(n)
    if len(pairs) == 0:
        return theta
    i, j = pairs[:, 0], pairs[:, 1]

    def objective(t: np.ndarray) -> float:
        d = t[i] - t[j]
        return float(
            np.sum(won * -np.logaddexp(0, -d) + (played - won) * -np.logaddexp(0, d))
            - precision / 2 * t @ t
        )

    current = objective(theta)
    for _ in range(100):
        d = theta[i] - theta[j]
        p = 1 / (1 + np.exp(-d))
        residual = won - played * p
        gradient = np.bincount(i, residual, n) - np.bincount(j, residual, n) - precision * theta
        curvature = played * p * (1 - p)
        hessian = -precision * np.eye(n)
        np.add.at(hessian, (i, i), -curvature)
        np.add.at(hessian, (j, j), -curvature)
        np.add.at(hessian, (i, j), curvature)
        np.add.at(hessian, (j, i), curvature)
        step = np.linalg.solve(hessian, -gradient)
        size = 1.0
        while size > 1e-6:
            trial = theta + size * step
            value = objective(trial)
            if value >= current - 1e-12:
                break
            size /= 2
        theta, previous, current = trial, current, value
        if np.max(np.abs(size * step)) < 1e-9 or abs(current - previous) < 1e-12:
            break
    return theta
