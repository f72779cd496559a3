"""prefloop's settings: one object, read once at start-up, passed to whatever needs it.

Every setting comes from the environment (prefix ``PREFLOOP_``, sections joined with
``__``, e.g. ``PREFLOOP_GENERATOR__STEPS=20``) or an optional ``.env`` file. A bad value
stops start-up with the variable's name and the reason (:class:`ConfigError`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PREFLOOP_"
MASK = "**********"  # what pydantic prints for a SecretStr
_SECRET_PARAM = re.compile(r"pass|secret|token", re.IGNORECASE)  # ?password=… in a URL
DEFAULT_GENERATOR = "CompVis/stable-diffusion-v1-4"  # the model the HPS paper adapted


def cron_or_none(schedule: str | None) -> str | None:
    """A valid cron expression, stripped; None when empty (the schedule is off)."""
    if not schedule or not schedule.strip():
        return None
    from croniter import croniter  # procrastinate's own cron parser

    if not croniter.is_valid(schedule):
        raise ValueError("must be a cron expression, e.g. '0 3 * * *' (03:00 UTC daily)")
    return schedule.strip()


class GeneratorSettings(BaseModel):
    """Which Stable Diffusion model makes the images, and how."""

    model: str = Field(
        DEFAULT_GENERATOR,
        description="Hub id, local diffusers folder, or a preset name ('tiny').",
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    images_per_prompt: int = Field(4, ge=2, le=4)
    steps: int = Field(30, ge=1, le=200)
    guidance: float = Field(7.5, ge=0.0, le=30.0)
    width: int | None = Field(None, ge=64, le=2048, multiple_of=8)
    height: int | None = Field(None, ge=64, le=2048, multiple_of=8)
    safety_checker: bool = Field(True, description="Run the model's safety checker if it has one.")
    negative_prompt: str = Field("", description="Always added to every member's negative prompt.")
    adapter: str | None = Field(
        None,
        description="A LoRA adapter folder (prefloop train adapt); its negative prompt "
        "('Weird image.') is added to every generation's.",
    )


class LimitSettings(BaseModel):
    """What one member may ask for."""

    max_queued_per_user: int = Field(2, ge=1, description="Unfinished generations per member.")
    max_prompt_chars: int = Field(1000, ge=1, le=10_000)
    max_prompt_tokens: int = Field(75, ge=1, le=75, description="CLIP reads 75 + start/end.")
    blocked_words: list[str] = Field(default_factory=list)

    @field_validator("blocked_words")
    @classmethod
    def _lowercase(cls, words: list[str]) -> list[str]:
        return [w.strip().lower() for w in words if w.strip()]


class StorageSettings(BaseModel):
    """Where image files live. Unset = ``<data_dir>/store``."""

    url: str | None = Field(None, description="A folder path, file:// or s3://bucket/prefix URL.")
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    sweep_schedule: str | None = Field(
        "17 4 * * *",
        description="Cron expression (UTC) of the sweep of files no row references; empty = off.",
    )
    sweep_grace_minutes: float = Field(
        60.0,
        ge=1.0,
        description="The sweep leaves files written in the last N minutes (a job between "
        "storing its images and recording them).",
    )

    @field_validator("sweep_schedule")
    @classmethod
    def _sweep_cron(cls, schedule: str | None) -> str | None:
        return cron_or_none(schedule)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url and "://" in url and not url.startswith(("file://", "s3://")):
            raise ValueError("must be a folder, file://… or s3://bucket/prefix")
        return url


class WorkerSettings(BaseModel):
    """The generation worker and its job queue."""

    max_attempts: int = Field(3, ge=1, le=10, description="Tries before a job fails for good.")
    heartbeat_interval: float = Field(5.0, gt=0)
    stalled_after: float = Field(30.0, gt=0, description="Seconds without heartbeat = dead.")
    progress_interval: float = Field(1.0, ge=0, description="Seconds between progress notices.")
    shutdown_grace: float = Field(
        60.0, ge=0, description="On stop, seconds to let running jobs finish before re-queueing."
    )
    score_images: bool = Field(
        True, description="Score each new image with the active HPS (for its live agreement)."
    )


class DiscordSettings(BaseModel):
    """The Discord bot: its token, where Discord is, and who administers prefloop."""

    token: SecretStr | None = Field(None, description="The bot's token (Developer Portal).")
    api_base_url: str = Field(
        "https://discord.com/api/v10", pattern=r"^https?://", description="Discord's REST API."
    )
    gateway_url: str = Field(
        "wss://gateway.discord.gg/", pattern=r"^wss?://", description="Discord's gateway."
    )
    proxy: str | None = Field(None, description="An HTTP proxy for all Discord traffic.")
    admin_user_ids: list[int] = Field(
        default_factory=list, description="Members who may use /admin (JSON list of ids)."
    )
    admin_role_ids: list[int] = Field(
        default_factory=list, description="Roles whose members may use /admin."
    )
    admin_channel_id: int | None = Field(
        None, description="Channel where retrain outcomes are announced; unset = the log only."
    )
    progress_interval: float = Field(
        1.0, ge=0.2, description="Seconds between edits of a progress message, at least."
    )
    retry_interval: float = Field(
        30.0, gt=0, description="Seconds between retries of results that failed to post."
    )


class ExportSettings(BaseModel):
    """Dataset exports: where the admin's and the retrain loop's go, splits, privacy."""

    folder: Path | None = Field(
        None, description="Where jobs write exports; unset = data_dir/exports."
    )
    test_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Share of prompts in the test split (HPS: 5,000 of 25,205).",
    )
    split_seed: int = Field(0, description="Changes which prompts land in the test split.")
    user_hash_secret: SecretStr | None = Field(
        None, description="Key of the user hash; unset = a random key kept in the data folder."
    )
    person_names_file: Path | None = Field(
        None, description="Names that set contain_name, one per line; unset = the built-in list."
    )


class ArenaSettings(BaseModel):
    """Mixed sets and the people's gate: members judge generator versions with their picks."""

    share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of /imagine requests made as mixed sets while a comparison is "
        "open (0 = off: no mixed sets, and retrained adapters are judged by the model alone).",
    )
    daily_cap: int = Field(5, ge=0, description="Mixed sets a member gets per 24 hours at most.")
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="The people's gate: promote only when the contender's win rate is above "
        "50% at this confidence (its wrong-promotion rate is at most 1 - confidence, however "
        "often it is checked).",
    )
    min_effect: float = Field(
        0.02,
        ge=0.0,
        lt=0.5,
        description="Reject early once the contender's win rate is surely below 50% + this.",
    )
    max_comparisons: int = Field(
        2000, ge=1, description="Deadline: reject after this many judged mixed sets."
    )
    max_days: float = Field(14.0, gt=0, description="Deadline: reject after this many days.")
    check_interval: float = Field(
        300.0, gt=0, description="Seconds between looks at a judged run's votes."
    )
    agreement_window: int = Field(
        200, ge=1, description="The live agreement of the active HPS: over the last N picks."
    )


