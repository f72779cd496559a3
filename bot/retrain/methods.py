"""The adapter stage's methods (``retrain.adapter_method``): the HPS paper's LoRA, and
Diffusion-DPO straight from the picks.

Each is a trainer sub-command with a stage folder of its own in the run's folder
(``python -m training gate adapt`` in ``adapter/``: HPS selects, the LoRA learns; ``gate
dpo`` in ``adapter-dpo/``: DPO learns from the picks, HPS only judges). Both take the same
arguments, write the same gate figures (their ``method`` says which) and face the same
gates. With ``both``, each candidate is registered with its figures and its model-gate
verdict, and one goes on (promoted by the model gate, or put before people): the one the
model gate passed, if only one did, else the one with the higher mean HPS gain over what
serves on the same held-out prompts and seeds. The other stays a registered candidate; an
admin can still put it before people (``prefloop arena start VERSION``).

Two candidates judged on the same items are two chances to promote noise: when more than
one is judged, each one's paired evidence pays for every try across the methods
(:func:`judged_all`: its sign test's p-value times all the tries, Bonferroni), so the
chance of a wrong promotion stays within ``1 - gate_confidence``. A method whose stage
fails does not take the other's candidate with it (bot/retrain/stages.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.retrain.evidence import ADAPTER_ITEMS, judge
from training.evidence import Paired


@dataclass(frozen=True)
class Method:
    name: str  # what the gate file's ``method`` and the setting say: lora, dpo
    command: str  # the trainer's gate sub-command
    folder: str  # the stage's folder in the run's folder
    noun: str  # how a summary names its candidate ("adapter v3 promoted …")


LORA = Method("lora", "adapt", "adapter", "adapter")
DPO = Method("dpo", "dpo", "adapter-dpo", "DPO adapter")
METHODS = {method.name: method for method in (LORA, DPO)}


def chosen(settings: Settings) -> list[Method]:
    """The methods the adapter stage trains, in order."""
    method = settings.retrain.adapter_method
    return [LORA, DPO] if method == "both" else [METHODS[method]]


@dataclass
class Candidate:
    """One method's candidate: its gate figures and what the model gate holds against it."""

    method: Method
    gate: dict[str, Any]
    reasons: list[str]
    evidence: dict[str, Any]  # bot/retrain/evidence.py's record
    figures: str  # its figures as the summary gives them


def arguments(
    method: Method, settings: Settings, data: Path, out: Path, hps: str, active: str | None
) -> list[str]:
    """The trainer's arguments for ``method``'s stage: train on ``data`` into ``out``,
    judge with ``hps`` against ``active`` (None: the bare base)."""
    config = settings.retrain
    args = [
        method.command,
        "--data",
        str(data),
        "--out",
        str(out),
        "--hps",
        hps,
        "--generator",
        settings.generator.model,
        "--seeds",
        str(config.eval_seeds),
        "--limit",
        str(config.eval_prompts),
        "--eval-steps",
        str(config.eval_steps),
    ]
    if config.adapter_steps:
        args += ["--steps", str(config.adapter_steps)]
    if active:
        args += ["--active", active]
    return args


def judged(method: Method, gate: dict[str, Any], settings: Settings) -> Candidate:
    """The candidate ``gate`` describes, and the model gate's reasons against it: a win
    rate below ``adapter_min_win_rate``, no mean HPS gain, or no paired evidence."""
    config = settings.retrain
    gate.setdefault("method", method.name)  # a gate file from before methods
    reasons = []
    if gate["win_rate"] < config.adapter_min_win_rate:
        reasons.append(
            f"win rate {gate['win_rate']:.1%} is below {config.adapter_min_win_rate:.1%}"
        )
    if gate["mean_difference"] <= 0:
        reasons.append(f"mean HPS change {gate['mean_difference']:+.3f} is no gain")
    evidence = judge(gate, settings, ADAPTER_ITEMS)
    if evidence.reason:
        reasons.append(evidence.reason)
    figures = (
        f"win rate {gate['win_rate']:.1%} over {gate['prompts']} "
        f"held-out prompts against {gate['against']}{evidence.figures}, "
        + (
            f"served with {gate['negative_prompt']!r} as the negative prompt"
            if gate.get("negative_prompt")
            else "served without a negative prompt"
        )
    )
    return Candidate(method, gate, reasons, evidence.record, figures)


def judged_all(
    finished: list[tuple[Method, dict[str, Any]]], settings: Settings
) -> list[Candidate]:
    """The candidates of the methods whose stage ``finished``, each held against the model
    gate (:func:`judged`). With more than one, each one's paired evidence counts every
    try on the held-out items across the methods (each gate's ``paired.tests``: the LoRA
    tries two servings): its p-value is recomputed for them all, and what it said alone
    is kept as ``paired_alone``."""
    if len(finished) < 2:
        return [judged(method, gate, settings) for method, gate in finished]
    tries = sum(_tries(gate) for _, gate in finished)
    return [judged(method, _tried(gate, tries), settings) for method, gate in finished]


def _tries(gate: dict[str, Any]) -> int:
    try:
        return Paired.from_dict(gate["paired"]).tests
    except (KeyError, TypeError, ValueError):
        return 1  # no readable evidence: the gate refuses it anyway (bot/retrain/evidence.py)


def _tried(gate: dict[str, Any], tries: int) -> dict[str, Any]:
    try:
        evidence = Paired.from_dict(gate["paired"])
    except (KeyError, TypeError, ValueError):
        return gate
    return {
        **gate,
        "paired": {**gate["paired"], **evidence.tried(tries).to_dict()},
        "paired_alone": gate["paired"],
    }


def finalist(candidates: list[Candidate]) -> Candidate:
    """The candidate that goes on: passed the model gate, then the larger mean gain."""
    return max(candidates, key=lambda c: (not c.reasons, c.gate["mean_difference"]))
