"""The people's gate stage of the retrain loop: the candidate waits on members' picks.

Runs are driven as in test_retrain.py (the scripted trainer); members' votes are rows
written here: mixed sets of the comparison's two versions, one pick each.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from bot.db.models import (
    Choice,
    Comparison,
    Frontend,
    Generation,
    GenerationStatus,
    Image,
    RetrainRun,
    User,
)
from bot.registry import ModelRegistry
from bot.retrain import people
from bot.retrain.follow import follow_run
from bot.retrain.stages import Retrain
from bot.retrain.triggers import request_retrain, requeue_orphaned_runs
from bot.runtime import Platform
from tests.support.cli import platform_env, prefloop
from tests.support.retrain import TRAINER, scripted_gates
from tests.support.synthetic import seed_picks


@pytest.fixture
def judged(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """Mixed sets on, ``both`` gates, a model gate the candidate passes, some picks."""
    monkeypatch.setenv("PREFLOOP_TEST_GATES", json.dumps(scripted_gates(0.6, 0.9)))
    platform.settings.retrain.trainer = TRAINER
    platform.settings.retrain.hps_base = "tiny"
    platform.settings.retrain.adapter_gate = "both"
    platform.settings.arena.share = 0.25
    seed_picks(platform.database_url, platform.settings.data_dir / "store", picks=12)
    return platform


async def _job(platform: Platform, run_id: int, announced: list[str] | None = None) -> str:
    """The run's current job as a worker runs it: doing, the retrain, done."""

    async def say(line: str) -> None:
        if announced is not None:
            announced.append(line)

    job = await _run_row(platform, run_id)
    await _job_status(platform, job.job_id, "doing")
    result = await Retrain(platform, run_id, announce=say).run()
    await _job_status(platform, job.job_id, "succeeded")
    return result


async def _job_status(platform: Platform, job_id: int | None, status: str) -> None:
    async with platform.sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE procrastinate_jobs SET status = CAST(:s AS procrastinate_job_status) "
                "WHERE id = :j"
            ),
            {"s": status, "j": job_id},
        )


async def _run_row(platform: Platform, run_id: int) -> RetrainRun:
    async with platform.sessions() as session:
        run = await session.get(RetrainRun, run_id)
    assert run is not None
    return run


async def _comparisons(platform: Platform) -> list[Comparison]:
    async with platform.sessions() as session:
        return list(await session.scalars(select(Comparison).order_by(Comparison.id)))


async def _todo_jobs(platform: Platform) -> list[tuple[int, Any, bool]]:
    async with platform.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT id, args, scheduled_at > now() + interval '200 seconds' "
                "FROM procrastinate_jobs WHERE status = 'todo' ORDER BY id"
            )
        )
        return [(row[0], row[1], bool(row[2])) for row in rows]


async def _vote(platform: Platform, comparison: Comparison, wins: int, losses: int) -> None:
    """Mixed sets of 2 + 2 images, each picked once by its requester: ``wins`` picks of
    the contender's image, then ``losses`` of the baseline's."""
    versions = [
        comparison.contender_version_id,
        comparison.baseline_version_id,
        comparison.baseline_version_id,
        comparison.contender_version_id,
    ]
    async with platform.sessions.begin() as session:
        count = await session.scalar(select(User.id).order_by(User.id.desc()).limit(1)) or 0
        for number in range(wins + losses):
            member = User(frontend=Frontend.discord, external_id=f"voter-{count + number}")
            session.add(member)
            await session.flush()
            generation = Generation(
                prompt=f"a mixed set {number}",
                n_images=4,
                params={"versions": versions, "seeds": [1, 2, 1, 2]},
                comparison_id=comparison.id,
                status=GenerationStatus.done,
                requested_by=member.id,
            )
            session.add(generation)
            await session.flush()
            for index, version in enumerate(versions):
                session.add(
                    Image(
                        generation_id=generation.id,
                        index=index,
                        storage_key=f"mixed/{generation.id}/{index}.png",
                        sha256="0" * 64,
                        seed=index,
                        width=64,
                        height=64,
                        adapter_version_id=version,
                    )
                )
            await session.flush()
            picked = 0 if number < wins else 1  # image 0: the contender's, 1: the baseline's
            session.add(Choice(generation_id=generation.id, user_id=member.id, image_index=picked))


async def _started(platform: Platform, announced: list[str] | None = None) -> tuple[int, int]:
    """A run that reached the people's gate; its id and its serving adapter's."""
    registry = ModelRegistry(platform.sessions)
    serving = await registry.register("generator_adapter", "/models/lora-old", {})
    await registry.promote(serving)
    request = await request_retrain(platform.sessions, trigger="test")
    await _job(platform, request.run_id, announced)
    return request.run_id, serving


