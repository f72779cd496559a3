"""Tiny, seeded, offline models for tests and demos.

A preset is a small *real* model: the same diffusers classes as Stable Diffusion 1.x
(UNet, VAE, CLIP text encoder and tokenizer, scheduler, safety checker) at a size that
runs on a laptop CPU in milliseconds. The generator preset is trained briefly, from a
seed, on a toy world (``training/preset_world.py``; see "the tiny generator" below), so
every machine builds the same model up to float rounding, once, into a cache. Presets are
written to a folder with ``save_pretrained`` and loaded back through the same code as any
downloaded model (see ``generator.py``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.preset_clip import conditioning_probe, pretrain_clip, text_encoder_from_clip
from training.preset_world import SIDE, world_images
from training.run_folder import write_info
from training.tokens import CONTEXT_LENGTH, END, FULL_MERGES, START, build_clip_tokenizer

log = logging.getLogger(__name__)

TINY = "tiny"
# Bump when a preset's world, captions, training, architecture or seed change; a cached
# preset is also rebuilt when the code that builds it changed (see _fingerprint).
PRESET_VERSION = 6
MARKER = "prefloop_preset.json"  # name, version and what the build measured
CLIP_FOLDER = "clip"  # inside a generator preset: the CLIP its text encoder came from


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


# ----- the tiny generator ------------------------------------------------------------
#
# A randomly initialised UNet does not denoise (its noise-prediction loss is ~1.1, worse
# than predicting zero), so fine-tuning it learns "denoise at all" and nothing about which
# images people liked, and a random VAE does not round-trip its own images; a random text
# encoder gives words no meaning ("Weird image." as a negative prompt then steers nowhere
# in particular). The tiny preset is therefore *trained*, briefly, on a toy world
# (training/preset_world.py), the way Stable Diffusion was on ours: first a tiny CLIP,
# contrastively, on the world's captioned images (training/preset_clip.py); its text
# tower, frozen, becomes the text encoder; then the VAE on the world's images and the
# UNet on their latents against that text encoder. Its images then vary between seeds in
# ways a preference can pick out (how red is the top-left corner?), prompts condition
# them, and a LoRA fine-tune moves them the way a real model's would.
#
# The build takes under a minute on two CPU cores (bench/preset.py), in one thread: these
# models are so small that a second thread gains little when the machine is idle and,
# when it is busy, OpenMP's waiting threads make every step several times slower. The VAE
# learns on small images of the world (it is convolutional), the UNet on a pool of
# latents and caption embeddings computed once, all with fused optimisers.

WORLD_SIDE = SIDE
# Sizes and steps chosen by measurement (bench/preset.py for the time, the closed-loop
# test in tests/training/test_adapt.py for the learning). The UNet has three levels, so
# its attention sees the whole 16x16 latent; it learns with a one-cycle rate and min-SNR
# weighting, which the two-level UNet at a constant rate of v4 lacked: it never learned
# to use the prompt.
VAE_CHANNELS = (16, 32)
VAE_STEPS = 200
VAE_BATCH = 8
VAE_SIDE = 16  # the VAE learns on 16x16 images of the world; it is convolutional
VAE_LR = 5e-4  # 1e-3 and above never learn the colours back
VAE_LOGVAR_INIT = -6.0  # the posterior's starting log-variance (see _train_vae)
UNET_CHANNELS = (16, 32, 64)  # the attention blocks (where LoRA goes) keep 32 and 64
UNET_GROUPS = 16
UNET_STEPS = 300
UNET_BATCH = 8
UNET_LR = 2e-3  # the peak of a one-cycle schedule
MIN_SNR_GAMMA = 5.0
LATENT_POOL = 512  # world images encoded once for the UNet's steps
BUILD_THREADS = 1  # torch threads while training (see above; bench/preset.py compares)
Progress = Callable[[str, int, int], None]  # (stage, steps done, steps in the stage)


def _train_vae(vae: Any, generator: Any, progress: Progress) -> None:
    """Fit the VAE to the world's images, then scale its latents to unit spread (as SD's)."""
    import torch

    # The encoder's posterior starts narrow (log-variance -6, a spread of 0.05) and is
    # trained by decoding samples from it, so it stays narrow as SD's does: a posterior
    # as wide as the latents (never trained, pulled to 1 by the KL term) would bury the
    # image under noise wherever a latent is sampled (the UNet's and the LoRA's training).
    with torch.no_grad():
        vae.quant_conv.bias[vae.config.latent_channels :] = VAE_LOGVAR_INIT
    optimizer = torch.optim.Adam(vae.parameters(), lr=VAE_LR, fused=True)
    vae.train()
    for step in range(VAE_STEPS):
        images, _ = world_images(VAE_BATCH, generator, side=VAE_SIDE)
        dist = vae.encode(images).latent_dist
        rebuilt = vae.decode(dist.sample(generator)).sample
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
    rate = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=UNET_LR, total_steps=UNET_STEPS, pct_start=0.1
    )
    snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
    weight = snr.clamp(max=MIN_SNR_GAMMA) / snr  # min-SNR weighting (Hang et al., 2023)
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
        error = (predicted.sample - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (weight[timesteps] * error).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rate.step()
        progress("unet", step + 1, UNET_STEPS)
    unet.eval()


@dataclass
class Built:
    """A built generator preset: the pipeline, the CLIP its text encoder came from, and
    what the build measured (written to the preset's metadata)."""

    pipe: Any
    clip: Any  # open_clip CLIP
    card: dict[str, Any]

    def save(self, folder: Path) -> dict[str, Any]:
        """The pipeline in diffusers' layout, the CLIP as an open_clip folder in ``clip/``."""
        self.pipe.save_pretrained(folder, safe_serialization=True)
        save_clip_folder(self.clip, folder / CLIP_FOLDER, self.card["clip"])
        return self.card


def build_tiny(
    seed: int = 0, *, safety_checker: bool = True, progress: Progress | None = None
) -> Built:
    """The tiny preset trained on the toy world: CLIP, then VAE, then UNet (``progress``
    hears each training step), and the conditioning probe."""
    import torch
    from diffusers import StableDiffusionPipeline

    # From diffusers.models: for a type checker, the top level's classes are stand-ins.
    from diffusers.models import AutoencoderKL, UNet2DConditionModel

    started = time.perf_counter()
    clip = build_tiny_clip(seed)
    generator = torch.Generator().manual_seed(seed)
    report = progress or (lambda stage, done, total: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            pretraining = pretrain_clip(clip, generator, report)
            text_encoder = text_encoder_from_clip(clip)
            levels = len(UNET_CHANNELS) - 1  # every level but the first attends to the text
            unet = UNet2DConditionModel(
                sample_size=WORLD_SIDE // 2 ** (len(VAE_CHANNELS) - 1),
                in_channels=4,
                out_channels=4,
                block_out_channels=UNET_CHANNELS,
                layers_per_block=1,
                down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * levels,
                up_block_types=("CrossAttnUpBlock2D",) * levels + ("UpBlock2D",),
                cross_attention_dim=text_encoder.config.hidden_size,
                norm_num_groups=UNET_GROUPS,
            )
            vae = AutoencoderKL(
                in_channels=3,
                out_channels=3,
                block_out_channels=VAE_CHANNELS,
                down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
                up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
                latent_channels=4,
                norm_num_groups=4,  # 32 groups of 32 channels would normalise away flat colours
                mid_block_add_attention=False,  # no long-range structure to attend to
            )
            checker, processor = _tiny_safety_checker() if safety_checker else (None, None)
            pipe: Any = StableDiffusionPipeline(
                unet=unet,
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=clip_tokenizer(),
                scheduler=sd_scheduler(),
                safety_checker=checker,
                feature_extractor=processor,
                requires_safety_checker=safety_checker,
            )
            pipe.set_progress_bar_config(disable=True)
            _train_vae(vae, generator, report)
            _train_unet(pipe, generator, report)
            trained = time.perf_counter() - started
            probe = conditioning_probe(clip, pipe, generator)
    finally:
        torch.set_num_threads(threads)
    for part in (unet, vae, text_encoder):
        part.requires_grad_(True)  # as from_pretrained leaves them
    card = {
        "seed": seed,
        "clip": {"base": f"preset:{TINY}", "pretraining": {"seed": seed, **pretraining}},
        "steps": {"vae": VAE_STEPS, "unet": UNET_STEPS},
        "train_seconds": round(trained, 1),
        "probe": probe,
    }
    return Built(pipe, clip, card)


PRESETS: dict[str, Callable[..., Built]] = {TINY: build_tiny}


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
    if _is_current(folder, name):
        return folder
    built = _built(name, progress, fallback=folder)
    if built.resolve() == folder.resolve():
        return folder
    return _save_once(folder, name, lambda staging: _copy(built, staging))


def _built(name: str, progress: Progress | None, fallback: Path) -> Path:
    """Generator preset ``name`` in the cache, built now if it is not there (into
    ``fallback`` where the cache cannot be written)."""

    def build(staging: Path) -> dict[str, Any]:
        log.info("building the %s preset (under a minute, once) into %s", name, staging.parent)
        return PRESETS[name](progress=progress).save(staging)

    cached = preset_cache() / name
    if _is_current(cached, name):
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=cached.parent))
    except OSError as error:
        log.info("preset cache %s is not writable (%s); building into %s", cached, error, fallback)
        return _save_once(fallback, name, build)
    return _save_once(cached, name, build)


