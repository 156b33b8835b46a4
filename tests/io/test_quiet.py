"""covseg.io.quiet: the lock its warning blocks take turns under, and the DICOM reader's."""

from __future__ import annotations

import os
import signal
import threading
from functools import partial

import pytest

from covseg.io import dicom, quiet


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")  # Python 3.12's, with threads
@pytest.mark.parametrize("which", ["warnings", "dicom"])
def test_a_forked_child_is_not_left_with_the_lock_taken(
        which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork while another thread held the lock (an ONNX export holds the warnings one
    throughout; a DICOM read its own while it sends stderr away) left the child with it taken,
    its first quiet block (or its next DICOM read) waiting for good: the child has its own.
    The child waits at most 10 s, so a regression fails (an alarm ends it), not hangs."""
    held, release = threading.Event(), threading.Event()

    def stalled() -> int:
        """Sending stderr away, inside the DICOM reader's lock, until released."""
        held.set()
        release.wait(30)
        return -1

    monkeypatch.setattr(dicom, "stderr_to_null", stalled)
    holding, block = {"warnings": (quiet.quiet_warnings, quiet.quiet_warnings),
                      "dicom": (partial(dicom._quiet_libraries, decoding=True),
                                dicom._quiet_libraries)}[which]

    def hold() -> None:
        with holding():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: nothing of pytest's, only the block, and out
            try:
                signal.alarm(10)
                with block():
                    os._exit(0)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join()
    assert os.waitstatus_to_exitcode(status) == 0
