"""A fixed "preference" for closed-loop tests: people like a red top-left corner.

The tiny preset draws four coloured quadrants, so how red the top-left corner is (the
red channel's mean over the top-left quarter of each side) varies a lot between seeds:
selection has something to choose between and adaptation something to learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def red_corner(image: Any) -> float:
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = pixels.shape[0] // 4, pixels.shape[1] // 4
    return float(pixels[:h, :w, 0].mean())


def redness(image: Any) -> float:
    """How red the whole image is: the red channel's mean minus the other two's."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    return float(pixels[..., 0].mean() - pixels[..., 1:].mean())


class RedCornerScorer:
    """Anything with ``score_groups`` can drive selection and evaluation."""

    source = "rule: red top-left corner"

    def score_groups(self, groups: Sequence[tuple[str, Sequence[Any]]]) -> list[list[float]]:
        return [[red_corner(image) for image in images] for _, images in groups]

    def score(self, images: Sequence[Any], prompt: str) -> list[float]:
        return self.score_groups([(prompt, images)])[0]


def generate_pool(generator: Any, prompts: Sequence[str], folder: Path, n: int = 4) -> list:
    """Images of each prompt from the base generator, saved as files: the selection pool."""
    from training.adapt.select import Group

    folder.mkdir(parents=True, exist_ok=True)
    groups = []
    for p, prompt in enumerate(prompts):
        made = generator.generate(prompt, [1000 * p + k for k in range(n)], steps=10)
        paths = []
        for k, image in enumerate(made.images):
            path = folder / f"{p}_{k}.png"
            image.save(path)
            paths.append(path)
        groups.append(Group(prompt, tuple(paths)))
    return groups


@dataclass
class Loop:
    """One closed loop's outcome: the adapter against the base on held-out prompts, served
    with its "Weird image." negative prompt and without it."""

    seed: int
    selected: int
    served: Any  # training.adapt.evaluate.AdaptEvaluation: as served, against the base
    bare: Any  # without the negative prompt, against the base
    learned: Any  # as served, against the base with the same negative prompt


def closed_loop(
    model: Path, base: Any, work: Path, seed: int, *, pool: int = 64, held_out: int = 20
) -> Loop:
    """The paper's loop in miniature, as one seed draws it: the rule scores a pool of
    ``pool`` prompts x 4 base images, selection takes the confident best and worst of each,
    a LoRA trains on the preset's defaults with ``seed``, and the adapted generator, with
    and without its negative prompt, and the base draw ``held_out`` prompts they never saw,
    on the same 4 seeds each.

    "Weird image." as a negative prompt moves even the base's images (guidance amplifies
    the difference between any two prompts), so the served adapter also meets the base
    served with that same negative prompt: what is left is what the loop learned.
    """
    from training.adapt.evaluate import evaluate_adapter
    from training.adapt.lora import AdaptConfig, adapt_generator
    from training.adapt.select import select
    from training.generator import Generator

    prompts = [f"a thing {1000 * seed + i}" for i in range(pool)]
    chosen = select(RedCornerScorer(), generate_pool(base, prompts, work / "pool"))
    config = AdaptConfig(out=work / "lora", base=str(model), cache_dir=model.parent, seed=seed)
    adapted = Generator.load(
        str(model),
        cache_dir=model.parent,
        device="cpu",
        safety_checker=False,
        adapter=adapt_generator(config, chosen),
    )

    def against(reference: Any) -> Any:
        return evaluate_adapter(
            reference,
            adapted,
            RedCornerScorer(),
            [f"held out prompt {i}" for i in range(held_out)],
            seeds_per_prompt=4,
            seed=1 + seed,
            steps=10,
            grid=0,
            bootstrap=500,
        )[0]

    served = against(base)  # as it serves: "Weird image." is the negative prompt
    prefix = adapted.negative_prefix
    plain_prefix, base.negative_prefix = base.negative_prefix, prefix
    try:
        learned = against(base)
    finally:
        base.negative_prefix = plain_prefix
    adapted.negative_prefix = ""
    bare = against(base)
    adapted.negative_prefix = prefix
    return Loop(seed, len(chosen), served, bare, learned)


def rule_pairs(groups: Sequence[Any]) -> list[Any]:
    """The rule as a person picking in each set: the reddest top-left corner is picked,
    and (as from an export's picks: training/adapt/dpo.py) it makes a pair with each
    image not picked."""
    from training.adapt.dpo import pairs_of_pick

    pairs = []
    for group in groups:
        scores = [red_corner(image) for image in group.images]
        pairs += pairs_of_pick(group.prompt, group.images, scores.index(max(scores)))
    return pairs


@dataclass
class DPOLoop:
    """One Diffusion-DPO closed loop's outcome on held-out prompts."""

    seed: int
    pairs: int
    served: Any  # AdaptEvaluation: the DPO adapter (no negative prompt) against the base
    against_lora: Any | None = None  # DPO against the LoRA served with "Weird image."
    lora: Any | None = None  # that LoRA, served, against the base


def dpo_loop(
    model: Path,
    base: Any,
    work: Path,
    seed: int,
    *,
    pool: int = 64,
    held_out: int = 20,
    lora: bool = False,
    **hyper: Any,
) -> DPOLoop:
    """:func:`closed_loop`'s world, learned with Diffusion-DPO: the rule picks in each set
    of the same pool (``pool`` prompts x 4 base images), every pick gives its pairs, the
    DPO adapter trains on the preset's defaults (or ``hyper``) with ``seed``, and meets
    the base on ``held_out`` prompts it never saw, on the same 4 seeds each. With ``lora``
    the HPS paper's LoRA also trains on the same pool (the rule selecting, as
    :func:`closed_loop`) and budget (steps, and images a step: a pair is two), and DPO
    meets it as it serves, with "Weird image." as its negative prompt; the LoRA meets the
    base too."""
    from training.adapt.dpo import DPOConfig, train_dpo
    from training.adapt.evaluate import evaluate_adapter
    from training.adapt.lora import AdaptConfig, adapt_generator
    from training.adapt.select import select
    from training.generator import Generator

    prompts = [f"a thing {1000 * seed + i}" for i in range(pool)]
    groups = generate_pool(base, prompts, work / "pool")
    pairs = rule_pairs(groups)
    config = DPOConfig(
        out=work / "dpo", base=str(model), cache_dir=model.parent, seed=seed, **hyper
    )

    def load(adapter: Path) -> Any:
        return Generator.load(
            str(model), cache_dir=model.parent, device="cpu", safety_checker=False, adapter=adapter
        )

    def compare(reference: Any, adapted: Any) -> Any:
        return evaluate_adapter(
            reference,
            adapted,
            RedCornerScorer(),
            [f"held out prompt {i}" for i in range(held_out)],
            seeds_per_prompt=4,
            seed=1 + seed,
            steps=10,
            grid=0,
            bootstrap=500,
        )[0]

    dpo = load(train_dpo(config, pairs))
    loop = DPOLoop(seed, len(pairs), compare(base, dpo))
    if lora:
        resolved = config.resolved()
        lora_config = AdaptConfig(
            out=work / "lora",
            base=str(model),
            cache_dir=model.parent,
            seed=seed,
            steps=resolved["steps"],
            batch_size=2 * resolved["batch_size"],
        )
        served = load(adapt_generator(lora_config, select(RedCornerScorer(), groups)))
        loop.against_lora = compare(served, dpo)
        loop.lora = compare(base, served)
    return loop
