"""2D image and mask files: PNG, JPEG, TIFF, BMP and NumPy ``.npy``."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from covseg.errors import CovsegError, NotLabels
from covseg.io.atomic import atomic_path
from covseg.io.quiet import ForkSafeLock, quiet_warnings

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
MAX_LABEL = 15
MID_GREY = (0.25, 0.75)
"""Values between these fractions of a mask's maximum are neither background nor foreground."""
MAX_MID_GREY_SHARE = 0.02
"""Above this share of mid-grey pixels, a mask with many grey levels is an image (a lossy JPEG
mask has well under 1 %, a CT slice 40-60 %)."""
SOFT_MASK_MID_GREY = 0.10
"""At most this share of mid-grey pixels, 8-bit grey levels refused as an image look rather like a
probability map or soft mask, to threshold (a Gaussian-blurred 0/255 mask: 3 %; the 52 MedSeg and
50 Inf-Net CT slices: 13 % or more, median 32 %)."""
STEP_TOLERANCE = 0.5
"""How far an integer level may lie from its multiple of the step: labels scaled by 255/K and
rounded (0/128/255) are still labels."""
MAX_SCALED_LABEL = 3
"""The highest label of labels scaled to fill the file (MedSeg's 0/85/170/255). More levels
evenly spaced up to the maximum (0/26/51/.../255, 0/64/128/191/255) are a probability map
rounded to steps of 0.1 or 0.25, refused rather than read as labels 0..10 or 0..4."""
JPEG_NOISE = 0.04
"""Lossy (JPEG) 0/255 masks with few levels hold levels within this fraction of the maximum of
0 and of the maximum (at quality 95: 0..7 and 249..255), on both sides of each edge."""
LOSSY_MASK_BAND = 0.2
"""A lossy (JPEG) 0/255 mask of many levels holds its pixels within this fraction of 255 of 0
or of 255 (:func:`lossy_mask_levels`)."""
LOSSY_MASK_SHARE = 0.98
"""At least this share of a lossy 0/255 mask's pixels lie within :data:`LOSSY_MASK_BAND` of 0
or 255: Inf-Net's 50 0/255 truths saved as JPEG at quality 50 keep 99.7 % or more there, at
quality 25 98.0 %; the 52 MedSeg and 100 Inf-Net CT slices hold at most 82 %."""
LOSSY_LEVELS_SHARE = 0.95
"""At least this share of a lossy mask of labels scaled to 0/127/254 or 0/85/170/255 lies within
:data:`LOSSY_MASK_BAND` of a step of its nearest level (25 and 17 grey levels): Inf-Net's 50
multi-class truths (labels 0/1/2) scaled by 127 or 85 and saved as JPEG at quality 50 keep 97.8
and 96.0 % or more there, at quality 25 96.1 and 94.1 %; the 152 CT slices of ../shared hold at
most 71.8 and 74.2 %."""
LOSSY_MID_SHARE = 0.08
"""A lossy mask of scaled labels holding more than this share of its labelled pixels near a
middle level (85, 170 or 127) is refused where masks are read, not thresholded into one class:
Inf-Net's 50 0/255 truths as JPEG hold at most 6.4 % near 85 or 170 at quality 25 and 0.9 %
near 127."""
MASK_NAME_SUFFIXES = ("_mask", "_seg")
"""Endings that mark a file as the mask of the image with the rest of its name (``x_mask``)."""
NPY_MAGIC = b"\x93NUMPY"
"""The first bytes of a NumPy ``.npy`` file."""
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
"""The first line of a Git LFS pointer file, which a clone without Git LFS holds in place of
each file stored in LFS."""
APPLE_DOUBLE = "._"
"""How the metadata files that macOS leaves beside each file on other disks begin
(``._x.nii.gz``): hidden and no image, passed over without a note in a folder."""
APPLE_DOUBLE_MAGIC = b"\x00\x05\x16\x07"
"""The first bytes of such an AppleDouble file."""
REAL_KINDS = "biuf"
"""NumPy dtype kinds of real numbers (bool, int, unsigned, float): what a slice may hold."""
MAX_SLICE_SIDE = 8192
"""The side of the largest square slice covseg reads (:data:`MAX_SLICE_PIXELS`)."""
MAX_SLICE_PIXELS = MAX_SLICE_SIDE ** 2
"""The most pixels (values of a ``.npy``) covseg reads from one 2D file, 2^26, checked
against the file's header before anything is decoded. A CT slice is 512 x 512 (1,024 or 2,048
square on high-resolution scanners), a 4K screen export 3,840 x 2,160, and the largest of the 404
images of ../shared 512 x 512. A 142-byte PNG claiming 13,000 x 13,000 (under PIL's own limit,
178,956,970) was decoded for 72 s up to 2.7 GB (probe 33), and a 193-byte .npy claiming
200,000 x 200,000 asked for 298 GiB."""
MIN_SLICE_SIDE = 2
"""The fewest pixels a side of a 2D slice or mask may have: a 1 x 1 PNG was refused as "an
array of shape ()", a 1 x N one as a 1D array. One row or column of pixels is no slice; any
higher floor would be arbitrary (the narrowest image of ../shared is 153 pixels wide, and small
masks and slices serve as tests' fixtures) and guard nothing, as a small slice costs little."""

log = logging.getLogger(__name__)


class Slices(NamedTuple):
    """What a file read holds, in the words of the refusals of a file too small or thin to hold
    it: a CT's slices (:data:`CT_SLICES`) or a mask's (:data:`MASK_SLICES`; a mask was told
    too small to be a CT slice, and to predict 2D slices as images or give the whole series)."""

    name: str
    """One slice, as a refusal names it ("CT slice")."""
    own_file: str
    """What to give in place of a 2D file too small to be a slice."""
    whole: str
    """What to give in place of a volume too thin to hold slices."""
    flat: str
    """What to do with a NIfTI file holding one 2D image."""


CT_SLICES = Slices("CT slice", "give the slice's own file", "give the whole series",
                   "predict 2D slices as images, or save it as (x, y, 1)")
MASK_SLICES = Slices("mask slice", "give the whole slice's mask",
                     "give the mask of the whole series", "save it as (x, y, 1)")


def refuse_tiny_slice(shape: tuple[int, ...], source: str, name: str, advice: str) -> None:
    """Refuse a 2D slice of ``shape`` (y, x) with a side under :data:`MIN_SLICE_SIDE` pixels:
    the one rule for predict's files and :func:`covseg.segment`'s arrays (which took a 1 x 1
    slice and called its black pixel infection), naming the slice (:attr:`Slices.name`: a
    mask's slice is no CT slice) and saying what to give instead: a 2D file's
    :attr:`Slices.own_file`, a volume's only slice's :attr:`Slices.whole`."""
    if min(shape) < MIN_SLICE_SIDE:
        raise CovsegError(f"{source}: a {shape[1]} x {shape[0]} image, too small to be a "
                          f"{name} (covseg reads slices of at least {MIN_SLICE_SIDE} x "
                          f"{MIN_SLICE_SIDE} pixels); {advice}")


