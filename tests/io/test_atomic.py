"""Atomic writes: errors name the user's path, never the temporary file beside it."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from covseg.errors import CovsegError, DiskFailed
from covseg.io import atomic
from covseg.io.atomic import (
    atomic_path,
    output_file,
    remove_temporaries,
    remove_temporaries_of,
    reserve,
    writable_folder,
    write_json,
    write_json_stopping,
    write_text,
)
from tests.conftest import (
    deny_reading,
    disk_full_from,
    refuse_writing_under,
    started_process,
    wait_until_written,
)


def test_a_folder_in_place_of_the_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(CovsegError, match=f"^{tmp_path / 'd'}: is a folder"):
        write_text(tmp_path / "d", "x")
    assert not [p for p in (tmp_path / "d").iterdir()] and len(list(tmp_path.iterdir())) == 1


def test_an_unwritable_folder_names_the_target(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: Path, *_: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(atomic.os, "open", denied)
    target = tmp_path / "m.onnx"
    with pytest.raises(CovsegError) as caught:
        write_text(target, "x")
    assert str(caught.value).startswith(f"{target}: cannot write it (Permission denied)")
    assert ".m." not in str(caught.value)


def test_a_failed_rename_names_the_target_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(source: str, destination: str) -> None:
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(source), str(destination))

    monkeypatch.setattr(os, "replace", refused)
    refusal = r"out\.png: cannot write it \(Is a directory\)"
    with pytest.raises(CovsegError, match=refusal), atomic_path(tmp_path / "out.png") as tmp:
        tmp.write_text("x")
    assert list(tmp_path.iterdir()) == []


def test_other_errors_in_the_body_pass_through(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.txt"):
        (tmp_path / "missing").read_text()


def test_output_file_wants_the_suffix_and_no_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(CovsegError, match=r"d: is a folder; pass the ONNX model file to write"):
        output_file(tmp_path / "d", ".onnx", "ONNX model")
    with pytest.raises(CovsegError, match=r"f: the ONNX model to write must end in \.onnx, "
                                          r"e\.g\. .*f\.onnx"):
        output_file(tmp_path / "f", ".onnx", "ONNX model")
    assert output_file(tmp_path / "M.ONNX", ".onnx", "ONNX model") == tmp_path / "M.ONNX"


def test_a_file_in_the_way_of_an_output_files_folder_is_named_as_such(tmp_path: Path) -> None:
    """``touch f; covseg export --out f/x.onnx`` was told "f: a file is in the way (the output is
    a folder)": the output is a file, x.onnx, in the folder f."""
    (tmp_path / "f").write_text("")
    with pytest.raises(CovsegError) as raised:
        output_file(tmp_path / "f" / "x.onnx", ".onnx", "ONNX model")
    assert str(raised.value) == (f"{tmp_path / 'f'}: a file is in the way of the folder "
                                 f"{tmp_path / 'f'} that is to hold x.onnx; pick another --out")


def test_a_file_write_whose_name_is_not_utf8_says_to_rename_it(tmp_path: Path) -> None:
    """Any file write said "pick another --out" of such a name, the output option of no command
    writing it (a fetch's file in its --to); no option is known there."""
    target = tmp_path / os.fsdecode(b"p\xe9.txt")
    with pytest.raises(CovsegError) as raised:
        write_text(target, "x")
    assert str(raised.value).endswith("its name is not valid UTF-8, which covseg's records "
                                      "cannot hold; rename it")
    assert list(tmp_path.iterdir()) == []


def test_outputs_are_readable_by_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mkstemp makes its file 0600: outputs in a shared results folder were left unreadable
    to other users unless given the umask's mode before the rename; nothing pinned it. The
    umask is read once at import, so the test sets the mode it gives under ``umask 022``."""
    monkeypatch.setattr(atomic, "OUTPUT_MODE", 0o666 & ~0o022)
    path = write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_json_outputs_write_nan_and_infinities_as_null(tmp_path: Path) -> None:
    """Only NaN was checked, so +-inf written as ``Infinity`` (strict JSON readers refuse it)
    went unnoticed."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in strict JSON")

    path = write_json(tmp_path / "a.json", {"a": float("inf"), "b": [float("-inf")],
                                            "c": float("nan"), "d": 1.5})
    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "a": None, "b": [None], "c": None, "d": 1.5}


