"""The model gates' evidence rule, in the retrain's words: is the candidate shown better?

The training stages write a paired comparison of the candidate and what serves on the
same held-out items (``gate.json``'s ``paired``, training/evidence.py); :func:`judge`
turns it into a decision at ``retrain.gate_confidence``: no reason against the candidate,
or why not and, when it only looks better, how many held-out items (and picks in all) a
decision needs. The figures go into the run's summary and the registered version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bot.config import Settings
from training.evidence import Paired, decide


@dataclass(frozen=True)
class Items:
    """What a stage's held-out items are, for its decision's wording."""

    unit: str  # "held-out picks"
    in_all: str  # what the held-out ones are a test_fraction of: "picks"
    points: bool  # differences are shares, shown in points (HPS top-1), or raw (HPS scores)


HPS_ITEMS = Items("held-out picks", "picks", points=True)
ADAPTER_ITEMS = Items("held-out prompts", "prompts with picks", points=False)


@dataclass(frozen=True)
class Judged:
    reason: str | None  # None: the evidence says better
    figures: str  # "; paired difference +84.2 points, 95% CI ..., p = ...", or ""
    record: dict[str, Any]  # kept with the candidate and in the run's outcome


def judge(gate: dict[str, Any], settings: Settings, items: Items) -> Judged:
    """The paired evidence's verdict at ``retrain.gate_confidence``: no reason when the
    candidate is shown better than what serves; else why not and, when it only looks
    better, how many held-out items (and picks in all) a decision needs. A gate file
    without sane evidence (an older trainer's) is not enough evidence, never a crash."""
    confidence = settings.retrain.gate_confidence
    try:
        evidence = Paired.from_dict(gate["paired"])
    except (KeyError, TypeError, ValueError) as error:
        why = "has none" if isinstance(error, KeyError) else f"is unreadable ({error})"
        return Judged(
            "not enough evidence — the trainer's figures hold no paired comparison with what "
            f"serves on the same {items.unit} (its gate file {why}: an older trainer wrote "
            "it?); a new retrain judges it again",
            "",
            {"verdict": "no evidence", "confidence": confidence},
        )
    decision = decide(evidence, confidence)
    p = _p(evidence.p_value)
    low, high = evidence.interval
    figures = (
        f"; paired difference {_amount(evidence.mean_difference, items)}, 95% CI "
        f"{_amount(low, items, unit=False)} to {_amount(high, items, unit=False)}, {p}"
    )
    counts = f"{evidence.n} {items.unit}, better on {evidence.better}, worse on {evidence.worse}"
    record: dict[str, Any] = {"confidence": confidence, "p_value": evidence.p_value}
    if decision.better:
        return Judged(None, figures, {**record, "verdict": "better"})
    if not decision.looks_better:
        return Judged(
            f"no better than what serves on the same {counts} ({p})",
            figures,
            {**record, "verdict": "not better"},
        )
    needed = decision.needed or evidence.n + 1
    reason = f"not enough evidence — {counts} ({p})"
    if evidence.p_value < 1 - confidence:
        reason += f", but its 95% CI reaches {_amount(low, items)}"
    about = "at least" if decision.at_least else "about"
    reason += f"; a decision needs {about} {needed} {items.unit}"
    fraction = settings.export.test_fraction
    in_all = math.ceil(needed / fraction) if fraction > 0 else None
    if in_all is not None:
        reason += f" (about {in_all} {items.in_all} in all)"
    if items is ADAPTER_ITEMS and needed > settings.retrain.eval_prompts:
        reason += f" and PREFLOOP_RETRAIN__EVAL_PROMPTS of at least {needed}"
    record.update(verdict="not enough evidence", needed=needed, at_least=decision.at_least)
    if in_all is not None:
        record["needed_in_all"] = in_all
    return Judged(reason, figures, record)


def _p(value: float) -> str:
    return "p < 0.0001" if value < 0.0001 else f"p = {value:.2g}"


def _amount(value: float, items: Items, *, unit: bool = True) -> str:
    if not items.points:
        return f"{value:+.3f}"
    return f"{100 * value:+.1f}" + (" points" if unit else "")
