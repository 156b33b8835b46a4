"""Quantification: volumes by hand, CT categories, reports, and batch runs over real masks."""

from __future__ import annotations

import csv
import hashlib
import html
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from covseg.batch import StudiesFailed, Study, find_studies, parse_shard, run_batch, select_shard
from covseg.burden import ct_category, note_lesion_outside_lungs, quantify
from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from covseg.io.lock import LOCK_FILE, PLAN_LOCK, SHARD_PLAN, writing_to
from covseg.io.nifti import read_nifti
from covseg.io.volume import write_mask_like
from covseg.lungs import LESION_DEPTH_MM
from covseg.quantify import quantify_batch, quantify_study
from covseg.records import content_hash
from covseg.report import write_html
from tests.conftest import (
    CONSOLIDATED_AFFINE,
    OVERCALLED_AFFINE,
    SAMPLE_DICOMS,
    SHARED_DATA,
    consolidated_chest,
    overcalled_chest,
    shared,
    started_process,
    wait_until_written,
)

MASKS = SHARED_DATA / "mosmed-masks" / "masks"
needs_masks = pytest.mark.skipif(not MASKS.is_dir(), reason=f"real data not found: {MASKS}")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(("percent", "category"), [
    (0.0, "CT-0"), (1e-9, "CT-1"), (24.999, "CT-1"), (25.0, "CT-2"), (49.999, "CT-2"),
    (50.0, "CT-3"), (74.999, "CT-3"), (75.0, "CT-4"), (100.0, "CT-4")])
def test_ct_category_boundaries(percent: float, category: str) -> None:
    assert ct_category(percent) == category


def test_ct_category_rejects_impossible_percentages() -> None:
    with pytest.raises(CovsegError, match="0..100"):
        ct_category(-1.0)


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


@needs_masks
def test_real_mosmed_masks_match_hand_counts(tmp_path: Path) -> None:
    paths = sorted(MASKS.glob("*.nii.gz"))[::5]
    assert len(paths) == 10
    for index, path in enumerate(paths):
        image = nib.load(str(path))
        voxels = np.count_nonzero(np.asarray(image.dataobj) == 1)
        expected = voxels * float(np.prod(image.header.get_zooms()[:3])) / 1000.0
        assert expected > 0
        mask = read_nifti(path, dtype=np.int16)
        result = quantify(mask.array, mask.spacing)
        assert result["study"]["lesion_ml"] == pytest.approx(expected, rel=1e-6)
        if index == 0:  # the full report path once: it is the slow part
            quantify_study(path, tmp_path / path.name)
            stored = json.loads((tmp_path / path.name / "quantification.json").read_text())
            assert stored["study"]["lesion_ml"] == pytest.approx(expected, rel=1e-6)
            assert stored["study"]["ct_category"] is None


def synthetic_study(folder: Path, name: str) -> tuple[Path, Path, float]:
    """CT with two lungs and a lesion of known volume; returns CT path, mask path, lesion mL."""
    folder.mkdir(parents=True, exist_ok=True)
    hu = np.full((64, 48, 6), -1000.0, dtype=np.float32)  # x, y, z
    hu[4:60, 4:44, :] = 40.0
    hu[10:28, 10:38, 1:5] = -850.0  # patient left (x small in RAS)
    hu[36:54, 10:38, 1:5] = -850.0  # patient right
    mask = np.zeros(hu.shape, dtype=np.int16)
    mask[40:46, 20:26, 2:4] = 1  # 72 voxels in the right lung
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    ct = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), str(ct))
    masks = folder / "masks"
    masks.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(mask, affine), str(masks / f"{name}_mask.nii.gz"))
    return ct, masks / f"{name}_mask.nii.gz", 72 * 0.7 * 0.7 * 5.0 / 1000.0


def test_quantify_study_with_threshold_lungs_writes_reports(tmp_path: Path) -> None:
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    result = quantify_study(mask, tmp_path / "out", image=tmp_path / "in", html_report=True)
    lung_ml = 2 * 18 * 28 * 4 * 0.7 * 0.7 * 5.0 / 1000.0
    assert result["study"]["lesion_ml"] == pytest.approx(lesion_ml)
    assert result["study"]["lung_ml"] == pytest.approx(lung_ml)
    assert result["right_lung"]["lesion_ml"] == pytest.approx(lesion_ml)
    assert result["left_lung"]["lesion_ml"] == 0.0
    assert result["study"]["ct_category"] == "CT-1"
    assert result["inputs"]["lung_source"] == "threshold"
    out = tmp_path / "out"
    with Image.open(out / "montage.png") as png:
        assert png.format == "PNG" and png.size[0] > 100
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "CT-1" in page and "<script" not in page
    rows = read_rows(out / "quantification.csv")
    assert [r["region"] for r in rows] == ["study", "right_lung", "left_lung"]
    nib.save(nib.Nifti1Image((nib.load(str(mask)).get_fdata() * 0).astype(np.int16) + 1,
                             np.diag([0.7, 0.7, 5.0, 1.0])), str(tmp_path / "lungs.nii.gz"))
    given = quantify_study(mask, tmp_path / "out2", lungs=tmp_path / "lungs.nii.gz")
    assert given["study"]["lung_ml"] == pytest.approx(64 * 48 * 6 * 0.7 * 0.7 * 5.0 / 1000.0)
    assert given["inputs"]["lung_source"] == "mask"


def test_an_instance_labelled_mask_counts_every_lesion_once(tmp_path: Path) -> None:
    """A mask holding each lesion under its own label (20 labels, as connected-component tools
    write them) is one binary lesion mask: neither refused as an image nor read as classes."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    lesions = np.zeros((64, 48, 6), dtype=np.int16)
    for k in range(20):
        x = (12 if k < 10 else 38) + 2 * (k % 5)
        y = 12 + 12 * ((k % 10) // 5)
        lesions[x:x + 2, y:y + 2, 2] = k + 1  # 4 voxels each, 10 in each lung
    nib.save(nib.Nifti1Image(lesions, np.diag([0.7, 0.7, 5.0, 1.0])), str(mask))
    result = quantify_study(mask, tmp_path / "out", image=tmp_path / "in")
    voxel_ml = 0.7 * 0.7 * 5.0 / 1000.0
    assert not result["multiclass"]
    assert result["study"]["lesion_ml"] == pytest.approx(80 * voxel_ml)
    assert result["right_lung"]["lesion_ml"] == pytest.approx(40 * voxel_ml)
    assert result["left_lung"]["lesion_ml"] == pytest.approx(40 * voxel_ml)


@pytest.mark.parametrize(("name", "sides"), [
    ("lungs.nii.gz", (1, 2)), ("s1.nii.gz", (1, 2)), ("s1.nii.gz", (2, 1)),
    ("lungs.nii.gz", (2, 1)), ("s1.nii.gz", (1, 1)), ("lungs.nii.gz", (255, 255))])
def test_a_lung_mask_is_counted_as_given_whatever_its_name_and_labels(
        tmp_path: Path, name: str, sides: tuple[int, int]) -> None:
    """A --lungs mask with a hole (a lesion left out) and a small midline part (the trachea)
    was hole-filled and its midline part dropped unless it was named lungs.nii.gz with covseg's
    labels: 88.5 mL instead of the mask's 83.5. Now its non-zero voxels are the lung, whatever
    its name and labels (1/2 either way round kept as sides, others sided again)."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    lungs = two_lungs(mask, sides)
    lungs[44:46, 20:22, 2] = 0  # a hole in the right lung
    lungs[30:34, 4:7, 2] = sides[0]  # a small part across the midline (x 32), above the lungs
    result = quantify_study(mask, tmp_path / "out",
                            lungs=save_like(mask, lungs, tmp_path / "given" / name))
    voxel_ml = 0.7 * 0.7 * 5.0 / 1000
    assert result["study"]["lung_ml"] == pytest.approx((lungs > 0).sum() * voxel_ml)
    if sides[0] != sides[1]:
        assert result["right_lung"]["lung_ml"] == pytest.approx((lungs == sides[0]).sum()
                                                                * voxel_ml)


def two_lungs(mask: Path, labels: tuple[int, int] = (1, 2)) -> np.ndarray:
    """Lungs on the grid of ``mask`` (x, y, z): ``labels`` = (right, left) label values."""
    lungs = np.zeros(nib.load(str(mask)).shape, dtype=np.uint8)
    lungs[36:54, 10:38, 1:5] = labels[0]  # patient right (x large in RAS)
    lungs[10:28, 10:38, 1:5] = labels[1]
    return lungs


def save_like(mask: Path, data: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, nib.load(str(mask)).affine), str(path))
    return path


def test_a_binary_mask_named_lungs_is_split_again(tmp_path: Path) -> None:
    """A user's 0/1 lung mask (or predict's merged to 0/1) named lungs.nii.gz is not taken for
    the right lung alone: its sides are found again, as under any other name."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    binary = two_lungs(mask, (1, 1))
    places = (("a", "lungs.nii.gz"), ("b", "my_lungs.nii.gz"))
    results = [quantify_study(mask, tmp_path / f"out{i}",
                              lungs=save_like(mask, binary, tmp_path / folder / name))
               for i, (folder, name) in enumerate(places)]
    half = 18 * 28 * 4 * 0.7 * 0.7 * 5.0 / 1000
    for result in results:
        assert result["right_lung"]["lung_ml"] == pytest.approx(half)
        assert result["left_lung"]["lung_ml"] == pytest.approx(half)


@pytest.mark.parametrize("shift", [-45, 45])
def test_a_lung_mask_at_the_image_edge_keeps_its_sides_with_the_ct(tmp_path: Path, shift: int,
                                                                    capsys) -> None:
    """`quantify --image CT --lungs MASK` of a patient off-centre, a lung at the image's edge:
    the sides were found at the centre of the body cut by the edge, and 17-22 % of the lung
    voxels counted on the wrong side; now each lung is wholly on its own, and no "lungs"
    progress bar is drawn."""
    x, y = np.indices((120, 100))  # NIfTI (x, y, z), RAS: patient right at large x
    centre = 60 + shift
    hu = np.full((120, 100, 4), -1000.0, dtype=np.float32)
    hu[((y - 50) / 36) ** 2 + ((x - centre) / 54) ** 2 <= 1] = 40.0
    truth = np.zeros(hu.shape, dtype=np.uint8)
    for label, sign in ((1, 1), (2, -1)):
        truth[((y - 50) / 27) ** 2 + ((x - centre - sign * 24) / 18) ** 2 <= 1] = label
    hu[truth > 0] = -850.0
    assert truth[[0, -1]].any(), "a lung reaches the image's edge"
    lesions = np.where(truth == 1, 1, 0).astype(np.int16)
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    for name, data in (("ct", hu), ("mask", lesions), ("lungs", (truth > 0).astype(np.uint8))):
        nib.save(nib.Nifti1Image(data, affine), str(tmp_path / f"{name}.nii.gz"))
    result = quantify_study(tmp_path / "mask.nii.gz", tmp_path / "out",
                            lungs=tmp_path / "lungs.nii.gz", image=tmp_path / "ct.nii.gz")
    voxel_ml = 0.7 * 0.7 * 5.0 / 1000
    assert result["right_lung"]["lung_ml"] == pytest.approx((truth == 1).sum() * voxel_ml)
    assert result["left_lung"]["lung_ml"] == pytest.approx((truth == 2).sum() * voxel_ml)
    assert result["right_lung"]["percent_involved"] == pytest.approx(100.0)
    assert "lungs" not in capsys.readouterr().err


def test_predicts_one_sided_lungs_are_kept_when_its_record_agrees(tmp_path: Path) -> None:
    """A lungs.nii.gz with one lung only is kept as labelled when predict's record beside it
    found that lung alone (a one-lung study); when the record found both (merged to 0/1 since)
    or there is no record, it is any lung mask, sided again."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    one = two_lungs(mask, (0, 1))  # label 1 on the image's left: sided again, it is the left
    lungs = save_like(mask, one, tmp_path / "pred" / "lungs.nii.gz")
    split = quantify_study(mask, tmp_path / "split",
                           lungs=save_like(mask, one, tmp_path / "other_lungs.nii.gz"))
    record = lungs.with_name("quantification.json")
    right_ml = (one == 1).sum() * 0.7 * 0.7 * 5.0 / 1000
    for left_ml in (0.0, 0.3, None):
        if left_ml is None:
            record.unlink()
        else:
            record.write_text(json.dumps({"right_lung": {"lung_ml": right_ml},
                                          "left_lung": {"lung_ml": left_ml}}))
        result = quantify_study(mask, tmp_path / f"out{left_ml}", lungs=lungs)
        expected = ({"right_lung": right_ml, "left_lung": 0.0} if left_ml == 0.0 else
                    {side: split[side]["lung_ml"] for side in ("right_lung", "left_lung")})
        assert {side: result[side]["lung_ml"] for side in expected} == pytest.approx(expected)
    assert split["right_lung"]["lung_ml"] != pytest.approx(right_ml)


