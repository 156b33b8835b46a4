"""Metric values against cases computed by hand, and the empty-mask rules."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)
from scipy import ndimage

from covseg import metrics as metrics_module
from covseg.metrics import EMPTY_MASK_RULES, binary_metrics, case_metrics, dice, summarize
from tests.conftest import square_mask


def test_overlapping_squares_match_hand_computation() -> None:
    truth = square_mask(20, 0, 0, 4)  # 16 px
    pred = square_mask(20, 0, 2, 4)  # 16 px, 8 of them overlap
    m = binary_metrics(pred, truth)
    tp, fp, fn, tn = 8, 8, 8, 400 - 24
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))  # 0.5
    assert m["iou"] == pytest.approx(tp / (tp + fp + fn))  # 1/3
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    # Boundary points of the prediction lie 0..2 px from the truth's boundary.
    assert 0 < m["hd95"] <= 2.0


def test_shifted_square_hd95_is_the_shift() -> None:
    truth = square_mask(40, 10, 10, 10)
    pred = square_mask(40, 10, 15, 10)
    assert binary_metrics(pred, truth)["hd95"] == pytest.approx(5.0)


def test_both_empty_is_perfect_and_rules_are_explicit() -> None:
    empty = np.zeros((8, 8), dtype=np.uint8)
    m = binary_metrics(empty, empty)
    assert m["dice"] == 1.0 and m["iou"] == 1.0 and m["hd95"] == 0.0
    assert math.isnan(m["sensitivity"]) and math.isnan(m["precision"])
    assert m["specificity"] == 1.0


def test_one_empty_gives_zero_dice_and_undefined_hd95() -> None:
    empty = np.zeros((8, 8), dtype=np.uint8)
    full = square_mask(8, 2, 2, 3)
    for pred, truth in ((empty, full), (full, empty)):
        m = binary_metrics(pred, truth)
        assert m["dice"] == 0.0 and math.isnan(m["hd95"])


def test_multiclass_case_has_per_class_and_both_mious() -> None:
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[:5, :5] = 1
    truth[5:, 5:] = 2
    pred = truth.copy()
    pred[5:, 5:] = 1  # class 2 predicted as class 1
    row = case_metrics(pred, truth, num_classes=3,
                       class_names={1: "ground-glass", 2: "consolidation"})
    assert row["dice"] == 1.0  # infection (any label) is perfect
    assert row["ground-glass_dice"] == pytest.approx(2 * 25 / (25 + 50))
    assert row["consolidation_dice"] == 0.0
    background_iou = 1.0
    assert row["miou_with_background"] == pytest.approx((background_iou + 0.5 + 0.0) / 3)
    assert row["miou_without_background"] == pytest.approx((0.5 + 0.0) / 2)


def test_per_class_hd95_is_in_the_units_of_the_spacing() -> None:
    """Per-class HD95 of a multi-class case dropped the spacing unnoticed: pixels beside an
    infection HD95 in mm. A 5 px shift on 2 mm pixels is 10 mm for both."""
    truth = square_mask(40, 10, 10, 10)
    pred = square_mask(40, 10, 15, 10)
    row = case_metrics(pred, truth, num_classes=3,
                       class_names={1: "ground-glass", 2: "consolidation"}, spacing=(2.0, 2.0))
    assert row["hd95"] == pytest.approx(10.0)
    assert row["ground-glass_hd95"] == pytest.approx(10.0)


def test_miou_is_the_mean_of_the_class_ious() -> None:
    """IoUs background 50/75, ground-glass 1, consolidation 0 (missed): mean 5/9, where their
    median would be 2/3."""
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[:5, :5] = 1
    truth[5:, 5:] = 2
    pred = truth.copy()
    pred[5:, 5:] = 0
    row = case_metrics(pred, truth, num_classes=3)
    assert row["class1_iou"] == 1.0 and row["class2_iou"] == 0.0
    assert row["miou_with_background"] == pytest.approx((50 / 75 + 1.0 + 0.0) / 3)
    assert row["miou_without_background"] == pytest.approx(0.5)


def test_a_class_absent_from_both_masks_is_undefined_not_perfect() -> None:
    """A slice whose one ground-glass lesion was missed scored mIoU 0.5 (consolidation, in
    neither mask, counted IoU 1), and a model predicting nothing a fold HD95 of 0."""
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[:5, :5] = 1
    row = case_metrics(np.zeros_like(truth), truth, num_classes=3,
                       class_names={1: "ground-glass", 2: "consolidation"})
    assert row["ground-glass_dice"] == 0.0 and math.isnan(row["ground-glass_hd95"])
    for key in ("dice", "iou", "hd95"):
        assert math.isnan(row[f"consolidation_{key}"]), key
    assert row["consolidation_specificity"] == 1.0
    assert row["miou_without_background"] == 0.0
    empty = case_metrics(np.zeros_like(truth), np.zeros_like(truth), num_classes=3)
    assert empty["dice"] == 1.0 and math.isnan(empty["miou_without_background"])
    assert empty["miou_with_background"] == 1.0


def test_background_absent_from_both_masks_is_left_out_of_the_mean_iou() -> None:
    """An all-lesion crop (no background in either mask) predicted wholly as the wrong class
    scored mIoU 0.33: its background, absent from both masks, counted IoU 1."""
    truth = np.full((8, 8), 2, dtype=np.uint8)
    row = case_metrics(np.ones_like(truth), truth, num_classes=3,
                       class_names={1: "ground-glass", 2: "consolidation"})
    assert row["dice"] == 1.0
    assert row["ground-glass_iou"] == 0.0 and row["consolidation_iou"] == 0.0
    assert row["miou_with_background"] == 0.0
    assert row["miou_without_background"] == 0.0
    right = case_metrics(truth, truth, num_classes=3)
    assert right["miou_with_background"] == 1.0
    assert math.isnan(right["class1_dice"]) and right["class2_dice"] == 1.0


def test_summary_counts_undefined_values() -> None:
    rows = [{"dice": 1.0, "hd95": math.nan}, {"dice": 0.5, "hd95": 2.0}]
    summary = summarize(rows)
    assert summary["dice"]["mean"] == pytest.approx(0.75)
    hd95 = summary["hd95"]
    assert (hd95["mean"], hd95["median"], hd95["n"], hd95["undefined"]) == (2.0, 2.0, 1, 1)
    assert math.isnan(hd95["std"]), "one value has no spread"


def test_summary_median_is_the_middle_value_not_the_mean() -> None:
    summary = summarize([{"dice": 0.1}, {"dice": 0.8}, {"dice": 0.9}])["dice"]
    assert summary["median"] == pytest.approx(0.8)
    assert summary["mean"] == pytest.approx(0.6)


def test_summary_spread_is_the_sample_sd() -> None:
    """The probe's three Dice values: population SD 0.0733 was given, while cross-validation
    and compare give the sample SD (n - 1), 0.0898."""
    summary = summarize([{"dice": 0.9304}, {"dice": 0.9211}, {"dice": 0.7705}])
    assert summary["dice"]["std"] == pytest.approx(0.0898, abs=5e-5)


def test_hd95_leaks_no_monai_deprecation_warning() -> None:
    """Every evaluate and cross-validation call printed MONAI's FutureWarning about its own
    always_return_as_numpy argument."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert binary_metrics(square_mask(20, 0, 2, 4), square_mask(20, 0, 0, 4))["hd95"] > 0
    assert not [w for w in caught if "always_return_as_numpy" in str(w.message)]


