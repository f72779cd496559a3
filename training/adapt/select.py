"""Which generated images teach the generator: HPS-confident positives and negatives.

For each prompt group (>= ``min_group`` images) the HPS scores are centred on their mean;
the best image is a positive when its softmax probability exceeds alpha/n, the worst a
negative when its probability under the softmax of the negated scores exceeds alpha/n
(alpha = 2: twice what a uniform guess would give it). Near-blank images (the largest
difference between neighbouring pixels below a threshold: a blacked-out or flat image)
never take part. The selection is written as JSON Lines, so it can be read and reused.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.data import Split, read_preferences

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Group:
    prompt: str
    images: tuple[Path, ...]


@dataclass(frozen=True)
class Selected:
    prompt: str
    file: str
    label: str  # "positive" or "negative"
    confidence: float  # its softmax probability in its group
    score: float  # its HPS


def pool_from_export(data: Path, split: Split = "train") -> list[Group]:
    """Every image of the export's split, picked or not, grouped by instance."""
    examples = read_preferences(data, split).examples
    return [Group(e.prompt, e.images) for e in examples]


def pool_from_folder(folder: Path) -> list[Group]:
    """Extra prompt/image pairs: each image ``x.png`` with its prompt in ``x.txt``;
    images with the same prompt form one group."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for image in sorted(Path(folder).iterdir()):
        caption = image.with_suffix(".txt")
        if image.suffix.lower() in IMAGE_SUFFIXES and caption.is_file():
            groups[caption.read_text("utf-8").strip()].append(image)
    return [Group(prompt, tuple(images)) for prompt, images in groups.items() if prompt]


def is_blank(image: Any, threshold: float = 8.0) -> bool:
    """True when no two neighbouring pixels differ by ``threshold`` (of 255) or more."""
    import numpy as np
    from PIL import Image

    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    across = np.abs(np.diff(pixels, axis=1)).max(initial=0)
    down = np.abs(np.diff(pixels, axis=0)).max(initial=0)
    return max(across, down) < threshold


def _softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def select_group(
    scores: Sequence[float], alpha: float = 2.0
) -> tuple[tuple[int, float] | None, tuple[int, float] | None]:
    """((positive index, probability) or None, (negative index, probability) or None)."""
    n = len(scores)
    mean = sum(scores) / n
    centred = [s - mean for s in scores]
    up, down = _softmax(centred), _softmax([-c for c in centred])
    best = max(range(n), key=up.__getitem__)
    worst = max(range(n), key=down.__getitem__)
    positive = (best, up[best]) if up[best] > alpha / n else None
    negative = (worst, down[worst]) if down[worst] > alpha / n and worst != best else None
    return positive, negative


def select(
    scorer: Any,
    pool: Iterable[Group],
    *,
    alpha: float = 2.0,
    min_group: int = 2,
    blank_threshold: float = 8.0,
    groups_per_call: int = 32,
) -> list[Selected]:
    """Score the pool with ``scorer`` (an HPSScorer or anything with ``score_groups``)."""
    usable = []
    for group in pool:
        kept = tuple(p for p in group.images if not is_blank(p, blank_threshold))
        if len(kept) >= min_group:
            usable.append(Group(group.prompt, kept))
    chosen: list[Selected] = []
    for start in range(0, len(usable), groups_per_call):
        chunk = usable[start : start + groups_per_call]
        scored = scorer.score_groups([(g.prompt, list(g.images)) for g in chunk])
        for group, scores in zip(chunk, scored, strict=True):
            positive, negative = select_group(scores, alpha)
            for found, label in ((positive, "positive"), (negative, "negative")):
                if found is not None:
                    index, confidence = found
                    chosen.append(
                        Selected(
                            group.prompt,
                            str(group.images[index]),
                            label,
                            confidence,
                            float(scores[index]),
                        )
                    )
    return chosen


def write_manifest(selection: Sequence[Selected], path: Path) -> str:
    """Write the selection as JSON Lines; return its sha256 (recorded with the adapter)."""
    text = "".join(json.dumps(asdict(s), ensure_ascii=False) + "\n" for s in selection)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(path: Path) -> list[Selected]:
    entries = []
    for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                entries.append(Selected(**json.loads(line)))
            except (ValueError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a selection entry ({error})") from None
    return entries
