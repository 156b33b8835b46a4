"""Per-case segmentation metrics (MONAI's values, counted on bool masks) with explicit rules
for empty masks.

Rules, stated in every report:

- Dice and IoU: truth and prediction both empty -> 1; exactly one empty -> 0.
- Sensitivity: undefined (NaN) when the truth is empty; precision: undefined when the
  prediction is empty; specificity: undefined when the truth covers the whole image.
- HD95: both empty -> 0; exactly one empty -> undefined (NaN).
- Per class (multi-class masks): a class absent from both masks has undefined Dice, IoU and
  HD95, not a perfect score, and the mean IoU averages the classes present in either mask.

Undefined values are left out of means, and summaries count how many were left out.
HD95 is in pixels for 2D slices, in mm for volumes (NIfTI, NRRD, MetaImage: the volume masks
covseg reads) and their slices, by their spacing. MONAI is imported where it is used, so that
``import covseg`` and the CLI's help and refusals stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from scipy import ndimage

HD95_UNIT = "hd95_unit"
"""Key of a record naming the unit of its HD95: ``mm`` (slices of volumes, by their spacing),
``px`` (2D files), ``mm or px`` (data of both, whose HD95 is given apart as ``hd95_mm`` and
``hd95_px``): the per-case CSVs keep their ``hd95`` column, read by position and name."""


def hd95_unit_field(unit: str) -> dict[str, str]:
    """The :data:`HD95_UNIT` field of a run's validation block and a fold's fold_metrics.json
    (``unit``: :attr:`~covseg.data.layouts.LoadedData.hd95_unit`), which named the unit only
    in the prose of ``empty_mask_rules``."""
    if unit not in ("mm", "px", "mm or px"):
        raise ValueError(f"HD95 unit must be mm, px or 'mm or px', got {unit!r}")
    return {HD95_UNIT: unit}


METRICS: tuple[str, ...] = ("dice", "iou", "sensitivity", "specificity", "precision", "hd95")
EMPTY_MASK_RULES = (
    "Dice/IoU: both empty = 1, one empty = 0. Sensitivity undefined when the truth is empty, "
    "precision when the prediction is empty, specificity when the truth fills the image. "
    "HD95: both empty = 0, one empty = undefined. Per class, a class absent from both masks is "
    "undefined in Dice, IoU and HD95, and mIoU averages the classes present in either. "
    "Undefined values are excluded from means (the count is reported). HD95 is in pixels for "
    "2D slices, in mm for volumes (NIfTI, NRRD, MetaImage) and their slices."
)

STD_NOTE = (
    "std (and a report's ±) is the sample standard deviation (n - 1): over the cases where the "
    "metric is defined in a summary of cases (evaluate, a run's validation, a cross-"
    "validation's pooled_per_case), over the folds in mean_std_over_folds; null below two."
)
"""Which spread covseg's records and reports give, stored beside them as ``std_note``."""


def metric_notes() -> dict[str, str]:
    """What every record of metrics holds beside them, in words: ``empty_mask_rules``
    (:data:`EMPTY_MASK_RULES`) and ``std_note`` (:data:`STD_NOTE`)."""
    return {"empty_mask_rules": EMPTY_MASK_RULES, "std_note": STD_NOTE}


def sample_std(values: np.ndarray) -> float:
    """The sample standard deviation (n - 1) of ``values``: one kind for every ± covseg gives
    (:data:`STD_NOTE`); NaN below two values, which show no spread."""
    return float(values.std(ddof=1)) if values.size > 1 else math.nan


def _binary(mask: np.ndarray) -> np.ndarray:
    """A mask as bool, without a copy when it is one already."""
    return np.asarray(mask, dtype=bool)


