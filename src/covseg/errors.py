"""The one exception type covseg raises for bad input (the CLI prints its message on one line),
and the wording its messages share."""

import errno
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

MEMORY_SIGNS = ("allocate", "not enough memory", "out of memory",
                "Storage size calculation overflowed")
"""Words of the RuntimeError torch's allocators raise (CPU "can't allocate memory", CUDA "out
of memory", a size beyond any), as against a bug's RuntimeError."""


UNSHOWABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
                        "\udc80-\udc9f]")
"""Characters a terminal acts on rather than shows: control characters (ESC starts the ANSI
sequences that clear the screen or colour text, CR returns over the line, NUL) and the
bidirectional overrides that reorder what follows; tab and newline are shown as they are. Also
the undecodable bytes 0x80-0x9f of a name (``LC_ALL=C``), which the console writes back as
the 8-bit control codes they are."""


def terminal_safe(text: str) -> str:
    """``text`` with :data:`UNSHOWABLE` characters escaped as Python writes them (``\\x1b``,
    ``\\r``, ``\\u202e``): a file named ``a<ESC>[2J...`` cleared the terminal and printed
    "FAKE OK" in colour when an error named it."""
    return UNSHOWABLE.sub(lambda found: repr(found.group())[1:-1], text)


class CovsegError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class NotLabels(CovsegError):
    """A file read as a label mask holds values that are no labels (fractional, or beyond the
    labels read): an image or a probability map, which a caller may read again to tell apart.
    Other refusals of the same read (out of memory, a truncated file) are not read again: a
    mask short of memory as int16 was read again as float32, and said to need twice as much."""


class OutOfMemory(CovsegError):
    """A failed allocation named with what it was for (a file, a volume's size): the CLI exits 1
    for it, as for a bare out-of-memory, not 2 (bad input), so that a script tells a machine
    short of memory from input to correct."""


class NoWritableFolder(CovsegError):
    """No folder to write can be had for a library covseg uses (matplotlib's config folder, nor
    a temporary one): the CLI exits 1 for it, as for out of memory, the machine's setup to
    correct, not the input."""


class BatchFailed(CovsegError):
    """Some inputs of a batch failed after the others were done and written: the CLI exits 1
    for it, so that a script tells it from a usage error or input refused before any work (2)."""


class Resumable(CovsegError):
    """A stop that a rerun gets past (its first argument says what): a full disk in any
    command's write (:class:`FullDisk`), a failing one (:class:`DiskFailed`), a training
    member killed, a fold lost on Ray. How a train, cv or compare run goes on depends on what
    it leaves, known only once it has cleaned up: :func:`~covseg.checkpoint.resume_advised`
    says it; alone it says to rerun the command."""

    def __str__(self) -> str:
        return self.advised("rerun the same command")

    def advised(self, rerun: str) -> str:
        """The line saying what stopped the run, then how to go on (``rerun``)."""
        return f"{self.args[0]}; {rerun}"


class FullDisk(Resumable):
    """A full disk while writing ``target`` (``what``: its description, where the name is a
    scratch file's): a :class:`Resumable` stop, so that inside a train, cv or compare run it
    says to rerun with --resume (:func:`~covseg.checkpoint.resume_advised`), wherever in the
    run's folder the file was (curves.png after the epochs' checkpoints: "rerun the same
    command" was refused, as the folder held a run); elsewhere to rerun the command."""

    def __init__(self, target: str | os.PathLike[str], what: str = "") -> None:
        super().__init__(target, what)  # its arguments, so that it pickles (an ensemble member's)
        self.target, self.what = target, what

    def advised(self, rerun: str) -> str:
        """The line saying the full disk, then how to go on (``rerun``)."""
        return no_space_text(self.target, rerun, self.what)


class DiskFailed(Resumable):
    """A disk that failed as a file was written (an I/O error: a disk failing or gone), its
    first argument the line naming the file (:func:`~covseg.io.atomic.write_error`): a
    :class:`Resumable` stop, as the machine's fault, not the input's, so that a train, cv or
    compare so stopped says to rerun with --resume once the disk is back; it said to pick a
    writable place or another name, which would start the run again elsewhere."""

    def advised(self, rerun: str) -> str:
        """The line naming the file, then to fix the disk, as a full disk's says to free
        space, and how to go on (``rerun``)."""
        return f"{self.args[0]}; fix the disk and {rerun}"


def failing_disk(exc: OSError) -> bool:
    """Whether ``exc`` is a disk failing (EIO), or a file system turned read-only under a file
    being written (EROFS naming no file: a remount, as the kernel does when a disk fails,
    which stopped a training with "pick a writable place or another name"), not a full disk
    nor a place that cannot be written (a read-only file system given, a permission: for the
    user to change)."""
    return exc.errno == errno.EIO or (exc.errno == errno.EROFS and exc.filename is None)


def disk_error(exc: OSError) -> bool:
    """Whether ``exc``, raised writing a file, is the disk's, for the file's own one-line error
    (:func:`~covseg.io.atomic.write_error`): a full or failing disk (:func:`no_space`,
    :func:`failing_disk`), or any error of the system naming no file, as writing a stream's
    bytes gives. The one rule of an atomic file's write and a training's
    (:func:`~covseg.checkpoint.write_errors_resumable`), which judged some errors otherwise."""
    return (no_space(exc) or failing_disk(exc)
            or (exc.filename is None and exc.errno is not None))


