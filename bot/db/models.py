"""The collection schema: who asked, what was generated, which image each member picked.

Integrity lives in the schema: a pick must point at an existing image of its generation
(composite foreign key), a member has one current pick per generation (unique), and only
one model version of each kind is active at a time (partial unique index).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        # None is SQL NULL, not the JSON value null, so `IS NULL` filters mean what they say.
        dict[str, Any]: JSONB(none_as_null=True),
        datetime: DateTime(timezone=True),
    }


class Frontend(enum.StrEnum):
    """The door a member came in through."""

    discord = "discord"
    cli = "cli"
    web = "web"


class GenerationStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class ModelKind(enum.StrEnum):
    hps = "hps"
    generator_adapter = "generator_adapter"


class ModelStatus(enum.StrEnum):
    candidate = "candidate"
    active = "active"
    retired = "retired"


class ComparisonStatus(enum.StrEnum):
    """Where a comparison between two generator versions stands."""

    open = "open"  # mixed sets are drawn from it
    promoted = "promoted"  # the people's gate promoted the contender
    rejected = "rejected"  # the people's gate rejected it (or its deadline passed)
    stopped = "stopped"  # an admin stopped it


class VoteKind(enum.StrEnum):
    """What a member said about a set: a favourite, "No favourite" or "None are good"."""

    pick = "pick"  # image ``image_index`` is their favourite
    tie = "tie"  # "No favourite": the images are equally good
    none = "none"  # "None are good": a strong negative signal


class ControlKind(enum.StrEnum):
    """How a control set got its known answer (``generations.control_kind``)."""

    blur = "blur"  # image ``control_worse`` was blurred heavily by the worker
    noise = "noise"  # ... covered in noise
    invert = "invert"  # ... had its colours inverted
    wrong_prompt = "wrong_prompt"  # ... was drawn from another prompt
    marked = "marked"  # an admin marked a known worse and/or best image


CORRUPTIONS = (ControlKind.blur, ControlKind.noise, ControlKind.invert, ControlKind.wrong_prompt)


def _vote_checks() -> tuple[CheckConstraint, ...]:
    """The vote rules of ``choices`` and ``choice_history`` (new objects for each table)."""
    return (
        CheckConstraint("kind IN ('pick', 'tie', 'none')", name="vote_kind"),
        CheckConstraint("(kind = 'pick') = (image_index IS NOT NULL)", name="pick_has_index"),
    )


class RetrainStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


def _enum(cls: type[enum.Enum], name: str, **options: Any) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e], **options)


class User(Base):
    """A member, identified by the front end they use and their id there."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("frontend", "external_id", name="uq_users_frontend_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    frontend: Mapped[Frontend] = mapped_column(_enum(Frontend, "frontend"))
    external_id: Mapped[str] = mapped_column(String(100))
    banned: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    banned_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Set when the member asked to be forgotten; their data is gone, the row stays so
    # that later exports can leave them out and admins can see the request was honoured.
    forgotten_at: Mapped[datetime | None]


