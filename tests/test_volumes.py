"""Volume inference: streaming, lungs, outside-lung removal, exact geometry, batch, CLI pieces."""

from __future__ import annotations

import csv
import errno
import hashlib
import html
import io
import json
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from tqdm import tqdm

from covseg import api as api_module
from covseg import cli_volumes, progress
from covseg import volumes as volumes_module
from covseg.api import VOLUMES, input_kind, segment
from covseg.burden import no_lungs_note, threshold_advice
from covseg.cascade import LungGuide
from covseg.cli import build_parser
from covseg.data.layouts import base as layouts_base
from covseg.errors import CovsegError
from covseg.evaluate import evaluate_folders
from covseg.infer import Predictor
from covseg.io.ct import read_volume
from covseg.io.nifti import read_nifti
from covseg.io.volume import Volume, hounsfield
from covseg.lungs import (
    DEFAULT_LUNG_MARGIN_MM,
    Cut,
    lesions_in_lungs,
    segment_lungs,
    split_lungs,
)
from covseg.progress import reporting
from covseg.quantify import quantify_batch, quantify_study
from covseg.records import content_hash
from covseg.studies import INFECTION_NII, LUNGS_NII
from covseg.transforms import LUNG_WINDOW, normalize_intensity
from covseg.volumes import effusion_cut_note, predict_batch, predict_labels, predict_study
from tests.conftest import (
    CONSOLIDATED_AFFINE,
    OVERCALLED_AFFINE,
    consolidated_chest,
    deny_reading,
    overcalled_chest,
)
from tests.conftest import SAMPLE_CT as CT
from tests.conftest import SAMPLE_DICOMS as DICOMS
from tests.io.helpers import phantom, synthetic_series

AFFINE = np.diag([-0.75, -0.75, 4.0, 1.0])  # LAS, like the MosMed masks
VOXEL_ML = 0.75 * 0.75 * 4.0 / 1000.0


def unit(hu: float) -> float:
    low, high = LUNG_WINDOW
    return (hu - low) / (high - low)


class BandPredictor:
    """Fake model: class c wherever the lung-windowed slice lies in band c (one-hot output)."""

    intensity = "hu"
    window = LUNG_WINDOW
    threshold = 0.5
    tta = False
    source = "band thresholds"

    def __init__(self, bands: Sequence[tuple[float, float]]) -> None:
        self.bands = [(unit(lo), unit(hi)) for lo, hi in bands]
        self.num_classes = 2 if len(bands) == 1 else len(bands) + 1
        self.batches: list[int] = []
        self.seen: list[np.ndarray] = []

    def predict_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.batches.append(len(images))
        self.seen.extend(images)
        out = []
        for image in images:
            hits = [((image >= lo) & (image <= hi)).astype(np.float32) for lo, hi in self.bands]
            if self.num_classes == 2:
                out.append(hits[0][None])
            else:
                out.append(np.stack([1.0 - np.clip(sum(hits), 0, 1), *hits]))
        return out


def chest_nifti(path: Path) -> dict[str, int]:
    """Two lungs, GGO (-300 HU) in the right lung, consolidation (-150) in the left, and a
    GGO-like blob in the chest wall far from the lungs. Returns the voxel counts."""
    hu = np.full((64, 64, 10), -1000.0, dtype=np.float32)  # x, y, z
    hu[4:60, 4:60, :] = 40.0
    hu[8:28, 10:40, 1:9] = -850.0  # x small: patient right under AFFINE (x -> patient left)
    hu[36:56, 10:40, 1:9] = -850.0
    hu[14:20, 20:26, 3:6] = -300.0  # GGO in the right lung: 108 voxels
    hu[44:48, 30:34, 4:6] = -150.0  # consolidation in the left lung: 32 voxels
    hu[30:34, 52:55, 3:5] = -300.0  # chest-wall blob: 24 voxels, 9.75 mm from the lungs
    nib.save(nib.Nifti1Image(hu, AFFINE), str(path))
    return {"ggo": 108, "consolidation": 32, "outside": 24, "lung": 2 * 20 * 30 * 8}


@pytest.fixture()
def chest(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    path = tmp_path / "chest.nii.gz"
    return path, chest_nifti(path)


def test_binary_prediction_quantified_inside_the_lungs(chest, tmp_path: Path) -> None:
    path, counts = chest
    predictor = BandPredictor([(-400, -200)])
    result = predict_study(predictor, path, tmp_path / "out", batch_size=3, probabilities=True,
                           html=True)
    assert predictor.batches == [3, 3, 3, 1]
    study = result["study"]
    assert study["lesion_ml"] == pytest.approx(counts["ggo"] * VOXEL_ML)
    assert study["lung_ml"] == pytest.approx(counts["lung"] * VOXEL_ML)
    assert result["right_lung"]["lesion_ml"] == pytest.approx(counts["ggo"] * VOXEL_ML)
    assert result["left_lung"]["lesion_ml"] == 0.0 and study["ct_category"] == "CT-1"
    out = tmp_path / "out"
    infection = nib.load(str(out / "infection.nii.gz"))
    lungs = np.asarray(nib.load(str(out / "lungs.nii.gz")).dataobj)
    assert infection.get_data_dtype() == np.uint8
    assert np.asarray(infection.dataobj).sum() == counts["ggo"]
    assert (lungs[8:28, 10:40, 1:9] == 1).all() and (lungs[36:56, 10:40, 1:9] == 2).all()
    probabilities = nib.load(str(out / "probabilities.nii.gz"))
    assert probabilities.shape == (64, 64, 10) and probabilities.get_data_dtype() == np.float32
    assert np.asarray(probabilities.dataobj).sum() == counts["ggo"] + counts["outside"]
    assert not list(out.glob(".*")), "no scratch files are left behind"
    assert {"infection", "lungs", "probabilities", "csv", "montage", "html", "json"} <= set(
        result["files"])
    stored = json.loads((out / "quantification.json").read_text())
    assert stored["inputs"]["lung_source"] == "threshold" and stored["inputs"]["tta"] is False
    assert stored["inputs"]["model"]["source"] == "band thresholds"
    assert stored["inputs"]["model"]["threshold"] == 0.5


def test_outside_lungs_kept_on_request(chest, tmp_path: Path) -> None:
    path, counts = chest
    predictor = BandPredictor([(-400, -200)])
    result = predict_study(predictor, path, tmp_path / "keep", keep_outside_lungs=True)
    assert result["study"]["lesion_ml"] == pytest.approx(
        (counts["ggo"] + counts["outside"]) * VOXEL_ML)
    assert result["study"]["lesion_outside_lungs_ml"] == pytest.approx(counts["outside"] * VOXEL_ML)


@pytest.mark.parametrize("keep", [False, True])
def test_a_lung_consolidated_whole_is_warned_of(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, keep: bool) -> None:
    """A lung with no air left is no lung to the HU threshold, and its lesion lies apart from
    the other lung: predict removed the whole left lung's call (a left lung wholly ground-glass,
    half of both lungs, read as the right lung's lesion alone, CT-1) or, with
    --keep-outside-lungs, left it out of percent_involved, without a word. Both are warned of,
    and recorded as the lung_note."""
    path = tmp_path / "chest.nii.gz"
    counts = chest_nifti(path)
    image = nib.load(str(path))
    hu = np.asarray(image.dataobj)
    hu[36:56, 10:40, 1:9] = -300.0  # the left lung wholly ground-glass: 4800 voxels
    nib.save(nib.Nifti1Image(hu, image.affine), str(path))
    with caplog.at_level("WARNING"):
        result = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "out",
                               keep_outside_lungs=keep)
    inside, left = counts["ggo"] * VOXEL_ML, 4800 * VOXEL_ML
    apart = left + counts["outside"] * VOXEL_ML  # the chest-wall blob lies apart too
    study = result["study"]
    assert study["percent_involved"] == pytest.approx(100 * counts["ggo"] / (counts["lung"] / 2))
    assert study["lesion_ml"] == pytest.approx(inside + (apart if keep else 0.0))
    note = result["lung_note"]
    if keep:
        assert note.startswith(f"{apart:.1f} mL of lesion lies outside the HU threshold's lungs, "
                               f"more than the {inside:.1f} mL inside them")
        assert note.endswith("check the montage, or give the lungs with --lung-model")
    else:
        assert note == (
            f"{apart:.1f} mL of lesion lying wholly beyond 5 mm of the lungs found was removed, "
            f"more than the {inside:.1f} mL in them: a lung consolidated whole (no air left in "
            "it) is no lung to the HU threshold, and its lesion lies apart from the other lung; "
            "or the calls lie beyond the lungs; check the montage, or predict again, keeping "
            "that lesion with --keep-outside-lungs or giving the lungs with --lung-model")
    said = [record.getMessage() for record in caplog.records if note in record.getMessage()]
    assert said == [f"{path}: {note}"]
    stored = json.loads((tmp_path / "out" / "quantification.json").read_text())
    assert stored["lung_note"] == note


def test_segment_warns_of_a_lung_consolidated_whole_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """``covseg.segment`` warns of the lesion removed with a lung consolidated whole, as predict
    does (naming its own arguments), once: the warning is its callers'
    (:meth:`VolumeMasks.warn`), so that predict's come in its lung_note's order."""
    path = tmp_path / "chest.nii.gz"
    counts = chest_nifti(path)
    image = nib.load(str(path))
    hu = np.asarray(image.dataobj)
    hu[36:56, 10:40, 1:9] = -300.0  # the left lung wholly ground-glass: 4800 voxels
    predictor = BandPredictor([(-400, -200)])
    predictor.batch_size, predictor.target = 8, "infection"
    monkeypatch.setattr(api_module, "load_predictor", lambda model, **kwargs: model)
    with caplog.at_level("WARNING"):
        labels = segment(predictor, nib.Nifti1Image(hu, image.affine))
    assert np.count_nonzero(labels) == counts["ggo"]
    removed, kept = (4800 + counts["outside"]) * VOXEL_ML, counts["ggo"] * VOXEL_ML
    note = (f"{removed:.1f} mL of lesion lying wholly beyond 5 mm of the lungs found was "
            f"removed, more than the {kept:.1f} mL in them: a lung consolidated whole (no air "
            "left in it) is no lung to the HU threshold, and its lesion lies apart from the "
            "other lung; or the calls lie beyond the lungs; check the montage, or predict again, "
            "keeping that lesion with keep_outside_lungs or giving the lungs with lung_model")
    said = [record.getMessage() for record in caplog.records if "removed" in record.getMessage()]
    assert said == [f"the nibabel image: {note}"]


def test_a_lung_margin_wider_than_any_body_is_refused_before_the_study(
        chest, tmp_path: Path) -> None:
    """A margin above about 1e154 mm passed the check, then every study failed with a bare
    OverflowError (its square overflowed a float), and 1e150 leaked numpy's RuntimeWarning:
    more than a metre is refused in one line, before anything is written; a metre is taken."""
    path, counts = chest
    for margin in (1e200, 1e150, 1000.5):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(CovsegError, match=re.escape(
                    f"--lung-margin-mm must be at most 1000 mm, wider than any body, got "
                    f"{margin:g}; --keep-outside-lungs keeps every region")):
                predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "out",
                              lung_margin_mm=margin)
    assert not (tmp_path / "out").exists()
    result = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "out",
                           lung_margin_mm=1000)
    assert result["study"]["lesion_ml"] == pytest.approx(
        (counts["ggo"] + counts["outside"]) * VOXEL_ML)


def test_thick_consolidation_is_kept_whole_and_counted_as_lung(tmp_path: Path) -> None:
    """The threshold lungs miss consolidation (not air): a perfect prediction of a lung 83 %
    consolidated kept only the lesion within 5 mm of aerated lung (11 % of it) in
    infection.nii.gz. Now the whole region is kept, the lungs grow over it, and a call lying
    apart (in the body, 10 mm from the lungs) is still removed."""
    ct, lesions, lungs = consolidated_chest()
    ct[44:50, 68:72, 2:5] = 30.0  # apart from the lungs: 72 voxels
    path = tmp_path / "chest.nii.gz"
    nib.save(nib.Nifti1Image(ct, CONSOLIDATED_AFFINE), str(path))
    result = predict_study(BandPredictor([(20, 35)]), path, tmp_path / "out")
    infection = np.asarray(nib.load(str(tmp_path / "out" / "infection.nii.gz")).dataobj)
    np.testing.assert_array_equal(infection, lesions)
    written = np.asarray(nib.load(str(tmp_path / "out" / "lungs.nii.gz")).dataobj)
    np.testing.assert_array_equal(written, lungs)
    assert result["study"]["lesion_outside_lungs_ml"] == 0.0


def test_volume_predictions_use_the_runs_flips_once(chest, tiny_run: Path, tmp_path: Path) -> None:
    path, _ = chest
    volume = read_volume(path)
    for tta in (True, False):
        predictor = Predictor.load(tiny_run, tta=tta)
        calls: list[int] = []
        hook = predictor.model.register_forward_hook(lambda *_, seen=calls: seen.append(1))
        result = predict_study(predictor, path, tmp_path / str(tta), probabilities=True)
        hook.remove()
        batches = -(-volume.array.shape[0] // 8)
        assert len(calls) == batches * (4 if tta else 1), "one pass, plus three mirrored with tta"
        assert result["inputs"]["tta"] is tta
        stored = read_nifti(tmp_path / str(tta) / "probabilities.nii.gz").array
        slices = [normalize_intensity(s, volume.intensity, predictor.window) for s in volume.array]
        expected = np.stack([p[0] for p in predictor.predict_probabilities(slices)])
        np.testing.assert_allclose(stored, expected, atol=2e-3)  # float16 on disk


def test_multiclass_prediction(chest, tmp_path: Path) -> None:
    path, counts = chest
    predictor = BandPredictor([(-400, -200), (-200, -100)])
    result = predict_study(predictor, path, tmp_path / "out", probabilities=True)
    study = result["study"]
    assert result["multiclass"] is True
    assert study["ggo_ml"] == pytest.approx(counts["ggo"] * VOXEL_ML)
    assert study["consolidation_ml"] == pytest.approx(counts["consolidation"] * VOXEL_ML)
    assert result["left_lung"]["consolidation_ml"] == pytest.approx(
        counts["consolidation"] * VOXEL_ML)
    assert nib.load(str(tmp_path / "out" / "probabilities.nii.gz")).shape == (64, 64, 10, 3)


def test_lung_model_and_grey_volumes(tmp_path: Path) -> None:
    grey = np.zeros((48, 40, 4), dtype=np.uint8)
    grey[4:44, 4:36] = 230
    grey[8:20, 10:30, :] = 40
    grey[28:40, 10:30, :] = 40
    grey[12:15, 15:18, 1:3] = 160
    nib.save(nib.Nifti1Image(grey, AFFINE), str(tmp_path / "grey.nii.gz"))
    predictor = BandPredictor([(-1350 + 150 / 255 * 1500, -1350 + 170 / 255 * 1500)])
    lung_model = BandPredictor([(-1350 + 20 / 255 * 1500, -1350 + 60 / 255 * 1500)])
    result = predict_study(predictor, tmp_path / "grey.nii.gz", tmp_path / "out",
                           lung_predictor=lung_model)
    assert result["inputs"]["intensity"] == "uint8"
    assert result["inputs"]["lung_source"] == "model"
    np.testing.assert_allclose(predictor.seen[0], grey[:, :, 0].T / 255.0, atol=1e-6)
    assert result["study"]["lesion_ml"] == pytest.approx(18 * VOXEL_ML)
    assert result["study"]["lung_ml"] == pytest.approx(2 * 12 * 20 * 4 * VOXEL_ML)


class FixedPredictor(BandPredictor):
    """Fake binary model giving every slice the same probability map."""

    def __init__(self, probability: np.ndarray, threshold: float) -> None:
        super().__init__([(0.0, 0.0)])
        self.probability, self.threshold = probability, threshold

    def predict_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.probability[None] for _ in images]


@pytest.mark.parametrize("threshold", [0.4, 0.4001, 0.5])
def test_stored_probabilities_give_the_mask_at_the_threshold(chest, threshold: float) -> None:
    """The float16 probabilities held 0.39990234 for a 0.4 labelled infection at threshold 0.4
    (147 voxels of a real study), and 0.40014648 for a 0.40008 left out at 0.4001: each voxel is
    now stored on the side of the threshold that labelled it, the rest rounded as before."""
    values = np.float32([0.4, 0.40001, 0.39999998, 0.40008, 0.4001, 0.40012, 0.5, 0.49999,
                         0.1, 0.9])
    probability = np.resize(values, (64, 64)).astype(np.float32)
    volume = read_volume(chest[0])
    store = np.zeros(volume.array.shape, dtype=np.float16)
    labels = predict_labels(FixedPredictor(probability, threshold), volume, probabilities=store)
    np.testing.assert_array_equal(labels[0], probability >= np.float32(threshold))
    np.testing.assert_array_equal(store.astype(np.float64) >= threshold, labels > 0)
    assert np.abs(store[0].astype(np.float64) - probability).max() <= 2.5e-4


@pytest.mark.parametrize("lung_model", [False, True], ids=["threshold-lungs", "lung-model"])
def test_a_grey_volume_is_converted_to_hu_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               lung_model: bool) -> None:
    """predict converted an 8-bit CT to pseudo-HU twice, for the lungs and again for the lesion
    step (a pass over the whole CT each); once now, into the very masks the two gave."""
    chest_nifti(tmp_path / "chest.nii.gz")
    hu = nib.load(str(tmp_path / "chest.nii.gz")).get_fdata()
    low, high = LUNG_WINDOW
    grey = np.rint((hu - low) / (high - low) * 255).clip(0, 255).astype(np.uint8)
    path = tmp_path / "grey.nii.gz"
    nib.save(nib.Nifti1Image(grey, AFFINE), str(path))
    lungs_by = BandPredictor([(-900, -800)]) if lung_model else None
    volume = read_volume(path)  # the masks as the pieces give them, each with its own HU
    assert volume.intensity == "uint8"
    labels = predict_labels(BandPredictor([(-400, -200)]), volume)
    lungs = (split_lungs(predict_labels(lungs_by, volume) > 0, volume.affine, hounsfield(volume),
                         source=volume.source) if lungs_by else
             segment_lungs(hounsfield(volume), volume.affine))
    grown = lesions_in_lungs(labels > 0, lungs, volume.spacing, DEFAULT_LUNG_MARGIN_MM,
                             hounsfield(volume))
    expected = {INFECTION_NII: np.where(grown.lesions, labels, 0),
                LUNGS_NII: lungs if lung_model else grown.lungs}  # a lung model's as they are
    assert expected[INFECTION_NII].sum() == 108 < labels.sum()  # the chest-wall blob dropped
    converted: list[str] = []

    def counted(volume: Volume) -> np.ndarray:
        converted.append(volume.source)
        return hounsfield(volume)

    monkeypatch.setattr("covseg.volumes.hounsfield", counted)
    predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "out", lung_predictor=lungs_by)
    assert converted == [str(path)]
    for name, mask in expected.items():
        written = read_nifti(tmp_path / "out" / name, np.int16).array
        assert written.tobytes() == mask.astype(np.int16).tobytes(), name


