"""Per-case segmentation metrics (MONAI) with explicit rules for empty masks.

Rules, stated in every report:

- Dice and IoU: truth and prediction both empty -> 1; exactly one empty -> 0.
- Sensitivity: undefined (NaN) when the truth is empty; precision: undefined when the
  prediction is empty; specificity: undefined when the truth covers the whole image.
- HD95: both empty -> 0; exactly one empty -> undefined (NaN).
- Per class (multi-class masks): a class absent from both masks has undefined Dice, IoU and
  HD95, not a perfect score, and the mean IoU averages the classes present in either mask.

Undefined values are left out of means, and summaries count how many were left out.
HD95 is in pixels for 2D slices (mm when a spacing is given).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)

METRICS: tuple[str, ...] = ("dice", "iou", "sensitivity", "specificity", "precision", "hd95")
EMPTY_MASK_RULES = (
    "Dice/IoU: both empty = 1, one empty = 0. Sensitivity undefined when the truth is empty, "
    "precision when the prediction is empty, specificity when the truth fills the image. "
    "HD95: both empty = 0, one empty = undefined. Per class, a class absent from both masks is "
    "undefined in Dice, IoU and HD95, and mIoU averages the classes present in either. "
    "Undefined values are excluded from means (the count is reported). HD95 is in pixels for "
    "2D slices, in mm for NIfTI volumes and their slices."
)

STD_NOTE = (
    "std (and a report's ±) is the sample standard deviation (n - 1): over the cases where the "
    "metric is defined in a summary of cases (evaluate, a run's validation, a cross-"
    "validation's pooled_per_case), over the folds in mean_std_over_folds; null below two."
)
"""Which spread covseg's records and reports give, stored beside them as ``std_note``."""


def sample_std(values: np.ndarray) -> float:
    """The sample standard deviation (n - 1) of ``values``: one kind for every ± covseg gives
    (:data:`STD_NOTE`); NaN below two values, which show no spread."""
    return float(values.std(ddof=1)) if values.size > 1 else math.nan


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(mask, dtype=bool), dtype=torch.float32)[None, None]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks (both empty = 1), without the cost of the other metrics."""
    return float(compute_dice(_as_batch(pred), _as_batch(truth), ignore_empty=False)[0, 0])


def binary_metrics(pred: np.ndarray, truth: np.ndarray,
                   spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Dice, IoU, sensitivity, specificity, precision and HD95 of two binary masks."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    p, t = _as_batch(pred), _as_batch(truth)
    confusion = get_confusion_matrix(p, t)
    tp, fp, tn, fn = (float(v) for v in confusion[0, 0])
    result = {
        "dice": dice(pred, truth),
        "iou": float(compute_iou(p, t, ignore_empty=False)[0, 0]),
        "sensitivity": _ratio_metric("sensitivity", confusion, tp + fn),
        "specificity": _ratio_metric("specificity", confusion, tn + fp),
        "precision": _ratio_metric("precision", confusion, tp + fp),
    }
    if tp + fn == 0 and tp + fp == 0:
        result["hd95"] = 0.0
    elif tp + fn == 0 or tp + fp == 0:
        result["hd95"] = math.nan
    else:
        with warnings.catch_warnings():
            # MONAI (1.5+) passes its own deprecated always_return_as_numpy to get_mask_edges
            # and warns about it on every call: nothing a caller of covseg can change.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy",
                                    category=FutureWarning)
            hd95 = compute_hausdorff_distance(p, t, percentile=95, spacing=spacing)
        result["hd95"] = float(hd95[0, 0])
    return result


def _ratio_metric(name: str, confusion: torch.Tensor, denominator: float) -> float:
    if denominator == 0:
        return math.nan
    return float(compute_confusion_matrix_metric(name, confusion)[0, 0])


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
        ious = [float(compute_iou(_as_batch(pred == 0), _as_batch(truth == 0),
                                  ignore_empty=False)[0, 0])]
        for label in range(1, num_classes):
            per_class = binary_metrics(pred == label, truth == label, spacing)
            if not (pred == label).any() and not (truth == label).any():
                per_class.update(dice=math.nan, iou=math.nan, hd95=math.nan)
            name = names.get(label, f"class{label}").replace(" ", "-")
            row.update({f"{name}_{key}": value for key, value in per_class.items()})
            ious.append(per_class["iou"])
        row["miou_with_background"] = _mean_defined(ious)
        row["miou_without_background"] = _mean_defined(ious[1:])
    return row


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
