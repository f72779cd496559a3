"""Refit HPS: fine-tune a CLIP so that each instance's picked image scores highest.

The paper's recipe by default (HPS v1, arXiv 2303.14420): the last 10 vision blocks and
the last 6 text blocks train (plus the final norms, projections and the logit scale),
AdamW with lr 1.7e-5 and weight decay 3.1e-3, 5 instances a batch, 1 epoch, a cosine
schedule. A preset or checkpoint may carry defaults of its own (``prefloop.json``'s
``training``): a randomly initialised toy needs far more steps at a far higher rate.

One entry point on one CPU, one GPU or many: ``accelerate launch -m training.hps.fit …``
runs the same code data-parallel. On the CPU a run is deterministic for its seed, and an
interrupted run resumes from its last saved step to the same result.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from training.data import Example, PreferenceData, read_preferences
from training.hps.loss import group_logits, preference_loss
from training.hps.model import ClipModel, load_clip, save_checkpoint

log = logging.getLogger(__name__)

RESUME = ".resume"
PAPER: dict[str, Any] = {
    "lr": 1.7e-5,
    "weight_decay": 3.1e-3,
    "batch_size": 5,
    "epochs": 1.0,
    "warmup_steps": 0,
    "unfreeze_vision": 10,
    "unfreeze_text": 6,
}


class FitError(RuntimeError):
    """The fit cannot start or go on; the message says why."""


@dataclass
class FitConfig:
    """What to train from, and how. ``None`` = the base model's default, else the paper's."""

    out: Path
    base: str = "ViT-L-14:openai"
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None  # instances per optimizer step (per process)
    epochs: float | None = None
    warmup_steps: int | None = None
    unfreeze_vision: int | None = None  # last N vision blocks train; -1 = all
    unfreeze_text: int | None = None  # last M text blocks train; -1 = all
    grad_accum: int = 1
    seed: int = 0
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16
    device: str = "auto"
    save_every: int = 0  # optimizer steps between resume points; 0 = about 10 per run
    num_workers: int = 0
    cache_dir: Path | None = None

    def resolved(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """The hyperparameters in force: given > the base model's defaults > the paper's."""
        merged = {**PAPER, **{k: v for k, v in defaults.items() if k in PAPER}}
        for name in PAPER:
            if getattr(self, name) is not None:
                merged[name] = getattr(self, name)
        return merged


class Batch(NamedTuple):  # a tuple, so accelerate moves every field to the device
    pixels: Any  # [N, 3, H, W], every real image of the batch
    slots: Any  # [N] position of each image in the [B*K] grid
    mask: Any  # [B, K] True where an image is
    tokens: Any  # [B, context]
    chosen: Any  # [B]


class PreferenceDataset:
    """Examples -> (pixels of each image, prompt tokens, chosen index)."""

    def __init__(self, examples: Sequence[Example], clip: ClipModel) -> None:
        self.examples = list(examples)
        self.preprocess = clip.preprocess
        self.tokenizer = clip.tokenizer

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        import torch

        example = self.examples[index]
        pixels = torch.stack([self.preprocess(image) for image in example.open_images()])
        return pixels, self.tokenizer([example.prompt])[0], example.chosen


def collate(items: list[tuple[Any, Any, int]]) -> Batch:
    import torch

    width = max(pixels.shape[0] for pixels, _, _ in items)
    mask = torch.zeros(len(items), width, dtype=torch.bool)
    slots = []
    for row, (pixels, _, _) in enumerate(items):
        mask[row, : pixels.shape[0]] = True
        slots.extend(row * width + k for k in range(pixels.shape[0]))
    return Batch(
        pixels=torch.cat([pixels for pixels, _, _ in items]),
        slots=torch.tensor(slots),
        mask=mask,
        tokens=torch.stack([tokens for _, tokens, _ in items]),
        chosen=torch.tensor([chosen for _, _, chosen in items]),
    )


def batch_loss(model: Any, batch: Batch) -> Any:
    """The preference loss of one batch (model: open_clip CLIP, possibly wrapped by DDP)."""
    import torch

    image, text, scale = model(batch.pixels, batch.tokens)[:3]  # normalised, exp(scale)
    grid = torch.zeros(batch.mask.numel(), image.shape[-1], dtype=image.dtype, device=image.device)
    grid[batch.slots] = image
    grid = grid.view(*batch.mask.shape, -1)
    return preference_loss(group_logits(text, grid, batch.mask, scale), batch.chosen)


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


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on gains, biases, embeddings and the logit scale (as open_clip)."""
    decay, plain = [], []
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


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _mixed_precision(choice: str) -> str:
    import torch

    if choice != "auto":
        return choice
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def manifest_hash(data: PreferenceData) -> str | None:
    """The export's content hash, when the data came from a prefloop export."""
    for source in data.sources:
        try:
            manifest = json.loads((source.parent / "manifest.json").read_text("utf-8"))
            return manifest["content_hash"]["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def fit_hps(
    config: FitConfig,
    train: PreferenceData,
    test: PreferenceData | None = None,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Fine-tune ``config.base`` on ``train``; write the checkpoint folder; return it.

    ``on_step(step, loss)`` is called after each optimizer step (progress, tests).
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out = Path(config.out)
    if (out / "prefloop.json").is_file() and not (out / RESUME).exists():
        info = json.loads((out / "prefloop.json").read_text("utf-8"))
        if info.get("finished"):
            raise FitError(f"{out} already holds a trained model; choose a new folder")
    if len(train) == 0:
        raise FitError("the training data has no usable instances")

    accelerator = Accelerator(
        mixed_precision=_mixed_precision(config.mixed_precision),
        gradient_accumulation_steps=config.grad_accum,
        cpu=config.device == "cpu",
    )
    set_seed(config.seed)
    clip = load_clip(config.base, device="cpu", cache_dir=config.cache_dir)
    hyper = config.resolved(clip.info.get("training", {}))
    model = clip.model.train()
    trainable = set_trainable(model, hyper["unfreeze_vision"], hyper["unfreeze_text"])
    optimizer = torch.optim.AdamW(_param_groups(model, hyper["weight_decay"]), lr=hyper["lr"])
    per_step = hyper["batch_size"] * config.grad_accum * accelerator.num_processes
    steps_per_epoch = max(1, math.ceil(len(train) / per_step))
    total = max(1, math.ceil(hyper["epochs"] * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(hyper["warmup_steps"], total)
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    save_every = config.save_every or max(1, total // 10)

    state_path = out / RESUME / "state.pt"
    step, losses = 0, []
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if saved["hyper"] != hyper or saved["seed"] != config.seed or saved["n"] != len(train):
            raise FitError(
                f"{out} holds an unfinished run with other settings or data; "
                "resume it with the same ones, or choose a new folder"
            )
        accelerator.unwrap_model(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step, losses = saved["step"], saved["losses"]
        log.info("resuming %s at step %d of %d", out, step, total)

    dataset = PreferenceDataset(train.examples, clip)
    started = time.perf_counter()
    progress = _progress(total, step, accelerator.is_local_main_process)
    while step < total:
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        order = torch.randperm(
            len(dataset), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        ).tolist()
        order = order[done_in_epoch * per_step : min(len(order), steps_per_epoch * per_step)]
        loader = accelerator.prepare_data_loader(
            torch.utils.data.DataLoader(
                torch.utils.data.Subset(dataset, order),
                batch_size=hyper["batch_size"],
                collate_fn=collate,
                num_workers=config.num_workers,
            )
        )
        for batch in loader:
            with accelerator.accumulate(model), accelerator.autocast():
                loss = batch_loss(model, batch)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            value = float(accelerator.gather(loss.detach()).mean())
            losses.append(value)
            progress.update(1)
            progress.set_postfix(loss=f"{value:.4f}")
            if step % save_every == 0 and step < total:
                _save_state(accelerator, model, optimizer, scheduler, state_path, step, losses,
                            hyper, config, len(train))  # fmt: skip
            if on_step is not None:
                on_step(step, value)
            if step >= total:
                break
    progress.close()
    seconds = time.perf_counter() - started

    trained = accelerator.unwrap_model(model).eval()
    clip.model = trained
    metrics: dict[str, Any] = {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "steps": total,
        "seconds": seconds,
        "trainable_parameters": trainable,
    }
    if test is not None and len(test) and accelerator.is_main_process:
        from training.hps.evaluate import evaluate
        from training.hps.scorer import HPSScorer

        result = evaluate(HPSScorer(clip), test.examples, bootstrap=0)
        metrics["test_top1"] = result.top1
        metrics["test_pairwise"] = result.pairwise
    if accelerator.is_main_process:
        info = {
            "base": config.base,
            "dataset": {"instances": len(train), "manifest_content_hash": manifest_hash(train)},
            "hyperparameters": {**hyper, "grad_accum": config.grad_accum, "seed": config.seed,
                                "mixed_precision": accelerator.mixed_precision,
                                "processes": accelerator.num_processes},
            "metrics": metrics,
            "training": clip.info.get("training", {}),
            "finished": True,
        }  # fmt: skip
        save_checkpoint(clip, out, info)
        _remove_state(out)
    accelerator.wait_for_everyone()
    return out


def _progress(total: int, done: int, show: bool) -> Any:
    from tqdm.auto import tqdm

    # On a terminal only (disable=None): logs and tests get no bar.
    return tqdm(total=total, initial=done, desc="fit hps", unit="step",
                disable=None if show else True)  # fmt: skip


def _save_state(accelerator: Any, model: Any, optimizer: Any, scheduler: Any, path: Path,
                step: int, losses: list[float], hyper: dict[str, Any], config: FitConfig,
                n: int) -> None:  # fmt: skip
    """A resume point, written atomically by the main process."""
    import torch

    if not accelerator.is_main_process:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": accelerator.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "losses": losses,
        "hyper": hyper,
        "seed": config.seed,
        "n": n,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _remove_state(out: Path) -> None:
    import shutil

    shutil.rmtree(out / RESUME, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.hps.fit`` (or ``accelerate launch -m training.hps.fit``)."""
    parser = argparse.ArgumentParser(prog="training.hps.fit", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (export)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", default="ViT-L-14:openai")
    for name in PAPER:
        kind = float if name in {"lr", "weight_decay", "epochs"} else int
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "fp16", "bf16"])
    parser.add_argument("--strict", action="store_true", help="refuse malformed entries")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = FitConfig(
        out=args.out, base=args.base, grad_accum=args.grad_accum, seed=args.seed,
        mixed_precision=args.mixed_precision,
        **{name: getattr(args, name) for name in PAPER},
    )  # fmt: skip
    train = read_preferences(args.data, "train", strict=args.strict)
    test = read_preferences(args.data, "test", strict=args.strict)
    out = fit_hps(config, train, test)
    print(json.dumps(json.loads((out / "prefloop.json").read_text())["metrics"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
