"""A fixed "preference" for closed-loop tests: people like a red top-left corner.

The tiny preset draws four coloured quadrants, so how red the top-left corner is (the
red channel's mean over the top-left quarter of each side) varies a lot between seeds:
selection has something to choose between and adaptation something to learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def red_corner(image: Any) -> float:
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = pixels.shape[0] // 4, pixels.shape[1] // 4
    return float(pixels[:h, :w, 0].mean())


def redness(image: Any) -> float:
    """How red the whole image is: the red channel's mean minus the other two's."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    return float(pixels[..., 0].mean() - pixels[..., 1:].mean())


class RedCornerScorer:
    """Anything with ``score_groups`` can drive selection and evaluation."""

    source = "rule: red top-left corner"

    def score_groups(self, groups: Sequence[tuple[str, Sequence[Any]]]) -> list[list[float]]:
        return [[red_corner(image) for image in images] for _, images in groups]

    def score(self, images: Sequence[Any], prompt: str) -> list[float]:
        return self.score_groups([(prompt, images)])[0]


def generate_pool(generator: Any, prompts: Sequence[str], folder: Path, n: int = 4) -> list:
    """Images of each prompt from the base generator, saved as files: the selection pool."""
    from training.adapt.select import Group

    folder.mkdir(parents=True, exist_ok=True)
    groups = []
    for p, prompt in enumerate(prompts):
        made = generator.generate(prompt, [1000 * p + k for k in range(n)], steps=10)
        paths = []
        for k, image in enumerate(made.images):
            path = folder / f"{p}_{k}.png"
            image.save(path)
            paths.append(path)
        groups.append(Group(prompt, tuple(paths)))
    return groups
