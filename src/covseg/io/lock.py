"""One covseg run at a time per output folder, or its ``--shard`` runs side by side.

A run holds an advisory lock (``flock``) on :data:`LOCK_FILE` in its folder while it writes
there, so that a second run started into the same folder is refused instead of both deciding it
is empty and writing over each other. The system releases the lock of a process however it ends,
even killed with SIGKILL: the file such a run leaves behind is taken over by the next run.

The shards of one predict or quantify share their ``--out`` by design: each holds the lock
shared (``LOCK_SH``), so they run side by side while a whole run, which holds it exclusive, is
refused there, and a shard is refused where a whole run writes. The file is removed only by a
holder that has it alone (a whole run, or the last shard to end, which can then take it
exclusive): removed while shards hold it, a run started next would lock a new file of that name
beside them.

Side-by-side shards must split the work alike: each takes the lock while holding
:data:`PLAN_LOCK` exclusive for a moment, told whether it is the first (no other run held the
lock), so that it writes the plan they share (:data:`SHARD_PLAN`) or checks its own against it,
and two shards starting at once cannot both find themselves first. The plan goes with the lock
file, by the last holder to end; one left by shards killed outright is stale, replaced by the
next first shard.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from covseg.errors import CovsegError, no_space
from covseg.io.atomic import unwritable_folder
from covseg.provenance import option_name

LOCK_FILE = ".covseg.lock"
"""The lock file in a folder a run writes to: the pid of the run holding it, or a line
``PID shard`` per ``--shard`` run that took it since it was made."""

SHARD_PLAN = ".covseg.shards.json"
"""The plan the ``--shard`` runs writing to a folder share: written by the first, checked by the
others (:func:`covseg.batch.run_batch` says what it holds)."""

PLAN_LOCK = ".covseg.shards.lock"
"""Held exclusive for a moment by a shard taking the lock and writing or checking the plan."""

SHARD = "shard"
"""The word after a shard's pid in :data:`LOCK_FILE`."""

_TRIES, _PAUSE_S = 10, 0.02
"""How often, and how far apart, a lock held is tried again before the run is refused: a probe
(:func:`_probed`, by a load of a stopped run) holds a lock file for a moment, which must not
refuse a run starting (or another probe) then."""

_ours = threading.local()
"""``folders``: the folders whose lock this thread holds (:func:`refuse_if_held` passes them)."""


def _held_here() -> set[Path]:
    """The folders (resolved) whose lock this thread holds."""
    if not hasattr(_ours, "folders"):
        _ours.folders = set()
    held: set[Path] = _ours.folders
    return held


@contextmanager
def writing_to(folder: Path, *, shared: bool = False,
               agree: Callable[[bool], None] | None = None) -> Iterator[None]:
    """Hold ``folder``'s lock for the block, ``folder`` (and its missing parents) made first and
    removed again where the block leaves them empty. A folder another run holds (another
    process, or another thread of this one) is refused in one line naming its pid; ``shared``
    (a ``--shard`` run) passes where only other shared holders are, the other shards.
    ``agree`` (a shard's) is called once the lock is held, with whether no other run held it,
    while no other shard can start (:func:`_joined`): it writes or checks the shards' plan, and
    may refuse."""
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        handle = (_joined(folder, agree) if shared and agree is not None
                  else _locked(folder / LOCK_FILE, shared))
        mine = folder.resolve()
        _held_here().add(mine)
        try:
            yield
        finally:
            _held_here().discard(mine)
            _release(folder / LOCK_FILE, handle)
    finally:
        for path in made:  # deepest first
            with suppress(OSError):  # not empty: kept
                path.rmdir()


def _locked(path: Path, shared: bool) -> IO[str]:
    """``path`` opened (made if missing, with its folders) and locked, exclusive or ``shared``,
    our pid written in it (a shard's added to the other shards'); the file, if it was removed
    or replaced between its opening and its locking, opened again, and one we may not write,
    if no run holds it, replaced (:func:`_remove_stale`). Another user's that other shards
    hold refuses a shard: it could not write its pid there."""
    while True:
        handle = _created(path)
        mine = handle.writable()  # else another user's, made under umask 022: probed alone
        try:
            _flock_soon(handle, fcntl.LOCK_SH if shared and mine else fcntl.LOCK_EX)
        except BlockingIOError:
            error = _held(path.parent, handle)
            handle.close()
            raise error from None
        current = _is_current(path, handle)
        if current and mine:
            break
        if current:
            _remove_stale(path, handle)
        handle.close()
    try:
        if not shared:  # alone: a killed run's pid (or shards') goes
            handle.truncate(0)
        os.write(handle.fileno(), f"{os.getpid()}{' ' + SHARD if shared else ''}\n".encode())
    except OSError as exc:  # names no file: a disk gone (EIO) said a bare "Input/output error"
        handle.close()
        if no_space(exc):
            raise  # said as a full disk, with how to go on
        raise unwritable_folder(path.parent, exc) from None
    return handle