def _copy(source: Path, staging: Path) -> dict[str, Any]:
    shutil.copytree(source, staging, dirs_exist_ok=True)
    return _marker(source) or {}


def preset_card(folder: Path) -> dict[str, Any] | None:
    """What a preset folder's build recorded (its seed, steps, the conditioning probe)."""
    return _marker(Path(folder))


def preset_of(model: str) -> str | None:
    """The preset ``model`` names or was saved from (a folder ``save_preset`` wrote)."""
    if is_preset(model):
        return model
    marker = _marker(Path(model).expanduser())
    return str(marker["preset"]) if marker and is_preset(str(marker.get("preset"))) else None


def _save_once(folder: Path, name: str, write: Callable[[Path], dict[str, Any] | None]) -> Path:
    """Write a preset to ``folder`` once; later calls reuse it while its version matches.

    ``write`` fills a staging folder and returns what to record in the marker beside the
    preset's name and version. The preset is written beside ``folder`` and renamed into
    place, so a process that loads it never sees a half-written folder, even with several
    writing at once.
    """
    if _is_current(folder, name):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        card = write(staging) or {}
        marker = {**card, "preset": name, "version": PRESET_VERSION, "code": _fingerprint()}
        (staging / MARKER).write_text(json.dumps(marker, indent=2))
        if folder.exists() and not _is_current(folder, name):
            shutil.rmtree(folder)  # an older preset version
        with contextlib.suppress(OSError):  # another process won the race: use theirs
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _is_current(folder: Path, name: str) -> bool:
    marker = _marker(folder) or {}
    wanted = (name, PRESET_VERSION, _fingerprint())
    return (marker.get("preset"), marker.get("version"), marker.get("code")) == wanted


