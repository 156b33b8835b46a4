"""Lesion burden: volumes and % involved by hand, effusion, CT categories, lung notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covseg.burden import (
    ct_category,
    note_grown_lungs,
    note_lesion_outside_lungs,
    quantify,
    threshold_advice,
)
from covseg.errors import CovsegError
from covseg.lungs import Cut
from covseg.report import write_html


@pytest.mark.parametrize(("percent", "category"), [
    (0.0, "CT-0"), (1e-9, "CT-1"), (24.999, "CT-1"), (25.0, "CT-2"), (49.999, "CT-2"),
    (50.0, "CT-3"), (74.999, "CT-3"), (75.0, "CT-4"), (100.0, "CT-4")])
def test_ct_category_boundaries(percent: float, category: str) -> None:
    assert ct_category(percent) == category


def test_ct_category_rejects_impossible_percentages() -> None:
    with pytest.raises(CovsegError, match="0..100"):
        ct_category(-1.0)


def test_the_category_grades_both_lungs_together() -> None:
    """MosMedData grades a study by both lungs together, not by the worse lung: a left lung
    60 % involved beside a clear right lung of its size is a study 30 % involved, CT-2 (not
    CT-3), and the per-lung rows carry their % with no category."""
    lungs = np.zeros((2, 10, 20), dtype=np.uint8)
    lungs[:, :, :10], lungs[:, :, 10:] = 1, 2
    lesions = np.zeros_like(lungs)
    lesions[:, :6, 10:] = 1  # 120 of the left lung's 200 voxels
    result = quantify(lesions, (1.0, 1.0, 1.0), lungs)
    assert result["left_lung"]["percent_involved"] == 60.0
    assert result["study"]["percent_involved"] == 30.0 and result["study"]["ct_category"] == "CT-2"
    assert "ct_category" not in result["left_lung"] and "ct_category" not in result["right_lung"]


def test_known_volumes_per_lung_binary() -> None:
    spacing = (2.0, 0.5, 0.5)  # 0.5 mm^3 = 0.0005 mL per voxel
    lungs = np.zeros((4, 20, 20), dtype=np.uint8)
    lungs[:, :, :10] = 1  # 800 voxels = 0.4 mL right
    lungs[:, :10, 10:] = 2  # 400 voxels = 0.2 mL left
    lesions = np.zeros_like(lungs)
    lesions[0, :, :5] = 1  # 100 voxels in the right lung
    lesions[1, :10, 10:] = 1  # 100 voxels in the left lung
    lesions[2, 15:, 15:] = 1  # 25 voxels outside the lungs
    result = quantify(lesions, spacing, lungs)
    study, right, left = result["study"], result["right_lung"], result["left_lung"]
    assert result["multiclass"] is False and result["voxel_ml"] == pytest.approx(0.0005)
    assert study["lung_ml"] == pytest.approx(0.6) and study["lesion_ml"] == pytest.approx(0.1125)
    assert study["lesion_outside_lungs_ml"] == pytest.approx(0.0125)
    assert study["percent_involved"] == pytest.approx(100 * 200 / 1200)
    assert study["ct_category"] == "CT-1"
    assert right["lung_ml"] == pytest.approx(0.4) and right["percent_involved"] == 12.5
    assert left["lung_ml"] == pytest.approx(0.2) and left["percent_involved"] == 25.0


def test_multiclass_volumes_and_effusion_is_not_involvement() -> None:
    lungs = np.ones((2, 10, 10), dtype=np.uint8)
    lesions = np.zeros_like(lungs)
    lesions[0, :5] = 1  # 50 GGO
    lesions[0, 5:] = 2  # 50 consolidation
    lesions[1, :3] = 3  # 30 effusion, where the lung mask says lung: 170 voxels of lung
    result = quantify(lesions, (1.0, 1.0, 1.0), lungs)
    study = result["study"]
    assert result["multiclass"] is True
    assert (study["ggo_ml"], study["consolidation_ml"], study["effusion_ml"]) == (0.05, 0.05, 0.03)
    assert study["lesion_ml"] == pytest.approx(0.1) and study["lung_ml"] == pytest.approx(0.17)
    assert study["percent_involved"] == pytest.approx(100 * 100 / 170)
    assert study["ct_category"] == "CT-3"
    binary = quantify(lesions, (1.0, 1.0, 1.0), lungs, multiclass=False)["study"]
    assert binary["lesion_ml"] == pytest.approx(0.13) and "ggo_ml" not in binary


def test_effusion_inside_the_lungs_is_not_lung_volume() -> None:
    """Effusion where the lungs lie was counted as lung (lung 7 mL, 28.6 % below; right lung
    5 mL, 40 %): it fills the pleural space, so it is neither lung nor lung grown over lesion."""
    lesions = np.array([[[1, 2, 3, 3], [0, 0, 0, 0]]], dtype=np.uint8)  # GGO, cons., 2 effusion
    lungs = np.array([[[1, 1, 1, 0], [1, 1, 2, 2]]], dtype=np.uint8)  # one effusion in the right
    found = np.array([[[0, 0, 0, 0], [1, 1, 2, 2]]], dtype=np.uint8)  # grown over the top row
    result = quantify(lesions, (10.0, 10.0, 10.0), lungs, found_lungs=found)  # 1 mL voxels
    study, right, left = result["study"], result["right_lung"], result["left_lung"]
    assert (study["lung_ml"], study["lesion_ml"], study["effusion_ml"]) == (6.0, 2.0, 2.0)
    assert study["percent_involved"] == pytest.approx(100 * 2 / 6)
    assert (right["lung_ml"], right["percent_involved"]) == (4.0, 50.0)
    assert (left["lung_ml"], left["percent_involved"]) == (2.0, 0.0)
    assert (study["lesion_added_to_lungs_ml"], right["lesion_added_to_lungs_ml"]) == (2.0, 2.0)
    binary = quantify(lesions, (10.0, 10.0, 10.0), lungs, multiclass=False)["study"]
    assert (binary["lung_ml"], binary["lesion_ml"]) == (7.0, 4.0), "a binary 3 is lesion"


def test_masks_without_lungs_and_bad_masks() -> None:
    mask = np.zeros((2, 4, 4), dtype=np.int16)
    mask[0, 0, :3] = 255  # a 0/255 mask is binary
    result = quantify(mask, (1.0, 2.0, 2.0))
    assert result["study"]["lesion_ml"] == pytest.approx(0.012)
    assert result["study"]["ct_category"] is None and "right_lung" not in result
    with pytest.raises(CovsegError, match="labels 0..3"):
        quantify(mask, (1, 1, 1), multiclass=True)
    with pytest.raises(CovsegError, match="negative"):
        quantify(-np.ones((1, 2, 2), dtype=np.int8), (1, 1, 1))
    with pytest.raises(CovsegError, match="non-integer"):
        quantify(np.full((1, 2, 2), 0.5), (1, 1, 1))
    with pytest.raises(CovsegError, match="differ"):
        quantify(mask, (1, 1, 1), np.zeros((2, 4, 5), dtype=np.uint8))
    with pytest.raises(CovsegError, match="right"):
        quantify(mask, (1, 1, 1), np.full((2, 4, 4), 7, dtype=np.uint8))


def test_effusion_of_a_model_without_that_class_is_not_predicted(tmp_path: Path) -> None:
    """A 3-class model (background, ground-glass, consolidation) cannot find effusion: its
    effusion is None, "not predicted", not 0.00 mL (none found); label 3 in the mask is
    measured all the same. Its report says that the classes are rounded apart."""
    lungs = np.ones((2, 10, 10), dtype=np.uint8)
    lesions = np.zeros_like(lungs)
    lesions[0, :5] = 1
    result = quantify(lesions, (1.0, 1.0, 1.0), lungs, multiclass=True, effusion=False)
    assert result["study"]["effusion_ml"] is None
    assert "effusion_ml" not in result["right_lung"]
    lesions[1, :3] = 3
    assert quantify(lesions, (1.0, 1.0, 1.0), lungs, multiclass=True,
                    effusion=False)["study"]["effusion_ml"] == 0.03
    assert quantify(lesions * 0, (1.0, 1.0, 1.0), lungs,
                    multiclass=True)["study"]["effusion_ml"] == 0.0
    result["inputs"] = {}
    page = write_html(tmp_path / "r.html", result, "case", None).read_text()
    assert "<td>not predicted</td>" in page and "rounded separately" in page
    binary = quantify(lesions, (1.0, 1.0, 1.0), lungs, multiclass=False)
    binary["inputs"] = {}
    assert "rounded separately" not in write_html(tmp_path / "b.html", binary, "case",
                                                  None).read_text()


@pytest.mark.parametrize(("outside", "lesion", "shown"), [
    (0.14, 0.20, "0.14 mL of lesion lies outside the lung model's lungs, more than the 0.06 mL "),
    (12.34, 20.0, "12.3 mL of lesion lies outside the lung model's lungs, more than the 7.7 mL "),
])
def test_the_outside_lungs_note_tells_its_two_volumes_apart(
        outside: float, lesion: float, shown: str) -> None:
    """Both volumes were rounded to one decimal: 0.14 mL outside the lungs against 0.06 mL
    inside read "0.1 mL ..., more than the 0.1 mL inside"; small ones now take the decimals
    that tell them apart, larger ones keep one."""
    result: dict[str, Any] = {"study": {"lesion_ml": lesion, "lesion_outside_lungs_ml": outside}}
    note_lesion_outside_lungs(result, "ct.nii.gz")
    assert result["lung_note"].startswith(shown)


def test_category_effusion_and_outside_lesion_are_the_study_s_only() -> None:
    """docs/ct-studies.md: effusion, the CT category and the lesion outside the lungs are the
    study's only (MosMedData grades both lungs together; most effusion lies outside both lung
    masks, where no side is measured); a right lung 50 % involved has its % but no category."""
    lesions = np.array([[[1, 2, 3, 3], [0, 0, 0, 0]]], dtype=np.uint8)
    lungs = np.array([[[1, 1, 1, 0], [1, 1, 2, 2]]], dtype=np.uint8)
    result = quantify(lesions, (10.0, 10.0, 10.0), lungs)
    assert result["study"]["ct_category"] == "CT-2" and result["study"]["effusion_ml"] == 2.0
    for side in ("right_lung", "left_lung"):
        assert not {"ct_category", "effusion_ml", "lesion_outside_lungs_ml"} & set(result[side])
    assert result["right_lung"]["percent_involved"] == 50.0


def _lesion_in_and_out_of_the_lungs(outside: list[int]) -> dict[str, Any]:
    """The study of a 10 x 10 slice of 1 mL voxels whose top row lies outside both lungs (90 of
    lung), holding 3 GGO and 2 consolidation inside the right lung and ``outside``'s labels
    along the top row."""
    lungs = np.zeros((1, 10, 10), np.uint8)
    lungs[0, 1:, :5], lungs[0, 1:, 5:] = 1, 2
    lesions = np.zeros_like(lungs)
    lesions[0, 2, :3], lesions[0, 3, :2] = 1, 2
    lesions[0, 0, :len(outside)] = outside
    return quantify(lesions, (10.0, 10.0, 10.0), lungs, multiclass=True)["study"]


def test_class_shares_of_involvement_leave_out_lesion_outside_the_lungs() -> None:
    """Ground-glass and consolidation's % involved add up to % involved (docs/ct-studies.md): the
    4 GGO voxels outside the lungs are in neither, where GGO's counted them (7 of 90, 7.8 %)."""
    study = _lesion_in_and_out_of_the_lungs([1, 1, 1, 1])
    assert study["percent_involved"] == pytest.approx(100 * 5 / 90)
    assert study["ggo_percent_involved"] == pytest.approx(100 * 3 / 90)
    assert study["consolidation_percent_involved"] == pytest.approx(100 * 2 / 90)
    assert (study["ggo_percent_involved"] + study["consolidation_percent_involved"]
            == pytest.approx(study["percent_involved"]))
    assert study["lesion_outside_lungs_ml"] == 4.0


