"""The model gates decide on paired evidence: a few held-out items promote nothing.

The trainer is scripted (tests/support/scripted_trainer.py); each test writes the paired
evidence a real stage would on the held-out items it names (training/evidence.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.registry import ModelRegistry
from bot.runtime import Platform
from tests.bot.retrain.test_retrain import _run, _seed, _use
from tests.support.retrain import scripted_gates
from training.evidence import paired


def _evidence(differences: list[float], against: str) -> dict[str, Any]:
    return {"against": against, **paired(differences).to_dict()}


async def test_three_held_out_picks_are_not_enough_evidence_and_say_what_is(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin with 12 picks: 3 held out, the candidate better on 2 of them. Today's
    figures (66.7% against 33.3%) would have promoted it; nothing changes now, and the
    outcome says how many picks a decision takes."""
    registry = ModelRegistry(platform.sessions)
    old_adapter = await registry.register("generator_adapter", "/models/lora-old", {})
    await registry.promote(old_adapter)
    _seed(platform, picks=12)
    gates = scripted_gates(hps_top1=2 / 3, win_rate=1.0)
    gates["hps"].update(test_instances=3, base={"top1": 1 / 3})
    gates["hps"]["paired"] = gates["hps"]["paired_base"] = _evidence([1.0, 1.0, 0.0], "base")
    gates["adapter"].update(prompts=3, against="/models/lora-old")
    gates["adapter"]["paired"] = _evidence([0.4, 0.2, 0.3], "/models/lora-old")
    _use(platform, monkeypatch, gates)
    announced: list[str] = []
    run = await _run(platform, announced)

    assert run.status == "succeeded"
    hps, adapter = run.outcome["hps"], run.outcome["adapter"]
    assert not hps["promoted"] and not adapter["promoted"]
    assert hps["reasons"] == [
        "not enough evidence — 3 held-out picks, better on 2, worse on 0 (p = 0.25); "
        "a decision needs at least 8 held-out picks (about 40 picks in all)"
    ]
    assert adapter["reasons"] == [
        "not enough evidence — 3 held-out prompts, better on 3, worse on 0 (p = 0.12); "
        "a decision needs at least 5 held-out prompts (about 25 prompts with picks in all)"
    ]
    assert hps["evidence"]["needed"] == 8 and hps["evidence"]["needed_in_all"] == 40
    assert f"HPS v{hps['version']} kept as a candidate: not enough evidence" in announced[0]
    assert "(top-1 66.7% vs 33.3% serving on 3 held-out picks;" in announced[0]
    assert await registry.active("hps") is None  # the serving models stay
    assert (await registry.active("generator_adapter")).id == old_adapter  # type: ignore[union-attr]
    version = {v.kind: v for v in await registry.versions()}["hps"]
    assert version.status == "candidate" and version.metrics["evidence"]["verdict"] == (
        "not enough evidence"
    )


async def test_strong_evidence_promotes_and_the_summary_gives_the_interval(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(platform)
    _use(platform, monkeypatch, scripted_gates(hps_top1=0.6, win_rate=0.9))
    announced: list[str] = []
    run = await _run(platform, announced)
    hps, adapter = run.outcome["hps"], run.outcome["adapter"]
    assert hps["promoted"] and adapter["promoted"], announced
    # 0.60 vs the base's 0.40 on 200 picks: better on 40, worse on none.
    assert (
        f"HPS v{hps['version']} promoted (top-1 60.0% vs 40.0% serving on 200 held-out "
        "picks; paired difference +20.0 points, 95% CI +" in hps["summary"]
    )
    assert hps["summary"].endswith(", p < 0.0001)")
    # 18 of 20 prompts won: p = 0.0002, and the interval is in HPS.
    assert (
        "win rate 90.0% over 20 held-out prompts against base; paired difference +0.400, "
        "95% CI +0.250 to +0.500, p = 0.0002, served without a negative prompt"
    ) in adapter["summary"]
    assert hps["evidence"]["verdict"] == adapter["evidence"]["verdict"] == "better"
    registry = ModelRegistry(platform.sessions)
    assert (await registry.active("hps")).id == hps["version"]  # type: ignore[union-attr]


async def test_looking_worse_is_no_better_and_asks_for_no_more_picks(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(platform)
    gates = scripted_gates(hps_top1=0.6, win_rate=0.9)
    gates["adapter"]["paired"] = _evidence([-0.2] * 12 + [0.1] * 8, "base")
    _use(platform, monkeypatch, gates)
    run = await _run(platform)
    adapter = run.outcome["adapter"]
    assert adapter["reasons"] == [
        "no better than what serves on the same 20 held-out prompts, better on 8, "
        "worse on 12 (p = 0.87)"
    ]
    assert "needed" not in adapter["evidence"]


async def test_a_gate_file_without_paired_evidence_is_not_promoted(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written by a trainer from before the evidence rule (or read back by a resumed
    run): the figures alone promote nothing, and the reason says why."""
    registry = ModelRegistry(platform.sessions)
    _seed(platform)
    gates = scripted_gates(hps_top1=0.9, win_rate=1.0)
    del gates["hps"]["paired"], gates["hps"]["paired_base"], gates["adapter"]["paired"]
    _use(platform, monkeypatch, gates)
    announced: list[str] = []
    run = await _run(platform, announced)
    assert run.status == "succeeded"
    hps, adapter = run.outcome["hps"], run.outcome["adapter"]
    assert not hps["promoted"] and not adapter["promoted"]
    assert hps["reasons"] == [
        "not enough evidence — the trainer's figures hold no paired comparison with what "
        "serves on the same held-out picks (its gate file has none: an older trainer wrote "
        "it?); a new retrain judges it again"
    ]
    assert "no paired comparison" in adapter["reasons"][0]
    assert "held-out prompts" in adapter["reasons"][0]
    assert await registry.active("hps") is None
    assert await registry.active("generator_adapter") is None


async def test_an_unreadable_paired_comparison_is_no_evidence_either(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(platform)
    gates = scripted_gates(hps_top1=0.9, win_rate=1.0)
    gates["hps"]["paired"] = {"n": 3, "better": 3}  # cut short
    gates["adapter"]["paired"] = {**_evidence([1.0] * 9, "base"), "worse": 5}  # adds up wrong
    _use(platform, monkeypatch, gates)
    run = await _run(platform)
    hps, adapter = run.outcome["hps"], run.outcome["adapter"]
    assert not hps["promoted"] and not adapter["promoted"]
    assert "its gate file is unreadable (not a paired comparison: KeyError(" in hps["reasons"][0]
    assert "does not add up" in adapter["reasons"][0]
