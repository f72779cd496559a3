"""Exports know vote kinds, rater weights and control sets.

The HPS layout keeps what the HPS v1 release holds (picks on ordinary sets) unless asked
for more, and counts what it leaves out; every instance carries the vote's kind, its
rater's reliability weight and the control flags; Parquet holds every vote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.cli.export import render_export
from bot.domain import UserRef
from bot.export import ExportError, Rater
from bot.export.privacy import UserHasher, load_secret
from bot.export.tasks import run_export_job
from tests.support.cli import platform_env, prefloop
from tests.support.database import make_done_generation, sql
from training.data import read_preferences

ALICE = UserRef.parse("discord:111111111111111111")
BOB = UserRef.parse("discord:222222222222222222")
CAROL = UserRef.parse("discord:333333333333333333")
DAN = UserRef.parse("discord:444444444444444444")

EXTENSION = ("vote", "human_preference", "control", "control_worse", "control_best")


async def user_id(platform: Any, user: UserRef) -> int:
    found = await sql(platform, "SELECT id FROM users WHERE external_id = :e", e=user.external_id)
    return int(found.scalar_one())


async def vote(platform: Any, generation: int, user: UserRef, kind: str) -> None:
    """A tie or "none are good", recorded as the button does (no image index)."""
    await sql(
        platform,
        "INSERT INTO choices (generation_id, user_id, kind) VALUES (:g, :u, :k)",
        g=generation,
        u=await user_id(platform, user),
        k=kind,
    )


async def control(
    platform: Any, generation: int, kind: str, worse: int | None, best: int | None = None
) -> None:
    await sql(
        platform,
        "UPDATE generations SET control_kind = :kind, control_worse = :worse, "
        "control_best = :best WHERE id = :g",
        g=generation,
        kind=kind,
        worse=worse,
        best=best,
    )


async def four_votes(platform: Any, generator: Any) -> dict[str, int]:
    """A pick, a tie and a "none" on ordinary sets, and a pick on a control set."""
    picked = await make_done_generation(platform, generator, str(ALICE), "an ordinary pick", 3)
    tied = await make_done_generation(platform, generator, str(BOB), "a tie", n=2)
    nothing = await make_done_generation(platform, generator, str(CAROL), "none are good", 2)
    blurred = await make_done_generation(platform, generator, str(DAN), "a control set", n=3)
    await platform.service.record_choice(picked, ALICE, 1)
    await vote(platform, tied, BOB, "tie")
    await vote(platform, nothing, CAROL, "none")
    await control(platform, blurred, "blur", worse=2)
    await platform.service.record_choice(blurred, DAN, 0)
    return {"picked": picked, "tied": tied, "nothing": nothing, "blurred": blurred}


def entries(done: Any, split: str = "train") -> dict[str, dict[str, Any]]:
    found = json.loads((done.out / f"preference_{split}.json").read_text())
    return {entry["prompt"]: entry for entry in found}


async def test_the_hps_layout_keeps_the_releases_content_and_counts_the_rest(
    platform: Any, generator: Any, export: Any
) -> None:
    await four_votes(platform, generator)

    done = await export(test_fraction=0.0)

    (entry,) = entries(done).values()
    assert entry["prompt"] == "an ordinary pick"
    assert tuple(entry[k] for k in EXTENSION) == ("pick", 1, None, None, None)
    assert 0.0 < entry["rater_weight"] <= 1.0
    (example,) = read_preferences(done.out, "all", strict=True)  # HPS readers take it as is
    assert (example.prompt, example.chosen) == ("an ordinary pick", 1)
    votes = done.manifest["votes"]
    assert (votes["votes"], votes["controls"]) == ("picks", False)
    assert votes["written"] == {"pick": 1, "tie": 0, "none": 0}
    assert votes["left_out"] == {"tie": 1, "none": 1, "control": 1}
    controls = done.manifest["controls"]
    assert (controls["sets"], controls["votes"], controls["written"]) == (1, 1, 0)
    assert controls["by_kind"]["blur"] == 1 and sum(controls["by_kind"].values()) == 1
    assert done.manifest["counts"]["picks_read"] == 4
    assert done.manifest["schema_version"] == 3
    assert "left out: 1 ties, 1 none, 1 control votes" in render_export(done)
    assert done.manifest["agreement"]["overall"]["units"] == 0  # no set has two voters

    everything = await export("all", votes="all", controls=True, test_fraction=0.0)

    found = entries(everything)
    assert {prompt: tuple(e[k] for k in EXTENSION) for prompt, e in found.items()} == {
        "an ordinary pick": ("pick", 1, None, None, None),
        "a tie": ("tie", None, None, None, None),
        "none are good": ("none", None, None, None, None),
        "a control set": ("pick", 0, "blur", 2, None),
    }
    assert found["an ordinary pick"]["id"] == entry["id"]  # a vote's id is stable
    assert all(isinstance(e["rater_weight"], float) for e in found.values())
    assert everything.manifest["votes"]["written"] == {"pick": 2, "tie": 1, "none": 1}
    assert everything.manifest["votes"]["left_out"] == {"tie": 0, "none": 0, "control": 0}
    assert everything.manifest["controls"]["written"] == 1
    assert everything.instances == 4
    assert "left out" not in render_export(everything)
    # Only the ties and "none" asked for: the control set is still left out, and counted.
    ties = await export("ties", votes="all", test_fraction=0.0)
    assert set(entries(ties)) == {"an ordinary pick", "a tie", "none are good"}
    assert ties.manifest["votes"]["left_out"] == {"tie": 0, "none": 0, "control": 1}


async def test_a_control_sets_flags_index_the_written_images(
    platform: Any, generator: Any, export: Any
) -> None:
    marked = await make_done_generation(platform, generator, str(ALICE), "marked by an admin", 4)
    await control(platform, marked, "marked", worse=3, best=2)
    await sql(
        platform, "UPDATE images SET nsfw = true WHERE generation_id = :g AND index = 0", g=marked
    )
    await platform.service.record_choice(marked, ALICE, 2)

    done = await export(controls=True, test_fraction=0.0)

    entry = entries(done)["marked by an admin"]
    assert entry["image_index"] == [1, 2, 3]  # the flagged image is dropped
    assert tuple(entry[k] for k in EXTENSION) == ("pick", 1, "marked", 2, 1)


async def test_a_rater_who_fails_control_sets_weighs_less(
    platform: Any, generator: Any, export: Any
) -> None:
    """CAROL picks the blurred image on every control set, BOB never does."""
    for n in range(3):
        blurred = await make_done_generation(platform, generator, str(ALICE), f"control {n}", 3)
        await control(platform, blurred, "blur", worse=2)
        await platform.service.record_choice(blurred, BOB, 0)
        await platform.service.record_choice(blurred, CAROL, 2)
    shared = await make_done_generation(platform, generator, str(ALICE), "a shared set", 3)
    await platform.service.record_choice(shared, BOB, 1)
    await platform.service.record_choice(shared, CAROL, 0)
    await platform.service.record_choice(shared, ALICE, 1)

    done = await export(rater=Rater.all, test_fraction=0.0)

    found = json.loads((done.out / "preference_train.json").read_text())
    assert {e["prompt"] for e in found} == {"a shared set"}  # control votes left out
    hashed = UserHasher(load_secret(platform.settings.data_dir, None))
    weight = {
        who: e["rater_weight"]
        for e in found
        for who in (ALICE, BOB, CAROL)
        if e["user_hash"] == hashed(who.frontend.value, who.external_id)
    }
    assert len(weight) == 3
    assert weight[CAROL] < 0.5 < weight[BOB]
    assert weight[CAROL] < weight[ALICE]  # ALICE has only agreement to go on
    raters = done.manifest["raters"]
    assert raters["raters"] == 3 and raters["below_half"] == pytest.approx(1 / 3)
    assert raters["mean_weight"] == pytest.approx(sum(weight.values()) / 3, abs=1e-5)
    assert raters["prior_careful"] == platform.settings.raters.prior_careful
    overall = done.manifest["agreement"]["overall"]  # the shared set: 1, 1 and 0
    assert (overall["units"], overall["labels"]) == (1, 3)
    assert overall["pairwise"] == pytest.approx(1 / 3)
    assert [week["units"] for week in done.manifest["agreement"]["weeks"]] == [1]
    assert "agreement: pairwise 33.3%" in render_export(done)
    assert done.manifest["controls"]["votes"] == 6 and done.manifest["controls"]["sets"] == 3
    assert done.manifest["votes"]["left_out"]["control"] == 6


async def test_a_rater_without_evidence_gets_the_prior(
    platform: Any, generator: Any, export: Any
) -> None:
    alone = await make_done_generation(platform, generator, str(ALICE), "a lone pick", n=2)
    await platform.service.record_choice(alone, ALICE, 0)
    done = await export(test_fraction=0.0)
    (entry,) = entries(done).values()
    assert entry["rater_weight"] == platform.settings.raters.prior_careful
    assert done.manifest["raters"]["raters_with_evidence"] == 0


async def test_parquet_holds_every_vote_with_its_fields(
    platform: Any, generator: Any, export: Any
) -> None:
    import pyarrow.parquet as pq

    await four_votes(platform, generator)

    done = await export(format="parquet", rater=Rater.all, test_fraction=0.0)

    rows = pq.read_table(done.out / "train.parquet").to_pylist()
    assert {r["prompt"]: tuple(r[k] for k in EXTENSION) for r in rows} == {
        "an ordinary pick": ("pick", 1, None, None, None),
        "a tie": ("tie", None, None, None, None),
        "none are good": ("none", None, None, None, None),
        "a control set": ("pick", 0, "blur", 2, None),
    }
    assert all(0.0 < r["rater_weight"] <= 1.0 for r in rows)
    assert done.manifest["votes"]["left_out"] == {"tie": 0, "none": 0, "control": 0}
    schema = pq.read_schema(done.out / "train.parquet")
    assert str(schema.field("human_preference").type) == "int8"
    assert str(schema.field("rater_weight").type) == "double"
    # Asked for the release's content, Parquet leaves the rest out too.
    picks = await export("picks", format="parquet", votes="picks", controls=False)
    assert picks.instances == 1 and picks.manifest["votes"]["left_out"]["tie"] == 1


async def test_an_incremental_series_keeps_to_its_selection(
    platform: Any, generator: Any, export: Any
) -> None:
    await four_votes(platform, generator)
    first = await export("first", incremental=True, test_fraction=0.0)
    assert first.instances == 1
    # Another selection starts its own series: the tie made before is not skipped.
    every = await export("every", incremental=True, votes="all", test_fraction=0.0)
    assert set(entries(every)) == {"an ordinary pick", "a tie", "none are good"}
    later = await make_done_generation(platform, generator, str(BOB), "another tie", n=2)
    await vote(platform, later, BOB, "tie")
    picks = await export("picks", incremental=True, test_fraction=0.0)
    assert picks.instances == 0 and picks.manifest["votes"]["left_out"]["tie"] == 1
    votes = await export("votes", incremental=True, votes="all", test_fraction=0.0)
    assert set(entries(votes)) == {"another tie"}


async def test_the_export_job_and_the_command_take_the_options(
    platform: Any, generator: Any, tmp_path: Path
) -> None:
    await four_votes(platform, generator)
    storage, settings = platform.storage, platform.settings

    summary = await run_export_job(
        platform.database_url, storage, settings, out=str(tmp_path / "job"), votes="all"
    )
    assert summary.startswith("exported 3 votes to")
    manifest = json.loads((tmp_path / "job" / "manifest.json").read_text())
    assert manifest["votes"]["left_out"] == {"tie": 0, "none": 0, "control": 1}
    with pytest.raises(ExportError, match="unknown votes 'most'"):
        await run_export_job(
            platform.database_url, storage, settings, out=str(tmp_path / "bad"), votes="most"
        )

    env = platform_env(platform, settings.data_dir)
    out = tmp_path / "cli"
    done = prefloop(
        "export", str(out), "--votes", "all", "--controls", "--test-fraction", "0", env=env
    )
    assert done.returncode == 0, done.stderr
    assert "exported 4 votes (train 4, test 0)" in done.stdout
    assert "votes: 2 picks, 1 ties, 1 none; 1 on control sets" in done.stdout
    assert json.loads((out / "manifest.json").read_text())["votes"]["controls"] is True
    refused = prefloop("export", str(tmp_path / "x"), "--votes", "most", env=env)
    assert refused.returncode == 1 and "unknown votes 'most'" in refused.stderr
