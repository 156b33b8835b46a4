"""CT volumes: NIfTI and DICOM read into (z, y, x) arrays with the geometry to write results back.

Convention: ``array[k]`` is the k-th axial slice as (y, x); the voxel index (x, y, z) maps to
world RAS+ millimetres through ``affine`` (the NIfTI convention: +x towards the patient's right,
+y anterior, +z superior). Masks written with :func:`write_mask_like` reuse the input's affine and
a copy of its header, so they overlay the input exactly in any viewer. DICOM geometry (LPS) is
converted to the same RAS affine, which SimpleITK and nibabel both read back unchanged.

Every volume is read in one orientation, whatever its file's storage: voxel axes permuted and
flipped (no resampling) to lungmask's, DICOM's own LPS order (x towards the patient's left, y
posterior, z superior), so ``array[k]`` is an axial slice shown radiologically as stored. The 2D
models and the lung finder work on axial slices, and the same scan stored sagittally, coronally
or mirrored then gives the same masks and numbers. ``Volume.stored`` keeps the file's own axes;
the writers put results back on them, so a mask still overlays its input voxel for voxel.

Intensity: ``Volume.intensity`` says how values are stored ("hu" Hounsfield units, "uint8" 8-bit
grey 0..255, "unit" grey in [0, 1]); it is the ``kind`` to give
:func:`covseg.transforms.scale_intensity`. Like lungmask's ``--noHU``, ``read_volume(hu=...)``
detects it ("auto") or is told ("yes" = HU, "no" = grey).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import numbers
import os
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk
from nibabel.arrayproxy import ArrayProxy
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError
from nibabel.volumeutils import array_from_file
from nibabel.wrapstruct import WrapStructError

from covseg.errors import CovsegError, counted, them
from covseg.io.atomic import atomic_path
from covseg.io.image import IMAGE_SUFFIXES, fraction_range, fractional_values, label_levels
from covseg.transforms import AIR_HU, LUNG_WINDOW, grey_outside_lung_window, holds_grey_only

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
HU_MODES: tuple[str, ...] = ("auto", "yes", "no")
HU_LIMIT = 100_000.0
"""Largest magnitude a CT value may have: 16-bit storage spans -32768..65535 (padding, metal)."""
AIR_LIMIT_HU = -900.0
"""A chest CT in Hounsfield units holds air at or below this (around the body, in the airways
and lungs): values detected as HU with none this low were stored without their scaling."""
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
NIFTI_ERRORS = (ImageFileError, HeaderDataError, WrapStructError, OSError, EOFError,
                ValueError, zlib.error)
"""What nibabel raises for corrupt, truncated or unsupported files."""
ANALYZE_SUFFIXES = (".hdr", ".img")
"""The two files of an Analyze 7.5 image (or a two-file NIfTI pair), which covseg does not read."""
GZIP_MAGIC = b"\x1f\x8b"
NIFTI2_HEADER_SIZE = 540
"""``sizeof_hdr`` of a NIfTI-2 header (NIfTI-1: 348)."""

log = logging.getLogger(__name__)


def is_nifti(path: Path) -> bool:
    """True for .nii and .nii.gz files; not for hidden ones, such as the ``._x.nii.gz``
    metadata files (AppleDouble) that macOS leaves beside each file on other disks."""
    return (path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)
            and not path.name.startswith("."))


def is_dicomdir(path: Path) -> bool:
    """Whether ``path`` is a DICOMDIR: the index of a DICOM export (a CD's), no image."""
    return path.is_file() and path.name.upper() == "DICOMDIR"


def is_dicom_file(path: Path) -> bool:
    """True for a file with a DICOM suffix or the DICM preamble (suffix-less PACS exports), or
    a file named without a suffix (``IM0003``, or a UID) that parses as DICOM without the
    preamble, which files not written for removable media may leave out (SimpleITK reads them)."""
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.suffix.lower() in DICOM_SUFFIXES or pydicom.misc.is_dicom(path):
        return True
    return _unsuffixed(path) and _parses_as_dicom(path)


def _unsuffixed(path: Path) -> bool:
    """Whether a file name has no suffix to say its format: none, or a UID's last number."""
    return path.suffix == "" or path.suffix[1:].isdigit()


def _parses_as_dicom(path: Path) -> bool:
    """Whether a file without the DICM preamble starts with a DICOM group (0002 file meta or
    0008 identification, little endian) and pydicom finds its SOP Class UID there."""
    try:
        with open(path, "rb") as handle:
            if handle.read(2) not in (b"\x02\x00", b"\x08\x00"):
                return False
        with warnings.catch_warnings():  # pydicom's warnings about the bytes it sniffs
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, force=True, stop_before_pixels=True,
                                      specific_tags=["SOPClassUID"])
            meta = getattr(dataset, "file_meta", None) or {}  # values are parsed when read
            return bool(dataset.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID"))
    except Exception:  # noqa: BLE001 -- any bytes may be sniffed; a parse failure is a "no"
        return False


def is_gzipped_dicom(path: Path) -> bool:
    """Whether ``path`` is a gzip-compressed DICOM file, as some archives store slices
    (``IM0001.dcm.gz``; a ``.gz`` whose contents start with the DICM preamble): covseg does not
    read them, and says so rather than calling them no images."""
    if not path.is_file() or not path.name.lower().endswith(".gz") or is_nifti(path):
        return False
    if Path(path.stem).suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except (OSError, EOFError, zlib.error):
        return False


def gzipped_dicom_refusal(folder: Path) -> CovsegError | None:
    """The error for a folder holding gzip-compressed DICOM files (:func:`is_gzipped_dicom`),
    naming them and what to do, rather than "no images" or "no DICOM series"; None without."""
    names = sorted(p.name for p in folder.iterdir() if is_gzipped_dicom(p))
    if not names:
        return None
    return CovsegError(f"{folder}: {counted(len(names), 'gzip-compressed DICOM file')} "
                       f"({names[0]}...), which covseg does not read; gunzip {them(len(names))} "
                       "first and give the folder again")


def nifti_stem(path: Path) -> str:
    """File name without .nii / .nii.gz."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


WORKING_AXES = ("L", "P", "S")
"""The orientation every volume is read in (see the module docstring)."""


def _zyx(xyz: Sequence[float]) -> tuple[float, float, float]:
    """A NIfTI header's (x, y, z, ...) sizes as covseg's (z, y, x)."""
    return xyz[2], xyz[1], xyz[0]


@dataclass(frozen=True)
class StoredAxes:
    """A file's own voxel axes, for a volume read with its axes permuted or flipped."""

    to_working: np.ndarray
    """nibabel orientation transform from the file's axes to the volume's."""
    affine: np.ndarray
    header: nib.Nifti1Header

    def to_file(self, data_xyz: np.ndarray) -> np.ndarray:
        """(x, y, z[, C]) data on the volume's axes -> the same data on the file's axes."""
        start = nib.io_orientation(self.affine)
        back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(WORKING_AXES), start)
        return nib.orientations.apply_orientation(data_xyz, back)

    def file_slice(self, k: int, depth: int) -> int | None:
        """The file's own slice index of the volume's axial slice ``k``; None when the file's
        slices are not axial (its axial slices are then cut across them)."""
        axis, flip = self.to_working[2]
        if int(axis) != 2:
            return None
        return k if flip > 0 else depth - 1 - k


@dataclass(frozen=True)
class DicomSeries:
    """The DICOM series a volume was read from, as a study's record names it."""

    uid: str
    """SeriesInstanceUID."""
    number: str
    """SeriesNumber ("" when absent)."""
    description: str
    """SeriesDescription ("" when absent)."""
    files: int
    images: int
    """Images (frames) over its files: an Enhanced CT's one file holds the whole volume."""
    localizer: bool = False
    """Every file's ImageType says LOCALIZER: a scout (topogram), never read as the CT."""
    image_numbers: tuple[int, ...] | None = None
    """InstanceNumber of each slice in the file order SimpleITK read (its slice index); None
    when a slice has none or two share one."""
    ignored: tuple[DicomSeries, ...] = ()
    """The other series of the study found beside it and not read."""

    def describe(self) -> str:
        """'series 3 "thin 1 mm" (30 images, UID 1.2...)', '(30 images in 1 file, ...)' for a
        multi-frame file: the series as a user finds it in a viewer."""
        number = f" {self.number}" if self.number else ""
        description = f' "{self.description}"' if self.description else ""
        count = counted(self.images, "image")
        if self.images != self.files:
            count += f" in {counted(self.files, 'file')}"
        kind = ", localizer" if self.localizer else ""
        return f"series{number}{description} ({count}{kind}, UID {self.uid})"

    def record(self) -> dict[str, Any]:
        """The series for quantification.json."""
        return {"series_instance_uid": self.uid, "series_number": self.number or None,
                "series_description": self.description or None, "files": self.files,
                "images": self.images, **({"localizer": True} if self.localizer else {}),
                **({"ignored_series": [other.record() for other in self.ignored]}
                   if self.ignored else {})}


@dataclass
class Volume:
    """A volume as (z, y, x) axial voxels plus its NIfTI affine and header (the geometry to copy
    out); ``stored`` is set when the file's axes were permuted or flipped (module docstring)."""

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    source: str
    intensity: str = "hu"
    stored: StoredAxes | None = None
    as_read: nib.Nifti1Header | None = None
    """The file's header when ``header``'s voxel sizes were set to the affine's
    (:func:`_header_sized_by_affine`) or to mm (:func:`_in_mm`): written results copy the
    file's, to overlay it in every reader."""
    read_affine: np.ndarray | None = None
    """The file's affine when ``affine`` was scaled to mm (a file in metres or microns)."""
    dicom: DicomSeries | None = None
    """The DICOM series read from a folder (None for NIfTI files and DICOM files given)."""

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm as (z, y, x)."""
        z, y, x = _zyx(self.header.get_zooms())
        return float(z), float(y), float(x)

    @property
    def pixel_aspect(self) -> float:
        """Height over width of an axial slice's pixel (row over column spacing): matplotlib's
        ``imshow(aspect=...)`` to draw slices to scale, whatever :func:`orient_for_display`
        flips."""
        _, row_mm, column_mm = self.spacing
        return row_mm / column_mm

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def file_affine(self) -> np.ndarray:
        """The affine as the file holds it, in its own units (for messages and records a user
        can check, and for results written on it)."""
        if self.stored:
            return self.stored.affine
        return self.read_affine if self.read_affine is not None else self.affine

    @property
    def file_header(self) -> nib.Nifti1Header:
        """The header as the file holds it (the one written results copy)."""
        if self.stored:
            return self.stored.header
        return self.as_read if self.as_read is not None else self.header

    @property
    def file_shape_zyx(self) -> tuple[int, int, int]:
        """The voxel grid's shape as the file holds it, as (z, y, x)."""
        z, y, x = _zyx(self.file_header.get_data_shape())
        return int(z), int(y), int(x)

    @property
    def oriented(self) -> bool:
        """Whether the file states its orientation (qform or sform code set); without one,
        nibabel's Analyze convention placed it, so right and left may be swapped."""
        return not _unoriented(self.file_header)

    @property
    def file_axes(self) -> str:
        """The file's axis codes, e.g. "RAS" or "ASL"."""
        return "".join(nib.aff2axcodes(self.file_affine))

    def in_file_axes(self, data_zyx: np.ndarray) -> np.ndarray:
        """(z, y, x) data on this volume's axes -> (z, y, x) on the file's own voxel axes."""
        if self.stored is None:
            return data_zyx
        return self.stored.to_file(data_zyx.T).T

    def file_slice(self, k: int) -> int | None:
        """The file's own index of axial slice ``k`` (along its last stored axis, as MedSeg's
        PNG exports and Inf-Net's ids count them); None when the file's slices are not axial."""
        return k if self.stored is None else self.stored.file_slice(k, self.array.shape[0])

    def file_index(self, k: int) -> int:
        """:meth:`file_slice`, or ``k`` where the file's slices are not axial."""
        index = self.file_slice(k)
        return k if index is None else index

    def slice_name(self, k: int) -> str:
        """How to name axial slice ``k`` to a user: its index in the file when the file is axial
        (in a DICOM series, SimpleITK's order, the masks' slice index), after the image's
        InstanceNumber, which DICOM viewers show: the index alone named another image in a
        viewer, as GDCM sorts slices along the normal whatever their numbers."""
        index = self.file_slice(k)
        if index is None:
            return f"axial slice {k} (cut across the file's)"
        numbers = self.dicom.image_numbers if self.dicom else None
        if numbers and len(numbers) == self.array.shape[0]:
            return f"image {numbers[index]} (slice {index})"
        return f"slice {index}"