def examples(names: list[str]) -> str:
    """The first few of ``names``, for a message."""
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def counted(count: int, noun: str, plural: str = "") -> str:
    """``count`` and ``noun`` in the number it takes: "1 epoch", "2 epochs", "0 studies"
    (``plural`` where adding an s is not it)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def them(count: int) -> str:
    """The pronoun for ``count`` things a message has named: "it" for one, "them" for more."""
    return "it" if count == 1 else "them"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed allocation (MemoryError, or torch's allocator
    RuntimeError: :data:`MEMORY_SIGNS`), not a bug."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(sign in str(exc) for sign in MEMORY_SIGNS))


def out_of_memory_text(exc: BaseException) -> str:
    """One line for a failed allocation (:func:`is_out_of_memory`), with the size asked for
    where the error gives one: Python's MemoryError says nothing (a study's reason read
    "MemoryError: "), torch's allocator a report ending in a traceback."""
    text = str(exc)
    size = re.search(r"allocate ([\d.]+ ?[KMGTP]i?B)", text, re.IGNORECASE)
    count = re.search(r"allocate (\d+) bytes", text)
    asked = size.group(1) if size else byte_size(int(count.group(1))) if count else ""
    return (f"out of memory{f' (could not allocate {asked})' if asked else ''}: free memory "
            "(close other programs) or use a machine with more")


def byte_size(count: int) -> str:
    """A byte count in the largest binary unit up to PiB that keeps it at least 1 (``128 TiB``)."""
    size, unit = float(count), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{count} bytes" if unit == "bytes" else f"{size:.3g} {unit}"


def out_of_memory_reading(path: str | os.PathLike[str], exc: BaseException) -> OutOfMemory:
    """A failed allocation while reading one input file, as that file's own error: a 193-byte
    .npy whose header claims 298 GiB stopped a whole batch with an "out of memory" line that
    named no file. The file's size beside the size asked for tells a lying header apart."""
    try:
        held = f"; the file holds {os.path.getsize(path):,} bytes"
    except OSError:
        held = ""
    text = out_of_memory_text(exc).split(": ", 1)[0]
    return OutOfMemory(f"{path}: {text} reading it{held}: is the file corrupt? If not, free "
                       "memory or use a machine with more")


def read_naming_out_of_memory(read: Callable[[Path], T], path: Path) -> T:
    """``read(path)``, a failed allocation refused as that file's error
    (:func:`out_of_memory_reading`): a tiny .npy whose header claims 298 GiB stopped a batch,
    or train, data info and visualize, with an "out of memory" line naming no file."""
    try:
        return read(path)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise out_of_memory_reading(path, exc) from None


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk or quota (ENOSPC, EDQUOT), or was raised while handling
    one: torch's zip writer turns the OSError of the file it writes into a RuntimeError
    ("unexpected pos ..."), whose context is the OSError."""
    seen: BaseException | None = exc
    for _ in range(5):  # a chain is short; a cycle must not hang
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def no_space_text(target: str | os.PathLike[str], rerun: str = "rerun the same command",
                  what: str = "") -> str:
    """One line for a full disk while writing ``target`` (``what``: how to call it, where not
    by its name) and what to do (``rerun``: how to go on); it was a bare "No space left on
    device", or a traceback from torch. No free space is given: measured while the failed
    file's temporary still exists, it read 0."""
    return f"no space left on device writing {what or target}; free space and {rerun}"


NO_TEMPORARY_FOLDER = "No usable temporary directory found"
"""How :func:`tempfile.gettempdir` words that no folder it tried can be written."""


def tmpdir_advice(exc: BaseException) -> str:
    """``"; set TMPDIR to a writable folder"`` where ``exc`` is Python's tempfile finding no
    folder to write (torch makes temporary files while training, as may a batch's CT study: a
    locked-down container), else nothing."""
    reason = exc.strerror or str(exc) if isinstance(exc, OSError) else ""
    return "; set TMPDIR to a writable folder" if reason.startswith(NO_TEMPORARY_FOLDER) else ""


def failure_reason(exc: Exception, target: str | os.PathLike[str]) -> str:
    """One line for why one item of a batch (a CT study writing into ``target``) failed:
    covseg's own message, out of memory, a full disk (it was the raw ``OSError: [Errno 28]
    No space left on device``), else the exception's type and message, its lines joined
    (matplotlib's four-line TypeError made summary.csv's error cell, and the console's error,
    four lines), with what to do where no temporary folder can be written
    (:func:`tmpdir_advice`)."""
    if isinstance(exc, CovsegError):
        text = str(exc)
    elif is_out_of_memory(exc):
        text = out_of_memory_text(exc)
    elif no_space(exc):
        text = no_space_text(target)
    else:
        text = f"{type(exc).__name__}: {exc}{tmpdir_advice(exc)}"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def refuse_special_file(path: str | os.PathLike[str], give: str, shown: str = "") -> None:
    """Refuse an input ``path`` that exists but is neither a regular file nor a folder (a FIFO,
    a device, a socket): readers called it missing ("no such file or folder") or, listing it,
    blamed the output ("a file is in the way"). Nothing is raised for a missing path, which
    its reader reports. ``give``: what to pass instead; ``shown``: how the message names the
    path (an option and its value), by default as given."""
    try:
        mode = os.stat(path).st_mode  # a FIFO's stat does not block, as opening it would
    except (OSError, ValueError):
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
    raise CovsegError(f"{shown or path}: not a regular file or folder ({kind}); give {give}")
