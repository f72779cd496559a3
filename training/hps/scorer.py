"""HPS scores: 100 · cos(image embedding, prompt embedding), many images at a time.

The model is loaded once; each prompt's text is encoded once however many images it has;
images from many prompts share batches; on a GPU the forward passes run under autocast.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from training.hps.model import ClipModel, load_clip

ImageLike = Any  # a PIL image, a path to an image file, or a preprocessed (3, H, W) tensor


def resolve_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class HPSScorer:
    """Scores images against prompts with one loaded CLIP (HPS, or plain CLIP as baseline)."""

    def __init__(
        self, clip: ClipModel, *, batch_size: int = 32, autocast_dtype: Any = None
    ) -> None:
        import torch

        self.clip = clip
        self.batch_size = batch_size
        self.device = next(clip.model.parameters()).device
        if autocast_dtype is None and self.device.type == "cuda":
            autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.autocast_dtype = autocast_dtype

    @classmethod
    def load(
        cls, source: str, *, device: str = "auto", cache_dir: Path | None = None, **options: Any
    ) -> HPSScorer:
        return cls(load_clip(source, device=resolve_device(device), cache_dir=cache_dir), **options)

    @property
    def source(self) -> str:
        return self.clip.source

    def score(self, images: Sequence[ImageLike], prompt: str) -> list[float]:
        """The HPS of each image for ``prompt``."""
        return self.score_groups([(prompt, images)])[0]

    def score_groups(self, groups: Iterable[tuple[str, Sequence[ImageLike]]]) -> list[list[float]]:
        """Scores for many (prompt, images) groups; images of several groups share batches."""
        groups = list(groups)
        texts = self._encode_texts(sorted({prompt for prompt, _ in groups}))
        scores: list[list[float]] = [[] for _ in groups]
        for owners, pixels in self._image_batches(groups):
            features = self._encode_images(pixels)
            prompts = [texts[groups[g][0]] for g in owners]
            import torch

            cos = (features * torch.stack(prompts)).sum(dim=-1)
            for g, value in zip(owners, (100.0 * cos).tolist(), strict=True):
                scores[g].append(value)
        return scores

    # ----- internals ----------------------------------------------------------------

    def _context(self) -> Any:
        import contextlib

        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _encode_texts(self, prompts: list[str]) -> dict[str, Any]:
        import torch

        encoded: dict[str, Any] = {}
        with torch.inference_mode(), self._context():
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                tokens = self.clip.tokenizer(chunk).to(self.device)
                features = self.clip.model.encode_text(tokens).float()
                features = torch.nn.functional.normalize(features, dim=-1)
                encoded.update(zip(chunk, features, strict=True))
        return encoded

    def _encode_images(self, pixels: Any) -> Any:
        import torch

        with torch.inference_mode(), self._context():
            features = self.clip.model.encode_image(pixels.to(self.device)).float()
        return torch.nn.functional.normalize(features, dim=-1)

    def _image_batches(
        self, groups: list[tuple[str, Sequence[ImageLike]]]
    ) -> Iterator[tuple[list[int], Any]]:
        """(group index of each image, stacked pixels), batch_size images at a time."""
        import torch

        owners: list[int] = []
        pixels: list[Any] = []
        for g, (_, images) in enumerate(groups):
            for image in images:
                owners.append(g)
                pixels.append(self.pixels(image))
                if len(pixels) == self.batch_size:
                    yield owners, torch.stack(pixels)
                    owners, pixels = [], []
        if pixels:
            yield owners, torch.stack(pixels)

    def pixels(self, image: ImageLike) -> Any:
        """The model's input for one image (a tensor is taken as already preprocessed)."""
        import torch
        from PIL import Image

        if isinstance(image, torch.Tensor):
            return image
        if isinstance(image, str | Path):
            with Image.open(image) as opened:
                return self.clip.preprocess(opened.convert("RGB"))
        return self.clip.preprocess(image.convert("RGB"))
