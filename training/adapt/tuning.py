"""What the generator's two fine-tunes share (lora.py: the HPS paper's LoRA, dpo.py:
Diffusion-DPO): the pipeline, frozen where it does not train; the images' VAE latents and
the captions' text embeddings computed once; the accelerator and mixed precision; the
LoRA on the UNet's attention; the random numbers of each step, seeded by (seed, step,
micro-batch, process); noising a batch; the resumable step loop with its progress bar;
and the adapter written in diffusers' format.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.generator import model_source
from training.run_folder import load_resume_point, plain, progress_bar, save_resume_point

log = logging.getLogger(__name__)

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections a LoRA adapts


class AdaptError(RuntimeError):
    """The fine-tune cannot start or go on; the message says why."""


@dataclass
class Cached:
    """Training items as tensors, computed once."""

    mean: Any  # [N, 4, h, w] latent means
    std: Any  # [N, 4, h, w]
    text: Any  # [C, L, D] embeddings of the distinct captions
    caption: Any  # [N] index into text
    regular: Any  # [N] bool: a regularisation pair


@dataclass
class Setup:
    """The pipeline on its device, ready to fine-tune its UNet."""

    accelerator: Any
    pipe: Any
    precision: str  # "no", "fp16" or "bf16"
    weight_dtype: Any  # what the frozen UNet weights are kept in
    on_gpu: bool
    noise_scheduler: Any  # DDPM, from the pipeline's scheduler config
    scaling: float  # the VAE's latent scaling factor

    @property
    def size(self) -> int:
        """The training images' side in pixels."""
        return int(self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)


@dataclass
class Noised:
    """One batch as the UNet sees it: noisy latents, timesteps, text, and the target."""

    noisy: Any
    timesteps: Any
    text: Any
    target: Any


@dataclass
class Trained:
    losses: list[float]  # each step's loss (all steps, also those before a resume)
    before: float  # the fixed-batch figure before training (kept across a resume)
    seconds: float  # training time of this process's share (after a resume: its part)


def load_pipeline(base: str, cache_dir: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    try:
        return StableDiffusionPipeline.from_pretrained(
            model_source(base, cache_dir), safety_checker=None, requires_safety_checker=False
        )
    except Exception as error:
        raise AdaptError(f"could not load generator {base!r}: {error}") from None


def prepare(
    base: str,
    cache_dir: Path,
    *,
    device: str = "auto",
    mixed_precision: str = "auto",
    grad_accum: int = 1,
    unet_dtype: bool = True,
) -> Setup:
    """Load ``base`` frozen on the accelerator's device; the UNet in the mixed precision
    dtype when ``unet_dtype`` (a LoRA trains beside it in float32), the VAE and text
    encoder in float32 (they run once, for the cache)."""
    import torch
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    on_gpu = torch.cuda.is_available() and device != "cpu"
    precision = mixed_precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "no"
    accelerator = Accelerator(
        mixed_precision=precision, cpu=not on_gpu, gradient_accumulation_steps=grad_accum
    )
    pipe = load_pipeline(base, cache_dir)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
        part.to(accelerator.device)
    if unet_dtype:
        pipe.unet.to(dtype=weight_dtype)
    return Setup(
        accelerator=accelerator,
        pipe=pipe,
        precision=precision,
        weight_dtype=weight_dtype,
        on_gpu=on_gpu,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
        scaling=float(pipe.vae.config.scaling_factor),
    )


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


def cache(setup: Setup, items: Sequence[tuple[str, str, bool]]) -> Cached:
    """:func:`encode` the items, the tensors training reads kept on the device."""
    import torch

    device = setup.accelerator.device
    cached = encode(setup.pipe, items, setup.size, device)
    cached.mean, cached.std = (t.to(device, torch.float32) for t in (cached.mean, cached.std))
    cached.text = cached.text.to(device)
    return cached


def add_lora(unet: Any, rank: int, seed: int) -> None:
    """A LoRA of ``rank`` on the attention projections; its initial weights follow
    ``seed`` (gaussian A, zero B: the adapted UNet starts as the base), kept in float32."""
    import torch
    from peft import LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(
            LoraConfig(
                r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGETS
            )
        )
    for param in unet.parameters():
        if param.requires_grad:
            param.data = param.data.float()  # LoRA weights train in full precision


def step_generator(seed: int, step: int, micro: int, process: int) -> Any:
    """The CPU generator every random draw of one micro-batch comes from."""
    import torch

    key = f"{seed}:{step}:{micro}:{process}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8]))


def noised(setup: Setup, cached: Cached, index: Any, generator: Any, *, share: int = 1) -> Noised:
    """The items ``index`` sampled from their latent posterior and noised, everything
    random drawn from ``generator`` (on the CPU: the same on every device). With
    ``share`` > 1 the batch is ``share`` blocks that get the same noise and timesteps
    (Diffusion-DPO's winners and losers)."""
    import torch

    device, scheduler = setup.accelerator.device, setup.noise_scheduler
    mean, std = cached.mean[index], cached.std[index]
    sample = torch.randn(mean.shape, generator=generator).to(device)
    latents = (mean + std * sample) * setup.scaling
    block = len(index) // share
    noise = torch.randn((block, *latents.shape[1:]), generator=generator).to(device)
    steps = scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (block,), generator=generator).to(device)
    noise, timesteps = noise.repeat(share, 1, 1, 1), timesteps.repeat(share)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return Noised(
        noisy=scheduler.add_noise(latents, noise, timesteps),
        timesteps=timesteps,
        text=cached.text[cached.caption[index]],
        target=target,
    )


