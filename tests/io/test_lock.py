"""covseg.io.lock: the lock file probed is the one in the folder."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from covseg.io import lock
from covseg.io.lock import LOCK_FILE, drop_unheld_lock


def test_drop_unheld_lock_keeps_a_live_runs_new_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock file replaced between its opening and its locking (its run ended, another
    started and holds the new file) is not removed: the new one is probed, found held."""
    path = tmp_path / LOCK_FILE
    path.write_text("111\n")
    real_flock = fcntl.flock
    live = {}

    def replace_then_lock(handle: object, operation: int) -> None:
        if not live:  # the first run ends and a second takes a fresh file, before we lock
            path.unlink()
            live["handle"] = path.open("w")
            live["handle"].write("222\n")
            live["handle"].flush()
            real_flock(live["handle"], fcntl.LOCK_EX)
        real_flock(handle, operation)

    monkeypatch.setattr(lock.fcntl, "flock", replace_then_lock)
    drop_unheld_lock(tmp_path)
    assert path.read_text() == "222\n"
    live["handle"].close()
    monkeypatch.undo()
    drop_unheld_lock(tmp_path)
    assert not path.exists()
