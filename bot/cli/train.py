"""The model commands of ``prefloop``: score images, train HPS and the adapter (the HPS
paper's LoRA, or Diffusion-DPO from the picks; ``eval`` is in bot/cli/evaluate.py).

They read only dataset folders and model files (training/ does the work).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from bot.cli.support import cli_settings, console, plain_errors

if TYPE_CHECKING:
    pass

train_app = typer.Typer(help="Train models on an exported dataset.", no_args_is_help=True)

Device = Annotated[str, typer.Option(help="auto (a GPU if there is one), cpu, cuda:N …")]
Source = Annotated[
    str,
    typer.Option(
        "--hps",
        help="A model: tiny, a checkpoint folder, an HPS v1/v2 file, or ARCH:TAG "
        "(e.g. ViT-L-14:openai).",
    ),
]


def model_cache() -> Path:
    """Where model downloads and presets are kept (``<data_dir>/models``)."""
    return cli_settings().data_dir / "models"


def score(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The prompt they were made for.")],
    hps: Source = "ViT-L-14:openai",
    device: Device = "auto",
) -> None:
    """Score images for a prompt: HPS = 100 · cos(image, prompt)."""
    from training.hps import HPSScorer

    with plain_errors():
        for image in images:
            if not image.is_file():
                raise FileNotFoundError(f"{image} does not exist")
        scorer = HPSScorer.load(hps, device=device, cache_dir=model_cache())
        scores = scorer.score(images, prompt)
    best = max(range(len(scores)), key=scores.__getitem__)
    table = Table(title=f"HPS ({scorer.source}) for {prompt!r}")
    for column in ("#", "image", "score", ""):
        table.add_column(column)
    for i, (image, value) in enumerate(zip(images, scores, strict=True)):
        table.add_row(str(i + 1), str(image), f"{value:.2f}", "best" if i == best else "")
    console.print(table)


@train_app.command("hps")
def train_hps(
    data: Annotated[Path, typer.Option(help="An exported dataset (HPS v1 layout).")],
    out: Annotated[Path, typer.Option(help="Folder for the trained model (new, or to resume).")],
    base: Annotated[str, typer.Option(help="What to fine-tune (a model source).")] = (
        "ViT-L-14:openai"
    ),
    lr: Annotated[float | None, typer.Option(help="Default 1.7e-5, or the base's.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Default 1, or the base's.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Instances a step; default 5.")] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    warmup_steps: Annotated[int | None, typer.Option()] = None,
    unfreeze_vision: Annotated[
        int | None, typer.Option(help="Last N vision blocks train (default 10; -1 all).")
    ] = None,
    unfreeze_text: Annotated[
        int | None, typer.Option(help="Last M text blocks train (default 6; -1 all).")
    ] = None,
    grad_accum: Annotated[int, typer.Option(help="Batches per optimizer step.")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    mixed_precision: Annotated[str, typer.Option(help="auto, no, fp16 or bf16.")] = "auto",
    device: Device = "auto",
    strict: Annotated[bool, typer.Option(help="Refuse malformed dataset entries.")] = False,
    ties: Annotated[
        bool,
        typer.Option(
            help='"No favourite" votes train with an even target over the set\'s images '
            "(PickScore's recipe); --no-ties leaves them out."
        ),
    ] = True,
    rater_weights: Annotated[
        bool,
        typer.Option(
            help="Weight each vote's loss by its rater's reliability weight (the export's "
            "rater_weight: near 0 for a proven random clicker, near 1 for a careful rater), "
            "divided by the mean weight so the loss keeps its scale. No effect when every "
            "weight is equal."
        ),
    ] = True,
    none_as_negatives: Annotated[
        bool,
        typer.Option(
            help='Train on "None are good" sets: push their images\' scores below the '
            "batch's picked images' (left out by default)."
        ),
    ] = False,
    include_controls: Annotated[
        bool,
        typer.Option(
            help="Train on control sets too (left out by default: one image is "
            "corrupted on purpose)."
        ),
    ] = False,
) -> None:
    """Refit HPS on a dataset; an interrupted run resumes when started again.

    On several GPUs: accelerate launch -m training fit-hps --data … --out … (same code).
    """
    from training.data import VOTES, read_train_test
    from training.hps.fit import FitConfig, fit_hps
    from training.run_folder import read_info

    config = FitConfig(
        out=out,
        base=base,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        unfreeze_vision=unfreeze_vision,
        unfreeze_text=unfreeze_text,
        grad_accum=grad_accum,
        seed=seed,
        mixed_precision=mixed_precision,
        device=device,
        cache_dir=model_cache(),
        ties=ties,
        rater_weights=rater_weights,
        none_as_negatives=none_as_negatives,
        include_controls=include_controls,
    )
    with plain_errors():
        train, test = read_train_test(data, strict=strict, votes=VOTES, controls=True)
        folder = fit_hps(config, train, test)
    info = read_info(folder)
    metrics = info["metrics"]
    held_out = (
        f"; held-out top-1 {metrics['test_top1']:.1%}"
        if metrics.get("test_top1") is not None
        else ""
    )
    console.print(
        f"trained {folder} on {info['dataset']['instances']} instances in "
        f"{metrics['seconds']:.0f} s: loss "
        f"{metrics['train_loss_first']:.3f} -> {metrics['train_loss_last']:.3f}{held_out}",
        markup=False,
        highlight=False,
    )
    console.print(_used(info["dataset"]), markup=False, highlight=False)


def _used(dataset: dict[str, Any]) -> str:
    """What the fit trained on: each kind used and left out, and the rater weights."""
    used = ", ".join(f"{n} {kind}" for kind, n in dataset["used"].items() if n)
    left = ", ".join(f"{n} {kind}" for kind, n in dataset["left_out"].items() if n)
    weights = dataset["weights"]
    line = f"used: {used or 'nothing'}; left out: {left or 'nothing'}"
    if weights["mean"] is None:
        return line
    applied = (
        f"applied (effective instances {weights['effective_instances']:.0f})"
        if weights["applied"]
        else "not applied"
    )
    return (
        f"{line}; rater weights {weights['min']:.2f} to {weights['max']:.2f} "
        f"(mean {weights['mean']:.2f}), {applied}"
    )


@train_app.command("adapt")
def train_adapt(
    data: Annotated[Path, typer.Option(help="An exported dataset: every image is in the pool.")],
    hps: Source,
    out: Annotated[Path, typer.Option(help="Folder for the LoRA adapter (new, or to resume).")],
    base: Annotated[str, typer.Option(help="The generator (hub id, folder or tiny).")] = (
        "CompVis/stable-diffusion-v1-4"
    ),
    extra: Annotated[
        Path | None, typer.Option(help="More pool images: x.png with its prompt in x.txt.")
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="Selection confidence: probability > alpha/n.")
    ] = 2.0,
    min_group: Annotated[int, typer.Option(help="Smallest prompt group selected from.")] = 2,
    none_votes: Annotated[
        bool,
        typer.Option(
            help='Every image of a set voted "None are good" (and neither picked nor tied '
            "by anyone) is a negative, whatever HPS thinks of it."
        ),
    ] = True,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="The paper's full-size settings by name: hps-script (the released script's: "
            "rank 4, lr 1e-5 constant, weight decay 1e-2, 10,000 steps of 40) or "
            "hps-paper-text (the same at rank 32); --rank, --lr, --steps and --batch-size, "
            "when given, override it (docs/reproducing.md)."
        ),
    ] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default 4).")] = None,
    lr: Annotated[float | None, typer.Option(help="Default 1e-5, constant.")] = None,
    steps: Annotated[int | None, typer.Option(help="Default 1000.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default 4 (per process).")] = None,
    grad_accum: Annotated[int, typer.Option()] = 1,
    regularization: Annotated[
        Path | None, typer.Option(help="Regularisation pairs: x.png with its caption in x.txt.")
    ] = None,
    regularization_ratio: Annotated[float, typer.Option()] = 0.5,
    seed: Annotated[int, typer.Option()] = 0,
    mixed_precision: Annotated[str, typer.Option(help="auto, no, fp16 or bf16.")] = "auto",
    device: Device = "auto",
) -> None:
    """Select HPS-confident positives and negatives (and the images of sets voted "None
    are good"), then fine-tune a LoRA on them.

    On several GPUs: accelerate launch -m training adapt --selection OUT/selection.jsonl …
    """
    from training.adapt.lora import AdaptConfig
    from training.adapt.pipeline import Selection, readapt
    from training.run_folder import read_info

    def selected(selection: Selection) -> None:
        if selection.reused:  # an unfinished (or finished) run: the selection it started with
            line = f"using the selection in {selection.manifest}"
        else:
            negatives = selection.negatives
            line = (
                f"selected {selection.positives} positives and "
                f"{len(selection.items) - selection.positives} negatives "
                f"({negatives['hps']} by HPS, {negatives['none_vote']} from "
                f'{selection.rejected} sets voted "None are good") '
                f"from {selection.groups} prompt groups: {selection.manifest}"
            )
        console.print(line, markup=False, highlight=False)

    config = AdaptConfig(
        out=out,
        base=base,
        rank=rank,
        lr=lr,
        steps=steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        regularization=regularization,
        regularization_ratio=regularization_ratio,
        seed=seed,
        mixed_precision=mixed_precision,
        device=device,
        cache_dir=model_cache(),
        recipe=recipe,
    )
    with plain_errors():
        config.resolved()  # an unknown recipe fails here, before selection scores the pool
        done = readapt(
            config,
            hps=hps,
            data=data,
            manifest=out / "selection.jsonl",
            extra=extra,
            alpha=alpha,
            min_group=min_group,
            none_votes=none_votes,
            on_selected=selected,
        )
    folder = done.adapter
    metrics = read_info(folder)["metrics"]
    console.print(
        f"adapter {folder}: {metrics['steps']} steps in {metrics['seconds']:.0f} s; loss on a "
        f"fixed batch {metrics['fixed_batch_loss_before']:.4f} -> "
        f"{metrics['fixed_batch_loss_after']:.4f}",
        markup=False,
        highlight=False,
    )


@train_app.command("dpo")
def train_dpo(
    data: Annotated[Path, typer.Option(help="An exported dataset: its picks are the pairs.")],
    out: Annotated[Path, typer.Option(help="Folder for the adapter (new, or to resume).")],
    base: Annotated[str, typer.Option(help="The generator (hub id, folder or tiny).")] = (
        "CompVis/stable-diffusion-v1-4"
    ),
    beta: Annotated[
        float | None,
        typer.Option(
            help="How far from the base it may move (the paper's 5000 at SD scale; the tiny "
            "preset's 200). diffusers' research example's --beta_dpo is half of it."
        ),
    ] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default 8).")] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="Default 1e-5, constant (--full: 1e-8 for each pair of a step)."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Default 1000.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs a step (per process); 16.")] = None,
    grad_accum: Annotated[int, typer.Option()] = 1,
    full: Annotated[
        bool,
        typer.Option(
            help="Fine-tune every UNet weight against a frozen copy, not a LoRA; the output "
            "is then a whole generator folder (serve it as PREFLOOP_GENERATOR__MODEL)."
        ),
    ] = False,
    rater_weights: Annotated[
        bool, typer.Option(help="Weight each pair by its voter's reliability weight.")
    ] = True,
    seed: Annotated[int, typer.Option()] = 0,
    mixed_precision: Annotated[str, typer.Option(help="auto, no, fp16 or bf16.")] = "auto",
    device: Device = "auto",
) -> None:
    """Diffusion-DPO straight from the picks: each picked image against every image not
    picked in its set ("No favourite" and "None are good" give no pair); no HPS needed.

    On several GPUs: accelerate launch -m training dpo --data … --out … (same code).
    """
    from training.adapt.dpo import DPOConfig, Pairs, dpo_from_export
    from training.run_folder import read_info

    def found(pairs: Pairs) -> None:
        if not pairs.picks:  # an unfinished (or finished) run: the pairs it started with
            line = f"using the {len(pairs.pairs)} pairs in {out}"
        else:
            left = ", ".join(f"{n} {kind}" for kind, n in pairs.left_out.items() if n)
            line = f"{len(pairs.pairs)} pairs from {pairs.picks} picks" + (
                f" (no pair from: {left})" if left else ""
            )
        console.print(line, markup=False, highlight=False)

    config = DPOConfig(
        out=out,
        base=base,
        beta=beta,
        rank=rank,
        lr=lr,
        steps=steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        full=full,
        rater_weights=rater_weights,
        seed=seed,
        mixed_precision=mixed_precision,
        device=device,
        cache_dir=model_cache(),
    )
    with plain_errors():
        folder, _ = dpo_from_export(config, data, on_pairs=found)
    info = read_info(folder)
    metrics = info["metrics"]
    console.print(
        f"DPO {'model' if full else 'adapter'} {folder}: {metrics['steps']} steps in "
        f"{metrics['seconds']:.0f} s, beta {info['hyperparameters']['beta']:g}; loss on a "
        f"fixed batch of pairs {metrics['fixed_batch_loss_before']:.4f} -> "
        f"{metrics['fixed_batch_loss_after']:.4f}, the winner preferred over the base on "
        f"{metrics['fixed_batch_preferred_after']:.0%}",
        markup=False,
        highlight=False,
    )
