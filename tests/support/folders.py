"""Temp folders for processes that run as another system user."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def temp_folder_outside_pytest(prefix: str) -> Iterator[Path]:
    """A folder straight under the system's temp folder, removed afterwards.

    For what runs as another user: the embedded PostgreSQL runs as a system user of its own
    when root starts it, and a test runs the CLI as ``nobody``. pytest's temp root
    (``/tmp/pytest-of-root``) is private to root, and every pytest session that starts on
    the machine makes it private again, so a server whose data lives there loses its data
    folder the moment another session starts.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
