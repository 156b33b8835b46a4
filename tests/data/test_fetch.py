"""Data set download against a local HTTP server: checksums, resume, safe extraction."""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import logging
import os
import random
import re
import shutil
import socket
import tarfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import nibabel as nib
import numpy as np
import pytest

import covseg
import covseg.data.fetch
from covseg.cli import main
from covseg.data.fetch import DATASETS, DataSource, RemoteFile, fetch
from covseg.errors import CovsegError


class Server:
    """Files served on 127.0.0.1 with HTTP Range (416 from the end on, as servers answer);
    can cut the first transfer of a file."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.cut_once: set[str] = set()
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path not in server.files:
                    self.send_error(404)
                    return
                body, kind = server.files[self.path]
                start = 0
                if self.headers.get("Range") and not server.ignore_range:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.cut_once:
                    server.cut_once.discard(self.path)
                    self.wfile.write(body[start: start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, name: str, body: bytes, kind: str = "application/octet-stream") -> str:
        self.files[f"/{name}"] = (body, kind)
        return f"{self.url}/{name}"


@pytest.fixture()
def server() -> Iterator[Server]:
    served = Server()
    thread = threading.Thread(target=served.httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def zip_bytes(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def tar_bytes(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = target
        data = b"" if target else b"payload"
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def source(*files: RemoteFile) -> dict[str, DataSource]:
    return {"test": DataSource("test data", "http://example.invalid", "none", files=files)}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_extracts_each_zip_into_its_folder(server: Server,
                                                                 tmp_path: Path) -> None:
    archive = zip_bytes({"case_001.nii.gz": b"a" * 1000, "case_002.nii.gz": b"b" * 10})
    nested = zip_bytes({"Lung_Mask/case_001.nii.gz": b"m"})
    table = source(
        RemoteFile(server.add("images.zip", archive), "Images.zip", size=len(archive),
                   sha256=sha(archive)),
        RemoteFile(server.add("lungs.zip", nested), "Lung_Mask.zip",
                   md5=hashlib.md5(nested).hexdigest()))
    paths = fetch("test", tmp_path, sources=table, backoff_s=0)
    assert [p.name for p in paths] == ["Images.zip", "Lung_Mask.zip"]
    assert (tmp_path / "Images" / "case_001.nii.gz").read_bytes() == b"a" * 1000
    assert (tmp_path / "Lung_Mask" / "case_001.nii.gz").read_bytes() == b"m"
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*"))
    count = len(server.requests)
    fetch("test", tmp_path, sources=table, backoff_s=0)
    assert len(server.requests) == count, "verified files are not downloaded again"


def test_interrupted_download_resumes_with_range(server: Server, tmp_path: Path) -> None:
    body = bytes(range(256)) * 400
    url = server.add("big.nii.gz", body)
    server.cut_once.add("/big.nii.gz")
    fetch("test", tmp_path, sources=source(RemoteFile(url, "big.nii.gz", sha256=sha(body))),
          backoff_s=0)
    assert (tmp_path / "big.nii.gz").read_bytes() == body
    assert server.requests[0][1] is None
    assert server.requests[1][1] == f"bytes={len(body) // 2}-"


def test_part_file_from_an_earlier_run_is_resumed(server: Server, tmp_path: Path) -> None:
    body = b"0123456789" * 300
    url = server.add("data.bin", body)
    (tmp_path / "data.bin.part").write_bytes(body[:1234])
    fetch("test", tmp_path, sources=source(RemoteFile(url, "data.bin", size=len(body))),
          backoff_s=0)
    assert (tmp_path / "data.bin").read_bytes() == body
    assert server.requests == [("/data.bin", "bytes=1234-")]


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    body = b"xyz" * 1000
    url = server.add("data.bin", body)
    server.ignore_range = True
    (tmp_path / "data.bin.part").write_bytes(b"garbage")
    fetch("test", tmp_path, sources=source(RemoteFile(url, "data.bin", sha256=sha(body))),
          backoff_s=0)
    assert (tmp_path / "data.bin").read_bytes() == body


def test_checksum_mismatch_deletes_the_download(server: Server, tmp_path: Path) -> None:
    url = server.add("data.bin", b"tampered")
    with pytest.raises(CovsegError, match="SHA-256"):
        fetch("test", tmp_path, sources=source(RemoteFile(url, "data.bin", sha256="0" * 64)),
              backoff_s=0)
    assert not list(tmp_path.iterdir())
    (tmp_path / "data.bin").write_bytes(b"tampered")
    with pytest.raises(CovsegError, match="already exists"):
        fetch("test", tmp_path, sources=source(RemoteFile(url, "data.bin", size=3)), backoff_s=0)


def nifti_gz() -> bytes:
    """A small real .nii.gz file's bytes."""
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    return gzip.compress(image.to_bytes())


