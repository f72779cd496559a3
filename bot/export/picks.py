"""Which votes an export holds: one read-only snapshot, streamed in vote order.

Every vote in the window (a pick, a tie or "none are good", on an ordinary or a control
set) is read once and either becomes a :class:`Candidate` or is left out with a
:class:`Reason`; the counts of both go into the manifest. Which kinds of vote, and whether
control sets, are written is decided afterwards (:mod:`bot.export.selection`). Rows
stream from a server-side cursor, so memory does not grow with the number of votes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from bot.export.privacy import IdHasher, UserHasher, scrub_mentions


class Rater(enum.StrEnum):
    """Whose pick makes an instance."""

    requester = "requester"  # the member who asked (the HPS paper's setting)
    all = "all"  # every member's pick, one instance each


class Reason(enum.StrEnum):
    """Why a pick is not in the export."""

    banned_member = "banned_member"  # the picker or the prompt's author is banned
    forgotten_member = "forgotten_member"  # … asked to be forgotten
    incomplete_generation = "incomplete_generation"  # failed, queued or running
    unsafe_image = "unsafe_image"  # the picked image was flagged by the safety checker
    too_few_images = "too_few_images"  # fewer than 2 images left after the safety checker
    missing_file = "missing_file"  # the picked image's file (or all but one) is gone


@dataclass(slots=True)
class Picture:
    index: int  # the image's index in its generation
    key: str  # storage key
    sha256: str
    seed: int
    adapter_version_id: int | None = None  # the version that made it (None: the bare base)


@dataclass(slots=True)
class Candidate:
    """A pick that qualifies; its images still have to be found in the store."""

    id: str  # the vote's keyed id (IdHasher): stable across exports made with one key
    generation: str  # the generation's keyed id
    prompt: str
    chosen: int | None  # index (in the generation) of the picked image; None: tie or none
    pictures: list[Picture]  # safe images, in generation order
    user_hash: str
    rater_is_requester: bool
    created_at: datetime  # when the pick was made (or last changed)
    requested_at: datetime
    generator_version: str | None
    adapter_version_id: int | None  # the adapter serving when the set was made
    mixed: bool = False  # a mixed set: its images come from two versions (see pictures)
    vote: str = "pick"  # a VoteKind value: pick, tie or none
    rater: int = 0  # the voter's database id: for their weight, never written
    rater_weight: float = 1.0  # the voter's reliability weight (set by the export)
    control: str | None = None  # a control set: how its known answer was made (ControlKind)
    control_worse: int | None = None  # index (in the generation) of the known-worse image
    control_best: int | None = None  # … of the known-best image (admin marks only)


@dataclass(frozen=True)
class Window:
    """The database snapshot an export reads, and which picks in it count."""

    snapshot_at: datetime
    cutoff: datetime  # every pick before this was committed when the snapshot was taken
    since: datetime | None


def _value(cursor: psycopg.Cursor[Any]) -> Any:
    """The value of a query that returns one row of one column (a function, an aggregate)."""
    row = cursor.fetchone()
    assert row is not None
    return row[0]


def open_snapshot(url: str, since: datetime | None) -> tuple[psycopg.Connection, Window]:
    """A repeatable-read, read-only connection, and the window of picks it may export.

    The cutoff is the start of the oldest transaction still running just before the
    snapshot (or the time then): a pick stamped earlier than that was committed, hence
    visible. Picks stamped later are left to the next incremental export, which starts
    at this cutoff; so an incremental series never skips a pick committed late.
    """
    with psycopg.connect(url, autocommit=True) as probe:
        # The time first, then who is running: a transaction that starts in between
        # stamps its picks after `before`, so they are left for the next export.
        before: datetime = _value(probe.execute("SELECT clock_timestamp()"))
        oldest: datetime | None = _value(
            probe.execute(
                "SELECT min(xact_start) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND xact_start IS NOT NULL"
            )
        )
    conn = psycopg.connect(url)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    snapshot_at: datetime = _value(conn.execute("SELECT clock_timestamp()"))
    cutoff = min(before, oldest) if oldest else before
    return conn, Window(snapshot_at=snapshot_at, cutoff=cutoff, since=since)


PICKS = """
SELECT c.id, c.generation_id, c.image_index, c.chosen_at,
       g.prompt, g.status::text, g.generator_version, g.adapter_version_id, g.requested_at,
       r.frontend::text, r.external_id, c.user_id = g.requested_by,
       r.banned OR q.banned, r.forgotten_at IS NOT NULL OR q.forgotten_at IS NOT NULL,
       i.indexes, i.keys, i.shas, i.seeds, i.nsfw,
       i.versions, g.comparison_id IS NOT NULL,
       c.kind, c.user_id, g.control_kind, g.control_worse, g.control_best
  FROM choices c
  JOIN generations g ON g.id = c.generation_id
  JOIN users r ON r.id = c.user_id
  JOIN users q ON q.id = g.requested_by
  LEFT JOIN LATERAL (
       SELECT array_agg(index ORDER BY index) AS indexes,
              array_agg(storage_key ORDER BY index) AS keys,
              array_agg(sha256 ORDER BY index) AS shas,
              array_agg(seed ORDER BY index) AS seeds,
              array_agg(nsfw ORDER BY index) AS nsfw,
              array_agg(adapter_version_id ORDER BY index) AS versions
         FROM images WHERE generation_id = c.generation_id) i ON true
 WHERE c.chosen_at < %(cutoff)s
   AND (%(since)s::timestamptz IS NULL OR c.chosen_at >= %(since)s::timestamptz)
   {rater}
 ORDER BY c.id
