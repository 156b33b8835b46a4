"""Tests of covseg.progress: how bars are drawn where stderr goes."""

from __future__ import annotations

import io
import sys

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