IMAGE_MASK_ENDINGS = (("_im", "_mask"),)
"""Endings by which a data set names a case's image and its mask (MedSeg's ``tr_im.nii.gz`` and
``tr_mask.nii.gz``): both are the case named by the rest (see :func:`case_key`)."""


def image_name(mask_stem: str) -> str:
    """The image stem a mask stem names: without a trailing ``_mask``/``_seg``."""
    for suffix in MASK_NAME_SUFFIXES:
        if mask_stem.endswith(suffix):
            return mask_stem.removesuffix(suffix)
    return mask_stem


NNUNET_CHANNEL = re.compile(r"(.+)_(\d{4})")
"""An nnU-Net image's stem: its case, then its channel (``case_001_0000``, whose label is
``case_001``)."""
CT_CHANNEL = "0000"
"""The channel of a single-channel (CT) data set's images, dropped from their stems as
:func:`without_channel` says."""
NNUNET_IMAGES = "imagesTr"
"""nnU-Net's folder of the training images, one file per case and channel."""
NNUNET_TEST = "imagesTs"
"""nnU-Net's folder of the test images, which have no labels: no training data."""
NNUNET_IMAGE_FOLDERS = frozenset({NNUNET_IMAGES, NNUNET_TEST})
"""nnU-Net's folders of images, where nnU-Net v2 names every image by its case and channel."""


def without_channel(stem: str) -> str:
    """``stem`` without nnU-Net's ``_0000`` CT channel suffix (:data:`NNUNET_CHANNEL`) after
    its case (``case_001_0000`` and ``lungA_0000`` are ``case_001`` and ``lungA``), as its
    label names the case; other stems as they are. Study and mask names drop it inside
    nnU-Net's images folders only (:func:`channel_dropped`); pairing drops it anywhere
    (:func:`case_key`)."""
    match = NNUNET_CHANNEL.fullmatch(stem)
    return match.group(1) if match and match.group(2) == CT_CHANNEL else stem


def channel_dropped(path: Path, stem: str) -> str:
    """The name a file's ``stem`` gives its study or 2D mask: without nnU-Net's ``_0000``
    (:func:`without_channel`) in an nnU-Net images folder (:func:`in_nnunet_images`), where
    nnU-Net names every image by its case and channel, so that ``imagesTs/case_001_0000`` is
    named as its label ``labelsTs/case_001``; as it is elsewhere (``scan_20200401_0000`` is
    a name of its own, which an earlier covseg's outputs bear)."""
    return without_channel(stem) if in_nnunet_images(path) else stem


def in_nnunet_images(path: Path) -> bool:
    """Whether ``path`` lies in an nnU-Net images folder (:data:`NNUNET_IMAGE_FOLDERS`)."""
    return path.parent.name in NNUNET_IMAGE_FOLDERS


def paired_name(stem: str) -> tuple[str, str | None]:
    """``stem`` without an ending of :data:`IMAGE_MASK_ENDINGS`, and the ending's role
    (``"image"``, ``"mask"``; None without one)."""
    for endings in IMAGE_MASK_ENDINGS:
        for role, ending in zip(("image", "mask"), endings):
            if stem.endswith(ending):
                return stem.removesuffix(ending), role
    return stem, None


KAGGLE_CT_ENDING = re.compile(r"-(dcm|dicom)$")
"""The ending of Kaggle's Radiopaedia CT names (``radiopaedia_org_covid-19-pneumonia-14_85914_0
-dcm``), which their masks (``radiopaedia_14_85914_0``) lack."""


KAGGLE_ORG = re.compile(r"_org(?=_|$)")
"""The ``_org`` token of Kaggle's CT names, before ``_`` or the end: a word that starts with
``org`` (``lung_organ_02``) is kept whole."""


def case_key(stem: str) -> str:
    """The name that pairs a scan with its masks and covseg's outputs: the image name (see
    :func:`image_name`) without an ending of :data:`IMAGE_MASK_ENDINGS` (``tr_im`` and
    ``tr_mask`` are case ``tr``), and without what Kaggle's copy of the Zenodo volumes adds to
    its CT names: the ``_org`` (``coronacases_org_001`` is the CT of mask ``coronacases_001``),
    and the ``_org_covid-19-pneumonia-`` and trailing ``-dcm`` of the Radiopaedia ones
    (``radiopaedia_org_covid-19-pneumonia-14_85914_0-dcm`` is ``radiopaedia_14_85914_0``); and
    without nnU-Net's channel suffix wherever the file lies (:func:`without_channel`:
    ``case_001_0000`` and ``lungA_0000`` are ``case_001`` and ``lungA``), so that a name and
    the name plus ``_0000`` pair with each other: an earlier covseg's ``OUT/lungA_0000/``
    with ``imagesTs/lungA_0000``'s label ``lungA``, and a CT outside nnU-Net's folders with
    the masks of its name."""
    key = KAGGLE_CT_ENDING.sub("", paired_name(without_channel(image_name(stem)))[0])
    key = key.replace("_org_covid-19-pneumonia-", "_")
    return KAGGLE_ORG.sub("", key)


def is_image_file(path: Path) -> bool:
    """True for files covseg reads as 2D slices."""
    return path.is_file() and named_as_image(path)