Corruption = Literal["blur", "noise", "invert", "wrong_prompt"]


class ControlSettings(BaseModel):
    """Control sets: sets with a known answer that tell careful raters from random clickers."""

    share: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Share of /imagine requests made as control sets (one image visibly "
        "corrupted, never announced), for members who rate others' sets (0 = off).",
    )
    min_rated_others: int = Field(
        1,
        ge=0,
        description="A member gets control sets once they voted on this many "
        "sets of other members (0 = everyone).",
    )
    kinds: list[Corruption] = Field(
        default_factory=lambda: list(get_args(Corruption)),
        min_length=1,
        description="The corruptions a control set's worse image is made with.",
    )
    wrong_prompts: list[str] = Field(
        default_factory=lambda: [
            "a plain grey concrete wall",
            "an empty white room",
            "a close-up of gravel",
            "a blank sheet of paper on a desk",
        ],
        min_length=1,
        description="Prompts a wrong_prompt control draws its worse image from.",
    )


class RaterSettings(BaseModel):
    """Rater reliability: how much each member's votes weigh in training."""

    prior_careful: float = Field(
        0.8, gt=0.0, lt=1.0, description="Share of careful raters assumed before any evidence."
    )
    careful_accuracy: float = Field(
        0.95, gt=0.5, lt=1.0, description="How often a careful rater gets a control set right."
    )
    min_votes: int = Field(
        2, ge=1, description="Sets with at least this many votes count for agreement."
    )


