"""The people's gate, simulated: how often it promotes, and how many judged sets it takes.

Simulated raters (bot/arena/simulate.py) judge 2 + 2 mixed sets directly: each image has
a hidden quality drawn from its version's distribution, each rater picks the highest
quality plus their own noise. For contenders truly worse, equal or better (their win
rate measured over 400,000 sets, not assumed), many runs of the gate look after every
judged set with the default settings; the table gives the promotion and rejection rates
and the judged sets to a decision, beside a fixed-n binomial test re-run after every set
(what the gate must not be). Then days to a decision for a share of mixed sets and a
number of /imagine requests a day. The figures are those of docs/arena.md.

    python -m bench.arena [--runs 1000] [--seed 14]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bot.arena import simulate
from bot.config import ArenaSettings

TARGETS = (0.45, 0.50, 0.55, 0.65, 0.75)  # the contender's true win rate, roughly
SHARES = (0.10, 0.25, 0.50)
DAILY = (100, 500, 2000)  # /imagine requests a day
CHECKED = 10  # runs per configuration also fed to judge() itself, set by set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="simulated runs per row")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    arena = ArenaSettings()
    settings = simulate.GateSettings(arena.confidence, arena.min_effect, arena.max_comparisons)
    population, layout = simulate.Population(), simulate.Layout()
    print(
        f"{args.runs} runs per row; raters: {population.raters}, Gumbel noise "
        f"{population.noise} (lognormal spread {population.spread}); sets of "
        f"{layout.per_version} + {layout.per_version}; gate: confidence {arena.confidence}, "
        f"min_effect {arena.min_effect}, max_comparisons {arena.max_comparisons}, "
        "a look after every judged set\n"
    )
    header = (
        f"{'true win rate':>13} {'promoted':>9} {'rejected':>9} {'median sets':>12} "
        f"{'p90 sets':>9} {'naive promoted':>15}"
    )
    print(header)
    print("-" * len(header))
    started = time.perf_counter()
    medians: dict[float, float] = {}
    wrong = 0.0
    for number, target in enumerate(TARGETS):
        shift = 0.0 if target == 0.5 else simulate.shift_for(target, population, layout)
        rate = simulate.true_win_rate(shift, population, layout)
        rng = np.random.default_rng(args.seed + number)
        observations = simulate.picks(
            rng, shift, (args.runs, arena.max_comparisons), population, layout
        )
        runs = simulate.gate_runs(observations, **settings.keywords())
        for row in range(min(CHECKED, args.runs)):  # the same decisions as judge() itself
            assert simulate.judge_every_set(list(observations[row]), **settings.keywords()) == (
                runs.decision[row],
                runs.sets[row],
            )
        naive = simulate.naive_runs(observations, confidence=arena.confidence)
        if target <= 0.5:
            wrong = max(wrong, runs.promoted)
        medians[target] = runs.quantile(0.5)
        print(
            f"{rate:>13.1%} {runs.promoted:>9.1%} {runs.rejected:>9.1%} "
            f"{runs.quantile(0.5):>12.0f} {runs.quantile(0.9):>9.0f} {naive.promoted:>15.1%}"
        )
    print(
        f"\nwrong promotions (equal or worse contender promoted): at most {wrong:.1%} "
        f"(the gate's bound: {1 - arena.confidence:.0%})\n"
    )
    print("days to a decision (median judged sets / (share x /imagine a day)):")
    columns = [(share, daily) for share in SHARES for daily in DAILY]
    print(
        f"{'true win rate':>13} "
        + " ".join(f"{f's={share:.2f} D={daily}':>14}" for share, daily in columns)
    )
    for target in (0.55, 0.65, 0.75):
        cells = " ".join(f"{medians[target] / (share * daily):>14.1f}" for share, daily in columns)
        print(f"{target:>13.0%} {cells}")
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
