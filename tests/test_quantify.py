"""covseg quantify: studies counted from their masks, lungs and CT, over real masks too."""

from __future__ import annotations

import csv
import html
import importlib
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from covseg.batch import StudiesFailed
from covseg.burden import ct_category, quantify
from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from covseg.io.nifti import read_nifti
from covseg.io.volume import write_mask_like
from covseg.lungs import LESION_DEPTH_MM
from covseg.quantify import quantify_batch, quantify_study
from covseg.report import read_rows as covseg_rows
from tests.conftest import (
    CONSOLIDATED_AFFINE,
    OVERCALLED_AFFINE,
    SAMPLE_DICOMS,
    SHARED_DATA,
    consolidated_chest,
    overcalled_chest,
    saved_as,
    shared,
)

MASKS = SHARED_DATA / "mosmed-masks" / "masks"
needs_masks = pytest.mark.skipif(not MASKS.is_dir(), reason=f"real data not found: {MASKS}")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


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


def test_labelled_lungs_are_sided_in_one_pass_over_their_world_x(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a 0/1/2 lung mask's labels as sides went over every slice's world x twice (once
    to see the lungs apart left-right, once to see which lies on the right): now once, its
    sides as before, swapped (Zenodo's 1 = left) or kept."""
    lungs_module = importlib.import_module("covseg.lungs")
    passes: list[int] = []
    counted = lungs_module._world_x_spread
    monkeypatch.setattr(lungs_module, "_world_x_spread",
                        lambda *args: passes.append(1) or counted(*args))
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    for labels in ((2, 1), (1, 2)):
        lungs = save_like(mask, two_lungs(mask, labels), tmp_path / f"lungs{labels}.nii.gz")
        passes.clear()
        result = quantify_study(mask, tmp_path / f"out{labels}", lungs=lungs)
        assert result["right_lung"]["lesion_ml"] == pytest.approx(lesion_ml)
        assert result["left_lung"]["lesion_ml"] == 0.0
        assert len(passes) == 1


@pytest.mark.parametrize("fissure", ["oblique", "front_back"])
def test_two_lobes_of_one_lung_are_not_read_as_two_lungs(tmp_path: Path, caplog,
                                                         fissure: str) -> None:
    """lungmask's lobe labels 1 and 2 (left upper and lower lobe) of a synthetic left-lung-only
    study were read as two lungs and swapped as Zenodo's: a 40 mL "right lung" 36 % involved
    and the left 12 % (a front/back split: right 50 %, left 0). Labels not apart left-right are
    one lung, sided again: the left lung, 25 % involved, and no right lung."""
    lobes = np.zeros((96, 80, 24), dtype=np.uint8)  # NIfTI (x, y, z), RAS: small x is left
    y, z = np.indices((50, 20))
    upper = (y / 50 + z / 20 > 1.0) if fissure == "oblique" else (y >= 25)
    lobes[10:40, 15:65, 2:22] = np.where(upper, 1, 2)[None]
    lesion = np.zeros(lobes.shape, dtype=np.int16)
    lesion[10:25, 15:40, 2:22] = 1
    ct = np.full(lobes.shape, -1000, dtype=np.int16)
    i, j = np.indices(lobes.shape[:2])
    ct[((i - 49) / 45.0) ** 4 + ((j - 40) / 38.0) ** 4 <= 1] = 40  # the body; no right lung
    ct[lobes > 0] = -850
    ct[lesion > 0] = -300
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    for name, data in (("ct", ct), ("mask", lesion), ("lobes", lobes)):
        nib.save(nib.Nifti1Image(data, affine), str(tmp_path / f"{name}.nii.gz"))
    for image in (None, tmp_path / "ct.nii.gz"):
        caplog.clear()
        with caplog.at_level("WARNING"):
            result = quantify_study(tmp_path / "mask.nii.gz", tmp_path / f"out{image is None}",
                                    lungs=tmp_path / "lobes.nii.gz", image=image)
        assert result["left_lung"]["percent_involved"] == pytest.approx(25.0)
        assert result["right_lung"]["lung_ml"] == 0.0
        assert "right and left lungs (not apart left-right: their centres" in caplog.text
        assert "read as 1 = left, 2 = right" not in caplog.text


def _phantom_lungs(parts: str) -> np.ndarray:
    """Lung labels of a (x, y, z) RAS phantom (large x is the patient's right): both lungs, or
    the left lung alone in two parts, front and back or medial and lateral."""
    labels = np.zeros((96, 80, 24), dtype=np.uint8)
    if parts == "two lungs":
        labels[52:84, 28:52, 2:22] = 1
        labels[12:44, 28:52, 2:22] = 2
    elif parts == "front/back":
        labels[12:44, 28:52, 2:22] = np.where(np.arange(28, 52) >= 40, 1, 2)[None, :, None]
    else:  # medial/lateral: the medial part lies towards the midline (x 48), the patient's right
        labels[28:44, 28:52, 2:22] = 1
        labels[12:28, 28:52, 2:22] = 2
    return labels


@pytest.mark.parametrize("axes", ["RAS", "LPS"])
@pytest.mark.parametrize("parts", ["two lungs", "front/back", "medial/lateral"])
def test_labels_on_one_side_of_the_body_in_the_ct_are_not_two_lungs(
        tmp_path: Path, caplog, axes: str, parts: str) -> None:
    """A 0/1/2 lung mask's medial and lateral parts of one lung, lying apart left-right as two
    lungs do, were read as the right lung and the left (quantified with the CT, a left-lung-only
    study's medial half was a "right lung", 0 % involved, and the left 50 %). With the CT, two
    lungs lie on opposite sides of the body's midline: labels on one side are one lung, sided
    again (the left lung, 25 % involved, no right lung); two lungs keep their labels."""
    labels = _phantom_lungs(parts)
    lesion = np.zeros(labels.shape, dtype=np.int16)
    lesion[12:28, 28:40, 2:22] = 1  # the left lung's lateral back quarter
    ct = np.full(labels.shape, -1000, dtype=np.int16)
    i, j = np.indices(labels.shape[:2])
    ct[((i - 48) / 45.0) ** 4 + ((j - 40) / 38.0) ** 4 <= 1] = 40  # the body
    ct[labels > 0] = -850
    ct[lesion > 0] = -300
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    flip = np.s_[:, :] if axes == "RAS" else np.s_[::-1, ::-1]  # LPS: x and y run backwards
    if axes == "LPS":
        affine = np.diag([-0.7, -0.7, 5.0, 1.0])
    for name, data in (("ct", ct), ("mask", lesion), ("lungs", labels)):
        nib.save(nib.Nifti1Image(np.ascontiguousarray(data[flip]), affine),
                 str(tmp_path / f"{name}.nii.gz"))
    with caplog.at_level("WARNING"):
        result = quantify_study(tmp_path / "mask.nii.gz", tmp_path / "out",
                                lungs=tmp_path / "lungs.nii.gz", image=tmp_path / "ct.nii.gz")
    assert result["left_lung"]["percent_involved"] == pytest.approx(25.0)
    assert result["right_lung"]["lesion_ml"] == 0.0
    assert (result["right_lung"]["lung_ml"] > 0) == (parts == "two lungs")
    sided_again = "labels 1 and 2 are not read as the right and left lungs"
    assert (sided_again in caplog.text) == (parts != "two lungs")
    if parts == "medial/lateral":
        assert (f"{sided_again} (both on the patient's left of the body's midline in the CT "
                "(their centres") in caplog.text


def test_labels_sided_again_find_the_body_midline_once(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0/1/2 lung mask whose labels lie on one side of the body's midline in the CT had that
    midline found twice, once to refuse the labels and once to side them again (about 1.2 s a
    pass on a study of 120 slices of 512 x 512): it is found once and passed on."""
    labels = _phantom_lungs("medial/lateral")
    ct = np.full(labels.shape, -1000, dtype=np.int16)
    i, j = np.indices(labels.shape[:2])
    ct[((i - 48) / 45.0) ** 4 + ((j - 40) / 38.0) ** 4 <= 1] = 40  # the body
    ct[labels > 0] = -850
    lesion = np.zeros(labels.shape, dtype=np.int16)
    lesion[12:28, 28:40, 2:22] = 1
    for name, data in (("ct", ct), ("mask", lesion), ("lungs", labels)):
        nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.7, 5.0, 1.0])),
                 str(tmp_path / f"{name}.nii.gz"))
    lungs_module = importlib.import_module("covseg.lungs")
    found = lungs_module.body_midline
    calls = []

    def counted(*args: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append(args)
        return found(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(lungs_module, "body_midline", counted)
    monkeypatch.setattr(importlib.import_module("covseg.quantify"), "body_midline", counted)
    result = quantify_study(tmp_path / "mask.nii.gz", tmp_path / "out",
                            lungs=tmp_path / "lungs.nii.gz", image=tmp_path / "ct.nii.gz")
    assert result["left_lung"]["percent_involved"] == pytest.approx(25.0)
    assert len(calls) == 1


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
    # said on the console only: the record, both CSVs' orientation_note and the report say it
    assert result["sides_note"].startswith("the lung mask's affine is the identity")
    assert result["sides_note"] in result["orientation_note"]
    rows = read_rows(tmp_path / "out" / "quantification.csv")
    assert all(result["sides_note"] in row["orientation_note"] for row in rows)


@pytest.mark.parametrize("affine", ["eye", None])
def test_a_mask_without_geometry_says_its_volumes_assume_1_mm_voxels(
        tmp_path: Path, caplog, affine: str | None) -> None:
    """A numpy pipeline's mask (np.eye(4), or qform and sform codes 0, pixdim 1) quantified
    without its CT was counted in 1 mm voxels without a word (a 3 mm CT's lesion read 27 times
    too small); the codes-0 header's orientation warning was printed twice (the mask was read
    for its classes, then counted). One warning each now, and the record says it."""
    from covseg.quantify import quantify_batch

    lesion = np.zeros((8, 8, 4), np.uint8)
    lesion[2:4, 2:4, 1] = 1
    nib.save(nib.Nifti1Image(lesion, np.eye(4) if affine else None),
             str(tmp_path / "c_mask.nii.gz"))
    with caplog.at_level("WARNING"):
        quantify_batch([tmp_path / "c_mask.nii.gz"], tmp_path / "out")
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == len(set(said)) == (1 if affine else 2), said
    assert sum("volumes assume 1 mm voxels" in line for line in said) == 1
    record = json.loads((tmp_path / "out" / "c" / "quantification.json").read_text())
    assert record["study"]["lesion_ml"] == pytest.approx(0.004)
    assert "volumes assume 1 mm voxels" in record["voxels_note"]
    assert record["voxels_note"] in record["orientation_note"]
    rows = read_rows(tmp_path / "out" / "c" / "quantification.csv")
    assert all(record["voxels_note"] in row["orientation_note"] for row in rows)


def test_a_lung_given_its_side_by_its_place_is_noted_in_the_record_csv_and_report(
        tmp_path: Path) -> None:
    """A lung mask holding one lung is given a side by where it lies in the image, with a
    console warning only: the CSV, quantification.json and report.html showed "right lung 0 mL"
    without a word. The guess is now in them (``sides_note``, ``orientation_note``)."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    lungs = np.zeros(nib.load(str(mask)).shape, np.uint8)
    lungs[10:28, 10:38, 1:5] = 1  # one lung, the patient's left
    one = save_like(mask, lungs, tmp_path / "one.nii.gz")
    result = quantify_study(mask, tmp_path / "out", lungs=one, html_report=True)
    assert result["right_lung"]["lung_ml"] == 0.0
    assert "all of it taken as the left lung by its place in the image" in result["sides_note"]
    rows = read_rows(tmp_path / "out" / "quantification.csv")
    assert [row["orientation_note"] for row in rows] == [result["sides_note"]] * 3
    page = html.unescape((tmp_path / "out" / "report.html").read_text())
    assert f"Note: {result['sides_note']}." in page


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
                         "lesion_outside_lungs_ml", "lesion_added_to_lungs_ml", "lungs",
                         "orientation_note", "ggo_percent_involved",
                         "consolidation_percent_involved"]
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
        assert "or quantify with the CT and no lung mask (threshold lungs" in note


def test_lesion_outside_threshold_lungs_is_warned_of(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """quantify --image found the lungs by HU threshold, which finds no lung consolidated whole
    (no air left in it): the mask of that lung lay outside both lungs, left out of
    percent_involved without a word (a lung mask's or a lung model's lungs warned of it). It is
    warned of once and recorded as the lung_note, as for a lung mask."""
    hu = np.full((64, 48, 10), -1000.0, dtype=np.float32)  # x, y, z: RAS, x large the right
    hu[4:60, 4:44, :] = 40.0  # the body; the left lung (x 10..27) consolidated whole
    hu[36:54, 10:38, 1:9] = -850.0  # the right lung: 4032 voxels
    mask = np.zeros(hu.shape, dtype=np.uint8)
    mask[10:28, 10:38, 1:9] = 1  # the left lung: 4032 voxels, 5.6 mm from the right
    mask[40:46, 20:26, 2:4] = 1  # 72 voxels in the right lung
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    for name, data in (("ct", hu), ("mask", mask)):
        nib.save(nib.Nifti1Image(data, affine), str(tmp_path / f"{name}.nii.gz"))
    with caplog.at_level("WARNING"):
        result = quantify_study(tmp_path / "mask.nii.gz", tmp_path / "out",
                                image=tmp_path / "ct.nii.gz")
    outside, inside = (voxels * 0.7 * 0.7 * 5.0 / 1000.0 for voxels in (4032, 72))
    study = result["study"]
    assert study["lesion_outside_lungs_ml"] == pytest.approx(outside)
    assert study["percent_involved"] == pytest.approx(100 * 72 / 4032)
    note = result["lung_note"]
    assert note == (f"{outside:.1f} mL of lesion lies outside the HU threshold's lungs, more "
                    f"than the {inside:.1f} mL inside them, and is left out of "
                    "percent_involved: the HU threshold may have missed consolidated lung, or "
                    "the calls run on beyond the lungs; check the montage, or give the lungs "
                    "with --lungs")
    assert [r.getMessage() for r in caplog.records if note in r.getMessage()] == [
        f"{tmp_path / 'mask.nii.gz'}: {note}"]
    stored = json.loads((tmp_path / "out" / "quantification.json").read_text())
    assert stored["lung_note"] == note


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


@pytest.mark.parametrize(("shape", "told"), [
    ((64, 1, 1), (" (one axial slice): a 64 x 1 image, too small to be a mask slice (covseg "
                  "reads slices of at least 2 x 2 pixels); give the mask of the whole series")),
    ((64, 1), ": a 2D image of shape (64, 1), not a volume; save it as (x, y, 1)"),
    ((64, 1, 10), (": a single coronal plane (axes RAS; 10 axial slices of 64 x 1 pixels), not "
                   "axial slices; give the mask of the whole series"))])
def test_a_mask_too_thin_is_told_in_a_mask_s_words(tmp_path: Path, shape: tuple[int, ...],
                                                   told: str) -> None:
    """A lesion mask of one axial slice one row high was told "too small to be a CT slice", a
    2D one to "predict 2D slices as images", a one-plane coronal one to "give the whole
    series": it is a mask, and told so."""
    thin = np.zeros(shape, dtype=np.uint8)
    thin[20:30] = 1
    path = tmp_path / "thin_mask.nii.gz"
    nib.save(nib.Nifti1Image(thin, np.diag([0.7, 0.7, 5.0, 1.0])), str(path))
    result = quantify_batch([path], tmp_path / "out")
    assert read_rows(result.summary)[0]["error"] == f"{path}{told}"


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
    to be thresholded as a probability map; it now fails as a CT, saying where a CT goes, as
    does a 16-bit image beyond int16's labels. A probability map (0..1) keeps its own
    reason."""
    ct, _, _ = synthetic_study(tmp_path / "in", "good")
    hu = noisy_ct(ct)
    floats = np.asarray(hu.dataobj, dtype=np.float32) + np.float32(0.25)
    nib.save(nib.Nifti1Image(floats, hu.affine), str(tmp_path / "tr_im.nii.gz"))
    with pytest.raises(CovsegError, match=r"tr_im\.nii\.gz: not a lesion mask but an image "
                                          r"\(\d+ grey levels, \d+% of pixels mid-grey\); "
                                          r"give the CT as --image"):
        quantify_study(tmp_path / "tr_im.nii.gz", tmp_path / "out")
    grey = np.random.default_rng(0).integers(0, 60000, floats.shape, dtype=np.uint16)
    nib.save(nib.Nifti1Image(grey, hu.affine), str(tmp_path / "u16.nii.gz"))  # beyond int16
    with pytest.raises(CovsegError, match=r"u16\.nii\.gz: not a lesion mask but an image"):
        quantify_study(tmp_path / "u16.nii.gz", tmp_path / "out")
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
    """The refusal said "give the CT as --image and the lesion mask as MASK" to
    covseg.quantify(masks, out, image=...) too: the API names its keywords, the command line its
    flag and argument."""
    from covseg import api
    from covseg.cli import main

    _, good, _ = synthetic_study(tmp_path / "in", "good")
    shutil.copy(good, tmp_path / "good.nii.gz")
    told = "; give the CT as {} and the lesion mask as {}"
    with pytest.raises(StudiesFailed, match="1 of 1 studies could not be quantified"):
        api.quantify(good, tmp_path / "api", image=tmp_path / "good.nii.gz")
    error = read_rows(tmp_path / "api" / "summary.csv")[0]["error"]
    assert error.endswith(told.format("image", "masks")), error
    assert main(["quantify", str(good), "--out", str(tmp_path / "cli"), "--image",
                 str(tmp_path / "good.nii.gz")]) == 1
    error = read_rows(tmp_path / "cli" / "summary.csv")[0]["error"]
    assert error.endswith(told.format("--image", "MASK")), error


def test_an_empty_lung_mask_fails_its_study(tmp_path: Path) -> None:
    """An all-zero --lungs file was counted: status done, 0 mL of lung, no % or category, and a
    warning that the lesion lay outside the lung mask's lungs. It now fails its study saying
    the mask holds no lung; the batch goes on. Without a CT it names --image, where the lungs
    would be found (it said "leave it out to find the lungs in the CT" of no CT)."""
    _, good, _ = synthetic_study(tmp_path / "in", "good")
    _, empty, _ = synthetic_study(tmp_path / "in", "empty")
    save_like(good, two_lungs(good), tmp_path / "lungs" / "good.nii.gz")
    save_like(empty, np.zeros(nib.load(str(empty)).shape, np.uint8),
              tmp_path / "lungs" / "empty.nii.gz")
    told = ("empty.nii.gz: the lung mask holds no lung (every voxel is 0); give this study's "
            "lung mask as --lungs, or leave it out to find the lungs in the CT, given as --image")
    with pytest.raises(CovsegError, match=r"^\S*" + re.escape(told) + "$"):
        quantify_study(empty, tmp_path / "one", lungs=tmp_path / "lungs" / "empty.nii.gz")
    with pytest.raises(CovsegError, match=re.escape(" leave it out to find the lungs in the CT")
                       + "$"):
        quantify_study(empty, tmp_path / "one", lungs=tmp_path / "lungs" / "empty.nii.gz",
                       image=tmp_path / "in")
    assert not (tmp_path / "one").exists()
    result = quantify_batch([good.parent], tmp_path / "out", lungs=tmp_path / "lungs")
    assert (result.done, result.failed) == (1, 1)
    errors = {r["study"]: r["error"] for r in read_rows(result.summary)}
    assert errors["empty"].endswith(told) and not errors["good"]


def test_a_lungs_folder_without_the_masks_lungs_says_no_lung_mask(tmp_path: Path) -> None:
    """--lungs naming a folder without the mask's lungs said "no mask named like the mask", as
    if the lesion mask were missing."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    save_like(mask, two_lungs(mask), tmp_path / "lungs" / "other_lungs.nii.gz")
    with pytest.raises(CovsegError, match="lungs: no lung mask named like the mask 'case'"):
        quantify_study(mask, tmp_path / "out", lungs=tmp_path / "lungs")


def test_a_predict_folder_as_lungs_is_read_for_its_lungs(tmp_path: Path) -> None:
    """--lungs naming a predict output folder, or one of its study folders, failed "no lung
    mask named like the mask": its study folder (infection.nii.gz beside lungs.nii.gz) was not
    taken for its lungs.nii.gz, as MASK takes it for its infection.nii.gz."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "x")
    study = tmp_path / "preds" / "x"
    lungs = save_like(mask, two_lungs(mask), study / "lungs.nii.gz")
    shutil.copy(mask, study / "infection.nii.gz")
    (tmp_path / "preds" / "summary.csv").write_text("study,error\nx,\n")
    for given in (tmp_path / "preds", study):
        result = quantify_study(mask, tmp_path / f"out_{given.name}", lungs=given)
        assert result["inputs"]["lungs"] == str(lungs.resolve())
        assert result["inputs"]["lung_source"] == "mask"
        assert result["study"]["lesion_ml"] == pytest.approx(lesion_ml)
        assert result["study"]["lung_ml"] > 0


def test_a_predict_folder_without_lungs_as_lungs_names_the_file(tmp_path: Path) -> None:
    """A predict study folder without its lungs.nii.gz, as --lungs, is refused naming it."""
    _, mask, _ = synthetic_study(tmp_path / "in", "x")
    study = tmp_path / "preds" / "x"
    study.mkdir(parents=True)
    shutil.copy(mask, study / "infection.nii.gz")
    for given in (tmp_path / "preds", study):
        with pytest.raises(CovsegError, match=r"^\S*preds/x: a covseg predict study folder "
                                              r"without lungs\.nii\.gz; give a lung mask file "
                                              r"as --lungs$"):
            quantify_study(mask, tmp_path / f"out_{given.name}", lungs=given)
        assert not (tmp_path / f"out_{given.name}").exists()


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


def _predicted_by(mask: Path, folder: Path, multiclass: bool,
                  num_classes: int | None = None) -> Path:
    """A predict study folder in ``folder`` holding ``mask`` as its ``infection.nii.gz``, its
    record saying a model of which classes (``multiclass``, and ``num_classes`` where given)
    predicted it."""
    predicted = folder / "pred" / "p"
    predicted.mkdir(parents=True)
    shutil.copy(mask, predicted / "infection.nii.gz")
    record: dict[str, object] = {"multiclass": multiclass}
    if num_classes is not None:
        record["inputs"] = {"model": {"num_classes": num_classes}}
    (predicted / "quantification.json").write_text(json.dumps(record))
    return predicted


def _refused_as(predicted: Path, classes: str, other: str, capsys: pytest.CaptureFixture[str],
                told: str) -> None:
    """``predicted`` quantified as ``classes`` is refused by the API and the CLI in the one line
    ``told``, spelled for each ({}: the classes given, then ``other``, the ones to give), and
    nothing is written."""
    from covseg import api
    from covseg.cli import main

    out = predicted.parent / "out"
    with pytest.raises(CovsegError) as raised:
        api.quantify(predicted, out, classes=classes)
    assert str(raised.value) == told.format(f'classes="{classes}"', f'classes="{other}"')
    assert main(["quantify", str(predicted), "--out", str(out), "--classes", classes]) == 2
    assert capsys.readouterr().err == (
        f"covseg: error: {told.format(f'--classes {classes}', f'--classes {other}')}\n")
    assert not out.exists()


def test_a_binary_models_prediction_is_refused_as_multiclass(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--classes multiclass read a binary model's prediction (its record beside the mask says
    so) whole as ground-glass, which --classes auto refuses; a mask without a record is read as
    told."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "a")
    predicted = _predicted_by(mask, tmp_path, multiclass=False)
    _refused_as(predicted, "multiclass", "binary", capsys, (
        f"{predicted / 'infection.nii.gz'} is a binary model's prediction (its "
        "quantification.json), but {} would read its lesion as ground-glass; quantify it with {}"))
    assert quantify_batch([mask], tmp_path / "told", multiclass=True).done == 1
    stored = json.loads((tmp_path / "told" / "a" / "quantification.json").read_text())
    assert stored["multiclass"] is True and stored["study"]["ggo_ml"] == pytest.approx(lesion_ml)


def test_a_binary_models_prediction_quantified_alone_is_refused_as_multiclass(
        tmp_path: Path) -> None:
    """quantify_study, one mask, read a binary model's prediction told multiclass whole as
    ground-glass, which the batch refuses; a mask without a record is read as told."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "a")
    predicted = _predicted_by(mask, tmp_path, multiclass=False)
    with pytest.raises(CovsegError, match=r"p/infection.nii.gz is a binary model's prediction "
                                          r"\(its quantification.json\), but .* would read its "
                                          r"lesion as ground-glass; quantify it with "):
        quantify_study(predicted / "infection.nii.gz", tmp_path / "out", multiclass=True)
    assert not (tmp_path / "out").exists()
    result = quantify_study(mask, tmp_path / "told", multiclass=True)
    assert result["multiclass"] is True and result["study"]["ggo_ml"] == pytest.approx(lesion_ml)


def test_a_binary_models_prediction_is_read_binary_when_told(tmp_path: Path) -> None:
    """--classes binary reads a binary model's prediction as its record says it is: only a call
    read multi-class refuses it."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "a")
    predicted = _predicted_by(mask, tmp_path, multiclass=False)
    assert quantify_batch([predicted], tmp_path / "out", multiclass=False).done == 1
    stored = json.loads((tmp_path / "out" / "p" / "quantification.json").read_text())
    assert stored["multiclass"] is False
    assert stored["study"]["lesion_ml"] == pytest.approx(lesion_ml)


def test_a_multiclass_models_prediction_is_refused_as_binary(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--classes binary counted a multi-class model's effusion (its record beside the mask says
    multi-class) as lesion, alone and in a batch (776 mL of lesion read 2,004), while the reverse
    was refused; a mask without a record is read as told."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "a")
    grid = nib.load(str(mask))
    labels = np.asarray(grid.dataobj).copy()
    labels[10:16, 20:26, 2:4] = 3  # 72 voxels of effusion beside 72 of ground-glass
    nib.save(nib.Nifti1Image(labels, grid.affine), str(mask))
    predicted = _predicted_by(mask, tmp_path, multiclass=True)
    _refused_as(predicted, "binary", "multiclass", capsys, (
        f"{predicted / 'infection.nii.gz'} is a multi-class model's prediction (its "
        "quantification.json), but {} would count its effusion as lesion; quantify it with {}"))
    with pytest.raises(CovsegError, match=r"p/infection.nii.gz is a multi-class model's "):
        quantify_study(predicted / "infection.nii.gz", predicted.parent / "out", multiclass=False)
    assert not (predicted.parent / "out").exists()
    result = quantify_study(predicted / "infection.nii.gz", tmp_path / "auto")
    assert result["study"]["lesion_ml"] == pytest.approx(lesion_ml)
    result = quantify_study(mask, tmp_path / "told", multiclass=False)
    assert result["study"]["lesion_ml"] == pytest.approx(2 * lesion_ml)


def test_a_three_class_models_prediction_is_read_binary_when_told(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--classes binary refused every multi-class model's prediction as counting its effusion as
    lesion, also a 3-class model's (no effusion class), which reads the same binary: it is
    accepted, its lesion mL and % as the mask's without a record; a 4-class model's is refused."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "a")
    alone = quantify_study(mask, tmp_path / "alone", multiclass=False)["study"]
    predicted = _predicted_by(mask, tmp_path / "three", multiclass=True, num_classes=3)
    assert quantify_batch([predicted], tmp_path / "out", multiclass=False).done == 1
    stored = json.loads((tmp_path / "out" / "p" / "quantification.json").read_text())["study"]
    assert stored["lesion_ml"] == pytest.approx(lesion_ml) == pytest.approx(alone["lesion_ml"])
    assert stored["percent_involved"] == pytest.approx(alone["percent_involved"])
    result = quantify_study(predicted / "infection.nii.gz", tmp_path / "one", multiclass=False)
    assert result["study"]["lesion_ml"] == pytest.approx(lesion_ml)
    predicted = _predicted_by(mask, tmp_path / "four", multiclass=True, num_classes=4)
    capsys.readouterr()
    _refused_as(predicted, "binary", "multiclass", capsys, (
        f"{predicted / 'infection.nii.gz'} is a multi-class model's prediction (its "
        "quantification.json), but {} would count its effusion as lesion; quantify it with {}"))


def test_a_multiclass_study_gives_each_classes_percent_involved(tmp_path: Path) -> None:
    """A multi-class study gave ground-glass and consolidation in mL only, its % involved for
    both together: each class's share of the lungs is given too (quantification.json, its CSV
    and summary.csv, last), adding up to % involved; effusion, not lung, is in neither."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "a")
    grid = nib.load(str(mask))
    labels = np.asarray(grid.dataobj).copy()
    labels[40:43, 20:26, 2:4] = 2  # 36 voxels of consolidation beside 36 of ground-glass
    labels[10:16, 20:26, 2:4] = 3  # 72 voxels of effusion in the left lung
    nib.save(nib.Nifti1Image(labels, grid.affine), str(mask))
    assert quantify_batch([mask], tmp_path / "out", image=ct).done == 1
    study = json.loads((tmp_path / "out" / "a" / "quantification.json").read_text())["study"]
    lung_voxels = 2 * 18 * 28 * 4 - 72
    assert study["ggo_percent_involved"] == pytest.approx(100 * 36 / lung_voxels)
    assert study["consolidation_percent_involved"] == pytest.approx(100 * 36 / lung_voxels)
    assert study["percent_involved"] == pytest.approx(100 * 72 / lung_voxels)
    summary = read_rows(tmp_path / "out" / "summary.csv")
    assert list(summary[0])[-2:] == ["ggo_percent_involved", "consolidation_percent_involved"]
    assert float(summary[0]["ggo_percent_involved"]) == pytest.approx(100 * 36 / lung_voxels,
                                                                      rel=1e-5)
    rows = read_rows(tmp_path / "out" / "a" / "quantification.csv")
    assert list(rows[0])[-2:] == ["ggo_percent_involved", "consolidation_percent_involved"]
    assert float(rows[0]["consolidation_percent_involved"]) == pytest.approx(
        100 * 36 / lung_voxels, rel=1e-5)


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
    assert f"beyond {LESION_DEPTH_MM:g} mm from the lungs" in warnings[0]
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


def test_image_and_lung_folders_are_searched_once_per_call(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each mask searched the whole --image (and --lungs) folder again, sub-folders included."""
    module = importlib.import_module("covseg.quantify")  # covseg.quantify is the API function
    for name in ("a", "b", "c"):
        synthetic_study(tmp_path / "in", name)
    searched: list[Path] = []
    discover = module.discover_studies

    def counting(inputs: list[Path], *args: object, **options: object) -> object:
        searched.extend(map(Path, inputs))
        return discover(inputs, *args, **options)

    monkeypatch.setattr(module, "discover_studies", counting)
    result = quantify_batch([tmp_path / "in" / "masks"], tmp_path / "out", image=tmp_path / "in")
    assert (result.done, result.failed) == (3, 0)
    assert searched.count(tmp_path / "in") == 1
    rows = read_rows(result.summary)
    assert [row["study"] for row in rows] == ["a", "b", "c"]


def test_a_ct_holding_no_lungs_gets_no_category_and_says_why(tmp_path: Path, caplog) -> None:
    """The lowest 12 slices of the real abdominal sample hold bowel gas and no lung: their gas
    was found as 7.3 mL of lungs (predict read that slab 88.7 % involved, CT-4); now no lungs are
    found, the study has no % involved or category, and a warning and the lung_note say so."""
    sample = nib.load(str(shared("ct-samples", "example_ct_sm.nii.gz")))
    ct = tmp_path / "abd.nii.gz"
    nib.save(sample.slicer[:, :, 0:12], str(ct))
    lesion = np.zeros(sample.shape[:2] + (12,), dtype=np.uint8)
    lesion[50:60, 40:50, 4:8] = 1
    mask = tmp_path / "abd_les.nii.gz"
    nib.save(nib.Nifti1Image(lesion, sample.affine), str(mask))
    with caplog.at_level("WARNING"):
        result = quantify_study(mask, tmp_path / "out", image=ct)
    study = result["study"]
    assert study["lung_ml"] == 0 and study["ct_category"] is None
    assert study["percent_involved"] is None and study["lesion_ml"] == pytest.approx(10.8)
    assert result["lung_note"].startswith("no lungs found in the CT (under 5 mL of lung-like air")
    assert result["lung_note"].endswith("give them with --lungs")
    assert [r.message for r in caplog.records] == [f"{mask}: {result['lung_note']}"]


def two_lungs_and_a_lesion() -> np.ndarray:
    """(x, y, z) labels: lungs 1 (x small) and 2 side by side, a lesion 3 in lung 1."""
    labels = np.zeros((32, 32, 8), dtype=np.uint8)
    labels[2:15, 4:28, :], labels[17:30, 4:28, :] = 1, 2
    labels[5:9, 10:14, 3] = 3
    return labels


@pytest.mark.parametrize("combined,lungs,infection", [
    ("lung_and_infection_mask", "lung_mask", "infection_mask"),
    ("Lung_and_Infection_Mask", "Lung_Mask", "Infection_Mask")])
def test_zenodo_lung_masks_are_refused_as_lesion_masks(tmp_path: Path, capsys, combined: str,
                                                       lungs: str, infection: str) -> None:
    """Zenodo's lung-and-infection masks (1, 2 the lungs, 3 the infection) read as lesion
    classes: the lungs counted as ground-glass and consolidation, the infection as effusion,
    100 % involved, CT-4, exit 0. They, and Zenodo's lung masks, are refused, folder or file, in
    one line naming the infection masks to give."""
    from covseg.cli import main

    labels = two_lungs_and_a_lesion()
    affine = np.diag([0.8, 0.8, 5.0, 1])
    for folder, mask in ((combined, labels), (lungs, np.minimum(labels, 2)),
                         (infection, (labels == 3).astype(np.uint8))):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(mask, affine), str(tmp_path / folder / "coronacases_001.nii"))
    for folder in (combined, lungs):
        for given in (tmp_path / folder, tmp_path / folder / "coronacases_001.nii"):
            assert main(["quantify", str(given), "--out", str(tmp_path / "q")]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert f"give the infection masks, {tmp_path / infection}, as MASK" in err
            assert not (tmp_path / "q").exists()
    with pytest.raises(CovsegError, match="Zenodo's lung and infection masks"):
        quantify_study(tmp_path / combined / "coronacases_001.nii", tmp_path / "q")
    assert main(["quantify", str(tmp_path / infection), "--out", str(tmp_path / "q")]) == 0


def test_predicts_own_lungs_given_as_the_mask_are_refused(tmp_path: Path, capsys) -> None:
    """covseg predict's lungs.nii.gz given as MASK counted its lungs as ground-glass and
    consolidation (lesion 1891 mL), silently; it is refused naming its infection.nii.gz."""
    from covseg.cli import main

    study = tmp_path / "ct"
    study.mkdir()
    labels = two_lungs_and_a_lesion()
    affine = np.diag([0.8, 0.8, 5.0, 1])
    nib.save(nib.Nifti1Image(np.minimum(labels, 2), affine), str(study / "lungs.nii.gz"))
    nib.save(nib.Nifti1Image((labels == 3).astype(np.uint8), affine),
             str(study / "infection.nii.gz"))
    (study / "quantification.json").write_text(json.dumps(
        {"files": {"infection": str(study / "infection.nii.gz"),
                   "lungs": str(study / "lungs.nii.gz")}}))
    assert main(["quantify", str(study / "lungs.nii.gz"), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give its infection.nii.gz, or its folder, as MASK" in err


def test_a_lung_mask_given_as_the_lesion_mask_is_warned_of(tmp_path: Path, caplog) -> None:
    """A mask whose labels 1 and 2 lie side by side as two lungs, each in one piece, is counted
    as lesion, 100 % involved, but warned of and noted first in the lung_note; the real
    multi-class masks are not (tests/test_lungs.py)."""
    labels = np.minimum(two_lungs_and_a_lesion(), 2)
    affine = np.diag([-0.8, 0.8, 5.0, 1])
    nib.save(nib.Nifti1Image(labels, affine), str(tmp_path / "scan.nii.gz"))
    with caplog.at_level("WARNING"):
        result = quantify_study(tmp_path / "scan.nii.gz", tmp_path / "q", lungs=tmp_path
                                / "scan.nii.gz")
    assert result["study"]["percent_involved"] == 100
    assert result["lung_note"].startswith("the mask's labels 1 and 2 lie side by side as two "
                                          "lungs, each in one piece: a lung mask?")
    assert result["lung_note"].endswith("quantify the infection mask instead, giving this one "
                                         "as its lungs")
    said = [r.message for r in caplog.records if "a lung mask?" in r.message]
    assert said == [f"{tmp_path / 'scan.nii.gz'}: {result['lung_note']}"]
    one_lung = np.where(labels == 2, 0, labels)
    one_lung[20:24, 10:14, 2:4] = 2  # a consolidation beside, not a lung: no warning
    nib.save(nib.Nifti1Image(one_lung, affine), str(tmp_path / "lesion.nii.gz"))
    assert quantify_study(tmp_path / "lesion.nii.gz", tmp_path / "q").get("lung_note") is None


def test_a_4_class_mask_scaled_to_fill_8_bits_is_read_as_its_classes(tmp_path: Path) -> None:
    """A 4-class mask stored as 0/85/170/255, which train and evaluate read as labels 0..3, was
    quantified as binary by default (effusion counted as lesion, no class volumes) and, with
    --classes multiclass, refused as a binary mask; it reads as its classes."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    lesions = np.zeros((64, 48, 6), dtype=np.uint8)
    lesions[40:46, 20:26, 2], lesions[14:18, 20:24, 2], lesions[40:44, 30:32, 3] = 85, 170, 255
    nib.save(nib.Nifti1Image(lesions, np.diag([0.7, 0.7, 5.0, 1.0])), str(mask))
    voxel_ml = 0.7 * 0.7 * 5.0 / 1000.0
    for multiclass in (None, True):
        batch = quantify_batch([mask], tmp_path / f"q{multiclass}", image=tmp_path / "in",
                               multiclass=multiclass)
        assert batch.failed == 0 and batch.done == 1
        study = json.loads((tmp_path / f"q{multiclass}" / "case" / "quantification.json")
                           .read_text())
        assert study["multiclass"] is True
        assert study["study"]["ggo_ml"] == pytest.approx(36 * voxel_ml)
        assert study["study"]["consolidation_ml"] == pytest.approx(16 * voxel_ml)
        assert study["study"]["effusion_ml"] == pytest.approx(8 * voxel_ml)
        assert study["study"]["lesion_ml"] == pytest.approx(52 * voxel_ml)


def test_a_label_above_3_beside_classes_fails_its_study_in_one_line(tmp_path: Path,
                                                                     capsys) -> None:
    """A multi-class mask with a stray label 5 (0/1/2/5) was quantified as binary by default,
    exit 0: the stray patch counted as lesion, ground-glass and consolidation dropped. It fails
    as --classes multiclass fails it, naming the label; an instance-labelled mask stays binary
    (test_an_instance_labelled_mask_counts_every_lesion_once)."""
    from covseg.cli import main

    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    lesions = np.zeros((64, 48, 6), dtype=np.int16)
    lesions[40:46, 20:26, 2], lesions[14:18, 20:24, 2], lesions[40:44, 30:32, 3] = 1, 2, 5
    nib.save(nib.Nifti1Image(lesions, np.diag([0.7, 0.7, 5.0, 1.0])), str(mask))
    assert main(["quantify", str(mask), "--image", str(tmp_path / "in"),
                 "--out", str(tmp_path / "q")]) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "multi-class masks use labels 0..3" in errors[0]
    assert "found 5" in errors[0]
    assert not (tmp_path / "q" / "case" / "quantification.json").exists()


@pytest.mark.parametrize("effusion_apart", [False, True])
def test_a_lung_and_infection_mask_outside_its_folder_is_warned_of(
        tmp_path: Path, caplog, effusion_apart: bool) -> None:
    """Zenodo's lung-and-infection mask (1, 2 the lungs, 3 the infection within them) copied
    out of its lung_and_infection_mask/ folder was counted as lesion classes, 100 % involved,
    CT-4, without the "a lung mask?" warning a 0/1/2 lung mask gets. It is warned of and noted,
    saying to split it; a 4-class mask whose effusion lies apart from labels 1 and 2 is not."""
    labels = two_lungs_and_a_lesion()
    if effusion_apart:
        labels[labels == 3] = 1
        labels[2:15, 30:32, 2:6] = 3  # beyond lung 1's rows 4..27: outside the lungs
    nib.save(nib.Nifti1Image(labels, np.diag([-0.8, 0.8, 5.0, 1])),
             str(tmp_path / "scan.nii.gz"))
    with caplog.at_level("WARNING"):
        result = quantify_study(tmp_path / "scan.nii.gz", tmp_path / "q")
    if effusion_apart:
        assert result["lung_note"] is None and "lung-and-infection" not in caplog.text
        return
    assert result["multiclass"] is True and result["study"]["effusion_ml"] > 0
    assert result["lung_note"].startswith(
        "the mask's labels 1 and 2 lie side by side as two lungs, each in one piece, and label "
        "3 lies within them: a lung-and-infection mask (Zenodo's and Kaggle's: 1 and 2 the "
        "lungs, 3 the infection)? They are counted as lesion (1 ground-glass, 2 consolidation, "
        "3 effusion); split it: quantify its label 3 alone as the infection mask, giving this "
        "one as its lungs (")
    said = [r.message for r in caplog.records if "lung-and-infection" in r.message]
    assert said == [f"{tmp_path / 'scan.nii.gz'}: {result['lung_note']}"]
    nib.save(nib.Nifti1Image((labels == 3).astype(np.uint8), np.diag([-0.8, 0.8, 5.0, 1])),
             str(tmp_path / "infection.nii.gz"))
    split = quantify_study(tmp_path / "infection.nii.gz", tmp_path / "split",
                           lungs=tmp_path / "scan.nii.gz")
    assert split["study"]["lesion_ml"] == pytest.approx(16 * 0.8 * 0.8 * 5.0 / 1000)
    assert split["study"]["percent_involved"] < 1 and split["lung_note"] is None


@pytest.mark.parametrize("axes", ["RAS", "LPS", "RSA", "ASL"])
def test_the_record_gives_shape_and_voxel_sizes_as_the_file_holds_them(
        tmp_path: Path, axes: str) -> None:
    """quantification.json's ``shape`` and ``spacing_mm`` were covseg's working (z, y, x) order:
    [6, 48, 64] and [5, 0.7, 0.7] for a (64, 48, 6) file of 0.7 x 0.7 x 5 mm voxels, the same
    for its coronal and sagittal copies. They are the file's, as nibabel reads its header."""
    ct, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    for path in (ct, mask):
        image = nib.load(str(path))
        nib.save(image.as_reoriented(nib.orientations.ornt_transform(
            nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(axes))), str(path))
    stored = nib.load(str(mask))
    assert "".join(nib.aff2axcodes(stored.affine)) == axes
    result = quantify_study(mask, tmp_path / "out", image=ct)
    record = json.loads((tmp_path / "out" / "quantification.json").read_text())
    assert record["shape"] == result["shape"] == list(stored.shape)
    assert record["spacing_mm"] == result["spacing_mm"] == pytest.approx(
        [float(z) for z in stored.header.get_zooms()])
    assert sorted(record["shape"]) == [6, 48, 64]
    assert record["voxel_ml"] == pytest.approx(0.7 * 0.7 * 5.0 / 1000)
    assert record["study"]["lesion_ml"] == pytest.approx(lesion_ml)


def test_the_record_gives_the_voxel_sizes_volumes_were_counted_by(tmp_path: Path) -> None:
    """A file in metres (xyzt_units) is counted in mm: ``spacing_mm`` says the mm, in the
    file's axis order, not the header's metres."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    image = nib.load(str(mask))
    metres = nib.Nifti1Image(np.asarray(image.dataobj).transpose(2, 0, 1),
                             np.diag([0.005, 0.0007, 0.0007, 1.0]))
    metres.header.set_xyzt_units("meter")
    nib.save(metres, str(mask))
    result = quantify_study(mask, tmp_path / "out")
    assert result["shape"] == [6, 64, 48]
    assert result["spacing_mm"] == pytest.approx([5.0, 0.7, 0.7])
    assert result["study"]["lesion_ml"] == pytest.approx(lesion_ml)


def test_names_a_spreadsheet_would_run_as_formulas_are_written_as_text_and_read_back(
        tmp_path: Path) -> None:
    """A study named ``=HYPERLINK(...)`` or ``-2+3`` was written to summary.csv and
    quantification.csv as it was, a live formula in Excel or LibreOffice. Such names now get a
    leading ``'`` (OWASP's advice), numbers (``+1``) do not, and covseg reads its summary back
    without it: a later call keeps the earlier rows as written, never quoted twice."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    names = ['=HYPERLINK("evil.example","x")', "-2+3", "@SUM(1+1)", "+1", "'quoted", "plain"]
    folder = tmp_path / "inj"
    folder.mkdir()
    for name in names:
        shutil.copy(mask, folder / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert quantify_batch([folder], out).done == len(names)
    text = (out / "summary.csv").read_text()
    cells = sorted(line.split(",")[0] for line in text.splitlines()[1:])
    assert cells == ['"\'=HYPERLINK(""evil.example""', "''quoted", "'-2+3", "'@SUM(1+1)", "+1",
                     "plain"]
    assert sorted(row["study"] for row in covseg_rows(out / "summary.csv")) == sorted(names)
    study_csv = (out / "-2+3" / "quantification.csv").read_text().splitlines()
    assert study_csv[1].startswith("'-2+3,") and ",-" not in study_csv[1].split(",", 2)[1]
    assert quantify_batch([folder / "plain.nii.gz"], out).skipped == 1
    assert (out / "summary.csv").read_text() == text
    assert quantify_batch([folder], out).skipped == len(names)
    assert (out / "summary.csv").read_text() == text


def test_a_hidden_mask_given_by_name_is_measured(tmp_path: Path) -> None:
    """``.case_mask.nii.gz`` given by name was refused: "lesion masks must be NIfTI files";
    hidden files are passed over only in a folder's listing."""
    ct, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    hidden = mask.with_name(f".{mask.name}")
    mask.rename(hidden)
    result = quantify_study(hidden, tmp_path / "out", image=ct)
    assert result["study"]["lesion_ml"] == pytest.approx(lesion_ml)


def test_quantify_of_a_predict_study_of_the_older_lung_rule_warns(tmp_path: Path,
                                                                  caplog) -> None:
    """quantify of a CT predict folder of 1-3 Dec counted its lungs, found under the older lung
    rule (241 mL where today's rule finds 1272 mL), with no word, where predict into that
    folder warns of them. It warns in one line too."""
    study = tmp_path / "pred" / "ct"
    study.mkdir(parents=True)
    labels = two_lungs_and_a_lesion()
    affine = np.diag([0.8, 0.8, 5.0, 1])
    nib.save(nib.Nifti1Image(np.minimum(labels, 2), affine), str(study / "lungs.nii.gz"))
    nib.save(nib.Nifti1Image((labels == 3).astype(np.uint8), affine),
             str(study / "infection.nii.gz"))
    (study / "quantification.json").write_text(json.dumps(  # no lesion_added_to_lungs_ml
        {"study": {"lesion_ml": 1.0}, "multiclass": False}))
    with caplog.at_level("WARNING"):
        assert quantify_batch([study], tmp_path / "q").done == 1
    warned = [r.getMessage() for r in caplog.records if "older lung rule" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("1 study predicted by an earlier covseg")


def test_a_mask_short_of_memory_is_refused_at_its_int16_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A uint8 mask that memory could not hold as int16 labels was read again as float32 (the
    re-reading meant for fractional values caught every refusal) and said to need "800 MiB as
    float32", twice what it needs, in a type masks are not read as."""
    mask = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3), dtype=np.uint8), np.eye(4)), mask)
    asked: list[np.dtype] = []
    empty = np.empty

    def short(shape: object, dtype: object = float, *args: object, **kwargs: object
              ) -> np.ndarray:
        if tuple(np.atleast_1d(shape)) == (3, 5, 4):  # type: ignore[arg-type]
            asked.append(np.dtype(dtype))  # type: ignore[call-overload]
            raise MemoryError
        return empty(shape, dtype, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(np, "empty", short)
    with pytest.raises(CovsegError, match=re.escape(
            f"{mask}: not enough free memory for its 4 x 5 x 3 voxels (120 bytes as int16); "
            "free memory")):
        quantify_study(mask, tmp_path / "out")
    assert asked == [np.dtype(np.int16)]


def test_the_ct_predict_recorded_is_read_as_predict_read_it_whatever_hu(tmp_path: Path) -> None:
    """quantify read the CT named in predict's record as --hu said (whose help speaks of
    --image only), so --hu no on predict's HU CT failed the study, where the docs say that CT
    is read as predict read it, whatever --hu. --image is still read as --hu says."""
    from covseg.volumes import predict_study
    from tests.test_volumes import BandPredictor, overcalled_ct

    path = tmp_path / "case.nii.gz"
    overcalled_ct(path)
    predicted = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "pred")
    assert predicted["inputs"]["intensity"] == "hu"
    mask = tmp_path / "pred" / "infection.nii.gz"
    grey = quantify_study(mask, tmp_path / "grey", hu="no")
    for region in ("study", "right_lung", "left_lung"):
        assert grey[region] == predicted[region], region
    assert grey["settings"]["hu"] == "no"  # as asked: a rerun compares the calls' options
    with pytest.raises(CovsegError, match="expects grey values 0..255, but values"):
        quantify_study(mask, tmp_path / "given", image=path, hu="no")


