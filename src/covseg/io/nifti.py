"""Reading NIfTI files into a :class:`~covseg.io.volume.Volume`: gzipped or not, read in slabs
and scaled, on the geometry of a paired volume when a file has none; Analyze pairs are refused.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import logging
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayLike, ArrayProxy
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError
from nibabel.volumeutils import array_from_file
from nibabel.wrapstruct import WrapStructError

from covseg.errors import CovsegError, NotLabels
from covseg.io.image import (
    CT_SLICES,
    MASK_SLICES,
    Slices,
    fraction_range,
    fractional_values,
    stand_in,
)
from covseg.io.quiet import warnings_logged_quiet
from covseg.io.volume import (
    GRID_TOLERANCE_MM,
    NIFTI_SUFFIXES,
    UNIT_MM,
    Volume,
    _allowed_offset,
    _check_stored_dtype,
    _mm,
    _nifti1_copy,
    _one_line,
    _unoriented,
    as_axial,
    check_orientable,
    check_voxel_count,
    check_voxel_sides,
    forms_note,
    is_itk_source,
    itk_lacks_geometry,
    nibabel_path,
    short_of_memory,
    usable_qform,
    volume_shape,
)

NIFTI_ERRORS = (ImageFileError, HeaderDataError, WrapStructError, OSError, EOFError,
                ValueError, zlib.error)
"""What nibabel raises for corrupt, truncated or unsupported files."""
ANALYZE_SUFFIXES = (".hdr", ".img")
"""The two files of an Analyze 7.5 image (or a two-file NIfTI pair), which covseg does not read."""
NIBABEL_CHECKS = "nibabel.global"
"""The logger on which nibabel prints what its header check found and mended ("sizeof_hdr
should be 348; set sizeof_hdr to 348", "data code 9999 not recognized"), lines of its own on
stderr before covseg's one: covseg refuses what it cannot read in its own words."""
GZIP_MAGIC = b"\x1f\x8b"
NIFTI2_HEADER_SIZE = 540
"""``sizeof_hdr`` of a NIfTI-2 header (NIfTI-1: 348)."""
ANALYZE_HEADER_SIZE = 348
"""``sizeof_hdr`` of an Analyze 7.5 header (and of a NIfTI-1 pair's)."""

log = logging.getLogger(__name__)


def is_nifti(path: Path) -> bool:
    """True for .nii and .nii.gz files that a folder's listing reads: not for hidden ones, such
    as the ``._x.nii.gz`` metadata files (AppleDouble) that macOS leaves beside each file on
    other disks. A file given by name is read hidden or not (:func:`is_nifti_named`)."""
    return path.is_file() and named_as_nifti(path)


def named_as_nifti(path: Path) -> bool:
    """Whether ``path`` is named as a NIfTI file a folder's listing reads (.nii or .nii.gz, not
    hidden), whatever is behind the name: a broken link's too."""
    return path.name.lower().endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def is_nifti_named(path: Path) -> bool:
    """True for a file named .nii or .nii.gz, hidden or not: one given by name
    (``.hidden.nii.gz`` was refused as "not NIfTI", or as "a .gz file")."""
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """File name without .nii / .nii.gz."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_nifti(path: str | os.PathLike[str], dtype: type = np.float32,
               like: Volume | None = None, what: Slices = CT_SLICES) -> Volume:
    """Read a 3D NIfTI file; x/y/z storage order becomes (z, y, x) so that ``array[k]`` is a slice.

    ``like``: the volume this one is paired with voxel for voxel (a mask's CT). A file whose
    header has no real geometry (:func:`lacks_geometry`) but ``like``'s stored shape is read on
    ``like``'s geometry, its voxels paired as stored, with a warning: reoriented by its own
    identity or Analyze affine, a numpy pipeline's mask came out mirrored against its CT.
    ``what``: what the file holds (a mask's slices are no CT slices), for the refusals of a
    file too small, too thin or 2D.
    """
    path = Path(path)
    with _opened_nifti(path) as image:
        return volume_from_nifti(on_geometry_of_like(image, like, str(path)), str(path), dtype,
                                 what)


def on_geometry_of_like(image: nib.Nifti1Image, like: Volume | None, source: str
                        ) -> nib.Nifti1Image:
    """``image`` on ``like``'s geometry where its header has none and it stores ``like``'s grid
    shape (:func:`read_nifti`), else as it is."""
    if like is not None and _geometryless(image) and _stored_alike(image, like):
        return _on_geometry_of(image, like, source)
    return image


def read_mask_nifti(path: str | os.PathLike[str], dtype: type = np.int16,
                    like: Volume | None = None) -> Volume:
    """:func:`read_nifti` of a mask: a file too small or thin is refused in a mask's words
    (:data:`~covseg.io.image.MASK_SLICES`), as every mask reader needs."""
    return read_nifti(path, dtype, like, MASK_SLICES)


@contextmanager
def _opened_nifti(path: Path, warn: bool = True) -> Iterator[nib.Nifti1Image]:
    """The NIfTI image at ``path``, its voxels read as asked within the block. A file named
    ``.nii.gz`` but not gzip-compressed, or named ``.nii`` but gzip-compressed (frequent
    mislabels; nibabel goes by the name and fails) is read by its content from a stream open
    within the block, slab by slab as any file (decompressed whole into memory, it was held
    beside the volume), with a warning unless ``warn`` is False (a header-only look); so is one
    whose ``.nii`` is in mixed case (``x.Nii.gz``), which nibabel looks for as ``x.nii.gz``."""
    if not is_nifti_named(path):
        raise CovsegError(f"{path}: not a NIfTI file (.nii or .nii.gz)")
    with contextlib.ExitStack() as opened:
        try:
            named_gz, gzipped = path.name.lower().endswith(".gz"), _gzipped(path)
            opened.enter_context(warnings_logged_quiet(NIBABEL_CHECKS, logging.CRITICAL + 1))
            if named_gz == gzipped and _nibabel_reads_name(path):
                image = nib.load(nibabel_path(path))
            else:
                image = _streamed_nifti(opened.enter_context(gzip.open(path, "rb")) if gzipped
                                        else opened.enter_context(open(path, "rb")))
                if warn and named_gz != gzipped:
                    _warn_misnamed(path, gzipped)
        except NIFTI_ERRORS as exc:
            raise stand_in(path) or CovsegError(
                f"{path}: cannot read the NIfTI header ({_one_line(exc)}); is the file "
                "truncated?") from None
        if not isinstance(image, nib.Nifti1Image):  # CIFTI-2 is named .nii too
            raise CovsegError(f"{path}: a {type(image).__name__} file (surface or grey-ordinate "
                              "data), not a NIfTI volume; give covseg the CT as a NIfTI volume")
        yield image


def _nibabel_reads_name(path: Path) -> bool:
    """Whether ``nib.load`` finds ``path`` by its name: its ``.nii`` all lower or all upper
    case (``.NII.GZ``), not mixed (``.Nii.gz``)."""
    return path.name[len(nifti_stem(path)):][:4] in (".nii", ".NII")


def _warn_misnamed(path: Path, gzipped: bool) -> None:
    """Warn that ``path``'s name says the other of gzip-compressed or not, and how to rename it."""
    named, actual = (".nii", ".nii.gz") if gzipped else (".nii.gz", ".nii")
    log.warning("%s: %sgzip-compressed, though named %s; read as a %s file (rename it to %s%s)",
                path, "" if gzipped else "not ", named, actual, nifti_stem(path), actual)


def _gzipped(path: Path) -> bool:
    """Whether a file starts as gzip data does."""
    with open(path, "rb") as handle:
        return handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def _streamed_nifti(stream: io.BufferedIOBase) -> nib.Nifti1Image:
    """A NIfTI-1 or NIfTI-2 image (by ``sizeof_hdr``, in either byte order) over an open,
    uncompressed stream, its voxels read from the stream as asked."""
    start = stream.read(4)
    stream.seek(0)
    sizes = {int.from_bytes(start, order) for order in ("little", "big")}
    kind = nib.Nifti2Image if NIFTI2_HEADER_SIZE in sizes else nib.Nifti1Image
    return kind.from_stream(stream)


def is_analyze(path: Path) -> bool:
    """Whether a file is half of an Analyze 7.5 pair: named ``.hdr`` or ``.img``, its header
    (the file itself, or the ``.hdr`` beside an ``.img``) starting with sizeof_hdr 348 in either
    byte order, and no DICOM file (:func:`~covseg.io.dicom.is_dicom_named`): CD exports name
    DICOM slices ``.IMG``, which were refused as Analyze by their name."""
    from covseg.io.dicom import is_dicom_named  # it imports us

    suffix = path.suffix.lower()
    if suffix not in ANALYZE_SUFFIXES:
        return False
    header = path if suffix == ".hdr" else _header_beside(path)
    return header is not None and _starts_with_analyze_size(header) and not is_dicom_named(path)


def _header_beside(image: Path) -> Path | None:
    """The ``.hdr`` file beside an Analyze ``.img``, its suffix in any case (``.Hdr`` was
    missed, so a pair so named got "not a NIfTI file" rather than the Analyze refusal); None
    without one."""
    for letters in itertools.product(*zip("hdr", "HDR", strict=True)):
        header = image.with_suffix("." + "".join(letters))
        if header.is_file():
            return header
    return None


def _starts_with_analyze_size(path: Path) -> bool:
    """Whether a file's first four bytes read :data:`ANALYZE_HEADER_SIZE` in either byte
    order."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError:
        return False
    return len(start) == 4 and ANALYZE_HEADER_SIZE in {int.from_bytes(start, order)
                                                       for order in ("little", "big")}


def analyze_refused(path: Path) -> CovsegError:
    """The error for an Analyze 7.5 file (:func:`is_analyze`), a format covseg does not read."""
    return CovsegError(f"{path}: an Analyze 7.5 file ({'/'.join(ANALYZE_SUFFIXES)} pair), a "
                       "format covseg does not read; convert the pair to NIfTI (e.g. "
                       "nibabel.save(nibabel.load('x.hdr'), 'x.nii.gz'))")


def _geometryless(image: nib.Nifti1Image) -> bool:
    """Whether a header places its voxels nowhere real: qform and sform codes both 0, or an
    identity affine (numpy pipelines' ``np.eye(4)``)."""
    return _unoriented(image.header) or bool(np.allclose(image.affine, np.eye(4)))


def lacks_geometry(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a NIfTI, NRRD or MetaImage file whose header has no real geometry
    (reads the header only; a DICOM series always has its own)."""
    path = Path(path)
    if itk_lacks_geometry(path):
        return True
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        return False
    with _opened_nifti(path, warn=False) as image:  # its reading warns of a misnamed file
        return _geometryless(image)


def unit_voxels_assumed(volume: Volume) -> str | None:
    """Why ``volume``'s voxels are 1 mm by default rather than measured: its header has no real
    geometry (an identity affine, or qform and sform codes 0) and pixdim 1, as numpy pipelines
    write; None for a header with geometry or other voxel sizes. Its mL are then voxel counts
    over 1000, whatever the scan's voxels were (a 3 mm CT's mask read 27 times too small)."""
    if not np.allclose(volume.file_spacing, 1.0):
        return None
    if np.allclose(volume.file_affine, np.eye(4)):
        return "an identity affine"
    return None if volume.oriented else no_geometry(volume.source)


NO_ITK_GEOMETRY = "no spacing, origin or direction in its header"
"""What a NRRD or MetaImage read without geometry lacks (:func:`no_geometry`)."""


def no_geometry(source: str) -> str:
    """What a file read without orientation lacks, in its format's terms: a NIfTI's qform and
    sform codes are 0; a NRRD or MetaImage (read through a NIfTI without them) has no such
    fields, so its header's spacing, origin and direction are named."""
    if is_itk_source(source):
        return NO_ITK_GEOMETRY
    return "qform and sform codes 0"


@contextmanager
def warnings_once() -> Iterator[None]:
    """While in the block, each warning of the volume readers once: a file read twice (a mask
    read for its labels, then counted) was warned of twice."""
    seen: set[str] = set()

    def first(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        fresh = message not in seen
        seen.add(message)
        return fresh

    log.addFilter(first)
    try:
        yield
    finally:
        log.removeFilter(first)


def _stored_alike(image: nib.Nifti1Image, like: Volume) -> bool:
    """Whether the file stores ``like``'s voxel grid shape but another affine."""
    shape = tuple(int(n) for n in image.shape)
    return (shape[:3] == like.file_shape_zyx[::-1] and all(n == 1 for n in shape[3:])
            and not np.allclose(image.affine, like.file_affine, atol=GRID_TOLERANCE_MM))


def _on_geometry_of(image: nib.Nifti1Image, like: Volume, source: str) -> nib.Nifti1Image:
    """``image``'s stored voxels (and scaling) on ``like``'s file affine and voxel sizes."""
    lacks = NO_ITK_GEOMETRY if is_itk_source(source) else (
        "identity affine, or qform and sform codes 0")
    log.warning("%s: its header has no real geometry (%s) and it stores %s's grid shape; pairing "
                "their voxels as stored", source, lacks, like.source)
    affine = like.file_affine
    header = _nifti1_copy(image.header)
    header.set_xyzt_units(*like.file_header.get_xyzt_units())
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    return nib.Nifti1Image(image.dataobj, affine, header)


def read_paired(first: Callable[[Volume | None], Volume], first_path: str | os.PathLike[str],
                second: Callable[[Volume | None], Volume], second_path: str | os.PathLike[str]
                ) -> tuple[Volume, Volume]:
    """Two volumes to pair voxel for voxel, each read by ``reader(like)`` (the ``like`` of
    :func:`read_nifti`): the second like the first, unless only the first file lacks geometry."""
    if lacks_geometry(first_path) and not lacks_geometry(second_path):
        later = second(None)
        return first(later), later
    earlier = first(None)
    return earlier, second(earlier)


def volume_from_nifti(image: nib.Nifti1Pair, source: str, dtype: type = np.float32,
                      what: Slices = CT_SLICES) -> Volume:
    """A loaded NIfTI image (from a file or built in memory) -> Volume with (z, y, x) voxels;
    ``what``: as for :func:`read_nifti`."""
    _check_stored_dtype(np.dtype(image.get_data_dtype()), source)
    shape = volume_shape(tuple(int(n) for n in image.shape), source, what.flat)
    check_voxel_count(shape, source, np.dtype(dtype).itemsize)
    _check_units(image.header, source)
    in_mm = image.affine.copy()  # judged in mm: a file in metres has tiny numbers
    in_mm[:3] *= UNIT_MM.get(image.header.get_xyzt_units()[0], 1.0)
    check_orientable(in_mm, source)
    check_voxel_sides(in_mm, source)
    _check_perpendicular(image, shape, source)
    slope, inter = _scaling(image)
    data = _scaled_zyx(_stored_slabs(image, shape, source), shape, slope, inter,
                       np.dtype(dtype), source)
    _warn_unoriented(image, source)
    header = _header_sized_by_affine(image, source)
    affine, header = _in_mm(image, header)
    as_read = image.header if header is not image.header else None
    read_affine = image.affine if affine is not image.affine else None
    return as_axial(Volume(data, affine, header, source, as_read=as_read,
                           read_affine=read_affine), what)


SPACE_UNIT_BITS = 0x07
"""The bits of ``xyzt_units`` holding the space unit (the time unit is in the next three)."""


def _check_units(header: nib.Nifti1Header, source: str) -> None:
    """Refuse a header whose ``xyzt_units`` is no code NIfTI defines (a flipped bit): nibabel's
    KeyError on reading the unit was a traceback. Said of the space unit or the time unit,
    whichever it is: a defined space unit with an undefined time unit is not an unknown size."""
    try:
        header.get_xyzt_units()
    except KeyError:
        code = int(header["xyzt_units"])
        part = ("space unit, so the voxel sizes' unit is unknown"
                if code & SPACE_UNIT_BITS not in nib.nifti1.unit_codes.value_set()
                else "time unit (a damaged header)")
        raise CovsegError(f"{source}: its header's xyzt_units ({code}) holds no {part} NIfTI "
                          "defines; fix the header (xyzt_units 10: mm and seconds)") from None


def _in_mm(image: nib.Nifti1Pair, header: nib.Nifti1Header
           ) -> tuple[np.ndarray, nib.Nifti1Header]:
    """The affine and a header in mm for a file whose spatial unit is metres or microns:
    covseg's volumes in mL and the lung finder's sizes are in mm, so a file in metres read
    as mm gave 10^9 times too little (and found no lungs). Written masks copy the file's own
    header (``Volume.as_read``), units included."""
    factor = UNIT_MM.get(image.header.get_xyzt_units()[0])
    if factor is None:
        return image.affine, header
    affine = image.affine.copy()
    affine[:3] *= factor
    zooms = header.get_zooms()
    header = header.copy()
    header.set_qform(affine, code=int(header["qform_code"]))
    header.set_sform(affine, code=int(header["sform_code"]))
    header.set_zooms(tuple(z * factor for z in zooms[:3]) + tuple(zooms[3:]))
    header.set_xyzt_units("mm", header.get_xyzt_units()[1])
    return affine, header


def _header_sized_by_affine(image: nib.Nifti1Pair, source: str) -> nib.Nifti1Header:
    """The image's header, its voxel sizes (pixdim, which volumes in mL use) set to the
    affine's: the affine places the voxels in nibabel and in the lung finder, and a tool that
    edits one often leaves the other stale (nibabel even sets a zero pixdim to 1 mm on reading).
    Always the affine's, not only beyond a tolerance: pixdim 0.99 % off on each axis was
    kept, 3 % on every mL, while 1.01 % counted by the affine. Warned in one line: pixdim off by
    more than :data:`PIXDIM_TOLERANCE` on an axis or in the voxel's volume (readers that take
    pixdim, as ITK does for such files, measure otherwise), and a qform and sform that place the
    voxels differently (:func:`~covseg.io.volume.forms_note`), pixdim then said only where it
    follows neither."""
    stated = np.asarray(image.header.get_zooms()[:3], dtype=np.float64)
    implied = nib.affines.voxel_sizes(image.affine)
    notes = [note] if (note := forms_note(image.header)) else []
    qform = usable_qform(image.header)
    follows_qform = qform is not None and not _sizes_differ(stated, nib.affines.voxel_sizes(qform))
    if _sizes_differ(stated, implied) and not (notes and follows_qform):
        mm = UNIT_MM.get(image.header.get_xyzt_units()[0], 1.0)  # said in mm, as read
        notes.append(f"voxel sizes {_mm(stated * mm)} mm in the header differ from the "
                     f"affine's {_mm(implied * mm)} mm; volumes use the affine's")
    if notes:
        log.warning("%s: %s", source, "; ".join(notes))
    if np.array_equal(stated.astype(np.float32), implied.astype(np.float32)):
        return image.header
    header = image.header.copy()
    header.set_zooms(tuple(implied) + tuple(header.get_zooms()[3:]))
    return header


PIXDIM_TOLERANCE = 0.01
"""Largest relative difference between pixdim and the affine's voxel sizes, on an axis or in
the voxel's volume, left unwarned (a converter's rounding: 0.703125 mm stored as 0.7031)."""


def _sizes_differ(stated: np.ndarray, implied: np.ndarray) -> bool:
    """Whether two voxel sizes differ beyond :data:`PIXDIM_TOLERANCE` on an axis or in volume:
    three axes each 0.99 % off make a voxel 3 % larger."""
    return (not np.allclose(stated, implied, rtol=PIXDIM_TOLERANCE, atol=0.0)
            or abs(float(np.prod(stated) - np.prod(implied)))
            > PIXDIM_TOLERANCE * float(np.prod(implied)))


def _warn_unoriented(image: nib.Nifti1Pair, source: str) -> None:
    """Warn when the header holds no orientation (:func:`no_geometry`): nibabel then assumes
    the Analyze convention, so right and left may be swapped."""
    if _unoriented(image.header):
        log.warning("%s: the header holds no orientation (%s); read as %s by the Analyze "
                    "convention, so right and left lungs may be swapped", source,
                    no_geometry(source), "".join(nib.aff2axcodes(image.affine)))


def _scaling(image: nib.Nifti1Pair) -> tuple[float, float]:
    """The stored voxels' scaling (slope, intercept); an image built in memory holds the values
    as they are."""
    proxy = image.dataobj
    if not isinstance(proxy, ArrayProxy):
        return 1.0, 0.0
    return float(proxy.slope), float(proxy.inter)


SLAB_BYTES = 32 * 1024 * 1024
"""Stored bytes of whole z slices read from a file at once (:func:`_stored_slabs`)."""


def _stored_slabs(image: nib.Nifti1Pair, shape: tuple[int, int, int], source: str
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """The stored, unscaled (x, y, z) voxels as (first z index, slab of whole z slices), in z
    order. A file is read one slab of :data:`SLAB_BYTES` at a time from one open file: read
    whole, a float64 .nii.gz held 8 bytes per voxel and gzip's read as many again, twice the
    float32 volume kept (NIfTI stores each z slice contiguously, so slabs are read in order).
    An uncompressed file shorter than its header's voxels is refused here, before the volume
    is allocated (:func:`_check_stored_size`): a 1,376-byte file claiming 32767^3 voxels was
    "out of memory (could not allocate 128 TiB)"."""
    proxy = image.dataobj
    if all(shape) and isinstance(proxy, ArrayProxy) and proxy.order == "F":
        try:
            _check_stored_size(proxy, shape[0] * shape[1] * shape[2]
                               * np.dtype(proxy.dtype).itemsize, source)
        except NIFTI_ERRORS as exc:
            raise _unreadable_voxels(source, exc) from None
    return _slabs(proxy, shape, source)


def _unreadable_voxels(source: str, exc: Exception) -> CovsegError:
    return CovsegError(f"{source}: cannot read the voxels ({_one_line(exc)}); is the file "
                       "truncated or corrupt?")


def _slabs(proxy: ArrayLike, shape: tuple[int, int, int], source: str
           ) -> Iterator[tuple[int, np.ndarray]]:
    """The slabs of :func:`_stored_slabs`, read as they are asked for."""
    if not all(shape):
        return
    try:
        if not isinstance(proxy, ArrayProxy) or proxy.order != "F":
            raw = proxy.get_unscaled() if isinstance(proxy, ArrayProxy) else proxy
            yield 0, np.asarray(raw).reshape(shape)
            return
        dtype = np.dtype(proxy.dtype)
        plane_bytes = shape[0] * shape[1] * dtype.itemsize
        depth = max(1, SLAB_BYTES // max(plane_bytes, 1))
        with ImageOpener(proxy.file_like) as stream:
            for k in range(0, shape[2], depth):
                yield k, array_from_file((shape[0], shape[1], min(depth, shape[2] - k)), dtype,
                                         # nibabel gives its own Opener here too
                                         stream,  # type: ignore[arg-type]
                                         offset=proxy.offset + k * plane_bytes, mmap=False)
            _check_gzip_end(stream.fobj)
    except NIFTI_ERRORS as exc:
        raise _unreadable_voxels(source, exc) from None


def _check_gzip_end(stream: object) -> None:
    """Read a gzip stream past its last voxels to its end, where gzip checks the data's CRC
    (a ``BadGzipFile`` where it fails): read only as far as the voxels, a bit flipped in a
    .nii.gz garbled thousands of voxels without a word, and the CT was segmented."""
    if isinstance(stream, gzip.GzipFile):
        while stream.read(SLAB_BYTES):
            pass


def _check_stored_size(proxy: ArrayProxy, needed: int, source: str) -> None:
    """Refuse an uncompressed file shorter than its header's voxels, naming both sizes: read in
    slabs, the reader's own error named the slab's bytes (32 MiB), not the file's."""
    file_like = proxy.file_like
    if not isinstance(file_like, (str, os.PathLike)):
        return
    path = Path(file_like)
    if path.suffix.lower() in ImageOpener.compress_ext_map or not path.is_file():
        return
    stored = path.stat().st_size - proxy.offset
    if stored < needed:
        raise CovsegError(f"{source}: cannot read the voxels (the file ends {max(stored, 0)} "
                          f"bytes into its voxels, which take {needed} bytes); "
                          "is the file truncated?")


ORDINALS = ("first", "second", "third")


def _check_perpendicular(image: nib.Nifti1Pair, shape: tuple[int, int, int], source: str
                         ) -> None:
    """Refuse an affine whose voxel axes are not perpendicular (sheared), as converters keep an
    uncorrected gantry tilt: volumes in mL (the product of the voxel sizes) and the lung
    finder's mm distances take the axes as perpendicular (11 degrees overstate every mL by 2 %).
    Rotated (oblique) affines are perpendicular and read. One axis may drift along another
    over the volume as far as the DICOM reader lets slices shift in-plane
    (:func:`_allowed_offset`), far beyond what float rounding in headers makes."""
    columns = image.affine[:3, :3] * UNIT_MM.get(image.header.get_xyzt_units()[0], 1.0)
    sizes = np.linalg.norm(columns, axis=0)
    if not np.all(sizes > 0):
        return
    units = columns / sizes
    cosines = np.abs(units.T @ units)
    np.fill_diagonal(cosines, 0.0)
    drift = cosines * sizes[None, :] * np.maximum(np.asarray(shape) - 1, 1)[None, :]
    allowed = np.asarray([[_allowed_offset(float(size))] for size in sizes])
    along, axis = np.unravel_index(int(np.argmax(drift / allowed)), drift.shape)
    if drift[along, axis] <= allowed[along, 0]:
        return
    angle = float(np.degrees(np.arcsin(min(1.0, cosines[along, axis]))))
    raise CovsegError(
        f"{source}: the affine's voxel axes are not perpendicular (its {ORDINALS[axis]} voxel "
        f"axis leans {angle:.2g} degrees towards its {ORDINALS[along]}, "
        f"{drift[along, axis]:.3g} mm over the volume: a gantry tilt kept as shear?), and "
        "volumes in mL and distances in mm need "
        "perpendicular axes; resample it first, e.g. convert the DICOM series again with "
        "dcm2niix, which corrects tilt")


def _scaled_zyx(slabs: Iterator[tuple[int, np.ndarray]], shape: tuple[int, int, int],
                slope: float, inter: float, dtype: np.dtype, source: str | Path) -> np.ndarray:
    """Apply the NIfTI scaling slice by slice into a (z, y, x) array, refusing NaN/inf.

    Hand-written rather than ``np.asarray(dataobj, dtype)`` because nibabel scales the whole
    volume at once in float64: 8 bytes per voxel on top of the result for a 1000-slice study.
    ``slabs``: the stored (x, y, z) voxels by :func:`_stored_slabs`.
    An integer ``dtype`` asks for labels: fractional values (a probability map) are refused,
    not truncated to 0. Memory short of the volume, or of a slab read into it later, is
    refused naming the file and the volume's size (:func:`~covseg.io.volume.short_of_memory`):
    a slab's bare MemoryError ended evaluate in "out of memory", naming neither.
    """
    try:
        out = np.empty(shape[::-1], dtype=dtype)
        _fill_scaled(out, slabs, slope, inter, source)
    except MemoryError:
        raise short_of_memory(shape, dtype, source) from None
    return out


def _fill_scaled(out: np.ndarray, slabs: Iterator[tuple[int, np.ndarray]], slope: float,
                 inter: float, source: str | Path) -> None:
    """Fill the (z, y, x) ``out`` from ``slabs`` for :func:`_scaled_zyx`."""
    dtype = out.dtype
    scaled = (slope, inter) != (1.0, 0.0)
    fractions: list[float] = []
    for first, slab in slabs:
        for k in range(slab.shape[2]):
            plane = slab[:, :, k].T
            if plane.dtype.kind == "f" and not np.isfinite(plane).all():
                raise CovsegError(f"{source}: the volume holds NaN or infinite values")
            if scaled:
                with np.errstate(over="ignore"):  # an overflow is refused below
                    plane = plane * np.float32(slope) + np.float32(inter)
            if dtype.kind in "iu" and plane.dtype.kind == "f":
                fractions.extend(fraction_range(plane))
                plane = np.rint(plane)
            if dtype.kind in "iu":
                _check_labels_fit(plane, dtype, source)
            with np.errstate(over="ignore"):  # a float overflow is refused just below
                out[first + k] = plane
            if dtype.kind == "f" and not np.isfinite(out[first + k]).all():  # beyond float32's
                raise CovsegError(f"{source}: the volume holds values beyond float32's range "
                                  f"(up to {float(np.abs(plane).max()):.3g}); is its scaling "
                                  "wrong?")
    if fractions:
        raise fractional_values(source, fractions)


def _check_labels_fit(plane: np.ndarray, dtype: np.dtype, source: str | Path) -> None:
    """Refuse stored values that ``dtype``'s labels cannot hold, naming the file and the value:
    cast as they were, 65536 wrapped to label 0 (a lesion read as 0 mL, a prediction scored
    Dice 0) and 65537 to 1, and a uint16 0/65535 mask read as "negative labels"."""
    if not plane.size or np.can_cast(plane.dtype, dtype):
        return
    bounds = np.iinfo(dtype)
    low, high = plane.min(), plane.max()
    if low >= bounds.min and high <= bounds.max:
        return
    value = high if high > bounds.max else low
    shown = f"{int(value)}" if float(value).is_integer() else f"{float(value):g}"
    raise NotLabels(
        f"{source}: holds the value {shown}, beyond the labels covseg reads "
        f"({bounds.min}..{bounds.max}); a mask holds small labels (0/1, 0/255, or 0..3): if "
        f"{shown} marks the lesion of a binary mask, save it as 0/1")