def read_nifti(path: str | os.PathLike[str], dtype: type = np.float32,
               like: Volume | None = None) -> Volume:
    """Read a 3D NIfTI file; x/y/z storage order becomes (z, y, x) so that ``array[k]`` is a slice.

    ``like``: the volume this one is paired with voxel for voxel (a mask's CT). A file whose
    header has no real geometry (:func:`lacks_geometry`) but ``like``'s stored shape is read on
    ``like``'s geometry, its voxels paired as stored, with a warning: reoriented by its own
    identity or Analyze affine, a numpy pipeline's mask came out mirrored against its CT.
    """
    path = Path(path)
    image = _load_nifti(path)
    if like is not None and _geometryless(image) and _stored_alike(image, like):
        image = _on_geometry_of(image, like, str(path))
    return volume_from_nifti(image, str(path), dtype)


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """The NIfTI image at ``path``, its voxels not yet read. A file named ``.nii.gz`` but not
    gzip-compressed (a frequent mislabel; nibabel goes by the name and fails) is read by its
    content, with a warning."""
    if not is_nifti(path):
        raise CovsegError(f"{path}: not a NIfTI file (.nii or .nii.gz)")
    try:
        if path.name.lower().endswith(".gz") and not _gzipped(path):
            image = _uncompressed_nifti(path.read_bytes())
            log.warning("%s: not gzip-compressed, though named .nii.gz; read as a .nii file "
                        "(rename it to .nii)", path)
            return image
        return nib.load(str(path))
    except NIFTI_ERRORS as exc:
        raise CovsegError(
            f"{path}: cannot read the NIfTI header ({_one_line(exc)}); is the file truncated?"
        ) from None


def _gzipped(path: Path) -> bool:
    """Whether a file starts as gzip data does."""
    with open(path, "rb") as handle:
        return handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def _uncompressed_nifti(data: bytes) -> nib.Nifti1Image:
    """A NIfTI-1 or NIfTI-2 image from an uncompressed file's bytes (by ``sizeof_hdr``, in
    either byte order)."""
    sizes = {int.from_bytes(data[:4], order) for order in ("little", "big")}
    kind = nib.Nifti2Image if NIFTI2_HEADER_SIZE in sizes else nib.Nifti1Image
    return kind.from_bytes(data)


def is_analyze(path: Path) -> bool:
    """Whether a file is named as half of an Analyze 7.5 pair (``.hdr`` or ``.img``)."""
    return path.suffix.lower() in ANALYZE_SUFFIXES


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
    """Whether ``path`` is a NIfTI file whose header has no real geometry (reads the header only;
    a DICOM series always has its own)."""
    path = Path(path)
    return path.name.lower().endswith(NIFTI_SUFFIXES) and _geometryless(_load_nifti(path))


def _stored_alike(image: nib.Nifti1Image, like: Volume) -> bool:
    """Whether the file stores ``like``'s voxel grid shape but another affine."""
    shape = tuple(int(n) for n in image.shape)
    return (shape[:3] == like.file_shape_zyx[::-1] and all(n == 1 for n in shape[3:])
            and not np.allclose(image.affine, like.file_affine, atol=GRID_TOLERANCE_MM))


def _on_geometry_of(image: nib.Nifti1Image, like: Volume, source: str) -> nib.Nifti1Image:
    """``image``'s stored voxels (and scaling) on ``like``'s file affine and voxel sizes."""
    log.warning("%s: its header has no real geometry (identity affine, or qform and sform codes "
                "0) and it stores %s's grid shape; pairing their voxels as stored",
                source, like.source)
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


def volume_from_nifti(image: nib.Nifti1Image, source: str, dtype: type = np.float32) -> Volume:
    """A loaded NIfTI image (from a file or built in memory) -> Volume with (z, y, x) voxels."""
    _check_stored_dtype(np.dtype(image.get_data_dtype()), source)
    shape = _volume_shape(tuple(int(n) for n in image.shape), source)
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
                           read_affine=read_affine))


UNIT_MM = {"meter": 1000.0, "micron": 0.001}
"""Millimetres per spatial unit of a NIfTI header (xyzt_units) other than mm; "unknown" is
read as mm, as every reader does."""


def _in_mm(image: nib.Nifti1Image, header: nib.Nifti1Header
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


def _header_sized_by_affine(image: nib.Nifti1Image, source: str) -> nib.Nifti1Header:
    """The image's header, its voxel sizes (pixdim, which volumes in mL use) set to the affine's
    when they disagree by more than 1 %, with a warning: the affine places the voxels in every
    viewer and in the lung finder, and a tool that edits one often leaves the other stale
    (nibabel even sets a zero pixdim to 1 mm on reading)."""
    stated = np.asarray(image.header.get_zooms()[:3], dtype=np.float64)
    implied = nib.affines.voxel_sizes(image.affine)
    if np.allclose(stated, implied, rtol=0.01):
        return image.header
    log.warning("%s: voxel sizes %s mm in the header differ from the affine's %s mm; volumes "
                "use the affine's", source, _mm(stated), _mm(implied))
    header = image.header.copy()
    header.set_zooms(tuple(implied) + tuple(header.get_zooms()[3:]))
    return header


def _warn_unoriented(image: nib.Nifti1Image, source: str) -> None:
    """Warn when the header holds no orientation (qform and sform codes 0): nibabel then assumes
    the Analyze convention, so right and left may be swapped."""
    if _unoriented(image.header):
        log.warning("%s: the header holds no orientation (qform and sform codes 0); read as %s "
                    "by the Analyze convention, so right and left lungs may be swapped",
                    source, "".join(nib.aff2axcodes(image.affine)))


def _unoriented(header: nib.Nifti1Header) -> bool:
    """Whether a header's qform and sform codes are both 0: it states no orientation."""
    return int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0


def _mm(sizes: np.ndarray) -> str:
    return " x ".join(f"{v:g}" for v in sizes)


def _scaling(image: nib.Nifti1Image) -> tuple[float, float]:
    """The stored voxels' scaling (slope, intercept); an image built in memory holds the values
    as they are."""
    if isinstance(image.dataobj, np.ndarray):
        return 1.0, 0.0
    return float(image.dataobj.slope), float(image.dataobj.inter)


SLAB_BYTES = 32 * 1024 * 1024
"""Stored bytes of whole z slices read from a file at once (:func:`_stored_slabs`)."""


def _stored_slabs(image: nib.Nifti1Image, shape: tuple[int, int, int], source: str
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """The stored, unscaled (x, y, z) voxels as (first z index, slab of whole z slices), in z
    order. A file is read one slab of :data:`SLAB_BYTES` at a time from one open file: read
    whole, a float64 .nii.gz held 8 bytes per voxel and gzip's read as many again, twice the
    float32 volume kept (NIfTI stores each z slice contiguously, so slabs are read in order)."""
    proxy = image.dataobj
    if not all(shape):
        return
    try:
        if not isinstance(proxy, ArrayProxy) or proxy.order != "F":
            raw = proxy if isinstance(proxy, np.ndarray) else proxy.get_unscaled()
            yield 0, np.asarray(raw).reshape(shape)
            return
        dtype = np.dtype(proxy.dtype)
        _check_stored_size(proxy, shape[0] * shape[1] * shape[2] * dtype.itemsize, source)
        plane_bytes = shape[0] * shape[1] * dtype.itemsize
        depth = max(1, SLAB_BYTES // max(plane_bytes, 1))
        with ImageOpener(proxy.file_like) as stream:
            for k in range(0, shape[2], depth):
                yield k, array_from_file((shape[0], shape[1], min(depth, shape[2] - k)), dtype,
                                         stream, offset=proxy.offset + k * plane_bytes,
                                         mmap=False)
    except NIFTI_ERRORS as exc:
        raise CovsegError(
            f"{source}: cannot read the voxels ({_one_line(exc)}); is the file truncated?"
        ) from None


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


def _check_stored_dtype(dtype: np.dtype, source: str | Path) -> None:
    """Refuse complex, boolean and RGB voxels: a CT volume holds one real number per voxel."""
    if dtype.kind not in "iuf":
        kind = {"c": "complex", "b": "boolean", "V": "RGB/compound"}.get(dtype.kind, str(dtype))
        raise CovsegError(
            f"{source}: voxels are {kind} ({dtype}); expected one real value per voxel (a CT in HU)"
        )


def _volume_shape(shape: tuple[int, ...], source: str | Path) -> tuple[int, int, int]:
    """The (x, y, z) shape of a stored volume: (x, y, z, 1, ...) is 3D; 2D images and true 4D
    series are refused."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        raise CovsegError(
            f"{source}: a 2D image of shape {shape}, not a volume; "
            "predict 2D slices as images, or save it as (x, y, 1)"
        )
    if len(shape) != 3:
        raise CovsegError(f"{source}: expected a 3D volume, got shape {shape}")
    return shape[0], shape[1], shape[2]


ORDINALS = ("first", "second", "third")


def _check_perpendicular(image: nib.Nifti1Image, shape: tuple[int, int, int], source: str
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
    not truncated to 0.
    """
    out = np.empty(shape[::-1], dtype=dtype)
    scaled = (slope, inter) != (1.0, 0.0)
    fractions: list[float] = []
    for first, slab in slabs:
        for k in range(slab.shape[2]):
            plane = slab[:, :, k].T
            if plane.dtype.kind == "f" and not np.isfinite(plane).all():
                raise CovsegError(f"{source}: the volume holds NaN or infinite values")
            if scaled:
                plane = plane * np.float32(slope) + np.float32(inter)
            if dtype.kind in "iu" and plane.dtype.kind == "f":
                fractions.extend(fraction_range(plane))
                plane = np.rint(plane)
            with np.errstate(over="ignore"):  # an overflow is refused just below
                out[first + k] = plane
            if dtype.kind == "f" and not np.isfinite(out[first + k]).all():  # beyond float32's
                raise CovsegError(f"{source}: the volume holds values beyond float32's range "
                                  f"(up to {float(np.abs(plane).max()):.3g}); is its scaling "
                                  "wrong?")
    if fractions:
        raise fractional_values(source, fractions)
    return out


def _check_finite(data: np.ndarray, source: str | Path) -> None:
    """Refuse NaN/inf voxels (checked per slice so that no volume-sized mask is allocated)."""
    if data.dtype.kind == "f" and not all(np.isfinite(plane).all() for plane in data):
        raise CovsegError(f"{source}: the volume holds NaN or infinite values")


def check_hu(hu: str, option: str = "--hu") -> str:
    """One of :data:`HU_MODES` (``option``: the name the user gave it by)."""
    if hu not in HU_MODES:
        raise CovsegError(f"unknown {option} value {hu!r}; choose one of {', '.join(HU_MODES)}")
    return hu


def read_volume(path: str | os.PathLike[str], hu: str = "auto", like: Volume | None = None
                ) -> Volume:
    """Read a CT as float32 (z, y, x) from NIfTI, a DICOM folder or a single DICOM file (a
    folder holding one NIfTI file and no DICOM is read as that file: :func:`folder_volume`).

    ``hu``: "auto" detects Hounsfield units vs 8-bit grey from the value range, "yes" forces HU,
    "no" says the values are grey (0..255 or 0..1), as lungmask's ``--noHU``. ``like``: as for
    :func:`read_nifti`.
    """
    check_hu(hu)
    path = Path(path)
    if path.is_dir():
        path = folder_volume(path)
    if path.is_dir():
        volume = read_dicom_folder(path)
    elif not path.exists():
        raise CovsegError(f"{path}: no such file or folder")
    elif path.name.lower().endswith(NIFTI_SUFFIXES):
        volume = read_nifti(path, like=like)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        raise CovsegError(
            f"{path}: a 2D image, not a volume; give a NIfTI file or a DICOM series "
            "(2D images are predicted slice by slice as images)"
        )
    elif is_analyze(path):
        raise analyze_refused(path)
    elif is_dicom_file(path):
        volume = read_dicom_file(path)
    else:
        raise CovsegError(f"{path}: not a NIfTI file (.nii/.nii.gz), DICOM file or DICOM folder")
    volume.intensity = detect_volume_intensity(volume.array, hu, volume.source)
    return volume


def folder_niftis(folder: Path) -> list[Path]:
    """The NIfTI files of a folder that holds no DICOM file, sorted; none beside DICOM slices
    (a series with a converted copy is read from its slices)."""
    volumes = sorted(c for c in folder.iterdir() if is_nifti(c))
    if not volumes or any(is_dicom_file(c) for c in folder.iterdir()):
        return []
    return volumes


def folder_volume(folder: Path) -> Path:
    """Where a folder's CT is read from: the folder itself (a DICOM series, searched as
    :func:`read_dicom_folder` searches it), or the one NIfTI file it holds beside no DICOM file
    (data stored one folder per patient: ``p1/ct.nii.gz``). Several NIfTI files there are
    refused: which is the CT, and which its masks, is a guess."""
    volumes = folder_niftis(folder)
    if not volumes:
        return folder
    if len(volumes) > 1:
        raise CovsegError(f"{folder}: holds {len(volumes)} NIfTI files ({volumes[0].name}, "
                          f"{volumes[1].name}{', ...' if len(volumes) > 2 else ''}) and no DICOM "
                          "slices; give the CT file itself, or this folder alone to read each "
                          "file as a study")
    return volumes[0]


GRID_TOLERANCE_MM = 1e-3
"""Largest difference between two affines' entries taken as one grid (float rounding in files)."""
SPACING_TOLERANCE = 0.01
"""Largest relative difference between two grids' voxel sizes taken as one size (a converter's
rounding: 0.703125 mm stored as 0.7031 is 0.004 % off; a 0.75 mm mask on a 3 mm CT is 300 %)."""
DIRECTION_TOLERANCE_DEG = 0.5
"""Largest angle between two grids' corresponding voxel axes taken as one direction (rounded
direction cosines; at 250 mm from the origin, 0.5 degrees moves a voxel 2.2 mm)."""


def same_grid_affine(first: Volume, second: Volume) -> bool:
    """Whether two volumes' affines put their voxels at the same places."""
    return bool(np.allclose(first.affine, second.affine, atol=GRID_TOLERANCE_MM))


def grid_differences(first: Volume, second: Volume) -> list[str]:
    """What sets two volumes' voxel grids apart (each turned to the working axes by its own
    header), said for a message; empty when they are one grid but for rounding and drift:
    voxel sizes within :data:`SPACING_TOLERANCE` of each other, axes within
    :data:`DIRECTION_TOLERANCE_DEG`, origins (said only for grids of one voxel size and
    direction) less than half the smallest voxel apart. The files' own axes are named when they
    differ (a flipped or permuted header)."""
    sizes = [np.linalg.norm(volume.affine[:3, :3], axis=0) for volume in (first, second)]
    differences = []
    if np.any(np.abs(sizes[0] - sizes[1]) > SPACING_TOLERANCE * np.minimum(*sizes)):
        differences.append(f"voxel sizes {_mm(sizes[0])} mm and {_mm(sizes[1])} mm")
    cosines = np.sum((first.affine[:3, :3] / sizes[0]) * (second.affine[:3, :3] / sizes[1]),
                     axis=0)
    angle = float(np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))).max())
    if angle > DIRECTION_TOLERANCE_DEG:
        differences.append(f"voxel axes turned {angle:.3g} degrees apart")
    offset, half = grid_drift_mm(first, second), 0.5 * float(min(*sizes[0], *sizes[1]))
    if offset >= half and not differences:  # else the first voxels lie apart by the sizes
        differences.append(f"origins {offset:.3g} mm apart (half a voxel is {half:.3g} mm)")
    if differences and first.file_axes != second.file_axes:
        differences.append(f"the files' axes {first.file_axes} and {second.file_axes}")
    return differences


