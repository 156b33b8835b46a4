"""Intensity scaling, aspect-preserving resize/pad ("letterbox") and lesion pasting; the
augmentation presets' names (the presets are :mod:`covseg.augmentation`).

Everything spatial is done with MONAI transforms so that image and mask move together. MONAI is
imported where it is used, so that ``import covseg`` and the CLI's help and refusals stay fast.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F

from covseg.errors import CovsegError, counted
from covseg.provenance import option_given, option_name

if TYPE_CHECKING:
    from monai.transforms import SpatialCrop

Intensity = Literal["auto", "hu", "uint8", "unit"]
INTENSITY_MODES: tuple[str, ...] = ("auto", "hu", "uint8", "unit")
LUNG_WINDOW: tuple[float, float] = (-1350.0, 150.0)
"""Lung window as (low, high) HU: level -600, width 1500."""
AIR_HU = -1024.0
"""Air in HU; lower values are scanner padding (-2048, -3024 outside the reconstruction
circle), which :func:`scale_intensity` reads as air, as lungmask clips HU at -1024."""
AIR_LIMIT_HU = -900.0
"""A chest CT in Hounsfield units holds air at or below this (around the body, in the airways
and lungs): values detected as HU with none this low were stored without their scaling."""
AUGMENTATIONS: tuple[str, ...] = ("none", "light", "heavy")
"""The presets of :func:`covseg.augmentation.augmentation` (``--augment``)."""
MAX_CLIPPED_SHARE: dict[str, float] = {"hu": 0.9, "uint8": 0.1, "unit": 0.1}
"""Above this share of pixels outside a scale's range, a slice is on another scale: a window
clips by design (a CT slice in the lung window its bone and any padding, well under 0.9), an
8-bit or unit scale holds no values beyond it (a resampled one overshoots at a few edges)."""
UNIT_OVERSHOOT: tuple[float, float] = (-0.5, 1.5)
"""How far past [0, 1] float values may go, all but :data:`UNIT_OUTLIER_SHARE` of them, and
still read as [0, 1] (:func:`reads_as_unit`): a stretched or resampled [0, 1] image overshoots
by a small part of its range (probe 50: up to 1.004), while float 8-bit grey holds values up to
255; a 0..255 slice within these bounds holds under two grey levels, black on either scale."""
UNIT_OUTLIER_SHARE = 0.01
"""Most of a [0, 1] image's values that may lie past :data:`UNIT_OVERSHOOT`: bright outliers
such as bone or metal in a CT normalised by a window without clipping (probe 59: 0.4 % up to
1.7), which read as 8-bit grey for them made the whole slice near-black, without a word; float
8-bit grey holds its body's pixels past 1.5 (5 % of a mostly black end slice)."""
GREY_MARGIN = 0.5
"""Half a grey level: values this close outside an 8-bit scale (0.5 / 255 on [0, 1]) are on it,
as resampling rounds (a cubic kernel rings a black background a hair below 0: 10.6 % of a
zoomed slice, probe 59), and are clipped without a word; only values past it count as outside
the scale (:data:`MAX_CLIPPED_SHARE`, the overshoot warning)."""

GREY_OVERSHOOT_HIGH = 255.0 * 1.1
"""The highest value float 8-bit grey may hold and be read as 8-bit (:func:`_reads_as_uint8`):
a cubic resampling rings a saturated edge a little past 255 (probe 59: up to 262.6)."""

log = logging.getLogger(__name__)


def detect_intensity(array: np.ndarray, as_is: str = "") -> str:
    """Guess how a slice or volume is stored: Hounsfield units, 8-bit grey, or floats in
    [0, 1] (:func:`reads_as_unit`: a few values past it are clipped, as a told scale's are);
    values on none are refused with :func:`_convert_advice`'s ``as_is``."""
    low, high = float(array.min()), float(array.max())
    if low < -100:
        return "hu"
    if reads_as_unit(array, low, high):
        return "unit"
    if _reads_as_uint8(array, low, high):
        return "uint8"
    raise CovsegError(f"cannot tell the intensity scale (values {low:g}..{high:g}, "
                      f"{_unknown_scale_example(high)}); {_convert_advice(as_is)}")


def reads_as_unit(array: np.ndarray, low: float, high: float) -> bool:
    """Whether float values (``low``..``high``, the array's range) are on the [0, 1] scale: at
    most :data:`UNIT_OUTLIER_SHARE` past :data:`UNIT_OVERSHOOT` and :data:`MAX_CLIPPED_SHARE`
    outside [0, 1], the rule a told scale is held to (:func:`_fits`). A stretched or resampled
    [0, 1] slice overshoots at a few pixels (0.4 % at up to 1.004), a window-normalised one at
    its bone: read as 8-bit grey for that, it read near-black, without a word, while the set's
    other slices read right. The outlier bound keeps float 8-bit grey that is mostly 0 or 1
    (an end slice, a letterboxed export) 8-bit, not clipped to white, as does asking outliers
    to be outnumbered by grey values (:func:`_grey_outnumbers_outliers`)."""
    if array.dtype.kind != "f":
        return False
    return (low >= 0.0 and high <= 1.0) or (_fits(array, "unit") and (
        _near_unit(low, high) or _grey_outnumbers_outliers(array)))


