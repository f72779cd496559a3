"""The admins' pages: the dashboard, its plots, bans, the audit log; helpers the others share.

The same checks and audit as Discord's ``/admin``: every page first calls
:func:`~bot.web.security.require_admin` (the same admins; a refused attempt is audited and
answered 403), every action is a POST behind the CSRF check and is audited with its
outcome, under the action's name prefixed ``web:``. Every figure comes from the use cases
and reports the CLI and ``/admin`` read; nothing here counts on its own. A retrain run's
page is bot/web/admin_runs.py, exports are bot/web/admin_exports.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.arena.leaderboard import Leaderboard, leaderboard
from bot.arena.versions import label
from bot.db import admin_lists, timeline
from bot.db.models import Frontend
from bot.domain import Refusal, UserRef
from bot.export.tasks import exports_root
from bot.jobs.status import unfinished_jobs
from bot.names import EXPORT_TASK
from bot.raters.agreement import summary as agreement_summary
from bot.raters.agreement import week_line
from bot.retrain.triggers import runs
from bot.runtime import Platform
from bot.web.forms import field as form_field
from bot.web.forms import page_number, platform_of, service_of
from bot.web.pages import page, problem, wants_json
from bot.web.plots import Memo, growth_png, picks_png
from bot.web.security import Viewer, post, require_admin
from bot.web.words import scalar, shown, when

RUNS_SHOWN = 10
RATERS_SHOWN = 20
AUDIT_PAGE = 100
NOTICE_MINUTES = 10  # ?done=ACTION shows the admin's own latest ACTION this recent
PLOT_CACHE = "private, max-age=60"


# ----- the dashboard -------------------------------------------------------------------


async def dashboard(request: Request) -> Response:
    """Growth, members and raters, the leaderboard, models, runs, exports, bans."""
    viewer = await require_admin(request, "dashboard")
    platform = platform_of(request)
    service = platform.service
    stats = await service.stats()
    async with service.sessions() as session:
        exports = await admin_lists.exports(session)
        banned = await admin_lists.banned_members(session)
        notice = await _notice(session, viewer, request.query_params.get("done"))
    # The raters' fit, the agreement and the leaderboard's bootstrap read every vote: kept
    # until the data change (a ban shows on the raters' table, so the bans are part of it).
    memo, marker = _memo(request), await _marker(platform)
    agreement = await memo.get("agreement", marker, service.raters.dataset_agreement)
    raters = await memo.get(
        "raters",
        (marker, tuple(b.member for b in banned)),
        lambda: service.raters.raters(sort="weight"),
    )
    board = await memo.get(
        "leaderboard", marker, lambda: leaderboard(service.sessions, service.settings)
    )
    versions = await service.registry.versions()
    latest = await runs(service.sessions, RUNS_SHOWN)
    jobs = [job for job in await unfinished_jobs(service.sessions) if job.task == EXPORT_TASK]
    root = exports_root(service.settings)
    states = await asyncio.to_thread(
        lambda: {e.id: export_state(e.out_path, root)[1] for e in exports}
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
        when=when,
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
    return await _plot(request, "growth", timeline.growth, growth_png)


async def picks_plot(request: Request) -> Response:
    """Votes per day by kind: picks, no favourite, none are good (PNG)."""
    return await _plot(request, "picks", timeline.daily_votes, picks_png)


async def _plot(
    request: Request,
    name: str,
    read: Callable[[AsyncSession], Awaitable[Any]],
    draw: Callable[[Any], bytes],
) -> Response:
    """A plot of the data ``read`` finds, drawn off the loop and kept until the data change."""
    await require_admin(request, "plots", name)
    platform = platform_of(request)

    async def made() -> bytes:
        async with platform.sessions() as session:
            data = await read(session)
        return await asyncio.to_thread(draw, data)

    png = await _memo(request).get(f"{name}.png", await _marker(platform), made)
    return Response(png, media_type="image/png", headers={"Cache-Control": PLOT_CACHE})


def _memo(request: Request) -> Memo:
    """The app's cache of drawn plots, the leaderboard, the raters and the agreement (one
    per app, made on first use)."""
    state = request.app.state
    memo: Memo | None = getattr(state, "admin_memo", None)
    if memo is None:
        memo = state.admin_memo = Memo()
    return memo


async def _marker(platform: Platform) -> tuple[Any, ...]:
    async with platform.sessions() as session:
        return await timeline.data_version(session)


# ----- bans ----------------------------------------------------------------------------


async def ban(request: Request, form: FormData) -> Response:
    """Ban a member (``discord:123``, ``cli:bob``; digits alone are a Discord id)."""
    text = form_field(form, "member", strip=True)
    viewer = await require_admin(request, "ban", text[:200] or None)
    member = _member(text)
    reason = form_field(form, "reason", strip=True) or None
    service = service_of(request)
    await service.ban_user(member, reason)
    outcome = f"{member} is banned" + (f" ({reason})." if reason else ".")
    await service.audit(
        viewer.member, "web:ban", target=str(member), outcome=outcome, reason=reason
    )
    return done(request, "ban", outcome, member=str(member))


async def unban(request: Request, form: FormData) -> Response:
    """Lift a member's ban."""
    text = form_field(form, "member", strip=True)
    viewer = await require_admin(request, "unban", text[:200] or None)
    member = _member(text)
    service = service_of(request)
    lifted = await service.unban_user(member)
    outcome = f"{member} is {'no longer' if lifted else 'not'} banned."
    await service.audit(viewer.member, "web:unban", target=str(member), outcome=outcome)
    return done(request, "unban", outcome, member=str(member), lifted=lifted)


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