def test_temporaries_a_killed_run_left_are_removed(tmp_path: Path) -> None:
    """kill -9 between writing a temporary file and renaming it leaves it behind."""
    with atomic_path(tmp_path / "montage.png") as tmp:
        tmp.write_bytes(b"half")
        stale = tmp_path / "stale" / tmp.name  # as a killed run would have left it
        stale.parent.mkdir()
        shutil.copy(tmp, stale)
    (stale.parent / ".notes").write_text("a user's own hidden file")
    assert remove_temporaries(stale.parent) == [stale]
    assert [p.name for p in stale.parent.iterdir()] == [".notes"]
    assert remove_temporaries(tmp_path / "missing") == []


@pytest.mark.parametrize("name", ["IMG.2020-03-01.png", "case.1+2.png", "patient 1.slice 2.png",
                                  "séance.2.png", "ct.v2_final.nii.gz", "notes"])
def test_a_killed_runs_temporary_is_removed_whatever_its_suffixes_hold(tmp_path: Path,
                                                                       name: str) -> None:
    """A dated name's temporary (``.IMG.2020-03-01.<8 random>.2020-03-01.png``) was left for
    good by the folder-wide clean-up, whose pattern took suffixes of letters and digits only;
    a user's hidden files of other shapes stay."""
    with atomic_path(tmp_path / name) as tmp:
        tmp.write_bytes(b"half")
        stale = tmp_path / "stale" / tmp.name  # as a killed run would have left it
        stale.parent.mkdir()
        shutil.copy(tmp, stale)
    own = [".notes", ".IMG.2020-03-01.png", ".x.abcdefgh", ".x.ABCDEFGH.png", ".x.abcdefgh.png."]
    for user in own:
        (stale.parent / user).write_text("a user's own hidden file")
    assert remove_temporaries(stale.parent) == [stale]
    assert sorted(p.name for p in stale.parent.iterdir()) == sorted(own)


def test_a_temporary_being_written_is_kept_by_another_runs_clean_up(tmp_path: Path) -> None:
    """A run's clean-up of a folder (train's, export's, a batch's) deleted the temporary file
    another covseg run was writing there, which then failed at its rename (export: a finished
    model lost). A temporary is locked while it is written now; only dead ones go."""
    target = tmp_path / "best.pt"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"weights")
        dead = tmp_path / f".best.{'k' * 8}.pt"  # as kill -9 left it: no one holds it
        dead.write_bytes(b"half")
        assert remove_temporaries(tmp_path) == [dead]
        assert remove_temporaries_of(target) == [] and tmp.read_bytes() == b"weights"
    assert target.read_bytes() == b"weights" and list(tmp_path.iterdir()) == [target]


def test_a_killed_runs_temporary_is_held_until_it_dies(tmp_path: Path) -> None:
    """The lock on a temporary goes with its process, ``kill -9`` too: the clean-up keeps it
    while that run lives, and removes it once the run is killed."""
    out, signal = tmp_path / "out", tmp_path / "written"
    out.mkdir()
    code = ("import pathlib, sys, time\nfrom covseg.io.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half')\n"
            "    part = pathlib.Path(sys.argv[2] + '.part')\n"
            "    part.write_text(str(tmp))\n"
            "    part.rename(sys.argv[2])\n    time.sleep(60)\n")  # whole once there
    with started_process(code, out / "mask.png", signal) as writer:
        try:
            wait_until_written(signal, writer)
            tmp = Path(signal.read_text())
            assert tmp.parent == out
            assert remove_temporaries(out) == [] and tmp.exists()
        finally:
            writer.kill()  # SIGKILL: kill -9
            writer.wait()
    assert remove_temporaries(out) == [tmp] and list(out.iterdir()) == []


