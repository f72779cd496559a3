"""The members' pages: imagine, a set (live progress, then pick), rate others' sets, my data.

Every action is a use case of :class:`~bot.service.CollectionService`, as on Discord and
the CLI; a refusal shows the service's own message. The pages work without JavaScript
(every button is a form that POSTs and comes back with a 303); bot/web/static/members.js
adds live progress (server-sent events from ``/sets/{id}/events``), voting without a
reload, and keys 1–4 to pick.

A set is shown the same whoever asked for it, mixed and control sets included: nothing
on a page tells them apart (a member who could would judge the label, not the images).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bot.db.models import GenerationStatus, VoteKind
from bot.domain import GenerationOptions, GenerationView, Refusal, Vote, pickers_words
from bot.notify import GenerationEvent, ProgressEvent
from bot.picks.record import gone
from bot.runtime import Platform
from bot.service import CollectionService
from bot.web.events import EventHub
from bot.web.pages import page, problem, wants_json
from bot.web.security import Viewer, post, require_member
from bot.web.zips import member_zip

log = logging.getLogger(__name__)
SKIPS_KEPT = 50  # sets a member skipped on "Rate others' sets", remembered in the session

CONNECT_WAIT_SECONDS = 5.0  # a progress stream waits this long at most for the listener
KEEPALIVE_SECONDS = 15.0  # a comment line on an idle progress stream (proxies close silent ones)
MAX_ID = 2**63 - 1  # generations.id is a bigint
WAITING = (GenerationStatus.queued, GenerationStatus.running)
STATUS_WORDS = {
    GenerationStatus.queued: "waiting in the queue",
    GenerationStatus.running: "being drawn",
    GenerationStatus.done: "done",
    GenerationStatus.failed: "failed",
}


def _service(request: Request) -> CollectionService:
    platform: Platform = request.app.state.platform
    return platform.service


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _set_id(request: Request) -> int:
    """The set's id from the path; an id no row can have is a set that is gone."""
    generation_id: int = request.path_params["id"]
    if generation_id > MAX_ID:
        raise gone(generation_id)
    return generation_id


def _status_of(refusal: Refusal) -> int:
    if refusal.code == "gone":
        return 404
    return 409 if refusal.code == "queue_full" else 400


def _refused_json(refusal: Refusal) -> Response:
    return JSONResponse(
        {"error": refusal.message, "code": refusal.code}, status_code=_status_of(refusal)
    )


def _gone_page(request: Request, refusal: Refusal) -> Response:
    if wants_json(request):
        return _refused_json(refusal)
    return problem(request, f"This set is gone. {refusal.message}", 404)


# ----- words ------------------------------------------------------------------------


def vote_value(vote: Vote) -> str:
    """A vote as the form field says it: the image number shown (1 …), ``tie`` or ``none``."""
    return str(vote.index + 1) if vote.index is not None else vote.kind.value


def vote_words(vote: Vote | None) -> str:
    """The member's current vote in words (``#vote-status``)."""
    if vote is None:
        return (
            "You have not voted on this set yet: pick the image you like best "
            "(click it, or press its number)."
        )
    if vote.index is not None:
        return f"You picked image {vote.index + 1}."
    return "You voted: no favourite." if vote.kind == VoteKind.tie else "You voted: none are good."


def _vote_name(vote: Vote) -> str:
    if vote.index is not None:
        return f"image {vote.index + 1}"
    return "no favourite" if vote.kind == VoteKind.tie else "none are good"


def voted_message(vote: Vote, previous: Vote | None) -> str:
    """What a vote recorded: the current vote, and what it replaced."""
    words = vote_words(vote)
    if previous is None or previous == vote:
        return words
    return f"{words[:-1]} (changed from {_vote_name(previous)})."


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# ----- imagine ----------------------------------------------------------------------


async def home(request: Request) -> Response:
    """The imagine page."""
    require_member(request)
    return _imagine_page(request, {})


