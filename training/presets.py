"""Tiny, seeded, offline models for tests and demos.

A preset is a small *real* model: the same diffusers classes as Stable Diffusion 1.x
(UNet, VAE, CLIP text encoder and tokenizer, scheduler, safety checker) at a size that
runs on a laptop CPU in milliseconds. Weights are random but fixed by a seed (the VAE's
encoder is then fitted to invert its decoder, see ``_fit_encoder``), so every machine
builds the same model up to float rounding. Presets are written to a folder with ``save_pretrained``
and loaded back through the same code as any downloaded model (see ``generator.py``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable
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

TINY = "tiny"
PRESET_VERSION = 2  # bump when a preset's architecture or seed changes
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


def _fit_encoder(vae: Any, steps: int = 300, side: int = 8, seed: int = 0) -> None:
    """Fit the random VAE's encoder to invert its decoder (a few seconds, on small crops).

    A randomly initialised VAE is no autoencoder: re-encoding a generated image gives a
    latent unrelated to the one it was decoded from (cosine ~0), so training anything on
    re-encoded images (the LoRA adaptation does) would learn nothing about what the
    images show. A real VAE inverts well; after this fit the tiny one does roughly
    (cosine ~0.5, the images' regional colours survive a round trip: r ~0.75).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    vae.decoder.requires_grad_(False)
    vae.post_quant_conv.requires_grad_(False)
    params = [*vae.encoder.parameters(), *vae.quant_conv.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    for _ in range(steps):
        latents = torch.randn(16, vae.config.latent_channels, side, side, generator=generator)
        with torch.no_grad():
            images = vae.decode(latents).sample.clamp(-1, 1)
        loss = torch.nn.functional.mse_loss(vae.encode(images).latent_dist.mean, latents)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.requires_grad_(True)
    vae.eval()


def build_tiny_pipeline(seed: int = 0, *, safety_checker: bool = True) -> Any:
    """A 64x64 Stable Diffusion pipeline with about 1.8M random (seeded) parameters."""
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
        norm_num_groups=32,
    )
    _fit_encoder(vae)
    checker, processor = _tiny_safety_checker() if safety_checker else (None, None)
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=_tiny_text_encoder(clip_vocabulary(TINY_MERGES)),
        tokenizer=clip_tokenizer(TINY_MERGES),
        scheduler=sd_scheduler(),
        safety_checker=checker,
        feature_extractor=processor,
        requires_safety_checker=safety_checker,
    )


PRESETS: dict[str, Callable[[], Any]] = {TINY: build_tiny_pipeline}


def is_preset(name: str) -> bool:
    return name in PRESETS


def save_preset(name: str, folder: Path) -> Path:
    """Write generator preset ``name`` to ``folder`` once (see :func:`_save_once`)."""
    return _save_once(
        Path(folder),
        name,
        lambda staging: PRESETS[name]().save_pretrained(staging, safe_serialization=True),
    )


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