def _grey_outnumbers_outliers(array: np.ndarray) -> bool:
    """Whether more of ``array``'s values lie strictly inside (0, 1) than past
    :data:`UNIT_OVERSHOOT`, as in a [0, 1] image with bright outliers (probe 59's bone: 99.6 %
    inside), a slice or volume counted plane by plane for memory. Float 8-bit grey holds its
    content past 1.5 and the rest at 0 or 1: a mostly black slice (an 80-px object in 512 px,
    0.03 %, under :data:`UNIT_OUTLIER_SHARE`) read as [0, 1], its object clipped white."""
    planes = array if array.ndim > 2 else (array,)
    grey = sum(int(np.count_nonzero((plane > 0.0) & (plane < 1.0))) for plane in planes)
    return grey > _outside_planes(array, "unit", *UNIT_OVERSHOOT)


def _reads_as_uint8(array: np.ndarray, low: float, high: float) -> bool:
    """Whether values (``low``..``high``, the array's range) not on the [0, 1] scale are 8-bit
    grey: all in 0..255, or floats past [0, 1]'s bounds (:data:`UNIT_OVERSHOOT`), at most
    :data:`GREY_OVERSHOOT_HIGH`, and as a told 8-bit scale may be (:func:`_fits`: a resampled
    slice rings a little past 0 and 255); floats a little below 0 but within those bounds are a
    standardised image, not grey levels. Integers past 255 are 16-bit grey, not a resampling's
    ring: a 16-bit HU + 1024 slice with a small body (7 % past 255) read as 8-bit, clipped."""
    return (low >= 0.0 and high <= 255.0) or (
        array.dtype.kind == "f" and high <= GREY_OVERSHOOT_HIGH and not _near_unit(low, high)
        and _fits(array, "uint8"))


def _near_unit(low: float, high: float) -> bool:
    """Whether values ``low``..``high`` lie within :data:`UNIT_OVERSHOOT`, as [0, 1] ones do."""
    return UNIT_OVERSHOOT[0] <= low and high <= UNIT_OVERSHOOT[1]


def _unit_outlier_share(array: np.ndarray) -> float:
    """The share of ``array``'s values past :data:`UNIT_OVERSHOOT`, far outside [0, 1]."""
    return _outside_planes(array, "unit", *UNIT_OVERSHOOT) / array.size


def grey_scale(array: np.ndarray, low: float, high: float) -> str:
    """The scale of a CT volume's grey values (``low``..``high``, all 0..255,
    :func:`covseg.io.volume.detect_volume_intensity`): [0, 1] where none lies above 1, or as
    floats :func:`reads_as_unit` does, else 8-bit grey."""
    return "unit" if high <= 1.0 or reads_as_unit(array, low, high) else "uint8"


def _unknown_scale_example(high: float) -> str:
    """What values on no scale covseg reads may be, for the refusal: 16-bit grey above 255,
    else values below 0 that are not HU (a zero-centred, standardised image)."""
    return "e.g. 16-bit grey" if high > 255 else "below 0 but not HU: a standardised image?"


def _convert_advice(as_is: str = "") -> str:
    """What to do with values on none of the scales covseg reads, as a refusal says it:
    ``as_is`` says what reads them as they are where the caller offers it (predict reads
    slices as its run was trained, and takes no ``--intensity``), else ``--intensity hu``."""
    return ("covseg reads Hounsfield units, 8-bit grey (0..255) or floats in [0, 1]: convert the "
            "slices to one of them (16-bit CT exports often hold HU + 1024: subtract 1024 and "
            f"save as .npy or NIfTI; {as_is or _scale_flag('hu')} reads them as they are, offset "
            "and all, mostly white)")


def normalize_intensity(
    array: np.ndarray,
    mode: str = "auto",
    window: tuple[float, float] = LUNG_WINDOW,
    source: str = "",
    told_window: bool = False,
    as_is: str = "",
) -> np.ndarray:
    """Map a slice or volume read with ``mode`` (``--intensity``) to float32 in [0, 1]: the
    scale :func:`intensity_scale` finds, then :func:`scale_intensity`, each naming ``source``
    (the file) in its warnings: the clipping warning named none."""
    kind = intensity_scale(array, mode, window, source, told_window, as_is)
    return scale_intensity(array, kind, window, source=source)


