"""The scripted trainer as a retrain's trainer: its command, and the gate figures it reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TRAINER = [sys.executable, str(Path(__file__).with_name("scripted_trainer.py"))]
WIN = {
    "hps": {
        "test_instances": 40,
        "train_instances": 160,
        "candidate": None,
        "base": {"top1": 0.40},
        "active": {"top1": 0.50},
    },
    "adapter": {
        "against": "base",
        "prompts": 20,
        "win_rate": 0.8,
        "mean_difference": 0.4,
        "difference_ci": [0.1, 0.7],
    },
}


def scripted_gates(hps_top1: float, win_rate: float, **replace: Any) -> dict[str, Any]:
    """Figures for ``PREFLOOP_TEST_GATES``: WIN with the candidate HPS's top-1 and the
    adapter's win rate set; ``replace`` swaps a stage's figures (``adapter="crash"``)."""
    gates = json.loads(json.dumps(WIN))
    gates["hps"]["candidate"] = {"top1": hps_top1}
    gates["adapter"]["win_rate"] = win_rate
    return {**gates, **replace}
