"""A retrain run's copy of the picks: made by its export stage, deleted when the run ends.

``data_dir/retrain/run-N/data`` holds hard links to every exported image (and the
prompts). Kept for ever, it would keep images and prompts the store itself deleted when
their members asked to be forgotten. So a run's data goes as soon as the run ends
(succeeded, whether its candidates were promoted or not, or failed for good); what the
run decided stays: ``gate.json``, reports, metrics, logs and the models it registered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.db.models import RetrainRun
from bot.export.layout import LOCK, PARTIAL, fsync_dir
from bot.retrain.triggers import UNFINISHED
from training.run_folder import resume_dir

if TYPE_CHECKING:
    from bot.runtime import Platform

log = logging.getLogger(__name__)

DATA = "data"
# What the adapter stages list of the export's images and prompts: the LoRA's selection,
# DPO's pairs (bot/retrain/methods.py names the folders).
SELECTIONS = (Path("adapter") / "selection.jsonl", Path("adapter-dpo") / "pairs.jsonl")
# Resume points of a stage's training: stale once the data they were trained on is gone.
RESUME_POINTS = {
    "hps": (resume_dir(Path("hps") / "model"),),
    "adapter": (
        resume_dir(Path("adapter") / "adapter"),
        resume_dir(Path("adapter-dpo") / "adapter"),
    ),
}


def runs_folder(data_dir: Path) -> Path:
    return data_dir.absolute() / "retrain"


def run_folder(data_dir: Path, run_id: int) -> Path:
    return runs_folder(data_dir) / f"run-{run_id}"


def remove_export(folder: Path) -> bool:
    """Delete the run's export, whole or interrupted; True if there was one.

    The folder is renamed aside first (one atomic step), so ``data`` is whole or absent
    at every moment; what a crash leaves has an interrupted export's name, which this
    and any later export into the folder remove.
    """
    data = folder / DATA
    if data.exists():
        os.rename(data, folder / f".{DATA}.{PARTIAL}-deleted-{uuid.uuid4().hex[:8]}")
        fsync_dir(folder)
    found = False
    for leftover in folder.glob(f".{DATA}.*"):
        shutil.rmtree(leftover, ignore_errors=True)
        found = True
    (folder / LOCK).unlink(missing_ok=True)
    return found


def remove_run_data(folder: Path) -> bool:
    """Delete what an ended run holds of members' picks: its export and the adapter
    stages' selection and pairs (lists of the export's images and prompts)."""
    found = remove_export(folder)
    for listing in SELECTIONS:
        if (folder / listing).exists():
            (folder / listing).unlink()
            found = True
    return found


def forget_stale_training(folder: Path, undecided: list[str]) -> None:
    """Drop the resume points of ``undecided`` stages: their data is about to be new."""
    for stage in undecided:
        for point in RESUME_POINTS[stage]:
            shutil.rmtree(folder / point, ignore_errors=True)


def _folders_with_data(root: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    if not root.is_dir():
        return found
    for folder in root.glob("run-*"):
        number = folder.name.removeprefix("run-")
        if not number.isdigit():
            continue
        if (
            (folder / DATA).exists()
            or any(folder.glob(f".{DATA}.*"))
            or any((folder / listing).exists() for listing in SELECTIONS)
        ):
            found[int(number)] = folder
    return found


async def remove_ended_runs_data(platform: Platform) -> list[int]:
    """Delete the data of every run that has ended (or has no record); the runs' ids.

    Each run deletes its own when it ends; this catches those whose worker died for good
    (failed by the stalled-job reaper) and anything an interruption left behind.
    """
    folders = await asyncio.to_thread(_folders_with_data, runs_folder(platform.settings.data_dir))
    if not folders:
        return []
    async with platform.sessions() as session:
        going_on = set(
            await session.scalars(
                select(RetrainRun.id).where(
                    RetrainRun.id.in_(list(folders)), RetrainRun.status.in_(UNFINISHED)
                )
            )
        )
    ended = sorted(run_id for run_id in folders if run_id not in going_on)
    for run_id in ended:
        if await asyncio.to_thread(remove_run_data, folders[run_id]):
            log.info("retrain %d has ended: its copy of the picks is deleted", run_id)
    return ended
