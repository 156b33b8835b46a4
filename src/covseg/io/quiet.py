"""The process's stderr (file descriptor 2) sent away while a C or C++ library prints there:
covseg says what went wrong in one line, and the library's own lines came before it. A Python
library's logger is quieted where covseg has checked what it would warn of, and a Python
warning where covseg says the same in its own words."""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def stderr_to_null() -> int:
    """Send file descriptor 2 to the null device; return a copy of what it was, or -1 for a
    process without one (pythonw, a closed stderr), where there is nothing to keep quiet."""
    if sys.stderr is not None:
        sys.stderr.flush()
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


class ForkSafeLock:
    """A lock (an RLock where ``reentrant``: a block may hold another) that a forked child makes
    anew (``os.register_at_fork``): a parent's thread that held it is not there to let it go,
    so the child's first block waited for good. ``in_child``: what sets the state the lock
    guards back in the child, as if no thread were inside a block (those threads are not there
    to finish theirs). Taken as ``with lock.held():``, which lets go of the lock it took, also
    where a fork came in between."""

    def __init__(self, reentrant: bool = False, in_child: Callable[[], None] | None = None
                 ) -> None:
        self._make = threading.RLock if reentrant else threading.Lock
        self._in_child = in_child
        self.lock = self._make()
        if sys.platform != "win32":
            os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        """The child's own lock, free, and its state as no block left it."""
        self.lock = self._make()
        if self._in_child is not None:
            self._in_child()

    @contextmanager
    def held(self) -> Iterator[None]:
        """The lock held for the block."""
        with self.lock:
            yield


_WARNINGS_LOCK = ForkSafeLock(reentrant=True)
"""Held by every :func:`quiet_warnings` block (an ONNX export holds it throughout)."""


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


@contextmanager
def warnings_logged_quiet(name: str) -> Iterator[None]:
    """Python logger ``name`` and its children at ERROR for the block: timm warned of
    "Unexpected keys" in a weights file covseg had checked, once per build, three times a run."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
