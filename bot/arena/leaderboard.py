"""The leaderboard: every generator version members compared, rated from all mixed sets.

Every current pick on a mixed set (any comparison, open or closed) is one match between
the set's two versions (bot/arena/outcomes.py); bot/arena/ratings.py rates them. Beside
the ratings: the live agreement of the active HPS with members' picks
(bot/arena/agreement.py). Each adapter is named with the method that trained it (lora,
dpo) where its registered figures say, so the board shows which method wins here.
``write_report`` leaves leaderboard.json, report.md and
ratings.png in a folder.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.arena.agreement import Agreement, active_agreement
from bot.arena.outcomes import outcomes
from bot.arena.ratings import Match, Ratings, rate
from bot.arena.versions import key, label
from bot.config import Settings
from bot.db.models import ModelVersion
from bot.registry import active_versions

SEED = 0


@dataclass(frozen=True)
class Leaderboard:
    made_at: datetime
    ratings: Ratings
    serving: int | None  # the active adapter's id (None: the base serves)
    agreement: Agreement | None  # None: no HPS is active
    # How each rated adapter was trained (its registered metrics' ``method``: lora, dpo),
    # so the board says which method wins here; absent for versions that do not say.
    methods: dict[int, str] = field(default_factory=dict)

    def name(self, version: int | None) -> str:
        """The version's label, with its training method when known: ``adapter #3 (dpo)``."""
        method = self.methods.get(version) if version is not None else None
        return f"{label(version)} ({method})" if method else label(version)

    def lines(self, limit: int = 10) -> list[str]:
        """Plain sentences: the ranking, head-to-head, the agreement."""
        r = self.ratings
        if not r.ratings:
            lines = ["No picks on mixed sets yet: open a comparison (`prefloop arena start`)."]
        else:
            lines = [
                f"{r.matches} picks on {r.sets} mixed sets; Bradley–Terry ratings (Elo scale, "
                f"{label(r.anchor)} = 0), {r.confidence:.0%} intervals from {r.bootstrap} "
                "resamples of whole sets:"
            ]
            for rank, x in enumerate(r.ratings[:limit], 1):
                mark = " (serving)" if x.version == self.serving else ""
                lines.append(
                    f"{rank}. {self.name(x.version)}{mark}: {x.rating:+.0f} "
                    f"[{x.low:+.0f}, {x.high:+.0f}], {x.comparisons} comparisons"
                )
            for h in r.head_to_head[:limit]:
                lines.append(
                    f"{self.name(h.a)} vs {self.name(h.b)}: {h.comparisons} comparisons, "
                    f"{label(h.a)} won {h.win_rate_a:.1%} (on {h.prompt_win_rate_a:.0%} of "
                    f"{h.prompts} prompts)"
                )
        lines.append(
            self.agreement.describe() if self.agreement else "No HPS is active: no live agreement."
        )
        return lines

    def describe(self) -> str:
        return "\n".join(self.lines())

    def to_json(self) -> dict[str, Any]:
        r = self.ratings
        return {
            "made_at": self.made_at.isoformat(),
            "serving": key(self.serving),
            "anchor": key(r.anchor) if r.ratings else None,
            "scale": "elo",
            "matches": r.matches,
            "sets": r.sets,
            "bootstrap": r.bootstrap,
            "confidence": r.confidence,
            "ratings": [
                {
                    **asdict(x),
                    "version": key(x.version),
                    "label": label(x.version),
                    "method": self.methods.get(x.version) if x.version is not None else None,
                }
                for x in r.ratings
            ],
            "head_to_head": [{**asdict(h), "a": key(h.a), "b": key(h.b)} for h in r.head_to_head],
            "agreement": _agreement_json(self.agreement),
        }


async def leaderboard(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, bootstrap: int = 1000
) -> Leaderboard:
    """Rate every version from every pick on a mixed set; the live HPS agreement beside."""
    async with sessions() as session:
        found = await outcomes(session)
        active = {v.kind: v for v in await active_versions(session)}
        rated = {v for o in found for v in (o.winner, o.loser) if v is not None}
        rows = await session.execute(
            select(ModelVersion.id, ModelVersion.metrics).where(ModelVersion.id.in_(rated))
        )
        methods = {i: str(m["method"]) for i, m in rows if m and m.get("method")}
    adapter = active.get("generator_adapter")
    serving = adapter.id if adapter else None
    matches = [Match(o.winner, o.loser, o.score, 1.0, o.generation_id, o.prompt) for o in found]
    # The bootstrap refits a thousand times: off the event loop that serves Discord.
    ratings = await asyncio.to_thread(rate, matches, bootstrap=bootstrap, seed=SEED)
    agreement = await active_agreement(sessions, settings.arena.agreement_window)
    return Leaderboard(datetime.now(UTC), ratings, serving, agreement, methods)


