"""What every benchmark script does as a command: covseg's one-line errors stay one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
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
