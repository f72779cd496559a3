"""The whole loop on the tiny presets, from picks to the next /imagine on Discord.

Members generate with the tiny generator through the service and the worker's code and
pick the reddest image (a crowd's taste shrunk to a rule). A
retrain then exports the picks, fits the tiny HPS from the plain tiny CLIP, selects and
adapts with it, judges both against what serves (the real trainer, in a subprocess), and
promotes them; the next /imagine on the fake Discord is made with the new adapter by a
worker that was never restarted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.domain import GenerationOptions, UserRef
from bot.generation.runner import GenerationRunner
from bot.retrain.stages import Retrain
from bot.retrain.triggers import request_retrain
from tests.support.discord_bot import ALICE, bot_running, final_message, imagine, worker_running
from tests.support.red_corner import redness

GENERATIONS = 80


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about four minutes on two CPU cores
async def test_a_full_retrain_promotes_both_models_and_the_next_imagine_uses_them(
    bot_platform: Any, fake: Any, tiny_model: Path
) -> None:
    from training.generator import Generator

    platform = bot_platform
    platform.settings.generator.steps = 10
    retrain = platform.settings.retrain
    retrain.hps_base, retrain.device, retrain.gpus = "tiny", "cpu", 0
    retrain.eval_prompts, retrain.eval_seeds, retrain.eval_steps = 16, 4, 10
    generator = Generator.load(
        str(tiny_model), cache_dir=tiny_model.parent, device="cpu", safety_checker=False
    )
    runner = GenerationRunner(platform.sessions, platform.storage, generator)
    service = platform.service
    for i in range(GENERATIONS):
        member = UserRef.parse(f"cli:member{i % 10}")
        options = GenerationOptions(seed=1000 * i)  # the same images on every run
        submitted = await service.submit_prompt(member, f"a thing number {i}", 4, options)
        assert await runner.run(submitted.generation_id) == "done"
        view = await service.get_generation(submitted.generation_id)
        files = [platform.storage.local_path(image.storage_key) for image in view.images]
        reddest = max(range(len(files)), key=lambda k: redness(files[k]))
        await service.record_choice(submitted.generation_id, member, reddest)

    request = await request_retrain(platform.sessions, trigger="test")
    summary = await Retrain(platform, request.run_id).run()
    print(summary)
    registry = service.registry
    hps = await registry.active("hps")
    adapter = await registry.active("generator_adapter")
    assert hps is not None, summary
    assert hps.metrics["candidate"]["top1"] > hps.metrics["base"]["top1"]
    assert adapter is not None, summary
    assert adapter.metrics["win_rate"] >= 0.55 and adapter.metrics["hps"] == hps.uri
    # the loop judged the adapter both ways and serves it the way that did better: as the
    # paper does, with "Weird image." as the negative prompt
    tried = adapter.metrics["tried"]
    print({k: (v["win_rate"], v["mean_difference"]) for k, v in tried.items()})
    assert adapter.metrics["negative_prompt"] == "Weird image."
    with_it, without = tried["with_negative_prompt"], tried["without_negative_prompt"]
    assert with_it["mean_difference"] > without["mean_difference"]
    assert (Path(adapter.uri) / "pytorch_lora_weights.safetensors").is_file()
    assert (Path(hps.uri).parent / "report" / "report.md").is_file()

    async with bot_running(platform, fake), worker_running(platform):
        it = await imagine(fake, ALICE, "a thing nobody drew", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=120)
    assert f'adapter #{adapter.id} with "Weird image." as its negative prompt' in final.content
    async with platform.engine.connect() as connection:
        made_with = await connection.execute(
            text(
                "SELECT adapter_version_id, params->>'negative_prefix' FROM generations "
                "ORDER BY id DESC LIMIT 1"
            )
        )
        assert tuple(made_with.one()) == (adapter.id, "Weird image.")
