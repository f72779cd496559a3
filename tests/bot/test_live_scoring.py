"""Live HPS scores: each new image is scored by the active HPS, best effort, after it is seen."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import text

from bot.domain import UserRef
from bot.generation.runner import GenerationRunner
from bot.generation.scoring import LiveScorer, live_scorer
from training.hps import HPSScorer, load_clip, save_checkpoint
from training.presets import build_tiny_clip

ALICE = UserRef.parse("cli:alice")


@pytest.fixture(scope="module")
def other_hps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second HPS: the tiny CLIP with other weights (its scores differ from the preset's)."""
    folder = tmp_path_factory.mktemp("hps")
    clip = load_clip("tiny", cache_dir=folder / "cache")
    clip.model.load_state_dict(build_tiny_clip(seed=1).state_dict())
    return save_checkpoint(clip, folder / "hps-2", {"base": "preset:tiny"})


def _runner(platform: Any, generator: Any) -> tuple[GenerationRunner, LiveScorer]:
    scorer = live_scorer(platform)
    assert scorer is not None  # on by default, on the generator's device
    runner = GenerationRunner(
        platform.sessions, platform.storage, generator, registry=platform.registry, scorer=scorer
    )
    return runner, scorer


async def _generate(platform: Any, runner: GenerationRunner, prompt: str) -> int:
    submitted = await platform.service.submit_prompt(ALICE, prompt, 2)
    assert await runner.run(submitted.generation_id) == "done"
    return submitted.generation_id


async def _scores(platform: Any, generation_id: int) -> list[tuple[int, int, float]]:
    """(image index, HPS version, score) of a generation's images, by index."""
    async with platform.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT i.index, s.hps_version_id, s.score FROM hps_scores s "
                "JOIN images i ON i.id = s.image_id WHERE i.generation_id = :g ORDER BY i.index"
            ),
            {"g": generation_id},
        )
        return [tuple(row) for row in rows]


async def _own_scores(platform: Any, generation_id: int, hps: str) -> list[float]:
    """What ``hps`` itself gives the stored files of a generation."""
    view = await platform.service.get_generation(generation_id)
    images = []
    for image in view.images:
        with Image.open(io.BytesIO(await platform.storage.get(image.storage_key))) as png:
            images.append(png.convert("RGB"))
    scorer = HPSScorer.load(hps, device="cpu", cache_dir=platform.settings.data_dir / "models")
    return scorer.score(images, view.prompt)


async def test_the_active_hps_scores_each_new_image_and_a_promotion_switches_it(
    platform: Any, generator: Any, other_hps: Path
) -> None:
    runner, scorer = _runner(platform, generator)
    first = await platform.registry.register("hps", "tiny")
    await platform.registry.promote(first)

    made = await _generate(platform, runner, "a red cat")
    scored = await _scores(platform, made)
    assert [(k, v) for k, v, _ in scored] == [(0, first), (1, first)]
    assert [s for *_, s in scored] == pytest.approx(
        await _own_scores(platform, made, "tiny"), abs=1e-3
    )

    second = await platform.registry.register("hps", str(other_hps))
    await platform.registry.promote(second)
    later = await _generate(platform, runner, "a blue dog")  # no restart
    rescored = await _scores(platform, later)
    assert [(k, v) for k, v, _ in rescored] == [(0, second), (1, second)]
    own = await _own_scores(platform, later, str(other_hps))
    assert [s for *_, s in rescored] == pytest.approx(own, abs=1e-3)
    assert own != pytest.approx(await _own_scores(platform, later, "tiny"), abs=1e-3)
    assert scorer.version == second and scorer.scorer is not None  # one HPS held: the active
    assert await _scores(platform, made) == scored  # earlier scores stay as they were


async def test_without_an_active_hps_nothing_is_scored(platform: Any, generator: Any) -> None:
    runner, scorer = _runner(platform, generator)
    await platform.registry.register("hps", "tiny")  # a candidate only: it does not serve
    made = await _generate(platform, runner, "a red cat")
    assert await _scores(platform, made) == []
    assert scorer.scorer is None


async def test_a_broken_hps_is_logged_once_and_the_jobs_succeed(
    platform: Any, generator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="bot.generation.scoring")
    runner, _ = _runner(platform, generator)
    broken = await platform.registry.register("hps", str(tmp_path / "missing" / "hps.pt"))
    await platform.registry.promote(broken)
    made = [await _generate(platform, runner, f"a cat {k}") for k in range(2)]
    for generation_id in made:
        assert await _scores(platform, generation_id) == []
    errors = [r for r in caplog.records if r.name == "bot.generation.scoring"]
    assert len(errors) == 1 and f"HPS version {broken} not loaded" in errors[0].getMessage()


async def test_scoring_comes_after_the_images_are_recorded_and_never_fails_the_job(
    platform: Any, generator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, _ = _runner(platform, generator)
    await platform.registry.promote(await platform.registry.register("hps", "tiny"))
    seen: list[tuple[str, int]] = []

    def failing(self: HPSScorer, images: Any, prompt: str) -> list[float]:
        raise RuntimeError("CUDA out of memory")

    async def score_generation(generation_id: int, prompt: str, images: Any) -> None:
        async with platform.engine.connect() as connection:  # what members can see by now
            row = await connection.execute(
                text(
                    "SELECT g.status, count(i.id) FROM generations g "
                    "LEFT JOIN images i ON i.generation_id = g.id WHERE g.id = :g GROUP BY g.id"
                ),
                {"g": generation_id},
            )
            seen.append(tuple(row.one()))
        await original(generation_id, prompt, images)

    assert runner.scorer is not None
    original = runner.scorer.score_generation
    monkeypatch.setattr(runner.scorer, "score_generation", score_generation)
    monkeypatch.setattr(HPSScorer, "score", failing)
    made = await _generate(platform, runner, "a red cat")
    assert seen == [("done", 2)]
    assert await _scores(platform, made) == []


async def test_scoring_can_be_turned_off(platform: Any) -> None:
    platform.settings.worker.score_images = False
    assert live_scorer(platform) is None