def test_a_shifted_zenodo_lung_mask_keeps_its_sides_with_the_ct(tmp_path: Path) -> None:
    """A Zenodo lung mask (1 = left, 2 = right) whose right lung reaches across the body's
    midline (mediastinal shift) was sided again at the midline with --image: part of the right
    lung was counted left (left 17 % involved instead of 49 %). Its own labels are the sides
    now, with the CT or without."""
    x, y = np.indices((80, 64))  # NIfTI (x, y, z), RAS: patient right at large x
    hu = np.full((80, 64, 4), -1000.0, dtype=np.float32)
    hu[((x - 40) / 36) ** 2 + ((y - 32) / 28) ** 2 <= 1] = 40.0
    zenodo = np.zeros(hu.shape, dtype=np.uint8)
    zenodo[((x - 46) / 20) ** 2 + ((y - 32) / 20) ** 2 <= 1] = 2  # right lung, x 26..66
    zenodo[((x - 14) / 6) ** 2 + ((y - 32) / 12) ** 2 <= 1] = 1  # small left lung
    hu[zenodo > 0] = -850.0
    lesions = ((zenodo == 1) & (y > 32)[..., None]).astype(np.int16)
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    for name, data in (("ct", hu), ("mask", lesions), ("lungs", zenodo)):
        nib.save(nib.Nifti1Image(data, affine), str(tmp_path / f"{name}.nii.gz"))
    voxel_ml = 0.7 * 0.7 * 5.0 / 1000
    for image in (None, tmp_path / "ct.nii.gz"):
        result = quantify_study(tmp_path / "mask.nii.gz", tmp_path / f"out{image is None}",
                                lungs=tmp_path / "lungs.nii.gz", image=image)
        assert result["right_lung"]["lung_ml"] == pytest.approx((zenodo == 2).sum() * voxel_ml)
        assert result["left_lung"]["lung_ml"] == pytest.approx((zenodo == 1).sum() * voxel_ml)
        assert result["left_lung"]["percent_involved"] == pytest.approx(
            100 * lesions.sum() / (zenodo == 1).sum())


def test_a_lung_mask_of_one_lung_is_not_cut_in_two(tmp_path: Path, caplog) -> None:
    """A --lungs mask holding the left lung alone was split at its own centre: the lesion, all
    in the left lung, made a "right lung" 50 % involved. Now it is one lung: on the body's side
    in the CT given with --image, else on the image's side, with a warning."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    lesion = np.zeros(nib.load(str(mask)).shape, dtype=np.int16)
    lesion[12:18, 20:26, 2:4] = 1  # 72 voxels in the left lung (x small in RAS)
    left_mask = save_like(mask, lesion, tmp_path / "left" / "case_mask.nii.gz")
    lungs = save_like(mask, two_lungs(mask, (0, 1)), tmp_path / "one_lung.nii.gz")
    lesion_ml = 72 * 0.7 * 0.7 * 5.0 / 1000
    lung_ml = 18 * 28 * 4 * 0.7 * 0.7 * 5.0 / 1000
    for image in (None, ct):
        caplog.clear()
        with caplog.at_level("WARNING"):
            result = quantify_study(left_mask, tmp_path / f"out{image is None}", lungs=lungs,
                                    image=image)
        assert result["left_lung"]["lung_ml"] == pytest.approx(lung_ml)
        assert result["left_lung"]["lesion_ml"] == pytest.approx(lesion_ml)
        assert result["right_lung"]["lung_ml"] == 0.0
        assert result["right_lung"]["percent_involved"] is None
        assert ("no two lungs side by side" in caplog.text) is (image is None)


def test_zenodo_lungs_named_like_predicts_are_not_read_swapped(tmp_path: Path, caplog) -> None:
    """A Zenodo lung mask (1 = left, 2 = right) saved as lungs.nii.gz beside the infection mask
    was taken for covseg's labels: the right lung's lesion was reported in the left lung."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    folder = tmp_path / "zenodo"
    infection = save_like(mask, np.asarray(nib.load(str(mask)).dataobj),
                          folder / "infection.nii.gz")
    save_like(mask, two_lungs(mask, (2, 1)), folder / "lungs.nii.gz")
    with caplog.at_level("WARNING"):
        result = quantify_study(infection, tmp_path / "out")
    assert result["inputs"]["lungs"] == str((folder / "lungs.nii.gz").resolve())
    assert result["right_lung"]["lesion_ml"] == pytest.approx(lesion_ml)
    assert result["left_lung"]["lesion_ml"] == 0.0
    assert "read as 1 = left, 2 = right" in caplog.text
    save_like(mask, two_lungs(mask), folder / "lungs.nii.gz")  # covseg's labels: kept
    caplog.clear()
    with caplog.at_level("WARNING"):
        kept = quantify_study(infection, tmp_path / "out2")
    assert kept["right_lung"]["lesion_ml"] == pytest.approx(lesion_ml) and not caplog.text


@pytest.mark.parametrize("lesion_side", ["right", "left"])
def test_a_lung_mask_with_a_lesion_labelled_2_is_not_read_as_sides(tmp_path: Path, caplog,
                                                                    lesion_side: str) -> None:
    """A 0/1/2 lung mask of lungs labelled 1 and a lesion area labelled 2 was read as the
    right and left lungs: with the area in the left lung, "right lung" was both lungs and
    "left lung" the area; in the right lung, the right lung was 100 % involved. Labels 1 and
    2 that do not lie side by side are lung, sided again, with a warning saying why."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    lungs = two_lungs(mask, (1, 1))
    area = np.zeros(lungs.shape, dtype=bool)
    area[(40 if lesion_side == "right" else 14):][:8, 20:26, 2:4] = True
    lungs[area] = 2
    lung_ml = 18 * 28 * 4 * 0.7 * 0.7 * 5.0 / 1000
    with caplog.at_level("WARNING"):
        result = quantify_study(mask, tmp_path / "out",
                                lungs=save_like(mask, lungs, tmp_path / "lungs.nii.gz"))
    assert result["right_lung"]["lung_ml"] == pytest.approx(lung_ml)
    assert result["left_lung"]["lung_ml"] == pytest.approx(lung_ml)
    assert result["right_lung"]["lesion_ml"] == pytest.approx(lesion_ml)
    assert "labels 1 and 2 are not read as the right and left lungs (label 2 lies among" in (
        caplog.text)


def test_a_right_lung_crossing_the_midline_keeps_the_left_lungs_label(tmp_path: Path,
                                                                      caplog) -> None:
    """Labels 1 = right, 2 = left where the right lung's front reaches across the midline in
    front of a small collapsed left lung were discarded (the left lung "within the right
    lung's span"), and the sides found again took both for one right lung: the left lung was
    counted as 0 mL. Two lungs not lying among each other's voxels keep their labels."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    lungs = two_lungs(mask, (1, 0))
    lungs[14:36, 30:38, 1:5] = 1  # the right lung's front, across the midline (x 32)
    lungs[16:24, 12:22, 1:5] = 2  # a small left lung behind it
    with caplog.at_level("WARNING"):
        result = quantify_study(mask, tmp_path / "out",
                                lungs=save_like(mask, lungs, tmp_path / "lungs.nii.gz"))
    voxel_ml = 0.7 * 0.7 * 5.0 / 1000
    assert result["right_lung"]["lung_ml"] == pytest.approx((18 * 28 + 22 * 8) * 4 * voxel_ml)
    assert result["left_lung"]["lung_ml"] == pytest.approx(8 * 10 * 4 * voxel_ml)
    assert result["right_lung"]["lesion_ml"] == pytest.approx(lesion_ml)
    assert not caplog.text


def test_an_identity_affine_lung_mask_keeps_covsegs_labels(tmp_path: Path, caplog) -> None:
    """A numpy pipeline's lung mask (np.eye(4)) labelled 1 right, 2 left in the display
    orientation (the right lung at small column index) was "corrected" to Zenodo's labels by
    its identity affine: the right lung's lesion was reported in the left lung."""
    lungs = np.zeros((64, 48, 6), dtype=np.uint8)  # x, y, z
    lungs[10:28, 10:38, 1:5] = 1  # right lung, on the image's left
    lungs[36:54, 10:38, 1:5] = 2
    lesion = np.zeros(lungs.shape, dtype=np.uint8)
    lesion[14:20, 20:26, 2:4] = 1
    for name, data in (("lungs", lungs), ("mask", lesion)):
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / f"{name}.nii.gz"))
    with caplog.at_level("WARNING"):
        result = quantify_study(tmp_path / "mask.nii.gz", tmp_path / "out",
                                lungs=tmp_path / "lungs.nii.gz")
    assert result["right_lung"]["lesion_ml"] == pytest.approx(72 / 1000)
    assert result["left_lung"]["lesion_ml"] == 0.0
    assert "identity (no real geometry), which gives no sides to check" in caplog.text


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


def test_summary_shows_lesion_outside_the_lungs(tmp_path: Path) -> None:
    """A lesion partly outside the lungs: summary.csv says how much, in the last columns (the
    columns before them keep their places), beside the lesion counted as lung beyond the lungs
    found (none: a lung mask is counted as given)."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    lungs = two_lungs(mask)
    lungs[36:43] = 0  # half of the lesion (x 40..45) falls outside the right lung
    result = quantify_batch([mask], tmp_path / "out",
                            lungs=save_like(mask, lungs, tmp_path / "lungs.nii.gz"))
    row = read_rows(result.summary)[0]
    assert list(row) == ["study", "status", "error", "lung_ml", "lesion_ml", "percent_involved",
                         "ct_category", "right_percent_involved", "left_percent_involved",
                         "ggo_ml", "consolidation_ml", "effusion_ml", "input", "output",
                         "lesion_outside_lungs_ml", "lesion_added_to_lungs_ml", "lungs"]
    assert float(row["lesion_added_to_lungs_ml"]) == 0.0
    assert row["lungs"] == f"lung mask {(tmp_path / 'lungs.nii.gz').resolve()}"
    assert float(row["lesion_ml"]) == pytest.approx(lesion_ml, rel=1e-5)
    assert float(row["lesion_outside_lungs_ml"]) == pytest.approx(lesion_ml / 2, rel=1e-5)



@pytest.mark.parametrize(("cut", "noted"), [(43, False), (44, True)])
def test_more_lesion_outside_a_given_lung_mask_than_inside_is_warned_of(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: int, noted: bool) -> None:
    """quantify --lungs said nothing of lesion outside the given lungs, left out of
    percent_involved, however much there was; it now warns once and records the lung_note as
    predict --lung-model does (half the lesion outside is not noted, two thirds is)."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    lungs = two_lungs(mask)
    lungs[36:cut] = 0  # the lesion spans x 40..45: 3 or 4 of its 6 columns fall outside
    with caplog.at_level("WARNING"):
        result = quantify_study(mask, tmp_path / "out",
                                lungs=save_like(mask, lungs, tmp_path / "lungs.nii.gz"))
    said = [r.getMessage() for r in caplog.records if "outside the lung mask" in r.getMessage()]
    stored = json.loads((tmp_path / "out" / "quantification.json").read_text())["lung_note"]
    outside = lesion_ml * (cut - 40) / 6
    assert result["study"]["lesion_outside_lungs_ml"] == pytest.approx(outside, rel=1e-5)
    note = result["lung_note"]
    assert note == stored and (note is not None) == noted
    assert said == ([f"{mask}: {note}"] if noted else [])
    if noted:
        assert note.startswith(f"{outside:.2f} mL of lesion lies outside the lung mask's lungs, "
                               f"more than the {lesion_ml - outside:.2f} mL inside")  # not 0.1
        assert "the lung mask may have missed consolidated lung" in note
        assert "or quantify with --image CT and no lung mask (threshold lungs" in note


