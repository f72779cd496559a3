"""Fine-tune a LoRA on the generator's UNet from an HPS selection (the paper's recipe).

Positives are captioned with their prompt, negatives with "Weird image. " + prompt, and
optional regularisation pairs (image + caption) are mixed in at a set ratio; the loss is
the usual noise-prediction MSE. The images' VAE latents (mean and spread) and the
captions' text embeddings are computed once before training, not at every step.

Every step draws its samples, noise and timesteps from a generator seeded by (seed, step,
process), so a run is reproducible and a resumed run replays exactly what the
uninterrupted one would have done. One entry point on a CPU, a GPU or many:
``python -m training adapt …``, or ``accelerate launch -m training adapt …``.

The defaults are the paper's recipe scaled down (``PAPER``: 1,000 steps of 4); the
paper's full-size settings are named recipes (``RECIPES``: ``hps-script``, the released
training script's, and ``hps-paper-text``, the paper's text's), chosen with ``--recipe``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.adapt import WEIRD
from training.adapt.select import Selected, negatives_by_source, pool_from_folder
from training.generator import model_source
from training.presets import preset_of
from training.run_folder import (
    forget_resume_point,
    is_finished,
    load_resume_point,
    plain,
    progress_bar,
    save_resume_point,
    write_info,
)

log = logging.getLogger(__name__)

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
PAPER: dict[str, Any] = {
    "rank": 4,
    "lr": 1e-5,  # constant
    "weight_decay": 1e-2,
    "steps": 1000,
    "batch_size": 4,
}
# A toy trained for seconds needs a bigger rank and rate to change in a few hundred steps.
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"rank": 8, "lr": 1e-3, "steps": 300, "batch_size": 8},
}
# The paper's two full-size settings, by name (``--recipe NAME``): a recipe replaces the
# defaults above (the base's and the paper's), and every value given on its own
# (``--rank``, ``--steps`` …) still wins over it. The batch is per process, as in the
# released script (its README: batch 5 on each of 8 GPUs for the same 40).
RECIPES: dict[str, dict[str, Any]] = {
    # github.com/tgxs002/align_sd scripts/train_lora.sh: train_text_to_image_lora.py with
    # batch 40, lr 1e-5 constant, no warmup, 10,000 steps; it passes no --lora_rank, so
    # the script's default 4 applies, and no --adam_weight_decay (default 1e-2).
    "hps-script": {
        "rank": 4,
        "lr": 1e-5,
        "weight_decay": 1e-2,
        "steps": 10_000,
        "batch_size": 40,
    },
    # The paper's text (arXiv 2303.14420) gives rank 32 for the same run; the other values
    # are the script's (summaries of the paper state none that differ: docs/reproducing.md).
    "hps-paper-text": {
        "rank": 32,
        "lr": 1e-5,
        "weight_decay": 1e-2,
        "steps": 10_000,
        "batch_size": 40,
    },
}


class AdaptError(RuntimeError):
    """The fine-tune cannot start or go on; the message says why."""


@dataclass
class AdaptConfig:
    out: Path
    base: str = "CompVis/stable-diffusion-v1-4"
    rank: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    grad_accum: int = 1
    regularization: Path | None = None  # a folder of x.png + x.txt pairs
    regularization_ratio: float = 0.5  # share of samples drawn from it, when given
    mixed_precision: str = "auto"
    gradient_checkpointing: bool | None = None  # None: on a GPU
    seed: int = 0
    save_every: int = 0  # steps between resume points; 0 = about 10 per run
    device: str = "auto"
    cache_dir: Path | None = None
    hps: str | None = None  # recorded in the run folder's info
    selection_hash: str | None = None
    recipe: str | None = None  # a name in RECIPES; None: the base's defaults, else PAPER

    def models(self) -> Path:
        """Where base models are downloaded to and found."""
        return self.cache_dir or Path.home() / ".cache" / "prefloop"

    def resolved(self) -> dict[str, Any]:
        """The hyperparameters in force: given > the recipe's > the base's > PAPER."""
        if self.recipe is not None and self.recipe not in RECIPES:
            raise AdaptError(
                f"unknown recipe {self.recipe!r}: use {' or '.join(RECIPES)} "
                "(or none, for the defaults)"
            )
        merged = {**PAPER, **PRESET_DEFAULTS.get(preset_of(self.base) or "", {})}
        merged.update(RECIPES.get(self.recipe or "", {}))
        for name in PAPER:
            if getattr(self, name) is not None:
                merged[name] = getattr(self, name)
        return merged

    def recorded(self, precision: str) -> dict[str, Any]:
        """The adapter's ``prefloop.json`` ``hyperparameters``: those in force, the
        recipe they came from, and the rest of the run's settings."""
        return {
            **self.resolved(),
            "recipe": self.recipe,
            "grad_accum": self.grad_accum,
            "seed": self.seed,
            "mixed_precision": precision,
            "targets": TARGETS,
            "regularization_ratio": self.regularization_ratio,
        }


