"""`prefloop train dpo` and `prefloop eval adapt --vs`, as users run them, on the tiny preset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.adapters import distinct_lora_adapter
from tests.support.cli import cli_env, prefloop
from tests.support.colours import colour_dataset
from training.run_folder import read_info


@pytest.mark.slow
def test_train_dpo_from_an_export_and_compare_it_with_a_lora(
    tiny_model: Path, tmp_path: Path
) -> None:
    data = colour_dataset(tmp_path / "ds", train=12, test=6)
    env = cli_env(data_dir=str(tmp_path / "data"))
    adapter = tmp_path / "dpo"

    options = ["--data", str(data), "--out", str(adapter), "--base", "tiny", "--steps", "4"]
    trained = prefloop("train", "dpo", *options, env=env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "pairs from 12 picks" in trained.stdout
    assert "DPO adapter" in trained.stdout and "beta 200" in trained.stdout
    assert (adapter / "pytorch_lora_weights.safetensors").exists()
    assert read_info(adapter)["method"] == "dpo"
    again = prefloop("train", "dpo", *options, env=env, cwd=tmp_path)
    assert again.returncode == 1 and "already holds a trained model" in again.stderr

    lora = distinct_lora_adapter(tiny_model, tmp_path / "lora", seed=3)
    report = tmp_path / "eval"
    evaluated = prefloop(
        "eval",
        "adapt",
        "--prompts",
        str(data),
        "--adapter",
        str(adapter),
        "--vs",
        str(lora),
        "--base",
        "tiny",
        "--hps",
        "tiny",
        "--steps",
        "3",
        "--seeds",
        "2",
        "--limit",
        "3",
        "--out",
        str(report),
        env=env,
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "3 prompts x 2 seeds: adapted wins" in evaluated.stdout
    assert "against LoRA adapter" in evaluated.stdout
    assert (report / "report.md").read_text().startswith("# DPO adapter vs LoRA adapter")
    assert json.loads((report / "metrics.json").read_text())["prompts"] == 3

    nothing = colour_dataset(tmp_path / "empty", train=0, test=2)
    refused = prefloop(
        "train", "dpo", "--data", str(nothing), "--out", str(tmp_path / "x"), env=env
    )
    assert refused.returncode == 1 and "has no picks to learn from" in refused.stderr