def intensity_scale(array: np.ndarray, mode: str = "auto",
                    window: tuple[float, float] = LUNG_WINDOW, source: str = "",
                    told_window: bool = False, as_is: str = "") -> str:
    """The scale ("hu", "uint8", "unit") of a slice or volume read with ``mode``
    (``--intensity``), detected or told, checked (grey levels told to be HU are refused:
    :func:`holds_grey_only`, as are values mostly off an 8-bit or [0, 1] scale told:
    :func:`told_scale_mismatch`; so is a ``window`` a user ``told_window``, whatever its value,
    on grey levels: :func:`window_unused`). An error starts with ``source`` (the file) where
    one is given; values on no scale are refused with :func:`_convert_advice`'s ``as_is``."""
    if mode not in INTENSITY_MODES:
        raise CovsegError(f"unknown intensity mode {mode!r}; choose one of "
                          f"{', '.join(INTENSITY_MODES)}")
    try:
        kind = detect_intensity(array, as_is) if mode == "auto" else mode
        reason = (told_scale_mismatch(array, kind, as_is) if mode != "auto" else None) or (
            window_unused(kind, window) if told_window else None)
        if reason:
            raise CovsegError(reason)
    except CovsegError as error:
        if not source:
            raise
        raise CovsegError(f"{source}: {error}") from None
    if mode == "hu":
        warn_told_hu_without_air(array, source)
    return kind


def holds_grey_only(array: np.ndarray) -> bool:
    """Whether an image's values are all grey levels 0..255 (and not all one value), which no
    CT slice in Hounsfield units holds: every one has air (about -1000 HU), so values without
    one below 0 are 8-bit grey or [0, 1], which the lung window would make a near-white slice
    (0..255 HU is soft tissue). A flat one (a blank slice) is none: it reads blank on any
    scale."""
    if not array.size:
        return False
    low, high = float(array.min()), float(array.max())
    return 0.0 <= low < high <= 255.0


def grey_told_hu(array: np.ndarray, told: str, what: str, advice: str) -> str | None:
    """Why values ``told`` to be Hounsfield units (by an option) are grey levels
    (:func:`holds_grey_only`), for an image of ``what`` kind, with ``advice`` on the option to
    give instead; None when they may be HU. The one wording of 2-D slices (``--intensity``)
    and CT volumes (predict's ``--hu``)."""
    if not holds_grey_only(array):
        return None
    return (f"{told}, but its values {float(array.min()):g}..{float(array.max()):g} are grey "
            f"levels: none lies below 0, while a {what} in HU always holds air (about -1000); "
            f"read it as grey: {advice}")


def warn_told_hu_without_air(array: np.ndarray, source: str = "") -> None:
    """Warn (once in a read: :func:`one_read`), naming ``source``, of values told to be
    Hounsfield units (``--intensity hu``) with none at or below :data:`AIR_LIMIT_HU`, as
    ``--hu auto`` refuses volumes: every CT slice holds air, so they are likely HU + 1024 (a
    16-bit export), which reads mostly white. Told
    is read, as ``--hu yes`` reads a volume; a flat (blank) image reads blank on any scale."""
    if not array.size:
        return
    low, high = float(array.min()), float(array.max())
    if AIR_LIMIT_HU < low < high:
        warn_in_read("hu without air", f"{_named(source)}read as Hounsfield units "
                     f"({_scale_flag('hu')}), but none of its values {low:g}..{high:g} lies at "
                     f"or below {AIR_LIMIT_HU:g} HU, while a CT slice holds air (about -1000): "
                     "HU + 1024 (a 16-bit export)? It reads mostly white; subtract 1024 first",
                     source)


SCALE_NAMES = {"hu": "Hounsfield units", "uint8": "8-bit grey levels",
               "unit": "values in [0, 1]"}
"""What each ``--intensity`` scale reads an image as, for its refusals."""
AUTO_ADVICE = " (detects HU, 8-bit and [0, 1])"
"""What auto is told to do, after the option that asks for it (:func:`_auto_advice`)."""


def _scale_flag(value: str, option: str = "intensity") -> str:
    """``--intensity value`` (or ``--hu value``: ``option``) as the running command spells it
    (``intensity="value"`` from the API)."""

    return option_given(option, value)


def _auto_advice() -> str:
    """``--intensity auto`` with what it does, as the running command spells the option."""
    return _scale_flag("auto") + AUTO_ADVICE


def told_scale_mismatch(array: np.ndarray, kind: str, as_is: str = "") -> str | None:
    """Why a slice is not on the scale ``kind`` that ``--intensity`` told (None when it may
    be): grey levels told to be HU (:func:`grey_told_hu`), floats in [0, 1] told to be 8-bit
    grey (:func:`_unit_told_uint8`), or more than :data:`MAX_CLIPPED_SHARE` of its values
    outside an 8-bit or [0, 1] scale (:func:`_off_scale`): a model trained or predicting on
    any of them is useless, so all are refused alike (``as_is``: :func:`_convert_advice`)."""
    told = f"read as {SCALE_NAMES[kind]} ({_scale_flag(kind)})" if kind in SCALE_NAMES else ""
    if kind == "hu":
        return grey_told_hu(array, told, "CT slice", f"{_fitting_scales(array, 'hu')} (a run "
                            "predicts as it was trained)")
    if kind not in SCALE_NAMES or not array.size:
        return None
    return (_unit_told_uint8(array, told) if kind == "uint8" else None) or _off_scale(
        array, kind, told, as_is)


