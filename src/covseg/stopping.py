"""Ctrl-C, SIGTERM and SIGHUP that cannot be lost.

A signal's handler runs at whatever bytecode Python is at. When that is a finaliser (tqdm's
``__del__``, a weakref callback), Python prints the exception as "Exception ignored in ..." and
drops it: a ``kill`` at the end of an ensemble run was printed as a traceback and the run went
on to exit 0. So the handlers installed by :func:`stops_recorded` also record the stop, and the
command (or API function) calls :func:`raise_if_stopped` at safe points (after each epoch and
each study, before final metrics, at its end).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from covseg.io.quiet import in_forked_child
from covseg_entry import (
    STOPPED,
    stopped_after_it_failed,
    stopped_as_it_ended,
    stopped_while_starting,
)


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

_SAID: dict[type[BaseException], tuple[int, str]] = {kind: STOPPED[signal.Signals(signum)]
                                                     for signum, kind in STOPS.items()}
"""The exit status and word of each stop, :data:`covseg_entry.STOPPED`'s: 128 + its signal's
number, as a shell shows a process that the signal ended."""


def _stopped(stop: BaseException) -> tuple[int, str]:
    """The exit status and word of the stop ``stop``, found by its own class first: a
    :class:`HungUp` is a :class:`Terminated` too."""
    return next(_SAID[kind] for kind in type(stop).__mro__ if kind in _SAID)


def exit_status(stop: BaseException) -> int:
    """The exit status for the stop ``stop`` (a subclass of one of :data:`STOPS`')."""
    return _stopped(stop)[0]


def stop_word(stop: BaseException) -> str:
    """How the stop ``stop`` is said: "interrupted" (Ctrl-C) or "stopped"."""
    return _stopped(stop)[1]


_asked: list[type[BaseException]] = []
"""The stops received while :func:`stops_recorded` is active, first first; none in a child
process forked meanwhile (:func:`_none_asked_in_child`)."""


@in_forked_child
def _none_asked_in_child() -> None:
    """A forked child's record emptied: one forked between a stop Python dropped and the next
    check (a ``multiprocessing`` "fork" process, whose forking thread is its main thread) raised
    its parent's stop at its own first check."""
    _asked.clear()


def _record_and_raise(signum: int, _: FrameType | None) -> None:
    """Remember the stop, then raise it (where Python may drop it: see the module's text)."""
    stop = STOPS[signum]
    _asked.append(stop)
    raise stop


def raise_if_stopped() -> None:
    """Raise the first stop received, if any: one raised inside a finaliser was dropped. In
    the main thread alone, where Python raises a stop: a call another thread makes meanwhile
    (:func:`stops_recorded` does nothing there) goes on, as it would without covseg's record."""
    if _asked and threading.current_thread() is threading.main_thread():
        raise _asked[0]


ENDED_AT_ONCE = (stopped_while_starting, stopped_as_it_ended, stopped_after_it_failed)
"""The ``covseg`` script's handlers outside a command's work (:mod:`covseg_entry`): replaced
during the work as Python's defaults are, and put back as :func:`stopped_as_it_ended` where it
ended normally, else :func:`stopped_after_it_failed` (which claims nothing of its files), so
that a stop after the work is one line, not a traceback."""


def _quiet_about_stops(previous: Callable[[Any], object]) -> Callable[[Any], object]:
    """An unraisable-exception hook that prints nothing for a recorded stop (it is raised again
    at the next safe point) and passes anything else to ``previous``."""
    def hook(unraisable: Any) -> None:
        if not (_asked and isinstance(unraisable.exc_value, tuple(STOPS.values()))):
            previous(unraisable)

    return hook


_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
"""A stop's handler as :func:`signal.getsignal` gives it (None: one Python did not set)."""


def _ended_as_it_went(handler: _Handler, finished: bool) -> _Handler:
    """The handler to put back after :func:`stops_recorded`'s block for ``handler``: the
    ``covseg`` script's (:data:`ENDED_AT_ONCE`) as :func:`stopped_as_it_ended` where the block
    ``finished``, else :func:`stopped_after_it_failed`; any other as it was."""
    if handler not in ENDED_AT_ONCE:
        return handler
    return stopped_as_it_ended if finished else stopped_after_it_failed


@contextmanager
def _handlers_put_back(put_back: Callable[[_Handler, bool], _Handler]
                       ) -> Iterator[dict[int, _Handler] | None]:
    """Yield the stops' handlers before the block, for it to replace, and put each back after
    it (where Python set it) as ``put_back(handler, whether the block finished)`` says. Off
    the main thread, where handlers cannot be set, yield None and do nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    previous = {signum: signal.getsignal(signum) for signum in STOPS}
    finished = False
    try:
        yield previous
        finished = True
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, put_back(handler, finished))


def _recording() -> bool:
    """Whether a :func:`stops_recorded` block is running (in any thread): its handlers are set."""
    return any(signal.getsignal(signum) is _record_and_raise for signum in STOPS)


def _replaced(signum: int, handler: _Handler) -> bool:
    """Whether :func:`stops_recorded` records the stop ``signum`` in place of its ``handler``:
    SIGTERM whatever it is; Ctrl-C where it is Python's own (not ignored, as in a background
    job); SIGHUP where it is the default (not ignored, as under ``nohup``); either where it is
    the ``covseg`` script's (:data:`ENDED_AT_ONCE`)."""
    if signum == signal.SIGTERM:
        return True
    usual = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    return handler in (usual, *ENDED_AT_ONCE)


