"""The stage a study is in (reading the CT, finding the lungs...), named as it starts.

A large CT spends minutes in stages that have no bar of their own (reading, the lungs, the
lesion rule, writing), during which a batch showed only ``predict: 0/1``. The study functions
name each stage with :func:`stage`; a batch shows it on its study bar (:class:`StageBar`), and
a call outside of a batch shows nothing. Carried in a context variable, so that the study
functions' signatures (recorded as a run's options) stay as they are.

Every covseg bar comes from :func:`progress_bar`, which ``TQDM_DISABLE=1`` turns off (read at
each call, so a notebook may set it after importing covseg) and which updates at most every 30 s
where stderr is a log file, a pipe or a terminal without cursor movement (``TERM=dumb``), each
update a line of its own; a study's slice bar
(:func:`slice_bar`) is drawn below its batch's bar, except in a notebook.

tqdm's write lock (one for all bars) is left held where an exception lands in a bar's redraw:
tqdm's ``refresh`` takes it and lets it go without ``try``/``finally``, and in a notebook a kernel
interrupt often lands there (in the stream's flush). The thread that held it takes it again at
will, every other waits for it forever: the next ``quantify`` hung the kernel, its stage thread
waiting on the lock and the main thread on the stage thread. So covseg never waits for that lock
without a limit from a thread of its own (:data:`LOCK_WAIT_S`), and each of its bars first gives
tqdm a fresh lock where the thread making it holds tqdm's (:func:`_unstick_tqdm`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any, TypeVar

from tqdm import tqdm

from covseg.console import STDERR
from covseg.errors import terminal_safe

T = TypeVar("T")

Reporter = Callable[[str], None]
"""Takes the name of the stage a study has just entered."""

_REPORTER: ContextVar[Reporter | None] = ContextVar("covseg_stage_reporter", default=None)

SHOW_AFTER_S = 0.5
"""A stage is drawn on the study bar once it has lasted this long (0: as it starts): the
stages of a batch of small studies, milliseconds each, are not drawn, so a log of the bar is
not filled with them."""


LOCK_WAIT_S = 1.0
"""Seconds the stage thread waits for tqdm's write lock (a redraw holds it for milliseconds)
before it skips its redraw."""


def silenced() -> bool:
    """Whether the environment turns progress bars off (``TQDM_DISABLE`` set, not to 0/false).

    Read at each call: tqdm reads it once, when it is imported, and a bar given ``disable=``
    (as covseg's small-batch bars were) ignored it."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


LOGGED_EVERY_S = 30.0
"""Seconds between a bar's updates where stderr is a log file or a pipe (not a terminal, not a
notebook): a 2-fold, 30-epoch cv wrote 194 updates (18 KB) to a scheduler's log as one line of
``\\r``-joined text; its first and last states are always written."""


def _logged() -> bool:
    """Whether stderr goes to a log (a file, a pipe) or to a terminal that cannot move its
    cursor (``TERM=dumb``: Emacs's shell, an editor's console, where tqdm's ``\r`` redraws and
    the ESC[A of a second bar showed as text): not a terminal that can, nor a notebook's
    stream, which redraws a bar in place."""
    if type(sys.stderr).__module__.startswith("ipykernel"):
        return False
    return not _stderr_is_terminal() or os.environ.get("TERM") == "dumb"


def progress_bar(iterable: Iterable[T] | None = None, *, quiet: bool = False,
                 **options: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or of ``total=``), off where ``quiet``, where
    :func:`silenced` or where stderr is closed, updated every :data:`LOGGED_EVERY_S` at most
    where stderr is a log. It draws on :data:`~covseg.console.STDERR`: a stderr that fails a
    write (``2>/dev/full``) stops the drawing, not the command."""
    _unstick_tqdm()
    disable = quiet or silenced() or sys.stderr is None
    options = {"file": STDERR, **options}
    if _logged():
        return _LoggedBar(iterable, disable=disable,
                          **{"mininterval": LOGGED_EVERY_S, "miniters": 1, **options})
    return tqdm(iterable, disable=disable, **options)


class _LoggedBar(tqdm):
    """A bar written to a log: each update a line of its own, naming the bar, with no ``\\r``
    redraw and no cursor movement. tqdm moved a positioned bar (an ensemble's members, trained
    side by side) to its line with ESC[A, and the members' updates ran together on one line.
    Its time is checked at each update (``miniters=1``): with tqdm's own count of updates
    between checks, its monitor thread redrew the bar 10 s after each line, the count the
    line before had (an iterated bar's is kept aside until written) at a later time.

    New figures (training's loss and Dice each epoch) are drawn with the bar's next timed
    update, not at once, which wrote an update per epoch however seldom the bar updated. A
    study's stage (``set_postfix_str``, drawn once it has lasted :data:`SHOW_AFTER_S`, a few per
    study) is still drawn as it comes: a log of a long study says what it is doing."""

    leave: bool | None
    """tqdm's: whether the bar's last state stays written (None: the bar at position 0's)."""

    _written_n: int | None = None
    """The count of the last state written (None before any)."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        """Write the bar's state (or ``msg``) as a line; tqdm's clearing (``msg=""``) writes
        nothing, as a log cannot be redrawn (and, told nothing was drawn, no ``\\r``). A
        passing bar (``leave=False``) writes no state before it has lasted one update interval:
        a quick one, a terminal's bar that vanishes, wrote its 0 % line into the log before
        every error line (evaluate's "reading labels" above a refused mask)."""
        if msg is None and self.leave is False and self._lasted() < self.mininterval:
            return
        if msg is None:
            self._written_n = self.n
        self._write_line(str(self) if msg is None else msg)

    def _lasted(self) -> float:
        """Seconds since the bar started (0 while tqdm's constructor draws it, before it
        notes the start)."""
        started = getattr(self, "start_t", None)
        return 0.0 if started is None else float(self._time() - started)

    def _write_line(self, text: str) -> None:
        if text:
            self.fp.write(f"{text}\n")
            self.fp.flush()

    def clear(self, nolock: bool = False) -> None:
        """Nothing to take off a log (tqdm clears every bar before a ``tqdm.write``)."""

    def close(self) -> None:
        """Write the last state of a bar that is left (tqdm's rule: ``leave``, by default the
        bar at position 0) as a line, unless its last update wrote it (a run whose epochs each
        last an update interval ended on two equal lines); tqdm's own close ended it with an
        empty line."""
        if not self.disable and (self.pos == 0 if self.leave is None else self.leave):
            self.leave = False
            if self._written_n != self.n:
                self._ema_dt = lambda: None  # the overall rate, as tqdm shows a finished bar's
                self._write_line(str(self))
        super().close()


def _unstick_tqdm() -> None:
    """Give tqdm a fresh write lock where the thread making a bar holds tqdm's own: no covseg
    bar is made inside a redraw, so a redraw an exception cut short left it held (by a frame
    that is gone), and every other thread (the stage thread, a bar made elsewhere) would wait
    for it forever. Only the thread that left it held can tell so: a lock another thread holds
    may be a live redraw (stderr blocked for seconds), and swapped under it, that redraw's
    release raised ``RuntimeError`` in its thread. The test is :func:`_held_here` of each of
    the lock's parts (no public one exists). The fresh lock is a ``threading.RLock``, as tqdm
    documents for ``tqdm.set_lock``: covseg's processes are spawned or forked from the fork
    server, so tqdm's multiprocessing lock shares nothing with them."""
    lock = tqdm.get_lock()
    if any(_held_here(part) for part in getattr(lock, "locks", [lock])):
        tqdm.set_lock(threading.RLock())


def _held_here(part: Any) -> bool:
    """Whether this thread holds ``part`` of tqdm's write lock: a ``threading.RLock`` says so
    by ``_is_owned``, a ``multiprocessing.RLock`` (tqdm's other part, and its recipe for
    processes) by its semaphore's ``_is_mine``; False for a lock that keeps no owner."""
    owned = getattr(part, "_is_owned", None) or getattr(getattr(part, "_semlock", None),
                                                        "_is_mine", None)
    return bool(owned()) if callable(owned) else False


def _acquire(lock: Any) -> bool:
    """Take tqdm's write ``lock`` within :data:`LOCK_WAIT_S`, whether it was taken. tqdm's own
    timed take (``refresh(lock_args=...)``) cannot serve: its default lock's ``acquire`` returns
    nothing, so the bar was never drawn and the locks it took were kept; its parts (a
    multiprocessing and a thread lock, ``locks``) are taken here one by one, in its order."""
    parts = getattr(lock, "locks", [lock])
    taken: list[Any] = []
    for part in parts:
        if not part.acquire(timeout=LOCK_WAIT_S):
            for held in reversed(taken):
                held.release()
            return False
        taken.append(part)
    return True


def _redraw(bar: tqdm) -> None:
    """Redraw ``bar`` holding tqdm's write lock, or not at all where the lock cannot be had
    within :data:`LOCK_WAIT_S` (the bar's next update draws it)."""
    lock = type(bar).get_lock()
    if not _acquire(lock):
        return
    try:
        bar.refresh(nolock=True)
    finally:
        lock.release()


def _stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (not a notebook's stream, a log file or a closed pipe)."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def slice_bar(iterable: Iterable[T], desc: str) -> Iterable[T]:
    """``iterable`` with a bar of a study's batches of slices, drawn only within a batch (under
    its study bar), on a terminal or in a log, not in a notebook: a second bar below the first
    moves the cursor up (ESC[A), which a notebook does not follow, so that every batch of
    slices became a line of its own (23 lines for one 150-slice CT). A log gets the plain lines
    of :class:`_LoggedBar` (every :data:`LOGGED_EVERY_S`): kept quiet there too, an 800-slice
    study's log showed nothing for the minutes of "finding infection". A study outside of a
    batch (:func:`covseg.segment`) draws none."""
    quiet = _REPORTER.get() is None or not (_stderr_is_terminal() or _logged())
    return progress_bar(iterable, quiet=quiet, desc=desc, unit="batch", leave=False)


def stage(name: str) -> None:
    """Say that the study being processed enters stage ``name``; nothing when none listens."""
    report = _REPORTER.get()
    if report is not None:
        report(name)


@contextmanager
def reporting(report: Reporter) -> Iterator[None]:
    """Pass the stages named within the block to ``report``."""
    token = _REPORTER.set(report)
    try:
        yield
    finally:
        _REPORTER.reset(token)


class StageBar:
    """Shows the stage a batch's study is in on the batch's bar, as ``<study>: <stage>``, once
    it has lasted ``after`` seconds (:data:`SHOW_AFTER_S` by default), drawn by a thread of its
    own while the study works; :meth:`close` it (or use :func:`stage_bar`).

    The thread holds the stages' condition only to choose what to draw, never while it draws:
    it drew holding it, so that where tqdm's lock was stuck the study's next :meth:`show` waited
    for the draw, forever. It draws through :func:`_redraw`, which gives up a redraw it cannot
    get tqdm's lock for, so that :meth:`close` joins it within :data:`LOCK_WAIT_S` also where
    the lock was left held as the batch was interrupted."""

    def __init__(self, bar: tqdm, after: float | None = None) -> None:
        self._bar = bar
        self._after = SHOW_AFTER_S if after is None else after
        self._text, self._shown, self._closed = "", "", False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._draw_lasting, name="covseg-stages",
                                        daemon=True)
        if self._after > 0:
            self._thread.start()

    def reporter(self, study: str) -> Reporter:
        """A :func:`reporting` target naming ``study``'s stages, the name unable to drive the
        terminal (:func:`~covseg.errors.terminal_safe`)."""
        shown = terminal_safe(study)
        return lambda name: self.show(f"{shown}: {name}")

    def show(self, text: str) -> None:
        """Draw ``text`` once it has stood ``after`` seconds; "" takes the stage off at once
        (without a redraw: the bar's next update draws it)."""
        with self._changed:
            self._text = text
            if not text and self._shown:
                self._bar.set_postfix_str("", refresh=False)
                self._shown = ""
            self._changed.notify()
        if self._after <= 0 and text:
            self._draw(text)

    def close(self) -> None:
        """Stop the drawing thread, taking the stage off the bar. The thread is told first, so
        that it ends of itself (within :data:`LOCK_WAIT_S`) even where the join is cut short
        (a second Ctrl-C)."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self.show("")
        if self._thread.is_alive():
            self._thread.join()

    def _draw(self, text: str) -> None:
        """Put ``text`` on the bar, if it is still the stage, and redraw the bar."""
        with self._changed:
            if self._over(text):
                return
            self._bar.set_postfix_str(text, refresh=False)
            self._shown = text
        _redraw(self._bar)

    def _draw_lasting(self) -> None:
        """The thread: draws each stage that is still the study's ``after`` seconds on; stops
        drawing, quietly, where stderr is gone (the batch's own bar says so, not a thread's
        traceback)."""
        while (text := self._next_lasting()) is not None:
            try:
                self._draw(text)
            except (OSError, ValueError):
                return

    def _next_lasting(self) -> str | None:
        """The next stage to have lasted ``after`` seconds (None once closed)."""
        with self._changed:
            while not self._closed:
                text = self._text
                if text == self._shown:
                    self._changed.wait()
                elif not self._changed.wait_for(partial(self._over, text), self._after):
                    return text
        return None

    def _over(self, text: str) -> bool:
        """Whether the stage ``text`` is over (or the batch)."""
        return self._closed or self._text != text


@contextmanager
def stage_bar(bar: tqdm, after: float | None = None) -> Iterator[StageBar]:
    """A :class:`StageBar` on ``bar`` for the block, closed at its end."""
    shown = StageBar(bar, after)
    try:
        yield shown
    finally:
        shown.close()
