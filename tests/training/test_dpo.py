"""Diffusion-DPO: pairs from an export's picks, the loss, the adapter, and the closed loop."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.support.red_corner import dpo_loop, generate_pool, rule_pairs
from training.adapt.dpo import (
    DPOConfig,
    Pair,
    dpo_loss,
    pairs_from_export,
    read_pairs,
    train_dpo,
    write_pairs,
)
from training.adapt.tuning import AdaptError
from training.generator import Generator
from training.run_folder import read_info


def _export(folder: Path) -> Path:
    images = folder / "preference_images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries = []

    def entry(ident: str, generation: str, *, blank: int | None = None, **vote: Any) -> None:
        files = []
        for k in range(4):
            name = f"preference_images/{ident}_{k}.png"
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            if k == blank:
                pixels[:] = 0  # blacked out
            Image.fromarray(pixels).save(folder / name)
            files.append(name)
        fields = {"vote": "pick", "human_preference": 1, **vote}
        entries.append(
            {"id": ident, "prompt": f"set {generation}", "file_path": files}
            | {"generation_id": generation}
            | fields
        )

    none = {"human_preference": None}
    entry("a", "g1")  # picked image 1: three pairs
    entry("b", "g1", human_preference=2, rater_weight=0.25)  # another voter, another pick
    entry("t", "g2", vote="tie", **none)  # "No favourite": no pair
    entry("n", "g3", vote="none", **none)  # "None are good": no winner, no pair
    entry("c", "g4", control="marked", control_best=1)  # a control set: left out
    entry("k", "g5", blank=3)  # a blacked-out loser: two pairs
    entry("w", "g6", blank=1)  # a blacked-out winner: none
    (folder / "preference_train.json").write_text(json.dumps(entries))
    (folder / "preference_test.json").write_text("[]")
    return folder


def test_pairs_are_each_pick_against_every_image_not_picked(tmp_path: Path) -> None:
    found = pairs_from_export(_export(tmp_path / "export"))
    named = [(p.prompt, Path(p.winner).stem, Path(p.loser).stem, p.weight) for p in found.pairs]
    assert named == [
        ("set g1", "a_1", "a_0", 1.0),
        ("set g1", "a_1", "a_2", 1.0),
        ("set g1", "a_1", "a_3", 1.0),
        ("set g1", "b_2", "b_0", 0.25),
        ("set g1", "b_2", "b_1", 0.25),
        ("set g1", "b_2", "b_3", 0.25),
        ("set g5", "k_1", "k_0", 1.0),
        ("set g5", "k_1", "k_2", 1.0),
    ]
    assert found.picks == 3
    assert found.left_out == {"tie": 1, "none": 1, "control": 1, "blank": 2}
    # Under accelerate launch only the main process writes; the others have the same digest.
    elsewhere = write_pairs(found.pairs, tmp_path / "pairs.jsonl", write=False)
    assert not (tmp_path / "pairs.jsonl").exists()
    digest = write_pairs(found.pairs, tmp_path / "pairs.jsonl")
    assert read_pairs(tmp_path / "pairs.jsonl") == found.pairs and digest == elsewhere
    assert digest == hashlib.sha256((tmp_path / "pairs.jsonl").read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "pairs.jsonl"]  # no partial


def test_the_loss_rewards_lowering_the_winner_s_error_against_the_reference() -> None:
    import torch

    ref_w, ref_l = torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])
    same = dpo_loss(ref_w.clone(), ref_l.clone(), ref_w, ref_l, beta=100.0)
    assert float(same) == pytest.approx(math.log(2))  # the model is the reference

    model_w = ref_w.clone().requires_grad_(True)
    model_l = ref_l.clone().requires_grad_(True)
    dpo_loss(model_w, model_l, ref_w, ref_l, beta=100.0).backward()
    assert model_w.grad is not None and model_l.grad is not None
    assert bool((model_w.grad > 0).all())  # a higher error on the winner costs
    assert bool((model_l.grad < 0).all())  # a higher error on the loser pays

    better = dpo_loss(ref_w - 0.01, ref_l, ref_w, ref_l, beta=100.0)
    worse = dpo_loss(ref_w, ref_l - 0.01, ref_w, ref_l, beta=100.0)
    assert float(better) < math.log(2) < float(worse)
    # The paper's form: -log sigmoid(-beta/2 * ((mse_w - ref_w) - (mse_l - ref_l)))
    assert float(better) == pytest.approx(-math.log(1 / (1 + math.exp(-50.0 * 0.01))))
    # Only the error relative to the reference counts: both errors lower by the same
    # amount is no preference.
    assert float(dpo_loss(ref_w - 0.1, ref_l - 0.1, ref_w, ref_l, beta=100.0)) == pytest.approx(
        math.log(2)
    )
    weights = torch.tensor([2.0, 0.0])  # a pair of weight 0 does not count
    mixed = dpo_loss(ref_w - torch.tensor([0.01, -0.5]), ref_l, ref_w, ref_l, 100.0, weights)
    assert float(mixed) == pytest.approx(float(better))


def test_rater_weights_weigh_each_pair_s_loss() -> None:
    import torch

    ref_w, ref_l = torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])
    model_w = ref_w - torch.tensor([0.01, -0.02])  # the first pair gained, the second lost
    unweighted = float(dpo_loss(model_w, ref_l, ref_w, ref_l, beta=100.0))
    equal = dpo_loss(model_w, ref_l, ref_w, ref_l, 100.0, torch.tensor([1.0, 1.0]))
    assert float(equal) == pytest.approx(unweighted)  # weights of 1: no weighting
    first = float(dpo_loss(model_w, ref_l, ref_w, ref_l, 100.0, torch.tensor([1.5, 0.5])))
    second = float(dpo_loss(model_w, ref_l, ref_w, ref_l, 100.0, torch.tensor([0.5, 1.5])))
    assert first < unweighted < second  # trusting the pair it gained on lowers the loss
    each = -torch.nn.functional.logsigmoid(-50.0 * (model_w - ref_w))
    assert first == pytest.approx(float((each * torch.tensor([1.5, 0.5])).mean()))


def test_a_pair_s_winner_and_loser_get_the_same_noise_and_timestep() -> None:
    """The loss compares the errors on two images under one draw: a UNet that predicts
    the timestep whatever it sees errs alike on both only when both got the same noise
    (the target) and the same timestep; across pairs the draws differ."""
    from types import SimpleNamespace

    import torch
    from diffusers import DDPMScheduler

    from training.adapt.dpo import _errors
    from training.adapt.tuning import Cached, Setup

    def unet(noisy: Any, timesteps: Any, text: Any) -> Any:
        return SimpleNamespace(sample=(timesteps / 1000).view(-1, 1, 1, 1).expand_as(noisy))

    setup = Setup(
        accelerator=SimpleNamespace(device=torch.device("cpu")),
        pipe=None,
        precision="no",
        weight_dtype=torch.float32,
        on_gpu=False,
        noise_scheduler=DDPMScheduler(),
        scaling=0.18215,
    )
    rng = torch.Generator().manual_seed(0)
    cached = Cached(
        mean=torch.randn((6, 4, 8, 8), generator=rng),  # six different images
        std=torch.rand((6, 4, 8, 8), generator=rng),
        text=torch.randn((2, 3, 8), generator=rng),
        caption=torch.tensor([0, 0, 0, 1, 1, 1]),
        regular=torch.zeros(6, dtype=torch.bool),
    )
    index = torch.tensor([0, 1, 3, 2, 4, 5])  # winners 0, 1, 3 against losers 2, 4, 5

    @contextlib.contextmanager
    def reference() -> Iterator[Any]:
        yield unet

    model, ref = _errors(setup, unet, reference, cached, index, torch.Generator().manual_seed(1))
    winners, losers = model.chunk(2)
    assert torch.equal(winners, losers) and torch.equal(model, ref)
    assert len(set(winners.tolist())) == 3  # each pair its own draw


@pytest.fixture(scope="module")
def base(tiny_model: Path) -> Generator:
    return Generator.load(
        str(tiny_model), cache_dir=tiny_model.parent, device="cpu", safety_checker=False
    )


@pytest.fixture(scope="module")
def pairs(base: Generator, tmp_path_factory: pytest.TempPathFactory) -> list[Pair]:
    pool = generate_pool(base, [f"a thing {i}" for i in range(4)], tmp_path_factory.mktemp("p"))
    return rule_pairs(pool)


def _config(tiny_model: Path, out: Path, **changes: Any) -> DPOConfig:
    values = {"steps": 10, "batch_size": 2, "rank": 4, **changes}
    return DPOConfig(out=out, base=str(tiny_model), cache_dir=tiny_model.parent, **values)


def test_the_dpo_adapter_loads_in_stock_diffusers_and_resumes_where_it_stopped(
    tiny_model: Path, pairs: list[Pair], tmp_path: Path
) -> None:
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    assert len(pairs) == 12  # three pairs from each of the four sets
    whole = train_dpo(_config(tiny_model, tmp_path / "whole", save_every=2), pairs)
    info = read_info(whole)
    assert info["method"] == "dpo" and info["negative_prompt"] == ""
    assert info["hyperparameters"]["beta"] == 200.0  # the tiny preset's
    metrics = info["metrics"]
    # The reference is the base UNet (the adapter switched off), and a new LoRA is the
    # base: before any step the model and the reference agree exactly.
    assert metrics["fixed_batch_loss_before"] == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["fixed_batch_loss_after"] != metrics["fixed_batch_loss_before"]  # it moved

    def interrupt(step: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_dpo(_config(tiny_model, tmp_path / "resumed", save_every=2), pairs, on_step=interrupt)
    with pytest.raises(AdaptError, match="unfinished run with other settings"):
        train_dpo(_config(tiny_model, tmp_path / "resumed", save_every=2, beta=50.0), pairs)
    steps: list[int] = []
    resumed = train_dpo(
        _config(tiny_model, tmp_path / "resumed", save_every=2),
        pairs,
        on_step=lambda step, loss: steps.append(step),
    )
    assert steps == list(range(5, 11))  # from the resume point at step 4
    a = load_file(whole / "pytorch_lora_weights.safetensors")
    b = load_file(resumed / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(AdaptError, match="already holds a trained model"):
        train_dpo(_config(tiny_model, whole), pairs)

    stock = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    stock.set_progress_bar_config(disable=True)

    def image(pipe: Any) -> Any:
        generator = torch.Generator().manual_seed(7)
        made = pipe("a thing 1", num_inference_steps=4, generator=generator, output_type="np")
        return made.images[0]

    before = image(stock)
    stock.load_lora_weights(whole)  # what researchers run
    assert np.abs(image(stock) - before).max() > 1e-3


def test_a_full_fine_tune_writes_a_generator_and_starts_from_its_frozen_copy(
    tiny_model: Path, pairs: list[Pair], tmp_path: Path
) -> None:
    out = train_dpo(_config(tiny_model, tmp_path / "full", full=True, steps=2, lr=1e-5), pairs)
    info = read_info(out)
    assert info["hyperparameters"]["full"] is True and info["method"] == "dpo"
    assert info["metrics"]["fixed_batch_loss_before"] == pytest.approx(math.log(2), abs=1e-6)
    trained = Generator.load(str(out), cache_dir=tiny_model.parent, device="cpu")
    assert trained.generate("a thing 1", [7], steps=3).images[0].size == (32, 32)
    no_pairs = tmp_path / "none"
    with pytest.raises(AdaptError, match="no preference pairs"):
        train_dpo(_config(tiny_model, no_pairs), [])
    unreliable = [Pair(p.prompt, p.winner, p.loser, weight=0.0) for p in pairs]
    with pytest.raises(AdaptError, match="reliability weight 0"):
        train_dpo(_config(tiny_model, no_pairs), unreliable)


def test_a_full_fine_tune_under_mixed_precision_starts_at_its_frozen_copy(
    tiny_model: Path, pairs: list[Pair], tmp_path: Path
) -> None:
    """The frozen copy is kept in float32 like the trained UNet, both run under the same
    autocast: before any step they agree exactly (a half-precision copy did not: 0.697)."""
    import torch

    if not torch.amp.autocast_mode.is_autocast_available("cpu"):
        pytest.skip("no bfloat16 autocast on this CPU")
    from accelerate.state import AcceleratorState

    config = _config(tiny_model, tmp_path / "bf16", full=True, steps=1, mixed_precision="bf16")
    AcceleratorState._reset_state()  # one process, one precision: the tests before chose "no"
    try:
        info = read_info(train_dpo(config, pairs))
    finally:
        AcceleratorState._reset_state()  # and the tests after choose theirs
    assert info["hyperparameters"]["mixed_precision"] == "bf16"
    assert info["metrics"]["fixed_batch_loss_before"] == pytest.approx(math.log(2), abs=1e-6)


def _wilson_low(wins: float, n: int, z: float = 1.96) -> float:
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    return centre - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


LOOP_SEEDS = (0, 1, 2)  # each seed a whole loop: its own pool, picks, adapter, draws


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about four minutes on two busy CPU cores
def test_closed_loop_dpo_from_the_picks_beats_the_base_on_held_out_prompts(
    tiny_model: Path, base: Generator, tmp_path: Path
) -> None:
    """The red-corner rule stands in for people and picks in each set of base images;
    Diffusion-DPO learns from the picks alone (no reward model), and on held-out prompts
    and seeds its adapter beats the base, seed after seed of the whole loop."""
    wins, prompts = 0.0, 0
    for seed in LOOP_SEEDS:
        loop = dpo_loop(tiny_model, base, tmp_path / f"loop{seed}", seed)
        result = loop.served
        print(
            f"DPO loop {seed}: {loop.pairs} pairs; win rate {result.win_rate:.1%}, mean "
            f"difference {result.mean_difference:+.2f} {result.difference_ci}"
        )
        assert loop.pairs == 192  # three pairs from each of the 64 sets
        assert result.difference_ci[0] > 0
        wins += result.win_rate * result.prompts
        prompts += result.prompts
    low = _wilson_low(wins, prompts)
    print(
        f"DPO over {len(LOOP_SEEDS)} loops: {wins / prompts:.1%} of prompts, Wilson low {low:.1%}"
    )
    assert low > 0.5
