"""How fast the HPS fit runs, and in how much memory.

Two fits, each in a child process so that its peak memory is its own:
  tiny: the preset with its own defaults (what `prefloop train hps --base tiny` runs);
  ViT-B-32 (random weights): the paper's recipe (last 10 vision and 6 text blocks,
    batch 5) on 224 px inputs, a few steps.
Prints instances/s (optimizer steps x batch over wall time of the steps), seconds per
step and peak RSS; on a GPU also peak GPU memory. Any open_clip architecture is a case,
built with random weights (nothing to download): the paper's HPS is ViT-L-14 (OpenAI's
weights use its QuickGELU variant, ViT-L-14-quickgelu, which costs the same). On a GPU
machine, the paper's setting (its instances have 4 images, 3.9 on average):

    python -m bench.fit --case ViT-L-14 --device cuda --mixed-precision bf16 \
        --instances 200 --images-per-instance 4

The synthetic images are 32x32 PNGs (resized to 224 px like any other): decoding the
release's 512 px JPEGs adds time this does not measure.

    python -m bench.fit [--case tiny|ViT-B-32|ViT-L-14 …] [--instances 40]
        [--images-per-instance 2|3|4] [--device D] [--mixed-precision P]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def dataset(work: Path, instances: int, per_instance: int | None) -> Path:
    """The synthetic colour data (2-4 images an instance), or only its instances of
    ``per_instance`` images."""
    from tests.support.colours import colour_dataset

    if per_instance is None:
        return colour_dataset(work / "ds", train=instances, test=1)
    # The synthetic data draws 2, 3 or 4 images evenly: draw enough, keep those of k.
    data = colour_dataset(work / "ds", train=instances * 6 + 30, test=1)
    listing = data / "preference_train.json"
    kept = [e for e in json.loads(listing.read_text()) if len(e["file_path"]) == per_instance]
    if len(kept) < instances:
        raise SystemExit(f"only {len(kept)} synthetic instances have {per_instance} images")
    listing.write_text(json.dumps(kept[:instances]))
    return data


def child(
    case: str, instances: int, device: str, precision: str, per_instance: int | None
) -> dict[str, float]:
    # A scratch folder removed afterwards: a ViT-L-14 checkpoint is 1.7 GB.
    with tempfile.TemporaryDirectory(prefix="prefloop-bench-fit-") as folder:
        return fit_once(Path(folder), case, instances, device, precision, per_instance)


def fit_once(
    work: Path, case: str, instances: int, device: str, precision: str, per_instance: int | None
) -> dict[str, float]:
    import torch

    from training.data import read_preferences
    from training.hps.fit import FitConfig, fit_hps
    from training.hps.model import random_clip, save_checkpoint
    from training.run_folder import read_info

    data = dataset(work, instances, per_instance)
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
        "seconds_per_step": info["metrics"]["seconds"] / steps,
        "images": sum(len(e.images) for e in train) / len(train),
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
    parser.add_argument(
        "--images-per-instance",
        type=int,
        choices=[2, 3, 4],
        default=None,
        help="only instances of this many images (default: 2-4, evenly)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--mixed-precision", default="auto", help="auto, no, fp16 or bf16")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = args.case or ["tiny", "ViT-B-32"]
    per_instance = args.images_per_instance
    if args.child:
        result = child(cases[0], args.instances, args.device, args.mixed_precision, per_instance)
        print(json.dumps(result))
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
                *(["--images-per-instance", str(per_instance)] if per_instance else []),
            ],
            capture_output=True,
            text=True,
        )
        if run.returncode:
            raise SystemExit(run.stderr[-3000:])
        r = json.loads(run.stdout.strip().splitlines()[-1])
        gpu = f", peak GPU memory {r['gpu_peak_gb']:.1f} GiB" if "gpu_peak_gb" in r else ""
        print(
            f"{case:>10}: {r['instances_per_s']:7.2f} instances/s, {r['seconds_per_step']:.2f} "
            f"s/step ({r['steps']} steps of {r['batch']} instances, {r['images']:.1f} images "
            f"each; {r['trainable'] / 1e6:.1f}M trainable parameters); peak RSS "
            f"{r['rss_mb']:.0f} MB{gpu}"
        )


if __name__ == "__main__":
    main()
