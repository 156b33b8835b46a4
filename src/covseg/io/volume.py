"""CT volumes as (z, y, x) arrays with the geometry to write results back: the Volume record and
what every format shares (grid checks, reorientation, Hounsfield unit detection, the NIfTI
writers). Files are read by :mod:`covseg.io.nifti`, :mod:`covseg.io.itk` and
:mod:`covseg.io.dicom`, and a CT from whatever the user gives by
:func:`covseg.io.ct.read_volume`.

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

import logging
import math
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from covseg.errors import CovsegError, OutOfMemory, byte_size, counted
from covseg.io.atomic import atomic_path
from covseg.io.image import CT_SLICES, MIN_SLICE_SIDE, Slices, label_levels, refuse_tiny_slice
from covseg.provenance import option_given, option_name
from covseg.transforms import (
    AIR_LIMIT_HU,
    LUNG_WINDOW,
    grey_outside_lung_window,
    grey_scale,
    holds_grey_only,
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
METAIMAGE_SUFFIXES = (".mha", ".mhd")
"""MetaImage, as ITK saves volumes (a ``.mhd`` header names its data file)."""
NRRD_SUFFIXES = (".nrrd", ".nhdr")
"""NRRD, as 3D Slicer saves volumes, label maps and segmentations (``.seg.nrrd``)."""
ITK_SUFFIXES = (*NRRD_SUFFIXES, *METAIMAGE_SUFFIXES)
"""NRRD and MetaImage, as 3D Slicer and ITK save volumes (:mod:`covseg.io.itk`)."""
HEADER_BYTES = 65536
"""Bytes of a NRRD or MetaImage file read for its header (headers are a few hundred)."""
BLANK_LINE = re.compile(r"\r?\n\r?\n")
"""The blank line ending a NRRD's header (Unix or Windows line endings)."""
GEOMETRY = re.compile(r"^(?:(?:space directions|spacings|space origin|axis mins)\s*:|(?:Element"
                      r"Spacing|ElementSize|Offset|Origin|Position|TransformMatrix|Rotation|"
                      r"Orientation|AnatomicalOrientation)\s*=)", re.IGNORECASE | re.MULTILINE)
"""A NRRD's or MetaImage's line placing its voxels (sizes, origin, directions)."""
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
HU_MODES: tuple[str, ...] = ("auto", "yes", "no")
HU_LIMIT = 100_000.0
"""Largest magnitude a CT value may have: 16-bit storage spans -32768..65535 (padding, metal)."""
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

log = logging.getLogger(__name__)


WORKING_AXES = ("L", "P", "S")
"""The orientation every volume is read in (see the module docstring)."""

FILE_ORDER = "own axis order, nibabel's shape"
"""How messages name the axes of a file's shape (:attr:`Volume.file_shape`), as quantify
records it: the file's own order, never covseg's working (z, y, x)."""


def is_itk_named(path: Path) -> bool:
    """True for a file named as NRRD or MetaImage (:data:`ITK_SUFFIXES`, in
    any case), hidden or not: one given by name."""
    return path.is_file() and is_itk_source(path.name)


def is_itk_source(name: str) -> bool:
    """Whether a file's ``name`` (or path, as a volume's source) is NRRD's or MetaImage's
    (:data:`ITK_SUFFIXES`, in any case)."""
    return name.lower().endswith(ITK_SUFFIXES)


def itk_header(path: Path) -> str | None:
    """The header of a file named as NRRD or MetaImage (up to its blank line, or the first
    :data:`HEADER_BYTES`); None for another file or one that cannot be read."""
    return itk_header_in(itk_head(path))


def itk_header_in(text: str | None) -> str | None:
    """The header in a file's head ``text`` (:func:`itk_head`): up to its blank line; None for
    None."""
    return BLANK_LINE.split(text, maxsplit=1)[0] if text is not None else None


def itk_head(path: Path) -> str | None:
    """The first :data:`HEADER_BYTES` of a file named as NRRD or MetaImage, as text; None for
    another file or one that cannot be read."""
    if not is_itk_named(path):
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read(HEADER_BYTES).decode("latin-1")
    except OSError:
        return None


def itk_lacks_geometry(path: Path) -> bool:
    """Whether a NRRD's or MetaImage's header gives no geometry (:data:`GEOMETRY`: no voxel
    sizes, origin or directions), as numpy pipelines write (pynrrd's ``nrrd.write(path,
    array)``): ITK then gives 1 mm voxels at 0, which are no measurement."""
    return itk_header_lacks_geometry(itk_header(path))


