"""Evaluating folders of masks: what is read as a mask, and mismatched label sets."""

from __future__ import annotations

import errno
import importlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from covseg.cli import main
from covseg.errors import CovsegError
from covseg.evaluate import evaluate_folders, metrics_plot
from covseg.io.image import read_oriented_mask
from covseg.records import SUMMARY_FIELDS
from covseg.report import csv_text
from tests.conftest import (
    THIN_MASKS,
    calls_counted,
    refuse_writing_under,
    saved_as,
    square_mask,
    write_mask,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def _multiclass_truth(folder: Path) -> np.ndarray:
    """Truth with GGO (1) and consolidation (2), as Inf-Net's multi-class GT."""
    truth = square_mask(32, 4, 4, 12) + 2 * square_mask(32, 18, 18, 8)
    _save(folder / "a.png", truth)
    return truth


def test_binary_prediction_against_multiclass_truth_is_scored_as_binary(tmp_path: Path) -> None:
    """A 0/255 prediction is not counted as all ground-glass: the case is scored as
    infection (any label > 0) only, and the JSON says why."""
    truth = _multiclass_truth(tmp_path / "truth")
    _save(tmp_path / "pred" / "a.png", (truth > 0) * 255)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    assert result["num_classes"] == 2 and result["summary"]["dice"]["mean"] == 1.0
    assert result["classes"] is None
    assert not any(key.endswith("_dice") for key in result["per_case"][0])
    assert "scored as binary (infection = any label > 0)" in result["classes_note"]
    assert json.loads((tmp_path / "ev.json").read_text())["classes_note"] == result["classes_note"]
    shutil.copytree(tmp_path / "truth", tmp_path / "copy")  # one folder as both is refused
    both = evaluate_folders(tmp_path / "copy", tmp_path / "truth", tmp_path / "same.json")
    assert both["num_classes"] == 3 and both["classes_note"] is None
    assert both["classes"] == {"0": "background", "1": "ground-glass", "2": "consolidation"}


def test_the_record_fingerprints_the_truths_and_predictions_it_scored(tmp_path: Path) -> None:
    """Two evaluations of one truth folder whose masks changed between them (Dice 0.2872, then
    0.2735) wrote records alike but for their scores: only the folders' paths were recorded.
    Each record now holds a fingerprint of the truths and of the predictions scored."""
    for case, top in (("a", 4), ("b", 10)):
        _save(tmp_path / "truth" / f"{case}.png", square_mask(32, top, 4, 12) * 255)
        _save(tmp_path / "pred" / f"{case}.png", square_mask(32, 6, 6, 12) * 255)
    first = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "one.json")
    again = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "two.json")
    assert (again["truth_fingerprint"], again["prediction_fingerprint"]) == (
        first["truth_fingerprint"], first["prediction_fingerprint"])
    assert first["truth_fingerprint"] != first["prediction_fingerprint"]
    _save(tmp_path / "truth" / "b.png", square_mask(32, 12, 4, 12) * 255)
    edited = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "three.json")
    assert edited["truth_fingerprint"] != first["truth_fingerprint"]
    assert edited["prediction_fingerprint"] == first["prediction_fingerprint"]
    recorded = json.loads((tmp_path / "three.json").read_text())
    assert recorded["truth_fingerprint"] == edited["truth_fingerprint"]
    _save(tmp_path / "pred" / "a.png", square_mask(32, 8, 6, 12) * 255)
    assert evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "four.json")[
        "prediction_fingerprint"] != first["prediction_fingerprint"]


def test_each_scored_prediction_is_hashed_once_for_its_fingerprint_and_edited_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The prediction fingerprint and the check of masks edited since predict each hashed
    every scored prediction: each is read once for both, and both records stay as they were."""
    from covseg import records
    from covseg.io.atomic import write_json

    for case in ("a", "b"):
        _save(tmp_path / "truth" / f"{case}.png", square_mask(32, 4, 4, 12) * 255)
        _save(tmp_path / "pred" / f"{case}.png", square_mask(32, 6, 6, 12) * 255)
    preds = sorted((tmp_path / "pred").glob("*.png"))
    write_json(tmp_path / "pred" / records.PREDICT_RECORD, {records.OUTPUT_SHA256: {
        "a.png": records.content_hash(preds[0]), "b.png": "edited since"}})
    evaluate_module = importlib.import_module("covseg.evaluate")
    in_records = calls_counted(monkeypatch, records, "content_hash")
    in_evaluate = calls_counted(monkeypatch, evaluate_module, "content_hash")
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    each_once = [(pred,) for pred in preds]
    assert [call for call in in_records + in_evaluate if call in each_once] == each_once
    assert result["edited_predictions"] == ["b.png"]
    monkeypatch.undo()
    assert result["prediction_fingerprint"] == records.masks_fingerprint(
        {"a": preds[0], "b": preds[1]})


def test_images_given_as_masks_are_refused(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    _save(tmp_path / "pred" / "a.png", square_mask(32, 4, 4, 12) * 255)
    _save(tmp_path / "images" / "a.png", rng.integers(0, 256, (32, 32)))
    with pytest.raises(CovsegError, match=r"images/a\.png: not a mask but an image \(\d+ grey "
                                          r"levels, \d+% of pixels mid-grey\)"):
        evaluate_folders(tmp_path / "pred", tmp_path / "images", tmp_path / "ev.json")
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                 str(tmp_path / "images"), "--out", str(tmp_path / "ev.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a mask but an image" in err
    assert not (tmp_path / "ev.json").exists()


def test_a_jpeg_multiclass_truth_is_told_as_training_tells_it(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    """Labels 0/1/2 scaled to 0/127/254 and saved as JPEG, its ground-glass mid-grey: evaluate
    called the truth "not a mask but an image" and asked for labels, while train and data info
    call that very file a mask of several classes saved lossily and ask for PNG."""
    labels = square_mask(64, 4, 4, 30) + square_mask(64, 20, 20, 10)
    (tmp_path / "truth").mkdir()
    Image.fromarray((labels * 127).astype(np.uint8)).save(tmp_path / "truth" / "a.jpg",
                                                          quality=90)
    _save(tmp_path / "pred" / "a.png", labels)
    lossy = (r"truth/a\.jpg: a mask of several classes saved lossily \(.*\), whose JPEG noise "
             r"blurs one class into the next; save the masks losslessly \(PNG\)")
    with pytest.raises(CovsegError, match=lossy):
        read_oriented_mask(tmp_path / "truth" / "a.jpg")
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                 str(tmp_path / "truth"), "--out", str(tmp_path / "ev.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and re.search(lossy, err), err
    assert not (tmp_path / "ev.json").exists()


def test_lossy_jpeg_masks_are_still_read(tmp_path: Path) -> None:
    mask = square_mask(64, 10, 10, 30) * 255
    _save(tmp_path / "truth" / "a.png", mask)
    Image.fromarray(mask).save(tmp_path / "pred.jpg", quality=50)
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred.jpg").rename(tmp_path / "pred" / "a.jpg")
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    assert result["summary"]["dice"]["mean"] == 1.0


def test_truth_with_labels_scaled_to_8_bits_keeps_its_lowest_class(tmp_path: Path) -> None:
    """0/127/254 truth lost ground-glass to the half-maximum threshold (127 < 127.5), and a
    right prediction scored Dice 0.47 without a word."""
    truth = square_mask(32, 4, 4, 12) + 2 * square_mask(32, 18, 18, 8)
    _save(tmp_path / "truth" / "a.png", truth * 127)
    _save(tmp_path / "binary" / "a.png", (truth > 0) * 255)
    _save(tmp_path / "labels" / "a.png", truth)
    binary = evaluate_folders(tmp_path / "binary", tmp_path / "truth", tmp_path / "b.json")
    assert binary["summary"]["dice"]["mean"] == 1.0
    labels = evaluate_folders(tmp_path / "labels", tmp_path / "truth", tmp_path / "l.json")
    assert labels["num_classes"] == 3 and labels["per_case"][0]["ground-glass_dice"] == 1.0


def test_covsegs_own_pictures_are_not_predictions(tmp_path: Path) -> None:
    """summary.png (beside summary.csv), montage.png and overlays/ of an output folder."""
    truth = square_mask(32, 4, 4, 12)
    _save(tmp_path / "truth" / "a.png", truth)
    pred = tmp_path / "pred"
    _save(pred / "a.png", truth * 255)
    _save(pred / "summary.png", np.full((32, 32, 3), 200))
    (pred / "summary.csv").write_text("study,status\n")
    _save(pred / "montage.png", np.full((32, 32), 90))
    _save(pred / "overlays" / "a.png", np.full((32, 32, 3), 90))
    result = evaluate_folders(pred, tmp_path / "truth", tmp_path / "ev.json")
    assert result["cases"] == 1 and result["unmatched_predictions"] == []


def test_volumes_on_different_grids_are_refused(tmp_path: Path) -> None:
    """Voxel arrays compared as they are would score a mirrored grid 0 and a rotated one 1."""
    mask = np.zeros((8, 8, 4), dtype=np.uint8)
    mask[2:5, 3:6, 1:3] = 1
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    for folder, grid in (("pred", affine), ("truth", affine), ("lps", np.diag([-0.8, -0.8, 5, 1]))):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(mask, grid), str(tmp_path / folder / "x.nii.gz"))
    same = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "same.json")
    assert same["summary"]["dice"]["mean"] == 1.0
    with pytest.raises(CovsegError, match="different grids .* axes RAS and LPS"):
        evaluate_folders(tmp_path / "pred", tmp_path / "lps", tmp_path / "other.json")


def test_masks_of_other_sizes_are_refused_naming_the_axes_of_their_shapes(
        tmp_path: Path) -> None:
    """A truth of 64x48x10 voxels against a prediction of 64x48x12 was refused as "(12, 48, 64)
    and (10, 48, 64) (z, y, x, as the files hold them)", the files' shapes reversed: each is
    printed in its file's own order, nibabel's shape, as quantify records it. The line named
    the case alone ("c: ...") and said nothing to do: it names both files and says to predict
    again from the truth's own image."""
    for name, slices in (("pred", 12), ("truth", 10)):
        _save_stack(tmp_path / name / "c.nii.gz", np.zeros((64, 48, slices)))
    advice = (r"; predict again from the image or CT this truth was drawn on \(covseg predict "
              r"writes each mask on its input's grid\)$")
    pred, truth = (re.escape(str(tmp_path / name / "c.nii.gz")) for name in ("pred", "truth"))
    with pytest.raises(CovsegError, match=rf"^{pred} and {truth}: prediction \(64, 48, 12\) and "
                                          r"truth \(64, 48, 10\) \(each file's own axis order, "
                                          r"nibabel's shape\) differ in size" + advice):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    _save(tmp_path / "flat" / "c.png", np.zeros((48, 64)))
    flat = re.escape(str(tmp_path / "flat" / "c.png"))
    with pytest.raises(CovsegError, match=rf"^{flat} and {truth}: prediction \(48, 64\) \(y, x\) "
                                          r"and truth \(64, 48, 10\) \(the file's own axis "
                                          r"order, nibabel's shape\) differ in size" + advice):
        evaluate_folders(tmp_path / "flat", tmp_path / "truth", tmp_path / "ev")


@pytest.mark.parametrize("bare", ["pred", "truth"])
def test_a_volume_without_geometry_pairs_with_the_other_as_stored(
        tmp_path: Path, bare: str, caplog: pytest.LogCaptureFixture) -> None:
    """A numpy pipeline's mask (identity affine) was reoriented by it and refused, or scored
    mirrored, against a truth of real geometry on the same stored grid."""
    mask = np.zeros((8, 8, 4), dtype=np.uint8)
    mask[1:3, 2:6, 1:3] = 1
    for folder in ("pred", "truth"):
        (tmp_path / folder).mkdir()
        grid = np.eye(4) if folder == bare else np.diag([-0.8, -0.8, 5.0, 1.0])
        nib.save(nib.Nifti1Image(mask, grid), str(tmp_path / folder / "x.nii.gz"))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    assert result["summary"]["dice"]["mean"] == 1.0
    assert caplog.text.count("pairing their voxels as stored") == 1  # was twice: read twice
    evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "again.json")
    assert caplog.text.count("pairing their voxels as stored") == 2  # each run warns once


