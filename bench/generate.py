"""Generation speed: one batched call for N images against N single calls, and job overhead.

On the CPU with the tiny preset (always), and on a GPU when one is present with a
real-size, randomly initialised Stable Diffusion 1.5 (fp16, 512 px; nothing to download):

- the time of ONE pipeline call for 4 images against 4 calls of 1 image (ratio);
- images/s for batch 4;
- the share of a whole generation job's wall time spent outside the pipeline call
  (claiming the row, PNG encoding, storing, recording, notifying; goal <= 5% on a GPU);
- a mixed set's job (2 + 2 images by two versions, each version's call on the same loaded
  pipeline) against a plain job of 4 images, through the real job code, on the tiny
  preset: two adapters, and an adapter against the bare base (goal <= 1.1x).

    python -m bench.generate [--steps 20] [--repeats 5] [--jobs 8] [--mixed]

``--mixed`` prints only the mixed-set figures.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, scratch_database

N = 4


def time_calls(generator: Any, steps: int, repeats: int, size: int | None) -> tuple[float, float]:
    """Median seconds of one call for N images, and of N calls for one image each."""
    import torch

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def batched() -> None:
        generator.generate("a red cat", list(range(N)), steps=steps, width=size, height=size)

    def singles() -> None:
        for seed in range(N):
            generator.generate("a red cat", [seed], steps=steps, width=size, height=size)

    results = []
    for run in (batched, singles):
        run()  # warm-up: kernels, allocator, caches
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            sync()
            times.append(time.perf_counter() - start)
        results.append(median(times))
    return results[0], results[1]


async def job_overhead(generator: Any, steps: int, jobs: int, size: int | None) -> float:
    """Share of job wall time outside the pipeline call, through the real job code."""
    from bot.config import load_settings
    from bot.domain import UserRef
    from bot.generation.runner import GenerationRunner
    from bot.runtime import open_platform

    inside: list[float] = []
    generate = generator.generate

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            inside.append(time.perf_counter() - start)

    generator.generate = timed
    with scratch_database() as (_, url), tempfile.TemporaryDirectory() as data:
        settings = load_settings(
            _env_file=None,
            database_url=url,
            data_dir=data,
            generator={"steps": steps, "width": size, "height": size},
            limits={"max_queued_per_user": jobs + 1},
        )
        async with open_platform(settings, upgrade=False) as platform:
            runner = GenerationRunner(platform.sessions, platform.storage, generator)
            user = UserRef.parse("cli:bench")
            ids = [
                (await platform.service.submit_prompt(user, f"a cat {k}", N)).generation_id
                for k in range(jobs + 1)
            ]
            await runner.run(ids[0])  # warm-up
            inside.clear()
            start = time.perf_counter()
            for generation_id in ids[1:]:
                await runner.run(generation_id)
            total = time.perf_counter() - start
    generator.generate = generate
    return 1 - sum(inside) / total


async def mixed_jobs(
    generator: Any, model: Path, steps: int, repeats: int, folder: Path
) -> dict[str, tuple[float, float, float]]:
    """Median job seconds, plain (4 images by the serving adapter) and mixed (2 + 2), per
    pairing; and the first mixed job's (it loads the other version once)."""
    import random

    from sqlalchemy import text

    from bot.config import load_settings
    from bot.domain import UserRef
    from bot.generation.runner import GenerationRunner
    from bot.runtime import open_platform
    from tests.support.adapters import distinct_lora_adapter

    a = distinct_lora_adapter(model, folder / "a", seed=1)
    b = distinct_lora_adapter(model, folder / "b", seed=2)
    results: dict[str, tuple[float, float, float]] = {}
    with scratch_database() as (_, url), tempfile.TemporaryDirectory() as data:
        settings = load_settings(
            _env_file=None,
            database_url=url,
            data_dir=data,
            generator={"steps": steps},
            limits={"max_queued_per_user": 1000},
            arena={"daily_cap": 1000},
        )
        async with open_platform(settings, upgrade=False) as platform:
            platform.service.mixing_rng = random.Random(0)
            runner = GenerationRunner(
                platform.sessions, platform.storage, generator, registry=platform.registry
            )
            serving = await platform.registry.register("generator_adapter", str(a))
            other = await platform.registry.register("generator_adapter", str(b))
            await platform.registry.promote(serving)
            user = UserRef.parse("cli:bench")

            async def job(share: float) -> float:
                settings.arena.share = share
                submitted = await platform.service.submit_prompt(user, "a red cat", N)
                start = time.perf_counter()
                assert await runner.run(submitted.generation_id) == "done"
                return time.perf_counter() - start

            for label, contender in (("two adapters", other), ("adapter + base", None)):
                async with platform.engine.begin() as connection:
                    await connection.execute(text("UPDATE comparisons SET status = 'stopped'"))
                    await connection.execute(
                        text(
                            "INSERT INTO comparisons (baseline_version_id, contender_version_id) "
                            "VALUES (:a, :b)"
                        ),
                        {"a": serving, "b": contender},
                    )
                await job(0.0)  # warm-up: the serving adapter, caches
                first_mixed = await job(1.0)  # loads the other version (once: it is kept)
                plain: list[float] = []
                mixed: list[float] = []
                for _ in range(repeats):  # interleaved: drift hits both alike
                    plain.append(await job(0.0))
                    mixed.append(await job(1.0))
                results[label] = (median(plain), median(mixed), first_mixed)
    return results