class RetrainSettings(BaseModel):
    """The retrain loop: when it runs, what it trains from, and what a candidate must beat."""

    schedule: str | None = Field(
        None, description="Cron expression (UTC) for periodic retrains; unset = off."
    )
    new_picks: int | None = Field(
        None,
        ge=1,
        description="Retrain once this many picks arrived since the last run (votes that "
        'pick an image; "No favourite" and "None are good" do not count).',
    )
    hps_base: str | None = Field(
        None,
        description="The plain CLIP an HPS starts from when none is active, and every HPS "
        "must beat; unset = ViT-L-14:openai (the paper's), or tiny with the tiny generator.",
    )
    hps_margin: float = Field(
        0.01, ge=0.0, le=1.0, description="Held-out top-1 a new HPS must add to the active one."
    )
    adapter_min_win_rate: float = Field(
        0.55, ge=0.0, le=1.0, description="Win rate a new adapter needs against the serving one."
    )
    adapter_steps: int | None = Field(
        None, ge=1, description="Adapter training steps; unset = the method's default."
    )
    adapter_method: Literal["lora", "dpo", "both"] = Field(
        "lora",
        description="How the adapter stage trains its candidate: lora (HPS selects, the HPS "
        "paper's LoRA learns), dpo (Diffusion-DPO straight from the picks), or both (each "
        "registered and judged, each paying for both methods' tries; the one the model gate "
        "rates higher goes on: promoted, or put before people as adapter_gate says).",
    )
    eval_prompts: int = Field(50, ge=1, description="Held-out prompts the adapter is judged on.")
    adapter_gate: Literal["model", "people", "both"] = Field(
        "both",
        description="Who decides on a new adapter: the model gate, members' picks in mixed "
        "sets (the people's gate), or both (the model gate as a pre-filter). The people's gate "
        "needs PREFLOOP_ARENA__SHARE above 0; with 'both' and no share the model decides alone.",
    )
    gate_confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="The model gates promote only when a paired test on held-out data says "
        "the candidate is better at this confidence.",
    )
    agreement_below: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Retrain when the active HPS agrees with fewer than this share of the "
        "last arena.agreement_window live picks (top-1); unset = off.",
    )
    eval_seeds: int = Field(4, ge=1, description="Seeds per held-out prompt.")
    eval_steps: int = Field(30, ge=1, description="Denoising steps of the judged images.")
    gpus: int = Field(
        1, ge=0, description="GPUs training may use; above 1 the stages run under accelerate."
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda)$",
        description="Where stages train: auto, cpu or cuda (pick GPUs with CUDA_VISIBLE_DEVICES).",
    )
    trainer: list[str] | None = Field(
        None, description="Command that runs a stage; unset = this Python, -m training gate."
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        return cron_or_none(schedule)


class WebSettings(BaseModel):
    """The web front end (bot/web): members pick, admins see the dataset and the runs."""

    enabled: bool = Field(True, description="`prefloop run` serves the web page too.")
    host: str = Field("127.0.0.1", description="Address the web server listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Its port (0 = any free port).")
    public_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="The address members reach the page at (the OAuth redirect goes there); "
        "unset = http://HOST:PORT.",
    )
    session_secret: SecretStr | None = Field(
        None,
        description="Key that signs session cookies and login links; unset = a random key "
        "kept in the data folder.",
    )
    session_hours: float = Field(12.0, gt=0, description="How long a sign-in lasts.")
    discord_client_id: str | None = Field(
        None, description="The Discord application's OAuth2 client id ('Sign in with Discord')."
    )
    discord_client_secret: SecretStr | None = Field(
        None, description="The application's OAuth2 client secret."
    )
    admins: list[str] = Field(
        default_factory=list,
        description="Members who are web admins besides discord.admin_user_ids "
        "(JSON list of member ids such as 'cli:alice').",
    )
    login_attempts_per_minute: int = Field(
        10, ge=1, description="Sign-in attempts one address may make per minute."
    )
    forwarded_allow_ips: list[str] | str | None = Field(
        None,
        description="The reverse proxies whose X-Forwarded-For/-Proto headers are believed "
        "(uvicorn's forwarded_allow_ips: addresses or networks, a list or a comma-separated "
        "string, '*' for any); unset = none: every request comes from the address that "
        "connected.",
    )


class Settings(BaseSettings):
    """All of prefloop's configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Path("data")
    database_url: str | None = Field(
        None, description="postgresql://user:pass@host:port/db; unset = embedded server."
    )
    database_pool_size: int = Field(10, ge=1, le=200, description="Connections per process.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    arena: ArenaSettings = Field(default_factory=ArenaSettings)
    controls: ControlSettings = Field(default_factory=ControlSettings)
    raters: RaterSettings = Field(default_factory=RaterSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @model_validator(mode="after")
    def _people_need_mixed_sets(self) -> Settings:
        if self.retrain.adapter_gate == "people" and self.arena.share == 0:
            raise ValueError(
                "PREFLOOP_RETRAIN__ADAPTER_GATE=people needs mixed sets: set "
                "PREFLOOP_ARENA__SHARE above 0 (e.g. 0.25)"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if not url:
            return None
        if not re.match(r"^postgres(ql)?(\+\w+)?://", url):
            raise ValueError("must be a postgresql:// URL")
        return url


class ConfigError(Exception):
    """A setting has a bad value; the message names the variable and says why."""


def env_name(location: tuple[str | int, ...]) -> str:
    """The environment variable that sets the field at ``location``."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in location)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once, turning validation errors into one readable message.
    ``overrides`` are raw values, validated like the environment's."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        lines = [
            f"{env_name(e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            if e["loc"]
            else str(e["msg"]).removeprefix("Value error, ")  # a rule across settings
            for e in error.errors()
        ]
        raise ConfigError("bad configuration:\n  " + "\n  ".join(lines)) from None


def printable(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data with every secret masked.

    Secret fields (tokens, keys) are masked by their type; URLs in any field (the
    database URL, a proxy, an endpoint) lose their password, in the user part or in a
    query parameter such as libpq's ``?password=``.
    """
    return _masked(settings.model_dump(mode="json"))


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


def mask_url(url: str) -> str:
    """``url`` with its password masked: ``scheme://user:**********@host/…``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unparseable: it may still hold a password, so show none of it
        return MASK
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    query = "&".join(_mask_param(pair) for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_param(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    return f"{name}={MASK}" if equals and _SECRET_PARAM.search(name) else pair
