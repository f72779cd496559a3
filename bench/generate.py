"""Generation speed: one batched call for N images against N single calls, and job overhead.

On the CPU with the tiny preset (always), and on a GPU when one is present with a
real-size, randomly initialised Stable Diffusion 1.5 (fp16, 512 px; nothing to download):

- the time of ONE pipeline call for 4 images against 4 calls of 1 image (ratio);
- images/s for batch 4;
- the share of a whole generation job's wall time spent outside the pipeline call
  (claiming the row, PNG encoding, storing, recording, notifying; goal <= 5% on a GPU).

    python -m bench.generate [--steps 20] [--repeats 5] [--jobs 8]
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
    args = parser.parse_args()

    import torch

    from training.generator import Generator

    with tempfile.TemporaryDirectory() as cache:
        tiny = Generator.load("tiny", cache_dir=Path(cache), device="cpu")
        report("tiny preset, CPU, 64 px", tiny, args, None)

    if torch.cuda.is_available():
        pipe = sd15_random_pipeline().to("cuda", torch.float16)
        big = Generator(pipe, "sd15-random")
        report(
            f"SD 1.5 size (random), {torch.cuda.get_device_name()}, fp16, 512 px", big, args, 512
        )
    else:
        print("no GPU here: the full-size SD 1.5 figures need one (see docs/operations.md)")


if __name__ == "__main__":
    main()
