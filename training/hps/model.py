"""Load a CLIP for HPS from wherever a user keeps one, and save one back.

Sources (``load_clip(source)``):

- a preset name (``tiny``): written to the cache folder once, then loaded from there;
- a checkpoint folder: ``open_clip_config.json`` + weights (what ``fit_hps`` writes, and
  what stock open_clip loads as ``local-dir:FOLDER``), with its run info beside;
- ``ARCH:TAG``: an open_clip architecture with pretrained weights, e.g. ``ViT-L-14:openai``
  (the HPS paper's base) or ``ViT-H-14:laion2b_s32b_b79k`` (HPS v2's), downloaded once;
- ``ARCH:FILE`` or a bare ``FILE``: a checkpoint file. The original HPS v1 checkpoint
  (OpenAI-CLIP state dict under ``state_dict``) and HPS v2's (open_clip state dict under
  ``state_dict``) are read as they are; a bare file's architecture is told from the
  shapes of its weights (ViT-L/14 with QuickGELU for v1, ViT-H/14 for v2).

Every failure is an :class:`HPSLoadError` naming the file and saying what is wrong; the
weights must fit the architecture exactly, never half-loaded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.presets import TINY_CLIP, is_clip_preset, save_clip_preset
from training.run_folder import read_info, write_info

log = logging.getLogger(__name__)

CONFIG = "open_clip_config.json"
WEIGHTS = "open_clip_model.safetensors"
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# (vision width, patch size, text width) -> open_clip architecture, for bare files.
KNOWN_SHAPES = {
    (1024, 14, 768): "ViT-L-14-quickgelu",  # OpenAI CLIP ViT-L/14: HPS v1
    (1280, 14, 1024): "ViT-H-14",  # open_clip ViT-H/14: HPS v2
    (768, 32, 512): "ViT-B-32",
    (768, 16, 512): "ViT-B-16",
    (
        TINY_CLIP["vision_cfg"]["width"],
        TINY_CLIP["vision_cfg"]["patch_size"],
        TINY_CLIP["text_cfg"]["width"],
    ): "tiny",
}


class HPSLoadError(RuntimeError):
    """A model could not be loaded; the message names the source and says why."""


@dataclass
class ClipModel:
    """An open_clip CLIP with what it needs to read images and prompts."""

    model: Any  # open_clip CLIP (torch.nn.Module)
    preprocess: Any  # PIL image -> normalised tensor
    tokenizer: Any  # list[str] -> token ids
    source: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # run info: base, training …


def load_clip(source: str, *, device: str = "cpu", cache_dir: Path | None = None) -> ClipModel:
    """Load ``source`` (see the module doc) onto ``device``, in eval mode."""
    cache = Path(cache_dir or Path.home() / ".cache" / "prefloop")
    if is_clip_preset(source):
        return load_clip(
            str(save_clip_preset(source, cache / "presets" / f"clip-{source}")), device=device
        )
    path = Path(source).expanduser()
    if path.is_dir():
        loaded = _load_folder(path)
    elif path.is_file():
        state = read_state_dict(path)  # read once: it tells the architecture and fills it
        loaded = _load_file(_architecture_of(state, path), path, state)
    elif ":" in source and not source.startswith(("/", ".")):
        arch, spec = source.split(":", 1)
        spec_path = Path(spec).expanduser()
        if spec_path.is_file():
            loaded = _load_file(arch, spec_path)
        elif spec_path.is_absolute() or spec.startswith("."):
            raise HPSLoadError(f"checkpoint file {spec_path} does not exist")
        else:
            loaded = _load_pretrained(arch, spec, cache)
    elif source.endswith((".pt", ".pth", ".bin", ".safetensors")) or "/" in source:
        raise HPSLoadError(f"{path} does not exist")
    else:
        raise HPSLoadError(
            f"unknown model {source!r}: give a preset (tiny), a checkpoint folder, a "
            "checkpoint file, or an open_clip architecture and tag such as ViT-L-14:openai"
        )
    loaded.model.to(device).eval()
    return loaded


def _create(
    arch_or_cfg: str | dict[str, Any], preprocess_cfg: dict[str, Any] | None = None
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """An open_clip model (random weights), its eval transform, tokenizer and config."""
    import open_clip
    from open_clip.factory import get_model_config

    if isinstance(arch_or_cfg, dict):
        cfg = arch_or_cfg
        from open_clip.model import CLIP

        model = CLIP(**cfg)
        name = None
    else:
        name = "tiny" if arch_or_cfg == "tiny" else arch_or_cfg
        if name == "tiny":
            return _create(TINY_CLIP)
        cfg = get_model_config(name)
        if cfg is None:
            raise HPSLoadError(
                f"unknown architecture {name!r}; open_clip knows e.g. ViT-B-32, ViT-L-14, "
                "ViT-L-14-quickgelu, ViT-H-14"
            )
        quiet = _Unless("No pretrained weights loaded")  # we load them ourselves next
        logging.getLogger().addFilter(quiet)
        try:
            model = open_clip.create_model(name, load_weights=False)
        finally:
            logging.getLogger().removeFilter(quiet)
    preprocess = _transform(model, preprocess_cfg or {})
    tokenizer = open_clip.get_tokenizer(name) if name else _tokenizer(cfg)
    return model, preprocess, tokenizer, cfg


class _Unless(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _transform(model: Any, overrides: dict[str, Any]) -> Any:
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    cfg = merge_preprocess_dict(PreprocessCfg(size=model.visual.image_size), overrides)
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


def _tokenizer(cfg: dict[str, Any]) -> Any:
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=cfg.get("text_cfg", {}).get("context_length", 77))


def random_clip(arch: str, seed: int = 0) -> ClipModel:
    """An open_clip architecture with random weights fixed by ``seed`` (benchmarks, GPU
    checks: the real architecture's cost with nothing to download)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, preprocess, tokenizer, cfg = _create(arch)
    return ClipModel(model.eval(), preprocess, tokenizer, f"{arch} (random)", cfg)


def _load_folder(folder: Path) -> ClipModel:
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise HPSLoadError(f"{folder} is not a model folder: it has no {CONFIG}")
    try:
        config = json.loads(config_path.read_text("utf-8"))
        model_cfg = config["model_cfg"]
    except (ValueError, KeyError, TypeError) as error:
        raise HPSLoadError(f"{config_path} is not an open_clip config: {error}") from None
    weights = next(
        (
            folder / n
            for n in (WEIGHTS, "open_clip_pytorch_model.bin", "open_clip_model.bin")
            if (folder / n).is_file()
        ),
        None,
    )
    if weights is None:
        raise HPSLoadError(f"{folder} has a config but no weights ({WEIGHTS})")
    preprocess_cfg = config.get("preprocess_cfg") or {}
    try:
        model, preprocess, tokenizer, _ = _create(model_cfg, preprocess_cfg)
    except (TypeError, ValueError) as error:
        raise HPSLoadError(
            f"{config_path} describes no model prefloop can build: {error}"
        ) from None
    load_weights(model, read_state_dict(weights), weights)
    try:
        info = read_info(folder)
    except ValueError as error:
        raise HPSLoadError(str(error)) from None
    return ClipModel(model, preprocess, tokenizer, str(folder), model_cfg, preprocess_cfg, info)


def _load_file(arch: str, path: Path, state: dict[str, Any] | None = None) -> ClipModel:
    model, preprocess, tokenizer, cfg = _create(arch)
    load_weights(model, state if state is not None else read_state_dict(path), path)
    return ClipModel(model, preprocess, tokenizer, f"{arch}:{path}", cfg)


def _load_pretrained(arch: str, tag: str, cache: Path) -> ClipModel:
    import open_clip
    from open_clip.factory import get_model_config
    from open_clip.pretrained import get_pretrained_cfg

    # OpenAI's weights need QuickGELU, which open_clip's ViT-L-14 config lacks; building
    # without it would run them with the wrong activation (open_clip only warns).
    quick = bool((get_pretrained_cfg(arch, tag) or {}).get("quick_gelu"))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=tag, cache_dir=str(cache / "open_clip"), force_quick_gelu=quick
        )
    except Exception as error:  # unknown tag, no network, a bad download …
        raise HPSLoadError(f"could not load {arch} with weights {tag!r}: {error}") from None
    cfg = dict(get_model_config(arch) or {})
    if quick:
        cfg["quick_gelu"] = True
    preprocess_cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    return ClipModel(
        model, preprocess, open_clip.get_tokenizer(arch), f"{arch}:{tag}", cfg, preprocess_cfg
    )


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a checkpoint file: safetensors, or a torch file (weights only)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(path)
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HPSLoadError(f"{path} does not exist") from None
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise HPSLoadError(
            f"{path} is not a readable checkpoint (is the file complete?): {reason}"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # HPS v1 and v2 keep the weights here
    if not isinstance(loaded, dict) or not loaded:
        raise HPSLoadError(f"{path} holds no weights (expected a state dict)")
    if not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise HPSLoadError(f"{path} is not a state dict of tensors")
    if all(k.startswith("module.") for k in loaded):  # saved from DistributedDataParallel
        loaded = {k.removeprefix("module."): v for k, v in loaded.items()}
    for key in OPENAI_EXTRA_KEYS:
        loaded.pop(key, None)
    return loaded


def load_weights(model: Any, state: dict[str, Any], path: Path) -> None:
    """Load ``state`` into ``model`` only if it fits exactly; else say what does not."""
    own = model.state_dict()
    if "logit_scale" in state and state["logit_scale"].shape != own["logit_scale"].shape:
        state["logit_scale"] = state["logit_scale"].reshape(own["logit_scale"].shape)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} of the wrong shape (e.g. {wrong[0]})")
        raise HPSLoadError(f"{path} does not fit this architecture: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def _architecture_of(state: dict[str, Any], path: Path) -> str:
    """The architecture of a bare checkpoint file, from the shapes of its weights."""
    try:
        conv = state["visual.conv1.weight"]
        key = (int(conv.shape[0]), int(conv.shape[-1]), int(state["ln_final.weight"].shape[0]))
    except KeyError:
        key = None
    if key not in KNOWN_SHAPES:
        raise HPSLoadError(
            f"cannot tell the architecture of {path} from its weights; name it, e.g. "
            f"ViT-L-14-quickgelu:{path}"
        )
    return KNOWN_SHAPES[key]


def save_checkpoint(clip: ClipModel, folder: Path, info: dict[str, Any]) -> Path:
    """Write ``clip`` as a folder stock open_clip loads (``local-dir:``), plus its info."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in clip.model.state_dict().items()}
    save_file(state, folder / WEIGHTS)
    (folder / CONFIG).write_text(
        json.dumps({"model_cfg": clip.model_cfg, "preprocess_cfg": clip.preprocess_cfg}, indent=2)
    )
    write_info(folder, info)
    return folder
