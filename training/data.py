"""Readers for preference datasets: prefloop exports, the public HPS v1 release, HPD v2.

All three become :class:`Example` s: a prompt, its 2-4 image files and the index of the
one a person chose (prefloop exports also hold ties, "none are good" votes and control
sets: see :func:`read_preferences` for which are read). Accepted inputs:

- a folder in the HPS v1 release layout (what ``prefloop export`` writes):
  ``preference_{train,test}.json`` with images under ``preference_images/``. A
  ``file_path`` entry may carry that folder (``"preference_images/2_0.jpg"``, as the
  release and prefloop write) or not (``"2_0.jpg"``, as older prefloop exports did);
  ``id`` may be an int (the release) or a string (prefloop's keyed ids): it becomes a
  string either way;
- a folder or file of HPD v2 (HPSv2's data): ``train.json`` whose ``human_preference`` is
  a list with one score per image (the highest is the chosen one), images in ``train/``;
- any single JSON file holding such a list.

A malformed entry is reported with its id and skipped; ``strict=True`` refuses the
whole file instead. No database or Discord code here: this is what researchers run.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args

log = logging.getLogger(__name__)

Split = Literal["train", "test", "all"]
# What a member said about a set: a favourite image, "No favourite" (the images are
# equally good) or "None are good". The HPS v1 release and HPD v2 hold picks only.
Vote = Literal["pick", "tie", "none"]
VOTES: tuple[Vote, ...] = get_args(Vote)
PICKS: tuple[Vote, ...] = ("pick",)


def is_split(name: str) -> TypeGuard[Split]:
    return name in get_args(Split)


MIN_IMAGES, MAX_IMAGES = 2, 4


@dataclass(frozen=True)
class Example:
    """One instance: a prompt, its images (2-4 files) and the vote on them: the chosen
    one's index for a pick; ``chosen`` is None for a tie or "none are good"."""

    id: str
    prompt: str
    images: tuple[Path, ...]
    chosen: int | None
    user_hash: str | None = None
    split: str = "train"
    # Per image, the generator adapter (a model_versions id; None: the bare base) that
    # made it: prefloop's ``image_adapter_version_ids``. None where the data lacks it
    # (older exports, the public HPS v1 release, HPD v2).
    image_versions: tuple[int | None, ...] | None = None
    # prefloop's extension fields (absent from the public releases: a pick, weight 1, no
    # control): the vote's kind, the rater's reliability weight when the export was made,
    # and, for a control set, how its known answer was made (a ControlKind value).
    vote: Vote = "pick"
    weight: float = 1.0
    control: str | None = None
    # A control set's known answers: the index of the image known to be worse, and of
    # the one known to be best (admin marks only); None where not known.
    control_worse: int | None = None
    control_best: int | None = None
    # The generation's keyed id (prefloop's ``generation_id``): the entries of one set
    # voted on by several members share it. None where the data lacks it.
    generation: str | None = None

    @property
    def set_key(self) -> tuple[object, ...]:
        """What the entries of one set share: its generation where the export names it
        (each voter's entry has files of its own), else its image files."""
        return ("generation", self.generation) if self.generation else self.images

    @property
    def label(self) -> str:
        """What the vote said, as a nominal label: the picked index, "tie" or "none"."""
        return str(self.chosen) if self.vote == "pick" else self.vote

    def open_images(self) -> list[Any]:
        """The images as RGB PIL images."""
        from PIL import Image

        opened = []
        for path in self.images:
            with Image.open(path) as image:
                opened.append(image.convert("RGB"))
        return opened


@dataclass(frozen=True)
class Problem:
    """An entry that could not be read, and why."""

    source: str
    id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: entry {self.id}: {self.reason}"


class DatasetError(ValueError):
    """The dataset cannot be read (or, with strict, has malformed entries)."""


@dataclass
class PreferenceData:
    examples: list[Example] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    # Well-formed entries not asked for: "tie" / "none" votes, "control" sets.
    left_out: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)


