"""The model commands of ``prefloop``: score images, train and evaluate the HPS model.

They read only dataset folders and model files (training/ does the work); ``eval`` also
looks up the active HPS in the database, when there is one, to compare against it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bot.cli_support import cli_settings, console, err, plain_errors

train_app = typer.Typer(help="Train models on an exported dataset.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate models on an exported dataset.", no_args_is_help=True)

Device = Annotated[str, typer.Option(help="auto (a GPU if there is one), cpu, cuda:N …")]
Source = Annotated[
    str,
    typer.Option(
        "--hps",
        help="A model: tiny, a checkpoint folder, an HPS v1/v2 file, or ARCH:TAG "
        "(e.g. ViT-L-14:openai).",
    ),
]


def _cache() -> Path:
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
        scorer = HPSScorer.load(hps, device=device, cache_dir=_cache())
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
) -> None:
    """Refit HPS on a dataset; an interrupted run resumes when started again.

    On several GPUs: accelerate launch -m training.hps.fit --data … --out … (same code).
    """
    from training.data import read_train_test
    from training.hps.fit import FitConfig, fit_hps

    config = FitConfig(
        out=out, base=base, lr=lr, epochs=epochs, batch_size=batch_size,
        weight_decay=weight_decay, warmup_steps=warmup_steps, unfreeze_vision=unfreeze_vision,
        unfreeze_text=unfreeze_text, grad_accum=grad_accum, seed=seed,
        mixed_precision=mixed_precision, device=device, cache_dir=_cache(),
    )  # fmt: skip
    with plain_errors():
        train, test = read_train_test(data, strict=strict)
        folder = fit_hps(config, train, test)
    metrics = json.loads((folder / "prefloop.json").read_text())["metrics"]
    held_out = (
        f"; held-out top-1 {metrics['test_top1']:.1%}"
        if metrics.get("test_top1") is not None
        else ""
    )
    console.print(
        f"trained {folder} on {len(train)} instances in {metrics['seconds']:.0f} s: loss "
        f"{metrics['train_loss_first']:.3f} -> {metrics['train_loss_last']:.3f}{held_out}",
        markup=False,
        highlight=False,
    )


@eval_app.command("hps")
def eval_hps(
    data: Annotated[Path, typer.Option(help="An exported dataset.")],
    hps: Source,
    vs: Annotated[list[str] | None, typer.Option(help="Other models to compare.")] = None,
    base: Annotated[
        str | None, typer.Option(help="The plain CLIP to compare (default: the model's base).")
    ] = None,
    split: Annotated[str, typer.Option(help="test, train or all.")] = "test",
    out: Annotated[Path, typer.Option(help="Where metrics.json, report.md and plots go.")] = (
        Path("hps-eval")
    ),
    active: Annotated[
        bool, typer.Option(help="Also compare the active HPS registered in the database.")
    ] = True,
    bootstrap: Annotated[int, typer.Option(help="Resamples for the 95% intervals.")] = 1000,
    device: Device = "auto",
) -> None:
    """Top-1 and pairwise accuracy against random, the base CLIP and the active HPS."""
    from training.data import read_preferences
    from training.hps import HPSScorer
    from training.hps.evaluate import evaluate, random_baseline, write_report

    with plain_errors():
        examples = read_preferences(data, split).examples  # type: ignore[arg-type]
        if not examples:
            raise FileNotFoundError(f"{data} has no {split} instances to evaluate on")
        scorer = HPSScorer.load(hps, device=device, cache_dir=_cache())
        models: list[tuple[str, str]] = [("HPS", hps)]
        plain = base or _base_of(scorer)
        if plain:
            models.append(("CLIP (base)", plain))
        if active and (registered := _active_hps()) and registered != hps:
            models.append(("active HPS", registered))
        models += [(f"vs {source}", source) for source in vs or []]
        results = [evaluate(scorer, examples, name="HPS", bootstrap=bootstrap)]
        for name, source in models[1:]:
            other = HPSScorer.load(source, device=device, cache_dir=_cache())
            results.append(evaluate(other, examples, name=name, bootstrap=bootstrap))
        for result, (_, source) in zip(results, models, strict=True):
            result.source = source  # as the user named it
        results.append(random_baseline(examples))
        write_report(out, results, data=str(data))
    table = Table(title=f"{len(examples)} {split} instances of {data}")
    for column in ("model", "source", "top-1", "95% CI", "pairwise"):
        table.add_column(column)
    for result in results:
        interval = f"{result.top1_ci[0]:.1%}–{result.top1_ci[1]:.1%}" if result.top1_ci else "exact"
        table.add_row(result.name, result.source, f"{result.top1:.1%}", interval,
                      f"{result.pairwise:.1%}")  # fmt: skip
    console.print(table)
    console.print(f"report: {out / 'report.md'}", markup=False, highlight=False)


def _base_of(scorer: Any) -> str | None:
    base = scorer.clip.info.get("base")
    if isinstance(base, str) and base.startswith("preset:"):
        return base.removeprefix("preset:")
    return base if isinstance(base, str) and base != scorer.source else None


def _active_hps() -> str | None:
    """The active HPS's location, from the database; None (with a note) when unavailable."""
    from bot.cli_support import active_model

    try:
        return active_model("hps")
    except Exception as error:  # no database is fine: the comparison is optional
        err.print(f"(no active HPS to compare: {error})", markup=False, highlight=False)
        return None
