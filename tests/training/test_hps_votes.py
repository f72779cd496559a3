"""The HPS objective for every vote kind: ties, rater weights, "None are good" negatives."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from training.data import VOTES, Example, PreferenceData, read_preferences
from training.hps.examples import Objective, target, training_set
from training.hps.loss import NONE, PICK, TIE, preference_loss


def _example(ident: str, vote: str = "pick", chosen: int | None = 0, **fields: Any) -> Example:
    images = tuple(Path(f"{ident}_{k}.png") for k in range(4))
    return Example(ident, "a cat", images, chosen, vote=vote, **fields)  # type: ignore[arg-type]


def test_a_pick_is_hps_cross_entropy_and_a_tie_an_even_target() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [1.0, 1.0, -1e4, -1e4]])  # 2nd: 2 images
    picks = torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 0]))
    assert preference_loss(logits, picks) == pytest.approx(float(expected))
    # A tie over two images that already score the same is at its minimum, log 2; padding
    # adds nothing.
    tie = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    weights = torch.tensor([0.0, 1.0])
    assert preference_loss(logits, tie, weights) * 2 == pytest.approx(math.log(2))
    assert target(_example("t", "tie", None)) == [0.25] * 4
    assert target(_example("p", "pick", 2)) == [0.0, 0.0, 1.0, 0.0]


def test_weights_scale_each_instances_loss() -> None:
    logits = torch.tensor([[0.0, 3.0], [3.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # the first is badly wrong
    each = [float(preference_loss(logits[i : i + 1], targets[i : i + 1])) for i in range(2)]
    weighted = preference_loss(logits, targets, torch.tensor([0.5, 1.5]))
    assert float(weighted) == pytest.approx((0.5 * each[0] + 1.5 * each[1]) / 2)
    assert float(preference_loss(logits, targets, torch.tensor([0.0, 0.0]))) == 0.0


def test_a_none_set_is_pushed_below_the_batchs_picked_images() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0], [3.0, 2.0, -1e4]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    kinds = torch.tensor([PICK, NONE])
    loss = preference_loss(logits, targets, None, kinds)
    # softplus(logsumexp(3, 2) - 4) / 2: the picked image's logit (4) is the reference.
    reference = torch.logsumexp(torch.tensor([3.0, 2.0]), 0) - 4.0
    expected = (
        torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0]))
        + torch.nn.functional.softplus(reference)
    ) / 2
    assert float(loss.detach()) == pytest.approx(float(expected.detach()))
    loss.backward()
    assert logits.grad is not None
    gradient = logits.grad[1]
    assert gradient[0] > gradient[1] > 0  # both pushed down, the best of them most
    assert gradient[2] == 0  # padding
    # The "none" term alone pushes the picked image up as much as the set down: lowering
    # every score alike changes nothing.
    alone = torch.tensor([[4.0, 0.0, 0.0], [3.0, 2.0, -1e4]], requires_grad=True)
    preference_loss(alone, targets, torch.tensor([0.0, 1.0]), kinds).backward()
    assert alone.grad is not None
    assert alone.grad[0, 0] < 0 and not alone.grad[0, 1:].any()
    assert float(alone.grad.sum()) == pytest.approx(0.0, abs=1e-6)
    # No pick in the batch: no reference, and the "none" rows add nothing.
    only = torch.tensor([[3.0, 2.0, -1e4]])
    assert float(preference_loss(only, torch.zeros(1, 3), None, torch.tensor([NONE]))) == 0.0
    assert TIE not in (PICK, NONE)


def test_the_objective_chooses_instances_and_normalises_weights() -> None:
    data = PreferenceData(
        [
            _example("p1", weight=0.2),
            _example("p2", weight=1.0),
            _example("t", "tie", None, weight=0.6),
            _example("n", "none", None, weight=1.0),
            _example("c", control="blur", control_worse=1, weight=1.0),
        ]
    )
    data.left_out["none"] = 3  # left out already when read
    default = training_set(data, Objective())
    assert [e.id for e in default.examples] == ["p1", "p2", "t"]
    assert default.weights == pytest.approx([1 / 3, 5 / 3, 1.0])  # mean 1
    assert default.summary["used"] == {"pick": 2, "tie": 1, "none": 0, "control": 0}
    assert default.summary["left_out"] == {"pick": 0, "tie": 0, "none": 4, "control": 1}
    weights = default.summary["weights"]
    assert (weights["min"], weights["max"], weights["zero"]) == (0.2, 1.0, 0)
    assert weights["mean"] == pytest.approx(0.6)
    assert weights["effective_instances"] == pytest.approx(1.8**2 / 1.4)

    everything = Objective(none_as_negatives=True, include_controls=True, rater_weights=False)
    chosen = training_set(data, everything)
    assert [e.id for e in chosen.examples] == ["p1", "p2", "t", "n", "c"]
    assert chosen.weights == [1.0] * 5
    assert chosen.summary["weights"]["applied"] is False
    assert chosen.summary["weights"]["effective_instances"] == 5
    assert [e.id for e in training_set(data, Objective(ties=False)).examples] == ["p1", "p2"]
    assert set(VOTES) >= set(Objective(none_as_negatives=True).votes())


def _defective(rgb: tuple[int, int, int], path: Path) -> None:
    """An image of the right colour with a defect: a black top-left quarter."""
    from PIL import Image

    image = Image.new("RGB", (32, 32), rgb)
    image.paste((0, 0, 0), (0, 0, 16, 16))
    image.save(path)


def _none_sets(folder: Path, prompts: list[str], split: str) -> list[dict[str, Any]]:
    """Sets of four defective images of the prompt's colour, voted "None are good": a
    flaw no pick shows (every picked image is whole)."""
    from tests.support.colours import COLOURS

    entries = []
    for number, prompt in enumerate(prompts):
        files = []
        for k in range(4):
            file = f"preference_images/none-{split}-{number}_{k}.png"
            _defective(COLOURS[prompt.split()[1]], folder / file)
            files.append(file)
        entries.append(
            {
                "id": f"none-{split}-{number}",
                "prompt": prompt,
                "file_path": files,
                "human_preference": None,
                "vote": "none",
            }
        )
    return entries


def test_none_as_negatives_lowers_what_people_rejected_below_picked_images(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The same picks, with and without 40 "None are good" sets of defective images:
    trained on them, defective images of held-out prompts score further below the
    picked images of those prompts. Picks alone cannot teach it: no pick shows the flaw."""
    from tests.support.colours import colour_dataset
    from training.hps import HPSScorer
    from training.hps.evaluate import evaluate
    from training.hps.fit import FitConfig, fit_hps

    data = colour_dataset(tmp_path / "ds", train=96, test=48)
    train_file = data / "preference_train.json"
    picks = json.loads(train_file.read_text())
    rejected = _none_sets(data, [e["prompt"] for e in picks[:40]], "train")
    train_file.write_text(json.dumps([*picks, *rejected]))
    train = read_preferences(data, "train", votes=VOTES)
    test = read_preferences(data, "test").examples
    held_out = _none_sets(data, [e.prompt for e in test], "test")
    assert sum(e.vote == "none" for e in train) == 40

    def gap(none_as_negatives: bool) -> float:
        """Mean HPS of the held-out defective images minus that of the picked ones."""
        config = FitConfig(
            out=tmp_path / f"none-{none_as_negatives}",
            base="tiny",
            epochs=6.0,  # the colour names are words the tiny CLIP must learn
            save_every=10**9,
            cache_dir=tmp_path_factory.getbasetemp() / "models",
            none_as_negatives=none_as_negatives,
        )
        scorer = HPSScorer.load(str(fit_hps(config, train)), device="cpu")
        picked = scorer.score_groups([(e.prompt, [e.images[e.chosen or 0]]) for e in test])
        flawed = scorer.score_groups([(e["prompt"], [data / e["file_path"][0]]) for e in held_out])
        top1[none_as_negatives] = evaluate(scorer, test, bootstrap=0).top1
        return sum(a[0] - b[0] for a, b in zip(flawed, picked, strict=True)) / len(test)

    top1: dict[bool, float] = {}
    plain, trained = gap(False), gap(True)
    print(f"defective minus picked images, mean HPS: {plain:.2f} -> {trained:.2f}; {top1}")
    assert trained < plain - 1.0
    assert top1[True] >= 0.9  # and the picks are learned as well