def test_a_lung_models_lungs_are_counted_as_they_are(tmp_path: Path) -> None:
    """A lung model's lungs were grown over the calls near them, as thresholded lungs are, with
    no note: an abdominal study's false calls counted as lung (51 %, CT-3, for 9.7 %). The call
    touching the lungs is kept, as lesion outside them; thresholded lungs still grow over it."""
    path = tmp_path / "chest.nii.gz"
    counts = chest_nifti(path)
    ct = nib.load(str(path)).get_fdata().astype(np.float32)
    ct[8:28, 40:43, 2:6] = -300.0  # a call behind the right lung, touching it: 240 voxels
    nib.save(nib.Nifti1Image(ct, AFFINE), str(path))
    lung_model = BandPredictor([(-900, -800)])
    result = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "model",
                           lung_predictor=lung_model)
    study, right = result["study"], result["right_lung"]
    assert study["lung_ml"] == pytest.approx(counts["lung"] * VOXEL_ML)
    assert study["lesion_ml"] == pytest.approx((counts["ggo"] + 240) * VOXEL_ML)
    assert study["lesion_outside_lungs_ml"] == pytest.approx(240 * VOXEL_ML)
    assert right["lesion_ml"] == pytest.approx(counts["ggo"] * VOXEL_ML)
    assert right["percent_involved"] == pytest.approx(100 * counts["ggo"] / (20 * 30 * 8))
    assert study["lesion_added_to_lungs_ml"] == 0.0
    assert result["lung_note"].startswith("0.5 mL of lesion lies outside the lung model's")
    written = np.asarray(nib.load(str(tmp_path / "model" / LUNGS_NII)).dataobj)
    assert np.count_nonzero(written) == counts["lung"] and not written[8:28, 40:43].any()
    infection = np.asarray(nib.load(str(tmp_path / "model" / INFECTION_NII)).dataobj)
    assert infection.sum() == counts["ggo"] + 240  # the chest-wall blob still removed
    threshold = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "threshold")
    assert threshold["study"]["lesion_added_to_lungs_ml"] == pytest.approx(240 * VOXEL_ML)
    assert threshold["study"]["lung_ml"] == pytest.approx((counts["lung"] + 240) * VOXEL_ML)



def test_a_lung_models_lesions_are_kept_without_counting_a_cut_no_one_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a lung model's lungs, what the lesion bounds cut is never noted, yet it was counted:
    the lesions' box labelled a second time (12 % of the lesion matching on a study called
    throughout). The lesions are kept as before without it."""
    import covseg.lungs

    def counted(*args: object) -> None:
        raise AssertionError("the cut was counted")

    path = tmp_path / "chest.nii.gz"
    counts = chest_nifti(path)
    ct = nib.load(str(path)).get_fdata().astype(np.float32)
    ct[8:28, 40:60, 2:6] = -300.0  # a call from the right lung 15 mm into the chest wall
    nib.save(nib.Nifti1Image(ct, AFFINE), str(path))
    monkeypatch.setattr(covseg.lungs, "_cut_from_kept", counted)
    result = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "model",
                           lung_predictor=BandPredictor([(-900, -800)]))
    assert result["study"]["lesion_ml"] == pytest.approx((counts["ggo"] + 20 * 20 * 4) * VOXEL_ML)

def test_a_lung_model_s_margin_is_measured_in_mm_along_each_axis(tmp_path: Path) -> None:
    """Nothing tested a lung model's margin on anisotropic voxels: with the spacing reversed
    (x as 4 mm, z as 0.75 mm) a thick-slice CT lost calls 3 mm beside the lungs and kept calls
    two slices away, changing lesion mL and % involved without a word. This call lies 4 voxels
    (3 mm) across x from both lungs, inside the 5 mm margin: it is kept."""
    path = tmp_path / "chest.nii.gz"
    counts = chest_nifti(path)
    ct = nib.load(str(path)).get_fdata().astype(np.float32)
    ct[31:33, 20:24, 3:5] = -300.0  # 16 voxels between the lungs, 3 mm from each
    nib.save(nib.Nifti1Image(ct, AFFINE), str(path))
    result = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "out",
                           lung_predictor=BandPredictor([(-900, -800)]))
    assert result["inputs"]["lung_source"] == "model"
    assert result["study"]["lesion_ml"] == pytest.approx((counts["ggo"] + 16) * VOXEL_ML)


@pytest.mark.parametrize("depth, noted", [(1, False), (3, True)])
def test_more_lesion_outside_a_lung_model_s_lungs_than_inside_is_warned_of(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, depth: int, noted: bool) -> None:
    """predict --lung-model said nothing of lesion outside the model's lungs, left out of
    percent_involved, however much there was: more outside than inside is warned of once and
    recorded as the lung_note (a call touching the lungs: 80 voxels outside against 108 inside
    is not, 240 is)."""
    path = tmp_path / "chest.nii.gz"
    counts = chest_nifti(path)
    ct = nib.load(str(path)).get_fdata().astype(np.float32)
    ct[8:28, 40:40 + depth, 2:6] = -300.0  # behind the right lung, touching it
    nib.save(nib.Nifti1Image(ct, AFFINE), str(path))
    outside = 20 * depth * 4
    with caplog.at_level("WARNING"):
        result = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "out",
                               lung_predictor=BandPredictor([(-900, -800)]))
    assert result["study"]["lesion_outside_lungs_ml"] == pytest.approx(outside * VOXEL_ML)
    assert result["study"]["lesion_ml"] == pytest.approx((counts["ggo"] + outside) * VOXEL_ML)
    said = [r.getMessage() for r in caplog.records if "outside the lung model" in r.getMessage()]
    stored = json.loads((tmp_path / "out" / "quantification.json").read_text())["lung_note"]
    if not noted:
        assert said == [] and result["lung_note"] is None and stored is None
        return
    note = (f"{outside * VOXEL_ML:.1f} mL of lesion lies outside the lung model's lungs, more "
            f"than the {counts['ggo'] * VOXEL_ML:.1f} mL inside them, and is left out of "
            "percent_involved: the lung model may have missed consolidated lung, or the calls "
            "run on beyond the lungs; check the montage, or predict without a lung model "
            "(threshold lungs are grown over lesion reaching them)")
    assert said == [f"{path}: {note}"] and result["lung_note"] == note == stored


def test_a_lung_model_finding_one_lung_labels_it_one_lung(tmp_path: Path) -> None:
    """A lung model's mask was split at its own centre, so one lung came out half right, half
    left; it is split at the body's midline in the CT, as the threshold lungs are."""
    chest_nifti(tmp_path / "chest.nii.gz")
    image = nib.load(str(tmp_path / "chest.nii.gz"))
    ct = image.get_fdata().astype(np.float32)
    ct[36:56, 10:40, 1:9] = 40.0  # no left lung
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "chest.nii.gz"))
    lung_model = BandPredictor([(-900, -800)])
    result = predict_study(BandPredictor([(-400, -200)]), tmp_path / "chest.nii.gz",
                           tmp_path / "out", lung_predictor=lung_model)
    assert result["inputs"]["lung_source"] == "model"
    assert result["left_lung"]["lung_ml"] == 0.0
    assert result["right_lung"]["lung_ml"] == pytest.approx(20 * 30 * 8 * VOXEL_ML)
    lungs = np.asarray(nib.load(str(tmp_path / "out" / "lungs.nii.gz")).dataobj)
    assert set(np.unique(lungs)) == {0, 1}


def test_a_lung_model_lung_placed_by_where_it_lies_is_recorded(tmp_path: Path) -> None:
    """With the body cut by the image edge in every slice, a lung model's one lung is given the
    side of the image centre it lies on: said on the console only, while the record, CSV and
    report showed the other lung's 0 mL without a word. ``sides_note`` now says it, and the
    ``orientation_note`` carries it; quantify of predict's unchanged masks keeps it."""
    chest_nifti(tmp_path / "chest.nii.gz")
    ct = nib.load(str(tmp_path / "chest.nii.gz")).get_fdata().astype(np.float32)
    ct[36:56, 10:40, 1:9] = 40.0  # no left lung
    ct[ct < -950] = 40.0  # body to every edge, a lung in every slice: no midline to split at
    ct = ct[:, :, 1:9]
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "in" / "chest.nii.gz"))
    predict_batch(BandPredictor([(-400, -200)]), [tmp_path / "in"], tmp_path / "pred",
                  lung_predictor=BandPredictor([(-900, -800)]), hu="yes")
    record = json.loads((tmp_path / "pred" / "chest" / "quantification.json").read_text())
    assert "by its place in the image" in record["sides_note"]
    assert record["orientation_note"].endswith(record["sides_note"])
    assert quantify_batch([tmp_path / "pred" / "chest"], tmp_path / "again", hu="yes").done == 1
    again = json.loads((tmp_path / "again" / "chest" / "quantification.json").read_text())
    assert again["sides_note"] == record["sides_note"]
    lungs_path = tmp_path / "pred" / "chest" / "lungs.nii.gz"
    saved = nib.load(str(lungs_path))
    lungs = np.asarray(saved.dataobj).copy()
    lungs[36:56, 10:40, :] = 2  # the left lung drawn in: the sides are no guess of predict's
    nib.save(nib.Nifti1Image(lungs, saved.affine, saved.header), str(lungs_path))
    assert quantify_batch([tmp_path / "pred" / "chest"], tmp_path / "edited", hu="yes").done == 1
    edited = json.loads((tmp_path / "edited" / "chest" / "quantification.json").read_text())
    assert edited["sides_note"] is None, edited["sides_note"]


def test_effusion_is_kept_far_from_the_lungs(chest, tmp_path: Path) -> None:
    """Pleural effusion lies outside the lung by definition: a 4-class model's label 3 is not
    removed by the lung-margin rule (a layer behind the lung is kept whole, 12 mm thick), which
    still removes ground-glass far from the lungs, and effusion lying apart (the abdomen; the
    first fix kept it anywhere in the scan)."""
    path, counts = chest
    ct = nib.load(str(path)).get_fdata().astype(np.float32)
    ct[10:26, 40:56, 2:8] = 10.0  # effusion behind the right lung, touching it: 1536 voxels
    ct[42:50, 53:56, 2:4] = 10.0  # "effusion" 9.75 mm from every lung voxel: 48 voxels
    nib.save(nib.Nifti1Image(ct, AFFINE), str(path))
    four_classes = BandPredictor([(-400, -200), (-200, -100), (0, 20)])
    result = predict_study(four_classes, path, tmp_path / "out")
    study = result["study"]
    assert study["effusion_ml"] == pytest.approx(1536 * VOXEL_ML)
    assert study["lesion_ml"] == pytest.approx((counts["ggo"] + counts["consolidation"])
                                               * VOXEL_ML), "the chest-wall blob is removed"
    assert result["inputs"]["effusion_label"] == 3
    assert result["inputs"]["model"]["classes"] == {"0": "background", "1": "ground-glass",
                                                    "2": "consolidation", "3": "effusion"}
    infection = np.asarray(nib.load(str(tmp_path / "out" / "infection.nii.gz")).dataobj)
    assert np.count_nonzero(infection == 3) == 1536


def test_an_effusion_thicker_than_the_lesion_depth_is_kept_whole(tmp_path: Path) -> None:
    """Effusion was tested only 12 mm thick, so cutting it at the 30 mm lesion depth went
    unnoticed: a large effusion's mL would be cut short. This layer is 45 mm (60 voxels) deep
    behind the right lung; every voxel of it is counted."""
    ct = np.full((128, 128, 10), -1000.0, dtype=np.float32)  # x, y, z
    ct[4:124, 4:124, :] = 40.0
    ct[8:40, 10:50, 1:9] = -850.0    # right lung
    ct[88:120, 10:50, 1:9] = -850.0  # left lung
    ct[8:40, 50:110, 1:9] = 10.0     # effusion behind the right lung
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "ct.nii.gz"))
    four_classes = BandPredictor([(-400, -200), (-200, -100), (0, 20)])
    result = predict_study(four_classes, tmp_path / "ct.nii.gz", tmp_path / "out")
    assert result["study"]["effusion_ml"] == pytest.approx(32 * 60 * 8 * VOXEL_ML)


def test_effusion_cut_below_the_lung_bases_is_noted(tmp_path: Path) -> None:
    """An effusion running on below the lung bases (the posterior costophrenic recess) was cut
    at the last lung slice + margin without a word, though the docs said it was kept however
    deep: the cut effusion's mL is now warned of and put in the lung_note; an effusion call
    lying apart (the abdomen) is dropped as before, and not counted in it."""
    ct = np.full((128, 128, 14), -1000.0, dtype=np.float32)  # x, y, z; slices 4 mm
    ct[4:124, 4:124, :] = 40.0
    ct[8:40, 10:50, 1:9] = -850.0    # right lung, slices 1-8
    ct[88:120, 10:50, 1:9] = -850.0  # left lung
    ct[8:40, 50:80, 1:14] = 10.0     # effusion behind the right lung, on to slice 13
    ct[60:70, 100:110, 11:13] = 10.0  # an effusion call in the abdomen, apart
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "ct.nii.gz"))
    four_classes = BandPredictor([(-400, -200), (-200, -100), (0, 20)])
    result = predict_study(four_classes, tmp_path / "ct.nii.gz", tmp_path / "out")
    assert result["study"]["effusion_ml"] == pytest.approx(32 * 30 * 9 * VOXEL_ML)  # to slice 9
    cut = 32 * 30 * 4 * VOXEL_ML
    assert result["lung_note"] == (
        f"{cut:.2f} mL of effusion reaching the lungs was cut beyond 5 mm of the slices holding "
        "lung (below the lung bases, where a call running on into the liver or abdomen is cut) "
        "and is not in effusion_ml; check the montage, or predict with --keep-outside-lungs "
        "to keep it")
    kept = predict_study(four_classes, tmp_path / "ct.nii.gz", tmp_path / "kept",
                         keep_outside_lungs=True)
    assert kept["study"]["effusion_ml"] == pytest.approx((32 * 30 * 13 + 200) * VOXEL_ML)
    assert kept["lung_note"] is None


class LabelPredictor(BandPredictor):
    """Fake 4-class model calling the given (x, y, z) labels, slice by slice in order."""

    def __init__(self, labels: np.ndarray) -> None:
        super().__init__([(0.0, 0.0)] * 3)
        self.labels, self.slice = labels, 0

    def predict_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for _ in images:
            called = self.labels[:, :, self.slice].T
            self.slice += 1
            out.append(np.stack([(called == c).astype(np.float32) for c in range(4)]))
        return out


def test_effusion_cut_outside_the_body_is_noted_as_such(tmp_path: Path) -> None:
    """An effusion call running on out of the body into the air was noted as cut "beyond 5 mm
    of the slices holding lung (below the lung bases ...)", sending the reader below the lung
    bases: each bound's cut is told apart."""
    ct = np.full((64, 64, 12), -1000.0, dtype=np.float32)  # x, y, z; slices 4 mm
    ct[4:60, 4:60, :] = 40.0
    ct[8:28, 10:40, 1:9] = -850.0    # right lung, slices 1-8
    ct[36:56, 10:40, 1:9] = -850.0   # left lung
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "ct.nii.gz"))
    called = np.zeros(ct.shape, dtype=np.uint8)
    called[8:28, 40:64, 2:11] = 3  # behind the right lung, out of the back, on to slice 10
    result = predict_study(LabelPredictor(called), tmp_path / "ct.nii.gz", tmp_path / "out")
    assert result["study"]["effusion_ml"] == pytest.approx(20 * 20 * 8 * VOXEL_ML)
    slices, body = 20 * 24 * VOXEL_ML, 20 * 4 * 8 * VOXEL_ML  # slice 10; y 60-63 in slices 2-9
    assert result["lung_note"] == (
        f"{slices + body:.2f} mL of effusion reaching the lungs was cut {slices:.2f} mL beyond "
        "5 mm of the slices holding lung (below the lung bases, where a call running on into "
        f"the liver or abdomen is cut), {body:.2f} mL in the air outside the body and is not "
        "in effusion_ml; check the montage, or predict with --keep-outside-lungs to keep it")



def test_effusion_below_consolidated_lung_bases_is_cut_a_margin_below_the_aerated_ones(
        tmp_path: Path) -> None:
    """Effusion tested against the lungs grown over the lesions took its slice bound from them
    too: with consolidation kept a slice below the aerated bases, effusion ran on a margin
    further (a whole slice 8 mm below them, where a call runs on into the liver). The slice
    bound is the lungs' as found again; the distance is still from the lungs as counted."""
    ct = np.full((64, 64, 13), -1000.0, dtype=np.float32)  # x, y, z; slices 4 mm
    ct[4:60, 4:60, :] = 40.0
    for lung in (np.s_[8:28, 10:40], np.s_[36:56, 10:40]):
        ct[(*lung, slice(1, 7))] = -850.0  # aerated, slices 1-6
        ct[(*lung, 7)] = -150.0  # consolidated base, slice 7
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "ct.nii.gz"))
    called = np.zeros(ct.shape, dtype=np.uint8)
    called[8:28, 10:40, 7] = called[36:56, 10:40, 7] = 2
    called[8:28, 40:48, 3:13] = 3  # effusion behind the right lung, on to slice 12
    result = predict_study(LabelPredictor(called), tmp_path / "ct.nii.gz", tmp_path / "out")
    assert result["study"]["consolidation_ml"] == pytest.approx(2 * 20 * 30 * VOXEL_ML)
    near = 20 * 4  # slice 8's within 5 mm of the consolidation (3 mm in-plane)
    assert result["study"]["effusion_ml"] == pytest.approx((20 * 8 * 5 + near) * VOXEL_ML)
    cut = (20 * 8 * 5 - near) * VOXEL_ML  # the rest of slices 8-12
    assert (f"{cut:.2f} mL of effusion reaching the lungs was cut beyond 5 mm of the slices "
            "holding lung (below the lung bases") in result["lung_note"]


def test_effusion_cut_outside_the_body_alone_is_not_offered_keep_outside_lungs() -> None:
    """The effusion note told the user to predict with --keep-outside-lungs to keep a call cut
    in the air behind the patient, and noted 0.0005 mL as "0.00 mL": the option is offered for a
    cut inside the body only, and a cut under 0.01 mL is not noted."""
    body = effusion_cut_note(Cut((0, 0, 470, 0), 0.001))
    assert body == ("0.47 mL of effusion reaching the lungs was cut in the air outside the body "
                    "and is not in effusion_ml; check the montage")
    assert effusion_cut_note(Cut((0, 1, 0, 0), 0.00049)) is None
    slices = effusion_cut_note(Cut((0, 2000, 0, 0), 0.001))
    assert slices is not None and slices.endswith("--keep-outside-lungs to keep it")

def test_effusion_behind_consolidated_lung_is_kept(tmp_path: Path) -> None:
    """An effusion lying wholly behind consolidated lung, farther than the margin from aerated
    lung, was dropped without a word as lying apart (the abdomen), though the consolidation it
    touches was counted as lung: it is tested against the lungs as counted."""
    ct = np.full((64, 64, 10), -1000.0, dtype=np.float32)  # x, y, z
    ct[4:60, 4:60, :] = 40.0
    ct[8:28, 10:30, 1:9] = -850.0    # right lung, aerated
    ct[8:28, 30:40, 1:9] = -150.0    # its posterior part consolidated, 7.5 mm deep
    ct[8:28, 40:50, 1:9] = 10.0      # effusion behind it, 8.25 mm from aerated lung
    ct[36:56, 10:40, 1:9] = -850.0   # left lung, 6.75 mm from the effusion
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "ct.nii.gz"))
    four_classes = BandPredictor([(-400, -200), (-200, -100), (0, 20)])
    result = predict_study(four_classes, tmp_path / "ct.nii.gz", tmp_path / "out")
    assert result["study"]["consolidation_ml"] == pytest.approx(20 * 10 * 8 * VOXEL_ML)
    assert result["study"]["effusion_ml"] == pytest.approx(20 * 10 * 8 * VOXEL_ML)


