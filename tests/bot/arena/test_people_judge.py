"""People judge the generator: simulated raters drive mixed sets through the real code.

A population of raters with a hidden taste (how red an image is, plus each rater's own
noise) stands in for members. Two adapters that change the images are made; which of
them the raters truly prefer to the base is MEASURED on the images they make, not
assumed. Retrain runs (the scripted trainer hands over a real adapter as the candidate)
then put each before the raters: mixed sets are drawn by the service, made by the
generation worker's runner on one loaded pipeline, picked by the raters through the
service, and the people's gate decides. The leaderboard ranks what the raters prefer.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from bot.arena.leaderboard import leaderboard
from bot.db.models import RetrainRun, RetrainStatus
from bot.domain import GenerationOptions, UserRef
from bot.generation.runner import GenerationRunner
from bot.retrain.stages import Retrain
from bot.retrain.triggers import request_retrain
from bot.runtime import Platform
from tests.support.adapters import distinct_lora_adapter, lora_adapter
from tests.support.red_corner import redness
from tests.support.retrain import TRAINER, scripted_gates
from tests.support.synthetic import seed_picks
from training.run_folder import write_info

NOISE = 1.0  # a rater's noise, in redness units (the adapters below move it by 1-4)
MEASURED = 20  # prompts the truth is measured on
RATERS = [UserRef.parse(f"cli:rater{k}") for k in range(6)]
MAX_SETS = 400  # per run: an always-valid test needs ~150-250 sets to reject a 39% win rate


class Population:
    """Raters who prefer red images, each pick blurred by noise of their own."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def pick(self, files: list[Path]) -> int:
        tastes = [redness(f) + self.rng.gauss(0.0, NOISE) for f in files]
        return max(range(len(files)), key=tastes.__getitem__)


def _measured_win_rate(generator: Any, adapter: Path | None, against: Path | None) -> float:
    """How often the raters' taste (without their noise) prefers ``adapter``'s image to
    ``against``'s, on the prompts and seeds the mixed sets below use: the truth the gate
    should find."""

    def made(folder: Path | None) -> list[float]:
        if folder is None:
            generator.clear_adapter()
        else:
            generator.apply_adapter(folder)
        return [
            redness(generator.generate(_prompt(n), [_seed(n)], steps=3).images[0])
            for n in range(MEASURED)
        ]

    mine, theirs = made(adapter), made(against)
    generator.clear_adapter()
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(mine, theirs, strict=True))
    return wins / MEASURED


def _prompt(n: int) -> str:
    return f"a thing number {n}"


def _seed(n: int) -> int:
    return 1000 * n


