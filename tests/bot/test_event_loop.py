"""Nothing heavy runs on an event loop: model-library imports, model loads, hashing.

Which thread did a piece of work is checked, not how long it took: a loop that runs it
stalls for as long as it takes, whatever the machine.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bot.storage
from bot.storage import LocalStorage, S3Storage
from tests.support.s3 import start_s3

ROOT = Path(__file__).resolve().parents[2]
MODEL_LIBRARIES = ("torch", "diffusers", "transformers", "open_clip", "peft")


def on_event_loop() -> bool:
    """Is the calling thread running an event loop?"""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("kind", ["folder", "s3"])
async def test_storing_an_image_hashes_it_off_the_event_loop(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed_on_loop: list[bool] = []
    content_key = bot.storage.content_key

    def watched(data: bytes, suffix: str) -> tuple[str, str]:
        hashed_on_loop.append(on_event_loop())
        return content_key(data, suffix)

    monkeypatch.setattr(bot.storage, "content_key", watched)
    data = b"\x89PNG" + bytes(range(256)) * 4096  # a megabyte: milliseconds of SHA-256
    if kind == "folder":
        stored = await LocalStorage(tmp_path / "store").put(data, "png")
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        with start_s3() as endpoint:
            store = S3Storage("s3://prefloop/x", endpoint_url=endpoint, region="us-east-1")
            stored = await store.put(data, "png")
            assert await store.get(stored[0]) == data
    assert stored == content_key(data, "png")
    assert hashed_on_loop == [False]


# Run in a fresh interpreter: only there are the model libraries not imported yet.
IMPORTS_ON_THE_LOOP = """
import asyncio, json, sys
from types import SimpleNamespace

on_loop = set()

def watch(event, args):
    if event == "import" and args[0].split(".")[0] in {libraries!r}:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        on_loop.add(args[0].split(".")[0])

sys.addaudithook(watch)
from bot.config import load_settings
from bot.generation.worker import load_generator

settings = load_settings(_env_file=None, data_dir=sys.argv[2],
                         generator={{"model": sys.argv[1], "device": "cpu"}})
generator = asyncio.run(load_generator(SimpleNamespace(settings=settings)))
print(json.dumps({{"on_loop": sorted(on_loop), "loaded": generator.version}}))
"""


async def test_a_starting_worker_imports_no_model_library_on_the_event_loop(
    tiny_model: Path, tmp_path: Path
) -> None:
    code = IMPORTS_ON_THE_LOOP.format(libraries=set(MODEL_LIBRARIES))
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code, str(tiny_model), str(tmp_path / "data")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert outcome["loaded"] == str(tiny_model)  # the pipeline did load, in a thread
    assert outcome["on_loop"] == []
