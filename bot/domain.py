"""The words the use cases and their front ends share: members, requests, results, refusals."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.db.models import Frontend, GenerationStatus, RetrainRun, RetrainStatus, VoteKind

MAX_MEMBER_ID = 100  # users.external_id is varchar(100)


class FrontEndError(RuntimeError):
    """A front end cannot start or reach its service (no token, token refused …)."""


class MissingToken(FrontEndError):
    """No bot token is configured; the message says which setting to set."""

    def __init__(self) -> None:
        super().__init__(
            "the Discord bot needs its token: set PREFLOOP_DISCORD__TOKEN (Discord Developer "
            "Portal -> your application -> Bot -> Reset Token), or run `prefloop run "
            "--no-discord` to serve without the bot"
        )


class Refusal(Exception):
    """A request we turn down; ``message`` is written for the member who made it."""

    def __init__(self, message: str, *, code: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details or {}


@dataclass(frozen=True)
class UserRef:
    """A member as a front end knows them: ``discord:1234``, ``cli:alice``."""

    frontend: Frontend
    external_id: str

    def __post_init__(self) -> None:
        if not 0 < len(self.external_id) <= MAX_MEMBER_ID:
            raise Refusal(
                f"A member id has 1 to {MAX_MEMBER_ID} characters; got {len(self.external_id)}.",
                code="bad_member",
            )

    @classmethod
    def parse(cls, text: str, default: Frontend = Frontend.cli) -> UserRef:
        """``frontend:id``, or a bare name for the ``default`` front end."""
        prefix, sep, rest = text.partition(":")
        if sep and prefix in Frontend.__members__:
            return cls(Frontend(prefix), rest)
        return cls(default, text)

    def __str__(self) -> str:
        return f"{self.frontend.value}:{self.external_id}"


@dataclass(frozen=True)
class GenerationOptions:
    """What a member may set besides the prompt."""

    negative_prompt: str = ""
    seed: int | None = None


@dataclass(frozen=True)
class Submitted:
    generation_id: int
    job_id: int
    queue_position: int
    seeds: list[int]
    prompt: str


@dataclass(frozen=True)
class Vote:
    """What a member says about a set: a pick of image ``index`` (0-based), "No
    favourite" (``tie``: the images are equally good) or "None are good" (``none``)."""

    kind: VoteKind
    index: int | None = None

    def __post_init__(self) -> None:
        if (self.kind == VoteKind.pick) != (self.index is not None):
            raise ValueError(f"a {self.kind} vote with image index {self.index}")

    @classmethod
    def of(cls, vote: int | VoteKind | Vote) -> Vote:
        """``vote`` as a Vote: an int is the (0-based) index of the picked image."""
        if isinstance(vote, Vote):
            return vote
        if isinstance(vote, VoteKind):
            if vote == VoteKind.pick:
                raise Refusal("Say which image you pick (1 to 4).", code="bad_index")
            return cls(vote)
        return cls(VoteKind.pick, vote)

    @classmethod
    def parse(cls, text: str) -> Vote:
        """What a member typed: an image number as shown (1, 2 …), ``tie`` or ``none``."""
        word = text.strip().casefold()
        if word in (VoteKind.tie.value, VoteKind.none.value):
            return cls(VoteKind(word))
        if word.isascii() and word.isdigit():
            return cls(VoteKind.pick, int(word) - 1)
        raise Refusal(
            f"{text!r} is not a vote: give an image number (1 to 4), `tie` (no favourite: "
            "no image is better than the others) or `none` (none of them are good).",
            code="bad_vote",
        )

    def __str__(self) -> str:
        if self.index is not None:
            return f"image {self.index + 1}"
        return "“No favourite”" if self.kind == VoteKind.tie else "“None are good”"


@dataclass(frozen=True)
class VoteResult:
    """What recording a vote did; ``previous`` is the member's vote before (None: none)."""

    generation_id: int
    vote: Vote
    previous: Vote | None
    changed: bool
    is_requester: bool
    pickers: int  # members who voted on the set (any kind), this one included


def pickers_words(count: int) -> str:
    """How many members voted on a set (never who voted what), as every front end says it."""
    if count == 0:
        return "No one has voted yet."
    return "1 member has voted." if count == 1 else f"{count} members have voted."


@dataclass(frozen=True)
class ImageView:
    index: int
    storage_key: str
    sha256: str
    seed: int
    width: int
    height: int
    nsfw: bool
    adapter_version_id: int | None = None  # what made this image (None: the bare base)


@dataclass(frozen=True)
class GenerationView:
    """A generation as a front end shows it; ``images`` leaves out flagged ones."""

    id: int
    prompt: str
    negative_prompt: str
    status: GenerationStatus
    requested_by: UserRef
    n_images: int
    params: dict[str, Any]
    generator_version: str | None
    adapter_version_id: int | None
    error: str | None
    requested_at: datetime
    finished_at: datetime | None
    images: list[ImageView] = field(default_factory=list)
    withheld: int = 0  # images the safety checker flagged
    delivery: dict[str, Any] | None = None  # where the front end answers (its own data)
    delivered: bool = False  # the front end has shown the result
    pickers: int = 0  # members who voted on it (a pick, "No favourite" or "None are good")
    comparison_id: int | None = None  # a mixed set: its images come from two versions


@dataclass(frozen=True)
class Stats:
    members: int
    banned: int
    generations: dict[str, int]
    images: int
    flagged_images: int
    picks: int  # current votes that pick an image
    ties: int  # current "No favourite" votes
    nones: int  # current "None are good" votes
    requester_picks: int  # picks by the member who asked for the set
    repicks: int  # re-votes: changes of a vote (of any kind) since its first
    active_models: dict[str, str]  # kind -> where it is stored (for admins and the CLI)
    member_generations: int | None = None
    member_picks: int | None = None
    member_ties: int | None = None
    member_nones: int | None = None
    active_versions: dict[str, int] = field(default_factory=dict)  # kind -> registry id


@dataclass(frozen=True)
class Forgotten:
    generations: int
    picks: int
    files: list[str]
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # to take posts down


@dataclass(frozen=True)
class QueueStatus:
    """What the queue is doing, for admins."""

    queued: int
    running: int
    workers: int
    oldest_queued_at: datetime | None
    last_done_at: datetime | None
    last_failure: tuple[int, str] | None  # (generation id, reason)
    last_export: tuple[datetime, int, str] | None = None  # (when, picks, folder)


@dataclass(frozen=True)
class RetrainRunView:
    """One run of the retrain loop as admins read it: its stage now, or what it decided."""

    id: int
    trigger: str
    requested_by: str | None
    status: RetrainStatus
    stage: str | None
    progress: str | None
    error: str | None
    outcome: dict[str, Any]  # stage -> what it did ({"summary": …, …})
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, run: RetrainRun) -> RetrainRunView:
        """The view of a ``retrain_runs`` row (rows never leave the core)."""
        return cls(
            id=run.id,
            trigger=run.trigger,
            requested_by=run.requested_by,
            status=run.status,
            stage=run.stage,
            progress=run.progress,
            error=run.error,
            outcome=dict(run.outcome or {}),
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
        )
