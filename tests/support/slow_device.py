"""A slow device for tests that need a job to outlast something, on any machine.

``slowed(generate, seconds)`` makes every denoising step of ``Generator.generate`` take
``seconds`` more; :func:`slow_device_path` gives a PYTHONPATH on which every Python
process started (a `prefloop run` and its worker) is on the slow device.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def slowed(generate: Any, seconds: float) -> Any:
    """``generate`` with ``seconds`` of sleep before each step's progress callback."""

    def slow_generate(self: Any, *args: Any, on_step: Any = None, **kwargs: Any) -> Any:
        def step(done: int, total: int) -> None:
            time.sleep(seconds)
            if on_step is not None:
                on_step(done, total)

        return generate(self, *args, on_step=step, **kwargs)

    return slow_generate


def slow_device_path(folder: Path, seconds: float) -> str:
    """A PYTHONPATH whose ``sitecustomize`` puts each process started with it on the slow
    device (the checkout comes next, so that ``tests`` is importable that early)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "from tests.support.slow_device import slowed\n"
        "from training.generator import Generator\n"
        f"Generator.generate = slowed(Generator.generate, {seconds})\n"
    )
    entries = [str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(entry for entry in entries if entry)