def test_a_temporary_whose_lock_is_held_is_told_held(tmp_path: Path) -> None:
    """``_unheld`` says False of a file whose lock another open file holds: it raised
    BlockingIOError, and its caller's test of what it returned was never false."""
    held = tmp_path / f".a.{'k' * 8}.json"
    held.write_text("half")
    with held.open("rb") as writer, held.open("rb") as cleaner:
        atomic.fcntl.flock(writer, atomic.fcntl.LOCK_EX)
        assert atomic._unheld(cleaner) is False


def test_a_temporary_that_cannot_be_opened_is_kept(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's temporary (mode 0600 while written) cannot be opened to tell whether its
    run still writes it: it is kept, where the clean-up stopped with a raw PermissionError or
    deleted it under that run."""
    theirs = tmp_path / f".a.{'k' * 8}.json"
    theirs.write_text("half")
    deny_reading(monkeypatch, theirs)
    assert remove_temporaries(tmp_path) == [] and theirs.exists()


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_file_system_without_locks_is_written_and_cleaned_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Some network and FUSE mounts refuse ``flock``: a temporary is written unlocked there,
    and the clean-up removes every temporary, as before temporaries were locked."""
    def refused(*_: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.fcntl, "flock", refused)
    dead = tmp_path / f".a.{'k' * 8}.json"
    dead.write_text("half")
    assert remove_temporaries(tmp_path) == [dead]
    assert write_json(tmp_path / "a.json", {"a": 1}).read_text() == '{\n  "a": 1\n}\n'
    assert list(tmp_path.iterdir()) == [tmp_path / "a.json"]


def test_a_temporary_removed_before_its_lock_is_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run's clean-up may delete a temporary between its making and its locking: the
    lock then holds a file no name leads to, so a new temporary is made and locked."""
    opened, flock = os.open, atomic.fcntl.flock
    made: list[str] = []

    def recorded(path: Path, *how: int) -> int:
        made.append(str(path))
        return opened(path, *how)

    def removed_first(fd: int, operation: int) -> None:
        if len(made) == 1 and os.path.exists(made[0]):
            os.unlink(made[0])  # another run's clean-up, just before the lock
        flock(fd, operation)

    monkeypatch.setattr(atomic.os, "open", recorded)
    monkeypatch.setattr(atomic.fcntl, "flock", removed_first)
    assert write_text(tmp_path / "a.txt", "x").read_text() == "x"
    assert len(set(made)) == 2 and list(tmp_path.iterdir()) == [tmp_path / "a.txt"]


def _stopped_after(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """Make ``step`` (``module.name`` in covseg.io.atomic's view) do its work on a temporary
    file, then raise KeyboardInterrupt, as a Ctrl-C arriving during that system call is raised
    as it returns."""
    module, name = step.split(".")
    owner = {"os": atomic.os, "fcntl": atomic.fcntl}[module]
    real = getattr(owner, name)

    def stopped(*args: Any, **kwargs: Any) -> Any:
        done = real(*args, **kwargs)
        if isinstance(args[0], int) or atomic.is_temporary_name(Path(args[0]).name):
            raise KeyboardInterrupt
        return done

    monkeypatch.setattr(owner, name, stopped)


@pytest.mark.parametrize("step", ["os.open", "fcntl.flock", "os.fstat", "os.stat"])
def test_a_stop_while_the_temporary_is_made_leaves_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """A Ctrl-C of a cv landing as a temporary file was made (inside mkstemp, or before the
    block that removes it) left ``fold_0/.log.XXXXXXXX.csv``, 0 bytes, in 2 of 5 tries."""
    (tmp_path / "log.csv").write_text("epoch\n1\n")
    _stopped_after(monkeypatch, step)
    with pytest.raises(KeyboardInterrupt):
        write_text(tmp_path / "log.csv", "epoch\n1\n2\n")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]
    assert (tmp_path / "log.csv").read_text() == "epoch\n1\n"


def test_a_stop_after_the_rename_leaves_the_file_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C landing as the temporary is renamed over the target leaves the new file, whole,
    and no temporary."""
    _stopped_after(monkeypatch, "os.replace")
    with pytest.raises(KeyboardInterrupt):
        write_text(tmp_path / "log.csv", "epoch\n1\n")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]
    assert (tmp_path / "log.csv").read_text() == "epoch\n1\n"


def test_the_temporaries_of_one_target_are_removed_alone(tmp_path: Path) -> None:
    """A file written where other runs may write other files (a visualize grid, a shard's
    summary) drops only its own killed temporary files, never another target's nor a file of
    another pattern."""
    names = [".summary.ab12_xyz.csv", ".summary.ab12_xyz.png", ".summary_shard0of2.ab12_xyz.csv",
             ".summary.notmine.csv", ".summary.ab12_xyz.csv.bak", "summary.csv"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert remove_temporaries_of(tmp_path / "summary.csv") == [tmp_path / names[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
    assert remove_temporaries_of(tmp_path / "missing" / "grid.png") == []


def test_a_full_disk_writing_a_stream_names_the_file_and_says_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Path, *_: object, **__: object) -> None:
        self.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")  # a stream's: no file name

    monkeypatch.setattr(Path, "write_text", full)
    target = tmp_path / "summary.csv"
    with pytest.raises(CovsegError) as caught:
        write_text(target, "study,status\n")
    assert str(caught.value) == (f"no space left on device writing {target}; free space and "
                                 "rerun the same command")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stem", ["b" * 242, "b" * 251, "é" * 125, "scan" + ".2020" * 40])
def test_a_long_legal_name_is_written(tmp_path: Path, stem: str) -> None:
    """A legal name of 246 to 255 bytes could not be written: its temporary name (``.STEM.`` +
    8 random + suffix) passed the 255 bytes a name may hold. Its stem is cut there now, and a
    temporary file a killed run left is still known as one and removed."""
    target = tmp_path / f"{stem}.png"
    with atomic_path(target) as tmp:
        assert len(os.fsencode(tmp.name)) <= 255
        tmp.write_bytes(b"mask")
        shutil.copy(tmp, tmp_path / f"{tmp.name[:-12]}stale000.png")  # as kill -9 leaves it
    assert target.read_bytes() == b"mask"
    assert len(remove_temporaries_of(target)) == 1 and list(tmp_path.iterdir()) == [target]


def test_a_name_too_long_for_any_file_system_says_so(tmp_path: Path) -> None:
    target = tmp_path / f"{'b' * 252}.png"
    with pytest.raises(CovsegError, match=r"its name is too long to write \(256 bytes; file "
                                          r"systems allow 255\); pick a shorter name$"):
        write_text(target, "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fallocate", ["native", "unsupported"])
def test_reserve_allocates_the_disk_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             fallocate: str) -> None:
    """A sparse file's memmap dies of SIGBUS when the disk fills while it is stored into:
    reserve takes the space first, by fallocate, or by writing zeros where a file system has
    none."""
    if fallocate == "unsupported":
        def unsupported(handle: int, offset: int, length: int) -> None:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        monkeypatch.setattr(os, "posix_fallocate", unsupported, raising=False)
    path = tmp_path / "scratch"
    handle = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        reserve(handle, 3 * 2**20 + 5)
    finally:
        os.close(handle)
    assert path.stat().st_size == 3 * 2**20 + 5 and path.read_bytes().count(0) == 3 * 2**20 + 5
    assert path.stat().st_blocks * 512 >= 3 * 2**20 + 5


def test_the_umask_is_read_unchanged_where_proc_does_not_say_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``/proc/self/status`` (macOS, Linux before 4.7) the umask is read by setting it
    and setting it back: the process's umask stays the user's, not covseg's 022."""
    real_open = open

    def no_proc(file: object, *args: object, **kwargs: object) -> object:
        if str(file).startswith("/proc/"):
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", no_proc)
    before = os.umask(0o027)
    try:
        assert atomic._umask() == 0o027
        assert os.umask(0o027) == 0o027, "the umask was left changed"
    finally:
        os.umask(before)


def test_a_folder_that_cannot_be_made_is_one_line_naming_the_file_to_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mkdir's PermissionError, outside the errors that name the target, reached the command
    line as a bare "ro/ev: Permission denied"."""
    refuse_writing_under(tmp_path / "ro", monkeypatch)
    target = tmp_path / "ro" / "ev" / "evaluation.json"
    with pytest.raises(CovsegError, match=rf"^{target}: cannot write it \(Permission denied\); "
                                          "pick a writable place or another name$"):
        write_json(target, {"a": 1})


def test_writable_folder_refuses_a_folder_that_cannot_be_made_or_written_and_leaves_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before any work: made and written for the check, nothing is left of it."""
    assert writable_folder(tmp_path / "new" / "ev") == tmp_path / "new" / "ev"
    assert not (tmp_path / "new").exists()
    refuse_writing_under(tmp_path / "ro", monkeypatch)
    for folder in (tmp_path / "ro", tmp_path / "ro" / "ev"):
        with pytest.raises(CovsegError, match=rf"^{folder}: cannot write to it \(Permission "
                                              r"denied\); pick a writable --out$"):
            writable_folder(folder)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["full", "failing"])
def test_a_record_written_while_stopping_gives_way_to_a_full_or_failing_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """The record a run writes as an error stops it (cv's stopped.json) raised its own full
    disk, which replaced the error that stopped the run: it is given up, nothing written."""
    disk_full_from(monkeypatch, tmp_path / "stopped.json", code)
    write_json_stopping(tmp_path / "stopped.json", {"seconds": 1.0})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_json_stopping(tmp_path / "stopped.json", {"seconds": 1.0})
    assert json.loads((tmp_path / "stopped.json").read_text()) == {"seconds": 1.0}


def test_a_record_written_while_stopping_tells_what_is_no_disks_fault(tmp_path: Path) -> None:
    """Only a full or failing disk gives the record up: a folder in its way was given up
    too, unsaid."""
    (tmp_path / "stopped.json").mkdir()
    with pytest.raises(CovsegError, match="is a folder"):
        write_json_stopping(tmp_path / "stopped.json", {"seconds": 1.0})


def test_a_disk_gone_while_a_stream_is_written_names_the_file_and_says_what_to_do(
        tmp_path: Path) -> None:
    """A stream's write error names no file: a disk gone (EIO) while a checkpoint was written
    said a bare "covseg: error: Input/output error", as a full disk once did. It is the
    machine's fault, a stop to rerun once the disk is back (a training's with --resume), as a
    full disk is: it said to pick a writable place or another name."""
    target = tmp_path / "best.pt"
    with pytest.raises(DiskFailed) as caught, atomic_path(target):
        raise OSError(errno.EIO, "Input/output error")
    assert str(caught.value) == (f"{target}: cannot write it (Input/output error); fix the "
                                 "disk and rerun the same command")
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_disk_names_the_file_not_its_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a read-only file system unlinking a name never made fails with EROFS, not ENOENT:
    the clean-up of the temporary file that could not be made raised that error, which named
    the temporary (export: "covseg: error: out/.m.qefn5y1r.onnx: Read-only file system")."""
    def read_only(path: str | os.PathLike[str], *_: object, **__: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(os, "unlink", read_only)
    target = tmp_path / "m.onnx"
    with pytest.raises(CovsegError) as caught, atomic_path(target):
        raise AssertionError("no temporary file to write")
    assert str(caught.value) == (f"{target}: cannot write it (Read-only file system); pick a "
                                 "writable place or another name")
