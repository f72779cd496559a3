"""training/'s command line: every entry point of the ML side, in one place.

    python -m training preset [NAME ...]        build presets into the cache ahead of use
    python -m training data PATH                read a dataset and say what is in it
    python -m training fit-hps --data … --out …  refit HPS on a dataset
    python -m training adapt --selection … --out …  fine-tune a LoRA on an HPS selection
    python -m training dpo --data … --out …     Diffusion-DPO on an export's picks
    python -m training gate hps|adapt|dpo …     a retrain stage: train, judge, write the gate

``fit-hps``, ``adapt``, ``dpo`` and ``gate`` run the same code under
``accelerate launch -m training …`` on several GPUs. The library modules keep no
command line of their own.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def preset(args: argparse.Namespace) -> int:
    """Build presets into the cache ahead of use (make test does, so no test waits)."""
    import time

    from training.presets import PRESET_VERSION, PRESETS, TINY, build_cached

    names = args.names or [TINY]
    if unknown := sorted(set(names) - set(PRESETS)):
        args.parser.error(f"no preset named {', '.join(unknown)} (presets: {', '.join(PRESETS)})")
    for name in names:
        started = time.perf_counter()
        folder, built = build_cached(name)
        took = f"built in {time.perf_counter() - started:.0f} s" if built else "already built"
        print(f"{name} preset v{PRESET_VERSION}: {took}, {folder}")
    return 0


def data(args: argparse.Namespace) -> int:
    """Read a dataset and say what is in it."""
    from training.data import VOTES, DatasetError, read_preferences

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        found = read_preferences(
            args.path, args.split, strict=args.strict, votes=VOTES, controls=True
        )
    except DatasetError as error:
        print(error, file=sys.stderr)
        return 1
    sizes: dict[int, int] = {}
    for example in found:
        sizes[len(example.images)] = sizes.get(len(example.images), 0) + 1
    per_split = {s: sum(e.split == s for e in found) for s in ("train", "test")}
    kinds = {v: sum(e.vote == v for e in found) for v in VOTES}
    weights = [e.weight for e in found]
    print(
        f"{len(found)} examples ({', '.join(f'{k} {v}' for k, v in per_split.items() if v)}); "
        f"images per example: {dict(sorted(sizes.items()))}; "
        f"{len(found.problems)} malformed entries skipped"
    )
    print(
        f"votes: {', '.join(f'{k} {v}' for k, v in kinds.items())}; "
        f"control sets {sum(e.control is not None for e in found)}; rater weights "
        + (f"{min(weights):.2f} to {max(weights):.2f}" if weights else "none")
    )
    return 0


def fit_hps(args: argparse.Namespace) -> int:
    """Refit HPS on a dataset; print the trained model's metrics."""
    from training.data import VOTES, read_train_test
    from training.hps.fit import PAPER, FitConfig
    from training.hps.fit import fit_hps as fit
    from training.run_folder import read_info

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = FitConfig(
        out=args.out,
        base=args.base,
        grad_accum=args.grad_accum,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        ties=args.ties,
        rater_weights=args.rater_weights,
        none_as_negatives=args.none_as_negatives,
        include_controls=args.include_controls,
        **{name: getattr(args, name) for name in PAPER},
    )
    train, test = read_train_test(args.data, strict=args.strict, votes=VOTES, controls=True)
    out = fit(config, train, test)
    print(json.dumps(read_info(out)["metrics"], indent=2))
    return 0


def adapt(args: argparse.Namespace) -> int:
    """Fine-tune a LoRA on a selection; print the adapter's metrics."""
    import hashlib

    from training.adapt.lora import PAPER, AdaptConfig, adapt_generator
    from training.adapt.select import read_manifest
    from training.run_folder import read_info

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = AdaptConfig(
        out=args.out,
        base=args.base,
        grad_accum=args.grad_accum,
        regularization=args.regularization,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        recipe=args.recipe,
        **{name: getattr(args, name) for name in PAPER},
    )
    text = args.selection.read_text("utf-8")
    config.selection_hash = hashlib.sha256(text.encode()).hexdigest()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.selection.resolve() != (args.out / "selection.jsonl").resolve():
        (args.out / "selection.jsonl").write_text(text, encoding="utf-8")
    out = adapt_generator(config, read_manifest(args.selection))
    print(json.dumps(read_info(out)["metrics"], indent=2))
    return 0


def dpo(args: argparse.Namespace) -> int:
    """Diffusion-DPO on an export's picks; print the adapter's metrics."""
    from training.adapt.dpo import PAPER, DPOConfig, dpo_from_export
    from training.run_folder import read_info

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = DPOConfig(
        out=args.out,
        base=args.base,
        grad_accum=args.grad_accum,
        full=args.full,
        rater_weights=args.rater_weights,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        device=args.device,
        cache_dir=args.cache,
        **{name: getattr(args, name) for name in PAPER},
    )
    out, _ = dpo_from_export(config, args.data)
    print(json.dumps(read_info(out)["metrics"], indent=2))
    return 0