def read_preferences(
    path: str | Path,
    split: Split = "train",
    *,
    strict: bool = False,
    check_files: bool = True,
    votes: Iterable[Vote] = PICKS,
    controls: bool = False,
) -> PreferenceData:
    """Read a dataset (a folder or one JSON file) into examples.

    ``split`` picks the file in a folder; ``check_files`` reports entries whose image
    files are missing instead of failing later, in the middle of training. ``votes``
    says which kinds of vote to keep and ``controls`` whether to keep control sets: by
    default picks on ordinary sets only, what every consumer of picks expects; the rest
    are counted in ``left_out``, not reported as problems.
    """
    wanted = set(votes)
    if unknown := wanted - set(VOTES):
        raise ValueError(f"unknown vote kinds {sorted(unknown)}: use {', '.join(VOTES)}")
    data = PreferenceData()
    for source, split_name in _sources(Path(path), split):
        entries = _load_list(source)
        bases = _image_folders(source)
        seen: set[str] = set()
        for position, entry in enumerate(entries):
            found = _example(entry, position, bases, split_name, check_files)
            if isinstance(found, str):
                ident = _ident(entry, position)
                data.problems.append(Problem(source.name, ident, found))
            elif found.id in seen:
                data.problems.append(Problem(source.name, found.id, "duplicate id"))
            else:
                seen.add(found.id)
                if found.control is not None and not controls:
                    data.left_out["control"] += 1
                elif found.vote not in wanted:
                    data.left_out[found.vote] += 1
                else:
                    data.examples.append(found)
        data.sources.append(source)
    if data.problems:
        shown = "\n  ".join(str(p) for p in data.problems[:20])
        more = f"\n  … and {len(data.problems) - 20} more" if len(data.problems) > 20 else ""
        if strict:
            raise DatasetError(
                f"{len(data.problems)} malformed entries in {path}:\n  {shown}{more}"
            )
        log.warning(
            "skipped %d malformed entries in %s:\n  %s%s", len(data.problems), path, shown, more
        )
    return data


def read_train_test(
    path: str | Path, *, strict: bool = False, votes: Iterable[Vote] = PICKS, controls: bool = False
) -> tuple[PreferenceData, PreferenceData | None]:
    """The train split and, when the dataset has one, the test split (else None).

    ``votes`` and ``controls`` choose what the train split keeps (as for
    :func:`read_preferences`); the test split, what models are judged on, always holds
    picks on ordinary sets. A single JSON file is train data only: reading it as "test"
    too would report accuracy on the training instances as held-out accuracy.
    """
    path = Path(path)
    train = read_preferences(path, "train", strict=strict, votes=votes, controls=controls)
    if path.is_file():
        return train, None
    try:
        return train, read_preferences(path, "test", strict=strict)
    except DatasetError:
        log.warning("%s has no test split; nothing is held out", path)
        return train, None


def _sources(path: Path, split: Split) -> list[tuple[Path, str]]:
    splits = ["train", "test"] if split == "all" else [split]
    if path.is_file():
        return [(path, splits[0] if split != "all" else "train")]
    if not path.is_dir():
        raise DatasetError(f"{path} does not exist")
    found = []
    for name in splits:
        for candidate in (path / f"preference_{name}.json", path / f"{name}.json"):
            if candidate.is_file():
                found.append((candidate, name))
                break
        else:
            raise DatasetError(
                f"{path} has no preference_{name}.json (HPS v1 / prefloop) or {name}.json (HPD v2)"
            )
    return found


def _load_list(source: Path) -> list[Any]:
    try:
        with source.open(encoding="utf-8") as file:
            entries = json.load(file)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{source} is not valid JSON: {error}") from None
    except OSError as error:
        raise DatasetError(f"cannot read {source}: {error.strerror}") from None
    if not isinstance(entries, list):
        raise DatasetError(f"{source} holds a JSON {type(entries).__name__}, not a list of entries")
    return entries


def _image_folders(source: Path) -> list[Path]:
    """Where relative file paths may be: preference_images/ (HPS v1), train/ (HPD v2), here."""
    folder = source.parent
    return [folder / "preference_images", folder / source.stem, folder]


def _ident(entry: Any, position: int) -> str:
    if isinstance(entry, dict) and entry.get("id") is not None:
        return str(entry["id"])
    return f"#{position}"


