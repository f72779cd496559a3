"""`prefloop score`, `train hps` and `eval hps` as a researcher or admin runs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.cli import cli_env, prefloop
from tests.support.colours import colour_dataset


@pytest.mark.slow
async def test_train_evaluate_and_score_from_the_command_line(
    platform: Any, tmp_path: Path
) -> None:
    data = colour_dataset(tmp_path / "ds", train=160, test=60)
    env = cli_env(data_dir=str(tmp_path / "data"), database_url=platform.database_url)

    trained = prefloop(
        "train",
        "hps",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "hps"),
        "--base",
        "tiny",
        env=env,
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    assert "trained" in trained.stdout and "held-out top-1" in trained.stdout
    assert (tmp_path / "hps" / "open_clip_model.safetensors").exists()

    async with platform.engine.begin() as connection:  # an earlier model is serving
        await connection.execute(
            text("INSERT INTO model_versions (kind, uri, status) VALUES ('hps', 'tiny', 'active')")
        )
    report = tmp_path / "eval"
    hps = str(tmp_path / "hps")
    evaluated = prefloop(
        "eval",
        "hps",
        "--data",
        str(data),
        "--hps",
        hps,
        "--out",
        str(report),
        "--bootstrap",
        "100",
        env=env,
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    rows = {m["name"]: m for m in json.loads((report / "metrics.json").read_text())["models"]}
    assert set(rows) == {"HPS", "CLIP (base)", "active HPS", "random"}
    assert rows["HPS"]["top1"] > rows["random"]["top1"] + 0.3
    assert rows["active HPS"]["source"] == "tiny"
    assert (report / "report.md").exists() and (report / "scores.png").exists()

    images = [str(data / "preference_images" / f"0_{k}.png") for k in range(2)]
    scored = prefloop(
        "score",
        "--hps",
        str(tmp_path / "hps"),
        "--prompt",
        "a red cat",
        *images,
        env=env,
        cwd=tmp_path,
    )
    assert scored.returncode == 0 and "best" in scored.stdout

    missing = prefloop(
        "score", "--hps", str(tmp_path / "nope.pt"), "--prompt", "x", *images, env=env, cwd=tmp_path
    )
    assert missing.returncode == 1 and "nope.pt does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    again = prefloop(
        "train",
        "hps",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "hps"),
        "--base",
        "tiny",
        env=env,
        cwd=tmp_path,
    )
    assert again.returncode == 1 and "already holds a trained model" in again.stderr


@pytest.mark.slow
def test_adapt_and_evaluate_the_generator_from_the_command_line(tmp_path: Path) -> None:
    data = colour_dataset(tmp_path / "ds", train=40, test=12)
    env = cli_env(data_dir=str(tmp_path / "data"))
    adapter = tmp_path / "adapter"

    options = ["--hps", "tiny", "--out", str(adapter), "--base", "tiny", "--steps", "6"]
    trained = prefloop("train", "adapt", "--data", str(data), *options, env=env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "positives and" in trained.stdout and "loss on a fixed batch" in trained.stdout
    assert (adapter / "pytorch_lora_weights.safetensors").exists()
    assert (adapter / "selection.jsonl").read_text().count("\n") >= 2

    report = tmp_path / "eval"
    evaluated = prefloop(
        "eval",
        "adapt",
        "--prompts",
        str(data),
        "--adapter",
        str(adapter),
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
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["prompts"] == 3 and (report / "grid.png").exists()

    broken = prefloop(
        "eval",
        "adapt",
        "--prompts",
        str(data),
        "--adapter",
        str(tmp_path / "no"),
        "--hps",
        "tiny",
        "--base",
        "tiny",
        env=env,
        cwd=tmp_path,
    )
    assert broken.returncode == 1 and "does not exist" in broken.stderr