def _unit_told_uint8(array: np.ndarray, told: str) -> str | None:
    """Why a slice ``told`` to be 8-bit grey is floats in [0, 1] (:func:`reads_as_unit`; a
    flat one reads blank on any scale), which divided by 255 read near-black; None when it is
    not."""
    if not _floats_in_unit(array):
        return None
    low, high = float(array.min()), float(array.max())
    return (f"{told}, but its values {low:g}..{high:g} are floats in [0, 1], which read "
            f"near-black as 8-bit grey; read them as [0, 1]: {_fitting_scales(array, 'uint8')} "
            "(a run predicts as it was trained)")


def _floats_in_unit(array: np.ndarray) -> bool:
    """Whether ``array`` holds floats on the [0, 1] scale (:func:`reads_as_unit`), not all
    one value (a flat one reads blank on any scale): told 8-bit grey, they are refused."""
    if array.dtype.kind != "f":  # before the range: only floats read as [0, 1]
        return False
    low, high = float(array.min()), float(array.max())
    return low < high and reads_as_unit(array, low, high)


def _off_scale(array: np.ndarray, kind: str, told: str, as_is: str = "") -> str | None:
    """Why a slice ``told`` to be on the 8-bit or [0, 1] scale ``kind`` is not: more than
    :data:`MAX_CLIPPED_SHARE` of its values outside it, or, told [0, 1], more than
    :data:`UNIT_OUTLIER_SHARE` past :data:`UNIT_OVERSHOOT` (:func:`_fits`), which read
    clipped (8-bit slices read as [0, 1] turn white wherever above 1, a near-binary image);
    None when it may be (``as_is``: :func:`_convert_advice`)."""
    if _fits(array, kind):
        return None
    outside = _clipped_share(array, kind)
    fitting = _fitting_scales(array, kind)
    advice = (f"read it on its own scale: {fitting} (a run predicts as it was trained)"
              if fitting else _convert_advice(as_is))
    values = f"its values ({float(array.min()):g}..{float(array.max()):g})"
    if outside <= MAX_CLIPPED_SHARE[kind]:  # [0, 1] told, refused for its far outliers
        return (f"{told}, but {_unit_outlier_share(array):.1%} of {values} lie past "
                f"{UNIT_OVERSHOOT[0]:g}..{UNIT_OVERSHOOT[1]:g}, where [0, 1] values hold at "
                f"most {UNIT_OUTLIER_SHARE:.0%} (bright outliers such as bone); {advice}")
    return (f"{told}, but {outside:.0%} of {values} lie outside "
            f"0..{_scale_range(kind, LUNG_WINDOW)[1]:g} and would be clipped; {advice}")


def _clipped_share(array: np.ndarray, kind: str) -> float:
    """The share of ``array``'s values outside the 8-bit or [0, 1] scale ``kind``, past
    :data:`GREY_MARGIN`."""
    return _outside_planes(array, kind, *_judged_range(kind, LUNG_WINDOW)) / array.size


def _fits(array: np.ndarray, kind: str) -> bool:
    """Whether values may be on the 8-bit or [0, 1] scale ``kind``: at most
    :data:`MAX_CLIPPED_SHARE` outside it and, for [0, 1], at most :data:`UNIT_OUTLIER_SHARE`
    past :data:`UNIT_OVERSHOOT` (mostly black 8-bit grey has few values past 1, but far past:
    clipped, they read white, while the overshoot warning spoke of a few edge pixels)."""
    if kind == "unit" and not _near_unit(float(array.min()), float(array.max())) and (
            _unit_outlier_share(array) > UNIT_OUTLIER_SHARE):
        return False
    return _clipped_share(array, kind) <= MAX_CLIPPED_SHARE[kind]


def _fitting_scales(array: np.ndarray, refused: str) -> str:
    """The ``--intensity`` modes other than ``refused`` that read ``array`` on its own scale,
    as a refusal advises them, "" where none does: auto where it detects one of them, then each
    that fits (HU where the values hold air, at or below :data:`AIR_LIMIT_HU`, else they read
    mostly white: :func:`warn_told_hu_without_air`; 8-bit or [0, 1] where :func:`_fits`, but
    not 8-bit for floats in [0, 1]: :func:`_unit_told_uint8`);
    advising a mode the same data are refused or warned of under sent the user from one
    refusal to the next."""
    fits = [kind for kind in SCALE_NAMES if kind != refused and (
        float(array.min()) <= AIR_LIMIT_HU if kind == "hu"
        else _fits(array, kind) and not (kind == "uint8" and _floats_in_unit(array)))]
    if not fits:
        return ""
    try:
        detected = detect_intensity(array)
    except CovsegError:  # 16-bit grey, say: auto cannot tell
        detected = None
    names = (["auto"] if detected in fits else []) + fits
    first = _auto_advice() if names[0] == "auto" else _scale_flag(names[0])
    return " or ".join([first, *names[1:]])


