"""Fine-tune a LoRA on the generator's UNet from an HPS selection (the paper's recipe).

Positives are captioned with their prompt, negatives with "Weird image. " + prompt, and
optional regularisation pairs (image + caption) are mixed in at a set ratio; the loss is
the usual noise-prediction MSE. The images' VAE latents (mean and spread) and the
captions' text embeddings are computed once before training, not at every step (the
habits it shares with dpo.py live in training/adapt/tuning.py).

Every step draws its samples, noise and timesteps from a generator seeded by (seed, step,
process), so a run is reproducible and a resumed run replays exactly what the
uninterrupted one would have done. One entry point on a CPU, a GPU or many:
``python -m training adapt …``, or ``accelerate launch -m training adapt …``.

The defaults are the paper's recipe scaled down (``PAPER``: 1,000 steps of 4); the
paper's full-size settings are named recipes (``RECIPES``: ``hps-script``, the released
training script's, and ``hps-paper-text``, the paper's text's), chosen with ``--recipe``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.adapt import WEIRD
from training.adapt.select import Selected, negatives_by_source, pool_from_folder
from training.adapt.tuning import (
    TARGETS,
    AdaptError,
    Cached,
    Setup,
    add_lora,
    cache,
    load_lora,
    lora_state,
    noised,
    predict,
    prepare,
    train_steps,
    write_adapter,
)
from training.presets import preset_of
from training.run_folder import forget_resume_point, is_finished, write_info

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


def captions(selection: Sequence[Selected]) -> list[tuple[str, str]]:
    """(image file, caption): the prompt for positives, "Weird image. " + it for negatives."""
    return [(s.file, s.prompt if s.label == "positive" else WEIRD + s.prompt) for s in selection]


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


def step_loss(setup: Setup, unet: Any, cached: Cached, index: Any, generator: Any) -> Any:
    """Noise-prediction MSE of one batch, everything random drawn from ``generator``."""
    import torch

    batch = noised(setup, cached, index, generator)
    return torch.nn.functional.mse_loss(predict(unet, batch, setup.weight_dtype), batch.target)


def adapt_generator(
    config: AdaptConfig,
    selection: Sequence[Selected],
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train the LoRA; write a folder stock diffusers loads with ``load_lora_weights``."""
    import torch

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

    setup = prepare(
        config.base,
        config.models(),
        device=config.device,
        mixed_precision=config.mixed_precision,
        grad_accum=config.grad_accum,
    )
    accelerator = setup.accelerator
    cached = cache(setup, items)
    unet = setup.pipe.unet
    add_lora(unet, hyper["rank"], config.seed)
    if config.gradient_checkpointing if config.gradient_checkpointing is not None else setup.on_gpu:
        unet.enable_gradient_checkpointing()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hyper["lr"], weight_decay=hyper["weight_decay"])
    unet, optimizer = accelerator.prepare(unet, optimizer)
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
        "precision": setup.precision,
    }

    def fixed_loss() -> float:  # the same samples, noise and timesteps before and after
        with torch.no_grad(), accelerator.autocast():
            probe = torch.Generator().manual_seed(config.seed + 12345)
            index = draw(cached, min(64, 8 * batch), 0.0, probe)
            return float(step_loss(setup, unet, cached, index, probe))

    def loss_of(generator: Any) -> Any:
        index = draw(cached, batch, config.regularization_ratio, generator)
        return step_loss(setup, unet, cached, index, generator)

    bare = accelerator.unwrap_model(unet)
    trained = train_steps(
        setup,
        unet,
        optimizer,
        loss_of,
        out=out,
        total=total,
        grad_accum=config.grad_accum,
        seed=config.seed,
        save_every=config.save_every or max(1, total // 10),
        run=run,
        state=(lambda: lora_state(bare), lambda saved: load_lora(bare, saved)),
        before=fixed_loss,
        desc="adapt",
        on_step=on_step,
    )
    after = fixed_loss()
    if accelerator.is_main_process:
        write_adapter(bare, out)
        info = {
            "base": config.base,
            "method": "lora",
            "hps": config.hps,
            "selection": {
                "items": len(pairs),
                "negatives": negatives_by_source(selection),
                "regularization": len(items) - len(pairs),
                "manifest_sha256": config.selection_hash,
            },
            "hyperparameters": config.recorded(setup.precision),
            "metrics": {
                "fixed_batch_loss_before": trained.before,
                "fixed_batch_loss_after": after,
                "train_loss_first": trained.losses[0] if trained.losses else None,
                "steps": total,
                "seconds": trained.seconds,
            },
            "negative_prompt": WEIRD.strip(),
            "finished": True,
        }
        write_info(out, info)
        forget_resume_point(out)
    accelerator.wait_for_everyone()
    return out
