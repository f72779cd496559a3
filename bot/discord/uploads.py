"""Fitting images into Discord's upload limit; the originals stay in our store."""

from __future__ import annotations

import io

from PIL import Image

DEFAULT_LIMIT = 10 * 1024 * 1024  # Discord's per-file limit without boosts


def fit_for_upload(png: bytes, limit: int = DEFAULT_LIMIT) -> tuple[bytes, str]:
    """(bytes, extension) of the image at most ``limit`` bytes: the PNG itself when it fits,
    else a JPEG of falling quality, then of falling size."""
    if len(png) <= limit:
        return png, "png"
    with Image.open(io.BytesIO(png)) as original:
        image = original.convert("RGB")
    for scale in (1.0, 0.75, 0.5, 0.35, 0.25):
        if scale < 1.0:
            size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
            candidate_image = image.resize(size, Image.Resampling.LANCZOS)
        else:
            candidate_image = image
        for quality in (92, 80, 65):
            buffer = io.BytesIO()
            candidate_image.save(buffer, format="JPEG", quality=quality, optimize=True)
            if buffer.tell() <= limit:
                return buffer.getvalue(), "jpg"
    raise ValueError(f"cannot fit an image into {limit} bytes")
