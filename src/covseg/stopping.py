"""Ctrl-C, SIGTERM and SIGHUP that cannot be lost.

A signal's handler runs at whatever bytecode Python is at. When that is a finaliser (tqdm's
``__del__``, a weakref callback), Python prints the exception as "Exception ignored in ..." and
drops it: a ``kill`` at the end of an ensemble run was printed as a traceback and the run went
on to exit 0. So the handlers installed by :func:`stops_recorded` also record the stop, and the
command calls :func:`raise_if_stopped` at safe points (after each epoch, before final metrics,
at its end).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from covseg_entry import stopped_as_it_ended, stopped_while_starting


class Terminated(BaseException):
    """SIGTERM (``kill``, a job scheduler), raised so that the command unwinds as on Ctrl-C; a
    BaseException like KeyboardInterrupt, so that libraries' ``except Exception`` (MONAI wraps
    errors raised in its transforms) let it through."""


class HungUp(Terminated):
    """SIGHUP (the terminal closed, an SSH connection dropped without ``nohup``): stops as
    SIGTERM does, where it killed the process without a line or a record of its work."""


STOPS: dict[int, type[BaseException]] = {
    signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated,
    **({signal.SIGHUP: HungUp} if hasattr(signal, "SIGHUP") else {})}
"""The exception each stop raises (no SIGHUP on Windows)."""

EXIT_STATUS: dict[type[BaseException], int] = {KeyboardInterrupt: 130, HungUp: 129,
                                               Terminated: 143}
"""The exit status of each stop: 128 + its signal's number, as a shell shows a process that the
signal ended."""


def exit_status(stop: BaseException) -> int:
    """The exit status for the stop ``stop`` (a subclass of one of :data:`EXIT_STATUS`'s)."""
    return next(status for kind, status in EXIT_STATUS.items() if isinstance(stop, kind))

_asked: list[type[BaseException]] = []
"""The stops received while :func:`stops_recorded` is active, first first."""


def _record_and_raise(signum: int, _: FrameType | None) -> None:
    """Remember the stop, then raise it (where Python may drop it: see the module's text)."""
    stop = STOPS[signum]
    _asked.append(stop)
    raise stop


def raise_if_stopped() -> None:
    """Raise the first stop received, if any: one raised inside a finaliser was dropped."""
    if _asked:
        raise _asked[0]


ENDED_AT_ONCE = (stopped_while_starting, stopped_as_it_ended)
"""The ``covseg`` script's handlers outside a command's work (:mod:`covseg_entry`): replaced
during the work as Python's defaults are, and put back as :func:`stopped_as_it_ended`, so that a
stop after the work is one line, not a traceback."""


def _quiet_about_stops(previous: Callable[[Any], object]) -> Callable[[Any], object]:
    """An unraisable-exception hook that prints nothing for a recorded stop (it is raised again
    at the next safe point) and passes anything else to ``previous``."""
    def hook(unraisable: Any) -> None:
        if not (_asked and isinstance(unraisable.exc_value, tuple(STOPS.values()))):
            previous(unraisable)

    return hook


@contextmanager
def stops_recorded() -> Iterator[None]:
    """Run the block with SIGTERM raising :class:`Terminated`, Ctrl-C KeyboardInterrupt (unless
    it is ignored, as in a background job) and SIGHUP :class:`HungUp` (unless it is ignored, as
    under ``nohup``), all recorded for :func:`raise_if_stopped`; then the handlers before it,
    but the ``covseg`` script's (:data:`ENDED_AT_ONCE`), which become :func:`stopped_as_it_ended`.
    Off the main thread, handlers cannot be set: nothing is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOPS}
    signal.signal(signal.SIGTERM, _record_and_raise)
    if previous[signal.SIGINT] in (signal.default_int_handler, *ENDED_AT_ONCE):
        signal.signal(signal.SIGINT, _record_and_raise)
    if (getattr(signal, "SIGHUP", None) in previous
            and previous[signal.SIGHUP] in (signal.SIG_DFL, *ENDED_AT_ONCE)):
        signal.signal(signal.SIGHUP, _record_and_raise)
    hook = sys.unraisablehook
    sys.unraisablehook = _quiet_about_stops(hook)
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, stopped_as_it_ended if handler in ENDED_AT_ONCE
                              else handler)
        _asked.clear()
