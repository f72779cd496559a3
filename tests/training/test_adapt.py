"""training.adapt: selection, the LoRA fine-tune, the adapter in the generator, evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.support.red_corner import RedCornerScorer, closed_loop, generate_pool
from training.adapt import WEIRD
from training.adapt.evaluate import evaluate_adapter, write_adapt_report
from training.adapt.lora import AdaptConfig, AdaptError, adapt_generator
from training.adapt.select import (
    Group,
    is_blank,
    read_manifest,
    select,
    select_group,
    write_manifest,
)
from training.generator import Generator, GeneratorLoadError
from training.run_folder import read_info


class FixedScores:
    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def score_groups(self, groups: Any) -> list[list[float]]:
        return [[self.scores[str(p)] for p in images] for _, images in groups]


def _noise(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def test_selection_follows_the_alpha_rule(tmp_path: Path) -> None:
    assert select_group([10.0, 0.0, 0.0, 0.0]) == (pytest.approx((0, 0.99985), abs=1e-4), None)
    positive, negative = select_group([5.0, 5.0, 5.0, -5.0])
    assert positive is None and negative == pytest.approx((3, 0.99995), abs=1e-4)
    assert select_group([1.0, 0.0, 0.0, 0.0]) == (None, None)  # not confident enough
    assert select_group([9.0, 0.0]) == (None, None)  # alpha/n = 1: pairs need alpha < 2
    assert select_group([9.0, 0.0], alpha=1.5)[0] == pytest.approx((0, 0.9999), abs=1e-4)

    files = [_noise(tmp_path / f"{k}.png", k) for k in range(4)]
    blank = tmp_path / "blank.png"
    Image.new("RGB", (16, 16), (0, 0, 0)).save(blank)  # a blacked-out image
    assert is_blank(blank) and not is_blank(files[0])
    scores = {str(f): s for f, s in zip(files, [8.0, 0.0, 0.0, -8.0], strict=True)}
    scores[str(blank)] = 50.0  # would be the best, but blank images never count
    pool = [Group("a fox", (*files, blank)), Group("two only", (files[0], blank))]
    chosen = select(FixedScores(scores), pool, min_group=2)
    assert [(s.prompt, Path(s.file).name, s.label) for s in chosen] == [
        ("a fox", "0.png", "positive"),
        ("a fox", "3.png", "negative"),
    ]
    digest = write_manifest(chosen, tmp_path / "selection.jsonl")
    assert read_manifest(tmp_path / "selection.jsonl") == chosen and len(digest) == 64
    assert select(FixedScores(scores), pool, min_group=5) == []


@pytest.fixture(scope="module")
def base(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Generator:
    return Generator.load(
        str(tiny_model), cache_dir=tiny_model.parent, device="cpu", safety_checker=False
    )


@pytest.fixture(scope="module")
def selection(base: Generator, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    pool = generate_pool(base, [f"a thing {i}" for i in range(6)], tmp_path_factory.mktemp("p"))
    return select(RedCornerScorer(), pool)


def _config(tiny_model: Path, out: Path, **changes: Any) -> AdaptConfig:
    values = {"steps": 12, "lr": 1e-3, "rank": 4, "batch_size": 4, **changes}
    return AdaptConfig(out=out, base=str(tiny_model), cache_dir=tiny_model.parent, **values)


def test_the_adapter_trains_loads_in_stock_diffusers_and_carries_its_negative_prompt(
    tiny_model: Path, base: Generator, selection: list[Any], tmp_path: Path
) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    assert {s.label for s in selection} == {"positive", "negative"}
    out = adapt_generator(_config(tiny_model, tmp_path / "lora"), selection)

    info = read_info(out)
    metrics = info["metrics"]
    assert metrics["fixed_batch_loss_after"] < metrics["fixed_batch_loss_before"]
    assert info["negative_prompt"] == WEIRD.strip() and info["base"] == str(tiny_model)
    stock = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    stock.set_progress_bar_config(disable=True)

    def image(pipe: Any) -> Any:
        generator = torch.Generator().manual_seed(7)
        made = pipe("a thing 1", num_inference_steps=4, generator=generator, output_type="np")
        return made.images[0]

    before = image(stock)
    stock.load_lora_weights(out)  # what researchers run
    assert np.abs(image(stock) - before).max() > 1e-3

    adapted = Generator.load(
        str(tiny_model),
        cache_dir=tiny_model.parent,
        device="cpu",
        safety_checker=False,
        adapter=out,
    )
    assert adapted.negative_for("blurry") == "Weird image. blurry"
    with_negative = np.asarray(adapted.generate("a thing 1", [7], steps=4).images[0])
    adapted.negative_prefix = ""
    without = np.asarray(adapted.generate("a thing 1", [7], steps=4).images[0])
    assert np.abs(with_negative.astype(int) - without.astype(int)).max() > 0
    adapted.negative_prefix = "Weird image."

    plain = np.asarray(base.generate("a thing 1", [7], steps=4).images[0])
    off = np.asarray(adapted.base_view().generate("a thing 1", [7], steps=4).images[0])
    assert np.array_equal(off, plain)  # the adapter switched off is the base model
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pytorch_lora_weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(GeneratorLoadError, match="is still in use"):
        adapted.apply_adapter(broken)
    again = np.asarray(adapted.generate("a thing 1", [7], steps=4).images[0])
    assert np.array_equal(again, with_negative) and adapted.adapter == str(out)
    with pytest.raises(AdaptError, match="already holds a trained adapter"):
        adapt_generator(_config(tiny_model, out), selection)


LOOP_SEEDS = (0, 1, 2)  # each seed is a whole loop: its own pool, LoRA and held-out draws


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about four minutes on two CPU cores
def test_closed_loop_the_paper_s_ordering_weird_image_as_negative_prompt_wins_most(
    tiny_model: Path, base: Generator, tmp_path: Path
) -> None:
    """The paper's loop in miniature, several times over (tests/support/red_corner.py's
    closed_loop: a fixed rule, a red top-left corner, stands in for people): a preference
    picks, the LoRA learns, and on held-out prompts the adapter served with "Weird image."
    as its negative prompt beats the base and the bare adapter, the paper's ordering, and
    beats the base given the same negative prompt: the gain is learned, not the prompt's."""
    served_wins = []
    for seed in LOOP_SEEDS:
        loop = closed_loop(tiny_model, base, tmp_path / f"loop{seed}", seed)
        assert loop.selected >= 120  # a positive and a negative from (nearly) every prompt
        arms = (
            ("with the negative prompt", loop.served),
            ("without it", loop.bare),
            ("with it, against the base with it", loop.learned),
        )
        for name, result in arms:
            print(
                f"closed loop {seed}, {name}: win rate {result.win_rate:.1%}, mean "
                f"difference {result.mean_difference:+.2f} {result.difference_ci}"
            )
        assert loop.served.difference_ci[0] > loop.bare.difference_ci[1]
        assert loop.served.win_rate >= loop.bare.win_rate
        assert loop.learned.difference_ci[0] > 0
        assert loop.served.win_rate >= 0.8
        served_wins.append(loop.served.win_rate)
    assert sum(served_wins) / len(served_wins) >= 0.9


