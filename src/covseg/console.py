"""The commands' lines on standard output, whose failures are told apart from those of the files
a command writes: ``covseg evaluate ... > /dev/full`` said "no space left on device writing OUT;
free space and rerun" of a finished evaluation, and ``covseg models >&-`` ended in a traceback."""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager

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


def say_on_stderr(text: str) -> None:
    """Print ``text`` on stderr, as a line, the names in it unable to drive the terminal (as
    :func:`say`)."""
    print(terminal_safe(text), file=sys.stderr)


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