def test_the_montage_s_scale_warning_names_the_ct(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Quantified with a [0, 1] CT overshooting 1 at a few voxels, the montage's clipping
    warning named no file."""
    grey = np.zeros((64, 64, 6), dtype=np.float32)  # x, y, z: air
    grey[4:60, 4:60, :] = 0.9  # body
    grey[8:28, 10:40, 1:5] = grey[36:56, 10:40, 1:5] = 0.2  # lungs
    grey[30:34, 20:24, :] = 1.01  # overshoot in every slice
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    ct, mask = tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(grey, affine), str(ct))
    lesions = np.zeros(grey.shape, dtype=np.uint8)
    lesions[12:16, 20:24, 2:4] = 1
    nib.save(nib.Nifti1Image(lesions, affine), str(mask))
    with caplog.at_level("WARNING"):
        quantify_study(mask, tmp_path / "out", image=ct)
    said = [r.getMessage() for r in caplog.records if "a few pixels" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{read_volume(ct).source}: a few pixels")


@pytest.mark.parametrize("name", ["case.nrrd", "case.mha", "case.seg.nrrd"])
def test_nrrd_and_metaimage_masks_give_the_figures_of_the_same_nifti(tmp_path: Path,
                                                                     name: str) -> None:
    """Lesion masks were NIfTI only: a .nrrd, .mha or 3D Slicer .seg.nrrd was refused ("lesion
    masks must be NIfTI files"), and a folder of them held no mask. Given by name or in a
    folder, each now gives the figures of the NIfTI it was saved from."""
    from covseg.cli import main

    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    other = saved_as(mask, tmp_path / "itk" / name)
    nifti = quantify_study(mask, tmp_path / "nifti", image=ct)
    given = quantify_study(other, tmp_path / "given", image=ct)
    assert main(["quantify", str(other.parent), "--image", str(ct), "--out",
                 str(tmp_path / "folder")]) == 0
    listed = json.loads((tmp_path / "folder" / "case" / "quantification.json").read_text())
    for figures in (given, listed):
        assert {key: figures[key] for key in ("study", "right_lung", "left_lung", "shape")} == {
            key: nifti[key] for key in ("study", "right_lung", "left_lung", "shape")}


def test_a_nrrd_mask_on_another_grid_than_its_ct_is_refused_as_a_nifti_one_is(
        tmp_path: Path) -> None:
    """The grid check of a NIfTI mask against its CT holds for a NRRD one."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    refusals = []
    for name in ("case.nii.gz", "case.nrrd"):
        shifted = saved_as(mask, tmp_path / name / name, shift_mm=5.0)
        with pytest.raises(CovsegError) as refused:
            quantify_study(shifted, tmp_path / "out", image=ct)
        refusals.append(str(refused.value).replace(str(shifted), "MASK"))
    assert refusals[0].endswith(": not on the voxel grid of the mask MASK (origins 5 mm apart "
                                "(half a voxel is 0.35 mm)); resample one onto the other's grid "
                                "first")
    assert refusals[1] == refusals[0]


@pytest.mark.parametrize("name", ["case.seg.nrrd", "case.nrrd"])
def test_a_3d_slicer_mask_cropped_on_the_ct_grid_is_padded_onto_it(tmp_path: Path, name: str,
                                                                   caplog) -> None:
    """A 3D Slicer segmentation or label map saved cropped to its segments' extent (Slicer's
    default) was refused for its shape, advising a labelmap exported with the CT as reference.
    Lying on the CT's voxels, it is now padded with 0 onto the CT's grid, with a warning, and
    gives the figures of the whole mask; shifted off the CT's voxels, it is refused as before."""
    import SimpleITK as sitk

    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    whole = quantify_study(mask, tmp_path / "whole", image=ct)
    cropped = saved_as(mask, tmp_path / "crop" / name, cropped=True)
    assert sitk.ReadImage(str(cropped)).GetSize() == (6, 6, 2)  # of the CT's 64 x 48 x 6
    with caplog.at_level("WARNING"):
        padded = quantify_study(cropped, tmp_path / "padded", image=ct)
    keys = ("study", "right_lung", "left_lung", "shape", "spacing_mm")
    assert {key: padded[key] for key in keys} == {key: whole[key] for key in keys}
    assert re.search(rf"{re.escape(str(cropped))}: saved cropped to its segments' extent "
                     rf"\(\d+ x \d+ x \d+ voxels of the CT's \d+ x \d+ x \d+\); padded with 0 "
                     rf"onto the grid of the CT {re.escape(str(ct))}", caplog.text)
    shifted = saved_as(mask, tmp_path / "shifted" / name, shift_mm=1.0, cropped=True)
    with pytest.raises(CovsegError, match=r"shape .* differs from the mask"):
        quantify_study(shifted, tmp_path / "refused", image=ct)


@pytest.mark.parametrize(("ct_name", "segmentation_name"), [
    ("case.nrrd", "case.seg.nrrd"), ("2 CT chest.nrrd", "Segmentation.seg.nrrd")])
def test_a_3d_slicer_save_folder_is_quantified_with_its_ct(tmp_path: Path, ct_name: str,
                                                           segmentation_name: str) -> None:
    """A folder 3D Slicer saved (case.nrrd beside case.seg.nrrd) given as mask and --image was
    refused as two studies named case, with advice to run them apart; under Slicer's default
    names (2 CT chest.nrrd, Segmentation.seg.nrrd) both were read as masks and failed. The
    volume named as the segmentation, or the one beside the one segmentation, is its CT."""
    from covseg.cli import main

    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    saved_as(ct, tmp_path / "S" / ct_name)
    saved_as(mask, tmp_path / "S" / segmentation_name)
    assert main(["quantify", str(tmp_path / "S"), "--image", str(tmp_path / "S"), "--out",
                 str(tmp_path / "q")]) == 0
    assert [row["study"] for row in read_rows(tmp_path / "q" / "summary.csv")] == [
        segmentation_name.removesuffix(".seg.nrrd")]


def test_a_mask_is_paired_with_another_named_ct_only_in_a_slicer_save_folder(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One mask given with an --image folder of one CT was counted on that CT whatever their
    names, silently: p7's mask on p3's CT. Only a segmentation lying in the folder pairs with
    its one CT, named in a note."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "p3")
    p7 = saved_as(mask, tmp_path / "p7.nrrd")
    saved_as(ct, tmp_path / "cts" / "p3.nrrd")
    with pytest.raises(CovsegError, match="no CT named like the mask 'p7'"):
        quantify_study(p7, tmp_path / "q7", image=tmp_path / "cts")
    saved_as(ct, tmp_path / "S" / "2 CT chest.nrrd")
    segmentation = saved_as(mask, tmp_path / "S" / "Segmentation.seg.nrrd")
    figures = quantify_study(segmentation, tmp_path / "qs", image=tmp_path / "S")
    assert figures["inputs"]["image"].endswith("2 CT chest.nrrd")
    assert "paired with " in caplog.text and "2 CT chest.nrrd, the one CT beside it" in caplog.text


def test_a_lungs_folder_sets_no_slicer_ct_aside(tmp_path: Path) -> None:
    """A --lungs folder's case.nrrd beside case.seg.nrrd was taken for a 3D Slicer CT and
    dropped without a word: it is two lung masks of one name, refused."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    saved_as(mask, tmp_path / "lungs" / "case.nrrd")
    saved_as(mask, tmp_path / "lungs" / "case.seg.nrrd")
    with pytest.raises(CovsegError, match=r"several studies are named case .*--lungs folder$"):
        quantify_batch([mask], tmp_path / "out", lungs=tmp_path / "lungs")


def test_a_mask_with_no_ct_named_like_it_is_told_how_to_pair_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With several masks and no CT named like one, the refusal said no more than that."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    (tmp_path / "m").mkdir()
    shutil.copy(mask, tmp_path / "m" / "other.nii.gz")
    quantify_batch([tmp_path / "m" / "other.nii.gz", mask], tmp_path / "out",
                   image=tmp_path / "in")
    assert "no CT named like the mask 'other'; name the CT like the mask, or give its file as " \
           "--image" in caplog.text


def test_two_cts_of_one_name_in_the_image_folder_are_refused_once(tmp_path: Path) -> None:
    """p1.nii.gz and p1.nrrd in the --image folder failed every study of the batch, unrelated
    ones too, advising separate --out folders: refused before any study, naming the folder."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "p3")
    saved_as(ct, tmp_path / "in" / "p1.nrrd")
    shutil.copy(ct, tmp_path / "in" / "p1.nii.gz")
    with pytest.raises(CovsegError, match=r"several studies are named p1 .*; keep one file of "
                                          r"each name in the --image folder$"):
        quantify_batch([mask], tmp_path / "out", image=tmp_path / "in")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["case.seg.nrrd", "case.nrrd", "case.nhdr"])
def test_a_cropped_segmentation_is_refused_saying_how_to_export_it(tmp_path: Path,
                                                                   name: str) -> None:
    """A .seg.nrrd saved cropped to its segments was refused "they must be on the same voxel
    grid" alone: it now says how 3D Slicer exports it on the CT's geometry. (Its voxels are
    off the CT's here: one on them is padded onto the CT's grid, from 7 Dec.) A label map
    .nrrd or .nhdr of another shape, which Slicer exports cropped too, got no advice; it now
    gets the same, while a NIfTI mask of another shape beside a NRRD CT gets none."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    full = nib.load(mask)
    cropped = tmp_path / "crop.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(full.dataobj)[30:50, 10:30, 1:5], full.affine),
             str(cropped))
    segmentation = saved_as(cropped, tmp_path / "slicer" / name, shift_mm=1.0)
    with pytest.raises(CovsegError, match=r"same voxel grid; 3D Slicer may save a segmentation, "
                                          r"or export a label map, cropped to its segments' "
                                          r"extent: if so, in 3D Slicer's Segmentations module, "
                                          r"export it as a labelmap volume with the CT as "
                                          r"reference volume \(on the CT's geometry\) and give "
                                          r"that$"):
        quantify_study(segmentation, tmp_path / "out", image=ct)
    nrrd_ct = saved_as(ct, tmp_path / "nrrd" / "case.nrrd")
    with pytest.raises(CovsegError, match=r"they must be on the same voxel grid$"):
        quantify_study(cropped, tmp_path / "out", image=nrrd_ct)


@pytest.mark.parametrize("name", ["lungs.seg.nrrd", "lungs.nrrd"])
def test_a_3d_slicer_lung_mask_cropped_on_the_ct_grid_is_padded_onto_it(tmp_path: Path,
                                                                        name: str,
                                                                        caplog) -> None:
    """A --lungs mask saved cropped to its segments' extent (3D Slicer's default) was refused
    for its shape where the lesion mask was padded onto the CT's grid: it is now padded the
    same way, with the same warning, and gives the figures of the whole lung mask; shifted off
    the CT's voxels, it is refused as before, with the advice of how to export it (a plain
    lungs.nrrd got none: the lung mask was taken for the CT)."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    lungs = np.zeros((64, 48, 6), dtype=np.int16)
    lungs[10:28, 10:38, 1:5] = 1
    lungs[36:54, 10:38, 1:5] = 1
    whole_lungs = tmp_path / "lungs.nii.gz"
    nib.save(nib.Nifti1Image(lungs, np.diag([0.7, 0.7, 5.0, 1.0])), str(whole_lungs))
    whole = quantify_study(mask, tmp_path / "whole", image=ct, lungs=whole_lungs)
    cropped = saved_as(whole_lungs, tmp_path / "crop" / name, cropped=True)
    with caplog.at_level("WARNING"):
        padded = quantify_study(mask, tmp_path / "padded", image=ct, lungs=cropped)
    keys = ("study", "right_lung", "left_lung", "shape")
    assert {key: padded[key] for key in keys} == {key: whole[key] for key in keys}
    assert f"{cropped}: saved cropped to its segments' extent (44 x 28 x 4 voxels of the CT's " \
           f"64 x 48 x 6); padded with 0 onto the grid of the CT {ct}" in caplog.text
    shifted = saved_as(whole_lungs, tmp_path / "shifted" / name, shift_mm=1.0, cropped=True)
    with pytest.raises(CovsegError, match=r"shape .* differs from the mask .*; 3D Slicer may "
                                          r"save a segmentation, or export a label map, cropped "
                                          r".* give that$"):
        quantify_study(mask, tmp_path / "refused", image=ct, lungs=shifted)


