"""The retrain loop: stages, promotion gates, records, one run at a time, triggers.

The trainer here is scripted (tests/support/scripted_trainer.py): it receives the real
stage arguments and reports the figures each test needs, so what is tested is the
platform's side: what gets promoted, recorded, announced and left alone.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.db.models import Comparison, RetrainRun
from bot.jobs.app import build_app
from bot.names import SCHEDULE_TASK
from bot.registry import ModelRegistry
from bot.retrain.stages import Retrain
from bot.retrain.tasks import check_new_picks, scheduled_retrain
from bot.retrain.triggers import picks_since_last_run, request_retrain
from bot.runtime import Platform
from tests.support.aio import eventually
from tests.support.cli import cli_env, prefloop
from tests.support.retrain import TRAINER, WIN, scripted_gates
from tests.support.synthetic import seed_picks
from training.run_folder import GATE, resume_point


def _use(platform: Platform, monkeypatch: pytest.MonkeyPatch, gates: dict[str, Any]) -> None:
    monkeypatch.setenv("PREFLOOP_TEST_GATES", json.dumps(gates))
    platform.settings.retrain.trainer = TRAINER
    platform.settings.retrain.hps_base = "tiny"


async def _run(platform: Platform, announced: list[str] | None = None) -> RetrainRun:
    request = await request_retrain(platform.sessions, trigger="test")

    async def say(text: str) -> None:
        if announced is not None:
            announced.append(text)

    await Retrain(platform, request.run_id, announce=say).run()
    async with platform.sessions() as session:
        run = await session.get(RetrainRun, request.run_id)
    assert run is not None
    return run


def _assert_data_gone_and_figures_kept(platform: Platform, run_id: int) -> None:
    """An ended run keeps no copy of the picks, but keeps what it decided on."""
    folder = platform.settings.data_dir / "retrain" / f"run-{run_id}"
    assert folder.is_dir()
    left = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    assert not [p for p in left if p.startswith(("data", ".data"))], left
    assert "adapter/selection.jsonl" not in left
    for kept in (f"hps/{GATE}", "hps/stage.log", "hps/model"):
        assert kept in left


def _seed(platform: Platform, picks: int = 12, start: int = 0) -> None:
    seed_picks(
        platform.database_url, platform.settings.data_dir / "store", picks=picks, start=start
    )


async def test_winning_candidates_are_promoted_and_losers_recorded(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(platform.sessions)
    _seed(platform)
    old_hps = await registry.register("hps", "/models/hps-old", {})
    await registry.promote(old_hps)
    _use(platform, monkeypatch, scripted_gates(hps_top1=0.56, win_rate=0.8))
    announced: list[str] = []
    run = await _run(platform, announced)

    assert run.status == "succeeded" and run.finished_at is not None
    hps, adapter = await registry.active("hps"), await registry.active("generator_adapter")
    assert hps is not None and hps.id == run.outcome["hps"]["version"]
    assert adapter is not None and adapter.id == run.outcome["adapter"]["version"]
    assert hps.uri.endswith("hps/model") and hps.metrics["run_id"] == run.id
    assert "promoted" in announced[0] and "win rate 80.0%" in announced[0]
    args = hps.metrics["args"]  # the stage started from the active HPS, judged against it
    assert args[args.index("--start") + 1] == "/models/hps-old"
    assert args[args.index("--active") + 1] == "/models/hps-old"
    adapter_args = adapter.metrics["args"]  # selection used the HPS promoted just before
    assert adapter_args[adapter_args.index("--hps") + 1] == hps.uri
    assert hps.metrics["data_created_at"] is not None  # the stage was given the export
    _assert_data_gone_and_figures_kept(platform, run.id)

    # A second run whose candidates lose: both recorded as candidates, nothing changes.
    losing = scripted_gates(hps_top1=0.565, win_rate=0.3)
    losing["hps"]["active"] = {"top1": 0.56}  # the HPS promoted above
    _use(platform, monkeypatch, losing)
    lost = await _run(platform)
    assert lost.status == "succeeded"
    assert not lost.outcome["hps"]["promoted"] and not lost.outcome["adapter"]["promoted"]
    assert "not 1.0% above the active one's 56.0%" in lost.outcome["hps"]["reasons"][0]
    assert "win rate 30.0% is below 55.0%" in lost.outcome["adapter"]["reasons"][0]
    assert (await registry.active("hps")).id == hps.id  # type: ignore[union-attr]
    assert (await registry.active("generator_adapter")).id == adapter.id  # type: ignore[union-attr]
    candidates = [v for v in await registry.versions() if v.status == "candidate"]
    assert sorted(v.kind for v in candidates) == ["generator_adapter", "hps"]
    assert all(v.metrics["promoted"] is False for v in candidates)

    # Rollback puts the versions before the first run back for the next job.
    assert (await registry.rollback("hps")).id == old_hps  # type: ignore[union-attr]
    assert await registry.rollback("generator_adapter") is None


async def test_an_hps_that_does_not_beat_the_base_clip_is_not_promoted(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(platform)
    gates = scripted_gates(hps_top1=0.38, win_rate=0.9)
    del gates["hps"]["active"]
    _use(platform, monkeypatch, gates)
    run = await _run(platform)
    assert "does not beat the base CLIP's 40.0%" in run.outcome["hps"]["reasons"][0]
    registry = ModelRegistry(platform.sessions)
    assert await registry.active("hps") is None
    adapter = await registry.active("generator_adapter")
    assert adapter is not None  # judged on its own figures, selected with the base CLIP
    assert adapter.metrics["args"][adapter.metrics["args"].index("--hps") + 1] == "tiny"


async def test_a_crashing_trainer_fails_its_stage_and_leaves_the_active_models(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(platform.sessions)
    _seed(platform)
    adapter = await registry.register("generator_adapter", "/models/lora-old", {})
    await registry.promote(adapter)
    _use(platform, monkeypatch, scripted_gates(0.6, 0.9, adapter="crash"))
    announced: list[str] = []
    run = await _run(platform, announced)
    assert run.status == "failed" and run.stage == "adapter"
    assert "adapter: the trainer exited with code 3" in (run.error or "")
    assert "CUDA out of memory" in (run.error or "")
    assert "decided before it: HPS v" in announced[0] and "promoted" in announced[0]
    _assert_data_gone_and_figures_kept(platform, run.id)  # failed for good: data goes too
    assert (await registry.active("generator_adapter")).id == adapter  # type: ignore[union-attr]
    assert run.outcome["hps"]["promoted"]  # the stage before it stands
    # The next request starts a new run: a failed one does not block the loop.
    assert (await request_retrain(platform.sessions, trigger="test")).created


async def _stopped_in_the_adapter_stage(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A run whose worker stopped while its adapter stage trained (the HPS decided)."""
    _use(platform, monkeypatch, scripted_gates(0.6, 0.9, adapter="hang"))
    request = await request_retrain(platform.sessions, trigger="test")
    first = asyncio.create_task(Retrain(platform, request.run_id).run())

    async def in_adapter_stage() -> bool:
        async with platform.sessions() as session:
            run = await session.get(RetrainRun, request.run_id)
            return run is not None and run.stage == "adapter" and run.progress is not None

    await eventually(in_adapter_stage, timeout=60)
    first.cancel()  # the worker stops (its trainer is stopped with it)
    with pytest.raises(asyncio.CancelledError):
        await first
    return request


