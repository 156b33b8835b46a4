"""NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) volumes, as 3D Slicer and ITK
save CTs, read through SimpleITK into an in-memory NIfTI image: they are then checked and read
as NIfTI files are (:func:`~covseg.io.nifti.volume_from_nifti`), and masks written for them are
NIfTI on their grid, as for a DICOM series. Label masks are read so too (:data:`MASK_SLICES`),
3D Slicer's single-layer segmentations (``.seg.nrrd``) among them. A ``.nhdr``'s or ``.mhd``'s
data file (``.raw``, ``.zraw``, ``.raw.gz``, named in its header) belongs to it: it is never read
on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from covseg.errors import CovsegError, is_out_of_memory
from covseg.io.image import CT_SLICES, MASK_SLICES, Slices
from covseg.io.nifti import GZIP_MAGIC, on_geometry_of_like, volume_from_nifti
from covseg.io.quiet import quiet_libraries
from covseg.io.volume import (
    BLANK_LINE,
    HEADER_BYTES,
    METAIMAGE_SUFFIXES,
    SEGMENTATION_SUFFIX,
    SLICER_LABELMAP,
    Volume,
    check_voxel_count,
    is_segmentation,
    itk_affine,
    itk_head,
    itk_header,
    itk_header_in,
    itk_header_lacks_geometry,
    itk_message,
    short_of_memory,
    volume_shape,
)

T = TypeVar("T")

DETACHED_HEADERS = (".mhd", ".nhdr")
"""How headers that name their data file are named (a ``.nrrd`` or ``.mha`` may too, but holds
its voxels as a rule)."""
DATA_FILE = re.compile(r"^(?:ElementDataFile\s*=|data ?file\s*:)[ \t]*(\S[^\r\n]*?)[ \t\r]*$",
                       re.IGNORECASE | re.MULTILINE)
"""A MetaImage's or NRRD's line naming the file that holds its voxels (its line ending may be
Windows', CRLF)."""
PATTERN = re.compile(r"^(\S*%\d*d\S*)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)(?:\s+\d+)?$")
"""A data file line naming numbered files: a printf pattern, first and last number, step (and a
NRRD's slice axis)."""
RAW = re.compile(r"^encoding\s*:\s*raw\s*$", re.IGNORECASE | re.MULTILINE)
"""A NRRD's line saying its voxels are stored raw (not gzip, bzip2 or text)."""
COMPRESSED = re.compile(r"^CompressedData\s*=\s*True\s*$", re.IGNORECASE | re.MULTILINE)
"""A MetaImage's line saying its voxels are compressed (raw without it)."""
SKIPS = re.compile(r"^(?:(?:byte|line) ?skip\s*:|HeaderSize\s*=)", re.IGNORECASE | re.MULTILINE)
"""A NRRD's or MetaImage's line skipping bytes before its voxels."""
UNSUPPORTED = (
    ("bzip2 encoding not available",
     "bzip2 encoding is not read; re-save it with gzip or raw encoding"),
    ("doesn't match dimension of space", "a 4D volume (a time/list axis); save the 3D CT alone"),
)
"""Signs in ITK's refusals of a sound NRRD that it does not read, and what to tell instead of
"truncated or corrupt"."""
MAX_DATA_FILES = 65536
"""The most data files a numbered pattern is taken to name (more is no CT's slices)."""


def segmentation_as_ct(path: Path) -> CovsegError:
    """The refusal of a 3D Slicer segmentation given as a CT."""
    return CovsegError(f"{path}: a 3D Slicer segmentation ({SEGMENTATION_SUFFIX}: labels), not a "
                       "CT; give the CT volume it was drawn on")


def read_itk(path: Path, like: Volume | None = None, dtype: type = np.float32,
             what: Slices = CT_SLICES) -> Volume:
    """Read a 3D NRRD or MetaImage CT (or, ``what`` :data:`MASK_SLICES`, a label mask as
    ``dtype``) as :func:`~covseg.io.nifti.read_nifti` reads a NIfTI file: its header is read
    first, so that a 2D, 4D, RGB or oversized file is refused before its voxels are, and a
    missing data file is named. A header without geometry
    (:func:`~covseg.io.volume.itk_lacks_geometry`) is read as a NIfTI file without it (qform
    and sform codes 0, 1 mm voxels), so that the 1 mm voxels are told of and ``like`` pairs it
    as there. A 3D Slicer segmentation is refused as a CT, and read as a mask where it has one
    layer (its voxels are its segments' LabelValue)."""
    source = str(path)
    if is_segmentation(path) and what != MASK_SLICES:
        raise segmentation_as_ct(path)
    head = _read_head(path)
    _check_data_files(path, head)
    _check_compressed(path, head)
    reader = sitk.ImageFileReader()
    reader.SetFileName(source)
    reader.SetImageIO(_format(path)[1])
    _read(reader.ReadImageInformation, path, None, quiet=True)
    components = reader.GetNumberOfComponents()
    if components != 1:
        raise _several_values(path, components, what)
    shape = volume_shape(tuple(int(n) for n in reader.GetSize()), source, what.flat)
    check_voxel_count(shape, source, np.dtype(dtype).itemsize)
    image = _read(reader.Execute, path, shape, quiet=not _check_raw_size(path, reader, head))
    if image.GetDimension() > 3:  # (x, y, z, 1, ...)
        image = sitk.Extract(image, [*shape, *[0] * (image.GetDimension() - 3)])
    nifti = _as_nifti(sitk.GetArrayFromImage(image).T, image,
                      itk_header_lacks_geometry(head.header))
    return volume_from_nifti(on_geometry_of_like(nifti, like, source), source, dtype, what)


def _several_values(path: Path, components: int, what: Slices) -> CovsegError:
    """The refusal of a file of several values per voxel: a 3D Slicer segmentation's layers
    (segments that overlap, one layer each), which no one label map holds, or an RGB or vector
    image, neither a CT nor a mask."""
    if is_segmentation(path):
        return CovsegError(f"{path}: a 3D Slicer segmentation of {components} layers "
                           f"(overlapping segments), not one label map; {SLICER_LABELMAP}")
    held = "grey value; give the CT as a greyscale volume" if what == CT_SLICES else (
        "label; give the mask as one label per voxel")
    return CovsegError(f"{path}: {components} values per voxel (RGB or vector), not one {held}")


class _Head(NamedTuple):
    """A NRRD's or MetaImage's head as :func:`read_itk` reads it, once (its header was split
    from the text, and its data-file line parsed, twice): the ``text`` (:func:`itk_head`), its
    ``header``, its data-file line (``named``) and the one data file that names (``held``,
    :func:`_data_file`)."""

    text: str | None
    header: str | None
    named: re.Match[str] | None
    held: Path | None


def _read_head(path: Path) -> _Head:
    """The head (:class:`_Head`) of the NRRD or MetaImage at ``path``."""
    text = itk_head(path)
    header = itk_header_in(text)
    named = _data_line(header)
    return _Head(text, header, named, _data_file(header, named, path.parent))


def _as_nifti(voxels: np.ndarray, image: sitk.Image, unplaced: bool) -> nib.Nifti1Image:
    """The in-memory NIfTI image of ``image``'s (x, y, z) ``voxels``: on its geometry, or,
    ``unplaced`` (its header held none), as a NIfTI file without any reads (ITK's defaults,
    1 mm voxels at 0, looked measured)."""
    if unplaced:
        bare = nib.Nifti1Image(voxels, None)
        return nib.Nifti1Image(voxels, bare.header.get_best_affine(), bare.header)
    nifti = nib.Nifti1Image(voxels, itk_affine(image))
    nifti.header.set_qform(nifti.affine, code=1)
    nifti.header.set_sform(nifti.affine, code=1)
    nifti.header.set_xyzt_units("mm")
    return nifti


def _read(step: Callable[[], T], path: Path, shape: tuple[int, int, int] | None, quiet: bool
          ) -> T:
    """Run a SimpleITK reader's ``step`` with ITK's warnings off and, where ``quiet``, the
    process's stderr on the null device (MetaIO prints "Cannot open data file" or "data not
    read completely" there before failing; the whole process's, so kept to the steps that may
    print); a failure is one line, memory short of a volume of ``shape`` (x, y, z) as a
    NIfTI's is."""
    try:
        with quiet_libraries(decoding=quiet):
            return step()
    except RuntimeError as exc:
        if shape is not None and is_out_of_memory(exc):
            raise short_of_memory(shape, np.dtype(np.float32), path) from None
        said = itk_message(exc)
        unread = next((why for sign, why in UNSUPPORTED if sign in said), None)
        if unread:
            raise CovsegError(f"{path}: {unread}") from None
        raise CovsegError(f"{path}: cannot read it as {_format(path)[0]} ({said}); "
                          "is the file truncated or corrupt?") from None


def _check_raw_size(path: Path, reader: sitk.ImageFileReader, head: _Head) -> bool:
    """Refuse raw (uncompressed) voxels cut short before reading them, as MetaIO prints on
    stderr when it meets them; True where the voxels were checked so (raw, where they start
    known), False for the rest (compressed or text, byte skips), read with stderr quieted.
    ``head`` is the file's (:func:`_read_head`)."""
    stored = _raw_voxels(path, head)
    if stored is None:
        return False
    where, start = stored
    needed = int(np.prod(reader.GetSize())) * sitk.GetArrayViewFromImage(
        sitk.Image([1, 1], reader.GetPixelID())).itemsize
    held = where.stat().st_size - start
    if held < needed:
        raise CovsegError(f"{path}: cannot read the voxels ({where.name} ends {max(held, 0)} "
                          f"bytes into its voxels, which take {needed} bytes); is the file "
                          "truncated?")
    return True


def _raw_voxels(path: Path, head: _Head) -> tuple[Path, int] | None:
    """The file holding the raw voxels of a NRRD or MetaImage at ``path`` whose head is
    ``head`` (:func:`_read_head`) and where in it they start; None for compressed or text
    voxels, skipped bytes, or a header not found."""
    if head.header is None:
        return None
    metaimage = _format(path)[0] == "MetaImage"
    if (_compressed(head.header) if metaimage else RAW.search(head.header) is None):
        return None
    return _voxels_at(path, head)


def _compressed(header: str) -> bool:
    """Whether a MetaImage's header says its voxels are compressed."""
    return COMPRESSED.search(header) is not None


def _check_compressed(path: Path, head: _Head) -> None:
    """Refuse a MetaImage whose header says CompressedData = True but whose voxels do not start
    as zlib or gzip data (MetaIO inflates either): MetaIO printed "Uncompress failed" on the
    stderr covseg quiets and gave zeros, or whatever memory held, read as a CT without a word."""
    if _format(path)[0] != "MetaImage" or head.header is None or not _compressed(head.header):
        return
    at = _voxels_at(path, head)
    if at is None:
        return
    where, start = at
    with open(where, "rb") as handle:
        handle.seek(start)
        first = handle.read(2)
    zlib_start = len(first) == 2 and first[0] & 0x0F == 8 and int.from_bytes(first, "big") % 31 == 0
    if not zlib_start and first != GZIP_MAGIC:
        raise CovsegError(f"{path}: its header says CompressedData = True, but the voxels in "
                          f"{where.name} are not compressed data (raw voxels under that line?); "
                          "set CompressedData = False for raw voxels, or save the volume again")


def _voxels_at(path: Path, head: _Head) -> tuple[Path, int] | None:
    """The file holding the voxels of a NRRD or MetaImage at ``path`` whose head is ``head``
    (:func:`_read_head`) and where in it they start, stored as they are; None for skipped
    bytes, several files, or a header not found."""
    text, header, named, held = head
    if text is None or header is None or SKIPS.search(header):
        return None
    metaimage = _format(path)[0] == "MetaImage"
    if held is not None:
        return (held, 0) if held.is_file() else None
    if named and named.group(1).upper() != "LOCAL":  # several files, a list or a pattern
        return None
    if metaimage:  # the voxels follow its last line, "ElementDataFile = LOCAL"
        end = header.find("\n", named.end()) if named else -1
        return (path, end + 1) if end >= 0 else None
    blank = BLANK_LINE.search(text)
    return (path, blank.end()) if blank else None


def _format(path: Path) -> tuple[str, str]:
    """The format of a file named as NRRD or MetaImage, and its SimpleITK reader, named to it:
    ITK's MetaImage reader takes only lower-case names, and found none for ``CT.MHA``."""
    if path.name.lower().endswith(METAIMAGE_SUFFIXES):
        return "MetaImage", "MetaImageIO"
    return "NRRD", "NrrdImageIO"


def data_files(path: Path) -> tuple[Path, ...]:
    """Every file that holds a NRRD's or MetaImage's voxels, as its header names them (beside
    it, or where it says): one file, the files listed after ``LIST``, or those a numbered
    pattern (``sl/s%03d.raw 0 29 1``) names; none where the file holds them itself (``LOCAL``,
    or no such line), and for a file of another format."""
    header = itk_header(path)
    return _named_files(header, _data_line(header), path.parent)[0]


def _data_line(header: str | None) -> re.Match[str] | None:
    """The data-file line (:data:`DATA_FILE`) of a NRRD's or MetaImage's ``header`` (None: none
    read); None where it has none."""
    return DATA_FILE.search(header) if header is not None else None


def _data_file(header: str | None, found: re.Match[str] | None, folder: Path) -> Path | None:
    """The one file that holds the voxels of the NRRD or MetaImage in ``folder`` whose header is
    ``header``, its data-file line ``found`` (:func:`_named_files`); None where it holds them
    itself or names several (a list or a numbered pattern)."""
    files, single = _named_files(header, found, folder)
    return files[0] if single else None


def _named_files(header: str | None, found: re.Match[str] | None, folder: Path
                 ) -> tuple[tuple[Path, ...], bool]:
    """The files a NRRD's or MetaImage's ``header`` (None: none read), its data-file line
    ``found`` (:func:`_data_line`), names as holding its voxels, as :func:`data_files` says,
    relative to its ``folder``, and whether it names one file alone (no list or numbered
    pattern)."""
    if header is None or not found:
        return (), False
    name = found.group(1)
    if name.upper().startswith("LIST"):
        listed = header[found.end():].splitlines()
        return tuple(folder / line.strip() for line in listed if line.strip()), False
    numbered = PATTERN.match(name)
    if numbered:
        pattern, first, last, step = numbered.group(1), *map(int, numbered.group(2, 3, 4))
        if step == 0 or abs((last - first) // step) >= MAX_DATA_FILES:
            return (), False
        return tuple(folder / (pattern % n) for n in range(first, last + 1 if step > 0
                                                          else last - 1, step)), False
    if name.upper() == "LOCAL" or "%" in name:
        return (), False
    return (folder / name,), True


def data_file_refused(path: Path) -> CovsegError | None:
    """The error for a data file of a NRRD or MetaImage header beside it (``ct.raw`` of
    ``ct.mhd``) or in the folder above (``sub/ct.raw`` of ``sub.nhdr``), given as a file to
    read, naming its header; None for any other file, and where no folder can be listed. Only
    detached headers (:data:`DETACHED_HEADERS`) are opened: a NRRD or MetaImage holding its
    voxels is no other file's header."""
    target = path.resolve()
    for header in _detached_headers(path.parent) + _detached_headers(path.parent.parent):
        if any(held.resolve() == target for held in data_files(header)):
            return CovsegError(f"{path}: the voxels of {header.name}, not a file of its own; "
                               f"give {header} to read them")
    return None


def _detached_headers(folder: Path) -> list[Path]:
    """The detached headers (:data:`DETACHED_HEADERS`) in ``folder``, in name order; none where
    it cannot be listed."""
    try:
        return sorted(c for c in folder.iterdir() if c.name.lower().endswith(DETACHED_HEADERS))
    except OSError:
        return []


def _check_data_files(path: Path, head: _Head) -> None:
    """Refuse a header (of ``path``, its head ``head``) whose data files (:func:`data_files`)
    are not all there, naming the first missing: ITK said "File cannot be read: x.mhd ... No
    such file or directory", of the header that was there. A ``LIST`` of no files is refused
    too: MetaIO printed "cannot open slice" on the stderr covseg quiets and gave whatever
    memory held, read as a CT."""
    files = _named_files(head.header, head.named, path.parent)[0]
    line = head.named.group(0).strip() if head.named is not None else ""
    listed = head.named is not None and head.named.group(1).upper().startswith("LIST")
    if listed and len(head.text or "") >= HEADER_BYTES:  # the head read stops inside the list:
        files = files[:-1]  # its last name may be cut short (ITK reads the list whole)
    elif listed and not files:
        raise CovsegError(f"{path}: its header's data file line ({line}) lists no files; list "
                          "the files of its slices below it, one a line")
    missing = next((file for file in files if not file.is_file()), None)
    if missing is not None:
        raise CovsegError(f"{path}: its voxels are in {missing.name}, named in its header, "
                          f"which is not there; put {missing.name} beside {path.name}")
