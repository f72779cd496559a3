"""Sharing one GPU between generation and training; the retrain settings' checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.config import ConfigError, load_settings
from bot.retrain.gpu_turn import generation_turn, shares_gpu, spare_turn, training_turn


async def test_generation_waits_while_a_training_stage_holds_the_gpu(platform: Any) -> None:
    platform.settings.retrain.gpus = 1
    platform.settings.retrain.device = "cuda"
    platform.settings.generator.device = "cuda"
    assert shares_gpu(platform.settings)
    order: list[str] = []

    async def generate(name: str) -> None:
        async with generation_turn(platform.sessions, True):
            order.append(name)

    async with training_turn(platform):
        waiting = asyncio.create_task(generate("generation during training"))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # queued behind the stage
        order.append("training ends")
    await asyncio.wait_for(waiting, 60)
    assert order == ["training ends", "generation during training"]

    # Generations share the GPU with each other; the stage waits for them.
    async with generation_turn(platform.sessions, True):
        await asyncio.wait_for(generate("second generation"), 60)
        stage = asyncio.create_task(_train(platform, order))
        await asyncio.sleep(0.5)
        assert not stage.done()
    await asyncio.wait_for(stage, 60)
    assert order[-2:] == ["second generation", "stage ran"]


async def test_optional_work_takes_a_free_turn_and_never_waits(platform: Any) -> None:
    """Scoring new images (a spare turn) runs beside generations, skips while a stage
    holds the GPU, and does not keep the lock: the stage after it is not held up."""
    platform.settings.retrain.gpus = 1
    platform.settings.retrain.device = platform.settings.generator.device = "cuda"
    async with (
        generation_turn(platform.sessions, True),
        spare_turn(platform.sessions, True) as free,
    ):
        assert free  # shared with a generation
    async with training_turn(platform), spare_turn(platform.sessions, True) as free:
        assert not free  # the stage has it: no waiting, no scoring
    async with spare_turn(platform.sessions, False) as free:
        assert free  # the GPU is not shared: always
    order: list[str] = []
    await asyncio.wait_for(_train(platform, order), 60)  # nothing left holding the lock
    assert order == ["stage ran"]


async def _train(platform: Any, order: list[str]) -> None:
    async with training_turn(platform):
        order.append("stage ran")


@pytest.mark.parametrize(
    ("changes", "shared"),
    [
        ({"retrain": {"gpus": 1}}, True),
        ({"retrain": {"gpus": 2}}, False),
        ({"retrain": {"gpus": 1, "device": "cpu"}}, False),
        ({"retrain": {"gpus": 1}, "generator": {"device": "cpu"}}, False),
    ],
)
def test_who_shares_the_gpu(changes: dict[str, Any], shared: bool) -> None:
    assert shares_gpu(load_settings(_env_file=None, **changes)) is shared


def test_a_bad_schedule_is_refused_with_its_variable() -> None:
    with pytest.raises(ConfigError, match=r"PREFLOOP_RETRAIN__SCHEDULE: .*cron expression"):
        load_settings(_env_file=None, retrain={"schedule": "every night"})
    assert load_settings(_env_file=None, retrain={"schedule": "0 3 * * *"}).retrain.schedule
    assert load_settings(_env_file=None, retrain={"schedule": ""}).retrain.schedule is None


def test_the_hps_base_suits_the_generator() -> None:
    from bot.retrain.stages import hps_base

    assert hps_base(load_settings(_env_file=None)) == "ViT-L-14:openai"
    assert hps_base(load_settings(_env_file=None, generator={"model": "tiny"})) == "tiny"
    chosen = load_settings(_env_file=None, retrain={"hps_base": "ViT-H-14:laion2b_s32b_b79k"})
    assert hps_base(chosen) == "ViT-H-14:laion2b_s32b_b79k"
