"""Folders listed once for one task (:class:`Listings`): a study discovery asked for a DICOM
series folder's entries seven times (is it covseg's output, pictures, NIfTI files, a CT, a
copy, which series), and opened its files as often.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _Listing:
    """One folder's entries, sorted by name: all of them, its files (``os.walk``'s non-folders)
    and the sub-folders a walk enters (not links to folders, as ``os.walk`` does not)."""

    entries: list[Path]
    files: list[str]
    walked: list[str]


class Listings:
    """Folders' sorted entries, each folder listed once for as long as this object lives, and
    what was found in a folder (:meth:`once`). Made for one task (a call of
    :func:`~covseg.studies.find_studies`) and dropped after it, so that it never answers with a
    folder as it was before a change; the helpers that take one make their own without."""

    def __init__(self) -> None:
        self._listed: dict[Path, _Listing | OSError] = {}
        self._found: dict[tuple[Callable[..., Any], Path], Any] = {}

    def children(self, folder: Path) -> list[Path]:
        """The entries of ``folder``, sorted, as ``sorted(folder.iterdir())``; an unreadable
        folder raises its OSError, as ``iterdir`` does: a new one each time (the stored one,
        raised again, gathered every raise's frames in its traceback)."""
        listing = self._listing(folder)
        if isinstance(listing, OSError):
            raise type(listing)(listing.errno, listing.strerror, listing.filename)
        return listing.entries

    def walk(self, folder: Path) -> Iterator[tuple[Path, list[str]]]:
        """Each folder under ``folder`` (itself first, top-down) with its file names, sorted, as
        ``os.walk`` finds them: unreadable folders passed over, links to folders not entered."""
        pending = [folder]
        while pending:
            directory = pending.pop()
            listing = self._listing(directory)
            if isinstance(listing, OSError):
                continue
            yield directory, listing.files
            pending += [directory / name for name in reversed(listing.walked)]

    def once(self, find: Callable[[Path, Listings], T], folder: Path) -> T:
        """``find(folder, self)``, found once per folder: a note and the choice it explains
        asked the same question of a folder's files."""
        key = (find, folder)
        if key not in self._found:
            self._found[key] = find(folder, self)
        return self._found[key]

    def _listing(self, folder: Path) -> _Listing | OSError:
        if folder not in self._listed:
            self._listed[folder] = _list(folder)
        return self._listed[folder]


def _list(folder: Path) -> _Listing | OSError:
    """``folder``'s listing, sorted by name, its entries told apart as ``os.walk`` does; the
    error where it cannot be listed."""
    try:
        with os.scandir(folder) as scanned:
            entries = sorted(scanned, key=lambda entry: entry.name)
    except OSError as error:
        return error
    is_dir = [_is_dir(entry) for entry in entries]
    return _Listing(entries=[folder / entry.name for entry in entries],
                    files=[e.name for e, d in zip(entries, is_dir, strict=True) if not d],
                    walked=[e.name for e, d in zip(entries, is_dir, strict=True)
                            if d and not _is_link(e)])


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False
