"""What members read: every text the bot posts, built from service results (no discord here)."""

from __future__ import annotations

from typing import Any

from bot.domain import GenerationView, QueueStatus, Stats

HELP = (
    "**prefloop** draws 2–4 images of your prompt; click **Pick** under the one you like "
    "best. Your picks teach the models what people prefer (Human Preference Score).\n"
    "• `/imagine prompt:<text> [count:2-4] [negative:<text>] [seed:<n>]` — new images\n"
    "• **Pick k** — your favourite (click another to change it); **Reroll** — new seeds\n"
    "• `/stats` — your numbers and the dataset's\n"
    "• `/forget-me` — delete your prompts and picks\n"
    "Anyone who sees a message may pick; picks are stored under a hashed id in exports."
)


def _short(prompt: str, limit: int = 200) -> str:
    prompt = prompt.replace("*", "\\*").replace("`", "'")
    return prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"


def queued(prompt: str, position: int) -> str:
    ahead = "next in line" if position <= 1 else f"position {position} in the queue"
    return f"🕐 **{_short(prompt)}** — queued, {ahead}"


def progress(prompt: str, step: int, total: int) -> str:
    if step <= 0:
        return f"🎨 **{_short(prompt)}** — generating…"
    return f"🎨 **{_short(prompt)}** — generating, step {step}/{total}"


def made_by(view: GenerationView) -> str:
    adapter = f"adapter #{view.adapter_version_id}" if view.adapter_version_id else "no adapter"
    return f"`{view.generator_version or 'unknown model'}`, {adapter}"


def pickers(count: int) -> str:
    if count == 0:
        return "No one has picked yet."
    return "1 member has picked." if count == 1 else f"{count} members have picked."


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
    reason = view.error or "unknown reason"
    return f"❌ **{_short(view.prompt)}** — for {requester_mention}: {reason}"


def picked(index: int, previous: int | None, changed: bool) -> str:
    k = index + 1
    if not changed:
        return f"Image {k} is already your pick."
    if previous is None:
        return f"You picked image {k}; click another to change your pick."
    return f"You changed your pick from image {previous + 1} to image {k}."


def stats(numbers: Stats) -> str:
    models = ", ".join(f"{k}: `{v}`" for k, v in numbers.active_models.items()) or "none yet"
    done = numbers.generations.get("done", 0)
    return (
        f"**You**: {numbers.member_generations or 0} prompts, "
        f"{numbers.member_picks or 0} picks\n"
        f"**Dataset**: {done} finished generations, {numbers.images} images, "
        f"{numbers.picks} picks by {numbers.members} members\n"
        f"**Active models**: {models}"
    )


def admin_stats(numbers: Stats) -> str:
    statuses = ", ".join(f"{k} {v}" for k, v in numbers.generations.items())
    return (
        f"members {numbers.members} (banned {numbers.banned}); generations: {statuses}; "
        f"images {numbers.images} (flagged {numbers.flagged_images}); picks {numbers.picks} "
        f"(by requesters {numbers.requester_picks}, re-picks {numbers.repicks})"
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
        f"; last failure #{status.last_failure[0]}: {status.last_failure[1]}"
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


def retrain_run(run: Any) -> str:
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


def models(versions: list[Any]) -> str:
    """The registered versions, newest first (at most 10), the active ones marked."""
    if not versions:
        return "No trained models are registered yet; the generator runs without an adapter."
    lines = []
    for v in versions[:10]:
        metrics = ", ".join(f"{k} {x:.3g}" if isinstance(x, float) else f"{k} {x}"
                            for k, x in list(v.metrics.items())[:2])  # fmt: skip
        mark = " **(active)**" if v.status == "active" else f" ({v.status})"
        lines.append(f"#{v.id} {v.kind}{mark}: `{v.uri}`" + (f" — {metrics}" if metrics else ""))
    return "\n".join(lines)
