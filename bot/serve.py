"""`prefloop run` and `prefloop worker`: the long-running parts, stopped cleanly by a signal.

`prefloop run` keeps its event loop for the Discord bot, the completion listener and the
maintenance jobs, and runs its generation worker in a process of its own, which it
supervises (:class:`WorkerSupervisor`): the model libraries' imports, the pipeline load
and the garbage collector hold the GIL for hundreds of milliseconds at a time, which no
thread can hide from an event loop in the same process (docs/architecture.md, "Keeping
the event loop responsive").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from bot.config import Settings
from bot.generation.worker import serve_worker
from bot.jobs.app import serve_maintenance
from bot.notify import GenerationEvent, NotificationListener
from bot.runtime import Platform, open_platform
from training.generator import GeneratorLoadError

log = logging.getLogger(__name__)

READY = "prefloop-worker-ready"  # what a supervised worker prints once it takes jobs
RESTART_DELAYS = (1.0, 60.0)  # first and longest wait before restarting a dead worker
STEADY_AFTER = 60.0  # a worker up this long starts its back-off afresh when it dies


class WorkerStartFailed(GeneratorLoadError):
    """The supervised worker stopped before it was ready; its own error is in the log above."""


async def serve(
    settings: Settings,
    *,
    worker: bool,
    listener: bool,
    discord: bool = False,
    web: bool = False,
    supervised: bool = False,
) -> None:
    """Run the chosen parts on one platform until SIGINT/SIGTERM or until one of them fails.

    ``listener`` marks the main process (`prefloop run`): it also applies migrations, and
    its ``worker`` runs as a supervised child process. ``supervised`` marks that child: it
    says when it is ready on stdout and stops, gracefully, when its stdin closes (its
    supervisor is gone).
    """
    async with open_platform(settings, upgrade=True if listener else None) as platform:
        parts: list[Coroutine[Any, Any, None]] = []
        supervisor = None
        if worker and listener:
            supervisor = WorkerSupervisor(worker_environment(platform.database_url))
            parts.append(supervisor.run())
        elif worker:
            parts.append(serve_worker(platform, on_ready=say_ready if supervised else None))
        if supervised:
            parts.append(until_stdin_closes())
        if listener:
            parts.append(log_completions(platform))
            parts.append(serve_maintenance(platform))
        if discord:
            from bot.discord.client import run_bot  # the only place that loads discord.py

            parts.append(run_bot(platform))
        if web:
            from bot.web.server import serve_web

            parts.append(serve_web(platform, on_ready=say_where))
        if not supervised:
            print(
                f"prefloop serving: generator {settings.generator.model}, "
                f"data in {settings.data_dir.resolve()}; Ctrl-C to stop",
                file=sys.stderr,
            )
        await until_signalled(
            *(asyncio.create_task(part) for part in parts),
            on_quit=supervisor.kill if supervisor else None,
            announce=not supervised,
        )


def say_where(url: str) -> None:
    print(f"prefloop web page: {url}", file=sys.stderr)


async def log_completions(platform: Platform) -> None:
    """Log every finished generation (the Discord bot posts them besides)."""

    async def finished(event: GenerationEvent) -> None:
        log.info("generation #%s %s", event.generation_id, event.status)

    await NotificationListener(platform.database_url, on_generation=finished).run()


async def until_signalled(
    *tasks: asyncio.Task[Any],
    on_quit: Callable[[], None] | None = None,
    announce: bool = True,
) -> None:
    """Wait for Ctrl-C/SIGTERM (or a task ending), then stop the tasks gracefully.

    A second Ctrl-C stops at once (``on_quit`` first: it kills child processes); jobs
    still running are then re-queued by another worker once this one's heartbeat is
    missed.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def quit_now() -> None:
        if on_quit is not None:
            on_quit()
        os._exit(130)

    def first_signal() -> None:
        if announce:
            print(
                "stopping: letting running jobs finish (Ctrl-C again to quit now)", file=sys.stderr
            )
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, quit_now)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first_signal)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for task, outcome in zip(tasks, outcomes, strict=True):
        if task in done and isinstance(outcome, Exception):
            raise outcome  # a part stopped on its own: say why


# ----- the supervised worker ---------------------------------------------------------


def worker_environment(database_url: str) -> dict[str, str]:
    """The child's environment: this process's (so the same settings and .env), with the
    database pinned to the one this process resolved (the embedded server's URL)."""
    return {**os.environ, "PREFLOOP_DATABASE_URL": database_url}


class WorkerSupervisor:
    """`prefloop worker --supervised` as a child process: started, stopped, restarted.

    Cancelling :meth:`run` stops the child gracefully (SIGTERM: its running job finishes
    within the shutdown grace, or is re-queued) and waits for it; :meth:`kill` stops it
    at once. The child is in a session of its own, so a Ctrl-C in the terminal reaches
    only this process, which forwards it exactly once. Its log goes to the same stderr.
    """

    def __init__(self, env: Mapping[str, str], command: list[str] | None = None) -> None:
        self.env = dict(env)
        self.command = command or [sys.executable, "-m", "bot.cli", "worker", "--supervised"]
        self.process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()  # set while a started child takes jobs
        self.ever_ready = False

    async def run(self) -> None:
        """Keep a worker running until cancelled; restart it, backing off, when it dies.

        A worker that dies before it was ever ready (a model that cannot be loaded, a
        schema to upgrade) is not restarted: that raises :class:`WorkerStartFailed`.
        """
        delay, longest = RESTART_DELAYS
        while True:
            started = time.monotonic()
            code = await self._run_once()
            if not self.ever_ready:
                raise WorkerStartFailed(
                    f"the generation worker stopped before it was ready (exit code {code}); "
                    "its reason is in the log above"
                )
            if time.monotonic() - started >= STEADY_AFTER:
                delay = RESTART_DELAYS[0]
            log.warning(
                "the generation worker stopped unexpectedly (exit code %s); "
                "starting it again in %.0f s",
                code,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    def kill(self) -> None:
        """Stop the child at once (a second Ctrl-C); its job is recovered as a dead worker's."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def _run_once(self) -> int:
        self.ready.clear()
        self.process = process = await asyncio.create_subprocess_exec(
            *self.command,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,  # closes when we are gone: the child then stops
            stdout=asyncio.subprocess.PIPE,  # READY, and anything else is passed on
            start_new_session=True,
        )
        log.info("generation worker started (process %d)", process.pid)
        assert process.stdout is not None
        output = asyncio.create_task(self._pass_on(process.stdout))
        try:
            await asyncio.shield(output)  # until the child exits (its stdout closes)
            return await process.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)  # its job finishes or is re-queued
            await output
            await process.wait()
            raise
        finally:
            self.ready.clear()

    async def _pass_on(self, stdout: asyncio.StreamReader) -> None:
        async for line in stdout:
            if line.strip() == READY.encode():
                self.ready.set()
                self.ever_ready = True
            else:
                sys.stderr.write(line.decode("utf-8", "replace"))


def say_ready() -> None:
    """Tell the supervisor this worker takes jobs."""
    print(READY, flush=True)


async def until_stdin_closes() -> None:
    """Return when stdin reaches its end: the supervising process has gone."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
