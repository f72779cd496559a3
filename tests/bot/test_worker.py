"""The real procrastinate worker: jobs run, finish, fail, survive a dead worker."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import text

from bot.domain import UserRef
from bot.generation.worker import recover_stalled_jobs, serve_worker
from bot.jobs.app import build_app
from bot.notify import GenerationEvent, NotificationListener, ProgressEvent
from tests.support.aio import eventually, running
from tests.support.cli import platform_env
from tests.support.database import generation_status, make_done_generation
from tests.support.slow_device import slow_device_path, slowed
from training.generator import Generator
from training.presets import WORLD_SIDE

ALICE = UserRef.parse("cli:alice")


async def test_submit_generate_store_announce_pick(platform: Any) -> None:
    finished: list[GenerationEvent] = []
    progress: list[ProgressEvent] = []

    async def on_generation(event: GenerationEvent) -> None:
        finished.append(event)

    async def on_progress(event: ProgressEvent) -> None:
        progress.append(event)

    listener = NotificationListener(
        platform.database_url, on_generation=on_generation, on_progress=on_progress
    )
    async with running(listener.run()), running(serve_worker(platform)):
        await asyncio.wait_for(listener.connected.wait(), 10)
        submitted = await platform.service.submit_prompt(ALICE, "a red cat", 4)
        await eventually(lambda: _async(finished))

    assert finished == [GenerationEvent(submitted.generation_id, "done", "cli")]
    steps = [(p.step, p.total) for p in progress]
    assert steps[0] == (0, 3) and steps[-1] == (3, 3)
    view = await platform.service.get_generation(submitted.generation_id)
    assert view.status == "done" and view.generator_version == platform.settings.generator.model
    assert [i.seed for i in view.images] == submitted.seeds
    for image in view.images:
        data = await platform.storage.get(image.storage_key)
        assert hashlib.sha256(data).hexdigest() == image.sha256
        with Image.open(io.BytesIO(data)) as png:
            assert png.format == "PNG"
            assert png.size == (image.width, image.height) == (WORLD_SIDE, WORLD_SIDE)
    pick = await platform.service.record_choice(submitted.generation_id, ALICE, 3)
    assert pick.changed and pick.is_requester


async def test_a_job_failing_on_every_attempt_fails_the_generation(
    platform: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.generator import Generator

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(Generator, "generate", broken)
    platform.settings.worker.max_attempts = 2
    failed: list[GenerationEvent] = []

    async def on_generation(event: GenerationEvent) -> None:
        failed.append(event)

    listener = NotificationListener(platform.database_url, on_generation=on_generation)
    async with running(listener.run()), running(serve_worker(platform)):
        await asyncio.wait_for(listener.connected.wait(), 10)
        submitted = await platform.service.submit_prompt(ALICE, "a cat", 2)
        await eventually(lambda: _async(failed), timeout=120)

    assert failed[0].status == "failed"
    view = await platform.service.get_generation(submitted.generation_id)
    assert view.status == "failed" and "Something went wrong" in view.error
    assert "CUDA" not in view.error  # members read a plain sentence; the log has the error
    async with platform.engine.connect() as conn:
        attempts = await conn.scalar(text("SELECT attempts FROM generations"))
        job_status = await conn.scalar(text("SELECT status FROM procrastinate_jobs"))
    assert attempts == 2 and job_status == "failed"


async def test_stopping_a_worker_lets_the_running_job_finish(
    platform: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Generator, "generate", slowed(Generator.generate, 0.5))
    platform.settings.generator.steps = 10  # 5 s or more: the drain outlasts `stalled_after`
    platform.settings.worker.shutdown_grace = 600  # however slow this machine is
    submitted = await platform.service.submit_prompt(ALICE, "a slow cat", 4)
    async with running(serve_worker(platform)) as stopping:
        await eventually(lambda: _is(platform, submitted.generation_id, "running"))
        # Another worker watches for dead ones while the first drains.
        async with running(serve_worker(platform)):
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
    assert await generation_status(platform, submitted.generation_id) == "done"
    async with platform.engine.connect() as conn:  # it ran once: nobody took it meanwhile
        assert await conn.scalar(text("SELECT attempts FROM generations")) == 1
        job = (await conn.execute(text("SELECT status, attempts FROM procrastinate_jobs"))).one()
    assert job.status == "succeeded" and job.attempts == 1


async def test_a_job_whose_worker_was_killed_runs_again(platform: Any, tmp_path: Path) -> None:
    platform.settings.generator.steps = 5  # 50 s or more on the slow device: killed midway
    submitted = await platform.service.submit_prompt(ALICE, "an interrupted cat", 4)
    process = _worker_process(platform, tmp_path, slow_device_path(tmp_path / "slow", 10.0))
    try:
        await eventually(lambda: _is(platform, submitted.generation_id, "running"), timeout=300)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        process.kill()
    assert await generation_status(platform, submitted.generation_id) == "running"

    async with running(serve_worker(platform)):  # here, at full speed
        await eventually(lambda: _is(platform, submitted.generation_id, "done"), timeout=600)
    async with platform.engine.connect() as conn:
        attempts = await conn.scalar(text("SELECT attempts FROM generations"))
        job = (await conn.execute(text("SELECT status, attempts FROM procrastinate_jobs"))).one()
    assert attempts == 2
    assert job.status == "succeeded" and job.attempts == 2  # procrastinate counts runs
    assert len((await platform.service.get_generation(submitted.generation_id)).images) == 4


async def test_ctrl_c_while_a_job_outlasts_the_grace_runs_it_again_and_loses_nothing(
    platform: Any, tmp_path: Path
) -> None:
    """`prefloop run` stops within its grace; the job it dropped runs again in full."""
    env = platform_env(platform, tmp_path / "data", worker__shutdown_grace="1")
    env["PYTHONPATH"] = slow_device_path(tmp_path / "slow", 10.0)
    platform.settings.generator.steps = 20  # 200 s or more on the slow device
    submitted = await platform.service.submit_prompt(ALICE, "a slow cat", 4)
    with (tmp_path / "run.log").open("w") as log:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", "--no-discord", env=env, stderr=log
        )
    try:
        await eventually(lambda: _is(platform, submitted.generation_id, "running"), timeout=300)
        server.send_signal(signal.SIGINT)  # one Ctrl-C: a graceful stop
        assert await asyncio.wait_for(server.wait(), 90) == 0  # not the pipeline's 200 s
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    async with platform.engine.connect() as conn:  # back in the queue, not failed
        job = (await conn.execute(text("SELECT status, attempts FROM procrastinate_jobs"))).one()
    assert (job.status, job.attempts) == ("todo", 1)
    assert await generation_status(platform, submitted.generation_id) == "running"

    async with running(serve_worker(platform)):  # the next start runs it again, at full speed
        await eventually(lambda: _is(platform, submitted.generation_id, "done"), timeout=600)
    view = await platform.service.get_generation(submitted.generation_id)
    assert [image.seed for image in view.images] == submitted.seeds  # all four, same seeds
    async with platform.engine.connect() as conn:
        attempts = await conn.scalar(text("SELECT attempts FROM generations"))
        job = (await conn.execute(text("SELECT status, attempts FROM procrastinate_jobs"))).one()
    assert attempts == 2 and (job.status, job.attempts) == ("succeeded", 2)


async def test_a_job_that_lost_its_worker_too_often_fails_for_good(platform: Any) -> None:
    submitted = await platform.service.submit_prompt(ALICE, "a cat", 2)
    attempts = platform.settings.worker.max_attempts - 1
    async with platform.engine.begin() as conn:  # as a dead worker leaves its last try
        await conn.execute(
            text("UPDATE procrastinate_jobs SET status = 'doing', attempts = :a"), {"a": attempts}
        )
        await conn.execute(text("UPDATE generations SET status = 'running'"))
    app = build_app(platform.database_url, platform.settings.worker)
    async with app.open_async():
        assert await recover_stalled_jobs(app, platform) == [submitted.job_id]
    view = await platform.service.get_generation(submitted.generation_id)
    assert view.status == "failed" and "worker stopped" in view.error


async def test_listener_catches_up_on_every_reconnect(platform: Any, generator: Any) -> None:
    finished_while_away = await make_done_generation(platform, generator, delivery={"to": "cli"})
    seen: list[int] = []

    async def catch_up() -> None:
        seen.extend(await platform.service.undelivered(ALICE.frontend))

    listener = NotificationListener(
        platform.database_url, on_generation=_ignore, on_connect=catch_up
    )
    async with running(listener.run()):
        await asyncio.wait_for(listener.connected.wait(), 10)
        assert seen == [finished_while_away]
        async with platform.engine.begin() as conn:  # the database drops the connection
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                )
            )
        await eventually(lambda: _async(len(seen) == 2), timeout=120)
    assert seen == [finished_while_away, finished_while_away]


def _worker_process(platform: Any, tmp_path: Path, pythonpath: str) -> subprocess.Popen[bytes]:
    settings = platform.settings
    env = {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "PREFLOOP_DATABASE_URL": platform.database_url,
        "PREFLOOP_DATA_DIR": str(tmp_path / "worker-data"),
        "PREFLOOP_GENERATOR__MODEL": settings.generator.model,
        "PREFLOOP_GENERATOR__DEVICE": "cpu",
        "PREFLOOP_WORKER__HEARTBEAT_INTERVAL": "0.5",
        "PREFLOOP_WORKER__STALLED_AFTER": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _is(platform: Any, generation_id: int, status: str) -> bool:
    return await generation_status(platform, generation_id) == status


async def _async(value: Any) -> Any:
    return value


async def _ignore(event: Any) -> None:
    return None


async def test_flagged_images_are_stored_with_their_flag_and_never_shown(
    platform: Any, tiny_model: Path, tmp_path: Path
) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from bot.generation.runner import GenerationRunner

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model)
    with torch.no_grad():  # a checker that flags everything
        pipe.safety_checker.concept_embeds_weights.fill_(-2.0)
    strict = Generator(pipe, "strict-tiny")
    submitted = await platform.service.submit_prompt(ALICE, "a cat", 2)
    runner = GenerationRunner(platform.sessions, platform.storage, strict)
    assert await runner.run(submitted.generation_id) == "done"

    async with platform.engine.connect() as conn:
        flags = (await conn.execute(text("SELECT nsfw FROM images ORDER BY index"))).scalars()
        assert list(flags) == [True, True]
    view = await platform.service.get_generation(submitted.generation_id)
    assert view.images == [] and view.withheld == 2


async def test_workers_and_front_ends_share_an_s3_store(
    platform: Any, generator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.storage import S3Storage, make_storage
    from tests.support.s3 import platform_on_s3

    with platform_on_s3(platform, monkeypatch, "shared"):  # as every process would build it
        assert isinstance(platform.storage, S3Storage)
        gen = await make_done_generation(platform, generator)
        reader = make_storage(platform.settings)  # another process, same settings
        images = (await platform.service.get_generation(gen)).images
        assert len(images) == 4
        for image in images:
            data = await reader.get(image.storage_key)
            assert hashlib.sha256(data).hexdigest() == image.sha256


async def test_a_generation_whose_job_ended_without_it_is_failed(platform: Any) -> None:
    submitted = await platform.service.submit_prompt(ALICE, "a cat", 2)
    async with platform.engine.begin() as conn:  # e.g. aborted on a stopped worker's last try
        await conn.execute(text("UPDATE procrastinate_jobs SET status = 'aborted'"))
        await conn.execute(text("UPDATE generations SET status = 'running'"))
    app = build_app(platform.database_url, platform.settings.worker)
    async with app.open_async():
        await recover_stalled_jobs(app, platform)
    view = await platform.service.get_generation(submitted.generation_id)
    assert view.status == "failed" and "stopped" in view.error
    # its member may submit again: the queue slot is free
    await platform.service.submit_prompt(ALICE, "again", 2)


async def test_a_job_recovered_elsewhere_meanwhile_is_left_alone(platform: Any) -> None:
    from bot.db import queries

    await platform.service.submit_prompt(ALICE, "a cat", 2)
    async with platform.engine.begin() as conn:  # seen stalled under worker None ...
        await conn.execute(text("INSERT INTO procrastinate_workers DEFAULT VALUES"))
        await conn.execute(text("UPDATE procrastinate_jobs SET status = 'doing', worker_id = 1"))
    async with platform.sessions.begin() as session:  # ... but a live worker 1 has it now
        assert not await queries.end_stalled_job(session, 1, None, give_up=False)
        assert await queries.end_stalled_job(session, 1, 1, give_up=False)
    async with platform.engine.connect() as conn:
        job = (await conn.execute(text("SELECT status, attempts FROM procrastinate_jobs"))).one()
    assert job.status == "todo" and job.attempts == 1
