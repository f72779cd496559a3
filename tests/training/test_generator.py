"""The tiny preset is a real Stable Diffusion pipeline, loaded like any other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.generator import Generator, GeneratorLoadError
from training.presets import WORLD_SIDE


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_preset_is_saved_as_a_diffusers_folder(tiny_model: Path) -> None:
    assert (tiny_model / "model_index.json").exists()
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "safety_checker"):
        assert (tiny_model / part).is_dir(), part
    assert list((tiny_model / "unet").glob("*.safetensors"))


def test_preset_name_loads_through_a_saved_folder(tmp_path: Path) -> None:
    generator = Generator.load("tiny", cache_dir=tmp_path, device="cpu")
    assert (tmp_path / "tiny" / "model_index.json").exists()
    assert generator.default_size() == (WORLD_SIDE, WORLD_SIDE)
    assert generator.has_safety_checker


def test_n_images_in_one_call_each_reproducible_from_its_seed(generator: Generator) -> None:
    batch = generator.generate("a red cat", [11, 12, 13], steps=3)
    assert len(batch.images) == 3 and batch.nsfw == [False, False, False]
    assert batch.images[0].size == (WORLD_SIDE, WORLD_SIDE)
    alone = generator.generate("a red cat", [12], steps=3)
    difference = np.abs(_pixels(batch.images[1]) - _pixels(alone.images[0])).max()
    assert difference <= 2  # batched float maths may round one step differently
    assert np.abs(_pixels(batch.images[0]) - _pixels(batch.images[1])).max() > 10


def test_progress_is_reported_for_every_step(generator: Generator) -> None:
    seen: list[tuple[int, int]] = []
    generator.generate("a cat", [1, 2], steps=4, on_step=lambda k, n: seen.append((k, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_negative_prompt_changes_the_images(generator: Generator) -> None:
    plain = generator.generate("a cat", [5, 6], steps=3)
    negative = generator.generate("a cat", [5, 6], steps=3, negative_prompt="weird image")
    assert np.abs(_pixels(plain.images[0]) - _pixels(negative.images[0])).max() > 0


def test_flagged_images_are_reported(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model)
    with torch.no_grad():  # thresholds below any similarity: everything is "unsafe"
        pipe.safety_checker.concept_embeds_weights.fill_(-2.0)
    pipe.save_pretrained(tmp_path / "strict")
    strict = Generator.load(str(tmp_path / "strict"), cache_dir=tmp_path, device="cpu")
    result = strict.generate("a cat", [1, 2], steps=2)
    assert result.nsfw == [True, True]


@pytest.mark.parametrize("model", ["not a model", "./missing-folder", "/no/such/place"])
def test_unknown_models_are_refused_by_name(model: str, tmp_path: Path) -> None:
    with pytest.raises(GeneratorLoadError, match="not a folder, a preset"):
        Generator.load(model, cache_dir=tmp_path)


def test_a_corrupt_folder_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(b"not safetensors")
    with pytest.raises(GeneratorLoadError, match="could not load generator"):
        Generator.load(str(broken), cache_dir=tmp_path, device="cpu")
