"""What the benchmarks share: a scratch database on the server they measure."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from bot.db import migrate
from tests.support.database import fresh_database


def server_url() -> str:
    """PREFLOOP_BENCH_DATABASE_URL, else the test server, else the embedded one."""
    for name in ("PREFLOOP_BENCH_DATABASE_URL", "PREFLOOP_TEST_DATABASE_URL"):
        if os.environ.get(name):
            return os.environ[name]
    import tempfile
    from pathlib import Path

    from bot.db.embedded import pgserver_module

    folder = Path(tempfile.mkdtemp(prefix="prefloop-bench-")) / "pg"
    return pgserver_module().get_server(folder, cleanup_mode="delete").get_uri("postgres")


@contextmanager
def scratch_database() -> Iterator[tuple[str, str]]:
    """(server URL, URL of a fresh migrated database) for one benchmark run."""
    server = server_url()
    with fresh_database(server) as url:
        migrate.upgrade(url)
        yield server, url


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


class LoopStalls:
    """How late the event loop runs: a task that asks to wake every ``period`` seconds
    records how much later than asked it woke (a stall of the loop, whatever the cause:
    work on the loop, or another thread holding the GIL)."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []  # (loop time woken, seconds late)

    async def run(self) -> None:
        """Sample until cancelled."""
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period
            await asyncio.sleep(self.period)
            woke = loop.time()
            self.samples.append((woke, max(0.0, woke - due)))

    def worst(self, start: float, end: float) -> float:
        """The longest stall (seconds) that ended between loop times ``start`` and ``end``."""
        return max((late for woke, late in self.samples if start <= woke <= end), default=0.0)


def random_lora(model: str, folder: str) -> None:
    """Save a LoRA adapter with random weights for ``model`` (a diffusers folder) into
    ``folder``, in the format `prefloop train adapt` writes, negative prompt included."""
    from pathlib import Path

    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from training.run_folder import write_info

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    pipe.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=targets)
    )
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    write_info(Path(folder), {"negative_prompt": "Weird image."})