def named_as_image(path: Path) -> bool:
    """Whether ``path`` is named as a 2D slice a folder's listing reads (an image suffix, not
    hidden), whatever is behind the name: a broken link's too."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_array(path: str | os.PathLike[str], as_mask: bool = False) -> np.ndarray:
    """Read a 2D slice as stored (no rescaling), turned upright as its EXIF orientation says
    (as viewers show it); colour images are converted to grey. ``as_mask``: read it as a
    mask, whose palette indices are its labels (MedSeg's) when its palette is a label palette
    (:func:`_label_palette`), whose transparent pixels are background, and which is refused
    as a mask's if too small (:data:`MASK_SLICES`); an image's palette indices are arbitrary
    (its colours are the picture) and its transparency is ignored (:func:`_grey`)."""
    return read_oriented(path, as_mask).array


class Oriented(NamedTuple):
    """A 2D slice read upright (:func:`read_array`) and the EXIF orientation that turned it."""

    array: np.ndarray
    orientation: int
    """The file's EXIF Orientation, 2..8; 1 for none (an unknown value, a ``.npy``)."""


def read_oriented(path: str | os.PathLike[str], as_mask: bool = False) -> Oriented:
    """:func:`read_array`, with the EXIF orientation it applied: an image and its mask turned
    by different ones may not lie on each other, which a data set's reading warns of."""
    path = Path(path)
    orientation = 1
    if not path.is_file():
        raise CovsegError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CovsegError(f"{path}: an empty file (0 bytes), no image (an interrupted copy?); "
                          "copy it again or leave it out")
    try:
        if path.suffix.lower() == ".npy":
            array = _read_npy(path)
        else:
            with _open_image(path) as image:
                frames = getattr(image, "n_frames", 1)
                if frames > 1:  # a TIFF stack or an animated image
                    raise CovsegError(f"{path}: holds {frames} pages; covseg reads one "
                                      "slice per file: save each page as its own file, or the "
                                      "stack as a NIfTI volume")
                image.load()
                orientation = exif_orientation(image)
                array = _grey(ImageOps.exif_transpose(image), as_mask, path)
    except Image.DecompressionBombError as exc:
        raise _pil_too_large(path, exc) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None
    array = _slice_axes(array)
    if array.ndim != 2:
        raise CovsegError(f"{path}: expected a 2D slice, got an array of shape {array.shape}")
    what = MASK_SLICES if as_mask else CT_SLICES
    refuse_tiny_slice(array.shape, str(path), what.name, what.own_file)
    if not np.isfinite(array).all():
        raise CovsegError(f"{path}: the image holds NaN or infinite values")
    return Oriented(array, orientation)


QUARTER_TURNS = range(5, 9)
"""The EXIF orientations that turn a picture a quarter (or transpose it): width and height
swap."""


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an open image (its header, no pixels read): 2..8, or 1 for none
    or a value no viewer applies (as :func:`PIL.ImageOps.exif_transpose` ignores it)."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return orientation if orientation in range(2, 9) else 1


def _slice_axes(array: np.ndarray) -> np.ndarray:
    """``array`` without axes of length 1 beyond its two slice axes (a ``.npy`` saved as
    1 x H x W or H x W x 1); ``np.squeeze`` also took a 1 x 1 image's own axes, leaving
    shape ``()``."""
    while array.ndim > 2 and 1 in array.shape:
        array = array.squeeze(axis=array.shape.index(1))
    return array


def _open_image(path: Path) -> Image.Image:
    """``Image.open(path)``, which reads the header only, refusing an image of more than
    :data:`MAX_SLICE_PIXELS` before it is decoded (:func:`_too_large`). PIL's
    DecompressionBombWarning (over its ``MAX_IMAGE_PIXELS``, which lies above that bound) is
    silenced; PIL's error above twice its limit is refused by the caller."""
    with quiet_warnings(Image.DecompressionBombWarning):
        image = Image.open(path)
    if image.width * image.height > MAX_SLICE_PIXELS:
        image.close()
        raise _too_large(path, f"its header claims a {image.width:,} x {image.height:,} "
                               f"image ({image.width * image.height:,} pixels)")
    return image


NPY_HEADER_LOCK = ForkSafeLock()
"""Held while numpy parses a .npy header (``ast.literal_eval``): CPython 3.11's parser is not
thread-safe, and two folds reading their slices side by side (``cv --fold K`` in threads) failed
in one with "SystemError: AST constructor recursion depth mismatch"."""


def _read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file's array, refusing a file that is no NumPy array file, an array of no
    real numbers (complex values: predicting from the real part alone misreads the slice), and,
    from its header before anything is allocated, more than :data:`MAX_SLICE_PIXELS` values or
    more bytes than the file holds (a truncated or lying header). The values are read after the
    header parsed once, under :data:`NPY_HEADER_LOCK` (``np.load`` would parse it again)."""
    with open(path, "rb") as handle:
        if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise stand_in(path) or CovsegError(
                f"{path}: not a NumPy .npy file (it lacks the .npy header); save the slice "
                "with numpy.save, or give it as PNG or TIFF")
        handle.seek(0)
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        with NPY_HEADER_LOCK.held():
            shape, fortran_order, dtype = read_header(handle)
        held = os.fstat(handle.fileno()).st_size - handle.tell()
        if dtype.kind not in REAL_KINDS:
            raise CovsegError(f"{path}: holds {dtype} values, not real numbers; save the "
                              "slice's real values (e.g. its magnitude, numpy.abs) as a real "
                              "dtype")
        values = int(np.prod(shape, dtype=object))
        claimed = f"its header claims an array of shape {tuple(shape)}"
        if values > MAX_SLICE_PIXELS:
            raise _too_large(path, f"{claimed} ({values:,} values)")
        if values * dtype.itemsize > held:
            raise CovsegError(f"{path}: {claimed} ({values * dtype.itemsize:,} bytes of "
                              f"{dtype}) but the file holds {held:,} bytes of them; is it "
                              "truncated?")
        array = np.fromfile(handle, dtype=dtype, count=values)
    return array.reshape(shape, order="F" if fortran_order else "C")


def _too_large(path: Path, size: str) -> CovsegError:
    """The error for a 2D file of more than :data:`MAX_SLICE_PIXELS` (``size``: what its header
    claims), or over PIL's decompression-bomb limit (twice ``Image.MAX_IMAGE_PIXELS``,
    178,956,970 pixels, above that bound), which PIL refuses while opening it."""
    return CovsegError(f"{path}: {size}, more than covseg reads in one slice "
                       f"({MAX_SLICE_PIXELS:,} pixels, {MAX_SLICE_SIDE:,} x {MAX_SLICE_SIDE:,}, "
                       "at most); is the file corrupt? If not, downsample it or crop it to the "
                       "CT slice")


def _pil_too_large(path: Path, exc: Exception) -> CovsegError:
    """:func:`_too_large` for PIL's DecompressionBombError ``exc``, with the size it gives."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return _too_large(path, f"its header claims an image of {int(found.group(1)):,} pixels"
                      if found else "its header claims too large an image")


def unreadable_file(path: Path, instead: str = "leave it out") -> CovsegError:
    """The error for an input that the user may not read (mode 000, another user's file): it
    is sound, so "corrupt" or "damaged" would send them the wrong way."""
    return CovsegError(f"{path}: permission denied; make it readable (chmod +r) or {instead}")


def _unreadable(path: Path, exc: Exception) -> CovsegError:
    """Why ``path`` did not decode: a file of a type covseg reads (:data:`IMAGE_SUFFIXES`) is
    corrupt; another (``notes.md``, tried in case it is a picture all the same) is of the wrong
    type, and the types covseg reads are named."""
    from covseg.io.dicom import is_gzipped_dicom  # both import us
    from covseg.io.itk import data_file_refused
    from covseg.io.nifti import analyze_refused, is_analyze

    if isinstance(exc, PermissionError):
        return unreadable_file(path)
    if pointer := stand_in(path):
        return pointer
    if is_analyze(path):
        return analyze_refused(path)
    if data := data_file_refused(path):
        return data
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return CovsegError(f"{path}: cannot read the image ({exc}); is the file corrupt?")
    if is_gzipped_dicom(path):
        return CovsegError(f"{path}: gzip-compressed DICOM, which covseg does not read; gunzip "
                           "it first")
    kind = f"a {path.suffix} file" if path.suffix else "a file without a suffix"
    return CovsegError(f"{path}: {kind}, not an image covseg reads; give {readable_kinds()}")


