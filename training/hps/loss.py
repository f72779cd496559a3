"""The HPS objective: for each instance, cross-entropy over its 2-4 images.

logits = logit_scale · cos(prompt, image_i), the scale capped at 100 (HPSv2's
PreferenceLoss does the same); instances with fewer images are padded and masked out.
"""

from __future__ import annotations

from typing import Any

MAX_LOGIT_SCALE = 100.0
PAD_LOGIT = -1e4  # a padded image never wins, and its gradient is zero


def group_logits(
    text: Any, images: Any, mask: Any, scale: Any, max_scale: float = MAX_LOGIT_SCALE
) -> Any:
    """[B, K] logits from normalised text [B, D] and images [B, K, D]; padding masked.

    ``scale`` is exp(logit_scale), as open_clip's forward returns it.
    """
    import torch

    logits = scale.clamp(max=max_scale) * torch.einsum("bd,bkd->bk", text, images)
    return logits.masked_fill(~mask, PAD_LOGIT)


def preference_loss(logits: Any, chosen: Any) -> Any:
    """Mean cross-entropy of the picked image among its group."""
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), chosen)