def test_held_out_accuracy_is_measured_on_picks_of_ordinary_sets(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A test split with every kind of vote (what the retrain loop exports) is judged on
    its picks: ties and "none" name no image to rank first, a control set was spoiled on
    purpose. The fit's held-out figure and the retrain gate both read it."""
    from tests.support.colours import colour_dataset
    from training.gate import hps_stage
    from training.hps.evaluate import judged

    data = colour_dataset(tmp_path / "ds", train=16, test=8)
    test_file = data / "preference_test.json"
    picks = json.loads(test_file.read_text())
    others = [
        {**picks[0], "id": "tie", "human_preference": None, "vote": "tie"},
        {**picks[1], "id": "none", "human_preference": None, "vote": "none"},
        {**picks[2], "id": "control", "control": "blur", "control_worse": 1},
    ]
    test_file.write_text(json.dumps([*picks, *others]))
    test = read_preferences(data, "test", votes=VOTES, controls=True)
    assert len(test) == len(picks) + 3
    assert [e.id for e in judged(test.examples)] == [str(e["id"]) for e in picks]

    cache = tmp_path_factory.getbasetemp() / "models"
    gate = hps_stage(data, tmp_path / "run", start="tiny", base="tiny", active=None, cache=cache)
    assert gate["test_instances"] == len(picks)
    info = json.loads((tmp_path / "run" / "model" / "prefloop.json").read_text())
    assert "test_top1" in info["metrics"]
