"""Atomic output: write to a temporary file beside the target, then rename over it.

A killed run therefore never leaves a half-written file under the final name.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import math
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path, PurePath
from typing import IO, Any, Literal

from covseg.errors import CovsegError, DiskFailed, FullDisk, disk_error, failing_disk, no_space
from covseg.provenance import option_given, option_name


def output_file(target: str | os.PathLike[str], suffix: str, kind: str) -> Path:
    """``target`` as a file path ending in ``suffix``, checked before any work: a folder or
    another ending (a text file, a typo) would otherwise be overwritten with a ``kind``."""
    target = Path(target)
    if target.is_dir():
        raise CovsegError(f"{target}: is a folder; pass the {kind} file to write, "
                          f"e.g. {target / ('out' + suffix)}")
    if not target.name.lower().endswith(suffix):
        raise CovsegError(f"{target}: the {kind} to write must end in {suffix}, "
                          f"e.g. {target.with_name(target.stem + suffix)}")
    output_folder(target.parent, option_name("out"), holds=target)
    return target


def output_folder(target: str | os.PathLike[str], option: str | None = None,
                  holds: Path | None = None) -> Path:
    """``target`` as a folder to write into, checked before any work: a file there, or in place
    of a folder above it, would stop the run at its first write with an OS error (raw
    NotADirectoryError or FileExistsError from the API). ``option``: what the error says to
    change (``--out`` on the command line, ``out`` from the API, by default); ``holds``: the
    output file ``target`` is the folder of, where the output is a file (an export's
    ``f/x.onnx``), which the error names: it said "(the output is a folder)" of ``f``. A file
    with no ``option`` (any :func:`atomic_path` write: a fetch's into its ``--to``) is to be
    renamed or written elsewhere: it was told to pick another ``--out``."""
    if option is None and holds is None:
        option = option_name("out")
    target = Path(target)
    refuse_undecodable_name(target if holds is None else holds, option)
    link = dangling_link(target, option or "name")
    if link:
        raise CovsegError(link)
    existing = next((folder for folder in (target, *target.parents) if folder.exists()), None)
    if existing is not None and not existing.is_dir():
        if holds is not None:
            where = f" of the folder {target} that is to hold {holds.name}"
        else:
            where = (" (the output is a folder)" if existing == target
                     else f" of the output folder {target}")
        raise CovsegError(f"{existing}: a file is in the way{where}; pick another "
                          f"{option or 'name'}")
    return target


def writable_folder(target: str | os.PathLike[str], option: str | None = None) -> Path:
    """``target`` as :func:`output_folder` checks it, and found to be one that can be made and
    written to, before any work: a command that writes only at its end (evaluate) failed after
    all of it. The folders made for the check are removed again; a file made there has no name
    (nothing is left, even by a kill)."""
    folder = output_folder(target, option)
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise unwritable_folder(folder, exc, option) from None
    finally:
        remove_empty_folders(made)
    return folder


def unwritable_folder(folder: Path, exc: OSError, option: str | None = None) -> CovsegError:
    """The one-line refusal of an output ``folder`` that cannot be made or written to
    (``exc``: why), naming what to change (``option``: ``--out`` by default)."""
    if option is None:
        option = option_name("out")
    return CovsegError(dangling_link(folder, option) or f"{folder}: cannot write to it "
                       f"({exc.strerror or exc}); pick a writable {option}")


def dangling_link(target: str | os.PathLike[str], option: str) -> str | None:
    """The error for an output folder ``target`` that is (or lies under) a symbolic link to a
    missing path, else None: making it failed with mkdir's "File exists", though nothing is
    there to see. ``option``: what the error says to change. A link loop is said to be one:
    it was "create that folder", or a traceback from resolving it."""
    for folder in (Path(target), *Path(target).parents):
        if folder.is_symlink() and not folder.exists():
            if is_link_loop(folder):
                return f"{folder}: {LINK_LOOP}; remove the link or pick another {option}"
            return (f"{folder}: a symbolic link to {folder.parent / os.readlink(folder)}, which "
                    f"does not exist; create that folder or pick another {option}")
    return None


LINK_LOOP = "a symbolic link loop (following it never ends)"
"""What a link whose following never ends (ELOOP) is called, output or input."""


def is_link_loop(path: Path) -> bool:
    """Whether following ``path`` never ends (ELOOP: a link to itself, or links to each other),
    which :meth:`~pathlib.Path.exists` reports as a path not there."""
    try:
        path.stat()
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def refuse_inside(out: str | os.PathLike[str], folder: object, what: str, harm: str) -> None:
    """Refuse an output ``out`` that is ``folder`` or lies inside it (``what``: the folder's
    role, ``harm``: what writing there would do), when ``folder`` is an existing folder: a
    mistyped ``--out data/x`` put runs beside a data set's images and masks."""
    if (isinstance(folder, str | os.PathLike) and Path(folder).is_dir()
            and Path(out).resolve().is_relative_to(Path(folder).resolve())):

        raise CovsegError(f"{option_given('out', str(out))}: lies in the {what} {folder}, "
                          f"{harm}; pick an {option_name('out')} outside it")


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    Errors name ``target``, never the temporary file, which the user has not heard of. A stop
    (Ctrl-C) landing anywhere, its making too, leaves no temporary file (:class:`_Temporary`).
    """
    target = Path(target)
    if (size := len(os.fsencode(target.name))) > NAME_MAX:
        raise CovsegError(f"{target}: its name is too long to write ({size} bytes; file systems "
                          f"allow {NAME_MAX}); pick a shorter name")
    if target.is_dir():
        raise CovsegError(f"{target}: is a folder, not a file to write; pick another name")
    temporary = _Temporary()
    try:
        try:
            output_folder(target.parent, holds=target).mkdir(parents=True, exist_ok=True)
            tmp = temporary.make(target)
        except OSError as exc:
            raise write_error(target, exc) from None
        yield tmp
        os.chmod(tmp, OUTPUT_MODE)  # made 0600; outputs follow the umask
        os.replace(tmp, target)
    except OSError as exc:
        if str(tmp) not in (str(exc.filename), str(exc.filename2)) and not disk_error(exc):
            raise
        raise write_error(target, exc) from None
    finally:
        temporary.remove()  # the lock goes after the rename: no clean-up took the file before it


class _Temporary:
    """The temporary file of one :func:`atomic_path`: its name is kept before the file is made
    and its descriptor as soon as it is open, so that a stop (Ctrl-C) landing anywhere in
    :meth:`make` leaves :meth:`remove` the file to remove. ``mkstemp`` kept both until it
    returned, and a Ctrl-C of a cv landing there left ``fold_0/.log.XXXXXXXX.csv`` (0 bytes) in
    2 of 5 tries."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.fd: int | None = None

    def make(self, target: Path) -> Path:
        """A new temporary file for ``target`` (:func:`_temporary_affixes`, 0600), open and
        locked (``flock``, exclusive) until :meth:`remove`, so that another run's
        :func:`remove_temporaries` leaves it while it is written; the system drops the lock of
        a run however it ends, ``kill -9`` too. One that such a clean-up removed before the lock
        was taken is made again; on a file system without ``flock`` (some network and FUSE
        mounts) it is written unlocked, as before."""
        prefix, suffix = _temporary_affixes(target)
        while True:
            self.path = target.parent / f"{prefix}{_random_letters()}{suffix}"
            try:
                self.fd = os.open(self.path, _NEW_FILE, 0o600)
            except FileExistsError:
                self.path = None  # another's: not ours to remove
                continue
            if self._locked():
                return self.path
            self.path = None  # removed by a clean-up: the name is no longer ours
            self.close()

    def _locked(self) -> bool:
        """Lock the open file; False where a clean-up removed it before the lock was taken (the
        lock then holds a file no name leads to)."""
        assert self.fd is not None and self.path is not None, "called once the file is made"
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise
            return True
        try:
            return os.fstat(self.fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def remove(self) -> None:
        """Remove the file, where it is still there (the rename took it on success), then close
        it (and so give up its lock). One that cannot be removed (a read-only or failing disk)
        is left to a later run's :func:`remove_temporaries`: its error, naming the temporary
        file, replaced the write's (export onto a read-only disk said "covseg: error:
        out/.m.qefn5y1r.onnx: Read-only file system", as unlinking a name never made fails
        so there)."""
        if self.path is not None:
            with suppress(OSError):
                self.path.unlink()
        self.close()

    def close(self) -> None:
        """Close the file's descriptor, if open."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
"""How a temporary file is opened: made new (never another's, nor through a link), as mkstemp
makes its files."""

_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"
"""The letters of a temporary name's 8 random characters (mkstemp's)."""


def _random_letters() -> str:
    """8 random letters of :data:`_LETTERS`, from the system's randomness: Python's ``random``
    would take numbers from the stream a seeded training draws from."""
    return "".join(secrets.choice(_LETTERS) for _ in range(8))


_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS)
"""The errors of ``flock`` on a file system that has no such locks."""


def _umask() -> int:
    """The process's umask, read without changing it where the system says it
    (``/proc/self/status`` on Linux 4.7 on); elsewhere set and restored at once, which is done
    at import, before covseg starts threads of its own."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


OUTPUT_MODE = 0o666 & ~_umask()
"""The mode of every output file, as ``open()`` would give it (0o666 less the umask, read once
at import): a fixed 0o644 made masks world-readable under ``umask 077`` and kept a group out of
its shared folders under ``umask 002``."""

NAME_MAX = 255
"""Bytes a file name may hold on Linux, macOS and Windows file systems alike."""


def _temporary_affixes(target: Path) -> tuple[str, str]:
    """Prefix and suffix of ``target``'s temporary names (``.STEM.`` and its suffixes), the stem
    cut so that the name, with mkstemp's 8 random characters, fits in NAME_MAX bytes: a legal
    name of 242 to 255 bytes would otherwise fail for its temporary file alone."""
    suffix = "".join(target.suffixes) or ".tmp"
    if len(os.fsencode(suffix)) > NAME_MAX // 4:  # dots in the stem: "scan.2020.01.03.png"
        suffix = target.suffix
    stem = target.stem
    room = NAME_MAX - len(os.fsencode(suffix)) - 10  # the dots around the stem and 8 random
    while stem[1:] and len(os.fsencode(stem)) > room:
        stem = stem[:-1]
    return f".{stem}.", suffix


_TEMPORARY_TAIL = re.compile(r"(?=\.[a-z0-9_]{8}(\..+)$)")
"""Where a temporary name's 8 random characters may start: each place followed by them and
a suffix (tried all, as a stem or suffix may hold a dot and 8 such characters too)."""


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is one :func:`atomic_path` gives its temporary files: ``.STEM.<8 random
    chars><suffixes>``, the suffixes being a file name's (``.2020-03-01.png``, ``.slice 2.png``,
    ``.tmp``) whatever characters they hold, as :func:`_temporary_affixes` builds them."""
    return name.startswith(".") and any(
        match.start() > 1 and "".join(PurePath(f"x{match[1]}").suffixes) == match[1]
        for match in _TEMPORARY_TAIL.finditer(name))


def remove_temporaries(folder: Path, suffix: str = "") -> list[Path]:
    """Delete the temporary files a killed run (``kill -9``) left in ``folder`` (those ending in
    ``suffix`` alone, where given) before it is written again; return them. One that a running
    covseg holds (:class:`_Temporary`) is being written, and kept."""
    return _remove_temporaries_named(
        folder, lambda name: name.endswith(suffix) and is_temporary_name(name))


def _remove_temporaries_named(folder: Path, named: Callable[[str], bool]) -> list[Path]:
    """Delete the hidden files in ``folder`` whose names ``named`` tells a temporary file's
    and that no run holds (:func:`_remove_unheld`); return them. None where ``folder`` is no
    folder (not made yet)."""
    return _remove_unheld([path for path in folder.glob(".*")
                           if path.is_file() and named(path.name)]
                          if folder.is_dir() else [])


def _remove_unheld(paths: Iterable[Path]) -> list[Path]:
    """Delete each of ``paths`` that no process holds a lock on (:meth:`_Temporary.make`), or
    each where the file system has no locks; return those deleted. One we may not open (another
    user's) cannot be told unheld, and is kept."""
    removed = []
    for path in paths:
        try:
            with path.open("rb") as handle:
                if _unheld(handle):
                    path.unlink()
                    removed.append(path)
        except (PermissionError, FileNotFoundError):
            continue  # another user's, or renamed by its run meanwhile
    return removed


def _unheld(handle: IO[bytes]) -> bool:
    """Whether the open file ``handle`` could be locked, exclusive, at once (its lock then held
    until it is closed), or its file system has no locks: no one is writing it. False where
    a run holds its lock (it is writing it)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_FLOCK:
            raise
    return True


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is left empty: those a run made and
    wrote nothing into; one not empty (or not ours to remove) is kept."""
    for folder in folders:
        with suppress(OSError):
            folder.rmdir()


def remove_temporaries_of(target: Path) -> list[Path]:
    """Delete the temporary files a killed run left for ``target`` alone (``.STEM.<8 random
    chars><suffixes>`` beside it); return them. For a file written where no lock keeps other
    covseg runs out, or where they write other files (shards' summaries): the temporaries of
    other targets may be another run's, being written."""
    prefix, suffix = _temporary_affixes(target)
    own = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}" + re.escape(suffix) + "$")
    return _remove_temporaries_named(target.parent, lambda name: own.match(name) is not None)


def write_error(target: str | os.PathLike[str], exc: OSError, what: str = "") -> CovsegError:
    """A one-line error for an OS error writing ``target`` (or its temporary file; ``what``:
    how to call it, where not by its name); a full disk is a :class:`~covseg.errors.FullDisk`
    and a failing one a :class:`~covseg.errors.DiskFailed`, which a training run advises on as
    it can be resumed (an I/O error on last.pt was told to pick a writable place or another
    name)."""
    if no_space(exc):
        return FullDisk(target, what)
    failed = f"{what or target}: cannot write it ({exc.strerror or exc})"
    if failing_disk(exc):
        return DiskFailed(failed)
    return CovsegError(f"{failed}; pick a writable place or another name")


def refuse_undecodable_name(path: Path, option: str | None = None) -> None:
    """Refuse an input whose path is not valid UTF-8 (legal on Linux): the CSV records that
    name it cannot be written, and a batch stopped midway with a traceback. The path's bytes
    are checked, not Python's text of them: with an ASCII file system encoding (``LC_ALL=C
    PYTHONUTF8=0``) every non-ASCII name, valid UTF-8 too, was refused. ``option``: the output
    option that gave ``path``, for an output (:func:`output_folder`): predict wrote a study,
    then failed at its summary, and export with a 100 KB traceback."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        then = "rename it" if option is None else f"pick another {option}"
        raise CovsegError(f"{shown}: its name is not valid UTF-8, which covseg's records cannot "
                          f"hold; {then}") from None


def refuse_unexpanded_home(path: str | os.PathLike[str]) -> None:
    """Refuse a path that begins with a ``~`` the shell would expand (``~``, ``~/x``,
    ``~USER/x``) but did not, as it was quoted (or given so from Python): ``--out '~/runs'``
    made ./~/runs, which a later ``rm -rf ~`` meant for it deletes the home folder, and an
    input was "no such file". Refused, not expanded: no other program expands it (``ls '~/x'``
    does not), and a guess could take a folder named ``~`` here for the home folder. The path
    as typed is checked: ``./~/x`` names a folder named ``~`` here (pathlib's ``~/x`` of it is
    read from there, :func:`~covseg.io.volume.nibabel_path`)."""
    text = os.fspath(path)
    if isinstance(text, str) and os.path.expanduser(text) != text:
        raise CovsegError(f"{text}: begins with ~, which the shell did not expand (it was quoted) "
                          f"and covseg does not; write {os.path.expanduser(text)}, or "
                          f"{os.path.abspath(text)} for a folder named ~ here")


def reserve(handle: int, nbytes: int) -> None:
    """Allocate ``nbytes`` of disk for the open file ``handle`` now, so that a full disk is an
    OSError here, not a SIGBUS (the process killed without a word) when a memmap of a sparse
    file is stored into later. Where the file system has no fallocate, zeros are written."""
    try:
        os.posix_fallocate(handle, 0, nbytes)
        return
    except AttributeError:  # no posix_fallocate on this platform (macOS)
        pass
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    chunk = bytes(min(nbytes, 1 << 20))
    os.lseek(handle, 0, os.SEEK_SET)
    written = 0
    while written < nbytes:
        written += os.write(handle, chunk[:nbytes - written])
    os.fsync(handle)


def utf8_text(text: str) -> str:
    """``text`` with the file-name bytes that Python's file system encoding could not decode
    (lone surrogates, as ``LC_ALL=C PYTHONUTF8=0`` gives for any non-ASCII name) read as the
    UTF-8 they are, so that records hold valid UTF-8 (``médseg.png``, not ``m\\udcc3...``);
    unchanged where those bytes are no UTF-8 either."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return text


def write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write text atomically (UTF-8, names as :func:`utf8_text` reads them) and return the final
    path."""
    with atomic_path(target) as tmp:
        tmp.write_text(utf8_text(text), encoding="utf-8")
    return Path(target)


def csv_writer(buffer: io.StringIO, fields: Sequence[str],
               extrasaction: Literal["raise", "ignore"] = "raise") -> csv.DictWriter[str]:
    """The writer of every CSV covseg writes: ``fields`` in order, ``\\n`` line ends (csv's
    own ``\\r\\n`` ended evaluate's lines, not summary.csv's); ``extrasaction`` as csv's."""
    return csv.DictWriter(buffer, fieldnames=list(fields), extrasaction=extrasaction,
                          lineterminator="\n")


def write_json(target: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON atomically (indented, NaN written as null so every reader accepts it, names
    as :func:`utf8_text` reads them)."""
    return write_text(target, json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")


def write_json_stopping(target: str | os.PathLike[str], data: Any) -> None:
    """:func:`write_json` of a record written as an error or a stop ends the run; one that a
    full or failing disk (the one that stopped the run) keeps from being written is given up,
    so that the error told stays the one that stopped it: a cv's full disk at
    test_per_case.csv was told as one at stopped.json, the record it wrote on its way out.
    Another error writing it (a file in its way) is told."""
    with suppress(FullDisk, DiskFailed):
        write_json(target, data)


def _finite(value: Any) -> Any:
    """Replace NaN/inf floats by None and read names as UTF-8 (:func:`utf8_text`), recursively:
    strict JSON has no NaN, and strict readers refuse the lone surrogates of a name."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return utf8_text(value)
    if isinstance(value, dict):
        return {utf8_text(str(k)): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _finite(value.item())
    return value