class ModelVersion(Base):
    """A trained HPS model or generator adapter, and whether it serves."""

    __tablename__ = "model_versions"
    __table_args__ = (
        Index(
            "uq_model_versions_one_active",
            "kind",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[ModelKind] = mapped_column(_enum(ModelKind, "model_kind"))
    uri: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    status: Mapped[ModelStatus] = mapped_column(
        _enum(ModelStatus, "model_status"), server_default=ModelStatus.candidate.value
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    promoted_at: Mapped[datetime | None]


class Generation(Base):
    """One prompt, asked once, answered with 2-4 images."""

    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint("n_images BETWEEN 2 AND 4", name="n_images"),
        CheckConstraint(
            "control_kind IN ('blur', 'noise', 'invert', 'wrong_prompt', 'marked')",
            name="control_kind",
        ),
        CheckConstraint(
            "(control_kind IS NULL AND control_worse IS NULL AND control_best IS NULL) OR "
            "(control_kind IS NOT NULL AND (control_worse IS NOT NULL OR control_best IS NOT NULL) "
            "AND control_worse IS DISTINCT FROM control_best "
            "AND (control_kind = 'marked' OR control_worse IS NOT NULL))",
            name="control_answer",
        ),
        Index("ix_generations_control", "id", postgresql_where=text("control_kind IS NOT NULL")),
        Index("ix_generations_user_status", "requested_by", "status"),
        Index(
            "ix_generations_comparison",
            "comparison_id",
            postgresql_where=text("comparison_id IS NOT NULL"),
        ),
        Index(
            "ix_generations_undelivered",
            "finished_at",
            postgresql_where=text("delivered_at IS NULL AND status IN ('done', 'failed')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, server_default="")
    n_images: Mapped[int] = mapped_column(SmallInteger)
    # steps, guidance, width, height and the per-image seeds, fixed at submit time so
    # that a retried job makes the same images.
    params: Mapped[dict[str, Any]]
    generator_version: Mapped[str | None] = mapped_column(Text)
    adapter_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT")
    )
    # Set for a mixed set: its images come from the comparison's two versions (which
    # image from which: ``params["versions"]``, and each image's own columns).
    comparison_id: Mapped[int | None] = mapped_column(
        ForeignKey("comparisons.id", ondelete="RESTRICT")
    )
    # Set for a control set (migration 0007): a set with a known answer, never announced.
    # A corruption kind: the worker made image ``control_worse`` visibly worse on purpose;
    # ``marked``: an admin (``control_by``) marked a known worse and/or best image.
    control_kind: Mapped[str | None] = mapped_column(String(16))
    control_worse: Mapped[int | None] = mapped_column(SmallInteger)
    control_best: Mapped[int | None] = mapped_column(SmallInteger)
    control_by: Mapped[str | None] = mapped_column(Text)
    status: Mapped[GenerationStatus] = mapped_column(
        _enum(GenerationStatus, "generation_status"),
        server_default=GenerationStatus.queued.value,
    )
    requested_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    requested_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    # Front-end data for answering: for Discord, the channel and interaction to reply to.
    delivery: Mapped[dict[str, Any] | None]
    # Where a job's time went (epoch seconds and durations): started, pipeline_s, job_s.
    timings: Mapped[dict[str, Any] | None]

    images: Mapped[list[Image]] = relationship(
        back_populates="generation", order_by="Image.index", passive_deletes=True
    )


class Image(Base):
    """One image of a generation; the file lives in the store under ``storage_key``."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("generation_id", "index", name="uq_images_generation_index"),
        CheckConstraint('"index" BETWEEN 0 AND 3', name="index"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(SmallInteger)
    storage_key: Mapped[str] = mapped_column(Text, index=True)  # migration 0008
    sha256: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(SmallInteger)
    height: Mapped[int] = mapped_column(SmallInteger)
    nsfw: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # What made this image: the adapter (NULL = the bare base) and the worker's version
    # string. In a mixed set the images of one generation differ here.
    adapter_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT")
    )
    generator_version: Mapped[str | None] = mapped_column(Text)

    generation: Mapped[Generation] = relationship(back_populates="images")


class Choice(Base):
    """A member's current vote on a generation (one per member and generation): a pick of
    image ``image_index``, a tie ("No favourite") or "None are good" (no image: NULL)."""

    __tablename__ = "choices"
    __table_args__ = (
        UniqueConstraint("generation_id", "user_id", name="uq_choices_generation_user"),
        ForeignKeyConstraint(
            ["generation_id", "image_index"],
            ["images.generation_id", "images.index"],
            ondelete="CASCADE",
            name="fk_choices_image",
        ),
        Index("ix_choices_user", "user_id"),
        Index("ix_choices_chosen_at", "chosen_at"),  # incremental exports
        *_vote_checks(),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8), server_default=VoteKind.pick.value)
    image_index: Mapped[int | None] = mapped_column(SmallInteger)
    chosen_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ChoiceEvent(Base):
    """Every vote and re-vote, in order: the history behind ``choices``."""

    __tablename__ = "choice_history"
    __table_args__ = (
        Index("ix_choice_history_generation_user", "generation_id", "user_id"),
        *_vote_checks(),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8), server_default=VoteKind.pick.value)
    image_index: Mapped[int | None] = mapped_column(SmallInteger)
    chosen_at: Mapped[datetime] = mapped_column(server_default=func.now())


class AdminAction(Base):
    """One admin command, allowed or refused: who, what, on whom, when."""

    __tablename__ = "admin_actions"
    __table_args__ = (Index("ix_admin_actions_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    actor: Mapped[str] = mapped_column(String(120))  # e.g. discord:1234
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    allowed: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(server_default=func.now())


class DatasetExport(Base):
    """A finished dataset export: what it covered, so that the next one can start there.

    An incremental export covers the picks made (or changed) in ``[since, cutoff)``;
    ``cutoff`` is a time before which every pick was committed when the export read
    the database, so the next export starting at it misses none.
    """

    __tablename__ = "dataset_exports"
    __table_args__ = (Index("ix_dataset_exports_kind", "format", "rater", "cutoff"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    format: Mapped[str] = mapped_column(String(20))
    rater: Mapped[str] = mapped_column(String(20))
    out_path: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime | None]
    cutoff: Mapped[datetime]
    snapshot_at: Mapped[datetime]
    counts: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class RetrainRun(Base):
    """One run of the retrain loop: who or what asked, its stage now, and what it decided.

    A partial unique index (migration 0005) allows one unfinished run at a time.
    """

    __tablename__ = "retrain_runs"
    __table_args__ = (
        Index("ix_retrain_runs_created_at", "created_at"),
        Index(
            "uq_retrain_runs_unfinished",
            text("(true)"),
            unique=True,
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    trigger: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str | None] = mapped_column(Text)
    # A varchar (migration 0005), not a PostgreSQL enum type: no migration was needed.
    status: Mapped[RetrainStatus] = mapped_column(
        _enum(RetrainStatus, "retrain_status", native_enum=False, length=20),
        server_default=RetrainStatus.queued.value,
    )
    stage: Mapped[str | None] = mapped_column(String(20))
    progress: Mapped[str | None] = mapped_column(Text)
    picks_at_start: Mapped[int | None] = mapped_column(BigInteger)
    outcome: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Comparison(Base):
    """A contender against the version that served when it began, judged by members' picks.

    A version is an adapter's ``model_versions`` id, or NULL for the bare base model. At
    most one comparison is open (a partial unique index); while it is, a share of the
    /imagine requests become mixed sets drawn from both versions. A retrain run's people's
    gate opens one for its candidate (``retrain_run_id``) and closes it with its decision.
    """

    __tablename__ = "comparisons"
    __table_args__ = (
        CheckConstraint(
            "baseline_version_id IS DISTINCT FROM contender_version_id", name="two_versions"
        ),
        Index(
            "uq_comparisons_one_open",
            text("(true)"),
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    baseline_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT")
    )
    contender_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT")
    )
    retrain_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("retrain_runs.id", ondelete="SET NULL")
    )
    status: Mapped[ComparisonStatus] = mapped_column(
        _enum(ComparisonStatus, "comparison_status", native_enum=False, length=20),
        server_default=ComparisonStatus.open.value,
    )
    share: Mapped[float | None] = mapped_column(Float)  # None: the arena.share setting
    started_by: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    ended_at: Mapped[datetime | None]
    decision: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))


class HPSScore(Base):
    """An HPS version's score of an image (100 * cos), for the live agreement figure."""

    __tablename__ = "hps_scores"
    __table_args__ = (Index("ix_hps_scores_version", "hps_version_id"),)

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    hps_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    score: Mapped[float] = mapped_column(Float)
