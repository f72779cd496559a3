"""The LoRA's named recipes (the HPS paper's two settings): what they resolve to, that
given values win over them, that a wrong name is a clear error, and that the adapter's
prefloop.json says which was used. No run trains beyond one step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from training.__main__ import build_parser
from training.__main__ import main as training_main
from training.adapt.lora import PAPER, PRESET_DEFAULTS, RECIPES, AdaptConfig, AdaptError
from training.adapt.select import Selected, write_manifest
from training.run_folder import read_info

SCRIPT = {"rank": 4, "lr": 1e-5, "weight_decay": 1e-2, "steps": 10_000, "batch_size": 40}


def test_each_recipe_resolves_to_the_papers_values(tmp_path: Path) -> None:
    released = AdaptConfig(out=tmp_path, recipe="hps-script").resolved()
    assert released == SCRIPT
    assert AdaptConfig(out=tmp_path, recipe="hps-paper-text").resolved() == {**SCRIPT, "rank": 32}
    assert set(RECIPES) == {"hps-script", "hps-paper-text"}
    # A recipe is asked for by name: it beats the base's own defaults too.
    assert AdaptConfig(out=tmp_path, base="tiny", recipe="hps-script").resolved() == SCRIPT


def test_without_a_recipe_the_defaults_stay(tmp_path: Path) -> None:
    assert AdaptConfig(out=tmp_path).resolved() == PAPER
    assert PAPER == {"rank": 4, "lr": 1e-5, "weight_decay": 1e-2, "steps": 1000, "batch_size": 4}
    tiny = AdaptConfig(out=tmp_path, base="tiny").resolved()
    assert tiny == {**PAPER, **PRESET_DEFAULTS["tiny"]}


def test_given_values_override_the_recipe(tmp_path: Path) -> None:
    config = AdaptConfig(out=tmp_path, recipe="hps-paper-text", steps=500, batch_size=10, lr=2e-5)
    assert config.resolved() == {
        "rank": 32,
        "lr": 2e-5,
        "weight_decay": 1e-2,
        "steps": 500,
        "batch_size": 10,
    }
    # From python -m training adapt's command line, likewise.
    args = build_parser().parse_args(
        ["adapt", "--selection", "s.jsonl", "--out", "o", "--recipe", "hps-script", "--rank", "8"]
    )
    parsed = AdaptConfig(
        out=args.out, recipe=args.recipe, **{name: getattr(args, name) for name in PAPER}
    )
    assert parsed.resolved() == {**SCRIPT, "rank": 8}


def test_an_unknown_recipe_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AdaptError, match=r"unknown recipe 'hps'.*hps-script or hps-paper-text"):
        AdaptConfig(out=tmp_path, recipe="hps").resolved()

    with pytest.raises(SystemExit):
        build_parser().parse_args(["adapt", "--selection", "s", "--out", "o", "--recipe", "x"])
    assert "invalid choice: 'x'" in capsys.readouterr().err

    # prefloop train adapt refuses it before selection scores a single image.
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("readapt must not start with an unknown recipe")

    monkeypatch.setattr("training.adapt.pipeline.readapt", never)
    result = _prefloop(tmp_path, monkeypatch, "--recipe", "papers")
    assert result.exit_code == 1
    assert "unknown recipe 'papers': use hps-script or hps-paper-text" in result.stderr


def test_prefloop_train_adapt_passes_the_recipe_and_the_flags_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[AdaptConfig] = []

    def stop(config: AdaptConfig, **kwargs: Any) -> Any:
        seen.append(config)
        raise AdaptError("stopped before selection")

    monkeypatch.setattr("training.adapt.pipeline.readapt", stop)
    result = _prefloop(tmp_path, monkeypatch, "--recipe", "hps-paper-text", "--steps", "20")
    assert result.exit_code == 1 and "stopped before selection" in result.stderr
    (config,) = seen
    assert config.recipe == "hps-paper-text"
    assert config.resolved() == {**SCRIPT, "rank": 32, "steps": 20}


def test_the_recipe_reaches_the_adapters_info(tiny_model: Path, tmp_path: Path) -> None:
    # The hyperparameters block as adapt_generator writes it ...
    recorded = AdaptConfig(out=tmp_path, recipe="hps-script", seed=3).recorded("bf16")
    assert recorded["recipe"] == "hps-script" and recorded["mixed_precision"] == "bf16"
    assert {k: recorded[k] for k in SCRIPT} == SCRIPT and recorded["seed"] == 3
    assert AdaptConfig(out=tmp_path).recorded("no")["recipe"] is None

    # ... and in a real adapter folder: one step, from python -m training adapt.
    rng = np.random.default_rng(0)
    items = []
    for k, label in enumerate(["positive", "negative"]):
        image = tmp_path / f"{k}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
        items.append(Selected("a red cup", str(image), label, 0.9, float(k)))
    manifest = tmp_path / "selection.jsonl"
    write_manifest(items, manifest)
    out = tmp_path / "lora"
    argv = ["adapt", "--selection", str(manifest), "--out", str(out), "--base", str(tiny_model)]
    argv += ["--recipe", "hps-paper-text", "--steps", "1", "--batch-size", "2"]
    assert training_main(argv) == 0
    hyper = read_info(out)["hyperparameters"]
    assert hyper["recipe"] == "hps-paper-text"
    assert {k: hyper[k] for k in SCRIPT} == {**SCRIPT, "rank": 32, "steps": 1, "batch_size": 2}


def _prefloop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *options: str) -> Any:
    """`prefloop train adapt` in this process, with ``options`` added."""
    from bot.cli import app

    monkeypatch.chdir(tmp_path)  # no .env of the project's
    monkeypatch.setenv("PREFLOOP_DATA_DIR", str(tmp_path / "data"))
    args = ["train", "adapt", "--data", str(tmp_path / "ds"), "--hps", "tiny"]
    args += ["--out", str(tmp_path / "lora"), *options]
    return CliRunner().invoke(app, args)
