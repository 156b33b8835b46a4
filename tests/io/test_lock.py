"""covseg.io.lock: the lock file probed is the one in the folder."""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import re
import threading
from pathlib import Path

import pytest

from covseg.errors import CovsegError
from covseg.io import lock
from covseg.io.lock import (
    LOCK_FILE,
    PLAN_LOCK,
    SHARD_PLAN,
    drop_unheld_lock,
    holder,
    writing_to,
)


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


def _as_another_users_file(path: Path, pid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave ``path`` as a lock file another user made under ``umask 022`` (0644, theirs): no
    write bits for us, and ``os.open`` refusing to open it for writing, as the system refuses
    any user but root (who may write it, so that the test runs alike as root or not)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n")
    path.chmod(0o444)
    real_open = os.open

    def checked_open(name: object, flags: int, *args: object, **kwargs: object) -> int:
        if (flags & (os.O_WRONLY | os.O_RDWR) and Path(str(name)) == path and path.exists()
                and not path.stat().st_mode & 0o222):
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(lock.os, "open", checked_open)


def test_a_stale_lock_another_user_left_in_a_writable_folder_is_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock file made under ``umask 022`` by a run since killed was opened for writing, and
    its refusal ("cannot write to it; pick a writable --out") kept every other user out of a
    group-writable folder for good. No run holds it: it is replaced by ours."""
    path = tmp_path / "out" / LOCK_FILE
    _as_another_users_file(path, "8609", monkeypatch)
    with writing_to(tmp_path / "out"):
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()


@pytest.mark.parametrize(("held", "shared", "refusal"), [
    ("8609", False, r"^another covseg run is writing to {out} \(pid 8609\)"),
    ("8609 shard", True, (r"^covseg --shard runs are writing to {out} \(the last to start: "
                          r"pid 8609\)"))])
def test_a_held_lock_another_user_made_names_its_run_not_an_unwritable_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: str, shared: bool,
        refusal: str) -> None:
    """A lock file under ``umask 022`` that its run holds refused another user with "cannot
    write to it ... pick a writable --out" of a folder they could write: probed read-only, it
    is refused as any held lock is, naming the run. A shard, which cannot add its pid to such a
    file that running shards hold, is refused, naming them, and does not take the file they
    hold for a stale one and remove it."""
    path = tmp_path / "out" / LOCK_FILE
    _as_another_users_file(path, held, monkeypatch)
    with path.open("r") as holder:
        fcntl.flock(holder, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        with (pytest.raises(CovsegError,
                            match=refusal.format(out=re.escape(str(tmp_path / "out")))),
              writing_to(tmp_path / "out", shared=shared)):
            pytest.fail("the held folder was written to")
    assert path.read_text() == f"{held}\n"


def test_a_stale_lock_in_a_folder_we_cannot_write_is_refused_as_unwritable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the stale file cannot be removed (the folder is not ours to write), the run is
    refused as before: the folder cannot be written to."""
    path = tmp_path / "out" / LOCK_FILE
    _as_another_users_file(path, "8609", monkeypatch)
    _unlink_refused(path, errno.EACCES, monkeypatch)
    with (pytest.raises(CovsegError, match=rf"^{re.escape(str(tmp_path / 'out'))}: cannot write "
                        r"to it \(Permission denied\); pick a writable --out$"),
          writing_to(tmp_path / "out")):
        pytest.fail("the unwritable folder was written to")
    assert path.read_text() == "8609\n"


def _unlink_refused(path: Path, code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.unlink`` of ``path`` refused with ``code``: EACCES as in a folder we may not
    write, EPERM as in a sticky folder (3775, 1777) for a file another user owns."""
    real_unlink = os.unlink

    def refused(name: object, *args: object, **kwargs: object) -> None:
        if Path(str(name)) == path:
            raise PermissionError(code, os.strerror(code), str(name))
        real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(lock.os, "unlink", refused)


def test_a_lock_file_a_sticky_folder_keeps_is_left_and_the_finished_run_succeeds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that took over another user's stale lock in a sticky folder did all its work,
    then failed with a bare ".covseg.lock: Operation not permitted" (exit 2) at its removal.
    The file stays, unheld: the next run takes it over."""
    path = tmp_path / "out" / LOCK_FILE
    path.parent.mkdir()
    path.write_text("8609\n")
    _unlink_refused(path, errno.EPERM, monkeypatch)
    with writing_to(tmp_path / "out"):
        assert path.read_text() == f"{os.getpid()}\n"
    assert path.exists()
    with writing_to(tmp_path / "out", shared=True):  # the last shard drops the shards' plan
        (tmp_path / "out" / SHARD_PLAN).write_text("{}")
    assert path.exists() and not (tmp_path / "out" / SHARD_PLAN).exists()


def test_another_users_stale_lock_a_sticky_folder_keeps_names_its_owner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither writable nor removable: refused before any work, naming whom to ask, not as a
    folder we cannot write to."""
    path = tmp_path / "out" / LOCK_FILE
    _as_another_users_file(path, "8609", monkeypatch)
    _unlink_refused(path, errno.EPERM, monkeypatch)
    owner = re.escape(pwd.getpwuid(path.stat().st_uid).pw_name)
    with (pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: left by a covseg run of "
                        rf"{owner} that ended; it cannot be replaced in this sticky folder "
                        r"\(Operation not permitted\): ask them to delete it, or pick another "
                        r"--out$") as refused,
          writing_to(tmp_path / "out")):
        pytest.fail("the folder was written to")
    with path.open("r") as probe:  # let go with the refusal, even one kept (a notebook's last)
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert refused.value


def test_another_users_plan_lock_left_in_a_sticky_folder_lets_shards_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shards' plan lock, opened for writing as the run's lock was, refused a shard where
    another user's killed shard left it under ``umask 022``; and its removal, refused in a
    sticky folder, failed the shard. Probed read-only, it is left there, unheld."""
    path = tmp_path / "out" / PLAN_LOCK
    _as_another_users_file(path, "", monkeypatch)
    _unlink_refused(path, errno.EPERM, monkeypatch)
    firsts = []
    with writing_to(tmp_path / "out", shared=True, agree=firsts.append):
        assert (tmp_path / "out" / LOCK_FILE).read_text() == f"{os.getpid()} shard\n"
    assert firsts == [True] and path.exists()


def test_a_stale_lock_of_an_unknown_owner_names_its_uid(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An owner the system has no name for (a uid from another machine's NFS) is named by
    uid."""
    path = tmp_path / "out" / LOCK_FILE
    _as_another_users_file(path, "8609", monkeypatch)
    _unlink_refused(path, errno.EPERM, monkeypatch)

    def unknown(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.setattr(lock.pwd, "getpwuid", unknown)
    with (pytest.raises(CovsegError, match=rf"left by a covseg run of uid {path.stat().st_uid} "
                        "that ended"), writing_to(tmp_path / "out")):
        pytest.fail("the folder was written to")



def test_a_folder_under_a_dangling_link_is_refused_naming_the_link(tmp_path: Path) -> None:
    """Making a lock under a symbolic link to a missing folder failed with mkdir's "File
    exists", though nothing is there to see: the refusal names the link."""
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    with (pytest.raises(CovsegError, match=rf"^{re.escape(str(tmp_path / 'out'))}: a symbolic "
                        "link to .*gone, which does not exist"),
          writing_to(tmp_path / "out" / "run")):
        pytest.fail("the folder was written to")


def test_a_disk_gone_as_the_pid_is_written_is_refused_as_an_unwritable_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the pid names no file: a disk gone (EIO) said a bare "covseg: error:
    Input/output error" before anything was done."""
    real_write = os.write

    def gone(fd: int, data: bytes, **kwargs: object) -> int:
        if os.fstat(fd).st_ino == (tmp_path / LOCK_FILE).stat().st_ino:
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data, **kwargs)

    monkeypatch.setattr(os, "write", gone)
    with pytest.raises(CovsegError) as caught, writing_to(tmp_path):
        raise AssertionError("the lock was taken")
    assert str(caught.value) == (f"{tmp_path}: cannot write to it (Input/output error); pick a "
                                 "writable --out")


def test_a_run_starting_while_a_load_probes_its_lock_is_not_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load of a stopped run (predict, export, --lung-model) probes its lock, holding it
    exclusive for a moment: a `train --resume` starting in that moment was refused as "another
    covseg run is writing to RUN (pid N)", N the stale pid of the run that stopped. The run
    tries the lock again for a moment now, and starts once the probe lets go."""
    (tmp_path / LOCK_FILE).write_text("111\n")
    probing, tried, let_go = threading.Event(), threading.Event(), threading.Event()

    def probe() -> None:
        with lock._probed(tmp_path):
            probing.set()
            tried.wait(30)
        let_go.set()

    def pause(_: float) -> None:  # the run found the lock held: the probe ends meanwhile
        tried.set()
        assert let_go.wait(30)

    monkeypatch.setattr(lock, "_pause", pause, raising=False)
    thread = threading.Thread(target=probe)
    thread.start()
    try:
        assert probing.wait(30)
        with writing_to(tmp_path):
            assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    finally:
        tried.set()
        thread.join()


def test_holder_passes_a_folder_this_thread_holds(tmp_path: Path) -> None:
    """holder() named the calling run's own lock as another run's: a cross-validation loading
    its own fold, or an ensemble its missing member's best.pt, was "still being trained (pid
    <its own pid>)". A folder this thread holds has no other holder now; another thread's
    (another run of this process) is named."""
    with writing_to(tmp_path):
        assert holder(tmp_path) is None
        found: list[str | None] = []
        thread = threading.Thread(target=lambda: found.append(holder(tmp_path)))
        thread.start()
        thread.join()
        assert found == [str(os.getpid())]
