"""Tiny, seeded, offline models for tests and demos.

A preset is a small *real* model: the same diffusers classes as Stable Diffusion 1.x
(UNet, VAE, CLIP text encoder and tokenizer, scheduler, safety checker) at a size that
runs on a laptop CPU in milliseconds. The generator preset is trained briefly, from a
seed, on a toy world (see "the tiny generator's world" below), so every machine builds the
same model up to float rounding, once, into a cache. Presets are written to a folder with
``save_pretrained`` and loaded back through the same code as any downloaded model (see
``generator.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.run_folder import write_info
from training.tokens import (
    CONTEXT_LENGTH,
    END,
    FULL_MERGES,
    START,
    build_clip_tokenizer,
    clip_vocabulary,
)

log = logging.getLogger(__name__)

TINY = "tiny"
PRESET_VERSION = 4  # bump when a preset's architecture or seed changes
MARKER = "prefloop_preset.json"
TINY_MERGES = 2000  # a trimmed CLIP vocabulary (2,514 tokens) keeps the text encoder small


def clip_tokenizer(n_merges: int = FULL_MERGES) -> Any:
    """Stable Diffusion's tokenizer (transformers' CLIPTokenizer), built offline."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        tokenizer_object=build_clip_tokenizer(n_merges),
        bos_token=START,
        eos_token=END,
        pad_token=END,
        unk_token=END,
        model_max_length=CONTEXT_LENGTH,
    )


def _tiny_text_encoder(vocab: dict[str, int]) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CONTEXT_LENGTH,
        bos_token_id=vocab[START],
        eos_token_id=vocab[END],
        pad_token_id=vocab[END],
    )
    return CLIPTextModel(config)


def _tiny_safety_checker() -> tuple[Any, Any]:
    """Stable Diffusion's safety checker at toy size (it flags nothing until told to)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return StableDiffusionSafetyChecker(config), processor


def sd_scheduler() -> Any:
    """Stable Diffusion 1.x's noise schedule, with a DDIM sampler."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


# ----- the tiny generator's world ---------------------------------------------------
#
# A randomly initialised UNet does not denoise (its noise-prediction loss is ~1.1, worse
# than predicting zero), so fine-tuning it learns "denoise at all" and nothing about which
# images people liked, and a random VAE does not round-trip its own images. The tiny
# preset is therefore *trained*, briefly, on a toy world: 32x32 images of four flat-coloured
# quadrants over a fixed checked texture, where the caption's first word tints the whole
# image.
# Its images then vary between seeds in ways a preference can pick out (how red is the
# top-left corner?), text conditions them, and a LoRA fine-tune moves them the way a real
# model's would.
#
# The build takes about 40 s on two CPU cores (bench/preset.py), in one thread: these
# models are so small that a second thread gains little when the machine is idle and,
# when it is busy, OpenMP's waiting threads make every step several times slower. The VAE
# learns on small images of the world (it is convolutional), the UNet on a pool of
# latents and caption embeddings computed once, both with fused optimisers.

WORLD_WORDS = (
    "a",
    "the",
    "red",
    "blue",
    "green",
    "photo",
    "cat",
    "dog",
    "house",
    "tree",
    "car",
    "sky",
    "thing",
    "painting",
    "of",
    "big",
    "small",
    "city",
    "river",
    "portrait",
    "night",
    "garden",
    "old",
    "new",
)
WORLD_SIDE = 32
# Sizes and steps chosen by measurement (bench/preset.py for the time, the closed-loop
# test in tests/training/test_adapt.py for the learning): 150 VAE and 120 UNet steps
# already lost that test's win, and a (16, 32) UNet never won it.
VAE_CHANNELS = (16, 32)
VAE_STEPS = 200
VAE_BATCH = 8
VAE_SIDE = 16  # the VAE learns on 16x16 images of the world; it is convolutional
VAE_LR = 5e-4  # 1e-3 and above never learn the colours back
UNET_CHANNELS = (16, 64)  # the attention block (where LoRA goes) keeps 64 channels
UNET_GROUPS = 16
UNET_STEPS = 150
UNET_BATCH = 8
UNET_LR = 1e-3
LATENT_POOL = 512  # world images encoded once for the UNet's steps
CHECKER = 0.15  # the fixed texture's contrast (see _checker)
BUILD_THREADS = 1  # torch threads while training (see above; bench/preset.py compares)
Progress = Callable[[str, int, int], None]  # (stage, steps done, steps in the stage)


def world_images(
    n: int, generator: Any, side: int = WORLD_SIDE, words: Sequence[str] = WORLD_WORDS
) -> tuple[Any, list[str]]:
    """``n`` images of the toy world in [-1, 1] ([n, 3, side, side]) and their captions."""
    import torch

    tint_generator = torch.Generator().manual_seed(1234)
    tints = 0.3 * torch.randn(len(words), 3, generator=tint_generator)
    half = side // 2
    quadrants = torch.rand(n, 3, 2, 2, generator=generator) * 1.6 - 0.8
    pixels = quadrants.repeat_interleave(half, 2).repeat_interleave(half, 3)
    chosen = torch.randint(len(words), (n, 3), generator=generator)
    pixels = pixels + tints[chosen[:, 0]][:, :, None, None]
    pixels = (
        pixels + CHECKER * _checker(side) + 0.05 * torch.randn(pixels.shape, generator=generator)
    )
    captions = [" ".join(words[int(k)] for k in row) for row in chosen]
    return pixels.clamp(-1, 1), captions