async def test_a_candidate_people_prefer_is_promoted_and_the_run_ends(judged: Platform) -> None:
    platform = judged
    registry = ModelRegistry(platform.sessions)
    announced: list[str] = []
    run_id, serving = await _started(platform, announced)

    run = await _run_row(platform, run_id)
    assert (run.status, run.stage) == ("running", "people")  # the job ended, the run did not
    candidate = run.outcome["adapter"]["version"]
    assert (
        run.outcome["adapter"]["promoted"] is False and run.outcome["adapter"]["next"] == "people"
    )
    assert (
        f"adapter v{candidate} passed the model gate (win rate 90.0%"
        in (run.outcome["adapter"]["summary"])
    )
    assert (await registry.active("generator_adapter")).id == serving  # type: ignore[union-attr]
    version = await registry.get(candidate)
    assert version.status == "candidate" and version.metrics["judged_by"] == "people"
    assert version.metrics["promoted"] is False
    [comparison] = await _comparisons(platform)
    assert (comparison.status, comparison.retrain_run_id) == ("open", run_id)
    assert (comparison.baseline_version_id, comparison.contender_version_id) == (
        serving,
        candidate,
    )
    assert run.progress is not None and run.progress.startswith("people: 0 judged sets")
    [(job_id, args, later)] = await _todo_jobs(platform)  # the next look, deferred
    assert run.job_id == job_id and args == {"run_id": run_id} and later
    assert "is now judged by people in mixed sets" in announced[0]
    assert not (platform.settings.data_dir / "retrain" / f"run-{run_id}" / "data").exists()

    # A restart (the job again, the orphan recovery) neither opens nor defers anything new.
    async with platform.sessions.begin() as session:
        assert await requeue_orphaned_runs(session) == []  # its next look is alive
    waiting = await Retrain(platform, run_id).run()
    assert "is judged by people" in waiting and f"(job {job_id})" in waiting
    assert len(await _comparisons(platform)) == 1
    assert [job for job, _, _ in await _todo_jobs(platform)] == [job_id]

    # --wait stops at the people's gate instead of waiting for days.
    await _vote(platform, comparison, wins=3, losses=1)
    state = await follow_run(platform.sessions, run_id)
    assert not state.ended and state.note == (
        "judged by people: 4 judged sets so far; `prefloop arena status` shows progress"
    )

    await _job(platform, run_id)  # 4 sets decide nothing yet: another look
    run = await _run_row(platform, run_id)
    assert run.status == "running" and run.progress is not None
    assert run.progress.startswith("people: 4 judged sets, contender's win rate 75.0%")
    [(next_job, _, _)] = await _todo_jobs(platform)
    assert next_job != job_id and run.job_id == next_job

    await _vote(platform, comparison, wins=25, losses=2)
    announced.clear()
    summary = await _job(platform, run_id, announced)
    run = await _run_row(platform, run_id)
    assert run.status == "succeeded" and run.stage is None and run.finished_at is not None
    people = run.outcome["people"]
    assert people["promoted"] and people["judged_sets"] == 31 and people["decision"] == "promote"
    assert (
        f"adapter v{candidate} promoted by people (win rate 90.3% over 31 judged sets, "
        in (people["summary"])
    )
    assert "always-valid 95% interval" in people["summary"]
    assert announced == [summary] and people["summary"] in summary
    assert (await registry.active("generator_adapter")).id == candidate  # type: ignore[union-attr]
    [closed] = await _comparisons(platform)
    assert closed.status == "promoted" and closed.ended_at is not None
    assert closed.decision["judged_sets"] == 31 and closed.decision["interval"][0] > 0.5
    assert await _todo_jobs(platform) == []  # no look left behind
    assert await Retrain(platform, run_id).run() == f"retrain {run_id} is succeeded; nothing to do"


async def test_a_candidate_people_dislike_stays_a_candidate(
    judged: Platform, tmp_path: Path
) -> None:
    platform = judged
    registry = ModelRegistry(platform.sessions)
    run_id, serving = await _started(platform)
    [comparison] = await _comparisons(platform)

    env = platform_env(platform, tmp_path / "cli-data")
    waited = await asyncio.to_thread(prefloop, "retrain", "--wait", env=env, cwd=tmp_path)
    assert waited.returncode == 0, waited.stderr  # it does not wait for days
    assert f"retrain {run_id} is already running" in waited.stdout
    assert "passed the model gate" in waited.stdout
    assert waited.stdout.rstrip().endswith(
        "judged by people: 0 judged sets so far; `prefloop arena status` shows progress"
    )

    await _vote(platform, comparison, wins=2, losses=38)
    await _job(platform, run_id)
    run = await _run_row(platform, run_id)
    assert run.status == "succeeded"
    people = run.outcome["people"]
    assert not people["promoted"] and people["decision"] == "reject"
    assert (
        "not promoted by people: its win rate is below 52% at 95% confidence" in (people["summary"])
    )
    assert (await registry.active("generator_adapter")).id == serving  # type: ignore[union-attr]
    assert (await registry.get(people["version"])).status == "candidate"
    [closed] = await _comparisons(platform)
    assert closed.status == "rejected" and closed.decision["interval"][1] < 0.52


