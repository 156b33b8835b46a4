"""Facts about files worked out once for each version of a file in this process (its SHA-256,
whether a checkpoint loads): a file is read again only once it changed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from stat import S_ISREG
from typing import Any, TypeVar, cast

_Fact = TypeVar("_Fact")
_FILE_FACTS: dict[tuple[object, ...], Any] = {}
""":func:`file_fact`'s facts, by what they are and :func:`_file_identity`."""

RECENT_NS = 100_000_000
"""A file changed within this long (0.1 s) is hashed again: the file times the kernel sets
may tick coarser than that, so a rewrite as large may leave them as they were."""


def _file_identity(file: Path) -> tuple[object, ...] | None:
    """A model file's path, device, inode, size and change times, which any rewrite changes;
    None for no plain file, or one changed too recently for its times to tell
    (:data:`RECENT_NS`)."""
    try:
        stat = file.stat()
    except OSError:
        return None
    if (not S_ISREG(stat.st_mode)
            or max(stat.st_mtime_ns, stat.st_ctime_ns) > time.time_ns() - RECENT_NS):
        return None
    return (str(file.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns,
            stat.st_ctime_ns)


def file_version(path: Path) -> tuple[int, int] | None:
    """Which write of ``path`` it holds (its inode and modification time: an atomic write
    changes both), None without one: a later stat tells whether it was written since."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns


def file_fact(file: Path, what: str, work_out: Callable[[Path], _Fact]) -> _Fact:
    """``work_out(file)``, the file's ``what`` (its SHA-256, whether a checkpoint loads), worked
    out again only once the file changed (:func:`_file_identity`): kept in this process for
    each file identity and ``what``."""
    identity = _file_identity(file)
    if identity is None:
        return work_out(file)
    key = (what, *identity)
    if key not in _FILE_FACTS:
        fact = work_out(file)
        if _file_identity(file) != identity:  # written while it was read: not kept
            return fact
        _FILE_FACTS[key] = fact
    return cast(_Fact, _FILE_FACTS[key])
