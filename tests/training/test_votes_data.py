"""training.data reads prefloop's vote fields: ties, "none are good", weights, control sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.__main__ import main
from training.data import VOTES, DatasetError, read_preferences, read_train_test


def _export(folder: Path, train: list[dict[str, Any]], test: list[dict[str, Any]]) -> Path:
    images = folder / "preference_images"
    images.mkdir(parents=True)
    for entry in train + test:
        for name in entry["file_path"]:
            (folder / name).write_bytes(b"png")
    (folder / "preference_train.json").write_text(json.dumps(train))
    (folder / "preference_test.json").write_text(json.dumps(test))
    return folder


def _entry(ident: str, **fields: Any) -> dict[str, Any]:
    files = [f"preference_images/{ident}_{k}.png" for k in range(4)]
    entry = {"id": ident, "prompt": f"a {ident}", "file_path": files, "human_preference": 1}
    return {**entry, **fields}


def _mixed(folder: Path) -> Path:
    return _export(
        folder,
        [
            _entry("old"),  # an export before the fields, or the public release: a pick
            _entry("pick", vote="pick", rater_weight=0.25, control=None, generation_id="g1"),
            _entry("tie", vote="tie", human_preference=None, rater_weight=0.9, generation_id="g1"),
            _entry("none", vote="none", human_preference=None, rater_weight=1),
            _entry("blurred", vote="pick", control="blur", control_worse=3, human_preference=0),
            _entry("marked", vote="none", human_preference=None, control="marked", control_best=2),
        ],
        [_entry("held", vote="pick"), _entry("held-tie", vote="tie", human_preference=None)],
    )


def test_by_default_only_picks_on_ordinary_sets_are_read(tmp_path: Path) -> None:
    data = read_preferences(_mixed(tmp_path))
    assert [(e.id, e.vote, e.chosen, e.weight) for e in data] == [
        ("old", "pick", 1, 1.0),
        ("pick", "pick", 1, 0.25),
    ]
    assert data.left_out == {"tie": 1, "none": 1, "control": 2}
    assert not data.problems  # left out on purpose, not malformed
    train, test = read_train_test(tmp_path, votes=VOTES, controls=True)
    assert len(train) == 6
    assert test is not None and [e.id for e in test] == ["held"]  # judged on picks only


def test_every_vote_kind_and_control_is_read_when_asked(tmp_path: Path) -> None:
    data = read_preferences(_mixed(tmp_path), votes=VOTES, controls=True)
    found = {e.id: e for e in data}
    assert (found["tie"].vote, found["tie"].chosen, found["tie"].weight) == ("tie", None, 0.9)
    assert (found["none"].vote, found["none"].chosen, found["none"].label) == ("none", None, "none")
    assert found["pick"].label == "1" and found["tie"].label == "tie"
    assert found["pick"].generation == found["tie"].generation == "g1"
    assert found["old"].generation is None and found["old"].control is None
    blurred = found["blurred"]
    assert (blurred.control, blurred.control_worse, blurred.control_best) == ("blur", 3, None)
    marked = found["marked"]
    assert (marked.control, marked.control_worse, marked.control_best) == ("marked", None, 2)
    only_ties = read_preferences(tmp_path, votes=("tie",))
    assert [e.id for e in only_ties] == ["tie"]
    assert only_ties.left_out == {"pick": 2, "none": 1, "control": 2}
    with pytest.raises(ValueError, match="unknown vote kinds"):
        read_preferences(tmp_path, votes=("maybe",))  # type: ignore[arg-type]


def test_malformed_vote_fields_are_reported_by_id(tmp_path: Path) -> None:
    _export(
        tmp_path,
        [
            _entry("ok", vote="tie", human_preference=None),
            _entry("kind", vote="maybe"),
            _entry("tie-with-pick", vote="tie"),
            _entry("pick-without", vote="pick", human_preference=None),
            _entry("negative", rater_weight=-0.5),
            _entry("text-weight", rater_weight="high"),
            _entry("bool-weight", rater_weight=True),
            _entry("nan", rater_weight=float("nan")),
            _entry("control", control=3),
            _entry("stray", control_worse=1),
            _entry("range", control="noise", control_worse=4),
            _entry("same", control="marked", control_worse=2, control_best=2),
        ],
        [],
    )
    data = read_preferences(tmp_path, votes=VOTES, controls=True)
    assert [e.id for e in data] == ["ok"]
    assert {p.id: p.reason for p in data.problems} == {
        "kind": "vote 'maybe' is not one of pick, tie, none",
        "tie-with-pick": "a tie vote has no human_preference (it has one)",
        "pick-without": "no human_preference",
        "negative": "rater_weight -0.5 is not a number >= 0",
        "text-weight": "rater_weight 'high' is not a number >= 0",
        "bool-weight": "rater_weight True is not a number >= 0",
        "nan": "rater_weight nan is not a number >= 0",
        "control": "control 3 is not a control kind",
        "stray": "control_worse is set on a set that is not a control",
        "range": "control_worse 4 is not an index into its 4 images",
        "same": "control_worse and control_best are the same image",
    }
    with pytest.raises(DatasetError, match="11 malformed entries"):
        read_preferences(tmp_path, strict=True)


def test_the_command_line_counts_each_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", str(_mixed(tmp_path))]) == 0
    assert "votes: pick 3, tie 1, none 2; control sets 2; rater weights 0.25 to 1.00" in (
        capsys.readouterr().out
    )