def test_report_says_whether_lungs_were_looked_for(tmp_path: Path) -> None:
    """No category: 'no lungs found' when a lung mask (or CT) was there but held no lung,
    'no lung mask' when there was none to look in."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    empty = save_like(mask, np.zeros(nib.load(str(mask)).shape, np.uint8), tmp_path / "x.nii.gz")
    for lungs, reason in ((empty, "no lungs found"), (None, "no lung mask")):
        quantify_study(mask, tmp_path / reason, lungs=lungs, html_report=True)
        page = (tmp_path / reason / "report.html").read_text()
        assert f"Category: not available ({reason})" in page


@pytest.mark.parametrize(("lesion", "shown", "category"), [
    (9_999, "24.99", "CT-1"), (10_000, "25.00", "CT-2"), (19_999, "49.99", "CT-2"),
    (1, "< 0.01", "CT-1"), (0, "0.00", "CT-0")])
def test_report_percentages_never_contradict_the_category(
        tmp_path: Path, lesion: int, shown: str, category: str) -> None:
    """Rounded to nearest, 24.9975 % read 25.00 under CT-1 (and 49.9975 % read 50.00 under
    CT-2) beside the rule putting 25 % in CT-2: % involved is rounded down, and a lesion under
    0.01 % reads "< 0.01", not the 0 of CT-0; mL keep 2 decimals."""
    lungs = np.ones((1, 100, 400), np.uint8)
    lungs[:, :, 200:] = 2  # 40 000 voxels of 1 mm^3
    lesions = np.zeros_like(lungs)
    lesions.reshape(-1)[:lesion] = 1
    result = quantify(lesions, (1.0, 1.0, 1.0), lungs)
    assert result["study"]["ct_category"] == category
    page = write_html(tmp_path / "report.html", result, "case", None).read_text()
    header, study = (re.findall(r"<t[dh]>(.*?)</t[dh]>", row)
                     for row in re.findall(r"<tr>(.*?)</tr>", page)[:2])
    cells = dict(zip(header, study, strict=True))
    assert html.unescape(cells["percent_involved"]) == shown
    assert cells["ct_category"] == category and cells["lung_ml"] == "40.00"


def test_batch_goes_on_past_failures_skips_done_and_shards(tmp_path: Path) -> None:
    _, good, lesion_ml = synthetic_study(tmp_path / "in", "good")
    _, other, _ = synthetic_study(tmp_path / "in", "other")
    masks = good.parent
    blob = other.read_bytes()
    (masks / "cut_mask.nii.gz").write_bytes(blob[: len(blob) // 3])
    nan = np.full((4, 4, 2), np.nan, dtype=np.float32)
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(masks / "nan_mask.nii.gz"))
    (masks / "notes").mkdir()
    out = tmp_path / "out"
    first = quantify_batch([masks], out)
    assert (first.done, first.skipped, first.failed) == (2, 0, 3)
    rows = {r["study"]: r for r in read_rows(first.summary)}
    assert rows["cut"]["status"] == "failed" and "truncated" in rows["cut"]["error"]
    assert "NaN" in rows["nan"]["error"] and rows["notes"]["status"] == "failed"
    assert float(rows["good"]["lesion_ml"]) == pytest.approx(lesion_ml, rel=1e-5)
    with Image.open(out / "summary.png") as chart:  # the two quantified studies, no lungs: mL
        assert chart.format == "PNG" and chart.size[1] > 100
    again = quantify_batch([masks], out)
    assert (again.done, again.skipped, again.failed) == (0, 2, 3)
    halves = [quantify_batch([masks], tmp_path / "sharded", shard=(i, 2)) for i in (0, 1)]
    names = [{r["study"] for r in read_rows(h.summary)} for h in halves]
    assert names[0].isdisjoint(names[1]) and names[0] | names[1] == set(rows)
    assert halves[0].summary.name == "summary_shard0of2.csv"
    merged = quantify_batch([masks], tmp_path / "sharded")  # after the shards: the whole summary
    assert merged.done == 0 and merged.summary.name == "summary.csv"
    statuses = {r["study"]: r["status"] for r in read_rows(merged.summary)}
    assert statuses == {name: r["status"] for name, r in rows.items()}  # done by the shards
    assert not list((tmp_path / "sharded").glob("summary_shard*")), "folded into summary.csv"


WAITING_BATCH = """
import json, sys, time
from pathlib import Path
from covseg.batch import Study, run_batch

out, signals, name, index, count = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:6]
settings = json.loads(sys.argv[6]) if len(sys.argv) > 6 else None


def process(study, folder):
    (signals / f"started_{name}").write_text("")
    while not (signals / f"go_{name}").exists():
        time.sleep(0.02)
    return {}


