"""Which generated images teach the generator: HPS-confident positives and negatives.

For each prompt group (>= ``min_group`` images) the HPS scores are centred on their mean;
the best image is a positive when its softmax probability exceeds alpha/n, the worst a
negative when its probability under the softmax of the negated scores exceeds alpha/n
(alpha = 2: twice what a uniform guess would give it). Near-blank images (the largest
difference between neighbouring pixels below a threshold: a blacked-out or flat image)
never take part. The selection is written as JSON Lines, so it can be read and reused.

People can also say it directly: a set voted "None are good" (and neither picked nor
tied by anyone else) gives every one of its images as a negative (``source``
"none_vote"), without asking HPS; such sets are not in the HPS pool. Each negative
records its source, so a run can say how many came from each.
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

from training.data import VOTES, Example, Split, read_preferences

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# Where a selected image comes from: HPS's confident best and worst, or a "None are
# good" vote.
HPS, NONE_VOTE = "hps", "none_vote"
SOURCES = (HPS, NONE_VOTE)


@dataclass(frozen=True)
class Group:
    prompt: str
    images: tuple[Path, ...]


@dataclass(frozen=True)
class Selected:
    prompt: str
    file: str
    label: str  # "positive" or "negative"
    confidence: float  # its softmax probability in its group (1 for a "none" vote)
    score: float  # its HPS
    source: str = HPS  # HPS or NONE_VOTE (manifests from before it: HPS)


@dataclass
class Pool:
    """An export's images, once per set: the sets HPS selects from, and those people
    voted "None are good" (and nobody picked or tied)."""

    groups: list[Group]
    rejected: list[Group]


def pool_from_export(data: Path, split: Split = "train") -> list[Group]:
    """Every image of the export's split, picked or not, grouped by set (see
    :func:`sets_from_export`; "None are good" sets are not in it)."""
    return sets_from_export(data, split).groups


#: A "None are good" set becomes negatives only when one of its voters is at least this
#: likely careful (``rater_weight``): a rater whose control sets and agreement mark them
#: a random clicker does not get to reject images. Below it, HPS judges the set.
MIN_NONE_WEIGHT = 0.5


def sets_from_export(data: Path, split: Split = "train") -> Pool:
    """The export's sets, each once however many voted on it (control sets left out):
    a set is "rejected" when someone voted "None are good", nobody picked or tied, and
    a voter's reliability weight is at least :data:`MIN_NONE_WEIGHT`."""
    examples = read_preferences(data, split, votes=VOTES).examples
    sets: dict[object, list[Example]] = defaultdict(list)
    for example in examples:
        sets[example.set_key].append(example)
    pool = Pool([], [])
    for votes in sets.values():
        first = votes[0]
        rejected = (
            all(e.vote == "none" for e in votes) and max(e.weight for e in votes) >= MIN_NONE_WEIGHT
        )
        (pool.rejected if rejected else pool.groups).append(Group(first.prompt, first.images))
    return pool


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


def rejected_negatives(
    scorer: Any, rejected: Iterable[Group], *, blank_threshold: float = 8.0
) -> list[Selected]:
    """Every (non-blank) image of the sets people voted "None are good", as negatives;
    each keeps its HPS for the record."""
    groups = []
    for group in rejected:
        kept = tuple(p for p in group.images if not is_blank(p, blank_threshold))
        if kept:
            groups.append(Group(group.prompt, kept))
    scored = scorer.score_groups([(g.prompt, list(g.images)) for g in groups]) if groups else []
    return [
        Selected(group.prompt, str(image), "negative", 1.0, float(score), NONE_VOTE)
        for group, scores in zip(groups, scored, strict=True)
        for image, score in zip(group.images, scores, strict=True)
    ]


def negatives_by_source(selection: Iterable[Selected]) -> dict[str, int]:
    """How many negatives came from each source."""
    counts = dict.fromkeys(SOURCES, 0)
    for item in selection:
        if item.label == "negative":
            counts[item.source] = counts.get(item.source, 0) + 1
    return counts


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
