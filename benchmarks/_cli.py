"""What the benchmark scripts share as commands: covseg's one-line errors stay one line, counts
are checked by argparse, JSON outputs are checked before any work, ``--help`` shows the whole
summary, and runs are named alike in every table. It loads no torch (timed_train.py's monitor
imports it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from covseg.errors import CovsegError
from covseg.io.atomic import writable_folder


def description(doc: str) -> str:
    """A script's ``--help`` description: its docstring's first paragraph, joined into one line
    for argparse to wrap (its first line alone cut a wrapped sentence in the middle)."""
    return " ".join(doc.split("\n\n")[0].split())


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


def json_output(path: Path, option: str) -> Path:
    """``path`` as the JSON file a script writes at its end, checked before any work: a folder
    there, or a place that cannot be written to, failed only after all of it (a traceback, the
    figures lost). ``option``: the option that names it (``--out``), which the error says to
    change."""
    if path.is_dir():
        raise CovsegError(f"{path}: is a folder; give {option} the JSON file to write, e.g. "
                          f"{path / 'figures.json'}")
    writable_folder(path.parent, option)
    return path


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