# ----- the audit log -------------------------------------------------------------------


async def audit_log(request: Request) -> Response:
    """Every admin action, allowed or refused, newest first, 100 to a page."""
    await require_admin(request, "audit")
    text = request.query_params.get("page", "1")
    number = page_number(text)
    if number is None:
        return problem(request, f"page {text[:40]!r} is not a page number (1, 2, …).", 400)
    platform = platform_of(request)
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
        when=when,
    )


def _details(details: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {shown(v) if scalar(v) else v}" for k, v in details.items())


async def unknown(request: Request) -> Response:
    """Any other /admin address: admins only, like the rest (then: no such page)."""
    await require_admin(request, "page", request.url.path[:200])
    return problem(request, "There is no such admin page.", 404)


# ----- shared by the admins' pages ------------------------------------------------------


def done(request: Request, action: str, message: str, **details: Any) -> Response:
    """An action's answer: JSON for scripts, else back to the dashboard, which says it."""
    if wants_json(request):
        return JSONResponse({"message": message, **details})
    section = "exports" if action == "export" else "bans"
    return RedirectResponse(f"/admin?done={action}#{section}", status_code=303)


def export_state(out_path: str, root: Path) -> tuple[Path, str | None]:
    """The export's path resolved, and "elsewhere" (outside the exports folder), "gone",
    or None (it can be downloaded)."""
    root = root.resolve()
    path = Path(out_path).resolve()
    if not path.is_relative_to(root) or path == root:
        return path, "elsewhere"
    return path, None if path.exists() else "gone"


routes: list[BaseRoute] = [
    Route("/admin", dashboard, name="admin"),
    Route("/admin/plots/growth.png", growth_plot, name="admin_growth_plot"),
    Route("/admin/plots/picks.png", picks_plot, name="admin_picks_plot"),
    Route("/admin/ban", post(ban), methods=["POST"], name="admin_ban"),
    Route("/admin/unban", post(unban), methods=["POST"], name="admin_unban"),
    Route("/admin/audit", audit_log, name="admin_audit"),
]
# Any other /admin address: the app puts it after every admin module's routes.
fallback = Route("/admin/{rest:path}", unknown, name="admin_unknown")
