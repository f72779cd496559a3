"""The retrain loop's training stages, run as a subprocess by the platform's retrain job.

Each stage reads an exported dataset and model files, trains a candidate, evaluates it
against what serves now on the same held-out data, and writes the stage folder's gate
file (see training/run_folder.py) with the figures the platform's promotion gate decides
on: above all ``paired``, the candidate against what serves item by item on the same
held-out items (training/evidence.py). No database, no Discord: the job passes the
active versions' locations on the command line. A crash here fails the stage and leaves
the serving models alone.

    python -m training gate hps --data EXPORT --out DIR --start SRC --base CLIP [--active SRC]
    python -m training gate adapt --data EXPORT --out DIR --hps SRC --generator MODEL
                                  [--active ADAPTER] [--steps N] [--seeds N] [--limit N]
    python -m training gate dpo   (the same options)

The two adapter stages differ in how they train (``adapt``: HPS selects, the paper's LoRA
learns; ``dpo``: Diffusion-DPO learns from the picks themselves, HPS only judges) and
judge alike; the gate file says which (``method``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from training.evidence import paired
from training.run_folder import is_finished, read_info, write_gate

log = logging.getLogger(__name__)


def _figures(evaluation: Any) -> dict[str, Any]:
    return {
        "source": evaluation.source,
        "top1": evaluation.top1,
        "top1_ci": evaluation.top1_ci,
        "pairwise": evaluation.pairwise,
    }


def hps_stage(
    data: Path,
    out: Path,
    *,
    start: str,
    base: str,
    active: str | None,
    cache: Path,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Fit HPS from ``start``; evaluate it, ``active`` and the plain ``base`` on the test split."""
    from training.data import VOTES, DatasetError, read_train_test
    from training.hps import HPSScorer
    from training.hps.evaluate import evaluate, random_baseline, write_report
    from training.hps.fit import FitConfig, fit_hps

    # Every kind of vote: the fit's defaults choose (ties and rater weights in, "none"
    # and control sets out: training/hps/examples.py).
    train, test = read_train_test(data, votes=VOTES, controls=True)
    if test is None or not test.examples:
        raise DatasetError(f"{data} has no test instances: nothing to judge a new HPS by")
    model = out / "model"
    if not is_finished(model):
        fit_hps(
            FitConfig(out=model, base=start, seed=seed, device=device, cache_dir=cache), train, test
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return {}  # under accelerate launch: the main process evaluates
    examples = test.examples
    trained = read_info(model).get("dataset", {})
    results = []
    for name, source in (("candidate", str(model)), ("active", active), ("base", base)):
        if source is None:
            continue
        scorer = HPSScorer.load(source, device=device, cache_dir=cache)
        results.append(evaluate(scorer, examples, name=name, seed=seed))
        results[-1].source = source
        del scorer
    results.append(random_baseline(examples))
    write_report(out / "report", results, data=str(data))
    credit = {r.name: _top1_credits(r, examples) for r in results if r.name != "random"}
    serving = "active" if active is not None else "base"
    gate = {
        "stage": "hps",
        "model": str(model),
        "test_instances": len(examples),
        "train_instances": trained.get("instances", len(train.examples)),
        "trained_on": trained.get("used"),
        **{r.name: _figures(r) for r in results},
        "paired": _paired(credit["candidate"], credit[serving], serving, seed),
        "paired_base": _paired(credit["candidate"], credit["base"], "base", seed),
    }
    write_gate(out, gate)
    return gate


def adapt_stage(
    data: Path,
    out: Path,
    *,
    hps: str,
    generator: str,
    active: str | None,
    cache: Path,
    device: str = "auto",
    steps: int | None = None,
    seeds: int = 4,
    limit: int = 50,
    eval_steps: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """Select with ``hps``, train an adapter, and pit it against ``active`` (or the base)."""
    from training.adapt.lora import AdaptConfig
    from training.adapt.pipeline import Judging, readapt

    config = AdaptConfig(
        out=out / "adapter", base=generator, steps=steps, seed=seed, device=device, cache_dir=cache
    )
    judging = Judging(
        data=data, report=out / "report", active=active, seeds=seeds, limit=limit, steps=eval_steps
    )
    done = readapt(config, hps=hps, data=data, manifest=out / "selection.jsonl", judging=judging)
    if done.verdict is None:
        return {}  # under accelerate launch: the main process judges
    gate = {
        "stage": "adapter",
        "method": "lora",
        "model": str(done.adapter),
        "against": active or "base",
        "hps": hps,
        "selected": len(done.selection.items),
        "negatives": done.selection.negatives,
        **_judged(done.verdict, against=active or "base", seeds=seeds, seed=seed),
    }
    write_gate(out, gate)
    return gate


def dpo_stage(
    data: Path,
    out: Path,
    *,
    hps: str,
    generator: str,
    active: str | None,
    cache: Path,
    device: str = "auto",
    steps: int | None = None,
    seeds: int = 4,
    limit: int = 50,
    eval_steps: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """Train Diffusion-DPO on the export's picks, and pit it against ``active`` (or the
    base) as :func:`adapt_stage` does its LoRA; ``hps`` only judges."""
    from training.adapt.dpo import PAIRS, DPOConfig, dpo_from_export, read_pairs
    from training.adapt.pipeline import Judging, judge, load_scorer

    config = DPOConfig(
        out=out / "adapter", base=generator, steps=steps, seed=seed, device=device, cache_dir=cache
    )
    scorer = load_scorer(hps, config)  # a bad HPS fails before training
    manifest = out / PAIRS  # beside the adapter: it lists the picks' images and prompts
    if is_finished(config.out):  # the stage was restarted after training
        pairs = len(read_pairs(manifest))
    else:
        pairs = len(dpo_from_export(config, data, manifest=manifest)[1].pairs)
    if int(os.environ.get("RANK", "0")) != 0:
        return {}  # under accelerate launch: the main process judges
    judging = Judging(
        data=data, report=out / "report", active=active, seeds=seeds, limit=limit, steps=eval_steps
    )
    verdict = judge(config, config.out, scorer, judging, hps=hps)
    gate = {
        "stage": "adapter",
        "method": "dpo",
        "model": str(config.out),
        "against": active or "base",
        "hps": hps,
        "pairs": pairs,
        **_judged(verdict, against=active or "base", seeds=seeds, seed=seed),
    }
    write_gate(out, gate)
    return gate


def _judged(verdict: Any, *, against: str, seeds: int, seed: int) -> dict[str, Any]:
    """An adapter stage's figures from its verdict (training/adapt/pipeline.py's judge)."""
    result, tried = verdict.result, verdict.tried
    return {
        "prompts": result.prompts,
        "seeds_per_prompt": seeds,
        "win_rate": result.win_rate,
        "mean_difference": result.mean_difference,
        "difference_ci": list(result.difference_ci),
        "negative_prompt": verdict.negative_prompt,
        "tried": {
            k: {
                "win_rate": r.win_rate,
                "mean_difference": r.mean_difference,
                "difference_ci": list(r.difference_ci),
            }
            for k, r in tried.items()
        },
        # Per held-out prompt: the candidate's mean HPS minus the serving generator's, as
        # served; the better of the ways tried was kept, so the p-value pays for each.
        "paired": {
            "against": against,
            **paired(
                [row["adapted"] - row["base"] for row in result.per_prompt],
                tests=len(tried),
                seed=seed,
            ).to_dict(),
        },
    }


def _top1_credits(evaluation: Any, examples: Any) -> list[float]:
    """Each held-out pick's top-1 credit (as ``credits`` gives it) from the scores the
    evaluation kept: the picked image's, and the others' in order, one group per pick."""
    from training.hps.evaluate import credits

    picked, others = evaluation.picked_scores, evaluation.other_scores
    if len(picked) != len(examples):
        raise ValueError(f"{evaluation.name}: {len(picked)} scores for {len(examples)} picks")
    result, at = [], 0
    for example, score in zip(examples, picked, strict=True):
        rest = others[at : at + len(example.images) - 1]
        at += len(example.images) - 1
        result.append(credits([score, *rest], 0)[0])
    if at != len(others):
        raise ValueError(f"{evaluation.name}: the other images' scores do not add up")
    return result


def _paired(candidate: list[float], other: list[float], against: str, seed: int) -> dict[str, Any]:
    """The candidate's top-1 credit minus ``other``'s, pick by pick."""
    differences = [c - o for c, o in zip(candidate, other, strict=True)]
    return {"against": against, **paired(differences, seed=seed).to_dict()}
