"""Diffusion-DPO against the base and against the HPS paper's LoRA, on the tiny preset,
over several seeds of the whole loop (issue 18).

Each seed runs tests/support/red_corner.py's dpo_loop: a fixed rule (a red top-left corner)
stands in for people and picks in each set of a pool of base images (64 prompts x 4); DPO
learns from the picks' pairs (each picked image against the three not picked), the LoRA
from the rule's confident best and worst of the same sets (the rule as HPS), on the same
budget: the same steps and images a step (4 pairs, 8 images); each trains on its tiny
defaults. On 20 held-out prompts x 4 seeds: DPO (served with no negative prompt, as it
learned none) against the base and against the LoRA served with "Weird image.", and that
LoRA against the base. Printed per seed and over all: the win rate over held-out prompts
(Wilson 95% interval over every prompt of every seed) and the mean gain in red (of 255)
with a t interval over seeds. docs/adaptation.md quotes a run of this.

    python -m bench.dpo_loop [--seeds 8] [--first 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.closed_loop import summarise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first", type=int, default=10, help="the first seed")
    args = parser.parse_args()

    from tests.support.red_corner import dpo_loop
    from training.generator import Generator
    from training.presets import save_preset

    started = time.perf_counter()
    loops = []
    with tempfile.TemporaryDirectory(prefix="prefloop-bench-dpo-") as work:
        model = save_preset("tiny", Path(work) / "models" / "tiny")
        base = Generator.load(
            str(model), cache_dir=model.parent, device="cpu", safety_checker=False
        )
        for seed in range(args.first, args.first + args.seeds):
            loop = dpo_loop(model, base, Path(work) / f"loop{seed}", seed, lora=True)
            loops.append(loop)
            assert loop.against_lora is not None and loop.lora is not None
            print(
                f"seed {seed}: {loop.pairs} pairs; DPO vs base {loop.served.win_rate:.0%} of "
                f"prompts, {loop.served.mean_difference:+.2f}; DPO vs LoRA "
                f"{loop.against_lora.win_rate:.0%}, {loop.against_lora.mean_difference:+.2f}; "
                f"LoRA vs base {loop.lora.win_rate:.0%}, {loop.lora.mean_difference:+.2f}",
                flush=True,
            )
    prompts = sum(loop.served.prompts for loop in loops)
    print(
        f"\n{len(loops)} loops, {prompts} held-out prompts, {time.perf_counter() - started:.0f} s"
    )
    labels = {
        "served": "DPO vs base",
        "against_lora": "DPO vs LoRA ('Weird image.')",
        "lora": "LoRA ('Weird image.') vs base",
    }
    summarise(loops, labels, prompts, ahead=True)


if __name__ == "__main__":
    main()