def test_consolidation_filling_the_lung_bases_below_their_last_aerated_slice_is_noted(
        tmp_path: Path) -> None:
    """Consolidation filling both lung bases below their last aerated slice was cut at the
    slice bound without a word, though docs/limits.md said such studies are warned of: the cut
    lesion's mL is noted, with the depth cut's, in the lung_note."""
    ct = np.full((64, 64, 12), -1000.0, dtype=np.float32)  # x, y, z; slices 4 mm
    ct[4:60, 4:60, :] = 40.0
    for lung in (np.s_[8:28, 10:40], np.s_[36:56, 10:40]):
        ct[(*lung, slice(1, 7))] = -850.0  # aerated, slices 1-6
        ct[(*lung, slice(7, 11))] = -150.0  # consolidated bases, slices 7-10
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "ct.nii.gz"))
    result = predict_study(BandPredictor([(-200, -100)]), tmp_path / "ct.nii.gz",
                           tmp_path / "out")
    assert result["study"]["lesion_ml"] == pytest.approx(2 * 20 * 30 * VOXEL_ML)  # slice 7
    cut = 2 * 20 * 30 * 3 * VOXEL_ML
    assert (f"; {cut:.2f} mL of lesion reaching the lungs was cut beyond 5 mm of the slices "
            "holding lung (below the lung bases, where a call running on into the liver or "
            "abdomen is cut): the lungs were found by HU threshold") in result["lung_note"]


def test_effusion_called_inside_the_lungs_is_not_lung_volume(chest, tmp_path: Path) -> None:
    """Effusion a model calls where the threshold lungs lie was counted as lung volume by
    predict and by quantify on its masks: both leave it out of the lung and of % involved."""
    path, counts = chest
    ct = nib.load(str(path)).get_fdata().astype(np.float32)
    ct[8:12, 30:40, 2:6] = -870.0  # air to the threshold, effusion to the model: 160 voxels
    nib.save(nib.Nifti1Image(ct, AFFINE), str(path))
    four_classes = BandPredictor([(-400, -200), (-200, -100), (-880, -860)])
    result = predict_study(four_classes, path, tmp_path / "out")
    lung = counts["lung"] - 160
    lesion = counts["ggo"] + counts["consolidation"]
    requantified = quantify_study(tmp_path / "out" / INFECTION_NII, tmp_path / "q",
                                  lungs=tmp_path / "out" / LUNGS_NII)
    for study in (result, requantified):
        assert study["study"]["effusion_ml"] == pytest.approx(160 * VOXEL_ML)
        assert study["study"]["lung_ml"] == pytest.approx(lung * VOXEL_ML)
        assert study["right_lung"]["lung_ml"] == pytest.approx((lung / 2 - 80) * VOXEL_ML)
        assert study["study"]["percent_involved"] == pytest.approx(100 * lesion / lung)


def test_a_model_without_effusion_reports_none_predicted(chest, tmp_path: Path) -> None:
    """A 3-class model (background, ground-glass, consolidation) reported "effusion 0.00 mL"
    and recorded effusion label 3: it says effusion was not predicted, in every output."""
    path, _ = chest
    three_classes = BandPredictor([(-400, -200), (-200, -100)])
    predict_batch(three_classes, [path], tmp_path / "pred", html=True)
    out = tmp_path / "pred" / "chest"
    record = json.loads((out / "quantification.json").read_text())
    assert record["study"]["effusion_ml"] is None
    assert record["inputs"]["effusion_label"] is None
    assert record["inputs"]["model"]["classes"] == {"0": "background", "1": "ground-glass",
                                                    "2": "consolidation"}
    with open(out / "quantification.csv", newline="") as handle:
        assert next(csv.DictReader(handle))["effusion_ml"] == "not predicted"
    with open(tmp_path / "pred" / "summary.csv", newline="") as handle:
        assert next(csv.DictReader(handle))["effusion_ml"] == "not predicted"
    assert "<td>not predicted</td>" in (out / "report.html").read_text()
    assert quantify_batch([tmp_path / "pred"], tmp_path / "again").done == 1
    again = json.loads((tmp_path / "again" / "chest" / "quantification.json").read_text())
    assert again["study"] == record["study"]


def test_a_record_naming_its_classes_in_a_list_still_reads(chest, tmp_path: Path) -> None:
    """quantification.json named a model's classes as a list (``inputs.model.classes``), every
    other record as ``{label: name}``, as it now does: a study an earlier covseg predicted, its
    list kept, is still reported (its report.html written on a rerun with ``--html``), summed
    up in summary.csv and quantified."""
    path, _ = chest
    three_classes = BandPredictor([(-400, -200), (-200, -100)])
    predict_batch(three_classes, [path], tmp_path / "pred")
    out = tmp_path / "pred" / "chest"
    record = json.loads((out / "quantification.json").read_text())
    assert record["inputs"]["model"]["classes"] == {"0": "background", "1": "ground-glass",
                                                    "2": "consolidation"}
    record["inputs"]["model"]["classes"] = ["background", "ground-glass", "consolidation"]
    (out / "quantification.json").write_text(json.dumps(record))
    rerun = predict_batch(three_classes, [path], tmp_path / "pred", html=True)
    assert (rerun.done, rerun.skipped) == (0, 1)
    page = (out / "report.html").read_text()
    assert "<td>not predicted</td>" in page and "&quot;consolidation&quot;\n" in page
    with open(tmp_path / "pred" / "summary.csv", newline="") as handle:
        assert float(next(csv.DictReader(handle))["lesion_ml"]) == pytest.approx(
            record["study"]["lesion_ml"])
    assert quantify_batch([tmp_path / "pred"], tmp_path / "again").done == 1


def test_bad_predictor_output_is_reported(chest, tmp_path: Path) -> None:
    path, _ = chest

    class Broken(BandPredictor):
        def predict_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
            return [np.zeros((1, 3, 3), dtype=np.float32) for _ in images]

    with pytest.raises(CovsegError, match="shape"):
        predict_study(Broken([(-400, -200)]), path, tmp_path / "out")
    with pytest.raises(CovsegError, match="batch-size"):
        predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "out", batch_size=0)


@pytest.mark.skipif(not CT.is_file(), reason=f"real data not found: {CT}")
def test_real_ct_masks_overlay_the_input(tmp_path: Path) -> None:
    predict_study(BandPredictor([(-500, -100)]), CT, tmp_path / "out")
    original = nib.load(str(CT))
    for name in ("infection.nii.gz", "lungs.nii.gz"):
        mask = nib.load(str(tmp_path / "out" / name))
        assert mask.shape == original.shape
        np.testing.assert_array_equal(mask.affine, original.affine)
        assert mask.header.get_zooms() == original.header.get_zooms()
        assert nib.aff2axcodes(mask.affine) == nib.aff2axcodes(original.affine)
        assert mask.header["qform_code"] == original.header["qform_code"]
        assert mask.header["sform_code"] == original.header["sform_code"]
        np.testing.assert_array_equal(mask.header.get_sform(), original.header.get_sform())
    lungs = np.asarray(nib.load(str(tmp_path / "out" / "lungs.nii.gz")).dataobj)
    assert lungs[:, :, 25:].any() and not lungs[:, :, :15].any()


