"""The ``covseg`` console script: signal handling first, then the command line.

Importing covseg's command line loads PyTorch (about 3 s of CPU; MONAI is imported where
used); Ctrl-C or ``kill`` in that time would print Python's traceback or die without a word.
This module lies outside the covseg package, so that it runs before that import and ends such a
stop as every command does: one line and exit status 130 / 143.

Outside a command's work (:func:`covseg.stopping.stops_recorded`, whose handlers unwind it and
give the rerun hints) the handlers here end the process at once, for the whole life of the
process: parsing the command line, ``--help`` and ``--version``, the error line, the flush of
the command's lines, the end of the process (its threads waited for, atexit callbacks). A stop
there was a KeyboardInterrupt traceback, also after a finished command with exit status 0. The
process then ends without Python's teardown (:func:`_exit`), where Python gave the handlers up.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import threading
from contextlib import suppress
from types import FrameType
from typing import NoReturn, TextIO

STOPPED = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "stopped"),
           **({signal.SIGHUP: (129, "stopped")} if hasattr(signal, "SIGHUP") else {})}
"""Exit status and word of each stop outside a command's work (no SIGHUP on Windows)."""

REMOVED_AT_END: list[str] = []
"""Temporary folders removed at exit (:mod:`covseg._mplconfig`'s), by :func:`_remove_at_end`."""


def _remove_at_end() -> None:
    """Remove the folders of :data:`REMOVED_AT_END`: an atexit callback, also called by
    :func:`_end`, whose ``os._exit`` skips atexit's callbacks."""
    for folder in REMOVED_AT_END:
        shutil.rmtree(folder, ignore_errors=True)


atexit.register(_remove_at_end)


def _flush(stream: TextIO | None) -> bool:
    """Write out ``stream`` (stdout, stderr); True where its reader was gone (a broken pipe). A
    stream that is full, closed or cut short (a flush that a stop interrupted, flushed again
    from its handler: ``RuntimeError``) is left as it is: what was written stands."""
    try:
        if stream is not None:
            stream.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError, RuntimeError):
        pass
    return False


def _end(signum: int, when: str) -> None:
    """Write out the command's lines, say ``covseg: WORD WHEN`` and end the process at once:
    an exception raised here could land in a callback the import machinery runs (a module
    lock's), an atexit callback or a finaliser, where Python prints it as ignored and goes on.
    The line is written below Python's streams (one that the stop cut short refuses a write);
    :data:`REMOVED_AT_END` is removed first."""
    status, word = STOPPED[signal.Signals(signum)]
    _remove_at_end()
    _flush(sys.stdout)
    with suppress(OSError):  # stderr closed or full: the status says it
        os.write(2, f"covseg: {word} {when}\n".encode())
    os._exit(status)


def stopped_while_starting(signum: int, _: FrameType | None) -> None:
    """End a stop that lands before the command's work began (covseg loading, the command line
    read, ``--help``)."""
    _end(signum, "while starting; nothing was done")


def stopped_as_it_ended(signum: int, _: FrameType | None) -> None:
    """End a stop that lands once the command's work is over (its last lines, Python's exit):
    what it wrote is whole, and its lines above say how it went."""
    _end(signum, "as the command ended; nothing was left half-done")


def stopped_after_it_failed(signum: int, _: FrameType | None) -> None:
    """End a stop that lands once the command's work was stopped or failed (after its error
    line or rerun hint, which are written whole first; Python's exit): its files are as the
    first stop or the error left them, a half-trained run perhaps, so nothing is claimed."""
    _end(signum, "as the command ended")


def main() -> NoReturn:
    """Run ``covseg``; a stop outside the command's work exits 130 (Ctrl-C), 143 (SIGTERM) or
    129 (SIGHUP) with one line, but where the stop is ignored (``nohup``, a background job of
    a script)."""
    for stop in STOPPED:
        if signal.getsignal(stop) is not signal.SIG_IGN:
            signal.signal(stop, stopped_while_starting)
    from covseg.cli import main as run

    try:
        status = run()
    except SystemExit as exc:  # argparse's, after --help, --version or a usage error
        if not isinstance(exc.code, int):
            raise
        status = exc.code
    _exit(status)


def _exit(status: int) -> NoReturn:
    """End the process with ``status`` as Python's exit would, the handlers above in place:
    Python put back its default ones (a stop ended the process without a word) and then spent
    about 2 s freeing PyTorch's modules, work with nothing left to write. The non-daemon
    threads are waited for, the atexit callbacks run (logging's flush, multiprocessing's and
    Ray's clean-up, :func:`_remove_at_end`), and stdout and stderr written out (a closed
    stdout pipe ends with :data:`covseg.cli.STDOUT_CLOSED`, as in the command); then
    ``os._exit``, which skips the teardown."""
    from covseg.cli import STDOUT_CLOSED

    threading._shutdown()  # type: ignore[attr-defined]  # Python's first step of its exit
    atexit._run_exitfuncs()
    if _flush(sys.stdout):
        status = STDOUT_CLOSED
    _flush(sys.stderr)  # stderr gone, full or closed: the status says it
    os._exit(status)
