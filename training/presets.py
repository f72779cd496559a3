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
PRESET_VERSION = 3  # bump when a preset's architecture or seed changes
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
# preset is therefore *trained*, briefly, on a toy world: 64x64 images of four flat-coloured
# quadrants over a faint texture, where the caption's first word tints the whole image.
# Its images then vary between seeds in ways a preference can pick out (how red is the
# top-left corner?), text conditions them, and a LoRA fine-tune moves them the way a real
# model's would. Building takes about a minute on two CPU cores, once per machine.

WORLD_WORDS = (
    "a", "the", "red", "blue", "green", "photo", "cat", "dog", "house", "tree", "car",
    "sky", "thing", "painting", "of", "big", "small", "city", "river", "portrait",
    "night", "garden", "old", "new",
)  # fmt: skip
WORLD_SIDE = 64
VAE_STEPS = 400
UNET_STEPS = 300


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
    pixels = pixels + 0.05 * torch.randn(pixels.shape, generator=generator)
    captions = [" ".join(words[int(k)] for k in row) for row in chosen]
    return pixels.clamp(-1, 1), captions


def _train_vae(vae: Any, steps: int, generator: Any) -> None:
    """Fit the VAE to the world's images, then scale its latents to unit spread (as SD's)."""
    import torch

    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-4)
    vae.train()
    for _ in range(steps):
        images, _ = world_images(8, generator, side=32)  # the VAE is convolutional
        dist = vae.encode(images).latent_dist
        rebuilt = vae.decode(dist.mean).sample
        loss = torch.nn.functional.mse_loss(rebuilt, images) + 1e-6 * dist.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(world_images(64, generator)[0]).latent_dist.mean
    vae.register_to_config(scaling_factor=round(1.0 / float(latents.std()), 5))


def _train_unet(pipe: Any, steps: int, generator: Any) -> None:
    """Teach the UNet to denoise the world's latents given their captions (10% dropped)."""
    import torch
    from diffusers import DDPMScheduler

    schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    unet, scaling = pipe.unet, pipe.vae.config.scaling_factor
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.0)
    unet.train()
    for _ in range(steps):
        images, captions = world_images(8, generator)
        drop = torch.rand(len(captions), generator=generator) < 0.1
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        with torch.no_grad():
            latents = pipe.vae.encode(images).latent_dist.sample(generator=generator) * scaling
            tokens = pipe.tokenizer(
                captions,
                padding="max_length",
                truncation=True,
                max_length=CONTEXT_LENGTH,
                return_tensors="pt",
            ).input_ids
            text = pipe.text_encoder(tokens)[0]  # fmt: skip
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, schedule.config.num_train_timesteps, (len(captions),),
                                  generator=generator)  # fmt: skip
        predicted = unet(schedule.add_noise(latents, noise, timesteps), timesteps, text).sample
        loss = torch.nn.functional.mse_loss(predicted, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    unet.eval()


def build_tiny_pipeline(seed: int = 0, *, safety_checker: bool = True) -> Any:
    """A 64x64 Stable Diffusion pipeline (about 1.8M parameters) trained on the toy world."""
    import torch
    from diffusers import (
        AutoencoderKL,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,  # 32 groups of 32 channels would normalise away flat colours
    )
    checker, processor = _tiny_safety_checker() if safety_checker else (None, None)
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=_tiny_text_encoder(clip_vocabulary(TINY_MERGES)),
        tokenizer=clip_tokenizer(TINY_MERGES),
        scheduler=sd_scheduler(),
        safety_checker=checker,
        feature_extractor=processor,
        requires_safety_checker=safety_checker,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        _train_vae(vae, VAE_STEPS, generator)
        _train_unet(pipe, UNET_STEPS, generator)
    for part in (unet, vae, pipe.text_encoder):
        part.requires_grad_(True)  # as from_pretrained leaves them
    return pipe


PRESETS: dict[str, Callable[[], Any]] = {TINY: build_tiny_pipeline}


def is_preset(name: str) -> bool:
    return name in PRESETS


def preset_cache() -> Path:
    """Where built generator presets are kept for every later use on this machine."""
    configured = os.environ.get("PREFLOOP_PRESET_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "prefloop" / "presets"


def save_preset(name: str, folder: Path) -> Path:
    """Write generator preset ``name`` to ``folder`` once (see :func:`_save_once`).

    Building trains the preset (about a minute), so it is built once into
    :func:`preset_cache` and copied from there; where that cache cannot be written, the
    preset is built straight into ``folder``.
    """
    folder = Path(folder)

    def build(staging: Path) -> None:
        PRESETS[name]().save_pretrained(staging, safe_serialization=True)

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
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "head_width": 32,
                   "patch_size": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 3, "mlp_ratio": 2.0},
}  # fmt: skip
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
PREFLOOP_INFO = "prefloop.json"  # beside an open_clip checkpoint: base, training, metrics


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
        (staging / PREFLOOP_INFO).write_text(json.dumps(info, indent=2))

    return _save_once(Path(folder), f"clip-{name}", write)


def _marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
