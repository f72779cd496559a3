"""Load a Stable Diffusion pipeline from anywhere a user keeps one, and make N images at once.

``model`` may be a Hugging Face hub id (``CompVis/stable-diffusion-v1-4``), a local
diffusers folder, or a preset name (``tiny``), which is written to ``cache_dir`` first and
then loaded from there like any folder. All N images of one prompt come from ONE batched
pipeline call, with one seed per image, so image k is the image a single call with seed k
would make (up to float rounding, which batching can change by a step in a pixel value).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.presets import is_preset, save_preset
from training.run_folder import read_info

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
ProgressCallback = Callable[[int, int], None]  # (step done, total steps)
KEPT_ADAPTERS = 3  # adapters kept loaded besides the serving one (a few LoRAs: megabytes)


class GeneratorLoadError(RuntimeError):
    """The generator model could not be loaded; the message names it and says why."""


@dataclass(frozen=True)
class GeneratedImages:
    """The images of one call, and which of them the safety checker flagged."""

    images: list[Any]  # PIL images
    nsfw: list[bool]


def resolve_device(device: str = "auto") -> str:
    """``auto`` = the first CUDA GPU, else Apple's MPS, else the CPU."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """``auto`` = float16 on a GPU, float32 on the CPU (where half precision is slow)."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    return getattr(torch, dtype)


def model_source(model: str, cache_dir: Path) -> str:
    """Where diffusers should read ``model`` from: a folder path or a hub id."""
    if is_preset(model):
        return str(save_preset(model, cache_dir / model))
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    if _HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return model
    raise GeneratorLoadError(
        f"generator model {model!r} is not a folder, a preset ('tiny') or a hub id (owner/name)"
    )


