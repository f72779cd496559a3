"""The adapter's selection takes "None are good" sets as negatives, and counts each source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.adapt.lora import captions
from training.adapt.pipeline import Selection
from training.adapt.select import (
    HPS,
    NONE_VOTE,
    negatives_by_source,
    read_manifest,
    rejected_negatives,
    select,
    sets_from_export,
    write_manifest,
)


class FixedScores:
    """Scores by file name: "…_0.png" scores 10, every other image 0."""

    def score_groups(self, groups: Any) -> list[list[float]]:
        return [
            [10.0 if str(p).endswith("_0.png") else 0.0 for p in images] for _, images in groups
        ]


def _export(folder: Path) -> Path:
    images = folder / "preference_images"
    images.mkdir(parents=True)
    entries = []
    rng = np.random.default_rng(0)

    def entry(ident: str, generation: str, prompt: str, **vote: Any) -> None:
        files = []
        for k in range(4):
            name = f"preference_images/{ident}_{k}.png"
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name)
            files.append(name)
        fields = {"vote": "pick", "human_preference": 0, **vote}
        entries.append(
            {"id": ident, "prompt": prompt, "file_path": files, "generation_id": generation}
            | fields
        )

    none = {"vote": "none", "human_preference": None}
    entry("p1", "g1", "a picked set")
    entry("p2", "g1", "a picked set", human_preference=2)  # a second voter, same set
    entry("n1", "g2", "a rejected set", **none)
    entry("n2", "g2", "a rejected set", **none)  # two voters agree: still one set
    entry("n3", "g3", "a disputed set", **none)
    entry("t3", "g3", "a disputed set", vote="tie", human_preference=None)
    entry("c4", "g4", "a control", **none, control="marked", control_best=1)
    entry("u5", "g5", "a set a random clicker rejected", **none, rater_weight=0.05)
    (folder / "preference_train.json").write_text(json.dumps(entries))
    (folder / "preference_test.json").write_text("[]")
    return folder


def test_sets_voted_none_are_negatives_and_each_set_counts_once(tmp_path: Path) -> None:
    pool = sets_from_export(_export(tmp_path))
    # One group per set however many voted; the disputed set (a tie too) stays with HPS,
    # and so does one rejected only by a rater known to click at random; control sets are
    # no part of it.
    assert [g.prompt for g in pool.groups] == [
        "a picked set",
        "a disputed set",
        "a set a random clicker rejected",
    ]
    assert [g.prompt for g in pool.rejected] == ["a rejected set"]

    chosen = select(FixedScores(), pool.groups) + rejected_negatives(FixedScores(), pool.rejected)
    rejected = [s for s in chosen if s.source == NONE_VOTE]
    assert [(Path(s.file).name, s.label, s.score) for s in rejected] == [
        ("n1_0.png", "negative", 10.0),  # HPS likes it; people said no: a negative
        ("n1_1.png", "negative", 0.0),
        ("n1_2.png", "negative", 0.0),
        ("n1_3.png", "negative", 0.0),
    ]
    assert {s.source for s in chosen if s.label == "positive"} == {HPS}
    assert negatives_by_source(chosen) == {HPS: 0, NONE_VOTE: 4}
    # HPS's confident positives are the "_0" images; its ties (all 0) give no negative.
    assert sorted(Path(s.file).name for s in chosen if s.label == "positive") == [
        "n3_0.png",
        "p1_0.png",
        "u5_0.png",
    ]
    # Negatives are captioned "Weird image. " + prompt, whatever their source.
    weird = dict(captions(chosen))
    assert all(weird[s.file] == "Weird image. a rejected set" for s in rejected)

    manifest = tmp_path / "selection.jsonl"
    digest = write_manifest(chosen, manifest)
    assert read_manifest(manifest) == chosen  # the source survives the manifest
    selection = Selection(chosen, digest, manifest, reused=False, groups=3, rejected=1)
    assert selection.negatives == {HPS: 0, NONE_VOTE: 4} and selection.positives == 3


def test_manifests_from_before_the_source_field_read_as_hps(tmp_path: Path) -> None:
    old = {"prompt": "p", "file": "x.png", "label": "negative", "confidence": 0.9, "score": 1.0}
    (tmp_path / "old.jsonl").write_text(json.dumps(old) + "\n")
    (item,) = read_manifest(tmp_path / "old.jsonl")
    assert item.source == HPS and negatives_by_source([item]) == {HPS: 1, NONE_VOTE: 0}