def itk_header_lacks_geometry(header: str | None) -> bool:
    """Whether a NRRD's or MetaImage's ``header`` (None: none read) gives no geometry, as
    :func:`itk_lacks_geometry` says of its file."""
    return header is not None and not GEOMETRY.search(header)


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

    def axial_axis(self) -> tuple[int, bool]:
        """The file's voxel axis (0, 1, 2: i, j, k) along the body's length, across the volume's
        axial slices, and whether the file counts along it against the volume's axial order
        (which runs foot to head)."""
        axis = int(np.flatnonzero(self.to_working[:, 0] == 2)[0])
        return axis, bool(self.to_working[axis, 1] < 0)

    def axial_slice(self, k: int, depth: int) -> tuple[int, int]:
        """:meth:`axial_axis`'s axis and the file's own index along it of the volume's axial
        slice ``k``."""
        axis, reversed_ = self.axial_axis()
        return axis, (depth - 1 - k if reversed_ else k)

    def file_slice(self, k: int, depth: int) -> int | None:
        """The file's own slice index of the volume's axial slice ``k``; None when the file's
        slices are not axial (its axial slices are then cut across them)."""
        axis, index = self.axial_slice(k, depth)
        return index if axis == 2 else None


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
    when a slice has none or two share one, or the series' slices are not axial."""
    reversed_slices: bool = False
    """Whether SimpleITK's order runs against the volume's axial order (foot to head): the
    series' slice index of axial slice ``k`` is then ``images - 1 - k``. False where the
    series' slices are not axial (they have no slice index of an axial slice)."""
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
    (:func:`~covseg.io.nifti._header_sized_by_affine`) or to mm
    (:func:`~covseg.io.nifti._in_mm`): written results copy the
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
        ``imshow(aspect=...)`` to draw slices to scale."""
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
    def file_shape(self) -> tuple[int, int, int]:
        """The voxel grid's shape as the file holds it, in its own axis order (nibabel's
        ``shape``): what a user checks a record against."""
        x, y, z = self.file_header.get_data_shape()[:3]
        return int(x), int(y), int(z)

    @property
    def file_spacing(self) -> tuple[float, float, float]:
        """The voxel sizes volumes are counted by, in mm, in the file's own axis order (as
        nibabel's ``zooms`` of a file in mm whose pixdim matches its affine): :attr:`spacing`
        is in the working (z, y, x) order, permuted from a sagittal or coronal file's."""
        working_xyz = self.spacing[::-1]
        if self.stored is None:
            return working_xyz
        x, y, z = (working_xyz[int(axis)] for axis in self.stored.to_working[:, 0])
        return x, y, z

    @property
    def oriented(self) -> bool:
        """Whether the file states its orientation (qform or sform code set); without one,
        nibabel's Analyze convention placed it, so right and left may be swapped."""
        return not _unoriented(self.file_header)

    @property
    def forms_note(self) -> str | None:
        """:func:`forms_note` of the file's header: its qform and sform disagree."""
        return forms_note(self.file_header)

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
        """How to name axial slice ``k`` to a user: in a DICOM series (the volume's, or the CT's
        a mask lies on), its InstanceNumber, which DICOM viewers show, then its index in the
        series (SimpleITK's order, which masks written for it count): the index alone named
        another image in a viewer, as GDCM sorts slices along the normal whatever their numbers.
        Else its index in the file; where the file's slices are not axial, its index along the
        file's voxel axis that runs head to foot, named by that axis: ``axial slice j=20``
        (until 7 Dec covseg's own count, which no viewer shows)."""
        depth = self.array.shape[0]
        numbers = self.dicom.image_numbers if self.dicom else None
        if self.dicom and numbers and len(numbers) == depth:
            index = depth - 1 - k if self.dicom.reversed_slices else k
            return f"image {numbers[index]} (slice {index})"
        index = self.file_slice(k)
        if index is not None:
            return f"slice {index}"
        assert self.stored is not None, "only a file stored on other axes has no axial slices"
        axis, index = self.stored.axial_slice(k, depth)
        return f"axial slice {'ijk'[axis]}={index}"


UNIT_MM = {"meter": 1000.0, "micron": 0.001}
"""Millimetres per spatial unit of a NIfTI header (xyzt_units) other than mm; "unknown" is
read as mm, as every reader does."""


def forms_note(header: nib.Nifti1Header) -> str | None:
    """What a header whose qform and sform (both codes set) place the voxels differently says,
    and which covseg follows; None when they agree. covseg, like nibabel, follows the sform for
    sides and volumes, while readers may follow the qform (ITK does when the sform's scales
    differ from pixdim; the NIfTI standard leaves the choice open): a mirrored qform showed the
    lung covseg calls right on the left there, without a word."""
    if int(header["qform_code"]) <= 0 or int(header["sform_code"]) <= 0:
        return None
    scale = np.diag([UNIT_MM.get(header.get_xyzt_units()[0], 1.0)] * 3 + [1.0])
    qform = usable_qform(header)
    if qform is None:
        return ("the header's qform places no voxels (NaN, infinite or zero sizes, or no valid "
                "rotation); covseg follows the sform, as nibabel does, while readers that "
                "follow the qform (ITK-based ones may) cannot place them")
    sform, qform = scale @ header.get_sform(), scale @ qform
    differences = affine_differences(sform, qform)
    if not differences:
        return None
    axes = ["".join(nib.aff2axcodes(form)) for form in (sform, qform)]
    if axes[0] != axes[1]:
        differences.append(f"orientation {axes[0]} and {axes[1]}")
    return (f"the header's sform and qform place the voxels differently ({'; '.join(differences)}"
            "); covseg follows the sform, as nibabel does, for right and left and for volumes, "
            "while readers that follow the qform (ITK-based ones may) place them otherwise")


def usable_qform(header: nib.Nifti1Header) -> np.ndarray | None:
    """The header's qform, or None where it places no voxels (:func:`orientable`): a qform of
    NaN or infinite voxel sizes, or whose quaternion is no rotation (nibabel raises "w2 should be
    positive"), made :func:`forms_note` raise beside a sound sform, read as a traceback."""
    try:
        with np.errstate(invalid="ignore", over="ignore"):
            qform = np.asarray(header.get_qform(), dtype=np.float64)
    except ValueError:
        return None
    return qform if orientable(qform) else None


def _unoriented(header: nib.Nifti1Header) -> bool:
    """Whether a header's qform and sform codes are both 0: it states no orientation."""
    return int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0


def _mm(sizes: np.ndarray) -> str:
    return " x ".join(f"{v:g}" for v in sizes)