def _lungs_saved(path: Path, rows: slice = slice(None)) -> Path:
    """Two lungs on the synthetic study's 64 x 48 x 6 grid, saved at ``path`` (the file's first
    axis cut to ``rows``)."""
    lungs = np.zeros((64, 48, 6), dtype=np.int16)
    lungs[10:28, 10:38, 1:5] = 1
    lungs[36:54, 10:38, 1:5] = 1
    nib.save(nib.Nifti1Image(lungs[rows], np.diag([0.7, 0.7, 5.0, 1.0])), str(path))
    return path


def test_a_cropped_lung_nrrd_is_padded_onto_the_lesion_mask_when_there_is_no_ct(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With no CT (no --image, no predict record), a --lungs NRRD saved cropped on the lesion
    mask's voxels was refused for its shape: it is padded onto the lesion mask's grid, the
    warning naming the mask, and gives the figures of the whole lung mask."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    whole_lungs = _lungs_saved(tmp_path / "lungs.nii.gz")
    whole = quantify_study(mask, tmp_path / "whole", lungs=whole_lungs)
    cropped = saved_as(whole_lungs, tmp_path / "crop" / "lungs.nrrd", cropped=True)
    with caplog.at_level("WARNING"):
        padded = quantify_study(mask, tmp_path / "padded", lungs=cropped)
    keys = ("study", "right_lung", "left_lung", "shape")
    assert {key: padded[key] for key in keys} == {key: whole[key] for key in keys}
    assert f"{cropped}: saved cropped to its segments' extent (44 x 28 x 4 voxels of the " \
           f"mask's 64 x 48 x 6); padded with 0 onto the grid of the mask {mask}" in caplog.text


def test_a_lung_mask_of_another_shape_gets_the_slicer_advice_only_if_it_is_a_nrrd(
        tmp_path: Path) -> None:
    """A NIfTI lung mask of another shape beside a NRRD lesion mask on its CT's grid was refused
    with the advice to export "it" from 3D Slicer, which fits only the NRRD, not cropped: the
    lung mask is the one at fault, and a NIfTI one gets no advice. With no CT to place the
    lesion mask, a NRRD lesion mask may be the cropped one: the advice is given."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    lesions = saved_as(mask, tmp_path / "nrrd" / "case_mask.nrrd")
    lungs = _lungs_saved(tmp_path / "lungs.nii.gz", slice(5, 60))
    with pytest.raises(CovsegError, match=r"same voxel grid$"):
        quantify_study(lesions, tmp_path / "out", image=ct, lungs=lungs)
    with pytest.raises(CovsegError, match=r"same voxel grid; 3D Slicer may save .* give that$"):
        quantify_study(lesions, tmp_path / "out", lungs=lungs)


@pytest.mark.parametrize("where", ["masks", "image"])
def test_broken_links_in_quantify_folders_are_refused_saying_how_to_fetch_them(
        tmp_path: Path, where: str) -> None:
    """An unfetched git-annex file (a link to nowhere) in a mask or --image folder was passed
    over silently: refused as predict refuses it, with the `git annex get .` line."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    folder = mask.parent if where == "masks" else ct.parent
    (folder / "other.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    with pytest.raises(CovsegError, match=r"1 file is a broken link \(other.nii.gz\): .*"
                                          r"`git annex get \.`"):
        quantify_batch([mask.parent], tmp_path / "out", image=ct.parent)


def test_a_broken_link_given_is_refused_naming_it(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken link given by its name in the working folder, as mask or --image, was refused
    naming its folder: ".: 1 file is a broken link (brk.nii.gz)". Its message starts with it."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    (tmp_path / "brk.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    monkeypatch.chdir(tmp_path)
    unfetched = r": a broken link: content not fetched from git-annex or DataLad\? Run `git annex"
    with pytest.raises(CovsegError, match=r"^brk.nii.gz" + unfetched):
        quantify_batch(["brk.nii.gz"], tmp_path / "out")
    with pytest.raises(CovsegError, match=r"^--image brk.nii.gz" + unfetched):
        quantify_batch([mask], tmp_path / "out", image="brk.nii.gz")


def test_a_masks_raw_data_file_given_is_refused_naming_its_header(tmp_path: Path) -> None:
    """A MetaImage mask's .raw given by name was told "lesion masks must be NIfTI, NRRD or
    MetaImage files", as if of no such format: it names its header, before any study."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    header = saved_as(mask, tmp_path / "itk" / "case.mhd")
    message = f"the voxels of case.mhd, not a file of its own; give {header} to read them"
    for call in (quantify_study, lambda raw, out: quantify_batch([raw], out)):
        with pytest.raises(CovsegError, match=re.escape(message)):
            call(header.with_suffix(".raw"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_nrrd_mask_without_geometry_is_warned_of_in_its_formats_terms(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A NRRD mask with no geometry, paired with its CT, was warned of in NIfTI's terms
    ("identity affine, or qform and sform codes 0") and said read as LAS, its right and left
    lungs perhaps swapped, though counted on the CT's geometry (its read for its classes)."""
    from tests.io.test_itk import _bare

    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    voxels = np.asarray(nib.load(mask).dataobj).transpose(2, 1, 0)
    (tmp_path / "bare").mkdir()
    bare = _bare(tmp_path / "bare" / "case.nrrd", voxels)
    with caplog.at_level("WARNING"):
        quantify_batch([bare], tmp_path / "out", image=ct)
    assert ("its header has no real geometry (no spacing, origin or direction in its header) "
            "and it stores") in caplog.text
    assert "qform" not in caplog.text and "Analyze convention" not in caplog.text


def test_an_earlier_prediction_of_an_nnunet_case_pairs_with_its_ct(tmp_path: Path) -> None:
    """``--image imagesTs/`` names its CT ``imagesTs/lungA_0000.nii.gz`` study ``lungA``, and an
    earlier covseg's ``OUT/lungA_0000/`` (or a mask named so anywhere) was paired with no CT:
    a name and the name plus ``_0000`` pair with each other wherever they lie."""
    ct, mask, lesion_ml = synthetic_study(tmp_path / "imagesTs", "lungA_0000")
    study = tmp_path / "OUT" / "lungA_0000"
    study.mkdir(parents=True)
    shutil.copy(mask, study / "infection.nii.gz")
    result = quantify_batch([study], tmp_path / "q", image=tmp_path / "imagesTs")
    assert (result.done, result.failed) == (1, 0)
    stored = json.loads((tmp_path / "q" / "lungA_0000" / "quantification.json").read_text())
    assert stored["inputs"]["image"] == str(ct.resolve())
    assert stored["study"]["lesion_ml"] == pytest.approx(lesion_ml)
