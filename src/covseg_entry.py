"""The ``covseg`` console script: signal handling first, then the command line.

Importing covseg loads PyTorch and MONAI (3-5 s on 2 cores); Ctrl-C or ``kill`` in that time
would print Python's traceback or die without a word. This module lies outside the covseg
package, so that it runs before that import and ends such a stop as every command does: one
line and exit status 130 / 143.
"""

from __future__ import annotations

import signal
import sys
from typing import Any, NoReturn


def _stopped_while_loading(*_: Any) -> NoReturn:
    print("covseg: stopped while starting; nothing was done", file=sys.stderr)
    raise SystemExit(143)


def main() -> int:
    """Run ``covseg``; a stop while covseg is imported exits 130 (Ctrl-C) or 143 (SIGTERM)."""
    previous = signal.signal(signal.SIGTERM, _stopped_while_loading)
    try:
        from covseg.cli import main as run
    except KeyboardInterrupt:
        print("covseg: interrupted while starting; nothing was done", file=sys.stderr)
        return 130
    signal.signal(signal.SIGTERM, previous)
    return run()