@pytest.mark.skipif(not DICOMS[0].is_file(), reason=f"real data not found: {DICOMS[0]}")
def test_real_dicom_masks_overlay_the_series(tmp_path: Path) -> None:
    series = tmp_path / "series"
    series.mkdir()
    for source in DICOMS:
        shutil.copy(source, series / source.name)
    result = predict_study(BandPredictor([(-500, -100)]), series, tmp_path / "out")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series)))
    reference = reader.Execute()
    for name in ("infection.nii.gz", "lungs.nii.gz"):
        mask = sitk.ReadImage(str(tmp_path / "out" / name))
        assert mask.GetSize() == reference.GetSize()
        np.testing.assert_allclose(mask.GetOrigin(), reference.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(mask.GetSpacing(), reference.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(mask.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert result["right_lung"]["lung_ml"] > 10 and result["left_lung"]["lung_ml"] > 10


@pytest.mark.skipif(not DICOMS[0].is_file(), reason=f"real data not found: {DICOMS[0]}")
def test_scanner_padding_does_not_change_a_volumes_masks(tmp_path: Path) -> None:
    """The real lungmask slice holds the scanner's -2048 padding outside its reconstruction
    circle; the same slice padded with air (-1024) gave a quarter less lesion with the default
    model, as the model saw the padding darker than air. Both now reach the model alike and
    give the same masks (the band marks air and the padding as read before)."""
    dataset = pydicom.dcmread(DICOMS[0])
    slope, intercept = float(dataset.RescaleSlope), float(dataset.RescaleIntercept)
    stored = dataset.pixel_array
    hu = stored * slope + intercept
    assert int(np.count_nonzero(hu == -2048)) == 56252
    padding = hu < -1024
    dataset.PixelData = np.where(padding, round((-1024 - intercept) / slope), stored
                                 ).astype(stored.dtype).tobytes()
    dataset.save_as(tmp_path / "air.dcm")
    shutil.copy(DICOMS[0], tmp_path / "padded.dcm")
    masks, seen = {}, {}
    for name in ("padded", "air"):
        predictor = BandPredictor([(-1400, -1030)])
        predict_study(predictor, tmp_path / f"{name}.dcm", tmp_path / name,
                      keep_outside_lungs=True)
        seen[name] = np.stack(predictor.seen)
        masks[name] = np.asarray(nib.load(str(tmp_path / name / INFECTION_NII)).dataobj)
    assert np.array_equal(seen["padded"], seen["air"])
    assert np.array_equal(masks["padded"], masks["air"])


def bad_inputs(folder: Path) -> set[str]:
    """Broken studies beside good ones; returns the names expected to fail."""
    blob = (folder / "good.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(blob[: len(blob) // 2])
    nan = np.full((16, 16, 3), -1000.0, dtype=np.float32)
    nan[3, 3, 1] = np.nan
    nib.save(nib.Nifti1Image(nan, AFFINE), str(folder / "nan.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((16, 16), dtype=np.int16), AFFINE),
             str(folder / "flat.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), dtype=np.complex64), AFFINE),
             str(folder / "complex.nii.gz"))
    (folder / "empty").mkdir()
    failing = {"truncated", "nan", "flat", "complex", "empty"}
    if DICOMS[0].is_file():
        mixed = folder / "mixed"
        mixed.mkdir()
        for index, source in enumerate(DICOMS):
            dataset = pydicom.dcmread(source)
            dataset.SeriesInstanceUID = pydicom.uid.generate_uid()
            dataset.save_as(mixed / f"{index}.dcm")
        uneven = folder / "uneven"
        uneven.mkdir()
        for index, z in enumerate((0.0, 1.0, 2.0, 4.0)):  # the slice at 3 mm is missing
            dataset = pydicom.dcmread(DICOMS[index % 2])
            dataset.SOPInstanceUID = pydicom.uid.generate_uid()
            dataset.ImagePositionPatient = [0.0, 0.0, z]
            dataset.save_as(uneven / f"{index}.dcm")
        failing |= {"mixed", "uneven"}
    return failing


def test_batch_goes_on_past_bad_inputs_and_skips_done(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    chest_nifti(inputs / "good.nii.gz")
    failing = bad_inputs(inputs)
    predictor = BandPredictor([(-400, -200)])
    first = predict_batch(predictor, [inputs], tmp_path / "out")
    with open(first.summary, newline="") as handle:
        rows = {row["study"]: row for row in csv.DictReader(handle)}
    assert rows["good"]["status"] == "done" and rows["good"]["ct_category"] == "CT-1"
    assert {name for name, row in rows.items() if row["status"] == "failed"} == failing
    assert "truncated" in rows["truncated"]["error"] and "NaN" in rows["nan"]["error"]
    assert "2D image" in rows["flat"]["error"] and "complex" in rows["complex"]["error"]
    assert "empty" in rows["empty"]["error"]
    if "mixed" in rows:
        assert "tie" in rows["mixed"]["error"]
        assert "a gap of 2 mm among 1 mm (a missing slice?)" in rows["uneven"]["error"]
    assert (first.done, first.failed) == (1, len(failing))
    second = predict_batch(predictor, [inputs], tmp_path / "out")
    assert (second.done, second.skipped, second.failed) == (0, 1, len(failing))


def test_a_ct_named_with_a_channel_like_suffix_keeps_its_study_name_on_a_rerun(
        tmp_path: Path) -> None:
    """``scans/scan_20200401_0000.nii.gz`` was study ``scan_20200401`` (``_0000`` dropped after
    a digit anywhere): a rerun over the ``--out`` an earlier covseg wrote (study
    ``scan_20200401_0000``) predicted it again and listed both. Outside nnU-Net's images
    folders the name is kept; inside them it is dropped, as the label names the case."""
    (tmp_path / "scans").mkdir()
    chest_nifti(tmp_path / "scans" / "scan_20200401_0000.nii.gz")
    predictor = BandPredictor([(-400, -200)])
    first = predict_batch(predictor, [tmp_path / "scans"], tmp_path / "out")
    assert (first.done, first.failed) == (1, 0)
    assert (tmp_path / "out" / "scan_20200401_0000" / INFECTION_NII).is_file()
    second = predict_batch(predictor, [tmp_path / "scans"], tmp_path / "out")
    assert (second.done, second.skipped) == (0, 1)
    with open(second.summary, newline="") as handle:
        assert [row["study"] for row in csv.DictReader(handle)] == ["scan_20200401_0000"]
    shutil.copytree(tmp_path / "scans", tmp_path / "imagesTs")
    predict_batch(predictor, [tmp_path / "imagesTs"], tmp_path / "nnunet")
    assert (tmp_path / "nnunet" / "scan_20200401" / INFECTION_NII).is_file()


def test_an_nnunet_folder_of_several_channels_per_case_is_refused_as_training_refuses_it(
        tmp_path: Path) -> None:
    """``imagesTs/case_0000`` and ``imagesTs/case_0001`` (a CT and a second channel) were
    predicted as two CT studies, ``case`` and ``case_0001``."""
    images = tmp_path / "Dataset001_X" / "imagesTs"
    images.mkdir(parents=True)
    chest_nifti(images / "case_0000.nii.gz")
    shutil.copy(images / "case_0000.nii.gz", images / "case_0001.nii.gz")
    with pytest.raises(CovsegError, match=(
            rf"^{re.escape(str(images.parent))}: imagesTs/ holds further channels "
            r"\(case_0001\.nii\.gz\), but covseg reads one CT channel per case; keep the CT's "
            r"imagesTs/ files \(_0000\) alone in a copy and give that$")):
        predict_batch(BandPredictor([(-400, -200)]), [images], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_label_volume_given_as_a_ct_fails_its_study_and_a_blank_one_is_predicted(
        tmp_path: Path) -> None:
    """A lesion mask (0/1, MosMed's study_0255_mask.nii.gz) given as a CT was "done": read as
    unit intensity, no lungs, lesion 0 ml, no warning. It now fails as its study, with the
    reason in the summary, while the CT beside it and an all-zero (blank) volume are done. (A
    file named as a mask is not read from a folder; this one is named as a CT.)"""
    inputs = tmp_path / "in"
    inputs.mkdir()
    chest_nifti(inputs / "good.nii.gz")
    labels = np.zeros((64, 64, 10), dtype=np.uint8)
    labels[14:20, 20:26, 3:6] = 1
    nib.save(nib.Nifti1Image(labels, AFFINE), str(inputs / "study_0255.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 10), np.float32), AFFINE),
             str(inputs / "blank.nii.gz"))
    result = predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / "out")
    with open(result.summary, newline="") as handle:
        rows = {row["study"]: row for row in csv.DictReader(handle)}
    assert {name: row["status"] for name, row in rows.items()} == {
        "blank": "done", "good": "done", "study_0255": "failed"}
    assert rows["study_0255"]["error"] == (f"{inputs / 'study_0255.nii.gz'}: not a CT image but "
                                           "a label mask (values 0/1); give the CT itself")
    assert not (tmp_path / "out" / "study_0255" / INFECTION_NII).exists()
    assert (result.done, result.failed) == (2, 1)


def test_a_full_disk_fails_the_probabilities_study_alone(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """--probabilities stored into a sparse float16 memmap: the disk filling up killed the
    process with SIGBUS (exit 135, no word, the batch lost, its lock and scratch left). The
    scratch's disk is taken first now: the study fails in one line, the next is done."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b"):
        chest_nifti(inputs / f"{name}.nii.gz")
    calls: list[int] = []

    def full_once(handle: int, offset: int, length: int) -> None:
        calls.append(length)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full_once)
    out = tmp_path / "out"
    result = predict_batch(BandPredictor([(-400, -200)]), [inputs], out, probabilities=True)
    assert (result.done, result.failed) == (1, 1) and calls == [64 * 64 * 10 * 2] * 2
    with open(result.summary, newline="") as handle:
        rows = {row["study"]: row for row in csv.DictReader(handle)}
    assert rows["a"]["error"] == (f"{out / 'a'}: no room for the probabilities (0.1 MiB needed: "
                                  "No space left on device); free space or pick another --out")
    assert not (out / "a").exists()  # nor an empty folder of it
    assert (out / "b" / "probabilities.nii.gz").is_file()
    assert not list(out.rglob(".*"))


def test_an_unreadable_ct_fails_its_study_alone(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A CT the user may not read (permission denied) stopped the whole batch before any study,
    while a damaged one fails alone: now alike, in one line saying why."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("good", "locked"):
        chest_nifti(inputs / f"{name}.nii.gz")
    deny_reading(monkeypatch, inputs / "locked.nii.gz")
    result = predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / "out")
    assert (result.done, result.failed) == (1, 1)
    with open(result.summary, newline="") as handle:
        rows = {row["study"]: row for row in csv.DictReader(handle)}
    assert rows["locked"]["error"] == (f"{inputs / 'locked.nii.gz'}: permission denied; make it "
                                       "readable (chmod +r) or leave it out")


def test_a_file_name_not_utf8_is_refused_in_one_line(tmp_path: Path) -> None:
    """A name that is not valid UTF-8 (legal on Linux) failed its CT study and then stopped the
    batch with a traceback (its summary row could not be written); evaluate the same. Both
    refuse it in one line now, before writing anything."""
    inputs, truths = tmp_path / "in", tmp_path / "truth"
    inputs.mkdir()
    truths.mkdir()
    bad = os.fsdecode(b"ct\xfe") + ".nii.gz"
    chest_nifti(inputs / bad)
    refusal = re.escape(r"ct\xfe.nii.gz: its name is not valid UTF-8, which covseg's records "
                        "cannot hold; rename it")
    with pytest.raises(CovsegError, match=refusal):
        predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    labels = np.zeros((64, 64, 10), dtype=np.uint8)
    labels[14:20, 20:26, 3:6] = 1
    nib.save(nib.Nifti1Image(labels, AFFINE), str(truths / bad))
    shutil.copytree(truths, tmp_path / "pred")
    with pytest.raises(CovsegError, match=refusal):
        evaluate_folders(tmp_path / "pred", truths, tmp_path / "ev" / "ev")
    assert not list((tmp_path / "ev").glob("*"))


def test_a_grey_ct_told_hu_is_refused_by_predict(tmp_path: Path) -> None:
    """A lung-windowed grey CT (0..255) predicted with --hu yes was read as soft tissue: "done",
    no lungs, no lesion, no word. It now fails in one line; --hu auto reads it as grey."""
    hu_path = tmp_path / "hu.nii.gz"
    chest_nifti(hu_path)
    ct = nib.load(str(hu_path))
    low, high = LUNG_WINDOW
    grey = np.clip((np.asarray(ct.dataobj) - low) * (255.0 / (high - low)), 0, 255)
    path = tmp_path / "grey.nii.gz"
    nib.save(nib.Nifti1Image(grey.astype(np.float32), ct.affine), str(path))
    with pytest.raises(CovsegError, match=re.escape(
            f"{path}: --hu yes, but its values 59.5..236.3 are grey levels: none lies below 0, "
            "while a CT in HU always holds air (about -1000); read it as grey: --hu auto or no")):
        predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "as_hu", hu="yes")
    assert not (tmp_path / "as_hu").exists()
    read_as_grey = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "auto")
    assert read_as_grey["inputs"]["intensity"] == "uint8" and read_as_grey["study"]["lung_ml"] > 0
    as_hu = predict_study(BandPredictor([(-400, -200)]), hu_path, tmp_path / "hu", hu="yes")
    assert as_hu["inputs"]["intensity"] == "hu"


def test_a_min_max_normalised_ct_is_refused_and_grey_and_hu_cts_still_read(
        tmp_path: Path, tiny_run: Path) -> None:
    """A CT min-max normalised to 0..1 (numpy pipelines) was read as lung-windowed grey, its
    soft tissue as lung or air: "done", no lungs, a lesion of 105 mL. It now fails its study in
    one line (predict and segment); the same CT in HU and lung-windowed in 8 bits still read."""
    hu_path = tmp_path / "in" / "hu.nii.gz"
    hu_path.parent.mkdir()
    chest_nifti(hu_path)
    ct = nib.load(str(hu_path))
    hu = np.asarray(ct.dataobj).astype(np.float32)
    hu[30:34, 6:9, :] = 1200.0  # a spine: the brightest voxels set the normalised scale's top
    nib.save(nib.Nifti1Image(hu, ct.affine), str(hu_path))
    unit = (hu - hu.min()) / (hu.max() - hu.min())
    nib.save(nib.Nifti1Image(unit, ct.affine), str(tmp_path / "in" / "unit.nii.gz"))
    low, high = LUNG_WINDOW
    grey = np.clip((hu - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)
    nib.save(nib.Nifti1Image(grey, ct.affine), str(tmp_path / "in" / "grey.nii.gz"))
    result = predict_batch(BandPredictor([(-400, -200)]), [tmp_path / "in"], tmp_path / "out")
    assert (result.done, result.failed) == (2, 1)
    with open(result.summary, newline="") as handle:
        rows = {row["study"]: row for row in csv.DictReader(handle)}
    assert rows["unit"]["status"] == "failed" and "\n" not in rows["unit"]["error"]
    assert rows["unit"]["error"] == (
        f"{tmp_path / 'in' / 'unit.nii.gz'}: values 0..1 are neither Hounsfield units (none "
        "below -100) nor grey levels in the lung window: 0.29% of them read as soft tissue "
        "through it, where a chest CT holds 2% or more (a min-max normalised CT?); give the CT "
        "in Hounsfield units, or as 8-bit grey (0..255) in the lung window; --hu no reads it "
        "as grey anyway")
    assert float(rows["hu"]["lung_ml"]) == pytest.approx(float(rows["grey"]["lung_ml"]), rel=0.05)
    with pytest.raises(CovsegError, match=r"^the array: values 0\.\.1 are neither Hounsfield"):
        segment(Predictor.load(tiny_run), unit.T, spacing=(4.0, 0.75, 0.75))
    assert segment(Predictor.load(tiny_run), hu.T, spacing=(4.0, 0.75, 0.75)).shape == unit.T.shape
    read_anyway = predict_study(BandPredictor([(-400, -200)]), tmp_path / "in" / "unit.nii.gz",
                                tmp_path / "told", hu="no")
    assert read_anyway["inputs"]["intensity"] == "unit"


@pytest.mark.skipif(not CT.is_file(), reason=f"real data not found: {CT}")
def test_the_real_ct_min_max_normalised_is_refused(tmp_path: Path) -> None:
    """The probe's case: ``example_ct_sm.nii.gz`` normalised to 0..1 was "done" with no lungs."""
    ct = nib.load(str(CT))
    array = np.asarray(ct.dataobj).astype(np.float32)
    path = tmp_path / "unit01.nii.gz"
    nib.save(nib.Nifti1Image((array - array.min()) / (array.max() - array.min()), ct.affine),
             str(path))
    with pytest.raises(CovsegError, match=re.escape(
            f"{path}: values 0..1 are neither Hounsfield units (none below -100) nor grey "
            "levels in the lung window: 0.03% of them read as soft tissue through it")):
        read_volume(path)
    assert read_volume(CT).intensity == "hu"


@pytest.mark.parametrize("lung_model", [False, True], ids=["threshold-lungs", "lung-model"])
def test_resume_over_studies_of_the_earlier_lung_rule_warns_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, lung_model: bool) -> None:
    """Done studies whose record lacks lesion_added_to_lungs_ml (an earlier covseg's lung rule)
    are still skipped, not redone, but one warning names them and says how to redo them. So are
    those holding lesion added to a lung model's lungs: an earlier covseg grew those as it grows
    thresholded lungs; thresholded lungs grown are not named."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("alpha", "beta", "gamma"):
        chest_nifti(inputs / f"{name}.nii.gz")
    out = tmp_path / "out"
    lungs_by = BandPredictor([(-900, -800)]) if lung_model else None
    predict_batch(BandPredictor([(-400, -200)]), [inputs], out, lung_predictor=lungs_by)
    for name in ("alpha", "beta", "gamma"):
        done = out / name / "quantification.json"
        record = json.loads(done.read_text())
        assert record["inputs"]["lung_source"] == ("model" if lung_model else "threshold")
        if name == "gamma":  # none added to a lung model's lungs; thresholded lungs grown
            record["study"]["lesion_added_to_lungs_ml"] = 0.0 if lung_model else 2.5
        elif lung_model:
            record["study"]["lesion_added_to_lungs_ml"] = 2.5
        else:
            del record["study"]["lesion_added_to_lungs_ml"]
        done.write_text(json.dumps(record))
    with caplog.at_level("WARNING"):
        again = predict_batch(BandPredictor([(-400, -200)]), [inputs], out,
                              lung_predictor=lungs_by)
    assert (again.done, again.skipped) == (0, 3)
    warnings = [r.getMessage() for r in caplog.records if "older lung rule" in r.getMessage()]
    assert warnings == [(f"{out}: 2 study folder(s) (alpha, beta) done by an earlier covseg are "
                         "skipped; their lungs and figures come from its older lung rule: delete "
                         "those study folders (or use a new --out) to redo them")]


def test_a_study_found_done_under_another_name_is_warned_of_by_that_name(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A patient's folder given on its own (named after its file, ``ct``) is found done under its
    name among its siblings (``p1``) and skipped: its record of the earlier lung rule went
    unwarned, as the warning read the folder of the name it had before it was found done."""
    for name in ("p1", "p2"):
        (tmp_path / "in" / name).mkdir(parents=True)
        chest_nifti(tmp_path / "in" / name / "ct.nii.gz")
    out = tmp_path / "out"
    predict_batch(BandPredictor([(-400, -200)]), [tmp_path / "in"], out)
    done = out / "p1" / "quantification.json"
    record = json.loads(done.read_text())
    del record["study"]["lesion_added_to_lungs_ml"]  # as an earlier covseg wrote it
    done.write_text(json.dumps(record))
    with caplog.at_level("WARNING"):
        again = predict_batch(BandPredictor([(-400, -200)]), [tmp_path / "in" / "p1"], out)
    assert (again.done, again.skipped) == (0, 1)
    warnings = [r.getMessage() for r in caplog.records if "older lung rule" in r.getMessage()]
    assert warnings == [(f"{out}: 1 study folder(s) (p1) done by an earlier covseg are skipped; "
                         "their lungs and figures come from its older lung rule: delete those "
                         "study folders (or use a new --out) to redo them")]


def test_a_cascades_grown_lungs_note_names_its_lung_run_as_the_lung_model(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cascade's studies get thresholded lungs (its lung run guides the infection model only):
    the warning told to give --lung-model without saying the cascade's run is not used for them."""
    path = tmp_path / "case.nii.gz"
    overcalled_ct(path)
    guide = tmp_path / "lungs.onnx"
    guide.write_bytes(b"a lung run")

    class Cascade(BandPredictor):
        """A band model carrying a cascade's lung run, as covseg's cascade predictors do."""

        def __init__(self) -> None:
            super().__init__([(-400, -200)])
            self.guide = LungGuide(str(guide))

    with caplog.at_level("WARNING"):
        result = predict_study(Cascade(), path, tmp_path / "out")
    assert result["inputs"]["lung_source"] == "threshold"
    assert result["lung_note"].endswith(
        f"give the lungs with --lung-model {guide} (this cascade's lung run, which guides its "
        "infection model but does not give the study's lungs)")
    assert [r.getMessage() for r in caplog.records if "threshold" in r.getMessage()] == [
        f"{path}: {result['lung_note']}"]


def test_new_studies_into_an_out_predicted_otherwise_are_refused(tmp_path: Path) -> None:
    """Studies of another threshold added to an --out went into one summary.csv (and chart)
    with the earlier ones, no column naming the difference: refused before any study."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("alpha", "beta"):
        chest_nifti(inputs / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert predict_batch(BandPredictor([(-400, -200)]), [inputs / "alpha.nii.gz"], out).done == 1
    stricter = BandPredictor([(-400, -200)])
    stricter.threshold = 0.9
    with pytest.raises(CovsegError, match=r"out holds alpha, done earlier with other settings "
                                          r"\(threshold: 0\.5 -> 0\.9\), which its summary"):
        predict_batch(stricter, [inputs / "beta.nii.gz"], out)
    assert not (out / "beta").exists()
    same = predict_batch(BandPredictor([(-400, -200)]), [inputs / "beta.nii.gz"], out,
                         probabilities=True)
    assert same.done == 1
    with open(out / "summary.csv", encoding="utf-8", newline="") as handle:
        assert [row["study"] for row in csv.DictReader(handle)] == ["alpha", "beta"]


def test_rerun_with_other_settings_is_refused_before_any_study(tmp_path: Path) -> None:
    """A done study is skipped only when made with the same settings: another threshold stops
    the run up front (it kept the old results); --html alone adds the report to done studies;
    older outputs, which record no settings, are skipped as before; shards and the whole run
    afterwards still skip."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("alpha", "beta"):
        chest_nifti(inputs / f"{name}.nii.gz")
    out = tmp_path / "out"
    halves = [predict_batch(BandPredictor([(-400, -200)]), [inputs], out, shard=(i, 2))
              for i in (0, 1)]
    assert [h.done for h in halves] == [1, 1]
    again = predict_batch(BandPredictor([(-400, -200)]), [inputs], out)
    assert (again.done, again.skipped) == (0, 2)
    stricter = BandPredictor([(-400, -200)])
    stricter.threshold = 0.9
    with pytest.raises(CovsegError, match=r"alpha was made with other settings or inputs "
                                          r"\(threshold: 0\.5 -> 0\.9\) \(and 1 more "
                                          r"study\); pick a new --out or delete it$"):
        predict_batch(stricter, [inputs], out, html=True)
    assert not (out / "alpha" / "report.html").exists()
    reported = predict_batch(BandPredictor([(-400, -200)]), [inputs], out, html=True)
    assert (reported.done, reported.skipped) == (0, 2)
    record = json.loads((out / "alpha" / "quantification.json").read_text())
    report = (out / "alpha" / "report.html").read_text()
    assert record["settings"]["html"] is True and record["files"]["html"].endswith("report.html")
    assert "data:image/png;base64," in report
    assert f"<td>{record['study']['lesion_ml']:.2f}</td>" in report
    assert predict_batch(BandPredictor([(-400, -200)]), [inputs], out).skipped == 2
    record = out / "alpha" / "quantification.json"
    old = json.loads(record.read_text())
    assert old["settings"]["model"] == "band thresholds"
    del old["settings"]
    record.write_text(json.dumps(old))  # as an older covseg wrote it
    (out / "beta" / "quantification.json").unlink()
    redone = predict_batch(stricter, [inputs], out)
    assert (redone.done, redone.skipped) == (1, 1)
    assert json.loads((out / "beta" / "quantification.json").read_text())[
        "settings"]["threshold"] == 0.9


def test_prediction_folder_is_quantified_again_as_it_is(tmp_path: Path) -> None:
    """``covseg quantify`` on predict's output: the output folder, each study's
    infection.nii.gz (named after its folder) or each study folder given itself (one study,
    not its infection and lung masks as two) with the lungs.nii.gz beside it gives predict's
    own figures."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("alpha", "beta"):
        chest_nifti(inputs / f"{name}.nii.gz")
    predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / "pred")
    expected = {name: json.loads((tmp_path / "pred" / name / "quantification.json").read_text())
                for name in ("alpha", "beta")}
    pred = tmp_path / "pred"
    for index, given in enumerate(([pred], sorted(pred.glob("*/infection.nii.gz")),
                                   [pred / "alpha", pred / "beta"])):
        out = tmp_path / f"again{index}"
        assert quantify_batch(given, out).done == 2
        for name, before in expected.items():
            after = json.loads((out / name / "quantification.json").read_text())
            assert after["study"] == before["study"]
            assert after["right_lung"] == before["right_lung"]
            assert after["inputs"]["lungs"].endswith(f"{name}/lungs.nii.gz")


PREDICT_STAGES = ["reading the CT", "finding infection", "writing the probabilities",
                  "finding the lungs", "matching lesions to the lungs", "writing the masks",
                  "counting", "writing the report"]


def shown_in_order(err: str, study: str, stages: Sequence[str]) -> bool:
    """Whether the bar's output ``err`` names each stage of ``study``, in this order."""
    positions = [err.find(f"{study}: {name}") for name in stages]
    return -1 not in positions and positions == sorted(positions)


def test_a_study_names_each_stage_as_it_starts(chest, tmp_path: Path) -> None:
    """The stages of a study, given to whoever listens; nothing else changes."""
    path, counts = chest
    stages: list[str] = []
    with reporting(stages.append):
        result = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "out",
                               probabilities=True)
    assert stages == PREDICT_STAGES
    assert result["study"]["lesion_ml"] == pytest.approx(counts["ggo"] * VOXEL_ML)
    stages.clear()
    predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "again")
    assert not stages, "a study outside of reporting() names its stages to no one"


def test_the_study_bar_names_the_study_and_its_stage(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 1100-slice study, predict showed only ``predict: 0/1`` for over a minute (reading,
    the lungs, the lesion rule, writing), and quantify only ``quantify: 0/1``: the study bar
    now names the study and the stage it is in, and drops them once the study is done (the
    bar's last line names none); a study skipped as done names none. Drawn here as each stage
    starts (by default, once it has lasted half a second: the test below)."""
    monkeypatch.setattr(progress, "SHOW_AFTER_S", 0.0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    chest_nifti(inputs / "chest.nii.gz")
    predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / "pred", probabilities=True)
    err = capsys.readouterr().err
    assert shown_in_order(err, "chest", PREDICT_STAGES)
    last = re.split(r"[\r\n]+", err.strip())[-1]
    assert "chest:" not in last and "1/1" in last
    assert predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / "pred",
                         probabilities=True).skipped == 1
    assert "chest:" not in capsys.readouterr().err
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(tmp_path / "pred" / "chest" / INFECTION_NII, masks / "chest_mask.nii.gz")
    quantify_batch([masks], tmp_path / "q", image=inputs)
    assert shown_in_order(capsys.readouterr().err, "chest", [
        "reading the mask and CT", "finding the lungs", "matching lesions to the lungs",
        "counting", "writing the report"])
    quantify_batch([tmp_path / "pred"], tmp_path / "again")
    assert shown_in_order(capsys.readouterr().err, "chest", [
        "reading the mask and CT", "reading the lung mask", "counting", "writing the report"])


def test_only_lasting_stages_are_drawn(tmp_path: Path) -> None:
    """A stage is drawn once it has lasted ``after`` seconds, by the StageBar's thread while the
    study works; stages over sooner (a batch of small studies) are never drawn, so a log of
    the bar is not filled with them."""
    drawn = io.StringIO()
    with tqdm(total=2, file=drawn) as bar, progress.stage_bar(bar, after=3600.0) as stages:
        for name in ("small", "tiny"):
            for step in PREDICT_STAGES:
                stages.reporter(name)(step)
            stages.show("")
            bar.update()
    assert "small:" not in drawn.getvalue() and "tiny:" not in drawn.getvalue()
    drawn = io.StringIO()
    with tqdm(total=1, file=drawn) as bar, progress.stage_bar(bar, after=0.01) as stages:
        stages.reporter("large")("finding the lungs")
        for _ in range(1000):
            if "large: finding the lungs" in drawn.getvalue():
                break
            time.sleep(0.01)
        assert "large: finding the lungs" in drawn.getvalue()
        stages.show("")
        bar.update()
    assert "large:" not in drawn.getvalue().rsplit("\r", 1)[-1]


def test_an_effusion_call_does_not_join_a_chest_wall_call_to_the_lung(tmp_path: Path) -> None:
    """predict kept (and counted as lung) a ground-glass call in the chest wall that reached the
    lung only through an effusion call, where quantify --image on the same mask and CT found it
    outside the lungs: the lesion regions are found without the effusion, which is kept by its
    own test, and both give the same numbers."""
    hu = np.full((64, 64, 10), -1000.0, dtype=np.float32)  # x, y, z
    hu[4:60, 4:62, :] = 40.0
    hu[8:28, 10:40, 1:9] = -850.0
    hu[36:56, 10:40, 1:9] = -850.0
    hu[8:28, 40:47, 2:8] = 10.0  # effusion behind the right lung, 5.25 mm thick
    hu[10:26, 47:52, 3:6] = -300.0  # ground-glass call beyond it, 6 mm from the lung
    path = tmp_path / "chest.nii.gz"
    nib.save(nib.Nifti1Image(hu, AFFINE), str(path))
    predictor = BandPredictor([(-400, -200), (-180, -120), (0, 20)])
    kept = predict_study(predictor, path, tmp_path / "kept", keep_outside_lungs=True)
    shutil.copy(tmp_path / "kept" / "infection.nii.gz", tmp_path / "mask.nii.gz")
    again = quantify_study(tmp_path / "mask.nii.gz", tmp_path / "again", image=path)
    for region in ("study", "right_lung", "left_lung"):
        assert again[region] == kept[region], region
    assert kept["study"]["lesion_outside_lungs_ml"] == pytest.approx(16 * 5 * 3 * VOXEL_ML)
    predict_study(predictor, path, tmp_path / "removed")
    infection = np.asarray(nib.load(str(tmp_path / "removed" / "infection.nii.gz")).dataobj)
    assert not (infection == 1).any() and np.count_nonzero(infection == 3) == 20 * 7 * 6


def overcalled_ct(path: Path) -> np.ndarray:
    """Write the over-called chest as a CT that BandPredictor calls as lesion; its true lesion."""
    ct, lesions, _, truth = overcalled_chest()
    nib.save(nib.Nifti1Image(np.where(lesions > 0, -300.0, ct).astype(np.float32),
                             OVERCALLED_AFFINE), str(path))
    return truth


def test_predict_warns_of_lungs_grown_far_and_records_how_much(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Thresholded lungs grown over a call running into a heart-like block: predict records the
    lesion added to each lung and warns once, pointing to --lung-model."""
    path = tmp_path / "case.nii.gz"
    overcalled_ct(path)
    with caplog.at_level("WARNING"):
        result = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "out")
    warnings = [record.getMessage() for record in caplog.records if "threshold" in
                record.getMessage()]
    assert len(warnings) == 1 and "--lung-model" in warnings[0]
    assert result["lung_note"] in warnings[0]
    assert result["right_lung"]["lesion_added_to_lungs_ml"] > 0
    assert result["study"]["lesion_added_to_lungs_ml"] == pytest.approx(
        result["right_lung"]["lesion_added_to_lungs_ml"]
        + result["left_lung"]["lesion_added_to_lungs_ml"])


def test_quantify_of_a_prediction_takes_its_lung_growth_however_the_lungs_are_spelled(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """The same lungs.nii.gz given by an absolute path gave no lung growth and no note, by a
    relative one predict's; quantify of the folder recorded predict's note without warning.
    The note is predict's, but for its advice: quantify has no --lung-model, and the lungs
    given with --lungs are predict's threshold lungs (:data:`GIVEN_THRESHOLD_ADVICE`)."""
    path = tmp_path / "case.nii.gz"
    overcalled_ct(path)
    predicted = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "pred")
    assert predicted["lung_note"].endswith("give the lungs with --lung-model")
    note = predicted["lung_note"].split("the lungs were found")[0] + GIVEN_THRESHOLD_ADVICE
    monkeypatch.chdir(tmp_path)
    for index, lungs in enumerate((Path("pred/lungs.nii.gz"), tmp_path / "pred/lungs.nii.gz")):
        caplog.clear()
        with caplog.at_level("WARNING"):
            result = quantify_study(Path("pred/infection.nii.gz"), tmp_path / f"q{index}",
                                    lungs=lungs)
        for region in ("study", "right_lung", "left_lung"):
            assert result[region] == predicted[region], (lungs, region)
        assert result["lung_note"] == note
        assert [record.getMessage() for record in caplog.records
                if "threshold" in record.getMessage()] == [f"pred/infection.nii.gz: {note}"]


GIVEN_THRESHOLD_ADVICE = (
    "the lungs given with --lungs (predict's lungs.nii.gz) were found by HU threshold, which "
    "cannot tell consolidation from a call running on into the liver, heart or chest wall; check "
    "the montage, or give a lung model's lungs with --lungs (the lungs.nii.gz predict writes "
    "with --lung-model)")
"""The grown-lungs note's advice in quantify, for predict's threshold lungs given as --lungs."""


def test_quantify_of_predicts_threshold_lungs_given_as_lungs_advises_a_lung_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``covseg quantify MASK --lungs LUNGS``, LUNGS predict's threshold lungs.nii.gz, warned
    "the lungs were found by HU threshold ...; give the lungs with --lungs", which the user had
    done: the note says the lungs given were thresholded and to give a lung model's, for
    predict's masks as written and edited since (counted again from the CT); without --lungs
    it still says to give them."""
    from covseg.cli import main

    path = tmp_path / "case.nii.gz"
    truth = overcalled_ct(path)
    predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "pred")
    infection, lungs = tmp_path / "pred" / INFECTION_NII, str(tmp_path / "pred" / LUNGS_NII)
    for edited in (False, True):
        if edited:
            erase_false_call(tmp_path / "pred", truth)
        for given in ([], ["--lungs", lungs]):
            out = tmp_path / f"q{edited}{len(given)}"
            assert main(["quantify", str(infection), *given, "--out", str(out)]) == 0
            err = capsys.readouterr().err
            note = json.loads((out / "pred" / "quantification.json").read_text())["lung_note"]
            advice = GIVEN_THRESHOLD_ADVICE if given else (
                "the lungs were found by HU threshold, which cannot tell consolidation from a "
                "call running on into the liver, heart or chest wall; check the montage, or give "
                "the lungs with --lungs")
            assert note.endswith(f": {advice}"), (edited, given, note)
            assert f"{infection}: {note}" in err, (edited, given, err)



def test_quantify_of_a_prediction_keeps_predicts_effusion_cut_note(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Predict's lung_note held the grown-lungs note and then "; N mL of effusion reaching the
    lungs was cut ...": quantify of its masks as written replaced everything from the grown-lungs
    advice on with its own, and the effusion cut was lost (with or without --lungs). Only the
    advice is quantify's; the effusion note follows it as predict wrote it."""
    from covseg.cli import main

    ct = np.full((128, 128, 14), -1000.0, dtype=np.float32)
    ct[4:124, 4:124, :] = 40.0
    ct[8:40, 10:50, 1:9] = -850.0      # right lung
    ct[88:120, 10:50, 1:9] = -850.0    # left lung
    ct[8:40, 50:80, 1:14] = 10.0       # effusion running on below the lung bases
    ct[8:40, 10:30, 1:9] = -150.0      # consolidation filling half the right lung
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "ct.nii.gz"))
    predicted = predict_study(BandPredictor([(-400, -200), (-200, -100), (0, 20)]),
                              tmp_path / "ct.nii.gz", tmp_path / "pred")
    grown, effusion = predicted["lung_note"].split("; check the montage, or give the lungs with "
                                                   "--lung-model; ")
    assert "mL of effusion reaching the lungs was cut" in effusion
    lungs = str(tmp_path / "pred" / LUNGS_NII)
    for given in ([], ["--lungs", lungs]):
        out = tmp_path / f"q{len(given)}"
        assert main(["quantify", str(tmp_path / "pred" / INFECTION_NII), *given,
                     "--out", str(out)]) == 0
        note = json.loads((out / "pred" / "quantification.json").read_text())["lung_note"]
        head = grown.split("the lungs were found by")[0]
        advice = (GIVEN_THRESHOLD_ADVICE if given
                  else threshold_advice("give the lungs with --lungs"))
        assert note == f"{head}{advice}; {effusion}", given
        assert note in capsys.readouterr().err


def test_quantify_of_a_prediction_keeps_predicts_removed_lesion_note(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Predict's lung_note held the grown-lungs note and then "; N mL of lesion lying wholly
    beyond 5 mm of the lungs found was removed ...": quantify of its masks as written cut
    everything after the grown-lungs advice (kept only before a cut effusion's note), so the
    removed lesion went unsaid in its lung_note, warning and report. Only the advice is
    quantify's; the removed-lesion note follows it as predict wrote it, its remedy predict's.
    Predict warns of the two in the lung_note's order (it warned of the removed lesion first)."""
    from covseg.cli import main

    path = tmp_path / "chest.nii.gz"
    chest_nifti(path)
    image = nib.load(str(path))
    hu = np.asarray(image.dataobj)
    hu[36:56, 10:40, 1:9] = -300.0  # the left lung wholly ground-glass
    hu[8:28, 10:22, 1:9] = -300.0  # 40 % of the right lung ground-glass: grown over
    nib.save(nib.Nifti1Image(hu, image.affine), str(path))
    with caplog.at_level("WARNING"):
        predicted = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "pred")
    grown, removed = predicted["lung_note"].split("; check the montage, or give the lungs with "
                                                  "--lung-model; ")
    assert removed.endswith("mL in them: a lung consolidated whole (no air left in it) is no "
                            "lung to the HU threshold, and its lesion lies apart from the other "
                            "lung; or the calls lie beyond the lungs; check the montage, or "
                            "predict again, keeping that lesion with --keep-outside-lungs or "
                            "giving the lungs with --lung-model")
    warned = [record.getMessage() for record in caplog.records]
    assert [message for message in warned if message.startswith(f"{path}: ")] == [
        f"{path}: {grown}; check the montage, or give the lungs with --lung-model",
        f"{path}: {removed}"]
    head = grown.split("the lungs were found by")[0]
    for given in ([], ["--lungs", str(tmp_path / "pred" / LUNGS_NII)]):
        out = tmp_path / f"q{len(given)}"
        assert main(["quantify", str(tmp_path / "pred" / INFECTION_NII), *given,
                     "--out", str(out)]) == 0
        note = json.loads((out / "pred" / "quantification.json").read_text())["lung_note"]
        advice = (GIVEN_THRESHOLD_ADVICE if given
                  else threshold_advice("give the lungs with --lungs"))
        assert note == f"{head}{advice}; {removed}", given
        assert note in capsys.readouterr().err


def test_quantify_of_a_prediction_without_lungs_gives_quantifys_advice(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Quantify of predict's masks for a CT where no lungs were found kept predict's "if the CT
    holds lungs, give them with --lung-model", an option quantify lacks; once the mask was
    edited it said "check the montage, or quantify with the CT and no lung mask", whose threshold
    finds no lungs either. Both now say to give them with --lungs (a lung model's, where
    predict's empty lungs.nii.gz was given with it)."""
    from covseg.cli import main

    ct = np.full((64, 64, 10), -1000.0, dtype=np.float32)
    ct[4:60, 4:60, :] = 40.0          # an abdomen: body, no lungs
    ct[20:30, 20:30, 3:6] = -300.0    # a call
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "ct.nii.gz"))
    predicted = predict_study(BandPredictor([(-400, -200)]), tmp_path / "ct.nii.gz",
                              tmp_path / "pred")
    assert predicted["lung_note"].endswith("give them with --lung-model")
    infection = tmp_path / "pred" / INFECTION_NII
    for edited in (False, True):
        if edited:
            written = nib.load(str(infection))
            mask = np.asarray(written.dataobj).copy()
            mask[25, 25, 4] = 0
            nib.save(nib.Nifti1Image(mask, written.affine, written.header), str(infection))
        for given in ([], ["--lungs", str(tmp_path / "pred" / LUNGS_NII)]):
            out = tmp_path / f"q{edited}{len(given)}"
            assert main(["quantify", str(infection), *given, "--out", str(out)]) == 0
            note = json.loads((out / "pred" / "quantification.json").read_text())["lung_note"]
            remedy = "--lungs" + (" (a lung model's lungs: the lungs.nii.gz predict writes with "
                                  "--lung-model)" if given else "")
            assert note == no_lungs_note(remedy), (edited, given)
            assert note in capsys.readouterr().err

def test_quantify_of_an_edited_prediction_counts_the_lung_growth_of_its_files(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A false call erased from predict's infection.nii.gz still read predict's lung growth
    (more lesion added to the left lung than it held) and note: masks edited since predict
    (or of a record without their hashes) are counted again from the CT, as quantify --image
    counts them; without the CT the growth is unknown (None) and the lungs are counted as
    given, with a warning that they may still hold lesion erased since."""
    path = tmp_path / "case.nii.gz"
    truth = overcalled_ct(path)
    predicted = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "pred")
    mask = erase_false_call(tmp_path / "pred", truth)
    shutil.copy(mask, tmp_path / "edited.nii.gz")
    expected = quantify_study(tmp_path / "edited.nii.gz", tmp_path / "image", image=path)
    result = quantify_study(mask, tmp_path / "folder")
    assert result["study"]["lesion_ml"] < predicted["study"]["lesion_ml"]
    for region in ("study", "right_lung", "left_lung"):
        assert result[region]["lesion_added_to_lungs_ml"] == pytest.approx(
            expected[region]["lesion_added_to_lungs_ml"]), region
        assert result[region]["lesion_added_to_lungs_ml"] <= result[region]["lesion_ml"]
    assert result["lung_note"] == expected["lung_note"]
    path.unlink()
    caplog.clear()
    with caplog.at_level("WARNING"):
        unknown = quantify_study(mask, tmp_path / "no_ct")
    assert [unknown[region]["lesion_added_to_lungs_ml"] for region in
            ("study", "right_lung", "left_lung")] == [None, None, None]
    assert [record.getMessage() for record in caplog.records] == [
        (f"{mask}: the lung volume may still include lesion erased from the mask since "
         "predict grew its lungs over it; give quantify the CT to recount")]
    assert unknown["lung_note"] in caplog.records[0].getMessage()
    assert unknown["inputs"]["lungs_recounted"] is False
    for region in ("study", "right_lung", "left_lung"):  # counted as given
        assert unknown[region]["lung_ml"] == predicted[region]["lung_ml"], region


def test_quantify_of_an_edited_prediction_drops_the_lungs_grown_over_erased_lesion(
        tmp_path: Path) -> None:
    """predict's threshold lungs grown over a false call still counted it as lung once the call
    was erased from infection.nii.gz (probe R9: 429.4 mL against 407.8): the lungs lose the
    voxels that are neither threshold lung nor lesion now, each from its own side. Lesion added
    by hand outside predict's lungs is lesion outside the lungs, as for any lung mask; the
    unedited masks keep predict's figures."""
    path = tmp_path / "case.nii.gz"
    truth = overcalled_ct(path)
    predicted = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "pred")
    mask = tmp_path / "pred" / "infection.nii.gz"
    unedited = quantify_study(mask, tmp_path / "unedited")
    for region in ("study", "right_lung", "left_lung"):
        assert unedited[region] == predicted[region], region
    written = nib.load(str(mask))
    called = np.asarray(written.dataobj)
    edited = (called * truth).astype(np.uint8)
    edited[50:60, 30:40, 0:2] = 1  # added by hand in the body, below the lungs
    nib.save(nib.Nifti1Image(edited, written.affine, written.header), str(mask))
    lungs = np.asarray(nib.load(str(tmp_path / "pred" / "lungs.nii.gz")).dataobj)
    erased = (lungs > 0) & (called > 0) & (edited == 0)
    voxel_ml = 3.0 * 3.0 * 4.0 / 1000.0
    result = quantify_study(mask, tmp_path / "edited")
    assert np.count_nonzero(erased) > 500  # 600 voxels, 21.6 mL of the false call
    for region, side in (("study", lungs > 0), ("right_lung", lungs == 1),
                         ("left_lung", lungs == 2)):
        assert result[region]["lung_ml"] == pytest.approx(
            predicted[region]["lung_ml"] - np.count_nonzero(erased & side) * voxel_ml), region
    assert predicted["study"]["lesion_added_to_lungs_ml"] - \
        result["study"]["lesion_added_to_lungs_ml"] == pytest.approx(
            np.count_nonzero(erased) * voxel_ml)
    assert result["study"]["lesion_outside_lungs_ml"] == pytest.approx(
        np.count_nonzero((edited > 0) & (lungs == 0)) * voxel_ml)
    assert result["study"]["lesion_outside_lungs_ml"] >= 200 * voxel_ml
    inside = np.count_nonzero((edited > 0) & (lungs > 0) & ~erased)
    assert result["study"]["percent_involved"] == pytest.approx(
        100.0 * inside / np.count_nonzero((lungs > 0) & ~erased))
    assert (unedited["inputs"]["lungs_recounted"], result["inputs"]["lungs_recounted"]) == \
        (None, True)


def erase_false_call(folder: Path, truth: np.ndarray) -> Path:
    """predict's infection.nii.gz in ``folder`` edited by hand to hold only the ``truth``."""
    mask = folder / INFECTION_NII
    written = nib.load(str(mask))
    nib.save(nib.Nifti1Image((np.asarray(written.dataobj) * truth).astype(np.uint8),
                             written.affine, written.header), str(mask))
    return mask


def test_quantify_of_an_edited_prediction_recounts_its_lungs_in_the_ct_predict_read_only(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another CT on predict's grid given as --image (here one whose lungs are soft tissue)
    gave other threshold lungs, and the recount silently dropped real lung from predict's
    lungs (all but the lesion): a CT whose SHA-256 is not the one predict recorded is taken as
    no CT, the lungs counted as given, with a warning and note saying so; so is the CT of an
    older record, which holds no SHA-256 to check it by. The CT predict read is recounted in
    as before."""
    path = tmp_path / "case.nii.gz"
    truth = overcalled_ct(path)
    predicted = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "pred")
    mask = erase_false_call(tmp_path / "pred", truth)
    ct = nib.load(str(path))
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.where(np.asarray(ct.dataobj) > -950.0, 40.0, -1000.0)
                             .astype(np.float32), ct.affine), str(other))
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = quantify_study(mask, tmp_path / "other", image=other)
    note = (f"{mask}: the lung volume may still include lesion erased from the mask since "
            "predict grew its lungs over it; the CT read is not the one predict read (SHA-256 "
            "differs), so they were not recounted; give quantify the CT predict read to recount")
    assert [record.getMessage() for record in caplog.records] == [note]
    assert note.endswith(result["lung_note"])
    assert result["inputs"]["lungs_recounted"] is False
    for region in ("study", "right_lung", "left_lung"):
        assert result[region]["lung_ml"] == predicted[region]["lung_ml"], region
        assert result[region]["lesion_added_to_lungs_ml"] is None, region
    same = quantify_study(mask, tmp_path / "same", image=path)
    assert same["inputs"]["lungs_recounted"] is True
    assert 0 < predicted["study"]["lung_ml"] - same["study"]["lung_ml"] < 25.0  # the false call
    assert same["study"]["lesion_added_to_lungs_ml"] > 0
    record = tmp_path / "pred" / "quantification.json"
    older = json.loads(record.read_text())
    del older["inputs"]["sha256"], older["output_sha256"]  # as an older covseg wrote it
    record.write_text(json.dumps(older))
    unknown = quantify_study(mask, tmp_path / "older", image=path)
    assert unknown["inputs"]["lungs_recounted"] is None  # lungs not known as predict's own
    for region in ("study", "right_lung", "left_lung"):
        assert unknown[region]["lung_ml"] == predicted[region]["lung_ml"], region
        assert unknown[region]["lesion_added_to_lungs_ml"] is None, region


def test_another_ct_stored_in_the_folder_predict_read_is_not_recounted_in(
        tmp_path: Path) -> None:
    """predict_study given a folder holding one NIfTI file (``p1/ct.nii.gz``) recorded the
    SHA-256 of nothing for it, so another CT stored there later passed as the one predict read
    and predict's lungs were recounted in it: the folder is hashed as its file, so the other CT
    is taken as no CT, and the CT predict read, given as the folder or as the file, is
    recounted in."""
    folder = tmp_path / "p1"
    folder.mkdir()
    path = folder / "ct.nii.gz"
    truth = overcalled_ct(path)
    predicted = predict_study(BandPredictor([(-400, -200)]), folder, tmp_path / "pred")
    assert predicted["inputs"]["image"] == str(folder.resolve())
    mask = erase_false_call(tmp_path / "pred", truth)
    as_file = quantify_study(mask, tmp_path / "file", image=path)
    assert as_file["inputs"]["lungs_recounted"] is True
    ct = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.where(np.asarray(ct.dataobj) > -950.0, 40.0, -1000.0)
                             .astype(np.float32), ct.affine), str(path))
    other = quantify_study(mask, tmp_path / "other")  # the folder predict recorded
    assert other["inputs"]["image"] == str(folder.resolve())
    assert other["inputs"]["lungs_recounted"] is False
    for region in ("study", "right_lung", "left_lung"):
        assert other[region]["lung_ml"] == predicted[region]["lung_ml"], region
        assert other[region]["lesion_added_to_lungs_ml"] is None, region


def test_quantify_of_an_edited_prediction_finds_the_lungs_in_the_ct_as_predict_read_it(
        tmp_path: Path) -> None:
    """A grey CT (lung window, 0..255) that predict read as grey, given to quantify with
    --hu yes, was thresholded as HU (no lung in 0..255) and the recount dropped all of
    predict's lungs but the lesion: the threshold lungs are found in the CT read as predict's
    record says it read it, whatever quantify's --hu."""
    hu_path = tmp_path / "hu.nii.gz"
    truth = overcalled_ct(hu_path)
    ct = nib.load(str(hu_path))
    low, high = LUNG_WINDOW
    path = tmp_path / "grey.nii.gz"
    nib.save(nib.Nifti1Image(((np.asarray(ct.dataobj) - low) * (255.0 / (high - low)))
                             .astype(np.float32), ct.affine), str(path))
    predicted = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "pred")
    assert predicted["inputs"]["intensity"] == "uint8"
    mask = erase_false_call(tmp_path / "pred", truth)
    auto = quantify_study(mask, tmp_path / "auto")
    as_hu = quantify_study(mask, tmp_path / "as_hu", hu="yes")
    assert (auto["inputs"]["lungs_recounted"], as_hu["inputs"]["lungs_recounted"]) == (True, True)
    assert 0 < predicted["study"]["lung_ml"] - auto["study"]["lung_ml"] < 25.0
    for region in ("study", "right_lung", "left_lung"):
        assert as_hu[region] == auto[region], region


@pytest.mark.parametrize("scan", ["chest", "dicom", "nifti"])
def test_quantify_of_a_prediction_folder_gives_predicts_numbers(tmp_path: Path,
                                                                 scan: str) -> None:
    """Every figure, both lungs included: the lungs.nii.gz beside the infection is used as it
    is (splitting it again filled holes and moved voxels between the lungs)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    if scan == "chest":
        chest_nifti(inputs / "chest.nii.gz")
    else:
        for source in DICOMS if scan == "dicom" else [CT]:
            shutil.copy(source if source.is_file() else pytest.skip(f"no {source}"), inputs)
    predict_batch(BandPredictor([(-500, -100)]), [inputs], tmp_path / "pred")
    assert quantify_batch([tmp_path / "pred"], tmp_path / "again").done == 1
    study = next(p.name for p in (tmp_path / "pred").iterdir() if p.is_dir())
    before = json.loads((tmp_path / "pred" / study / "quantification.json").read_text())
    after = json.loads((tmp_path / "again" / study / "quantification.json").read_text())
    for key in ("study", "right_lung", "left_lung", "spacing_mm", "voxel_ml", "shape"):
        assert after[key] == before[key], key
    written = nib.load(str(tmp_path / "pred" / study / "infection.nii.gz"))  # the file's terms
    assert before["shape"] == list(written.shape)
    assert before["spacing_mm"] == pytest.approx([float(z) for z in written.header.get_zooms()])
    rows = [list(csv.DictReader((tmp_path / folder / study / "quantification.csv").open()))
            for folder in ("pred", "again")]
    assert [{**row, "lungs": ""} for row in rows[0]] == [{**row, "lungs": ""} for row in rows[1]]
    assert {row["lungs"] for row in rows[0]} == {"HU threshold"}  # as predict found them,
    lungs = tmp_path / "pred" / study / "lungs.nii.gz"  # and as quantify was given them
    assert {row["lungs"] for row in rows[1]} == {f"lung mask {lungs.resolve()}"}


def test_one_lung_prediction_is_quantified_again_as_it_is(tmp_path: Path) -> None:
    """predict found one lung: its lungs.nii.gz holds one label, kept as labelled (its record
    found that lung alone) rather than split into two halves like a 0/1 lung mask."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    chest_nifti(inputs / "chest.nii.gz")
    image = nib.load(str(inputs / "chest.nii.gz"))
    hu = image.get_fdata().astype(np.float32)
    hu[36:56, 10:40, 1:9] = 40.0  # no left lung
    nib.save(nib.Nifti1Image(hu, AFFINE), str(inputs / "chest.nii.gz"))
    predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / "pred")
    before = json.loads((tmp_path / "pred" / "chest" / "quantification.json").read_text())
    assert before["left_lung"]["lung_ml"] == 0.0 and before["right_lung"]["lung_ml"] > 0
    assert quantify_batch([tmp_path / "pred" / "chest"], tmp_path / "again").done == 1
    after = json.loads((tmp_path / "again" / "chest" / "quantification.json").read_text())
    for key in ("study", "right_lung", "left_lung"):
        assert after[key] == before[key], key


def test_reruns_compare_the_scan_by_content(chest, tmp_path: Path) -> None:
    """A scan touched is skipped; a scan replaced by other bytes with its old time kept (cp -p,
    rsync -a, tar) is refused, where comparing times alone kept the old results."""
    path, _ = chest
    out = tmp_path / "out"
    assert predict_batch(BandPredictor([(-400, -200)]), [path], out).done == 1
    record = out / "chest" / "quantification.json"
    assert json.loads(record.read_text())["inputs"]["sha256"]["image"]
    later = record.stat().st_mtime + 60
    os.utime(path, (later, later))
    assert predict_batch(BandPredictor([(-400, -200)]), [path], out).skipped == 1
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 10), dtype=np.float32), AFFINE), str(other))
    os.utime(other, (1e9, 1e9))  # edited long ago...
    shutil.copy2(other, path)  # ...and copied over the scan with its time
    with pytest.raises(CovsegError, match=r"out/chest was made with other settings or inputs "
                                          r"\(\S*chest\.nii\.gz changed since\)"):
        predict_batch(BandPredictor([(-400, -200)]), [path], out)


def test_a_study_copied_without_its_file_times_is_skipped(chest, tmp_path: Path) -> None:
    """The --out folder copied without file times (``cp -r`` without ``-p``, copyfile), and the
    scan copied back over itself so (restored from a backup), leave every study newer or older
    than its record by time: predict is costly (minutes a CT), so the rerun skips the study,
    its input told by content (hashing a 512x512x300 CT took 0.2-0.3 s here, reading it 3.5 s)."""
    path, _ = chest
    out, copy = tmp_path / "out", tmp_path / "copy"
    assert predict_batch(BandPredictor([(-400, -200)]), [path], out).done == 1
    shutil.copytree(out, copy, copy_function=shutil.copyfile)  # no times kept
    backup = tmp_path / "backup.nii.gz"
    shutil.copyfile(path, backup)
    os.utime(copy / "chest" / "quantification.json", (1e9, 1e9))  # older than its scan
    assert predict_batch(BandPredictor([(-400, -200)]), [path], copy).skipped == 1
    shutil.copyfile(backup, path)  # restored: newer than either record
    for folder in (out, copy):
        assert predict_batch(BandPredictor([(-400, -200)]), [path], folder).skipped == 1


def test_a_rerun_on_a_series_emptied_since_says_it_holds_no_ct(tmp_path: Path) -> None:
    """A DICOM series whose slices were deleted since it was predicted was hashed as nothing
    and said to have "changed since": it holds no CT now, and the rerun says so."""
    series = tmp_path / "series"
    files = synthetic_series(series, phantom())
    out = tmp_path / "out"
    assert predict_batch(BandPredictor([(-400, -200)]), [series], out).done == 1
    for file in files:
        file.unlink()
    with pytest.raises(CovsegError, match=r"out/series was made with other settings or inputs "
                                          r"\(\S*/series holds no CT\)"):
        predict_batch(BandPredictor([(-400, -200)]), [series], out)


def test_predicting_into_the_input_folder_can_be_run_again(tmp_path: Path) -> None:
    """The study folders it wrote beside the volumes are not taken for DICOM series next time."""
    chest_nifti(tmp_path / "alpha.nii.gz")
    chest_nifti(tmp_path / "beta.nii.gz")
    assert predict_batch(BandPredictor([(-400, -200)]), [tmp_path], tmp_path).done == 2
    again = predict_batch(BandPredictor([(-400, -200)]), [tmp_path], tmp_path)
    assert (again.done, again.skipped, again.failed) == (0, 2, 0)
    assert (tmp_path / "summary.png").is_file() and input_kind(tmp_path) == VOLUMES, \
        "its own summary.png does not make the folder look like 2D images"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "preview.png")
    with pytest.raises(CovsegError, match="holds both 2D images .preview.png.... and CT volumes"):
        input_kind(tmp_path)  # the volumes were skipped silently as a 2D batch


@pytest.mark.parametrize(("scan", "truth", "case"), [
    ("alpha", "alpha_mask", "alpha"),
    ("coronacases_org_001", "coronacases_001", "coronacases_001"),  # Zenodo, Kaggle's names
])
def test_volume_predictions_evaluated_in_3d_with_hd95_in_mm(tmp_path: Path, scan: str,
                                                            truth: str, case: str) -> None:
    """``covseg evaluate`` on predict's study folders against NIfTI truths named as the data
    sets name them."""
    inputs, truths = tmp_path / "in", tmp_path / "truth"
    inputs.mkdir()
    truths.mkdir()
    chest_nifti(inputs / f"{scan}.nii.gz")
    predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / "pred")
    predicted = nib.load(str(tmp_path / "pred" / scan / "infection.nii.gz"))
    shifted = np.roll(np.asarray(predicted.dataobj), 2, axis=0)  # 2 voxels of 0.75 mm along x
    nib.save(nib.Nifti1Image(shifted, predicted.affine), str(truths / f"{truth}.nii.gz"))
    result = evaluate_folders(tmp_path / "pred", truths, tmp_path / "eval.json")
    row = result["per_case"][0]
    assert result["cases"] == 1 and row["case_id"] == case
    assert result["hd95_unit"].startswith("mm")
    assert row["hd95"] == pytest.approx(1.5)
    assert row["dice"] == pytest.approx(2 * 72 / (108 + 108))  # 4 of 6 x-rows overlap: 72 voxels


