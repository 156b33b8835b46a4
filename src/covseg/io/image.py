"""2D image and mask files: PNG, JPEG, TIFF, BMP and NumPy ``.npy``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from covseg.errors import CovsegError
from covseg.io.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
MAX_LABEL = 15
MID_GREY = (0.25, 0.75)
"""Values between these fractions of a mask's maximum are neither background nor foreground."""
MAX_MID_GREY_SHARE = 0.02
"""Above this share of mid-grey pixels, a mask with many grey levels is an image (a lossy JPEG
mask has well under 1 %, a CT slice 40-60 %)."""
MASK_NAME_SUFFIXES = ("_mask", "_seg")
"""Endings that mark a file as the mask of the image with the rest of its name (``x_mask``)."""


def image_name(mask_stem: str) -> str:
    """The image stem a mask stem names: without a trailing ``_mask``/``_seg``."""
    for suffix in MASK_NAME_SUFFIXES:
        if mask_stem.endswith(suffix):
            return mask_stem.removesuffix(suffix)
    return mask_stem


def case_key(stem: str) -> str:
    """The name that pairs a scan with its masks and covseg's outputs: the image name (see
    :func:`image_name`) without the ``_org`` that Kaggle's copy of the Zenodo volumes puts in
    its CT names (``coronacases_org_001`` is the CT of mask ``coronacases_001``)."""
    key = image_name(stem).replace("_org_covid-19-pneumonia-", "_").replace("-dicom", "")
    return key.replace("_org_", "_").replace("_org", "")


def is_image_file(path: Path) -> bool:
    """True for files covseg reads as 2D slices."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_array(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 2D slice as stored (no rescaling); colour images are converted to grey."""
    path = Path(path)
    if not path.is_file():
        raise CovsegError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            with Image.open(path) as image:
                image.load()
                if image.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
                    image = image.convert("L")
                array = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CovsegError(f"{path}: cannot read the image ({exc}); is the file corrupt?") from None
    array = np.squeeze(array)
    if array.ndim != 2:
        raise CovsegError(f"{path}: expected a 2D slice, got an array of shape {array.shape}")
    if not np.isfinite(array).all():
        raise CovsegError(f"{path}: the image holds NaN or infinite values")
    return array


def mask_to_labels(array: np.ndarray, source: str | os.PathLike[str] = "mask") -> np.ndarray:
    """Turn a stored mask into integer labels 0..K.

    Label maps (values 0..15, e.g. MedSeg palettes or Inf-Net multi-class GT) are kept;
    0/255 masks and lossy (JPEG) masks are thresholded at half their maximum to 0/1. An image
    (a CT slice, a photo) is refused: thresholding it would score a picture as a mask.
    """
    values = np.unique(array)
    if values.size and values.min() < 0:
        raise CovsegError(f"{source}: mask has negative values; expected labels 0..K or 0/255")
    if values.size and values.max() <= MAX_LABEL and np.all(np.equal(np.mod(values, 1), 0)):
        return array.astype(np.uint8)
    _check_two_levels(array, values, source)
    return (array > values.max() / 2).astype(np.uint8)


def _check_two_levels(array: np.ndarray, values: np.ndarray, source: str | os.PathLike[str]
                      ) -> None:
    """Refuse a grey image given as a 0/255 mask: many grey levels with many pixels between
    the two ends (a JPEG mask has many levels too, but only near 0 and its maximum)."""
    top = float(values.max()) if values.size else 0.0
    mid_grey = float(np.mean((array > MID_GREY[0] * top) & (array < MID_GREY[1] * top)))
    if values.size > MAX_LABEL + 1 and mid_grey > MAX_MID_GREY_SHARE:
        raise CovsegError(f"{source}: not a mask but an image ({values.size} grey levels, "
                          f"{mid_grey:.0%} of pixels mid-grey); pass masks holding labels 0..K "
                          "or 0/255")


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mask file as integer labels (see :func:`mask_to_labels`)."""
    return mask_to_labels(read_array(path), path)


def write_png(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a uint8 or RGB array as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return Path(path)
