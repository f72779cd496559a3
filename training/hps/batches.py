"""What one fit step needs: instances as tensors, the batch loss, which weights train.

Kept apart from the loop in ``fit.py`` so each reads on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from training.data import Example
from training.hps.examples import KINDS, target
from training.hps.loss import group_logits, preference_loss
from training.hps.model import ClipModel

if TYPE_CHECKING:
    import torch


class Batch(NamedTuple):  # a tuple, so accelerate moves every field to the device
    pixels: Any  # [N, 3, H, W], every real image of the batch
    slots: Any  # [N] position of each image in the [B*K] grid
    mask: Any  # [B, K] True where an image is
    tokens: Any  # [B, context]
    targets: Any  # [B, K] each instance's target distribution (see loss.py)
    weights: Any  # [B] each instance's weight (mean 1 over the training set)
    kinds: Any  # [B] PICK, TIE or NONE


Item = tuple[Any, Any, list[float], float, int]


class PreferenceDataset:
    """Examples -> (pixels of each image, prompt tokens, target, weight, kind)."""

    def __init__(
        self, examples: Sequence[Example], clip: ClipModel, weights: Sequence[float] | None = None
    ) -> None:
        self.examples = list(examples)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.examples)
        if len(self.weights) != len(self.examples):
            raise ValueError(f"{len(self.weights)} weights for {len(self.examples)} examples")
        self.preprocess = clip.preprocess
        self.tokenizer = clip.tokenizer

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Item:
        import torch

        example = self.examples[index]
        pixels = torch.stack([self.preprocess(image) for image in example.open_images()])
        tokens = self.tokenizer([example.prompt])[0]
        return pixels, tokens, target(example), self.weights[index], KINDS[example.vote]


def collate(items: list[Item]) -> Batch:
    import torch

    width = max(item[0].shape[0] for item in items)
    mask = torch.zeros(len(items), width, dtype=torch.bool)
    targets = torch.zeros(len(items), width)
    slots: list[int] = []
    for row, (pixels, _, wanted, _, _) in enumerate(items):
        mask[row, : pixels.shape[0]] = True
        targets[row, : len(wanted)] = torch.tensor(wanted)
        slots.extend(row * width + k for k in range(pixels.shape[0]))
    return Batch(
        pixels=torch.cat([item[0] for item in items]),
        slots=torch.tensor(slots),
        mask=mask,
        tokens=torch.stack([item[1] for item in items]),
        targets=targets,
        weights=torch.tensor([item[3] for item in items], dtype=torch.float32),
        kinds=torch.tensor([item[4] for item in items]),
    )


def batch_loss(model: Any, batch: Batch) -> Any:
    """The preference loss of one batch (model: open_clip CLIP, possibly wrapped by DDP)."""
    import torch

    image, text, scale = model(batch.pixels, batch.tokens)[:3]  # normalised, exp(scale)
    grid = torch.zeros(batch.mask.numel(), image.shape[-1], dtype=image.dtype, device=image.device)
    grid[batch.slots] = image
    grid = grid.view(*batch.mask.shape, -1)
    logits = group_logits(text, grid, batch.mask, scale)
    return preference_loss(logits, batch.targets, batch.weights, batch.kinds)


def set_trainable(model: Any, vision_blocks: int, text_blocks: int) -> int:
    """Freeze all but the last blocks, the final norms, projections and logit scale."""
    model.requires_grad_(False)
    visual, text = model.visual.transformer.resblocks, model.transformer.resblocks
    for blocks, n in ((visual, vision_blocks), (text, text_blocks)):
        count = len(blocks) if n < 0 else min(n, len(blocks))
        for block in list(blocks)[len(blocks) - count :]:
            block.requires_grad_(True)
    if vision_blocks < 0 and text_blocks < 0:
        model.requires_grad_(True)
    for name in ("ln_final", "text_projection", "logit_scale"):
        getattr(model, name).requires_grad_(True)
    for name in ("ln_post", "proj"):
        part = getattr(model.visual, name, None)
        if part is not None:
            part.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on gains, biases, embeddings and the logit scale (as open_clip)."""
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        quiet = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
        quiet = quiet or "embedding" in name or "logit_scale" in name
        (plain if quiet else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]


def schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
