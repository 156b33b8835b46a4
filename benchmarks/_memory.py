"""The resident memory of a process and every process it started, sampled: how the benchmarks
measure training, whose ensemble members train in processes of their own (a fork server and
one process per member), which the process's own peak (``getrusage(RUSAGE_SELF)``) leaves out.

Linux only: it reads /proc itself rather than add psutil, which covseg does not otherwise need,
for the benchmarks; it loads no torch (timed_train.py's monitor imports it).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
"""/proc/PID/statm counts pages; 4 KiB on x86_64, larger on some ARM kernels."""


def peak_rss_kib(who: int = resource.RUSAGE_SELF) -> int:
    """The kernel's record of the peak resident memory of this process (``RUSAGE_SELF``) or
    of its largest waited-for child (``RUSAGE_CHILDREN``), in KiB: ``getrusage`` gives KiB on
    Linux and bytes on macOS, which the scripts read as KiB (1024 times too large)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident KiB) of every process on the machine, from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/statm"):
        try:
            resident = int(stat.read_text().split()[1]) * PAGE_KIB
            fields = (stat.parent / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while being read
        found[int(stat.parent.name)] = (int(fields[1]), resident)
    return found


def tree_rss_kib(root: int) -> int:
    """Summed resident memory of ``root`` and all its descendants."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += processes.get(pid, (0, 0))[1]
        stack.extend(children.get(pid, []))
    return total


class TreePeak:
    """The largest :func:`tree_rss_kib` of ``root`` (``kib``), sampled every ``interval``
    seconds in a thread while the ``with`` block runs: a lower bound of the tree's peak, by up
    to a peak shorter than ``interval``, which the callers raise to a single process's own peak
    as the kernel records it."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        self.root, self.interval, self.kib = root, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.kib = max(self.kib, tree_rss_kib(self.root))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
