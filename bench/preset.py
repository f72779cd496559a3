"""How long the tiny preset takes to build, idle and with both cores busy.

Every test run and offline demo starts from the tiny generator preset, so its build is
on the path of a fresh `make test` (goal: <= 60 s on two cores). Each build runs in a
child process into an empty cache, as on a fresh machine; printed: the median wall time
of the whole build (imports, the conditioning probe and saving included) and of its
three training stages (the tiny CLIP, the VAE, the UNet), with
one torch thread (what the build uses) and with two. `--busy` adds two processes that
keep both cores busy meanwhile, as other work on a shared machine would.

    python -m bench.preset [--runs 3] [--threads 1 2] [--busy]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.common import median

CHILD = """
import json, sys, time
started = time.perf_counter()
import training.presets as presets
presets.BUILD_THREADS = int(sys.argv[1])
marks = {}
def progress(stage, done, total):
    marks.setdefault(stage, time.perf_counter())
    marks[stage + " end"] = time.perf_counter()
folder = presets.save_preset("tiny", presets.preset_cache() / "tiny", progress)
ended = time.perf_counter()
import hashlib
weights = sorted(folder.glob("*/*.safetensors"))
digest = hashlib.sha256(b"".join(p.read_bytes() for p in weights)).hexdigest()[:16]
print(json.dumps({"total": ended - started, "weights": digest, **{s: marks[s + " end"] - marks[s]
                  for s in ("clip", "vae", "unet")}}))
"""


def build_once(threads: int) -> dict[str, Any]:
    """One build in a fresh process and an empty cache; seconds per part and a digest of
    every weight file (the same on every build: the build is deterministic for its seed)."""
    import os

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PREFLOOP_PRESET_CACHE": cache}
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(threads)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main(args: argparse.Namespace) -> None:
    busy: list[multiprocessing.Process] = []
    if args.busy:
        busy = [
            multiprocessing.Process(target=spin, args=(24 * 3600,), daemon=True) for _ in range(2)
        ]
        for process in busy:
            process.start()
    try:
        for threads in args.threads:
            runs = [build_once(threads) for _ in range(args.runs)]
            parts = {k: median([r[k] for r in runs]) for k in ("total", "clip", "vae", "unet")}
            digests = {r["weights"] for r in runs}
            print(
                f"tiny preset build, {threads} torch thread(s)"
                f"{', both cores busy' if args.busy else ''}, median of {args.runs}: "
                f"{parts['total']:.1f} s (CLIP {parts['clip']:.1f} s, VAE {parts['vae']:.1f} s, "
                f"UNet {parts['unet']:.1f} s)"
                + ("  (goal <= 60 s)" if not args.busy else "")
                + f"; weights {'identical in every build' if len(digests) == 1 else 'DIFFER'}"
                + f" ({', '.join(sorted(digests))})"
            )
    finally:
        for process in busy:
            process.terminate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--busy", action="store_true")
    main(parser.parse_args())
