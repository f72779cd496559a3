"""Data requests against a running worker, and the sweep of files that no row references.

A forget request and a job recording its images may meet in any order; in each one the
member's rows and files all go, and no file is left that no row references.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.db import queries
from bot.domain import UserRef
from bot.generation.runner import GenerationRunner
from bot.jobs.app import build_app
from bot.names import SWEEP_TASK
from bot.sweep import sweep_store_job
from tests.support.aio import eventually
from tests.support.cli import cli_env, prefloop
from tests.support.database import count, make_done_generation

ALICE = UserRef.parse("discord:1001")
BOB = UserRef.parse("discord:1002")


async def _stored(platform: Any) -> set[str]:
    return {found.key async for found in platform.storage.files()}


async def _referenced(platform: Any) -> set[str]:
    async with platform.engine.connect() as conn:
        return set((await conn.execute(text("SELECT storage_key FROM images"))).scalars())


async def _waiting_on_a_lock(platform: Any) -> bool:
    async with platform.engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
        )
    return bool(waiting)


def _pause(
    monkeypatch: pytest.MonkeyPatch, target: Any, name: str
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make ``target.name`` stop after it ran until released: (reached, release)."""
    reached, release = asyncio.Event(), asyncio.Event()
    original: Callable[..., Awaitable[Any]] = getattr(target, name)

    async def paused(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        reached.set()
        await release.wait()
        return result

    monkeypatch.setattr(target, name, paused)
    return reached, release


async def _leaves_nothing_behind(platform: Any, others: set[str]) -> None:
    alices = (
        "generations g JOIN users u ON u.id = g.requested_by "
        f"WHERE u.external_id = '{ALICE.external_id}'"
    )
    assert await count(platform, alices) == 0
    assert await _referenced(platform) == others
    assert await _stored(platform) == others  # every file left is one a row references


# ----- forget and a job that finishes at the same time ------------------------------


async def test_forget_waits_for_a_job_recording_its_images(
    platform: Any, generator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job holds its generation's row lock first: forget must see (and delete) its images."""
    submitted = await platform.service.submit_prompt(ALICE, "a cat", 2)
    others = await _bobs_generation(platform, generator)
    recording, release = _pause(monkeypatch, queries, "notify_finished")  # inside _finish
    runner = GenerationRunner(platform.sessions, platform.storage, generator)
    job = asyncio.create_task(runner.run(submitted.generation_id))
    await asyncio.wait_for(recording.wait(), 120)
    forget = asyncio.create_task(platform.service.forget_user(ALICE))
    await eventually(lambda: _waiting_on_a_lock(platform))
    release.set()
    assert await job == "done"
    done = await forget
    assert done.generations == 1 and len(done.files) == 2
    await _leaves_nothing_behind(platform, others)


async def test_a_job_finishing_after_forget_deletes_its_own_files(
    platform: Any, generator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forget holds the generation's lock first: the job records nothing, keeps no file."""
    submitted = await platform.service.submit_prompt(ALICE, "a cat", 2)
    others = await _bobs_generation(platform, generator)
    stored, release_job = _pause(monkeypatch, GenerationRunner, "_store")  # files written
    runner = GenerationRunner(platform.sessions, platform.storage, generator)
    job = asyncio.create_task(runner.run(submitted.generation_id))
    await asyncio.wait_for(stored.wait(), 120)
    deleting, release_forget = _pause(monkeypatch, queries, "delete_images")  # locks held
    forget = asyncio.create_task(platform.service.forget_user(ALICE))
    await asyncio.wait_for(deleting.wait(), 30)
    release_job.set()
    await eventually(lambda: _waiting_on_a_lock(platform))  # the job waits for forget
    release_forget.set()
    done = await forget
    assert await job == "skipped"
    assert done.generations == 1 and done.files == []
    await _leaves_nothing_behind(platform, others)


async def test_forget_with_an_s3_store_deletes_files_and_rows(
    platform: Any, generator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.storage import S3Storage
    from tests.support.s3 import platform_on_s3

    with platform_on_s3(platform, monkeypatch, "forget"):
        assert isinstance(platform.storage, S3Storage)
        own = await make_done_generation(platform, generator, user=str(ALICE), prompt="alice's")
        others = await _bobs_generation(platform, generator)
        await platform.service.record_choice(own, BOB, 0)
        assert len(await _stored(platform)) == 6  # alice 4, bob 2

        done = await platform.service.forget_user(ALICE)

        assert done.generations == 1 and done.picks == 0 and len(done.files) == 4
        assert not any([await platform.storage.exists(key) for key in done.files])
        assert await count(platform, "choices") == 0  # bob's pick on alice's prompt went too
        await _leaves_nothing_behind(platform, others)


async def _bobs_generation(platform: Any, generator: Any) -> set[str]:
    """Another member's done generation; returns its keys (which must survive)."""
    gen = await make_done_generation(platform, generator, user=str(BOB), prompt="bob's", n=2)
    return {image.storage_key for image in (await platform.service.get_generation(gen)).images}


# ----- the sweep of files no row references -----------------------------------------


def _age(path: Path, minutes: float) -> None:
    then = time.time() - minutes * 60
    os.utime(path, (then, then))


async def _orphan(platform: Any, data: bytes, minutes_old: float) -> str:
    key, _ = await platform.storage.put(data, "png")
    _age(platform.storage.local_path(key), minutes_old)
    return key


async def test_the_sweep_deletes_only_old_files_no_row_references(
    platform: Any, generator: Any
) -> None:
    gen = await make_done_generation(platform, generator, n=2)
    kept = {i.storage_key for i in (await platform.service.get_generation(gen)).images}
    for key in kept:  # referenced files are old too: their age does not matter
        _age(platform.storage.local_path(key), 600)
    old = await _orphan(platform, b"left by a crashed job", 120)
    young = await _orphan(platform, b"a job is about to record this", 5)
    again = await _orphan(platform, b"an old orphan stored again now", 120)
    await platform.storage.put(b"an old orphan stored again now", "png")  # a job, same image

    dry = await platform.service.sweep_store(dry_run=True)
    assert (dry.files, dry.unreferenced, dry.deleted) == (5, 1, 0) and dry.examples == [old]
    assert await _stored(platform) == {*kept, old, young, again}

    swept = await platform.service.sweep_store()
    assert (swept.files, swept.unreferenced, swept.deleted) == (5, 1, 1)
    assert await _stored(platform) == {*kept, young, again}
    assert platform.settings.storage.sweep_grace_minutes == 60  # what the ages above assume


async def test_the_sweep_keeps_a_file_written_again_while_it_runs(
    platform: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed as old and unreferenced, then a job stores the same bytes: it stays."""
    key = await _orphan(platform, b"an image made twice", 120)
    checked, release = _pause(monkeypatch, queries, "referenced_keys")
    sweep = asyncio.create_task(platform.service.sweep_store())
    await asyncio.wait_for(checked.wait(), 30)
    await platform.storage.put(b"an image made twice", "png")  # the job's put ...
    release.set()
    swept = await sweep
    assert swept.unreferenced == 1 and swept.deleted == 0
    assert await platform.storage.get(key) == b"an image made twice"  # ... for its row


async def test_the_sweep_with_an_s3_store(
    platform: Any, generator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.s3 import platform_on_s3

    with platform_on_s3(platform, monkeypatch, "sweep"):
        gen = await make_done_generation(platform, generator, n=2)
        kept = {i.storage_key for i in (await platform.service.get_generation(gen)).images}
        orphan, _ = await platform.storage.put(b"no row has me", "png")

        young = await platform.service.sweep_store()  # everything was written just now
        assert (young.files, young.unreferenced, young.deleted) == (3, 0, 0)
        await asyncio.sleep(1.1)  # S3 keeps whole seconds
        swept = await platform.service.sweep_store(grace_minutes=0)
        assert (swept.files, swept.unreferenced, swept.deleted) == (3, 1, 1)
        assert await _stored(platform) == kept and orphan not in kept


async def test_the_sweep_runs_on_its_schedule_in_the_maintenance_worker(
    platform: Any,
) -> None:
    storage = platform.settings.storage
    app = build_app(platform.database_url, platform.settings.worker, None, storage)
    periodic = {task.task.name: task.cron for task in app.periodic_registry.periodic_tasks.values()}
    assert periodic == {SWEEP_TASK: "17 4 * * *"}
    off = storage.model_copy(update={"sweep_schedule": None})
    assert not build_app(platform.database_url, platform.settings.worker, None, off).tasks.get(
        SWEEP_TASK
    )

    key = await _orphan(platform, b"left behind", 120)
    assert await sweep_store_job(platform) == "store sweep: 1 files, 1 unreferenced ones deleted"
    assert not await platform.storage.exists(key)


async def test_prefloop_store_sweep(platform: Any, generator: Any, tmp_path: Path) -> None:
    await make_done_generation(platform, generator, n=2)
    old = await _orphan(platform, b"old and unreferenced", 120)
    young = await _orphan(platform, b"young and unreferenced", 5)
    env = cli_env(data_dir=str(platform.settings.data_dir), database_url=platform.database_url)

    async def sweep(*options: str) -> Any:
        return await asyncio.to_thread(prefloop, "store", "sweep", *options, env=env, cwd=tmp_path)

    dry = await sweep("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "4 files in the store; would delete 1 that no row references" in dry.stdout
    assert f"e.g. {old}" in dry.stdout and await platform.storage.exists(old)
    swept = await sweep("--grace", "3")
    assert "4 files in the store; deleted 2 that no row references" in swept.stdout
    assert not await platform.storage.exists(old) and not await platform.storage.exists(young)
    refused = await sweep("--grace", "0")
    assert refused.returncode == 2 and "--grace" in refused.stderr
