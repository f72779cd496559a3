"""How fast the HPS fit runs, and in how much memory.

Two fits, each in a child process so that its peak memory is its own:
  tiny: the preset with its own defaults (what `prefloop train hps --base tiny` runs);
  ViT-B-32 (random weights): the paper's recipe (last 10 vision and 6 text blocks,
    batch 5) on 224 px inputs, a few steps.
Prints instances/s (optimizer steps x batch over wall time of the steps) and peak RSS;
on a GPU also peak GPU memory. On a GPU machine: python -m bench.fit --case ViT-L-14
--device cuda --mixed-precision bf16 (random ViT-L-14, nothing to download).

    python -m bench.fit [--case tiny|ViT-B-32|ViT-L-14 …] [--instances 40]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def child(case: str, instances: int, device: str, precision: str) -> dict[str, float]:
    import torch

    from tests.support.colours import colour_dataset
    from training.data import read_preferences
    from training.hps.fit import FitConfig, fit_hps
    from training.hps.model import random_clip, save_checkpoint
    from training.run_folder import read_info

    work = Path(tempfile.mkdtemp(prefix="prefloop-bench-fit-"))
    data = colour_dataset(work / "ds", train=instances, test=1)
    train = read_preferences(data, "train")
    if case == "tiny":
        config = FitConfig(
            out=work / "out",
            base="tiny",
            cache_dir=work,
            device=device,
            mixed_precision=precision,
            epochs=2.0,
        )
    else:
        base = save_checkpoint(random_clip(case), work / "base", {"base": case})
        config = FitConfig(
            out=work / "out", base=str(base), device=device, mixed_precision=precision, epochs=1.0
        )
    out = fit_hps(config, train)
    info = read_info(out)
    steps = info["metrics"]["steps"]
    batch = info["hyperparameters"]["batch_size"]
    result = {
        "instances_per_s": steps * batch / info["metrics"]["seconds"],
        "steps": steps,
        "batch": batch,
        "trainable": info["metrics"]["trainable_parameters"],
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if torch.cuda.is_available():
        result["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", help="tiny, or an open_clip architecture")
    parser.add_argument("--instances", type=int, default=40)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mixed-precision", default="auto")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = args.case or ["tiny", "ViT-B-32"]
    if args.child:
        print(json.dumps(child(cases[0], args.instances, args.device, args.mixed_precision)))
        return
    for case in cases:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.fit",
                "--child",
                "--case",
                case,
                "--instances",
                str(args.instances),
                "--device",
                args.device,
                "--mixed-precision",
                args.mixed_precision,
            ],
            capture_output=True,
            text=True,
        )
        if run.returncode:
            raise SystemExit(run.stderr[-3000:])
        r = json.loads(run.stdout.strip().splitlines()[-1])
        gpu = f", peak GPU memory {r['gpu_peak_gb']:.1f} GiB" if "gpu_peak_gb" in r else ""
        print(
            f"{case:>10}: {r['instances_per_s']:7.2f} instances/s ({r['steps']} steps of "
            f"{r['batch']}, {r['trainable'] / 1e6:.1f}M trainable parameters); peak RSS "
            f"{r['rss_mb']:.0f} MB{gpu}"
        )


if __name__ == "__main__":
    main()
