"""Publishing an export: durable, never a moment without an export, leftovers cleaned up."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bot.export import layout


class Crash(BaseException):
    """The process dies here: nothing after it runs (no except, no finally that renames)."""


def _export(folder: Path, label: str) -> Path:
    """A complete prefloop export (as far as the folder rules go), told apart by ``label``."""
    (folder / "preference_images").mkdir(parents=True)
    (folder / "preference_images" / "a_0.png").write_text(label)
    layout.write_manifest(folder, {"producer": layout.PRODUCER, "label": label})
    return folder


def _label(folder: Path) -> str:
    return str(json.loads((folder / layout.MANIFEST).read_text())["label"])


def _staged(out: Path, label: str) -> Path:
    return _export(out.parent / f".{out.name}.{layout.PARTIAL}-test", label)


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux's (the next test: else)")
def test_a_replace_swaps_the_folders_in_one_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _export(tmp_path / "out", "old")
    staging = _staged(out, "new")

    def no_rename(*args: object) -> None:
        raise Crash("a plain rename would leave a moment with no export at the target")

    monkeypatch.setattr(os, "rename", no_rename)
    layout.publish(staging, out)
    assert _label(out) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old one is gone


def test_a_crash_between_the_two_renames_is_undone_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the folders cannot be swapped, the earlier export is renamed aside first;
    dying right after that leaves no export at the target, and the next export into the
    folder puts the earlier one back before anything else."""
    out = _export(tmp_path / "out", "old")
    staging = _staged(out, "new")
    monkeypatch.setattr(layout, "exchange", lambda a, b: False)
    real_rename = os.rename
    renames = 0

    def rename_then_die(source: object, target: object) -> None:
        nonlocal renames
        renames += 1
        if renames > 1:
            raise Crash("power cut")
        real_rename(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", rename_then_die)
    with pytest.raises(Crash):
        layout.publish(staging, out)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not out.exists()  # the crash window: nothing at the target
    (aside,) = tmp_path.glob(f".out.{layout.OLD}-*")
    assert _label(aside) == "old"

    with layout.claimed(out) as next_staging:
        assert _label(out) == "old"  # restored before the next export is written
        layout.discard(next_staging)
    assert sorted(p.name for p in tmp_path.iterdir()) == [layout.LOCK, "out"]


def test_leftovers_beside_a_complete_export_are_removed(tmp_path: Path) -> None:
    out = _export(tmp_path / "out", "current")
    stale = _export(tmp_path / f".out.{layout.OLD}-1234abcd", "stale")
    partial = tmp_path / f".out.{layout.PARTIAL}-5678abcd"
    (partial / "preference_images").mkdir(parents=True)
    other = _export(tmp_path / f".other.{layout.OLD}-9999abcd", "other's")  # its target: gone
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("years of work")
    kept = _export(tmp_path / f".thesis.{layout.OLD}-0000abcd", "not over the thesis")

    layout.recover(tmp_path)

    assert not stale.exists() and not partial.exists()
    assert _label(out) == "current"
    assert _label(tmp_path / "other") == "other's" and not other.exists()
    assert kept.exists() and [p.name for p in foreign.iterdir()] == ["chapter1.tex"]


def test_publishing_fsyncs_the_files_the_folders_and_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    out = tmp_path / "out"
    staging = _staged(out, "new")
    assert str(staging / layout.MANIFEST) in synced  # written last, and flushed
    synced.clear()
    layout.publish(staging, out)
    assert {str(staging / "preference_images"), str(staging)} <= set(synced)
    assert synced[-1] == str(tmp_path)  # the rename itself is made durable

    again = _staged(out, "newer")
    synced.clear()
    layout.publish(again, out)
    assert _label(out) == "newer" and str(tmp_path) in synced


def test_a_failed_rename_into_place_puts_the_earlier_export_back_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _export(tmp_path / "out", "old")
    staging = _staged(out, "new")
    monkeypatch.setattr(layout, "exchange", lambda a, b: False)
    real_rename = os.rename

    def refuse_staging(source: object, target: object) -> None:
        if Path(str(source)) == staging:
            raise PermissionError(13, "Permission denied", str(target))
        real_rename(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", refuse_staging)
    with pytest.raises(PermissionError):
        layout.publish(staging, out)
    assert _label(out) == "old"  # no gap until the next export