TISSUE_HU = -200.0
"""Fat, soft tissue and bone lie above this in HU, lung and air below it."""
MIN_TISSUE_SHARE = 0.02
"""Least share of a grey CT's voxels that read as tissue (:data:`TISSUE_HU` or above) through
the lung window, as grey CT exports are windowed: a chest holds its wall and mediastinum (29 %
or more on each of MedSeg's 52 slices, 48 % of the 8-bit copy of ``example_ct_sm.nii.gz``),
while the same CT min-max normalised to 0..1 holds 0.03 % (its soft tissue sits near 0.5)."""


def grey_outside_lung_window(array: np.ndarray, kind: str, what: str) -> str | None:
    """Why grey values (``kind`` "uint8" or "unit") are not a ``what`` in the lung window, as
    covseg reads grey CTs: almost nothing reads as tissue through that window (a min-max
    normalised CT, whose soft tissue the window maps to lung or air, so that no lung is found);
    None when they may be. Counted slice by slice: no volume-sized copy."""
    low, high = LUNG_WINDOW
    cut = (TISSUE_HU - low) / (high - low) * (255.0 if kind == "uint8" else 1.0)
    tissue = sum(int(np.count_nonzero(part >= cut)) for part in array) / max(array.size, 1)
    if tissue >= MIN_TISSUE_SHARE:
        return None
    return (f"values {float(array.min()):g}..{float(array.max()):g} are neither Hounsfield "
            f"units (none below -100) nor grey levels in the lung window: {tissue:.2%} of them "
            f"read as soft tissue through it, where a {what} holds {MIN_TISSUE_SHARE:.0%} or "
            "more (a min-max normalised CT?)")


def window_unused(kind: str, window: tuple[float, float]) -> str | None:
    """Why a ``--window`` the user gave does nothing on an image of scale ``kind``: only HU are
    windowed, grey levels and [0, 1] values are scaled as they are, so a run would record a
    window it never applied; None when it applies (HU). A window typed out equal to the lung
    window (the default) is refused too: only one left out is not the user's."""

    if kind == "hu":
        return None
    scale = "8-bit grey levels (0..255)" if kind == "uint8" else "values in [0, 1]"
    option = option_name("window")
    given = option_given("window", (f"{window[0]:g}", f"{window[1]:g}"))
    return (f"{given} windows Hounsfield units only, but this image holds {scale}, on which it "
            f"does nothing; leave {option} out (or give the data in HU)")


def scale_intensity(array: np.ndarray, kind: str, window: tuple[float, float] = LUNG_WINDOW,
                    *, judge: bool = True, source: str = "", plane: int | None = None
                    ) -> np.ndarray:
    """Map values on the scale ``kind`` ("hu", "uint8", "unit") to float32 in [0, 1]: HU are
    windowed, values below air (:data:`AIR_HU`: scanner padding) first raised to it, so that a
    scan reads the same whatever its padding; 8-bit is divided by 255. The slices of a CT
    volume come here directly, their scale decided for the whole volume (``--hu``:
    :func:`covseg.io.volume.detect_volume_intensity`), not judged again slice by slice. Many
    values beyond the scale's range are warned of (:func:`judge_scale`, naming ``source``;
    ``plane``: which slice of that volume it is, counted once in a read however often scaled:
    :func:`warn_in_read`), unless ``judge`` is False (a volume's slices, judged with their
    volume; a slice held as read and scaled on access, judged when read)."""
    judged = _judged_range(kind, window)  # an unknown scale refused, judged or not
    array = _raised_to_air(array, kind)
    if judge:
        _warn_if_clipped(_outside_count(array, *judged), array.size, kind, window, source,
                         plane)
    if kind == "hu":
        from monai.transforms import ScaleIntensityRange

        scale = ScaleIntensityRange(window[0], window[1], 0.0, 1.0, clip=True)
        return np.asarray(scale(array), dtype=np.float32)
    if kind == "uint8":
        return np.clip(array.astype(np.float32) / 255.0, 0.0, 1.0)
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def judge_scale(array: np.ndarray, kind: str, window: tuple[float, float] = LUNG_WINDOW,
                source: str = "") -> None:
    """Warn (once in a read: :func:`one_read`), naming ``source``, when more than
    :data:`MAX_CLIPPED_SHARE` of a slice's or a whole volume's values lie beyond the range of
    the scale ``kind`` (they read saturated), or, on a grey scale, any do (past
    :data:`GREY_MARGIN`), without scaling them; a volume counted plane by plane: scaled at once
    it made about four float32 copies of itself (2.4 GB for a 600-slice study)."""
    _warn_if_clipped(_outside_planes(array, kind, *_judged_range(kind, window)), array.size,
                     kind, window, source)


def _outside_planes(array: np.ndarray, kind: str, low: float, high: float) -> int:
    """How many of a slice's or a volume's values (padding raised to air on the HU scale) lie
    outside ``low``..``high``, a volume counted plane by plane for memory."""
    planes = array if array.ndim > 2 else (array,)
    return sum(_outside_count(_raised_to_air(plane, kind), low, high) for plane in planes)


