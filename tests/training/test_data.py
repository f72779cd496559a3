"""training.data reads our exports, the public HPS v1 release and HPD v2's train.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from training.__main__ import main
from training.data import DatasetError, read_preferences, read_train_test


def _image(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)


def _write(path: Path, entries: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))


def test_the_public_hps_v1_layout(tmp_path: Path) -> None:
    for name in ("7_0.jpg", "7_1.jpg", "7_2.jpg", "8_0.jpg", "8_1.jpg"):
        _image(tmp_path / "preference_images" / name, (10, 20, 30))
    _write(
        tmp_path / "preference_train.json",
        [
            {
                "id": 7,
                "prompt": "a castle",
                "file_path": ["7_0.jpg", "7_1.jpg", "7_2.jpg"],
                "human_preference": 2,
                "user_hash": "u1",
                "contain_name": False,
            },
        ],
    )
    _write(
        tmp_path / "preference_test.json",
        [
            {
                "id": 8,
                "prompt": "a boat",
                "file_path": ["8_0.jpg", "8_1.jpg"],
                "human_preference": 0,
                "user_hash": "u2",
                "contain_name": False,
            },
        ],
    )

    train = read_preferences(tmp_path)
    (example,) = train
    assert (example.id, example.prompt, example.chosen, example.user_hash) == (
        "7",
        "a castle",
        2,
        "u1",
    )
    assert example.images[2] == tmp_path / "preference_images" / "7_2.jpg"
    assert [e.split for e in read_preferences(tmp_path, "all")] == ["train", "test"]
    assert read_preferences(tmp_path / "preference_test.json").examples[0].prompt == "a boat"
    train, test = read_train_test(tmp_path)
    assert len(train) == 1 and test is not None and test.examples[0].prompt == "a boat"
    only, none = read_train_test(tmp_path / "preference_train.json")  # one file: no test
    assert len(only) == 1 and none is None


def test_file_paths_with_and_without_the_image_folder_and_both_kinds_of_id(
    tmp_path: Path,
) -> None:
    """The release's JSON names "preference_images/2_0.jpg" (int ids); prefloop's keyed
    ids are strings; exports before them named bare "1_0.png". All three read the same,
    with the files checked or not (the adapter stage reads prompts unchecked)."""
    keyed = "3f" * 16
    for name in ("2_0.jpg", "2_1.jpg", "1_0.png", "1_1.png", f"{keyed}_0.png", f"{keyed}_1.png"):
        _image(tmp_path / "preference_images" / name, (1, 2, 3))
    _write(
        tmp_path / "preference_train.json",
        [
            {
                "id": 2,
                "prompt": "release",
                "human_preference": 1,
                "file_path": ["preference_images/2_0.jpg", "preference_images/2_1.jpg"],
            },
            {
                "id": 1,
                "prompt": "older prefloop",
                "human_preference": 0,
                "file_path": ["1_0.png", "1_1.png"],
            },
            {
                "id": keyed,
                "prompt": "prefloop",
                "human_preference": 0,
                "file_path": [
                    f"preference_images/{keyed}_0.png",
                    f"preference_images/{keyed}_1.png",
                ],
            },
        ],
    )
    images = tmp_path / "preference_images"
    expected = {
        "2": (images / "2_0.jpg", images / "2_1.jpg"),
        "1": (images / "1_0.png", images / "1_1.png"),
        keyed: (images / f"{keyed}_0.png", images / f"{keyed}_1.png"),
    }
    data = read_preferences(tmp_path, strict=True)
    assert {e.id: e.images for e in data} == expected
    for image in images.iterdir():  # unchecked, the paths are still where they would be
        image.unlink()
    unchecked = read_preferences(tmp_path, strict=True, check_files=False)
    assert {e.id: e.images for e in unchecked} == expected


def test_hpd_v2_train_json_with_a_score_per_image(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png", "d.png"):
        _image(tmp_path / "train" / name, (200, 0, 0))
    _write(
        tmp_path / "train.json",
        [
            {"prompt": "a fox", "file_path": ["a.png", "b.png"], "human_preference": [0, 1]},
            {"prompt": "a hen", "file_path": ["c.png", "d.png"], "human_preference": [1, 0]},
            {"prompt": "a tie", "file_path": ["c.png", "d.png"], "human_preference": [1, 1]},
        ],
    )

    data = read_preferences(tmp_path)
    assert [(e.prompt, e.chosen) for e in data] == [("a fox", 1), ("a hen", 0)]
    assert data.examples[0].images[1] == tmp_path / "train" / "b.png"
    assert [str(p) for p in data.problems] == [
        "train.json: entry #2: human_preference [1, 1] has no single preferred image"
    ]
    _write(
        tmp_path / "later.json",
        [  # images not downloaded yet: resolved, not checked
            {"prompt": "a yak", "file_path": ["y.png", "z.png"], "human_preference": [1, 0]},
        ],
    )
    (tmp_path / "later").mkdir()
    unchecked = read_preferences(tmp_path / "later.json", check_files=False)
    assert unchecked.examples[0].images == (
        tmp_path / "later" / "y.png",
        tmp_path / "later" / "z.png",
    )


def test_malformed_entries_are_reported_by_id_or_refused_when_strict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("1_0.png", "1_1.png", "2_0.png"):
        _image(tmp_path / "preference_images" / name, (0, 0, 0))
    good = {"id": 1, "prompt": "ok", "file_path": ["1_0.png", "1_1.png"], "human_preference": 1}
    _write(
        tmp_path / "preference_train.json",
        [
            good,
            {**good, "id": 2, "file_path": ["2_0.png", "2_1.png"]},
            {**good, "id": 3, "human_preference": 5},
            {**good, "id": 4, "prompt": ""},
            {**good, "id": 5, "file_path": ["1_0.png"]},
            {**good, "id": 6, "human_preference": True},
            {**good, "id": 1},
            "not an object",
        ],
    )

    data = read_preferences(tmp_path)
    assert [e.id for e in data] == ["1"]
    assert [(p.id, p.reason) for p in data.problems] == [
        ("2", "image 2_1.png is missing"),
        ("3", "human_preference 5 is not an index into its 2 images"),
        ("4", "no prompt"),
        ("5", "has 1 images; an instance needs 2 to 4"),
        ("6", "no human_preference"),
        ("1", "duplicate id"),
        ("#7", "not a JSON object"),
    ]
    assert "skipped 7 malformed entries" in caplog.text
    with pytest.raises(DatasetError, match="7 malformed entries") as refused:
        read_preferences(tmp_path, strict=True)
    assert "entry 3: human_preference 5" in str(refused.value)


def test_unreadable_datasets_say_why(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_preferences(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"has no preference_train\.json"):
        read_preferences(tmp_path)
    (tmp_path / "preference_train.json").write_text('{"not": "a list"}')
    with pytest.raises(DatasetError, match="not a list"):
        read_preferences(tmp_path)
    (tmp_path / "preference_train.json").write_text("[{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_preferences(tmp_path)


def test_the_command_line_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("1_0.png", "1_1.png"):
        _image(tmp_path / "preference_images" / name, (0, 0, 0))
    entry = {"id": 1, "prompt": "ok", "file_path": ["1_0.png", "1_1.png"], "human_preference": 0}
    _write(tmp_path / "preference_train.json", [entry, {**entry, "id": 2, "human_preference": 9}])
    _write(tmp_path / "preference_test.json", [])
    assert main(["data", str(tmp_path)]) == 0
    assert (
        "1 examples (train 1); images per example: {2: 1}; 1 malformed" in capsys.readouterr().out
    )
    assert main(["data", str(tmp_path), "--strict"]) == 1
    assert "entry 2" in capsys.readouterr().err


def test_each_images_version_is_read_where_the_export_has_it(tmp_path: Path) -> None:
    images = tmp_path / "preference_images"
    images.mkdir()
    for name in ("1_0.png", "1_1.png"):
        (images / name).write_bytes(b"png")
    entry = {"prompt": "a cat", "file_path": ["1_0.png", "1_1.png"], "human_preference": 1}
    entries = [
        {**entry, "id": "new", "image_adapter_version_ids": [3, None]},
        {**entry, "id": "older"},  # exports before the field, and the public release
        {**entry, "id": "bad", "image_adapter_version_ids": [3]},
        {**entry, "id": "worse", "image_adapter_version_ids": ["3", True]},
    ]
    (tmp_path / "preference_train.json").write_text(json.dumps(entries))
    data = read_preferences(tmp_path, "train")
    assert {e.id: e.image_versions for e in data} == {"new": (3, None), "older": None}
    assert sorted(p.id for p in data.problems) == ["bad", "worse"]
    assert "not one version" in data.problems[0].reason
