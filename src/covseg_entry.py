"""The ``covseg`` console script: signal handling first, then the command line.

Importing covseg loads PyTorch (about 3 s of CPU; MONAI is imported where used); Ctrl-C or
``kill`` in that time would print Python's traceback or die without a word. This module lies
outside the covseg package, so that it runs before that import and ends such a stop as every
command does: one line and exit status 130 / 143.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

STOPPED = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "stopped"),
           **({signal.SIGHUP: (129, "stopped")} if hasattr(signal, "SIGHUP") else {})}
"""Exit status and word of each stop while covseg loads (no SIGHUP on Windows)."""


def _stopped_while_loading(signum: int, _: FrameType | None) -> None:
    """End the process at once: an exception raised here could land in a callback the import
    machinery runs (a module lock's), where Python prints it as ignored and goes on."""
    status, word = STOPPED[signal.Signals(signum)]
    print(f"covseg: {word} while starting; nothing was done", file=sys.stderr, flush=True)
    os._exit(status)


def main() -> int:
    """Run ``covseg``; a stop while covseg is imported exits 130 (Ctrl-C), 143 (SIGTERM) or
    129 (SIGHUP), but where the stop is ignored (``nohup``, a background job of a script)."""
    previous = {stop: signal.getsignal(stop) for stop in STOPPED}
    for stop, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(stop, _stopped_while_loading)
    from covseg.cli import main as run

    for stop, handler in previous.items():
        signal.signal(stop, handler)
    return run()
