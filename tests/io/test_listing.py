"""Folders listed once for one task: entries and walks as ``iterdir`` and ``os.walk`` give
them, sorted, and what a folder was found to hold asked once."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest

from covseg.io.listing import Listings


def test_a_walk_finds_what_os_walk_finds_sorted_and_links_to_folders_not_entered(
        tmp_path: Path) -> None:
    """Discovery's helpers walked folders with ``os.walk``; :meth:`Listings.walk` gives the same
    folders and file names (sorted), a link to a folder listed among none of them and not
    entered, a link to a file and a broken link among the files."""
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    for name in ("z.dcm", "a.dcm", "b/x.png", "b/deep/y.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "to_b").symlink_to(tmp_path / "b")
    (tmp_path / "to_z").symlink_to(tmp_path / "z.dcm")
    (tmp_path / "broken").symlink_to(tmp_path / "gone")
    expected = sorted((Path(directory), sorted(names)) for directory, _, names in os.walk(tmp_path))
    assert sorted(Listings().walk(tmp_path)) == expected
    assert [d for d, _ in Listings().walk(tmp_path)] == [
        tmp_path, tmp_path / "a", tmp_path / "b", tmp_path / "b" / "deep"]
    assert Listings().children(tmp_path) == sorted(tmp_path.iterdir())


def test_a_folder_is_listed_once_and_a_missing_one_raises_as_iterdir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each folder is listed once however often its entries or walk are asked for; one that
    cannot be listed is passed over by a walk (as ``os.walk`` passes it) and raises its error
    where its entries are asked for (as ``iterdir`` does)."""
    (tmp_path / "sub").mkdir()
    listed: list[Path] = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: listed.append(Path(path)) or real(path))
    listings = Listings()
    for _ in range(3):
        listings.children(tmp_path)
        list(listings.walk(tmp_path))
    assert sorted(listed) == [tmp_path, tmp_path / "sub"]
    assert list(listings.walk(tmp_path / "gone")) == []
    with pytest.raises(FileNotFoundError):
        listings.children(tmp_path / "gone")


def test_an_unlistable_folder_raises_a_new_error_each_time(tmp_path: Path) -> None:
    """The stored error was raised again as the same object, its traceback growing with every
    raise (3, 5, 7 frames); now each call raises a new one, alike in type, errno and name."""
    listings = Listings()
    raised = []
    for _ in range(2):
        with pytest.raises(FileNotFoundError) as caught:
            listings.children(tmp_path / "gone")
        raised.append(caught.value)
    first, second = raised
    assert first is not second
    assert len(traceback.extract_tb(first.__traceback__)) == len(
        traceback.extract_tb(second.__traceback__))
    assert (second.errno, second.filename) == (first.errno, first.filename)
    assert str(second) == str(first)


def test_once_finds_a_folder_s_answer_once(tmp_path: Path) -> None:
    """A question of a folder asked twice (a note and the choice it explains) is answered
    once."""
    asked: list[Path] = []

    def find(folder: Path, listings: Listings) -> str:
        asked.append(folder)
        return folder.name

    listings = Listings()
    assert [listings.once(find, tmp_path) for _ in range(2)] == [tmp_path.name] * 2
    assert asked == [tmp_path]
