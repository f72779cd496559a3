"""Fixtures for export tests: the platform's settings, and exporting in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.export import ExportOptions, ExportResult, export_dataset


@pytest.fixture
def export(platform: Any, tmp_path: Path) -> Any:
    """``await export(name, **options)``: export into tmp_path/name with the platform."""

    async def run(name: str = "out", settings: Any = None, **options: Any) -> ExportResult:
        return await export_dataset(
            platform.database_url,
            platform.storage,
            settings or platform.settings,
            ExportOptions(out=tmp_path / name, **options),
        )

    return run