def test_cli_registration_and_volume_predict(chest, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path, counts = chest
    parser = build_parser()
    args = parser.parse_args(["predict", str(path), "--model", "unused", "--batch-size", "4",
                              "--out", str(tmp_path / "pred"), "--tta",
                              "--lung-margin-mm", "2", "--hu", "yes", "--shard", "0/1"])
    assert (args.batch_size, args.tta, args.hu, args.shard) == (4, True, "yes", (0, 1))
    assert cli_volumes.run_volume_predict(args, BandPredictor([(-400, -200)]), [path]) == 0
    stored = json.loads((tmp_path / "pred" / "chest" / "quantification.json").read_text())
    assert stored["inputs"]["lung_margin_mm"] == 2.0
    mask = tmp_path / "pred" / "chest" / "infection.nii.gz"
    args = parser.parse_args(["quantify", str(mask), "--image", str(path), "--out",
                              str(tmp_path / "q"), "--html"])
    assert args.handler(args) == 0
    quantified = json.loads((tmp_path / "q" / "chest" / "quantification.json").read_text())
    assert quantified["study"]["lesion_ml"] == pytest.approx(counts["ggo"] * VOXEL_ML)
    assert quantified["inputs"]["lung_source"] == "mask"
    assert (tmp_path / "q" / "chest" / "report.html").is_file()
    args = parser.parse_args(["data", "fetch", "mosmed", "--to", str(tmp_path / "mm")])
    with pytest.raises(CovsegError, match="mosmed.ai"):
        args.handler(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "x", "--model", "m", "--out", "x", "--shard", "2/2"])
    assert f"chest: lesion 0.24 mL, 1.12 % of the lungs involved, CT-1; results in " \
        f"{tmp_path / 'pred' / 'chest'}\n" in capsys.readouterr().out