MAX_VOXELS = 2 ** 31
"""Most voxels covseg reads in one volume (8 GiB as float32; a 1,000-slice CT of 1024 x 1024
is half of it): a header claiming more (32767^3 in 87 bytes of .nii.gz) is refused naming the
file before anything is allocated, where it was "out of memory (could not allocate 128 TiB)",
or, on a machine with the memory, gigabytes inflated and segmented."""


def volume_shape(shape: tuple[int, ...], source: str | Path, advice: str
                  ) -> tuple[int, int, int]:
    """The (x, y, z) shape of a stored volume: (x, y, z, 1, ...) is 3D; 2D images (with
    ``advice``, :attr:`Slices.flat`) and true 4D series are refused."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        raise CovsegError(f"{source}: a 2D image of shape {shape}, not a volume; {advice}")
    if len(shape) != 3:
        raise CovsegError(f"{source}: expected a 3D volume, got shape {shape}; give one 3D "
                          "CT (a series over time or of several channels, one volume a file)")
    return shape[0], shape[1], shape[2]


def check_voxel_count(shape: Sequence[int], source: str | Path, itemsize: int = 4) -> None:
    """Refuse a volume of more than :data:`MAX_VOXELS` voxels (``shape`` as its header gives
    it), naming the file, the shape and the memory it would take (``itemsize`` bytes a voxel),
    and one of no voxels (:func:`check_has_voxels`)."""
    check_has_voxels(shape, source)
    voxels = int(np.prod([int(n) for n in shape], dtype=object))
    if voxels > MAX_VOXELS:
        raise CovsegError(
            f"{source}: its header claims {' x '.join(str(int(n)) for n in shape)} voxels "
            f"({voxels:,}, {byte_size(voxels * itemsize)} in memory), more than covseg reads "
            f"({MAX_VOXELS:,} voxels at most); is the header corrupt? Crop or resample the "
            "volume if it is real")


def check_has_voxels(shape: Sequence[int], source: str | Path) -> None:
    """Refuse a volume with an axis of no voxels (or a negative length, from a corrupt header):
    read, it failed in numpy's words ("zero-size array to reduction operation minimum")."""
    if min(int(n) for n in shape) <= 0:
        raise CovsegError(f"{source}: holds no voxels (shape "
                          f"{' x '.join(str(int(n)) for n in shape)}); give a volume with at "
                          "least one voxel along each axis")


def short_of_memory(shape: Sequence[int], dtype: np.dtype, source: str | Path) -> OutOfMemory:
    """The error for a volume of (x, y, z) ``shape`` that free memory cannot hold as ``dtype``,
    naming the file, the shape and the size: the bare out-of-memory line named neither, and a
    DICOM series gave ITK's "Failed to allocate memory for image"."""
    voxels = int(np.prod([int(n) for n in shape], dtype=object))
    return OutOfMemory(
        f"{source}: not enough free memory for its {' x '.join(str(int(n)) for n in shape)} "
        f"voxels ({byte_size(voxels * dtype.itemsize)} as {dtype}); free memory (close other "
        "programs) or use a machine with more")


def _check_stored_dtype(dtype: np.dtype, source: str | Path) -> None:
    """Refuse complex, boolean and RGB voxels: a CT volume holds one real number per voxel."""
    if dtype.kind not in "iuf":
        kind = {"c": "complex", "b": "boolean", "V": "RGB/compound"}.get(dtype.kind, str(dtype))
        raise CovsegError(
            f"{source}: voxels are {kind} ({dtype}); expected one real value per voxel (a CT in HU)"
        )


def _check_finite(data: np.ndarray, source: str | Path) -> None:
    """Refuse NaN/inf voxels (checked per slice so that no volume-sized mask is allocated)."""
    if data.dtype.kind == "f" and not all(np.isfinite(plane).all() for plane in data):
        raise CovsegError(f"{source}: the volume holds NaN or infinite values")


def check_hu(hu: str, option: str | None = None) -> str:
    """One of :data:`HU_MODES` (``option``: the name the user gave it by; by default the hu
    option as the running command spells it)."""
    if hu not in HU_MODES:
        if option is None:

            option = option_name("hu")
        raise CovsegError(f"unknown {option} value {hu!r}; choose one of {', '.join(HU_MODES)}")
    return hu


GRID_TOLERANCE_MM = 1e-3
"""Largest difference between two affines' entries taken as one grid (float rounding in files)."""
SPACING_TOLERANCE = 0.01
"""Largest relative difference between two grids' voxel sizes taken as one size (a converter's
rounding: 0.703125 mm stored as 0.7031 is 0.004 % off; a 0.75 mm mask on a 3 mm CT is 300 %)."""
DIRECTION_TOLERANCE_DEG = 0.5
"""Largest angle between two grids' corresponding voxel axes taken as one direction (rounded
direction cosines; at 250 mm from the origin, 0.5 degrees moves a voxel 2.2 mm)."""


