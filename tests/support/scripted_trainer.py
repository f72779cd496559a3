"""A stand-in for ``python -m training gate`` that writes the figures a test asks for.

It takes the stage's real arguments (and checks that the real trainer's command line
takes them too), and writes the gate file in ``--out`` from the JSON in
``PREFLOOP_TEST_GATES`` (keyed by stage: ``hps``, ``adapter``, ``dpo``), so the platform's
gates, registry and records can be tested without training; ``crash`` as a stage's value
exits non-zero, ``hang`` sleeps until it is stopped; ``PREFLOOP_TEST_ADAPTER`` names a
real adapter folder the adapter stages hand over as their candidate. Like the real
trainers it refuses to go on from a resume point left in its model folder (``hps/model``,
``adapter/adapter``, ``adapter-dpo/adapter``; a test plants one when the data it was
trained on is gone) and it records which export it was given (``data_created_at``, from
the export's manifest).

A stage's ``paired`` (and the HPS's ``paired_base``) given as ``"from top-1"`` or ``"from
win rate"`` is the paired evidence those figures imply (training/evidence.py, as the real
stages compute it): for the HPS, the candidate's hits a superset of what it is judged
against (``--active`` when passed, else the base), so a gain of k picks is k picks better
and none worse; for the adapter, each prompt won is +0.5 HPS, each lost -0.5. Any other
value is written as given; a test leaves the key out for a gate file from before it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from training.__main__ import build_parser
from training.evidence import paired
from training.run_folder import resume_dir, write_gate


def main() -> int:
    stage, args = sys.argv[1], sys.argv[2:]
    build_parser().parse_args(["gate", stage, *args])  # exits 2 on what the trainer refuses
    out = Path(args[args.index("--out") + 1])
    manifest = Path(args[args.index("--data") + 1]) / "manifest.json"
    adapter = stage in ("adapt", "dpo")
    model = out / ("adapter" if adapter else "model")  # as the real stages name it
    figures = json.loads(os.environ["PREFLOOP_TEST_GATES"])[{"adapt": "adapter"}.get(stage, stage)]
    print(f"{stage}: step 1/1", flush=True)
    if figures == "hang":  # a long stage: until the test stops it
        time.sleep(600)
    if resume_dir(model).exists():
        print(f"{model} holds an unfinished run with other settings or data", flush=True)
        return 4
    if figures == "crash":
        print("Traceback (most recent call last): CUDA out of memory", flush=True)
        return 3
    out.mkdir(parents=True, exist_ok=True)
    model.mkdir(exist_ok=True)
    if adapter and os.environ.get("PREFLOOP_TEST_ADAPTER"):
        # a real adapter as the candidate, for tests whose workers serve it
        shutil.copytree(os.environ["PREFLOOP_TEST_ADAPTER"], model, dirs_exist_ok=True)
    if stage == "adapt":  # the real stage lists the images it selected
        (out / "selection.jsonl").write_text('{"prompt": "a cat", "file": "x.png"}\n')
    if stage == "dpo":  # ... and the DPO stage the pairs it learned from
        (out / "pairs.jsonl").write_text('{"prompt": "a cat", "winner": "x.png"}\n')
    created = json.loads(manifest.read_text())["created_at"] if manifest.is_file() else None
    gate = {
        "stage": stage,
        "model": str(model),
        "args": args,
        "data_created_at": created,
        **({"method": "lora" if stage == "adapt" else "dpo"} if adapter else {}),
        **figures,
    }
    if gate.get("paired") == "from top-1":
        serving = "active" if "--active" in args else "base"
        gate["paired"] = _from_top1(gate, serving)
        gate["paired_base"] = _from_top1(gate, "base")
    if gate.get("paired") == "from win rate":
        won = round(gate["win_rate"] * gate["prompts"])
        differences = [0.5] * won + [-0.5] * (gate["prompts"] - won)
        gate["paired"] = {"against": gate["against"], **paired(differences).to_dict()}
    write_gate(out, gate)
    return 0


def _from_top1(gate: dict[str, Any], against: str) -> dict[str, Any]:
    n = gate["test_instances"]
    gain = round(gate["candidate"]["top1"] * n) - round(gate[against]["top1"] * n)
    differences = [1.0 if gain > 0 else -1.0] * abs(gain) + [0.0] * (n - abs(gain))
    return {"against": against, **paired(differences).to_dict()}


if __name__ == "__main__":
    sys.exit(main())
