"""The `prefloop` command in a subprocess, as users run it, and the environment it gets."""

from __future__ import annotations

from typing import Any


def cli_env(**settings: str) -> dict[str, str]:
    """The environment for a `prefloop` subprocess: no inherited PREFLOOP_ settings.

    The preset cache is kept: building the tiny generator takes a minute.
    """
    import os

    keep = {"PREFLOOP_PRESET_CACHE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLOOP_") or k in keep}
    # `prefloop run` serves the web page too: on a free port, so tests never collide
    # over 8080 (nor with a `make run` on the same machine).
    env["PREFLOOP_WEB__PORT"] = "0"
    env.update({f"PREFLOOP_{k.upper()}": v for k, v in settings.items()})
    env["COLUMNS"] = "200"  # keep rich from wrapping what tests read
    return env


def platform_env(platform: Any, data_dir: Any, **settings: str) -> dict[str, str]:
    """:func:`cli_env` for a `prefloop` process beside ``platform``: its database and
    generator, a data folder of its own; ``settings`` add or override."""
    base = {
        "database_url": platform.database_url,
        "data_dir": str(data_dir),
        "generator__model": platform.settings.generator.model,
    }
    return cli_env(**{**base, **settings})


def prefloop(*args: str, env: dict[str, str], cwd: Any = None, timeout: float = 180) -> Any:
    """Run the `prefloop` CLI in a subprocess, as a user would."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
