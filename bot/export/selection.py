"""Which votes an export writes, the raters' weights, and what the manifest says of both.

The HPS v1 release holds picks only, so by default the HPS layout gets the picks on
ordinary sets and nothing else: tools written for the release read it unchanged. Ties,
"none are good" and votes on control sets are written when asked for (``votes="all"``,
``controls=True``); Parquet, the researcher's full table, gets every vote by default.
What is not written is counted, never dropped silently.

Every instance carries its rater's reliability weight (:mod:`bot.raters`), fitted on the
export's own snapshot: the same data the instances come from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard, get_args

import psycopg

from bot.config import Settings
from bot.db.models import ControlKind, VoteKind
from bot.export.picks import Candidate
from bot.raters.evidence import load_population_sync

#: Which kinds of vote to write: picks only (the HPS release's content), or every vote.
Votes = Literal["picks", "all"]

#: Why a valid vote is not written (it was not asked for); counted in the manifest.
LEFT_OUT = ("tie", "none", "control")

VOTES_RULE = (
    "vote: pick (human_preference is the picked image's index), tie ('No favourite': the "
    "images are equally good) or none ('None are good'); human_preference is null for tie "
    "and none. The HPS v1 release holds picks only."
)
CONTROLS_RULE = (
    "a control set has one image known to be worse (control_worse: made with a visible "
    "corruption, or marked by an admin) and, for admin marks, maybe one known to be best "
    "(control_best); both index into the instance's images like human_preference (null "
    "when unknown or when that image is not in the instance). Control votes measure the "
    "raters, not the images: leave them out of training data."
)
RATERS_RULE = (
    "rater_weight: the probability that the voter is a careful rater rather than a random "
    "clicker, from their control-set results and their agreement with other members on "
    "shared sets (bot/raters), fitted on the export's snapshot; a rater with no evidence "
    "gets the prior"
)


def is_votes(name: str) -> TypeGuard[Votes]:
    return name in get_args(Votes)


@dataclass(frozen=True)
class Selection:
    """What an export writes: which vote kinds, and whether votes on control sets."""

    votes: Votes = "picks"
    controls: bool = False

    @classmethod
    def of(cls, format: str, votes: Votes | None, controls: bool | None) -> Selection:
        """The options given, each defaulting by format: HPS the release's content (picks
        on ordinary sets), Parquet everything."""
        full = format == "parquet"
        return cls(
            votes=votes if votes is not None else ("all" if full else "picks"),
            controls=controls if controls is not None else full,
        )

    def left_out(self, candidate: Candidate) -> str | None:
        """Why a valid vote is not written (a LEFT_OUT key), or None: it is written.

        A vote on a control set that is not asked for counts as ``control`` whatever its
        kind; a tie or "none" on an ordinary set as its kind.
        """
        if candidate.control is not None and not self.controls:
            return "control"
        if candidate.vote != VoteKind.pick and self.votes == "picks":
            return candidate.vote
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"votes": self.votes, "controls": self.controls}


class RaterWeights:
    """Each rater's reliability weight, and which raters the export's instances come from."""

    def __init__(self, conn: psycopg.Connection[Any], settings: Settings) -> None:
        population = load_population_sync(conn, settings)
        self.weights = {rater: found.weight for rater, found in population.raters.items()}
        self.prior = population.prior_careful
        self.careful_agreement = population.careful_agreement
        self.written: set[int] = set()  # raters with an instance in the export

    def weight(self, rater: int) -> float:
        """The rater's weight; the prior for a rater with no evidence yet."""
        return self.weights.get(rater, self.prior)

    def summary(self) -> dict[str, Any]:
        """For the manifest: over the raters whose votes the export holds."""
        weights = [self.weight(rater) for rater in self.written]
        return {
            "raters": len(weights),
            "mean_weight": _rounded(sum(weights) / len(weights)) if weights else None,
            "below_half": _rounded(sum(w < 0.5 for w in weights) / len(weights))
            if weights
            else None,
            "prior_careful": self.prior,
            "careful_agreement": _rounded(self.careful_agreement),
            "raters_with_evidence": len(self.weights),
            "rule": RATERS_RULE,
        }


@dataclass
class Tally:
    """What the export wrote and left out, by vote kind and control set."""

    selection: Selection
    written: Counter[str] = field(default_factory=Counter)  # by vote kind
    left_out: Counter[str] = field(default_factory=Counter)  # by LEFT_OUT key
    control_sets: set[str] = field(default_factory=set)  # keyed generation ids
    control_votes: Counter[str] = field(default_factory=Counter)  # by control kind
    controls_written: int = 0

    def seen(self, candidate: Candidate) -> None:
        """A valid vote read (before selection): control sets are counted here."""
        if candidate.control is not None:
            self.control_sets.add(candidate.generation)
            self.control_votes[candidate.control] += 1

    def wrote(self, candidate: Candidate) -> None:
        self.written[candidate.vote] += 1
        if candidate.control is not None:
            self.controls_written += 1

    def votes(self) -> dict[str, Any]:
        return {
            **self.selection.as_dict(),
            "written": {kind.value: self.written.get(kind.value, 0) for kind in VoteKind},
            "left_out": {key: self.left_out.get(key, 0) for key in LEFT_OUT},
            "rule": VOTES_RULE,
        }

    def controls(self) -> dict[str, Any]:
        return {
            "sets": len(self.control_sets),
            "votes": sum(self.control_votes.values()),
            "written": self.controls_written,
            "by_kind": {kind.value: self.control_votes.get(kind.value, 0) for kind in ControlKind},
            "rule": CONTROLS_RULE,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
