"""A member's own data: "My data" (their prompts and votes), a copy of it, forgetting them.

The copy is a zip made while it is sent (bot/web/zips.py: data.json and the images of
their sets). Forgetting deletes their prompts, images and votes (the use case of
Discord's ``/forget-me``), takes down the bot's posts of their sets when the bot runs in
this process, and signs them out.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bot.picks.mine import LISTED, my_counts
from bot.web.forms import field, platform_of, service_of
from bot.web.pages import page
from bot.web.security import Viewer, post, require_member
from bot.web.words import STATUS_WORDS, plural, vote_name, when
from bot.web.zips import member_zip

log = logging.getLogger(__name__)


async def me(request: Request) -> Response:
    """The member's prompts and votes, a copy of their data, and forgetting them."""
    who = require_member(request)
    return await _me_page(request, who)


async def _me_page(
    request: Request, who: Viewer, *, forget_error: str | None = None, status: int = 200
) -> Response:
    service = service_of(request)
    sets = await service.my_sets(who.member)
    votes = await service.my_votes(who.member)
    sets_capped = votes_capped = ""
    if len(sets) >= LISTED or len(votes) >= LISTED:  # say so: the lists are not everything
        all_sets, all_votes = await my_counts(platform_of(request).sessions, who.member)
        sets_capped = _capped(len(sets), all_sets)
        votes_capped = _capped(len(votes), all_votes)
    return page(
        request,
        "me.html",
        status=status,
        title="My data",
        nav="me",
        sets=[
            {
                "id": s.id,
                "prompt": s.prompt,
                "when": when(s.requested_at),
                "status": STATUS_WORDS[s.status],
                "vote": vote_name(s.vote) if s.vote else "",
            }
            for s in sets
        ],
        votes=[
            {"id": v.generation_id, "when": when(v.chosen_at), "vote": vote_name(v.vote)}
            for v in votes
        ],
        sets_capped=sets_capped,
        votes_capped=votes_capped,
        forget_error=forget_error,
    )


def _capped(shown: int, total: int) -> str:
    """What a list that shows only the latest rows says ("": it shows them all)."""
    if shown < LISTED or total <= shown:
        return ""
    return f"The latest {shown} of {total}; your zip has them all."


async def export_mine(request: Request) -> Response:
    """A zip of the member's data: data.json and the images of their sets."""
    who = require_member(request)
    platform = platform_of(request)
    data = await platform.service.my_data(who.member)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        member_zip(platform.storage, data),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="prefloop-my-data-{stamp}.zip"',
            "Cache-Control": "no-store",
        },
    )


async def forget(request: Request, form: FormData) -> Response:
    """Delete the member's prompts (with their images) and votes, then sign them out."""
    who = require_member(request)
    if not field(form, "confirm"):
        return await _me_page(
            request,
            who,
            forget_error="Tick the box to confirm: nothing was deleted.",
            status=400,
        )
    done = await service_of(request).forget_user(who.member)
    request.session.clear()
    posted = len(done.deliveries)  # notes of sets asked for on Discord
    taken_down = None
    take_down = platform_of(request).take_down  # the bot, when it runs in this process
    if posted and take_down is not None:
        try:
            taken_down = await take_down(done.deliveries)
        except Exception:  # the data are gone; a post that stays is the admin's to remove
            log.exception("could not take down the Discord posts of a forgotten member")
    return page(
        request,
        "forgotten.html",
        title="Forgotten",
        deleted=f"Deleted {plural(done.generations, 'prompt')} (with their images) and "
        f"{plural(done.picks, 'vote')}.",
        posted=posted,
        taken_down=taken_down,
    )


routes: list[BaseRoute] = [
    Route("/me", me, name="me"),
    Route("/me/export", export_mine, name="export_mine"),
    Route("/me/forget", post(forget), methods=["POST"], name="forget"),
]
