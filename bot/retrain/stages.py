"""The retrain loop: export, refit HPS, re-adapt the generator, promote what measurably wins.

One ``retrain`` job runs the stages in order and records each in ``retrain_runs`` (stage,
last progress line, outcome), so ``prefloop jobs`` and ``/admin status`` can show it:

1. ``export``: a snapshot of the picks into the run's folder (the export code);
2. ``hps``: ``python -m training gate hps`` fits a candidate from the active HPS (or
   the configured base CLIP) and evaluates it, the active one and the base on the same
   test split; it is promoted only when the paired evidence on those picks shows it
   better than what serves (bot/retrain/evidence.py), and its top-1 beats the active
   one's by ``hps_margin`` and the base's;
3. ``adapter``: ``python -m training gate adapt`` selects with the (now) active HPS,
   trains an adapter and pits it against the serving adapter (or the bare base) on the
   same held-out prompts and seeds; promoted only when the paired evidence shows it
   better, its win rate reaches ``adapter_min_win_rate`` and its mean HPS gain is
   positive (or, on the people's route, registered unpromoted: step 5).
   ``adapter_method`` dpo trains with Diffusion-DPO on the picks instead (``gate dpo``),
   both does both and one candidate goes on (bot/retrain/methods.py);
4. every candidate is registered in ``model_versions`` with its figures, promoted or
   not, and the outcome is logged and announced.
5. ``people`` (bot/retrain/people.py, when ``adapter_gate`` and ``arena.share`` say
   so): the adapter is registered unpromoted and members judge it in mixed sets; the
   job ends and later ones look at the votes until the people's gate decides.

Training runs in a subprocess (under ``accelerate launch`` with several GPUs), so the
worker stays responsive and a crashing trainer fails only its stage; the active models
stay as they were. The run folder is the job's: a retrain whose worker died is queued
again by the stalled-job reaper and resumes there (a finished stage is not redone).
When the run ends its copy of the picks is deleted (see bot/retrain/run_data.py); a
resumed run whose copy is gone exports again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from bot.config import Settings
from bot.db.models import Choice, RetrainRun, RetrainStatus, VoteKind
from bot.export.run import ExportOptions, export_dataset
from bot.retrain import methods, people
from bot.retrain.evidence import HPS_ITEMS, judge
from bot.retrain.gpu_turn import training_turn
from bot.retrain.run_data import (
    DATA,
    forget_stale_training,
    remove_ended_runs_data,
    remove_export,
    remove_run_data,
    run_folder,
)
from bot.retrain.triggers import UNFINISHED
from training.run_folder import GATE, read_gate

if TYPE_CHECKING:
    from bot.runtime import Platform

log = logging.getLogger(__name__)

STAGES = ("export", "hps", "adapter")
PAPER_CLIP = "ViT-L-14:openai"  # what the HPS paper fine-tuned
Announce = Callable[[str], Awaitable[None]]


class StageFailed(RuntimeError):
    """A stage could not finish; the message says which and why."""


class Retrain:
    """One run's stages; ``announce`` says the outcome (Discord's admin channel, say)."""

    def __init__(self, platform: Platform, run_id: int, announce: Announce | None = None) -> None:
        self.platform = platform
        self.settings: Settings = platform.settings
        self.run_id = run_id
        self.registry = platform.registry
        self.folder = run_folder(self.settings.data_dir, run_id)
        self.announce = announce
        self._last_progress = 0.0
        self._stage_now: str | None = None

    async def run(self) -> str:
        """All stages; returns the summary (also logged, announced and recorded).

        A run started again (its worker died) goes on from where it was: the export and
        every decided stage are kept, so no candidate is registered twice. However it
        ends, its copy of the picks is deleted then.
        """
        async with self.platform.sessions() as session:
            row = await session.get(RetrainRun, self.run_id)
        if row is None or row.status not in UNFINISHED:
            return f"retrain {self.run_id} is {row.status if row else 'gone'}; nothing to do"
        outcome: dict[str, Any] = dict(row.outcome or {})
        await self._clean_up(remove_ended_runs_data(self.platform))  # e.g. runs abandoned
        await self._update(
            status=RetrainStatus.running,
            started_at=func.coalesce(RetrainRun.started_at, func.now()),
            picks_at_start=func.coalesce(RetrainRun.picks_at_start, await self._picks()),
        )
        try:
            if not people.pending(outcome):  # judged by people: straight back to looking
                data = await self._export(outcome)
                for name, stage in (("hps", self._hps), ("adapter", self._adapter)):
                    if name not in outcome:
                        outcome[name] = await stage(data)
                        await self._update(outcome=outcome)
            if people.pending(outcome):
                await self._clean_up(asyncio.to_thread(remove_run_data, self.folder))
                waiting = await people.check(self, outcome)
                if waiting is not None:
                    return waiting  # the job ends; a later one looks again
        except Exception as error:
            if not isinstance(error, StageFailed):
                log.exception("retrain %d stopped on an unexpected error", self.run_id)
                error = StageFailed(f"{self._stage_now or 'start'}: unexpected {error!r}")
            await asyncio.shield(people.abandon(self, str(error)))
            before = "; ".join(decision["summary"] for decision in outcome.values())
            summary = f"retrain {self.run_id} failed: {error}; " + (
                f"decided before it: {before}" if before else "the serving models are unchanged"
            )
            await asyncio.shield(
                self._update(
                    status=RetrainStatus.failed,
                    error=str(error),
                    outcome=outcome,
                    finished_at=func.now(),
                )
            )
            await self._clean_up(asyncio.to_thread(remove_run_data, self.folder))
            await self._say(summary, warning=True)
            return summary
        summary = f"retrain {self.run_id}: " + "; ".join(
            decision["summary"] for decision in outcome.values()
        )
        await self._update(
            status=RetrainStatus.succeeded,
            stage=None,
            outcome=outcome,
            progress=None,
            finished_at=func.now(),
        )
        await self._clean_up(asyncio.to_thread(remove_run_data, self.folder))
        await self._say(summary)
        return summary

    async def _clean_up(self, removal: Awaitable[Any]) -> None:
        """Delete ended runs' data; a failure is logged (and retried by the next run)."""
        try:
            await removal
        except Exception:
            log.exception("retrain %d: could not delete a run's copy of the picks", self.run_id)

    # ----- stages ---------------------------------------------------------------------

    async def _export(self, outcome: dict[str, Any]) -> Path:
        """The run's export: the one made before a restart, else a new one.

        Exporting anew in a resumed run (the copy went missing, or was half written),
        the undecided stages lose their resume points: they were trained on other data,
        and their trainers would refuse to go on with this one.
        """
        out = self.folder / DATA
        await self._update(stage="export", progress=None)
        if (out / "manifest.json").is_file():
            return out  # exported before the worker was restarted
        undecided = [stage for stage in ("hps", "adapter") if stage not in outcome]
        await asyncio.to_thread(remove_export, self.folder)
        await asyncio.to_thread(forget_stale_training, self.folder, undecided)
        try:
            done = await export_dataset(
                self.platform.database_url,
                self.platform.storage,
                self.settings,
                # Every kind of vote (control sets stay out): HPS trains ties with an
                # even target, the adapter takes "None are good" sets as negatives.
                ExportOptions(out=out, votes="all"),
            )
        except Exception as error:
            raise StageFailed(f"export: {error}") from error
        if done.instances == 0:
            raise StageFailed("export: there are no votes to train on yet")
        await self._update(progress=f"exported {done.instances} votes")
        return out

    async def _hps(self, data: Path) -> dict[str, Any]:
        config = self.settings.retrain
        active = await self.registry.active("hps")
        out = self.folder / "hps"
        base = hps_base(self.settings)
        start = active.uri if active else base
        args = ["hps", "--data", str(data), "--out", str(out), "--base", base, "--start", start]
        if active:
            args += ["--active", active.uri]
        gate = await self._stage("hps", args, out)
        candidate, base = gate["candidate"], gate["base"]
        reasons = []
        if candidate["top1"] <= base["top1"]:
            reasons.append(
                f"top-1 {candidate['top1']:.1%} does not beat the base CLIP's {base['top1']:.1%}"
            )
        if active and candidate["top1"] < gate["active"]["top1"] + config.hps_margin:
            reasons.append(
                f"top-1 {candidate['top1']:.1%} is not {config.hps_margin:.1%} above "
                f"the active one's {gate['active']['top1']:.1%}"
            )
        judged = judge(gate, self.settings, HPS_ITEMS)
        if judged.reason:
            reasons.append(judged.reason)
        serving = gate["active"] if active else base
        return await self._decide(
            "hps",
            gate,
            reasons,
            f"top-1 {candidate['top1']:.1%} vs {serving['top1']:.1%} serving "
            f"on {gate['test_instances']} held-out picks" + judged.figures,
            evidence=judged.record,
        )

    async def _adapter(self, data: Path) -> dict[str, Any]:
        """Train and judge each configured method's candidate (bot/retrain/methods.py);
        register every one that finished, and let one go on: promoted, or put before
        people. A method whose stage fails is recorded with its reason (``failed``); the
        stage fails only when no method finished."""
        chosen = methods.chosen(self.settings)
        finished: list[tuple[methods.Method, dict[str, Any]]] = []
        failed: list[dict[str, str]] = []
        for method in chosen:
            try:
                finished.append((method, await self._trained(data, method)))
            except StageFailed as error:
                if len(chosen) == 1:
                    raise
                log.warning("retrain %d: the %s stage failed: %s", self.run_id, method.name, error)
                failed.append({"method": method.name, "error": str(error)})
        if not finished:
            raise StageFailed(
                "adapter: every method failed: "
                + "; ".join(f"{f['method']}: {f['error']}" for f in failed)
            )
        candidates = methods.judged_all(finished, self.settings)
        best = methods.finalist(candidates)
        hold = people.hold_of(self.settings)
        goes_on = not best.reasons or (hold is not None and hold.judged(False))
        others = []
        for other in candidates:
            if other is not best:  # registered with its verdict, neither promoted nor judged
                decided = await self._decide_candidate(other, people.Hold(False, False))
                why = (
                    f"the {best.method.name} candidate went on"
                    if goes_on
                    else "neither candidate passed the model gate"
                )
                others.append({**decided, "summary": f"{decided['summary']}; {why}"})
        decision = people.route(self.settings, await self._decide_candidate(best, hold))
        if others:
            decision["others"] = others
            decision["summary"] += "; " + "; ".join(o["summary"] for o in others)
        if failed:
            decision["failed"] = failed
            decision["summary"] += "; " + "; ".join(
                f"the {f['method']} stage failed ({f['error']})" for f in failed
            )
        return decision

    async def _trained(self, data: Path, method: methods.Method) -> dict[str, Any]:
        """Run one method's stage: its gate figures, or StageFailed."""
        hps = await self.registry.active("hps")
        active = await self.registry.active("generator_adapter")
        out = self.folder / method.folder
        hps_uri = hps.uri if hps else hps_base(self.settings)
        args = methods.arguments(
            method, self.settings, data, out, hps_uri, active.uri if active else None
        )
        return await self._stage("adapter", args, out)

    async def _decide_candidate(
        self, candidate: methods.Candidate, hold: people.Hold | None
    ) -> dict[str, Any]:
        decision = await self._decide(
            "generator_adapter",
            candidate.gate,
            candidate.reasons,
            candidate.figures,
            evidence=candidate.evidence,
            hold=hold,
            noun=candidate.method.noun,
        )
        return {**decision, "method": candidate.method.name}

    async def _decide(
        self,
        kind: str,
        gate: dict[str, Any],
        reasons: list[str],
        figures: str,
        *,
        evidence: dict[str, Any] | None = None,
        hold: people.Hold | None = None,
        noun: str = "adapter",
    ) -> dict[str, Any]:
        """Register the candidate (always); promote it when no reason stands against it,
        unless ``hold`` leaves the decision to people (bot/retrain/people.py).

        ``evidence``: what the paired comparison said (bot/retrain/evidence.py), kept with
        the candidate's figures and in the run's outcome.
        """
        passed = not reasons
        promoted = passed and hold is None
        metrics = {**gate, "run_id": self.run_id, "promoted": promoted, "reasons": reasons}
        if evidence is not None:
            metrics["evidence"] = evidence
        if hold is not None:
            metrics["passed_model_gate"] = passed
            if hold.judged(passed):
                metrics["judged_by"] = people.PEOPLE
        earlier = await self.registry.find(kind, gate["model"])  # registered before a restart?
        if earlier is None:
            version = await self.registry.register(kind, gate["model"], metrics)
        else:
            version = earlier.id
        if promoted and (earlier is None or earlier.promoted_at is None):
            await self.registry.promote(version)
        name = "HPS" if kind == "hps" else noun
        if promoted:
            verdict = "promoted"
        elif passed:
            verdict = "passed the model gate"
        else:
            verdict = "kept as a candidate: " + "; ".join(reasons)
        return {
            "version": version,
            "promoted": promoted,
            "reasons": reasons,
            "summary": f"{name} v{version} {verdict} ({figures})",
            **({"evidence": evidence} if evidence is not None else {}),
            **({"passed_model_gate": passed} if hold is not None else {}),
        }

    async def _stage(self, stage: str, args: list[str], out: Path) -> dict[str, Any]:
        """Run a training stage in a subprocess; its gate figures, or StageFailed."""
        await self._update(stage=stage, progress=None)
        self._last_progress = 0.0  # the stage's first line shows at once
        with contextlib.suppress(OSError, ValueError):  # done before a restart
            return read_gate(out)
        config = self.settings.retrain
        command = [
            *trainer_command(self.settings),
            *args,
            "--cache",
            str(self.settings.data_dir.absolute() / "models"),
            "--device",
            "cpu" if config.gpus == 0 else config.device,
        ]
        log.info("retrain %d, %s: %s", self.run_id, stage, shlex.join(command))
        await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
        async with training_turn(self.platform):
            code, tail = await self._subprocess(command, out / "stage.log")
        if code != 0:
            last = tail[-1] if tail else "no output"
            raise StageFailed(
                f"{stage}: the trainer exited with code {code}: {last} (log: {out / 'stage.log'})"
            )
        try:
            return read_gate(out)
        except (OSError, ValueError) as error:
            raise StageFailed(
                f"{stage}: the trainer wrote no readable {out / GATE}: {error}"
            ) from None

    async def _subprocess(self, command: list[str], log_path: Path) -> tuple[int, list[str]]:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: accelerate's workers stop with it
        )
        tail: list[str] = []
        assert process.stdout is not None
        try:
            with log_path.open("ab") as log_file:
                async for raw in _lines(process.stdout):
                    log_file.write(raw + b"\n")
                    line = raw.decode("utf-8", "replace").strip()
                    if line:
                        tail = [*tail[-19:], line]
                        await self._progress(line)
            return await process.wait(), tail
        except BaseException:  # cancelled (the worker stops): the trainer stops too
            if process.returncode is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(process.wait()), 10)
                except TimeoutError:
                    _signal_group(process.pid, signal.SIGKILL)
                    await process.wait()
            raise

    # ----- records ----------------------------------------------------------------------

    async def _progress(self, line: str) -> None:
        now = time.monotonic()
        if now - self._last_progress < 2.0:
            return
        self._last_progress = now
        try:
            await self._update(progress=line[-300:])
        except Exception:  # progress is for people; the trainer goes on without it
            log.warning("retrain %d: could not record progress", self.run_id, exc_info=True)

    async def _update(self, **values: Any) -> None:
        if values.get("stage"):
            self._stage_now = values["stage"]
        async with self.platform.sessions.begin() as session:
            await session.execute(
                update(RetrainRun).where(RetrainRun.id == self.run_id).values(**values)
            )

    async def _picks(self) -> int:
        async with self.platform.sessions() as session:
            picks = select(func.count()).select_from(Choice).where(Choice.kind == VoteKind.pick)
            return int(await session.scalar(picks) or 0)

    async def _say(self, summary: str, *, warning: bool = False) -> None:
        (log.warning if warning else log.info)("%s", summary)
        if self.announce is not None:
            try:
                await self.announce(summary)
            except Exception:
                log.exception("could not announce the outcome of retrain %d", self.run_id)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _lines(stream: asyncio.StreamReader) -> Any:
    """Lines of a subprocess's output; progress bars' carriage returns end a line too."""
    buffer = b""
    while chunk := await stream.read(4096):
        buffer += chunk.replace(b"\r", b"\n")
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line
    if buffer:
        yield buffer


def hps_base(settings: Settings) -> str:
    """The plain CLIP of the HPS stage: configured, or the one that suits the generator."""
    from training.presets import preset_of

    if settings.retrain.hps_base:
        return settings.retrain.hps_base
    return preset_of(settings.generator.model) or PAPER_CLIP


def trainer_command(settings: Settings) -> list[str]:
    """How a stage starts: the configured command, accelerate on several GPUs, or python."""
    config = settings.retrain
    if config.trainer:
        return list(config.trainer)
    if config.gpus > 1:
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            str(config.gpus),
            "-m",
            "training",
            "gate",
        ]
    return [sys.executable, "-m", "training", "gate"]
