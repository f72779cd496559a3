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


@pytest.fixture(scope="module")
def two_adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.support.adapters import distinct_lora_adapter

    folder = tmp_path_factory.mktemp("adapters")
    return (
        distinct_lora_adapter(tiny_model, folder / "a", seed=1),
        distinct_lora_adapter(tiny_model, folder / "b", seed=2),
    )


def _fresh(tiny_model: Path) -> Generator:
    return Generator.load(str(tiny_model), cache_dir=tiny_model.parent, device="cpu")


def _same(one: Any, other: Any) -> bool:
    return bool(np.abs(_pixels(one) - _pixels(other)).max() <= 2)


def test_generate_as_makes_what_serving_that_version_makes(
    tiny_model: Path, two_adapters: tuple[Path, Path]
) -> None:
    a, b = two_adapters
    mixing = _fresh(tiny_model)
    mixing.apply_adapter(a)  # serving a; b and the bare base are drawn on the side
    as_a = mixing.generate_as(a, "a cat", [5], steps=3).images[0]
    as_b = mixing.generate_as(b, "a cat", [5], steps=3).images[0]
    as_base = mixing.generate_as(None, "a cat", [5], steps=3).images[0]
    after = mixing.generate("a cat", [5], steps=3).images[0]
    assert mixing.adapter == str(a) and mixing.negative_prefix == "Weird image."
    assert mixing.version_of(b) == f"{mixing.name}+{b}" and mixing.version_of(None) == mixing.name

    reference = _fresh(tiny_model)
    base = reference.generate("a cat", [5], steps=3).images[0]
    reference.apply_adapter(b)
    served_b = reference.generate("a cat", [5], steps=3).images[0]
    reference.apply_adapter(a)
    served_a = reference.generate("a cat", [5], steps=3).images[0]
    assert _same(as_a, served_a) and _same(after, served_a)  # the serving one is restored
    assert _same(as_b, served_b) and _same(as_base, base)
    assert not _same(served_a, served_b) and not _same(served_a, base)  # they differ


def test_kept_adapters_switch_without_reloading_and_the_oldest_goes(
    tiny_model: Path, two_adapters: tuple[Path, Path], tmp_path: Path
) -> None:
    import shutil

    from training.generator import KEPT_ADAPTERS

    a, _ = two_adapters
    generator = _fresh(tiny_model)
    copies = [shutil.copytree(a, tmp_path / f"copy{k}") for k in range(KEPT_ADAPTERS + 1)]
    for folder in copies:
        generator.preload(folder)
    loaded = generator.pipe.get_list_adapters()["unet"]
    assert len(loaded) == KEPT_ADAPTERS  # the least recently used one was dropped
    calls: list[Any] = []
    load = generator.pipe.load_lora_weights

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return load(*args, **kwargs)

    generator.pipe.load_lora_weights = counted
    generator.preload(copies[-1])  # kept: not loaded again
    generator.generate_as(copies[-1], "a cat", [1], steps=1)
    generator.apply_adapter(copies[-2])  # a kept one starts serving without a reload
    assert calls == [] and generator.adapter == str(copies[-2])


def test_a_version_that_cannot_load_is_an_error_and_what_serves_stays(
    tiny_model: Path, two_adapters: tuple[Path, Path], tmp_path: Path
) -> None:
    a, _ = two_adapters
    generator = _fresh(tiny_model)
    generator.apply_adapter(a)
    served = generator.generate("a cat", [3], steps=2).images[0]
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(GeneratorLoadError, match="could not be loaded"):
        generator.generate_as(broken, "a cat", [3], steps=2)
    with pytest.raises(GeneratorLoadError, match="does not exist"):
        generator.generate_as(tmp_path / "missing", "a cat", [3], steps=2)
    assert generator.adapter == str(a)
    assert _same(generator.generate("a cat", [3], steps=2).images[0], served)


def test_a_call_stopped_midway_restores_the_serving_version(
    tiny_model: Path, two_adapters: tuple[Path, Path]
) -> None:
    a, b = two_adapters
    generator = _fresh(tiny_model)
    generator.apply_adapter(a)
    served = generator.generate("a cat", [3], steps=2).images[0]

    class Stopped(Exception):
        """What the worker raises (PipelineStopped) at the step after a cancel."""

    def stop(step: int, total: int) -> None:
        if step == 1:
            raise Stopped

    with pytest.raises(Stopped):
        generator.generate_as(b, "a cat", [3], steps=2, on_step=stop)
    assert generator.negative_prefix == "Weird image."
    assert _same(generator.generate("a cat", [3], steps=2).images[0], served)
