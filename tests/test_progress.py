"""Tests of covseg.progress: how bars are drawn where stderr goes."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tqdm import tqdm
from tqdm._monitor import TMonitor

from covseg import progress
from covseg.progress import progress_bar


def test_a_notebooks_stream_redraws_its_bar_and_a_log_is_written_seldom(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook's stderr (ipykernel's stream, no terminal) redraws a bar in place as a
    terminal does, so it gets tqdm's own bar; a log file or a pipe gets the bar written every
    LOGGED_EVERY_S."""
    monkeypatch.setattr(progress, "_stderr_is_terminal", lambda: False)
    notebook = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    monkeypatch.setattr(sys, "stderr", notebook())
    with progress_bar(range(3), file=io.StringIO()) as bar:
        assert not isinstance(bar, progress._LoggedBar)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_bar(range(3), file=io.StringIO()) as bar:
        assert isinstance(bar, progress._LoggedBar)
        assert bar.mininterval == progress.LOGGED_EVERY_S == 30.0, "as docs/commands.md says"


@pytest.mark.parametrize(("term", "logged"), [("dumb", True), ("xterm-256color", False)])
def test_a_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch, term: str,
                                          logged: bool) -> None:
    """A terminal that cannot move its cursor (``TERM=dumb``: Emacs's shell) got tqdm's ``\r``
    redraws and, for a second bar, its cursor-up escape (ESC[A) as text: it gets a log's plain
    lines; a terminal that can keeps tqdm's bar."""
    monkeypatch.setattr(progress, "_stderr_is_terminal", lambda: True)
    monkeypatch.setenv("TERM", term)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    bars = [progress_bar(total=2, file=screen, desc=f"member {i}", position=i) for i in (0, 1)]
    for _ in range(2):
        for bar in bars:
            bar.update()
    for bar in bars:
        bar.close()
    assert all(isinstance(bar, progress._LoggedBar) == logged for bar in bars)
    written = screen.getvalue()
    assert ("\x1b" not in written and "\r" not in written) == logged, repr(written)


def _logged_lines(monkeypatch: pytest.MonkeyPatch, every_s: float, sleep_s: float,
                  **options: object) -> list[str]:
    """The lines a three-step bar writes to a log, updated every ``every_s``."""
    monkeypatch.setattr(progress, "LOGGED_EVERY_S", every_s)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(3), file=log, desc="bar", **options):
        time.sleep(sleep_s)
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    return log.getvalue().splitlines()


def test_a_bar_whose_every_update_was_written_ends_on_one_last_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Epochs lasting an update interval each wrote every state, and close wrote the last one
    again: a training's log ended on two equal 100 % lines."""
    lines = _logged_lines(monkeypatch, 0.01, 0.03)
    assert [line.split("|")[0] for line in lines] == [
        "bar:   0%", "bar:  33%", "bar:  67%", "bar: 100%"]


