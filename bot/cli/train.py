"""The model commands of ``prefloop``: score images, train and evaluate the HPS model.

They read only dataset folders and model files (training/ does the work); ``eval`` also
looks up the active HPS in the database, when there is one, to compare against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from bot.cli.support import cli_settings, console, err, plain_errors

if TYPE_CHECKING:
    from training.hps import HPSScorer

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
        cache_dir=_cache(),
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
    """Top-1 and pairwise accuracy against random, the base CLIP and the active HPS, and
    the ceiling people set: how often one member's vote predicts another's on the sets
    several voted on."""
    from training.data import VOTES, DatasetError, is_split, read_preferences
    from training.hps import HPSScorer
    from training.hps.evaluate import (
        ceiling_line,
        evaluate,
        human_ceiling,
        judged,
        random_baseline,
        write_report,
    )

    with plain_errors():
        if not is_split(split):
            raise DatasetError(f"unknown split {split!r}: use test, train or all")
        votes = read_preferences(data, split, votes=VOTES).examples
        examples = judged(votes)
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
        ceiling = human_ceiling(votes)
        if ceiling.picks:
            ceiling.model_top1 = evaluate(scorer, ceiling.picks, bootstrap=0).top1
        write_report(out, results, data=str(data), ceiling=ceiling)
    table = Table(title=f"{len(examples)} {split} instances of {data}")
    for column in ("model", "source", "top-1", "95% CI", "pairwise"):
        table.add_column(column)
    for result in results:
        interval = f"{result.top1_ci[0]:.1%}–{result.top1_ci[1]:.1%}" if result.top1_ci else "exact"
        table.add_row(
            result.name, result.source, f"{result.top1:.1%}", interval, f"{result.pairwise:.1%}"
        )
    console.print(table)
    console.print(ceiling_line(ceiling), markup=False, highlight=False)
    console.print(f"report: {out / 'report.md'}", markup=False, highlight=False)


def _base_of(scorer: HPSScorer) -> str | None:
    base = scorer.clip.info.get("base")
    if isinstance(base, str) and base.startswith("preset:"):
        return base.removeprefix("preset:")
    return base if isinstance(base, str) and base != scorer.source else None


def _active_hps() -> str | None:
    """The active HPS's location, from the database; None (with a note) when unavailable."""
    from bot.cli.support import active_model

    try:
        return active_model("hps")
    except Exception as error:  # no database is fine: the comparison is optional
        err.print(f"(no active HPS to compare: {error})", markup=False, highlight=False)
        return None


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
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default 4).")] = None,
    lr: Annotated[float | None, typer.Option(help="Default 1e-5, constant.")] = None,
    steps: Annotated[int | None, typer.Option(help="Default 1000.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default 4.")] = None,
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
        cache_dir=_cache(),
    )
    with plain_errors():
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


@eval_app.command("adapt")
def eval_adapt(
    prompts: Annotated[
        Path, typer.Option(help="An export (its test prompts) or a file of prompts, one a line.")
    ],
    adapter: Annotated[Path, typer.Option(help="The adapter folder to evaluate.")],
    hps: Source,
    vs: Annotated[
        Path | None, typer.Option(help="Compare against this adapter instead of the base.")
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="The generator (default: the adapter's base).")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Images per prompt, same seeds for both.")] = 4,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 30,
    limit: Annotated[int, typer.Option(help="At most this many prompts.")] = 100,
    out: Annotated[Path, typer.Option(help="Where metrics.json, report.md, grid.png go.")] = (
        Path("adapt-eval")
    ),
    device: Device = "auto",
) -> None:
    """The adapted generator against its base on held-out prompts: win rate, HPS gain."""
    from training.adapt.evaluate import evaluate_adapter, write_adapt_report
    from training.data import DatasetError
    from training.generator import Generator
    from training.hps import HPSScorer
    from training.run_folder import read_info

    with plain_errors():
        texts = _prompts(prompts)[:limit]
        info = read_info(adapter)
        model = base or info.get("base")
        if not model:
            raise FileNotFoundError(f"{adapter} names no base model: pass --base")
        if not texts:
            raise DatasetError(f"{prompts} holds no prompts to evaluate on")

        def load(adapter: Path) -> Generator:
            return Generator.load(
                model, adapter=adapter, cache_dir=_cache(), device=device, safety_checker=False
            )

        adapted = load(adapter)
        # The base is the same pipeline with the adapter switched off (one copy in memory);
        # another adapter needs a pipeline of its own.
        plain = load(vs) if vs else adapted.base_view()
        scorer = HPSScorer.load(hps, device=device, cache_dir=_cache())
        result, shown = evaluate_adapter(
            plain, adapted, scorer, texts, seeds_per_prompt=seeds, steps=steps
        )
        against = f"adapter `{vs}`" if vs else "the base"
        description = f"Adapter `{adapter}` on `{model}` against {against}, scored by `{hps}`."
        write_adapt_report(out, result, shown, description=description)
    low, high = result.difference_ci
    console.print(
        f"{result.prompts} prompts x {seeds} seeds: adapted wins {result.win_rate:.1%}; mean "
        f"HPS {result.base_mean:.3f} -> {result.adapted_mean:.3f} ({result.mean_difference:+.3f}, "
        f"95% CI {low:+.3f} to {high:+.3f}); report: {out / 'report.md'}",
        markup=False,
        highlight=False,
    )


def _prompts(source: Path) -> list[str]:
    """The distinct test prompts of an export, or the lines of a text file."""
    if source.is_dir():
        from training.data import read_preferences

        examples = read_preferences(source, "test", check_files=False).examples
        return list(dict.fromkeys(e.prompt for e in examples))
    lines = source.read_text("utf-8").splitlines()
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))