def test_segment_in_memory_gives_the_masks_predict_writes(chest, tiny_run: Path,
                                                          tmp_path: Path) -> None:
    """``covseg.segment`` on a nibabel image, a SimpleITK image, a numpy volume with its spacing
    and a 2D slice gives what ``covseg predict`` writes for the same data."""
    import covseg

    path, _ = chest
    predictor = covseg.load_predictor(tiny_run, threshold=0.05)  # low: the tiny model is unsure
    predict_study(predictor, path, tmp_path / "study")
    written = np.asarray(nib.load(str(tmp_path / "study" / "infection.nii.gz")).dataobj)
    from_nibabel = covseg.segment(predictor, nib.load(str(path)))
    assert from_nibabel.dtype == np.uint8 and from_nibabel.any()
    np.testing.assert_array_equal(from_nibabel, written)
    image = sitk.ReadImage(str(path))
    from_itk = covseg.segment(predictor, image)
    np.testing.assert_array_equal(from_itk, written.transpose(2, 1, 0))
    array = sitk.GetArrayFromImage(image)
    from_array = covseg.segment(predictor, array, spacing=image.GetSpacing()[::-1])
    np.testing.assert_array_equal(from_array, from_itk)
    kept = covseg.segment(predictor, array, spacing=(4.0, 0.75, 0.75), keep_outside_lungs=True)
    assert kept.sum() > from_array.sum() and (kept >= from_array).all()

    plane = (normalize_intensity(array[4], "hu") * 255).astype(np.uint8)
    Image.fromarray(plane).save(tmp_path / "slice.png")
    [png] = covseg.predict(tiny_run, [tmp_path / "slice.png"], tmp_path / "png", threshold=0.05)
    with Image.open(png) as mask:
        np.testing.assert_array_equal(covseg.segment(predictor, plane) * 255, np.asarray(mask))
    for bad, message in ((array, "needs spacing"), (array[None], "cannot segment"),
                         ("chest.nii.gz", "cannot segment")):
        with pytest.raises(CovsegError, match=message):
            covseg.segment(predictor, bad)
    with pytest.raises(CovsegError, match="spacing must be"):
        covseg.segment(predictor, array, spacing=(4.0, 0.0, 0.75))

    loaded = nib.load(str(path))  # built in memory, with a trailing axis: the same labels
    built = nib.Nifti1Image(np.asarray(loaded.dataobj)[..., None], loaded.affine)
    np.testing.assert_array_equal(covseg.segment(predictor, built), written[..., None])
    for bad, message in ((plane > 0, "a slice of type bool"), (plane[:0], "an empty slice"),
                         (np.full((8, 8), np.nan), "NaN or infinite")):
        with pytest.raises(CovsegError, match=message):
            covseg.segment(predictor, bad)
    with pytest.raises(CovsegError, match="unknown hu value 'maybe'"):
        covseg.segment(predictor, plane, hu="maybe")
    sagittal = nib.Nifti1Image(np.asarray(loaded.dataobj).transpose(2, 1, 0).copy(),
                               loaded.affine[:, [2, 1, 0, 3]])
    np.testing.assert_array_equal(covseg.segment(predictor, sagittal), written.transpose(2, 1, 0))


def stored_as(image: nib.Nifti1Image, axes: str) -> nib.Nifti1Image:
    """The same scan stored with other voxel axes (permuted and mirrored, no resampling)."""
    return image.as_reoriented(nib.orientations.ornt_transform(
        nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(tuple(axes))))


def on_grid_of(path: Path, reference: Path) -> np.ndarray:
    """The voxels of a NIfTI file rearranged onto another file's storage of the same grid."""
    image = nib.load(str(path))
    return np.asarray(stored_as(image, "".join(nib.aff2axcodes(nib.load(str(reference)).affine)))
                      .dataobj)


@pytest.mark.parametrize("axes", ["SPL", "LSA", "PRI", "RAS", "LPI"],
                         ids=["sagittal", "coronal", "rotated", "mirrored", "head-first"])
def test_one_scan_stored_any_way_gives_the_same_results(chest, axes: str, tmp_path: Path) -> None:
    """Stored sagittally, coronally or mirrored, a scan is read in one orientation (cut along a
    sagittal file's third axis it gave an empty lung and a wrong CT category without a word), so
    its masks and numbers are the axial file's; the masks come back on the file's own axes."""
    path, counts = chest
    stored = tmp_path / "stored.nii.gz"
    nib.save(stored_as(nib.load(str(path)), axes), str(stored))
    volume = read_volume(stored)
    np.testing.assert_array_equal(volume.array, read_volume(path).array)
    np.testing.assert_allclose(volume.affine, AFFINE)
    assert volume.file_axes == axes
    predictor = BandPredictor([(-400, -200)])
    axial = predict_study(predictor, path, tmp_path / "axial", probabilities=True)
    turned = predict_study(predictor, stored, tmp_path / "turned", probabilities=True)
    for key in ("study", "right_lung", "left_lung"):
        assert turned[key] == axial[key]
    assert turned["study"]["lesion_ml"] == pytest.approx(counts["ggo"] * VOXEL_ML)
    assert turned["inputs"]["shape_zyx"] == list(nib.load(str(stored)).shape[::-1])
    for name in ("infection.nii.gz", "lungs.nii.gz", "probabilities.nii.gz"):
        written = tmp_path / "turned" / name
        np.testing.assert_allclose(nib.load(str(written)).affine, nib.load(str(stored)).affine)
        assert nib.load(str(written)).header.get_zooms() == nib.load(str(stored)).header.get_zooms()
        np.testing.assert_array_equal(on_grid_of(written, path),
                                      np.asarray(nib.load(str(tmp_path / "axial" / name)).dataobj))
    # the mask of one storage quantified with the lungs and CT of another
    again = quantify_study(tmp_path / "axial" / "infection.nii.gz", tmp_path / "q",
                           lungs=tmp_path / "turned" / "lungs.nii.gz", image=stored)
    assert again["study"] == axial["study"]
    classes = BandPredictor([(-400, -200), (-200, -100)])  # 4D (x, y, z, class) probabilities
    predict_study(classes, path, tmp_path / "axial4d", probabilities=True)
    predict_study(classes, stored, tmp_path / "turned4d", probabilities=True)
    np.testing.assert_array_equal(
        on_grid_of(tmp_path / "turned4d" / "probabilities.nii.gz", path),
        np.asarray(nib.load(str(tmp_path / "axial4d" / "probabilities.nii.gz")).dataobj))


def test_unorientable_volumes_are_refused(chest, tmp_path: Path) -> None:
    """A single sagittal plane became a stack of 1-pixel "axial" slices, and a zero affine was
    read as axial; both are refused. Slices are named as the file numbers them."""
    path, _ = chest
    image = nib.load(str(path))
    plane = tmp_path / "plane.nii.gz"
    nib.save(stored_as(image.slicer[30:31], "PSL"), str(plane))
    with pytest.raises(CovsegError, match="a single sagittal plane"):
        read_volume(plane)
    zero = tmp_path / "zero.nii.gz"
    header = image.header.copy()
    header.set_sform(np.diag([0.0, 0.0, 0.0, 1.0]), code=2)  # nibabel reads this sform as is
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), None, header), str(zero))
    with pytest.raises(CovsegError, match="zero, singular or not finite"):
        read_volume(zero)
    head_first = tmp_path / "head_first.nii.gz"
    nib.save(stored_as(image, "LPI"), str(head_first))
    volume = read_volume(head_first)
    assert volume.slice_name(0) == f"slice {volume.array.shape[0] - 1}"
    assert read_volume(path).slice_name(0) == "slice 0"
    sagittal = tmp_path / "sagittal.nii.gz"
    nib.save(stored_as(image, "SPL"), str(sagittal))
    assert read_volume(sagittal).slice_name(3) == "axial slice i=3"  # the file's i: S, foot up


@pytest.mark.parametrize("axes", ["LPI", "PIL", "SRA", "RIA"])
def test_a_slice_is_named_by_its_files_own_index_head_to_foot(tmp_path: Path, axes: str) -> None:
    """A sagittal or coronal file's slices were named "axial slice N (cut across the file's)",
    N in covseg's own order, which no viewer shows: the lesion's slice, the file's index 20
    along its head-to-foot axis, was "axial slice 3". It is now named by that axis and index."""
    lesion = np.zeros((96, 80, 24), dtype=np.uint8)  # RAS (x, y, z)
    lesion[10:25, 15:40, 3] = 1
    image = nib.Nifti1Image(lesion, np.diag([0.7, 0.7, 5.0, 1.0]))
    path = tmp_path / f"m_{axes}.nii.gz"
    nib.save(image.as_reoriented(nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(tuple("RAS")), nib.orientations.axcodes2ornt(tuple(axes)))),
        str(path))
    axis = next(n for n, code in enumerate(axes) if code in "SI")
    index = int(np.argwhere(np.asarray(nib.load(str(path)).dataobj))[0][axis])
    volume = read_volume(path)
    k = int(np.flatnonzero(volume.array.any(axis=(1, 2)))[0])
    assert volume.slice_name(k) == (f"slice {index}" if axis == 2
                                    else f"axial slice {'ijk'[axis]}={index}")