def stand_in(path: Path) -> CovsegError | None:
    """The error for a file at ``path`` that stands beside or in place of the real one, no data
    itself, which would else be called corrupt or truncated: a Git LFS pointer (a clone made
    without Git LFS), or an AppleDouble file (:func:`apple_double`); None for any other file.
    Asked only once a file failed to read, so that a sound file is not opened twice."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(LFS_POINTER))
    except OSError:
        return None
    if head == LFS_POINTER:
        return CovsegError(f"{path}: a Git LFS pointer, not the file itself (cloned without Git "
                           "LFS); run `git lfs pull` in its clone to fetch the content")
    return apple_double(path)


def apple_double(path: Path) -> CovsegError | None:
    """The error for the AppleDouble metadata file macOS leaves beside each file on other disks
    (``._x.png`` beside ``x.png``, ``._IM0001.dcm`` beside ``IM0001.dcm``), given by name; None
    for any other file. Only a file named so is opened, so a volume's reader asks first: the
    DICOM reader read ``._IM0001.dcm`` as a slice of no pixels."""
    if not path.name.startswith(APPLE_DOUBLE):
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(APPLE_DOUBLE_MAGIC))
    except OSError:
        return None
    if head != APPLE_DOUBLE_MAGIC:
        return None
    real = path.with_name(path.name.removeprefix(APPLE_DOUBLE))
    return CovsegError(f"{path}: macOS metadata (the AppleDouble file a Mac leaves beside "
                       f"{real.name} on other disks), not an image or scan; give the real "
                       f"file, {real}")


def readable_kinds() -> str:
    """The inputs covseg reads, for a message refusing others: "2D slices as .png, ..., or CT
    volumes as NIfTI (...) or DICOM (...)"."""
    from covseg.io.volume import (  # volume imports this module
        DICOM_SUFFIXES,
        ITK_SUFFIXES,
        NIFTI_SUFFIXES,
    )

    return (f"2D slices as {_listed(IMAGE_SUFFIXES)}, or CT volumes as NIfTI "
            f"({_listed(NIFTI_SUFFIXES)}), NRRD or MetaImage ({_listed(ITK_SUFFIXES)}), or DICOM "
            f"({_listed(DICOM_SUFFIXES)} files, or a folder of a series)")


def _listed(suffixes: Sequence[str]) -> str:
    """``.a, .b or .c``."""
    return f"{', '.join(suffixes[:-1])} or {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]


def _grey(image: Image.Image, as_mask: bool, source: Path) -> np.ndarray:
    """A decoded image's grey levels, colour converted to grey. A mask (``as_mask``) keeps
    a label palette's indices (:func:`_label_palette`), else is read through its palette, and
    its transparent pixels are black (a white mask on a transparent white background read all
    white). An image is read through its palette, and its transparency is ignored with a
    warning: a CT slice has none, and a slice exported semi-transparent was read darkened
    (grey times alpha; a fully transparent one black, an empty mask)."""
    if image.mode in ("P", "PA") and not (as_mask and _label_palette(image)):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info
                              else "RGB")
    if image.mode in ("RGBA", "LA"):
        alpha = np.asarray(image.getchannel("A"))
        grey = np.asarray(image.convert("L"))
        if as_mask:
            return np.rint(grey * (alpha / np.float32(255.0))).astype(np.uint8)
        if alpha.min() < 255:
            log.warning("%s: %.0f %% of its pixels are transparent or semi-transparent (alpha "
                        "%d..%d); a CT slice has no transparency, so it is ignored and the "
                        "pixels read as stored", source, 100 * np.mean(alpha < 255),
                        alpha.min(), alpha.max())
        return grey
    if image.mode in ("RGB", "CMYK", "YCbCr"):
        image = image.convert("L")
    return np.asarray(image)