def random_lora(unet_config: Any, folder: Path, seed: int) -> Path:
    """A LoRA adapter (diffusers format) for a UNet of ``unet_config``, random weights."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from training.run_folder import write_info

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(unet_config)
    unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        )
    )
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    write_info(folder, {"negative_prompt": "Weird image."})
    return folder


def mixed_calls(
    generator: Any, steps: int, repeats: int, size: int | None
) -> dict[str, tuple[float, float, float]]:
    """Median seconds of the pipeline calls alone: one 4-image call by the serving adapter,
    2 + 2 (the serving adapter's call, then the other version's on the same pipeline), and
    2 + 2 by the serving adapter alone (what halving the batch costs, without a switch)."""
    import torch

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    options = {"steps": steps, "width": size, "height": size}
    results: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        config = generator.pipe.unet.config
        serving = random_lora(config, Path(folder) / "a", 1)
        other = random_lora(config, Path(folder) / "b", 2)
        generator.apply_adapter(serving)
        for label, version in (("two adapters", other), ("adapter + base", None)):

            def plain() -> None:
                generator.generate("a red cat", [0, 1, 2, 3], **options)

            def mixed(version: Path | None = version) -> None:
                generator.generate("a red cat", [0, 1], **options)
                generator.generate_as(version, "a red cat", [0, 1], **options)

            def split() -> None:
                generator.generate("a red cat", [0, 1], **options)
                generator.generate("a red cat", [0, 1], **options)

            runs = {"plain": plain, "mixed": mixed, "split": split}
            times: dict[str, list[float]] = {name: [] for name in runs}
            for run in runs.values():  # warm-up; the other version is loaded once and kept
                run()
            sync()
            for _ in range(repeats):  # interleaved: drift hits all alike
                for name, run in runs.items():
                    start = time.perf_counter()
                    run()
                    sync()
                    times[name].append(time.perf_counter() - start)
            results[label] = (
                median(times["plain"]),
                median(times["mixed"]),
                median(times["split"]),
            )
        generator.clear_adapter()
    return results


def report_mixed_calls(
    label: str, generator: Any, args: argparse.Namespace, size: int | None
) -> None:
    found = mixed_calls(generator, args.steps, args.repeats, size)
    for pairing, (plain, mixed, split) in found.items():
        print(
            f"{label}: pipeline calls of a mixed set ({pairing}, 2 + 2) {mixed:.3f} s against "
            f"one 4-image call {plain:.3f} s -> {mixed / plain:.2f}x (goal <= 1.1x; median of "
            f"{args.repeats}); two 2-image calls of one version, no switch: "
            f"{split / plain:.2f}x (what halving the batch costs)"
        )


def report_mixed(generator: Any, model: Path, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        found = asyncio.run(mixed_jobs(generator, model, args.steps, args.repeats, Path(folder)))
    for label, (plain, mixed, first) in found.items():
        print(
            f"tiny preset, CPU: mixed set ({label}, 2 + 2 images) {mixed:.3f} s per job against "
            f"{plain:.3f} s for a plain 4-image job -> {mixed / plain:.2f}x (goal <= 1.1x; "
            f"median of {args.repeats}); the first mixed job, loading the other version: "
            f"{first:.3f} s"
        )


def report(label: str, generator: Any, args: argparse.Namespace, size: int | None) -> None:
    one, many = time_calls(generator, args.steps, args.repeats, size)
    print(
        f"{label}: {N} images in one call {one:.3f} s, in {N} calls {many:.3f} s "
        f"-> batched is {many / one:.2f}x faster; {N / one:.2f} images/s at batch {N}"
    )
    share = asyncio.run(job_overhead(generator, args.steps, args.jobs, size))
    print(
        f"{label}: {share:.1%} of job wall time outside the pipeline call (over {args.jobs} jobs)"
    )


def sd15_random_pipeline() -> Any:
    """Stable Diffusion 1.5's architecture at full size with random weights (no download)."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from training.presets import clip_tokenizer, sd_scheduler

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        scheduler=sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--mixed", action="store_true", help="only the mixed-set figures")
    args = parser.parse_args()

    import torch

    from training.generator import Generator

    with tempfile.TemporaryDirectory() as cache:
        tiny = Generator.load("tiny", cache_dir=Path(cache), device="cpu")
        if not args.mixed:
            report("tiny preset, CPU, 64 px", tiny, args, None)
        report_mixed(tiny, Path(cache) / "tiny", args)
        report_mixed_calls("tiny preset, CPU", tiny, args, None)

    if torch.cuda.is_available():
        pipe = sd15_random_pipeline().to("cuda", torch.float16)
        big = Generator(pipe, "sd15-random")
        label = f"SD 1.5 size (random), {torch.cuda.get_device_name()}, fp16, 512 px"
        if not args.mixed:
            report(label, big, args, 512)
        report_mixed_calls(label, big, args, 512)
    else:
        print("no GPU here: the full-size SD 1.5 figures need one (see docs/operations.md)")


if __name__ == "__main__":
    main()
