"""`prefloop export`: the picks as a dataset that training and outside tools can read."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from bot.domain import UserRef
from bot.export import ExportError, Rater
from bot.export.files import ImageSource
from bot.export.privacy import load_secret
from tests.support.database import make_done_generation, sql
from tests.support.synthetic import seed_picks
from training.data import read_preferences
from training.presets import WORLD_SIDE

ALICE = UserRef.parse("discord:111111111111111111")
BOB = UserRef.parse("discord:222222222222222222")
CAROL = UserRef.parse("discord:333333333333333333")


async def _image_shas(platform: Any, generation_id: int) -> list[str]:
    rows = await sql(
        platform,
        "SELECT sha256 FROM images WHERE generation_id = :g ORDER BY index",
        g=generation_id,
    )
    return [sha for (sha,) in rows]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_round_trip_from_picks_to_training_examples(
    platform: Any, generator: Any, export: Any
) -> None:
    service = platform.service
    cat = await make_done_generation(platform, generator, str(ALICE), "a red cat", n=4)
    dog = await make_done_generation(platform, generator, str(BOB), "a dog by Greg Rutkowski", 2)
    await service.record_choice(cat, ALICE, 1)
    await service.record_choice(cat, ALICE, 2)  # a re-pick: the latest counts
    await service.record_choice(dog, BOB, 0)
    await service.record_choice(cat, BOB, 3)  # not the requester: left out by default

    done = await export(test_fraction=0.0)
    data = read_preferences(done.out, "all", strict=True)

    assert {(e.prompt, e.chosen, len(e.images)) for e in data} == {
        ("a red cat", 2, 4),
        ("a dog by Greg Rutkowski", 0, 2),
    }
    for example in data:
        generation = cat if example.prompt == "a red cat" else dog
        assert [_sha(p) for p in example.images] == await _image_shas(platform, generation)
        assert example.images[0].parent == done.out / "preference_images"
        assert example.chosen is not None and example.vote == "pick"
        assert example.open_images()[example.chosen].size == (WORLD_SIDE, WORLD_SIDE)
    train = json.loads((done.out / "preference_train.json").read_text())
    assert {e["prompt"]: e["contain_name"] for e in train} == {
        "a red cat": False,
        "a dog by Greg Rutkowski": True,
    }
    assert all(e["rater_is_requester"] for e in train)
    assert json.loads((done.out / "preference_test.json").read_text()) == []
    manifest = json.loads((done.out / "manifest.json").read_text())
    assert manifest["counts"]["instances"] == {"train": 2, "test": 0}
    assert manifest["counts"]["images"] == 6 and manifest["picks"]["rater"] == "requester"

    everyone = await export("all", rater=Rater.all, test_fraction=0.0)
    picks = read_preferences(everyone.out, "all", strict=True)
    assert sorted((e.prompt, e.chosen) for e in picks) == [
        ("a dog by Greg Rutkowski", 0),
        ("a red cat", 2),
        ("a red cat", 3),
    ]
    hashes = {e.chosen: e.user_hash for e in picks if e.prompt == "a red cat"}
    assert hashes[2] != hashes[3]  # one instance per member, each under their own hash


async def test_every_exclusion_is_left_out_and_counted(
    platform: Any, generator: Any, export: Any
) -> None:
    service = platform.service
    kept = await make_done_generation(platform, generator, str(ALICE), "kept", n=3)
    banned = await make_done_generation(platform, generator, str(BOB), "by a banned member", 2)
    unsafe = await make_done_generation(platform, generator, str(ALICE), "unsafe pick", 3)
    too_few = await make_done_generation(platform, generator, str(ALICE), "one safe left", 3)
    failed = await make_done_generation(platform, generator, str(CAROL), "failed later", 2)
    missing = await make_done_generation(platform, generator, str(CAROL), "file gone", 2)
    partly = await make_done_generation(platform, generator, str(CAROL), "one file gone", 3)
    forgotten_by = await make_done_generation(platform, generator, str(ALICE), "picked by dan", 2)
    for generation, user, index in [
        (kept, ALICE, 0),
        (banned, BOB, 1),
        (unsafe, ALICE, 1),
        (too_few, ALICE, 0),
        (failed, CAROL, 0),
        (missing, CAROL, 1),
        (partly, CAROL, 2),
        (forgotten_by, UserRef.parse("discord:444"), 0),
    ]:
        await service.record_choice(generation, user, index)
    await service.forget_user(UserRef.parse("discord:444"))
    await service.record_choice(forgotten_by, UserRef.parse("discord:444"), 1)  # came back
    await service.ban_user(BOB, "spam")
    await sql(
        platform, "UPDATE images SET nsfw = true WHERE generation_id = :g AND index = 1", g=unsafe
    )
    await sql(
        platform, "UPDATE images SET nsfw = true WHERE generation_id = :g AND index > 0", g=too_few
    )
    await sql(platform, "UPDATE generations SET status = 'failed' WHERE id = :g", g=failed)
    gone = (await service.get_generation(missing)).images[1].storage_key
    platform.storage.local_path(gone).unlink()
    dropped = (await service.get_generation(partly)).images[0].storage_key
    platform.storage.local_path(dropped).unlink()

    done = await export(rater=Rater.all, test_fraction=0.0)

    data = read_preferences(done.out, "all", strict=True)
    assert sorted((e.prompt, e.chosen, len(e.images)) for e in data) == [
        ("kept", 0, 3),
        ("one file gone", 1, 2),  # image 1 is gone, the pick (image 3) is now the second
    ]
    assert done.manifest["counts"]["excluded"] == {
        "banned_member": 1,
        "forgotten_member": 1,
        "incomplete_generation": 1,
        "unsafe_image": 1,
        "too_few_images": 1,
        "missing_file": 1,
    }
    assert done.manifest["counts"]["picks_read"] == 8
    assert sorted(done.manifest["missing_files"]["first"]) == sorted([gone, dropped])


async def test_splits_are_by_prompt_and_deterministic(platform: Any, export: Any) -> None:
    variants = [f"{p}" for n in range(40) for p in (f"a cat number {n}", f"A  cat, number {n}!")]
    seed_picks(platform.database_url, platform.storage.root, picks=240, prompts=variants)

    first = await export("first", test_fraction=0.3, seed=7)
    again = await export("again", test_fraction=0.3, seed=7)
    other = await export("other", test_fraction=0.3, seed=8)

    def split_of(done: Any) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for example in read_preferences(done.out, "all", strict=True):
            key = " ".join(example.prompt.lower().replace(",", "").replace("!", "").split())
            found.setdefault(key, set()).add(example.split)
        return found

    splits = split_of(first)
    assert len(splits) == 40 and all(len(s) == 1 for s in splits.values())  # never in both
    tests = {prompt for prompt, s in splits.items() if s == {"test"}}
    assert 4 <= len(tests) <= 24  # about 30% of 40 prompts
    assert split_of(again) == splits
    assert split_of(other) != splits
    counts = first.manifest["counts"]
    assert counts["instances"]["test"] == 6 * len(tests)
    assert counts["prompts"] == {"train": 40 - len(tests), "test": len(tests)}
    assert first.manifest["split"]["seed"] == 7


async def test_incremental_exports_only_what_is_new(
    platform: Any, generator: Any, export: Any
) -> None:
    service = platform.service
    one = await make_done_generation(platform, generator, str(ALICE), "one", n=2)
    two = await make_done_generation(platform, generator, str(BOB), "two", n=2)
    await service.record_choice(one, ALICE, 0)
    await service.record_choice(two, BOB, 0)
    first = await export("first", incremental=True, test_fraction=0.0)
    assert first.instances == 2 and first.manifest["picks"]["since"] is None

    three = await make_done_generation(platform, generator, str(CAROL), "three", n=2)
    await service.record_choice(three, CAROL, 1)
    await service.record_choice(two, BOB, 1)  # changed its pick: exported again
    second = await export("second", incremental=True, test_fraction=0.0)
    assert sorted((e.prompt, e.chosen) for e in read_preferences(second.out, "all")) == [
        ("three", 1),
        ("two", 1),
    ]
    assert second.manifest["picks"]["since"] == first.manifest["picks"]["until"]
    nothing = await export("third", incremental=True, test_fraction=0.0)
    assert nothing.instances == 0
    full = await export("full", test_fraction=0.0)  # not incremental: everything
    assert full.instances == 3
    parquet = await export("parquet", format="parquet", incremental=True, test_fraction=0.0)
    assert parquet.instances == 3  # each format and rater keeps its own series


async def test_user_hash_is_stable_keyed_and_never_the_raw_id(
    platform: Any, generator: Any, export: Any, tmp_path: Path
) -> None:
    generation = await make_done_generation(platform, generator, str(ALICE), "a cat", n=2)
    await platform.service.record_choice(generation, ALICE, 1)

    first = await export("first")
    second = await export("second")
    keyed = platform.settings.model_copy(
        update={
            "export": platform.settings.export.model_copy(
                update={"user_hash_secret": SecretStr("another key")}
            )
        }
    )
    third = await export("third", settings=keyed)

    def user_hashes(done: Any) -> set[str | None]:
        return {e.user_hash for e in read_preferences(done.out, "all")}

    assert user_hashes(first) == user_hashes(second)
    assert user_hashes(first) != user_hashes(third)
    assert len(next(iter(user_hashes(first))) or "") == 32
    key_file = platform.settings.data_dir / "user_hash.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    fingerprints = {d.manifest["user_hash"]["key_fingerprint"] for d in (first, second, third)}
    assert len(fingerprints) == 2
    for done in (first, await export("parquet", format="parquet")):
        for path in done.out.rglob("*"):
            if path.is_file():
                assert ALICE.external_id.encode() not in path.read_bytes(), path


async def test_no_id_that_discord_shows_is_published(
    platform: Any, generator: Any, export: Any
) -> None:
    """Discord shows generation ids to the channel (attachments ``{id}_{k}.png``, buttons
    ``pf:pick:{id}:{k}``) next to "for @requester": exports carry keyed ids instead,
    the same in every export made with one key, and other ones under another key."""
    import pyarrow.parquet as pq

    cat = await make_done_generation(platform, generator, str(ALICE), "a red cat", n=3)
    await platform.service.record_choice(cat, ALICE, 2)
    pick = (await sql(platform, "SELECT id FROM choices WHERE generation_id = :g", g=cat)).scalar()
    first = await export("first", test_fraction=0.0)
    second = await export("second", test_fraction=0.0)
    rekeyed = platform.settings.model_copy(
        update={
            "export": platform.settings.export.model_copy(
                update={"user_hash_secret": SecretStr("another key")}
            )
        }
    )
    third = await export("third", settings=rekeyed, test_fraction=0.0)
    parquet = await export("parquet", format="parquet", test_fraction=0.0)

    def instance(done: Any) -> dict[str, Any]:
        (entry,) = json.loads((done.out / "preference_train.json").read_text())
        return dict(entry)

    entry = instance(first)
    key = load_secret(platform.settings.data_dir, None)  # the user hash key, reused
    keyed = {
        kind: hmac.new(key, f"{kind}\0{n}".encode(), hashlib.sha256).hexdigest()[:32]
        for kind, n in (("pick", pick), ("generation", cat))
    }
    assert (entry["id"], entry["generation_id"]) == (keyed["pick"], keyed["generation"])
    names = [f"{keyed['pick']}_{k}.png" for k in range(3)]
    assert entry["file_path"] == [f"preference_images/{name}" for name in names]
    assert sorted(p.name for p in (first.out / "preference_images").iterdir()) == names
    assert instance(second)["id"] == entry["id"]  # deterministic for the key
    other = instance(third)
    assert other["id"] != entry["id"] and other["generation_id"] != entry["generation_id"]
    (row,) = pq.read_table(parquet.out / "train.parquet").to_pylist()
    assert (row["id"], row["generation_id"]) == (entry["id"], entry["generation_id"])
    assert row["image_ids"] == [f"{keyed['generation']}_{k}" for k in range(3)]
    assert [image["path"] for image in row["images"]] == names
    numbered = (f"{cat}_", f"{pick}_")  # how a database id would start a name
    for done in (first, parquet):
        assert not any(p.name.startswith(numbered) for p in done.out.rglob("*"))
    published = [
        str(entry["id"]),
        str(entry["generation_id"]),
        *row["image_ids"],
        *(Path(p).name for p in entry["file_path"]),
    ]
    assert not any(
        value in (str(cat), str(pick)) or value.startswith(numbered) for value in published
    )


async def test_discord_mentions_in_prompts_are_anonymised(
    platform: Any, generator: Any, export: Any
) -> None:
    prompt = "a portrait of <@111111111111111111> and <@!222> with <@&333> in <#444>"
    generation = await make_done_generation(platform, generator, str(ALICE), prompt, n=2)
    await platform.service.record_choice(generation, ALICE, 0)
    done = await export(test_fraction=0.0)
    (example,) = read_preferences(done.out)
    assert example.prompt == "a portrait of @member and @member with @role in #channel"
    assert b"111111111111111111" not in (done.out / "preference_train.json").read_bytes()


async def test_a_foreign_folder_is_refused_and_an_earlier_export_replaced(
    platform: Any, generator: Any, export: Any, tmp_path: Path
) -> None:
    generation = await make_done_generation(platform, generator, str(ALICE), "a cat", n=2)
    await platform.service.record_choice(generation, ALICE, 0)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(ExportError, match="is not a prefloop export"):
        await export("mine")
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    (tmp_path / "a file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        await export("a file")

    (tmp_path / "empty").mkdir()
    assert (await export("empty")).instances == 1
    earlier = await export("out")
    (earlier.out / "stale.txt").write_text("from before")
    again = await export("out")
    assert again.instances == 1 and not (again.out / "stale.txt").exists()
    with pytest.raises(ExportError, match="an incremental export needs a new folder"):
        await export("out", incremental=True)  # would lose the earlier export's picks
    assert (again.out / "manifest.json").exists()


async def test_exports_into_one_folder_take_turns(
    platform: Any, export: Any, tmp_path: Path
) -> None:
    import fcntl

    seed_picks(platform.database_url, platform.storage.root, picks=3)
    with open(tmp_path / ".prefloop-export.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another export is running here
        with pytest.raises(ExportError, match="another export is writing into"):
            await export("out")
    assert (await export("out")).instances == 3


async def test_a_cancelled_export_stops_and_cleans_up(
    platform: Any, export: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import threading

    seed_picks(platform.database_url, platform.storage.root, picks=20)
    started, release = threading.Event(), threading.Event()
    real_place = ImageSource.place

    def slow_place(self: ImageSource, key: str, dest: str) -> bool:
        started.set()
        release.wait(10)
        return real_place(self, key, dest)

    monkeypatch.setattr(ImageSource, "place", slow_place)
    task = asyncio.create_task(export("out"))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


async def test_an_interrupted_export_leaves_nothing_that_looks_complete(
    platform: Any, export: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_picks(platform.database_url, platform.storage.root, picks=20)
    real_place = ImageSource.place
    calls = 0

    def place_then_fail(self: ImageSource, key: str, dest: str) -> bool:
        nonlocal calls
        calls += 1
        if calls == 30:
            raise KeyboardInterrupt  # Ctrl-C, midway
        return real_place(self, key, dest)

    monkeypatch.setattr(ImageSource, "place", place_then_fail)
    with pytest.raises(KeyboardInterrupt):
        await export("out")
    assert calls == 30
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob("manifest.json")) and not list(tmp_path.glob(".out*"))
    async with platform.engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM dataset_exports")) == 0

    monkeypatch.setattr(ImageSource, "place", real_place)
    assert (await export("out")).instances == 20  # and the next try succeeds


async def test_the_content_hash_is_what_sha256sum_gives(platform: Any, export: Any) -> None:
    seed_picks(platform.database_url, platform.storage.root, picks=12)
    done = await export(test_fraction=0.5)
    shell = subprocess.run(
        "find . -type f ! -name manifest.json -printf '%P\\n' | LC_ALL=C sort "
        "| xargs -d '\\n' sha256sum | sha256sum",
        shell=True,
        cwd=done.out,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.split()[0] == done.manifest["content_hash"]["sha256"]
    assert done.manifest["counts"]["images_linked"] == 48  # same filesystem: hard links
    image = next((done.out / "preference_images").iterdir())
    assert image.stat().st_nlink == 2


async def test_parquet_reads_back_with_pyarrow_and_datasets(
    platform: Any, generator: Any, export: Any
) -> None:
    import pyarrow.parquet as pq

    cat = await make_done_generation(platform, generator, str(ALICE), "a red cat", n=3)
    await platform.service.record_choice(cat, ALICE, 2)
    seed_picks(platform.database_url, platform.storage.root, picks=10)
    done = await export(format="parquet", test_fraction=0.3)

    train = pq.read_table(done.out / "train.parquet")
    test = pq.read_table(done.out / "test.parquet")
    assert train.num_rows + test.num_rows == 11 == done.instances
    rows = [r for r in train.to_pylist() + test.to_pylist() if r["prompt"] == "a red cat"]
    (row,) = rows
    assert row["human_preference"] == 2 and len(row["images"]) == 3
    assert row["image_ids"] == [f"{row['generation_id']}_{k}" for k in range(3)]
    assert [hashlib.sha256(i["bytes"]).hexdigest() for i in row["images"]] == (
        await _image_shas(platform, cat)
    )
    assert row["created_at"].tzinfo is not None

    import datasets

    loaded = datasets.load_dataset(
        "parquet",
        data_files={s: str(done.out / f"{s}.parquet") for s in ("train", "test")},
        cache_dir=str(done.out.parent / "hf-cache"),
    )
    assert loaded["train"].num_rows + loaded["test"].num_rows == 11
    from PIL import Image

    first = loaded["train"][0]
    assert 2 <= len(first["images"]) <= 4  # decoded as images, not bytes
    assert all(isinstance(image, Image.Image) for image in first["images"])
