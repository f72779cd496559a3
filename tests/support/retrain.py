"""The scripted trainer as a retrain's trainer: its command, and the gate figures it reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TRAINER = [sys.executable, str(Path(__file__).with_name("scripted_trainer.py"))]
FROM_TOP1, FROM_WIN_RATE = "from top-1", "from win rate"  # the trainer works them out
WIN = {
    "hps": {
        "test_instances": 200,
        "train_instances": 800,
        "candidate": None,
        "base": {"top1": 0.40},
        "active": {"top1": 0.50},
        "paired": FROM_TOP1,  # 0.56 vs 0.50 on 200 picks: better on 12, worse on none
        "paired_base": FROM_TOP1,
    },
    "adapter": {
        "against": "base",
        "prompts": 20,
        "win_rate": 0.8,
        "mean_difference": 0.4,
        "difference_ci": [0.1, 0.7],
        "paired": FROM_WIN_RATE,  # 80%: better on 16 prompts, worse on 4 (p = 0.0059)
    },
}


def scripted_gates(hps_top1: float, win_rate: float, **replace: Any) -> dict[str, Any]:
    """Figures for ``PREFLOOP_TEST_GATES``: WIN with the candidate HPS's top-1 and the
    adapter's win rate set; ``replace`` swaps a stage's figures (``adapter="crash"``).

    The paired evidence follows from them (the scripted trainer works it out from the
    figures it writes): a clear gain on WIN's held-out items is strong evidence, a loss or
    a draw is none."""
    gates = json.loads(json.dumps(WIN))
    gates["hps"]["candidate"] = {"top1": hps_top1}
    gates["adapter"]["win_rate"] = win_rate
    return {**gates, **replace}