def grid_drift_mm(first: Volume, second: Volume) -> float:
    """How far apart two volumes' origins (first voxels, on the working axes) lie, in mm."""
    return float(np.linalg.norm(first.affine[:3, 3] - second.affine[:3, 3]))


def warn_grid_drift(first: Volume, second: Volume) -> None:
    """Warn of a drift between two grids that :func:`grid_differences` takes as one, their
    voxels paired as stored."""
    if not same_grid_affine(first, second):
        log.warning("%s: affine differs from %s (origins %.3g mm apart, under half a voxel); "
                    "assuming the same voxel grid", second.source, first.source,
                    grid_drift_mm(first, second))


def check_same_grid(reference: Volume, other: Volume) -> None:
    """Refuse to pair a mask (``reference``) with a volume (its CT, lungs or image) on another
    grid, as quantify and training both pair them voxel for voxel, saying what differs
    (:func:`grid_differences`, the rule evaluate applies too). Each is turned to the working
    axes by its own header, so voxels stored alike under headers that label the axes
    differently (one flipped or permuted) would pair mirrored, or be refused for shapes that
    print equal: refused, naming the axes. A drift under half a voxel between headers
    (translation, rounding) only warns, the voxels being paired as stored."""
    differences = grid_differences(reference, other)
    if differences and reference.file_axes != other.file_axes:
        raise CovsegError(
            f"{other.source}: its header labels the voxel axes {other.file_axes}, the mask "
            f"{reference.source}'s {reference.file_axes}, and their affines place the voxels "
            "differently; fix the header of one (e.g. give the mask the CT's geometry) rather "
            f"than pair them mirrored ({'; '.join(differences[:-1])})"
        )
    if reference.array.shape != other.array.shape:
        raise CovsegError(
            f"{other.source}: shape {other.file_shape_zyx} differs from the mask "
            f"{reference.source} {reference.file_shape_zyx} (z, y, x, as the files hold them); "
            "they must be on the same voxel grid"
        )
    if differences:
        raise CovsegError(
            f"{other.source}: not on the voxel grid of the mask {reference.source} "
            f"({'; '.join(differences)}); resample one onto the other's grid first"
        )
    warn_grid_drift(reference, other)


def as_axial(volume: Volume) -> Volume:
    """The volume in :data:`WORKING_AXES` order (see the module docstring): the file's voxel axes
    permuted and flipped, each to its nearest world axis (nibabel's ``io_orientation``, so an
    oblique scan counts as its closest plane). Cut along a sagittal file's third axis, a scan gave
    an empty lung and a wrong CT category without a word.

    ``volume.array`` must be the reader's own fresh array: mirrored axial files (the common
    case) are flipped in place, so that no second copy of a large study is made.
    """
    _check_orientable(volume)
    start = nib.io_orientation(volume.affine)
    to_working = nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt(WORKING_AXES))
    if (to_working == [[0, 1], [1, 1], [2, 1]]).all():
        return volume
    shape_xyz = volume.array.shape[::-1]
    affine = volume.affine @ nib.orientations.inv_ornt_aff(to_working, shape_xyz)
    if (to_working[:, 0] == [0, 1, 2]).all():
        array = _flipped_in_place(volume.array, to_working[:, 1] < 0)
    else:
        array = np.ascontiguousarray(
            nib.orientations.apply_orientation(volume.array.T, to_working).T)
        if 1 in array.shape[1:] and array.shape[0] > 1:
            raise CovsegError(f"{volume.source}: a single {_plane(start)} plane (axes "
                              f"{''.join(nib.aff2axcodes(volume.affine))}), not axial slices; "
                              "give the whole series")
    zooms = np.empty(3)
    zooms[to_working[:, 0].astype(int)] = volume.header.get_zooms()[:3]
    header = volume.header.copy()
    header.set_data_shape(array.shape[::-1])
    header.set_qform(affine, code=max(int(volume.header["qform_code"]), 1))
    header.set_sform(affine, code=max(int(volume.header["sform_code"]), 1))
    header.set_zooms(tuple(float(z) for z in zooms))  # after the forms, which reset them
    return Volume(array, affine, header, volume.source, volume.intensity,
                  StoredAxes(to_working, volume.file_affine, volume.file_header))


def _check_orientable(volume: Volume) -> None:
    """Refuse an affine that gives no orientation: zero, singular or not finite."""
    matrix = np.asarray(volume.affine, dtype=np.float64)[:3, :3]
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix)) < 1e-12:
        raise CovsegError(f"{volume.source}: its affine (the voxel-to-mm matrix of the header) is "
                          "zero or singular, so the slices' orientation is unknown; fix the "
                          "header's sform/qform or voxel sizes")


def _plane(orientation: np.ndarray) -> str:
    """"sagittal", "coronal" or "axial": the plane of a file's slices (its third axis)."""
    return ("sagittal", "coronal", "axial")[int(orientation[2, 0])]


