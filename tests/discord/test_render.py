"""What members read, and images that fit Discord's upload limit."""

from __future__ import annotations

import io
import random

from PIL import Image

from bot.discord import render
from bot.discord.uploads import fit_for_upload


def _noise_png(side: int) -> bytes:
    rng = random.Random(0)
    image = Image.frombytes(
        "RGB", (side, side), bytes(rng.randrange(256) for _ in range(side * side * 3))
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_small_images_are_sent_as_they_are() -> None:
    png = _noise_png(32)
    assert fit_for_upload(png, 10 * 1024 * 1024) == (png, "png")


def test_large_images_become_jpegs_under_the_limit() -> None:
    png = _noise_png(256)  # noise compresses badly: ~197 KB
    data, ext = fit_for_upload(png, 40_000)
    assert ext == "jpg" and len(data) <= 40_000
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"


def test_pick_confirmations_say_what_happened() -> None:
    assert render.picked(2, None, True) == "You picked image 3; click another to change your pick."
    assert render.picked(0, 2, True) == "You changed your pick from image 3 to image 1."
    assert render.picked(0, 0, False) == "Image 1 is already your pick."


def test_prompts_cannot_break_the_markdown() -> None:
    assert "\\*\\*bold\\*\\*" in render.queued("**bold**", 1)
    assert render.queued("x", 3).endswith("position 3 in the queue")