def _scale_range(kind: str, window: tuple[float, float]) -> tuple[float, float]:
    """The values a scale ``kind`` maps to 0..1: the window for HU."""
    if kind not in MAX_CLIPPED_SHARE:
        raise CovsegError(f"unknown intensity scale {kind!r}; choose one of "
                          f"{', '.join(MAX_CLIPPED_SHARE)}")
    return window if kind == "hu" else (0.0, 255.0 if kind == "uint8" else 1.0)


def _judged_range(kind: str, window: tuple[float, float]) -> tuple[float, float]:
    """The values judged on the scale ``kind``: its range (:func:`_scale_range`), an 8-bit or
    [0, 1] one widened by :data:`GREY_MARGIN`."""
    low, high = _scale_range(kind, window)
    margin = 0.0 if kind == "hu" else GREY_MARGIN * (high - low) / 255.0
    return low - margin, high + margin


def _raised_to_air(array: np.ndarray, kind: str) -> np.ndarray:
    """HU below :data:`AIR_HU` (padding) raised to it, in float32; other scales as they are."""
    if kind != "hu":
        return array
    return np.maximum(array.astype(np.float32, copy=False), np.float32(AIR_HU))


def _outside_count(array: np.ndarray, low: float, high: float) -> int:
    """How many values lie outside ``low``..``high``."""
    return int(np.count_nonzero((array < low) | (array > high)))


def _warn_if_clipped(outside: int, size: int, kind: str, window: tuple[float, float],
                     source: str, plane: int | None = None) -> None:
    """Warn, naming ``source`` (its ``plane``: :func:`warn_in_read`), when more than
    :data:`MAX_CLIPPED_SHARE` of ``size`` values, ``outside`` the scale's range, are clipped
    (:func:`_warn_clipped`), or on an 8-bit or [0, 1] scale any are (:func:`_warn_overshoot`)."""
    low, high = _scale_range(kind, window)
    if size and outside / size > MAX_CLIPPED_SHARE[kind]:
        _warn_clipped(kind, low, high, source, plane)
    elif outside and kind != "hu":
        _warn_overshoot(kind, low, high, source, plane)


def _warn_overshoot(kind: str, low: float, high: float, source: str,
                    plane: int | None) -> None:
    """Say that a few pixels of an 8-bit or [0, 1] image (``source``; at most
    :data:`MAX_CLIPPED_SHARE`) lay outside its range and were clipped: a window clips HU by
    design, but these scales hold no such values unless stretched, resampled or normalised by
    a window without clipping."""
    warn_in_read(f"overshoot {kind}", f"{_named(source)}a few pixels of {_image(plane)} lie "
                 f"outside {low:g}..{high:g}, the range of the {kind} intensity scale it is read "
                 "on, and are clipped to it (a stretched or resampled image overshoots at a few "
                 "edges, one normalised by a window without clipping at its bone)", source, plane)


def _named(source: str) -> str:
    """``source`` as a message starts with it: "SOURCE: ", or nothing without one."""
    return f"{source}: " if source else ""


def _image(plane: int | None) -> str:
    """What a scale warning calls the image it judged: "a slice" of a volume (its ``plane``),
    else "an image" (a 2D file or array, or a whole volume)."""
    return "an image" if plane is None else "a slice"


@dataclass
class _Heard:
    """A warning of one read (:func:`one_read`): its text, naming the first image it concerns,
    and the images it concerns: each named one (file, plane) and each slice of a volume (its
    plane: a read reads one volume) once, however often it is scaled (a study's infection and
    lung passes, its montage: counted per pass, a 10-slice study read "20 images alike"), each
    other unnamed one as often as heard (nothing tells them apart)."""

    text: str
    named: set[tuple[str, int | None]] = field(default_factory=set)
    unnamed: int = 0

    def add(self, source: str, plane: int | None) -> None:
        """Count the image ``source`` (its ``plane``, for a volume's slice) in."""
        if source or plane is not None:
            self.named.add((source, plane))
        else:
            self.unnamed += 1

    @property
    def images(self) -> int:
        """How many images the warning concerns."""
        return len(self.named) + self.unnamed

    @property
    def alike(self) -> str:
        """How many images the warning concerns, as said: "10 slices" where they are all a
        volume's slices (a numpy volume's read "10 images alike", as if given 10 images)."""
        slices = not self.unnamed and all(plane is not None for _, plane in self.named)
        return counted(self.images, "slice" if slices else "image")


_READ: ContextVar[dict[str, _Heard] | None] = ContextVar("covseg_read", default=None)
"""The warnings heard in the read under way (:func:`one_read`) by kind; None outside one."""


@contextmanager
def one_read(notes: list[str] | None = None) -> Iterator[None]:
    """Within, each kind of warning (:func:`warn_in_read`: a scale's, a patients.csv's) of one
    read (a data set, a predict call, a study) is said once, naming its first image and how
    many it concerns, on leaving: into ``notes`` where given (a data set's, which it says and
    lists, as its records do), else logged, as they are when the read raises (a refused file,
    Ctrl-C), which lost them before. Said as they came, a set of 2,000 HU + 1024 slices printed
    2,000 lines; said once per process, a second set read in it was not warned at all. Within a
    read under way, one without ``notes`` joins it (a study's predict_labels passes and
    montage: each said its own, the study's warning came two or three times)."""
    if notes is None and _READ.get() is not None:
        yield
        return
    heard: dict[str, _Heard] = {}
    token = _READ.set(heard)
    finished = False
    try:
        yield
        finished = True
    finally:
        _READ.reset(token)
        _say_heard(heard, notes if finished else None)


