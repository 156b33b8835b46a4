"""Download public COVID-19 CT data sets: resumable, checksummed, safely unpacked (urllib only).

- ``zenodo-covid19-ct``: Ma et al., "COVID-19 CT Lung and Infection Segmentation Dataset",
  Zenodo record 3757476 (20 CTs with lung and infection masks, CC BY-NC-SA 4.0). Each zip is
  unpacked into a folder named after it (``COVID-19-CT-Seg_20cases/``, ``Infection_Mask/``, ...),
  the layout ``covseg.data.layouts`` reads as "zenodo".
- ``medseg``: MedSeg "COVID-19 CT segmentation dataset" (medicalsegmentation.com/covid19):
  ``tr_im.nii.gz`` + ``tr_mask.nii.gz`` (100 labelled slices) and ``val_im.nii.gz``, hosted on
  Google Drive by MedSeg.
- ``mosmed``: MosMedData COVID19_1110 needs registration and a licence agreement at mosmed.ai,
  so :func:`fetch` explains the manual step instead of downloading.

Checksums: Zenodo publishes MD5s on the record page, which are not recorded here. The SHA-256
values below were recorded by torch-em (constantinpape/torch-em,
torch_em/data/datasets/medical/covid19_seg.py) for the same Zenodo files; MedSeg publishes none,
so for its files the computed SHA-256 is printed, not verified. Every file of a kind known here
(``.nii.gz``, zip and tar archives) is also checked to be of that kind, so that a web page saved
under its name (Google Drive's confirmation page, say) is refused, not reported ready.

Downloads go to ``NAME.part`` and resume with an HTTP Range request after an interruption
(in the same run, with retries, or in a later run); the file gets its final name only once
complete and verified (a complete ``.part``, left by a run stopped while verifying it, is
verified again). Archives are checked before anything is extracted: absolute paths,
``..`` components, links and special files are refused.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import io
import logging
import lzma
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path, PurePosixPath

import nibabel as nib
from nibabel.wrapstruct import WrapStructError

from covseg.errors import CovsegError
from covseg.io.atomic import output_folder
from covseg.io.nifti import NIFTI_ERRORS
from covseg.progress import progress_bar
from covseg.provenance import option_name

CHUNK = 1 << 20
HEAD = 1024
"""Bytes read from a file's start to tell what it is."""
UNPACKED_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
"""Suffixes of the archives fetch unpacks (zip and tar: Python reads them)."""
ARCHIVE_SUFFIXES = (*UNPACKED_SUFFIXES, ".7z", ".rar")
"""Suffixes of the archives a download may be left packed in, which a data folder's reader names
(covseg unpacks none of a user's)."""
TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)
CORRUPT = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
"""What reading a damaged archive raises (a bad CRC, truncated or garbled compressed data), with
an OSError that has no errno (gzip's and bz2's: "CRC check failed", "Invalid data stream")."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """One file to download, with whatever checksums are recorded for it."""

    url: str
    name: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class DataSource:
    """A data set: its files, or ``manual`` instructions when it cannot be downloaded."""

    description: str
    page: str
    licence: str
    files: tuple[RemoteFile, ...] = ()
    manual: str = ""


ZENODO = "https://zenodo.org/records/3757476/files/"
GOOGLE_DRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="

DATASETS: dict[str, DataSource] = {
    "zenodo-covid19-ct": DataSource(
        description="COVID-19 CT Lung and Infection Segmentation Dataset (20 CT volumes)",
        page="https://zenodo.org/records/3757476",
        licence="CC BY-NC-SA 4.0; cite Ma et al., Medical Physics 2021",
        files=(
            RemoteFile(ZENODO + "COVID-19-CT-Seg_20cases.zip?download=1",
                       "COVID-19-CT-Seg_20cases.zip",
                       sha256="a5060480eff9315b069b086312dac4872777901fb80d268a5a83edd9f4e7b440"),
            RemoteFile(ZENODO + "Infection_Mask.zip?download=1", "Infection_Mask.zip",
                       sha256="87901c73fdd2230260e61d2dbc57bf56026efc28264006b8ea2bf411453c1694"),
            RemoteFile(ZENODO + "Lung_Mask.zip?download=1", "Lung_Mask.zip",
                       sha256="f060b0d0299939a6d95ddefdbfa281de1a779c4d230a5adbd32414711d6d8187"),
            RemoteFile(ZENODO + "Lung_and_Infection_Mask.zip?download=1",
                       "Lung_and_Infection_Mask.zip",
                       sha256="34f5a573cb8fb53cb15abe81868395d9addf436854826a6fd6e70c2b294f19c3"),
        ),
    ),
    "medseg": DataSource(
        description="MedSeg COVID-19 CT segmentation dataset (100 axial slices + 10 test slices)",
        page="https://medicalsegmentation.com/covid19/",
        licence="free to use per MedSeg; cite medicalsegmentation.com",
        files=(
            RemoteFile(GOOGLE_DRIVE + "1SJoMelgRqb0EuqlTuq6dxBWf2j9Kno8S", "tr_im.nii.gz"),
            RemoteFile(GOOGLE_DRIVE + "1MEqpbpwXjrLrH42DqDygWeSkDq0bi92f", "tr_mask.nii.gz"),
            RemoteFile(GOOGLE_DRIVE + "1Tl5PTS2rmajWKJMrYcZ2Na5DURvbbpit", "val_im.nii.gz"),
        ),
    ),
    "mosmed": DataSource(
        description="MosMedData: chest CT scans with COVID-19 related findings (COVID19_1110)",
        page="https://mosmed.ai/datasets/covid19_1110/",
        licence="CC BY-NC-ND 3.0",
        manual=(
            "MosMedData cannot be downloaded automatically: open "
            "https://mosmed.ai/datasets/covid19_1110/, register and accept the licence "
            "(CC BY-NC-ND 3.0), download the archive by hand and unpack it into {to} so that "
            "{to}/studies/CT-0..CT-4 and {to}/masks exist; covseg reads that layout as mosmed-3d"
        ),
    ),
}


def fetch(name: str, to_dir: str | os.PathLike[str], *,
          sources: Mapping[str, DataSource] | None = None, retries: int = 5,
          backoff_s: float = 2.0, timeout_s: float = 60.0) -> list[Path]:
    """Download data set ``name`` into ``to_dir`` and unpack its archives; return its files
    ready there (downloaded now, or already there and verified).

    ``sources`` replaces :data:`DATASETS` (tests serve their own files). Files already present
    and verified are not downloaded again; archives already unpacked are not unpacked again.
    """
    table = DATASETS if sources is None else sources
    if name not in table:
        raise CovsegError(f"unknown data set {name!r}; choose one of {', '.join(sorted(table))}")
    source = table[name]
    to_dir = output_folder(to_dir, option_name("to"))
    if source.manual:
        raise CovsegError(source.manual.format(to=to_dir))
    paths = []
    with _folder_kept_only_if_used(to_dir):
        log.info("%s", notice(name, source))
        for remote in source.files:
            try:
                path = download(remote, to_dir, retries=retries, backoff_s=backoff_s,
                                timeout_s=timeout_s)
            except Unreachable as exc:
                missing = [file for file in source.files if not (to_dir / file.name).is_file()]
                raise Unreachable(exc.host, exc.reason, missing, to_dir) from None
            if path.name.lower().endswith(UNPACKED_SUFFIXES):
                extract_archive(path, to_dir / archive_stem(path.name))
            paths.append(path)
    return paths


def notice(name: str, source: DataSource) -> str:
    """What a data set is, where it comes from and its licence: logged by :func:`fetch` (a
    library prints nothing), printed by ``covseg data fetch`` before it downloads."""
    return f"{name}: {source.description}\n  from {source.page}\n  licence: {source.licence}"


@contextmanager
def _folder_kept_only_if_used(folder: Path) -> Iterator[None]:
    """Make ``folder`` (and its missing parents); if the body fails, remove the ones made here
    that are still empty, so that a failed fetch leaves no empty folder behind."""
    made = list(takewhile(lambda path: not path.exists(), (folder, *folder.parents)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # /proc/f said only "No such file or directory"
        raise CovsegError(f"{folder}: the folder cannot be made ({exc.strerror or exc}); pick "
                          f"a writable {option_name('to')}") from None
    try:
        yield
    except BaseException:
        for path in made:  # deepest first; a folder holding a .part file to resume stays
            try:
                path.rmdir()
            except OSError:
                break
        raise


UNREACHABLE_ERRNOS = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH)
"""Connection errors that retrying seconds later will not cure (with a failed name lookup)."""


class Unreachable(CovsegError):
    """The host cannot be reached: the message names every file to download by hand instead,
    each with its address, so that an offline user gets the whole list at once."""

    def __init__(self, host: str, reason: OSError, files: list[RemoteFile], to_dir: Path
                 ) -> None:
        self.host, self.reason = host, reason
        if len(files) == 1:
            by_hand = f"download {files[0].name} by hand into {to_dir} from {files[0].url}"
        else:
            each = [f"{file.name} from {file.url}" for file in files]
            by_hand = (f"download these {len(files)} files by hand into {to_dir}: "
                       f"{', '.join(each[:-1])} and {each[-1]}")
        super().__init__(f"cannot reach {host} (no network? {reason}); connect and rerun, or "
                         f"{by_hand}")


def _unreachable(exc: BaseException) -> OSError | None:
    """Why the host cannot be reached at all (its name did not resolve, or nothing answers
    there: no network, or a wrong host), or None for a failure a retry may cure."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror) or (
            isinstance(reason, OSError) and reason.errno in UNREACHABLE_ERRNOS):
        return reason
    return None