def _imagine_page(
    request: Request, typed: dict[str, str], error: str | None = None, status: int = 200
) -> Response:
    default = request.app.state.settings.generator.images_per_prompt
    return page(
        request,
        "imagine.html",
        status=status,
        title="Imagine",
        nav="imagine",
        counts=(2, 3, 4),
        form={
            "prompt": typed.get("prompt", ""),
            "count": typed.get("count") or str(default),
            "negative": typed.get("negative", ""),
            "seed": typed.get("seed", ""),
        },
        error=error,
    )


def _count(text: str) -> int | None:
    """The number of images asked for (None: the default); the 2–4 rule is the service's."""
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise Refusal(
            f"{text!r} is not a number of images: choose 2, 3 or 4.", code="bad_count"
        ) from None


def _seed(text: str) -> int | None:
    """The seed typed (None: random seeds); its range is the service's rule."""
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise Refusal(
            f"{text!r} is not a seed: give a whole number, or leave it empty for random seeds.",
            code="bad_seed",
        ) from None


async def imagine(request: Request, form: FormData) -> Response:
    """Queue a prompt; 303 to its set (``{"id": …}`` for a script)."""
    who = require_member(request)
    typed = {name: _field(form, name) for name in ("prompt", "count", "negative", "seed")}
    try:
        options = GenerationOptions(negative_prompt=typed["negative"], seed=_seed(typed["seed"]))
        # delivery=None: the web shows a set when its member opens its page, and nothing
        # else may answer it. A member signed in with Discord is discord:<id>, so the Discord
        # bot's delivery loop would pick up a set that carried a delivery note
        # (CollectionService.undelivered keeps only rows whose note is set, and
        # Deliverer.deliver posts only those); with none it never posts it anywhere.
        submitted = await _service(request).submit_prompt(
            who.member, typed["prompt"], _count(typed["count"]), options, delivery=None
        )
    except Refusal as refusal:
        if wants_json(request):
            return _refused_json(refusal)
        return _imagine_page(request, typed, refusal.message, _status_of(refusal))
    if wants_json(request):
        return JSONResponse({"id": submitted.generation_id, "position": submitted.queue_position})
    return RedirectResponse(f"/sets/{submitted.generation_id}", status_code=303)


# ----- a set ------------------------------------------------------------------------


async def set_page(request: Request) -> Response:
    """One set: live progress while it is made, then its images and the vote buttons."""
    who = require_member(request)
    try:
        view = await _service(request).get_generation(_set_id(request))
    except Refusal as refusal:
        return _gone_page(request, refusal)
    return await _render_set(request, who, view, rate=request.query_params.get("rate") == "1")


async def _render_set(
    request: Request,
    who: Viewer,
    view: GenerationView,
    *,
    rate: bool,
    status: int = 200,
    vote_error: str | None = None,
    action_error: str | None = None,
) -> Response:
    service = _service(request)
    vote = None
    if view.status == GenerationStatus.done:
        vote = await service.vote_of(view.id, who.member)
    progress_text = ""
    if view.status == GenerationStatus.queued:
        position = await service.queue_position(view.id)
        progress_text = f"waiting in the queue (position {position})"
    elif view.status == GenerationStatus.running:
        progress_text = "generating…"
    withheld = ""
    if view.withheld:  # said as on Discord: how many, never which
        verb = "was" if view.withheld == 1 else "were"
        withheld = f"{_plural(view.withheld, 'image')} {verb} withheld by the safety filter."
    return page(
        request,
        "set.html",
        status=status,
        title=f"Set #{view.id}",
        nav="rate" if rate else "",
        view=view,
        rate=rate,
        own=view.requested_by == who.member,
        waiting=view.status in WAITING,
        status_words=STATUS_WORDS[view.status],
        progress_text=progress_text,
        images=[
            {
                "k": image.index + 1,
                "url": f"/images/{image.storage_key}",
                "width": image.width,
                "height": image.height,
            }
            for image in view.images
        ],
        picked=vote.index + 1 if vote is not None and vote.index is not None else None,
        voted=vote is not None,
        vote_status=vote_error or vote_words(vote),
        vote_error=vote_error is not None,
        pickers=pickers_words(view.pickers),
        withheld=withheld,
        action_error=action_error,
    )


