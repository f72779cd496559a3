"""What the training loops share: a progress bar and safe, atomic resume points."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def progress_bar(total: int, done: int, show: bool, desc: str) -> Any:
    """A tqdm bar with loss and ETA, on a terminal only (logs and tests get none)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="step", disable=None if show else True)


def plain(value: Any) -> Any:
    """``value`` as JSON would give it back: numbers, strings, lists, dicts (paths become
    strings). What a resume point records besides tensors is kept this way, so that it
    loads with ``weights_only=True`` and compares equal to what it was made from."""
    return json.loads(json.dumps(value, default=str))


def save_resume_point(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a file.

    ``state`` holds tensors (state dicts) and plain values only (see :func:`plain`):
    :func:`load_resume_point` refuses anything else.
    """
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_resume_point(path: Path) -> dict[str, Any]:
    """A resume point, loaded with ``weights_only=True``: no code in the file can run.

    ``ValueError`` naming the file when it holds anything but tensors and plain values
    (not a file this code wrote) or cannot be read.
    """
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path} is not a resume point that loads safely ({reason}); delete it to "
            "start this training over"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a resume point (it holds a {type(state).__name__})")
    return state
