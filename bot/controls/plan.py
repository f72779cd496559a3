"""A control set's plan: which corruption, on which image, from which wrong prompt.

Drawn at submit time (:mod:`bot.controls.draw`) and stored in the generation's
``params["control"]`` (besides its ``control_kind`` / ``control_worse`` columns), so that a
retried job makes exactly the same images. No database code: the worker reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.db.models import CORRUPTIONS, ControlKind

PARAM = "control"  # the key in ``generations.params``


@dataclass(frozen=True)
class ControlPlan:
    """Image ``worse`` (0-based) is made worse with ``kind``; ``prompt`` for wrong_prompt."""

    kind: ControlKind
    worse: int
    prompt: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in CORRUPTIONS:
            raise ValueError(f"{self.kind!r} is not a corruption")
        if (self.kind == ControlKind.wrong_prompt) != (self.prompt is not None):
            raise ValueError("a wrong_prompt control (and only one) has a prompt")

    def to_params(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "worse": self.worse, "prompt": self.prompt}

    def columns(self) -> dict[str, Any]:
        """The generation's control columns."""
        return {"control_kind": self.kind.value, "control_worse": self.worse}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ControlPlan | None:
        """The plan a generation's params carry; None for any other set."""
        found = params.get(PARAM)
        if not found:
            return None
        return cls(ControlKind(found["kind"]), int(found["worse"]), found.get("prompt"))
