"""The retrain loop: export, refit HPS, re-adapt the generator, promote what measurably wins.

``triggers``: asking for a run (one at a time), the picks since the last one, and runs
whose job ended midway. ``tasks``: the retrain job and its schedule and new-picks
triggers. ``stages``: one run's stages, gates and records. ``run_data``: a run's copy of
the picks, deleted when the run ends. ``gpu_turn``: one GPU shared by training stages
and generations.
"""
