"""A synthetic preference dataset, in the export layout, with a rule a model can learn.

Each prompt names a colour; each instance has 2-4 images, each mostly one colour, and
the picked image is the one in the prompt's colour. Random guessing gets the mean of 1/k.
The colours go by names the tiny CLIP never saw while it was pretrained (its world says
"red", not "crimson"), so the plain CLIP cannot know the rule: HPS must learn it from the
picks, as a real HPS learns people's taste that CLIP does not know.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

COLOURS = {
    "crimson": (220, 30, 30),
    "jade": (30, 200, 40),
    "azure": (30, 60, 230),
    "amber": (235, 220, 30),
    "violet": (150, 40, 200),
    "ivory": (240, 240, 240),
}
THINGS = ["square", "cat", "house", "car", "flower", "boat", "tree", "cup", "bird", "lamp"]


def _image(rgb: tuple[int, int, int], rng: random.Random, path: Path) -> None:
    image = Image.new("RGB", (32, 32), rgb)
    pixels = image.load()
    for _ in range(120):  # some noise, so no two images are alike
        x, y = rng.randrange(32), rng.randrange(32)
        pixels[x, y] = tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in rgb)
    image.save(path)


def colour_dataset(folder: Path, *, train: int, test: int, seed: int = 0) -> Path:
    """Write ``train`` + ``test`` instances; test prompts never appear in train."""
    rng = random.Random(seed)
    images = folder / "preference_images"
    images.mkdir(parents=True, exist_ok=True)
    prompts = [f"a {c} {t}" for c in COLOURS for t in THINGS]
    rng.shuffle(prompts)
    held_out = set(prompts[: len(prompts) // 4])
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    next_id = 0
    while len(splits["train"]) < train or len(splits["test"]) < test:
        prompt = rng.choice(prompts)
        split = "test" if prompt in held_out else "train"
        if len(splits[split]) >= (test if split == "test" else train):
            continue
        colour = prompt.split()[1]
        k = rng.randint(2, 4)
        others = rng.sample([c for c in COLOURS if c != colour], k - 1)
        chosen = rng.randrange(k)
        shown = [*others[:chosen], colour, *others[chosen:]]
        names = []
        for position, name in enumerate(shown):
            file = f"{next_id}_{position}.png"
            _image(COLOURS[name], rng, images / file)
            names.append(file)
        entry = {"id": next_id, "prompt": prompt, "file_path": names, "human_preference": chosen}
        splits[split].append({**entry, "user_hash": "u", "contain_name": False})
        next_id += 1
    for split, entries in splits.items():
        (folder / f"preference_{split}.json").write_text(json.dumps(entries))
    return folder
