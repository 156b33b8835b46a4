"""Metric values against cases computed by hand, and the empty-mask rules."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from covseg.metrics import binary_metrics, case_metrics, summarize
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
    row = case_metrics(pred, truth, num_classes=3, class_names={1: "ground-glass", 2: "consolidation"})
    assert row["dice"] == 1.0  # infection (any label) is perfect
    assert row["ground-glass_dice"] == pytest.approx(2 * 25 / (25 + 50))
    assert row["consolidation_dice"] == 0.0
    background_iou = 1.0
    assert row["miou_with_background"] == pytest.approx((background_iou + 0.5 + 0.0) / 3)
    assert row["miou_without_background"] == pytest.approx((0.5 + 0.0) / 2)


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


def test_summary_counts_undefined_values() -> None:
    rows = [{"dice": 1.0, "hd95": math.nan}, {"dice": 0.5, "hd95": 2.0}]
    summary = summarize(rows)
    assert summary["dice"]["mean"] == pytest.approx(0.75)
    hd95 = summary["hd95"]
    assert (hd95["mean"], hd95["median"], hd95["n"], hd95["undefined"]) == (2.0, 2.0, 1, 1)
    assert math.isnan(hd95["std"]), "one value has no spread"


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
