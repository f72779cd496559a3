"""The words and figures the pages show: a set's state, a vote, counts, times, values.

One place for each, so that a set's page, the answer to a vote, "My data" and the
admins' pages say a thing the same way (the browser tests read these words). How many
voted on a set is said as on Discord: :func:`bot.domain.pickers_words`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.db.models import GenerationStatus, VoteKind
from bot.domain import Vote

STATUS_WORDS = {
    GenerationStatus.queued: "waiting in the queue",
    GenerationStatus.running: "being drawn",
    GenerationStatus.done: "done",
    GenerationStatus.failed: "failed",
}


# ----- votes ---------------------------------------------------------------------------


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


def vote_name(vote: Vote) -> str:
    """A vote in a few words: ``image 2``, ``no favourite``, ``none are good``."""
    if vote.index is not None:
        return f"image {vote.index + 1}"
    return "no favourite" if vote.kind == VoteKind.tie else "none are good"


def voted_message(vote: Vote, previous: Vote | None) -> str:
    """What a vote recorded: the current vote, and what it replaced."""
    words = vote_words(vote)
    if previous is None or previous == vote:
        return words
    return f"{words[:-1]} (changed from {vote_name(previous)})."


# ----- counts, times, values -----------------------------------------------------------


def plural(count: int, word: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def when(moment: datetime | None) -> str:
    """A moment in UTC to the minute (``–``: none)."""
    return "–" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def scalar(value: Any) -> bool:
    """Whether ``value`` is shown as it is (a string, number, bool or nothing)."""
    return value is None or isinstance(value, str | int | float | bool)


def shown(value: Any) -> str:
    """A figure as a page shows it: floats to 4 digits, lists in brackets, ``–`` for none."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return "–" if value is None else str(value)
