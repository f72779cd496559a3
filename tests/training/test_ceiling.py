"""`prefloop eval hps` prints the ceiling people set beside the model's accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.support.cli import cli_env, prefloop
from training.data import VOTES, read_preferences
from training.hps.evaluate import (
    ceiling_line,
    human_ceiling,
    random_baseline,
    shared_sets,
    write_report,
)


def _export(folder: Path) -> Path:
    """Test sets: g1 voted by three members (two pick image 0, one image 1), g2 by two
    (a pick of 2 and a tie), g3 by one; each voter's entry has files of its own."""
    images = folder / "preference_images"
    images.mkdir(parents=True)
    colours = [(220, 30, 30), (30, 200, 40), (30, 60, 230)]

    def entry(ident: str, generation: str, prompt: str, vote: str, picked: int | None) -> Any:
        files = []
        for k, colour in enumerate(colours):
            files.append(f"preference_images/{ident}_{k}.png")
            Image.new("RGB", (32, 32), colour).save(folder / files[-1])
        return {
            "id": ident,
            "prompt": prompt,
            "file_path": files,
            "human_preference": picked,
            "vote": vote,
            "generation_id": generation,
        }

    test = [
        entry("a", "g1", "a red cat", "pick", 0),
        entry("b", "g1", "a red cat", "pick", 0),
        entry("c", "g1", "a red cat", "pick", 1),
        entry("d", "g2", "a blue car", "pick", 2),
        entry("e", "g2", "a blue car", "tie", None),
        entry("f", "g3", "a green cup", "pick", 1),
    ]
    (folder / "preference_train.json").write_text("[]")
    (folder / "preference_test.json").write_text(json.dumps(test))
    return folder


def test_the_ceiling_comes_from_sets_several_members_voted_on(tmp_path: Path) -> None:
    votes = read_preferences(_export(tmp_path), "test", votes=VOTES).examples
    assert [[e.id for e in s] for s in shared_sets(votes)] == [["a", "b", "c"], ["d", "e"]]
    ceiling = human_ceiling(votes)
    # g1: 2 of 6 ordered pairs agree; g2: none agree. Mean over sets: 1/6.
    assert (ceiling.sets, ceiling.votes) == (2, 5)
    assert ceiling.pairwise == pytest.approx(1 / 6)
    # Coincidences (each ordered pair of a unit's labels counts 1 / (m - 1)): g1 gives
    # o(0,0) = 1, o(0,1) = o(1,0) = 1; g2 gives o(2,tie) = o(tie,2) = 1. So n = 5 with
    # n_0 = 2 and n_1 = n_2 = n_tie = 1; 4 disagreeing coincidences;
    # alpha = 1 - (n - 1) · 4 / (n² - Σ n_c²) = 1 - 4 · 4 / (25 - 7).
    assert ceiling.alpha == pytest.approx(1 - 16 / 18)
    assert [e.id for e in ceiling.picks] == ["a", "b", "c", "d"]
    ceiling.model_top1 = 0.5
    assert "one member's vote predicts another's 16.7% of the time" in ceiling_line(ceiling)
    assert "the model's top-1 on their 4 picks: 50.0%" in ceiling_line(ceiling)
    assert human_ceiling(votes[-1:]).pairwise is None
    assert "no set was voted by two or more" in ceiling_line(human_ceiling(votes[-1:]))

    write_report(tmp_path / "report", [random_baseline(ceiling.picks)], ceiling=ceiling)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["human_agreement"] == {
        "sets": 2,
        "votes": 5,
        "pairwise": pytest.approx(1 / 6),
        "alpha": pytest.approx(1 - 16 / 18),
        "picks": 4,
        "model_top1": 0.5,
    }
    assert "Human agreement on 2 sets" in (tmp_path / "report" / "report.md").read_text()


def test_eval_hps_prints_the_ceiling_beside_the_model(tmp_path: Path) -> None:
    data = _export(tmp_path / "ds")
    env = cli_env(data_dir=str(tmp_path / "data"))
    report = tmp_path / "eval"
    options = ["--hps", "tiny", "--no-active", "--bootstrap", "50", "--out", str(report)]
    done = prefloop("eval", "hps", "--data", str(data), *options, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Human agreement on 2 sets voted by 2+ members (5 votes)" in done.stdout
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["models"][0]["n"] == 5  # the model is judged on the picks
    assert metrics["human_agreement"]["model_top1"] is not None