def _say_heard(heard: Mapping[str, _Heard], notes: list[str] | None) -> None:
    """Add the warnings ``heard`` in a read to ``notes``, or log them where None."""
    said = [item.text if item.images == 1 else f"{item.text} ({item.alike} alike)"
            for item in heard.values()]
    if notes is None:
        for text in said:
            log.warning("%s", text)
    else:
        notes.extend(said)


def warn_in_read(kind: str, text: str, source: str = "", plane: int | None = None) -> None:
    """Say ``text``, a warning of ``kind`` about the image ``source`` (its ``plane``, for a
    volume's slice), once in the read under way (:func:`one_read`), or at once outside one (a
    lone image)."""
    heard = _READ.get()
    if heard is None:
        log.warning("%s", text)
    else:
        heard.setdefault(kind, _Heard(text)).add(source, plane)


def note_scale(read: dict[str, list[str]], kind: str, image: np.ndarray, source: str) -> None:
    """Add ``source`` to ``read`` under the scale ``kind`` its ``image`` was read on, for
    :func:`warn_mixed_scales`, unless the image is flat (blank on any scale)."""
    if image.size and image.min() < image.max():
        read.setdefault(kind, []).append(source)


def warn_mixed_scales(read: Mapping[str, Sequence[str]]) -> None:
    """Warn when the images of one set were read on different scales (``read``: their names
    by scale, :func:`note_scale`): auto detects each 2D file's scale on its own (a volume's on
    the whole volume), so that one file of a set read on the wrong scale reads black or white
    among the others. Said as the read's other warnings (:func:`warn_in_read`: into a data
    set's notes, so its records), once per folder of images: a read may hold several sets."""
    if len(read) < 2:
        return
    found = ", ".join(f"{counted(len(names), 'image')} as {SCALE_NAMES[kind]} (e.g. {names[0]})"
                      for kind, names in read.items())
    folder = os.path.dirname(next(iter(read.values()))[0])
    warn_in_read(f"mixed scales {folder}", "the images of one set were read on different "
                 f"intensity scales, each detected on its own: {found}; if they share one, "
                 "store them all on it (8-bit grey as uint8, floats in [0, 1] clipped to it), "
                 "else some read near-black or white", folder)


def _warn_clipped(kind: str, low: float, high: float, source: str, plane: int | None) -> None:
    """Say that an image (``source``) was read saturated: too many pixels lay outside its
    scale's range (:data:`MAX_CLIPPED_SHARE`)."""
    warn_in_read(f"clipped {kind}", f"{_named(source)}many pixels of {_image(plane)} lie "
                 f"outside {low:g}..{high:g}, the range of the {kind} intensity scale, and are "
                 "clipped: it reads saturated; is it on another scale? Let covseg detect it "
                 f"({_scale_flag('auto')}, or {_scale_flag('auto', 'hu')} for CT volumes), or "
                 "convert 16-bit grey such as HU + 1024 to Hounsfield units, 8-bit grey or "
                 "floats in [0, 1]", source, plane)


def _shrink_labels(labels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) label maps shrunk to ``shape`` centred on their image (shrunk by area): each
    pixel takes the label at its block's centre (nearest-exact), or, where that centre falls
    between source pixels (every pixel of a shrink by an even factor), the label most of its
    block holds (:func:`_majority_labels`). Nearest-exact took the lower-right pixel there, so
    masks sat half a source pixel up-left of their image (probe 59)."""
    picked = F.interpolate(labels[None], size=shape, mode="nearest-exact")[0]
    between = (_centre_between(labels.shape[-2], shape[0])[:, None]
               | _centre_between(labels.shape[-1], shape[1])[None, :])
    if not between.any():
        return picked
    return torch.where(between, _majority_labels(labels, shape), picked)


def _majority_labels(labels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The label most of each block of ``labels`` shrunk to ``shape`` holds, a tie going to the
    higher label on canvas pixels whose row + column is even, to the lower on the others: given
    to the higher label (a lesion over background) everywhere, ties grew every lesion's canvas
    area by 2.8 %; kept as nearest-exact picked them, they moved masks 0.1-0.17 canvas px
    up-left (review 50). One area shrink per label, ascending: a stacked argmax took 35-39 ms
    per 512 px mask."""
    even = (torch.arange(shape[0])[:, None] + torch.arange(shape[1])) % 2 == 0
    best = torch.full((labels.shape[0], *shape), -1.0)
    chosen = torch.zeros_like(best)
    for value in range(int(labels.max()) + 1):
        share = F.interpolate((labels == value).float()[None], size=shape, mode="area")[0]
        take = (share > best) | ((share == best) & even)
        chosen = torch.where(take, float(value), chosen)
        best = torch.maximum(share, best)
    return chosen