def test_consolidation_outside_the_lungs_is_lesion_outside_them() -> None:
    """4 consolidation and 2 GGO voxels outside the lungs are 6 mL of lesion outside them, not
    the GGO's 2 mL alone."""
    study = _lesion_in_and_out_of_the_lungs([2, 2, 2, 2, 1, 1])
    assert study["lesion_outside_lungs_ml"] == 6.0
    assert study["lesion_ml"] == 11.0 and study["percent_involved"] == pytest.approx(100 * 5 / 90)


def test_lungs_grown_by_a_quarter_of_their_aerated_volume_are_warned_of() -> None:
    """The grown-lungs warning compares the lesion grown over with the aerated lung, not with the
    lung counted after growing: nothing tested growth between 20 % and 25 % of the counted lung,
    where the other reading drops the warning and the lung_note, the only sign that % involved
    may hold tissue counted as lung. Right lung: 100 voxels counted, 22 of them grown over
    (22 > 25 % of the 78 aerated, but < 25 % of 100)."""
    lungs = np.zeros((1, 10, 20), np.uint8)
    lungs[0, :, :10], lungs[0, :, 10:] = 1, 2
    found = lungs.copy()
    found[0, :2, :10] = 0  # 20 voxels grown over
    found[0, 2, :2] = 0    # and 2 more
    lesions = ((found == 0) & (lungs > 0)).astype(np.uint8)
    result = quantify(lesions, (1.0, 1.0, 1.0), lungs, found_lungs=found)
    assert result["right_lung"]["lesion_added_to_lungs_ml"] == pytest.approx(0.022)
    note_grown_lungs(result, Cut(), "study", threshold_advice("give the lungs with --lungs"))
    assert "(right lung grown by more than 25%)" in result["lung_note"]


