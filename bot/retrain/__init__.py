"""The retrain loop: export, refit HPS, re-adapt the generator, promote what measurably wins.

``triggers``: asking for a run (one at a time), the schedule and new-picks triggers, and
runs whose job ended midway. ``stages``: one run's stages, gates and records.
``run_data``: a run's copy of the picks, deleted when the run ends.
"""

from bot.retrain.run_data import remove_ended_runs_data
from bot.retrain.stages import Retrain, StageFailed, hps_base, trainer_command
from bot.retrain.triggers import (
    UNFINISHED,
    RetrainRequest,
    check_new_picks,
    mark_abandoned_in,
    picks_since_last_run,
    request_retrain,
    requeue_orphaned_runs,
    runs,
)

__all__ = [
    "UNFINISHED",
    "Retrain",
    "RetrainRequest",
    "StageFailed",
    "check_new_picks",
    "hps_base",
    "mark_abandoned_in",
    "picks_since_last_run",
    "remove_ended_runs_data",
    "request_retrain",
    "requeue_orphaned_runs",
    "runs",
    "trainer_command",
]
