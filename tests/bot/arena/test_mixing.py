"""Mixed sets: the draw at submit time, the plan, the worker making both versions, the render."""

from __future__ import annotations

import io
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from bot.arena.mixing import plan_mixed
from bot.db.models import GenerationStatus
from bot.discord import render
from bot.domain import GenerationOptions, GenerationView, UserRef
from bot.generation.runner import GenerationRunner
from tests.support.adapters import distinct_lora_adapter
from training.generator import Generator

ALICE = UserRef.parse("cli:alice")


@pytest.fixture(scope="module")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two adapters that make different images (files; each test registers them)."""
    folder = tmp_path_factory.mktemp("arena-adapters")
    return (
        distinct_lora_adapter(tiny_model, folder / "a", seed=1),
        distinct_lora_adapter(tiny_model, folder / "b", seed=2),
    )


async def _sql(platform: Any, sql: str, **params: Any) -> Any:
    async with platform.engine.begin() as connection:
        return await connection.execute(text(sql), params)


async def _open_comparison(
    platform: Any, baseline: int | None, contender: int | None, share: float | None = None
) -> int:
    result = await _sql(
        platform,
        "INSERT INTO comparisons (baseline_version_id, contender_version_id, share) "
        "VALUES (:b, :c, :s) RETURNING id",
        b=baseline,
        c=contender,
        s=share,
    )
    return int(result.scalar_one())


async def _register(platform: Any, adapters: tuple[Path, Path]) -> tuple[int, int]:
    a, b = adapters
    return (
        await platform.registry.register("generator_adapter", str(a)),
        await platform.registry.register("generator_adapter", str(b)),
    )


async def _generation(platform: Any, generation_id: int) -> Any:
    result = await _sql(
        platform,
        "SELECT comparison_id, params, status, error FROM generations WHERE id = :g",
        g=generation_id,
    )
    return result.one()


async def _pixels(platform: Any, key: str) -> np.ndarray:
    data = await platform.storage.get(key)
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def _mixing(platform: Any, share: float = 1.0, seed: int = 0) -> None:
    platform.settings.arena.share = share
    platform.service.mixing_rng = random.Random(seed)


# ----- the plan ---------------------------------------------------------------------


def test_plan_shares_the_seeds_and_shuffles_the_positions_by_the_rng() -> None:
    seeds = [10, 11, 12, 13]
    planned, versions = plan_mixed(seeds, 1, 2, random.Random(7))
    assert (planned, versions) == plan_mixed(seeds, 1, 2, random.Random(7))  # deterministic
    made = sorted(zip(versions, planned, strict=True), key=lambda pair: (pair[0] or 0, pair[1]))
    assert made == [(1, 10), (1, 11), (2, 10), (2, 11)]  # the same noise for both versions

    odd_seeds, odd = plan_mixed([5, 6, 7], None, 3, random.Random(1))
    assert Counter(odd) == {None: 2, 3: 1}  # the baseline makes the odd one
    assert sorted(s for s, v in zip(odd_seeds, odd, strict=True) if v is None) == [5, 6]
    assert [s for s, v in zip(odd_seeds, odd, strict=True) if v == 3] == [5]

    orders = {tuple(plan_mixed(seeds, 1, 2, random.Random(k))[1]) for k in range(20)}
    assert len(orders) > 1  # positions are shuffled, not fixed


# ----- the draw ---------------------------------------------------------------------


async def test_share_zero_or_no_open_comparison_is_never_mixed(
    platform: Any, adapters: tuple[Path, Path]
) -> None:
    platform.settings.limits.max_queued_per_user = 20
    a, b = await _register(platform, adapters)

    async def mixed() -> bool:
        submitted = await platform.service.submit_prompt(ALICE, "a cat", 2)
        return (await _generation(platform, submitted.generation_id)).comparison_id is not None

    _mixing(platform, share=1.0)
    assert not await mixed()  # nothing is being compared
    comparison = await _open_comparison(platform, a, b, share=0.0)
    assert not await mixed()  # the comparison's own share wins over the setting
    await _sql(platform, "UPDATE comparisons SET share = NULL WHERE id = :c", c=comparison)
    _mixing(platform, share=0.0)
    assert not await mixed()  # the setting, where the comparison has none
    _mixing(platform, share=1.0)
    assert await mixed()
    await _sql(platform, "UPDATE comparisons SET status = 'stopped' WHERE id = :c", c=comparison)
    assert not await mixed()  # a stopped comparison draws nothing


async def test_the_daily_cap_stops_mixing_and_a_reroll_draws_afresh(
    platform: Any, adapters: tuple[Path, Path]
) -> None:
    platform.settings.limits.max_queued_per_user = 20
    platform.settings.arena.daily_cap = 2
    bob = UserRef.parse("cli:bob")
    plain = await platform.service.submit_prompt(ALICE, "a cat", 2)
    a, b = await _register(platform, adapters)
    comparison = await _open_comparison(platform, a, b)
    _mixing(platform, share=1.0)

    rerolled = await platform.service.reroll(plain.generation_id, ALICE)
    second = await platform.service.submit_prompt(ALICE, "a dog", 4)
    third = await platform.service.submit_prompt(ALICE, "a bird", 2)
    other = await platform.service.submit_prompt(bob, "a fish", 2)  # a cap per member
    found = {
        name: await _generation(platform, s.generation_id)
        for name, s in [("reroll", rerolled), ("second", second), ("third", third), ("bob", other)]
    }
    assert {name: row.comparison_id for name, row in found.items()} == {
        "reroll": comparison,
        "second": comparison,
        "third": None,  # the cap of 2 is reached
        "bob": comparison,
    }
    params = found["second"].params
    assert Counter(params["versions"]) == {a: 2, b: 2} and len(params["seeds"]) == 4
    assert second.seeds == params["seeds"]  # what the member is told is what is made
    pairs = list(zip(params["seeds"], params["versions"], strict=True))
    assert sorted(s for s, v in pairs if v == a) == sorted(s for s, v in pairs if v == b)
    assert "versions" not in found["third"].params

    # 24 hours later the cap is free again.
    await _sql(platform, "UPDATE generations SET requested_at = now() - interval '25 hours'")
    again = await platform.service.submit_prompt(bob, "a horse", 2)
    assert (await _generation(platform, again.generation_id)).comparison_id == comparison


# ----- the worker -------------------------------------------------------------------


async def test_a_mixed_set_is_made_by_both_versions_from_shared_seeds(
    platform: Any, tiny_model: Path, adapters: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = Generator.load(str(tiny_model), cache_dir=tiny_model.parent, device="cpu")
    runner = GenerationRunner(
        platform.sessions,
        platform.storage,
        generator,
        registry=platform.registry,
        progress_interval=0.0,
    )
    progress: list[tuple[int, int]] = []

    async def record(work: Any, step: int, total: int) -> None:
        progress.append((step, total))

    monkeypatch.setattr(runner, "_progress", record)
    a, b = await _register(platform, adapters)
    comparison = await _open_comparison(platform, a, b)
    _mixing(platform, share=1.0, seed=3)
    submitted = await platform.service.submit_prompt(
        ALICE, "a red cat", 2, GenerationOptions(seed=100)
    )
    assert await runner.run(submitted.generation_id) == "done"
    row = await _generation(platform, submitted.generation_id)
    assert row.comparison_id == comparison and sorted(row.params["versions"]) == [a, b]
    assert row.params["seeds"] == [100, 100]  # one image each, from the same noise
    assert sorted(progress) == [(k, 6) for k in range(1, 7)]  # both calls' steps count
    assert generator.adapter is None  # what serves (the bare base) is restored

    images = (
        await _sql(
            platform,
            "SELECT index, storage_key, adapter_version_id, generator_version FROM images "
            "WHERE generation_id = :g ORDER BY index",
            g=submitted.generation_id,
        )
    ).all()
    assert [i.adapter_version_id for i in images] == row.params["versions"]
    folders = {a: str(adapters[0]), b: str(adapters[1])}
    assert [i.generator_version for i in images] == [
        f"{generator.name}+{folders[i.adapter_version_id]}" for i in images
    ]
    view = await platform.service.get_generation(submitted.generation_id)
    assert view.comparison_id == comparison
    assert [i.adapter_version_id for i in view.images] == row.params["versions"]
    mixed = {i.adapter_version_id: await _pixels(platform, i.storage_key) for i in images}
    assert np.abs(mixed[a] - mixed[b]).max() > 10  # the versions differ

    # The same seed through a plain set served by each version: the same image.
    await _sql(platform, "UPDATE comparisons SET status = 'stopped'")
    for version in (a, b):
        await platform.registry.promote(version)
        plain = await platform.service.submit_prompt(
            ALICE, "a red cat", 2, GenerationOptions(seed=100)
        )
        assert await runner.run(plain.generation_id) == "done"
        made = await platform.service.get_generation(plain.generation_id)
        assert made.comparison_id is None and made.images[0].seed == 100
        assert [i.adapter_version_id for i in made.images] == [version, version]
        first = await _pixels(platform, made.images[0].storage_key)
        assert np.abs(first - mixed[version]).max() <= 2  # batching may round a step


async def test_a_version_that_cannot_load_fails_the_set_plainly(
    platform: Any, tiny_model: Path, tmp_path: Path
) -> None:
    generator = Generator.load(str(tiny_model), cache_dir=tiny_model.parent, device="cpu")
    runner = GenerationRunner(
        platform.sessions, platform.storage, generator, registry=platform.registry
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    contender = await platform.registry.register("generator_adapter", str(broken))
    await _open_comparison(platform, None, contender)  # the bare base against it
    _mixing(platform, share=1.0)
    submitted = await platform.service.submit_prompt(ALICE, "a cat", 2)
    with pytest.raises(Exception, match="could not be loaded"):
        await runner.run(submitted.generation_id, final_attempt=True)
    row = await _generation(platform, submitted.generation_id)
    assert row.status == "failed"
    assert row.error == "The image model could not be loaded; please try again later."
    assert str(broken) not in row.error
    count = await _sql(platform, "SELECT count(*) FROM images")
    assert count.scalar_one() == 0  # nothing made by the wrong version


# ----- the render -------------------------------------------------------------------


def test_the_render_of_a_mixed_set_names_no_version() -> None:
    def view(comparison_id: int | None) -> GenerationView:
        return GenerationView(
            id=1,
            prompt="a cat",
            negative_prompt="",
            status=GenerationStatus.done,
            requested_by=ALICE,
            n_images=2,
            params={},
            generator_version="tiny+/srv/adapters/5",
            adapter_version_id=5,
            error=None,
            requested_at=datetime.now(UTC),
            finished_at=None,
            comparison_id=comparison_id,
        )

    assert render.made_by(view(None)) == "tiny, adapter #5"
    assert render.made_by(view(3)) == "tiny, two versions compared"
    shown = render.result(view(3), "@alice")
    assert "Made by tiny, two versions compared." in shown
    assert "#5" not in shown and "adapter" not in shown and "/srv" not in shown
