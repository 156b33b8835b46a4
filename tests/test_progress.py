"""Tests of covseg.progress: how bars are drawn where stderr goes."""

from __future__ import annotations

import io
import sys
import time

import pytest

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
        assert bar.mininterval == progress.LOGGED_EVERY_S


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


def test_a_quick_passing_bar_writes_nothing_to_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A passing bar (leave=False), which a terminal wipes, wrote its 0 % line into a log above
    the error that ended it; one lasting an update interval writes its updates."""
    assert _logged_lines(monkeypatch, 60.0, 0.0, leave=False) == []
    left = _logged_lines(monkeypatch, 60.0, 0.0)
    assert [line.split("|")[0] for line in left] == ["bar:   0%", "bar: 100%"]
    slow = _logged_lines(monkeypatch, 0.01, 0.03, leave=False)
    assert [line.split("|")[0] for line in slow] == ["bar:  33%", "bar:  67%", "bar: 100%"]


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