def _monai_metrics(pred: np.ndarray, truth: np.ndarray,
                   spacing: tuple[float, ...] | None) -> dict[str, float]:
    """The values MONAI's own helpers give on float batches (covseg's earlier way)."""
    p, t = (torch.as_tensor(m, dtype=torch.float32)[None, None] for m in (pred, truth))
    confusion = get_confusion_matrix(p, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(p, t, percentile=95, spacing=spacing)
    return {"dice": float(compute_dice(p, t, ignore_empty=False)[0, 0]),
            "iou": float(compute_iou(p, t, ignore_empty=False)[0, 0]),
            **{name: float(compute_confusion_matrix_metric(name, confusion)[0, 0])
               for name in ("sensitivity", "specificity", "precision")},
            "hd95": float(hd95[0, 0])}


@pytest.mark.parametrize("shape, spacing", [((37, 53), None), ((37, 53), (0.7, 1.3)),
                                            ((9, 21, 17), (2.5, 0.71, 0.69))])
def test_counts_on_bool_masks_equal_monais_values_bit_for_bit(
        shape: tuple[int, ...], spacing: tuple[float, ...] | None) -> None:
    """The counts are numpy's on bool masks now, the edges cropped here; every value (HD95 of
    masks touching the image's edge, in odd spacings, included) stays MONAI's to the bit while
    the volume holds at most 2**24 voxels (above, MONAI's float32 counts round: see below)."""
    rng = np.random.default_rng(len(shape))
    for _ in range(5):
        pred, truth = (ndimage.gaussian_filter(rng.random(shape), 2) > 0.5 for _ in range(2))
        ours = binary_metrics(pred, truth, spacing)
        assert ours == _monai_metrics(pred, truth, spacing)
        assert dice(pred, truth) == ours["dice"]


def test_precision_and_specificity_count_exactly_above_2_to_the_24_voxels() -> None:
    """MONAI's float32 confusion matrix rounds counts to 8 or 16 above 2**24 voxels and takes fp
    as a difference of them: a 300x512x512 pair, a 100-voxel lesion and one false-positive voxel,
    had precision 100/108 = 0.926, not 100/101, and specificity 1 - 1.2e-7, not 1 - 1.3e-8.
    Counted exactly, each is the exact ratio rounded once: in float32 as MONAI divides while
    the denominator is at most 2**24 (precision's 101 predicted voxels), in float64 above
    (specificity's negatives)."""
    truth = np.zeros((300, 512, 512), dtype=bool)
    truth[150, 200:210, 200:210] = True
    pred = truth.copy()
    pred[100, 300, 300] = True
    row = binary_metrics(pred, truth)
    negatives = truth.size - 100
    assert row["precision"] == row["iou"] == float(np.float32(100) / np.float32(101))
    assert row["specificity"] == (negatives - 1) / negatives
    assert (row["sensitivity"], row["dice"]) == (1.0, float(np.float32(200) / np.float32(201)))


def test_the_rules_name_every_volume_format_scored_in_mm() -> None:
    """The rules copied into every record and report.md said HD95 was in mm for NIfTI volumes
    only, while NRRD and MetaImage volumes (3D Slicer's, ITK-SNAP's) are scored in mm too."""
    assert "in mm for volumes (NIfTI, NRRD, MetaImage) and their slices" in EMPTY_MASK_RULES


_PEAK_SCRIPT = """
import numpy as np
from covseg.metrics import binary_metrics

def mib(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key)) / 1024

pred, truth = np.zeros((64, 512, 512), bool), np.zeros((64, 512, 512), bool)
pred[20:40, 200:260, 200:260] = True
truth[25:45, 210:270, 190:250] = True
binary_metrics(pred[16:48, 180:290, 180:290], truth[16:48, 180:290, 180:290], (1.0, 0.7, 0.7))
before = mib("VmRSS")
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak (VmHWM) from here
row = binary_metrics(pred, truth, (1.0, 0.7, 0.7))
print(mib("VmHWM") - before, row["dice"])
"""


def test_scoring_a_volume_makes_no_float_copy_of_it() -> None:
    """Scoring a 600x512x512 pair took 5.85 GB: float32 copies of both masks, made twice, and
    MONAI's float temporaries. Counts and HD95 now cost about a byte per voxel: a pair of
    16.8 M-voxel masks must stay under one float32 copy of one (64 MiB) above its masks."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak memory it reads")
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True,
                          check=False, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if "clear_refs" in done.stderr:
        pytest.skip(f"cannot reset the peak memory: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    growth, dice_value = (float(v) for v in done.stdout.split())
    tp = 15 * 50 * 50  # z 25:40, y 210:260, x 200:250
    assert dice_value == pytest.approx(2 * tp / (2 * 20 * 60 * 60))
    assert growth < 64, f"scoring grew memory by {growth:.0f} MiB"


def test_a_multiclass_case_counts_each_class_overlap_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a lesion class was absent from both masks was counted again right after its
    metrics counted it (0.075 s a class of a 300x512x512 case): one count each of infection,
    background and every lesion class."""
    counted = []
    overlap = metrics_module._overlap

    def counting(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
        counted.append(pred.shape)
        return overlap(pred, truth)

    monkeypatch.setattr(metrics_module, "_overlap", counting)
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[:5, :5], truth[6:, 6:] = 1, 3
    row = case_metrics(truth, truth, num_classes=4)
    assert len(counted) == 1 + 4
    assert math.isnan(row["class2_iou"]) and row["miou_with_background"] == 1.0
