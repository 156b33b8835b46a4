"""What every benchmark script does as a command: covseg's one-line errors stay one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from covseg.errors import CovsegError


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
