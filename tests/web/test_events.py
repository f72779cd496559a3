"""The web's event hub remembers where each set being drawn is, so a page opened between
two steps shows the last one (a worker held after a step sends no other)."""

from __future__ import annotations

from bot.notify import GenerationEvent, ProgressEvent
from bot.web import events
from bot.web.events import EventHub


async def test_the_latest_step_of_a_set_is_kept_until_it_ends() -> None:
    hub = EventHub("postgresql://nowhere/none")  # never run: events are handed in directly
    assert hub.latest_progress(7) is None
    await hub._publish(ProgressEvent(7, 1, 3, "web"))  # nobody watching yet
    await hub._publish(ProgressEvent(7, 2, 3, "web"))
    assert hub.latest_progress(7) == ProgressEvent(7, 2, 3, "web")
    await hub._publish(GenerationEvent(7, "done", "web"))
    assert hub.latest_progress(7) is None


async def test_only_the_latest_sets_are_remembered(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(events, "LATEST_KEPT", 2)
    hub = EventHub("postgresql://nowhere/none")
    for generation_id in (1, 2, 3):
        await hub._publish(ProgressEvent(generation_id, 1, 3, "web"))
    assert hub.latest_progress(1) is None
    assert hub.latest_progress(3) is not None