def _flock_soon(handle: IO[str], operation: int) -> None:
    """Lock ``handle`` (``operation``: ``LOCK_EX`` or ``LOCK_SH``) without waiting on a run,
    tried again :data:`_TRIES` times :data:`_PAUSE_S` apart while it is held (a probe lets go
    within that); ``BlockingIOError`` where it is held still."""
    for _ in range(_TRIES - 1):
        try:
            fcntl.flock(handle, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            _pause(_PAUSE_S)
        else:
            return
    fcntl.flock(handle, operation | fcntl.LOCK_NB)


def _pause(seconds: float) -> None:
    """Wait ``seconds`` before a lock is tried again (a test holds a probe through it)."""
    time.sleep(seconds)


def _created(path: Path) -> IO[str]:
    """``path`` opened for appending (made if missing, with its folders), for a lock to be
    taken on it; one there that we may not write (another user's, made under ``umask 022`` in
    a shared folder) opened to read, which a lock needs no more than, to be probed (held: that
    run's refusal; else stale, replaced). A folder that cannot be written to is refused in one
    line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666), "r+")
    except OSError as exc:
        if isinstance(exc, PermissionError):
            with suppress(OSError):
                return path.open("r")
        raise unwritable_folder(path.parent, exc) from None


def _remove_stale(path: Path, handle: IO[str]) -> None:
    """Remove the lock file ``path``, which we hold exclusive through ``handle`` (opened to
    read: another user's), so that a new one of ours replaces it: no run holds it (its run was
    killed), and left there it would refuse every other user for good. A run that opened it
    meanwhile finds it gone and opens it again. A folder we cannot write to is refused, and
    one whose sticky bit keeps us from removing the file, naming its owner."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        handle.close()
        if exc.errno != errno.EPERM:
            raise unwritable_folder(path.parent, exc) from None
        raise CovsegError(f"{path}: left by a covseg run of {_owner(path)} that ended; it "
                          f"cannot be replaced in this sticky folder ({exc.strerror}): ask "
                          f"them to delete it, or pick another {option_name('out')}") from None


def _owner(path: Path) -> str:
    """The user owning ``path``, by name where the system knows it, else ``uid N``."""
    try:
        uid = path.stat().st_uid
    except OSError:
        return "another user"
    with suppress(KeyError):
        return pwd.getpwuid(uid).pw_name
    return f"uid {uid}"


def _joined(folder: Path, agree: Callable[[bool], None]) -> IO[str]:
    """``folder``'s lock taken shared, as :func:`_locked` takes it, and ``agree`` called with
    whether it was the first holder, both under :data:`PLAN_LOCK` (without it, two shards
    starting at once could both find themselves first, and each write its own plan). A refusal
    of ``agree`` lets go of the lock again."""
    with _plan_lock(folder):
        first = _unheld(folder)
        handle = _locked(folder / LOCK_FILE, True)
        try:
            agree(first)
        except BaseException:
            _release(folder / LOCK_FILE, handle)
            raise
    return handle


@contextmanager
def _plan_lock(folder: Path) -> Iterator[None]:
    """:data:`PLAN_LOCK` held exclusive for the block, waited for (its holders hold it for a
    moment), and removed at its end, still held (a run waiting on it then finds it gone and
    opens it again), so that a shard refused leaves no file; one removed between its opening
    and its locking is opened again. Another user's in a sticky folder, which we may not
    remove, is left, unheld."""
    path = folder / PLAN_LOCK
    while True:
        with _created(path) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if _is_current(path, handle):
                try:
                    yield
                finally:
                    with suppress(PermissionError):
                        path.unlink(missing_ok=True)
                return


def _unheld(folder: Path) -> bool:
    """Whether no run holds ``folder``'s lock file (a missing one: none), as :func:`_probed`
    finds it."""
    return _probed_holder(folder) is None


def holder(folder: Path) -> str | None:
    """The pid of another run holding ``folder``'s lock (of ``--shard`` runs, the last to
    start), None where none does: no lock file, or this thread holds it (a cross-validation
    loading its own fold, an ensemble its own member). Nothing is written: the lock is tried
    for a moment, not held, and a folder we may not write to is probed alike, as ``flock``
    needs no write access."""
    return None if folder.resolve() in _held_here() else _probed_holder(folder)


def _probed_holder(folder: Path) -> str | None:
    """The pid of the run holding ``folder``'s lock as :func:`_probed` finds it, None where
    none does."""
    try:
        with _probed(folder):
            return None
    except LockHeld as exc:
        return exc.pid


def _drop_plan(folder: Path) -> None:
    """Remove the shards' plan (and a :data:`PLAN_LOCK` a shard killed while starting left), by
    a run holding ``folder``'s lock alone; left where a shard starting holds :data:`PLAN_LOCK`
    (it finds this run's lock held, and is refused)."""
    path = folder / PLAN_LOCK
    try:
        handle = path.open("r")
    except OSError:
        (folder / SHARD_PLAN).unlink(missing_ok=True)
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        if _is_current(path, handle):
            (folder / SHARD_PLAN).unlink(missing_ok=True)
            path.unlink(missing_ok=True)


def _release(path: Path, handle: IO[str]) -> None:
    """Let go of ``path``'s lock, held through ``handle``: the file is removed first where we
    hold it alone, exclusive (a run that opened it meanwhile then sees it gone and opens it
    again), the shards' plan with it; a shard that other shards hold it beside leaves them to
    them. (A shard's failed
    taking of it exclusive drops its shared lock: it is letting go anyway.) Files another user
    made in a sticky folder (a lab's 3775, /tmp's 1777), which we may not remove, are left,
    unheld, for the next run to take over: the run's work is done, and was reported failed."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass
    else:
        with suppress(PermissionError):
            _drop_plan(path.parent)
            path.unlink(missing_ok=True)
    handle.close()


def drop_unheld_lock(folder: Path) -> None:
    """Remove ``folder``'s lock file where no run holds it (left by a run killed outright), so
    that a folder holding nothing else can be removed."""
    with suppress(CovsegError), _probed(folder) as handle:  # held: a run is writing there
        if handle is not None:
            _drop_plan(folder)
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
    where another run holds it still after :func:`_flock_soon`'s tries, that run's refusal is
    raised. A file removed or replaced
    between its opening and its locking (by a run ending, then one starting) is opened again,
    so that the file locked is the one in the folder, never a live run's new one unlinked."""
    path = folder / LOCK_FILE
    while True:
        try:
            handle = path.open("r")
        except OSError:
            yield None
            return
        with handle:
            try:
                _flock_soon(handle, fcntl.LOCK_EX)
            except BlockingIOError:
                raise _held(folder, handle) from None
            if _is_current(path, handle):
                yield handle
                return


def _is_current(path: Path, handle: IO[str]) -> bool:
    """Whether ``handle`` is still the file at ``path`` (not removed or replaced since it was
    opened)."""
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


class LockHeld(CovsegError):
    """The refusal of a folder whose lock another run holds, with that run's ``pid``."""

    def __init__(self, message: str, pid: str) -> None:
        super().__init__(message)
        self.pid = pid


def _held(folder: Path, handle: IO[str]) -> LockHeld:
    """The refusal of ``folder``, whose lock file (open as ``handle``) another run holds, or
    ``--shard`` runs hold (its lines say which; of shards, the last to take it is named: those
    before it may have ended)."""
    lines = handle.read().split("\n")
    shards = [line.split()[0] for line in lines if line.endswith(f" {SHARD}")]

    out = option_name("out")
    if shards:
        return LockHeld(f"covseg {option_name('shard')} runs are writing to {folder} (the last "
                        f"to start: pid {shards[-1]}); wait for them to end, or pick another "
                        f"{out}", shards[-1])
    pid = lines[0].strip() or "unknown"
    return LockHeld(f"another covseg run is writing to {folder} (pid {pid}); wait for it to end, "
                    f"or pick another {out}", pid)