def test_a_resumed_adaptation_ends_where_an_uninterrupted_one_does(
    tiny_model: Path, selection: list[Any], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    whole = adapt_generator(_config(tiny_model, tmp_path / "whole", save_every=2), selection)

    def interrupt(step: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapt_generator(
            _config(tiny_model, tmp_path / "resumed", save_every=2), selection, on_step=interrupt
        )
    with pytest.raises(AdaptError, match="unfinished run with other settings"):
        adapt_generator(_config(tiny_model, tmp_path / "resumed", save_every=2, lr=1e-4), selection)
    steps: list[int] = []
    resumed = adapt_generator(
        _config(tiny_model, tmp_path / "resumed", save_every=2),
        selection,
        on_step=lambda step, loss: steps.append(step),
    )
    assert steps == list(range(5, 13))  # from the resume point at step 4, not from scratch
    a = load_file(whole / "pytorch_lora_weights.safetensors")
    b = load_file(resumed / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_corrupt_adapter_is_a_clear_error_and_the_base_keeps_working(
    tiny_model: Path, base: Generator, tmp_path: Path
) -> None:
    before = np.asarray(base.generate("a cat", [3], steps=3).images[0])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pytorch_lora_weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(GeneratorLoadError, match=r"could not be loaded.*base model is unchanged"):
        base.apply_adapter(broken)
    with pytest.raises(GeneratorLoadError, match="does not exist"):
        base.apply_adapter(tmp_path / "nowhere")
    assert base.adapter is None
    assert np.array_equal(np.asarray(base.generate("a cat", [3], steps=3).images[0]), before)


def test_evaluation_compares_the_same_prompts_and_seeds(
    tiny_model: Path, base: Generator, selection: list[Any], tmp_path: Path
) -> None:
    prompts = ["a", "b", "c"]
    result, shown = evaluate_adapter(
        base, base, RedCornerScorer(), prompts, seeds_per_prompt=2, steps=3, grid=2, bootstrap=100
    )
    assert result.win_rate == 0.5 and result.mean_difference == 0.0  # itself: all ties
    assert [row["seeds"] for row in result.per_prompt] == [[0, 1], [2, 3], [4, 5]]
    write_adapt_report(tmp_path, result, shown)
    assert json.loads((tmp_path / "metrics.json").read_text())["prompts"] == 3
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[1] >= 2 * 128


def test_regularisation_pairs_are_mixed_in(
    tiny_model: Path, selection: list[Any], tmp_path: Path
) -> None:
    pairs = tmp_path / "regular"
    pairs.mkdir()
    for k in range(3):
        _noise(pairs / f"photo{k}.png", 100 + k)
        (pairs / f"photo{k}.txt").write_text(f"a high quality photo {k}")
    (pairs / "no caption.png").write_bytes((pairs / "photo0.png").read_bytes())  # ignored
    out = adapt_generator(
        _config(tiny_model, tmp_path / "lora", regularization=pairs, regularization_ratio=0.5),
        selection,
    )
    info = read_info(out)
    assert info["selection"]["regularization"] == 3
    assert info["selection"]["items"] == len(selection)
    negatives = sum(s.label == "negative" for s in selection)
    assert info["selection"]["negatives"] == {"hps": negatives, "none_vote": 0}
    assert info["hyperparameters"]["regularization_ratio"] == 0.5


def test_batches_draw_regularisation_pairs_at_the_ratio() -> None:
    import torch

    from training.adapt.lora import Cached, draw

    regular = torch.tensor([False] * 6 + [True] * 4)
    cached = Cached(mean=None, std=None, text=None, caption=None, regular=regular)
    picks = [draw(cached, 8, 0.25, torch.Generator().manual_seed(s)) for s in range(200)]
    share = sum(int(regular[p].sum()) for p in picks) / (8 * 200)
    assert 0.18 < share < 0.32
    assert all(not regular[p].any() for p in (draw(cached, 8, 0.0, torch.Generator()),))
    assert bool(regular[draw(cached, 8, 1.0, torch.Generator())].all())
