"""Select → adapt → judge: one re-adaptation of the generator, resumable in its folders.

:func:`readapt` selects with HPS (or keeps the selection an earlier try of the same
adapter was started with), trains the LoRA, and, when asked, judges it against what
serves now. ``prefloop train adapt`` runs the first two steps; the retrain's adapter
stage (training/gate.py) all three. The DPO stage judges its adapter the same way
(:func:`judge`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.run_folder import has_run, is_finished, read_info, write_info

if TYPE_CHECKING:
    from training.adapt.dpo import DPOConfig
    from training.adapt.evaluate import AdaptEvaluation
    from training.adapt.lora import AdaptConfig
    from training.adapt.select import Selected


@dataclass
class Selection:
    """What the adapter learns from, as its manifest (``selection.jsonl``) lists it."""

    items: list[Selected]
    digest: str  # the manifest's sha256, recorded with the adapter
    manifest: Path
    reused: bool  # the manifest an earlier try of this adapter was started with
    groups: int  # prompt groups in the pool it was chosen from (0 when reused)
    rejected: int = 0  # sets voted "None are good" whose images are negatives (0 when reused)

    @property
    def positives(self) -> int:
        return sum(s.label == "positive" for s in self.items)

    @property
    def negatives(self) -> dict[str, int]:
        """Negatives per source: "hps" (HPS's confident worst) and "none_vote" (sets
        people voted "None are good")."""
        from training.adapt.select import negatives_by_source

        return negatives_by_source(self.items)


@dataclass(frozen=True)
class Judging:
    """How a candidate is judged: on up to ``limit`` test prompts of ``data``, ``seeds``
    images a prompt at ``steps`` denoising steps, against ``active`` (an adapter folder)
    or the bare base; the report goes to ``report``."""

    data: Path
    report: Path
    active: str | None = None
    seeds: int = 4
    limit: int = 50
    steps: int = 30


@dataclass
class Verdict:
    """The candidate against what serves, served as it did best: with the negative
    prompt it learned, or without it."""

    result: AdaptEvaluation
    tried: dict[str, AdaptEvaluation]  # "with_negative_prompt", "without_negative_prompt"
    negative_prompt: str  # what it is served with ("" when dropping it did better)


@dataclass
class Adaptation:
    adapter: Path
    selection: Selection
    verdict: Verdict | None = None  # None: not judged, or not the main process


def readapt(
    config: AdaptConfig,
    *,
    hps: str,
    data: Path,
    manifest: Path,
    extra: Path | None = None,
    alpha: float = 2.0,
    min_group: int = 2,
    none_votes: bool = True,
    judging: Judging | None = None,
    on_selected: Callable[[Selection], None] | None = None,
) -> Adaptation:
    """Select with ``hps`` from the images of ``data`` (and ``extra``), train the adapter
    ``config`` describes (into ``config.out``), and judge it when ``judging`` is given.
    With ``none_votes`` the images of sets people voted "None are good" are negatives too.

    A folder trained in before, finished or not, keeps the selection in ``manifest`` it
    was started with. Without ``judging`` a finished adapter is an error (see
    :func:`adapt_generator`); with it, a finished adapter is judged: its stage was
    restarted after training. Under ``accelerate launch`` every process trains and the
    main one judges. ``on_selected`` hears of the selection before training starts.
    """
    from training.adapt.lora import adapt_generator
    from training.adapt.select import (
        pool_from_folder,
        read_manifest,
        rejected_negatives,
        select,
        sets_from_export,
        write_manifest,
    )
    from training.data import DatasetError

    adapter = Path(config.out)
    # Judging needs the scorer anyway: load it first, so a bad HPS fails before training.
    scorer = load_scorer(hps, config) if judging else None
    if manifest.is_file() and has_run(adapter):
        items = read_manifest(manifest)
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
        selection = Selection(items, digest, manifest, reused=True, groups=0)
    else:
        sets = sets_from_export(data)
        pool = sets.groups + (pool_from_folder(extra) if extra else [])
        scorer = scorer or load_scorer(hps, config)
        items = select(scorer, pool, alpha=alpha, min_group=min_group)
        if none_votes:
            items += rejected_negatives(scorer, sets.rejected)
        if not items:
            raise DatasetError(f"HPS {hps} is confident about no image of {data}: nothing to adapt")
        digest = write_manifest(items, manifest)
        selection = Selection(
            items,
            digest,
            manifest,
            reused=False,
            groups=len(pool),
            rejected=len(sets.rejected) if none_votes else 0,
        )
    if on_selected is not None:
        on_selected(selection)
    if judging is None and scorer is not None:
        scorer = None
        _free_memory()  # the generator needs it
    if not (judging and selection.reused and is_finished(adapter)):
        adapt_generator(replace(config, hps=hps, selection_hash=digest), selection.items)
    if judging is None or int(os.environ.get("RANK", "0")) != 0:
        return Adaptation(adapter, selection)
    assert scorer is not None
    return Adaptation(adapter, selection, judge(config, adapter, scorer, judging, hps=hps))


def judge(
    config: AdaptConfig | DPOConfig, adapter: Path, scorer: Any, judging: Judging, *, hps: str
) -> Verdict:
    """Pit ``adapter`` (on ``config.base``) against what serves, with its learned negative
    prompt and without; it keeps the negative prompt only when that measurably does better
    (its info then says it was dropped). An adapter with no negative prompt (a DPO one)
    is judged as it is. Writes the report."""
    from training.adapt.evaluate import evaluate_adapter, write_adapt_report
    from training.data import DatasetError, read_preferences
    from training.generator import Generator

    test = read_preferences(judging.data, "test", check_files=False).examples
    prompts = list(dict.fromkeys(e.prompt for e in test))[: judging.limit]
    if not prompts:
        raise DatasetError(f"{judging.data} has no test prompts to judge a new adapter by")

    def load(adapter: Path) -> Generator:
        return Generator.load(
            config.base,
            adapter=adapter,
            cache_dir=config.models(),
            device=config.device,
            safety_checker=False,
        )

    adapted = load(adapter)
    # What serves now makes the same images in both comparisons below: make them once.
    active = judging.active
    plain = _Remembered(load(Path(active)) if active else adapted.base_view())
    # Served as trained ("Weird image." as the negative prompt) and without it.
    learned = adapted.negative_prefix
    tried = {}
    for label, prefix in (("with_negative_prompt", learned), ("without_negative_prompt", "")):
        if label == "with_negative_prompt" and not learned:
            continue
        adapted.negative_prefix = prefix
        tried[label] = evaluate_adapter(
            plain,
            adapted,
            scorer,
            prompts,
            seeds_per_prompt=judging.seeds,
            steps=judging.steps,
            seed=config.seed + 1,
        )
    best = max(tried, key=lambda k: (tried[k][0].win_rate, tried[k][0].mean_difference))
    result, shown = tried[best]
    if best == "without_negative_prompt" and learned:
        info = read_info(adapter)
        info["negative_prompt"] = ""
        info["negative_prompt_dropped"] = {
            "prompt": learned,
            "why": "it did worse on held-out prompts; see the retrain's report",
        }
        write_info(adapter, info)
    against = f"the active adapter `{active}`" if active else "the base"
    served = (
        f'"{learned}" as the negative prompt' if best.startswith("with_") else "no negative prompt"
    )
    write_adapt_report(
        judging.report,
        result,
        shown,
        description=f"Candidate `{adapter}` against {against}, HPS `{hps}`, served with {served}.",
    )
    return Verdict(
        result=result,
        tried={label: evaluation for label, (evaluation, _) in tried.items()},
        negative_prompt=learned if best.startswith("with_") else "",
    )


def load_scorer(hps: str, config: AdaptConfig | DPOConfig) -> Any:
    from training.hps import HPSScorer

    return HPSScorer.load(hps, device=config.device, cache_dir=config.cache_dir)


class _Remembered:
    """A generator that makes each (prompt, seeds, settings) once and remembers it."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.made: dict[Any, Any] = {}

    def generate(self, prompt: str, seeds: list[int], **options: Any) -> Any:
        key = (prompt, tuple(seeds), tuple(sorted(options.items())))
        if key not in self.made:
            self.made[key] = self.generator.generate(prompt, seeds, **options)
        return self.made[key]


def _free_memory() -> None:
    """Give the HPS model's memory back before the generator needs it."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - training needs torch anyway
        pass
