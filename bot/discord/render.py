"""What members read: every text the bot posts, built from service results (no discord here)."""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Any

from bot.db.models import VoteKind
from bot.domain import GenerationView, QueueStatus, RetrainRunView, Stats, Vote, pickers_words
from bot.raters.agreement import summary as agreement_summary
from bot.raters.agreement import week_line
from bot.registry import VersionView

if TYPE_CHECKING:
    from bot.arena.leaderboard import Leaderboard
    from bot.arena.store import ArenaStatus
    from bot.raters.store import RaterView

HELP = (
    "**prefloop** draws 2–4 images of your prompt; click **Pick** under the one you like "
    "best. Your votes teach the models what people prefer (Human Preference Score).\n"
    "• `/imagine prompt:<text> [count:2-4] [negative:<text>] [seed:<n>]` — new images\n"
    "• **Pick k** — your favourite; **No favourite** — no image is better than the others; "
    "**None are good** — none of them is any good. Click another to change your vote.\n"
    "• **Reroll** — the same prompt with new seeds\n"
    "• `/stats` — your numbers and the dataset's\n"
    "• `/forget-me` — delete your prompts and votes\n"
    "Anyone who sees a message may vote; votes are stored under a hashed id in exports."
)


# Every character Discord's markdown gives a meaning to (emphasis, code, spoilers, quotes,
# headings, lists, masked links, mentions, emoji and channel tags, URL schemes). A backslash
# before punctuation shows the character itself.
_MARKDOWN = re.compile(r"([\\*_~|`>#\-\[\]()<:])")
_ZERO_WIDTH_SPACE = "\u200b"
# A preset name ("tiny") or a hub id (owner/name): the only model names members may read.
_PUBLIC_MODEL = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def escape(text: str) -> str:
    """Member text made inert: shown as typed, never as markdown, a link or a mention.

    Line breaks and other control characters become spaces (an echo is one line). A
    zero-width space after every ``@`` keeps ``@everyone``, ``@here`` and ``<@id>`` from
    being read as mentions even where allowed_mentions would permit one.
    """
    flat = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return _MARKDOWN.sub(r"\\\1", flat).replace("@", "@" + _ZERO_WIDTH_SPACE)


def _short(prompt: str, limit: int = 200) -> str:
    # Cut before escaping, so that the cut never splits an escape.
    prompt = prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"
    return escape(prompt)


def public_model_name(model: str | None) -> str:
    """The name of a base model members may read: a hub id or a preset name, never a path.

    ``generator_version`` is ``model`` or ``model+adapter folder``; the adapter is shown by
    its registry id instead, and a model loaded from a folder as "a local model". (A
    relative folder of the form ``a/b`` cannot be told from a hub id here; the settings
    should name local models by absolute path.)
    """
    name = (model or "").split("+", 1)[0]
    if not name:
        return "an unknown model"
    return name if _PUBLIC_MODEL.match(name) and ".." not in name else "a local model"


def queued(prompt: str, position: int) -> str:
    ahead = "next in line" if position <= 1 else f"position {position} in the queue"
    return f"🕐 **{_short(prompt)}** — queued, {ahead}"


def progress(prompt: str, step: int, total: int) -> str:
    if step <= 0:
        return f"🎨 **{_short(prompt)}** — generating…"
    return f"🎨 **{_short(prompt)}** — generating, step {step}/{total}"


def made_by(view: GenerationView) -> str:
    """The base model by its public name and the adapter by its registry id (and the
    negative prompt it served with, "Weird image." for the paper's adapters).

    A mixed set names no version: a member who could tell which image is whose would
    judge the names, not the images.
    """
    if view.comparison_id is not None:
        adapter = "two versions compared"
    elif view.adapter_version_id:
        adapter = f"adapter #{view.adapter_version_id}"
        if prefix := view.params.get("negative_prefix"):
            adapter += f' with "{escape(prefix)}" as its negative prompt'
    else:
        adapter = "no adapter"
    return f"{escape(public_model_name(view.generator_version))}, {adapter}"


def pickers(count: int) -> str:
    """How many members voted on a set (a pick, "No favourite" or "None are good")."""
    return pickers_words(count)


def result(view: GenerationView, requester_mention: str) -> str:
    """The public message under the images."""
    lines = [
        f"🖼️ **{_short(view.prompt)}** — for {requester_mention}",
        f"Made by {made_by(view)}. Which do you like best? {pickers(view.pickers)}",
    ]
    if view.withheld:
        lines.append(f"{view.withheld} image(s) were withheld by the safety filter.")
    return "\n".join(lines)


def failed(view: GenerationView, requester_mention: str) -> str:
    """The public message of a failed generation; ``error`` is the worker's plain sentence."""
    reason = escape(view.error or "The images could not be made.")
    return f"❌ **{_short(view.prompt)}** — for {requester_mention}: {reason}"


_SAID = {
    VoteKind.tie: "no image is better than the others",
    VoteKind.none: "none of these are good",
}


def voted(vote: Vote, previous: Vote | None, changed: bool) -> str:
    """The private answer to a member's vote: what was recorded, in plain words."""
    if vote.index is not None:
        k = vote.index + 1
        if not changed:
            return f"Image {k} is already your pick."
        if previous is None:
            return f"You picked image {k}; click another to change your pick."
        if previous.index is not None:
            return f"You changed your pick from image {previous.index + 1} to image {k}."
        return f"You changed your vote from {previous} to a pick: image {k}."
    said = _SAID[vote.kind]
    if not changed:
        return f"You already said {said}."
    if previous is None:
        return f"You said {said}; click a Pick button or {_other(vote)} to change your vote."
    return f"You changed your vote from {previous} to {vote}: you said {said}."