def _checker(side: int) -> Any:
    """+1/-1 in 2x2-pixel cells: the world's fixed texture.

    Stable Diffusion's VAE normalises its features over whole images (GroupNorm), which
    removes an image's overall colour unless something in every image stays the same to
    measure it against; this texture is that reference, and it lets the VAE learn the
    whole image's colour (the prompt's tint, a "reddest image" preference) in a few
    hundred steps instead of thousands. Cells of 2x2 pixels match the VAE's downsampling.
    """
    import torch

    cells = torch.arange(side) // 2
    return ((cells[:, None] + cells[None, :]) % 2).float() * 2 - 1


def _train_vae(vae: Any, generator: Any, progress: Progress) -> None:
    """Fit the VAE to the world's images, then scale its latents to unit spread (as SD's)."""
    import torch

    optimizer = torch.optim.Adam(vae.parameters(), lr=VAE_LR, fused=True)
    vae.train()
    for step in range(VAE_STEPS):
        images, _ = world_images(VAE_BATCH, generator, side=VAE_SIDE)
        dist = vae.encode(images).latent_dist
        rebuilt = vae.decode(dist.mean).sample
        loss = torch.nn.functional.mse_loss(rebuilt, images) + 1e-6 * dist.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        progress("vae", step + 1, VAE_STEPS)
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(world_images(64, generator)[0]).latent_dist.mean
    vae.register_to_config(scaling_factor=round(1.0 / float(latents.std()), 5))


def _encode_text(pipe: Any, captions: list[str]) -> Any:
    tokens = pipe.tokenizer(
        captions,
        padding="max_length",
        truncation=True,
        max_length=CONTEXT_LENGTH,
        return_tensors="pt",
    ).input_ids
    return pipe.text_encoder(tokens)[0]


def _latent_pool(pipe: Any, generator: Any) -> tuple[Any, Any, Any, Any]:
    """Latent distributions and caption embeddings of a pool of world images, computed once
    (the VAE and the text encoder are frozen while the UNet learns), and the empty caption's."""
    import torch

    with torch.no_grad():
        images, captions = world_images(LATENT_POOL, generator)
        dist = pipe.vae.encode(images).latent_dist
        return dist.mean, dist.std, _encode_text(pipe, captions), _encode_text(pipe, [""])