def _example(
    entry: Any, position: int, bases: list[Path], split: str, check_files: bool
) -> Example | str:
    """The example, or why the entry is malformed."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    prompt = entry.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "no prompt"
    files = entry.get("file_path")
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        return "file_path is not a list of file names"
    if not MIN_IMAGES <= len(files) <= MAX_IMAGES:
        return f"has {len(files)} images; an instance needs {MIN_IMAGES} to {MAX_IMAGES}"
    extension = _extension(entry, len(files))
    if isinstance(extension, str):
        return extension
    chosen: int | str | None = None
    if extension["vote"] == "pick":
        chosen = _chosen(entry.get("human_preference"), len(files))
    elif entry.get("human_preference") is not None:
        chosen = f"a {extension['vote']} vote has no human_preference (it has one)"
    if isinstance(chosen, str):
        return chosen
    paths = []
    for name in files:
        path = _resolve(name, bases, check_files)
        if path is None:
            return f"image {name} is missing"
        paths.append(path)
    versions = _versions(entry.get("image_adapter_version_ids"), len(files))
    if isinstance(versions, str):
        return versions
    user_hash = entry.get("user_hash")
    generation = entry.get("generation_id")
    return Example(
        id=_ident(entry, position),
        prompt=prompt,
        images=tuple(paths),
        chosen=chosen,
        user_hash=str(user_hash) if user_hash is not None else None,
        split=split,
        image_versions=versions,
        generation=str(generation) if generation is not None else None,
        **extension,
    )


def _extension(entry: dict[str, Any], n: int) -> dict[str, Any] | str:
    """prefloop's vote fields (absent: a pick, weight 1, no control), or why malformed."""
    vote = entry.get("vote", "pick")
    if vote not in VOTES:
        return f"vote {vote!r} is not one of {', '.join(VOTES)}"
    weight = entry.get("rater_weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight < 0
    ):
        return f"rater_weight {weight!r} is not a number >= 0"
    control = entry.get("control")
    if control is not None and (not isinstance(control, str) or not control):
        return f"control {control!r} is not a control kind"
    known: dict[str, int | None] = {}
    for name in ("control_worse", "control_best"):
        index = entry.get(name)
        if index is None:
            known[name] = None
        elif control is None:
            return f"{name} is set on a set that is not a control"
        elif isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            return f"{name} {index!r} is not an index into its {n} images"
        else:
            known[name] = index
    if known["control_worse"] is not None and known["control_worse"] == known["control_best"]:
        return "control_worse and control_best are the same image"
    return {"vote": vote, "weight": float(weight), "control": control, **known}


def _versions(given: Any, n: int) -> tuple[int | None, ...] | str | None:
    """Which version made each image (``image_adapter_version_ids``), or why it is malformed."""
    if given is None:
        return None
    if (
        not isinstance(given, list)
        or len(given) != n
        or not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in given)
    ):
        return f"image_adapter_version_ids {given!r} is not one version (an int or null) per image"
    return tuple(given)


def _chosen(preference: Any, n: int) -> int | str:
    """The chosen index from an HPS v1 index or an HPD v2 list of per-image scores."""
    if isinstance(preference, bool) or preference is None:
        return "no human_preference"
    if isinstance(preference, int):
        if not 0 <= preference < n:
            return f"human_preference {preference} is not an index into its {n} images"
        return preference
    if isinstance(preference, list):
        if len(preference) != n or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in preference
        ):
            return f"human_preference {preference} is not one number per image"
        best = max(preference)
        if preference.count(best) != 1:
            return f"human_preference {preference} has no single preferred image"
        return preference.index(best)
    return f"human_preference {preference!r} is neither an index nor a list"


def _resolve(name: str, bases: list[Path], check_files: bool) -> Path | None:
    given = Path(name)
    if given.is_absolute():
        return given if not check_files or given.is_file() else None
    # "preference_images/1_0.png" is relative to the JSON file's folder (the last base);
    # a bare "1_0.png" to an image folder.
    order = [bases[-1], *bases[:-1]] if len(given.parts) > 1 else bases
    candidates = [base / given for base in order]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if check_files:
        return None
    # Unchecked: the first place whose folder exists.
    return next((c for c in candidates if c.parent.is_dir()), candidates[-1])