def _flipped_in_place(array: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """A (z, y, x) array with its x, y and z axes reversed where ``flips`` (x, y, z) says, one
    slice at a time so that no volume-sized copy is made."""
    flip_x, flip_y, flip_z = (bool(f) for f in flips)
    if flip_x or flip_y:
        in_plane = (slice(None, None, -1 if flip_y else 1), slice(None, None, -1 if flip_x else 1))
        for k in range(array.shape[0]):
            array[k] = array[k][in_plane]
    if flip_z:
        depth = array.shape[0]
        for k in range(depth // 2):
            array[[k, depth - 1 - k]] = array[[depth - 1 - k, k]]
    return array


def detect_volume_intensity(array: np.ndarray, hu: str, source: str) -> str:
    """Return "hu", "uint8" or "unit" for a volume (see :func:`read_volume` for ``hu``). Grey
    values detected (``--hu auto``) must be in the lung window, as grey CT exports are: a
    min-max normalised CT (0..1) is refused (:func:`~covseg.transforms.grey_outside_lung_window`),
    not read as lungs of air in soft tissue; ``--hu no`` reads it as grey anyway. HU detected
    without air (:data:`AIR_LIMIT_HU`; a constant volume, blank, reads) and values on neither
    scale (HU + 1024 without its intercept) are refused, saying which scaling was lost;
    ``--hu yes`` reads HU as told."""
    low, high = float(array.min()), float(array.max())
    if low < -HU_LIMIT or high > HU_LIMIT:
        raise CovsegError(f"{source}: values {low:g}..{high:g} are neither Hounsfield units nor "
                          f"grey levels (beyond ±{HU_LIMIT:g}); check the file's scaling "
                          "(scl_slope, RescaleSlope)")
    if hu == "yes":
        return "hu"
    grey = low >= 0.0 and high <= 255.0
    if hu == "no" and not grey:
        raise CovsegError(f"{source}: --hu no expects grey values 0..255, but "
                          f"{_not_grey(low, high)}")
    if hu == "no":
        return "unit" if high <= 1.0 else "uint8"
    if low < -100.0:
        if AIR_LIMIT_HU < low < high:  # a constant volume is blank on any scale
            raise CovsegError(f"{source}: {_not_grey(low, high)}")
        return "hu"
    if grey:
        kind = "unit" if high <= 1.0 else "uint8"
        _refuse_unwindowed_grey(array, kind, source)
        return kind
    raise CovsegError(f"{source}: {_not_grey(low, high)}")


def _not_grey(low: float, high: float) -> str:
    """What values ``low``..``high`` outside 0..255 look like, and what to do: Hounsfield units
    (with air), HU whose slope was lost (no air), or HU stored with an offset whose intercept was
    lost (none below -100). ``--hu no`` said "use --hu yes" to all three, which reads the last
    with its air at about 0 HU."""
    if low < -100.0 and not AIR_LIMIT_HU < low < high:
        return (f"values {low:g}..{high:g} look like Hounsfield units, not grey levels; drop "
                "--hu no (or pass --hu yes) to read them as HU")
    if low < -100.0:
        return (f"values {low:g}..{high:g} look like Hounsfield units without their scaling: "
                f"none lies at or below {AIR_LIMIT_HU:g} HU, while a chest CT holds air (about "
                "-1000) around and in the body (HU stored / 10 with the slope lost?); restore "
                "the file's scl_slope / RescaleSlope, or pass --hu yes if they are HU of a "
                "volume without air")
    return (f"values {low:g}..{high:g} are neither Hounsfield units (none below -100: no air, "
            "about -1000) nor 8-bit grey (0..255): HU stored with an offset whose intercept was "
            "lost? 16-bit CT exports often hold HU + 1024: restore the file's scl_inter / "
            "RescaleIntercept (-1024), or subtract the offset and save the volume as NIfTI")


def _refuse_unwindowed_grey(array: np.ndarray, kind: str, source: str) -> None:
    """Refuse grey values that are not a CT in the lung window
    (:func:`~covseg.transforms.grey_outside_lung_window`), but a constant volume (blank, read
    blank on any scale) or a label mask (refused as one when predicted: :func:`label_levels`)."""
    if not holds_grey_only(array) or label_levels(array):
        return
    reason = grey_outside_lung_window(array, kind, "chest CT")
    if reason:
        raise CovsegError(f"{source}: {reason}; give the CT in Hounsfield units, or as 8-bit "
                          "grey (0..255) in the lung window; --hu no reads it as grey anyway")


def hounsfield(volume: Volume) -> np.ndarray:
    """The volume in HU; grey volumes are mapped back through the lung window (pseudo-HU).

    Grey CT exports (e.g. MedSeg's PNGs) are lung-windowed, so inverting that window gives values
    close enough to HU for the lung threshold of :mod:`covseg.lungs`.
    """
    if volume.intensity == "hu":
        return volume.array
    low, high = LUNG_WINDOW
    scale = (high - low) / (255.0 if volume.intensity == "uint8" else 1.0)
    return (volume.array * np.float32(scale) + np.float32(low)).astype(np.float32, copy=False)


def read_dicom_folder(folder: str | os.PathLike[str]) -> Volume:
    """Read the largest CT series under ``folder`` (searched recursively).

    Several series: series whose Modality is not CT (a PET/CT export's PET) are set aside;
    series of several patients or studies (a PACS or CD export) are refused, naming where each
    lies; of one study's series the one with most images (frames) is used, never a localizer
    over a volume, and a warning names the others (``Volume.dicom`` records both); if two series
    tie for most images the choice would be a guess, so it is an error. The series' headers are
    checked (:func:`check_dicom_series`) before any voxel is read. A series of one file is read
    as that file (:func:`read_dicom_file`: a multi-frame file is a whole volume).
    """
    folder = Path(folder)
    chosen, record, datasets = _largest_series(folder)
    uid, _, files = chosen
    if len(files) == 1:
        volume = read_dicom_file(files[0], source=str(folder))
        volume.dicom = record
        return volume
    headers = [read_slice_header(Path(name)) if dataset is None
               else _frame_headers(dataset, Path(name))[0]
               for dataset, name in zip(datasets, files, strict=True)]
    multi = next((h for h in headers if h.frames > 1), None)
    if multi is not None:
        raise CovsegError(f"{folder}: series {uid} holds {len(files)} files, some of several "
                          f"frames ({multi.name}: {multi.frames}); give each file on its own")
    check_dicom_series(headers, str(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetSpacingWarningRelThreshold(1.0)  # checked above; ITK's warning spans lines
    image = _read_itk(reader, headers[0], f"{folder}: cannot read DICOM series {uid}")
    if any(header.photometric == "MONOCHROME1" for header in headers):
        image = _stored_in_hu(image, files, headers, str(folder))
    image = _padding_as_air(image, headers)
    volume = volume_from_itk(_with_slice_thickness(image, headers[0], str(folder)), str(folder))
    volume.dicom = replace(record, image_numbers=_image_numbers(datasets))
    return volume


OWN_FOLDER_ADVICE = "to read another, move its files to a folder of their own and give that folder"
"""How to choose among one study's series: covseg reads a folder's largest (a batch's studies
each hold their own, so one series option would not fit them all)."""


def _largest_series(folder: Path) -> tuple[Series, DicomSeries, list[pydicom.Dataset | None]]:
    """The CT series with most images under ``folder`` (its file names sorted by GDCM), its
    record naming the other CT series of its study, ignored, and its files' headers
    (:func:`_header_datasets`). Images are frames, not files (an Enhanced CT file of 30 frames
    lost to a 2-image scout), and a localizer is never chosen over a volume."""
    if not any(folder.iterdir()):
        raise CovsegError(f"{folder}: the folder is empty; give a folder of DICOM slices")
    series = _ct_series(_dicom_series(folder), folder)
    _check_one_study(series, folder)
    datasets = {s: _header_datasets(s[2]) for s in series}
    records = {s: _series_record(s, datasets[s]) for s in series}
    series.sort(key=lambda s: (not records[s].localizer, records[s].images), reverse=True)
    uid, directory, files = series[0]
    chosen = records[series[0]]
    if chosen.localizer:
        raise CovsegError(f"{folder}: holds localizer (scout) images only ("
                          f"{', '.join(records[s].describe() for s in series)}), not a CT "
                          "volume; give the folder of the study's CT series")
    _check_not_split(series, folder)
    if len(series) > 1 and records[series[1]].images == chosen.images and not records[
            series[1]].localizer:
        raise CovsegError(
            f"{folder}: {len(series)} DICOM series, the largest tie at "
            f"{counted(chosen.images, 'image')} ({chosen.describe()}; "
            f"{records[series[1]].describe()}); put each series in its own folder and give "
            "that folder"
        )
    ignored = tuple(records[other] for other in series[1:])
    if ignored:
        log.warning("%s: %d DICOM series found; using the largest, %s, and ignoring %s; %s",
                    folder, len(series), chosen.describe(),
                    ", ".join(other.describe() for other in ignored), OWN_FOLDER_ADVICE)
    _check_all_read(uid, directory, files)
    return series[0], replace(chosen, ignored=ignored), datasets[series[0]]


Series = tuple[str, Path, tuple[str, ...]]
"""(series UID, directory, file names sorted by GDCM) of one DICOM series."""


def _dicom_series(folder: Path) -> list[Series]:
    """Every series in every sub-folder (ITK's warning for a folder without one kept quiet: a
    DICOMDIR tree's upper levels hold none)."""
    found = []
    with _quiet_libraries():
        for directory, _, _ in os.walk(folder):
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(directory):
                files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(directory, uid)
                found.append((uid, Path(directory), tuple(files)))
    if not found:
        held = holds_no_ct_image(folder)
        raise gzipped_dicom_refusal(folder) or CovsegError(
            f"{folder}: " + (f"holds {held} only, no CT image; give the folder of the study's "
                             "CT series" if held else
                             "no DICOM series found; give a folder of DICOM slices"))
    return found


def _ct_series(series: list[Series], folder: Path) -> list[Series]:
    """The series whose Modality is CT or unset, with a warning naming those set aside; all of
    them when none is CT (:func:`check_dicom_series` then refuses the one chosen)."""
    modalities = [read_slice_header(Path(files[0])).modality for _, _, files in series]
    ct = [s for s, modality in zip(series, modalities, strict=True) if modality in ("", "CT")]
    if not ct or len(ct) == len(series):
        return series
    log.warning("%s: ignoring %s, not CT", folder, ", ".join(
        f"{modality} series {uid} ({len(files)} slices)"
        for (uid, _, files), modality in zip(series, modalities, strict=True)
        if modality not in ("", "CT")))
    return ct


def _check_not_split(series: list[Series], folder: Path) -> None:
    """Refuse the largest series when its slices lie in several sub-folders (a CD export that
    caps the files per folder): read as parts, each part gave its own partial volume."""
    uid, directory, _ = series[0]
    others = [str(d) for other, d, _ in series[1:] if other == uid and d != directory]
    if others:
        raise CovsegError(f"{folder}: series {uid} is in the folders {directory} and "
                          f"{', '.join(others)}; put all its slices in one folder, or keep one "
                          "copy if these are copies of it")


IDENTITY_TAGS = ("PatientID", "StudyInstanceUID", "StudyDate", "SeriesNumber", "SeriesDescription")
"""The header fields that say whose study a series is, and which series."""
SAMPLED_TAGS = ("SeriesInstanceUID", "PatientID", "StudyInstanceUID")
"""What :func:`sampled_series_uids` and :func:`holds_several_studies` look at."""


def _identity(path: Path, tags: Sequence[str] = IDENTITY_TAGS) -> dict[str, str]:
    """``tags`` of one DICOM file as stripped strings ("" when absent or unreadable)."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                  specific_tags=list(tags))
    except DICOM_ERRORS:
        return dict.fromkeys(tags, "")
    return {tag: str(dataset.get(tag, "") or "").strip() for tag in tags}


def _header_datasets(files: Sequence[str]) -> list[pydicom.Dataset | None]:
    """Each file's :data:`SERIES_TAGS`, read once for the series' record, its checks and its
    image numbers (read apart for each, every file was parsed three times); None for a file
    pydicom cannot parse (:func:`read_slice_header` says why if its series is read)."""
    datasets: list[pydicom.Dataset | None] = []
    for name in files:
        try:
            datasets.append(pydicom.dcmread(name, stop_before_pixels=True, force=True,
                                            specific_tags=list(SERIES_TAGS)))
        except (*DICOM_ERRORS, TypeError):
            datasets.append(None)
    return datasets


def _series_record(series: Series, datasets: Sequence[pydicom.Dataset | None]) -> DicomSeries:
    """A series as :class:`DicomSeries`: its identity, its images (NumberOfFrames summed over
    its files) and whether every file is a localizer (ImageType LOCALIZER); ``datasets``: its
    files' headers (:func:`_header_datasets`)."""
    uid, _, files = series
    tags = _identity(Path(files[0]))
    kinds = [_frames_and_kind(dataset) for dataset in datasets]
    return DicomSeries(uid, tags["SeriesNumber"], tags["SeriesDescription"], len(files),
                       sum(frames for frames, _ in kinds), all(scout for _, scout in kinds))


def _frames_and_kind(dataset: pydicom.Dataset | None) -> tuple[int, bool]:
    """A DICOM file's NumberOfFrames (1 when absent or unreadable) and whether its ImageType
    says LOCALIZER."""
    if dataset is None:
        return 1, False
    try:
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (*DICOM_ERRORS, TypeError):
        return 1, False
    return max(frames, 1), _is_localizer(dataset)


def _is_localizer(dataset: pydicom.Dataset) -> bool:
    """Whether a data set's ImageType names it a LOCALIZER: a scout (topogram)."""
    kind = dataset.get("ImageType") or []
    values = [kind] if isinstance(kind, str) else list(kind)
    return any(str(value).strip().upper() == "LOCALIZER" for value in values)


def _image_numbers(datasets: Sequence[pydicom.Dataset | None]) -> tuple[int, ...] | None:
    """Each file's InstanceNumber, in order (``datasets``: :func:`_header_datasets`); None when
    one has none or two share one."""
    numbers = []
    for dataset in datasets:
        if dataset is None:
            return None
        try:
            numbers.append(int(dataset.get("InstanceNumber")))
        except (*DICOM_ERRORS, TypeError):
            return None
    return tuple(numbers) if len(set(numbers)) == len(numbers) else None


def _check_one_study(series: Sequence[Series], folder: Path) -> None:
    """Refuse series of several patients (PatientID) or studies (StudyInstanceUID) under one
    folder, a PACS or CD export: read as one study, the largest series was used and the other
    patient or study dropped with a warning naming series UIDs only. The message names each
    patient or study and the sub-folder that holds it, to give as an input of its own."""
    tags = [_identity(Path(files[0])) for _, _, files in series]
    patients = {t["PatientID"] for t in tags if t["PatientID"]}
    studies = {t["StudyInstanceUID"] for t in tags if t["StudyInstanceUID"]}
    if len(patients) < 2 and len(studies) < 2:
        return
    groups: dict[tuple[str, str], list[Path]] = {}
    names: dict[tuple[str, str], str] = {}
    dated = all(t["StudyDate"] for t in tags) and len({t["StudyDate"] for t in tags}) == len(
        {(t["PatientID"], t["StudyInstanceUID"]) for t in tags})
    for (_, directory, _), t in zip(series, tags, strict=True):
        key = (t["PatientID"], t["StudyInstanceUID"])
        groups.setdefault(key, []).append(directory)
        patient = f"patient {t['PatientID'] or '(no PatientID)'}"
        study = f"study {(t['StudyDate'] if dated else t['StudyInstanceUID']) or '(no UID)'}"
        of_patient = {u["StudyInstanceUID"] for u in tags if u["PatientID"] == t["PatientID"]}
        names[key] = (study if len(patients) < 2 else
                      f"{patient} {study}" if len(of_patient) > 1 else patient)
    places = {key: _own_folder(groups, key, folder) for key in groups}
    apart = all(not any(d.is_relative_to(place) for other, dirs in groups.items()
                        if other != key for d in dirs) for key, place in places.items())
    kind = f"{len(patients)} patients" if len(patients) > 1 else f"{len(groups)} studies"
    where = "; ".join(f"{names[key]} in {_relative(place, folder)}"
                      for key, place in sorted(places.items(), key=lambda item: str(item[1])))
    advice = (_give_apart(set(places.values())) if apart else
              "put each one's files in a folder of its own and give each folder")
    raise CovsegError(f"{folder}: holds DICOM series of {kind} ({where}), not one CT; {advice}")


def _give_apart(places: set[Path]) -> str:
    """How to give folders that each hold one patient's or study's series: their common
    folder, whose sub-folders ``covseg predict`` reads as studies when it holds no DICOM slice
    of its own (a DICOMDIR apart), else each one."""
    parents = {place.parent for place in places}
    parent = parents.pop()
    if parents or any(is_dicom_file(c) and not is_dicomdir(c) for c in parent.iterdir()):
        return "give each of those folders as an input of its own"
    return f"give {parent} to read each of its sub-folders as a study"


def _own_folder(groups: dict[tuple[str, str], list[Path]], key: tuple[str, str],
                folder: Path) -> Path:
    """The highest folder under ``folder`` holding the series of ``groups[key]`` and no other
    group's (a CD export's patient folder, PT000000, not its series folder); their common
    folder when that holds others' too."""
    others = [d for other, dirs in groups.items() if other != key for d in dirs]
    place = Path(os.path.commonpath(groups[key]))
    while (place != folder and place.parent != folder
           and not any(d.is_relative_to(place.parent) for d in others)):
        place = place.parent
    return place


def _relative(place: Path, folder: Path) -> str:
    """``place`` under ``folder`` as a user gives it, or "FOLDER itself"."""
    return str(place) if place != folder else f"{folder} itself"


def _check_all_read(uid: str, directory: Path, files: Sequence[str]) -> None:
    """Refuse a series when a file beside its slices that was meant as one (:func:`_meant_as_slice`)
    could not be parsed by GDCM: empty or truncated (an interrupted copy) or corrupt. GDCM left
    it out without a word, so the series lost an end slice unseen, or a middle one was reported
    as a gap. Files of other series, and a DICOMDIR, are passed over."""
    listed = {Path(name).name for name in files}
    patterns = {_name_pattern(name) for name in listed if _unsuffixed(Path(name))}
    for path in sorted(directory.iterdir()):
        if path.name in listed or not _meant_as_slice(path, patterns):
            continue
        problem = _unreadable_slice(path, uid)
        if problem:
            raise CovsegError(f"{path}: {problem}; replace it, or remove it to read the series "
                              "without it")


def _meant_as_slice(path: Path, patterns: set[str]) -> bool:
    """Whether a file beside a series' slices looks meant as DICOM: a DICOM file by suffix or
    content (:func:`is_dicom_file`), or a file without a suffix named as the slices without
    one are (``patterns``: ``IM0030`` beside ``IM0001``..., a UID beside UIDs), which empty or
    cut short is neither."""
    if is_dicom_file(path):
        return True
    return (path.is_file() and not path.name.startswith(".") and _unsuffixed(path)
            and _name_pattern(path.name) in patterns)


def _name_pattern(name: str) -> str:
    """A file name without its digits and dots: ``IM0001`` and ``IM0030`` both give ``IM``."""
    return "".join(c for c in name if not c.isdigit() and c != ".")


def _unreadable_slice(path: Path, uid: str) -> str:
    """Why a file left out of series ``uid`` is a slice of it that cannot be read, or "" when it
    is not one (a file of another series, a DICOMDIR)."""
    if path.stat().st_size == 0:
        return "an empty file (0 bytes) among the slices of a series (an interrupted copy?)"
    cut = "truncated or corrupt: its DICOM header cannot be read (an interrupted copy?)"
    try:
        with warnings.catch_warnings():  # pydicom's about values cut short: said here
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                      specific_tags=["SeriesInstanceUID", "Rows"])
            series = str(dataset.get("SeriesInstanceUID", "") or "").strip()
            index = _is_dicomdir_header(dataset)
    except DICOM_ERRORS:
        return cut
    if series == uid:
        return (f"a slice of series {uid} that cannot be read (truncated or corrupt?)"
                if "Rows" in dataset else cut)
    if series and not (uid.startswith(series) and "Rows" not in dataset):  # a UID cut short
        return ""
    return "" if index else cut


def sampled_series_uids(folder: Path) -> set[str]:
    """The SeriesInstanceUID of the first DICOM file (by name) in ``folder`` and in each of its
    sub-folders: a cheap look at which series a folder holds (one header per folder)."""
    return {tags["SeriesInstanceUID"] for tags in _sampled(folder) if tags["SeriesInstanceUID"]}


def holds_several_studies(folder: Path) -> bool:
    """Whether the DICOM files under ``folder`` are of several patients (PatientID) or studies
    (StudyInstanceUID), by the first file of each folder (a CD export's DICOMDIR has
    neither)."""
    sampled = list(_sampled(folder))
    return any(len({tags[tag] for tags in sampled if tags[tag]}) > 1
               for tag in ("PatientID", "StudyInstanceUID"))


def _sampled(folder: Path) -> Iterator[dict[str, str]]:
    """The series, patient and study of the first DICOM file (by name) of ``folder`` and of
    each of its sub-folders, a DICOMDIR passed over: at an export's root it sorts first and
    names no series, so copies of one series under two export roots went unseen."""
    for directory, _, names in os.walk(folder):
        path = next((Path(directory, n) for n in sorted(names)
                     if is_dicom_file(Path(directory, n)) and not is_dicomdir(Path(directory, n))),
                    None)
        if path is not None:
            yield _identity(path, SAMPLED_TAGS)


PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def holds_no_ct_image(folder: Path) -> str:
    """What the DICOM files under ``folder`` hold when none is a CT image: localizer (scout)
    images, or objects without pixels (a dose report's SR, key objects, presentation states,
    encapsulated PDFs), as "localizer (scout) images" or "SR objects without pixels"; "" when
    one is an image other than a localizer, or none is DICOM. Stops at the first CT image (a
    series' first file)."""
    kinds: set[str] = set()
    for directory, _, names in os.walk(folder):
        for name in sorted(names):
            path = Path(directory, name)
            if not is_dicom_file(path) or is_dicomdir(path):
                continue
            kind = _non_ct_kind(path)
            if not kind:
                return ""
            kinds.add(kind)
    held = ["localizer (scout) images"] if "LOCALIZER" in kinds else []
    without = sorted(kinds - {"LOCALIZER"})
    if without:
        held.append(f"{', '.join(without)} objects without pixels")
    return " and ".join(held)


def _non_ct_kind(path: Path) -> str:
    """"LOCALIZER" for a scout image, the Modality of a file without pixels whose Modality is
    not CT (SR, KO, PR, DOC), "" for any other (a CT slice or volume, a CT slice that lost its
    pixels, or a file that cannot be read: the reader names it)."""
    try:
        dataset = pydicom.dcmread(path, force=True, defer_size=1024,
                                  specific_tags=["ImageType", "Modality", *PIXEL_TAGS])
    except DICOM_ERRORS:
        return ""
    if not any(tag in dataset for tag in PIXEL_TAGS):
        modality = str(dataset.get("Modality", "") or "").strip().upper()
        return modality if modality not in ("", "CT") else ""
    return "LOCALIZER" if _is_localizer(dataset) else ""


def slice_series_uid(path: Path) -> str:
    """The SeriesInstanceUID of a DICOM file of one slice; "" for a multi-frame file (a volume
    of its own), or one without it or unreadable."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                  specific_tags=["SeriesInstanceUID", "NumberOfFrames"])
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (*DICOM_ERRORS, TypeError):
        return ""
    return str(dataset.get("SeriesInstanceUID", "") or "").strip() if frames == 1 else ""


def read_dicom_file(path: str | os.PathLike[str], source: str | None = None) -> Volume:
    """Read one DICOM file: a single slice becomes a 1-slice volume, multi-frame a volume (an
    enhanced file's geometry checked frame by frame from its functional groups). ``source``:
    how to name it (the folder it was found in)."""
    path = Path(path)
    source = source or str(path)
    frames = read_frame_headers(path)
    check_dicom_series(frames, source)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    image = _read_itk(reader, frames[0], f"{source}: cannot read DICOM {path.name}")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if (any(frame.photometric == "MONOCHROME1" for frame in frames)
            or len({frame.rescale for frame in frames}) > 1):
        image = _stored_in_hu(image, [str(path)], frames, source)
    if len(frames) > 1:
        _check_frame_places(image, frames, source)
    elif frames[0].frames > 1:
        image = _with_frame_step(image, frames[0], source)
    image = _padding_as_air(image, frames)
    return volume_from_itk(_with_slice_thickness(image, frames[0], source), source)


def _read_itk(reader: sitk.ImageReaderBase, header: SliceHeader, what: str) -> sitk.Image:
    """Run a SimpleITK reader with the C libraries' console output kept quiet (OpenJPEG prints
    dozens of lines for one undecodable file); a failure is one line that names the transfer
    syntax when the pixels are compressed."""
    try:
        with _quiet_libraries():
            return reader.Execute()
    except RuntimeError as exc:
        raise CovsegError(f"{what} ({_itk_message(exc)}){_syntax_hint(header)}") from None


def _syntax_hint(header: SliceHeader) -> str:
    """Why compressed pixels may not have been read, and what to do."""
    if not header.transfer_syntax:
        return ""
    syntax = pydicom.uid.UID(header.transfer_syntax)
    try:
        compressed = syntax.is_compressed
    except ValueError:  # a private or unknown transfer syntax: named as well
        compressed = True
    if not compressed:
        return ""
    named = (f"{syntax.name} ({syntax})" if syntax.name != str(syntax)
             else f"transfer syntax {syntax}")
    return (f"; its pixels are compressed as {named}, which this SimpleITK/GDCM may not "
            "decode: decompress the files first, e.g. with gdcmconv --raw")


_QUIET_LOCK = threading.Lock()
_quiet_state: dict[str, Any] = {"depth": 0, "saved_fd": -1, "warnings_shown": True}
"""Readers inside :func:`_quiet_libraries` (threads, or nested calls): the first one in sends
stderr away and the last one out restores it, so that interleaved readers never save each
other's null device as the stream to restore (which silenced the process for good)."""


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """ITK warnings off and the process's stderr (file descriptor 2, where the C libraries
    print) sent to the null device meanwhile; covseg reports what went wrong in one line."""
    with _QUIET_LOCK:
        if _quiet_state["depth"] == 0:
            _quiet_state["warnings_shown"] = sitk.ProcessObject.GetGlobalWarningDisplay()
            sitk.ProcessObject.SetGlobalWarningDisplay(False)
            _quiet_state["saved_fd"] = _stderr_to_null()
        _quiet_state["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet_state["depth"] -= 1
            if _quiet_state["depth"] == 0:
                if _quiet_state["saved_fd"] >= 0:
                    os.dup2(_quiet_state["saved_fd"], 2)
                    os.close(_quiet_state["saved_fd"])
                sitk.ProcessObject.SetGlobalWarningDisplay(_quiet_state["warnings_shown"])


def _stderr_to_null() -> int:
    """Send file descriptor 2 to the null device; return a copy of what it was, or -1 for a
    process without one (pythonw, a closed stderr), where there is nothing to keep quiet."""
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        return -1
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
    return saved


def _stored_in_hu(image: sitk.Image, files: Sequence[str], headers: Sequence[SliceHeader],
                  source: str) -> sitk.Image:
    """The image read again in HU from the files' stored values and their headers' Modality LUT
    (RescaleSlope and RescaleIntercept; a header per file, or per frame of an enhanced file).

    GDCM inverts MONOCHROME1 pixels for display, so a CT came out as -2128..-1010 "HU" (no lungs
    found, the body read as lesion), and it applies the first frame's rescale to every frame of
    an enhanced file, which put later frames tens of HU off.
    """
    stored = np.concatenate([_stored_frames(Path(name), source) for name in files])
    if stored.shape != sitk.GetArrayViewFromImage(image).shape or len(stored) % len(headers):
        raise CovsegError(f"{source}: stored pixels of shape {stored.shape} do not fit the "
                          "volume SimpleITK read; convert the study to NIfTI, e.g. with dcm2niix")
    for planes, header in zip(np.split(stored, len(headers)), headers, strict=True):
        slope, intercept = header.rescale or (1.0, 0.0)
        planes *= slope
        planes += intercept
    out = sitk.GetImageFromArray(stored)
    out.CopyInformation(image)
    return out


def _padding_as_air(image: sitk.Image, headers: Sequence[SliceHeader]) -> sitk.Image:
    """The image (in HU) with its padding pixels (:attr:`SliceHeader.padding`) set to air,
    :data:`~covseg.transforms.AIR_HU`, as padding below air is read (README): neither GDCM nor
    pydicom applies PixelPaddingValue, so unsigned padding 63536 with RescaleIntercept -1024 was
    read as 62,512 HU, a bright ring whose air gap to the body became lung and lesion. A slice's
    padding is found through its own Modality LUT; ``headers``: one per slice, or one for all
    the frames of a multi-frame file."""
    if all(header.padding is None for header in headers):
        return image
    view = sitk.GetArrayViewFromImage(image)
    out = np.empty(view.shape, dtype=np.float32)
    for k, plane in enumerate(view):
        out[k] = plane
        band = _padding_hu(headers[k * len(headers) // len(view)])
        if band is not None:
            out[k][(out[k] >= band[0]) & (out[k] <= band[1])] = AIR_HU
    padded = sitk.GetImageFromArray(out)
    padded.CopyInformation(image)
    return padded


def _padding_hu(header: SliceHeader) -> tuple[float, float] | None:
    """The HU range a slice's padding reads as through its Modality LUT, widened by half a
    stored step (stored values are integers, so no other value falls in it)."""
    if header.padding is None:
        return None
    slope, intercept = header.rescale or (1.0, 0.0)
    low, high = sorted(slope * value + intercept for value in header.padding)
    margin = abs(slope) / 2
    return low - margin, high + margin


def _stored_frames(path: Path, source: str) -> np.ndarray:
    """A DICOM file's stored pixel values (no Modality LUT, no inversion), as (frames, rows,
    columns) float32."""
    try:
        stored = pydicom.dcmread(path).pixel_array
    except (*DICOM_ERRORS, AttributeError, NotImplementedError, RuntimeError) as exc:
        raise CovsegError(f"{source}: cannot read the stored pixels of {path.name}, needed to put "
                          f"them in HU ({_one_line(exc)}); convert the study to NIfTI, e.g. with "
                          "dcm2niix") from None
    return np.asarray(stored, dtype=np.float32).reshape(-1, *stored.shape[-2:])


def _check_frame_places(image: sitk.Image, frames: Sequence[SliceHeader], source: str) -> None:
    """Refuse an enhanced file whose frames SimpleITK puts elsewhere than their functional
    groups' ImagePositionPatient (frames stored out of order): masks would lie on other
    slices."""
    if image.GetSize()[2] != len(frames):
        raise CovsegError(f"{source}: SimpleITK read {image.GetSize()[2]} frames of "
                          f"{len(frames)}; convert the file to a series of slices, e.g. with "
                          "dcm2niix")
    allowed = _allowed_offset(min(image.GetSpacing()))
    for k, frame in enumerate(frames):
        place = np.asarray(image.TransformIndexToPhysicalPoint((0, 0, k)))
        off = float(np.linalg.norm(place - np.asarray(frame.position)))
        if off > allowed:
            raise CovsegError(f"{source}: SimpleITK places {frame.name} {off:.3g} mm from its "
                              "ImagePositionPatient (frames out of order?); convert the file "
                              "to a series of slices, e.g. with dcm2niix")


def _with_frame_step(image: sitk.Image, header: SliceHeader, source: str) -> sitk.Image:
    """A multi-frame file without per-frame positions given its frame step as z spacing:
    SpacingBetweenSlices, else SliceThickness with a warning (SimpleITK took 1 mm, so volumes in
    mL were off by the thickness)."""
    if header.step is not None:
        step = header.step
    elif header.thickness is not None:
        step = header.thickness
        log.warning("%s: %d frames without SpacingBetweenSlices; taken as %g mm apart, their "
                    "SliceThickness (volumes in mL scale with it)", source, header.frames, step)
    else:
        log.warning("%s: %d frames without SpacingBetweenSlices or SliceThickness; taken as "
                    "1 mm apart (volumes in mL scale with it)", source, header.frames)
        return image
    image.SetSpacing((*image.GetSpacing()[:2], step))
    return image


SLICE_TOLERANCE = 0.1
"""How far, as a fraction of a voxel, a slice may lie from its place on the regular grid
SimpleITK reads it on (along the slice normal a tenth of the slice step, in-plane a tenth of a
pixel), and at least :data:`POSITION_ROUNDING_MM`: a mask then lies within a tenth of a voxel
of its slice, while a missing slice moves slices by half a step or more and a 1 degree gantry
tilt moves 2.5 mm slices 0.04 mm per slice (a pixel in 15 slices). Pixel spacings and
orientations are compared at 0.1 % (a 0.2 % volume error)."""
POSITION_ROUNDING_MM = 0.1
"""Positions written to 0.1 mm (the coarsest seen) put a slice up to 0.05 mm off, so up to
0.1 mm off the grid through the first and last slices: far below any CT voxel."""
DUPLICATE_MM = 0.01
"""Slices closer than this along the normal are copies: no CT reconstructs slices so close."""
SLICE_TAGS = ("Modality", "Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
              "ImageOrientationPatient", "SliceThickness", "SpacingBetweenSlices",
              "PhotometricInterpretation", "NumberOfFrames", "SharedFunctionalGroupsSequence",
              "PerFrameFunctionalGroupsSequence", "RescaleSlope", "RescaleIntercept",
              "PixelPaddingValue", "PixelPaddingRangeLimit", "PixelRepresentation")
"""The header fields :func:`read_slice_header` reads (no pixels: 0.2 s for 1,000 cached files)."""
SERIES_TAGS = (*SLICE_TAGS, "ImageType", "InstanceNumber")
"""The header fields read once per file of a folder's series (:func:`_header_datasets`)."""
FRAME_GROUPS = ("PixelMeasuresSequence", "PlaneOrientationSequence", "PlanePositionSequence",
                "PixelValueTransformationSequence")
"""The functional groups where an enhanced multi-frame file keeps its frames' geometry and
rescale."""
GEOMETRY_KEYWORDS = ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
                     "SliceThickness", "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept")
"""The geometry and rescale fields :func:`_slice_header` reads, at the top level or in the
groups."""
DICOM_ERRORS = (pydicom.errors.InvalidDicomError, pydicom.errors.BytesLengthException, OSError,
                EOFError, ValueError, struct.error)
"""What pydicom raises for files it cannot parse (BytesLengthException, struct.error: a value or
a length cut short)."""


@dataclass(frozen=True)
class SliceHeader:
    """The header fields of one DICOM file (or one frame of an enhanced multi-frame file) that
    fix where its voxels lie and how they are read (None: absent)."""

    name: str
    modality: str
    size: tuple[float, ...] | None
    """(rows, columns)."""
    pixel_spacing: tuple[float, ...] | None
    position: tuple[float, ...] | None
    """ImagePositionPatient: the first voxel's centre, LPS mm."""
    orientation: tuple[float, ...] | None
    """ImageOrientationPatient: the row and column directions, LPS."""
    thickness: float | None
    """SliceThickness, else SpacingBetweenSlices: a lone slice's size along its normal."""
    step: float | None = None
    """SpacingBetweenSlices: a multi-frame file's frame step."""
    frames: int = 1
    """NumberOfFrames."""
    photometric: str = ""
    """PhotometricInterpretation (MONOCHROME1 pixels are read again: :func:`_stored_in_hu`)."""
    transfer_syntax: str = ""
    rescale: tuple[float, ...] | None = None
    """(RescaleSlope, RescaleIntercept): the Modality LUT to HU (a missing one of the two read
    as GDCM reads it, 1 or 0); None when both are absent."""
    padding: tuple[float, float] | None = None
    """The lowest and highest stored values that are padding, no data (PixelPaddingValue,
    through PixelPaddingRangeLimit where given): read as air (:func:`_padding_as_air`)."""


def read_slice_header(path: Path) -> SliceHeader:
    """The geometry fields of one DICOM file, read without its pixels (an enhanced multi-frame
    file's first frame: :func:`read_frame_headers`).

    ``force``: files SimpleITK reads without the DICM preamble are read too; a file that is not
    DICOM gives an empty header here and SimpleITK's own error when it is read.
    """
    return read_frame_headers(path)[0]


def read_frame_headers(path: Path) -> list[SliceHeader]:
    """One header per frame of an enhanced multi-frame file (Enhanced CT, which current
    scanners export, keeps pixel spacing, orientation and positions in its shared and per-frame
    functional groups, not at the top level), else the file's one."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                  specific_tags=list(SLICE_TAGS))
    except DICOM_ERRORS as exc:
        raise CovsegError(f"{path}: cannot read the DICOM header ({_one_line(exc)})") from None
    return _frame_headers(dataset, path)


def _frame_headers(dataset: pydicom.Dataset, path: Path) -> list[SliceHeader]:
    """:func:`read_frame_headers` of a file whose header fields were read (``dataset``)."""
    _refuse_dicomdir(dataset, path)
    shared = _first_item(dataset, "SharedFunctionalGroupsSequence")
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence") or [])
    if shared is None and not per_frame:
        return [_slice_header(dataset, dataset, path.name)]
    return [_slice_header(dataset, _frame_geometry(dataset, shared, item),
                          f"{path.name} frame {k + 1}")
            for k, item in enumerate(per_frame or [None])]


def _refuse_dicomdir(dataset: pydicom.Dataset, path: Path) -> None:
    """Refuse a DICOMDIR (Media Storage Directory, the index of a CD or USB export, which users
    open first) in one line that says to give its folder: it was refused for "no PixelSpacing",
    which sent them looking for another series."""
    if not _is_dicomdir_header(dataset):
        return
    folder = path.parent if path.parent.name else path.absolute().parent
    raise CovsegError(f"{path}: a DICOMDIR, the index of a DICOM export, not an image; give "
                      f"its folder {folder} to read the series it lists")


def _is_dicomdir_header(dataset: pydicom.Dataset) -> bool:
    """Whether a read DICOM header is a DICOMDIR's (Media Storage Directory in its file meta);
    :func:`is_dicomdir` tells one by its name, without reading it."""
    meta = getattr(dataset, "file_meta", None) or {}
    return meta.get("MediaStorageSOPClassUID") == pydicom.uid.MediaStorageDirectoryStorage


def _first_item(dataset: pydicom.Dataset | None, keyword: str) -> pydicom.Dataset | None:
    """The first item of a sequence, or None."""
    sequence = dataset.get(keyword) if dataset is not None else None
    return sequence[0] if sequence else None


def _frame_geometry(dataset: pydicom.Dataset, shared: pydicom.Dataset | None,
                    frame: pydicom.Dataset | None) -> pydicom.Dataset:
    """A frame's geometry fields in one data set: the frame's own :data:`FRAME_GROUPS` over the
    shared ones over the file's top-level fields (a single-frame file may carry functional
    groups without geometry in them, its geometry at the top level)."""
    geometry = pydicom.Dataset()
    for element in dataset:
        if element.keyword in GEOMETRY_KEYWORDS:
            geometry[element.tag] = element
    for groups in (shared, frame):
        for keyword in FRAME_GROUPS:
            item = _first_item(groups, keyword)
            for element in item or ():
                geometry[element.tag] = element
    return geometry


def _slice_header(dataset: pydicom.Dataset, geometry: pydicom.Dataset, name: str) -> SliceHeader:
    """A :class:`SliceHeader` from a file's top-level fields and its (frame's) geometry."""
    step = _numbers(geometry, "SpacingBetweenSlices", 1)
    thicknesses = (_numbers(geometry, "SliceThickness", 1), step)
    frames = _numbers(dataset, "NumberOfFrames", 1)
    meta = getattr(dataset, "file_meta", None)
    return SliceHeader(
        name=name,
        modality=str(dataset.get("Modality", "") or "").strip().upper(),
        size=_numbers(dataset, ("Rows", "Columns"), 2),
        pixel_spacing=_numbers(geometry, "PixelSpacing", 2),
        position=_numbers(geometry, "ImagePositionPatient", 3),
        orientation=_numbers(geometry, "ImageOrientationPatient", 6),
        thickness=next((t[0] for t in thicknesses if t and t[0] > 0), None),
        step=step[0] if step and step[0] > 0 else None,
        frames=int(frames[0]) if frames and frames[0] >= 1 else 1,
        photometric=str(dataset.get("PhotometricInterpretation", "") or "").strip().upper(),
        transfer_syntax=str(meta.get("TransferSyntaxUID", "") if meta is not None else ""),
        rescale=_rescale(geometry),
        padding=_padding(dataset),
    )


def _rescale(geometry: pydicom.Dataset) -> tuple[float, float] | None:
    """(RescaleSlope, RescaleIntercept), one of them absent taken as GDCM takes it (slope 1,
    intercept 0); None when both are absent."""
    slope = _numbers(geometry, "RescaleSlope", 1)
    intercept = _numbers(geometry, "RescaleIntercept", 1)
    if slope is None and intercept is None:
        return None
    return slope[0] if slope else 1.0, intercept[0] if intercept else 0.0


def _padding(dataset: pydicom.Dataset) -> tuple[float, float] | None:
    """The stored values from PixelPaddingValue through PixelPaddingRangeLimit (the value alone
    without a limit), in the pixels' own sign (PixelRepresentation): a file may write 16-bit
    padding in the other VR, 63536 as US over signed pixels where it stores -2000."""
    value = _numbers(dataset, "PixelPaddingValue", 1)
    if value is None:
        return None
    limit = _numbers(dataset, "PixelPaddingRangeLimit", 1) or value
    signed = dataset.get("PixelRepresentation") == 1
    ends = [v - 65536 if signed and v >= 32768 else v + 65536 if not signed and v < 0 else v
            for v in (value[0], limit[0])]
    return min(ends), max(ends)


def _numbers(dataset: pydicom.Dataset, keywords: str | tuple[str, ...],
             count: int) -> tuple[float, ...] | None:
    """``count`` finite numbers from one multi-valued field or several single ones (None when
    absent, empty or malformed)."""
    try:
        if isinstance(keywords, str):
            value = dataset.get(keywords)
            values = [value] if count == 1 else list(value or [])
        else:
            values = [dataset.get(keyword) for keyword in keywords]
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and np.isfinite(numbers).all() else None


def check_dicom_series(headers: Sequence[SliceHeader], source: str) -> None:
    """Refuse, in one line, a series that SimpleITK would read into a wrong grid without a word:
    not CT, a Modality LUT on some slices only, no pixel spacing, slices of different sizes,
    pixel spacings or orientations, or positions off a regular grid along the slice normal
    (missing or duplicate slices, a gantry tilt). SimpleITK
    spaces slices evenly at their mean distance, shears nothing and takes the first slice's
    pixel spacing for all, so volumes in mL and mask positions came out wrong."""
    _check_modality(headers, source)
    _check_rescaled_alike(headers, source)
    if all(h.pixel_spacing is None for h in headers):  # SimpleITK would take 1 mm
        raise CovsegError(f"{source}: no PixelSpacing in the DICOM header, so the pixel size "
                          "and every volume in mL are unknown; give a series with it, or a "
                          "NIfTI file with its voxel sizes")
    _check_alike(headers, "size", 0.0, source, "slices differ in size (rows x columns ",
                 "give a series whose slices are all one size")
    _check_alike(headers, "pixel_spacing", 1e-3, source, "pixel spacing differs between "
                 "slices (", "give a series of one pixel spacing, or resample it", " mm")
    _check_alike(headers, "orientation", 1e-3, source, "slice orientations differ "
                 "(ImageOrientationPatient ", "give a series of parallel slices")
    if len(headers) > 1:
        _check_positions(headers, source)


def _check_modality(headers: Sequence[SliceHeader], source: str) -> None:
    """Refuse a series whose Modality tag says it is not CT (no tag: taken as CT): other
    modalities' values are not Hounsfield units, whatever their range looks like."""
    other = next((h.modality for h in headers if h.modality not in ("", "CT")), None)
    if other is not None:
        raise CovsegError(f"{source}: Modality {other}, expected CT; covseg segments CT scans")


def _check_rescaled_alike(headers: Sequence[SliceHeader], source: str) -> None:
    """Refuse a series in which some slices have a Modality LUT (RescaleSlope, RescaleIntercept;
    Type 1 in CT) and others none: GDCM reads the latter's stored values as HU, 1024 HU off
    for the usual intercept, without a word (a broken anonymiser's or converter's slice)."""
    without = [h.name for h in headers if h.rescale is None]
    rescaled = [h.name for h in headers if h.rescale is not None]
    if not without or not rescaled:
        return
    which = (f"{without[0]} has" if len(without) == 1
             else f"{len(without)} slices ({without[0]}, ...) have")
    raise CovsegError(f"{source}: {which} no RescaleSlope or RescaleIntercept while "
                      f"{len(rescaled)} other slice(s) of the series have them (e.g. "
                      f"{rescaled[0]}), so its stored values would be read as HU without their "
                      "rescale; restore the two tags, or remove the slice")


def _check_alike(headers: Sequence[SliceHeader], field: str, tolerance: float, source: str,
                 what: str, advice: str, unit: str = "") -> None:
    """Refuse slices whose ``field`` differs from the first slice's by more than ``tolerance``
    (relative and absolute)."""
    first = getattr(headers[0], field)
    for header in headers[1:]:
        value = getattr(header, field)
        if value == first or (value is not None and first is not None and np.allclose(
                value, first, rtol=tolerance, atol=tolerance)):
            continue
        raise CovsegError(f"{source}: {what}{_listed(first)}{unit} in {headers[0].name}, "
                          f"{_listed(value)}{unit} in {header.name}); {advice}")


def _listed(values: tuple[float, ...] | None) -> str:
    """Header numbers as a user reads them: "512 x 512", "0.625 x 0.625"; "none" if absent."""
    return "none" if values is None else " x ".join(f"{v:g}" for v in values)


def _check_positions(headers: Sequence[SliceHeader], source: str) -> None:
    """Refuse slices that are duplicated, unevenly spaced or not stacked along their normal."""
    if any(h.position is None or h.orientation is None for h in headers):
        raise CovsegError(f"{source}: some slices have no ImagePositionPatient or "
                          "ImageOrientationPatient, so their order and spacing are unknown; "
                          "give a series with them, or a NIfTI file")
    normal = _slice_normal(headers[0].orientation, source)
    positions = np.asarray([h.position for h in headers], dtype=np.float64)
    depths = positions @ normal
    order = np.argsort(depths, kind="stable")
    positions, depths = positions[order], depths[order]
    _check_duplicates(depths, [headers[i].name for i in order], source)
    _check_even(depths, source)
    _check_stacked(positions, depths, normal, headers[0].pixel_spacing, source)


def _slice_normal(orientation: tuple[float, ...] | None, source: str) -> np.ndarray:
    """The unit normal of slices with this ImageOrientationPatient (row x column direction)."""
    rows_columns = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    normal = np.cross(rows_columns[0], rows_columns[1])
    length = float(np.linalg.norm(normal))
    if length < 0.5:  # two unit directions at right angles give 1
        raise CovsegError(f"{source}: ImageOrientationPatient {_listed(orientation)} is not two "
                          "perpendicular directions; fix the series' headers")
    return normal / length


def _check_duplicates(depths: np.ndarray, names: Sequence[str], source: str) -> None:
    """Refuse two slices at one position: a copy read as a slice of its own."""
    same = np.flatnonzero(np.diff(depths) < DUPLICATE_MM)
    if same.size:
        k = int(same[0])
        raise CovsegError(f"{source}: {same.size} duplicate slice position(s) (e.g. {names[k]} "
                          f"and {names[k + 1]} both at {depths[k]:g} mm along the slice normal); "
                          "remove the copies, or put each series in its own folder")


def _check_even(depths: np.ndarray, source: str) -> None:
    """Refuse slices off the regular grid from the first slice to the last, which SimpleITK
    reads them on (:data:`SLICE_TOLERANCE`)."""
    step = (depths[-1] - depths[0]) / (len(depths) - 1)
    grid = depths[0] + step * np.arange(len(depths))
    if np.abs(depths - grid).max() <= _allowed_offset(step):
        return
    gaps = np.diff(depths)
    alike = np.abs(gaps[:, None] - gaps[None, :]) <= _allowed_offset(step)
    common = int(np.argmax(alike.sum(axis=1)))
    if 2 * int(alike[common].sum()) > len(gaps):  # most gaps are one step: name the odd one
        typical = float(np.median(gaps[alike[common]]))
        odd = float(gaps[np.argmax(np.abs(gaps - typical))])
        found = f"a gap of {odd:.3g} mm among {typical:.3g} mm"
    else:  # no step most gaps share (a short series): name the gaps
        typical, odd = float(gaps.min()), float(gaps.max())
        shown = list(dict.fromkeys(f"{gap:.3g}" for gap in np.sort(gaps)))
        found = f"gaps of {', '.join(shown[:-1])} and {shown[-1]} mm"
    hint = " (a missing slice?)" if odd > 1.5 * typical else ""
    raise CovsegError(f"{source}: slice positions are uneven: {found}{hint}; give a complete "
                      "series or resample it")


def _allowed_offset(voxel_mm: float) -> float:
    """How far in mm a slice may lie off its place along an axis of ``voxel_mm`` voxels."""
    return max(SLICE_TOLERANCE * voxel_mm, POSITION_ROUNDING_MM)


def _check_stacked(positions: np.ndarray, depths: np.ndarray, normal: np.ndarray,
                   pixel_spacing: tuple[float, ...] | None, source: str) -> None:
    """Refuse slices that shift in-plane (a gantry tilt; :data:`SLICE_TOLERANCE`): SimpleITK
    stacks them straight, with the tilted distance as z spacing."""
    travel = depths - depths[0]
    shifts = np.linalg.norm(positions - positions[0] - np.outer(travel, normal), axis=1)
    k = int(np.argmax(shifts))
    if shifts[k] <= _allowed_offset(min(pixel_spacing or (1.0,))):
        return
    angle = float(np.degrees(np.arctan2(shifts[k], travel[k])))
    raise CovsegError(f"{source}: slice positions shift {shifts[k]:.3g} mm in-plane over "
                      f"{travel[k]:.3g} mm instead of advancing along the slice normal (a "
                      f"{angle:.2g} degree gantry tilt?); resample it first, e.g. convert it "
                      "with dcm2niix, which corrects tilt")


def _with_slice_thickness(image: sitk.Image, header: SliceHeader, source: str) -> sitk.Image:
    """A one-slice image given its slice thickness as z spacing: SimpleITK gives it 1 mm, so
    volumes in mL were off by the thickness (a 2.5 mm slice 2.5 times low)."""
    if image.GetDimension() != 3 or image.GetSize()[2] != 1:
        return image
    if header.thickness is None:
        log.warning("%s: one slice without SliceThickness or SpacingBetweenSlices; taken as "
                    "1 mm thick (volumes in mL scale with it)", source)
        return image
    image.SetSpacing((*image.GetSpacing()[:2], header.thickness))
    return image


def _one_line(exc: Exception) -> str:
    """An exception as one line: its type and its message with whitespace collapsed."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _itk_message(exc: Exception) -> str:
    """ITK errors span several lines; the last non-empty one says what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def volume_from_itk(image: sitk.Image, source: str) -> Volume:
    """SimpleITK image -> Volume with float32 (z, y, x) voxels and the equivalent RAS affine."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CovsegError(
            f"{source}: {image.GetNumberOfComponentsPerPixel()} values per pixel (RGB or "
            "complex); expected a greyscale CT"
        )
    if image.GetDimension() != 3:
        raise CovsegError(f"{source}: expected a 3D volume, got {image.GetDimension()}D")
    view = sitk.GetArrayViewFromImage(image)
    _check_stored_dtype(view.dtype, source)
    return as_axial(_float_volume(view, itk_affine(image), source))


def volume_from_array(array: np.ndarray, spacing: Sequence[float], source: str) -> Volume:
    """(z, y, x) voxels with their (z, y, x) spacing in mm and no other geometry: an axis-aligned
    grid taken in :data:`WORKING_AXES` order, as SimpleITK's ``GetArrayFromImage`` gives an axial
    DICOM series (so "right" and "left" lungs are only named by that guess)."""
    if not _three_positive_numbers(spacing):
        raise CovsegError(f"{source}: spacing must be three positive numbers (z, y, x) in mm, "
                          f"got {spacing!r}")
    z, y, x = (float(v) for v in spacing)
    return _float_volume(array, np.diag([-x, -y, z, 1.0]), source)


def _three_positive_numbers(spacing: object) -> bool:
    """Whether ``spacing`` is three finite positive numbers: a string such as "3,1,1" is not,
    nor are its characters."""
    if isinstance(spacing, str | bytes) or not isinstance(spacing, Sequence | np.ndarray):
        return False
    return len(spacing) == 3 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)
        and bool(np.isfinite(v)) and v > 0 for v in spacing)


def _float_volume(array: np.ndarray, affine: np.ndarray, source: str) -> Volume:
    """float32 (z, y, x) voxels plus a NIfTI header that carries ``affine`` (mm)."""
    if array.dtype.kind not in "biuf":
        raise CovsegError(f"{source}: voxels of type {array.dtype}; expected numbers")
    array = array.astype(np.float32)
    _check_finite(array, source)
    header = nib.Nifti1Header()
    header.set_data_shape(array.shape[::-1])
    header.set_data_dtype(np.float32)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    return Volume(array, affine, header, source)


def itk_affine(image: sitk.Image) -> np.ndarray:
    """4x4 RAS voxel-to-world affine of a 3D SimpleITK image (ITK works in LPS)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return affine


def write_mask_like(volume: Volume, labels: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write (z, y, x) integer labels as a uint8 NIfTI that overlays ``volume`` exactly."""
    labels = np.asarray(labels)
    _check_shape(volume, labels.shape, path)
    if labels.dtype.kind not in "biu":
        raise CovsegError(f"{path}: labels must be integers, got {labels.dtype}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 255):
        raise CovsegError(f"{path}: labels must lie in 0..255 to be written as uint8")
    data = labels.astype(np.uint8, copy=False)
    header = _derived_header(volume, np.uint8)
    header["cal_min"], header["cal_max"] = 0, int(data.max()) if data.size else 0
    return _save(volume, data.T, header, path)


def write_probabilities_like(volume: Volume, probabilities: np.ndarray,
                             path: str | os.PathLike[str]) -> Path:
    """Write float probabilities, (z, y, x) or (C, z, y, x), as float32 NIfTI on ``volume``'s grid.

    A (C, z, y, x) map becomes a 4D NIfTI (x, y, z, C). nibabel writes slice by slice, so a
    float16 memmap can be passed without loading it.
    """
    shape = probabilities.shape if probabilities.ndim == 3 else probabilities.shape[1:]
    _check_shape(volume, shape, path)
    if probabilities.dtype.kind != "f":
        raise CovsegError(f"{path}: probabilities must be floats, got {probabilities.dtype}")
    header = _derived_header(volume, np.float32)
    header["cal_min"], header["cal_max"] = 0.0, 1.0
    return _save(volume, probabilities.T, header, path)


def _check_shape(volume: Volume, shape: tuple[int, ...], path: str | os.PathLike[str]) -> None:
    if tuple(shape) != volume.array.shape:
        raise CovsegError(
            f"{path}: array shape {tuple(shape)} differs from the volume {volume.array.shape}"
        )


def _nifti1_copy(header: nib.Nifti1Header) -> nib.Nifti1Header:
    """A copy of a NIfTI-1 or NIfTI-2 header as NIfTI-1: a NIfTI-2 file's header, handed to
    nibabel as it was, made it print "sizeof_hdr should be 348; set sizeof_hdr to 348" amid
    the progress bar."""
    copy = nib.Nifti1Header.from_header(header, check=False)
    copy["sizeof_hdr"] = nib.Nifti1Header.sizeof_hdr
    return copy


def _derived_header(volume: Volume, dtype: type) -> nib.Nifti1Header:
    """A copy of the file's header (same qform/sform/zooms) as NIfTI-1 (:func:`_nifti1_copy`)
    with a new dtype and no scaling."""
    header = _nifti1_copy(volume.file_header)
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    header["descrip"] = b"covseg"
    return header


def _save(volume: Volume, data_xyz: np.ndarray, header: nib.Nifti1Header,
          path: str | os.PathLike[str]) -> Path:
    """Save atomically on the file's own axes; qform, sform and voxel sizes (pixdim) are copied
    field by field so that they match the input's, stale pixdim included: a reader that takes
    the voxel sizes from pixdim (SimpleITK, ITK-SNAP) puts the results on the input's grid.
    ``data_xyz``: (x, y, z[, C]) on the volume's axes."""
    if volume.stored is not None:
        data_xyz = volume.stored.to_file(data_xyz)
    source_header = volume.file_header
    header.set_data_shape(data_xyz.shape)
    image = nib.Nifti1Image(data_xyz, volume.file_affine, header)
    for key in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z"):
        image.header[key] = source_header[key]
    image.header["pixdim"][:4] = source_header["pixdim"][:4]
    image.header["pixdim"][4:data_xyz.ndim + 1] = 1.0
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise CovsegError(f"{path}: output must end in .nii or .nii.gz")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return path


def display_flips(affine: np.ndarray | None) -> tuple[bool, bool]:
    """(flip rows, flip columns) to show an axial slice radiologically: anterior up, patient
    right on the image left; no flips without an affine."""
    if affine is None:
        return False, False
    return bool(affine[1, 1] > 0), bool(affine[0, 0] > 0)


def orient_for_display(plane: np.ndarray, flips: tuple[bool, bool]) -> np.ndarray:
    """A (rows, columns) slice flipped as :func:`display_flips` says (a view, not a copy)."""
    if flips[0]:
        plane = plane[::-1]
    if flips[1]:
        plane = plane[:, ::-1]
    return plane