def same_grid_affine(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two affines put their voxels at the same places: every entry within
    :data:`GRID_TOLERANCE_MM`, wherever the origin lies (numpy's default relative slack let
    origins at a table position of 1500 mm lie 0.016 mm apart)."""
    return bool(np.allclose(first, second, rtol=0.0, atol=GRID_TOLERANCE_MM))


def grid_differences(first: Volume, second: Volume) -> list[str]:
    """What sets two volumes' voxel grids apart (each turned to the working axes by its own
    header), said for a message; empty when they are one grid but for rounding and drift:
    voxel sizes within :data:`SPACING_TOLERANCE` of each other, axes within
    :data:`DIRECTION_TOLERANCE_DEG`, origins (said only for grids of one voxel size and
    direction) less than half the smallest voxel apart. The files' own axes are named when they
    differ (a flipped or permuted header)."""
    differences = affine_differences(first.affine, second.affine)
    if differences and first.file_axes != second.file_axes:
        differences.append(f"the files' axes {first.file_axes} and {second.file_axes}")
    return differences


def affine_differences(first: np.ndarray, second: np.ndarray) -> list[str]:
    """What sets two affines' voxel grids apart by the rule of :func:`grid_differences`, said
    for a message; empty when they place the voxels alike but for rounding and drift."""
    sizes = [np.linalg.norm(affine[:3, :3], axis=0) for affine in (first, second)]
    differences = []
    if np.any(np.abs(sizes[0] - sizes[1]) > SPACING_TOLERANCE * np.minimum(*sizes)):
        differences.append(f"voxel sizes {_mm(sizes[0])} mm and {_mm(sizes[1])} mm")
    cosines = np.sum((first[:3, :3] / sizes[0]) * (second[:3, :3] / sizes[1]), axis=0)
    angle = float(np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))).max())
    if angle > DIRECTION_TOLERANCE_DEG:
        differences.append(f"voxel axes turned {angle:.3g} degrees apart")
    offset, half = grid_drift_mm(first, second), 0.5 * float(min(*sizes[0], *sizes[1]))
    if offset >= half and not differences:  # else the first voxels lie apart by the sizes
        differences.append(f"origins {offset:.3g} mm apart (half a voxel is {half:.3g} mm)")
    return differences


def grid_drift_mm(first: np.ndarray, second: np.ndarray) -> float:
    """How far apart two affines' origins (first voxels, on the working axes) lie, in mm."""
    return float(np.linalg.norm(first[:3, 3] - second[:3, 3]))


def warn_grid_drift(first: Volume, second: Volume) -> None:
    """Warn of a drift between two grids that :func:`grid_differences` takes as one, their
    voxels paired as stored."""
    if not same_grid_affine(first.affine, second.affine):
        log.warning("%s: affine differs from %s (origins %.3g mm apart, under half a voxel); "
                    "assuming the same voxel grid", second.source, first.source,
                    grid_drift_mm(first.affine, second.affine))


SEGMENTATION_SUFFIX = ".seg.nrrd"
"""How 3D Slicer names a segmentation (labels, often one layer per segment), never a CT."""
_SLICER_EXPORT = "in 3D Slicer's Segmentations module, export it as a labelmap volume"
"""How 3D Slicer makes a segmentation one label map, said by both pieces of advice below."""
SLICER_LABELMAP = (f"{_SLICER_EXPORT} (Export to files, or Export visible segments to binary "
                   "labelmap) and give that")
"""How a 3D Slicer segmentation of several layers is made one label map."""


def is_segmentation(path: Path) -> bool:
    """Whether ``path`` is named as a 3D Slicer segmentation (:data:`SEGMENTATION_SUFFIX`)."""
    return path.name.lower().endswith(SEGMENTATION_SUFFIX)


def cropped_segmentation_advice(*sources: str | Path | None,
                                reshaped: Sequence[str | Path | None] = ()) -> str:
    """Advice to add to a refusal of two masks or volumes on different grids where one may be a
    mask 3D Slicer saved cropped to its segments' extent: a segmentation among ``sources`` (the
    refusal's files, a CT among them too: no CT is named as a segmentation), or a NRRD among
    ``reshaped``, only the masks of a refusal for their shapes (a label map Slicer exported
    cropped; any other NRRD mask of another shape, which the advice's "if so" fits too; a NRRD
    CT is none); else ''. A missing source (None: evaluate's missing prediction) is none."""
    if not (any(is_segmentation(Path(source)) for source in sources if source is not None)
            or any(str(mask).lower().endswith(NRRD_SUFFIXES)
                   for mask in reshaped if mask is not None)):
        return ""
    return ("; 3D Slicer may save a segmentation, or export a label map, cropped to its "
            f"segments' extent: if so, {_SLICER_EXPORT} with the CT as reference volume (on the "
            "CT's geometry) and give that")


def padded_onto(mask: Volume, onto: Volume, grid: tuple[str, str] | None = None) -> Volume:
    """``mask`` padded with 0 onto ``onto``'s grid (a CT's, or a mask's on it or alone) where it
    is a NRRD (a 3D Slicer segmentation or label map) saved cropped to its segments' extent,
    Slicer's default: its voxels of ``onto``'s size and direction, its first voxel on one of
    ``onto``'s (:func:`same_grid_affine`'s tolerance), its extent inside ``onto``; a warning
    says so, naming the grid by ``grid`` (what and file: ("mask", "x.nii.gz"); by default the
    CT ``onto``). Any other ``mask`` is itself, to pair or refuse (:func:`check_same_grid`):
    quantify (lesion and lung masks) and the training layouts refused such a crop, advising a
    labelmap exported with the CT as reference volume."""
    start = _crop_start(mask, onto)
    if start is None:
        return mask
    array = np.zeros(onto.array.shape, dtype=mask.array.dtype)
    array[tuple(slice(int(k), int(k) + n) for k, n in zip(start, mask.array.shape, strict=True))
          ] = mask.array
    what, source = grid or ("CT", onto.source)
    log.warning("%s: saved cropped to its segments' extent (%s voxels of the %s's %s); padded "
                "with 0 onto the grid of the %s %s", mask.source, _voxels(mask), what,
                _voxels(onto), what, source)
    return replace(onto, array=array, source=mask.source, intensity=mask.intensity, dicom=None)