def predict(unet: Any, batch: Noised, dtype: Any) -> Any:
    """The UNet's prediction for the batch, in float32."""
    return unet(batch.noisy.to(dtype), batch.timesteps, batch.text.to(dtype)).sample.float()


def train_steps(
    setup: Setup,
    model: Any,
    optimizer: Any,
    loss_of: Callable[[Any], Any],
    *,
    out: Path,
    total: int,
    grad_accum: int,
    seed: int,
    save_every: int,
    run: dict[str, Any],
    state: tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]],
    before: Callable[[], float],
    desc: str,
    on_step: Callable[[int, float], None] | None = None,
) -> Trained:
    """The step loop both fine-tunes run: ``loss_of(generator)`` is one micro-batch's
    loss. Resumes from the resume point in ``out`` when one is there (made with the same
    ``run``: settings and data), saves one every ``save_every`` steps (``state``: what
    to save of the model, and how to load it back), shows a progress bar. ``before`` is
    the fixed-batch figure measured before the first step (kept across a resume)."""
    accelerator = setup.accelerator
    step, losses = 0, []
    try:
        saved = load_resume_point(out)
    except ValueError as error:
        raise AdaptError(str(error)) from None
    save_model, load_model = state
    if saved is not None:
        if saved["run"] != plain(run):
            raise AdaptError(
                f"{out} holds an unfinished run with other settings or data; "
                "resume it with the same ones, or choose a new folder"
            )
        load_model(saved["model"] if "model" in saved else saved["lora"])  # "lora": older
        optimizer.load_state_dict(saved["optimizer"])
        if accelerator.scaler is not None and saved.get("scaler"):
            accelerator.scaler.load_state_dict(saved["scaler"])
        step, losses, first = saved["step"], saved["losses"], saved["before"]
        log.info("resuming %s at step %d of %d", out, step, total)
    else:
        first = before()
    progress = progress_bar(total, step, accelerator.is_local_main_process, desc)
    started = time.perf_counter()
    model.train()
    while step < total:
        for micro in range(grad_accum):
            with accelerator.accumulate(model), accelerator.autocast():
                loss = loss_of(step_generator(seed, step, micro, accelerator.process_index))
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
        step += 1
        value = float(accelerator.gather(loss.detach()).mean())
        losses.append(value)
        progress.update(1)
        progress.set_postfix(loss=f"{value:.4f}")
        if step % save_every == 0 and step < total and accelerator.is_main_process:
            scaler = accelerator.scaler
            point = {
                "model": save_model(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "losses": losses,
                "before": first,
                "run": plain(run),
                "scaler": scaler.state_dict() if scaler is not None else None,
            }
            save_resume_point(out, point)
        if on_step is not None:
            on_step(step, value)
    progress.close()
    seconds = time.perf_counter() - started
    model.eval()
    return Trained(losses=losses, before=first, seconds=seconds)


def lora_state(unet: Any) -> dict[str, Any]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(unet).items()}


def load_lora(unet: Any, state: dict[str, Any]) -> None:
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(unet, state)


def write_adapter(unet: Any, out: Path) -> None:
    """The LoRA in diffusers' format: ``pipe.load_lora_weights(out)`` loads it."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    out.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(lora_state(unet))
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)