async def test_a_run_stopped_midway_resumes_without_redoing_or_duplicating(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(platform)
    request = await _stopped_in_the_adapter_stage(platform, monkeypatch)
    again = await request_retrain(platform.sessions, trigger="test")
    assert not again.created and again.status == "running"  # still the one run

    export = platform.settings.data_dir / "retrain" / f"run-{request.run_id}" / "data"
    assert (export / "manifest.json").is_file()  # kept while the run goes on
    _use(platform, monkeypatch, scripted_gates(0.6, 0.9))
    await Retrain(platform, request.run_id).run()  # the job, picked up again
    async with platform.sessions() as session:
        run = await session.get(RetrainRun, request.run_id)
    assert run is not None and run.status == "succeeded"
    versions = await ModelRegistry(platform.sessions).versions()
    assert sorted(v.kind for v in versions) == ["generator_adapter", "hps"]  # none twice
    exports = {v.kind: v.metrics["data_created_at"] for v in versions}
    assert exports["hps"] == exports["generator_adapter"]  # not exported again
    _assert_data_gone_and_figures_kept(platform, run.id)
    assert await Retrain(platform, request.run_id).run() == (
        f"retrain {request.run_id} is succeeded; nothing to do"
    )


async def test_a_resumed_run_whose_copy_is_half_gone_exports_again(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy of the picks went missing mid-run (half deleted, here): the run exports
    again instead of failing, and the undecided stage trains anew on the new copy (its
    resume point, trained on the old one, would be refused by the trainer)."""
    _seed(platform)
    request = await _stopped_in_the_adapter_stage(platform, monkeypatch)
    folder = platform.settings.data_dir / "retrain" / f"run-{request.run_id}"
    (folder / "data" / "manifest.json").unlink()  # what is left looks like no export
    stale = resume_point(folder / "adapter" / "adapter")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"trained on the copy that is gone")

    _use(platform, monkeypatch, scripted_gates(0.6, 0.9))
    await Retrain(platform, request.run_id).run()
    async with platform.sessions() as session:
        run = await session.get(RetrainRun, request.run_id)
    assert run is not None and run.status == "succeeded", run.error if run else None
    versions = {v.kind: v for v in await ModelRegistry(platform.sessions).versions()}
    assert sorted(versions) == ["generator_adapter", "hps"]  # the HPS was not redone
    hps_export = versions["hps"].metrics["data_created_at"]
    adapter_export = versions["generator_adapter"].metrics["data_created_at"]
    assert adapter_export is not None and adapter_export != hps_export  # a new export
    _assert_data_gone_and_figures_kept(platform, run.id)


async def test_runs_abandoned_for_good_lose_their_copy_too(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import text

    from bot.generation.worker import recover_stalled_jobs
    from bot.retrain.run_data import remove_ended_runs_data

    _seed(platform)
    request = await _stopped_in_the_adapter_stage(platform, monkeypatch)  # its worker dies ...
    folder = platform.settings.data_dir / "retrain" / f"run-{request.run_id}"
    assert await remove_ended_runs_data(platform) == []  # still going on: kept
    assert (folder / "data" / "manifest.json").is_file()
    async with platform.sessions.begin() as session:  # as if its candidate were judged by people
        session.add(
            Comparison(
                contender_version_id=None,
                baseline_version_id=await _adapter(platform),
                retrain_run_id=request.run_id,
            )
        )
    last_try = platform.settings.worker.max_attempts - 1
    async with platform.engine.begin() as conn:  # ... too often: as a dead worker leaves it
        await conn.execute(
            text("UPDATE procrastinate_jobs SET status = 'doing', attempts = :a WHERE id = :j"),
            {"a": last_try, "j": request.job_id},
        )
    app = build_app(platform.database_url, platform.settings.worker)
    async with app.open_async():
        assert await recover_stalled_jobs(app, platform) == [request.job_id]  # gives up
    async with platform.sessions() as session:
        run = await session.get(RetrainRun, request.run_id)
    assert run is not None and run.status == "failed"
    assert not (folder / "data").exists() and not list(folder.glob(".data*"))
    assert (folder / "hps" / GATE).is_file()
    async with platform.sessions() as session:
        comparison = await session.scalar(select(Comparison))
    assert comparison is not None and comparison.status == "stopped"  # mixed sets end too


async def _adapter(platform: Platform) -> int:
    return await platform.registry.register("generator_adapter", "/lora", {})


async def test_no_picks_fail_the_export_stage_clearly(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(platform, monkeypatch, WIN)
    run = await _run(platform)
    assert run.status == "failed" and run.error == "export: there are no votes to train on yet"
    assert run.outcome == {}


async def test_concurrent_requests_queue_one_run(platform: Platform) -> None:
    requests = await asyncio.gather(
        *(request_retrain(platform.sessions, trigger="test") for _ in range(5))
    )
    assert sum(r.created for r in requests) == 1
    assert len({r.run_id for r in requests}) == 1
    assert {r.job_id for r in requests} == {requests[0].job_id}
    async with platform.sessions() as session:
        assert len((await session.scalars(select(RetrainRun))).all()) == 1


async def test_the_threshold_and_schedule_triggers_fire(platform: Platform) -> None:
    platform.settings.retrain.new_picks = 5
    _seed(platform, picks=4)
    assert await picks_since_last_run(platform.sessions) == 4
    assert await check_new_picks(platform) is None
    _seed(platform, picks=1, start=4)
    request = await check_new_picks(platform)
    assert request is not None and request.created and request.trigger == "new-picks"
    assert await picks_since_last_run(platform.sessions) == 0  # counted from this run on
    again = await check_new_picks(platform)
    assert again is None

    text = await scheduled_retrain(platform)
    assert text == f"retrain {request.run_id} is already queued"

    platform.settings.retrain.schedule = "0 3 * * *"
    app = build_app(platform.database_url, platform.settings.worker, platform.settings.retrain)
    periodic = {task.task.name: task.cron for task in app.periodic_registry.periodic_tasks.values()}
    assert periodic == {SCHEDULE_TASK: "0 3 * * *", "prefloop.retrain-new-picks": "* * * * *"}


async def test_the_retrain_and_jobs_commands(platform: Platform, tmp_path: Path) -> None:
    env = cli_env(data_dir=str(platform.settings.data_dir), database_url=platform.database_url)
    first = await asyncio.to_thread(prefloop, "retrain", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "retrain 1 queued (job " in first.stdout
    second = await asyncio.to_thread(prefloop, "retrain", env=env, cwd=tmp_path)
    assert (
        "retrain 1 is already queued (since " in second.stdout and "asked by cli" in second.stdout
    )
    listed = await asyncio.to_thread(prefloop, "jobs", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "1 queued or running jobs" in listed.stdout
    assert "prefloop.retrain" in listed.stdout and "maintenance" in listed.stdout
    runs = [line for line in listed.stdout.splitlines() if " cli " in line]
    assert len(runs) == 1 and " queued " in runs[0]  # the one run, with its trigger


def test_stages_run_under_accelerate_on_several_gpus() -> None:
    from bot.config import load_settings
    from bot.retrain.stages import trainer_command

    one = trainer_command(load_settings(_env_file=None))
    assert one == [sys.executable, "-m", "training", "gate"]
    many = trainer_command(load_settings(_env_file=None, retrain={"gpus": 4}))
    assert many[1:] == [
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "4",
        "-m",
        "training",
        "gate",
    ]
    custom = load_settings(_env_file=None, retrain={"trainer": ["/opt/train.sh"]})
    assert trainer_command(custom) == ["/opt/train.sh"]


async def test_a_run_whose_job_ended_midway_is_queued_again(platform: Platform) -> None:
    from sqlalchemy import text

    from bot.retrain.triggers import requeue_orphaned_runs

    request = await request_retrain(platform.sessions, trigger="test")
    async with platform.sessions.begin() as session:
        assert await requeue_orphaned_runs(session) == []  # its job is waiting: fine
        # The worker stopped past its grace: procrastinate ended the job, the run is not.
        await session.execute(
            text("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = :j"),
            {"j": request.job_id},
        )
        await session.execute(
            text("UPDATE procrastinate_jobs SET status = 'aborted' WHERE id = :j"),
            {"j": request.job_id},
        )
    async with platform.sessions.begin() as session:
        assert await requeue_orphaned_runs(session) == [request.run_id]
    async with platform.sessions() as session:
        run = await session.get(RetrainRun, request.run_id)
        assert run is not None and run.job_id not in (None, request.job_id)
        status = await session.scalar(
            text("SELECT status FROM procrastinate_jobs WHERE id = :j"), {"j": run.job_id}
        )
    assert status == "todo"
    async with platform.sessions.begin() as session:
        assert await requeue_orphaned_runs(session) == []  # once