def download(remote: RemoteFile, to_dir: Path, *, retries: int = 5, backoff_s: float = 2.0,
             timeout_s: float = 60.0) -> Path:
    """Download one file to ``to_dir/remote.name`` via ``.part``, resuming and retrying."""
    target = to_dir / remote.name
    if target.is_file():
        problem = _verify(target, remote)
        if problem:
            raise CovsegError(f"{target}: already exists but {problem}; delete it and rerun, or "
                              f"download it again by hand from {remote.url}")
        return target
    part = target.with_name(target.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(remote, part, timeout_s)
            break
        except TRANSIENT as exc:
            unreachable = _unreachable(exc)
            if unreachable is not None:
                host = urllib.parse.urlsplit(remote.url).hostname or remote.url
                raise Unreachable(host, unreachable, [remote], to_dir) from None
            if attempt == retries:
                then = (f"rerun to resume from {part.name}" if part.is_file() else
                        "check the network connection (or download it by hand into "
                        f"{to_dir}) and rerun")
                raise CovsegError(
                    f"{remote.url}: download failed {retries + 1} times ({exc}); {then}"
                ) from None
            log.warning("%s: %s; resuming (attempt %d of %d)", remote.name, exc, attempt + 2,
                        retries + 1)
            time.sleep(backoff_s * (attempt + 1))
    problem = _verify(part, remote)
    if problem:
        part.unlink()
        raise CovsegError(f"{remote.name}: {problem}; the download was deleted, rerun to retry")
    os.replace(part, target)
    return target


class _Interrupted(ConnectionError):
    """The server closed the connection before sending every byte."""


def _transfer(remote: RemoteFile, part: Path, timeout_s: float) -> None:
    """One HTTP request appending to ``part`` from its current size (Range) or from scratch."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset == remote.size:
        return
    headers = {"User-Agent": "covseg (python urllib)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(remote.url, headers=headers),
                                          timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            if _remote_size(exc) == offset:
                return  # the .part holds every byte (stopped while verified): verify it again
            log.warning("%s: the server cannot resume from byte %d; restarting the download",
                        remote.name, offset)
            part.unlink()
            return _transfer(remote, part, timeout_s)
        if exc.code in (408, 429) or exc.code >= 500:
            raise
        raise CovsegError(f"{remote.url}: HTTP {exc.code} {exc.reason}; check the address "
                          "or download the file by hand") from None
    with response:
        first = response.read(CHUNK)
        if _web_page(remote.name, response.headers.get("Content-Type", ""),
                     b"" if response.status == 206 else first[:HEAD]):
            raise CovsegError(
                f"{remote.url} returned a web page instead of {remote.name} (a login or "
                f"confirmation page); download it by hand into {part.parent / remote.name} "
                "and rerun: it will be verified and kept"
            )
        offset = _resume_offset(response, offset, part)
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else remote.size
        with open(part, "ab" if offset else "wb", buffering=0) as handle, progress_bar(
                total=expected, initial=offset, unit="B", unit_scale=True, desc=remote.name,
                leave=False) as bar:
            chunk = first
            while chunk:
                _write_all(handle, chunk, part)
                bar.update(len(chunk))
                chunk = response.read(CHUNK)
    received = part.stat().st_size
    if expected is not None and received < expected:
        raise _Interrupted(f"connection closed after {received} of {expected} bytes")


def _remote_size(refusal: urllib.error.HTTPError) -> int | None:
    """The file's size from a 416 answer's ``Content-Range: bytes */SIZE``, if it says."""
    stated = refusal.headers.get("Content-Range", "") if refusal.headers else ""  # may be None
    match = re.fullmatch(r"bytes \*/(\d+)", stated)
    return int(match.group(1)) if match else None


def _write_all(handle: io.FileIO, chunk: bytes, part: Path) -> None:
    """Append all of ``chunk`` (unbuffered, so that closing has nothing left to fail); a write
    error, which names no file (disk full, quota, file size limit), in one line naming ``part``."""
    view = memoryview(chunk)
    try:
        while view:
            written = handle.write(view)
            if not written:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]
    except OSError as exc:
        raise CovsegError(f"{part}: {exc.strerror or exc}; {_room(exc)}rerun to resume the "
                          "download") from None


def _room(exc: OSError) -> str:
    """'free some space and ' when ``exc`` says the disk (or the user's quota) is full."""
    return "free some space and " if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""


def _resume_offset(response: http.client.HTTPResponse, offset: int, part: Path) -> int:
    """Where this response's bytes start: ``offset`` for a matching 206, else 0 (restart)."""
    if response.status != 206:
        return 0
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    if match is None or int(match.group(1)) != offset:
        part.unlink(missing_ok=True)
        raise _Interrupted("the server resumed at the wrong offset; starting again")
    return offset


def _web_page(name: str, content_type: str = "", head: bytes = b"") -> bool:
    """Whether a server's answer (its Content-Type) or a file's first bytes are a web page where
    ``name``, not a page, is expected: a login, confirmation or virus-scan warning page."""
    if name.lower().endswith((".html", ".htm")):
        return False
    return "text/html" in content_type or (head.lstrip().startswith(b"<")
                                           and b"html" in head.lower())


KINDS = (  # name ending, what it is, its signature: name, offset and bytes
    (".nii.gz", "a NIfTI", "gzip", 0, b"\x1f\x8b"),
    (".zip", "a zip archive", "zip", 0, b"PK"),
    (".tar.gz", "a tar archive", "gzip", 0, b"\x1f\x8b"),
    (".tgz", "a tar archive", "gzip", 0, b"\x1f\x8b"),
    (".tar.bz2", "a tar archive", "bzip2", 0, b"BZh"),
    (".tar.xz", "a tar archive", "xz", 0, b"\xfd7zXZ\x00"),
    (".tar", "a tar archive", "tar", 257, b"ustar"),
)
"""The file kinds fetched here, told apart by their first bytes."""


def _content_problem(path: Path, name: str) -> str:
    """'' if ``path`` is what ``name`` says (for the kinds in :data:`KINDS`; a NIfTI's header
    is read, and its gzip stream to the end), else what it is instead: a web page, not that
    kind at all, or cut short."""
    kind = next((entry for entry in KINDS if name.lower().endswith(entry[0])), None)
    if kind is None:
        return ""
    _, what, signature, at, magic = kind
    with open(path, "rb") as handle:
        head = handle.read(max(HEAD, at + len(magic)))
    if _web_page(name, head=head):
        return f"is a web page, not {what}"
    if head[at: at + len(magic)] != magic:
        return f"is not {what} (no {signature} signature; it starts with {head[:8]!r})"
    return (_nifti_header_problem(path) or _gzip_problem(path)) if what == "a NIfTI" else ""


def _gzip_problem(path: Path) -> str:
    """'' if the gzip stream of ``path`` reads whole to its end (its CRC and length trailer),
    else why not: an interrupted download or copy, cut short, passed the header check and was
    called ready, to fail in the first command that read its voxels. Streamed, a 100 MB file
    in about a second."""
    try:
        with gzip.open(path) as stream:
            while stream.read(CHUNK):
                pass
    except (*CORRUPT, OSError) as exc:
        if not _damaged(exc):
            raise
        return (f"is truncated or damaged (its gzip stream does not read to the end: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())}), as an interrupted "
                "download or copy leaves it")
    return ""


def _nifti_header_problem(path: Path) -> str:
    """'' if the gzip-compressed ``path`` starts with a NIfTI-1 or NIfTI-2 header that nibabel
    reads as ``nib.load`` would, else why not (read from the stream, not by ``nib.load``, since
    a download is checked under its ``.part`` name)."""
    try:
        with gzip.open(path) as stream:
            raw = stream.read(nib.Nifti2Header.sizeof_hdr)
        sizes = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
        kind = next((kind for kind in (nib.Nifti1Header, nib.Nifti2Header)
                     if kind.sizeof_hdr in sizes and len(raw) >= kind.sizeof_hdr), None)
        if kind is None:
            return "is not a NIfTI (no NIfTI header after the gzip signature)"
        kind.from_fileobj(io.BytesIO(raw), check=True)
    except (*NIFTI_ERRORS, WrapStructError) as exc:
        return f"is not a readable NIfTI ({type(exc).__name__}: {' '.join(str(exc).split())})"
    return ""


def _verify(path: Path, remote: RemoteFile) -> str:
    """'' if ``path`` matches the recorded size/checksums, else what is wrong. Without a
    checksum, or when it does not match, the file's kind is checked too: a web page saved under
    the name is refused as one, not as a wrong checksum (or, lacking one, kept as 'ready')."""
    problem, sha256 = _checksum_problem(path, remote)
    checked = bool(remote.sha256 or remote.md5)
    if problem or not checked:
        problem = _content_problem(path, remote.name) or problem
    if not (problem or checked):
        log.warning("%s: SHA-256 %s (no official checksum recorded; not verified)",
                    remote.name, sha256)
    return problem


def _checksum_problem(path: Path, remote: RemoteFile) -> tuple[str, str]:
    """What differs from the recorded size/checksums ('' if nothing), and the SHA-256."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"has {size} bytes, expected {remote.size}", ""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            sha256.update(block)
            md5.update(block)
    if remote.sha256 and sha256.hexdigest() != remote.sha256.lower():
        return f"has SHA-256 {sha256.hexdigest()}, expected {remote.sha256}", sha256.hexdigest()
    if remote.md5 and md5.hexdigest() != remote.md5.lower():
        return f"has MD5 {md5.hexdigest()}, expected {remote.md5}", sha256.hexdigest()
    return "", sha256.hexdigest()


def archive_stem(name: str) -> str:
    """Archive name without its archive suffix: 'Lung_Mask.zip' -> 'Lung_Mask'."""
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _unsafe_name(name: str) -> bool:
    """Absolute paths, drive letters and '..' components escape the destination."""
    posix = name.replace("\\", "/")
    return (posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) is not None
            or ".." in PurePosixPath(posix).parts)


def check_archive(archive: Path) -> None:
    """Refuse an archive with a member that could write outside its folder (or is a link)."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:
                for info in zipped.infolist():
                    mode = info.external_attr >> 16
                    if _unsafe_name(info.filename) or (mode & 0o170000) == 0o120000:
                        raise CovsegError(f"{archive}: unsafe member {info.filename!r} "
                                          "(absolute, '..' or symlink); not extracted")
        else:
            with tarfile.open(archive) as tarred:
                for member in tarred.getmembers():
                    if _unsafe_name(member.name) or not (member.isfile() or member.isdir()):
                        raise CovsegError(f"{archive}: unsafe member {member.name!r} (absolute, "
                                          "'..', link or device); not extracted")
                _read_to_end(tarred)
    except (*CORRUPT, OSError) as exc:
        if not _damaged(exc):
            raise
        raise _corrupt(archive, exc) from None


def _read_to_end(tarred: tarfile.TarFile) -> None:
    """Decompress the rest of the stream, so that gzip's CRC and xz's check are verified:
    tarfile stops at the end-of-archive blocks, before the trailer holding them, and a byte
    damaged inside a member would otherwise be extracted without a word."""
    stream = tarred.fileobj
    if stream is not None:
        while stream.read(1 << 20):
            pass


def _damaged(exc: BaseException) -> bool:
    """Whether ``exc`` says the archive's data are bad (rather than the disk or the system)."""
    return isinstance(exc, CORRUPT) or (isinstance(exc, OSError) and exc.errno is None)


def _corrupt(archive: Path, exc: BaseException) -> CovsegError:
    """The one-line error for an archive that cannot be read (tarfile's reason has lines)."""
    return CovsegError(f"{archive}: corrupt archive ({' '.join(str(exc).split())}); delete it "
                       "and rerun")


def extract_archive(archive: Path, destination: Path) -> Path:
    """Unpack into ``destination`` (skipped if it exists) via a temporary folder and one rename.

    An archive holding a single folder named like ``destination`` is unpacked without that
    extra level.
    """
    if destination.exists():
        return destination
    check_archive(archive)
    scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        _unpack(archive, scratch, destination)
        children = list(scratch.iterdir())
        root = scratch
        if len(children) == 1 and children[0].is_dir() and children[0].name == destination.name:
            root = children[0]
        os.replace(root, destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return destination


def _unpack(archive: Path, scratch: Path, destination: Path) -> None:
    """Extract every member into ``scratch``; what can go wrong there in one line: a damaged
    archive, members that clash (a file and a folder of one name), a full disk."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(scratch)
        else:
            with tarfile.open(archive) as tarred:
                tarred.extractall(scratch, filter="data")
    except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
        raise CovsegError(f"{archive}: member {_member(exc, scratch)!r} clashes with a file or "
                          "folder of the same name in the archive; not extracted, unpack it by "
                          "hand") from None
    except (*CORRUPT, OSError) as exc:
        if _damaged(exc):
            raise _corrupt(archive, exc) from None
        assert isinstance(exc, OSError), "every CORRUPT error is _damaged"
        raise CovsegError(f"{archive}: cannot unpack it into {destination.parent} "
                          f"({exc.strerror}); {_room(exc)}rerun: the download is kept") from None


def _member(exc: OSError, scratch: Path) -> str:
    """The archive member an extraction error names (its path under ``scratch``)."""
    path = Path(exc.filename or scratch)
    return path.relative_to(scratch).as_posix() if path.is_relative_to(scratch) else str(path)
