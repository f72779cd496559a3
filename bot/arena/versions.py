"""How the arena names a generator version: an adapter's registry id, or the bare base.

A mixed set's ``params["versions"]`` lists, per image index, the version that makes that
image (an int id or None); each stored image records its own in ``images``.
"""

from __future__ import annotations

from bot.domain import Refusal

Version = int | None  # a generator adapter's model_versions id; None = the bare base model
BASE = "base"


def label(version: Version) -> str:
    """``base`` or ``adapter #3``: how reports and admins name a version."""
    return BASE if version is None else f"adapter #{version}"


def key(version: Version) -> str:
    """A JSON-safe key: ``base`` or the id as text."""
    return BASE if version is None else str(version)


def parse(text: str) -> Version:
    """``base`` (or ``none``) is the bare base; ``3``, ``#3`` or ``adapter#3`` an adapter."""
    cleaned = text.strip().lower().replace(" ", "").removeprefix("adapter").lstrip("#")
    if cleaned in (BASE, "none", ""):
        return None
    if not cleaned.isdigit():
        raise Refusal(
            f"{text!r} is not a generator version: give an adapter's id (see `prefloop models`) "
            "or 'base'",
            code="bad_version",
        )
    return int(cleaned)