def _label_palette(image: Image.Image) -> bool:
    """Whether a palette mask's indices are its labels: index 0 is black and no other index in
    use is (MedSeg's black/white and Inf-Net's VOC palettes). Image editors and quantizers that
    write a 0/255 mask as an indexed PNG often put white at index 0 (PIL's adaptive palette):
    read by its indices, its lesion and background swapped, so it is read by its colours."""
    colours = np.asarray(image.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    used = np.unique(np.asarray(image.getchannel(0)))
    used = used[used < len(colours)]
    black = np.all(colours == 0, axis=1)
    return bool(len(colours) and black[0] and not black[used[used > 0]].any())


def mask_to_labels(array: np.ndarray, source: str | os.PathLike[str] = "mask",
                   step: float | None = None) -> np.ndarray:
    """Turn a stored mask into integer labels 0..K.

    Label maps (values 0..15, e.g. MedSeg palettes or Inf-Net multi-class GT) are kept. A few
    levels that are multiples of one step (0/255, 0/127/254, 0/85/170/255: labels scaled to fill
    the file; see :func:`_label_step`) are divided by it, as a half-maximum threshold would drop
    the lowest class; ``step``: the one a whole set shares (:func:`shared_label_step`). More
    than :data:`MAX_SCALED_LABEL` such labels are a rounded probability map, refused.
    Lossy (JPEG) 0/255 masks, their levels clustered near 0 and the maximum, are thresholded at
    half their maximum. An image (a CT slice, a photo) or levels that fit no rule are refused
    rather than guessed.
    """
    if step is not None:
        return _divided(array, step)
    values = np.unique(array)
    refuse_negative(values, source)
    divisor = level_divisor(values)
    if divisor is None:
        refusal = _lossy_scaled_refusal(array, source)
        if refusal is not None:
            raise refusal
        _check_binary_with_noise(array, values, source)
        return (array > values.max() / 2).astype(np.uint8)
    if divisor == 1:
        return array.astype(np.uint8)
    _refuse_rounded_probabilities(values, divisor, source)
    return _divided(array, divisor)


def refuse_negative(mask: np.ndarray, source: str | os.PathLike[str]) -> None:
    """Refuse a mask (or its levels) holding negative values: -1 is an "ignore" label, or the
    255 of a 0/255 mask stored as int8; read as background, its lesion was trained on as none."""
    if mask.size and mask.min() < 0:
        raise CovsegError(f"{source}: mask has negative values; expected labels 0..K or 0/255")


SOFT_EDGE_DENSITY = 0.6
"""A mask refused as lossy scaled labels whose grey levels far from every label level (for
0/127/254 and for 0/85/170/255) are at least this dense, per level, as those near its middle
levels, is rather a 0/255 mask with soft edges, its levels spread evenly: Inf-Net's 50 0/255
truths resized by 1/3 to 2x with bilinear, bicubic or Lanczos interpolation (or saved as JPEG at
quality 10) hold 0.75 or more, its 50 multi-class truths scaled by 127 or 85 and saved as JPEG
at quality 10 to 95 at most 0.49 (a peak at each middle level)."""


def _soft_edges(counts: np.ndarray) -> bool:
    """Whether a uint8 mask's pixel counts at each level 0..255 (``counts``) spread between 0
    and 255 as a 0/255 mask's soft edges do, rather than gathering near the middle levels of
    labels scaled to 0/127/254 or 0/85/170/255 (:data:`SOFT_EDGE_DENSITY`)."""
    levels = np.arange(256)
    for labels, near in LOSSY_SCALED_LEVELS.items():
        band = LOSSY_MASK_BAND * 255 / labels
        inner = (levels > band) & (levels < 255 - band)
        middle, gaps = near & inner, ~near & inner
        density = counts[gaps].sum() / gaps.sum()
        if density < SOFT_EDGE_DENSITY * counts[middle].sum() / middle.sum():
            return False
    return True


SOFT_MASK_ADVICE = "resize masks with nearest-neighbour and save them as PNG"
"""What to do instead of thresholding a soft mask given as a mask (:func:`soft_mask`)."""


def soft_mask(source: str | os.PathLike[str], detail: str,
              advice: str = SOFT_MASK_ADVICE) -> CovsegError:
    """The error for a mask that is, by its levels (``detail``), a soft mask or probability
    map: most often a 0/255 mask resized with interpolation. Refused, not thresholded: which
    grey edge pixel is lesion is the user's choice; ``advice``: what else to give."""
    return CovsegError(f"{source}: not a mask of labels but, by its levels, a soft mask or "
                       f"probability map ({detail}), as a 0/255 mask resized with bilinear or "
                       "bicubic interpolation (or saved as a low-quality JPEG) is; threshold it "
                       f"at half its maximum (128), or {advice}")


LOSSLESS_ADVICE = "save the masks losslessly (PNG) holding labels 0..K or 0/85/170/255"
"""What to give instead of a lossy mask of several classes (:func:`_lossy_scaled_refusal`)."""


def _lossy_scaled_refusal(array: np.ndarray, source: str | os.PathLike[str], *,
                          advice: str = LOSSLESS_ADVICE, soft_advice: str = SOFT_MASK_ADVICE
                          ) -> CovsegError | None:
    """The refusal of a lossy (JPEG) mask of labels scaled to 0/127/254 or 0/85/170/255
    (:func:`lossy_mask_levels`) with more than :data:`LOSSY_MID_SHARE` of its labelled pixels
    near a middle level, or None: thresholded at half its maximum, its classes were merged into
    one (or it was refused as an image, by how many pixels were mid-grey). ``advice`` and
    ``soft_advice``: what to give instead (:func:`image_refusal`'s)."""
    reason = _lossy_scaled(array)
    if not reason:
        return None
    counts = np.bincount(array.ravel(), minlength=256)
    levels = np.arange(256)
    for labels, near in LOSSY_SCALED_LEVELS.items():
        band = LOSSY_MASK_BAND * 255 / labels
        mid = counts[near & (levels > band) & (levels < 255 - band)].sum()
        top = counts[levels >= 255 - band].sum()
        if mid > LOSSY_MID_SHARE * (mid + top):
            if _soft_edges(counts):
                return soft_mask(source, f"{np.count_nonzero(counts)} grey levels, those not "
                                         "near 0 or 255 spread evenly between them", soft_advice)
            return CovsegError(f"{source}: a mask of several classes saved lossily ({reason}), "
                               f"whose JPEG noise blurs one class into the next; {advice}")
    return None


def level_divisor(values: np.ndarray) -> float | None:
    """How a mask with these levels reads: 1 for labels 0..15 as stored, the step of labels
    scaled by one (:func:`_label_step`), or None for a 0/255 mask with JPEG noise, thresholded
    at half its maximum."""
    if not values.size or (values.max() <= MAX_LABEL and _integral(values)):
        return 1.0
    return _label_step(values)


def top_label(values: np.ndarray, step: float | None = None) -> int:
    """The highest label a mask with these levels reads as (see :func:`mask_to_labels`),
    without reading its pixels again."""
    divisor = step if step is not None else level_divisor(values)
    if not values.size:
        return 0
    return 1 if divisor is None else int(np.rint(values.max() / divisor))


def masks_to_labels(masks: Sequence[np.ndarray], sources: Sequence[str]) -> list[np.ndarray]:
    """Turn a whole set's multi-class masks (2D files or volume slices) into labels, with ONE
    step for all when the union of their levels is labels times a step (see
    :func:`shared_label_step`)."""
    step = shared_label_step([np.unique(mask) for mask in masks], sources)
    return [mask_to_labels(mask, source, step) for mask, source in zip(masks, sources)]


def shared_label_step(levels: Sequence[np.ndarray], sources: Sequence[str]) -> float | None:
    """The step a set's masks share, from each one's levels, or None to read them file by file.

    One file cannot tell its classes alone: 0/170 is consolidation in a 0/85/170/255 set but
    0/1 on its own, 0/255 is effusion there. The set's levels can, so every mask is divided by
    the step they share. Label maps (0..15) and sets that share no step read file by file
    (:func:`mask_to_labels`), but then a file with one scaled level is refused, not guessed
    (unless every mask is 0/1 or 0/255: :func:`_binary_conventions`), and so is one with
    fractional values (a probability map), as the NIfTI reader refuses it.
    A step with more than :data:`MAX_SCALED_LABEL` labels is a rounded probability map, refused.
    """
    union = np.unique(np.concatenate(levels)) if levels else np.array([])
    if not union.size or union.min() < 0 or (union.max() <= MAX_LABEL and _integral(union)):
        return None
    step = _label_step(union)
    if step is not None:
        fullest = max(range(len(levels)), key=lambda i: levels[i].size)
        others = " and the set's other masks" if len(levels) > 1 else ""
        _refuse_rounded_probabilities(union, step, f"{sources[fullest]}{others}")
        return step
    _refuse_fractions(levels, sources)
    if union.size <= MAX_LABEL + 1 and not _binary_conventions(levels):  # more: JPEG noise
        for values, source in zip(levels, sources):
            lesion = values[values > 0]
            if lesion.size == 1 and _label_step(values) is not None and (
                    lesion[0] > MAX_LABEL or not _integral(lesion)):
                _refuse_step_breaker(levels, sources, union, source, lesion[0])
                raise CovsegError(f"{source}: mask level {lesion[0]:g} alone cannot tell its "
                                  "class, and the set's masks share no step (e.g. 0/127/254); "
                                  "store labels 0..K")
    return step


def _refuse_step_breaker(levels: Sequence[np.ndarray], sources: Sequence[str],
                         union: np.ndarray, alone: str, level: float) -> None:
    """Refuse, by name, the one mask without which the set's masks would share a step (0/1/2/
    3/255 among 0/255 masks): the one-level mask ``alone`` (level ``level``), which cannot tell
    its class as the set stands, is clean; naming it left the user with a valid mask to fix.
    Nothing when no single mask breaks the step, or one against one (which is the odd one?)."""
    if len(levels) < 3:
        return
    holders = {float(v): 0 for v in union}
    for values in levels:
        for v in values:
            holders[float(v)] += 1
    for values, source in zip(levels, sources):
        if source == alone:
            continue
        own = {float(v) for v in values}
        rest = np.array([v for v, n in holders.items() if n - (v in own) > 0])
        if rest.size and rest.size < union.size and _label_step(rest) is not None:
            shown = "/".join(f"{v:g}" for v in values)
            raise CovsegError(f"{source}: mask levels {shown} share no step with the set's "
                              f"other masks (0/{level:g} in {alone}, whose level {level:g} "
                              "alone cannot tell its class then); store labels 0..K, or labels "
                              "times one step (0/127/254), in every mask")


def _binary_conventions(levels: Sequence[np.ndarray]) -> bool:
    """Whether every mask is binary, 0/1 or 0/255 (one non-zero level each): a set mixing the
    two conventions (MedSeg's 0/1 with Inf-Net's 0/255) holds no classes to tell apart, so each
    mask reads on its own as 0/1. Another level, or a mask of two non-zero levels (0/1/2 beside
    0/255: is 255 effusion or lesion?), is not this."""
    return all(set(values[values > 0].tolist()) in ({1}, {255}, set()) for values in levels)


def fraction_range(values: np.ndarray) -> list[float]:
    """The smallest and largest non-integer values of an array (none when all are integers;
    float32 rounding of scaled integers, below 1e-3, counts as integer)."""
    fractional = values[np.abs(values - np.rint(values)) > 1e-3]
    return [float(fractional.min()), float(fractional.max())] if fractional.size else []


def _refuse_fractions(levels: Sequence[np.ndarray], sources: Sequence[str]) -> None:
    """Refuse the first mask holding fractional values when they are no labels times a step
    the set shares: a probability map given as a mask, which needs thresholding."""
    for values, source in zip(levels, sources):
        fractions = fraction_range(values) if values.dtype.kind == "f" else []
        if fractions:
            raise fractional_values(source, fractions)


def fractional_values(source: str | os.PathLike[str], fractions: Sequence[float]
                      ) -> NotLabels:
    """The error for a mask holding fractional values (``fractions``: the smallest and largest,
    :func:`fraction_range`): a probability map or interpolated soft mask, to be thresholded."""
    return NotLabels(f"{source}: holds fractional values ({min(fractions):.3g}.."
                       f"{max(fractions):.3g}), not labels: threshold it, or pass a label mask "
                       "(0..K or 0/255) such as covseg predict writes")


def _refuse_rounded_probabilities(values: np.ndarray, step: float,
                                  source: str | os.PathLike[str]) -> None:
    """Refuse levels that are more than :data:`MAX_SCALED_LABEL` labels times ``step``: a
    probability map rounded to 0.1 or 0.25 and saved as grey levels, not a label map."""
    top = int(np.rint(values.max() / step))
    if top > MAX_SCALED_LABEL:
        shown = "/".join(f"{v:g}" for v in values)
        raise CovsegError(f"{source}: mask levels {shown} are {top} even steps of {step:g}, which "
                          f"looks like a probability map rounded to {1 / top:.2g}, not labels: "
                          "threshold it, or save labels 0..K (0/1, 0/255, 0/85/170/255)")


def _divided(array: np.ndarray, step: float) -> np.ndarray:
    """Labels of a mask storing labels times ``step``."""
    return np.rint(array / step).astype(np.uint8)


def _integral(values: np.ndarray) -> bool:
    """True when every value is a whole number (whatever the dtype)."""
    return bool(np.all(np.equal(np.mod(values, 1), 0)))


def _label_step(values: np.ndarray) -> float | None:
    """The largest step s such that the levels are labels times s, 0, s, 2s, ... Ks (K up to
    15), with more than half of 0..K present, so that a slice lacking a class still reads
    (0/170/255 is 0, 2, 3) but sparse levels do not (0/20/255 is no labels 0, 1, 13); else None."""
    levels = values.astype(np.float64)
    top = levels[-1]
    if top <= 0 or levels.size > MAX_LABEL + 1:
        return None
    tolerance = STEP_TOLERANCE if _integral(values) else 1e-6 * top
    for top_label in range(1, min(MAX_LABEL, max(1, 2 * levels.size - 2)) + 1):
        step = top / top_label
        labels = np.rint(levels / step)
        if (np.unique(labels).size == levels.size
                and np.abs(levels - labels * step).max() <= tolerance):
            return float(step)
    return None


def _check_binary_with_noise(array: np.ndarray, values: np.ndarray,
                             source: str | os.PathLike[str]) -> None:
    """Refuse what a half-maximum threshold would misread: a grey image (many levels, many pixels
    mid-grey), or a few levels that are no labels with one of them no JPEG noise, i.e. not
    within :data:`JPEG_NOISE` of 0 or the maximum (is 100 of 0/100/255, or 20 of 0/20/40/255, a
    class?), or noise on one side only (0/1/2/255 are labels 1 and 2 with 255 as "ignore"; JPEG
    rings on both sides of an edge). A JPEG 0/255 mask passes. Many levels are called a soft
    mask only where they spread as a 0/255 mask's soft edges do (:func:`_soft_edges`): a resized
    mask of scaled labels, told to threshold at half its maximum, lost its lowest class."""
    if values.size <= MAX_LABEL + 1:
        odd = _no_noise(values)
        if odd.size:
            shown = "/".join(f"{v:g}" for v in values)
            raise CovsegError(f"{source}: mask levels {shown} are neither labels 0..{MAX_LABEL} "
                              f"nor multiples of one step (0/127/254), and {odd[0]:g} is no "
                              "0/255 noise; store labels 0..K, 0/255, or labels times one step")
        return
    reason = image_levels(array, values)
    if reason:
        raise image_refusal(source, array, values, reason)


def _no_noise(values: np.ndarray) -> np.ndarray:
    """The levels between 0 and the maximum of sorted ``values`` that are no JPEG noise of a
    0/255 mask: farther than :data:`JPEG_NOISE` from both, or all of them when the "noise" lies
    on one side only (0/1/2/255: labels 1 and 2 beside an ignore level; JPEG rings on both
    sides of an edge)."""
    top = float(values[-1])
    inner = values[(values > 0) & (values < top)]
    near_low, near_high = inner <= JPEG_NOISE * top, inner >= (1 - JPEG_NOISE) * top
    if not (near_low.any() and near_high.any()):
        return inner
    return inner[~(near_low | near_high)]


IMAGE_ADVICE = "pass masks holding labels 0..K or 0/255"
"""What to give instead of an image given as a mask (:func:`image_given_as_mask`)."""


def image_refusal(source: str | os.PathLike[str], array: np.ndarray, values: np.ndarray,
                  reason: str, *, what: str = "mask", advice: str = IMAGE_ADVICE,
                  soft_advice: str = SOFT_MASK_ADVICE,
                  lossy_advice: str = LOSSLESS_ADVICE) -> CovsegError:
    """The error for a mask that is an image by its levels (``reason``: :func:`image_levels`;
    ``values``: its sorted levels): a 0/255 mask with soft edges (:func:`soft_mask`, with
    ``soft_advice``) where its 8-bit levels are a soft mask's (:func:`soft_mask_levels`)
    spread as soft edges spread (:func:`_soft_edges`), else an image given as ``what``
    (:func:`image_given_as_mask`, with ``advice``). Training reads and evaluate's truths and
    predictions say it in these words, so one file is told one way wherever it is given: a
    lossy mask of several classes (JPEG 0/127/254, its ground-glass mid-grey) as training reads
    tell it (:func:`_lossy_scaled_refusal`, with ``lossy_advice``, which they try first), where
    evaluate called it an image."""
    lossy = _lossy_scaled_refusal(array, source, advice=lossy_advice, soft_advice=soft_advice)
    if lossy is not None:
        return lossy
    if soft_mask_levels(array, values) and _soft_edges(
            np.bincount(array.astype(np.uint8, copy=False).ravel(), minlength=256)):
        return soft_mask(source, f"{reason}: few for an image", soft_advice)
    return image_given_as_mask(source, reason, what=what, advice=advice)


def image_given_as_mask(source: str | os.PathLike[str], reason: str, *, what: str = "mask",
                        advice: str = IMAGE_ADVICE) -> CovsegError:
    """The error for an image given where ``what`` (a mask) is read, with why it is one
    (:func:`image_levels`) and ``advice`` on what to give instead."""
    return CovsegError(f"{source}: not a {what} but an image ({reason}); {advice}")


def image_levels(array: np.ndarray, values: np.ndarray) -> str | None:
    """Why an array given as a mask is an image, or None when it may be a mask: more levels
    than labels (over MAX_LABEL + 1) with more than :data:`MAX_MID_GREY_SHARE` of its pixels
    mid-grey, between :data:`MID_GREY` of the way from 0 (or its lowest value, a CT's negative
    HU) to its highest. ``values``: the sorted levels of ``array`` (:func:`numpy.unique`).
    Labels and 0/255 masks with JPEG noise are no images (:func:`mask_to_labels` reads them)."""
    if values.size <= MAX_LABEL + 1:
        return None
    mid_grey = _mid_grey_share(array, values)
    if mid_grey <= MAX_MID_GREY_SHARE:
        return None
    return f"{values.size} grey levels, {mid_grey:.0%} of pixels mid-grey"


def _mid_grey_share(array: np.ndarray, values: np.ndarray) -> float:
    """The share of ``array``'s pixels between :data:`MID_GREY` of the way from 0 (or its lowest
    value) to its highest (``values``: its sorted levels)."""
    base = min(0.0, float(values[0]))
    span = float(values[-1]) - base
    low, high = base + MID_GREY[0] * span, base + MID_GREY[1] * span
    return float(np.mean((array > low) & (array < high)))


def soft_mask_levels(array: np.ndarray, values: np.ndarray) -> bool:
    """Whether an image by :func:`image_levels` is, by its levels, rather an 8-bit probability
    map or soft mask: grey levels 0..255 with at most :data:`SOFT_MASK_MID_GREY` of its pixels
    mid-grey, most near 0 or the maximum, as no CT slice is. Only said, never read as a mask."""
    return bool(values.size and values[0] == 0 and values[-1] <= 255 and _integral(values)
                and _mid_grey_share(array, values) <= SOFT_MASK_MID_GREY)


def within_labels(values: np.ndarray) -> bool:
    """Whether sorted levels lie within labels 0..MAX_LABEL, where no image lies (a CT's HU and
    an 8-bit image's grey reach beyond them)."""
    return bool(not values.size or (values[0] >= 0 and values[-1] <= MAX_LABEL))


FULL_8_BIT = (254, 255)
"""The highest level of labels scaled to fill an 8-bit file (0/127/254, 0/255, 0/85/170/255)."""


def label_levels(array: np.ndarray) -> str | None:
    """Why an array given as an image (a CT or slice to predict) is a label mask, or None when
    it may be an image: the mirror of :func:`image_levels`. A label mask holds 0, at least one
    label and nothing else: labels 0..MAX_LABEL as stored (:func:`within_labels`, whole
    numbers: 0/1, 0/1/2), labels scaled to fill 8 bits (:data:`FULL_8_BIT`; 0/255, 0/85/170/255,
    at most :data:`MAX_SCALED_LABEL`), or a lossy 0/255 mask's few levels (at most
    MAX_LABEL + 1), each within :data:`JPEG_NOISE` of 0 or 255 (:func:`_no_noise`), as
    :func:`mask_to_labels` reads them. One level (an all-black, zero-padded or constant slice),
    levels without 0, and any other set are images: a CT in HU has negative values, an 8-bit
    slice more levels. Scaled labels whose top class is absent (0/85/170, 0/127) are label
    masks too (:func:`scaled_labels_below_top`). Noisier lossy masks (more levels: JPEG at
    quality 90 or less) are label masks when near-binary, or near labels scaled to 0/127/254 or
    0/85/170/255 (:func:`lossy_mask_levels`). Levels are only sorted out when the range allows a
    mask, so a CT in HU costs no sort."""
    if not array.size:
        return None
    lossy = lossy_mask_levels(array)
    if lossy or array.min() != 0:
        return lossy
    top = float(array.max())
    if top > FULL_8_BIT[1]:
        return None
    values = np.unique(array)
    if values.size < 2 or values.size > MAX_LABEL + 1:
        return None
    shown = "/".join(f"{v:g}" for v in values)
    if within_labels(values) and _integral(values):
        return f"values {shown}"
    if top <= MAX_LABEL:
        return None
    if top < FULL_8_BIT[0]:
        return f"values {shown}" if scaled_labels_below_top(values) else None
    divisor = level_divisor(values)
    if divisor is None:
        return None if _no_noise(values).size else f"values {shown}, a lossy 0/{top:g} mask"
    return f"values {shown}" if top_label(values, divisor) <= MAX_SCALED_LABEL else None


def scaled_labels_below_top(values: np.ndarray) -> bool:
    """Whether sorted whole levels from 0, topping out below :data:`FULL_8_BIT`, are labels
    scaled to fill 8 bits with the top class absent (0/85/170 and 0/85 of a 0/85/170/255 set,
    0/127 of 0/127/254): with a full-scale top added they are labels times one step
    (:func:`_label_step`, as :func:`mask_to_labels` reads them) up to
    :data:`MAX_SCALED_LABEL`."""
    if not _integral(values):
        return False
    for full in FULL_8_BIT:
        levels = np.append(values, full)
        step = _label_step(levels)
        if step is not None and top_label(levels, step) <= MAX_SCALED_LABEL:
            return True
    return False


def lossy_mask_levels(array: np.ndarray) -> str | None:
    """Why an 8-bit array of more than MAX_LABEL + 1 levels is a mask saved lossily (JPEG at
    quality 90 or less), or None: whole numbers 0..255 with at least :data:`LOSSY_MASK_SHARE` of
    its pixels within :data:`LOSSY_MASK_BAND` of 0 or of 255, and some near each (a 0/255 mask:
    :func:`mask_to_labels` reads it, thresholded at half its maximum), or a uint8 array with
    :data:`LOSSY_LEVELS_SHARE` within that fraction of a step of 0/127/254 or 0/85/170/255, some
    near 0 and some near another (scaled labels, their top class there or not:
    :func:`lossy_scaled_levels`). No CT slice is so near its levels. Fewer levels are
    :func:`label_levels`' stricter rule."""
    return _lossy_binary(array) or _lossy_scaled(array)


def _lossy_binary(array: np.ndarray) -> str | None:
    """Why an array is a lossy 0/255 mask (:func:`lossy_mask_levels`), or None."""
    band = LOSSY_MASK_BAND * 255
    low, top = float(array.min()), float(array.max())
    if not (0 <= low <= band and 255 - band <= top <= 255):
        return None
    # the counts first: they turn away every CT slice without sorting its pixels (np.unique)
    dark = np.count_nonzero(array <= band)
    bright = np.count_nonzero(array >= 255 - band)
    share = (dark + bright) / array.size
    if share < LOSSY_MASK_SHARE or not dark or not bright:
        return None
    values = np.unique(array)
    if values.size <= MAX_LABEL + 1 or not _integral(values):
        return None
    return (f"{values.size} levels, {share:.1%} of pixels within {band:.0f} of 0 or 255, a "
            "lossy 0/255 mask")


def _lossy_scaled(array: np.ndarray) -> str | None:
    """Why a uint8 array is a lossy mask of scaled labels (:func:`lossy_scaled_levels`), or
    None; its range and two counts turn CT slices away first."""
    if array.dtype != np.uint8 or not array.size:
        return None
    if int(array.min()) > LOSSY_MASK_BAND * 255 / 2:  # none near 0 for 0/127/254 or finer
        return None
    # pixels near no scaled level turn away every CT slice before the levels are counted
    far = sum(np.count_nonzero((array >= first) & (array <= last))
              for first, last in LOSSY_SCALED_GAPS)
    if far > (1 - LOSSY_LEVELS_SHARE) * array.size:
        return None
    return lossy_scaled_levels(array.size, np.bincount(array.ravel(), minlength=256))


LOSSY_SCALED_LEVELS = {labels: np.abs(np.arange(256) - np.rint(np.arange(256) * labels / 255)
                                      * 255 / labels) <= LOSSY_MASK_BAND * 255 / labels
                       for labels in range(2, MAX_SCALED_LABEL + 1)}
"""By highest label K (0/127/254, 0/85/170/255): which grey levels lie within
:data:`LOSSY_MASK_BAND` of a step (255 / K) of a label's level."""


def _runs(levels: np.ndarray) -> tuple[tuple[int, int], ...]:
    """The first and last grey level of each run of True in ``levels`` (256 booleans)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], levels.astype(np.int8), [0]])))
    return tuple((int(first), int(last) - 1) for first, last in zip(edges[::2], edges[1::2]))


LOSSY_SCALED_GAPS = _runs(~np.logical_or.reduce(list(LOSSY_SCALED_LEVELS.values())))
"""The grey levels near no label of any K in :data:`LOSSY_SCALED_LEVELS` (26..67, 188..229),
where every CT slice of ../shared holds 18 % of its pixels or more: counted in two passes, they
spare it the histogram of its levels."""


def lossy_scaled_levels(size: int, counts: np.ndarray) -> str | None:
    """Why a uint8 array of more than MAX_LABEL + 1 levels is labels scaled to fill 8 bits
    (0/127/254, 0/85/170/255, the top class there or not) saved lossily, or None: at least
    :data:`LOSSY_LEVELS_SHARE` of its pixels near their levels (:data:`LOSSY_SCALED_LEVELS`),
    some near 0 and some near another. ``size``: its pixels; ``counts``: its pixels at each
    level 0..255, which serve every K."""
    levels = int(np.count_nonzero(counts))
    if levels <= MAX_LABEL + 1:
        return None
    for labels, near in LOSSY_SCALED_LEVELS.items():
        step = 255 / labels
        dark = int(counts[:int(LOSSY_MASK_BAND * step) + 1].sum())
        share = float(counts[near].sum()) / size
        if share >= LOSSY_LEVELS_SHARE and dark and counts[near].sum() > dark:
            shown = "/".join(f"{round(k * step)}" for k in range(labels + 1))
            return (f"{levels} levels, {share:.1%} of pixels within {LOSSY_MASK_BAND * step:.0f} "
                    f"of {shown}, a lossy mask of scaled labels")
    return None


def refuse_label_mask(array: np.ndarray, source: str | os.PathLike[str], *,
                      what: str = "CT image", advice: str = "give the CT itself") -> None:
    """Refuse a label mask (:func:`label_levels`) given where ``what``, an image, is read,
    saying why it is one and ``advice`` on what to give instead: the mirror of
    :func:`image_given_as_mask`, so that predict does not segment a mask as a CT."""
    reason = label_levels(array)
    if reason:
        raise CovsegError(f"{source}: not a {what} but a label mask ({reason}); {advice}")


def image_or_soft_mask(array: np.ndarray, values: np.ndarray,
                       source: str | os.PathLike[str]) -> str | None:
    """Why a mask is an image (:func:`image_levels`), or None. Image levels within labels
    0..MAX_LABEL (:func:`within_labels`) are fractions over many mid-grey voxels: a probability
    map or interpolated soft mask, refused as one (:func:`fractional_values`) so that it is
    thresholded, not taken for an image."""
    reason = image_levels(array, values)
    if reason and within_labels(values):
        raise fractional_values(source, fraction_range(values))
    return reason


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 2D slice to segment (:func:`read_array`), refusing a label mask given as one
    (:func:`refuse_label_mask`) by its grey levels (a 0/255 ground truth), and a palette image
    by how it reads as a mask too, by its indices where they are labels (Inf-Net's multi-class
    truth: labels 0/1/2 drawn in colour, read as grey 0/38/75)."""
    image = read_array(path)
    stored = [image]
    if Path(path).suffix.lower() != ".npy":
        with _open_image(Path(path)) as opened:
            if opened.mode in ("P", "PA"):
                stored.append(read_array(path, as_mask=True))
    for array in stored:
        refuse_label_mask(array, path, what="CT slice", advice="give the slice itself")
    return image


def read_oriented_mask(path: str | os.PathLike[str]) -> Oriented:
    """Read a mask file as integer labels (:func:`mask_to_labels`), turned by its EXIF
    orientation, which it returns (:func:`read_oriented`): a data set's reading compares it
    with its image's."""
    stored = read_oriented(path, as_mask=True)
    return Oriented(mask_to_labels(stored.array, path), stored.orientation)


def write_png(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a uint8 or RGB array as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return Path(path)
