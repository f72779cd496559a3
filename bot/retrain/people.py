"""The people's gate: a retrain's candidate adapter is promoted only when members prefer it.

After the adapter stage, when ``retrain.adapter_gate`` is ``people`` (or ``both`` and the
model gate passed) and mixed sets are on (``arena.share`` > 0), the candidate is
registered but not promoted: it becomes the contender of a comparison against the
serving adapter (or the bare base), and a share of /imagine requests become mixed sets
of both. Each judged set is one observation of the contender's win rate; the always-valid
test of bot/arena/sequential.py decides, however often it is looked at.

Judging takes days, so it holds no worker: the retrain job opens the comparison, looks
at the votes, and ends, leaving the run ``running`` in the stage ``people`` with a
follow-up job deferred ``arena.check_interval`` seconds ahead (the run's ``job_id``,
so the orphan recovery of bot/retrain/triggers.py sees it alive). Each look records the
evidence as the run's progress; a decision closes the comparison, promotes the
candidate or leaves it a candidate, and the run ends with the announcement.

Everything lives in the database: the comparison (``retrain_run_id``) and the run's
outcome keys say what is done, so a restarted worker goes straight back to looking.
An admin who stops the comparison meanwhile ends the run with the candidate unpromoted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.arena.outcomes import outcomes
from bot.arena.sequential import Judgement
from bot.arena.store import ComparisonView, judge_comparison, open_row, stop_row
from bot.db import queries
from bot.db.models import Comparison, ComparisonStatus, RetrainRun
from bot.names import MAINTENANCE_QUEUE, RETRAIN_LOCK, RETRAIN_TASK
from bot.registry import ModelRegistry, active_version

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.runtime import Platform

log = logging.getLogger(__name__)

PEOPLE = "people"  # the run's stage while members judge, and its outcome key once decided
SHARE_OFF = "mixed sets are off (PREFLOOP_ARENA__SHARE=0)"
ADAPTER = "generator_adapter"


class Retrain(Protocol):
    """What the gate uses of a run (bot/retrain/stages.py's Retrain, which imports this)."""

    platform: Platform
    settings: Settings
    run_id: int
    registry: ModelRegistry

    async def _update(self, **values: Any) -> None: ...

    async def _say(self, summary: str, *, warning: bool = False) -> None: ...


@dataclass(frozen=True)
class Hold:
    """The adapter stage registers its candidate but does not promote it: people decide
    (or, with no mixed sets, nobody can)."""

    judged_if_passed: bool  # people judge a candidate that passes the model gate
    judged_anyway: bool  # ... and one that does not

    def judged(self, passed: bool) -> bool:
        return self.judged_anyway or (passed and self.judged_if_passed)


def hold_of(settings: Settings) -> Hold | None:
    """How the adapter stage's decision is held for people; None: the model decides."""
    if not holds_promotion(settings):
        return None
    judging = settings.arena.share > 0
    people_alone = settings.retrain.adapter_gate == "people"
    return Hold(judged_if_passed=judging, judged_anyway=judging and people_alone)


def holds_promotion(settings: Settings) -> bool:
    """Whether the adapter stage may not promote: people decide (or nobody can)."""
    gate, share = settings.retrain.adapter_gate, settings.arena.share
    return gate == "people" or (gate == "both" and share > 0)


def route(settings: Settings, decision: dict[str, Any]) -> dict[str, Any]:
    """The adapter stage's decision (made by ``Retrain._decide`` with :func:`hold_of`),
    with what happens next: ``next: people`` marks one the people's gate takes over (any
    ``people`` verdict, or a passed ``both`` one); the summary says when the model decides
    alone, or when nobody can judge."""
    gate, share = settings.retrain.adapter_gate, settings.arena.share
    summary = str(decision["summary"])
    if not holds_promotion(settings):
        if gate == "both":
            summary += f"; judged by the model alone: {SHARE_OFF}"
        return {**decision, "summary": summary}
    passed = bool(decision["passed_model_gate"])
    if not passed and gate == "people":
        summary += " (the model gate does not bind: people judge it)"
    decision = dict(decision)
    if share <= 0:  # adapter_gate people, and nobody to judge
        summary += f"; not promoted: the people's gate judges adapters and {SHARE_OFF}"
    elif gate == "people" or passed:
        decision["next"] = PEOPLE
    return {**decision, "summary": summary}


def pending(outcome: dict[str, Any]) -> bool:
    """Whether the run waits on the people's decision (a resumed run goes straight to it)."""
    return outcome.get("adapter", {}).get("next") == PEOPLE and PEOPLE not in outcome


async def check(retrain: Retrain, outcome: dict[str, Any]) -> str | None:
    """Open the run's comparison (once), look at the votes, decide or wait.

    Returns None once decided (``outcome["people"]`` is set and saved, the candidate
    promoted or not); else the line saying the run waits, with its next look deferred.
    """
    version = int(outcome["adapter"]["version"])
    comparison, opened = await _comparison(retrain, version)
    if comparison is None:  # the candidate serves already (an admin promoted it)
        outcome[PEOPLE] = {
            "version": version,
            "promoted": True,
            "decision": "serving",
            "summary": f"adapter v{version} was promoted by an admin before people judged it",
        }
        await retrain._update(outcome=outcome)
        return None
    if opened:
        await retrain._say(
            f"retrain {retrain.run_id}: "
            + "; ".join(d["summary"] for d in outcome.values())
            + f"; adapter v{version} is now judged by people in mixed sets "
            f"(comparison {comparison.id}): promoted once its win rate is above 50% at "
            f"{retrain.settings.arena.confidence:.0%} confidence"
        )
    if comparison.status == ComparisonStatus.open:
        judgement = await _judge(retrain, comparison)
        if judgement.decision is None:
            return await _wait(retrain, comparison, judgement)
        await _close(retrain, comparison, judgement)
    async with retrain.platform.sessions() as session:
        closed = await session.get(Comparison, comparison.id)
    assert closed is not None
    decided = _decided(closed, version)
    if decided["promoted"]:
        current = await retrain.registry.get(version)
        if current.status != "active":
            await retrain.registry.promote(version)
    outcome[PEOPLE] = decided
    await retrain._update(outcome=outcome)
    return None


async def abandon(retrain: Retrain, reason: str) -> None:
    """The run failed: stop its comparison, if open, so mixed sets end with it."""
    try:
        async with retrain.platform.sessions.begin() as session:
            await stop_run_comparison_in(session, retrain.run_id, reason)
    except Exception:
        log.exception("retrain %d: could not stop its comparison", retrain.run_id)


async def stop_run_comparison_in(session: AsyncSession, run_id: int, reason: str) -> None:
    """Stop the run's comparison if it is the open one, in the caller's transaction (also
    when the stalled-job reaper gives a run up for good)."""
    row = await open_row(session, lock=True)  # one is open at a time: is it the run's?
    if row is not None and row.retrain_run_id == run_id:
        await stop_row(session, row, {"reason": f"retrain {run_id} failed: {reason}"})


# ----- the comparison ----------------------------------------------------------------


async def _comparison(retrain: Retrain, version: int) -> tuple[Comparison | None, bool]:
    """The run's comparison; opened now (True) when it had none, stopping an admin's.

    None when the candidate is the serving adapter already: there is nothing to compare.
    """
    run_id = retrain.run_id
    async with retrain.platform.sessions.begin() as session:
        await session.get(RetrainRun, run_id, with_for_update=True)  # one opener at a time
        mine = await session.scalar(
            select(Comparison)
            .where(Comparison.retrain_run_id == run_id)
            .order_by(Comparison.id.desc())
            .limit(1)
        )
        if mine is not None:
            return mine, False
        active = await active_version(session, ADAPTER)
        serving = active.id if active else None
        if serving == version:
            return None, False
        stopped = await _stop_open(session, run_id)
        mine = Comparison(
            baseline_version_id=serving,
            contender_version_id=version,
            retrain_run_id=run_id,
            started_by=f"retrain {run_id}",
        )
        session.add(mine)
        await session.flush()
        await session.refresh(mine)
    if stopped is not None:
        log.warning(
            "retrain %d: stopped comparison %d (an admin's) to judge adapter v%d",
            run_id,
            stopped,
            version,
        )
    log.info(
        "retrain %d: adapter v%d judged by people against %s (comparison %d)",
        run_id,
        version,
        f"adapter v{serving}" if serving is not None else "the base",
        mine.id,
    )
    await retrain._update(stage=PEOPLE, progress=f"{PEOPLE}: comparison {mine.id} opened")
    return mine, True


async def _stop_open(session: AsyncSession, run_id: int) -> int | None:
    """Stop the open comparison (one at a time), saying why; its id, if there was one."""
    current = await open_row(session, lock=True)
    if current is None:
        return None
    reason = f"stopped for retrain {run_id}: its candidate adapter is judged by people"
    await stop_row(session, current, {**(current.decision or {}), "reason": reason})
    return current.id


async def _judge(retrain: Retrain, comparison: Comparison) -> Judgement:
    """The test over one judged set each, the contender's win counting 1: the figures
    ``prefloop arena status`` shows (both use :func:`bot.arena.store.judge_comparison`)."""
    async with retrain.platform.sessions() as session:
        found = await outcomes(session, comparison.id)
    return judge_comparison(
        ComparisonView.of(comparison), found, retrain.settings.arena, datetime.now(UTC)
    )


async def _wait(retrain: Retrain, comparison: Comparison, judgement: Judgement) -> str:
    """Record the evidence and defer the next look; the job ends, the run goes on.

    A look that finds a later look already waiting (the job ran twice) defers no other.
    """
    interval = retrain.settings.arena.check_interval
    progress = f"{PEOPLE}: {judgement.describe()}"
    async with retrain.platform.sessions.begin() as session:
        await session.get(RetrainRun, retrain.run_id, with_for_update=True)
        job_id = await session.scalar(
            text(
                "SELECT id FROM procrastinate_jobs WHERE task_name = :task "
                "AND status = 'todo' AND scheduled_at > now() "
                "AND (args->>'run_id')::bigint = :run ORDER BY id LIMIT 1"
            ),
            {"task": RETRAIN_TASK, "run": retrain.run_id},
        )
        if job_id is None:
            job_id = await queries.defer_job(
                session,
                task=RETRAIN_TASK,
                queue=MAINTENANCE_QUEUE,
                args={"run_id": retrain.run_id},
                lock=RETRAIN_LOCK,
                delay=interval,
            )
        await session.execute(
            update(RetrainRun)
            .where(RetrainRun.id == retrain.run_id)
            .values(job_id=job_id, stage=PEOPLE, progress=progress)
        )
    summary = (
        f"retrain {retrain.run_id}: adapter v{comparison.contender_version_id} is judged by "
        f"people (comparison {comparison.id}): {judgement.describe()}; "
        f"next look in {interval:.0f} s (job {job_id})"
    )
    log.info("%s", summary)
    return summary


async def _close(retrain: Retrain, comparison: Comparison, judgement: Judgement) -> None:
    """Close the comparison with the decision and its figures (the run records it next)."""
    arena = retrain.settings.arena
    assert judgement.decision is not None
    low, high = judgement.interval
    promoted = judgement.decision == "promote"
    status = ComparisonStatus.promoted if promoted else ComparisonStatus.rejected
    decision = {
        "decision": judgement.decision,
        "reason": judgement.reason,
        "judged_sets": judgement.n,
        "wins": judgement.wins,
        "win_rate": judgement.estimate,
        "interval": [low, high],
        "confidence": arena.confidence,
        "min_effect": arena.min_effect,
        "max_comparisons": arena.max_comparisons,
        "max_days": arena.max_days,
    }
    async with retrain.platform.sessions.begin() as session:
        await session.execute(
            update(Comparison)
            .where(Comparison.id == comparison.id, Comparison.status == ComparisonStatus.open)
            .values(status=status, ended_at=func.now(), decision=decision)
        )


def _decided(comparison: Comparison, version: int) -> dict[str, Any]:
    """The run's ``people`` outcome, from its closed comparison."""
    decision = dict(comparison.decision or {})
    figures = ""
    if "judged_sets" in decision:
        low, high = decision["interval"]
        figures = (
            f" (win rate {decision['win_rate']:.1%} over {decision['judged_sets']} judged sets, "
            f"always-valid {decision['confidence']:.0%} interval {low:.1%}–{high:.1%})"
        )
    promoted = comparison.status == ComparisonStatus.promoted
    if promoted:
        summary = f"adapter v{version} promoted by people{figures}"
    elif comparison.status == ComparisonStatus.rejected:
        summary = f"adapter v{version} not promoted by people: {decision['reason']}{figures}"
    else:
        why = decision.get("reason") or "stopped by an admin"
        summary = (
            f"adapter v{version} not promoted: its comparison {comparison.id} was stopped "
            f"before people decided ({why})"
        )
    return {
        **decision,
        "version": version,
        "comparison": comparison.id,
        "promoted": promoted,
        "decision": decision.get("decision", str(comparison.status)),
        "summary": summary,
    }