def paired_onto(mask: Volume, onto: Volume, grid: tuple[str, str] | None = None,
                reshaped: Sequence[Volume] | None = None, *, onto_is_the_mask: bool = False
                ) -> Volume:
    """``mask`` padded onto ``onto``'s grid (:func:`padded_onto`, naming it by ``grid``) and
    refused on another (:func:`check_same_grid`, with ``reshaped``), for quantify and the
    training layouts to pair them voxel for voxel. The refusal names the padded ``mask`` as
    the mask, or ``onto`` where ``onto_is_the_mask`` (quantify's lesion mask, onto which its
    lung mask is padded)."""
    mask = padded_onto(mask, onto, grid)
    if onto_is_the_mask:
        check_same_grid(onto, mask, reshaped)
    else:
        check_same_grid(mask, onto, reshaped)
    return mask


def _crop_start(mask: Volume, onto: Volume) -> np.ndarray | None:
    """The voxel (z, y, x) of ``onto`` where a NRRD ``mask`` cropped from its grid starts
    (:func:`padded_onto`); None where it is no such crop: another format, ``onto``'s own shape,
    voxels off ``onto``'s or reaching outside it."""
    if mask.array.shape == onto.array.shape or not mask.source.lower().endswith(NRRD_SUFFIXES):
        return None
    start_xyz = np.round(np.linalg.solve(onto.affine[:3, :3],
                                         mask.affine[:3, 3] - onto.affine[:3, 3]))
    placed = onto.affine.copy()
    placed[:3, 3] = onto.affine[:3, :3] @ start_xyz + onto.affine[:3, 3]
    start = start_xyz[::-1]
    inside = (start >= 0).all() and (start + mask.array.shape <= onto.array.shape).all()
    aligned = same_grid_affine(mask.affine, placed)
    return start if inside and aligned else None


def _voxels(volume: Volume) -> str:
    """A volume's grid as a user reads it in its file: "40 x 30 x 12"."""
    return " x ".join(str(n) for n in volume.file_shape)


def check_same_grid(reference: Volume, other: Volume,
                    reshaped: Sequence[Volume] | None = None) -> None:
    """Refuse to pair a mask (``reference``) with a volume (its CT or image, or quantify's lung
    mask) on another grid, as quantify and training both pair them voxel for voxel, saying what
    differs (:func:`grid_differences`, the rule evaluate applies too). Each is turned to the
    working axes by its own header, so voxels stored alike under headers that label the axes
    differently (one flipped or permuted) would pair mirrored, or be refused for shapes that
    print equal: refused, naming the axes, where read along the other's axes they would pair
    (:func:`_apart_by_axis_labels`); else refused as off the grid (files of one shape too, their
    extents said along the body's axes where nothing else differs). A drift under half a voxel
    between headers (translation, rounding) only warns, the voxels being paired as stored.
    ``reshaped``: the masks of the two whose shape may be the one at fault, for a refusal's advice
    (:func:`cropped_segmentation_advice`): by default ``reference``; of two masks, both, or the
    second alone where the first lies on its CT's grid."""
    differences = grid_differences(reference, other)
    shapes_apart = reference.array.shape != other.array.shape
    if (differences or shapes_apart) and _apart_by_axis_labels(reference, other):
        detail = f" ({'; '.join(differences[:-1])})" if differences else ""
        raise CovsegError(
            f"{other.source}: its header labels the voxel axes {other.file_axes}, the mask "
            f"{reference.source}'s {reference.file_axes}, and their affines place the voxels "
            "differently; fix the header of one (e.g. give the mask the CT's geometry) rather "
            f"than pair them mirrored{detail}"
        )
    if shapes_apart and reference.file_shape != other.file_shape:
        raise CovsegError(
            f"{other.source}: shape {other.file_shape} differs from the mask "
            f"{reference.source} {reference.file_shape} (each file's {FILE_ORDER}); "
            "they must be on the same voxel grid"
            + cropped_segmentation_advice(reshaped=[
                mask.source for mask in ([reference] if reshaped is None else reshaped)])
        )
    if differences or shapes_apart:
        said = differences or [_extents(reference, other)]
        raise CovsegError(
            f"{other.source}: not on the voxel grid of the mask {reference.source} "
            f"({'; '.join(said)}); resample one onto the other's grid first"
            + cropped_segmentation_advice(reference.source, other.source)
        )
    warn_grid_drift(reference, other)


def _extents(first: Volume, second: Volume) -> str:
    """Two volumes' voxels along the working axes (x, y, z), as their headers read them, said
    for a message: what sets apart two grids of one voxel size and first corner whose files
    print one shape in other axis orders."""
    first_xyz, second_xyz = (" x ".join(str(n) for n in volume.array.shape[::-1])
                             for volume in (first, second))
    return (f"{first_xyz} and {second_xyz} voxels from right to left, front to back and foot "
            f"to head, as the files' axes {first.file_axes} and {second.file_axes} read")


