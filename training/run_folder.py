"""The run folder: what a training run leaves in the folder it trains into.

Beside the model's own files (an open_clip checkpoint, a LoRA adapter) a run folder holds

- ``INFO`` (``prefloop.json``): base model, hyperparameters, metrics, and ``"finished":
  true`` once training ran to its end;
- ``RESUME`` (``.resume/``): the resume point of an unfinished run, gone once it finished;
- ``GATE`` (``gate.json``): in a retrain stage's folder, the figures the platform's
  promotion gate decides on.

This module is the one place that spells those names; the trainers, the retrain stages
and the tests read and write the folder through it. It also holds the progress bar the
training loops share.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

INFO = "prefloop.json"
RESUME = ".resume"
GATE = "gate.json"
_RESUME_POINT = "state.pt"  # inside RESUME


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename: whole or not at all."""
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def read_info(folder: Path) -> dict[str, Any]:
    """The folder's ``INFO``; ``{}`` when it has none.

    ``ValueError`` naming the file when it is not a JSON object.
    """
    path = Path(folder) / INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text("utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path} is not valid JSON: not an object")
    return info


def write_info(folder: Path, info: dict[str, Any]) -> None:
    """Write the folder's ``INFO`` atomically (paths and other objects as strings)."""
    write_atomically(Path(folder) / INFO, json.dumps(info, indent=2, default=str))


def has_run(folder: Path) -> bool:
    """Did a training run start in ``folder``? It left a resume point or its ``INFO``."""
    return resume_dir(folder).exists() or (Path(folder) / INFO).exists()


def is_finished(folder: Path) -> bool:
    """Did training in ``folder`` run to its end? Its ``INFO`` says so and no resume
    point is left (a crash between writing the one and deleting the other leaves both:
    the trainer then resumes)."""
    if resume_dir(folder).exists():
        return False
    try:
        return bool(read_info(folder).get("finished"))
    except (OSError, ValueError):
        return False


def resume_dir(folder: Path) -> Path:
    """Where the resume point of an unfinished run in ``folder`` lives."""
    return Path(folder) / RESUME


def resume_point(folder: Path) -> Path:
    """The file of the resume point in ``folder``."""
    return resume_dir(folder) / _RESUME_POINT


def plain(value: Any) -> Any:
    """``value`` as JSON would give it back: numbers, strings, lists, dicts (paths become
    strings). What a resume point records besides tensors is kept this way, so that it
    loads with ``weights_only=True`` and compares equal to what it was made from."""
    return json.loads(json.dumps(value, default=str))


def save_resume_point(folder: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a file.

    ``state`` holds tensors (state dicts) and plain values only (see :func:`plain`):
    :func:`load_resume_point` refuses anything else.
    """
    import torch

    path = resume_point(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_resume_point(folder: Path) -> dict[str, Any] | None:
    """The resume point in ``folder`` (``None`` when there is none), loaded with
    ``weights_only=True``: no code in the file can run.

    ``ValueError`` naming the file when it holds anything but tensors and plain values
    (not a file this code wrote) or cannot be read.
    """
    import pickle

    import torch

    path = resume_point(folder)
    if not path.is_file():
        return None
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


def forget_resume_point(folder: Path) -> None:
    """Delete the resume point in ``folder``, if any (the run finished, or its data went)."""
    shutil.rmtree(resume_dir(folder), ignore_errors=True)


def write_gate(folder: Path, gate: dict[str, Any]) -> None:
    """Write a retrain stage's ``GATE`` atomically: the platform reads it after a restart too."""
    write_atomically(Path(folder) / GATE, json.dumps(gate, indent=2, default=list))


def read_gate(folder: Path) -> dict[str, Any]:
    """A retrain stage's ``GATE``; ``OSError`` when there is none, ``ValueError`` when it
    is not a JSON object."""
    gate = json.loads((Path(folder) / GATE).read_text("utf-8"))
    if not isinstance(gate, dict):
        raise ValueError(f"{Path(folder) / GATE} is not a JSON object")
    return gate


def progress_bar(total: int, done: int, show: bool, desc: str) -> Any:
    """A tqdm bar with loss and ETA, on a terminal only (logs and tests get none)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="step", disable=None if show else True)
