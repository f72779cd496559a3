"""How fast the adapters train: the LoRA against the same steps written as diffusers'
example, and Diffusion-DPO beside them.

On the tiny preset (CPU): prefloop's trainer (latents and text embeddings computed once,
then cached) against the loop of diffusers' `train_text_to_image_lora.py` (every step
re-encodes its images with the VAE and its captions with the text encoder), same LoRA,
batch, steps and data; and prefloop's Diffusion-DPO on the same images, 4 pairs a step
(the same 8 images a step: each pair is two images, each image also through the frozen
reference, the same UNet with the LoRA switched off). Each runs in a child process;
prints steps/s and peak RSS, and the ratios (goal for the LoRA's >= 1.0). (The GPU
figures, an SD 1.5-size UNet at 512 px, are not measured here: no GPU was lent to these
tasks.)

    python -m bench.adapt [--steps 60] [--images 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _pool(work: Path, images: int) -> list:
    from tests.support.red_corner import generate_pool
    from training.generator import Generator

    generator = Generator.load("tiny", cache_dir=work, device="cpu", safety_checker=False)
    return generate_pool(generator, [f"a thing {i}" for i in range(images // 4)], work / "pool")


def _selection(work: Path, images: int) -> list:
    from tests.support.red_corner import RedCornerScorer
    from training.adapt.select import select

    return select(RedCornerScorer(), _pool(work, images), alpha=1.0)


def dpo(steps: int, images: int) -> dict[str, float]:
    """Diffusion-DPO on the rule's picks in the same pool: 4 pairs (8 images) a step."""
    from tests.support.red_corner import rule_pairs
    from training.adapt.dpo import DPOConfig, train_dpo
    from training.run_folder import read_info

    work = Path(tempfile.mkdtemp(prefix="prefloop-bench-adapt-"))
    pairs = rule_pairs(_pool(work, images))
    started = time.perf_counter()
    out = train_dpo(
        DPOConfig(out=work / "dpo", base="tiny", cache_dir=work, steps=steps, batch_size=4),
        pairs,
    )
    total = time.perf_counter() - started
    metrics = read_info(out)["metrics"]
    return {"steps_per_s": steps / metrics["seconds"], "with_setup_s": total}


def ours(steps: int, images: int) -> dict[str, float]:
    from training.adapt.lora import AdaptConfig, adapt_generator
    from training.run_folder import read_info

    work = Path(tempfile.mkdtemp(prefix="prefloop-bench-adapt-"))
    selection = _selection(work, images)
    started = time.perf_counter()
    out = adapt_generator(
        AdaptConfig(out=work / "lora", base="tiny", cache_dir=work, steps=steps), selection
    )
    total = time.perf_counter() - started
    metrics = read_info(out)["metrics"]
    return {"steps_per_s": steps / metrics["seconds"], "with_setup_s": total}


def example(steps: int, images: int) -> dict[str, float]:
    """The per-step work of diffusers' LoRA example, on the same data and LoRA."""
    import torch
    from diffusers import DDPMScheduler
    from peft import LoraConfig
    from PIL import Image

    from training.adapt.lora import PRESET_DEFAULTS, captions
    from training.adapt.tuning import TARGETS, load_pipeline

    work = Path(tempfile.mkdtemp(prefix="prefloop-bench-adapt-"))
    pairs = captions(_selection(work, images))
    hyper = PRESET_DEFAULTS["tiny"]
    started = time.perf_counter()
    pipe = load_pipeline("tiny", work)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
    torch.manual_seed(0)
    lora = LoraConfig(
        r=hyper["rank"],
        lora_alpha=hyper["rank"],
        init_lora_weights="gaussian",
        target_modules=TARGETS,
    )
    pipe.unet.add_adapter(lora)
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hyper["lr"], weight_decay=1e-2)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    setup = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        batch = [pairs[i] for i in torch.randint(len(pairs), (hyper["batch_size"],)).tolist()]
        pixels = []
        for file, _ in batch:  # the example's dataset transform, every step
            with Image.open(file) as image:
                image = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
                array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
            pixels.append(array.view(size, size, 3).permute(2, 0, 1).float() / 127.5 - 1)
        latents = pipe.vae.encode(torch.stack(pixels)).latent_dist.sample()
        latents = latents * pipe.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(batch),))
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        ids = pipe.tokenizer(
            [c for _, c in batch],
            padding="max_length",
            truncation=True,
            max_length=pipe.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        hidden = pipe.text_encoder(ids)[0]
        predicted = pipe.unet(noisy, timesteps, hidden).sample
        loss = torch.nn.functional.mse_loss(predicted.float(), noise.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - started
    return {"steps_per_s": steps / seconds, "with_setup_s": seconds + setup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--child", choices=["ours", "example", "dpo"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = {"ours": ours, "example": example, "dpo": dpo}[args.child](args.steps, args.images)
        run["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(run))
        return
    results = {}
    for name in ("example", "ours", "dpo"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.adapt",
                "--child",
                name,
                "--steps",
                str(args.steps),
                "--images",
                str(args.images),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"tiny preset, CPU, {args.steps} steps of batch 8, {args.images} pool images")
    labels = {
        "example": "diffusers example loop",
        "ours": "prefloop (cached latents)",
        "dpo": "prefloop DPO (4 pairs)",
    }
    for name, r in results.items():
        print(
            f"  {labels[name]:<28} {r['steps_per_s']:6.2f} steps/s  peak RSS {r['rss_mb']:.0f} MB"
        )
    ratio = results["ours"]["steps_per_s"] / results["example"]["steps_per_s"]
    print(f"  ratio prefloop / example: {ratio:.2f} (goal >= 1.0)")
    dpo_ratio = results["dpo"]["steps_per_s"] / results["ours"]["steps_per_s"]
    print(f"  ratio DPO / prefloop LoRA, same images a step: {dpo_ratio:.2f}")


if __name__ == "__main__":
    main()
