"""Reliability weights against unweighted training, on synthetic raters (issue 15).

A hidden rule (the colour world: the image in the prompt's colour is right), careful
raters who follow it 90% of the time and a share of random clickers, some control sets
and shared sets; the raters' weights come from bot/raters/reliability.py. For each seed:
simulate the votes, fit the tiny HPS with and without the weights on the same data and
seed, and score both on held-out sets against the hidden rule. Prints each arm's top-1
with a bootstrap 95% interval over all held-out sets, the paired difference, and the
per-seed differences with a t interval over seeds (tests/training/test_rater_weights.py
asserts the same on fewer seeds; docs/operations.md quotes a run of this).

    python -m bench.rater_weights [--seeds 20] [--first 1000] [--random-share 0.3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first", type=int, default=1000, help="the first seed")
    parser.add_argument("--random-share", type=float, default=0.3)
    parser.add_argument("--test-sets", type=int, default=400)
    args = parser.parse_args()

    from tests.support.synthetic_raters import FIT, experiment

    seeds = list(range(args.first, args.first + args.seeds))
    with tempfile.TemporaryDirectory(prefix="prefloop-bench-raters-") as work:
        outcome = experiment(
            Path(work), seeds, random_share=args.random_share, test_sets=args.test_sets
        )
    summary = outcome.summary()
    for name in ("weighted", "unweighted"):
        arm = summary[name]
        low, high = arm["interval"]
        print(f"{name:>10}: top-1 {arm['top1']:.1%} (95% CI {low:.1%} to {high:.1%})")
    paired, per_seed = summary["paired"], summary["per_seed_difference"]
    low, high = paired["interval"]
    print(
        f"difference: {paired['mean_difference']:+.1%} (95% CI {low:+.1%} to {high:+.1%}; "
        f"sign test p = {paired['p_value']:.2g}); weighted wins {per_seed['wins']} of "
        f"{len(seeds)} seeds, per-seed 95% t interval "
        f"{per_seed['interval'][0]:+.1%} to {per_seed['interval'][1]:+.1%}"
    )
    print(f"{len(seeds)} seeds in {outcome.seconds:.0f} s; fit settings {FIT}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