def test_auto_refuses_a_label_above_3_beside_classes_but_reads_instances_binary() -> None:
    """A multi-class mask holding a stray label 5 (0/1/2/5) was read as binary by default: its
    stray patch counted as lesion, ground-glass and consolidation dropped. Beside label 2 or 3
    a label above 3 is refused as --classes multiclass refuses it; labels 1..N all held (one
    per lesion, as connected-component tools write them) and 0/255 stay binary."""
    mask = np.zeros((2, 6, 6), dtype=np.int16)
    mask[0, 0, :2], mask[0, 1, :2], mask[1, 2, :2] = 1, 2, 5
    with pytest.raises(CovsegError, match="labels 0..3 .*found 5.*relabel a class mask"):
        quantify(mask, (1.0, 1.0, 1.0))
    instances = np.arange(36, dtype=np.int16).reshape(1, 6, 6)
    assert quantify(instances, (1.0, 1.0, 1.0))["multiclass"] is False
    assert quantify(np.where(mask > 0, 255, 0), (1.0, 1.0, 1.0))["multiclass"] is False
    assert quantify(np.minimum(mask, 3), (1.0, 1.0, 1.0))["multiclass"] is True


def _ungrown_result() -> dict[str, Any]:
    """quantify's result for two lungs grown over nothing."""
    lungs = np.zeros((1, 10, 20), np.uint8)
    lungs[0, :, :10], lungs[0, :, 10:] = 1, 2
    lesions = np.zeros_like(lungs)
    lesions[0, 4, 4] = 1
    return quantify(lesions, (1.0, 1.0, 1.0), lungs, found_lungs=lungs)


def test_the_grown_lungs_note_leaves_out_the_cut_outside_the_body() -> None:
    """A call cut in the air outside the body raised the threshold-lungs warning, blaming the
    threshold and offering --lung-model, which cuts the same voxels: that cut is no cause, and
    is not told beside a cut a threshold can get wrong. One voxel's 0.0005 mL read "0.00 mL
    ... was cut"."""
    advice = threshold_advice("give the lungs with --lung-model")
    body_only = _ungrown_result()
    note_grown_lungs(body_only, Cut((0, 0, 470, 0), 0.001), "study", advice)
    assert body_only.get("lung_note") is None
    one_voxel = _ungrown_result()
    note_grown_lungs(one_voxel, Cut((0, 0, 0, 1), 0.00049), "study", advice)
    assert one_voxel.get("lung_note") is None
    both = _ungrown_result()
    note_grown_lungs(both, Cut((0, 0, 470, 2000), 0.001), "study", advice)
    assert "; 2.00 mL of lesion reaching the lungs was cut beyond 30 mm from the lungs: the " in (
        both["lung_note"])
    assert "outside the body" not in both["lung_note"]
