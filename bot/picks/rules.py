"""What a member may ask for: prompt text, image count and seeds, checked before anything
is written (the checks of a pick itself are in bot/picks/record.py)."""

from __future__ import annotations

import re
import secrets
import unicodedata
from typing import Any

from bot.config import Settings
from bot.domain import Refusal
from training.tokens import fit_prompt

MAX_SEED = 2**32 - 1
ALLOWED_CONTROLS = frozenset("\t\n\r")  # folded to spaces like any other white space


class PromptRules:
    """The settings' limits, applied to one request; every breach is a :class:`Refusal`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        words = "|".join(re.escape(comparable(w)) for w in settings.limits.blocked_words)
        self._blocked = re.compile(rf"\b({words})\b") if words else None

    def text(self, text: str, what: str = "prompt", *, optional: bool = False) -> str:
        """The text with its white space folded, or a refusal saying what is wrong."""
        refuse_controls(text, what)
        text = " ".join(text.split())
        if not text:
            if optional:
                return ""
            raise Refusal(f"Your {what} is empty: describe the image you want.", code="empty")
        limits = self.settings.limits
        if len(text) > limits.max_prompt_chars:
            raise Refusal(
                f"Your {what} is {len(text)} characters long; "
                f"the limit is {limits.max_prompt_chars}.",
                code="too_long",
            )
        fit = fit_prompt(text, limits.max_prompt_tokens)
        if not fit.fits:
            raise Refusal(
                f"Your {what} is {fit.tokens} CLIP tokens long, and Stable Diffusion reads "
                f"only the first {limits.max_prompt_tokens}. This part would be cut: "
                f"«{_ellipsis(fit.cut)}». Shorten it and try again.",
                code="too_many_tokens",
                details={"tokens": fit.tokens, "cut": fit.cut},
            )
        self.refuse_blocked(text, what)
        return text

    def refuse_blocked(self, text: str, what: str = "prompt") -> None:
        """Refuse ``text`` if it holds a blocked word, however it is spelled in Unicode.

        Matching runs on :func:`comparable` text, so full-width letters, ligatures and
        zero-width characters hidden inside a word do not slip a blocked word through.
        """
        if self._blocked and (found := self._blocked.search(comparable(text))):
            raise Refusal(
                f"Your {what} contains a blocked word ({found.group(0)!r}).", code="blocked"
            )

    def seeds(self, n: int, seed: int | None) -> list[int]:
        """One seed per image: ``seed``, ``seed``+1 … when given, else random."""
        if not 2 <= n <= 4:
            raise Refusal(f"You can ask for 2 to 4 images, not {n}.", code="bad_count")
        if seed is None:
            return [secrets.randbelow(MAX_SEED + 1) for _ in range(n)]
        if not 0 <= seed <= MAX_SEED - 3:
            raise Refusal(f"A seed is a whole number from 0 to {MAX_SEED - 3}.", code="bad_seed")
        return [seed + k for k in range(n)]

    def params(self, seeds: list[int]) -> dict[str, Any]:
        """The generation parameters, fixed at submit time so a retried job repeats them."""
        gen = self.settings.generator
        return {
            "steps": gen.steps,
            "guidance": gen.guidance,
            "width": gen.width,
            "height": gen.height,
            "seeds": seeds,
        }


def comparable(text: str) -> str:
    """``text`` as blocked words are matched: NFKC, format characters dropped, case folded.

    NFKC maps look-alikes (full-width ``ｇｏｒｅ``, ligatures, circled letters) to plain
    letters; format characters (Unicode category Cf: zero-width spaces and joiners, soft
    hyphens, direction marks) are invisible, so they are dropped, not read as a break.
    """
    normal = unicodedata.normalize("NFKC", text)
    visible = "".join(c for c in normal if unicodedata.category(c) != "Cf")
    return unicodedata.normalize("NFKC", visible).casefold()


def refuse_controls(text: str, what: str = "prompt") -> None:
    """Refuse control characters (NUL and the like) other than tabs and line breaks.

    They are invisible, mean nothing to the generator, and PostgreSQL cannot store NUL.
    """
    for position, char in enumerate(text, start=1):
        if unicodedata.category(char) == "Cc" and char not in ALLOWED_CONTROLS:
            raise Refusal(
                f"Your {what} contains a control character (U+{ord(char):04X}, at "
                f"character {position}); remove it and try again.",
                code="control_character",
            )


def _ellipsis(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
