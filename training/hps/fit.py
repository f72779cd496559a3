"""Refit HPS: fine-tune a CLIP so that each instance's picked image scores highest.

The paper's recipe by default (HPS v1, arXiv 2303.14420): the last 10 vision blocks and
the last 6 text blocks train (plus the final norms, projections and the logit scale),
AdamW with lr 1.7e-5 and weight decay 3.1e-3, 5 instances a batch, 1 epoch, a cosine
schedule. A preset or checkpoint may carry defaults of its own (``prefloop.json``'s
``training``): a toy CLIP pretrained for seconds needs far more steps at a far higher rate.

One entry point on one CPU, one GPU or many: ``python -m training fit-hps …``;
``accelerate launch -m training fit-hps …`` runs the same code data-parallel. On the CPU
a run is deterministic for its seed, and an interrupted run resumes from its last saved
step to the same result.

What it learns from (ties, "None are good" sets, control sets, the raters' reliability
weights) is ``FitConfig``'s objective: training/hps/examples.py.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from training.data import PreferenceData
from training.hps.batches import (
    PreferenceDataset,
    batch_loss,
    collate,
    param_groups,
    schedule,
    set_trainable,
)
from training.hps.examples import Objective, training_set
from training.hps.model import load_clip, save_checkpoint
from training.run_folder import (
    forget_resume_point,
    is_finished,
    load_resume_point,
    plain,
    progress_bar,
    save_resume_point,
    write_info,
)

log = logging.getLogger(__name__)

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
    # What it learns from (training/hps/examples.py): ties with a uniform target, "None
    # are good" sets as negatives, each instance weighted by its rater's reliability,
    # control sets included.
    ties: bool = True
    none_as_negatives: bool = False
    rater_weights: bool = True
    include_controls: bool = False

    def objective(self) -> Objective:
        return Objective(
            ties=self.ties,
            none_as_negatives=self.none_as_negatives,
            rater_weights=self.rater_weights,
            include_controls=self.include_controls,
        )

    def resolved(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """The hyperparameters in force: given > the base model's defaults > the paper's."""
        merged = {**PAPER, **{k: v for k, v in defaults.items() if k in PAPER}}
        for name in PAPER:
            if getattr(self, name) is not None:
                merged[name] = getattr(self, name)
        return merged


def _mixed_precision(choice: str, device: str) -> str:
    import torch

    if choice != "auto":
        return choice
    if device == "cpu" or not torch.cuda.is_available():
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
    from accelerate.utils import InitProcessGroupKwargs, set_seed

    out = Path(config.out)
    if is_finished(out):
        raise FitError(f"{out} already holds a trained model; choose a new folder")
    used = training_set(train, config.objective())
    if not used.examples:
        left = ", ".join(f"{n} {k}" for k, n in used.summary["left_out"].items() if n)
        raise FitError(
            "the training data has no usable instances" + (f" (left out: {left})" if left else "")
        )
    if not any(used.weights):
        raise FitError("every instance has rater weight 0: nothing to learn from")

    if config.device not in ("auto", "cpu", "cuda"):
        raise FitError(
            f"device {config.device!r}: use auto, cpu or cuda (pick GPUs with "
            "CUDA_VISIBLE_DEVICES, or several with accelerate launch)"
        )
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(config.mixed_precision, config.device),
        gradient_accumulation_steps=config.grad_accum,
        cpu=config.device == "cpu",
        step_scheduler_with_optimizer=False,  # we step it once per optimizer step
        # The main process evaluates at the end while the others wait: give it time.
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=3))],
    )
    set_seed(config.seed)
    clip = load_clip(config.base, device="cpu", cache_dir=config.cache_dir)
    hyper = config.resolved(clip.info.get("training", {}))
    model = clip.model.train()
    trainable = set_trainable(model, hyper["unfreeze_vision"], hyper["unfreeze_text"])
    optimizer = torch.optim.AdamW(param_groups(model, hyper["weight_decay"]), lr=hyper["lr"])
    per_step = hyper["batch_size"] * config.grad_accum * accelerator.num_processes
    steps_per_epoch = max(1, math.ceil(len(used.examples) / per_step))
    total = max(1, math.ceil(hyper["epochs"] * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(hyper["warmup_steps"], total))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    save_every = config.save_every or max(1, total // 10)

    # What must match for a resumed run to replay the same batches and steps.
    run = {
        "hyper": hyper,
        "seed": config.seed,
        "instances": len(used.examples),
        "objective": asdict(config.objective()),
        "grad_accum": config.grad_accum,
        "processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
    }
    step, losses = 0, []
    try:
        saved = load_resume_point(out)
    except ValueError as error:
        raise FitError(str(error)) from None
    if saved is not None:
        if saved["run"] != plain(run):
            raise FitError(
                f"{out} holds an unfinished run with other settings or data; "
                "resume it with the same ones, or choose a new folder"
            )
        accelerator.unwrap_model(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if accelerator.scaler is not None and saved.get("scaler"):
            accelerator.scaler.load_state_dict(saved["scaler"])
        step, losses = saved["step"], saved["losses"]
        log.info("resuming %s at step %d of %d", out, step, total)

    dataset = PreferenceDataset(used.examples, clip, used.weights)
    log.info("training on %s", _describe(used.summary))
    started = time.perf_counter()
    progress = progress_bar(total, step, accelerator.is_local_main_process, "fit hps")
    while step < total:
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        order = torch.randperm(
            len(dataset), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        ).tolist()
        order = order[done_in_epoch * per_step : min(len(order), steps_per_epoch * per_step)]
        loader = accelerator.prepare_data_loader(
            torch.utils.data.DataLoader(
                # torch types this as its Dataset class; any __getitem__ + __len__ will do, and
                # subclassing it would import torch with this module.
                torch.utils.data.Subset(dataset, order),  # type: ignore[arg-type]
                batch_size=hyper["batch_size"],
                collate_fn=collate,
                num_workers=config.num_workers,
            )
        )
        for batch in loader:
            with accelerator.accumulate(model), accelerator.autocast():
                loss = batch_loss(model, batch)
                accelerator.backward(loss)
                optimizer.step()  # a no-op until the last accumulated batch
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            value = float(accelerator.gather(loss.detach()).mean())
            losses.append(value)
            progress.update(1)
            progress.set_postfix(loss=f"{value:.4f}")
            if step % save_every == 0 and step < total:
                _save_state(accelerator, model, optimizer, scheduler, out, step, losses, run)
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
        "instances": used.summary["used"],
        "left_out": used.summary["left_out"],
        "rater_weights": used.summary["weights"],
    }
    if accelerator.is_main_process:
        info = {
            "base": config.base,
            "dataset": {**used.summary, "manifest_content_hash": manifest_hash(train)},
            "objective": asdict(config.objective()),
            "hyperparameters": {
                **hyper,
                "grad_accum": config.grad_accum,
                "seed": config.seed,
                "mixed_precision": accelerator.mixed_precision,
                "processes": accelerator.num_processes,
            },
            "metrics": metrics,
            "training": clip.info.get("training", {}),
            "finished": True,
        }
        save_checkpoint(clip, out, info)  # saved first: evaluation cannot lose the model
        forget_resume_point(out)
        from training.hps.evaluate import evaluate, judged

        if test is not None and (held_out := judged(test.examples)):
            from training.hps.scorer import HPSScorer

            result = evaluate(HPSScorer(clip), held_out, bootstrap=0)
            metrics.update(test_top1=result.top1, test_pairwise=result.pairwise)
            write_info(out, info)
    accelerator.wait_for_everyone()
    return out


def _describe(summary: dict[str, Any]) -> str:
    """ "120 instances (100 picks, 20 ties; left out: 5 none, 3 control); rater weights …"."""
    used = ", ".join(f"{n} {k}" for k, n in summary["used"].items() if n)
    left = ", ".join(f"{n} {k}" for k, n in summary["left_out"].items() if n)
    weights = summary["weights"]
    spread = (
        f"rater weights {weights['min']:.2f}-{weights['max']:.2f} (mean {weights['mean']:.2f})"
        if weights["mean"] is not None
        else "no weights"
    )
    applied = "applied" if weights["applied"] else "not applied"
    return (
        f"{summary['instances']} instances ({used}"
        + (f"; left out: {left}" if left else "")
        + f"); {spread}, {applied}"
    )


def _save_state(
    accelerator: Any,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    out: Path,
    step: int,
    losses: list[float],
    run: dict[str, Any],
) -> None:
    """A resume point, written atomically by the main process."""
    if not accelerator.is_main_process:
        return
    scaler = accelerator.scaler
    state = {
        "model": accelerator.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": step,
        "losses": losses,
        "run": plain(run),
    }
    save_resume_point(out, state)