def _centre_between(source: int, target: int) -> torch.Tensor:
    """Which of ``target`` pixels shrunk from ``source`` have their block's centre halfway
    between two source pixels: (i + 0.5) * source / target a whole number."""
    return (torch.arange(target) * 2 + 1) * source % (2 * target) == 0


@dataclass(frozen=True)
class Letterbox:
    """How an (H, W) slice maps into a square training canvas: scale the longest side, pad
    the rest."""

    height: int
    width: int
    size: int

    @property
    def resized(self) -> tuple[int, int]:
        scale = self.size / max(self.height, self.width)
        return max(1, round(self.height * scale)), max(1, round(self.width * scale))

    def _pad_crop(self) -> SpatialCrop:
        from monai.transforms import SpatialCrop

        rh, rw = self.resized
        top, left = (self.size - rh) // 2, (self.size - rw) // 2
        return SpatialCrop(roi_start=(top, left), roi_end=(top + rh, left + rw))

    def forward(self, array: np.ndarray | torch.Tensor, nearest: bool = False) -> torch.Tensor:
        """(C, H, W) original -> (C, size, size) canvas."""
        from monai.transforms import Resize, SpatialPad

        downscale = max(self.height, self.width) > self.size
        tensor = torch.as_tensor(array, dtype=torch.float32)
        if nearest and downscale:
            resized = _shrink_labels(tensor, self.resized)
        else:
            mode = "nearest-exact" if nearest else ("area" if downscale else "bilinear")
            resized = Resize(self.resized, mode=mode)(tensor)
        padded = SpatialPad((self.size, self.size), method="symmetric")(resized)
        return padded.as_subclass(torch.Tensor).float()

    def inverse(self, canvas: torch.Tensor, nearest: bool = False) -> torch.Tensor:
        """(C, size, size) canvas -> (C, H, W): probabilities bilinear, label maps ``nearest``."""
        from monai.transforms import Resize

        cropped = self._pad_crop()(canvas)
        same_size = max(self.height, self.width) == self.size
        mode = "nearest-exact" if nearest or same_size else "bilinear"
        resized = Resize((self.height, self.width), mode=mode)(cropped)
        return resized.as_subclass(torch.Tensor).float()


class LesionPaste:
    """Blend the lesions of another slice of the batch into a share of its slices.

    A CarveMix-like copy-paste (Zhang et al., 2021), written here because MONAI has CutMix,
    CutOut and MixUp but no lesion-shaped mixing. Each chosen slice receives the lesion pixels
    of the slice before it in the batch (the first takes the last's), their edges softened by
    MONAI's Gaussian filter (``sigma`` px), only where it is itself aerated-lung dark (``DARK``,
    a share of the grey range: not padding, soft tissue or bone); where the pasted lesion
    dominates, the mask takes the donor pixel's own label. Lesions are ground-glass and
    consolidation (labels 1 and 2; a binary mask's 1): a multi-class donor's pleural effusion
    (3) lies outside the lung, and pasted into aerated lung it taught effusion inside it. A
    donor pixel that is no lesion (a hole in one, under its blurred edge) keeps the slice's
    own label: it was made ground-glass whatever surrounded it. Only the first (intensity)
    channel is pasted, so a lung-guide channel is left as it is.
    """

    LESION_LABELS: tuple[int, ...] = (1, 2)

    DARK: tuple[float, float] = (0.02, 0.6)

    def __init__(self, share: float, sigma: float = 2.0) -> None:
        from monai.networks.layers import GaussianFilter

        self.share = share
        self.blur = GaussianFilter(spatial_dims=2, sigma=sigma, truncated=3.0)
        self.generator = torch.Generator().manual_seed(0)

    def set_random_state(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def soften(self, mask: torch.Tensor) -> torch.Tensor:
        """A 0/1 map blurred by the Gaussian: a soft-edged weight in [0, 1]."""
        return self.blur(mask).clamp(0, 1)

    def __call__(self, image: torch.Tensor,
                 mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) image in [0, 1] and (B, 1, H, W) integer labels -> the same, pasted."""
        chosen = torch.rand(len(image), generator=self.generator) < self.share
        if len(image) < 2 or not chosen.any():
            return image, mask
        donor = torch.roll(torch.arange(len(image)), 1)
        intensity, donor_labels = image[:, :1], mask[donor]
        low, high = self.DARK
        dark = ((intensity > low) & (intensity < high)).float()
        lesion = torch.isin(donor_labels, torch.tensor(self.LESION_LABELS))
        alpha = self.soften(lesion.float()) * self.soften(dark)
        alpha = alpha * chosen.view(-1, 1, 1, 1).float()
        pasted = image.clone()
        pasted[:, :1] = alpha * intensity[donor] + (1 - alpha) * intensity
        labels = torch.where((alpha > 0.5) & lesion, donor_labels, mask)
        return pasted, labels
