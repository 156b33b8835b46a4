"""One covseg run at a time per output folder.

A run holds an advisory lock (``flock``) on :data:`LOCK_FILE` in its folder while it writes
there, so that a second run started into the same folder is refused instead of both deciding it
is empty and writing over each other. The system releases the lock of a process however it ends,
even killed with SIGKILL: the file such a run leaves behind is taken over by the next run.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from covseg.errors import CovsegError

LOCK_FILE = ".covseg.lock"
"""The lock file in a folder a run writes to; it holds the pid of the run holding it."""

_ours = threading.local()
"""``folders``: the folders whose lock this thread holds (:func:`refuse_if_held` passes them)."""


def _held_here() -> set[Path]:
    """The folders (resolved) whose lock this thread holds."""
    if not hasattr(_ours, "folders"):
        _ours.folders = set()
    held: set[Path] = _ours.folders
    return held


@contextmanager
def writing_to(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the block, ``folder`` (and its missing parents) made first and
    removed again where the block leaves them empty. A folder another run holds (another
    process, or another thread of this one) is refused in one line naming its pid."""
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        handle = _locked(folder / LOCK_FILE)
        mine = folder.resolve()
        _held_here().add(mine)
        try:
            yield
        finally:
            _held_here().discard(mine)
            # removed while still held: a run that opened it meanwhile sees it gone, retries
            (folder / LOCK_FILE).unlink(missing_ok=True)
            handle.close()
    finally:
        for path in made:  # deepest first
            with suppress(OSError):  # not empty: kept
                path.rmdir()


def _locked(path: Path) -> IO[str]:
    """``path`` opened (made if missing, with its folders) and locked, our pid written in it;
    the file, if it was removed or replaced between its opening and its locking, opened again."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+")
        except OSError as exc:
            raise CovsegError(f"{path.parent}: cannot write to it ({exc.strerror or exc}); "
                              "pick a writable --out") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            error = _held(path.parent, handle)
            handle.close()
            raise error from None
        with suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        handle.close()
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def drop_unheld_lock(folder: Path) -> None:
    """Remove ``folder``'s lock file where no run holds it (left by a run killed outright), so
    that a folder holding nothing else can be removed."""
    with suppress(CovsegError), _probed(folder) as handle:  # held: a run is writing there
        if handle is not None:
            (folder / LOCK_FILE).unlink(missing_ok=True)


def refuse_if_held(folder: Path) -> None:
    """Refuse ``folder`` as :func:`writing_to` does where another run holds its lock: for a
    check made before the lock is taken (a cross-validation fold's), which would otherwise
    judge the files that run is still writing ("stopped midway; pass --resume"). A folder this
    thread holds (a whole cross-validation checking its own ``out``) passes."""
    if folder.resolve() in _held_here():
        return
    with _probed(folder):
        pass


@contextmanager
def _probed(folder: Path) -> Iterator[IO[str] | None]:
    """``folder``'s lock file, open and locked by us for the block (None where there is none);
    where another run holds it, that run's refusal is raised."""
    try:
        handle = (folder / LOCK_FILE).open("r")
    except OSError:
        yield None
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _held(folder, handle) from None
        yield handle


def _held(folder: Path, handle: IO[str]) -> CovsegError:
    """The refusal of ``folder``, whose lock file (open as ``handle``) another run holds."""
    holder = handle.read().strip() or "unknown"
    return CovsegError(f"another covseg run is writing to {folder} (pid {holder}); wait for it "
                       "to end, or pick another --out")
