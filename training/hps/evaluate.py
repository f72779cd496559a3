"""How well a scorer predicts people's picks, beside the baselines an admin needs.

Top-1 accuracy: the picked image scores highest of its 2-4 (a tie shares the credit, so
chance is exactly the mean of 1/k). Pairwise accuracy: the picked image scores above each
other image (a tie counts half; chance is 0.5). Both overall and by group size, with
bootstrap 95% intervals over instances. For scale, the HPS paper's test set (2-4 images):
HPS 43.5%, CLIP 32.9%, random 26.1% top-1.

Beside them, the ceiling people set (:func:`human_ceiling`): on the sets voted by two or
more members, how often one member's vote predicts another's (pairwise agreement, the
paper's 42.0% for humans) and Krippendorff's alpha, with the model's top-1 on the picks
of those same sets (training/agreement.py has the arithmetic).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.agreement import agreement
from training.data import Example

GROUPS_PER_CALL = 64  # instances scored together (their images share batches)


@dataclass
class Evaluation:
    name: str
    source: str
    n: int
    top1: float
    pairwise: float
    top1_ci: tuple[float, float] | None = None
    pairwise_ci: tuple[float, float] | None = None
    by_size: dict[int, dict[str, float]] = field(default_factory=dict)
    picked_scores: list[float] = field(default_factory=list, repr=False)
    other_scores: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("picked_scores")
        data.pop("other_scores")
        return data


def judged(examples: Sequence[Example]) -> list[Example]:
    """The instances accuracy is measured on: picks on ordinary sets. A tie or "None are
    good" names no image to rank first, and a control set's answer was made on purpose."""
    return [e for e in examples if e.vote == "pick" and e.control is None]


def credits(scores: Sequence[float], chosen: int) -> tuple[float, float]:
    """(top-1 credit, pairwise credit) of one instance; a NaN score is a miss."""
    if any(math.isnan(s) for s in scores):
        return 0.0, 0.0  # a diverged model must not look perfect
    picked = scores[chosen]
    others = [s for i, s in enumerate(scores) if i != chosen]
    above = sum(s > picked for s in others)
    tied = sum(s == picked for s in others)
    top1 = 0.0 if above else 1.0 / (1 + tied)
    pairwise = sum(1.0 if picked > s else 0.5 if picked == s else 0.0 for s in others)
    return top1, pairwise / len(others)


def summarise(
    name: str,
    source: str,
    sizes: Sequence[int],
    top1: Sequence[float],
    pairwise: Sequence[float],
    *,
    bootstrap: int,
    seed: int,
) -> Evaluation:
    n = len(sizes)
    result = Evaluation(name, source, n, _mean(top1), _mean(pairwise))
    if bootstrap and n:
        result.top1_ci = bootstrap_interval(top1, bootstrap, seed)
        result.pairwise_ci = bootstrap_interval(pairwise, bootstrap, seed + 1)
    for size in sorted(set(sizes)):
        rows = [i for i, s in enumerate(sizes) if s == size]
        result.by_size[size] = {
            "n": len(rows),
            "top1": _mean([top1[i] for i in rows]),
            "pairwise": _mean([pairwise[i] for i in rows]),
        }
    return result


