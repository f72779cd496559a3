"""How fast prefloop scores images, against the habits of the HPS code bases and the floor.

A randomly initialised ViT-B-32 on the CPU, 4 images (224 px, decoded PIL images) per
prompt. Compared, as images/s and as a ratio to (b):
  (a) one image per call, reloading the checkpoint every call (as `hpsv2.score` does);
  (b) batches of images, each image's prompt encoded again with it (HPS v1's script);
  prefloop's HPSScorer (model loaded once, each prompt encoded once, shared batches);
  the floor: the bare model forward on already-preprocessed images, each prompt once.
Then what beats the floor on this machine (bf16 autocast, torch.compile) and how far its
scores move from fp32's. Goal: prefloop within 10% of the floor, >= 2.5x (a).

    python -m bench.score [--prompts 16] [--batch 16] [--repeats 3] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from training.hps import HPSScorer
from training.hps.model import load_clip, random_clip, save_checkpoint


def timed(run, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also try torch.compile")
    args = parser.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="prefloop-bench-score-"))
    folder = save_checkpoint(random_clip(args.arch), work / "model", {"base": args.arch})
    clip = load_clip(str(folder))
    model, preprocess, tokenizer = clip.model, clip.preprocess, clip.tokenizer
    generator = torch.Generator().manual_seed(1)
    groups = [
        (
            f"prompt number {p}: a {['red', 'blue', 'green', 'grey'][p % 4]} thing",
            [
                Image.fromarray((torch.rand(224, 224, 3, generator=generator) * 255).byte().numpy())
                for _ in range(4)
            ],
        )
        for p in range(args.prompts)
    ]
    n_images = 4 * len(groups)

    def per_call_reload(limit: int) -> list[float]:
        scores = []
        for prompt, images in groups[:limit]:
            for image in images:
                fresh = load_clip(str(folder))  # what hpsv2.score does on every call
                with torch.no_grad():
                    i = fresh.model.encode_image(fresh.preprocess(image)[None])
                    t = fresh.model.encode_text(fresh.tokenizer([prompt]))
                scores.append(float(100 * torch.nn.functional.cosine_similarity(i, t)))
        return scores

    def text_per_image() -> list[float]:
        pairs = [(prompt, image) for prompt, images in groups for image in images]
        scores = []
        with torch.no_grad():
            for start in range(0, len(pairs), args.batch):
                chunk = pairs[start : start + args.batch]
                i = model.encode_image(torch.stack([preprocess(im) for _, im in chunk]))
                t = model.encode_text(tokenizer([p for p, _ in chunk]))
                scores += (100 * torch.nn.functional.cosine_similarity(i, t)).tolist()
        return scores

    scorer = HPSScorer(clip, batch_size=args.batch)

    def prefloop() -> list[float]:
        return [s for row in scorer.score_groups(groups) for s in row]

    pixels = [torch.stack([preprocess(im) for im in images]) for _, images in groups]
    flat = torch.cat(pixels)

    def floor(net=model, autocast: torch.dtype | None = None) -> list[float]:
        context = torch.autocast("cpu", dtype=autocast) if autocast else torch.no_grad()
        with torch.no_grad(), context:
            texts = net.encode_text(tokenizer([p for p, _ in groups])).float()
            images = torch.cat(
                [
                    net.encode_image(flat[s : s + args.batch]).float()
                    for s in range(0, n_images, args.batch)
                ]
            )
        texts = texts.repeat_interleave(4, dim=0)
        return (100 * torch.nn.functional.cosine_similarity(images, texts)).tolist()

    limit = max(1, min(2, len(groups)))  # reloading is slow: time 2 prompts and scale
    reload_s, _ = timed(lambda: per_call_reload(limit), 1)
    reload_rate = 4 * limit / reload_s
    b_s, b_scores = timed(text_per_image, args.repeats)
    ours_s, ours = timed(prefloop, args.repeats)
    floor_s, floor_scores = timed(floor, args.repeats)
    b_rate, ours_rate, floor_rate = n_images / b_s, n_images / ours_s, n_images / floor_s
    agree = max(abs(x - y) for x, y in zip(ours, b_scores, strict=True))
    threads = torch.get_num_threads()
    print(
        f"{args.arch}, random weights, CPU, {threads} threads; {len(groups)} prompts x 4 "
        f"images, batch {args.batch}, median of {args.repeats}"
    )
    rows = [
        ("(a) per image, reload each call", reload_rate),
        ("(b) batched, prompt per image", b_rate),
        ("prefloop HPSScorer", ours_rate),
        ("floor: bare forward, prompt once", floor_rate),
    ]
    for name, rate in rows:
        print(f"  {name:<36} {rate:8.1f} images/s  {rate / b_rate:5.2f}x (b)")
    print(
        f"  prefloop / floor {ours_rate / floor_rate:.2f}; prefloop / (a) "
        f"{ours_rate / reload_rate:.1f}x; max |score difference| vs (b) {agree:.2e}"
    )

    bf16_s, bf16_scores = timed(lambda: floor(autocast=torch.bfloat16), args.repeats)
    drift = max(abs(x - y) for x, y in zip(bf16_scores, floor_scores, strict=True))
    print(
        f"  floor under bf16 autocast: {n_images / bf16_s:8.1f} images/s "
        f"({floor_s / bf16_s:.2f}x fp32), max |score difference| {drift:.3f}"
    )
    if args.compile:
        compiled = torch.compile(model)
        floor(compiled)  # compile once
        c_s, c_scores = timed(lambda: floor(compiled), args.repeats)
        drift = max(abs(x - y) for x, y in zip(c_scores, floor_scores, strict=True))
        print(
            f"  floor, torch.compile:      {n_images / c_s:8.1f} images/s "
            f"({floor_s / c_s:.2f}x eager), max |score difference| {drift:.2e}"
        )


if __name__ == "__main__":
    main()
