"""The commands' lines on standard output, whose failures are told apart from those of the files
a command writes: ``covseg evaluate ... > /dev/full`` said "no space left on device writing OUT;
free space and rerun" of a finished evaluation, and ``covseg models >&-`` ended in a traceback.

Standard error (progress bars, warnings, error lines) is written best effort (:data:`STDERR`):
with it closed (``2>&-``) or full (``2>/dev/full``), finished commands ended with exit status 1,
no output and no files, as a progress bar's last write failed."""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from covseg.errors import terminal_safe


class StdoutFailed(Exception):
    """Standard output cannot be written (a full device, an I/O error): not the ``--out`` a
    command writes, so no advice to free space there."""

    def __init__(self, exc: OSError) -> None:
        reason = (exc.strerror or str(exc)).lower()
        super().__init__(f"cannot write standard output ({reason}); send it elsewhere "
                         "(another file, /dev/null) to rerun")


@contextmanager
def writing_stdout() -> Iterator[None]:
    """Raise :class:`StdoutFailed` for a write to stdout that fails; a reader gone
    (``BrokenPipeError``) stays as it is, for :func:`covseg.cli.main` to end quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise StdoutFailed(exc) from exc


def say(text: str) -> None:
    """Print ``text`` on stdout, as a line (:func:`write_stdout`), the names in it unable to
    drive the terminal (:func:`~covseg.errors.terminal_safe`): a study named ``a<ESC>[2J...``
    cleared the terminal from predict's closing line."""
    write_stdout(f"{terminal_safe(text)}\n")


def write_stdout(text: str) -> None:
    """Write ``text`` on stdout; a closed stdout (``>&-``, where Python's is None and print
    writes nothing) counts as a reader gone."""
    if sys.stdout is None:
        raise BrokenPipeError(errno.EPIPE, "standard output is closed")
    with writing_stdout():
        sys.stdout.write(text)


def flush_stdout() -> None:
    """Write out what stdout holds (nothing to do when it is closed): its failure shows here,
    not as Python's warning at interpreter exit."""
    if sys.stdout is not None:
        with writing_stdout():
            sys.stdout.flush()


class _BestEffortStderr:
    """``sys.stderr`` (read at each write) where nothing fails: a closed stderr (None) takes
    nothing, and one that failed a write (a full device, a reader gone) takes nothing more. What
    goes there (bars, warnings, the error line) is a command's commentary: its exit status, its
    lines on stdout and its files stand without it. Equal to ``sys.stderr``, so that tqdm sizes a
    bar drawn here to the terminal and clears it for a ``tqdm.write`` here."""

    _lost: object = None
    """The stream that failed a write (none: None); another one put in its place is written."""

    def write(self, text: str) -> int:
        """Write ``text`` where it can be; its length either way, as a stream returns."""
        self._attempt("write", text)
        return len(text)

    def flush(self) -> None:
        """Write out what stderr holds, where it can."""
        self._attempt("flush")

    def _attempt(self, method: str, *args: str) -> None:
        stream = sys.stderr
        if stream is None or stream is self._lost:
            return
        try:
            getattr(stream, method)(*args)
        except UnicodeEncodeError as exc:  # a strict stream lacking a letter of a name (ASCII)
            self._attempt(method, *(text.encode(exc.encoding, "backslashreplace")
                                    .decode(exc.encoding) for text in args))
        except (OSError, ValueError):  # ValueError: a closed file
            self._lost = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.stderr, name)

    def __eq__(self, other: object) -> bool:
        return other is self or (other is sys.stderr and other is not None)

    __hash__ = object.__hash__


STDERR = _BestEffortStderr()
"""Standard error, best effort (:class:`_BestEffortStderr`): what covseg writes there goes
through it."""


def tell(text: str) -> None:
    """Print ``text`` on stderr as a line, best effort (:data:`STDERR`), the names in it unable
    to drive the terminal (as :func:`say`)."""
    STDERR.write(f"{terminal_safe(text)}\n")
    STDERR.flush()