@dataclass
class Cached:
    """Training items as tensors, computed once."""

    mean: Any  # [N, 4, h, w] latent means
    std: Any  # [N, 4, h, w]
    text: Any  # [C, L, D] embeddings of the distinct captions
    caption: Any  # [N] index into text
    regular: Any  # [N] bool: a regularisation pair


def captions(selection: Sequence[Selected]) -> list[tuple[str, str]]:
    """(image file, caption): the prompt for positives, "Weird image. " + it for negatives."""
    return [(s.file, s.prompt if s.label == "positive" else WEIRD + s.prompt) for s in selection]


def load_pipeline(base: str, cache_dir: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    try:
        return StableDiffusionPipeline.from_pretrained(
            model_source(base, cache_dir), safety_checker=None, requires_safety_checker=False
        )
    except Exception as error:
        raise AdaptError(f"could not load generator {base!r}: {error}") from None


def encode(pipe: Any, items: Sequence[tuple[str, str, bool]], size: int, device: Any) -> Cached:
    """VAE latent distributions of the images and text embeddings of the captions."""
    import torch
    from PIL import Image

    texts = sorted({caption for _, caption, _ in items})
    index = {caption: i for i, caption in enumerate(texts)}
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, len(items), 16):
            pixels = []
            for file, _, _ in items[start : start + 16]:
                with Image.open(file) as image:
                    rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
                    array = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
                pixels.append(array.view(size, size, 3).permute(2, 0, 1).float() / 127.5 - 1)
            dist = pipe.vae.encode(torch.stack(pixels).to(device)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
        embeddings = []
        for start in range(0, len(texts), 32):
            tokens = pipe.tokenizer(
                texts[start : start + 32],
                padding="max_length",
                max_length=pipe.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            embeddings.append(pipe.text_encoder(tokens.to(device))[0].cpu())
    return Cached(
        mean=torch.cat(means),
        std=torch.cat(stds),
        text=torch.cat(embeddings),
        caption=torch.tensor([index[caption] for _, caption, _ in items]),
        regular=torch.tensor([regular for _, _, regular in items]),
    )


def draw(cached: Cached, batch: int, ratio: float, generator: Any) -> Any:
    """Indices of one batch: from the regularisation pairs with probability ``ratio``."""
    import torch

    main = (~cached.regular).nonzero().flatten()
    extra = cached.regular.nonzero().flatten()
    picks = torch.randint(len(main), (batch,), generator=generator)
    chosen = main[picks]
    if len(extra) and ratio > 0:
        use = torch.rand(batch, generator=generator) < ratio
        swap = extra[torch.randint(len(extra), (batch,), generator=generator)]
        chosen = torch.where(use, swap, chosen)
    return chosen


def step_loss(
    unet: Any,
    noise_scheduler: Any,
    cached: Cached,
    index: Any,
    generator: Any,
    scaling: float,
    device: Any,
    dtype: Any,
) -> Any:
    """Noise-prediction MSE of one batch, everything random drawn from ``generator``."""
    import torch

    mean, std = cached.mean[index], cached.std[index]
    # Random numbers come from a CPU generator (the same on every device), then move.
    sample = torch.randn(mean.shape, generator=generator).to(device)
    latents = (mean + std * sample) * scaling
    noise = torch.randn(latents.shape, generator=generator).to(device)
    steps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (len(index),), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    text = cached.text[cached.caption[index]]
    predicted = unet(noisy.to(dtype), timesteps, text.to(dtype)).sample
    return torch.nn.functional.mse_loss(predicted.float(), target.float())


def adapt_generator(
    config: AdaptConfig,
    selection: Sequence[Selected],
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train the LoRA; write a folder stock diffusers loads with ``load_lora_weights``."""
    import torch
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    out = Path(config.out)
    if is_finished(out):
        raise AdaptError(f"{out} already holds a trained adapter; choose a new folder")
    pairs = captions(selection)
    if not pairs:
        raise AdaptError("the selection is empty: nothing to learn from (see docs: selection)")
    regular = pool_from_folder(config.regularization) if config.regularization else []
    items = [(file, caption, False) for file, caption in pairs]
    items += [(str(image), group.prompt, True) for group in regular for image in group.images]
    hyper = config.resolved()

    on_gpu = torch.cuda.is_available() and config.device != "cpu"
    precision = config.mixed_precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "no"
    accelerator = Accelerator(
        mixed_precision=precision, cpu=not on_gpu, gradient_accumulation_steps=config.grad_accum
    )
    pipe = load_pipeline(config.base, config.models())
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
        part.to(accelerator.device)
    pipe.unet.to(dtype=weight_dtype)  # the VAE and text encoder run once, in float32
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    cached = encode(pipe, items, size, accelerator.device)
    cached.mean, cached.std = (
        t.to(accelerator.device, torch.float32) for t in (cached.mean, cached.std)
    )
    cached.text = cached.text.to(accelerator.device)
    unet = pipe.unet
    with torch.random.fork_rng(devices=[]):  # the LoRA's initial weights follow the seed
        torch.manual_seed(config.seed)
        lora = LoraConfig(
            r=hyper["rank"],
            lora_alpha=hyper["rank"],
            init_lora_weights="gaussian",
            target_modules=TARGETS,
        )
        unet.add_adapter(lora)
    for param in unet.parameters():
        if param.requires_grad:
            param.data = param.data.float()  # LoRA weights train in full precision
    if config.gradient_checkpointing if config.gradient_checkpointing is not None else on_gpu:
        unet.enable_gradient_checkpointing()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hyper["lr"], weight_decay=hyper["weight_decay"])
    unet, optimizer = accelerator.prepare(unet, optimizer)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    scaling = pipe.vae.config.scaling_factor
    total, batch = hyper["steps"], hyper["batch_size"]
    run = {
        "hyper": hyper,
        "seed": config.seed,
        "items": len(items),
        "base": config.base,
        "selection": config.selection_hash,
        "grad_accum": config.grad_accum,
        "regularization_ratio": config.regularization_ratio,
        "processes": accelerator.num_processes,
        "precision": precision,
    }

    def generator(step: int, micro: int) -> Any:
        key = f"{config.seed}:{step}:{micro}:{accelerator.process_index}".encode()
        return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8]))

    def fixed_loss() -> float:  # the same samples, noise and timesteps before and after
        with torch.no_grad(), accelerator.autocast():
            probe = torch.Generator().manual_seed(config.seed + 12345)
            index = draw(cached, min(64, 8 * batch), 0.0, probe)
            return float(
                step_loss(
                    unet,
                    noise_scheduler,
                    cached,
                    index,
                    probe,
                    scaling,
                    accelerator.device,
                    weight_dtype,
                )
            )

    step, losses = 0, []
    try:
        saved = load_resume_point(out)
    except ValueError as error:
        raise AdaptError(str(error)) from None
    if saved is not None:
        if saved["run"] != plain(run):
            raise AdaptError(
                f"{out} holds an unfinished run with other settings or data; "
                "resume it with the same ones, or choose a new folder"
            )
        _load_lora(accelerator.unwrap_model(unet), saved["lora"])
        optimizer.load_state_dict(saved["optimizer"])
        if accelerator.scaler is not None and saved.get("scaler"):
            accelerator.scaler.load_state_dict(saved["scaler"])
        step, losses, before = saved["step"], saved["losses"], saved["before"]
        log.info("resuming %s at step %d of %d", out, step, total)
    else:
        before = fixed_loss()
    save_every = config.save_every or max(1, total // 10)
    progress = progress_bar(total, step, accelerator.is_local_main_process, "adapt")
    started = time.perf_counter()
    unet.train()
    while step < total:
        for micro in range(config.grad_accum):
            with accelerator.accumulate(unet), accelerator.autocast():
                g = generator(step, micro)
                index = draw(cached, batch, config.regularization_ratio, g)
                loss = step_loss(
                    unet,
                    noise_scheduler,
                    cached,
                    index,
                    g,
                    scaling,
                    accelerator.device,
                    weight_dtype,
                )
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
        step += 1
        value = float(accelerator.gather(loss.detach()).mean())
        losses.append(value)
        progress.update(1)
        progress.set_postfix(loss=f"{value:.4f}")
        if step % save_every == 0 and step < total and accelerator.is_main_process:
            _save_state(out, accelerator, unet, optimizer, step, losses, before, run)
        if on_step is not None:
            on_step(step, value)
    progress.close()
    seconds = time.perf_counter() - started
    unet.eval()
    after = fixed_loss()
    if accelerator.is_main_process:
        _write_adapter(accelerator.unwrap_model(unet), out)
        info = {
            "base": config.base,
            "hps": config.hps,
            "selection": {
                "items": len(pairs),
                "negatives": negatives_by_source(selection),
                "regularization": len(items) - len(pairs),
                "manifest_sha256": config.selection_hash,
            },
            "hyperparameters": config.recorded(precision),
            "metrics": {
                "fixed_batch_loss_before": before,
                "fixed_batch_loss_after": after,
                "train_loss_first": losses[0] if losses else None,
                "steps": total,
                "seconds": seconds,
            },
            "negative_prompt": WEIRD.strip(),
            "finished": True,
        }
        write_info(out, info)
        forget_resume_point(out)
    accelerator.wait_for_everyone()
    return out


def _lora_state(unet: Any) -> dict[str, Any]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(unet).items()}


def _load_lora(unet: Any, state: dict[str, Any]) -> None:
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(unet, state)


def _write_adapter(unet: Any, out: Path) -> None:
    """The LoRA in diffusers' format: ``pipe.load_lora_weights(out)`` loads it."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    out.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(_lora_state(unet))
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)


def _save_state(
    out: Path,
    accelerator: Any,
    unet: Any,
    optimizer: Any,
    step: int,
    losses: list[float],
    before: float,
    run: dict[str, Any],
) -> None:
    scaler = accelerator.scaler
    state = {
        "lora": _lora_state(accelerator.unwrap_model(unet)),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "losses": losses,
        "before": before,
        "run": plain(run),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    save_resume_point(out, state)