@pytest.mark.parametrize("shape", [(64, 1, 1), (1, 64, 1), (64, 1, 30)])
def test_predict_refuses_a_nifti_whose_slices_are_under_2_pixels_a_side(
        tmp_path: Path, tiny_run: Path, shape: tuple[int, int, int]) -> None:
    """One axial slice one pixel high or wide, saved as NIfTI, was segmented and its masks
    written, where the same pixels as a PNG are refused; it fails as that slice does, in the
    same words, and a single plane of 30 slices as before, naming its slices. No study folder
    is left."""
    from covseg.cli import main
    from tests.test_api import thin_slices_refusal

    path = tmp_path / "thin.nii.gz"
    x, y, z = shape
    voxels = np.random.default_rng(0).integers(-1000, 400, size=shape).astype(np.int16)
    nib.save(nib.Nifti1Image(voxels, np.diag([-0.7, -0.7, 2.5, 1.0])), str(path))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_run), str(path), "--out", str(out)]) == 1
    with (out / "summary.csv").open(newline="") as summary:
        [row] = list(csv.DictReader(summary))
    assert row["status"] == "failed"
    assert re.fullmatch(re.escape(str(path)) + thin_slices_refusal(z, y, x), row["error"])
    assert not (out / "thin").exists()


def test_reruns_compare_the_model_by_content(chest, tiny_run: Path, tmp_path: Path) -> None:
    """A model retrained into the same run folder and copied in with its old time kept is
    refused on a rerun; touching it alone is not (times are not compared)."""
    path, _ = chest
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "out"
    assert predict_batch(Predictor.load(run), [path], out).done == 1
    settings = json.loads((out / "chest" / "quantification.json").read_text())["settings"]
    assert len(settings["model_sha256"]) == 64 and settings["lung_model_sha256"] is None
    checkpoint = run / "best.pt"
    later = checkpoint.stat().st_mtime + 3600
    os.utime(checkpoint, (later, later))
    assert predict_batch(Predictor.load(run), [path], out).skipped == 1
    payload = torch.load(checkpoint, weights_only=True)
    payload["state_dict"] = {k: v + 1 if v.is_floating_point() else v
                             for k, v in payload["state_dict"].items()}
    torch.save(payload, tmp_path / "retrained.pt")
    os.utime(tmp_path / "retrained.pt", (1e9, 1e9))  # trained elsewhere long ago...
    shutil.copy2(tmp_path / "retrained.pt", checkpoint)  # ...and copied in with its time
    with pytest.raises(CovsegError, match=r"out/chest was made with other settings or inputs "
                                          r"\(model_sha256: \w{64} -> \w{64}\)"):
        predict_batch(Predictor.load(run), [path], out)


def test_records_without_model_hashes_compare_the_model_by_time(chest, tiny_run: Path,
                                                                tmp_path: Path) -> None:
    """Studies predicted before model hashes were recorded are skipped as before, unless the
    model was modified after them."""
    path, _ = chest
    out = tmp_path / "out"
    assert predict_batch(Predictor.load(tiny_run), [path], out).done == 1
    record = out / "chest" / "quantification.json"
    result = json.loads(record.read_text())
    for key in ("model_sha256", "lung_model_sha256"):
        del result["settings"][key]
    record.write_text(json.dumps(result))
    assert predict_batch(Predictor.load(tiny_run), [path], out).skipped == 1
    earlier = (tiny_run / "best.pt").stat().st_mtime - 3600
    os.utime(record, (earlier, earlier))  # written before the model's last change
    with pytest.raises(CovsegError, match=re.escape(f"({tiny_run.resolve()} changed since)")):
        predict_batch(Predictor.load(tiny_run), [path], out)