@functools.cache
def _fingerprint() -> str:
    """A digest of the code that builds the presets (the world, the CLIP's pretraining and
    this module): a preset cached by other code is rebuilt, whatever its version says."""
    from training import preset_clip, preset_world

    sources = (Path(module.__file__ or "") for module in (preset_world, preset_clip))
    digest = hashlib.sha256()
    for path in (*sources, Path(__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


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
# How HPS fine-tunes the tiny CLIP (the base model's defaults, recorded in its run info):
# more steps and a far higher rate than the paper's fine-tune of ViT-L/14, every block
# trained, as suits a model this small.
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
    """The tiny open_clip CLIP, randomly initialised from ``seed`` (the tiny preset's build
    pretrains it; see :func:`build_tiny`)."""
    import torch
    from open_clip.model import CLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIP(**TINY_CLIP).eval()


def save_clip_folder(model: Any, folder: Path, info: dict[str, Any]) -> None:
    """``model`` (the tiny CLIP) as an open_clip checkpoint folder, with its run info."""
    from safetensors.torch import save_file

    config, training = CLIP_PRESETS[TINY]
    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": {}}, indent=2)
    )
    write_info(folder, {**info, "training": training})


def save_clip_preset(name: str, folder: Path) -> Path:
    """Write CLIP preset ``name`` to ``folder`` as an open_clip checkpoint folder: the CLIP
    the generator preset of that name was built with (built now if it is not cached)."""
    folder = Path(folder)

    def write(staging: Path) -> dict[str, Any]:
        built = _built(name, None, fallback=folder.parent / name)
        shutil.copytree(built / CLIP_FOLDER, staging, dirs_exist_ok=True)
        return {"from": f"preset:{name}"}

    return _save_once(folder, f"clip-{name}", write)


def _marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def build_cached(name: str = TINY) -> tuple[Path, bool]:
    """Build generator preset ``name`` into :func:`preset_cache` unless it is there, with a
    progress bar per training stage; (its folder, whether it was built now)."""
    folder = preset_cache() / name
    if _is_current(folder, name):
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