def test_a_multiclass_models_predictions_of_one_class_are_scored_per_class(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every consolidation called ground-glass scored Dice 1.000 as binary: the masks held label
    1 alone, though predict.json says the model had three classes."""
    truth = _multiclass_truth(tmp_path / "truth")
    pred = tmp_path / "pred"
    _save(pred / "a.png", (truth > 0).astype(np.uint8))
    binary = evaluate_folders(pred, tmp_path / "truth", tmp_path / "binary.json")
    assert binary["num_classes"] == 2 and binary["classes_note"]
    (pred / "predict.json").write_text(json.dumps({"model": {"num_classes": 3}}))
    result = evaluate_folders(pred, tmp_path / "truth", tmp_path / "ev.json")
    assert result["num_classes"] == 3 and result["classes_note"] is None
    case = result["per_case"][0]
    assert case["dice"] == 1.0 and case["consolidation_dice"] == 0.0
    assert case["ground-glass_dice"] == pytest.approx(2 * 144 / (144 + 208))
    assert main(["evaluate", "--pred", str(pred), "--truth", str(tmp_path / "truth"),
                 "--out", str(tmp_path / "cli.json")]) == 0
    assert ("1 case, Dice (any lesion) 1.000; per class: ground-glass 0.818, "
            "consolidation 0.000;") in capsys.readouterr().out  # no spread from one case


def test_the_spread_is_the_sample_sd_over_cases_and_said_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """evaluate's ± was the population SD (Dice 1, 2/3 and 0: 0.416), while cv and compare
    give the sample SD (n - 1: 0.509), and neither the console nor the JSON said which."""
    truth = square_mask(32, 8, 8, 10)
    half = truth.copy()
    half[8:13, 8:18] = 0
    for name, pred in (("a", truth), ("b", half), ("c", np.zeros_like(truth))):
        _save(tmp_path / "truth" / f"{name}.png", truth * 255)
        _save(tmp_path / "pred" / f"{name}.png", pred * 255)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--out", str(tmp_path / "ev")]) == 0
    assert "3 cases, Dice 0.556 ± 0.509 (mean ± sample SD);" in capsys.readouterr().out
    stored = json.loads((tmp_path / "ev.json").read_text())
    assert [row["dice"] for row in stored["per_case"]] == pytest.approx([1.0, 2 / 3, 0.0])
    assert stored["summary"]["dice"]["std"] == pytest.approx(math.sqrt(7 / 27))
    assert "sample standard deviation (n - 1)" in stored["std_note"]


def test_truths_scaled_by_one_step_read_with_the_sets_step(tmp_path: Path) -> None:
    """A 0/127/254 truth set whose slice lacks ground-glass (0/254 alone) read that slice as
    0/1, so a perfect prediction scored ground-glass and consolidation Dice 0 on it."""
    truth = _multiclass_truth(tmp_path / "labels")
    consolidation_only = 2 * square_mask(32, 18, 18, 8)
    _save(tmp_path / "labels" / "b.png", consolidation_only)
    _save(tmp_path / "truth" / "a.png", truth * 127)
    _save(tmp_path / "truth" / "b.png", consolidation_only * 127)
    result = evaluate_folders(tmp_path / "labels", tmp_path / "truth", tmp_path / "ev.json")
    b = next(row for row in result["per_case"] if row["case_id"] == "b")
    assert b["consolidation_dice"] == 1.0 and math.isnan(b["ground-glass_dice"])
    assert result["summary"]["consolidation_dice"]["mean"] == 1.0


class _Spelt(os.PathLike[str]):
    """A path as its text, trailing slash kept (``pathlib.Path`` drops it)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __fspath__(self) -> str:
        return self.text


def test_output_names_keep_their_dots_and_stay_out_of_the_mask_folders(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out eval_t0.4`` and ``--out eval_t0.6`` both wrote eval_t0.*; ``--out truth/0.png``
    wrote the box plot over a truth mask; unmatched cases were silent on the console."""
    truth = square_mask(32, 4, 4, 12)
    for name in ("a", "b"):
        _save(tmp_path / "truth" / f"{name}.png", truth)
    _save(tmp_path / "pred" / "a.png", truth * 255)
    _save(tmp_path / "pred" / "zzz.png", truth * 255)
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]
    assert main([*args, "--out", str(tmp_path / "eval_t0.4")]) == 0
    assert (tmp_path / "eval_t0.4.json").is_file() and (tmp_path / "eval_t0.4.png").is_file()
    printed = capsys.readouterr()
    assert "covseg: warning: 1 prediction without a truth, not scored: zzz.png" in printed.err
    assert "covseg: warning: 1 truth without a prediction of that name, not scored: b" in (
        printed.err)
    assert "not scored" not in printed.out  # stdout holds the summary alone
    (tmp_path / "runs").mkdir()
    assert main([*args, "--out", str(tmp_path / "runs")]) == 0
    assert (tmp_path / "runs" / "evaluation.csv").is_file()
    assert main([*args, "--out", f"{tmp_path / 'new'}/"]) == 0
    assert (tmp_path / "new" / "evaluation.json").is_file()
    spelt = _Spelt(f"{tmp_path / 'spelt'}/")  # a path-like that keeps its slash, unlike Path
    assert evaluate_folders(tmp_path / "pred", tmp_path / "truth", spelt)["files"]
    assert (tmp_path / "spelt" / "evaluation.json").is_file()
    assert evaluate_folders(tmp_path / "pred", tmp_path / "truth", Path(f"{tmp_path}/named/"))
    assert (tmp_path / "named.json").is_file() and not (tmp_path / "named").exists()
    before = (tmp_path / "truth" / "a.png").read_bytes()
    assert main([*args, "--out", str(tmp_path / "truth" / "a.png")]) == 2
    assert "lies in the mask folder" in capsys.readouterr().err
    assert (tmp_path / "truth" / "a.png").read_bytes() == before


def test_out_beside_a_mask_folder_is_taken_and_an_evaluations_temporaries_go(
        tmp_path: Path) -> None:
    """``--out truth.json`` beside the truth folder was refused as lying in it (its stem, which
    names the folder, was compared), though its files lie beside it; the hidden temporaries an
    evaluation killed with ``kill -9`` left (``.ev.<8 chars>.csv``) were never removed. Only the
    evaluation's own go: another file's may be another run's, being written."""
    truth = square_mask(32, 4, 4, 12)
    _save(tmp_path / "truth" / "a.png", truth)
    _save(tmp_path / "pred" / "a.png", truth * 255)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "truth.json")
    assert result["cases"] == 1 and (tmp_path / "truth.png").is_file()
    assert [path.name for path in (tmp_path / "truth").iterdir()] == ["a.png"]
    inside = tmp_path / "truth" / "sub" / "ev"
    with pytest.raises(CovsegError) as refused:
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", inside)
    assert str(refused.value) == (f"--out {inside}: lies in the mask folder {tmp_path / 'truth'}, "
                                  "where its files would be read as masks; pick an --out "
                                  "outside it")
    stale = [tmp_path / name for name in (".ev.k3x9_q2a.json", ".ev.k3x9_q2a.csv",
                                          ".ev.0a1b2c3d.png")]
    kept = [tmp_path / name for name in (".evx.k3x9_q2a.json", ".ev.k3x9_q2a.nii.gz",
                                         ".grid.0a1b2c3d.png")]
    for path in stale + kept:
        path.write_bytes(b"half")
    assert evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")["cases"] == 1
    assert [path.exists() for path in stale + kept] == [False] * 3 + [True] * 3


def test_out_never_overwrites_files_an_evaluation_did_not_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out grid.png`` wrote its box plot over a visualize grid of that name (and grid.csv,
    grid.json over whatever was there); a rerun still overwrites its own outputs. The refusal
    said "grid.json is not an evaluation record" where there was no grid.json."""
    truth = square_mask(32, 4, 4, 12)
    _save(tmp_path / "truth" / "a.png", truth)
    _save(tmp_path / "pred" / "a.png", truth * 255)
    grid = _save(tmp_path / "grid.png", np.full((32, 32, 3), 90))
    before = grid.read_bytes()
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]
    assert main([*args, "--out", str(grid)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"{grid} exists and is no earlier evaluation's output "
                                     "(no evaluation record, grid.json, beside it)") in err
    assert grid.read_bytes() == before and sorted(p.name for p in tmp_path.glob("grid.*")) == [
        "grid.png"]
    (tmp_path / "table.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(CovsegError, match=r"table\.json exists and is no earlier evaluation's "
                                          r"output \(table\.json is not an evaluation record\)"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "table")
    for _ in range(2):
        result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.png")
        assert result["cases"] == 1 and (tmp_path / "ev.csv").is_file()


@pytest.mark.parametrize(("stopped_in", "left"), [("metrics_plot", {"json", "csv"}),
                                                  ("write_text", {"json"})])
def test_an_evaluation_stopped_midway_leaves_none_of_the_earlier_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped_in: str, left: set[str]) -> None:
    """Written CSV first, an evaluation stopped while plotting left a lone ev.csv that its own
    rerun refused ("no earlier evaluation's output"). Stopped so after an earlier evaluation of
    that name, it left the earlier ev.png beside its own JSON and CSV, the JSON naming it as its
    own; killed between its JSON and its CSV (15 ms apart), the earlier ev.csv. The earlier files
    are gone, the JSON names each of its own once written, and the rerun writes them all."""
    evaluate_module = importlib.import_module("covseg.evaluate")  # covseg.evaluate: the API's
    truth = square_mask(32, 4, 4, 12)
    _save(tmp_path / "truth" / "a.png", truth)
    _save(tmp_path / "pred" / "a.png", truth * 255)
    evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")

    def stopped(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    _save(tmp_path / "truth" / "b.png", truth)
    _save(tmp_path / "pred" / "b.png", truth * 255)
    with monkeypatch.context() as patch:
        patch.setattr(evaluate_module, stopped_in, stopped)
        with pytest.raises(KeyboardInterrupt):
            evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    record = json.loads((tmp_path / "ev.json").read_text())
    assert record["cases"] == 2 and set(record["files"]) == left
    assert {kind for kind in ("json", "csv", "png") if (tmp_path / f"ev.{kind}").exists()} == left
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert set(result["files"]) == {"json", "csv", "png"}
    assert len((tmp_path / "ev.csv").read_text().splitlines()) == 3


def test_folders_named_under_a_c_locale_are_evaluated_and_drawn(tmp_path: Path) -> None:
    """Under ``LC_ALL=C LANG=C PYTHONUTF8=0`` a folder named tête reads as lone surrogates:
    the box plot's title, built from it, failed in matplotlib after the JSON and CSV were
    written, a 60-line traceback. The plot is drawn, titled with the name it is."""
    truth = square_mask(32, 4, 4, 12)
    pred = tmp_path / "t\udcc3\udcaate"  # the bytes of tête, as the C locale decodes them
    _save(tmp_path / "truth" / "a.png", truth)
    _save(pred / "a.png", truth * 255)
    evaluate_folders(pred, tmp_path / "truth", tmp_path / "ev")
    assert "png" in json.loads((tmp_path / "ev.json").read_text())["files"]


def test_a_figure_that_cannot_be_drawn_is_a_warning_beside_the_scores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A plot failing in matplotlib ended evaluate in a traceback after its JSON and CSV were
    written: it is one warning line, the scores kept, the JSON naming no PNG."""
    evaluate_module = importlib.import_module("covseg.evaluate")
    truth = square_mask(32, 4, 4, 12)
    _save(tmp_path / "truth" / "a.png", truth)
    _save(tmp_path / "pred" / "a.png", truth * 255)

    def refused(*_: object, **__: object) -> None:
        raise TypeError("set_text(): incompatible function arguments.\n    1. (self) -> None")

    monkeypatch.setattr(evaluate_module, "metrics_plot", refused)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert result["cases"] == 1 and (tmp_path / "ev.csv").is_file()
    assert "png" not in json.loads((tmp_path / "ev.json").read_text())["files"]
    assert [record.getMessage().count("\n") for record in caplog.records] == [0]
    assert "ev.png: not drawn (TypeError: set_text()" in caplog.text


def test_a_full_disk_while_saving_the_figure_stays_the_commands_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The figure's save turns a full disk into covseg's own error (atomic_path), which the
    drawing-failure warning took for one: "ev.png: not drawn (no space left ...)", exit 0."""
    from matplotlib.figure import Figure

    truth = square_mask(32, 4, 4, 12)
    _save(tmp_path / "truth" / "a.png", truth)
    _save(tmp_path / "pred" / "a.png", truth * 255)

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(CovsegError, match="no space left on device"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert not (tmp_path / "ev.png").exists()


@pytest.mark.parametrize(("predicted", "truth", "case"), [
    ("coronacases_org_001.nii.gz", "coronacases_001.nii.gz", "coronacases_001"),
    ("radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm.nii.gz", "radiopaedia_4_85506_1.nii.gz",
     "radiopaedia_4_85506_1"),
    ("radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm/infection.nii.gz",  # a predict study
     "radiopaedia_4_85506_1.nii.gz", "radiopaedia_4_85506_1"),
])
def test_predictions_named_after_kaggles_cts_pair_with_zenodos_masks(
        tmp_path: Path, predicted: str, truth: str, case: str) -> None:
    """A prediction named after Kaggle's Radiopaedia CT (ending ``-dcm``) found no truth: the
    case was left out of the scores, with a note."""
    mask = np.zeros((8, 8, 4), dtype=np.uint8)
    mask[2:5, 3:6, 1:3] = 1
    for path in (tmp_path / "pred" / predicted, tmp_path / "truth" / truth):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(mask, np.diag([0.8, 0.8, 5.0, 1.0])), str(path))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    assert result["cases"] == 1 and result["per_case"][0]["case_id"] == case
    assert result["unmatched_predictions"] == [] and result["summary"]["dice"]["mean"] == 1.0


def test_masks_predicted_into_their_input_folder_are_scored(tmp_path: Path,
                                                             tiny_run: Path) -> None:
    """``covseg predict --out`` an input folder (0.jpg beside its mask 0.png) made that folder
    unreadable to evaluate ("0.jpg and 0.png are both case '0'; keep one"): the images its
    predict.json lists as inputs are no masks, while a stray image is still a duplicate."""
    from covseg import api

    same = tmp_path / "same"
    rng = np.random.default_rng(0)
    for name in ("0", "1"):
        _save(same / f"{name}.jpg", rng.integers(0, 256, (32, 32)))
        _save(tmp_path / "truth" / f"{name}.png", square_mask(32, 4, 4, 12) * 255)
    api.predict(tiny_run, same, same)
    result = evaluate_folders(same, tmp_path / "truth", tmp_path / "ev")
    assert result["cases"] == 2 and not result["unmatched_predictions"]
    _save(same / "1.tif", rng.integers(0, 256, (32, 32)))
    with pytest.raises(CovsegError, match=r"1\.png and 1\.tif are both case '1'; rename one, or "
                                          r"move what is not a mask out of the prediction folder"):
        evaluate_folders(same, tmp_path / "truth", tmp_path / "ev2")


def test_a_copy_of_a_folder_predicted_into_itself_is_scored(tmp_path: Path,
                                                             tiny_run: Path) -> None:
    """Its predict.json names the inputs by absolute path, those of the folder predicted into,
    so a copy's images were read as masks ("0.jpg and 0.png are both case '0'"); they are
    known by name now."""
    from covseg import api

    rng = np.random.default_rng(0)
    for name in ("0", "1"):
        _save(tmp_path / "same" / f"{name}.jpg", rng.integers(0, 256, (32, 32)))
        _save(tmp_path / "truth" / f"{name}.png", square_mask(32, 4, 4, 12) * 255)
    api.predict(tiny_run, tmp_path / "same", tmp_path / "same")
    shutil.copytree(tmp_path / "same", tmp_path / "copy")
    first = evaluate_folders(tmp_path / "same", tmp_path / "truth", tmp_path / "ev")
    copied = evaluate_folders(tmp_path / "copy", tmp_path / "truth", tmp_path / "ev2")
    assert copied["cases"] == 2 and copied["per_case"] == first["per_case"]


def test_a_study_folder_and_a_mask_of_one_case_are_named_as_given(tmp_path: Path) -> None:
    """A predict study folder x/ beside x_mask.nii.gz was reported as "infection.nii.gz and
    x_mask.nii.gz are both case 'x'", a file the folder listing does not show."""
    mask = nib.Nifti1Image(np.zeros((8, 8, 2), dtype=np.uint8), np.eye(4))
    for path in ("pred/x/infection.nii.gz", "pred/x_mask.nii.gz", "truth/x.nii.gz"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        nib.save(mask, str(tmp_path / path))
    with pytest.raises(CovsegError, match=r"^\S*pred: x/ and x_mask\.nii\.gz are both case 'x'; "
                                          "rename one"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")


def test_a_predict_study_folder_given_as_pred_is_its_infection_mask(tmp_path: Path) -> None:
    """A study folder of predict given as --pred read its infection.nii.gz and lungs.nii.gz as
    two cases, "infection" and "lungs", which paired with no truth."""
    lesion = np.zeros((8, 8, 2), dtype=np.uint8)
    lesion[2:5, 2:5, 0] = 1
    for path, array in (("pred/tr_im/infection.nii.gz", lesion),
                        ("pred/tr_im/lungs.nii.gz", lesion + 1),
                        ("truth/tr_mask.nii.gz", lesion), ("truth/s2.nii.gz", lesion)):
        _save_stack(tmp_path / path, array)
    for truth in ("truth/tr_mask.nii.gz", "truth"):
        result = evaluate_folders(tmp_path / "pred" / "tr_im", tmp_path / truth, tmp_path / "ev")
        assert [(row["case_id"], row["dice"]) for row in result["per_case"]] == [("tr", 1.0)]


@pytest.mark.parametrize("levels", [
    np.array([0.0, 0.8]),  # beside a 0/1 mask the set shares no step
    np.linspace(0.0, 1.0, 50),  # a sigmoid's output: many levels
])
def test_a_probability_map_is_refused_as_one(tmp_path: Path, levels: np.ndarray) -> None:
    """A 2D probability map (.npy floats) given as a prediction was refused for its label steps
    ("mask level 0.8 alone cannot tell its class") or taken for an image, where a NIfTI one
    is refused for its fractional values; both now give that reason. Floats that are labels
    times one step the set shares (0/0.5) still read as labels."""
    truth = square_mask(32, 4, 4, 12)
    (tmp_path / "pred").mkdir()
    for name in ("a", "b"):
        _save(tmp_path / "truth" / f"{name}.png", truth * 255)
    np.save(tmp_path / "pred" / "b.npy", truth > 0)
    probabilities = np.where(truth > 0, levels.max(), 0.0)
    probabilities.flat[:levels.size] = levels
    np.save(tmp_path / "pred" / "a.npy", probabilities)
    with pytest.raises(CovsegError, match=r"a\.npy: holds fractional values \(0\.\d+\.\.0\.\d+\), "
                                          r"not labels: threshold it"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    for name in ("a", "b"):
        np.save(tmp_path / "pred" / f"{name}.npy", truth * 0.5)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert result["cases"] == 2 and result["summary"]["dice"]["mean"] == 1.0


def _save_stack(path: Path, array: np.ndarray, dtype: type = np.uint8) -> Path:
    """A NIfTI stack of 0.7 x 0.7 x 5 mm slices, slice k at z = k."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(dtype), np.diag([0.7, 0.7, 5.0, 1.0])), str(path))
    return path


def _ct(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A CT's voxels in HU, fractional as MedSeg's float images may be: air, lung, tissue."""
    return np.random.default_rng(seed).uniform(-1024.0, 1200.0, shape)


def _medseg_stack() -> np.ndarray:
    """Three 32x32 slices (x, y, z): a lesion in slices 0 and 1, none in slice 2."""
    stack = np.zeros((32, 32, 3), dtype=np.uint8)
    stack[..., 0] = square_mask(32, 4, 4, 12)
    stack[..., 1] = square_mask(32, 18, 18, 8)
    return stack


def test_medsegs_nifti_form_is_scored_per_slice(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """MedSeg's ``tr_mask.nii.gz`` never paired with the prediction of ``tr_im.nii.gz``
    ("share no case names"), the fetched folder as truth read ``tr_im.nii.gz`` as a mask, a
    mask file was "folder not found", and a stack of independent slices was one 3D case."""
    truth = _medseg_stack()
    pred = truth.copy()
    pred[..., 1] = 0  # slice 1 missed: Dice 1, 0, 1 (slice 2 empty in both)
    _save_stack(tmp_path / "pred" / "tr_im" / "infection.nii.gz", pred)
    medseg = tmp_path / "medseg"
    _save_stack(medseg / "tr_mask.nii.gz", truth)
    for image in ("tr_im.nii.gz", "val_im.nii.gz"):
        _save_stack(medseg / image, _ct(truth.shape), np.float32)
    whole = evaluate_folders(tmp_path / "pred", medseg, tmp_path / "ev3d")
    assert whole["cases"] == 1 and whole["per_case"][0]["case_id"] == "tr"
    # tr_im beside tr_mask, val_im (MedSeg's test CTs, no mask) for holding a CT
    assert whole["skipped_images"] == ["tr_im.nii.gz", "val_im.nii.gz"]
    assert whole["unmatched_truths"] == []
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                 str(medseg / "tr_mask.nii.gz"), "--out", str(tmp_path / "ev"),
                 "--per-slice"]) == 0
    assert "3 cases, Dice 0.667" in capsys.readouterr().out
    result = json.loads((tmp_path / "ev.json").read_text())
    assert [row["case_id"] for row in result["per_case"]] == ["tr#000", "tr#001", "tr#002"]
    assert [row["dice"] for row in result["per_case"]] == [1.0, 0.0, 1.0]
    assert result["per_slice"] and result["hd95_unit"].startswith("mm (per axial slice")
    from covseg import api

    files = api.evaluate(tmp_path / "pred" / "tr_im" / "infection.nii.gz",
                         medseg / "tr_mask.nii.gz", tmp_path / "files", per_slice=True)
    assert [row["dice"] for row in files["per_case"]] == [1.0, 0.0, 1.0]


def test_per_slice_ids_are_the_files_own_slices(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A stack stored inferior-ward (z spacing -5) named its file slice 0 ``tr#004``, its
    slice 1 ``tr#003``, unlike training's MedSeg ids; a file whose slices are not axial was
    cut across them without a word."""
    truth = _medseg_stack()
    pred = truth.copy()
    pred[..., 0] = 0  # file slice 0 missed
    flipped = np.diag([0.7, 0.7, -5.0, 1.0])
    for name, stack in (("pred", pred), ("truth", truth)):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(stack, flipped), str(tmp_path / name / "tr.nii.gz"))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev",
                              per_slice=True)
    dice = {row["case_id"]: row["dice"] for row in result["per_case"]}
    assert list(dice) == ["tr#000", "tr#001", "tr#002"] and dice["tr#000"] == 0.0
    assert dice["tr#001"] == dice["tr#002"] == 1.0 and not caplog.records
    sagittal = np.array([[0, 0, 5.0, 0], [0, 0.7, 0, 0], [0.7, 0, 0, 0], [0, 0, 0, 1]])
    for name, stack in (("pred", pred), ("truth", truth)):
        nib.save(nib.Nifti1Image(stack, sagittal), str(tmp_path / name / "tr.nii.gz"))
    evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev", per_slice=True)
    assert "stores no axial slices (axes SAR)" in caplog.text


def test_per_slice_hd95_is_in_mm_of_the_slices_own_pixels(tmp_path: Path) -> None:
    """Per-slice HD95 could take the slice thickness for a pixel size unnoticed. Pixels 0.7 mm
    (x) by 0.8 mm (y), slices 5 mm: a lesion shifted 4 voxels along y is 4 x 0.8 = 3.2 mm
    off, per slice and in 3D, not 4 x 5 = 20 mm."""
    truth = np.zeros((40, 40, 3), dtype=np.uint8)  # file axes (x, y, z)
    truth[10:20, 10:20, 0] = 1
    pred = np.zeros_like(truth)
    pred[10:20, 14:24, 0] = 1
    for name, stack in (("pred", pred), ("truth", truth)):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(stack, np.diag([0.7, 0.8, 5.0, 1.0])),
                 str(tmp_path / name / "tr.nii.gz"))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev",
                              per_slice=True)
    hd95 = {row["case_id"]: row["hd95"] for row in result["per_case"]}
    assert hd95["tr#000"] == pytest.approx(3.2)
    assert hd95["tr#001"] == hd95["tr#002"] == 0.0
    whole = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev3d")
    assert whole["per_case"][0]["hd95"] == pytest.approx(3.2)


@pytest.mark.parametrize("shift, mm", [((4, 0, 0), 2.8), ((0, 0, 1), 5.0)])
def test_hd95_in_3d_takes_each_axis_its_own_voxel_size(tmp_path: Path, shift: tuple[int, ...],
                                                       mm: float) -> None:
    """Voxels 0.7 (x) by 0.8 (y) by 5 mm (z): a lesion shifted 4 voxels along x is 2.8 mm off
    and one slice along z 5 mm, where voxel sizes taken in reverse order made them 20 and
    0.7 mm (a shift along y, 0.8 mm either way, could not tell)."""
    truth = np.zeros((40, 40, 3), dtype=np.uint8)  # file axes (x, y, z)
    truth[10:20, 10:20, 0] = 1
    for name, stack in (("pred", np.roll(truth, shift, axis=(0, 1, 2))), ("truth", truth)):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(stack, np.diag([0.7, 0.8, 5.0, 1.0])),
                 str(tmp_path / name / "tr.nii.gz"))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert result["per_case"][0]["hd95"] == pytest.approx(mm)


def test_hd95_of_2d_masks_and_volumes_is_given_apart_by_unit(tmp_path: Path) -> None:
    """A folder of a 2D mask and a NIfTI volume averaged HD95 10 px and 20 mm into a mean of
    15, in one ``hd95`` column: they are given apart as ``hd95_mm`` and ``hd95_px`` now, in the
    JSON's summary and per-case rows and in the CSV, as docs/metrics.md says."""
    truth = square_mask(64, 10, 10, 20)
    _save(tmp_path / "truth" / "a.png", truth * 255)
    _save(tmp_path / "pred" / "a.png", np.roll(truth, 10, axis=0) * 255)
    block = np.zeros((32, 32, 4), np.uint8)
    block[5:15, 5:15, 1:3] = 1
    for name, stack in (("truth", block), ("pred", np.roll(block, 10, axis=1))):
        nib.save(nib.Nifti1Image(stack, np.diag([2.0, 2.0, 2.0, 1.0])),
                 str(tmp_path / name / "b.nii.gz"))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    summary = result["summary"]
    assert "hd95" not in summary
    assert summary["hd95_px"]["mean"] == pytest.approx(10.0) and summary["hd95_px"]["n"] == 1
    assert summary["hd95_mm"]["mean"] == pytest.approx(20.0) and summary["hd95_mm"]["n"] == 1
    rows = {row["case_id"]: row for row in result["per_case"]}
    assert math.isnan(rows["a"]["hd95_mm"]) and math.isnan(rows["b"]["hd95_px"])
    assert "hd95_px" in result["hd95_unit"] and "hd95_mm" in result["hd95_unit"]
    header = (tmp_path / "ev.csv").read_text().splitlines()[0].split(",")
    assert "hd95" not in header and {"hd95_mm", "hd95_px"} <= set(header)
    assert json.loads((tmp_path / "ev.json").read_text())["summary"]["hd95_mm"]["n"] == 1
    alone = evaluate_folders(tmp_path / "pred" / "b.nii.gz", tmp_path / "truth" / "b.nii.gz",
                             tmp_path / "ev_b")
    assert alone["summary"]["hd95"]["mean"] == pytest.approx(20.0)


@pytest.mark.parametrize("ct", [
    _ct((32, 32, 3)).astype(np.float32),  # fractional HU: no int16 read
    _ct((32, 32, 3)).round().astype(np.int16),  # whole HU
])
def test_medsegs_test_images_are_skipped_not_truths(tmp_path: Path, ct: np.ndarray,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """``covseg data fetch medseg``'s folder as truth: ``val_im.nii.gz`` (its test CTs, no mask)
    was reported as the unmatched truth ``val``, and once ``val_im`` was predicted too, read as
    its truth (refused as a probability map, or as an image); it is now skipped with one
    warning, its prediction not scored (nor called one without a truth)."""
    truth = _medseg_stack()
    medseg = tmp_path / "medseg"
    _save_stack(medseg / "tr_mask.nii.gz", truth)
    for image in ("tr_im.nii.gz", "val_im.nii.gz"):
        nib.save(nib.Nifti1Image(ct, np.diag([0.7, 0.7, 5.0, 1.0])), str(medseg / image))
    _save_stack(tmp_path / "pred" / "tr_im" / "infection.nii.gz", truth)
    result = evaluate_folders(tmp_path / "pred", medseg, tmp_path / "ev")
    assert result["cases"] == 1 and result["summary"]["dice"]["mean"] == 1.0
    assert result["skipped_images"] == ["tr_im.nii.gz", "val_im.nii.gz"]
    assert result["unmatched_truths"] == [] and result["unmatched_predictions"] == []
    skipped = [r.getMessage() for r in caplog.records if "an image" in r.getMessage()]
    assert len(skipped) == 1 and re.fullmatch(
        rf"{re.escape(str(medseg / 'val_im.nii.gz'))}: not a mask but an image \(.*\); pass "
        r"masks holding labels 0\.\.K or 0/255; skipped", skipped[0])
    _save_stack(tmp_path / "pred" / "val_im" / "infection.nii.gz", truth)
    both = evaluate_folders(tmp_path / "pred", medseg, tmp_path / "ev")
    assert both["cases"] == 1 and both["per_case"][0]["case_id"] == "tr"
    assert both["unmatched_predictions"] == []  # its truth is skipped, named so
    assert both["skipped_images"] == ["tr_im.nii.gz", "val_im.nii.gz"]


def _soft_and_sharp() -> tuple[np.ndarray, np.ndarray]:
    """A 0/255 mask of discs halved in size with bilinear interpolation (grey soft edges: a
    soft mask), and with nearest-neighbour (still 0/255)."""
    yy, xx = np.mgrid[:192, :192]
    blobs = (((yy % 48) - 24) ** 2 + ((xx % 48) - 24) ** 2 < 20 ** 2).astype(np.uint8) * 255
    soft, sharp = (np.asarray(Image.fromarray(blobs).resize((96, 96), resample))
                   for resample in (Image.Resampling.BILINEAR, Image.Resampling.NEAREST))
    return soft, sharp


def test_a_soft_2d_truth_is_skipped_told_to_threshold_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 0/255 truth resized with bilinear interpolation (grey levels at its edges) was skipped
    as "an image, not a mask", alone refused as an image; training reads tell it is a soft mask
    to threshold at 128 or resize nearest-neighbour, and evaluate now says the same, skipping it
    still."""
    soft, sharp = _soft_and_sharp()
    _save(tmp_path / "truth" / "a.png", sharp)
    _save(tmp_path / "truth" / "b.png", soft)
    for name in ("a", "b"):
        _save(tmp_path / "pred" / f"{name}.png", sharp)
    with pytest.raises(CovsegError) as refused:
        read_oriented_mask(tmp_path / "truth" / "b.png")
    told = str(refused.value).replace(str(tmp_path / "truth" / "b.png"), "")
    assert "soft mask" in told and "threshold it at half its maximum (128)" in told
    with caplog.at_level("WARNING"):
        result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert result["cases"] == 1 and result["skipped_images"] == ["b.png"]
    assert f"{tmp_path / 'truth' / 'b.png'}{told}; skipped" in caplog.text
    with pytest.raises(CovsegError) as alone:
        evaluate_folders(tmp_path / "pred" / "b.png", tmp_path / "truth" / "b.png",
                         tmp_path / "ev_b")
    assert str(alone.value) == str(refused.value)


def test_a_skipped_truth_is_noted_as_no_mask_of_labels_and_its_prediction_not_unmatched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A soft truth, warned of as a soft mask and skipped, was noted as "an image among the
    masks (named as images beside their masks, or holding a CT)" and its prediction as one
    "without a truth": neither was so. The note says what is skipped; its prediction is not
    called unmatched, as one with no truth file still is."""
    soft, sharp = _soft_and_sharp()
    _save(tmp_path / "truth" / "a.png", sharp)
    _save(tmp_path / "truth" / "b.png", soft)
    for name in ("a", "b", "c"):
        _save(tmp_path / "pred" / f"{name}.png", sharp)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert ("warning: 1 file among the masks, no mask of labels, not scored (named as an image "
            "beside its mask, or by its levels an image, a soft mask or a lossy mask of several "
            "classes: see the warnings above): "
            "b.png") in err
    assert "warning: 1 prediction without a truth, not scored: c.png\n" in err


def _lossy_scaled_labels() -> np.ndarray:
    """Labels 0/1/2 scaled to 0/127/254 with noise of a few levels around each (a lossy copy):
    over 16 levels, 5 % of pixels mid-grey, gathered near the label levels, not spread as a
    soft mask's edges are."""
    labels = np.zeros((64, 64))
    labels[10:40, 10:40], labels[20:34, 20:34] = 254, 127
    noise = np.random.default_rng(0).integers(-4, 5, labels.shape)
    return np.clip(labels + noise, 0, 255)


@pytest.mark.parametrize("kind", ["soft", "lossy"])
def test_one_file_is_told_one_way_as_pred_and_as_truth(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    """A prediction had its own soft-mask rule (its levels alone): a lossy mask of scaled labels
    was "a probability map or soft mask ... threshold it" as --pred but "an image" as --truth.
    Both sides tell a file by one rule, in one wording, each with its own advice: the lossy
    mask in the words training reads tell it with."""
    odd = _soft_and_sharp()[0] if kind == "soft" else _lossy_scaled_labels()
    sharp = (odd >= 128).astype(np.uint8) * 255
    found = {"soft": "not a mask of labels but, by its levels, a soft mask or probability map (",
             "lossy": "a mask of several classes saved lossily ("}[kind]
    told = {}
    for side, other in (("pred", "truth"), ("truth", "pred")):
        _save(tmp_path / side / side / "b.png", odd)
        for name in ("a", "b"):
            _save(tmp_path / side / other / f"{name}.png", sharp)
        _save(tmp_path / side / side / "a.png", sharp)
        caplog.clear()
        try:
            with caplog.at_level("WARNING"):
                evaluate_folders(tmp_path / side / "pred", tmp_path / side / "truth",
                                 tmp_path / side / "ev")
            told[side] = caplog.text
        except CovsegError as refused:
            told[side] = str(refused)
    assert all(found in text for text in told.values()), told
    assert "give covseg predict's output masks as --pred" in told["pred"]
    assert "; skipped" in told["truth"]


def _soft_masks() -> list[np.ndarray]:
    """Probability maps (x, y, z) with over 2 % of voxels between 0.25 and 0.75 and as many
    levels as an image: a sigmoid's output over random logits, and a lesion's soft edge (a disc
    ramping from 1 inside to 0 over 6 voxels, as a mask interpolated onto a finer grid)."""
    logits = np.random.default_rng(1).normal(0.0, 1.0, (32, 32, 3))
    x, y = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    edge = np.clip((10.0 - np.hypot(x - 15.5, y - 12.3)) / 6.0, 0.0, 1.0)
    return [(1 / (1 + np.exp(-logits))).astype(np.float32),
            np.stack([edge] * 3, axis=-1).astype(np.float32)]


@pytest.mark.parametrize("soft", _soft_masks())
def test_probability_map_truths_are_refused_as_such(tmp_path: Path, soft: np.ndarray) -> None:
    """A NIfTI probability map or interpolated soft mask among the truths (over 16 levels,
    over 2 % of voxels mid-grey) was skipped as "an image, not a mask", and alone refused as an
    image, where it needs thresholding; it is refused as holding fractional values, as a CT
    (values beyond labels 0..15) is still skipped. A 0..1 one named as MedSeg's unmatched
    ``val_im`` is no image: an unmatched truth, not skipped."""
    truth = _medseg_stack()
    _save_stack(tmp_path / "truth" / "a.nii.gz", truth)
    _save_stack(tmp_path / "truth" / "b.nii.gz", soft, np.float32)
    for name in ("a", "b"):
        _save_stack(tmp_path / "pred" / f"{name}.nii.gz", truth)
    assert np.mean((soft > 0.25) & (soft < 0.75)) > 0.02 and np.unique(soft).size > 16
    refusal = r"b\.nii\.gz: holds fractional values \(0\.\d+\.\.0\.\d+\), not labels: threshold it"
    with pytest.raises(CovsegError, match=refusal):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    with pytest.raises(CovsegError, match=refusal):
        evaluate_folders(tmp_path / "pred" / "b.nii.gz", tmp_path / "truth" / "b.nii.gz",
                         tmp_path / "ev")
    medseg = tmp_path / "medseg"
    _save_stack(medseg / "tr_mask.nii.gz", truth)
    _save_stack(medseg / "val_im.nii.gz", soft, np.float32)
    _save_stack(tmp_path / "medseg_pred" / "tr_im" / "infection.nii.gz", truth)
    result = evaluate_folders(tmp_path / "medseg_pred", medseg, tmp_path / "ev")
    assert result["cases"] == 1 and result["skipped_images"] == []
    assert result["unmatched_truths"] == ["val"]
    _save_stack(tmp_path / "medseg_pred" / "val_im" / "infection.nii.gz", truth)
    with pytest.raises(CovsegError, match=r"val_im\.nii\.gz: holds fractional values"):
        evaluate_folders(tmp_path / "medseg_pred", medseg, tmp_path / "ev")


@pytest.mark.parametrize("ct", [
    _ct((32, 32, 3)).astype(np.float32),  # fractional HU: read as int16, refused for fractions
    _ct((32, 32, 3)).round().astype(np.int16),  # whole HU
])
def test_a_ct_given_as_prediction_is_refused_as_an_image(
        tmp_path: Path, ct: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    """A float CT given as the prediction was told to threshold it as a probability map (an
    int16 one that it "has negative values"); both are told it is an image, and what to give."""
    truth = _medseg_stack()
    _save_stack(tmp_path / "truth" / "a.nii.gz", truth)
    nib.save(nib.Nifti1Image(ct, np.diag([0.7, 0.7, 5.0, 1.0])), str(tmp_path / "pred.nii.gz"))
    with pytest.raises(CovsegError, match=r"pred\.nii\.gz: not a prediction mask but an image "
                                          r"\(\d+ grey levels, \d+% of pixels mid-grey\); give "
                                          r"covseg predict's output masks as --pred$"):
        evaluate_folders(tmp_path / "pred.nii.gz", tmp_path / "truth" / "a.nii.gz",
                         tmp_path / "ev")
    assert main(["evaluate", "--pred", str(tmp_path / "pred.nii.gz"), "--truth",
                 str(tmp_path / "truth" / "a.nii.gz"), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a prediction mask but an image" in err
    soft = _soft_masks()[0]
    _save_stack(tmp_path / "pred.nii.gz", soft, np.float32)  # a probability map keeps its reason
    with pytest.raises(CovsegError, match=r"pred\.nii\.gz: holds fractional values"):
        evaluate_folders(tmp_path / "pred.nii.gz", tmp_path / "truth" / "a.nii.gz",
                         tmp_path / "ev")


@pytest.mark.parametrize("mask", [
    np.stack([square_mask(32, 4, 4, 12)] * 3, axis=-1),  # 0/1
    np.stack([square_mask(32, 4, 4, 12) * 255] * 3, axis=-1),  # 0/255
    np.stack([square_mask(32, 4, 4, 12) * k for k in (1, 2, 3)], axis=-1),  # 0/1/2/3
    np.stack([square_mask(32, 4, 4, 12) * 85 * k for k in (1, 2, 3)], axis=-1),  # MedSeg scaled
])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_masks_named_as_images_are_no_images(tmp_path: Path, mask: np.ndarray,
                                             dtype: type) -> None:
    """Label masks (0/1, 0/255, 0..3, in uint8, int16 or float NIfTI files) named ``X_im``, a
    prediction's or a data set's name for them, are truths, scored or unmatched, not skipped."""
    for name in ("a_im", "b_im"):
        _save_stack(tmp_path / "truth" / f"{name}.nii.gz", mask, dtype)
    _save_stack(tmp_path / "pred" / "a_im.nii.gz", mask, dtype)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert result["cases"] == 1 and result["summary"]["dice"]["mean"] == 1.0
    assert result["unmatched_truths"] == ["b"] and result["skipped_images"] == []


def test_a_jpeg_truth_is_no_image(tmp_path: Path) -> None:
    """A lossy 0/255 truth (many levels, few of them mid-grey) is a mask, not skipped."""
    mask = square_mask(64, 10, 10, 30) * 255
    (tmp_path / "truth").mkdir()
    for name in ("a_im", "b_im"):
        Image.fromarray(mask).save(tmp_path / "truth" / f"{name}.jpg", quality=50)
    assert np.unique(np.asarray(Image.open(tmp_path / "truth" / "a_im.jpg"))).size > 16
    _save(tmp_path / "pred" / "a_im.png", mask)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert result["summary"]["dice"]["mean"] == 1.0 and result["skipped_images"] == []
    assert result["unmatched_truths"] == ["b"]


def test_a_mask_named_im_is_skipped_only_beside_its_own_mask(tmp_path: Path) -> None:
    """Truths p1_mask, p2_mask and scan_im: the mask scan_im was skipped as an image because
    other files end in _mask, and its prediction was reported unmatched as "scan"."""
    lesion = square_mask(32, 4, 4, 12)
    for name in ("p1_mask", "p2_mask", "scan_im", "tr_im", "tr_mask"):
        _save(tmp_path / "truth" / f"{name}.png", lesion)
    for name in ("p1", "p2", "scan_im", "tr", "other_im"):
        _save(tmp_path / "pred" / f"{name}.png", lesion * 255)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert [row["case_id"] for row in result["per_case"]] == ["p1", "p2", "scan_im", "tr"]
    assert result["skipped_images"] == ["tr_im.png"]
    assert result["unmatched_predictions"] == ["other_im.png"]


def test_no_shared_names_shows_names_of_both_sides(tmp_path: Path) -> None:
    """The error said only "share no case names", so the user could not see why."""
    _save(tmp_path / "pred" / "slice_1.png", square_mask(32, 4, 4, 12) * 255)
    _save(tmp_path / "truth" / "case1.png", square_mask(32, 4, 4, 12))
    with pytest.raises(CovsegError, match=r"share no case names \(predictions: slice_1; "
                                          r"truths: case1\); name masks alike"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CovsegError, match=r"notes.txt: not a mask file .*; give the truth folder"):
        evaluate_folders(tmp_path / "pred", tmp_path / "notes.txt", tmp_path / "ev")


def test_a_truth_predict_failed_on_is_scored_as_an_empty_prediction(tmp_path: Path) -> None:
    """A test image predict could not read left its truth out of the mean (49 of 50 slices,
    exit 0): the input predict.json lists as failed now scores as an empty mask, and is named;
    a truth never given to predict (another shard, a subset) is named, not scored."""
    lesion = square_mask(32, 4, 4, 12)
    for name in ("a", "b", "c"):
        _save(tmp_path / "truth" / f"{name}.png", lesion)
    _save(tmp_path / "pred" / "a.png", lesion * 255)
    _save(tmp_path / "pred" / "extra.png", lesion * 255)
    (tmp_path / "pred" / "predict.json").write_text(json.dumps(
        {"model": {"num_classes": 2}, "inputs": ["/x/a.png", "/x/b.tif"],
         "failed": {"/x/b.tif": "unreadable"}}))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    dice = {row["case_id"]: row["dice"] for row in result["per_case"]}
    assert dice == {"a": 1.0, "b": 0.0}
    assert result["missing_predictions"] == ["b"] and result["unmatched_truths"] == ["c"]
    assert result["unmatched_predictions"] == ["extra.png"]
    assert result["summary"]["dice"]["n"] == 2


def test_a_mask_gone_from_a_predict_folder_is_scored_as_an_empty_prediction(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A mask deleted from predict's --out (its predict.json still listing the image) left the
    case out of the mean, said to be "not given to this predict"; it scores as empty now. A
    folder without predict.json (a predict killed before writing it) claimed the same of its
    undone images: it says "no prediction of that name" and warns of an interrupted predict."""
    lesion = square_mask(32, 4, 4, 12)
    for name in ("a", "b", "c"):
        _save(tmp_path / "truth" / f"{name}.png", lesion)
    _save(tmp_path / "pred" / "a.png", lesion * 255)
    (tmp_path / "pred" / "predict.json").write_text(json.dumps(
        {"model": {"num_classes": 2}, "inputs": ["/x/a.png", "/x/b.jpg"], "masks": 2,
         "failed": {}}))
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]
    assert main([*args, "--out", str(tmp_path / "ev")]) == 0
    result = json.loads((tmp_path / "ev.json").read_text())
    assert {row["case_id"]: row["dice"] for row in result["per_case"]} == {"a": 1.0, "b": 0.0}
    assert result["missing_predictions"] == ["b"] and result["unmatched_truths"] == ["c"]
    err = capsys.readouterr().err
    assert "warning: 1 truth whose input predict recorded as failed or wrote no mask of" in err
    assert "warning: 1 truth without a prediction (not given to this predict), not scored: c" in (
        err)
    one = evaluate_folders(tmp_path / "pred" / "a.png", tmp_path / "truth", tmp_path / "ev1")
    assert one["missing_predictions"] == [] and one["unmatched_truths"] == ["b", "c"]
    (tmp_path / "pred" / "predict.json").unlink()
    caplog.clear()
    assert main([*args, "--out", str(tmp_path / "ev2")]) == 0
    result = json.loads((tmp_path / "ev2.json").read_text())
    assert result["missing_predictions"] == [] and result["unmatched_truths"] == ["b", "c"]
    assert result["predict_record"] is False
    assert "warning: 2 truths without a prediction of that name, not scored: b, c" in (
        capsys.readouterr().err)
    assert "holds 0/255 masks but no predict.json, so 2 truths without a prediction" in caplog.text
    assert "interrupted, rerun it to finish" in caplog.text


def test_one_mask_given_as_pred_is_scored_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--pred pred/a.png`` scored the image predict recorded as failed beside it as a Dice-0
    case (halving the mean) and said predict's other masks were "not given to this predict",
    though its predict.json lists them: only the mask given is scored now."""
    lesion = square_mask(32, 4, 4, 12)
    for name in ("a", "b", "c"):
        _save(tmp_path / "truth" / f"{name}.png", lesion)
    for name in ("a", "b"):
        _save(tmp_path / "pred" / f"{name}.png", lesion * 255)
    (tmp_path / "pred" / "predict.json").write_text(json.dumps(
        {"model": {"num_classes": 2}, "inputs": ["/x/a.png", "/x/b.png", "/x/c.jpg"],
         "failed": {"/x/c.jpg": "unreadable"}}))
    args = ["evaluate", "--pred", str(tmp_path / "pred" / "a.png"), "--truth",
            str(tmp_path / "truth"), "--out", str(tmp_path / "ev")]
    assert main(args) == 0
    result = json.loads((tmp_path / "ev.json").read_text())
    assert [row["case_id"] for row in result["per_case"]] == ["a"]
    assert result["missing_predictions"] == [] and result["unmatched_truths"] == ["b", "c"]
    assert result["predict_record"] is False
    printed = capsys.readouterr()
    assert printed.out.startswith("1 case, Dice 1.000; wrote ") and printed.out.count("\n") == 1
    assert "not given to this predict" not in printed.err
    assert "warning: 2 truths without a prediction of that name, not scored: b, c" in printed.err


def test_truths_pending_in_an_unfinished_predict_are_named_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A truth of an image or study a stopped predict had not finished was said to be "not
    given to this predict" (2D: under the warning that it did not finish; CT: with no warning),
    and a study killed before its record (mask written, no quantification.json) was scored as
    done: they are ``pending_truths`` now, the CT predict warned of, its study's mask not
    scored."""
    lesion = square_mask(32, 4, 4, 12)
    for name in ("a", "b", "c"):
        _save(tmp_path / "truth2d" / f"{name}.png", lesion)
    _save(tmp_path / "pred2d" / "a.png", lesion * 255)
    (tmp_path / "pred2d" / "predict.json").write_text(json.dumps(
        {"model": {"num_classes": 2}, "inputs": [], "masks": 0, "failed": {},
         "pending": ["/x/a.png", "/x/b.png"]}))
    args = ["evaluate", "--pred", str(tmp_path / "pred2d"), "--truth", str(tmp_path / "truth2d")]
    assert main([*args, "--out", str(tmp_path / "ev2d")]) == 0
    result = json.loads((tmp_path / "ev2d.json").read_text())
    assert result["cases"] == 1 and result["pending_truths"] == ["b"]
    assert result["unmatched_truths"] == ["c"]
    err = capsys.readouterr().err
    assert "warning: 1 truth pending in the predict that did not finish" in err
    assert "(not given to this predict), not scored: c" in err
    stack = np.zeros((8, 8, 2), np.uint8)
    stack[2:5, 2:5, 0] = 1
    for name in ("s0", "s1", "s2", "s3"):
        _save_stack(tmp_path / "truth" / f"{name}.nii.gz", stack)
    for name in ("s0", "s1"):  # s1: killed after its mask, before its record
        _save_stack(tmp_path / "pred" / name / "infection.nii.gz", stack)
    rows = [{"study": name, "status": "pending"} for name in ("s0", "s1", "s2")]
    (tmp_path / "pred" / "s0" / "quantification.json").write_text("{}")  # done, then killed
    (tmp_path / "pred" / "summary.csv").write_text(csv_text(rows, SUMMARY_FIELDS))
    caplog.clear()
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert [row["case_id"] for row in result["per_case"]] == ["s0"]
    assert result["pending_truths"] == ["s1", "s2"] and result["unmatched_truths"] == ["s3"]
    assert "its summary CSV lists 2 studies of a covseg predict that did not finish" in (
        caplog.text)


def test_a_predict_killed_in_its_only_study_says_rerun_it_not_rename_masks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CT predict killed after its one study's mask, before its record, was refused as two
    folders that "share no case names" (predictions: none), told to name masks alike: the
    unfinished predict is named now, and the rerun that finishes it."""
    stack = np.zeros((8, 8, 2), np.uint8)
    stack[2:5, 2:5, 0] = 1
    _save_stack(tmp_path / "truth" / "s0.nii.gz", stack)
    _save_stack(tmp_path / "pred" / "s0" / "infection.nii.gz", stack)
    rows = [{"study": "s0", "status": "pending"}]
    (tmp_path / "pred" / "summary.csv").write_text(csv_text(rows, SUMMARY_FIELDS))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                 str(tmp_path / "truth"), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "share no case names" not in err
    assert "its summary CSV lists 1 study of a covseg predict that did not finish" in err
    assert err.rstrip().endswith("rerun it to finish")
    assert not (tmp_path / "ev.json").exists()


@pytest.mark.parametrize("kind", ["2d", "ct"])
def test_a_predict_stopped_before_its_first_mask_says_rerun_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """A predict stopped (Ctrl-C, SIGTERM, SIGHUP) before its first mask was refused as a
    prediction folder of "no masks", as if the wrong folder was given: the unfinished predict
    is named now, and the rerun that finishes it."""
    pred = tmp_path / "pred"
    if kind == "2d":
        _save(tmp_path / "truth" / "a.png", square_mask(32, 4, 4, 12))
        pred.mkdir()
        (pred / "predict.json").write_text(json.dumps(
            {"model": {"num_classes": 2}, "inputs": [], "masks": 0, "failed": {},
             "pending": ["/x/a.png", "/x/b.png"]}))
        told = "its predict.json lists 2 images of a covseg predict that did not finish"
    else:
        stack = np.zeros((8, 8, 2), np.uint8)
        _save_stack(tmp_path / "truth" / "a.nii.gz", stack)
        (pred / "a").mkdir(parents=True)  # the study folder, empty when stopped
        rows = [{"study": "a", "status": "pending"}]
        (pred / "summary.csv").write_text(csv_text(rows, SUMMARY_FIELDS))
        told = "its summary CSV lists 1 study of a covseg predict that did not finish"
    assert main(["evaluate", "--pred", str(pred), "--truth", str(tmp_path / "truth"),
                 "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no masks" not in err and told in err, err
    assert err.rstrip().endswith("rerun it to finish")


def test_one_shard_of_a_volume_batch_scores_its_own_studies(tmp_path: Path) -> None:
    """Evaluating predict --shard 0/2's output against all truths scored the other shard's
    studies as empty predictions; only a study its summary marks failed is scored so now."""
    stack = np.zeros((8, 8, 2), np.uint8)
    stack[2:5, 2:5, 0] = 1
    for name in ("s0", "s1", "s2", "s3"):
        _save_stack(tmp_path / "truth" / f"{name}.nii.gz", stack)
    _save_stack(tmp_path / "pred" / "s0" / "infection.nii.gz", stack)
    rows = [{"study": "s0", "status": "done"}, {"study": "s2", "status": "failed"}]
    (tmp_path / "pred" / "summary_shard0of2.csv").write_text(csv_text(rows, SUMMARY_FIELDS))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert [row["case_id"] for row in result["per_case"]] == ["s0", "s2"]
    assert result["missing_predictions"] == ["s2"]
    assert result["unmatched_truths"] == ["s1", "s3"]


def test_a_data_folder_given_as_truth_names_its_masks_folder(tmp_path: Path) -> None:
    """``--truth DATA`` (the folder train reads) said only "no masks"; it names DATA/masks."""
    lesion = square_mask(32, 4, 4, 12)
    _save(tmp_path / "data" / "images" / "a.png", np.arange(32 * 32).reshape(32, 32) % 256)
    _save(tmp_path / "data" / "masks" / "a.png", lesion)
    _save(tmp_path / "pred" / "a.png", lesion * 255)
    masks = tmp_path / "data" / "masks"
    with pytest.raises(CovsegError, match=r"data: a data folder \(images/ \+ masks/: images and "
                                          rf"their masks\), not masks; give {masks} as --truth$"):
        evaluate_folders(tmp_path / "pred", tmp_path / "data", tmp_path / "ev")
    assert evaluate_folders(tmp_path / "pred", masks, tmp_path / "ev")["cases"] == 1


def test_a_truth_folder_mixing_0_1_and_0_255_masks_is_scored(tmp_path: Path) -> None:
    """MedSeg's 0/1 truths beside Inf-Net's 0/255 ones were refused ("mask level 255 alone
    cannot tell its class"); every mask is binary, so each reads as 0/1."""
    lesion = square_mask(32, 4, 4, 12)
    _save(tmp_path / "truth" / "a.png", lesion)
    _save(tmp_path / "truth" / "b.png", lesion * 255)
    for name in ("a", "b"):
        _save(tmp_path / "pred" / f"{name}.png", lesion * 255)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert {row["case_id"]: row["dice"] for row in result["per_case"]} == {"a": 1.0, "b": 1.0}
    assert result["num_classes"] == 2


def test_an_8_bit_probability_map_as_pred_is_called_one_not_an_image(tmp_path: Path) -> None:
    """A blurred 0..255 mask saved as PNG was "not a prediction mask but an image"; its few
    mid-grey pixels say probability map, to threshold. A CT slice is still called an image."""
    rows, cols = np.mgrid[:64, :64]
    distance = np.hypot(rows - 32, cols - 32)
    soft = np.clip((20 - distance) * 80 + 128, 0, 255)  # a disk with a ramp ~3 px wide
    assert np.unique(soft.astype(np.uint8)).size > 16
    _save(tmp_path / "pred" / "a.png", soft)
    _save(tmp_path / "truth" / "a.png", distance < 20)
    with pytest.raises(CovsegError, match=r"a.png: not a mask of labels but, by its levels, a "
                                          r"soft mask or probability map \(\d+ grey levels, \d% of "
                                          r"pixels mid-grey: few for an image\), .*; threshold it "
                                          r"at half its maximum \(128\), or give covseg "
                                          r"predict's output masks as --pred"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    ct = np.random.default_rng(0).integers(0, 256, (64, 64))
    _save(tmp_path / "pred" / "a.png", ct)
    with pytest.raises(CovsegError, match=r"a.png: not a prediction mask but an image \(256 grey "
                                          r"levels, \d+% of pixels mid-grey\); give covseg"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")


def test_one_case_prints_no_spread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One case printed "Dice 1.000 ± 0.000", a spread no single value has; two print their
    sample SD (1 and 0: 0.707, not the population SD 0.500)."""
    lesion = square_mask(32, 4, 4, 12)
    _save(tmp_path / "truth" / "a.png", lesion * 255)
    _save(tmp_path / "pred" / "a.png", lesion * 255)
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert capsys.readouterr().out.startswith("1 case, Dice 1.000; wrote ")
    _save(tmp_path / "truth" / "b.png", lesion * 255)
    _save(tmp_path / "pred" / "b.png", lesion * 0)
    assert main([*args, "--out", str(tmp_path / "two")]) == 0
    assert capsys.readouterr().out.startswith(
        "2 cases, Dice 0.500 ± 0.707 (mean ± sample SD); wrote ")


def test_per_slice_of_2d_masks_is_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--per-slice on PNG folders was taken without a word (each file is one slice already)
    and recorded as per_slice: true; it is refused, as predict refuses options that do not
    apply. Beside a NIfTI volume it applies to that volume, and is taken."""
    lesion = square_mask(32, 4, 4, 12) * 255
    for side in ("pred", "truth"):
        _save(tmp_path / side / "a.png", lesion)
    with pytest.raises(CovsegError, match=r"^--per-slice: for volumes only \(NIfTI, NRRD, "
                                          r"MetaImage\), and these masks are 2D slices "
                                          r"\(each file is one slice already\); drop "
                                          r"--per-slice$"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev", per_slice=True)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                 str(tmp_path / "truth"), "--out", str(tmp_path / "ev"), "--per-slice"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("covseg: error: --per-slice: for volumes only (NIfTI, NRRD, "
                          "MetaImage)") and err.count("\n") == 1
    assert not list(tmp_path.glob("ev.*")), "refused before writing"
    stack = _medseg_stack()
    for side in ("pred", "truth"):
        _save_stack(tmp_path / side / "v.nii.gz", stack)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev",
                              per_slice=True)
    assert [row["case_id"] for row in result["per_case"]] == ["a", "v#000", "v#001", "v#002"]


def test_one_folder_as_both_pred_and_truth_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The same folder (or file) as --pred and --truth scored Dice 1.000 without a word; as
    resolved, so ./masks and masks are one."""
    _save(tmp_path / "masks" / "a.png", square_mask(32, 4, 4, 12) * 255)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CovsegError, match=r"^--pred and --truth name the same folder, masks: "
                                          r"every mask would score 1\.0 against itself; give "
                                          r"the predicted masks as --pred and the true masks "
                                          r"as --truth$"):
        evaluate_folders("./masks", "masks", "ev")
    with pytest.raises(CovsegError, match=r"^--pred and --truth name the same file, masks/a\.png"):
        evaluate_folders("masks/a.png", str(tmp_path / "masks" / "a.png"), "ev")
    assert main(["evaluate", "--pred", "./masks/", "--truth", "masks", "--out", "ev"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("covseg: error: --pred and --truth name the same folder, masks:")
    assert not list(tmp_path.glob("ev.*")), "refused before writing"


@pytest.mark.parametrize("form", ["file inside pred", "pred inside truth", "study folder"])
def test_one_mask_file_on_both_sides_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """--pred pred --truth pred/a.png (or the reverse), or a predict study folder as --pred
    and its own infection.nii.gz as --truth, scored the mask against itself: Dice 1.000, exit
    0; only the two paths as given were compared."""
    _save(tmp_path / "pred" / "a.png", square_mask(32, 4, 4, 12) * 255)
    _save(tmp_path / "pred" / "b.png", square_mask(32, 8, 8, 12) * 255)
    _save_stack(tmp_path / "study" / "infection.nii.gz", np.ones((8, 8, 3)))
    monkeypatch.chdir(tmp_path)
    pred, truth, same = {"file inside pred": ("pred", "pred/a.png", "pred/a.png"),
                         "pred inside truth": ("pred/b.png", "pred", "pred/b.png"),
                         "study folder": ("study", "study/infection.nii.gz",
                                          "study/infection.nii.gz")}[form]
    with pytest.raises(CovsegError, match=rf"^--pred and --truth give one mask file as both, "
                                          rf"{re.escape(same)}: every mask would score 1\.0 "
                                          r"against itself; give the predicted masks as --pred "
                                          r"and the true masks as --truth$"):
        evaluate_folders(pred, truth, "ev")
    assert not list(tmp_path.glob("ev.*")), "refused before writing"


class _ShiftingPredictor:
    """Predicts each slice's own truth moved two columns right: a known HD95 of 2 columns. A
    slice is known by its image's bytes: a sample makes its image anew on each access."""

    batch_size = 2
    num_classes = 2

    def __init__(self, truths: dict[bytes, np.ndarray]) -> None:
        self.truths = truths

    def predict_labels(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [np.roll(self.truths[image.tobytes()], 2, axis=1) for image in images]


def test_cv_scores_a_volumes_slices_in_mm(tmp_path: Path) -> None:
    """cv and compare scored a volume's slices' HD95 in pixels (evaluate_samples passed no
    spacing) while evaluate and docs/metrics.md give mm on NIfTI volumes; with 0.5 x 2.0 mm pixels a
    shift of two columns is 4 mm, not 2 px (nor 1 mm: rows and columns are told apart)."""
    from covseg.data import load_dataset
    from covseg.data.synthetic import synthetic_slices
    from covseg.evaluate import evaluate_samples

    items = synthetic_slices(0, patients=1, slices_per_patient=3, size=32)
    hu = np.stack([item.hu for _, _, item in items])
    lesions = np.zeros_like(hu, dtype=np.int16)
    lesions[:, 10:20, 8:14] = 1
    affine = np.diag([2.0, 0.5, 5.0, 1.0])  # x (columns) 2.0 mm, y (rows) 0.5 mm
    for folder, zyx in (("images", hu.astype(np.int16)), ("masks", lesions)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0), affine), tmp_path / folder / "v.nii.gz")
    data = load_dataset(tmp_path)
    assert [s.spacing for s in data.samples] == [(0.5, 2.0)] * 3 and data.hd95_unit == "mm"
    predictor = _ShiftingPredictor({s.image.tobytes(): s.mask for s in data.samples})
    rows, _ = evaluate_samples(predictor, data.samples)  # type: ignore[arg-type]
    assert [row["hd95"] for row in rows] == pytest.approx([4.0] * 3)
    (tmp_path / "images" / "p.png").parent.mkdir(exist_ok=True)
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(tmp_path / "images" / "p.png")
    Image.fromarray(np.pad(np.full((6, 6), 255, np.uint8), 13)).save(tmp_path / "masks" / "p.png")
    data = load_dataset(tmp_path)
    assert data.hd95_unit == "mm or px"
    predictor = _ShiftingPredictor({s.image.tobytes(): s.mask for s in data.samples})
    rows, _ = evaluate_samples(predictor, data.samples)  # type: ignore[arg-type]
    assert {row["case_id"]: row["hd95"] for row in rows}["p"] == pytest.approx(2.0)
@pytest.mark.parametrize("name,infection", [("lung_and_infection_mask", "infection_mask"),
                                            ("Lung_and_Infection_Mask", "Infection_Mask")])
def test_zenodo_lung_and_infection_masks_are_refused_as_truth(tmp_path: Path, capsys,
                                                              name: str, infection: str) -> None:
    """Kaggle's and Zenodo's lung-and-infection masks (1, 2 the lungs, 3 the infection) were
    scored as lesion classes: a perfect prediction of the infection scored Dice 0.001, the
    lungs counted as infection. They are refused naming the infection masks to give."""
    truth = np.zeros((8, 32, 32), dtype=np.uint8)
    truth[:, 4:28, 2:15], truth[:, 4:28, 17:30] = 1, 2
    truth[3, 10:14, 5:9] = 3
    affine = np.diag([0.8, 0.8, 5.0, 1])
    (tmp_path / "pred").mkdir()
    (tmp_path / "kaggle" / name).mkdir(parents=True)
    nib.save(nib.Nifti1Image(truth.transpose(2, 1, 0), affine),
             str(tmp_path / "kaggle" / name / "coronacases_001.nii"))
    nib.save(nib.Nifti1Image((truth == 3).astype(np.uint8).transpose(2, 1, 0), affine),
             str(tmp_path / "pred" / "coronacases_001.nii"))
    given = tmp_path / "kaggle" / name
    for truth_path in (given, given / "coronacases_001.nii"):
        code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(truth_path),
                     "--out", str(tmp_path / "ev")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert f"give the infection masks, {tmp_path / 'kaggle' / infection}, as --truth" in err
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("images,masks", [("ct_scans", "infection_mask"),
                                          ("COVID-19-CT-Seg_20cases", "Infection_Mask"),
                                          ("studies", "masks")])
def test_a_volume_data_folder_as_truth_or_input_names_the_folder_to_give(
        tmp_path: Path, capsys, images: str, masks: str) -> None:
    """A Zenodo, Kaggle or MosMed data folder given as --truth got "no masks ... in the truth
    folder", and MosMed's to predict "no DICOM series found"; both name the folder to give."""
    from covseg.api import input_kind

    volume = nib.Nifti1Image(np.zeros((8, 8, 2), dtype=np.int16), np.diag([0.8, 0.8, 5.0, 1]))
    for part in (images if images != "studies" else "studies/CT-1", masks):
        (tmp_path / "data" / part).mkdir(parents=True)
        nib.save(volume, str(tmp_path / "data" / part / "study_0001.nii.gz"))
    (tmp_path / "pred").mkdir()
    nib.save(volume, str(tmp_path / "pred" / "study_0001.nii.gz"))
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "data"),
                 "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.endswith(f"give {tmp_path / 'data' / masks} as --truth\n")
    if images == "studies":
        with pytest.raises(CovsegError, match=rf"give {tmp_path / 'data' / 'studies'} to "
                                              "predict$"):
            input_kind(tmp_path / "data")


def test_case_ids_a_spreadsheet_would_run_as_formulas_are_written_as_text(
        tmp_path: Path) -> None:
    """Masks named ``=HYPERLINK("evil.example","x").png`` wrote that case id into the
    evaluation CSV as it was, a live formula in Excel; now with a leading ``'``, and compare
    reads a cross-validation's per-case table back to the names scored."""
    from covseg.compare import per_case_dice
    from covseg.evaluate import rows_to_csv

    names = ['=HYPERLINK("evil.example","x")', "-3", "@a", "plain"]
    for folder in ("pred", "truth"):
        for name in names:
            _save(tmp_path / folder / f"{name}.png", square_mask(32, 4, 4, 8) * 255)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    assert sorted(row["case_id"] for row in result["per_case"]) == sorted(names)
    cells = sorted(line.split(",")[0] for line in
                   (tmp_path / "ev.csv").read_text().splitlines()[1:])
    assert cells == ['"\'=HYPERLINK(""evil.example""', "'@a", "-3", "plain"]
    rows = [{"fold": 0, "case_id": row["case_id"], "dice": row["dice"]}
            for row in result["per_case"]]
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / "per_case.csv").write_text(rows_to_csv(rows))
    assert per_case_dice(tmp_path / "cv") == dict.fromkeys(names, 1.0)


def test_the_models_of_the_scored_masks_are_named_once_each(tmp_path: Path) -> None:
    """Two CT studies predicted by one model name it once; a 2D predict.json beside them names
    its own model only where its own masks (those beside it) are scored."""
    from covseg.evaluate import _recorded_models
    from covseg.io.atomic import write_json
    from covseg.records import PREDICT_RECORD, model_identity

    ct = {"settings": {"model": "/m/run", "model_sha256": "f", "checkpoint_sha256": "f",
                       "threshold": 0.5, "test_flips": False}}
    masks = []
    for study in ("a", "b"):
        (tmp_path / study).mkdir()
        masks.append(tmp_path / study / "infection.nii.gz")
        masks[-1].write_bytes(b"")
        write_json(tmp_path / study / "quantification.json", ct)
    two_d = {"model": {"source": "/m/2d.onnx", "runtime": "onnxruntime", "model_sha256": "o",
                       "checkpoint_sha256": "w", "threshold": 0.4, "test_flips": True}}
    write_json(tmp_path / PREDICT_RECORD, two_d)
    assert _recorded_models(tmp_path, masks) == [model_identity(ct)]
    (tmp_path / "x.png").write_bytes(b"")
    assert _recorded_models(tmp_path, [tmp_path / "x.png", *masks]) == [
        model_identity(two_d), model_identity(ct)]


@pytest.mark.parametrize("model", [{}, {"model": None}, {"model": {}}, {"model": ["unet"]}])
def test_a_predict_record_naming_no_model_is_read_as_naming_none(
        tmp_path: Path, model: dict[str, object]) -> None:
    """A predict.json without a ``model`` dict (edited by hand, or another tool's) ended
    evaluate in an AttributeError traceback: it names no model now, as a record's other fields
    of other types read as absent."""
    lesion = square_mask(32, 4, 4, 12)
    _save(tmp_path / "truth" / "a.png", lesion)
    _save(tmp_path / "pred" / "a.png", lesion * 255)
    (tmp_path / "pred" / "predict.json").write_text(json.dumps(
        {**model, "inputs": ["/elsewhere/a.png"]}))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert result["summary"]["dice"]["mean"] == 1.0
    assert result["num_classes"] == 2


def test_every_scored_mask_edited_since_predict_is_listed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each mask whose content is no longer what predict.json records is listed (all of them,
    sorted), with one warning naming how many; masks unchanged are not."""
    from covseg.evaluate import _edited_predictions
    from covseg.io.atomic import write_json
    from covseg.records import OUTPUT_SHA256, PREDICT_RECORD, content_hash

    masks = [tmp_path / name for name in ("c.png", "a.png", "b.png")]
    for mask in masks:
        mask.write_bytes(b"as predict wrote it")
    write_json(tmp_path / PREDICT_RECORD,
               {OUTPUT_SHA256: {mask.name: content_hash(mask) for mask in masks}})
    assert _edited_predictions(tmp_path, masks) == []
    masks[0].write_bytes(b"edited")
    masks[1].write_bytes(b"edited too")
    with caplog.at_level("WARNING", logger="covseg"):
        assert _edited_predictions(tmp_path, masks) == ["a.png", "c.png"]
    [warning] = [record.getMessage() for record in caplog.records]
    assert "2 masks no longer what covseg predict wrote (first: c.png)" in warning


@pytest.mark.parametrize("out", ["ro/ev/", "ro/evx", "ro/ev/deeper/"])
def test_an_out_that_cannot_be_written_is_refused_before_any_mask_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        out: str) -> None:
    """Every mask was read and scored first (minutes for CT volumes), then a bare
    "ro/ev: Permission denied": the folder is now checked first, refused as predict refuses an
    unwritable --out."""
    for side in ("pred", "truth"):
        _save(tmp_path / side / "a.png", square_mask(32, 8, 8, 8) * 255)
    refuse_writing_under(tmp_path / "ro", monkeypatch)

    def read(*args: object, **kwargs: object) -> None:
        pytest.fail("a mask was read before --out was checked")

    monkeypatch.setattr(importlib.import_module("covseg.evaluate"), "_masks", read)
    target = tmp_path / out
    folder = target if out.endswith("/") else target.parent
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                 str(tmp_path / "truth"), "--out", f"{target}{'/' if out.endswith('/') else ''}"])
    assert code == 2
    assert capsys.readouterr().err == (f"covseg: error: {folder}: cannot write to it (Permission "
                                       "denied); pick a writable --out\n")


def test_masks_a_predict_record_does_not_list_are_not_credited_to_its_model(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A folder of masks of a covseg before 3 Dec (no predict.json) into which a later predict
    wrote other masks: evaluate scored all six under ``models`` naming the new run alone. The
    masks predict.json does not list are named (``unrecorded_predictions``) and no model is
    recorded for them alone."""
    lesion = square_mask(32, 4, 4, 12)
    for name in ("old", "new"):
        _save(tmp_path / "truth" / f"{name}.png", lesion)
        _save(tmp_path / "pred" / f"{name}.png", lesion * 255)
    (tmp_path / "pred" / "predict.json").write_text(json.dumps(
        {"model": {"source": "ens", "num_classes": 2}, "inputs": ["/x/new.jpg"]}))
    with caplog.at_level("WARNING"):
        result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert result["unrecorded_predictions"] == ["old.png"]
    assert "1 mask not listed in its predict.json (first: old.png)" in caplog.text
    assert [model["source"] for model in result["models"]] == ["ens"]
    (tmp_path / "pred" / "new.png").unlink()
    only_old = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev2")
    assert only_old["models"] == [] and only_old["unrecorded_predictions"] == ["old.png"]


def test_masks_pending_in_a_predict_record_and_studies_beside_it_are_not_unrecorded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A predict.json's pending images (a call stopped midway) are its model's too, and a
    predict study folder beside it has a record of its own: neither is listed among the masks
    no record names, nor warned of."""
    lesion = square_mask(32, 4, 4, 12)
    for name in ("done", "mid"):
        _save(tmp_path / "truth" / f"{name}.png", lesion)
        _save(tmp_path / "pred" / f"{name}.png", lesion * 255)
    study = np.zeros((8, 8, 2), dtype=np.uint8)
    study[2:5, 2:5, 0] = 1
    _save_stack(tmp_path / "pred" / "chest" / "infection.nii.gz", study)
    _save_stack(tmp_path / "truth" / "chest.nii.gz", study)
    (tmp_path / "pred" / "predict.json").write_text(json.dumps(
        {"model": {"source": "ens", "num_classes": 2}, "inputs": ["/x/done.jpg"],
         "pending": ["/x/mid.jpg"]}))
    with caplog.at_level("WARNING"):
        result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert [row["case_id"] for row in result["per_case"]] == ["chest", "done", "mid"]
    assert result["unrecorded_predictions"] == [] and "not listed" not in caplog.text


def test_a_prediction_short_of_memory_is_refused_once_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prediction whose slab memory could not hold ended evaluate in "out of memory", naming
    no file; named, it would be read again as float32 (the re-reading meant for fractional
    values caught every refusal). It is refused naming the file and its int16 size, read once."""
    import covseg.io.nifti as nifti_module

    for side in ("pred", "truth"):
        (tmp_path / side).mkdir()
        nib.save(nib.Nifti1Image(np.ones((4, 5, 3), dtype=np.uint8), np.eye(4)),
                 tmp_path / side / "x.nii.gz")
    read = nifti_module.array_from_file
    asked: list[str] = []

    def short(shape: object, dtype: np.dtype, infile: object, *args: object,
              **kwargs: object) -> np.ndarray:
        name = str(getattr(infile, "name", ""))
        asked.append(name)
        if "pred" in name:
            raise MemoryError
        return read(shape, dtype, infile, *args, **kwargs)

    monkeypatch.setattr(nifti_module, "array_from_file", short)
    pred = tmp_path / "pred" / "x.nii.gz"
    with pytest.raises(CovsegError, match=rf"{pred}: not enough free memory for its 4 x 5 x 3 "
                                          r"voxels \(120 bytes as int16\)"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    assert sum("pred" in name for name in asked) == 1


def test_a_truth_label_above_3_is_refused_as_train_refuses_it(tmp_path: Path, capsys) -> None:
    """A stray label 5 in a multi-class truth was scored as a class of its own, adding class5
    and an empty class4 to the JSON and CSV, while train refuses it: it is refused in one line
    naming the mask and the label."""
    truth = _multiclass_truth(tmp_path / "truth")
    _save(tmp_path / "pred" / "a.png", truth)
    truth[0:3, 0:3] = 5
    _save(tmp_path / "truth" / "a.png", truth)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                 str(tmp_path / "truth"), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (f"{tmp_path / 'truth' / 'a.png'}: label 5 is none of the classes 0..3 (background, "
            "ground-glass, consolidation, effusion) that evaluate scores per class; relabel it"
            ) in err
    assert not (tmp_path / "ev.json").exists()


def test_a_binary_prediction_against_lesions_labelled_1_to_n_is_scored_as_binary(
        tmp_path: Path) -> None:
    """A 0/255 prediction against truths labelled per lesion 1..5 (connected components) was
    refused for label 5, where it had been scored as binary: only a side scored per class
    refuses a label above 3."""
    truth = np.zeros((20, 20), dtype=np.uint8)
    for label in range(1, 6):
        truth[label * 3:label * 3 + 2, 2:10] = label
    _save(tmp_path / "truth" / "a.png", truth)
    _save(tmp_path / "pred" / "a.png", (truth > 0).astype(np.uint8) * 255)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    assert result["num_classes"] == 2 and result["summary"]["dice"]["mean"] == pytest.approx(1)
    assert "the truth 0..5: scored as binary" in result["classes_note"]


def test_a_truth_class_the_model_cannot_predict_is_noted(tmp_path: Path) -> None:
    """A 3-class model's predictions scored against truth holding effusion read "effusion
    0.000", as if the model failed at it, without a word: the classes_note says the model has
    no such class."""
    truth = _multiclass_truth(tmp_path / "truth")
    _save(tmp_path / "pred" / "a.png", truth)
    truth[0:3, 0:3] = 3
    _save(tmp_path / "truth" / "a.png", truth)
    (tmp_path / "pred" / "predict.json").write_text(json.dumps({"model": {"num_classes": 3}}))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    assert result["num_classes"] == 4
    assert result["classes_note"] == ("the model predicts labels 0..2 (its record), the truth "
                                      "holds 0..3: its effusion scored though the model has no "
                                      "such class")
    (tmp_path / "pred" / "predict.json").unlink()  # masks alone: a class none happened to hold
    assert evaluate_folders(tmp_path / "pred", tmp_path / "truth",
                            tmp_path / "bare.json")["classes_note"] is None


def test_a_lung_and_infection_truth_outside_its_folder_is_noted(tmp_path: Path,
                                                                caplog) -> None:
    """Zenodo's lung-and-infection mask copied out of its folder was scored as lesion classes
    (its lungs as ground-glass and consolidation) without a word; refused only by folder name,
    it is now warned of and named in the classes_note."""
    truth = np.zeros((8, 32, 32), dtype=np.uint8)
    truth[:, 4:28, 2:15], truth[:, 4:28, 17:30] = 1, 2
    truth[3, 10:14, 5:9] = 3
    affine = np.diag([-0.8, 0.8, 5.0, 1])
    for folder, mask in (("truth", truth), ("pred", truth)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), affine),
                 str(tmp_path / folder / "case1.nii.gz"))
    with caplog.at_level("WARNING"):
        result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    note = result["classes_note"]
    assert note.startswith(f"truth {tmp_path / 'truth' / 'case1.nii.gz'}: its labels 1 and 2 "
                           "lie side by side as two lungs, each in one piece, and label 3 lies "
                           "within them: a lung-and-infection mask")
    assert "(of a lung-and-infection mask, its label 3 alone)" in note
    assert "Its labels are scored as lesion classes (1 ground-glass" in note
    assert note in caplog.text


def test_a_lung_and_infection_truth_against_a_binary_prediction_says_binary(
        tmp_path: Path) -> None:
    """Against a binary prediction the lung-and-infection truth is scored as binary, yet its
    note said its labels were scored as lesion classes beside "scored as binary": it says its
    lungs count as infection."""
    truth = np.zeros((8, 32, 32), dtype=np.uint8)
    truth[:, 4:28, 2:15], truth[:, 4:28, 17:30] = 1, 2
    truth[3, 10:14, 5:9] = 3
    affine = np.diag([-0.8, 0.8, 5.0, 1])
    for folder, mask in (("truth", truth), ("pred", (truth == 3).astype(np.uint8))):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), affine),
                 str(tmp_path / folder / "case1.nii.gz"))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    assert result["num_classes"] == 2
    note = result["classes_note"]
    assert "scored as binary (infection = any label > 0)" in note
    assert "Its lungs are scored as infection (infection = any label > 0); give" in note
    assert "lesion classes" not in note


@pytest.mark.parametrize("suffix", THIN_MASKS)
@pytest.mark.parametrize("thin", ["pred", "truth"])
def test_a_mask_too_thin_is_refused_as_a_mask(tmp_path: Path, suffix: str, thin: str) -> None:
    """A prediction or truth one row thin was told "too small to be a CT slice" (a PNG) or to
    "give the whole series" (a one-plane coronal NIfTI): it is a mask, and told so."""
    for side in ("pred", "truth"):
        (tmp_path / side).mkdir()
        write_mask(tmp_path / side / f"a.{suffix}", thin=side == thin)
    with pytest.raises(CovsegError) as refused:
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev")
    assert str(refused.value) == f"{tmp_path / thin / f'a.{suffix}'}{THIN_MASKS[suffix]}"


def test_every_csv_covseg_writes_ends_its_lines_in_lf(tmp_path: Path) -> None:
    """evaluate's per-case CSV (and cv's, train's log.csv, a synthetic set's patients.csv)
    ended each line in CRLF, csv's default, where summary.csv and quantification.csv end in
    LF: all end in LF now."""
    from covseg.data.synthetic import write_synthetic

    truth = _multiclass_truth(tmp_path / "truth")
    _save(tmp_path / "pred" / "a.png", (truth > 0) * 255)
    evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "ev.json")
    written = write_synthetic(tmp_path / "synthetic", seed=0, patients=2,
                              slices_per_patient=1, size=32)
    for table in (tmp_path / "ev.csv", written / "patients.csv"):
        text = table.read_bytes()
        assert b"\r" not in text and text.count(b"\n") >= 2, text


def _volume_truth(tmp_path: Path) -> Path:
    """A NIfTI prediction in ``pred/`` and its truth, overlapping it in part, in ``nifti/``."""
    write_mask(_folder(tmp_path / "pred") / "a.nii.gz")
    truth = np.zeros((64, 64, 10), np.uint8)
    truth[22:32, 20:30, 3:8] = 1
    path = _folder(tmp_path / "nifti") / "a.nii.gz"
    nib.save(nib.Nifti1Image(truth, np.diag([0.7, 0.7, 5.0, 1.0])), str(path))
    return path


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("name", ["a.nrrd", "a.mha", "a.seg.nrrd"])
def test_nrrd_and_metaimage_truths_score_as_the_same_nifti(tmp_path: Path, name: str) -> None:
    """Masks were NIfTI only: a truth saved by 3D Slicer or ITK-SNAP (.nrrd, a single-layer
    .seg.nrrd, .mha) was "not a mask file", its folder one of "no masks". Each now scores as
    the NIfTI it was saved from."""
    saved_as(_volume_truth(tmp_path), tmp_path / "itk" / name)
    units = {evaluate_folders(tmp_path / "pred", tmp_path / folder, tmp_path / f"{folder}_ev")[
        "hd95_unit"] for folder in ("nifti", "itk")}
    assert (tmp_path / "itk_ev.csv").read_text() == (tmp_path / "nifti_ev.csv").read_text()
    assert units == {"mm (3D, volumes)"}
    assert main(["evaluate", "--pred", str(tmp_path / "pred" / "a.nii.gz"), "--truth",
                 str(tmp_path / "itk" / name), "--out", str(tmp_path / "cli")]) == 0


def test_a_segmentation_of_several_layers_is_refused_saying_how_to_export_a_labelmap(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 3D Slicer segmentation of overlapping segments (one layer each, a 4th axis) holds no
    one label per voxel: refused in one line, exit 2, saying how Slicer exports one."""
    saved_as(_volume_truth(tmp_path), tmp_path / "slicer" / "a.seg.nrrd", layers=2)
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                 str(tmp_path / "slicer"), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err == (f"covseg: error: {tmp_path / 'slicer' / 'a.seg.nrrd'}: a 3D Slicer "
                   "segmentation of 2 layers (overlapping segments), not one label map; in 3D "
                   "Slicer's Segmentations module, export it as a labelmap volume (Export to "
                   "files, or Export visible segments to binary labelmap) and give that\n")
    assert not list(tmp_path.glob("ev.*"))


def test_a_nrrd_truth_on_another_grid_is_refused_as_a_nifti_one_is(tmp_path: Path) -> None:
    """The grid check of two NIfTI masks holds for a NRRD one."""
    truth = _volume_truth(tmp_path)
    refusals = []
    for name in ("a.nii.gz", "a.nrrd"):
        saved_as(truth, tmp_path / name / name, shift_mm=5.0)
        with pytest.raises(CovsegError) as refused:
            evaluate_folders(tmp_path / "pred", tmp_path / name, tmp_path / "ev")
        refusals.append(str(refused.value))
    assert refusals[0].startswith("a: prediction and truth lie on different grids (origins 5 mm")
    assert refusals[1] == refusals[0]


@pytest.mark.parametrize("name", ["a.seg.nrrd", "a.nrrd"])
def test_a_cropped_segmentation_truth_is_refused_saying_how_to_export_it(tmp_path: Path,
                                                                          name: str) -> None:
    """3D Slicer may save a segmentation cropped to its segments: "a: prediction ... and truth
    ... differ in size" gave no advice; it now says how to export it on the CT's geometry. A
    label map .nrrd, which Slicer exports cropped too, got none; it now gets the same."""
    truth = nib.load(_volume_truth(tmp_path))
    cropped = tmp_path / "crop.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(truth.dataobj)[20:34, 18:32, 2:9], truth.affine),
             str(cropped))
    saved_as(cropped, tmp_path / "slicer" / name)
    with pytest.raises(CovsegError, match=r"differ in size; 3D Slicer may save a segmentation, "
                                          r"or export a label map, cropped to its segments' "
                                          r"extent: if so, .* with the CT as reference volume"):
        evaluate_folders(tmp_path / "pred", tmp_path / "slicer", tmp_path / "ev")


@pytest.mark.parametrize("given", ["folder", "file"])
def test_a_broken_link_among_predictions_is_refused_saying_how_to_fetch_it(
        tmp_path: Path, given: str) -> None:
    """An unfetched git-annex prediction (a link to nowhere) was passed over as no mask: the case
    scored as missing. Refused as predict refuses it, with the `git annex get .` line."""
    _volume_truth(tmp_path)
    (tmp_path / "pred" / "b.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    pred = tmp_path / "pred" / ("b.nii.gz" if given == "file" else "")
    named = "a broken link" if given == "file" else r"1 file is a broken link \(b.nii.gz\)"
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(pred))}: {named}: .*`git annex"):
        evaluate_folders(pred, tmp_path / "nifti", tmp_path / "ev")


@pytest.mark.parametrize("role", ["pred", "truth"])
def test_a_masks_raw_data_file_given_is_refused_naming_its_header(tmp_path: Path,
                                                                  role: str) -> None:
    """A MetaImage mask's .raw given as --pred or --truth was "not a mask file": it names its
    header, as predict does."""
    header = saved_as(_volume_truth(tmp_path), tmp_path / "itk" / "a.mhd")
    given = {"pred": tmp_path / "pred" / "a.nii.gz", "truth": tmp_path / "nifti" / "a.nii.gz",
             role: header.with_suffix(".raw")}
    with pytest.raises(CovsegError, match=f"give {re.escape(str(header))} to read them$"):
        evaluate_folders(given["pred"], given["truth"], tmp_path / "ev")


def test_the_metrics_plot_names_each_class_dice_for_a_reader(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """A multi-class evaluation's boxes were labelled with per_case.csv's column names
    ("ground-glass_dice (n=3)"): they read "Dice, ground-glass", and the scores of any lesion
    beside them in the same style ("dice (any lesion)", the CSV's column, before); the rows,
    the CSV's and JSON's columns, are left as they are."""
    rows = [{"dice": 0.5, "iou": 0.3, "sensitivity": 0.6, "precision": 0.4,
             "ground-glass_dice": 0.2, "ground-glass_iou": 0.1, "consolidation_dice": 0.1}] * 3
    columns = list(rows[0])
    metrics_plot(rows, tmp_path / "plot.png", title="3 cases")
    (axes,) = saved_figures[0].axes
    assert [t.get_text() for t in axes.get_xticklabels()] == [
        "Dice, any lesion (n=3)", "IoU, any lesion (n=3)", "sensitivity, any lesion (n=3)",
        "precision, any lesion (n=3)", "Dice, ground-glass (n=3)", "Dice, consolidation (n=3)"]
    assert list(rows[0]) == columns


def test_the_metrics_plot_of_binary_masks_names_its_metrics_as_compare_does(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """A binary evaluation's boxes read "Dice", "IoU", as compare's table names them, not the
    CSV's columns ("dice", "iou"); nothing says "any lesion" where there are no classes."""
    rows = [{"dice": 0.5, "iou": 0.3, "sensitivity": 0.6, "precision": 0.4}] * 2
    metrics_plot(rows, tmp_path / "plot.png", title="2 cases")
    (axes,) = saved_figures[0].axes
    assert [t.get_text() for t in axes.get_xticklabels()] == [
        "Dice (n=2)", "IoU (n=2)", "sensitivity (n=2)", "precision (n=2)"]


def test_nnunet_test_cases_are_named_as_their_labels_through_predict_evaluate_quantify(
        tmp_path: Path, tiny_run: Path) -> None:
    """nnU-Net names a case's CT ``imagesTs/case_001_0000.nii.gz`` and its label
    ``labelsTs/case_001.nii.gz``: predict wrote ``predTs/case_001_0000/``, evaluate found no
    case shared with labelsTs/ and quantify no CT named like the mask; the study is now
    ``case_001`` throughout, and an older prediction of the suffixed name pairs alike."""
    from covseg import api
    from covseg.quantify import quantify_batch

    ct = np.full((48, 40, 3), -1000.0)
    ct[4:44, 4:36] = 40.0
    ct[8:22, 8:32] = ct[26:40, 8:32] = -850.0
    truth = np.zeros(ct.shape)
    truth[10:16, 10:16, 1] = 1
    _save_stack(tmp_path / "imagesTs" / "case_001_0000.nii.gz", ct, np.float32)
    _save_stack(tmp_path / "labelsTs" / "case_001.nii.gz", truth)
    _save_stack(tmp_path / "labelsTs" / "case_002.nii.gz", truth)
    api.predict_volumes(tiny_run, tmp_path / "imagesTs", tmp_path / "predTs")
    assert (tmp_path / "predTs" / "case_001" / "infection.nii.gz").is_file()
    shutil.copytree(tmp_path / "predTs" / "case_001", tmp_path / "predTs" / "case_002_0000")
    scored = evaluate_folders(tmp_path / "predTs", tmp_path / "labelsTs", tmp_path / "ev")
    assert scored["cases"] == 2
    result = quantify_batch([tmp_path / "predTs" / "case_001"], tmp_path / "q",
                            image=tmp_path / "imagesTs")
    assert (result.done, result.failed) == (1, 0)
    stored = json.loads((tmp_path / "q" / "case_001" / "quantification.json").read_text())
    assert stored["inputs"]["image"].endswith("case_001_0000.nii.gz")
