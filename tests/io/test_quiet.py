"""covseg.io.quiet: the lock its warning blocks take turns under, the DICOM reader's and the
other module locks made as it (ForkSafeLock), in a forked child."""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covseg.io import image, quiet

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
fork_with_threads = pytest.mark.filterwarnings(  # Python 3.12's warning, with threads
    "ignore:.*fork:DeprecationWarning")


def _forked_inside(hold: Callable[[Callable[[], None]], object],
                   in_child: Callable[[], bool]) -> int:
    """The exit status of a child forked while a thread named "holder" runs ``hold(inside)``,
    at its call of ``inside()`` (which waits for the fork); the child runs ``in_child`` (0
    where it is true, 1 where not, 2 where it raised) and nothing of pytest's, and has 10 s (an
    alarm ends it), so a regression fails, not hangs. A fork waits for a block under a
    ForkSafeLock to end, so the holder is let go 0.2 s after the fork begins; a fork that does
    not wait comes while the holder is inside."""
    held, release = threading.Event(), threading.Event()

    def inside() -> None:
        held.set()
        release.wait(30)

    holder = threading.Thread(target=hold, args=(inside,), name="holder")
    holder.start()
    try:
        assert held.wait(10)
        threading.Timer(0.2, release.set).start()
        return _forked(in_child)
    finally:
        release.set()
        holder.join()


def _forked(in_child: Callable[[], bool],
            within: Callable[[], AbstractContextManager[object]] = nullcontext) -> int:
    """The exit status of a child forked here, inside ``within()``, that runs ``in_child``
    once out of it, as :func:`_forked_inside`'s does."""
    with within():
        pid = os.fork()
    if pid == 0:
        try:
            signal.alarm(10)
            os._exit(0 if in_child() else 1)
        finally:
            os._exit(2)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


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
    """A fork while another thread held the lock (an ONNX export held the warnings one
    throughout; a DICOM read its own while it sends stderr away) left the child with it taken,
    its first quiet block (or its next DICOM read) waiting for good: the child has its own."""
    def hold(inside: Callable[[], None]) -> None:
        if which == "warnings":
            _within(quiet.quiet_warnings, inside)
            return
        monkeypatch.setattr(quiet, "stderr_to_null", _stalled(lambda: -1, inside))
        _within(partial(quiet.quiet_libraries, decoding=True), lambda: None)

    def in_child() -> bool:
        with (quiet.quiet_warnings if which == "warnings" else quiet.quiet_libraries)():
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
                and (quiet._quiet_state["depth"], quiet._quiet_state["decoders"]) == (0, 0))

    assert _forked_inside(partial(_within, partial(quiet.quiet_libraries, decoding=True)),
                          in_child) == 0
    now = os.fstat(2)
    assert (now.st_dev, now.st_ino) == (stderr.st_dev, stderr.st_ino)


@needs_fork
@fork_with_threads
def test_a_forked_child_keeps_the_warning_filters_of_a_block_in_another_thread() -> None:
    """A fork while another thread was inside a quiet-warnings block left the child ignoring
    warnings for good: the block's thread, not in the child, was to put the filters back. The
    fork waits for the block, and the child has the filters as they were before it."""
    before = list(quiet.warnings.filters)
    assert _forked_inside(partial(_within, quiet.quiet_warnings),
                          lambda: list(quiet.warnings.filters) == before) == 0


