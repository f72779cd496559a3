"""The admins' plots, drawn on the server as PNG: the dataset's growth and the votes per day.

Drawn with matplotlib's Agg canvas (the one the evaluation reports use), on a figure of
their own, never pyplot's global state, so they can be drawn in a worker thread
(:func:`asyncio.to_thread`) while the event loop serves others. Why on the server rather
than with a chart library in the browser: docs/web.md, "Plots".

matplotlib comes with the ``ml`` extra; a front end installed without it draws a plain
picture that says so (Pillow), not an error. :class:`Memo` keeps what was drawn until the
data change (or a minute passes).
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bot.db.timeline import DailyVotes, Growth

T = TypeVar("T")

SIZE = (7.0, 3.2)  # inches
DPI = 100
NO_DATA = "no data yet"
NO_MATPLOTLIB = "plots need matplotlib: pip install 'prefloop[ml]'"
COLOURS = {"generations": "#4656d8", "images": "#2a9d8f", "votes": "#e76f51"}
KIND_COLOURS = {"pick": "#4656d8", "tie": "#9aa3b2", "none": "#b3261e"}
KIND_LABELS = {"pick": "picks", "tie": "no favourite", "none": "none are good"}


def growth_png(growth: Growth) -> bytes:
    """Cumulative generations, images and votes over time (UTC)."""
    title = "Dataset growth (cumulative)"
    figure, axis = _figure()
    if figure is None or not growth.buckets:
        return message_png(NO_DATA if figure else NO_MATPLOTLIB, title)
    for name, values, style in (
        ("images", growth.images, "-"),
        ("votes", growth.votes, "-"),
        ("generations", growth.generations, "--"),  # dashed: often on the votes' line
    ):
        total, running = 0, []
        for value in values:
            total += value
            running.append(total)
        axis.plot(
            growth.buckets,
            running,
            drawstyle="steps-post",
            marker="o" if len(running) < 30 else None,
            markersize=3,
            linestyle=style,
            color=COLOURS[name],
            label=f"{name} ({total})",
        )
    axis.set_title(title)
    axis.set_ylabel("count")
    axis.set_ylim(bottom=0)
    step = timedelta(hours=1) if growth.unit == "hour" else timedelta(days=1)
    _span(axis, growth.buckets[0], growth.buckets[-1], step)
    return _finish(figure, axis, f"UTC, per {growth.unit}")


def picks_png(daily: DailyVotes) -> bytes:
    """Votes per UTC day, stacked by kind: picks, no favourite, none are good."""
    title = "Votes per day"
    figure, axis = _figure()
    if figure is None or not daily.days:
        return message_png(NO_DATA if figure else NO_MATPLOTLIB, title)
    bottom = [0] * len(daily.days)
    for kind, counts in daily.counts.items():
        axis.bar(
            daily.days,
            counts,
            width=0.8,
            bottom=bottom,
            color=KIND_COLOURS.get(kind, "grey"),
            label=f"{KIND_LABELS.get(kind, kind)} ({sum(counts)})",
        )
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axis.set_title(title)
    axis.set_ylabel("votes")
    _span(axis, daily.days[0], daily.days[-1], timedelta(days=1))
    return _finish(figure, axis, "UTC day", days=True)


def message_png(message: str, title: str) -> bytes:
    """A plot-sized picture that says ``message`` (no data yet): drawn by matplotlib like
    the plots, or by Pillow where matplotlib is not installed."""
    figure, axis = _figure()
    if figure is not None:
        axis.set_axis_off()
        axis.set_title(title)
        axis.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="#5d6470")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    from PIL import Image, ImageDraw

    width, height = int(SIZE[0] * DPI), int(SIZE[1] * DPI)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width - 1, height - 1), outline="#dde1e7")
    draw.text((16, 12), title, fill="#1d1f24")
    box = draw.textbbox((0, 0), message)
    draw.text(
        ((width - (box[2] - box[0])) / 2, (height - (box[3] - box[1])) / 2),
        message,
        fill="#5d6470",
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _figure() -> tuple[Any, Any]:
    """A figure with one axis on the Agg canvas; (None, None) without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None, None
    figure = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _span(axis: Any, first: datetime, last: datetime, step: timedelta) -> None:
    """The x axis from a step before the first point to a step after the last: a single
    point (a new dataset) gets a readable axis, not matplotlib's default years around it."""
    axis.set_xlim(first - step, last + step)


def _finish(figure: Any, axis: Any, xlabel: str, *, days: bool = False) -> bytes:
    """Dates on the x axis, the legend beside the plot (never over the data), PNG.
    ``days``: one tick per day or more (bars of whole days), never hours."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, DateFormatter, DayLocator
    from matplotlib.ticker import MaxNLocator

    low, high = axis.get_xlim()
    if days and high - low <= 16:  # a tick on each day (matplotlib's dates count in days)
        axis.xaxis.set_major_locator(DayLocator(interval=1 if high - low <= 8 else 2))
        axis.xaxis.set_major_formatter(DateFormatter("%b %d"))
    else:
        locator = AutoDateLocator(minticks=3, maxticks=8)
        axis.xaxis.set_major_locator(locator)
        axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts
    axis.set_xlabel(xlabel)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axis.grid(axis="y", color="#eeeeee")
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


class Memo:
    """Values worth keeping between requests (drawn plots, the leaderboard's bootstrap),
    each under a name, kept while the data marker they were made from stays the same and
    for at most ``ttl`` seconds. One computation per name at a time: a second request
    waits for the first's result."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._kept: dict[str, tuple[Hashable, float, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, name: str, marker: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            kept = self._kept.get(name)
            if kept is not None and kept[0] == marker and time.monotonic() - kept[1] < self.ttl:
                value: T = kept[2]
                return value
            value = await make()
            self._kept[name] = (marker, time.monotonic(), value)
            return value
