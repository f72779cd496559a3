"""The closed loop on the tiny preset, over several seeds of the whole loop (issue 16).

Each seed runs tests/support/red_corner.py's closed_loop: a fixed rule (a red top-left
corner) stands in for people and scores a pool of base images, selection keeps the
confident best and worst, a LoRA trains on them, and the adapted generator, served with
its "Weird image." negative prompt and without it, meets the base on held-out prompts
with the same seeds, and, served, also the base given the same negative prompt (what the
loop learned, beyond what the prompt alone does). Printed per seed and over all: the win
rate over held-out prompts (Wilson 95% interval over every prompt of every seed), the mean
gain in red (of 255) with a t interval over seeds, and the paired difference between the
two ways of serving.
tests/training/test_adapt.py asserts the same ordering on three seeds; docs/adaptation.md
quotes a run of this.

    python -m bench.closed_loop [--seeds 8] [--first 0]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path


def summarise(loops: list, labels: dict[str, str], prompts: int, *, ahead: bool = False) -> None:
    """One line per comparison over the loops: prompts won with a Wilson interval, the mean
    gain over seeds with a t interval (and, ``ahead``, in how many seeds it was above 0)."""
    from tests.support.synthetic_raters import t_interval

    width = max(len(label) for label in labels.values())
    for name, label in labels.items():
        results = [getattr(loop, name) for loop in loops]
        wins = sum(r.win_rate * r.prompts for r in results)
        low, high = wilson(wins, prompts)
        gain = [r.mean_difference for r in results]
        g_low, g_high = t_interval(gain)
        tail = f", ahead in {sum(g > 0 for g in gain)} of {len(gain)}" if ahead else ""
        print(
            f"  {label:>{width}}: wins {wins / prompts:.1%} [{low:.1%}, {high:.1%}] of prompts; "
            f"mean gain {statistics.fmean(gain):+.2f} [{g_low:+.2f}, {g_high:+.2f}] over "
            f"seeds{tail}"
        )


def wilson(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    args = parser.parse_args()

    from tests.support.red_corner import closed_loop
    from tests.support.synthetic_raters import t_interval
    from training.generator import Generator
    from training.presets import save_preset

    started = time.perf_counter()
    loops = []
    with tempfile.TemporaryDirectory(prefix="prefloop-bench-loop-") as work:
        model = save_preset("tiny", Path(work) / "models" / "tiny")
        base = Generator.load(
            str(model), cache_dir=model.parent, device="cpu", safety_checker=False
        )
        for seed in range(args.first, args.first + args.seeds):
            loop = closed_loop(model, base, Path(work) / f"loop{seed}", seed)
            loops.append(loop)
            print(
                f"seed {seed}: {loop.selected} selected; with the negative prompt "
                f"{loop.served.win_rate:.0%} of prompts, {loop.served.mean_difference:+.2f}; "
                f"without {loop.bare.win_rate:.0%}, {loop.bare.mean_difference:+.2f}; "
                f"against the base with it {loop.learned.win_rate:.0%}, "
                f"{loop.learned.mean_difference:+.2f}",
                flush=True,
            )
    prompts = sum(loop.served.prompts for loop in loops)
    print(
        f"\n{len(loops)} loops, {prompts} held-out prompts, {time.perf_counter() - started:.0f} s"
    )
    labels = {
        "served": "with 'Weird image.'",
        "bare": "without it",
        "learned": "with it, vs base with it",
    }
    summarise(loops, labels, prompts)
    paired = [loop.served.mean_difference - loop.bare.mean_difference for loop in loops]
    p_low, p_high = t_interval(paired)
    ahead = sum(d > 0 for d in paired)
    print(
        f"  served minus bare: {statistics.fmean(paired):+.2f} [{p_low:+.2f}, {p_high:+.2f}]; "
        f"ahead in {ahead} of {len(paired)} seeds"
    )


if __name__ == "__main__":
    main()