studies = [Study(f"s{i}", signals / "none") for i in range(int(count))]
run_batch(studies, out, process, shard=(int(index), int(count)), settings=settings)
"""
"""A batch (shard ``index``/``count``, optional ``settings`` as JSON) into ``out`` in a process
of its own, which holds ``out`` from its first study on (``signals/started_NAME``) until
``signals/go_NAME`` exists."""


def _waiting_batches(out: Path, signals: Path, shards: dict[str, tuple[int, int]],
                     settings: dict[str, Any] | None = None
                     ) -> dict[str, subprocess.Popen[str]]:
    """The batches ``shards`` (name: shard) started side by side, each holding ``out``, with
    ``settings`` where given."""
    signals.mkdir(exist_ok=True)
    extra = [json.dumps(settings)] if settings is not None else []
    batches = {name: started_process(WAITING_BATCH, out, signals, name, *shard, *extra)
               for name, shard in shards.items()}
    for name, batch in batches.items():
        wait_until_written(signals / f"started_{name}", batch)
    return batches


def _ended(signals: Path, name: str, batch: subprocess.Popen[str]) -> None:
    """Let the waiting batch ``name`` end, and check that it ended well."""
    (signals / f"go_{name}").write_text("")
    _, err = batch.communicate(timeout=120)
    assert batch.returncode == 0, err


def _whole_batch(out: Path) -> int:
    """A batch without shards into ``out``, here; the studies it did."""
    return run_batch([Study("whole", out.parent / "none")], out, lambda study, folder: {}).done


def test_shards_share_their_out_and_a_whole_batch_meanwhile_is_refused(tmp_path: Path) -> None:
    """Shards took no lock: a predict or quantify without --shard started into their --out
    while they ran was not refused (nor a shard started while it ran), and rewrote summary.csv
    from folders they were writing. Shards hold --out's lock shared: side by side they run,
    a whole batch meanwhile is refused in one line, and the file goes with the last of them
    (a shard ending, or killed, leaves it to the others still running)."""
    out, signals = tmp_path / "out", tmp_path / "signals"
    shards = _waiting_batches(out, signals, {f"shard{i}": (i, 3) for i in range(3)})
    pids = "|".join(str(batch.pid) for batch in shards.values())
    refusal = (rf"^covseg --shard runs are writing to {re.escape(str(out))} \(the last to "
               rf"start: pid ({pids})\); wait for them to end, or pick another --out$")
    try:
        with pytest.raises(CovsegError, match=refusal):
            _whole_batch(out)
        shards["shard0"].send_signal(signal.SIGKILL)  # its lock goes with it
        shards["shard0"].communicate(timeout=60)
        _ended(signals, "shard1", shards["shard1"])
        assert (out / LOCK_FILE).is_file(), "kept for shard2, which still holds it"
        with pytest.raises(CovsegError, match=refusal):
            _whole_batch(out)
    finally:
        for name in shards:
            (signals / f"go_{name}").write_text("")
    _ended(signals, "shard2", shards["shard2"])
    assert not (out / LOCK_FILE).exists(), "removed by the last shard to end"
    assert _whole_batch(out) == 1
    assert sorted(path.name for path in out.iterdir()) == [
        "summary.csv", *(f"summary_shard{i}of3.csv" for i in (1, 2))], (
        "no lock file nor plan left; the killed shard's summary, of no study, folded in")


def _shard_here(out: Path, shard: tuple[int, int], settings: dict[str, Any] | None = None
                ) -> int:
    """A shard of two studies into ``out``, here; the studies it did."""
    studies = [Study(f"s{i}", out.parent / "none") for i in range(2)]
    return run_batch(studies, out, lambda study, folder: {}, shard=shard,
                     settings=settings).done


def test_a_shard_of_another_n_beside_running_shards_is_refused(tmp_path: Path) -> None:
    """Side by side, shards 0/2 and 0/3 both ran: one study done twice at once, another
    never. A shard of another N than the shards running is refused in one line naming
    theirs; one of their N is taken, and the plan goes with the last of them."""
    out, signals = tmp_path / "out", tmp_path / "signals"
    running = _waiting_batches(out, signals, {"half": (0, 2)})["half"]
    try:
        assert json.loads((out / SHARD_PLAN).read_text())["shards"] == 2
        with pytest.raises(CovsegError, match=(
                rf"^covseg --shard runs of N = 2 are writing to {re.escape(str(out))}; "
                r"--shard 0/3 beside them would do some studies twice and others never: give "
                r"--shard I/2 as they do, or wait for them to end$")):
            _shard_here(out, (0, 3))
        assert not (out / "summary_shard0of3.csv").exists()
        assert _shard_here(out, (1, 2)) == 1
    finally:
        _ended(signals, "half", running)
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")]


def test_a_shard_of_other_settings_beside_running_shards_is_refused(tmp_path: Path) -> None:
    """Side by side, shards 0/2 and 1/2 --threshold 0.7 both ran and the folder mixed two
    thresholds (only studies done before a shard started were checked). A shard whose
    settings differ from the running shards' is refused naming the difference; the HTML
    report, which changes no figure, may differ."""
    out, signals = tmp_path / "out", tmp_path / "signals"
    theirs = {"threshold": 0.4, "html": False}
    running = _waiting_batches(out, signals, {"half": (0, 2)}, theirs)["half"]
    try:
        with pytest.raises(CovsegError, match=(
                rf"^covseg --shard runs are writing to {re.escape(str(out))} with other "
                r"settings than this shard's \(threshold: 0.4 -> 0.7\), which would mix two "
                r"methods' figures in one folder: give their settings, wait for them to end, "
                r"or pick another --out$")):
            _shard_here(out, (1, 2), {"threshold": 0.7, "html": False})
        assert _shard_here(out, (1, 2), {"threshold": 0.4, "html": True}) == 1
    finally:
        _ended(signals, "half", running)


def test_a_stale_plan_is_replaced_by_the_first_shard(tmp_path: Path) -> None:
    """Shards killed outright leave their plan: the next first shard, which no other shard
    runs beside, replaces it (the studies' records refuse other settings), and it goes with
    the lock when that shard ends."""
    out = tmp_path / "out"
    out.mkdir()
    (out / SHARD_PLAN).write_text(json.dumps({"shards": 3, "command": "studies",
                                              "settings": {"threshold": 0.9}}))
    (out / PLAN_LOCK).write_text("")
    assert _shard_here(out, (0, 2), {"threshold": 0.4}) == 1
    assert sorted(path.name for path in out.iterdir()) == ["summary_shard0of2.csv"]


def test_shards_starting_at_once_agree_one_after_the_other(tmp_path: Path) -> None:
    """Two shards starting at once both found no plan and each wrote its own: the second
    waits while the first writes its plan, and is then told it is not the first."""
    calls: list[tuple[str, bool]] = []
    inside, go, done = threading.Event(), threading.Event(), threading.Event()

    def shard(name: str, wait: bool) -> None:
        def agree(first: bool) -> None:
            calls.append((name, first))
            inside.set()
            if wait:
                go.wait(30)
        with writing_to(tmp_path, shared=True, agree=agree):
            done.wait(30)

    threads = [threading.Thread(target=shard, args=("a", True))]
    threads[0].start()
    assert inside.wait(30)
    threads.append(threading.Thread(target=shard, args=("b", False)))
    threads[1].start()
    time.sleep(0.5)
    assert calls == [("a", True)], "b waits for a's plan"
    go.set()
    deadline = time.monotonic() + 30
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    done.set()
    for thread in threads:
        thread.join(30)
    assert calls == [("a", True), ("b", False)]
    assert not (tmp_path / LOCK_FILE).exists() and not (tmp_path / PLAN_LOCK).exists()


def test_a_shard_while_a_whole_batch_writes_is_refused(tmp_path: Path) -> None:
    """A shard is refused where a batch without shards writes, in one line naming its pid."""
    out, signals = tmp_path / "out", tmp_path / "signals"
    whole = _waiting_batches(out, signals, {"whole": (0, 1)})["whole"]
    try:
        with pytest.raises(CovsegError, match=(
                rf"^another covseg run is writing to {re.escape(str(out))} \(pid {whole.pid}\); "
                r"wait for it to end, or pick another --out$")):
            run_batch([Study("s0", tmp_path / "none")], out, lambda study, folder: {},
                      shard=(0, 2))
    finally:
        _ended(signals, "whole", whole)
    assert not (out / LOCK_FILE).exists()


def test_fractional_masks_fail_their_study(tmp_path: Path) -> None:
    """A probability map given as the lesion mask or as --lungs fails its study with the
    reason, instead of reading as 0 mL; the batch goes on."""
    _, good, _ = synthetic_study(tmp_path / "in", "good")
    grid = nib.load(str(good))
    rng = np.random.default_rng(0)
    soft = rng.uniform(0.33, 0.6, grid.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(soft, grid.affine), str(good.with_name("soft_mask.nii.gz")))
    result = quantify_batch([good.parent], tmp_path / "out")
    assert (result.done, result.failed) == (1, 1)
    error = {r["study"]: r["error"] for r in read_rows(result.summary)}["soft"]
    assert "soft_mask.nii.gz: holds fractional values (0.33..0.6), not labels" in error
    nib.save(nib.Nifti1Image(soft, grid.affine), str(tmp_path / "lungs.nii.gz"))
    with pytest.raises(CovsegError, match=r"lungs\.nii\.gz: holds fractional values"):
        quantify_study(good, tmp_path / "out2", lungs=tmp_path / "lungs.nii.gz")


def noisy_ct(ct: Path) -> nib.Nifti1Image:
    """The synthetic CT with scanner noise and a spine of bone, in HU as int16: a CT's many
    grey levels, soft tissue mid-way between air and bone."""
    image = nib.load(str(ct))
    hu = np.asarray(image.dataobj, dtype=np.float32)
    hu += np.random.default_rng(1).normal(0.0, 15.0, hu.shape).astype(np.float32)
    hu[28:36, 36:42, :] = 1000.0
    return nib.Nifti1Image(np.rint(hu).astype(np.int16), image.affine)


def test_a_ct_given_as_the_lesion_mask_fails_its_study(tmp_path: Path) -> None:
    """A CT given as the mask: in 8-bit grey it was counted as done, every non-zero voxel a
    lesion; in HU it failed on "negative labels", saying neither that it is a CT nor where a
    CT goes. Now its study fails saying both; masks of 0/1, 0/255, 0..3 (int16, uint8,
    float32) are counted as before (:func:`noisy_ct`'s 8-bit copy has 55 levels), a 0/255 mask
    apart from the multi-class one, which makes a call multi-class."""
    ct, good, lesion_ml = synthetic_study(tmp_path / "in", "good")
    masks, hu = good.parent, noisy_ct(ct)
    nib.save(hu, str(masks / "hu.nii.gz"))
    grey = np.clip((np.asarray(hu.dataobj) + 1024) * (255 / 1500), 0, 255).astype(np.uint8)
    nib.save(nib.Nifti1Image(grey, hu.affine), str(masks / "grey.nii.gz"))
    labels = np.asarray(nib.load(str(good)).dataobj)
    multi = labels * 2
    multi[0, 0, 0], multi[1, 0, 0] = 1, 3  # labels 0..3: 0.00245 mL each of GGO and effusion
    for name, data in (("u8", labels.astype(np.uint8) * 255), ("f32", labels.astype(np.float32)),
                       ("multi", multi)):
        nib.save(nib.Nifti1Image(data, hu.affine), str(masks / f"{name}_mask.nii.gz"))
    result = quantify_batch([masks], tmp_path / "out")
    rows = {r["study"]: r for r in read_rows(result.summary)}
    assert (result.done, result.failed) == (3, 3)
    assert rows["u8"]["error"].startswith("multi-class masks use labels 0..3 (1 GGO, 2 "
                                          "consolidation, 3 effusion), found 255 (")
    assert rows["u8"]["error"].endswith(
        "quantify a binary mask such as 0/255 with --classes binary, into another --out where "
        "this call's other masks are multi-class")
    binary = quantify_batch([masks / "u8_mask.nii.gz"], tmp_path / "binary")
    assert binary.done == 1
    rows["u8"] = read_rows(binary.summary)[0]
    for name in ("good", "u8", "f32"):
        assert float(rows[name]["lesion_ml"]) == pytest.approx(lesion_ml, rel=1e-5)
    assert float(rows["multi"]["consolidation_ml"]) == pytest.approx(lesion_ml, rel=1e-5)
    assert float(rows["multi"]["effusion_ml"]) == pytest.approx(0.00245, rel=1e-3)
    assert float(rows["multi"]["ggo_ml"]) == pytest.approx(0.00245, rel=1e-3)
    for name in ("hu", "grey"):
        assert rows[name]["status"] == "failed" and rows[name]["lesion_ml"] == ""
        assert re.fullmatch(
            rf"{re.escape(str(masks / name))}\.nii\.gz: not a lesion mask but an image "
            r"\(\d+ grey levels, \d+% of pixels mid-grey\); give the CT as --image and a mask "
            r"holding labels 0\.\.3", rows[name]["error"]), rows[name]["error"]
    single = quantify_batch([masks / "grey.nii.gz"], tmp_path / "single")
    assert (single.done, single.failed) == (0, 1)
    with pytest.raises(CovsegError, match=r"hu\.nii\.gz: not a lesion mask but an image"):
        quantify_study(masks / "hu.nii.gz", tmp_path / "alone", image=ct)


def test_a_ct_of_fractional_floats_given_as_the_mask_is_told_a_ct(tmp_path: Path) -> None:
    """A CT stored as fractional floats (MedSeg's ``tr_im.nii.gz``) given as the mask was told
    to be thresholded as a probability map; it now fails as a CT, saying where a CT goes. A
    probability map (0..1) keeps its own reason."""
    ct, _, _ = synthetic_study(tmp_path / "in", "good")
    hu = noisy_ct(ct)
    floats = np.asarray(hu.dataobj, dtype=np.float32) + np.float32(0.25)
    nib.save(nib.Nifti1Image(floats, hu.affine), str(tmp_path / "tr_im.nii.gz"))
    with pytest.raises(CovsegError, match=r"tr_im\.nii\.gz: not a lesion mask but an image "
                                          r"\(\d+ grey levels, \d+% of pixels mid-grey\); "
                                          r"give the CT as --image"):
        quantify_study(tmp_path / "tr_im.nii.gz", tmp_path / "out")
    soft = np.random.default_rng(0).uniform(0.0, 1.0, floats.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(soft, hu.affine), str(tmp_path / "soft.nii.gz"))
    with pytest.raises(CovsegError, match=r"soft\.nii\.gz: holds fractional values"):
        quantify_study(tmp_path / "soft.nii.gz", tmp_path / "out")


def test_a_ct_given_as_the_lung_mask_fails_its_study(tmp_path: Path) -> None:
    """A CT given as --lungs was read as a lung mask (3280 mL of lung, CT-1, exit 0), as the
    lesion mask no longer is: it now fails its study saying where a CT goes, in HU stored as
    whole numbers or as fractional floats; a 0/1/2 lung mask is counted as before."""
    ct, good, _ = synthetic_study(tmp_path / "in", "good")
    hu = noisy_ct(ct)
    floats = np.asarray(hu.dataobj, dtype=np.float32) + np.float32(0.25)
    for name, data in (("hu", np.asarray(hu.dataobj)), ("floats", floats)):
        nib.save(nib.Nifti1Image(data, hu.affine), str(tmp_path / f"{name}.nii.gz"))
        with pytest.raises(CovsegError, match=rf"^\S*{name}\.nii\.gz: not a lung mask but an image "
                                              r"\(\d+ grey levels, \d+% of pixels mid-grey\); "
                                              r"give the CT as --image and a lung mask as "
                                              r"--lungs$"):
            quantify_study(good, tmp_path / name, lungs=tmp_path / f"{name}.nii.gz")
        assert not (tmp_path / name).exists()
    lungs = np.where(np.asarray(hu.dataobj) < -500, 1, 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(lungs, hu.affine), str(tmp_path / "lungs01.nii.gz"))
    result = quantify_study(good, tmp_path / "ok", lungs=tmp_path / "lungs01.nii.gz")
    assert result["inputs"]["lung_source"] == "mask" and result["study"]["lung_ml"] > 0


def test_a_mask_given_as_the_ct_fails_its_study(tmp_path: Path) -> None:
    """A 0/1 mask given as --image was read as the CT: 0 mL of lung, no percentage, no word.
    It now fails saying where the CT and the mask go."""
    ct, good, lesion_ml = synthetic_study(tmp_path / "in", "good")
    shutil.copy(good, tmp_path / "good.nii.gz")
    with pytest.raises(CovsegError, match=r"^\S*good\.nii\.gz: not a CT image but a label mask "
                                          r".*; give the CT as --image and the lesion mask as "
                                          r"MASK$"):
        quantify_study(good, tmp_path / "out", image=tmp_path / "good.nii.gz")
    assert not (tmp_path / "out").exists()
    result = quantify_study(good, tmp_path / "ok", image=ct)
    assert result["study"]["lesion_ml"] == pytest.approx(lesion_ml)


def test_a_mask_given_as_the_ct_names_the_keyword_or_the_flag(tmp_path: Path) -> None:
    """The refusal said "give the CT as --image" to covseg.quantify(image=...) too: the API
    names its keyword, the command line its flag."""
    from covseg import api
    from covseg.cli import main

    _, good, _ = synthetic_study(tmp_path / "in", "good")
    shutil.copy(good, tmp_path / "good.nii.gz")
    told = "; give the CT as {} and the lesion mask as MASK"
    with pytest.raises(StudiesFailed, match="1 of 1 studies could not be quantified"):
        api.quantify(good, tmp_path / "api", image=tmp_path / "good.nii.gz")
    error = read_rows(tmp_path / "api" / "summary.csv")[0]["error"]
    assert error.endswith(told.format("image")), error
    assert main(["quantify", str(good), "--out", str(tmp_path / "cli"), "--image",
                 str(tmp_path / "good.nii.gz")]) == 1
    error = read_rows(tmp_path / "cli" / "summary.csv")[0]["error"]
    assert error.endswith(told.format("--image")), error


def test_quantify_of_a_folder_of_2d_masks_is_refused_up_front(tmp_path: Path) -> None:
    """quantify given the folder holding PNG masks (not its parent) made --out, failed the
    folder as a study ("lesion masks must be NIfTI files") and wrote a summary, exit 1; it is
    now refused before anything is written, pointing to evaluate, as its parent is."""
    from covseg import api

    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / name)
    with pytest.raises(CovsegError, match=r"^\S*masks: holds 2D pictures, no NIfTI mask; "
                                          r"quantify measures NIfTI masks of CT volumes, .*"
                                          r"`covseg evaluate`$"):
        api.quantify(masks, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (masks / "a.png").unlink()
    (masks / "b.png").unlink()
    assert [s.name for s in find_studies([masks], masks=True)] == ["masks"]  # empty: a study


def test_a_lungs_folder_without_the_masks_lungs_says_no_lung_mask(tmp_path: Path) -> None:
    """--lungs naming a folder without the mask's lungs said "no mask named like the mask", as
    if the lesion mask were missing."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    save_like(mask, two_lungs(mask), tmp_path / "lungs" / "other_lungs.nii.gz")
    with pytest.raises(CovsegError, match="lungs: no lung mask named like the mask 'case'"):
        quantify_study(mask, tmp_path / "out", lungs=tmp_path / "lungs")


def test_masks_are_named_and_matched_by_their_scan(tmp_path: Path) -> None:
    """``x_mask.nii.gz`` is study ``x``; Zenodo's mask ``coronacases_001`` finds its CT
    ``coronacases_org_001`` in an ``--image`` folder (Kaggle's names)."""
    ct, mask, lesion_ml = synthetic_study(tmp_path / "ct_scans", "coronacases_org_001")
    masks = tmp_path / "infection_mask"
    masks.mkdir()
    mask.rename(masks / "coronacases_001.nii.gz")
    _, other, _ = synthetic_study(tmp_path / "mosmed", "study_0255")
    result = quantify_batch([masks, other], tmp_path / "out", image=tmp_path / "ct_scans")
    assert result.failed == 1  # study_0255 has no CT in ct_scans/: named in the summary
    rows = {r["study"]: r for r in read_rows(result.summary)}
    assert set(rows) == {"coronacases_001", "study_0255"}
    assert "named like the mask" in rows["study_0255"]["error"]
    stored = json.loads((tmp_path / "out" / "coronacases_001" / "quantification.json").read_text())
    assert stored["inputs"]["image"] == str(ct)
    assert stored["inputs"]["lung_source"] == "threshold"
    assert stored["study"]["lesion_ml"] == pytest.approx(lesion_ml)


def test_summary_is_rewritten_after_every_study(tmp_path: Path) -> None:
    studies = [Study(f"s{i}", tmp_path / f"s{i}") for i in range(3)]
    seen: list[int] = []

    def process(study: Study, folder: Path) -> dict:
        seen.append(len(read_rows(tmp_path / "out" / "summary.csv")))
        if study.name == "s1":
            raise RuntimeError("boom")
        return {"study": {"lesion_ml": 1.0}}

    result = run_batch(studies, tmp_path / "out", process)
    assert seen == [0, 1, 2] and result.failed == 1
    rows = read_rows(result.summary)
    assert rows[1]["error"] == "RuntimeError: boom" and rows[2]["lesion_ml"] == "1"


def test_a_study_out_of_memory_says_so(tmp_path: Path) -> None:
    """A study that ran out of memory was recorded as "MemoryError: " (Python's MemoryError has
    no message), torch's allocator failure as its two-line report."""
    studies = [Study(f"s{i}", tmp_path / f"s{i}") for i in range(3)]
    errors = {"s0": MemoryError(), "s1": RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 2516582400 bytes. Error code 12 (Cannot allocate memory)")}

    def process(study: Study, folder: Path) -> dict:
        if study.name in errors:
            raise errors[study.name]
        return {"array": np.empty((2 ** 30, 2 ** 20), dtype=np.uint8)}  # 1 PiB: numpy refuses

    result = run_batch(studies, tmp_path / "out", process)
    advice = ": free memory (close other programs) or use a machine with more"
    assert result.failed == 3
    assert [row["error"] for row in read_rows(result.summary)] == [
        f"out of memory{advice}", f"out of memory (could not allocate 2.34 GiB){advice}",
        f"out of memory (could not allocate 1.00 PiB){advice}"]


def test_find_studies_and_shards(tmp_path: Path) -> None:
    (tmp_path / "b.nii.gz").write_bytes(b"")
    (tmp_path / "a.nii").write_bytes(b"")
    (tmp_path / "series").mkdir()
    (tmp_path / ".hidden").mkdir()
    names = [s.name for s in find_studies([tmp_path])]
    assert names == ["a", "b", "series"]
    assert [s.name for s in select_shard(find_studies([tmp_path]), (1, 2))] == ["b"]
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(CovsegError, match="shard"):
            parse_shard(bad)
    with pytest.raises(CovsegError, match="no such"):
        find_studies([tmp_path / "missing"])
    shutil.copy(tmp_path / "a.nii", tmp_path / "series" / "a.nii")
    with pytest.raises(CovsegError, match="named a"):
        find_studies([tmp_path, tmp_path / "series" / "a.nii"])


def test_quantify_into_the_mask_folder_can_be_run_again(tmp_path: Path) -> None:
    """Its own report folders beside the masks are not taken for studies on the next run."""
    src = shared("mosmed-masks", "masks", "study_0255_mask.nii.gz")
    shutil.copy(src, tmp_path / src.name)
    assert quantify_batch([tmp_path], tmp_path).done == 1
    again = quantify_batch([tmp_path], tmp_path)
    assert (again.done, again.skipped, again.failed) == (0, 1, 0)


def test_find_studies_keeps_nifti_beside_dicom(tmp_path: Path) -> None:
    """A folder of DICOM files with a NIfTI volume beside them holds two studies, not one."""
    (tmp_path / "slice_001.dcm").write_bytes(b"")
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    studies = find_studies([tmp_path])
    assert [(s.name, s.path) for s in studies] == [
        ("scan", tmp_path / "scan.nii.gz"), (tmp_path.name, tmp_path)]


def test_find_studies_reads_nifti_masks_in_sub_folders(tmp_path: Path) -> None:
    """A folder of sub-folders holding mask NIfTI files took each sub-folder for a DICOM
    series (its study failed); each mask is now a study named after its image, and a
    sub-folder per patient holding one mask is that mask, named after the sub-folder."""
    for name in ("masks/CT-0/study_0001_mask", "masks/CT-0/study_0002_mask",
                 "masks/CT-1/study_0255_mask", "patients/p1/seg", "patients/p2/seg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    masks = find_studies([tmp_path / "masks"], masks=True)
    assert [(s.name, s.path.relative_to(tmp_path / "masks")) for s in masks] == [
        ("study_0001", Path("CT-0/study_0001_mask.nii.gz")),
        ("study_0002", Path("CT-0/study_0002_mask.nii.gz")),
        ("study_0255", Path("CT-1/study_0255_mask.nii.gz"))]
    by_patient = find_studies([tmp_path / "patients"], masks=True)
    assert [(s.name, s.path) for s in by_patient] == [
        ("p1", tmp_path / "patients/p1/seg.nii.gz"), ("p2", tmp_path / "patients/p2/seg.nii.gz")]


def test_find_studies_passes_over_masks_beside_the_cts(tmp_path: Path, caplog) -> None:
    """A patient folder holding its CT and mask (p1/ct.nii.gz, p1/ct_mask.nii.gz) made the mask
    a second CT, predicted as study ct_mask (two such patients: refused as two studies ct).
    Files named as masks are now passed over with a warning naming them, a folder of masks
    alone is no study, and one given to predict is refused; quantify reads masks as before."""
    for name in ("p1/ct", "p1/ct_mask", "p2/scan", "p2/infection", "p2/lung-label",
                 "p3/seg", "top", "top_seg"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / f"{name}.nii.gz").write_bytes(b"")
    with caplog.at_level("WARNING"):
        studies = find_studies([tmp_path / "in"])
    assert [(s.name, s.path.relative_to(tmp_path / "in")) for s in studies] == [
        ("p1", Path("p1/ct.nii.gz")), ("p2", Path("p2/scan.nii.gz")), ("top", Path("top.nii.gz"))]
    assert ("in: 5 file(s) (top_seg.nii.gz, p1/ct_mask.nii.gz, p2/infection.nii.gz, ...) named as "
            "masks, not read as CTs; give such a file itself to predict it as a CT") in caplog.text
    assert [s.name for s in find_studies([tmp_path / "in" / "p3"], masks=True)] == ["seg"]
    with pytest.raises(CovsegError, match=r"^\S*p3: holds no CT, only files named as masks "
                                          r"\(1 file\(s\) \(seg\.nii\.gz\)\); give a CT file "
                                          "itself to predict it$"):
        find_studies([tmp_path / "in" / "p3"])
    assert [s.path.name for s in find_studies([tmp_path / "in" / "p3" / "seg.nii.gz"])] == [
        "seg.nii.gz"]


def test_find_studies_passes_over_folders_of_pictures(tmp_path: Path, caplog) -> None:
    """A CT folder holding images/ + masks/ of PNG key images (or any sub-folder of pictures)
    had each picture folder tried as a DICOM series, failed "no DICOM series found", so that
    predict exited 1; such folders are now passed over with a warning naming them, while a
    series of slices named without a suffix beside its thumbnail is still a study, a folder of
    pictures given itself is still one, and a folder of picture folders alone is refused."""
    from tests.test_io_volume import phantom, synthetic_series

    patient = tmp_path / "patient"
    for name in ("images/key1.png", "masks/key1.png", "shots/day1/a.jpg", "series/thumb.png"):
        (patient / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(patient / name)
    (patient / "ct.nii.gz").write_bytes(b"")
    synthetic_series(patient / "series", phantom(), preamble=False, suffix="")
    (patient / "empty").mkdir()
    with caplog.at_level("WARNING"):
        studies = find_studies([patient])
    assert [(s.name, s.path) for s in studies] == [
        ("ct", patient / "ct.nii.gz"), ("empty", patient / "empty"),
        ("series", patient / "series")]
    assert ("patient: 3 folder(s) (images, masks, shots) of 2D pictures, not read as studies; "
            "give such a folder itself to predict its pictures") in caplog.text
    assert [(s.name, s.path) for s in find_studies([patient / "series"])] == [
        ("series", patient / "series")]
    assert [(s.name, s.path) for s in find_studies([patient / "images"])] == [
        ("images", patient / "images")]
    (patient / "ct.nii.gz").unlink()
    for name in ("series", "empty"):
        shutil.rmtree(patient / name)
    with pytest.raises(CovsegError, match=r"^\S*patient: holds no CT, only folders of 2D "
                                          r"pictures \(3 folder\(s\) \(images, masks, shots\)\); "
                                          "give such a folder itself to predict its pictures$"):
        find_studies([patient])


def test_quantify_on_folders_of_2d_masks_says_what_quantify_takes(tmp_path: Path,
                                                                    caplog) -> None:
    """quantify given a folder of 2D mask folders said it "holds no CT" and to "give such a
    folder itself to predict its pictures": quantify predicts nothing, and measures no 2D
    mask; it now names the NIfTI masks it measures and evaluate for 2D masks."""
    from covseg import api

    masks = tmp_path / "masks"
    for name in ("ward1/a.png", "ward2/b.png"):
        (masks / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / name)
    advice = ("quantify measures NIfTI masks of CT volumes, not 2D pictures (mL need a slice "
              "thickness); give NIfTI lesion masks (`covseg predict` writes them for CT volumes), "
              "or score 2D masks against their truth with `covseg evaluate`")
    with pytest.raises(CovsegError, match=r"^\S*masks: holds no mask, only folders of 2D "
                                          r"pictures \(2 folder\(s\) \(ward1, ward2\)\); "
                                          + re.escape(advice) + "$"):
        api.quantify(masks, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), str(masks / "p1.nii.gz"))
    with caplog.at_level("WARNING"):
        assert [s.name for s in find_studies([masks], masks=True)] == ["p1"]
    assert f"masks: 2 folder(s) (ward1, ward2) of 2D pictures, not read as studies; {advice}" in (
        caplog.text)


def test_image_folders_are_searched_as_predict_searches_them(tmp_path: Path) -> None:
    """``quantify --image STUDIES`` looked for the CT among STUDIES' files alone, so MosMed's
    studies/CT-1/study_0255.nii.gz (and a patient folder's p1/ct.nii.gz) failed "no NIfTI file
    named like the mask"; the CTs are now found as predict finds them, never a mask beside."""
    ct, mask, lesion_ml = synthetic_study(tmp_path / "studies" / "CT-1", "study_0255")
    synthetic_study(tmp_path / "studies" / "CT-1", "study_0256")
    shutil.copy(mask, ct.with_name("study_0255_seg.nii.gz"))
    patient, other, _ = synthetic_study(tmp_path / "patients" / "p1", "ct")
    result = quantify_batch([mask], tmp_path / "out", image=tmp_path / "studies")
    assert (result.done, result.failed) == (1, 0)
    stored = json.loads((tmp_path / "out" / "study_0255" / "quantification.json").read_text())
    assert stored["inputs"]["image"] == str(ct.resolve())
    assert stored["inputs"]["lung_source"] == "threshold"
    assert stored["study"]["lesion_ml"] == pytest.approx(lesion_ml)
    named = other.rename(other.with_name("p1_mask.nii.gz"))
    assert quantify_batch([named], tmp_path / "out2", image=tmp_path / "patients").done == 1
    stored = json.loads((tmp_path / "out2" / "p1" / "quantification.json").read_text())
    assert stored["inputs"]["image"] == str(patient.resolve())


def test_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    """Quantifying into a done --out with --lungs added stops before any study (it kept the old
    numbers); the same settings skip, --html alone adding the report from the record; older
    outputs without settings are skipped."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    grid = nib.load(str(mask))
    nib.save(nib.Nifti1Image(np.ones(grid.shape, dtype=np.int16), grid.affine),
             str(tmp_path / "lungs.nii.gz"))
    out = tmp_path / "out"
    assert quantify_batch([mask], out).done == 1
    assert quantify_batch([mask], out).skipped == 1
    lungs = (tmp_path / "lungs.nii.gz").resolve()
    with pytest.raises(CovsegError, match=rf"out/case was made with other settings or inputs "
                                          rf"\(lungs: null -> {lungs}\); "
                                          "pick a new --out"):
        quantify_batch([mask], out, lungs=tmp_path / "lungs.nii.gz", html_report=True)
    assert not (out / "case" / "report.html").exists()
    record = out / "case" / "quantification.json"
    assert json.loads(record.read_text())["settings"]["html"] is False
    assert quantify_batch([mask], out, html_report=True).skipped == 1
    report = (out / "case" / "report.html").read_text()
    assert "<b>Category: not available (no lung mask)</b>" in report
    old = json.loads(record.read_text())
    assert old["settings"] == {"lungs": None, "image": None, "hu": "auto", "classes": "binary",
                               "html": True}
    del old["settings"]
    record.write_text(json.dumps(old))  # as an older covseg wrote it
    assert quantify_batch([mask], out, lungs=tmp_path / "lungs.nii.gz").skipped == 1


def test_auto_classes_are_decided_once_per_call(tmp_path: Path) -> None:
    """--classes auto decided per study: in one call, a study holding ground-glass alone (or
    nothing) beside multi-class ones was counted binary, its class cells blank in summary.csv.
    The call reads them all multi-class, absent classes 0; a record of an earlier covseg's auto
    is compared by what it decided; a binary model's prediction among them is refused."""
    masks = [synthetic_study(tmp_path / "in", name)[1] for name in ("a", "b", "c")]
    grid = nib.load(str(masks[0]))
    labels = np.asarray(grid.dataobj).copy()
    labels[40:43, 20:26, 2:4] = 2  # 36 voxels of consolidation beside 36 of ground-glass
    nib.save(nib.Nifti1Image(labels, grid.affine), str(masks[0]))
    nib.save(nib.Nifti1Image(labels * 0, grid.affine), str(masks[2]))
    out = tmp_path / "out"
    assert quantify_batch(masks, out).done == 3
    voxel_ml = 0.7 * 0.7 * 5.0 / 1000.0
    rows = {row["study"]: row for row in read_rows(out / "summary.csv")}
    assert [(rows[name]["ggo_ml"], rows[name]["consolidation_ml"], rows[name]["effusion_ml"])
            for name in "abc"] == [(f"{36 * voxel_ml:.6g}", f"{36 * voxel_ml:.6g}", "0"),
                                   (f"{72 * voxel_ml:.6g}", "0", "0"), ("0", "0", "0")]
    record = out / "b" / "quantification.json"
    old = json.loads(record.read_text())
    assert old["multiclass"] is True and old["settings"]["classes"] == "multiclass"
    old["settings"]["classes"] = "auto"  # as an earlier covseg wrote it
    record.write_text(json.dumps(old))
    assert quantify_batch(masks, out, multiclass=True).skipped == 3
    old["multiclass"] = False  # an earlier auto that read it as binary: another method
    record.write_text(json.dumps(old))
    with pytest.raises(CovsegError, match=r"out/b was made with other settings or inputs "
                                          r"\(classes: binary -> multiclass\)"):
        quantify_batch(masks, out)
    predicted = tmp_path / "pred" / "p"
    predicted.mkdir(parents=True)
    shutil.copy(masks[1], predicted / "infection.nii.gz")
    (predicted / "quantification.json").write_text(json.dumps({"multiclass": False}))
    with pytest.raises(CovsegError, match=r"p/infection.nii.gz is a binary model's prediction "
                                          r"\(its quantification.json\), but .*a_mask.nii.gz is "
                                          r"multi-class: .*separate --out folders$"):
        quantify_batch([masks[0], predicted], tmp_path / "mixed")
    assert quantify_batch([masks[1], predicted], tmp_path / "binary").done == 2


def test_other_studies_done_otherwise_in_out_are_refused(tmp_path: Path) -> None:
    """A call on new studies into an --out whose earlier studies were quantified with other
    --classes put both in one summary without a word (310 mL of ground-glass beside empty
    columns): refused in one line before any study. The default reads binary masks as binary,
    and follows an --out counted multi-class. Each study's own --lungs is no clash."""
    masks = [synthetic_study(tmp_path / "in", name)[1] for name in ("a", "b", "c")]
    out = tmp_path / "out"
    assert quantify_batch([masks[0]], out).done == 1
    with pytest.raises(CovsegError, match=r"out holds a, done earlier with other settings "
                                          r"\(classes: binary -> multiclass\), which its summary "
                                          r"would list beside this call's studies; pick a new "
                                          r"--out or delete it$"):
        quantify_batch([masks[1]], out, multiclass=True)
    assert not (out / "b").exists()
    out = tmp_path / "multi"
    assert quantify_batch([masks[0]], out, multiclass=True).done == 1
    assert quantify_batch([masks[1]], out).done == 1
    record = json.loads((out / "b" / "quantification.json").read_text())
    assert record["multiclass"] is True and record["study"]["ggo_ml"] > 0
    assert record["study"]["consolidation_ml"] == 0.0
    grid = nib.load(str(masks[2]))
    for name in ("b", "c"):
        nib.save(nib.Nifti1Image(np.ones(grid.shape, dtype=np.int16), grid.affine),
                 str(tmp_path / f"{name}_lungs.nii.gz"))
    assert quantify_batch([masks[1]], tmp_path / "own", lungs=tmp_path / "b_lungs.nii.gz").done
    assert quantify_batch([masks[2]], tmp_path / "own", lungs=tmp_path / "c_lungs.nii.gz").done
    rows = read_rows(tmp_path / "own" / "summary.csv")
    assert [row["study"] for row in rows] == ["b", "c"]


def test_rerun_after_the_mask_changed_is_refused(tmp_path: Path) -> None:
    """A mask corrected by hand, also when copied in with its old time kept (cp -p, rsync -a),
    or another mask under the study's name, kept the old numbers: refused. Inputs are compared
    by content, so a bare touch is skipped; records without hashes compare file times."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    out = tmp_path / "out"
    assert quantify_batch([mask], out).done == 1
    record = out / "case" / "quantification.json"
    later = record.stat().st_mtime + 5
    os.utime(mask, (later, later))  # touched: same bytes
    assert quantify_batch([mask], out).skipped == 1
    edited = tmp_path / "edited_mask.nii.gz"
    grid = nib.load(str(mask))
    nib.save(nib.Nifti1Image(np.ones(grid.shape, dtype=np.int16), grid.affine), str(edited))
    earlier = record.stat().st_mtime - 3600
    os.utime(edited, (earlier, earlier))  # edited before the record was written...
    shutil.copy2(edited, mask)  # ...and copied in with its time kept
    with pytest.raises(CovsegError, match=r"out/case was made with other settings or inputs "
                                          r"\(\S*case\S*nii.gz changed since\)"):
        quantify_batch([mask], out)
    old = json.loads(record.read_text())
    del old["inputs"]["sha256"]
    record.write_text(json.dumps(old))  # as covseg wrote it before content hashes: file times
    assert quantify_batch([mask], out).skipped == 1  # the copy's old time hides it
    touched = record.stat().st_mtime + 60
    os.utime(mask, (touched, touched))
    with pytest.raises(CovsegError, match=r"\S*case\S*nii.gz changed since"):
        quantify_batch([mask], out)
    _, other, _ = synthetic_study(tmp_path / "elsewhere", "case")
    with pytest.raises(CovsegError,
                       match=r"\(input: \S*/in/masks/case_mask.nii.gz -> \S*/elsewhere/"):
        quantify_batch([other], out)


def test_a_dicom_folder_is_hashed_over_its_files_names_and_bytes(tmp_path: Path) -> None:
    """The SHA-256 of a DICOM series (sub-folders included) changes with a slice's bytes or
    name, not with file times or with non-DICOM files beside it (covseg's own outputs)."""
    series = tmp_path / "series"
    (series / "sub").mkdir(parents=True)
    (series / "1.dcm").write_bytes(b"one")
    (series / "sub" / "2.dcm").write_bytes(b"two")
    first = content_hash(series)
    os.utime(series / "1.dcm", (1e9, 1e9))
    (series / "summary.csv").write_text("study\n")
    assert content_hash(series) == first
    (series / "sub" / "2.dcm").write_bytes(b"TWO")
    assert content_hash(series) not in (first, None)
    (series / "sub" / "2.dcm").write_bytes(b"two")
    (series / "sub" / "2.dcm").rename(series / "sub" / "3.dcm")
    assert content_hash(series) != first
    assert content_hash(tmp_path / "gone") is None


def test_a_folder_holding_one_nifti_is_hashed_as_that_file(tmp_path: Path) -> None:
    """A folder holding one NIfTI file (``p1/ct.nii.gz``, read as that file) hashed no file:
    every such folder had the SHA-256 of nothing, so another CT stored there passed as the one
    recorded. It is hashed as its file (the file given itself agrees); several NIfTI files
    (refused when read) over their names and bytes; a folder holding no CT is hashed as None,
    as a path that is gone, matching no recorded hash."""
    files = {}
    for name, content in (("p1", b"first ct"), ("p2", b"second ct"), ("p3", b"first ct")):
        (tmp_path / name).mkdir()
        files[name] = tmp_path / name / "ct.nii.gz"
        files[name].write_bytes(content)
    hashes = {name: content_hash(tmp_path / name) for name in files}
    assert hashes["p1"] != hashes["p2"]
    assert hashes["p1"] == hashes["p3"] == content_hash(files["p1"])
    assert hashes["p2"] == content_hash(files["p2"]) != hashlib.sha256().hexdigest()
    (tmp_path / "p1" / "summary.csv").write_text("study\n")  # no CT: not read, not hashed
    assert content_hash(tmp_path / "p1") == hashes["p1"]
    files["p1"].write_bytes(b"another ct")
    assert content_hash(tmp_path / "p1") not in (hashes["p1"], None)
    (tmp_path / "p1" / "masks.nii.gz").write_bytes(b"first ct")
    several = content_hash(tmp_path / "p1")
    assert several not in (None, content_hash(files["p1"]))
    (tmp_path / "p1" / "masks.nii.gz").write_bytes(b"other mask")
    assert content_hash(tmp_path / "p1") not in (several, None)
    (tmp_path / "empty").mkdir()
    assert content_hash(tmp_path / "empty") is None
    files["p2"].unlink()
    assert content_hash(tmp_path / "p2") is None


def test_a_folder_holding_one_dicom_file_is_hashed_as_that_file(tmp_path: Path) -> None:
    """A one-slice series is read alike as its folder or its file: predict given one form and
    quantify the other took the same CT for another (no lung recount, a warning)."""
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "1.dcm").write_bytes(b"one slice")
    assert content_hash(tmp_path / "series") == content_hash(tmp_path / "series" / "1.dcm")


def test_missing_image_or_lungs_is_refused_up_front(tmp_path: Path) -> None:
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    for option in ("image", "lungs"):
        with pytest.raises(CovsegError, match=rf"--{option} .*missing\.nii\.gz: no such file"):
            quantify_batch([mask], tmp_path / "out", **{option: tmp_path / "missing.nii.gz"})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("slices", [".", "DICOM/0001"])
def test_image_may_be_a_dicom_folder(tmp_path: Path, slices: str) -> None:
    """--image DICOMFOLDER is that one CT (not a folder of NIfTI to match by name), its slices
    in it or in a sub-folder, as predict reads a study folder."""
    series = tmp_path / "series"
    (series / slices).mkdir(parents=True)
    for source in SAMPLE_DICOMS:
        shutil.copy(shared("ct-samples", source.name), series / slices / source.name)
    ct = read_volume(series)
    lesions = np.zeros(ct.array.shape, dtype=np.uint8)
    lesions[:, 200:210, 150:160] = 1
    mask = write_mask_like(ct, lesions, tmp_path / "series_mask.nii.gz")
    result = quantify_batch([mask], tmp_path / "out", image=series)
    assert (result.done, result.failed) == (1, 0)
    stored = json.loads((tmp_path / "out" / "series" / "quantification.json").read_text())
    assert stored["inputs"]["image"] == str(series)
    assert stored["inputs"]["lung_source"] == "threshold"
    assert stored["study"]["lung_ml"] > 10
    shutil.copy(mask, tmp_path / "other_mask.nii.gz")
    with pytest.raises(CovsegError, match="one DICOM series, but 2 masks"):
        quantify_batch([mask, tmp_path / "other_mask.nii.gz"], tmp_path / "out2", image=series)


def test_threshold_lungs_count_thick_consolidation_whole(tmp_path: Path) -> None:
    """Consolidation is not air, so the threshold lungs miss it: only the lesion within 5 mm of
    aerated lung was counted (a right lung 83 % consolidated read 35 %, a CT-2 study CT-1)."""
    ct, lesions, lungs = consolidated_chest()
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(ct, CONSOLIDATED_AFFINE), str(tmp_path / "case.nii.gz"))
    nib.save(nib.Nifti1Image(lesions, CONSOLIDATED_AFFINE), str(tmp_path / "masks" / "case.nii.gz"))
    result = quantify_study(tmp_path / "masks" / "case.nii.gz", tmp_path / "out",
                            image=tmp_path / "case.nii.gz")
    voxel = 100 / np.count_nonzero(lungs)
    assert result["study"]["percent_involved"] == pytest.approx(
        100 * np.count_nonzero(lesions) / np.count_nonzero(lungs), abs=voxel)
    assert result["right_lung"]["percent_involved"] == pytest.approx(
        100 * np.count_nonzero(lesions) / np.count_nonzero(lungs == 1), abs=voxel)
    assert result["study"]["lesion_outside_lungs_ml"] == 0.0
    assert result["study"]["ct_category"] == "CT-2"


def test_threshold_lungs_grow_to_a_depth_and_say_how_much(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A false call running from a lung into a heart-like block was counted whole as lung
    (22 % read 48 %, CT-2): it is cut LESION_DEPTH_MM from the aerated lung, while consolidation
    40 mm deep still counts (within a few %); the lesion the lungs were grown over is recorded
    per lung and in the CSVs, and one warning (also in the report) says why and what to do."""
    ct, lesions, lungs, truth = overcalled_chest()
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(ct, OVERCALLED_AFFINE), str(tmp_path / "case.nii.gz"))
    nib.save(nib.Nifti1Image(lesions, OVERCALLED_AFFINE), str(tmp_path / "masks" / "case.nii.gz"))
    with caplog.at_level("WARNING"):
        result = quantify_study(tmp_path / "masks" / "case.nii.gz", tmp_path / "out",
                                image=tmp_path / "case.nii.gz", html_report=True)
    percent = 100 * np.count_nonzero(truth) / np.count_nonzero(lungs)
    assert result["study"]["percent_involved"] == pytest.approx(percent, abs=2)
    assert result["study"]["ct_category"] == ct_category(percent) == "CT-1"
    right = 100 * np.count_nonzero(truth & (lungs == 1)) / np.count_nonzero(lungs == 1)
    assert result["right_lung"]["percent_involved"] == pytest.approx(right, abs=4)
    added = {region: result[region]["lesion_added_to_lungs_ml"]
             for region in ("study", "right_lung", "left_lung")}
    assert added["study"] == pytest.approx(added["right_lung"] + added["left_lung"])
    assert added["right_lung"] == pytest.approx(
        np.count_nonzero(truth & (lungs == 1)) * result["voxel_ml"], rel=0.15)
    warnings = [record.getMessage() for record in caplog.records if "threshold" in
                record.getMessage()]
    assert len(warnings) == 1 and "--lungs" in warnings[0]
    assert f"cut {LESION_DEPTH_MM:g} mm" in warnings[0]
    stored = json.loads((tmp_path / "out" / "quantification.json").read_text())
    assert stored["lung_note"] in warnings[0]
    assert html.escape(stored["lung_note"]) in (tmp_path / "out" / "report.html").read_text()
    row = read_rows(tmp_path / "out" / "quantification.csv")[0]
    assert float(row["lesion_added_to_lungs_ml"]) == pytest.approx(added["study"], rel=1e-5)


def test_lesion_and_lung_masks_without_geometry_pair_with_the_ct_as_stored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Masks saved with np.eye(4) were read as 1 mm voxels mirrored against their CT."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    bare = nib.Nifti1Image(np.asarray(nib.load(str(mask)).dataobj), np.eye(4))
    nib.save(bare, str(mask))
    result = quantify_study(mask, tmp_path / "out", image=tmp_path / "in")
    assert result["study"]["lesion_ml"] == pytest.approx(lesion_ml)
    assert result["right_lung"]["lesion_ml"] == pytest.approx(lesion_ml)
    assert "pairing their voxels as stored" in caplog.text
    lungs = save_like(mask, two_lungs(mask), tmp_path / "lungs" / "case_lungs.nii.gz")
    given = quantify_study(mask, tmp_path / "out2", lungs=lungs,
                           image=tmp_path / "in" / "case.nii.gz")
    assert given["right_lung"]["lesion_ml"] == pytest.approx(lesion_ml)
    assert given["left_lung"]["lesion_ml"] == 0.0


def test_montage_draws_voxels_to_scale_and_says_when_the_file_has_no_orientation(
        tmp_path: Path, saved_figures: list) -> None:
    """A sagittal file of 1.4 mm slices (0.7 mm rows) was drawn with square voxels, squeezed
    to half its width; and a file without orientation (qform and sform codes 0, right and left
    a guess) was titled "patient right on the image left"."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    for path in (ct, mask):
        image = nib.load(str(path))
        wide = nib.Nifti1Image(np.asarray(image.dataobj)[::2], np.diag([1.4, 0.7, 5.0, 1.0]))
        nib.save(wide.as_reoriented(nib.orientations.ornt_transform(
            nib.io_orientation(wide.affine), nib.orientations.axcodes2ornt("SPL"))), str(path))
    result = quantify_study(mask, tmp_path / "sagittal", image=ct, html_report=True)
    montage = saved_figures[-1]
    assert {axis.get_aspect() for axis in montage.axes} == {0.5}
    assert "(patient right on the image left)" in montage.get_suptitle()
    assert result["orientation_note"] is None
    for path in (ct, mask):
        image = nib.load(str(path))
        image.set_qform(None, code=0)
        image.set_sform(None, code=0)
        nib.save(image, str(path))
    result = quantify_study(mask, tmp_path / "unoriented", image=ct, html_report=True)
    assert "(no orientation in the file: right and left may be swapped)" in (
        saved_figures[-1].get_suptitle())
    assert "qform and sform codes 0" in result["orientation_note"]
    stored = json.loads((tmp_path / "unoriented" / "quantification.json").read_text())
    assert stored["orientation_note"] == result["orientation_note"]
    page = html.unescape((tmp_path / "unoriented" / "report.html").read_text())
    assert f"Note: {result['orientation_note']}" in page


def test_montage_gives_each_class_the_colour_of_visualize() -> None:
    """The montage drew ground-glass yellow and consolidation red, visualize and predict's
    overlays the other way round: one class, one colour, in every figure."""
    from covseg.report import LESION_COLOURS, _overlay
    from covseg.viz import overlay

    labels = np.array([[0, 1, 2, 3]], dtype=np.uint8)
    black = np.zeros(labels.shape, dtype=np.float32)
    montage = _overlay(black, labels, LESION_COLOURS)
    visualized = overlay(black, labels).astype(np.float32)
    for label in (1, 2, 3):
        montage_colour = montage[0, label] / np.linalg.norm(montage[0, label])
        visualize_colour = visualized[0, label] / np.linalg.norm(visualized[0, label])
        np.testing.assert_allclose(montage_colour, visualize_colour, atol=0.01)


def test_summary_lists_the_studies_of_earlier_calls(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Studies added to an --out in separate calls: each summary held only its own call's,
    though the earlier studies' folders were there. They are listed as the call that did them
    wrote them: a later call relabelled them "skipped" (not given to it, or given again) and
    spelled their input as its record's absolute path, not as given."""
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        synthetic_study(tmp_path / "in", name)
        quantify_batch([f"in/masks/{name}_mask.nii.gz"], "out")
    rows = read_rows(tmp_path / "out" / "summary.csv")
    assert [(row["study"], row["status"], row["input"]) for row in rows] == [
        ("a", "done", "in/masks/a_mask.nii.gz"), ("b", "done", "in/masks/b_mask.nii.gz")]
    assert rows[0]["lesion_ml"] and rows[0]["output"].endswith("a")
    assert (tmp_path / "out" / "summary.png").is_file()
    again = quantify_batch([tmp_path / "in" / "masks" / "a_mask.nii.gz"], "out")
    assert (again.done, again.skipped) == (0, 1)
    assert read_rows(tmp_path / "out" / "summary.csv") == rows
    (tmp_path / "out" / "summary.csv").unlink()  # no earlier row: "done", the recorded input
    quantify_batch([tmp_path / "in" / "masks" / "b_mask.nii.gz"], "out")
    rows = read_rows(tmp_path / "out" / "summary.csv")
    assert [(row["study"], row["status"]) for row in rows] == [("a", "done"), ("b", "skipped")]
    assert rows[0]["input"] == str((tmp_path / "in" / "masks" / "a_mask.nii.gz").resolve())


def test_montage_ranks_and_titles_slices_by_the_reports_lesion(
        tmp_path: Path, saved_figures: list) -> None:
    """The montage counted effusion as lesion: an effusion-only slice came first, titled with
    its effusion as lesion mL, though the report's lesion (and % involved) leaves it out."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    grid = nib.load(str(mask))
    labels = np.zeros(grid.shape, dtype=np.int16)
    labels[36:50, 10:30, 1] = 3  # 280 voxels of effusion: 0.686 mL
    labels[40:45, 20:30, 3] = 1  # 50 voxels of ground-glass: 0.1225 mL
    nib.save(nib.Nifti1Image(labels, grid.affine), str(mask))
    result = quantify_study(mask, tmp_path / "both", image=ct, multiclass=True)
    assert result["study"]["lesion_ml"] == pytest.approx(50 * 0.00245)
    titles = [axis.get_title() for axis in saved_figures[-1].axes]
    assert len(titles) == 1 and titles[0].endswith(", 0.1 mL")
    labels[labels == 1] = 0  # effusion alone: its slice is shown, named as effusion
    nib.save(nib.Nifti1Image(labels, grid.affine), str(mask))
    quantify_study(mask, tmp_path / "effusion", image=ct, multiclass=True)
    titles = [axis.get_title() for axis in saved_figures[-1].axes]
    assert len(titles) == 1 and titles[0].endswith(", 0.0 mL, effusion 0.7 mL")


def test_a_tiny_lesion_does_not_read_as_none(tmp_path: Path, saved_figures: list) -> None:
    """A lesion under 0.005 mL read "0.00" in the report and "0.0 mL" on the montage, under
    CT-1; only % involved had the "< 0.01" form."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    grid = nib.load(str(mask))
    labels = np.zeros(grid.shape, dtype=np.int16)
    labels[40:42, 20, 2] = 1  # 2 voxels: 0.0049 mL
    nib.save(nib.Nifti1Image(labels, grid.affine), str(mask))
    result = quantify_study(mask, tmp_path / "out", image=ct, html_report=True)
    assert result["study"]["ct_category"] == "CT-1"
    assert [axis.get_title().split(", ")[-1] for axis in saved_figures[-1].axes] == ["< 0.1 mL"]
    page = (tmp_path / "out" / "report.html").read_text()
    cells = dict(zip(*(re.findall(r"<t[dh]>(.*?)</t[dh]>", row)
                       for row in re.findall(r"<tr>(.*?)</tr>", page)[:2]), strict=True))
    assert html.unescape(cells["lesion_ml"]) == "< 0.01" and cells["percent_involved"] == "0.04"


@pytest.mark.parametrize(("percent", "shown"), [
    (24.999995, "24.9999"), (49.9999996, "49.9999"), (25.0, "25"), (0.29, "0.29"),
    (1.23456789e-05, "1.23456e-05"), (0.0, "0")])
def test_csv_percentages_never_reach_a_bound_the_study_has_not(
        percent: float, shown: str) -> None:
    """quantification.csv and summary.csv gave 24.999995 % to 6 significant digits, rounded
    to nearest: 25, beside CT-1 (whose rule puts 25 % in CT-2). They are rounded down."""
    from covseg.batch import SUMMARY_FIELDS
    from covseg.report import CSV_FIELDS, csv_text

    row = {"study": "a", "percent_involved": percent, "right_percent_involved": percent,
           "left_percent_involved": percent, "lesion_ml": 24.999995}
    for fields in (CSV_FIELDS, SUMMARY_FIELDS):
        cells = next(csv.DictReader(csv_text([row], fields).splitlines()))
        assert {cells[k] for k in fields if k.endswith("percent_involved")} == {shown}
        assert cells["lesion_ml"] == "25"  # other numbers keep 6 significant digits


def test_summary_chart_never_outlives_its_summary(tmp_path: Path) -> None:
    """summary.png was drawn only when two studies or more were quantified and never removed:
    after a study's folder was deleted, a one-study summary.csv sat beside the old chart of
    two."""
    masks = [synthetic_study(tmp_path / "in", name)[1] for name in ("a", "b")]
    out = tmp_path / "out"
    quantify_batch(masks, out)
    assert (out / "summary.png").is_file()
    shutil.rmtree(out / "b")
    quantify_batch(masks[:1], out)
    assert [row["study"] for row in read_rows(out / "summary.csv")] == ["a"]
    assert not (out / "summary.png").exists()


@pytest.mark.parametrize("relabel", ["flipped", "permuted"])
def test_a_mask_whose_header_labels_other_axes_is_refused(relabel: str, tmp_path: Path) -> None:
    """Stored like its CT but with the x axis flipped in the header, a mask was paired mirrored
    (its right lung lesion counted in the left) under a warning "assuming the same voxel
    grid"; with permuted axes it was refused for shapes the message printed equal."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    stored = nib.load(str(mask))
    affine = stored.affine.copy()
    if relabel == "flipped":
        affine[0, 0] *= -1
    else:
        affine[:3, :3] = affine[:3, [1, 2, 0]]
    nib.save(nib.Nifti1Image(np.asarray(stored.dataobj), affine),
             str(tmp_path / "relabelled_mask.nii.gz"))
    with pytest.raises(CovsegError, match=r"labels the voxel axes RAS, the mask .* "
                                          r"(LAS|ASR), and their affines place the voxels "
                                          "differently; fix the header of one"):
        quantify_study(tmp_path / "relabelled_mask.nii.gz", tmp_path / "out", image=ct)


def test_a_mask_shifted_a_little_only_warns(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """Headers of the same axes that drift apart (translation, rounding) are paired as stored."""
    ct, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    stored = nib.load(str(mask))
    affine = stored.affine.copy()
    affine[:3, 3] += 0.2
    nib.save(nib.Nifti1Image(np.asarray(stored.dataobj), affine),
             str(tmp_path / "shifted_mask.nii.gz"))
    with caplog.at_level("WARNING"):
        result = quantify_study(tmp_path / "shifted_mask.nii.gz", tmp_path / "out", image=ct)
    assert "assuming the same voxel grid" in caplog.text
    assert result["right_lung"]["lesion_ml"] == pytest.approx(lesion_ml)


def test_a_mask_of_other_voxel_sizes_is_refused_saying_so(tmp_path: Path) -> None:
    """A mask of the CT's shape but 4x smaller voxels in-plane was paired with only "assuming
    the same voxel grid" (its lesion counted at the wrong places), which evaluate refused."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    stored = nib.load(str(mask))
    nib.save(nib.Nifti1Image(np.asarray(stored.dataobj), np.diag([2.8, 2.8, 5.0, 1.0])),
             str(tmp_path / "coarse_mask.nii.gz"))
    with pytest.raises(CovsegError, match=r"not on the voxel grid of the mask \S+coarse_mask"
                                          r"\.nii\.gz \(voxel sizes 2\.8 x 2\.8 x 5 mm and "
                                          r"0\.7 x 0\.7 x 5 mm\); resample one"):
        quantify_study(tmp_path / "coarse_mask.nii.gz", tmp_path / "out", image=ct)


def test_a_mask_stored_in_other_axes_at_the_right_place_is_paired(tmp_path: Path) -> None:
    """A mask another tool saved in another axis order (x stored flipped, its header saying so)
    at the CT's places but for a 2 µm drift was refused as if paired mirrored."""
    ct, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    stored = nib.load(str(mask))
    flip = np.array([[0, -1], [1, 1], [2, 1]])
    data = nib.orientations.apply_orientation(np.asarray(stored.dataobj), flip)
    affine = stored.affine @ nib.orientations.inv_ornt_aff(flip, stored.shape)
    affine[:3, 3] += 0.002
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "flipped_mask.nii.gz"))
    result = quantify_study(tmp_path / "flipped_mask.nii.gz", tmp_path / "out", image=ct)
    assert result["right_lung"]["lesion_ml"] == pytest.approx(lesion_ml)


def test_find_studies_refuses_one_series_split_over_folders(tmp_path: Path) -> None:
    """A series split over two sub-folders was predicted as two partial studies, each with its
    own lung volume and CT category, without a word."""
    series = pydicom.uid.generate_uid()
    for part in ("part1", "part2"):
        dataset = pydicom.Dataset()
        dataset.SOPClassUID, dataset.SeriesInstanceUID = pydicom.uid.CTImageStorage, series
        dataset.file_meta = pydicom.dataset.FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        (tmp_path / part).mkdir()
        dataset.save_as(tmp_path / part / "IM0001.dcm", enforce_file_format=True)
    with pytest.raises(CovsegError, match=f"studies part1 and part2 hold slices of one DICOM "
                                          f"series \\({series}\\); put all its slices in one"):
        find_studies([tmp_path])
    assert [s.name for s in find_studies([tmp_path], masks=True)] == ["part1", "part2"]


def test_image_and_lung_folders_are_searched_once_per_call(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each mask searched the whole --image (and --lungs) folder again, sub-folders included."""
    module = importlib.import_module("covseg.quantify")  # covseg.quantify is the API function
    for name in ("a", "b", "c"):
        synthetic_study(tmp_path / "in", name)
    searched: list[Path] = []
    discover = module.discover_studies

    def counting(inputs: list[Path], *args: object) -> object:
        searched.extend(map(Path, inputs))
        return discover(inputs, *args)

    monkeypatch.setattr(module, "discover_studies", counting)
    result = quantify_batch([tmp_path / "in" / "masks"], tmp_path / "out", image=tmp_path / "in")
    assert (result.done, result.failed) == (3, 0)
    assert searched.count(tmp_path / "in") == 1
    rows = read_rows(result.summary)
    assert [row["study"] for row in rows] == ["a", "b", "c"]


def _texts_inside(figure: object) -> tuple[float, list[tuple[float, float]]]:
    """The figure's width in pixels and the (left, right) pixel extents of its title and
    legend, as drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [*figure.legends, *(text for text in figure.texts if text.get_text())]
    extents = [artist.get_window_extent(renderer) for artist in texts]
    return figure.bbox.width, [(extent.x0, extent.x1) for extent in extents]


def test_a_one_slice_montage_shows_its_whole_title_and_legend(
        tmp_path: Path, saved_figures: list) -> None:
    """A one-slice study got a 3.2-inch (320 px) montage: a long study name lost both ends of
    its title and the legend showed "consolidation | effusion | right lun..."."""
    from covseg.report import write_montage

    labels = np.zeros((1, 40, 50), dtype=np.int16)
    labels[0, 5:15, 5:15], labels[0, 20:30, 5:15], labels[0, 5:15, 30:40] = 1, 2, 3
    lungs = np.zeros_like(labels)
    lungs[0, 2:38, 2:24], lungs[0, 2:38, 27:48] = 1, 2
    nib.save(nib.Nifti1Image(labels[0].T[:, :, None], np.diag([-0.7, -0.7, 1.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    study = "patient_with_a_rather_long_study_name_0001"
    path = write_montage(tmp_path / "montage.png", grid.array, grid, lungs=lungs, title=study,
                         multiclass=True)
    figure = saved_figures[-1]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [
        "ground-glass", "consolidation", "effusion", "right lung", "left lung"]
    width, extents = _texts_inside(figure)
    assert len(extents) == 2 and all(0 <= left and right <= width for left, right in extents)
    with Image.open(path) as png:
        assert png.width == int(width) > 320
    assert figure.get_suptitle() == f"{study}\n(patient right on the image left)"


def test_montage_legend_names_only_what_its_slices_show(tmp_path: Path,
                                                        saved_figures: list) -> None:
    """The legend listed "lesion" over an empty mask, and both lungs over slices showing
    neither."""
    from covseg.report import write_montage

    lesions = np.zeros((8, 30, 30), dtype=np.int16)
    nib.save(nib.Nifti1Image(lesions.T, np.diag([-1.0, -1.0, 2.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    lungs = np.zeros_like(grid.array)
    write_montage(tmp_path / "empty.png", grid.array, grid, lungs=lungs, title="empty")
    assert saved_figures[-1].legends == []
    lesions = grid.array.copy()
    lesions[2, 5:9, 5:9] = 1
    lungs[7, 10:20, 2:12] = 1  # the right lung on a slice the montage does not show
    write_montage(tmp_path / "lesion.png", lesions, grid, lungs=lungs, count=1, title="one")
    assert [text.get_text() for text in saved_figures[-1].legends[0].get_texts()] == ["lesion"]
    lungs[2, 10:20, 2:12] = 1
    write_montage(tmp_path / "lung.png", lesions, grid, lungs=lungs, count=1, title="one")
    assert [text.get_text() for text in saved_figures[-1].legends[0].get_texts()] == [
        "lesion", "right lung"]


def test_montage_title_clears_the_top_slices_titles(tmp_path: Path, saved_figures: list) -> None:
    """On 512x512 studies, whose slices fill their cells, the title's second line "(patient
    right on the image left)" ran into the top-middle slice's "slice 3, 132.5 mL"."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from covseg.report import write_montage

    labels = np.zeros((6, 512, 512), dtype=np.int16)
    for k in range(6):
        labels[k, 200:260 + 10 * k, 100:180] = 1
    nib.save(nib.Nifti1Image(labels.transpose(2, 1, 0), np.diag([-0.7, -0.7, 5.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    for note in ("", "lung model lungrun40 (SHA-256 b881f3a0c98d)"):
        write_montage(tmp_path / "montage.png", grid.array, grid, title="medseg_hu",
                      **({"lungs_note": note} if note else {}))
        figure = saved_figures[-1]
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        renderer = canvas.get_renderer()
        title = figure._suptitle.get_window_extent(renderer)  # type: ignore[union-attr]
        tops = [axis.title.get_window_extent(renderer).y1 for axis in figure.axes]
        assert len(tops) == 6 and title.y0 > max(tops), (title, tops)
        assert title.y1 <= figure.bbox.height


def test_a_data_sets_mask_folders_are_no_studies(tmp_path: Path) -> None:
    """MedSeg's folder given to predict failed with "several studies are named 1": its
    rp_msk/ and rp_lung_msk/ (1.nii.gz ...) were read as CTs beside rp_im/; so were Zenodo's
    Infection_Mask/ volumes. Folders named as masks are passed over reading CTs, not masks."""
    for folder in ("rp_im", "rp_msk", "rp_lung_msk", "Infection_Mask"):
        (tmp_path / folder).mkdir()
        for name in ("1", "2"):
            (tmp_path / folder / f"{name}.nii.gz").write_bytes(b"")
    (tmp_path / "tr_im.nii.gz").write_bytes(b"")
    (tmp_path / "tr_mask.nii.gz").write_bytes(b"")
    assert [s.name for s in find_studies([tmp_path])] == ["1", "2", "tr_im"]
    assert len(find_studies([tmp_path / "rp_msk"])) == 2  # given itself, a folder is read
    with pytest.raises(CovsegError, match="several studies are named 1"):
        find_studies([tmp_path], masks=True)


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
