"""Settings for tests, for the fixtures and for processes a test starts (no fixtures there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.config import Settings, load_settings


def make_settings(data_dir: Path, database_url: str, model: Path, **sections: Any) -> Settings:
    """Settings for tests: fast tiny generations, short worker timeouts, no .env."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "generator": {"model": str(model), "steps": 3, "device": "cpu"},
        "worker": {"heartbeat_interval": 0.5, "stalled_after": 2.0, "shutdown_grace": 30},
        # No surprise control sets: the tests of control sets turn them on.
        "controls": {"share": 0.0},
    }
    for section, overrides in sections.items():
        values[section] = {**values.get(section, {}), **overrides}
    return load_settings(_env_file=None, **values)
