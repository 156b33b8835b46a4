"""covseg.io.quiet: the lock its warning blocks take turns under, the DICOM reader's and the
other module locks made as it (ForkSafeLock), in a forked child."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covseg.io import dicom, image, quiet

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
fork_with_threads = pytest.mark.filterwarnings(  # Python 3.12's warning, with threads
    "ignore:.*fork:DeprecationWarning")


def _forked_inside(hold: Callable[[Callable[[], None]], object],
                   in_child: Callable[[], bool]) -> int:
    """The exit status of a child forked while a thread named "holder" runs ``hold(inside)``,
    at its call of ``inside()`` (which waits for the fork); the child runs ``in_child`` (0
    where it is true, 1 where not, 2 where it raised) and nothing of pytest's, and has 10 s (an
    alarm ends it), so a regression fails, not hangs."""
    held, release = threading.Event(), threading.Event()

    def inside() -> None:
        held.set()
        release.wait(30)

    holder = threading.Thread(target=hold, args=(inside,), name="holder")
    holder.start()
    try:
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:
            try:
                signal.alarm(10)
                os._exit(0 if in_child() else 1)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join()
    return os.waitstatus_to_exitcode(status)


def _within(block: Callable[[], AbstractContextManager[object]], inside: Callable[[], None]
            ) -> None:
    """``inside()`` run inside ``block()``."""
    with block():
        inside()


def _stalled(real: Callable[..., object], inside: Callable[[], None]) -> Callable[..., object]:
    """``real``, calling ``inside()`` first in the "holder" thread of :func:`_forked_inside`."""
    def stalled(*args: object, **kwargs: object) -> object:
        if threading.current_thread().name == "holder":
            inside()
        return real(*args, **kwargs)
    return stalled


@needs_fork
@fork_with_threads
@pytest.mark.parametrize("which", ["warnings", "dicom"])
def test_a_forked_child_is_not_left_with_the_lock_taken(
        which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork while another thread held the lock (an ONNX export holds the warnings one
    throughout; a DICOM read its own while it sends stderr away) left the child with it taken,
    its first quiet block (or its next DICOM read) waiting for good: the child has its own."""
    def hold(inside: Callable[[], None]) -> None:
        if which == "warnings":
            _within(quiet.quiet_warnings, inside)
            return
        monkeypatch.setattr(dicom, "stderr_to_null", _stalled(lambda: -1, inside))
        _within(partial(dicom._quiet_libraries, decoding=True), lambda: None)

    def in_child() -> bool:
        with (quiet.quiet_warnings if which == "warnings" else dicom._quiet_libraries)():
            return True

    assert _forked_inside(hold, in_child) == 0


@needs_fork
@fork_with_threads
def test_a_forked_child_reads_a_npy_slice(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork while another thread parsed a .npy header (under io.image's lock) left the child
    with the lock taken, its first .npy slice read waiting for good."""
    np.save(tmp_path / "slice.npy", np.zeros((4, 4), np.float32))
    read = np.lib.format.read_array_header_1_0

    def hold(inside: Callable[[], None]) -> None:
        monkeypatch.setattr(np.lib.format, "read_array_header_1_0", _stalled(read, inside))
        image._read_npy(tmp_path / "slice.npy")

    assert _forked_inside(hold, lambda: image._read_npy(tmp_path / "slice.npy").shape == (4, 4)
                          ) == 0


@needs_fork
@fork_with_threads
def test_a_forked_child_builds_a_unetpp(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork while another thread built MONAI's UNet++ (under its quiet-build lock, stdout
    swapped for a buffer) left the child with the lock taken, its first UNet++ build waiting
    for good, and its stdout that discarded buffer."""
    from monai.networks import nets

    from covseg.models.unetpp import build_unetpp

    def hold(inside: Callable[[], None]) -> None:
        monkeypatch.setattr(nets, "BasicUNetPlusPlus", _stalled(nets.BasicUNetPlusPlus, inside))
        build_unetpp(1, 2, width=4)

    stdout = sys.stdout
    assert _forked_inside(hold, lambda: sys.stdout is stdout
                          and build_unetpp(1, 2, width=4) is not None and sys.stdout is stdout
                          ) == 0


@needs_fork
@fork_with_threads
def test_a_forked_child_gets_stderr_back_from_a_decode_in_another_thread() -> None:
    """A fork while another thread decoded compressed DICOM pixels left the child's stderr on the
    null device for good (and ITK's warnings off): the decoding thread, not in the child, was
    to give them back. The child starts as no reader left it."""
    stderr, shown = os.fstat(2), sitk.ProcessObject.GetGlobalWarningDisplay()

    def in_child() -> bool:
        now = os.fstat(2)
        return ((now.st_dev, now.st_ino) == (stderr.st_dev, stderr.st_ino)
                and sitk.ProcessObject.GetGlobalWarningDisplay() == shown
                and (dicom._quiet_state["depth"], dicom._quiet_state["decoders"]) == (0, 0))

    assert _forked_inside(partial(_within, partial(dicom._quiet_libraries, decoding=True)),
                          in_child) == 0
    now = os.fstat(2)
    assert (now.st_dev, now.st_ino) == (stderr.st_dev, stderr.st_ino)