def _train_unet(pipe: Any, generator: Any, progress: Progress) -> None:
    """Teach the UNet to denoise the world's latents given their captions (10% dropped)."""
    import torch
    from diffusers import DDPMScheduler

    schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    unet, scaling = pipe.unet, pipe.vae.config.scaling_factor
    mean, std, text, empty = _latent_pool(pipe, generator)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=UNET_LR, weight_decay=0.0, fused=True)
    unet.train()
    for step in range(UNET_STEPS):
        pick = torch.randint(len(mean), (UNET_BATCH,), generator=generator)
        noise_in_latent = torch.randn(mean[pick].shape, generator=generator)
        latents = (mean[pick] + std[pick] * noise_in_latent) * scaling
        drop = (torch.rand(UNET_BATCH, generator=generator) < 0.1)[:, None, None]
        condition = torch.where(drop, empty, text[pick])
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(
            0, schedule.config.num_train_timesteps, (UNET_BATCH,), generator=generator
        )
        predicted = unet(schedule.add_noise(latents, noise, timesteps), timesteps, condition)
        loss = torch.nn.functional.mse_loss(predicted.sample, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        progress("unet", step + 1, UNET_STEPS)
    unet.eval()


def build_tiny_pipeline(
    seed: int = 0, *, safety_checker: bool = True, progress: Progress | None = None
) -> Any:
    """A 32x32 Stable Diffusion pipeline trained on the toy world (``progress`` hears each
    training step)."""
    import torch
    from diffusers import StableDiffusionPipeline

    # From diffusers.models: for a type checker, the top level's classes are stand-ins.
    from diffusers.models import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=WORLD_SIDE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=UNET_CHANNELS,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=UNET_GROUPS,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=VAE_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,  # 32 groups of 32 channels would normalise away flat colours
        mid_block_add_attention=False,  # the world has no long-range structure to attend to
    )
    checker, processor = _tiny_safety_checker() if safety_checker else (None, None)
    text_encoder = _tiny_text_encoder(clip_vocabulary(TINY_MERGES))
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(TINY_MERGES),
        scheduler=sd_scheduler(),
        safety_checker=checker,
        feature_extractor=processor,
        requires_safety_checker=safety_checker,
    )
    generator = torch.Generator().manual_seed(seed)
    report = progress or (lambda stage, done, total: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        with torch.random.fork_rng(devices=[]):
            _train_vae(vae, generator, report)
            _train_unet(pipe, generator, report)
    finally:
        torch.set_num_threads(threads)
    for part in (unet, vae, text_encoder):
        part.requires_grad_(True)  # as from_pretrained leaves them
    return pipe


PRESETS: dict[str, Callable[..., Any]] = {TINY: build_tiny_pipeline}


def is_preset(name: str) -> bool:
    return name in PRESETS


def preset_cache() -> Path:
    """Where built generator presets are kept for every later use on this machine."""
    configured = os.environ.get("PREFLOOP_PRESET_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "prefloop" / "presets"


def save_preset(name: str, folder: Path, progress: Progress | None = None) -> Path:
    """Write generator preset ``name`` to ``folder`` once (see :func:`_save_once`).

    Building trains the preset (under a minute), so it is built once into
    :func:`preset_cache` and copied from there; where that cache cannot be written, the
    preset is built straight into ``folder``. ``progress`` hears each training step.
    """
    folder = Path(folder)

    def build(staging: Path) -> None:
        PRESETS[name](progress=progress).save_pretrained(staging, safe_serialization=True)

    if _marker(folder) == {"preset": name, "version": PRESET_VERSION}:
        return folder
    cached = preset_cache() / name
    try:
        built = _save_once(cached, name, build)
    except OSError as error:
        log.info("preset cache %s is not writable (%s); building into %s", cached, error, folder)
        return _save_once(folder, name, build)
    if built.resolve() == folder.resolve():
        return folder
    return _save_once(
        folder, name, lambda staging: shutil.copytree(built, staging, dirs_exist_ok=True)
    )


def preset_of(model: str) -> str | None:
    """The preset ``model`` names or was saved from (a folder ``save_preset`` wrote)."""
    if is_preset(model):
        return model
    marker = _marker(Path(model).expanduser())
    return str(marker["preset"]) if marker and is_preset(str(marker.get("preset"))) else None


def _save_once(folder: Path, name: str, write: Callable[[Path], Any]) -> Path:
    """Write a preset to ``folder`` once; later calls reuse it while its version matches.

    The preset is written beside ``folder`` and renamed into place, so a process that
    loads it never sees a half-written folder, even with several writing at once.
    """
    wanted = {"preset": name, "version": PRESET_VERSION}
    if _marker(folder) == wanted:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(staging)
        (staging / MARKER).write_text(json.dumps(wanted))
        if folder.exists() and _marker(folder) != wanted:
            shutil.rmtree(folder)  # an older preset version
        with contextlib.suppress(OSError):  # another process won the race: use theirs
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


# ----- CLIP (the preference model's backbone) ---------------------------------------

# open_clip's CLIP at toy size: same classes, tokenizer and checkpoint format as ViT-L-14.
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 32,
        "layers": 3,
        "width": 64,
        "head_width": 32,
        "patch_size": 8,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 3,
        "mlp_ratio": 2.0,
    },
}
# What suits a randomly initialised toy: far more steps and a far higher rate than the
# paper's fine-tune of a pretrained CLIP, every block trained.
TINY_CLIP_TRAINING: dict[str, Any] = {
    "lr": 2e-3,
    "weight_decay": 0.0,
    "batch_size": 16,
    "epochs": 8,
    "warmup_steps": 20,
    "unfreeze_vision": -1,
    "unfreeze_text": -1,
}
CLIP_PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    TINY: (TINY_CLIP, TINY_CLIP_TRAINING)
}


def is_clip_preset(name: str) -> bool:
    return name in CLIP_PRESETS


def build_tiny_clip(seed: int = 0) -> Any:
    """The tiny open_clip CLIP with weights fixed by ``seed``."""
    import torch
    from open_clip.model import CLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIP(**TINY_CLIP).eval()


def save_clip_preset(name: str, folder: Path) -> Path:
    """Write CLIP preset ``name`` to ``folder`` as an open_clip checkpoint folder."""

    def write(staging: Path) -> None:
        from safetensors.torch import save_file

        config, training = CLIP_PRESETS[name]
        model = build_tiny_clip()
        save_file(model.state_dict(), staging / "open_clip_model.safetensors")
        (staging / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": config, "preprocess_cfg": {}}, indent=2)
        )
        info = {"base": f"preset:{name}", "training": training}
        write_info(staging, info)

    return _save_once(Path(folder), f"clip-{name}", write)


def _marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def build_cached(name: str = TINY) -> tuple[Path, bool]:
    """Build generator preset ``name`` into :func:`preset_cache` unless it is there, with a
    progress bar per training stage; (its folder, whether it was built now)."""
    folder = preset_cache() / name
    if _marker(folder) == {"preset": name, "version": PRESET_VERSION}:
        return folder, False
    from diffusers.utils import logging as diffusers_logging
    from tqdm.auto import tqdm
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()  # their bars for saving files: noise beside ours

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage) or bars.setdefault(
            stage, tqdm(total=total, desc=f"{name} preset: {stage}", unit="step", mininterval=1)
        )
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    try:
        return save_preset(name, folder, progress), True
    finally:
        for bar in bars.values():
            bar.close()
