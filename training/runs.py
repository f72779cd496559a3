"""What the training loops share: a progress bar and atomic resume points."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def progress_bar(total: int, done: int, show: bool, desc: str) -> Any:
    """A tqdm bar with loss and ETA, on a terminal only (logs and tests get none)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="step", disable=None if show else True)


def save_resume_point(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