async def vote(request: Request, form: FormData) -> Response:
    """Record the member's vote: JSON for the page's script, else 303 back to the set."""
    who = require_member(request)
    service = _service(request)
    rate = _field(form, "rate") == "1"
    try:
        generation_id = _set_id(request)
        result = await service.record_choice(
            generation_id, who.member, Vote.parse(_field(form, "vote"))
        )
    except Refusal as refusal:
        if refusal.code == "gone":
            return _gone_page(request, refusal)
        if wants_json(request):
            return _refused_json(refusal)
        try:
            view = await service.get_generation(request.path_params["id"])
        except Refusal as missing:
            return _gone_page(request, missing)
        return await _render_set(
            request, who, view, rate=rate, status=_status_of(refusal), vote_error=refusal.message
        )
    if wants_json(request):
        return JSONResponse(
            {
                "vote": vote_value(result.vote),
                "changed": result.changed,
                "message": voted_message(result.vote, result.previous),
                "pickers": result.pickers,
                "pickers_text": pickers_words(result.pickers),
            }
        )
    back = f"/sets/{generation_id}" + ("?rate=1" if rate else "")
    return RedirectResponse(back, status_code=303)


async def reroll(request: Request, form: FormData) -> Response:
    """The same prompt again with new seeds, as a new set of the member's: 303 to it."""
    who = require_member(request)
    service = _service(request)
    try:
        # delivery=None, as in imagine(): no other front end answers a web set.
        submitted = await service.reroll(_set_id(request), who.member, delivery=None)
    except Refusal as refusal:
        if refusal.code == "gone":
            return _gone_page(request, refusal)
        if wants_json(request):
            return _refused_json(refusal)
        try:
            view = await service.get_generation(request.path_params["id"])
        except Refusal as missing:
            return _gone_page(request, missing)
        return await _render_set(
            request, who, view, rate=False, status=_status_of(refusal), action_error=refusal.message
        )
    if wants_json(request):
        return JSONResponse({"id": submitted.generation_id})
    return RedirectResponse(f"/sets/{submitted.generation_id}", status_code=303)


# ----- live progress ----------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


RUNNING = _sse("running", {})


async def _now(service: CollectionService, generation_id: int) -> tuple[str, bool]:
    """The set's state as an event, and whether it is final (done, failed or gone)."""
    try:
        view = await service.get_generation(generation_id)
    except Refusal:
        return _sse("done", {"status": "gone"}), True
    if view.status not in WAITING:
        return _sse("done", {"status": view.status.value}), True
    if view.status == GenerationStatus.queued:
        return _sse("queued", {"position": await service.queue_position(generation_id)}), False
    return RUNNING, False


async def set_events(request: Request) -> Response:
    """Server-sent events of one set: ``queued`` {position}, ``running``, ``progress``
    {step, total}, then ``done`` {status} (done, failed or gone), after which it ends.

    It subscribes before it reads the set's state, so an end in between is not missed (a
    set still waiting is read again once the listener is connected, waiting up to
    :data:`CONNECT_WAIT_SECONDS` for it); it looks again when the listener reconnects and at
    every keepalive (every :data:`KEEPALIVE_SECONDS`). It ends when the client goes
    (Starlette cancels it) or the server stops.
    """
    require_member(request)
    generation_id = request.path_params["id"]
    service = _service(request)
    hub: EventHub = request.app.state.events
    stopping: asyncio.Event = request.app.state.stopping

    async def stream() -> AsyncIterator[str]:
        if generation_id > MAX_ID:
            yield _sse("done", {"status": "gone"})
            return
        async with hub.subscribe(generation_id) as queue:
            yield "retry: 3000\n\n"
            last, final = await _now(service, generation_id)
            if not final and not hub.connected.is_set():
                # Right after the server started its listener may not be connected yet: wait
                # a little, so that the first steps are not missed (an end would not be: the
                # listener's connect makes every stream look again).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hub.connected.wait(), CONNECT_WAIT_SECONDS)
                last, final = await _now(service, generation_id)
            yield last
            if final:
                return
            stop = asyncio.ensure_future(stopping.wait())
            get: asyncio.Future[Any] | None = None
            try:
                while True:
                    if get is None:
                        get = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait(
                        {get, stop}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                    )
                    if stop in done:
                        return
                    if get not in done:  # quiet: keep the connection, and look again
                        yield ": keepalive\n\n"
                        event: Any = None
                    else:
                        event, get = get.result(), None
                    if isinstance(event, ProgressEvent):
                        last = _sse("progress", {"step": event.step, "total": event.total})
                        yield last
                    elif isinstance(event, GenerationEvent):
                        yield _sse("done", {"status": event.status})
                        return
                    else:  # a keepalive, or the listener reconnected: look at the row
                        now, final = await _now(service, generation_id)
                        if final:
                            yield now
                            return
                        # "running" says less than the step a progress event showed
                        if now != last and not (
                            now == RUNNING and last.startswith("event: progress")
                        ):
                            yield now
                            last = now
            finally:
                for waiting in (get, stop):
                    if waiting is not None:
                        waiting.cancel()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# ----- rate others' sets ------------------------------------------------------------