"""


def stream_picks(
    conn: psycopg.Connection, window: Window, rater: Rater, batch: int = 2000
) -> Iterator[tuple[Any, ...]]:
    """Every vote in the window, in id order, through a server-side cursor."""
    only_requester = "AND c.user_id = g.requested_by" if rater is Rater.requester else ""
    with conn.cursor(name="prefloop_export") as cursor:
        cursor.itersize = batch
        cursor.execute(
            PICKS.format(rater=only_requester),
            {"cutoff": window.cutoff, "since": window.since},
        )
        yield from cursor


def count_deferred(conn: psycopg.Connection, window: Window, rater: Rater) -> int:
    """Votes visible now but stamped after the cutoff: they go in the next export."""
    only_requester = (
        "AND c.user_id = (SELECT requested_by FROM generations WHERE id = c.generation_id)"
        if rater is Rater.requester
        else ""
    )
    row = conn.execute(
        f"SELECT count(*) FROM choices c WHERE c.chosen_at >= %s {only_requester}",
        (window.cutoff,),
    ).fetchone()
    return int(row[0]) if row else 0


def classify(row: tuple[Any, ...], hasher: UserHasher, ids: IdHasher) -> Candidate | Reason:
    """Keep a vote (as a candidate, under keyed ids) or say why it is left out."""
    (
        pick_id,
        generation_id,
        chosen,
        chosen_at,
        prompt,
        status,
        generator_version,
        adapter_id,
        requested_at,
        frontend,
        external_id,
        by_requester,
        banned,
        forgotten,
        indexes,
        keys,
        shas,
        seeds,
        nsfw,
        versions,
        mixed,
        vote,
        rater,
        control,
        control_worse,
        control_best,
    ) = row
    if banned:
        return Reason.banned_member
    if forgotten:
        return Reason.forgotten_member
    if status != "done" or not indexes:
        return Reason.incomplete_generation
    pictures = []
    made = zip(indexes, keys, shas, seeds, nsfw, versions, strict=True)
    for index, key, sha, seed, unsafe, version in made:
        if unsafe:
            if index == chosen:
                return Reason.unsafe_image
            continue
        pictures.append(Picture(index, key, sha, seed, version))
    if len(pictures) < 2:
        return Reason.too_few_images
    return Candidate(
        id=ids.pick(pick_id),
        generation=ids.generation(generation_id),
        prompt=scrub_mentions(prompt),
        chosen=chosen,
        pictures=pictures,
        user_hash=hasher(frontend, external_id),
        rater_is_requester=by_requester,
        created_at=chosen_at,
        requested_at=requested_at,
        generator_version=generator_version,
        adapter_version_id=adapter_id,
        mixed=bool(mixed),
        vote=vote,
        rater=rater,
        control=control,
        control_worse=control_worse,
        control_best=control_best,
    )