def wrapped_stop(exc: BaseException) -> BaseException | None:
    """The stop (an exception of :data:`STOPS`) that ``exc`` was raised from or while handling,
    if any: Python 3.11 wraps one raised inside ``__set_name__`` (a class body of a module being
    imported, matplotlib's as a command starts) in a RuntimeError "Error calling __set_name__",
    which a Ctrl-C then printed as a traceback with exit status 1."""
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, tuple(STOPS.values())):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


@contextmanager
def stops_recorded(stops: Collection[int] = tuple(STOPS)) -> Iterator[None]:
    """Run the block with the ``stops`` (signal numbers, all of :data:`STOPS` by default)
    raising their exception and recorded for :func:`raise_if_stopped`: SIGTERM
    :class:`Terminated`, Ctrl-C KeyboardInterrupt and SIGHUP :class:`HungUp`, each where
    :func:`_replaced` says; then the handlers before it, but the ``covseg`` script's
    (:data:`ENDED_AT_ONCE`), which become :func:`stopped_as_it_ended` or, where the block
    raised, :func:`stopped_after_it_failed`. Inside another such block (an API function that
    the CLI or another API function calls) the outer one records, and its record is kept: the
    inner one does nothing. An error wrapping a stop (:func:`wrapped_stop`) leaves the block as
    that stop. Off the main thread, handlers cannot be set: nothing is done."""
    if _recording():
        yield
        return
    previous: dict[int, _Handler] | None = None
    try:
        with _handlers_put_back(_ended_as_it_went) as previous:
            if previous is None:
                yield
                return
            for signum in stops:
                if signum in previous and _replaced(signum, previous[signum]):
                    signal.signal(signum, _record_and_raise)
            hook = sys.unraisablehook
            sys.unraisablehook = _quiet_about_stops(hook)
            try:
                yield
            except Exception as exc:
                stop = wrapped_stop(exc)
                if stop is None:
                    raise
                raise stop from None
            finally:
                sys.unraisablehook = hook
    finally:
        if previous is not None:  # once the handlers are back: none landing before stays
            _asked.clear()


@contextmanager
def stops_held() -> Iterator[None]:
    """Hold the stops back while the block runs (a command's last line: its error, its rerun
    hint; an epoch's checkpoints and log row), so that a Ctrl-C or ``kill`` cannot cut it off
    halfway: one received meanwhile is raised again after it, to the handler before. Python's
    handlers, not the signal mask, which holds a signal back from one thread only (PyTorch's
    threads took it). Off the main thread, handlers cannot be set: nothing is done."""
    held: list[int] = []
    try:
        with _handlers_put_back(lambda handler, _: handler) as previous:
            for signum, handler in (previous or {}).items():
                if callable(handler):
                    signal.signal(signum, lambda signum, _: held.append(signum))
            yield
    finally:
        if held:
            signal.raise_signal(held[0])
