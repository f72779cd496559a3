"""How fast, and in how little memory, the picks become an HPS-layout dataset.

100,000 synthetic picks (one per generation, by the member who asked) over 400,000 small
PNG files in a local store -> `prefloop export OUT` as an admin runs it, in a child
process. Prints instances/s (export time, and wall time with start-up) and the child's
peak RSS; goal >= 5,000 instances/s and peak RSS <= 300 MB. A first export of a tenth of
the picks shows that memory does not grow with the export's size.

    python -m bench.export [--picks 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import scratch_database
from tests.support.synthetic import seed_picks


def export_once(url: str, data: Path, out: Path) -> dict[str, float]:
    """Run `prefloop export` in a child; its export seconds, wall seconds and peak RSS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLOOP_")}
    env |= {
        "PREFLOOP_DATABASE_URL": url,
        "PREFLOOP_DATA_DIR": str(data),
        "PREFLOOP_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
    }
    # Measure in a grandchild so that each export's peak is its own (RUSAGE_CHILDREN
    # keeps the maximum over all children ever waited for).
    probe = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(r.stdout + r.stderr); "
        "print('maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.exit(r.returncode)"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "bot.cli", "export", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(result.stdout + result.stderr)
    manifest = json.loads((out / "manifest.json").read_text())
    seconds = float(re.search(r" in ([\d.]+) s", result.stdout).group(1))
    rss_kb = int(re.search(r"maxrss_kb (\d+)", result.stdout).group(1))
    instances = sum(manifest["counts"]["instances"].values())
    return {
        "instances": instances,
        "images": manifest["counts"]["images"],
        "export_s": seconds,
        "wall_s": wall,
        "per_s": instances / seconds,
        "per_s_wall": instances / wall,
        "rss_mb": rss_kb / 1024,
        "linked": manifest["counts"]["images_linked"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=100_000)
    args = parser.parse_args()
    first = max(1, args.picks // 10)
    work = Path(tempfile.mkdtemp(prefix="prefloop-bench-export-"))
    try:
        with scratch_database() as (_, url):
            data = work / "data"
            store = data / "store"
            print(f"seeding {first:,} picks over {first * 4:,} image files …", flush=True)
            started = time.perf_counter()
            seed_picks(url, store, picks=first, members=2_000)
            small = export_once(url, data, work / "small")
            rest = args.picks - first
            print(f"seeding {rest:,} more picks over {rest * 4:,} image files …", flush=True)
            seed_picks(url, store, picks=rest, members=2_000, start=first)
            print(f"(seeding took {time.perf_counter() - started:.0f} s)")
            large = export_once(url, data, work / "large")
        for name, run in (("small", small), ("full", large)):
            print(
                f"{name:>5}: {run['instances']:>7,.0f} instances, {run['images']:>7,.0f} images "
                f"({run['linked']:,.0f} hard-linked) in {run['export_s']:.1f} s: "
                f"{run['per_s']:,.0f} instances/s ({run['per_s_wall']:,.0f}/s with start-up, "
                f"{run['wall_s']:.1f} s wall); peak RSS {run['rss_mb']:.0f} MB"
            )
        growth = large["rss_mb"] - small["rss_mb"]
        times = large["instances"] / small["instances"]
        print(
            f"goal >= 5,000 instances/s: {large['per_s']:,.0f}; "
            f"goal peak RSS <= 300 MB: {large['rss_mb']:.0f} MB "
            f"({growth:+.0f} MB for {times:.0f}x the picks)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
