"""A stand-in for ``python -m training.retrain`` that writes the figures a test asks for.

It takes the stage's real arguments, and writes ``gate.json`` in ``--out`` from the
JSON in ``PREFLOOP_TEST_GATES`` (keyed by stage), so the platform's gates, registry and
records can be tested without training; ``crash`` as a stage's value exits non-zero,
``hang`` sleeps until it is stopped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    stage, args = sys.argv[1], sys.argv[2:]
    out = Path(args[args.index("--out") + 1])
    figures = json.loads(os.environ["PREFLOOP_TEST_GATES"])[{"adapt": "adapter"}.get(stage, stage)]
    print(f"{stage}: step 1/1", flush=True)
    if figures == "hang":  # a long stage: until the test stops it
        time.sleep(600)
    if figures == "crash":
        print("Traceback (most recent call last): CUDA out of memory", flush=True)
        return 3
    out.mkdir(parents=True, exist_ok=True)
    (out / "model").mkdir(exist_ok=True)
    gate = {"stage": stage, "model": str(out / "model"), "args": args, **figures}
    (out / "gate.json").write_text(json.dumps(gate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