def test_unrecorded_checksum_and_the_notice_are_logged_not_printed(
        server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """fetch printed the data set's notice and the unverified SHA-256 to stdout, which a
    caller could neither silence nor route as covseg's other messages."""
    body = nifti_gz()
    caplog.set_level(logging.INFO, logger="covseg.data.fetch")
    fetch("test", tmp_path, sources=source(RemoteFile(server.add("tr_im.nii.gz", body),
                                                      "tr_im.nii.gz")), backoff_s=0)
    assert capsys.readouterr().out == ""
    logged = {(r.levelname, r.getMessage().splitlines()[0]) for r in caplog.records}
    unverified = f"tr_im.nii.gz: SHA-256 {sha(body)} (no official checksum recorded; not verified)"
    assert ("WARNING", unverified) in logged
    assert ("INFO", "test: test data") in logged


@pytest.mark.parametrize("archive", [
    zip_bytes({"../evil.txt": b"x"}),
    zip_bytes({"/abs/evil.txt": b"x"}),
    zip_bytes({"ok.txt": b"x"}, symlink="link"),
], ids=["parent-path", "absolute-path", "symlink"])  # zip's headers hold the time: ids must not
def test_malicious_zip_is_refused(server: Server, tmp_path: Path, archive: bytes) -> None:
    target = tmp_path / "data"
    url = server.add("bad.zip", archive)
    with pytest.raises(CovsegError, match="unsafe member"):
        fetch("test", target, sources=source(RemoteFile(url, "bad.zip")), backoff_s=0)
    assert not (tmp_path / "evil.txt").exists()
    assert not (target / "bad").exists() and not list(target.glob(".bad*"))


@pytest.mark.parametrize("archive", [
    tar_bytes("../evil.txt"),
    tar_bytes("link", tarfile.SYMTYPE, "/etc/passwd"),
    tar_bytes("hard", tarfile.LNKTYPE, "../../etc/passwd"),
], ids=["parent-path", "symlink", "hardlink"])  # gzip's header holds the time: ids must not
def test_malicious_tar_is_refused(server: Server, tmp_path: Path, archive: bytes) -> None:
    url = server.add("bad.tar.gz", archive)
    with pytest.raises(CovsegError, match="unsafe member"):
        fetch("test", tmp_path / "data", sources=source(RemoteFile(url, "bad.tar.gz")),
              backoff_s=0)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data" / "bad").exists()


def test_http_errors_and_web_pages(server: Server, tmp_path: Path) -> None:
    with pytest.raises(CovsegError, match="HTTP 404"):
        fetch("test", tmp_path, sources=source(RemoteFile(f"{server.url}/missing", "x.bin")),
              backoff_s=0)
    page = server.add("drive", b"<html>confirm</html>", "text/html; charset=utf-8")
    with pytest.raises(CovsegError, match="web page instead of tr_mask.nii.gz"):
        fetch("test", tmp_path, sources=source(RemoteFile(page, "tr_mask.nii.gz")), backoff_s=0)


def test_a_transient_failure_is_retried_then_explained(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    waits: list[float] = []
    monkeypatch.setattr("covseg.data.fetch.time.sleep", waits.append)

    def timing_out(*_: object, **__: object) -> None:
        raise urllib.error.URLError(TimeoutError("timed out"))

    monkeypatch.setattr(urllib.request, "urlopen", timing_out)
    with pytest.raises(CovsegError, match="failed 2 times.*check the network connection"):
        fetch("test", tmp_path, sources=source(RemoteFile("http://example.invalid/x", "x")),
              retries=1, backoff_s=3)
    assert waits == [3]


def test_an_unreachable_host_fails_at_once_and_leaves_no_empty_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline, a failed name lookup was retried 5 times over 30 s with warnings, and the
    failed fetch left the empty --to folder it had made."""
    waits: list[float] = []
    monkeypatch.setattr("covseg.data.fetch.time.sleep", waits.append)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    made = tmp_path / "new" / "data"
    with pytest.raises(CovsegError, match=r"^cannot reach 127\.0\.0\.1 \(no network\? .*refused"):
        fetch("test", made, sources=source(RemoteFile(f"http://127.0.0.1:{port}/x", "x")),
              backoff_s=1)
    assert not (tmp_path / "new").exists(), "the folders fetch made are removed"

    def no_dns(*_: object, **__: object) -> None:
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME,
                                                    "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(CovsegError, match=r"cannot reach host\.invalid \(no network\? .*Name "
                                          r"or service not known\); .*x\.zip by hand into"):
        fetch("test", mine, sources=source(RemoteFile("http://host.invalid/x.zip", "x.zip")))
    assert waits == [] and mine.is_dir(), "a folder that was there before is kept"


def test_a_file_given_as_to_is_named_as_the_option(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The generic 'a file is in the way' error said 'pick another --out' to fetch's --to; the
    API raised the NotADirectoryError itself (only the CLI converted it)."""
    (tmp_path / "afile").write_text("x")
    assert main(["data", "fetch", "medseg", "--to", str(tmp_path / "afile")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"covseg: error: {tmp_path / 'afile'}: a file is in the way (the "
                            "output is a folder); pick another --to\n")
    assert main(["data", "fetch", "medseg", "--to", str(tmp_path / "afile" / "sub")]) == 2
    assert capsys.readouterr().err == (
        f"covseg: error: {tmp_path / 'afile'}: a file is in the way of the output folder "
        f"{tmp_path / 'afile' / 'sub'}; pick another --to\n")
    assert captured.out == "" and (tmp_path / "afile").read_text() == "x"
    with pytest.raises(CovsegError) as raised:  # the API names its keyword, not the CLI's flag
        covseg.fetch_data("medseg", tmp_path / "afile")
    assert str(raised.value) == (f"{tmp_path / 'afile'}: a file is in the way (the output is a "
                                 "folder); pick another to")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_to_that_cannot_be_made_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """``--to /proc/f`` said only "/proc/f: No such file or directory"."""
    assert main(["data", "fetch", "medseg", "--to", "/proc/covseg_f"]) == 2
    assert capsys.readouterr().err == ("covseg: error: /proc/covseg_f: the folder cannot be made "
                                       "(No such file or directory); pick a writable --to\n")
    with pytest.raises(CovsegError, match=r"^/proc/covseg_f: the folder cannot be made \(No such "
                                          r"file or directory\); pick a writable to$"):
        covseg.fetch_data("medseg", "/proc/covseg_f")


def test_mosmed_explains_the_manual_step_and_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(CovsegError, match=r"mosmed\.ai.*licence.*studies/CT-0"):
        fetch("mosmed", tmp_path / "mosmed")
    assert not (tmp_path / "mosmed").exists()
    with pytest.raises(CovsegError, match="unknown data set"):
        fetch("kaggle", tmp_path)
    zenodo = DATASETS["zenodo-covid19-ct"].files
    assert [f.name for f in zenodo] == ["COVID-19-CT-Seg_20cases.zip", "Infection_Mask.zip",
                                        "Lung_Mask.zip", "Lung_and_Infection_Mask.zip"]
    assert all("zenodo.org/records/3757476/files/" in f.url for f in zenodo)
    assert [f.name for f in DATASETS["medseg"].files] == ["tr_im.nii.gz", "tr_mask.nii.gz",
                                                          "val_im.nii.gz"]


def test_a_complete_part_is_verified_not_downloaded_again(server: Server, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    """A run stopped while it verified a finished download leaves every byte in ``.part``: the
    server's 416 to ``Range: bytes=SIZE-`` deleted it, logged 'the server refused to resume;
    starting again; resuming', slept and downloaded the whole file again."""
    waits: list[float] = []
    monkeypatch.setattr("covseg.data.fetch.time.sleep", waits.append)
    body = os.urandom(3000)
    url = server.add("Infection_Mask.nii.gz", body)
    (tmp_path / "Infection_Mask.nii.gz.part").write_bytes(body)
    fetch("test", tmp_path, sources=source(RemoteFile(url, "Infection_Mask.nii.gz",
                                                      sha256=sha(body))))
    assert (tmp_path / "Infection_Mask.nii.gz").read_bytes() == body
    assert server.requests == [("/Infection_Mask.nii.gz", "bytes=3000-")]
    assert not list(tmp_path.glob("*.part")) and waits == [] and not caplog.records
    (tmp_path / "Infection_Mask.nii.gz").rename(tmp_path / "Infection_Mask.nii.gz.part")
    with (tmp_path / "Infection_Mask.nii.gz.part").open("ab") as longer:
        longer.write(b"more than the server has")
    server.requests.clear()
    fetch("test", tmp_path, sources=source(RemoteFile(url, "Infection_Mask.nii.gz",
                                                      sha256=sha(body))))
    assert (tmp_path / "Infection_Mask.nii.gz").read_bytes() == body
    assert server.requests == [("/Infection_Mask.nii.gz", "bytes=3024-"),
                               ("/Infection_Mask.nii.gz", None)] and waits == []
    assert [r.getMessage() for r in caplog.records] == [
        "Infection_Mask.nii.gz: the server cannot resume from byte 3024; restarting the download"]


class _FullDisk:
    """An unbuffered file that takes ``room`` bytes, part of the write that fills it, then
    fails with ENOSPC (which names no file), as a full disk does."""

    def __init__(self, path: Path, mode: str, buffering: int = -1, room: int = 0) -> None:
        self.handle = open(path, mode, buffering=buffering)  # noqa: SIM115
        self.room = room

    def write(self, data: memoryview) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        taken = self.handle.write(data[:self.room]) or 0
        self.room -= taken
        return taken

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.handle.close()


def test_a_full_disk_names_the_download_and_a_rerun_resumes(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A write error names no file: the command line printed 'covseg: error: : No space left
    on device', saying neither which file nor that a rerun resumes."""
    body = os.urandom(5000)
    monkeypatch.setitem(DATASETS, "medseg", source(RemoteFile(
        server.add("big.nii.gz", body), "big.nii.gz", sha256=sha(body)))["test"])
    monkeypatch.setattr(covseg.data.fetch, "open", lambda *args, **kwargs: _FullDisk(
        *args, **kwargs, room=1500), raising=False)
    assert main(["data", "fetch", "medseg", "--to", str(tmp_path)]) == 2
    part = tmp_path / "big.nii.gz.part"
    assert capsys.readouterr().err.splitlines()[-1] == (  # after tqdm's bar
        f"covseg: error: {part}: No space left on device; free some space and rerun to resume "
        "the download")
    assert part.read_bytes() == body[:1500]
    monkeypatch.undo()
    monkeypatch.setitem(DATASETS, "medseg", source(RemoteFile(
        server.add("big.nii.gz", body), "big.nii.gz", sha256=sha(body)))["test"])
    assert main(["data", "fetch", "medseg", "--to", str(tmp_path)]) == 0
    assert (tmp_path / "big.nii.gz").read_bytes() == body
    assert server.requests[-1] == ("/big.nii.gz", "bytes=1500-")


def test_a_full_disk_while_unpacking_names_the_archive(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpacking onto a full disk raised a bare OSError ('covseg: error: : No space left on
    device'), naming neither the archive nor the folder."""
    archive = zip_bytes({"Lung_Mask/a.nii": b"\0" * 3000})

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(CovsegError, match=(
            rf"^{tmp_path / 'Lung_Mask.zip'}: cannot unpack it into {tmp_path} \(No space left "
            r"on device\); free some space and rerun: the download is kept$")):
        fetch("test", tmp_path, sources=source(RemoteFile(server.add("l.zip", archive),
                                                          "Lung_Mask.zip", sha256=sha(archive))))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Lung_Mask.zip"]


def _flipped(archive: bytes, at: int) -> bytes:
    damaged = bytearray(archive)
    damaged[at] ^= 0xFF
    return bytes(damaged)


def _tar_bz2(size: int) -> bytes:
    """Two members of random bytes: more than one bzip2 block (100 kB at level 1)."""
    buffer = io.BytesIO()
    data = random.Random(0).randbytes(size)
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("a.nii", "b.nii"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return bz2.compress(buffer.getvalue(), compresslevel=1)


def _tar_gz_stored(text: bytes) -> bytes:
    """One member in gzip's stored (level 0) blocks: a damaged byte decodes without an error,
    and only the CRC in gzip's trailer, after tar's end-of-archive blocks, tells."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("a.nii")
        info.size = len(text)
        archive.addfile(info, io.BytesIO(text))
    return gzip.compress(buffer.getvalue(), compresslevel=0)


STORED = zip_bytes({"Lung_Mask/a.nii": b"hello world " * 1000})
BLOCKS = _tar_bz2(150_000)
STORED_GZ = _tar_gz_stored(b"hello world " * 1000)


@pytest.mark.parametrize(("name", "archive"), [
    ("Lung_Mask.zip", _flipped(STORED, STORED.index(b"hello world") + 5)),
    ("Lung_Mask.tar.bz2", _flipped(BLOCKS, len(BLOCKS) - 1000)),
    ("Lung_Mask.tar.gz", b"\x1f\x8b\x08\x00" + bytes(60)),
    ("Lung_Mask.tar.gz", _flipped(STORED_GZ, STORED_GZ.index(b"hello world") + 5)),
], ids=["zip-bad-crc", "tar.bz2-bad-block", "tar.gz-garbled", "tar.gz-bad-crc"])
def test_a_corrupt_archive_is_one_line_not_a_traceback(server: Server, tmp_path: Path,
                                                      name: str, archive: bytes) -> None:
    """An archive whose listing reads but whose data are damaged (a bad CRC-32) ended in
    zipfile's traceback: only the listing was checked; a bad bzip2 block said 'covseg: error: :
    Invalid data stream'; tarfile's reason for a garbled archive took five lines."""
    with pytest.raises(CovsegError, match=rf"^{tmp_path / name}: corrupt archive \(.+\); "
                                          "delete it and rerun$"):
        fetch("test", tmp_path, sources=source(RemoteFile(server.add(name, archive), name)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize(("members", "clash"), [
    ({"x/a": b"1", "x/a/b": b"2"}, "x/a/b"),
    ({"x/a/b": b"2", "x/a": b"1"}, "x/a"),
])
def test_members_that_clash_blame_the_archive_not_to(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], members: dict[str, bytes], clash: str) -> None:
    """A file and a folder of one name in an archive said 'a file is in the way of a folder
    covseg writes; pick another --to', naming a scratch path that no longer existed."""
    archive = zip_bytes(members)
    monkeypatch.setitem(DATASETS, "medseg", source(RemoteFile(
        server.add("Lung.zip", archive), "Lung.zip", sha256=sha(archive)))["test"])
    assert main(["data", "fetch", "medseg", "--to", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (  # after tqdm's bar
        f"covseg: error: {tmp_path / 'Lung.zip'}: member {clash!r} clashes with a file or folder "
        "of the same name in the archive; not extracted, unpack it by hand")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Lung.zip"]


def test_fetch_data_is_the_commands_download(server: Server, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`covseg data fetch` had no Python API function; covseg.fetch_data runs the same code."""
    body = b"ct" * 100
    monkeypatch.setitem(DATASETS, "medseg", source(RemoteFile(
        server.add("tr_im.nii.gz", body), "tr_im.nii.gz", sha256=sha(body)))["test"])
    assert covseg.fetch_data("medseg", to=tmp_path / "m") == [tmp_path / "m" / "tr_im.nii.gz"]
    assert (tmp_path / "m" / "tr_im.nii.gz").read_bytes() == body
    assert main(["data", "fetch", "medseg", "--to", str(tmp_path / "m")]) == 0
    assert len(server.requests) == 1, "the command found the API's verified download"
    with pytest.raises(CovsegError, match=r"mosmed\.ai.*licence"):
        covseg.fetch_data("mosmed", tmp_path / "mosmed")
    with pytest.raises(CovsegError, match=r"^to must be a path \(str or pathlib.Path\), got None$"):
        covseg.fetch_data("medseg", None)


PAGE = b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>"


def test_a_hand_placed_web_page_is_refused_not_reported_ready(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MedSeg's files have no recorded checksum: a browser's HTML page saved as tr_im.nii.gz
    (the offline error says to download it by hand) was reported 'medseg: 3 file(s) ready',
    and only `covseg train` failed on it later."""
    folder = tmp_path / "dlm"
    folder.mkdir()
    for remote in DATASETS["medseg"].files:
        (folder / remote.name).write_bytes(PAGE)
    assert main(["data", "fetch", "medseg", "--to", str(folder)]) == 2
    captured = capsys.readouterr()
    url = DATASETS["medseg"].files[0].url
    assert captured.err == (f"covseg: error: {folder / 'tr_im.nii.gz'}: already exists but is a "
                            "web page, not a NIfTI; delete it and rerun, or download it again by "
                            f"hand from {url}\n")
    assert "ready" not in captured.out and "SHA-256" not in captured.out
    assert sorted(p.read_bytes() for p in folder.iterdir()) == [PAGE] * 3, "nothing deleted"


def test_a_hand_placed_nifti_cut_short_is_refused_not_reported_ready(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tr_im.nii.gz cut to half its bytes (an interrupted browser download or cp) has a whole
    header, which was all fetch read: it said 'medseg: 3 file(s) ready', and visualize then
    failed on its voxels. The gzip stream is read to its end now."""
    folder = tmp_path / "fm2"
    folder.mkdir()
    noise = np.random.default_rng(0).integers(-1000, 400, (64, 64, 8), dtype=np.int16)
    whole = gzip.compress(nib.Nifti1Image(noise, np.eye(4)).to_bytes())
    for remote in DATASETS["medseg"].files:
        (folder / remote.name).write_bytes(whole)
    (folder / "tr_im.nii.gz").write_bytes(whole[:len(whole) // 2])
    assert main(["data", "fetch", "medseg", "--to", str(folder)]) == 2
    captured = capsys.readouterr()
    url = DATASETS["medseg"].files[0].url
    assert captured.err == (
        f"covseg: error: {folder / 'tr_im.nii.gz'}: already exists but is truncated or damaged "
        "(its gzip stream does not read to the end: EOFError: Compressed file ended before the "
        "end-of-stream marker was reached), as an interrupted download or copy leaves it; "
        f"delete it and rerun, or download it again by hand from {url}\n")
    assert "ready" not in captured.out
    (folder / "tr_im.nii.gz").write_bytes(whole)
    assert main(["data", "fetch", "medseg", "--to", str(folder)]) == 0
    assert "medseg: 3 file(s) ready" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "body", "problem"), [
    ("tr_mask.nii.gz", b"hello", r"is not a NIfTI \(no gzip signature; it starts with b'hello'\)"),
    ("tr_mask.nii.gz", gzip.compress(b"not a header " * 40),
     r"is not a NIfTI \(no NIfTI header after the gzip signature\)"),
    ("tr_mask.nii.gz", nifti_gz()[:40], r"is not a readable NIfTI \(EOFError: Compressed file "),
    ("Lung_Mask.zip", PAGE, "is a web page, not a zip archive"),
    ("Lung_Mask.zip", b"PK" + bytes(10), r"corrupt archive"),
    ("Lung.tar.gz", b"BZh91AY", r"is not a tar archive \(no gzip signature"),
    ("Lung.tar", bytes(600), r"is not a tar archive \(no tar signature"),
], ids=["text-as-nii", "gzip-not-nifti", "truncated-nii", "page-as-zip", "bad-zip",
        "bzip2-as-tar-gz", "zeros-as-tar"])
def test_a_hand_placed_file_of_the_wrong_kind_is_refused(tmp_path: Path, name: str, body: bytes,
                                                         problem: str) -> None:
    (tmp_path / name).write_bytes(body)
    with pytest.raises(CovsegError, match=f"^{tmp_path / name}: (already exists but )?{problem}"):
        fetch("test", tmp_path, sources=source(RemoteFile("http://host.invalid/f", name)))


def test_a_web_page_under_a_checksummed_name_is_named_as_one(tmp_path: Path) -> None:
    """With a checksum recorded, a web page is still called a web page, not a wrong SHA-256;
    a file of the right kind and checksum is kept without reading it as that kind again."""
    (tmp_path / "Lung_Mask.zip").write_bytes(PAGE)
    with pytest.raises(CovsegError, match="already exists but is a web page, not a zip archive"):
        fetch("test", tmp_path, sources=source(RemoteFile("http://host.invalid/f",
                                                          "Lung_Mask.zip", sha256="0" * 64)))
    body = nifti_gz()
    (tmp_path / "tr_im.nii.gz").write_bytes(body)
    assert fetch("test", tmp_path, sources=source(RemoteFile(
        "http://host.invalid/f", "tr_im.nii.gz", sha256=sha(body)))) == [tmp_path / "tr_im.nii.gz"]


def test_a_web_page_served_as_a_binary_file_is_refused(server: Server, tmp_path: Path) -> None:
    """A confirmation page sent as application/octet-stream was saved as tr_im.nii.gz."""
    url = server.add("drive", PAGE)
    with pytest.raises(CovsegError, match=f"^{url} returned a web page instead of tr_im.nii.gz"):
        fetch("test", tmp_path, sources=source(RemoteFile(url, "tr_im.nii.gz")), backoff_s=0)
    assert not list(tmp_path.iterdir())
    body = nifti_gz()
    fetch("test", tmp_path, sources=source(RemoteFile(server.add("tr_im.nii.gz", body),
                                                      "tr_im.nii.gz")), backoff_s=0)
    assert (tmp_path / "tr_im.nii.gz").read_bytes() == body


def test_offline_every_missing_file_is_named_with_its_address(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Offline, only the first missing file was named (then the next, one rerun at a time),
    and with no address to download it from."""
    def no_dns(*_: object, **__: object) -> None:
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME,
                                                    "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    files = DATASETS["medseg"].files
    made = tmp_path / "new" / "medseg"
    assert main(["data", "fetch", "medseg", "--to", str(made)]) == 2
    assert capsys.readouterr().err == (
        "covseg: error: cannot reach drive.usercontent.google.com (no network? [Errno -2] Name "
        f"or service not known); connect and rerun, or download these 3 files by hand into "
        f"{made}: tr_im.nii.gz from {files[0].url}, tr_mask.nii.gz from {files[1].url} and "
        f"val_im.nii.gz from {files[2].url}\n")
    assert not (tmp_path / "new").exists(), "no empty folder is left"
    made.mkdir(parents=True)
    (made / "tr_im.nii.gz").write_bytes(nifti_gz())
    (made / "val_im.nii.gz.part").write_bytes(b"\x1f\x8b")
    with pytest.raises(CovsegError, match=(
            f"by hand into {made}: tr_mask.nii.gz from {re.escape(files[1].url)} and "
            f"val_im.nii.gz from {re.escape(files[2].url)}$")):
        fetch("medseg", made)
    assert sorted(p.name for p in made.iterdir()) == ["tr_im.nii.gz", "val_im.nii.gz.part"]


def test_the_cli_prints_the_notice_and_warns_of_unverified_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fetch_data returns every file ready (here placed by hand, none downloaded); the CLI
    prints the notice and the count, and the unverified checksums as warnings on stderr."""
    folder = tmp_path / "by-hand"
    folder.mkdir()
    for remote in DATASETS["medseg"].files:
        (folder / remote.name).write_bytes(nifti_gz())
    assert main(["data", "fetch", "medseg", "--to", str(folder)]) == 0
    captured = capsys.readouterr()
    medseg = DATASETS["medseg"]
    assert captured.out == (f"medseg: {medseg.description}\n  from {medseg.page}\n  licence: "
                            f"{medseg.licence}\nmedseg: 3 file(s) ready in {folder}\n")
    assert captured.err.count("covseg: warning: ") == 3
    assert "(no official checksum recorded; not verified)" in captured.err
    assert covseg.fetch_data("medseg", folder) == [folder / r.name for r in medseg.files]
    assert capsys.readouterr().out == ""


def test_the_cli_prints_mosmeds_notice_before_its_manual_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """zenodo and medseg printed their description and licence first; mosmed only its error."""
    assert main(["data", "fetch", "mosmed", "--to", str(tmp_path / "mosmed")]) == 2
    captured = capsys.readouterr()
    mosmed = DATASETS["mosmed"]
    assert captured.out == (f"mosmed: {mosmed.description}\n  from {mosmed.page}\n  licence: "
                            f"{mosmed.licence}\n")
    assert captured.err.count("\n") == 1 and "register and accept the licence" in captured.err
    assert not (tmp_path / "mosmed").exists()
