"""A mixed set on Discord: the member cannot tell the versions apart, and their pick counts."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from bot.arena.versions import Version
from tests.support.adapters import distinct_lora_adapter
from tests.support.discord_bot import (
    ALICE,
    bot_running,
    final_message,
    imagine,
    private,
    worker_running,
)


async def test_a_mixed_set_names_no_version_and_its_pick_is_a_judged_comparison(
    bot_platform: Any, fake: Any, tiny_model: Path, tmp_path: Path
) -> None:
    platform = bot_platform
    folder = distinct_lora_adapter(tiny_model, tmp_path / "contender", seed=2, scale=0.5)
    contender = await platform.registry.register("generator_adapter", str(folder))
    await platform.service.arena.start(contender, actor="cli:admin", share=1.0)
    platform.service.mixing_rng = random.Random(3)

    async with bot_running(platform, fake), worker_running(platform):
        it = await imagine(fake, ALICE, "a red cat", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=120)
        assert "two versions compared" in final.content
        assert "adapter" not in final.content  # nothing says which image is which
        view = await platform.service.get_generation(1)
        made_by: list[Version] = [image.adapter_version_id for image in view.images]
        assert sorted(made_by, key=str) == sorted([None, contender], key=str)
        contenders_image = made_by.index(contender)

        click = await fake.click(final.id, f"pf:pick:1:{contenders_image}", user_id=ALICE)
        assert f"You picked image {contenders_image + 1}" in await private(fake, click, ALICE)

    status = await platform.service.arena.status()
    assert status.judged_sets == 1 and status.judgement is not None
    assert status.judgement.wins == 1.0  # the contender's image was picked
