"""A retrain run's page for admins: its stages, their gates and figures, each evaluation's
report and plots, and the files of its run folder (nothing outside it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from bot.db import admin_lists
from bot.retrain.run_data import run_folder
from bot.web.forms import path_id, platform_of
from bot.web.pages import page, problem
from bot.web.security import require_admin
from bot.web.words import scalar, shown, when
from training.run_folder import GATE, read_gate

RUN_IMAGE_CACHE = "private, max-age=300"
EVALUATION_STAGES = ("hps", "adapter")  # a retrain run's folders with a gate and a report
REPORT_CHARACTERS = 20_000
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
TEXT_FILES = {".md", ".json", ".jsonl", ".log", ".txt", ".csv"}


async def run_page(request: Request) -> Response:
    """One retrain run: its stages, their gates and figures, each evaluation's report."""
    await require_admin(request, "run", str(request.path_params["id"])[:200])
    run_id = path_id(request, "retrain run")
    platform = platform_of(request)
    async with platform.sessions() as session:
        run = await admin_lists.retrain_run(session, run_id)
    if run is None:
        return problem(request, f"There is no retrain run {run_id}.", 404)
    folder = run_folder(platform.settings.data_dir, run_id)
    stages = await asyncio.to_thread(_stage_views, folder)
    return page(
        request,
        "admin_run.html",
        title=f"Retrain run {run_id}",
        nav="admin",
        run=run,
        decisions=[_decision(name, found) for name, found in (run.outcome or {}).items()],
        stages=stages,
        folder=folder,
        when=when,
    )


def _decision(stage: str, found: Any) -> dict[str, Any]:
    found = found if isinstance(found, dict) else {"summary": str(found)}
    return {
        "stage": stage,
        "summary": found.get("summary", ""),
        "version": found.get("version"),
        "promoted": found.get("promoted"),
        "reasons": found.get("reasons") or [],
    }


def _stage_views(folder: Path) -> list[dict[str, Any]]:
    """What each evaluated stage left in the run folder: its gate, report and plots."""
    views = []
    for stage in EVALUATION_STAGES:
        where = folder / stage
        if not where.is_dir():
            continue
        try:
            gate: dict[str, Any] | None = read_gate(where)
        except (OSError, ValueError):
            gate = None
        report = where / "report"
        text = _read(report / "report.md")
        metrics = _read(report / "metrics.json")
        images = sorted(
            p.relative_to(folder).as_posix()
            for p in report.rglob("*")
            if p.suffix.lower() in IMAGE_TYPES and p.is_file()
        )
        files = [
            p.relative_to(folder).as_posix()
            for p in (
                where / GATE,
                where / "stage.log",
                report / "report.md",
                report / "metrics.json",
            )
            if p.is_file()
        ]
        views.append(
            {
                "stage": stage,
                "figures": _figures(gate) if gate else [],
                "gate": gate,
                "report": text,
                "metrics": metrics,
                "images": images,
                "files": files,
            }
        )
    return views


def _read(path: Path) -> str | None:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return None
    if len(text) > REPORT_CHARACTERS:
        text = text[:REPORT_CHARACTERS] + "\n… (cut; the whole file is linked below)"
    return text


def _figures(gate: dict[str, Any]) -> list[tuple[str, str]]:
    """The gate's figures as name/value rows: scalars, and one level of nested scalars."""
    rows = []
    for key, value in gate.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", shown(v)) for k, v in value.items() if scalar(v)]
        elif scalar(value) or (isinstance(value, list) and all(scalar(v) for v in value)):
            rows.append((key, shown(value)))
    return rows


async def run_file(request: Request) -> Response:
    """A file of a retrain run's folder (plots, reports, gate figures, logs); nothing
    outside that folder."""
    wanted: str = request.path_params["path"]
    await require_admin(request, "run-file", f"{request.path_params['id']}/{wanted}"[:200])
    run_id = path_id(request, "retrain run")
    platform = platform_of(request)
    folder = run_folder(platform.settings.data_dir, run_id).resolve()
    path = (folder / wanted).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        return problem(request, f"Retrain run {run_id} has no file {wanted}.", 404)
    suffix = path.suffix.lower()
    if suffix in IMAGE_TYPES:
        return FileResponse(
            path, media_type=IMAGE_TYPES[suffix], headers={"Cache-Control": RUN_IMAGE_CACHE}
        )
    if suffix in TEXT_FILES:
        return FileResponse(
            path, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-cache"}
        )
    return FileResponse(path, filename=path.name)  # an attachment, never shown as a page


routes: list[BaseRoute] = [
    Route("/admin/runs/{id}", run_page, name="admin_run"),
    Route("/admin/runs/{id}/files/{path:path}", run_file, name="admin_run_file"),
]