def _other(vote: Vote) -> str:
    return "“None are good”" if vote.kind == VoteKind.tie else "“No favourite”"


def stats(numbers: Stats, base_model: str | None = None) -> str:
    """A member's /stats: registry ids of the active models, never where they are stored."""
    trained = [f"{kind} #{version}" for kind, version in sorted(numbers.active_versions.items())]
    base = [f"generator {escape(public_model_name(base_model))}"] if base_model else []
    models = ", ".join(base + trained) or "none yet"
    done = numbers.generations.get("done", 0)
    return (
        f"**You**: {numbers.member_generations or 0} prompts, "
        f"{numbers.member_picks or 0} picks, {numbers.member_ties or 0} “No favourite”, "
        f"{numbers.member_nones or 0} “None are good”\n"
        f"**Dataset**: {done} finished generations, {numbers.images} images, "
        f"{numbers.picks} picks, {numbers.ties} “No favourite”, {numbers.nones} “None are "
        f"good” by {numbers.members} members\n"
        f"**Active models**: {models}"
    )


def admin_stats(numbers: Stats) -> str:
    statuses = ", ".join(f"{k} {v}" for k, v in numbers.generations.items())
    return (
        f"members {numbers.members} (banned {numbers.banned}); generations: {statuses}; "
        f"images {numbers.images} (flagged {numbers.flagged_images}); picks {numbers.picks} "
        f"(by requesters {numbers.requester_picks}), no favourite {numbers.ties}, none are "
        f"good {numbers.nones}; re-votes {numbers.repicks}"
    )


def queue_status(status: QueueStatus) -> str:
    oldest = (
        f"oldest queued since <t:{int(status.oldest_queued_at.timestamp())}:R>"
        if status.oldest_queued_at
        else "nothing waiting"
    )
    last = (
        f"last finished <t:{int(status.last_done_at.timestamp())}:R>"
        if status.last_done_at
        else "nothing finished yet"
    )
    failure = (
        f"; last failure #{status.last_failure[0]}: {status.last_failure[1]} (details in the "
        "worker's log)"
        if status.last_failure
        else ""
    )
    export = ""
    if status.last_export:
        when, picks, folder = status.last_export
        export = f"\nlast export <t:{int(when.timestamp())}:R>: {picks} picks in `{folder}`"
    return (
        f"queued {status.queued}, running {status.running}, live workers {status.workers}; "
        f"{oldest}; {last}{failure}{export}"
    )


def retrain_run(run: RetrainRunView | None) -> str:
    """One line on a retrain run: its stage and progress, or what it decided."""
    if run is None:
        return "No retrain has run yet."
    head = f"retrain {run.id} ({run.trigger}) {run.status}"
    if run.status in ("queued", "running"):
        since = run.started_at or run.created_at
        stage = f", {run.stage}" if run.stage else ""
        progress = f": {run.progress}" if run.progress else ""
        return f"{head} since <t:{int(since.timestamp())}:R>{stage}{progress}"
    if run.error:
        return f"{head}: {run.error}"
    return f"{head}: " + "; ".join(d.get("summary", "") for d in (run.outcome or {}).values())


def models(versions: list[VersionView]) -> str:
    """The registered versions, newest first (at most 10), the active ones marked."""
    if not versions:
        return "No trained models are registered yet; the generator runs without an adapter."
    lines = []
    for v in versions[:10]:
        metrics = ", ".join(
            f"{k} {x:.3g}" if isinstance(x, float) else f"{k} {x}"
            for k, x in list(v.metrics.items())[:2]
        )
        mark = " **(active)**" if v.status == "active" else f" ({v.status})"
        lines.append(f"#{v.id} {v.kind}{mark}: `{v.uri}`" + (f" — {metrics}" if metrics else ""))
    return "\n".join(lines)


# ----- the arena (appended: admins' views of comparisons and the leaderboard) -------------

DISCORD_LIMIT = 2000  # characters in one message


def _fit(lines: list[str], limit: int = DISCORD_LIMIT) -> str:
    """Join lines, dropping the last ones (with a note) past Discord's message limit."""
    kept: list[str] = []
    for line in lines:
        if len("\n".join([*kept, line])) > limit - 40:
            kept.append("… (more in `prefloop leaderboard`)")
            break
        kept.append(line)
    return "\n".join(kept)


def arena_status(status: ArenaStatus) -> str:
    """The open comparison (or the last one): share, mixed sets, votes, the gate's test."""
    return _fit(status.lines())


def leaderboard(board: Leaderboard) -> str:
    """The ranking with intervals, head-to-head and the live agreement, as text."""
    return _fit(board.lines())


# ----- raters (admins only: members never see another member's weight) ------------------


def dataset_agreement(found: dict[str, Any], weeks: int = 4) -> str:
    """The dataset's agreement (bot.raters.agreement), with the last ``weeks`` weeks."""
    lines = [f"agreement on sets voted by 2+ members: {agreement_summary(found)}"]
    recent = found["weeks"][-weeks:][::-1]
    lines += [f"• {week_line(week)}" for week in recent]
    return "\n".join(lines)


def rater(view: RaterView, who: str) -> str:
    """One rater's weight and the evidence behind it; ``who``: a mention of them."""
    return _fit(view.lines(f"{who} ({view.member})"))