def gate(args: argparse.Namespace) -> int:
    """A retrain stage: train a candidate, judge it, write the gate; print the gate."""
    from training.gate import adapt_stage, dpo_stage, hps_stage

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    common = {"cache": args.cache, "device": args.device, "seed": args.seed, "active": args.active}
    if args.stage == "hps":
        figures = hps_stage(args.data, args.out, start=args.start, base=args.base, **common)
    else:
        stage = adapt_stage if args.stage == "adapt" else dpo_stage
        figures = stage(
            args.data,
            args.out,
            hps=args.hps,
            generator=args.generator,
            steps=args.steps,
            seeds=args.seeds,
            limit=args.limit,
            eval_steps=args.eval_steps,
            **common,
        )
    print(json.dumps(figures))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every command and its options."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("preset", help=preset.__doc__, description=preset.__doc__)
    build.add_argument("names", nargs="*", metavar="NAME", help="default: tiny")
    build.set_defaults(run=preset, parser=build)

    read = commands.add_parser("data", help=data.__doc__, description=data.__doc__)
    read.add_argument("path", type=Path, help="export folder, HPD v2 folder or a JSON file")
    read.add_argument(
        "--split",
        choices=["train", "test", "all"],
        default="train",
        help="which file of a folder to read (HPD v2's test.json ranks images: not read)",
    )
    read.add_argument("--strict", action="store_true", help="refuse any malformed entry")
    read.set_defaults(run=data)

    _fit_hps_options(commands)
    _adapt_options(commands)
    _dpo_options(commands)
    _gate_options(commands)
    return parser


def _fit_hps_options(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.hps.fit import PAPER

    fit = commands.add_parser("fit-hps", help=fit_hps.__doc__, description=fit_hps.__doc__)
    fit.add_argument("--data", type=Path, required=True, help="dataset folder (export)")
    fit.add_argument("--out", type=Path, required=True)
    fit.add_argument("--base", default="ViT-L-14:openai")
    for name in PAPER:
        kind = float if name in {"lr", "weight_decay", "epochs"} else int
        fit.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    fit.add_argument("--grad-accum", type=int, default=1)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "fp16", "bf16"])
    fit.add_argument("--strict", action="store_true", help="refuse malformed entries")
    # What it learns from: training/hps/examples.py (prefloop train hps --help says more).
    for flag, default, text in (
        ("ties", True, "ties with an even target over the set's images"),
        ("rater-weights", True, "each vote weighted by its rater's reliability weight"),
        ("none-as-negatives", False, '"None are good" sets pushed below picked images'),
        ("include-controls", False, "control sets trained like ordinary ones"),
    ):
        fit.add_argument(
            f"--{flag}",
            action=argparse.BooleanOptionalAction,
            default=default,
            help=f"{text} (default: {'on' if default else 'off'})",
        )
    fit.set_defaults(run=fit_hps)


def _adapt_options(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.adapt.lora import PAPER, RECIPES

    lora = commands.add_parser("adapt", help=adapt.__doc__, description=adapt.__doc__)
    lora.add_argument("--selection", type=Path, required=True, help="selection .jsonl")
    lora.add_argument("--out", type=Path, required=True)
    lora.add_argument("--base", default="CompVis/stable-diffusion-v1-4")
    lora.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default=None,
        help="the paper's full-size settings by name (docs/reproducing.md); "
        "the options below, when given, override it",
    )
    for name in PAPER:
        kind = float if name in {"lr", "weight_decay"} else int
        lora.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    lora.add_argument("--grad-accum", type=int, default=1)
    lora.add_argument("--regularization", type=Path, default=None)
    lora.add_argument("--seed", type=int, default=0)
    lora.add_argument("--mixed-precision", default="auto")
    lora.set_defaults(run=adapt)


def _dpo_options(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.adapt.dpo import PAPER

    parser = commands.add_parser("dpo", help=dpo.__doc__, description=dpo.__doc__)
    parser.add_argument("--data", type=Path, required=True, help="an export (its picks)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", default="CompVis/stable-diffusion-v1-4")
    for name in PAPER:
        kind = float if name in {"beta", "lr", "weight_decay"} else int
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument(
        "--full", action="store_true", help="fine-tune every UNet weight, not a LoRA"
    )
    parser.add_argument(
        "--rater-weights",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each pair weighted by its voter's reliability weight (default: on)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=None, help="where models are kept")
    parser.set_defaults(run=dpo)


def _gate_options(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stage = commands.add_parser("gate", help=gate.__doc__, description=gate.__doc__)
    stage.set_defaults(run=gate)
    stages = stage.add_subparsers(dest="stage", required=True)
    hps = stages.add_parser("hps", help="fit and evaluate a candidate HPS")
    adapter = stages.add_parser("adapt", help="select, train and evaluate a candidate adapter")
    direct = stages.add_parser("dpo", help="train a Diffusion-DPO adapter on the picks, judge it")
    for each in (hps, adapter, direct):
        each.add_argument("--data", type=Path, required=True)
        each.add_argument("--out", type=Path, required=True)
        each.add_argument("--active", default=None)
        each.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "prefloop")
        each.add_argument("--device", default="auto")
        each.add_argument("--seed", type=int, default=0)
    hps.add_argument("--start", required=True, help="what to fine-tune from")
    hps.add_argument("--base", required=True, help="the plain CLIP every HPS must beat")
    adapter.add_argument("--hps", required=True, help="what selects and judges")
    direct.add_argument("--hps", required=True, help="what judges (DPO trains without it)")
    for each in (adapter, direct):
        each.add_argument("--generator", required=True)
        each.add_argument("--steps", type=int, default=None)
        each.add_argument("--seeds", type=int, default=4)
        each.add_argument("--limit", type=int, default=50)
        each.add_argument("--eval-steps", type=int, default=30)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
