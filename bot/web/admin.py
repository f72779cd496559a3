"""The admins' pages: the dashboard, exports, bans, the retrain runs, the audit log.

The same checks and audit as Discord's ``/admin``: every page first calls
:func:`~bot.web.security.require_admin` (the same admins; a refused attempt is audited and
answered 403), every action is a POST behind the CSRF check and is audited with its
outcome, under the action's name prefixed ``web:``. Downloading an export is audited too
(members' data leave the server). Every figure comes from the use cases and reports the
CLI and ``/admin`` read; nothing here counts on its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from bot.arena.leaderboard import Leaderboard, leaderboard
from bot.arena.versions import label
from bot.db import admin_lists, timeline
from bot.db.models import Frontend
from bot.domain import Refusal, UserRef
from bot.export.run import is_format
from bot.export.selection import Selection, is_votes
from bot.export.tasks import exports_root
from bot.jobs.status import unfinished_jobs
from bot.names import EXPORT_TASK
from bot.raters.agreement import summary as agreement_summary
from bot.raters.agreement import week_line
from bot.retrain.run_data import run_folder
from bot.retrain.triggers import runs
from bot.runtime import Platform
from bot.web.pages import page, problem, wants_json
from bot.web.plots import Memo, growth_png, picks_png
from bot.web.security import Viewer, post, require_admin
from bot.web.zips import folder_zip
from training.run_folder import GATE, read_gate

RUNS_SHOWN = 10
RATERS_SHOWN = 20
AUDIT_PAGE = 100
NOTICE_MINUTES = 10  # ?done=ACTION shows the admin's own latest ACTION this recent
PLOT_CACHE = "private, max-age=60"
RUN_IMAGE_CACHE = "private, max-age=300"
EVALUATION_STAGES = ("hps", "adapter")  # a retrain run's folders with a gate and a report
REPORT_CHARACTERS = 20_000
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
TEXT_FILES = {".md", ".json", ".jsonl", ".log", ".txt", ".csv"}


# ----- the dashboard -------------------------------------------------------------------


async def dashboard(request: Request) -> Response:
    """Growth, members and raters, the leaderboard, models, runs, exports, bans."""
    viewer = await require_admin(request, "dashboard")
    platform: Platform = request.app.state.platform
    service = platform.service
    stats = await service.stats()
    agreement = await service.raters.dataset_agreement()
    raters = await service.raters.raters(sort="weight")
    marker = await _marker(platform)
    board = await _memo(request).get(
        "leaderboard", marker, lambda: leaderboard(service.sessions, service.settings)
    )
    versions = await service.registry.versions()
    latest = await runs(service.sessions, RUNS_SHOWN)
    jobs = [job for job in await unfinished_jobs(service.sessions) if job.task == EXPORT_TASK]
    async with service.sessions() as session:
        exports = await admin_lists.exports(session)
        banned = await admin_lists.banned_members(session)
        notice = await _notice(session, viewer, request.query_params.get("done"))
    root = exports_root(service.settings)
    states = await asyncio.to_thread(
        lambda: {e.id: _export_state(e.out_path, root)[1] for e in exports}
    )
    return page(
        request,
        "admin.html",
        title="Admin",
        nav="admin",
        notice=notice,
        stats=stats,
        agreement_line=agreement_summary(agreement),
        weeks=[week_line(week) for week in agreement["weeks"][-4:][::-1]],
        raters=raters[:RATERS_SHOWN],
        raters_left=max(0, len(raters) - RATERS_SHOWN),
        prior_careful=service.settings.raters.prior_careful,
        careful=raters[0].careful_agreement if raters else None,
        board=_board(board),
        versions=versions,
        runs=[_run_row(run) for run in latest],
        exports=[(e, states[e.id]) for e in exports],
        export_jobs=jobs,
        exports_folder=root,
        banned=banned,
        when=_when,
    )


async def _notice(session: Any, viewer: Viewer, done: str | None) -> str | None:
    """After an action: what it did, as its audit entry says (the admin's own, recent)."""
    if done not in ("export", "ban", "unban"):
        return None
    entry = await admin_lists.last_action(session, viewer.member, f"web:{done}")
    if entry is None or entry.at < datetime.now(UTC) - timedelta(minutes=NOTICE_MINUTES):
        return None
    outcome = entry.details.get("outcome")
    return str(outcome) if outcome else None


@dataclass(frozen=True)
class _BoardView:
    """The leaderboard as the page shows it (the CLI's sentences, as tables)."""

    head: str | None  # None: nothing rated yet
    ratings: list[dict[str, Any]] = field(default_factory=list)
    head_to_head: list[dict[str, Any]] = field(default_factory=list)
    agreement: str = ""


def _board(board: Leaderboard) -> _BoardView:
    r = board.ratings
    agreement = (
        board.agreement.describe() if board.agreement else "No HPS is active: no live agreement."
    )
    if not r.ratings:
        return _BoardView(None, agreement=agreement)
    head = board.lines()[0]  # how many picks, the scale, the anchor, the intervals
    return _BoardView(
        head,
        [
            {
                "rank": rank,
                "version": label(x.version),
                "serving": x.version == board.serving,
                "rating": f"{x.rating:+.0f}",
                "interval": f"[{x.low:+.0f}, {x.high:+.0f}]",
                "comparisons": x.comparisons,
            }
            for rank, x in enumerate(r.ratings, 1)
        ],
        [
            {
                "a": label(h.a),
                "b": label(h.b),
                "comparisons": h.comparisons,
                "win_rate": f"{h.win_rate_a:.1%}",
                "prompts": f"{h.prompt_win_rate_a:.0%} of {h.prompts}",
            }
            for h in r.head_to_head
        ],
        agreement,
    )


def _run_row(run: Any) -> dict[str, Any]:
    if run.status in ("queued", "running"):
        outcome = run.progress or ""
    elif run.error:
        outcome = run.error
    else:
        outcome = "; ".join(str(d.get("summary", "")) for d in (run.outcome or {}).values())
    return {"run": run, "outcome": outcome}


# ----- plots ---------------------------------------------------------------------------


async def growth_plot(request: Request) -> Response:
    """Cumulative generations, images and votes over time (PNG)."""
    await require_admin(request, "plots", "growth")
    platform: Platform = request.app.state.platform

    async def draw() -> bytes:
        async with platform.sessions() as session:
            data = await timeline.growth(session)
        return await asyncio.to_thread(growth_png, data)

    png = await _memo(request).get("growth.png", await _marker(platform), draw)
    return Response(png, media_type="image/png", headers={"Cache-Control": PLOT_CACHE})


async def picks_plot(request: Request) -> Response:
    """Votes per day by kind: picks, no favourite, none are good (PNG)."""
    await require_admin(request, "plots", "picks")
    platform: Platform = request.app.state.platform

    async def draw() -> bytes:
        async with platform.sessions() as session:
            data = await timeline.daily_votes(session)
        return await asyncio.to_thread(picks_png, data)

    png = await _memo(request).get("picks.png", await _marker(platform), draw)
    return Response(png, media_type="image/png", headers={"Cache-Control": PLOT_CACHE})


def _memo(request: Request) -> Memo:
    """The app's cache of drawn plots and the leaderboard (one per app, made on first use)."""
    state = request.app.state
    memo: Memo | None = getattr(state, "admin_memo", None)
    if memo is None:
        memo = state.admin_memo = Memo()
    return memo


async def _marker(platform: Platform) -> tuple[Any, ...]:
    async with platform.sessions() as session:
        return await timeline.data_version(session)


# ----- exports -------------------------------------------------------------------------


async def start_export(request: Request, form: FormData) -> Response:
    """Queue an export job, with /admin export's options."""
    viewer = await require_admin(request, "export")
    service = request.app.state.platform.service
    format = _field(form, "format") or "hps"
    rater = _field(form, "rater") or "requester"
    votes = _field(form, "votes") or None
    controls_text = _field(form, "controls") or "default"
    incremental = _field(form, "incremental") in ("on", "true", "1", "yes")
    if not is_format(format):
        return problem(request, f"Unknown format {format!r}: use hps or parquet.", 400)
    if rater not in ("requester", "all"):
        return problem(request, f"Unknown rater {rater!r}: use requester or all.", 400)
    if votes is not None and not is_votes(votes):
        return problem(request, f"Unknown votes {votes!r}: use picks or all.", 400)
    controls = {"default": None, "yes": True, "no": False}.get(controls_text, "bad")
    if controls == "bad":
        return problem(request, f"Unknown controls {controls_text!r}: use yes or no.", 400)
    assert controls is None or isinstance(controls, bool)
    queued = await service.request_export(
        format=format, rater=rater, incremental=incremental, votes=votes, controls=controls
    )
    chosen = Selection.of(format, votes, controls)
    text = (
        f"Export queued as job {queued.job_id}: {'new ' if incremental else ''}"
        f"{'votes of every kind' if chosen.votes == 'all' else 'picks'}"
        f"{', control sets included' if chosen.controls else ''} ({rater}) in the {format} "
        f"layout, into {queued.out}. It is listed under Exports once it has finished."
    )
    await service.audit(
        viewer.member,
        "web:export",
        outcome=text,
        format=format,
        rater=rater,
        incremental=incremental,
        votes=votes,
        controls=controls,
        job_id=queued.job_id,
    )
    return _done(request, "export", text, job_id=queued.job_id, out=str(queued.out))


async def download_export(request: Request) -> Response:
    """A finished export as a zip of its folder (streamed, zipped in a worker thread)."""
    export_id: int = request.path_params["id"]
    viewer = await require_admin(request, "export-download", str(export_id))
    platform: Platform = request.app.state.platform
    async with platform.sessions() as session:
        found = await admin_lists.export(session, export_id)
    if found is None:
        return problem(request, f"There is no export {export_id}.", 404)
    path, refused = await asyncio.to_thread(
        _export_path, export_id, found.out_path, exports_root(platform.settings)
    )
    if refused:
        return problem(request, refused, 404)
    await platform.service.audit(
        viewer.member,
        "web:export-download",
        target=str(export_id),
        outcome=f"downloaded export {export_id} ({path})",
    )
    if await asyncio.to_thread(path.is_file):
        return FileResponse(path, filename=path.name)
    return StreamingResponse(
        folder_zip(path),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{path.name}.zip"'},
    )


def _export_path(export_id: int, out_path: str, root: Path) -> tuple[Path, str | None]:
    """The export's folder, and why it cannot be downloaded (None: it can): only what is
    inside the exports folder is served, never a path elsewhere on the server."""
    path, state = _export_state(out_path, root)
    if state == "elsewhere":
        return path, (
            f"Export {export_id} was written to {out_path}, outside the exports folder "
            f"({root.resolve()}): only exports queued here or with /admin export can be "
            "downloaded. Copy it from the server."
        )
    if state == "gone":
        return path, f"Export {export_id}'s folder {path} is gone."
    return path, None


def _export_state(out_path: str, root: Path) -> tuple[Path, str | None]:
    """The export's path resolved, and "elsewhere" (outside the exports folder), "gone",
    or None (it can be downloaded)."""
    root = root.resolve()
    path = Path(out_path).resolve()
    if not path.is_relative_to(root) or path == root:
        return path, "elsewhere"
    return path, None if path.exists() else "gone"


# ----- bans ----------------------------------------------------------------------------


async def ban(request: Request, form: FormData) -> Response:
    """Ban a member (``discord:123``, ``cli:bob``; digits alone are a Discord id)."""
    text = _field(form, "member")
    viewer = await require_admin(request, "ban", text[:200] or None)
    member = _member(text)
    reason = _field(form, "reason") or None
    service = request.app.state.platform.service
    await service.ban_user(member, reason)
    outcome = f"{member} is banned" + (f" ({reason})." if reason else ".")
    await service.audit(
        viewer.member, "web:ban", target=str(member), outcome=outcome, reason=reason
    )
    return _done(request, "ban", outcome, member=str(member))


async def unban(request: Request, form: FormData) -> Response:
    """Lift a member's ban."""
    text = _field(form, "member")
    viewer = await require_admin(request, "unban", text[:200] or None)
    member = _member(text)
    service = request.app.state.platform.service
    lifted = await service.unban_user(member)
    outcome = f"{member} is {'no longer' if lifted else 'not'} banned."
    await service.audit(viewer.member, "web:unban", target=str(member), outcome=outcome)
    return _done(request, "unban", outcome, member=str(member), lifted=lifted)


def _member(text: str) -> UserRef:
    """The member an admin typed; a :class:`Refusal` (400, with the reason) otherwise."""
    if not text:
        raise Refusal(
            "Give the member's id: discord:123456789 (or just the number) or cli:bob.",
            code="bad_member",
        )
    member = UserRef.parse(text, default=Frontend.discord if text.isdigit() else Frontend.cli)
    if member.frontend == Frontend.discord and not member.external_id.isdigit():
        raise Refusal(
            f"{text!r} is not a Discord member id: those are numbers (discord:123456789).",
            code="bad_member",
        )
    return member


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _done(request: Request, action: str, message: str, **details: Any) -> Response:
    """An action's answer: JSON for scripts, else back to the dashboard, which says it."""
    if wants_json(request):
        return JSONResponse({"message": message, **details})
    section = "exports" if action == "export" else "bans"
    return RedirectResponse(f"/admin?done={action}#{section}", status_code=303)


# ----- retrain runs --------------------------------------------------------------------


async def run_page(request: Request) -> Response:
    """One retrain run: its stages, their gates and figures, each evaluation's report."""
    run_id: int = request.path_params["id"]
    await require_admin(request, "run", str(run_id))
    platform: Platform = request.app.state.platform
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
        when=_when,
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
            rows += [(f"{key}.{k}", _value(v)) for k, v in value.items() if _scalar(v)]
        elif _scalar(value) or (isinstance(value, list) and all(_scalar(v) for v in value)):
            rows.append((key, _value(value)))
    return rows


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return "–" if value is None else str(value)


async def run_file(request: Request) -> Response:
    """A file of a retrain run's folder (plots, reports, gate figures, logs); nothing
    outside that folder."""
    run_id: int = request.path_params["id"]
    wanted: str = request.path_params["path"]
    await require_admin(request, "run-file", f"{run_id}/{wanted}"[:200])
    platform: Platform = request.app.state.platform
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


# ----- the audit log -------------------------------------------------------------------


async def audit_log(request: Request) -> Response:
    """Every admin action, allowed or refused, newest first, 100 to a page."""
    await require_admin(request, "audit")
    text = request.query_params.get("page", "1")
    if not text.isdigit() or int(text) < 1:
        return problem(request, f"page {text!r} is not a page number (1, 2, …).", 400)
    number = int(text)
    platform: Platform = request.app.state.platform
    async with platform.sessions() as session:
        entries, total = await admin_lists.audit_page(session, number, AUDIT_PAGE)
    pages = max(1, -(-total // AUDIT_PAGE))
    return page(
        request,
        "admin_audit.html",
        title="Audit log",
        nav="admin",
        entries=[(entry, _details(entry.details)) for entry in entries],
        number=number,
        pages=pages,
        total=total,
        when=_when,
    )


def _details(details: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {_value(v) if _scalar(v) else v}" for k, v in details.items())


async def unknown(request: Request) -> Response:
    """Any other /admin address: admins only, like the rest (then: no such page)."""
    await require_admin(request, "page", request.url.path[:200])
    return problem(request, "There is no such admin page.", 404)


def _when(moment: datetime | None) -> str:
    return "–" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


routes: list[BaseRoute] = [
    Route("/admin", dashboard, name="admin"),
    Route("/admin/plots/growth.png", growth_plot, name="admin_growth_plot"),
    Route("/admin/plots/picks.png", picks_plot, name="admin_picks_plot"),
    Route("/admin/exports", post(start_export), methods=["POST"], name="admin_export"),
    Route("/admin/exports/{id:int}/download", download_export, name="admin_export_download"),
    Route("/admin/ban", post(ban), methods=["POST"], name="admin_ban"),
    Route("/admin/unban", post(unban), methods=["POST"], name="admin_unban"),
    Route("/admin/runs/{id:int}", run_page, name="admin_run"),
    Route("/admin/runs/{id:int}/files/{path:path}", run_file, name="admin_run_file"),
    Route("/admin/audit", audit_log, name="admin_audit"),
    Route("/admin/{rest:path}", unknown, name="admin_unknown"),
]
