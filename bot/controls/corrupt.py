"""The corruptions of a control set's worse image: pure functions of an image (PIL only).

Each is meant to be seen at a glance, so that a careful rater never picks the image:

- ``blur``: a Gaussian blur of radius width/16 (shapes turn to smudges);
- ``noise``: strong zero-mean noise (each channel moved by the difference of two uniform
  draws in [0, NOISE_SPAN], a triangular spread of about 65 levels) and 3% salt-and-pepper
  pixels, drawn from the image's own seed, so a retried job makes the same image;
- ``invert``: the colours inverted.

The fourth kind, ``wrong_prompt``, is no function of the image: the worker makes that
image from another prompt with the same seed (bot/generation/runner.py).
"""

from __future__ import annotations

import random

from PIL import Image, ImageChops, ImageFilter, ImageOps

from bot.db.models import ControlKind

BLUR_DIVISOR = 16  # blur radius = width / BLUR_DIVISOR
NOISE_SPAN = 160  # each channel moves by U(0, span) - U(0, span)
SALT_SHARE = 0.03  # share of pixels set to black or white (half each)


def blur(image: Image.Image) -> Image.Image:
    """A heavy Gaussian blur: radius width/16 (4 pixels on a 64-pixel image, 32 on 512)."""
    radius = max(1.0, image.width / BLUR_DIVISOR)
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius))


def noise(image: Image.Image, seed: int) -> Image.Image:
    """Strong noise and salt-and-pepper pixels, the same for the same ``seed``."""
    rng = random.Random(seed)
    rgb = image.convert("RGB")
    size = rgb.size
    pixels = size[0] * size[1]

    def uniform(mode: str, bands: int) -> Image.Image:
        return Image.frombytes(mode, size, rng.randbytes(pixels * bands))

    scale = [v * NOISE_SPAN // 255 for v in range(256)] * 3
    up, down = (uniform("RGB", 3).point(scale) for _ in range(2))
    noisy = ImageChops.subtract(ImageChops.add(rgb, up), down)
    where = uniform("L", 1)
    cut = round(SALT_SHARE / 2 * 256)
    noisy.paste((0, 0, 0), mask=where.point(lambda v: 255 if v < cut else 0))
    noisy.paste((255, 255, 255), mask=where.point(lambda v: 255 if v >= 256 - cut else 0))
    return noisy


def invert(image: Image.Image) -> Image.Image:
    """The colours inverted (255 - value in each channel)."""
    return ImageOps.invert(image.convert("RGB"))


def corrupt(image: Image.Image, kind: str, seed: int) -> Image.Image:
    """``image`` made worse by ``kind`` (blur, noise or invert); ``seed`` seeds the noise."""
    if kind == ControlKind.blur:
        return blur(image)
    if kind == ControlKind.noise:
        return noise(image, seed)
    if kind == ControlKind.invert:
        return invert(image)
    raise ValueError(f"{kind!r} is not a corruption of an image (wrong_prompt needs the model)")
