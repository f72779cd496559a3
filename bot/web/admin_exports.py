"""The admins' exports: start one (``/admin export``'s options), download a finished one.

Starting is a POST behind the CSRF check, audited with what it queued; downloading is
audited too (members' data leave the server) and serves only what is inside the exports
folder: a file as it is, a folder as a zip made while it is sent (bot/web/zips.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bot.db import admin_lists
from bot.export.run import is_format
from bot.export.selection import Selection, is_votes
from bot.export.tasks import exports_root
from bot.web.admin import done, export_state
from bot.web.forms import field, path_id, platform_of, service_of
from bot.web.pages import problem
from bot.web.security import post, require_admin
from bot.web.zips import folder_zip


async def start_export(request: Request, form: FormData) -> Response:
    """Queue an export job, with /admin export's options."""
    viewer = await require_admin(request, "export")
    service = service_of(request)
    format = field(form, "format", strip=True) or "hps"
    rater = field(form, "rater", strip=True) or "requester"
    votes = field(form, "votes", strip=True) or None
    controls_text = field(form, "controls", strip=True) or "default"
    incremental = field(form, "incremental", strip=True) in ("on", "true", "1", "yes")
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
    return done(request, "export", text, job_id=queued.job_id, out=str(queued.out))


async def download_export(request: Request) -> Response:
    """A finished export as a zip of its folder (streamed, zipped in a worker thread)."""
    viewer = await require_admin(request, "export-download", str(request.path_params["id"])[:200])
    export_id = path_id(request, "export")
    platform = platform_of(request)
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
    path, state = export_state(out_path, root)
    if state == "elsewhere":
        return path, (
            f"Export {export_id} was written to {out_path}, outside the exports folder "
            f"({root.resolve()}): only exports queued here or with /admin export can be "
            "downloaded. Copy it from the server."
        )
    if state == "gone":
        return path, f"Export {export_id}'s folder {path} is gone."
    return path, None


routes: list[BaseRoute] = [
    Route("/admin/exports", post(start_export), methods=["POST"], name="admin_export"),
    Route("/admin/exports/{id}/download", download_export, name="admin_export_download"),
]
