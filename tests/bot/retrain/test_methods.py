"""The adapter stage's methods: a Diffusion-DPO candidate, or both methods, through the
same gates as the LoRA (bot/retrain/methods.py).

The retrain runs use the scripted trainer (tests/support/scripted_trainer.py) as
test_retrain.py does: the platform's side is what is tested there. The last test runs the
real DPO stage (training/gate.py) and hands its gate file to the model gate; the
leaderboard names each adapter's method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.arena.leaderboard import leaderboard
from bot.config import Settings
from bot.db.models import Comparison, RetrainRun
from bot.registry import ModelRegistry
from bot.retrain import methods
from bot.retrain.stages import Retrain
from bot.retrain.triggers import request_retrain
from bot.runtime import Platform
from tests.support.arena_rows import add_comparison, add_set, add_users
from tests.support.colours import colour_dataset
from tests.support.retrain import TRAINER, scripted_gates
from tests.support.synthetic import seed_picks
from training.gate import dpo_stage


def _use(platform: Platform, monkeypatch: pytest.MonkeyPatch, gates: dict[str, Any]) -> None:
    monkeypatch.setenv("PREFLOOP_TEST_GATES", json.dumps(gates))
    platform.settings.retrain.trainer = TRAINER
    platform.settings.retrain.hps_base = "tiny"
    seed_picks(platform.database_url, platform.settings.data_dir / "store", picks=12)


async def _run(platform: Platform) -> tuple[RetrainRun, str]:
    request = await request_retrain(platform.sessions, trigger="test")
    said = await Retrain(platform, request.run_id).run()
    async with platform.sessions() as session:
        run = await session.get(RetrainRun, request.run_id)
    assert run is not None
    return run, said


def _gates(lora_win: float, dpo_win: float, dpo_gain: float = 0.5) -> dict[str, Any]:
    gates = scripted_gates(hps_top1=0.56, win_rate=lora_win)
    gates["dpo"] = {**gates["adapter"], "win_rate": dpo_win, "mean_difference": dpo_gain}
    return gates


async def test_a_dpo_candidate_is_registered_and_judged_by_the_model_gate(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.settings.retrain.adapter_method = "dpo"
    _use(platform, monkeypatch, _gates(lora_win=0.9, dpo_win=0.8))
    run, said = await _run(platform)

    assert run.status == "succeeded"
    registry = ModelRegistry(platform.sessions)
    adapter = await registry.active("generator_adapter")
    assert adapter is not None and adapter.id == run.outcome["adapter"]["version"]
    assert adapter.metrics["method"] == "dpo" and adapter.uri.endswith("adapter-dpo/adapter")
    assert adapter.metrics["evidence"]["verdict"] == "better"
    assert run.outcome["adapter"]["method"] == "dpo"
    assert f"DPO adapter v{adapter.id} promoted (win rate 80.0%" in said
    assert [v.kind for v in await registry.versions()].count("generator_adapter") == 1
    folder = platform.settings.data_dir / "retrain" / f"run-{run.id}"
    assert (folder / "adapter-dpo" / "gate.json").is_file()
    assert not (folder / "adapter-dpo" / "pairs.jsonl").exists()  # the picks' list goes

    # A DPO candidate that loses is kept as a candidate, with the gate's reasons.
    platform.settings.retrain.adapter_method = "dpo"
    _use(platform, monkeypatch, _gates(lora_win=0.9, dpo_win=0.3, dpo_gain=-0.2))
    lost, _ = await _run(platform)
    reasons = lost.outcome["adapter"]["reasons"]
    assert "win rate 30.0% is below 55.0%" in reasons[0] and "no gain" in reasons[1]
    assert (await registry.active("generator_adapter")).id == adapter.id  # type: ignore[union-attr]


async def test_both_methods_are_registered_and_the_better_goes_before_people(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.settings.retrain.adapter_method = "both"
    platform.settings.retrain.adapter_gate = "both"
    platform.settings.arena.share = 0.25
    _use(platform, monkeypatch, _gates(lora_win=0.8, dpo_win=0.9))  # both pass; DPO gains more
    run, said = await _run(platform)

    registry = ModelRegistry(platform.sessions)
    adapters = [v for v in await registry.versions() if v.kind == "generator_adapter"]
    by_method = {v.metrics["method"]: v for v in adapters}
    assert sorted(by_method) == ["dpo", "lora"]  # both registered, neither promoted yet
    assert all(v.status == "candidate" for v in adapters)
    assert all(v.metrics["passed_model_gate"] for v in adapters)
    decided = run.outcome["adapter"]
    assert decided["version"] == by_method["dpo"].id and decided["next"] == "people"
    assert decided["others"][0]["version"] == by_method["lora"].id
    assert "the dpo candidate went on" in decided["summary"]
    async with platform.sessions() as session:
        comparison = await session.scalar(select(Comparison))
    assert comparison is not None and comparison.contender_version_id == by_method["dpo"].id
    assert run.status == "running" and "judged by people" in said


async def test_with_both_methods_the_one_that_passes_goes_on_and_alone_is_promoted(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.settings.retrain.adapter_method = "both"
    platform.settings.retrain.adapter_gate = "model"
    # DPO gains more HPS but wins too few prompts: the LoRA, which passes, goes on.
    _use(platform, monkeypatch, _gates(lora_win=0.8, dpo_win=0.5, dpo_gain=0.9))
    run, said = await _run(platform)

    registry = ModelRegistry(platform.sessions)
    active = await registry.active("generator_adapter")
    assert active is not None and active.metrics["method"] == "lora"
    other = run.outcome["adapter"]["others"][0]
    assert other["method"] == "dpo" and not other["promoted"]
    assert "win rate 50.0% is below 55.0%" in other["reasons"][0]
    assert f"adapter v{active.id} promoted" in said and "the lora candidate went on" in said


def _barely(gates: dict[str, Any]) -> dict[str, Any]:
    """Both candidates better on all 5 held-out prompts: p = 1/32 = 0.031 each, shown
    better at 95% alone, not when two tries share the 5% (0.031 > 0.025)."""
    evidence = {
        "against": "base",
        **{"n": 5, "better": 5, "worse": 0, "equal": 0, "mean_difference": 0.5},
        **{"interval": [0.5, 0.5], "p_value": 1 / 32, "tests": 1},
    }
    for stage in ("adapter", "dpo"):
        gates[stage] = {**gates[stage], "prompts": 5, "win_rate": 1.0, "paired": evidence}
    return gates


async def test_with_both_methods_each_candidate_pays_for_every_try(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.settings.retrain.adapter_method = "both"
    platform.settings.retrain.adapter_gate = "model"
    gates = _barely(_gates(lora_win=1.0, dpo_win=1.0))
    for method, stage in ((methods.LORA, "adapter"), (methods.DPO, "dpo")):  # alone: better
        assert methods.judged(method, dict(gates[stage]), platform.settings).reasons == []
    _use(platform, monkeypatch, gates)
    run, said = await _run(platform)

    registry = ModelRegistry(platform.sessions)
    assert await registry.active("generator_adapter") is None  # neither is promoted
    decided = run.outcome["adapter"]
    for candidate in (decided, decided["others"][0]):
        assert candidate["evidence"]["verdict"] == "not enough evidence"
        assert candidate["evidence"]["p_value"] == pytest.approx(2 / 32)
        assert not candidate["promoted"]
    assert "neither candidate passed the model gate" in said and "went on" not in said
    version = await registry.get(decided["version"])
    assert version.metrics["paired"]["tests"] == 2
    assert version.metrics["paired_alone"]["p_value"] == pytest.approx(1 / 32)


async def test_with_both_methods_one_failing_stage_leaves_the_other_candidate(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.settings.retrain.adapter_method = "both"
    platform.settings.retrain.adapter_gate = "model"
    _use(platform, monkeypatch, {**_gates(lora_win=0.8, dpo_win=0.9), "dpo": "crash"})
    run, said = await _run(platform)

    assert run.status == "succeeded"
    registry = ModelRegistry(platform.sessions)
    active = await registry.active("generator_adapter")
    assert active is not None and active.metrics["method"] == "lora"
    assert active.metrics["paired"]["tests"] == 1  # judged alone: one try
    decided = run.outcome["adapter"]
    assert decided["version"] == active.id and "others" not in decided
    assert decided["failed"][0]["method"] == "dpo"
    assert "exited with code 3" in decided["failed"][0]["error"]
    assert f"adapter v{active.id} promoted" in said and "the dpo stage failed" in said

    # Both failing fails the run, with each one's reason.
    _use(platform, monkeypatch, {**_gates(0.8, 0.9), "adapter": "crash", "dpo": "crash"})
    failed, said = await _run(platform)
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.startswith("adapter: every method failed")
    assert "lora: adapter: the trainer exited with code 3" in failed.error
    assert "dpo: adapter: the trainer exited with code 3" in failed.error


def test_the_real_dpo_stage_writes_figures_the_model_gate_judges(
    settings: Settings, tmp_path: Path
) -> None:
    """``python -m training gate dpo``'s work, in-process: DPO trains on the export's picks
    (no HPS), HPS judges it against the base on held-out prompts, and the gate file it
    writes is one the platform's model gate reads like the LoRA's."""
    data = colour_dataset(tmp_path / "export", train=12, test=6)
    gate = dpo_stage(
        data,
        tmp_path / "adapter-dpo",
        hps="tiny",
        generator=settings.generator.model,
        active=None,
        cache=settings.data_dir / "models",
        device="cpu",
        steps=4,
        seeds=1,
        limit=3,
        eval_steps=3,
    )
    assert gate["method"] == "dpo" and gate["against"] == "base" and gate["prompts"] == 3
    assert gate["pairs"] > 12  # each pick against every image not picked
    assert gate["negative_prompt"] == "" and list(gate["tried"]) == ["without_negative_prompt"]
    assert (tmp_path / "adapter-dpo" / "pairs.jsonl").is_file()  # beside, not in, the model
    assert not (tmp_path / "adapter-dpo" / "adapter" / "pairs.jsonl").exists()
    candidate = methods.judged(methods.DPO, gate, settings)
    assert candidate.evidence["verdict"] in {"better", "not better", "not enough evidence"}
    assert "over 3 held-out prompts against base" in candidate.figures
    assert candidate.figures.endswith("served without a negative prompt")


async def test_the_leaderboard_says_which_method_trained_each_adapter(platform: Platform) -> None:
    registry = ModelRegistry(platform.sessions)
    lora = await registry.register("generator_adapter", "/models/lora", {"method": "lora"})
    dpo = await registry.register("generator_adapter", "/models/dpo", {"method": "dpo"})
    requester, other = await add_users(platform, 2)
    compared = await add_comparison(platform, lora, dpo)
    for k in range(3):  # people pick the DPO adapter's image in each mixed set
        await add_set(
            platform, requester, [lora, dpo], {other: 1}, comparison_id=compared, prompt=f"{k}"
        )
    board = await leaderboard(platform.sessions, platform.settings, bootstrap=20)
    assert board.lines()[1].startswith(f"1. adapter #{dpo} (dpo): +")
    assert board.lines()[2].startswith(f"2. adapter #{lora} (lora): ")
    ranked = board.to_json()["ratings"]
    assert [r["method"] for r in ranked] == ["dpo", "lora"]