async def test_an_admin_who_stops_the_comparison_ends_the_run_unpromoted(
    judged: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    platform = judged
    registry = ModelRegistry(platform.sessions)
    admins = await registry.register("generator_adapter", "/models/lora-admins", {})
    async with platform.sessions.begin() as session:
        session.add(Comparison(contender_version_id=admins, started_by="cli"))
    with caplog.at_level(logging.WARNING, logger="bot.retrain.people"):
        run_id, serving = await _started(platform)
    admin, mine = await _comparisons(platform)
    assert admin.status == "stopped" and "judged by people" in admin.decision["reason"]
    assert f"stopped comparison {admin.id} (an admin's)" in caplog.text
    assert mine.status == "open"

    async with platform.sessions.begin() as session:  # `prefloop arena stop`, as it would
        await session.execute(
            update(Comparison)
            .where(Comparison.id == mine.id)
            .values(status="stopped", decision={"reason": "stopped by cli"})
        )
    await _job(platform, run_id)
    run = await _run_row(platform, run_id)
    assert run.status == "succeeded" and not run.outcome["people"]["promoted"]
    assert "was stopped before people decided (stopped by cli)" in run.outcome["people"]["summary"]
    assert (await registry.active("generator_adapter")).id == serving  # type: ignore[union-attr]


async def test_people_judge_even_what_the_model_gate_rejects_with_the_people_gate(
    judged: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = judged
    platform.settings.retrain.adapter_gate = "people"
    monkeypatch.setenv("PREFLOOP_TEST_GATES", json.dumps(scripted_gates(0.6, 0.3)))
    run_id, _ = await _started(platform)
    run = await _run_row(platform, run_id)
    adapter = run.outcome["adapter"]
    assert run.stage == "people" and adapter["next"] == "people"
    assert not adapter["passed_model_gate"] and "does not bind" in adapter["summary"]
    assert (await ModelRegistry(platform.sessions).get(adapter["version"])).metrics[
        "judged_by"
    ] == "people"

    # Nobody votes; the deadline in days passes: rejected, and the run ends.
    async with platform.sessions.begin() as session:
        await session.execute(
            update(Comparison).values(started_at=func.now() - timedelta(days=14, minutes=1))
        )
    await _job(platform, run_id)
    run = await _run_row(platform, run_id)
    assert run.status == "succeeded" and not run.outcome["people"]["promoted"]
    assert (
        "not promoted by people: no decision before the deadline (win rate 50.0% over 0 "
        in (run.outcome["people"]["summary"])
    )


async def test_both_gates_without_mixed_sets_judge_by_the_model_alone(judged: Platform) -> None:
    platform = judged
    platform.settings.arena.share = 0.0
    registry = ModelRegistry(platform.sessions)
    run_id, _ = await _started(platform)
    run = await _run_row(platform, run_id)
    assert run.status == "succeeded" and "people" not in run.outcome
    adapter = run.outcome["adapter"]
    assert adapter["promoted"] and adapter["summary"].endswith(
        "; judged by the model alone: mixed sets are off (PREFLOOP_ARENA__SHARE=0)"
    )
    assert (await registry.active("generator_adapter")).id == adapter["version"]  # type: ignore[union-attr]
    assert await _comparisons(platform) == []


async def test_a_failed_run_stops_its_own_comparison_and_no_other(platform: Platform) -> None:
    adapter = await ModelRegistry(platform.sessions).register("generator_adapter", "/lora", {})
    async with platform.sessions.begin() as session:
        runs = [RetrainRun(trigger="cli", status=s) for s in ("running", "failed")]
        session.add_all(runs)
        await session.flush()
        failed, other = (run.id for run in runs)  # the other: a run that failed to stop it
        session.add(Comparison(contender_version_id=adapter, retrain_run_id=other))

    await people.abandon(SimpleNamespace(platform=platform, run_id=failed), "out of memory")  # type: ignore[arg-type]
    [held] = await _comparisons(platform)
    assert held.status == "open"  # another run's comparison is not the failed run's to stop

    async with platform.sessions.begin() as session:
        await session.execute(update(Comparison).values(retrain_run_id=failed))
    await people.abandon(SimpleNamespace(platform=platform, run_id=failed), "out of memory")  # type: ignore[arg-type]
    [stopped] = await _comparisons(platform)
    assert stopped.status == "stopped" and stopped.ended_at is not None
    assert stopped.decision == {"reason": f"retrain {failed} failed: out of memory"}