def _overlap(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """Exact voxel counts of a binary pair: prediction, truth and both.

    Counted by numpy on the bool masks, one byte per voxel of temporaries: MONAI's compute_dice,
    compute_iou and get_confusion_matrix want float one-hot batches, and its Dice alone of a
    600x512x512 pair took 3.9 GB over the pair's 0.3 GB of bool masks."""
    p, t = _binary(pred), _binary(truth)
    return int(np.count_nonzero(p)), int(np.count_nonzero(t)), int(np.count_nonzero(p & t))


# The ratios below divide exact integer counts: in float32, as MONAI's compute_dice, compute_iou
# and compute_confusion_matrix_metric do, while the denominator is at most 2**24 (float32 holds
# every integer up to it), in float64 above. Each value equals to the bit the one covseg gave
# through MONAI while the volume holds at most 2**24 voxels; above, MONAI's float32 counts round
# (its confusion matrix's to 8 or 16, fp and fn taken as differences of them) and covseg's exact
# ones differ from them even under a small denominator (a 300x512x512 pair with one
# false-positive voxel had precision 100/108, not 100/101).


def _dice_of(p_sum: int, t_sum: int, tp: int) -> float:
    """Dice from counts: both empty = 1, truth empty alone = 0 (MONAI's ignore_empty=False)."""
    if t_sum > 0:
        return _ratio(2 * tp, t_sum + p_sum)
    return 1.0 if p_sum == 0 else 0.0


def _iou_of(p_sum: int, t_sum: int, tp: int) -> float:
    """IoU from counts: 1 when both masks are empty, as MONAI's ignore_empty=False."""
    union = t_sum + p_sum - tp
    return _ratio(tp, union) if union > 0 else 1.0


_FLOAT32_EXACT = 2 ** 24
"""The largest count up to which float32 holds every integer."""


def _ratio(part: int, whole: int) -> float:
    """``part / whole`` (``part`` at most ``whole``) correctly rounded: in float32, as MONAI
    divides, while float32 holds ``whole`` exactly, in float64 above."""
    if whole <= _FLOAT32_EXACT:
        return float(np.float32(part) / np.float32(whole))
    return part / whole


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks (both empty = 1), without the cost of the other metrics."""
    return _dice_of(*_overlap(pred, truth))


def binary_metrics(pred: np.ndarray, truth: np.ndarray,
                   spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Dice, IoU, sensitivity, specificity, precision and HD95 of two binary masks."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    p, t = _binary(pred), _binary(truth)
    p_sum, t_sum, both = _overlap(p, t)
    negatives = p.size - t_sum
    return {
        "dice": _dice_of(p_sum, t_sum, both),
        "iou": _iou_of(p_sum, t_sum, both),
        "sensitivity": _ratio(both, t_sum) if t_sum else math.nan,
        "specificity": _ratio(negatives - (p_sum - both), negatives) if negatives else math.nan,
        "precision": _ratio(both, p_sum) if p_sum else math.nan,
        "hd95": _hd95(p, t, spacing) if p_sum and t_sum else math.nan if p_sum or t_sum else 0.0,
    }


def _hd95(p: np.ndarray, t: np.ndarray, spacing: Sequence[float] | None) -> float:
    """HD95 of two non-empty bool masks as MONAI's compute_hausdorff_distance gives it: edges
    (a mask less its scipy erosion) of the masks cropped to their joint box, MONAI's surface
    distances, the larger of the two directions' 95th percentiles (torch.quantile).

    The crop is made here on the bool masks: compute_hausdorff_distance wants float batches of
    the whole volume and its own crop took 3 GB over a 600x512x512 pair; MONAI's get_mask_edges
    given the bool pair itself still took 1.5 GB and 4.3 s for the same edges, this 29 MB and
    0.9 s (two 200-voxel boxes in a 600x512x512 pair, one thread)."""
    from monai.metrics import get_surface_distance

    extents = [_extent(p, axis) + _extent(t, axis) for axis in range(p.ndim)]
    # MONAI's crop: the joint box with a margin of one voxel, zeros past the image's edge.
    start = [min(ends[0], ends[2]) - 1 for ends in extents]
    stop = [max(ends[1], ends[3]) + 2 for ends in extents]
    edges = [_edges(mask, start, stop) for mask in (p, t)]
    distances = (get_surface_distance(edges[0], edges[1], spacing=spacing),
                 get_surface_distance(edges[1], edges[0], spacing=spacing))
    return float(torch.max(torch.stack([torch.quantile(torch.as_tensor(d), 0.95)
                                        for d in distances])))


def _extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    """First and last index along ``axis`` holding a voxel of a non-empty mask."""
    hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
    return int(hits[0]), int(hits[-1])


def _edges(mask: np.ndarray, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
    """The voxels of ``mask`` in the box ``start:stop`` (zeros outside the mask's bounds) that
    its scipy binary erosion removes."""
    box = np.zeros([b - a for a, b in zip(start, stop)], dtype=bool)
    inside = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(start, stop, mask.shape))
    box[tuple(slice(s.start - a, s.stop - a) for s, a in zip(inside, start))] = mask[inside]
    edges = ndimage.binary_erosion(box)
    return np.logical_xor(edges, box, out=edges)


def case_metrics(pred: np.ndarray, truth: np.ndarray, num_classes: int = 2,
                 class_names: dict[int, str] | None = None,
                 spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Metrics of one case (2D slice or 3D volume): infection (any label > 0), and per class
    when multi-class; HD95 in the units of ``spacing`` (pixels/voxels without it).

    Multi-class cases also get ``miou_with_background`` and ``miou_without_background``. A
    class absent from both masks is undefined in Dice, IoU and HD95: scoring it 1 made a model
    that missed the only lesion of a slice score mIoU 0.5 and an empty fold HD95 0.
    """
    row = binary_metrics(pred > 0, truth > 0, spacing)
    if num_classes > 2:
        names = class_names or {}
        ious = [_background_iou(pred == 0, truth == 0)]
        for label in range(1, num_classes):
            pred_class, truth_class = pred == label, truth == label
            per_class = binary_metrics(pred_class, truth_class, spacing)
            if _absent_from_both(per_class):
                per_class.update(dice=math.nan, iou=math.nan, hd95=math.nan)
            name = names.get(label, f"class{label}").replace(" ", "-")
            row.update({f"{name}_{key}": value for key, value in per_class.items()})
            ious.append(per_class["iou"])
        row["miou_with_background"] = _mean_defined(ious)
        row["miou_without_background"] = _mean_defined(ious[1:])
    return row


def _absent_from_both(per_class: dict[str, float]) -> bool:
    """Whether a lesion class's :func:`binary_metrics` are of a class absent from both masks:
    its sensitivity and precision are then both undefined. Read from the metrics, which counted
    the class's overlap already; counting it again took 0.075 s a class of a 300x512x512 case."""
    return math.isnan(per_class["sensitivity"]) and math.isnan(per_class["precision"])


def _background_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU of a multi-class case's background (the masks of label 0): undefined (NaN) when it
    is absent from both masks, as a lesion class then is (:func:`_absent_from_both`), so that
    the mean IoU averages the classes present in either (background left out of an all-lesion
    crop scored 1, a wholly wrong one mIoU 0.33)."""
    p_sum, t_sum, both = _overlap(pred, truth)
    return _iou_of(p_sum, t_sum, both) if p_sum or t_sum else math.nan


def _mean_defined(values: Sequence[float]) -> float:
    """Mean of the defined values; NaN when none is."""
    defined = [value for value in values if not math.isnan(value)]
    return float(np.mean(defined)) if defined else math.nan


def summarize(rows: Iterable[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, sample std (:func:`sample_std`), median, n and the count of undefined values for
    every metric column (a row's ``fold`` index is no metric)."""
    rows = list(rows)
    keys = [k for k in (rows[0] if rows else {})
            if isinstance(rows[0][k], (int, float)) and k != "fold"]
    summary = {}
    for key in keys:
        values = np.array([row[key] for row in rows], dtype=float)
        defined = values[~np.isnan(values)]
        summary[key] = {
            "mean": float(defined.mean()) if defined.size else math.nan,
            "std": sample_std(defined),
            "median": float(np.median(defined)) if defined.size else math.nan,
            "n": int(defined.size),
            "undefined": int(values.size - defined.size),
        }
    return summary