def _apart_by_axis_labels(reference: Volume, other: Volume) -> bool:
    """Whether the headers' axis labels set the grids apart: they label the axes differently,
    and ``reference``'s voxels as stored, read along ``other``'s file axes (from its own first
    voxel, by its own voxel size along each body axis), lie on ``other``'s grid: the files
    hold one shape, which permuted labels may turn into two. A mask shifted or resized in the
    same stored shape and another axis order, permuted too, is off the grid, not mirrored."""
    if reference.file_axes == other.file_axes or reference.file_shape != other.file_shape:
        return False
    target = _file_affine_mm(other)
    body_axes = nib.io_orientation(target)[:, 0].astype(int)
    sizes = np.linalg.norm(reference.affine[:3, :3], axis=0)[body_axes]
    relabelled = _file_affine_mm(reference).copy()
    relabelled[:3, :3] = target[:3, :3] / np.linalg.norm(target[:3, :3], axis=0) * sizes
    return not affine_differences(relabelled, target)


def _file_affine_mm(volume: Volume) -> np.ndarray:
    """The affine of the volume's voxels in the file's own axis order, in mm."""
    if volume.stored is None:
        return volume.affine
    shape_xyz = volume.file_shape
    to_working = nib.orientations.inv_ornt_aff(volume.stored.to_working, shape_xyz)
    return np.asarray(volume.affine @ np.linalg.inv(to_working))


def as_axial(volume: Volume, what: Slices = CT_SLICES) -> Volume:
    """The volume in :data:`WORKING_AXES` order (see the module docstring): the file's voxel axes
    permuted and flipped, each to its nearest world axis (nibabel's ``io_orientation``, so an
    oblique scan counts as its closest plane). Cut along a sagittal file's third axis, a scan gave
    an empty lung and a wrong CT category without a word.

    ``volume.array`` must be the reader's own fresh array: mirrored axial files (the common
    case) are flipped in place, so that no second copy of a large study is made. ``what`` the
    volume holds, for the refusal of one too thin (:func:`_refuse_thin_slices`).
    """
    check_orientable(volume.affine, volume.source)
    check_voxel_sides(volume.affine, volume.source)
    start = nib.io_orientation(volume.affine)
    to_working = nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt(WORKING_AXES))
    _refuse_thin_slices(volume, to_working, what)
    if (to_working == [[0, 1], [1, 1], [2, 1]]).all():
        return volume
    shape_xyz = volume.array.shape[::-1]
    affine = volume.affine @ nib.orientations.inv_ornt_aff(to_working, shape_xyz)
    if (to_working[:, 0] == [0, 1, 2]).all():
        array = _flipped_in_place(volume.array, to_working[:, 1] < 0)
    else:
        array = np.ascontiguousarray(
            nib.orientations.apply_orientation(volume.array.T, to_working).T)
    zooms = np.empty(3)
    zooms[to_working[:, 0].astype(int)] = volume.header.get_zooms()[:3]
    header = volume.header.copy()
    header.set_data_shape(array.shape[::-1])
    header.set_qform(affine, code=max(int(volume.header["qform_code"]), 1))
    header.set_sform(affine, code=max(int(volume.header["sform_code"]), 1))
    header.set_zooms(tuple(float(z) for z in zooms))  # after the forms, which reset them
    return Volume(array, affine, header, volume.source, volume.intensity,
                  StoredAxes(to_working, volume.file_affine, volume.file_header))


def orientable(affine: np.ndarray) -> bool:
    """Whether an affine places voxels: finite, its origin too, and not singular."""
    matrix = np.asarray(affine, dtype=np.float64)[:3]
    return bool(np.isfinite(matrix).all()) and abs(np.linalg.det(matrix[:, :3])) >= 1e-12


def check_orientable(affine: np.ndarray, source: str | Path) -> None:
    """Refuse an affine that gives no orientation: zero, singular or not finite (a NaN or
    infinite origin too: nibabel's qform of it raised "Could not decompose affine")."""
    if not orientable(affine):
        raise CovsegError(f"{source}: its affine (the voxel-to-mm matrix of the header) is "
                          "zero, singular or not finite, so the slices' orientation is unknown; "
                          "fix the header's sform/qform or voxel sizes")


VOXEL_SIDE_MM = (1e-3, 100.0)
"""The shortest and longest voxel side in mm that a CT may have (:func:`check_voxel_sides`).
Clinical CT reconstructs slices 0.5 to 10 mm thick and pixels of 0.3 to 1.5 mm; sparse
protocols step 10 to 20 mm between slices; micro-CT of lungs uses voxels of some µm to 100 µm,
the finest lab scanners about 1 µm. 100 mm is a tenth of a body's length: no CT has voxels so
coarse, while a header's garbage (1e30) or a CT in metres saved as mm (0.0007 "mm") lies
outside by orders of magnitude."""


def check_voxel_sides(affine: np.ndarray, source: str | Path) -> None:
    """Refuse an affine (in mm) whose voxel sides lie outside :data:`VOXEL_SIDE_MM`: every
    reader's voxels pass here (:func:`as_axial`; a NIfTI's before its voxels are read). NIfTI
    voxels of 1e30 mm were read, and quantify gave volumes in mL no body holds."""
    sides = nib.affines.voxel_sizes(np.asarray(affine, dtype=np.float64))
    _check_sides(sides, source, f"voxel sizes {_mm(sides)} mm", "give it its true voxel sizes "
                 "in mm (a NIfTI's pixdim, sform and unit, DICOM's PixelSpacing and slice "
                 "positions, a NRRD's or MetaImage's spacing)")


