"""Which instances a fit trains on, with what target and weight, and the count of each.

A prefloop export holds picks, ties ("No favourite"), "None are good" votes and control
sets, each with the voter's reliability weight (see docs/dataset-format.md). By default
a fit trains on picks and ties (a tie's target is uniform over its images), leaves
"none" sets out (``none_as_negatives`` trains them against the batch's picked images:
training/hps/loss.py), leaves control sets out (their known-worse image is corrupted on
purpose: not what the generator makes; ``include_controls`` keeps them), and weights
each instance by its rater's reliability weight, divided by the mean weight of the
instances used, so the loss keeps its scale and a batch of unreliable raters moves the
model less than a batch of careful ones.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from training.data import VOTES, Example, PreferenceData
from training.hps.loss import NONE, PICK, TIE

KINDS = {"pick": PICK, "tie": TIE, "none": NONE}


@dataclass(frozen=True)
class Objective:
    """What the fit learns from (the options of ``prefloop train hps``)."""

    ties: bool = True  # ties with a uniform target; False leaves them out
    none_as_negatives: bool = False  # "None are good" sets pushed below picked images
    rater_weights: bool = True  # each instance weighted by its rater's reliability
    include_controls: bool = False  # control sets trained like ordinary ones

    def votes(self) -> tuple[str, ...]:
        """The vote kinds trained on."""
        return tuple(
            v
            for v in VOTES
            if v == "pick" or (v == "tie" and self.ties) or (v == "none" and self.none_as_negatives)
        )


@dataclass
class TrainingSet:
    examples: list[Example]
    weights: list[float]  # per example, normalised to a mean of 1
    summary: dict[str, Any] = field(default_factory=dict)


def target(example: Example) -> list[float]:
    """The target distribution over the example's images ("none": unused, all zero)."""
    n = len(example.images)
    if example.vote == "pick":
        assert example.chosen is not None
        return [1.0 if i == example.chosen else 0.0 for i in range(n)]
    if example.vote == "tie":
        return [1.0 / n] * n
    return [0.0] * n


def training_set(data: PreferenceData, objective: Objective) -> TrainingSet:
    """The instances of ``data`` that ``objective`` trains on, their weights, and a
    summary: how many of each kind were used and left out, and the weights' spread."""
    wanted = set(objective.votes())
    used: list[Example] = []
    left_out: Counter[str] = Counter(data.left_out)
    for example in data.examples:
        if example.control is not None and not objective.include_controls:
            left_out["control"] += 1
        elif example.vote not in wanted:
            left_out[example.vote] += 1
        else:
            used.append(example)
    raw = [e.weight for e in used]
    if objective.rater_weights and used:
        mean = sum(raw) / len(raw)
        weights = [w / mean for w in raw] if mean > 0 else [0.0] * len(raw)
    else:
        weights = [1.0] * len(used)
    counts: dict[str, int] = {v: sum(e.vote == v for e in used) for v in VOTES}
    counts["control"] = sum(e.control is not None for e in used)
    summary = {
        "instances": len(used),
        "used": counts,
        "left_out": {k: left_out.get(k, 0) for k in (*VOTES, "control")},
        "weights": weight_summary(raw, applied=objective.rater_weights),
    }
    return TrainingSet(used, weights, summary)


def weight_summary(raw: list[float], *, applied: bool) -> dict[str, Any]:
    """The raters' weights over the instances used (as exported, before normalising):
    min, mean, max, how many are 0, and the effective number of instances
    (sum w)^2 / sum w^2 (equal weights: all of them), when the weights are applied."""
    if not raw:
        return {"applied": applied, "min": None, "mean": None, "max": None, "zero": 0}
    total, squares = sum(raw), sum(w * w for w in raw)
    return {
        "applied": applied,
        "min": min(raw),
        "mean": total / len(raw),
        "max": max(raw),
        "zero": sum(w == 0 for w in raw),
        "effective_instances": (total * total / squares if squares else 0.0)
        if applied
        else float(len(raw)),
    }