def test_a_logged_bar_writes_no_stale_state_between_its_updates(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm's monitor thread redrew a logged bar that updated more often than it was written
    (5 s epochs, written every 30 s) ``maxinterval`` (10 s) after each line: a second line
    with the count of the one before and a later time ("6/12 [00:30<00:30" then "6/12
    [00:40<00:30", 8 epochs done), two lines in 10 s where the docs say one every 30 s."""
    monkeypatch.setattr(progress, "LOGGED_EVERY_S", 0.3)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monitor = TMonitor(tqdm, 0.02)
    try:
        for _ in progress_bar(range(24), file=log, desc="bar", maxinterval=0.1):
            time.sleep(0.05)
    finally:
        monitor.exit()
    lines = log.getvalue().splitlines()
    counts = [line.split("|")[2].split()[0] for line in lines]
    assert len(lines) >= 3 and len(counts) == len(set(counts)), lines


def test_a_quick_passing_bar_writes_nothing_to_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A passing bar (leave=False), which a terminal wipes, wrote its 0 % line into a log above
    the error that ended it; one lasting an update interval writes its updates."""
    assert _logged_lines(monkeypatch, 60.0, 0.0, leave=False) == []
    left = _logged_lines(monkeypatch, 60.0, 0.0)
    assert [line.split("|")[0] for line in left] == ["bar:   0%", "bar: 100%"]
    slow = _logged_lines(monkeypatch, 0.01, 0.03, leave=False)
    assert [line.split("|")[0] for line in slow] == ["bar:  33%", "bar:  67%", "bar: 100%"]


LEFT_HELD = """
import sys, threading, time, types
package = types.ModuleType("covseg")
package.__path__ = [sys.argv[1]]
sys.modules["covseg"] = package  # covseg.progress alone: the package imports PyTorch
from tqdm import tqdm
from covseg.progress import progress_bar, stage_bar

tqdm.get_lock().acquire()  # held, as tqdm's refresh interrupted in a notebook's flush leaves it
with progress_bar(total=1, desc="quantify") as bar, stage_bar(bar) as stages:
    stages.show("ct: finding the lungs")
    time.sleep(0.8)
    stages.show("")
    bar.update()
print("batch ended", flush=True)
worker = threading.Thread(target=lambda: list(progress_bar(range(2), desc="thread")))
worker.start()
worker.join()
print("thread's bar ended", flush=True)
try:
    with progress_bar(total=1, desc="interrupted") as bar, stage_bar(bar) as stages:
        tqdm.get_lock().acquire()  # left held as the batch is interrupted
        stages.show("ct: counting")
        time.sleep(0.8)
        raise KeyboardInterrupt
except KeyboardInterrupt:
    print("interrupted", [thread.name for thread in threading.enumerate()], flush=True)
"""


def test_a_lock_another_thread_holds_drawing_is_kept_by_a_bar_made_meanwhile() -> None:
    """A redraw in another thread may hold tqdm's lock for seconds (its stderr blocked): a bar
    made meanwhile took the lock for one left held, swapped it, and that redraw's release (of
    the new lock, as tqdm's refresh looks it up again) raised RuntimeError in its thread. Only
    a lock the bar's own thread holds is swapped; a free one is kept too."""
    from tqdm import tqdm

    lock = tqdm.get_lock()
    with progress.progress_bar(total=1, quiet=True):
        assert tqdm.get_lock() is lock  # free: kept
    held, errors = threading.Event(), []

    def slow_redraw() -> None:
        tqdm.get_lock().acquire()
        held.set()
        time.sleep(progress.LOCK_WAIT_S * 1.5)
        try:
            tqdm.get_lock().release()
        except RuntimeError as error:
            errors.append(error)
            lock.release()

    drawing = threading.Thread(target=slow_redraw)
    drawing.start()
    held.wait(10)
    with progress.progress_bar(total=1, quiet=True):
        pass
    drawing.join()
    assert tqdm.get_lock() is lock and errors == []


def test_a_lock_whose_process_part_alone_this_thread_holds_is_swapped() -> None:
    """tqdm takes its lock's multiprocessing part first: an interrupt between its two parts, or
    a user's ``tqdm.set_lock(multiprocessing.RLock())`` (tqdm's recipe for processes) left
    held, is a lock no other thread gets either; it was kept, and a bar from another thread
    waited for it forever."""
    import multiprocessing

    from tqdm import tqdm

    original = tqdm.get_lock()
    for held in (original.locks[0], multiprocessing.RLock()):
        tqdm.set_lock(held if held is not original.locks[0] else original)
        held.acquire()
        try:
            with progress.progress_bar(total=1, quiet=True):
                assert tqdm.get_lock() not in (original, held)
        finally:
            held.release()
            tqdm.set_lock(original)


def test_a_bar_left_drawing_by_an_interrupt_hangs_no_later_call() -> None:
    """In a notebook, a kernel interrupt landing in a bar's redraw (tqdm's refresh, which lets
    its lock go without try/finally) left tqdm's write lock held by the main thread; the next
    quantify hung the kernel for good: the stage thread waited for the lock holding the stages'
    condition, and the main thread, naming the next stage, for the condition. Now the stage
    thread draws outside the condition and waits a bounded time for the lock, and a bar gives
    tqdm a fresh lock where the thread making it holds tqdm's: the batch ends, with its stage
    drawn, a bar drawn from another thread ends, and a batch interrupted while the lock is held
    leaves no stage thread running."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", LEFT_HELD, str(Path(progress.__file__).parent)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["batch ended", "thread's bar ended"]
    assert lines[2].startswith("interrupted") and "covseg-stages" not in lines[2], lines[2]
    assert "ct: finding the lungs" in done.stderr
    assert time.monotonic() - started < 10


def test_a_bar_left_by_tqdms_default_rule_writes_its_first_and_last_lines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``leave=None`` is tqdm's rule (the bar at position 0 is left): such a bar is no passing
    one, its first state written at once, and its last written at its close."""
    lines = _logged_lines(monkeypatch, 60.0, 0.0, leave=None)
    assert [line.split("|")[0] for line in lines] == ["bar:   0%", "bar: 100%"]


def test_a_logged_bars_last_line_gives_its_overall_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line, written at close, gives the whole bar's rate, as tqdm shows a finished
    bar's: not the smoothed rate of the last update written (a slow first step's, here)."""
    monkeypatch.setattr(progress, "LOGGED_EVERY_S", 0.2)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for step in progress_bar(range(6), file=log, desc="bar"):
        time.sleep(0.3 if step == 0 else 0.01)
    lines = log.getvalue().splitlines()
    first, last = (float(re.findall(r"([\d.]+)it/s", line)[0]) for line in (lines[1], lines[-1]))
    assert last > 1.5 * first, lines


def test_a_quiet_bar_and_a_message_beside_a_logged_bar_write_no_bar_state(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bar turned off (``quiet``) writes nothing to a log, even at its close; a message
    written beside an open bar (``tqdm.write``, which clears the bars first) is its own line,
    with no ``\\r`` of a clearing."""
    monkeypatch.setattr(progress, "LOGGED_EVERY_S", 60.0)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(range(3), file=log, desc="quiet", quiet=True) as quiet:
        for _ in quiet:
            pass
    assert log.getvalue() == ""
    with progress_bar(range(3), file=log, desc="bar") as bar:
        bar.write("a message", file=log)
    assert "\r" not in log.getvalue()
    assert [line.split("|")[0] for line in log.getvalue().splitlines()][:2] == [
        "bar:   0%", "a message"]


def test_a_studys_slice_bar_is_written_to_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slice bar was drawn only on a terminal: an 800-slice study's log showed nothing for
    the minutes of "finding infection". In a log it is written as plain lines, every
    LOGGED_EVERY_S (0 here), as a passing bar; outside of a batch (no reporter) it is not."""
    monkeypatch.setattr(progress, "LOGGED_EVERY_S", 0.0)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    list(progress.slice_bar(range(3), "infection"))
    assert log.getvalue() == ""
    with progress.reporting(lambda name: None):
        list(progress.slice_bar(range(3), "infection"))
    lines = log.getvalue().splitlines()
    assert [line.split("|")[0] for line in lines] == [
        "infection:   0%", "infection:  33%", "infection:  67%", "infection: 100%"]
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()


def test_a_lock_not_had_within_the_wait_is_let_go_of_whole(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Where one part of tqdm's write lock (its thread lock) cannot be had, the parts taken
    before it (its multiprocessing lock) are let go: kept, every other thread's bar waited."""
    monkeypatch.setattr(progress, "LOCK_WAIT_S", 0.05)
    lock = SimpleNamespace(locks=[threading.RLock(), threading.RLock()])
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock.locks[1]:
            holding.set()
            done.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    assert not progress._acquire(lock)
    done.set()
    holder.join()
    free: list[bool] = []
    probe = threading.Thread(target=lambda: free.append(lock.locks[0].acquire(blocking=False)))
    probe.start()
    probe.join()
    assert free == [True]


def test_a_stage_over_before_its_draw_is_not_drawn() -> None:
    """A stage the study has left by the time the drawing thread draws it is not put on the bar
    (the study's next stage, or none, is)."""
    with (progress_bar(total=1, file=io.StringIO()) as bar,
          progress.stage_bar(bar, after=3600.0) as stages):
        report = stages.reporter("ct")
        report("reading")
        report("counting")
        stages._draw("ct: reading")
        assert "reading" not in (bar.postfix or "")


class _ClosedPipe(io.StringIO):
    """A stderr whose reader went away once ``gone`` is set."""

    gone = False

    def write(self, text: str) -> int:
        if self.gone:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_stage_drawn_to_a_closed_pipe_stops_the_thread_quietly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The drawing thread stops without a traceback where stderr's pipe is gone (the batch's
    own bar says so)."""
    raised: list[type[BaseException]] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_type))
    pipe = _ClosedPipe()
    with progress_bar(total=1, file=pipe) as bar:
        with progress.stage_bar(bar, after=0.01) as stages:
            pipe.gone = True
            stages.reporter("ct")("reading")
            time.sleep(0.2)
        pipe.gone = False
    assert raised == []