def _check_sides(sides: Sequence[float], source: str | Path, given: str, fix: str) -> None:
    """Refuse voxel sides (along the voxel axes i, j, k; k the one slices are stacked along)
    outside :data:`VOXEL_SIDE_MM`, ``given`` naming them as the user gave them and ``fix`` saying
    how to give true ones. Slices alone too far apart are named so: two real CT slices 150 mm
    apart (sparse HRCT levels) are no lying header, but no stack covseg reads."""
    low, high = VOXEL_SIDE_MM
    if all(low <= side <= high for side in sides):
        return
    if all(low <= side <= high for side in sides[:2]) and sides[2] > high:
        raise CovsegError(f"{source}: its slices lie {sides[2]:g} mm apart, while covseg reads "
                          f"stacks whose slices are at most {high:g} mm apart; resample the "
                          "stack, or give each slice alone")
    raise CovsegError(f"{source}: {given}, which no CT has (each side {low:g} to {high:g} mm); "
                      f"{fix}")


def _refuse_thin_slices(volume: Volume, to_working: np.ndarray, what: Slices) -> None:
    """Refuse axial slices with a side under :data:`~covseg.io.image.MIN_SLICE_SIDE` pixels,
    whichever file axis holds them, by the rule of 2D slices: a single sagittal or coronal plane
    (a coronal reformat saved on the scan's RAS axes, one row thick, was read as dozens of
    1-pixel-high axial slices and segmented), a line of voxels (thin both ways: no plane), or
    one axial slice one row high (segmented, its row called infection), in
    :func:`~covseg.io.image.refuse_tiny_slice`'s words."""
    working_xyz = np.empty(3, dtype=int)
    working_xyz[to_working[:, 0].astype(int)] = volume.array.shape[::-1]
    x, y, z = (int(n) for n in working_xyz)
    if z == 1:
        refuse_tiny_slice((y, x), f"{volume.source} (one axial slice)", what.name, what.whole)
    elif min(x, y) < MIN_SLICE_SIDE:
        shape = f"a line of {z} voxels" if max(x, y) < MIN_SLICE_SIDE else (
            f"a single {'coronal' if y < MIN_SLICE_SIDE else 'sagittal'} plane")
        raise CovsegError(f"{volume.source}: {shape} (axes "
                          f"{''.join(nib.aff2axcodes(volume.affine))}; {z} axial slices of "
                          f"{x} x {y} pixels), not axial slices; {what.whole}")


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
    """Return "hu", "uint8" or "unit" for a volume (see :func:`~covseg.io.ct.read_volume` for
    ``hu``). Grey values detected (``--hu auto``) must be in the lung window, as grey CT exports
    are: a min-max normalised CT (0..1) is refused
    (:func:`~covseg.transforms.grey_outside_lung_window`), not read as lungs of air in soft
    tissue; ``--hu no`` reads it as grey anyway. HU detected without air
    (:data:`AIR_LIMIT_HU`; a constant volume, blank, reads) and values on neither scale (HU +
    1024 without its intercept) are refused, saying which scaling was lost; ``--hu yes`` reads
    HU as told."""
    low, high = float(array.min()), float(array.max())
    if low < -HU_LIMIT or high > HU_LIMIT:
        raise CovsegError(f"{source}: values {low:g}..{high:g} are neither Hounsfield units nor "
                          f"grey levels (beyond ±{HU_LIMIT:g}); check the file's scaling "
                          "(scl_slope, RescaleSlope)")
    if hu == "yes":
        return "hu"
    grey = low >= 0.0 and high <= 255.0
    if hu == "no" and not grey:
        raise CovsegError(f"{source}: {_hu('no')} expects grey values 0..255, but "
                          f"{_not_grey(low, high, source)}")
    if hu == "no":
        return grey_scale(array, low, high)
    if low < -100.0:
        if AIR_LIMIT_HU < low < high:  # a constant volume is blank on any scale
            raise CovsegError(f"{source}: {_not_grey(low, high, source)}")
        return "hu"
    if grey:
        kind = grey_scale(array, low, high)
        refuse_unwindowed_grey(array, kind, source, _hu("no"))
        return kind
    raise CovsegError(f"{source}: {_not_grey(low, high, source)}")


def _not_grey(low: float, high: float, source: str) -> str:
    """What values ``low``..``high`` outside 0..255 look like, and what to do: Hounsfield units
    (with air), HU whose slope was lost (no air), or HU stored with an offset whose intercept was
    lost (none below -100). ``--hu no`` said "use --hu yes" to all three, which reads the last
    with its air at about 0 HU. A NRRD or MetaImage (``source``) has no scaling fields to
    restore: it is told to save its voxels scaled back."""
    itk = is_itk_source(source)
    if low < -100.0 and not AIR_LIMIT_HU < low < high:
        return (f"values {low:g}..{high:g} look like Hounsfield units, not grey levels; drop "
                f"{_hu('no')} (or pass {_hu('yes')}) to read them as HU")
    if low < -100.0:
        restore = ("multiply them back to HU and save the volume again" if itk
                   else "restore the file's scl_slope / RescaleSlope")
        return (f"values {low:g}..{high:g} look like Hounsfield units without their scaling: "
                f"none lies at or below {AIR_LIMIT_HU:g} HU, while a chest CT holds air (about "
                f"-1000) around and in the body (HU stored / 10 with the slope lost?); {restore}, "
                f"or pass {_hu('yes')} if they are HU of a volume without air")
    restore = ("subtract the offset (1024) and save the volume again" if itk
               else "restore the file's scl_inter / RescaleIntercept (-1024), or subtract the "
                    "offset and save the volume as NIfTI")
    return (f"values {low:g}..{high:g} are neither Hounsfield units (none below -100: no air, "
            "about -1000) nor 8-bit grey (0..255): HU stored with an offset whose intercept was "
            f"lost? 16-bit CT exports often hold HU + 1024: {restore}")