def report_folder(settings: Settings, when: datetime) -> Path:
    """Where a leaderboard report goes by default: data_dir/reports/leaderboard-<UTC time>."""
    return settings.data_dir / "reports" / f"leaderboard-{when.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def write_report(board: Leaderboard, folder: Path) -> list[Path]:
    """leaderboard.json, report.md and ratings.png (the ratings with their intervals)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "leaderboard.json"
    data.write_text(json.dumps(board.to_json(), indent=2) + "\n")
    plot = plot_ratings(board, folder / "ratings.png")
    report = folder / "report.md"
    report.write_text(_markdown(board, plot.name))
    return [data, report, plot]


def plot_ratings(board: Leaderboard, out: Path) -> Path:
    """Each version's rating with its interval as an error bar, best at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rated = board.ratings.ratings
    figure, axis = plt.subplots(figsize=(6, 1 + 0.5 * max(1, len(rated))))
    if rated:
        ys = list(range(len(rated)))[::-1]
        values = [x.rating for x in rated]
        errors = [[x.rating - x.low for x in rated], [x.high - x.rating for x in rated]]
        colours = ["tab:orange" if x.version == board.serving else "tab:blue" for x in rated]
        axis.errorbar(values, ys, xerr=errors, fmt="none", ecolor="grey", capsize=4)
        axis.scatter(values, ys, c=colours, zorder=3)
        axis.set_yticks(ys, [board.name(x.version) for x in rated])
        axis.axvline(0, color="lightgrey", linewidth=1)
    else:
        axis.text(0.5, 0.5, "no picks on mixed sets yet", ha="center", va="center")
        axis.set_yticks([])
    axis.set_xlabel(f"rating (Elo scale, {label(board.ratings.anchor)} = 0)")
    axis.set_title("generator versions judged by members' picks (orange: serving)")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def _markdown(board: Leaderboard, plot: str) -> str:
    r = board.ratings
    lines = [
        f"# Leaderboard ({board.made_at:%Y-%m-%d %H:%M} UTC)",
        "",
        f"{r.matches} picks on {r.sets} mixed sets. Bradley–Terry ratings on the Elo scale "
        f"({label(r.anchor)} = 0); {r.confidence:.0%} intervals from {r.bootstrap} bootstrap "
        "resamples of whole mixed sets (several members' picks on one set are not independent).",
        "",
        f"![ratings]({plot})",
        "",
        "| rank | version | rating | interval | comparisons | wins |",
        "|---:|---|---:|---|---:|---:|",
    ]
    for rank, x in enumerate(r.ratings, 1):
        mark = " (serving)" if x.version == board.serving else ""
        lines.append(
            f"| {rank} | {board.name(x.version)}{mark} | {x.rating:+.0f} | "
            f"[{x.low:+.0f}, {x.high:+.0f}] | {x.comparisons} | {x.score:g} |"
        )
    lines += [
        "",
        "## Head to head",
        "",
        "| A | B | comparisons | A's wins | A's win rate | prompts | A won on |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for h in r.head_to_head:
        lines.append(
            f"| {board.name(h.a)} | {board.name(h.b)} | {h.comparisons} | {h.wins_a:g} | "
            f"{h.win_rate_a:.1%} | {h.prompts} | {h.prompt_win_rate_a:.0%} |"
        )
    lines += ["", "## The active HPS and live picks", ""]
    a = board.agreement
    lines.append(a.describe() if a else "No HPS is active.")
    if a and a.trend:
        lines += ["", "| block | picks | top-1 agreement | from | to |", "|---:|---:|---:|---|---|"]
        for k, b in enumerate(a.trend, 1):
            lines.append(
                f"| {k} | {b.picks} | {b.agreement:.1%} | {b.first_at:%Y-%m-%d %H:%M} | "
                f"{b.last_at:%Y-%m-%d %H:%M} |"
            )
    return "\n".join(lines) + "\n"


def _agreement_json(found: Agreement | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "hps_version_id": found.hps_version_id,
        "window": found.window,
        "picks": found.picks,
        "full": found.full,
        "agreement": found.agreement,
        "trend": [
            {**asdict(b), "first_at": b.first_at.isoformat(), "last_at": b.last_at.isoformat()}
            for b in found.trend
        ],
    }
