"""The process's stderr (file descriptor 2) sent away while a C or C++ library prints there
(:func:`quiet_libraries`, ITK's warnings off too): covseg says what went wrong in one line, and
the library's own lines came before it. A Python library's logger is quieted where covseg has
checked what it would warn of, and a Python warning where covseg says the same in its own
words."""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from covseg.console import STDERR


def stderr_to_null() -> int:
    """Send file descriptor 2 to the null device; return a copy of what it was, or -1 for a
    process without one (pythonw, a closed stderr), where there is nothing to keep quiet."""
    STDERR.flush()
    try:
        saved = os.dup(2)
    except OSError:
        return -1
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
    return saved


def stderr_back(saved: int) -> None:
    """Give file descriptor 2 back what :func:`stderr_to_null` saved (nothing for -1)."""
    if saved >= 0:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on the null device for the block (one thread's: the process's stderr
    is shared, so a block in other threads at once would restore each other's)."""
    saved = stderr_to_null()
    try:
        yield
    finally:
        stderr_back(saved)


def in_forked_child(renew: Callable[[], None]) -> Callable[[], None]:
    """``renew`` run in every child forked from now on (none on Windows, which does not fork),
    as a decorator: module state a thread of the parent held at the fork (a lock, a record) set
    as that thread, not in the child, would leave it. The fork does not wait for that thread, as
    it waits for a :class:`ForkSafeLock`'s: a training or an export holds its lock for minutes."""
    if sys.platform != "win32":
        os.register_at_fork(after_in_child=renew)
    return renew


class ForkSafeLock:
    """A lock that a fork waits for (``os.register_at_fork``): the forking thread takes it
    before the fork and lets it go after, and the child makes its own anew, so that no other
    thread is halfway through a block at the fork (the child was left ignoring warnings, or
    with stderr on the null device: that thread, not in the child, was to put them back). A
    block in progress only delays a fork (an ONNX export holds none throughout: it adds its
    filter with :func:`ignore_for_good`). An RLock, so that a fork from inside a block by its
    own thread takes it again rather than waiting for itself; no
    block takes another of these locks, so a fork's taking them all in turn cannot deadlock.
    ``in_child``: what sets the state the lock guards back in the child where a block works
    outside the lock (a DICOM decode), as if no thread were inside (the threads inside are not
    there to finish theirs). Taken as ``with lock.held():``."""

    def __init__(self, in_child: Callable[[], None] | None = None) -> None:
        self._in_child = in_child
        self.lock = threading.RLock()
        self._forking = threading.local()
        if sys.platform != "win32":
            os.register_at_fork(before=self._take, after_in_parent=self._let_go,
                                after_in_child=self._renew)

    def _take(self) -> None:
        """The lock taken for a fork (the one of now: a child's own, in a child that forks),
        as this thread's to let go: a Ctrl-C while it waits raises out of the hook, which
        Python passes over and forks all the same, and a lock not taken is not let go (an
        RLock this thread held in a block was let go under it)."""
        self._forking.taken = False
        self._forking.taken = self.lock.acquire()

    def _let_go(self) -> None:
        """The parent's lock, where this thread took it for the fork, let go."""
        if getattr(self._forking, "taken", False):
            self._forking.taken = False
            self.lock.release()

    def _renew(self) -> None:
        """The child's own lock, free, and its state as no block left it."""
        self.lock = threading.RLock()
        self._forking = threading.local()
        if self._in_child is not None:
            self._in_child()

    @contextmanager
    def held(self) -> Iterator[None]:
        """The lock held for the block; a block of another of these locks in it is an
        AssertionError (a fork from another thread, taking them in turn, could deadlock)."""
        held = _HELD.__dict__.setdefault("locks", [])
        assert all(lock is self for lock in held), "a ForkSafeLock's block takes another"
        with self.lock:
            held.append(self)
            try:
                yield
            finally:
                held.pop()


_HELD = threading.local()
"""The :class:`ForkSafeLock` blocks this thread is in (its ``locks``)."""


_WARNINGS_LOCK = ForkSafeLock()
"""Held by every :func:`quiet_warnings` block, and while :func:`ignore_for_good` adds its
filter."""


@contextmanager
def quiet_warnings(category: type[Warning] = Warning) -> Iterator[None]:
    """Python warnings of ``category`` ignored for the block. ``warnings.catch_warnings`` saves
    the process's whole filter list and puts it back at the block's end, so two threads' blocks
    that overlapped put back each other's (an "ignore" filter was left for good); covseg's own
    blocks take turns under one lock. A filter another thread adds during a block is still
    dropped at its end (the standard library's catch_warnings is not thread-safe)."""
    with _WARNINGS_LOCK.held(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category)
        yield


def ignore_for_good(category: type[Warning], message: str) -> None:
    """Python warnings of ``category`` whose text starts with the regular expression
    ``message`` ignored in every thread from now on (one filter at the front of the list; an
    equal one already there is moved there), added under :func:`quiet_warnings`' lock so that
    no block of it puts back a list without it. For a warning no covseg user can act on, given
    in a step too long to hold that lock (an ONNX export, seconds to minutes). Not taken out
    again: a filter taken out at the step's end raced with other threads' filters (an equal
    filter added meanwhile was the one removed; another thread's ``catch_warnings`` block
    spanning the end put it back for good)."""
    with _WARNINGS_LOCK.held():
        warnings.filterwarnings("ignore", message, category)


@contextmanager
def warnings_logged_quiet(name: str, least: int = logging.ERROR) -> Iterator[None]:
    """Python logger ``name`` and its children at level ``least`` for the block: timm warned of
    "Unexpected keys" in a weights file covseg had checked, once per build, three times a run.
    ``least`` above CRITICAL quiets errors too: those a library logs and then raises, which
    covseg words itself."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(least)
    try:
        yield
    finally:
        logger.setLevel(level)


_quiet_state: dict[str, Any] = {"depth": 0, "warnings_shown": True, "decoders": 0,
                                "saved_fd": -1}
"""Readers inside :func:`quiet_libraries` (threads, or nested calls): the first one in turns
ITK's warnings off (sends stderr away, of those ``decoding``) and the last one out turns them
back on (restores stderr), so that interleaved readers never save each other's null device as
the stream to restore (which silenced the process for good)."""


def _no_reader_inside() -> None:
    """A forked child's quieting as no reader left it: a parent's thread reading at the fork is
    not there to give back stderr (the child's was on the null device for good) and ITK's
    warnings."""
    if _quiet_state["decoders"]:
        stderr_back(_quiet_state["saved_fd"])
    if _quiet_state["depth"]:
        import SimpleITK as sitk  # imported by the reader inside

        sitk.ProcessObject.SetGlobalWarningDisplay(_quiet_state["warnings_shown"])
    _quiet_state.update(depth=0, decoders=0, saved_fd=-1)


_QUIET_LOCK = ForkSafeLock(in_child=_no_reader_inside)


@contextmanager
def quiet_libraries(decoding: bool = False) -> Iterator[None]:
    """ITK's warnings off meanwhile (a DICOMDIR tree's upper folders made it warn "No Series
    were found") and, while ``decoding`` compressed pixels, the process's stderr (file
    descriptor 2, where OpenJPEG and GDCM print dozens of lines for one undecodable file) sent
    to the null device; covseg reports what went wrong in one line. The null device is the
    whole process's stderr, other threads' included: it is kept to that decode. SimpleITK is
    imported here, not with this module (which everything imports)."""
    import SimpleITK as sitk

    with _QUIET_LOCK.held():
        if _quiet_state["depth"] == 0:
            _quiet_state["warnings_shown"] = sitk.ProcessObject.GetGlobalWarningDisplay()
            sitk.ProcessObject.SetGlobalWarningDisplay(False)
        if decoding and _quiet_state["decoders"] == 0:
            _quiet_state["saved_fd"] = stderr_to_null()
        _quiet_state["depth"] += 1
        _quiet_state["decoders"] += decoding
    try:
        yield
    finally:
        with _QUIET_LOCK.held():
            _quiet_state["depth"] -= 1
            _quiet_state["decoders"] -= decoding
            if decoding and _quiet_state["decoders"] == 0:
                stderr_back(_quiet_state["saved_fd"])
            if _quiet_state["depth"] == 0:
                sitk.ProcessObject.SetGlobalWarningDisplay(_quiet_state["warnings_shown"])