async def rate(request: Request) -> Response:
    """The next set of another member to vote on, or a page saying there is none now."""
    who = require_member(request)
    skipped = [s for s in request.session.get("skipped", []) if isinstance(s, int)]
    passed = request.query_params.get("skip", "")
    if passed.isdigit() and int(passed) not in skipped:  # "Skip": only this session's state
        skipped = [*skipped, int(passed)][-SKIPS_KEPT:]
        request.session["skipped"] = skipped
    generation_id = await _service(request).next_to_rate(who.member, skipped)
    if generation_id is None:
        return page(request, "rate.html", title="Rate others' sets", nav="rate")
    return RedirectResponse(f"/sets/{generation_id}?rate=1", status_code=303)


# ----- my data ----------------------------------------------------------------------


async def me(request: Request) -> Response:
    """The member's prompts and votes, a copy of their data, and forgetting them."""
    who = require_member(request)
    return await _me_page(request, who)


async def _me_page(
    request: Request, who: Viewer, *, forget_error: str | None = None, status: int = 200
) -> Response:
    service = _service(request)
    sets = await service.my_sets(who.member)
    votes = await service.my_votes(who.member)
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
                "when": _when(s.requested_at),
                "status": STATUS_WORDS[s.status],
                "vote": _vote_name(s.vote) if s.vote else "",
            }
            for s in sets
        ],
        votes=[
            {"id": v.generation_id, "when": _when(v.chosen_at), "vote": _vote_name(v.vote)}
            for v in votes
        ],
        forget_error=forget_error,
    )


async def export_mine(request: Request) -> Response:
    """A zip of the member's data: data.json and the images of their sets."""
    who = require_member(request)
    platform: Platform = request.app.state.platform
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
    if not _field(form, "confirm"):
        return await _me_page(
            request,
            who,
            forget_error="Tick the box to confirm: nothing was deleted.",
            status=400,
        )
    done = await _service(request).forget_user(who.member)
    request.session.clear()
    posted = len(done.deliveries)  # notes of sets asked for on Discord
    taken_down = None
    take_down = request.app.state.platform.take_down  # the bot, when it runs in this process
    if posted and take_down is not None:
        try:
            taken_down = await take_down(done.deliveries)
        except Exception:  # the data are gone; a post that stays is the admin's to remove
            log.exception("could not take down the Discord posts of a forgotten member")
    return page(
        request,
        "forgotten.html",
        title="Forgotten",
        deleted=f"Deleted {_plural(done.generations, 'prompt')} (with their images) and "
        f"{_plural(done.picks, 'vote')}.",
        posted=posted,
        taken_down=taken_down,
    )


routes: list[BaseRoute] = [
    Route("/", home, name="home"),
    Route("/imagine", post(imagine), methods=["POST"], name="imagine"),
    Route("/sets/{id:int}", set_page, name="set"),
    Route("/sets/{id:int}/events", set_events, name="set_events"),
    Route("/sets/{id:int}/vote", post(vote), methods=["POST"], name="vote"),
    Route("/sets/{id:int}/reroll", post(reroll), methods=["POST"], name="reroll"),
    Route("/rate", rate, name="rate"),
    Route("/me", me, name="me"),
    Route("/me/export", export_mine, name="export_mine"),
    Route("/me/forget", post(forget), methods=["POST"], name="forget"),
]
