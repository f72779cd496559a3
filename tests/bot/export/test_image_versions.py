"""Exports carry each image's own version: a mixed set's images come from two."""

from __future__ import annotations

import json
from typing import Any

from bot.domain import UserRef
from tests.support.database import make_done_generation, sql
from training.data import read_preferences

ALICE = UserRef.parse("discord:111111111111111111")
BOB = UserRef.parse("discord:222222222222222222")


async def test_each_image_carries_the_version_that_made_it(
    platform: Any, generator: Any, export: Any
) -> None:
    import pyarrow.parquet as pq

    plain = await make_done_generation(platform, generator, str(ALICE), "a red cat", n=2)
    mixed = await make_done_generation(platform, generator, str(BOB), "a blue dog", n=3)
    # Made into a mixed set as the worker records one: the images' own versions.
    first = await platform.registry.register("generator_adapter", "/models/a")
    second = await platform.registry.register("generator_adapter", "/models/b")
    comparison = (
        await sql(
            platform,
            "INSERT INTO comparisons (baseline_version_id, contender_version_id) "
            "VALUES (:a, :b) RETURNING id",
            a=first,
            b=second,
        )
    ).scalar_one()
    await sql(
        platform, "UPDATE generations SET comparison_id = :c WHERE id = :g", c=comparison, g=mixed
    )
    for index, version in enumerate([second, None, first]):
        await sql(
            platform,
            "UPDATE images SET adapter_version_id = :v WHERE generation_id = :g AND index = :k",
            v=version,
            g=mixed,
            k=index,
        )
    await platform.service.record_choice(plain, ALICE, 0)
    await platform.service.record_choice(mixed, BOB, 2)

    hps = await export(test_fraction=0.0)
    train = json.loads((hps.out / "preference_train.json").read_text())
    found = {e["prompt"]: (e["image_adapter_version_ids"], e["mixed"]) for e in train}
    assert found == {
        "a red cat": ([None, None], False),
        "a blue dog": ([second, None, first], True),
    }
    read = {e.prompt: e.image_versions for e in read_preferences(hps.out, "train", strict=True)}
    assert read == {"a red cat": (None, None), "a blue dog": (second, None, first)}

    parquet = await export("parquet", format="parquet", test_fraction=0.0)
    rows = pq.read_table(parquet.out / "train.parquet").to_pylist()
    assert {r["prompt"]: (r["image_adapter_version_ids"], r["mixed"]) for r in rows} == found