def refuse_unwindowed_grey(array: np.ndarray, kind: str, source: str, told: str) -> None:
    """Refuse a CT volume's grey values (``kind`` detected) that are not a CT in the lung window
    (:func:`~covseg.transforms.grey_outside_lung_window`), but a constant volume (blank, read
    blank on any scale) or a label mask (refused as one when predicted: :func:`label_levels`):
    the one rule of predict (``--hu auto``) and of training on volumes (``--intensity auto``),
    whose lung-windowed model would read a min-max normalised CT's soft tissue as lung or air;
    ``told``: the option that reads it on its grey scale anyway (``--hu no``, ``--intensity
    unit``)."""
    if not holds_grey_only(array) or label_levels(array):
        return
    reason = grey_outside_lung_window(array, kind, "chest CT")
    if reason:
        raise CovsegError(f"{source}: {reason}; give the CT in Hounsfield units, or as 8-bit "
                          f"grey (0..255) in the lung window; {told} reads it as grey anyway")


def _hu(value: str) -> str:
    """``--hu value`` as the running command spells it (``hu="value"`` from the API)."""

    return option_given("hu", value)


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


def _allowed_offset(voxel_mm: float) -> float:
    """How far in mm a slice may lie off its place along an axis of ``voxel_mm`` voxels."""
    return max(SLICE_TOLERANCE * voxel_mm, POSITION_ROUNDING_MM)


def _one_line(exc: Exception) -> str:
    """An exception as one line: its type and its message with whitespace collapsed."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


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
    DICOM series (so "right" and "left" lungs are only named by that guess), its slices checked
    as a file's."""
    return as_axial(checked_array(array, spacing, source))


def checked_array(array: np.ndarray, spacing: Sequence[float], source: str) -> Volume:
    """:func:`volume_from_array`'s voxels and spacing checked, on those axes but not yet read
    as axial slices: an array whose direction is given has its own."""
    if not _three_positive_numbers(spacing):
        raise CovsegError(f"{source}: spacing must be three positive numbers (z, y, x) in mm, "
                          f"got {spacing!r}")
    z, y, x = (float(v) for v in spacing)
    _check_sides((x, y, z), source, f"spacing=({z:g}, {y:g}, {x:g}) mm", "pass "
                 "spacing=(z, y, x) in mm")
    return _float_volume(array, np.diag([-x, -y, z, 1.0]), source)


def _three_positive_numbers(spacing: object) -> bool:
    """Whether ``spacing`` is three finite positive numbers: a string such as "3,1,1" is not,
    nor are its characters."""
    if isinstance(spacing, str | bytes) or not isinstance(spacing, Sequence | np.ndarray):
        return False
    return len(spacing) == 3 and all(_positive_number(v) for v in spacing)


def _positive_number(value: object) -> bool:
    """Whether ``value`` is a real number (not a bool), finite and > 0 as a float: numpy cannot
    test a Fraction or an int beyond float range, and raised a TypeError on them."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and number > 0


def _float_volume(array: np.ndarray, affine: np.ndarray, source: str) -> Volume:
    """float32 (z, y, x) voxels plus a NIfTI header that carries ``affine`` (mm)."""
    if array.dtype.kind not in "biuf":
        raise CovsegError(f"{source}: voxels of type {array.dtype}; expected numbers")
    check_has_voxels(array.shape, source)
    array = array.astype(np.float32)
    _check_finite(array, source)
    header = nib.Nifti1Header()
    header.set_data_shape(array.shape[::-1])
    header.set_data_dtype(np.float32)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    return Volume(array, affine, header, source)


ITK_OBJECT = re.compile(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ")
"""How ITK starts an error line: the class and the object's address, which tell a user nothing."""


def itk_message(exc: Exception) -> str:
    """ITK errors span several lines; the last non-empty one says what went wrong (without
    :data:`ITK_OBJECT`), but for the "Reason: ..." ITK adds from the C library's last error,
    often stale: "No such file or directory" of a truncated MetaImage that is there."""
    lines = [line.strip() for line in str(exc).splitlines()
             if line.strip() and not line.strip().startswith("Reason:")]
    return ITK_OBJECT.sub("", lines[-1]) if lines else type(exc).__name__


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

    A (C, z, y, x) map becomes a 4D NIfTI (x, y, z, C), its fourth axis the classes: no time
    unit or offset (a CT's "sec" made SimpleITK read the classes as time points 1 s apart).
    Intent none: NIfTI's "vector" intent puts the classes on a fifth axis, which readers would
    show as (x, y, z, 1, C). nibabel writes slice by slice, so a float16 memmap can be passed
    without loading it.
    """
    shape = probabilities.shape if probabilities.ndim == 3 else probabilities.shape[1:]
    _check_shape(volume, shape, path)
    if probabilities.dtype.kind != "f":
        raise CovsegError(f"{path}: probabilities must be floats, got {probabilities.dtype}")
    header = _derived_header(volume, np.float32)
    header["cal_min"], header["cal_max"] = 0.0, 1.0
    header.set_intent("none", (), name="")
    if probabilities.ndim == 4:
        header.set_xyzt_units(xyz=header.get_xyzt_units()[0])
        header["toffset"] = 0.0
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


def nibabel_path(path: str | os.PathLike[str]) -> str:
    """``path`` as nibabel is given it to read or write: absolute, since nibabel expands a
    leading ``~`` (pathlib's ``~/ct.nii.gz`` of ``./~/ct.nii.gz``, or of a folder named ``~``
    found in one given as ``.``), and read the home folder's file of that name."""
    return os.path.abspath(path)


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
        nib.save(image, nibabel_path(tmp))
    return path