async def _judged_run(
    platform: Platform,
    runner: GenerationRunner,
    raters: Population,
    candidate: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[RetrainRun, int]:
    """A retrain whose candidate is ``candidate``, judged by the raters; the ended run and
    the number of mixed sets made."""
    monkeypatch.setenv("PREFLOOP_TEST_ADAPTER", str(candidate))
    request = await request_retrain(platform.sessions, trigger="test")
    await Retrain(platform, request.run_id).run()
    run = await _run(platform, request.run_id)
    assert run.stage == "people" and run.status == RetrainStatus.running, run.outcome
    service = platform.service
    sets = 0
    while sets < MAX_SETS:
        for k in range(5):
            member = RATERS[(sets + k) % len(RATERS)]
            options = GenerationOptions(seed=_seed(sets + k))  # the same sets on every run
            submitted = await service.submit_prompt(member, _prompt(sets + k), 2, options)
            assert await runner.run(submitted.generation_id) == "done"
            view = await service.get_generation(submitted.generation_id)
            assert view.comparison_id is not None  # share 1: every set is mixed
            files = [platform.storage.local_path(i.storage_key) for i in view.images]
            await service.record_choice(submitted.generation_id, member, raters.pick(files))
        sets += 5
        await Retrain(platform, request.run_id).run()  # the gate's next look
        run = await _run(platform, request.run_id)
        if run.status != RetrainStatus.running:
            return run, sets
    raise AssertionError(f"no decision after {sets} mixed sets: {run.progress}")


async def _run(platform: Platform, run_id: int) -> RetrainRun:
    async with platform.sessions() as session:
        run = await session.get(RetrainRun, run_id)
    assert run is not None
    return run


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_people_promote_what_they_prefer_reject_the_rest_and_rank_it_first(
    platform: Platform,
    tiny_model: Path,
    generator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = platform.settings
    settings.retrain.trainer = TRAINER
    settings.retrain.hps_base = "tiny"
    settings.retrain.adapter_gate = "both"
    settings.arena.share = 1.0
    settings.arena.daily_cap = 10_000
    monkeypatch.setenv("PREFLOOP_TEST_GATES", json.dumps(scripted_gates(0.1, 0.9)))
    seed_picks(platform.database_url, settings.data_dir / "store", picks=12)  # to export

    redder = distinct_lora_adapter(tiny_model, tmp_path / "redder", seed=9, scale=0.5)
    paler = distinct_lora_adapter(tiny_model, tmp_path / "paler", seed=12, scale=0.5)
    same = lora_adapter(tiny_model, tmp_path / "same")  # zero up-weights, and with no
    write_info(same, {"negative_prompt": ""})  # negative prompt: the base's own images
    truth = {
        "redder vs base": _measured_win_rate(generator, redder, None),
        "paler vs redder": _measured_win_rate(generator, paler, redder),
        "paler vs base": _measured_win_rate(generator, paler, None),
    }
    print("measured win rates without noise:", truth)
    assert truth["redder vs base"] >= 0.9 and truth["paler vs redder"] <= 0.25
    assert truth["paler vs base"] >= 0.75

    runner = GenerationRunner(platform.sessions, platform.storage, generator)
    platform.service.mixing_rng = random.Random(0)  # where each version's image lands
    raters = Population(seed=7)

    # A better candidate: promoted by people, and served from the next job.
    run, sets = await _judged_run(platform, runner, raters, redder, monkeypatch)
    print(f"redder: {run.outcome['people']['summary']} after {sets} sets")
    assert run.status == RetrainStatus.succeeded
    assert "promoted by people" in run.outcome["people"]["summary"]
    serving = await platform.registry.active("generator_adapter")
    assert serving is not None and serving.id == run.outcome["people"]["version"]

    # A worse one: rejected; the better one keeps serving.
    run, sets = await _judged_run(platform, runner, raters, paler, monkeypatch)
    print(f"paler: {run.outcome['people']['summary']} after {sets} sets")
    paler_version = run.outcome["adapter"]["version"]
    assert "not promoted by people" in run.outcome["people"]["summary"]
    still = await platform.registry.active("generator_adapter")
    assert still is not None and still.id == serving.id

    # One no different from what serves... compared against the base instead: the base's
    # own images, so a coin decides each pick; at the deadline it is rejected.
    settings.arena.max_comparisons = 30
    await platform.registry.rollback("generator_adapter")  # the base serves again
    run, sets = await _judged_run(platform, runner, raters, same, monkeypatch)
    print(f"same: {run.outcome['people']['summary']} after {sets} sets")
    same_version = run.outcome["adapter"]["version"]
    assert "no decision within 30" in run.outcome["people"]["summary"]
    assert await platform.registry.active("generator_adapter") is None

    board = await leaderboard(platform.sessions, settings, bootstrap=200)
    print("\n".join(board.lines()))
    ranked = [rating.version for rating in board.ratings.ratings]
    assert ranked[0] == serving.id  # the redder adapter, first
    # The others only met the redder one (the paler) or each other (the base and its
    # twin), so the sets say nothing about the paler one against the base: below the
    # first, their order is the ratings' guess from how each did against the redder one.
    assert set(ranked[1:]) == {paler_version, None, same_version}