def evaluate(
    scorer: Any,
    examples: Sequence[Example],
    *,
    name: str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Score every instance with ``scorer`` (an HPSScorer) and measure agreement."""
    top1: list[float] = []
    pairwise: list[float] = []
    sizes: list[int] = []
    picked: list[float] = []
    other: list[float] = []
    for start in range(0, len(examples), GROUPS_PER_CALL):
        chunk = examples[start : start + GROUPS_PER_CALL]
        scored = scorer.score_groups([(e.prompt, e.images) for e in chunk])
        for example, scores in zip(chunk, scored, strict=True):
            chosen = example.chosen
            if chosen is None:
                raise ValueError(
                    f"instance {example.id} is a {example.vote} vote: accuracy is measured on picks"
                )
            t, p = credits(scores, chosen)
            top1.append(t)
            pairwise.append(p)
            sizes.append(len(scores))
            picked.append(scores[chosen])
            other.extend(s for i, s in enumerate(scores) if i != chosen)
    result = summarise(
        name or scorer.source, scorer.source, sizes, top1, pairwise, bootstrap=bootstrap, seed=seed
    )
    result.picked_scores, result.other_scores = picked, other
    return result


@dataclass
class Ceiling:
    """How well people agree on the sets several of them voted on."""

    sets: int  # sets with 2+ votes
    votes: int  # votes on them (picks, ties, "none")
    pairwise: float | None  # one member's vote predicting another's (None: no such set)
    alpha: float | None  # Krippendorff's alpha, nominal (None: undefined)
    picks: list[Example] = field(default_factory=list, repr=False)  # the picks among them
    model_top1: float | None = None  # the model's top-1 on those picks

    def summary(self) -> dict[str, Any]:
        return {
            "sets": self.sets,
            "votes": self.votes,
            "pairwise": self.pairwise,
            "alpha": self.alpha,
            "picks": len(self.picks),
            "model_top1": self.model_top1,
        }


def shared_sets(examples: Sequence[Example]) -> list[list[Example]]:
    """The votes on each set that two or more members voted on (in first-seen order)."""
    sets: dict[tuple[object, ...], list[Example]] = {}
    for example in examples:
        sets.setdefault(example.set_key, []).append(example)
    return [votes for votes in sets.values() if len(votes) >= 2]


def human_ceiling(examples: Sequence[Example]) -> Ceiling:
    """Agreement among people on ``examples`` (every vote kind counts: a pick of image k,
    "tie" and "none" are the categories)."""
    shared = shared_sets(examples)
    found = agreement([[e.label for e in votes] for votes in shared])
    picks = [e for votes in shared for e in votes if e.vote == "pick"]
    return Ceiling(found.units, found.labels, found.pairwise, found.alpha, picks)


def random_baseline(examples: Sequence[Example]) -> Evaluation:
    """The exact expectation of picking uniformly at random (no interval: it is exact)."""
    sizes = [len(e.images) for e in examples]
    return summarise(
        "random",
        "exact expectation",
        sizes,
        [1 / k for k in sizes],
        [0.5] * len(sizes),
        bootstrap=0,
        seed=0,
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def bootstrap_interval(values: Sequence[float], rounds: int, seed: int) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean over resampled instances."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return means[int(0.025 * (rounds - 1))], means[int(0.975 * (rounds - 1))]


# ----- the report --------------------------------------------------------------------


def write_report(
    out: Path,
    evaluations: Sequence[Evaluation],
    *,
    data: str = "",
    ceiling: Ceiling | None = None,
) -> Path:
    """metrics.json, report.md and two PNG plots in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"data": data, "models": [e.summary() for e in evaluations]}
    if ceiling is not None:
        metrics["human_agreement"] = ceiling.summary()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    lines = [
        "# HPS evaluation",
        "",
        f"Data: {data}" if data else "",
        f"Instances: {evaluations[0].n if evaluations else 0}",
        "",
        "| model | top-1 | 95% CI | pairwise | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for e in evaluations:
        top1, pairwise = _ci(e.top1_ci), _ci(e.pairwise_ci)
        lines.append(f"| {e.name} | {e.top1:.1%} | {top1} | {e.pairwise:.1%} | {pairwise} |")
    sizes = sorted({k for e in evaluations for k in e.by_size})
    lines += ["", "Top-1 by number of images:", ""]
    lines.append("| model | " + " | ".join(f"{k} images" for k in sizes) + " |")
    lines.append("|---|" + "---|" * len(sizes))
    for e in evaluations:
        cells = [
            f"{e.by_size[k]['top1']:.1%} (n={e.by_size[k]['n']})" if k in e.by_size else "–"
            for k in sizes
        ]
        lines.append(f"| {e.name} | " + " | ".join(cells) + " |")
    if ceiling is not None:
        lines += ["", ceiling_line(ceiling)]
    lines += [
        "",
        "For scale, the HPS paper (2-4 images): HPS 43.5%, CLIP 32.9%, random 26.1% top-1;",
        "humans agreed 42.0% of the time.",
        "",
        "![accuracy by group size](accuracy_by_size.png)",
        "![scores of picked and other images](scores.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    _plots(out, evaluations, sizes)
    return out


def ceiling_line(ceiling: Ceiling) -> str:
    """The ceiling in a sentence, for the report and the terminal."""
    if ceiling.pairwise is None:
        return "Human agreement: no set was voted by two or more members."
    alpha = f"{ceiling.alpha:.3f}" if ceiling.alpha is not None else "undefined"
    model = (
        f"; the model's top-1 on their {len(ceiling.picks)} picks: {ceiling.model_top1:.1%}"
        if ceiling.model_top1 is not None
        else ""
    )
    return (
        f"Human agreement on {ceiling.sets} sets voted by 2+ members ({ceiling.votes} votes): "
        f"one member's vote predicts another's {ceiling.pairwise:.1%} of the time, "
        f"Krippendorff's alpha {alpha}{model}."
    )


def _ci(interval: tuple[float, float] | None) -> str:
    return f"{interval[0]:.1%}–{interval[1]:.1%}" if interval else "exact"


def _plots(out: Path, evaluations: Sequence[Evaluation], sizes: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(1, len(evaluations))
    for i, e in enumerate(evaluations):
        xs = [j + i * width for j in range(len(sizes))]
        axis.bar(xs, [e.by_size.get(k, {}).get("top1", 0.0) for k in sizes], width, label=e.name)
    axis.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(sizes))], [f"{k} images" for k in sizes]
    )
    axis.set_ylabel("top-1 accuracy")
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "accuracy_by_size.png", dpi=100)
    plt.close(figure)

    scored = [e for e in evaluations if e.picked_scores]
    figure, axes = plt.subplots(1, max(1, len(scored)), figsize=(4 * max(1, len(scored)), 3.5))
    for axis, e in zip([axes] if len(scored) <= 1 else list(axes), scored, strict=False):
        low, high = min(e.other_scores + e.picked_scores), max(e.other_scores + e.picked_scores)
        bins = [low + (high - low) * i / 30 for i in range(31)] if high > low else 30
        axis.hist(e.other_scores, bins=bins, alpha=0.6, density=True, label="other images")
        axis.hist(e.picked_scores, bins=bins, alpha=0.6, density=True, label="picked image")
        axis.set_title(e.name, fontsize="small")
        axis.set_xlabel("score (100 · cos)")
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "scores.png", dpi=100)
    plt.close(figure)
