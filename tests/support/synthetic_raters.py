"""Synthetic raters voting in the colour world: a hidden rule, careful raters and random
clickers, with control sets and shared sets, written as a prefloop export.

The hidden rule: a prompt names a colour ("a crimson cat"); the right image of a 4-image set
is the one of that colour (tests/support/colours.py's world). A **careful** rater picks
it with probability ``careful_accuracy`` (else another image at random); a **random
clicker** clicks a Pick button uniformly. Some sets are voted by several raters (shared
sets: agreement evidence), and each rater meets a few control sets (an image known worse,
half of them with the best one known too). The evidence is scored as bot/raters/evidence.py
scores it from the database and turned into weights by bot/raters/reliability.py; each
entry carries its rater's weight as ``rater_weight``, as ``prefloop export`` writes it.
Held-out test sets carry the hidden rule's answer.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bot.config import RaterSettings
from bot.raters.evidence import gather
from bot.raters.reliability import Population, fit_population
from tests.support.colours import COLOURS, THINGS

SET_SIZE = 4


@dataclass
class Simulation:
    folder: Path
    weights: dict[int, float]  # rater -> reliability weight
    random_raters: set[int]
    population: Population
    votes: int  # training votes on ordinary sets
    wrong: int  # of those, how many disagree with the hidden rule
    counts: dict[str, int] = field(default_factory=dict)

    def mean_weight(self, random: bool) -> float:
        chosen = [w for r, w in self.weights.items() if (r in self.random_raters) == random]
        return sum(chosen) / len(chosen)


def _image(rgb: tuple[int, int, int], rng: random.Random, path: Path, noise: int = 120) -> None:
    """A 32x32 image of one colour with ``noise`` pixels jittered (no two alike)."""
    import numpy as np

    pixels = np.empty((32, 32, 3), dtype=np.int16)
    pixels[:] = rgb
    draw = np.random.default_rng(rng.getrandbits(64))
    ys, xs = draw.integers(0, 32, noise), draw.integers(0, 32, noise)
    pixels[ys, xs] += draw.integers(-60, 61, (noise, 3), dtype=np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


class _Writer:
    def __init__(self, folder: Path, rng: random.Random) -> None:
        self.folder = folder
        self.rng = rng
        (folder / "preference_images").mkdir(parents=True, exist_ok=True)
        self.sets = 0

    def make_set(self, prompt: str, corrupted: bool = False) -> tuple[list[str], int, int | None]:
        """Write a set's images; (file paths, the right index, the corrupted index)."""
        colour = prompt.split()[1]
        others = self.rng.sample([c for c in COLOURS if c != colour], SET_SIZE - 1)
        right = self.rng.randrange(SET_SIZE)
        shown = [*others[:right], colour, *others[right:]]
        worse = self.rng.choice([k for k in range(SET_SIZE) if k != right]) if corrupted else None
        files = []
        for position, name in enumerate(shown):
            file = f"preference_images/{self.sets}_{position}.png"
            noise = 900 if position == worse else 120  # heavy noise: visibly worse
            _image(COLOURS[name], self.rng, self.folder / file, noise)
            files.append(file)
        self.sets += 1
        return files, right, worse


