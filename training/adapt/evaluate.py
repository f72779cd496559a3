"""Is the adapted generator better? Base and adapted on the same held-out prompts and seeds.

Every prompt gets the same seeds under both generators; HPS scores every image. The
adapted generator wins a prompt when its images' mean HPS is above the base's (a tie
counts half). Reported: the win rate over prompts, the mean HPS difference with a
bootstrap 95% interval, and a side-by-side grid of a few prompts. For scale: in the
paper's user study the adapted model won on 74% of prompts against 22% for the original.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.hps.evaluate import bootstrap_interval


@dataclass
class AdaptEvaluation:
    prompts: int
    seeds_per_prompt: int
    win_rate: float
    mean_difference: float
    difference_ci: tuple[float, float]
    base_mean: float
    adapted_mean: float
    per_prompt: list[dict[str, Any]] = field(default_factory=list)


def evaluate_adapter(
    base: Any,
    adapted: Any,
    scorer: Any,
    prompts: Sequence[str],
    *,
    seeds_per_prompt: int = 4,
    seed: int = 0,
    steps: int = 30,
    guidance: float = 7.5,
    grid: int = 4,
    bootstrap: int = 1000,
) -> tuple[AdaptEvaluation, list[tuple[str, list[Any], list[Any]]]]:
    """(the evaluation, [(prompt, base images, adapted images)] for the first ``grid``)."""
    rows, shown = [], []
    for i, prompt in enumerate(prompts):
        seeds = [seed * 1_000_003 + i * seeds_per_prompt + k for k in range(seeds_per_prompt)]
        made = [
            g.generate(prompt, seeds, steps=steps, guidance=guidance).images
            for g in (base, adapted)
        ]
        old, new = scorer.score_groups([(prompt, made[0]), (prompt, made[1])])
        old_mean, new_mean = sum(old) / len(old), sum(new) / len(new)
        win = 1.0 if new_mean > old_mean else 0.5 if new_mean == old_mean else 0.0
        rows.append(
            {"prompt": prompt, "seeds": seeds, "base": old_mean, "adapted": new_mean, "win": win}
        )
        if i < grid:
            shown.append((prompt, made[0], made[1]))
    differences = [r["adapted"] - r["base"] for r in rows]
    n = len(rows)
    evaluation = AdaptEvaluation(
        prompts=n,
        seeds_per_prompt=seeds_per_prompt,
        win_rate=sum(r["win"] for r in rows) / n,
        mean_difference=sum(differences) / n,
        difference_ci=bootstrap_interval(differences, bootstrap, seed),
        base_mean=sum(r["base"] for r in rows) / n,
        adapted_mean=sum(r["adapted"] for r in rows) / n,
        per_prompt=rows,
    )
    return evaluation, shown


def write_adapt_report(
    out: Path,
    evaluation: AdaptEvaluation,
    shown: Sequence[tuple[str, list[Any], list[Any]]],
    *,
    description: str = "",
    title: str = "Adapted generator vs base",
) -> Path:
    """metrics.json, report.md and grid.png (base, or what it is compared with, on the
    left; adapted on the right)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(asdict(evaluation), indent=2))
    low, high = evaluation.difference_ci
    lines = [
        f"# {title}",
        "",
        description,
        "",
        f"- prompts: {evaluation.prompts}, {evaluation.seeds_per_prompt} seeds each, "
        "the same seeds for both",
        f"- win rate of the adapted generator: {evaluation.win_rate:.1%}",
        f"- mean HPS: base {evaluation.base_mean:.3f}, adapted {evaluation.adapted_mean:.3f}; "
        f"difference {evaluation.mean_difference:+.3f} (95% CI {low:+.3f} to {high:+.3f})",
        "",
        "For scale: in the paper's user study the adapted model won on 74% of prompts "
        "against 22% for the original.",
        "",
        "![base (left) and adapted (right)](grid.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    if shown:
        _grid(shown).save(out / "grid.png")
    return out


def _grid(shown: Sequence[tuple[str, list[Any], list[Any]]]) -> Any:
    from PIL import Image, ImageDraw

    side = 128
    label = 16
    columns = max(len(b) + len(a) for _, b, a in shown)
    sheet = Image.new("RGB", (columns * side + side // 4, len(shown) * (side + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (prompt, base, adapted) in enumerate(shown):
        top = row * (side + label)
        draw.text((2, top + 2), f"{prompt[:90]}  (base | adapted)", fill="black")
        for k, image in enumerate([*base, *adapted]):
            left = k * side + (side // 4 if k >= len(base) else 0)
            sheet.paste(image.convert("RGB").resize((side, side)), (left, top + label))
    return sheet
