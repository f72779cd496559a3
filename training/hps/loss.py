"""The HPS objective: for each instance, cross-entropy over its 2-4 images.

logits = logit_scale · cos(prompt, image_i), the scale capped at 100 (HPSv2's
PreferenceLoss does the same); instances with fewer images are padded and masked out.

Each instance has a target distribution over its images and a weight:

- a **pick**: all of the target on the picked image (HPS's loss);
- a **tie** ("No favourite"): the target spread evenly over the images, PickScore's
  recipe for "no image is significantly better" (0.5/0.5 for a pair);
- a **"none are good"** set, when trained on (``NONE`` rows): the set's images against
  a reference, the mean logit of the batch's picked images (each for its own prompt): a
  softmax over the set's images plus that reference, with the target on the reference.
  Its loss, ``softplus(logsumexp(images) - reference)``, pushes the set's images (the
  best of them most) below what a picked image scores, and the picked images up, and is
  small once all of them are well below. Both sides move: lowering every score alike
  changes nothing (with the reference held fixed, all scores drifted down together and
  the ranking of picks stopped being learned). A batch with no pick has no reference:
  its "none" rows add nothing.

The batch loss is ``sum(weight_i · loss_i) / B``; with every weight 1 and only picks it
is HPS's mean cross-entropy, exactly.
"""

from __future__ import annotations

from typing import Any

MAX_LOGIT_SCALE = 100.0
PAD_LOGIT = -1e4  # a padded image never wins, and its gradient is zero

# Instance kinds in a batch (``Batch.kinds``).
PICK, TIE, NONE = 0, 1, 2


def group_logits(
    text: Any, images: Any, mask: Any, scale: Any, max_scale: float = MAX_LOGIT_SCALE
) -> Any:
    """[B, K] logits from normalised text [B, D] and images [B, K, D]; padding masked.

    ``scale`` is exp(logit_scale), as open_clip's forward returns it.
    """
    import torch

    logits = scale.clamp(max=max_scale) * torch.einsum("bd,bkd->bk", text, images)
    return logits.masked_fill(~mask, PAD_LOGIT)


def preference_loss(
    logits: Any, targets: Any, weights: Any | None = None, kinds: Any | None = None
) -> Any:
    """The weighted batch loss from [B, K] logits and [B, K] target distributions.

    ``weights`` [B] (default all 1) scale each instance's loss; ``kinds`` [B] (default
    all ``PICK``) mark the ``NONE`` rows, whose targets are ignored (see the module).
    """
    import torch

    logits = logits.float()
    rows = logits.shape[0]
    weights = torch.ones(rows, device=logits.device) if weights is None else weights.float()
    log_p = torch.log_softmax(logits, dim=-1)
    # Padding has a target of 0 and a finite log-probability: it adds nothing.
    losses = -(targets.float() * log_p).sum(dim=-1)
    if kinds is not None:
        negative = kinds == NONE
        if bool(negative.any()):
            picks = kinds == PICK
            if bool(picks.any()):
                picked = (logits[picks] * targets[picks].float()).sum(dim=-1)
                reference = picked.mean()
                above = torch.logsumexp(logits, dim=-1) - reference
                none_losses = torch.nn.functional.softplus(above)
            else:
                none_losses = torch.zeros_like(losses)
            losses = torch.where(negative, none_losses, losses)
    return (weights * losses).sum() / rows
