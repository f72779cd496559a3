"""``prefloop eval``: the HPS model and the adapted generator on an exported dataset.

They read dataset folders and model files (training/ does the work); ``eval hps`` also
looks up the active HPS in the database, when there is one, to compare against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from bot.cli.support import console, err, plain_errors
from bot.cli.train import Device, Source, model_cache

if TYPE_CHECKING:
    from training.hps import HPSScorer

eval_app = typer.Typer(help="Evaluate models on an exported dataset.", no_args_is_help=True)


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
        scorer = HPSScorer.load(hps, device=device, cache_dir=model_cache())
        models: list[tuple[str, str]] = [("HPS", hps)]
        plain = base or _base_of(scorer)
        if plain:
            models.append(("CLIP (base)", plain))
        if active and (registered := _active_hps()) and registered != hps:
            models.append(("active HPS", registered))
        models += [(f"vs {source}", source) for source in vs or []]
        results = [evaluate(scorer, examples, name="HPS", bootstrap=bootstrap)]
        for name, source in models[1:]:
            other = HPSScorer.load(source, device=device, cache_dir=model_cache())
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
    """The adapted generator against its base, or another adapter (--vs: a DPO adapter
    against a LoRA, say), on held-out prompts with the same seeds: win rate, HPS gain."""
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
                model, adapter=adapter, cache_dir=model_cache(), device=device, safety_checker=False
            )

        adapted = load(adapter)
        # The base is the same pipeline with the adapter switched off (one copy in memory);
        # another adapter needs a pipeline of its own.
        plain = load(vs) if vs else adapted.base_view()
        scorer = HPSScorer.load(hps, device=device, cache_dir=model_cache())
        result, shown = evaluate_adapter(
            plain, adapted, scorer, texts, seeds_per_prompt=seeds, steps=steps
        )
        mine = f"{_method(info)} adapter"
        other = f"{_method(read_info(vs))} adapter" if vs else "base"
        description = (
            f"{mine} `{adapter}` on `{model}` against "
            + (f"the {other} `{vs}`" if vs else "the base")
            + f", scored by `{hps}`; each served with its own negative prompt, if any."
        )
        title = f"{mine} vs {other}"
        write_adapt_report(out, result, shown, description=description, title=title)
    low, high = result.difference_ci
    console.print(
        f"{result.prompts} prompts x {seeds} seeds: adapted wins {result.win_rate:.1%}; mean "
        f"HPS {result.base_mean:.3f} -> {result.adapted_mean:.3f} ({result.mean_difference:+.3f}, "
        f"95% CI {low:+.3f} to {high:+.3f}) against {other}; report: {out / 'report.md'}",
        markup=False,
        highlight=False,
    )


def _method(info: dict[str, Any]) -> str:
    """How an adapter was trained, from its prefloop.json (older ones: the LoRA)."""
    return {"lora": "LoRA", "dpo": "DPO"}.get(str(info.get("method", "lora")), "LoRA")


def _prompts(source: Path) -> list[str]:
    """The distinct test prompts of an export, or the lines of a text file."""
    if source.is_dir():
        from training.data import read_preferences

        examples = read_preferences(source, "test", check_files=False).examples
        return list(dict.fromkeys(e.prompt for e in examples))
    lines = source.read_text("utf-8").splitlines()
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))
