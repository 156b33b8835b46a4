"""What the benchmark scripts share as commands: covseg's one-line errors stay one line, counts
are checked by argparse, and runs are named alike in every table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from covseg.errors import CovsegError


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum``, so that a nonsensical count
    is refused in one line before any work."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: give {minimum} or more")
        return value

    return whole_number


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """Exit with ``main()``'s status; a :class:`CovsegError` (a wrong path, a folder of the wrong
    kind) is printed as ``SCRIPT: error: ...`` with status 2, as argparse's own errors are,
    not as a traceback."""
    try:
        status = main()
    except CovsegError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status)


def run_labels(runs: Sequence[Path]) -> dict[Path, str]:
    """Each run's name in the tables: the fewest trailing parts of its resolved path that no
    other run's path ends in (``cv`` alone; ``a/cv`` and ``b/cv`` together: named by the folder
    alone, two runs called ``cv`` shared one entry and their slices were mixed). A folder given
    twice is refused in one line."""
    resolved = [run.resolve() for run in runs]
    twice = [str(run) for run, path in zip(runs, resolved, strict=True)
             if resolved.count(path) > 1]
    if twice:
        raise CovsegError(f"{' and '.join(twice)}: the same run given twice; give each run once")
    labels = {}
    for run, path in zip(runs, resolved, strict=True):
        others = [other.parts for other in resolved if other != path]
        depth = next(n for n in range(1, len(path.parts) + 1)
                     if all(other[-n:] != path.parts[-n:] for other in others))
        labels[run] = Path(*path.parts[-depth:]).as_posix()
    return labels
