"""The members' pages: imagine, a set and its votes, asking again, rate others' sets.

Every action is a use case of :class:`~bot.service.CollectionService`, as on Discord and
the CLI; a refusal shows the service's own message. The pages work without JavaScript
(every button is a form that POSTs and comes back with a 303); bot/web/static/members.js
adds live progress (server-sent events, bot/web/progress.py), voting without a reload,
and keys 1–4 to pick. "My data" is bot/web/mydata.py.

A set is shown the same whoever asked for it, mixed and control sets included: nothing
on a page tells them apart (a member who could would judge the label, not the images).
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.db.models import GenerationStatus
from bot.domain import GenerationOptions, GenerationView, Refusal, Vote, pickers_words
from bot.web.forms import field, parse_id, path_id, service_of
from bot.web.pages import page, problem, wants_json
from bot.web.security import Viewer, post, require_member
from bot.web.words import STATUS_WORDS, plural, vote_value, vote_words, voted_message

SKIPS_KEPT = 50  # sets a member skipped on "Rate others' sets", remembered in the session
WAITING = (GenerationStatus.queued, GenerationStatus.running)


def set_id(request: Request) -> int:
    """The set's id from the path (404, "There is no set …", for one no row can have)."""
    return path_id(request, "set")


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
    typed = {name: field(form, name) for name in ("prompt", "count", "negative", "seed")}
    try:
        options = GenerationOptions(negative_prompt=typed["negative"], seed=_seed(typed["seed"]))
        # delivery=None: the web shows a set when its member opens its page, and nothing
        # else may answer it. A member signed in with Discord is discord:<id>, so the Discord
        # bot's delivery loop would pick up a set that carried a delivery note
        # (CollectionService.undelivered keeps only rows whose note is set, and
        # Deliverer.deliver posts only those); with none it never posts it anywhere.
        submitted = await service_of(request).submit_prompt(
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
        view = await service_of(request).get_generation(set_id(request))
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
    service = service_of(request)
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
        withheld = f"{plural(view.withheld, 'image')} {verb} withheld by the safety filter."
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
    service = service_of(request)
    rate = field(form, "rate") == "1"
    generation_id = set_id(request)
    try:
        result = await service.record_choice(
            generation_id, who.member, Vote.parse(field(form, "vote"))
        )
    except Refusal as refusal:
        return await _refused_on_set(request, who, generation_id, refusal, rate=rate)
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
    service = service_of(request)
    generation_id = set_id(request)
    try:
        # delivery=None, as in imagine(): no other front end answers a web set.
        submitted = await service.reroll(generation_id, who.member, delivery=None)
    except Refusal as refusal:
        return await _refused_on_set(request, who, generation_id, refusal, action=True)
    if wants_json(request):
        return JSONResponse({"id": submitted.generation_id})
    return RedirectResponse(f"/sets/{submitted.generation_id}", status_code=303)


async def _refused_on_set(
    request: Request,
    who: Viewer,
    generation_id: int,
    refusal: Refusal,
    *,
    rate: bool = False,
    action: bool = False,
) -> Response:
    """A refused vote (or, ``action``, reroll) on a set: JSON for the page's script, else the
    set again with the message where the member looks (a gone set: its own page)."""
    if refusal.code == "gone":
        return _gone_page(request, refusal)
    if wants_json(request):
        return _refused_json(refusal)
    try:
        view = await service_of(request).get_generation(generation_id)
    except Refusal as missing:
        return _gone_page(request, missing)
    said = {"action_error" if action else "vote_error": refusal.message}
    return await _render_set(request, who, view, rate=rate, status=_status_of(refusal), **said)


# ----- rate others' sets ------------------------------------------------------------


async def rate(request: Request) -> Response:
    """The next set of another member to vote on, or a page saying there is none now."""
    who = require_member(request)
    skipped = [s for s in request.session.get("skipped", []) if isinstance(s, int)]
    generation_id = await service_of(request).next_to_rate(who.member, skipped)
    if generation_id is None:
        return page(request, "rate.html", title="Rate others' sets", nav="rate")
    return RedirectResponse(f"/sets/{generation_id}?rate=1", status_code=303)


async def skip(request: Request, form: FormData) -> Response:
    """ "Skip this set": pass the set over (only this session remembers it), then the next."""
    require_member(request)
    text = field(form, "set", strip=True)
    passed = parse_id(text)
    if passed is None:
        return problem(request, f"There is no set {text[:40]} to skip.", 404)
    skipped = [s for s in request.session.get("skipped", []) if isinstance(s, int)]
    if passed not in skipped:
        request.session["skipped"] = [*skipped, passed][-SKIPS_KEPT:]
    return RedirectResponse("/rate", status_code=303)


routes: list[BaseRoute] = [
    Route("/", home, name="home"),
    Route("/imagine", post(imagine), methods=["POST"], name="imagine"),
    Route("/sets/{id}", set_page, name="set"),
    Route("/sets/{id}/vote", post(vote), methods=["POST"], name="vote"),
    Route("/sets/{id}/reroll", post(reroll), methods=["POST"], name="reroll"),
    Route("/rate", rate, name="rate"),
    Route("/rate/skip", post(skip), methods=["POST"], name="rate_skip"),
]