def test_reruns_compare_a_cascades_lung_guide_by_content(chest, tiny_run: Path,
                                                        tmp_path: Path) -> None:
    """A cascade loads its lung guide's run at prediction time: that run retrained in place
    changed the masks, yet a rerun skipped the studies as done. Its path and SHA-256 are
    recorded and compared; a record from before them compares the guide's file time."""
    path, _ = chest
    guide_run = tmp_path / "lungrun"
    shutil.copytree(tiny_run, guide_run)
    cascade = BandPredictor([(-400, -200)])
    cascade.guide = LungGuide(str(guide_run.resolve()), crop=True)  # type: ignore[attr-defined]
    out = tmp_path / "out"
    assert predict_batch(cascade, [path], out).done == 1
    record = out / "chest" / "quantification.json"
    settings = json.loads(record.read_text())["settings"]
    checkpoint = guide_run / "best.pt"
    assert settings["lung_guide"] == str(guide_run.resolve())
    assert settings["lung_guide_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert predict_batch(cascade, [path], out).skipped == 1
    retrained = checkpoint.read_bytes() + b"retrained"
    checkpoint.write_bytes(retrained)
    os.utime(checkpoint, (1e9, 1e9))  # copied in with an old time kept
    with pytest.raises(CovsegError, match=r"out/chest was made with other settings or inputs "
                                          r"\(lung_guide_sha256: \w{64} -> \w{64}\)"):
        predict_batch(cascade, [path], out)
    result = json.loads(record.read_text())
    for key in ("lung_guide", "lung_guide_sha256"):  # as covseg recorded it until 4 Dec
        del result["settings"][key]
    record.write_text(json.dumps(result))
    assert predict_batch(cascade, [path], out).skipped == 1
    later = record.stat().st_mtime + 60
    os.utime(checkpoint, (later, later))
    with pytest.raises(CovsegError, match=re.escape(f"({guide_run.resolve()} changed since)")):
        predict_batch(cascade, [path], out)


def test_a_batch_hashes_a_cascades_lung_guide_once(chest, tiny_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every study of a batch hashed the lung run again, twice (to find it, then to record it),
    and the batch's own check and record twice more: 0.4 s a study for a 100 MB lung ensemble.
    A file is hashed again only once it changed."""
    path, _ = chest
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(path, tmp_path / "in" / f"{name}.nii.gz")
    guide_run = tmp_path / "lungrun"
    shutil.copytree(tiny_run, guide_run)
    checkpoint = guide_run / "best.pt"
    cascade = BandPredictor([(-400, -200)])
    guide = LungGuide(str(guide_run), sha256=content_hash(checkpoint))
    cascade.guide = guide  # type: ignore[attr-defined]
    hashed: list[Path] = []

    def counted(file: Path) -> str | None:
        hashed.append(file)
        return content_hash(file)

    monkeypatch.setattr(volumes_module, "content_hash", counted)
    time.sleep(0.2)  # older than RECENT_NS: its file times tell a rewrite
    assert predict_batch(cascade, [tmp_path / "in"], tmp_path / "out").done == 3
    assert hashed.count(checkpoint) == 1
    checkpoint.write_bytes(checkpoint.read_bytes())  # rewritten, the same bytes: hashed again
    time.sleep(0.2)
    assert predict_batch(cascade, [tmp_path / "in"], tmp_path / "out").skipped == 3
    assert hashed.count(checkpoint) == 2


def test_a_batch_computes_its_settings_once(chest, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each study of a batch computed the batch's settings again (the model's, lung model's and
    lung guide's hashes looked up anew): 4 times for 3 studies, now once, each study recording
    them; they are no option a batch takes."""
    path, _ = chest
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(path, tmp_path / "in" / f"{name}.nii.gz")
    calls: list[dict[str, object]] = []
    computed = volumes_module.predict_settings

    def counted(*args: object, **kwargs: object) -> dict[str, object]:
        calls.append(computed(*args, **kwargs))  # type: ignore[arg-type]
        return calls[-1]

    monkeypatch.setattr(volumes_module, "predict_settings", counted)
    assert predict_batch(BandPredictor([(-400, -200)]), [tmp_path / "in"],
                         tmp_path / "out").done == 3
    assert len(calls) == 1
    for name in ("a", "b", "c"):
        record = json.loads((tmp_path / "out" / name / "quantification.json").read_text())
        assert record["settings"] == calls[0]
    with pytest.raises(CovsegError, match="unknown option"):
        predict_batch(BandPredictor([(-400, -200)]), [tmp_path / "in"], tmp_path / "out",
                      settings=calls[0])


def test_multiclass_prediction_with_one_class_is_quantified_again_as_multiclass(
        tmp_path: Path) -> None:
    """A 3-class model's study that holds ground-glass alone kept its per-class volumes only in
    predict's record: quantify read its 0/1 mask as binary, and drew it on black."""
    (tmp_path / "in").mkdir()
    chest_nifti(tmp_path / "in" / "alpha.nii.gz")
    three_classes = BandPredictor([(-400, -200), (5000, 6000)])  # the second band never occurs
    predict_batch(three_classes, [tmp_path / "in"], tmp_path / "pred")
    before = json.loads((tmp_path / "pred" / "alpha" / "quantification.json").read_text())
    assert before["multiclass"] and before["study"]["consolidation_ml"] == 0.0
    assert quantify_batch([tmp_path / "pred"], tmp_path / "again").done == 1
    after = json.loads((tmp_path / "again" / "alpha" / "quantification.json").read_text())
    assert after["multiclass"] and after["study"] == before["study"]
    assert after["inputs"]["image"] == str((tmp_path / "in" / "alpha.nii.gz").resolve())
    again = quantify_batch([tmp_path / "pred"], tmp_path / "again", html_report=True)
    assert again.skipped == 1 and (tmp_path / "again" / "alpha" / "report.html").is_file()
    record = tmp_path / "pred" / "alpha" / "quantification.json"
    assert before["settings"]["threshold"] is None
    before["settings"]["threshold"] = 0.4  # recorded, never applied, until 3 Dec
    record.write_text(json.dumps(before))
    assert predict_batch(three_classes, [tmp_path / "in"], tmp_path / "pred").skipped == 1


def test_a_study_redone_loses_the_outputs_of_its_earlier_attempt(chest, tmp_path: Path) -> None:
    """A study stopped after its probability map and report (or whose record is unreadable) is
    redone with other settings: the old map stayed beside masks it no longer matched, listed in
    no record. Files that are not covseg's stay."""
    path, _ = chest
    out = tmp_path / "out"
    predict_batch(BandPredictor([(-400, -200)]), [path], out, probabilities=True, html=True)
    study = out / "chest"
    (study / "quantification.json").unlink()  # as if stopped before its record
    (study / "notes.txt").write_text("mine")
    redone = predict_batch(BandPredictor([(-400, -200)]), [path], out)
    assert redone.done == 1
    assert not (study / "probabilities.nii.gz").exists() and not (study / "report.html").exists()
    assert (study / "notes.txt").read_text() == "mine"
    predict_batch(BandPredictor([(-400, -200)]), [path], tmp_path / "again", probabilities=True)
    (tmp_path / "again" / "chest" / "quantification.json").write_text("{")  # unreadable
    assert predict_batch(BandPredictor([(-400, -200)]), [path], tmp_path / "again").done == 1
    assert not (tmp_path / "again" / "chest" / "probabilities.nii.gz").exists()


def test_ground_truth_in_a_study_folder_is_not_overwritten(chest, tmp_path: Path) -> None:
    """The user's ``OUT/chest/infection.nii.gz`` (ground truth) was replaced by the prediction
    without a word: predict refuses the folder, which no record of covseg's knows, before any
    study, and keeps the file."""
    path, _ = chest
    truth = tmp_path / "out" / "chest" / "infection.nii.gz"
    truth.parent.mkdir(parents=True)
    shutil.copy(path, truth)
    with pytest.raises(CovsegError, match=r"chest holds 1 file\(s\) \(infection.nii.gz\), "
                                          "which covseg would overwrite"):
        predict_batch(BandPredictor([(-400, -200)]), [path], tmp_path / "out")
    assert truth.read_bytes() == path.read_bytes()


def test_an_output_folder_inside_the_inputs_is_no_study(tmp_path: Path) -> None:
    """predict IN --out IN/results, then IN --out OTHER: results/ failed as a study with no
    DICOM series; quantify's own --out inside its inputs likewise."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    chest_nifti(inputs / "chest.nii.gz")
    predictor = BandPredictor([(-400, -200)])
    assert predict_batch(predictor, [inputs], inputs / "results").done == 1
    other = predict_batch(predictor, [inputs], tmp_path / "other")
    assert (other.done, other.failed) == (1, 0)
    assert quantify_batch([tmp_path / "other"], tmp_path / "other" / "requant").done == 1
    again = quantify_batch([tmp_path / "other"], tmp_path / "quantified")
    assert (again.done, again.failed) == (1, 0)
    # a folder that holds nothing but covseg's output: said so, not "masks must be NIfTI"
    parent = tmp_path / "parent"
    parent.mkdir()
    (tmp_path / "other").rename(parent / "pv")
    with pytest.raises(CovsegError, match=r"parent: holds no study, only covseg's output \(pv\); "
                                          r"give .*pv itself"):
        quantify_batch([parent], tmp_path / "q2")
    assert quantify_batch([parent / "pv"], tmp_path / "q3").done == 1


def test_a_done_study_whose_ct_moved_is_skipped(chest, tmp_path: Path, caplog) -> None:
    """quantify on a predict folder, the CT moved, the same quantify again: refused as
    "CT changed since" though the masks it quantifies are unchanged. A lung mask gone changes
    the lungs: refused, saying it is gone."""
    path, _ = chest
    predict_batch(BandPredictor([(-400, -200)]), [path], tmp_path / "pred")
    assert quantify_batch([tmp_path / "pred"], tmp_path / "q").done == 1
    path.rename(tmp_path / "moved.nii.gz")
    with caplog.at_level("WARNING"):
        assert quantify_batch([tmp_path / "pred"], tmp_path / "q").skipped == 1
    assert f"{path}: the CT is gone" in caplog.text
    (tmp_path / "pred" / "chest" / "lungs.nii.gz").unlink()
    with pytest.raises(CovsegError, match=r"q/chest was made with other settings or inputs "
                                          r"\(\S*pred/chest/lungs\.nii\.gz is gone\)"):
        quantify_batch([tmp_path / "pred"], tmp_path / "q")


def test_a_run_and_its_checkpoint_are_one_model(chest, tiny_run: Path, tmp_path: Path) -> None:
    """--model RUN and --model RUN/best.pt (the same file) counted as other settings."""
    path, _ = chest
    out = tmp_path / "out"
    assert predict_batch(Predictor.load(tiny_run), [path], out).done == 1
    assert predict_batch(Predictor.load(tiny_run / "best.pt"), [path], out).skipped == 1


def test_quantify_into_the_prediction_folder_itself_is_refused(tmp_path: Path) -> None:
    """quantify PRED --out PRED listed every setting as changed; the output is the input."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    chest_nifti(inputs / "chest.nii.gz")
    pred = tmp_path / "pred"
    predict_batch(BandPredictor([(-400, -200)]), [inputs], pred)
    for given in (pred, pred / "chest"):
        with pytest.raises(CovsegError, match=r"^--out \S*pred is the input folder: \S*chest "
                                              r"holds the mask infection\.nii\.gz to quantify; "
                                              r"pick another --out$"):
            quantify_batch([given], pred)


def test_dicom_without_preamble_or_suffix_is_a_volume_input(tmp_path: Path) -> None:
    """Suffix-less DICOM files without the 128-byte preamble were routed to the 2D reader:
    "no images (png, jpg, tif, npy) in this folder"."""
    files = synthetic_series(tmp_path / "bare", phantom(), preamble=False, suffix="")
    assert input_kind(tmp_path / "bare") == VOLUMES and input_kind(files[0]) == VOLUMES
    assert read_volume(tmp_path / "bare").array.shape == (6, 24, 32)


def test_study_folders_holding_one_nifti_file_are_predicted_as_it(tmp_path: Path) -> None:
    """STUDIES/p1/ct.nii.gz, STUDIES/p2/ct.nii.gz: each study failed "no DICOM series found"
    (read as a DICOM folder). Each is now its folder's study, recorded (and hashed) as the
    file; once a folder holds several NIfTI files (a follow-up scan) each file is a study named
    after it, so two ``ct`` studies are refused before any study, naming both files."""
    studies = tmp_path / "studies"
    for name in ("p1", "p2"):
        (studies / name).mkdir(parents=True)
        chest_nifti(studies / name / "ct.nii.gz")
    predictor = BandPredictor([(-400, -200)])
    first = predict_batch(predictor, [studies], tmp_path / "out")
    assert (first.done, first.failed) == (2, 0)
    record = json.loads((tmp_path / "out" / "p1" / "quantification.json").read_text())
    assert record["study_name"] == "p1"
    assert record["inputs"]["image"] == str((studies / "p1" / "ct.nii.gz").resolve())
    assert predict_batch(predictor, [studies], tmp_path / "out").skipped == 2
    chest_nifti(studies / "p2" / "followup.nii.gz")
    with pytest.raises(CovsegError, match=r"several studies are named ct \(\S*p1/ct\.nii\.gz, "
                                          r"\S*p2/ct\.nii\.gz\) \(sub-folders holding several "
                                          r"NIfTI files make each file a study"):
        predict_batch(predictor, [studies], tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_sub_folders_of_several_nifti_files_predict_each_file(tmp_path: Path) -> None:
    """MosMed's studies/CT-0..CT-4/*.nii.gz as it ships: each CT-x folder was read as one DICOM
    series and failed "no DICOM series found". Each file is now a study named after it, also in
    a sub-folder that holds one (CT-4), and a name in two sub-folders is refused, naming both."""
    studies = tmp_path / "studies"
    for name in ("CT-0/study_0001", "CT-0/study_0002", "CT-4/study_1110"):
        (studies / name).parent.mkdir(parents=True, exist_ok=True)
        chest_nifti(studies / f"{name}.nii.gz")
    result = predict_batch(BandPredictor([(-400, -200)]), [studies], tmp_path / "out")
    assert (result.done, result.failed) == (3, 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == [
        "study_0001", "study_0002", "study_1110"]
    record = json.loads((tmp_path / "out" / "study_1110" / "quantification.json").read_text())
    assert record["inputs"]["image"] == str((studies / "CT-4" / "study_1110.nii.gz").resolve())
    (studies / "CT-1").mkdir()
    shutil.copy(studies / "CT-0" / "study_0002.nii.gz", studies / "CT-1")
    with pytest.raises(CovsegError, match=r"^several studies are named study_0002 \(\S*CT-0/"
                                          r"study_0002\.nii\.gz, \S*CT-1/study_0002\.nii\.gz\)"):
        predict_batch(BandPredictor([(-400, -200)]), [studies], tmp_path / "again")


def test_a_category_folder_predicted_into_itself_keeps_its_studies(tmp_path: Path,
                                                                 caplog) -> None:
    """``predict studies/CT-1 --out studies/CT-1``, then ``predict studies``: CT-1 was taken for
    covseg's output (its summary.csv) and its studies dropped without a word. They are now
    predicted, and folders covseg wrote (a 2D predict's, a quantify report) are named in a
    warning."""
    studies = tmp_path / "studies"
    for name in ("CT-0/a", "CT-0/b", "CT-1/c", "CT-1/d"):
        (studies / name).parent.mkdir(parents=True, exist_ok=True)
        chest_nifti(studies / f"{name}.nii.gz")
    predictor = BandPredictor([(-400, -200)])
    assert predict_batch(predictor, [studies / "CT-1"], studies / "CT-1").done == 2
    (studies / "masks2d").mkdir()
    (studies / "masks2d" / "predict.json").write_text(json.dumps({"inputs": []}))
    with caplog.at_level("WARNING"):
        result = predict_batch(predictor, [studies], tmp_path / "out")
    assert (result.done, result.failed) == (4, 0)
    assert "studies: 1 folder(s) (masks2d) written by covseg, not read as studies" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert predict_batch(predictor, [studies / "CT-1"], tmp_path / "out").skipped == 2
    assert "CT-1: 2 folder(s) (c, d) written by covseg, not read as studies" in caplog.text


@pytest.mark.parametrize("kind", ["dicom", "nifti", "category"])
def test_an_out_inside_a_study_folder_is_refused(tmp_path: Path, kind: str) -> None:
    """``predict STUDIES --out STUDIES/p1`` dropped study p1 without a word (the --out is no
    study) and wrote the others' masks into its folder; an --out in any folder holding studies
    is now refused before anything is written, while an empty folder made for it is fine."""
    studies = tmp_path / "studies"
    for name in ("p1", "p2"):
        if kind == "dicom":
            synthetic_series(studies / name, phantom())
        else:
            (studies / name).mkdir(parents=True)
            for scan in ("ct", "followup")[:1 + (kind == "category")]:
                chest_nifti(studies / name / f"{name}_{scan}.nii.gz")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out in (studies / "p1", studies / "p1" / "out"):
        with pytest.raises(CovsegError, match=rf"^--out {re.escape(str(out))} lies in the input "
                                              rf"folder \S*studies/p1, which holds studies; pick "
                                              r"an --out outside it$"):
            predict_batch(BandPredictor([(-400, -200)]), [studies], out)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    (studies / "results").mkdir()
    result = predict_batch(BandPredictor([(-400, -200)]), [studies], studies / "results")
    assert (result.done, result.failed) == (2 + 2 * (kind == "category"), 0)


@pytest.mark.parametrize("kind", ["dicom", "nifti"])
def test_study_folders_predicted_into_their_parent_are_refused(tmp_path: Path, kind: str) -> None:
    """``predict DIR --out DIR`` with study sub-folders wrote each study's masks among its
    slices (DIR/s1 is both), and the rerun refused DIR as holding only covseg's output; a
    series folder predicted into itself, whose study folder lies inside it, still works."""
    for name in ("s1", "s2"):
        if kind == "dicom":
            synthetic_series(tmp_path / "dir" / name, phantom())
        else:
            (tmp_path / "dir" / name).mkdir(parents=True)
            chest_nifti(tmp_path / "dir" / name / "ct.nii.gz")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(CovsegError, match=r"^--out \S*dir would write study s1's masks into its "
                                          r"input folder \S*dir/s1; pick another --out$"):
        predict_batch(BandPredictor([(-400, -200)]), [tmp_path / "dir"], tmp_path / "dir")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    series = tmp_path / "dir" / "s1"
    for _ in range(2):
        assert predict_batch(BandPredictor([(-400, -200)]), [series], series).failed == 0
    assert (series / ("s1" if kind == "dicom" else "ct") / "quantification.json").is_file()


def test_a_cascade_whose_lung_run_is_gone_is_refused_once_before_any_study(
        chest, tmp_path: Path) -> None:
    """With the cascade's lung run deleted, a rerun said the study was "made with other
    settings (lung_guide_sha256: ... -> null)" and a fresh run failed every study on it."""
    path, _ = chest
    guide_run = tmp_path / "lungrun"
    guide_run.mkdir()
    (guide_run / "best.pt").write_bytes(b"a lung run")
    cascade = BandPredictor([(-400, -200)])
    cascade.guide = LungGuide(str(guide_run.resolve()), crop=True)  # type: ignore[attr-defined]
    assert predict_batch(cascade, [path], tmp_path / "out").done == 1
    shutil.rmtree(guide_run)
    gone = re.escape(f"this cascade model takes its lung channel from the lung run "
                     f"{guide_run.resolve()}, which is not there (moved or deleted?)")
    for out in (tmp_path / "out", tmp_path / "fresh"):
        with pytest.raises(CovsegError, match=rf"^{gone}"):
            predict_batch(cascade, [path], out)
    assert not (tmp_path / "fresh").exists()


def test_a_lung_models_threshold_and_mirrors_are_recorded_and_compared(
        chest, tmp_path: Path) -> None:
    """A lung model loaded with another threshold (covseg.load_predictor(RUN, threshold=0.1))
    made 3.3 times the lungs, yet a rerun into the same out skipped the study as done: only the
    lung model's path and SHA-256 were recorded."""
    path, _ = chest
    out = tmp_path / "out"
    lungs = BandPredictor([(-900, -800)])
    assert predict_batch(BandPredictor([(-400, -200)]), [path], out, lung_predictor=lungs).done
    record = out / "chest" / "quantification.json"
    settings = json.loads(record.read_text())["settings"]
    assert {key: settings[key] for key in ("lung_threshold", "lung_tta", "lung_test_flips")} == {
        "lung_threshold": 0.5, "lung_tta": False, "lung_test_flips": []}
    assert predict_batch(BandPredictor([(-400, -200)]), [path], out,
                         lung_predictor=lungs).skipped == 1
    lungs.threshold = 0.9
    with pytest.raises(CovsegError, match=r"out/chest was made with other settings or inputs "
                                          r"\(lung_threshold: 0.5 -> 0.9\)"):
        predict_batch(BandPredictor([(-400, -200)]), [path], out, lung_predictor=lungs)
    without = json.loads(record.read_text())
    for key in ("lung_threshold", "lung_tta", "lung_test_flips"):  # as recorded until 5 Dec
        del without["settings"][key]
    record.write_text(json.dumps(without))
    assert predict_batch(BandPredictor([(-400, -200)]), [path], out,
                         lung_predictor=lungs).skipped == 1
    fresh = predict_batch(BandPredictor([(-400, -200)]), [path], tmp_path / "none").done
    none = json.loads((tmp_path / "none" / "chest" / "quantification.json").read_text())
    assert fresh == 1 and none["settings"]["lung_threshold"] is None


def test_the_reports_name_the_lung_model_that_made_the_lungs(
        chest, tmp_path: Path, saved_figures: list) -> None:
    """report.html, the CSVs and the montage said only "lung_source": "model": which model (its
    path, its SHA-256) was in quantification.json's settings alone."""
    path, _ = chest
    lung_run = tmp_path / "lungrun"
    lung_run.mkdir()
    (lung_run / "best.pt").write_bytes(b"a lung model")
    digest = hashlib.sha256(b"a lung model").hexdigest()
    lungs = BandPredictor([(-900, -800)])
    lungs.source = str(lung_run)  # type: ignore[misc]
    out = tmp_path / "out"
    assert predict_batch(BandPredictor([(-400, -200)]), [path], out, lung_predictor=lungs,
                         html=True).done == 1
    named = f"lung model {lung_run} (SHA-256 {digest})"
    record = json.loads((out / "chest" / "quantification.json").read_text())
    assert record["inputs"]["lung_model"] == {"source": str(lung_run), "sha256": digest,
                                              "threshold": 0.5, "tta": False, "test_flips": []}
    page = html.unescape((out / "chest" / "report.html").read_text())
    assert f"<p>Lungs: {named}</p>" in page and f'"sha256": "{digest}"' in page
    rows = list(csv.DictReader((out / "chest" / "quantification.csv").open()))
    assert {row["lungs"] for row in rows} == {named} and len(rows) == 3
    assert next(csv.DictReader((out / "summary.csv").open()))["lungs"] == named
    title = saved_figures[-1].get_suptitle()
    assert title.splitlines()[-1] == f"lungs: lung model lungrun (SHA-256 {digest[:12]})"
    assert predict_batch(BandPredictor([(-400, -200)]), [path], tmp_path / "th").done == 1
    assert next(csv.DictReader((tmp_path / "th" / "summary.csv").open()))["lungs"] == (
        "HU threshold")
    assert saved_figures[-1].get_suptitle().endswith("\nlungs: HU threshold")


class _Terminal(io.StringIO):
    """stderr as a terminal is (``isatty``), its output kept."""

    def isatty(self) -> bool:
        return True


def test_a_study_draws_its_slice_bar_in_a_terminal_and_a_log_not_a_notebook(
        tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch drew an "infection" bar under its study bar, reached by moving the cursor up
    (ESC[A), which a notebook does not follow: one 150-slice CT wrote 23 lines. A log file got
    no slice bar either, so an 800-slice study's log showed nothing for the minutes of
    "finding infection": it gets the bar as plain lines (every LOGGED_EVERY_S, 0 here), a
    terminal the bar drawn in place, a notebook none; segment, which writes nothing, draws no
    bar either way."""
    monkeypatch.setattr(progress, "LOGGED_EVERY_S", 0.0)
    notebook = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    inputs = tmp_path / "in"
    inputs.mkdir()
    chest_nifti(inputs / "chest.nii.gz")
    volume = np.asarray(nib.load(inputs / "chest.nii.gz").dataobj).transpose(2, 1, 0)
    for name, stream in (("log", io.StringIO()), ("terminal", _Terminal()),
                         ("notebook", notebook())):
        monkeypatch.setattr(sys, "stderr", stream)
        predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / f"pred{name}",
                      batch_size=2)
        err = stream.getvalue()
        assert "predict: 100%" in err
        assert ("infection:" in err, "\x1b[A" in err) == {
            "log": (True, False), "terminal": (True, True), "notebook": (False, False)}[name]
        if name == "log":
            assert "\r" not in err and any(line.startswith("infection: ")
                                           for line in err.splitlines())
        drawn = len(err)
        segment(tiny_run, volume, spacing=(4.0, 0.75, 0.75))
        assert len(stream.getvalue()) == drawn, "segment drew a bar"


def test_tqdm_disable_silences_every_covseg_bar(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``TQDM_DISABLE=1`` (docs/python-api.md's way to silence covseg) turns off every bar, the
    study bar's stages included, even when set after covseg (and tqdm) were imported, as a
    notebook does: tqdm reads it once at import, and a bar given ``disable=`` ignored it
    (load_dataset's bar of 20 files and more, training's epoch bar)."""
    monkeypatch.setattr(progress, "SHOW_AFTER_S", 0.0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    chest_nifti(inputs / "chest.nii.gz")
    stream = _Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    for quiet in ("0", "1"):
        monkeypatch.setenv("TQDM_DISABLE", quiet)
        predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / f"pred{quiet}",
                      batch_size=2)
        list(layouts_base._progress(list(range(30)), "files"))  # load_dataset's bar of files
        err, _ = stream.getvalue(), stream.truncate(0)
        stream.seek(0)
        assert ("chest: finding infection" in err and "files: " in err) == (quiet == "0")
        assert (err == "") == (quiet == "1")


def test_a_file_in_the_way_of_a_batchs_out_is_named_so_on_the_command_line(
        tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``covseg predict`` of CT volumes (and ``covseg quantify``) into a file said "cannot write
    to it (File exists)", though the file is only in the way; the API said so already."""
    from covseg.cli import main

    chest_nifti(tmp_path / "chest.nii.gz")
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    for argv in (["predict", "--model", str(tiny_run), str(tmp_path / "chest.nii.gz")],
                 ["quantify", str(tmp_path / "chest.nii.gz")]):
        assert main([*argv, "--out", str(afile)]) == 2
        assert capsys.readouterr().err == (f"covseg: error: {afile}: a file is in the way (the "
                                           "output is a folder); pick another --out\n")
    assert afile.read_text() == "x\n"


def test_the_grown_lungs_note_of_an_api_call_names_the_keyword(tmp_path: Path) -> None:
    """predict_volumes and quantify, called from Python, advised "give the lungs with
    --lung-model" (or "--lungs"), flags a notebook user never typed; they name the keywords
    now, and the command line its flags (the tests above)."""
    from covseg.provenance import api_command, invoked_as

    path = tmp_path / "case.nii.gz"
    overcalled_ct(path)
    with invoked_as(api_command("predict_volumes")):
        predicted = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "pred")
    assert predicted["lung_note"].endswith("check the montage, or give the lungs with lung_model")
    with invoked_as(api_command("quantify")):
        counted = quantify_study(tmp_path / "pred" / INFECTION_NII, tmp_path / "q")
    assert counted["lung_note"].endswith("check the montage, or give the lungs with lungs")


@pytest.mark.skipif(not CT.is_file(), reason=f"real data not found: {CT}")
def test_a_ct_holding_no_lungs_is_predicted_without_category(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The real sample's lowest 12 slices (abdomen, no lung) read CT-4, 88.7 % involved, with
    bowel gas as lungs; now no lungs are found: no category, and the lung_note says why. The
    console's warning said only "no lungs found", without the note's what and what to do."""
    abdomen = tmp_path / "abd.nii.gz"
    nib.save(nib.load(str(CT)).slicer[:, :, 0:12], str(abdomen))
    with caplog.at_level("WARNING"):
        result = predict_study(BandPredictor([(-500, -100)]), abdomen, tmp_path / "out")
    said = [r.getMessage() for r in caplog.records if "no lungs found" in r.getMessage()]
    note = result["lung_note"]
    assert said == [f"{abdomen}: {note}; infection outside the lungs was not removed"]
    assert result["study"]["lung_ml"] == 0 and result["study"]["ct_category"] is None
    assert result["inputs"]["lungs_found"] is False
    assert result["lung_note"].startswith("no lungs found in the CT")
    assert result["lung_note"].endswith("give them with --lung-model")


def test_a_ct_without_lungs_records_that_nothing_was_removed(tmp_path: Path) -> None:
    """quantification.json could say outside-lung calls were removed on a CT where no lungs
    were found and nothing was: an audit of the record was misled. Here the call is counted
    whole and the record says so."""
    ct = np.full((64, 64, 10), -1000.0, dtype=np.float32)
    ct[4:60, 4:60, :] = 40.0          # an abdomen: body, no lungs
    ct[20:30, 20:30, 3:6] = -300.0    # a call
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "ct.nii.gz"))
    result = predict_study(BandPredictor([(-400, -200)]), tmp_path / "ct.nii.gz", tmp_path / "out")
    assert result["inputs"]["lungs_found"] is False
    assert result["inputs"]["outside_lungs_removed"] is False
    assert result["study"]["lesion_ml"] == pytest.approx(10 * 10 * 3 * VOXEL_ML)


def test_a_study_s_scale_warnings_are_said_once_naming_its_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Said once per predict_labels call and unnamed, a study read saturated was warned of
    twice with a lung model (its infection and lung passes), naming no file."""
    path = tmp_path / "chest.nii.gz"
    chest_nifti(path)
    infection, lungs = BandPredictor([(-400, -200)]), BandPredictor([(-900, -800)])
    for predictor in (infection, lungs):
        predictor.window = (-3000.0, -2000.0)  # every voxel above it: read saturated
    with caplog.at_level("WARNING"):
        predict_study(infection, path, tmp_path / "out", lung_predictor=lungs)
    said = [r.getMessage() for r in caplog.records if "are clipped" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{path}: many pixels of a slice lie outside")


def test_a_study_s_scale_warning_counts_each_slice_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Read in two passes (infection and lung models), a 10-slice study was warned of as
    "(20 images alike)": each slice counted once a pass."""
    path = tmp_path / "chest.nii.gz"
    chest_nifti(path)
    infection, lungs = BandPredictor([(-400, -200)]), BandPredictor([(-900, -800)])
    for predictor in (infection, lungs):
        predictor.window = (-3000.0, -2000.0)
    with caplog.at_level("WARNING"):
        predict_study(infection, path, tmp_path / "out", lung_predictor=lungs)
    said = [r.getMessage() for r in caplog.records if "are clipped" in r.getMessage()]
    depth = nib.load(str(path)).shape[2]
    assert len(said) == 1 and said[0].endswith(f"({depth} slices alike)")


def test_predict_labels_called_directly_warns_once_a_call(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Called from Python, not under predict_study's read, predict_labels warned once a slice:
    a 10-slice CT read saturated gave 10 lines alike."""
    path = tmp_path / "chest.nii.gz"
    chest_nifti(path)
    predictor = BandPredictor([(-400, -200)])
    predictor.window = (-3000.0, -2000.0)
    volume = read_volume(path)
    with caplog.at_level("WARNING"):
        predict_labels(predictor, volume, batch_size=4)
    said = [r.getMessage() for r in caplog.records if "are clipped" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{volume.source}: many pixels")
    assert said[0].endswith(f"({volume.array.shape[0]} slices alike)")


def test_a_grey_study_s_montage_adds_no_warning_of_its_own(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A [0, 1] CT overshooting 1 at a few voxels of each slice was warned of twice: once for
    the study, naming its file, then for its montage, unnamed and counting the montage's
    slices; the montage's slices are the study's, counted in its one warning."""
    grey = np.zeros((64, 64, 10), dtype=np.float32)  # x, y, z: air
    grey[4:60, 4:60, :] = 0.9  # body
    grey[8:28, 10:40, 1:9] = grey[36:56, 10:40, 1:9] = 0.2  # lungs
    grey[30:34, 20:24, :] = 1.01  # overshoot in every slice
    path = tmp_path / "grey.nii.gz"
    nib.save(nib.Nifti1Image(grey, AFFINE), str(path))
    with caplog.at_level("WARNING"):
        result = predict_study(BandPredictor([(-400, -200)]), path, tmp_path / "out")
    assert result["inputs"]["intensity"] == "unit"
    said = [r.getMessage() for r in caplog.records if "a few pixels" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{path}: a few pixels")
    assert said[0].endswith("(10 slices alike)")


def test_nrrd_and_metaimage_cts_give_the_niftis_masks_and_numbers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One sitk CT (uneven spacing, an origin, a permuted and mirrored direction) saved as
    NIfTI, NRRD (attached and detached) and MetaImage (attached and detached), in one folder:
    each is a study (a folder's .nrrd and .mha were passed over, and refused given alone), its
    masks NIfTI on the input's world grid, voxel for voxel and number for number the NIfTI's.
    The data files (.raw) are no studies and no word; a 3D Slicer segmentation is passed over
    as a mask."""
    chest_nifti(tmp_path / "chest.nii.gz")
    image = sitk.GetImageFromArray(np.asarray(nib.load(str(tmp_path / "chest.nii.gz")).dataobj)
                                   .T.astype(np.int16))
    image.SetSpacing((0.75, 0.8, 4.0))
    image.SetOrigin((12.5, -30.0, 100.0))
    image.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = {"a": "a.nii.gz", "b": "b.nrrd", "c": "c.mha", "d": "d.mhd", "e": "e.nhdr"}
    for name in names.values():
        sitk.WriteImage(image, str(inputs / name))
    sitk.WriteImage(sitk.Cast(image < -500, sitk.sitkUInt8), str(inputs / "b.seg.nrrd"))
    with caplog.at_level("WARNING", logger="covseg.studies"):
        result = predict_batch(BandPredictor([(-400, -200)]), [inputs], tmp_path / "out")
    assert (result.done, result.failed) == (5, 0)
    assert [r.getMessage() for r in caplog.records if r.name == "covseg.studies"] == [
        (f"{inputs}: 1 3D Slicer segmentation(s) (b.seg.nrrd) (.seg.nrrd: labels) passed over, "
         "never read as CTs")]
    with open(result.summary, newline="") as handle:
        rows = {row.pop("study"): row for row in csv.DictReader(handle)}
    for study, name in names.items():
        assert rows[study].pop("input") == str(inputs / name)
        assert rows[study].pop("output") == str(tmp_path / "out" / study)
    assert float(rows["a"]["lesion_ml"]) > 0 and float(rows["a"]["lung_ml"]) > 0
    for study in "bcde":
        assert rows[study] == rows["a"], study
        for mask in (INFECTION_NII, LUNGS_NII):
            written, nifti = (nib.load(str(tmp_path / "out" / s / mask)) for s in (study, "a"))
            np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(nifti.dataobj))
            np.testing.assert_allclose(written.affine, nifti.affine, atol=1e-5)
            assert written.header.get_zooms() == pytest.approx(nifti.header.get_zooms())
            np.testing.assert_allclose(sitk.ReadImage(str(tmp_path / "out" / study / mask))
                                       .GetDirection(), image.GetDirection(), atol=1e-6)
        record = json.loads((tmp_path / "out" / study / "quantification.json").read_text())
        first = json.loads((tmp_path / "out" / "a" / "quantification.json").read_text())
        for key in ("study", "right_lung", "left_lung", "shape", "spacing_mm"):
            assert record[key] == pytest.approx(first[key]), key