class Generator:
    """A loaded pipeline, kept for the life of a worker."""

    def __init__(self, pipe: Any, name: str) -> None:
        self.pipe = pipe
        self.name = name
        self.adapter: str | None = None
        self.negative_prefix = ""  # the adapter's negative prompt ("Weird image.")
        self._active: str | None = None  # the adapter's name inside the pipeline
        # Adapters loaded besides the serving one (folder -> (name, negative prompt)),
        # least recently used first: a mixed set's versions switch without reloading.
        self._kept: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._loads = 0
        self.pipe.set_progress_bar_config(disable=True)

    def apply_adapter(self, folder: str | Path) -> None:
        """Serve a LoRA adapter (diffusers format) with its negative prompt (its run info).

        A missing or corrupt adapter raises :class:`GeneratorLoadError` and leaves the
        pipeline as it was: the base model keeps working. The adapter served before stays
        loaded among the kept ones (a comparison may still draw on it).
        """
        path = Path(folder).expanduser()
        kept = self._kept.pop(str(path), None)
        try:
            name, negative = kept or self._load(path)
        finally:
            self._use(self._active)  # loading may have switched the pipeline's adapters
        if self._active is not None and self.adapter is not None:
            self._keep(self.adapter, self._active, self.negative_prefix)
        self._active = name
        self.adapter, self.negative_prefix = str(path), negative
        self._use(name)

    def clear_adapter(self) -> None:
        """Back to the base model: the adapter and its negative prompt switched off (it
        stays loaded among the kept ones)."""
        if self._active is not None and self.adapter is not None:
            self._keep(self.adapter, self._active, self.negative_prefix)
        self._active, self.adapter, self.negative_prefix = None, None, ""
        self._use(None)

    def _load(self, path: Path) -> tuple[str, str]:
        """Load the adapter in ``path`` under a new name; (name, its negative prompt).

        Which adapters are switched on afterwards is the caller's to set (:meth:`_use`).
        """
        if not path.is_dir():
            raise GeneratorLoadError(f"adapter {path} does not exist (expected a folder)")
        try:
            negative = str(read_info(path).get("negative_prompt") or "")
        except ValueError as error:
            raise GeneratorLoadError(str(error)) from None
        name = f"prefloop_{self._loads}"
        self._loads += 1
        try:
            self.pipe.load_lora_weights(str(path), adapter_name=name)
        except Exception as error:
            with contextlib.suppress(Exception):
                self.pipe.delete_adapters([name])  # nothing half-loaded stays behind
            lines = str(error).strip().splitlines() or [type(error).__name__]
            reason = " ".join(line.strip() for line in lines[:3])[:400]
            kept = (
                f"adapter {self.adapter} is still in use"
                if self.adapter
                else ("the base model is unchanged")
            )
            raise GeneratorLoadError(
                f"adapter {path} could not be loaded ({reason}); {kept}"
            ) from None
        return name, negative

    def _keep(self, folder: str, name: str, negative: str) -> None:
        """Keep a loaded adapter for later; beyond KEPT_ADAPTERS, the least recent goes."""
        held = self._kept.pop(folder, None)
        if held is not None and held[0] != name:  # that folder loaded twice: one is enough
            self.pipe.delete_adapters([held[0]])
        self._kept[folder] = (name, negative)
        while len(self._kept) > KEPT_ADAPTERS:
            _, (evicted, _) = self._kept.popitem(last=False)
            self.pipe.delete_adapters([evicted])

    def _use(self, name: str | None) -> None:
        """Switch the pipeline to the loaded adapter ``name``, or to the bare base (None)."""
        if name is not None:
            self.pipe.enable_lora()
            self.pipe.set_adapters([name])
        elif self._kept or self._active is not None:  # LoRA layers exist: turn them off
            self.pipe.disable_lora()

    def preload(self, folder: str | Path | None) -> None:
        """Make sure the adapter in ``folder`` is loaded (None: the base, always there).

        Raises :class:`GeneratorLoadError` when it cannot be; what serves is unchanged.
        """
        self._adapter_named(folder)

    def _adapter_named(self, folder: str | Path | None) -> tuple[str | None, str]:
        """The pipeline's name for the adapter in ``folder`` and its negative prompt,
        loading it when needed; (None, "") for the base."""
        if folder is None:
            return None, ""
        key = str(Path(folder).expanduser())
        if key == self.adapter and self._active is not None:
            return self._active, self.negative_prefix
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        try:
            name, negative = self._load(Path(key))
        finally:
            self._use(self._active)
        self._keep(key, name, negative)
        return name, negative

    def version_of(self, folder: str | Path | None) -> str:
        """What :meth:`generate_as` with ``folder`` makes: as :attr:`version` names it."""
        return f"{self.name}+{Path(folder).expanduser()}" if folder is not None else self.name

    def generate_as(
        self, folder: str | Path | None, prompt: str, seeds: Sequence[int], **options: Any
    ) -> GeneratedImages:
        """:meth:`generate` with the adapter in ``folder`` (None: the bare base model) and
        its own negative prompt, on this same pipeline; what serves is restored after.

        The adapter is loaded once and kept (up to KEPT_ADAPTERS besides the serving
        one), so switching costs no reload. One that cannot be loaded raises
        :class:`GeneratorLoadError`: never an image made by another version.
        """
        key = None if folder is None else str(Path(folder).expanduser())
        if key == self.adapter:
            return self.generate(prompt, seeds, **options)
        name, negative = self._adapter_named(key)
        serving_prefix = self.negative_prefix
        self.negative_prefix = negative
        try:
            self._use(name)
            return self.generate(prompt, seeds, **options)
        finally:
            self.negative_prefix = serving_prefix
            self._use(self._active)

    def base_view(self) -> Any:
        """An object that generates like the base model, sharing this pipeline."""
        return _BaseView(self)

    def negative_for(self, negative_prompt: str) -> str:
        """The adapter's negative prompt joined with the member's own."""
        parts = [p.strip() for p in (self.negative_prefix, negative_prompt) if p and p.strip()]
        return " ".join(parts)

    @classmethod
    def load(
        cls,
        model: str,
        *,
        cache_dir: Path,
        device: str = "auto",
        dtype: str = "auto",
        safety_checker: bool = True,
        adapter: str | Path | None = None,
    ) -> Generator:
        """Load ``model`` onto ``device`` (see the module docstring for what ``model`` may be)."""
        from diffusers import DiffusionPipeline

        source = model_source(model, Path(cache_dir))
        device = resolve_device(device)
        options: dict[str, Any] = {"dtype": resolve_dtype(dtype, device)}
        if not safety_checker:
            options.update(safety_checker=None, requires_safety_checker=False)
        try:
            pipe = DiffusionPipeline.from_pretrained(source, **options)
        except Exception as error:
            raise GeneratorLoadError(
                f"could not load generator {model!r} from {source}: {error}. Set "
                "PREFLOOP_GENERATOR__MODEL to a local diffusers folder, a reachable hub id, "
                "or 'tiny' (an offline test model)."
            ) from error
        log.info("generator %s loaded on %s (%s)", model, device, options["dtype"])
        generator = cls(pipe.to(device), model)
        if adapter:
            generator.apply_adapter(adapter)
        return generator

    @property
    def version(self) -> str:
        """What made the images: the model, and the adapter when one is applied."""
        return f"{self.name}+{self.adapter}" if self.adapter else self.name

    @property
    def device(self) -> Any:
        return self.pipe.device

    @property
    def has_safety_checker(self) -> bool:
        return getattr(self.pipe, "safety_checker", None) is not None

    def default_size(self) -> tuple[int, int]:
        """(width, height) the model was trained at."""
        side = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        return side, side

    def generate(
        self,
        prompt: str,
        seeds: Sequence[int],
        *,
        negative_prompt: str = "",
        steps: int = 30,
        guidance: float = 7.5,
        width: int | None = None,
        height: int | None = None,
        on_step: ProgressCallback | None = None,
    ) -> GeneratedImages:
        """len(seeds) images of ``prompt`` in one batched call, image k from seeds[k]."""
        import torch

        n = len(seeds)
        negative_prompt = self.negative_for(negative_prompt)
        generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]

        def report(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(step + 1, steps)
            return tensors

        with torch.inference_mode():
            output = self.pipe(
                prompt=[prompt] * n,
                negative_prompt=[negative_prompt] * n if negative_prompt else None,
                generator=generators,
                num_inference_steps=steps,
                guidance_scale=guidance,
                width=width,
                height=height,
                callback_on_step_end=report,
            )
        flags = output.nsfw_content_detected or [False] * n
        return GeneratedImages(images=list(output.images), nsfw=[bool(f) for f in flags])


class _BaseView:
    """``generate`` of a Generator with its adapter switched off (see ``base_view``)."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def generate(self, prompt: str, seeds: Sequence[int], **options: Any) -> GeneratedImages:
        return self.generator.generate_as(None, prompt, seeds, **options)