@needs_fork
@fork_with_threads
def test_a_forked_child_gets_stderr_back_from_a_decode_starting_in_another_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork between another thread's sending stderr away for a DICOM decode and its counting
    of the decode (the child saw no decoder, so did not give stderr back) left the child's
    stderr on the null device for good: the fork waits for that bookkeeping."""
    stderr = os.fstat(2)

    real = quiet.stderr_to_null

    def hold(inside: Callable[[], None]) -> None:
        def swapped() -> int:
            saved = real()
            inside()
            return saved
        monkeypatch.setattr(quiet, "stderr_to_null", swapped)
        _within(partial(quiet.quiet_libraries, decoding=True), lambda: None)

    def in_child() -> bool:
        now = os.fstat(2)
        return (now.st_dev, now.st_ino) == (stderr.st_dev, stderr.st_ino)

    assert _forked_inside(hold, in_child) == 0
    now = os.fstat(2)
    assert (now.st_dev, now.st_ino) == (stderr.st_dev, stderr.st_ino)


@needs_fork
@fork_with_threads
@pytest.mark.parametrize("which", ["warnings", "npy", "unetpp", "dicom"])
def test_a_fork_from_inside_a_block_does_not_wait_for_itself(which: str) -> None:
    """A fork takes the locks of covseg's quiet blocks (RLocks): one from inside a block, by
    the block's own thread, takes its lock again; the child finishes the block, and a thread of
    its own then forks in turn (the child's lock, not the parent's it left taken)."""
    from covseg.models import unetpp
    block = {"warnings": quiet.quiet_warnings, "npy": image.NPY_HEADER_LOCK.held,
             "unetpp": unetpp._QUIET_BUILD.held, "dicom": quiet._QUIET_LOCK.held}[which]
    statuses: list[int] = []

    def in_grandchild() -> bool:
        with block():
            return True

    def in_child() -> bool:
        thread = threading.Thread(target=lambda: statuses.append(_forked(in_grandchild)))
        thread.start()
        thread.join()
        return statuses == [0]

    assert _forked(in_child, within=block) == 0


class _Interrupted:
    """A lock whose acquire a Ctrl-C interrupts, counting its releases."""

    def __init__(self) -> None:
        self.released = 0

    def acquire(self) -> bool:
        raise KeyboardInterrupt

    def release(self) -> None:
        self.released += 1


def test_a_fork_interrupted_taking_a_lock_does_not_let_it_go() -> None:
    """A Ctrl-C while the before-fork hook waited raised out of it (Python passes over it and
    forks), and the after-fork hook let go a lock never taken: an RLock this thread held in a
    block was let go under it."""
    lock = quiet.ForkSafeLock()
    interrupted = _Interrupted()
    lock.lock = interrupted  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        lock._take()
    lock._let_go()
    assert interrupted.released == 0
    lock.lock = threading.RLock()
    lock._take()
    lock._let_go()
    assert lock.lock.acquire(blocking=False)  # let go: free for another thread
    lock.lock.release()


def test_a_block_under_one_fork_safe_lock_takes_no_other() -> None:
    """The locks' invariant, which keeps a fork from another thread (taking each in turn) from
    deadlocking: no block takes another of them; its own again is an RLock's."""
    first, second = quiet.ForkSafeLock(), quiet.ForkSafeLock()
    with (first.held(), first.held(), pytest.raises(AssertionError, match="takes another"),
          second.held()):
        pass
    with second.held():
        pass


def test_a_warning_ignored_for_good_is_ignored_in_other_threads_and_taken_out_never() -> None:
    """An ONNX export ignores torch 2.13's pytree FutureWarning without holding the warnings
    lock (quiet_warnings held it throughout, and reads and forks waited), and leaves the filter
    in: taken out at the export's end, it removed an equal filter added meanwhile instead, and
    another thread's catch_warnings block spanning the end put it back for good. One filter,
    seen by other threads, however often it is added; the others are left as they are."""
    def warned(message: str) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:  # keeps the filters, records
            thread = threading.Thread(target=warnings.warn, args=(message, FutureWarning))
            thread.start()
            thread.join()
        return [str(w.message) for w in caught]

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", "kept", FutureWarning)
        before = list(warnings.filters)
        quiet.ignore_for_good(FutureWarning, "torch's")
        quiet.ignore_for_good(FutureWarning, "torch's")
        assert warned("torch's own") == warned("kept") == []
        assert warned("another") == ["another"]
        added = [entry for entry in warnings.filters if entry not in before]
        assert [(entry[0], entry[1].pattern, entry[2]) for entry in added] == [
            ("ignore", "torch's", FutureWarning)]
        assert [entry for entry in warnings.filters if entry in before] == before
