"""covseg.io.quiet: the lock its warning blocks take turns under."""

from __future__ import annotations

import os
import threading

import pytest

from covseg.io import quiet


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")  # Python 3.12's, with threads
def test_a_forked_child_is_not_left_with_the_warnings_lock_taken() -> None:
    """A fork while another thread held the lock (an ONNX export holds it throughout) left
    the child with it taken, its first quiet block waiting for good: the child has its own.
    The child waits at most 10 s, so a regression fails, not hangs."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with quiet.quiet_warnings():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: nothing of pytest's, only the lock, and out
            try:
                os._exit(0 if quiet._WARNINGS_LOCK.acquire(timeout=10) else 1)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join()
    assert os.waitstatus_to_exitcode(status) == 0