def simulate(
    folder: Path,
    *,
    raters: int = 20,
    random_share: float = 0.3,
    train_sets: int = 160,
    test_sets: int = 96,
    shared_share: float = 0.25,
    voters_per_shared_set: int = 3,
    controls_per_rater: int = 4,
    careful_accuracy: float = 0.9,
    seed: int = 0,
) -> Simulation:
    """Simulate the votes and write the export; return the raters' weights and counts."""
    rng = random.Random(seed)
    settings = RaterSettings()
    prompts = [f"a {c} {t}" for c in COLOURS for t in THINGS]
    rng.shuffle(prompts)
    held_out, train_prompts = prompts[: len(prompts) // 4], prompts[len(prompts) // 4 :]
    people = list(range(1, raters + 1))
    clickers = set(rng.sample(people, round(random_share * raters)))
    writer = _Writer(folder, rng)

    def vote(rater: int, right: int) -> int:
        if rater in clickers or rng.random() >= careful_accuracy:
            others = [k for k in range(SET_SIZE) if k != right] if rater not in clickers else []
            return rng.choice(others or list(range(SET_SIZE)))
        return right

    entries: list[dict[str, Any]] = []
    labels: dict[str, list[tuple[int, int]]] = defaultdict(list)  # generation -> votes
    control_rows: list[tuple[int, str, bool, float]] = []
    wrong = 0
    for number in range(train_sets):
        prompt = rng.choice(train_prompts)
        files, right, _ = writer.make_set(prompt)
        shared = rng.random() < shared_share
        voters = rng.sample(people, voters_per_shared_set) if shared else [rng.choice(people)]
        generation = f"g{number}"
        for rater in voters:
            picked = vote(rater, right)
            wrong += picked != right
            labels[generation].append((rater, picked))
            entries.append(_entry(generation, rater, prompt, files, picked))
    for rater in people:
        for k in range(controls_per_rater):
            prompt = rng.choice(train_prompts)
            files, right, worse = writer.make_set(prompt, corrupted=True)
            assert worse is not None
            best = right if k % 2 else None  # half marked with the known best as well
            picked = vote(rater, right)
            correct = picked != worse and (best is None or picked == best)
            chance = 1 / SET_SIZE if best is not None else (SET_SIZE - 1) / SET_SIZE
            generation = f"c{rater}-{k}"
            control_rows.append((rater, generation, correct, chance))
            control = {"control": "noise", "control_worse": worse, "control_best": best}
            entries.append({**_entry(generation, rater, prompt, files, picked), **control})
    shared_rows = []
    for generation, votes in labels.items():
        if len(votes) >= settings.min_votes:
            for rater, picked in votes:
                same = sum(p == picked for _, p in votes) - 1
                shared_rows.append((rater, generation, same / (len(votes) - 1), 1 / SET_SIZE))
    population = fit_population(
        gather(control_rows, shared_rows),
        prior_careful=settings.prior_careful,
        careful_accuracy=settings.careful_accuracy,
    )
    weights = {r: population.raters[r].weight if r in population.raters else 0.0 for r in people}
    for entry in entries:
        entry["rater_weight"] = weights[int(entry["user_hash"][1:])]
    test = []
    for number in range(test_sets):
        prompt = rng.choice(held_out)
        files, right, _ = writer.make_set(prompt)
        test.append(
            {"id": f"t{number}", "prompt": prompt, "file_path": files, "human_preference": right}
        )
    (folder / "preference_train.json").write_text(json.dumps(entries))
    (folder / "preference_test.json").write_text(json.dumps(test))
    votes = sum(len(v) for v in labels.values())
    counts = {
        "train_sets": train_sets,
        "votes": votes,
        "controls": len(control_rows),
        "shared_votes": len(shared_rows),
        "test_sets": test_sets,
    }
    return Simulation(folder, weights, clickers, population, votes, wrong, counts)


def _entry(
    generation: str, rater: int, prompt: str, files: list[str], picked: int
) -> dict[str, Any]:
    return {
        "id": f"{generation}-r{rater}",
        "prompt": prompt,
        "file_path": files,
        "human_preference": picked,
        "user_hash": f"r{rater}",
        "generation_id": generation,
        "vote": "pick",
    }


@dataclass
class Arm:
    """One fit's held-out top-1 credits (one per test set) against the hidden rule."""

    weighted: bool
    credits: list[float]

    @property
    def top1(self) -> float:
        return sum(self.credits) / len(self.credits)


def fit_both(simulation: Simulation, work: Path, *, seed: int, **options: Any) -> tuple[Arm, Arm]:
    """Fit the tiny HPS on the simulation's votes with and without the rater weights
    (same data, same seed, same everything else); score each on the held-out sets."""
    from training.data import read_train_test
    from training.hps import HPSScorer
    from training.hps.evaluate import credits
    from training.hps.fit import FitConfig, fit_hps

    train, test = read_train_test(simulation.folder, controls=True)
    assert test is not None
    held_out = test.examples  # picks only: the hidden rule's answers
    pixels: list[list[Any]] = []  # the held-out images, preprocessed once for both fits
    arms = []
    for weighted in (True, False):
        out = work / f"{'weighted' if weighted else 'unweighted'}-{seed}"
        config = FitConfig(
            out=out,
            base="tiny",
            seed=seed,
            device="cpu",
            save_every=10**9,  # no resume points: nothing here resumes
            cache_dir=work / "models",
            rater_weights=weighted,
            **options,
        )
        scorer = HPSScorer.load(str(fit_hps(config, train)), device="cpu")
        pixels = pixels or [[scorer.pixels(i) for i in e.images] for e in held_out]
        scored = scorer.score_groups(
            [(e.prompt, images) for e, images in zip(held_out, pixels, strict=True)]
        )
        got = [credits(s, e.chosen or 0)[0] for s, e in zip(scored, held_out, strict=True)]
        arms.append(Arm(weighted, got))
    return arms[0], arms[1]


# The regime the test and bench/rater_weights.py measure in (docs/operations.md gives the
# figures): four passes over the votes, the tiny preset's last vision block and its whole
# text tower training (the colour names are words its pretraining never showed it, so
# their embeddings must learn too), a fit of a few seconds.
FIT = {
    "epochs": 4.0,
    "batch_size": 16,
    "warmup_steps": 3,
    "unfreeze_vision": 1,
    "unfreeze_text": -1,
}


@dataclass
class Outcome:
    """Weighted against unweighted fits over several seeds."""

    seeds: list[int]
    weighted: list[Arm]
    unweighted: list[Arm]
    seconds: float

    def pooled(self, arms: list[Arm]) -> list[float]:
        return [credit for arm in arms for credit in arm.credits]

    def summary(self) -> dict[str, Any]:
        """Each arm's top-1 with a bootstrap 95% interval over all held-out sets, the
        paired difference (same sets, same seeds) with its interval and sign test, and
        the per-seed differences with a t interval over seeds."""
        from training.evidence import paired
        from training.hps.evaluate import bootstrap_interval

        result: dict[str, Any] = {"seeds": self.seeds, "seconds": self.seconds}
        for name, arms in (("weighted", self.weighted), ("unweighted", self.unweighted)):
            credits = self.pooled(arms)
            result[name] = {
                "top1": sum(credits) / len(credits),
                "interval": bootstrap_interval(credits, 2000, 1),
                "per_seed": [arm.top1 for arm in arms],
            }
        differences = [
            w - u
            for w, u in zip(self.pooled(self.weighted), self.pooled(self.unweighted), strict=True)
        ]
        result["paired"] = paired(differences, seed=1).to_dict()
        per_seed = [w.top1 - u.top1 for w, u in zip(self.weighted, self.unweighted, strict=True)]
        result["per_seed_difference"] = {
            "values": per_seed,
            "wins": sum(d > 0 for d in per_seed),
            "interval": t_interval(per_seed),
        }
        return result


def t_interval(values: list[float]) -> tuple[float, float]:
    """The 95% Student-t interval of the mean (at least 2 values)."""
    import statistics

    # two-sided 97.5% quantiles of Student's t, by degrees of freedom
    quantiles = {
        1: 12.706,
        2: 4.303,
        3: 3.182,
        4: 2.776,
        5: 2.571,
        6: 2.447,
        7: 2.365,
        8: 2.306,
        9: 2.262,
        10: 2.228,
        11: 2.201,
        12: 2.179,
        13: 2.160,
        14: 2.145,
        15: 2.131,
        16: 2.120,
        17: 2.110,
        18: 2.101,
        19: 2.093,
        20: 2.086,
    }
    n = len(values)
    mean, spread = statistics.mean(values), statistics.stdev(values) / math.sqrt(n)
    t = quantiles.get(n - 1, 1.96 + 2.5 / (n - 1))
    return mean - t * spread, mean + t * spread


def experiment(work: Path, seeds: list[int], **simulation: Any) -> Outcome:
    """Simulate, then fit weighted and unweighted, for each seed (FIT's regime)."""
    import time

    started = time.perf_counter()
    weighted, unweighted = [], []
    for seed in seeds:
        found = simulate(work / f"votes-{seed}", seed=seed, **simulation)
        w, u = fit_both(found, work, seed=seed, **FIT)
        weighted.append(w)
        unweighted.append(u)
    return Outcome(seeds, weighted, unweighted, time.perf_counter() - started)
