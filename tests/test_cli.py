"""The command line end to end: every subcommand, and one-line errors for bad input."""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import errno
import functools
import importlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from covseg import api
from covseg.checkpoint import load_checkpoint
from covseg.cli import _AboveProgressBars, build_parser, main
from covseg.config import TrainConfig
from covseg.errors import CovsegError
from covseg.transforms import LUNG_WINDOW
from tests.conftest import (
    StopWhenCollected,
    data_unread,
    deny_reading,
    grey_folder,
    png_header,
    shared,
    square_mask,
)
from tests.test_quantify import synthetic_study


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, fragment: str, status: int = 2) -> None:
    assert code == status
    assert err.startswith("covseg: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and fragment in err, err


@pytest.mark.parametrize("name", ["medseg-covid19-100", "infnet-covid-semiseg"])
def test_visualize_real_data(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, _ = _run(capsys, "visualize", str(shared(name)), "--out", str(tmp_path / "v.png"),
                        "--n", "4")
    assert code == 0 and "wrote" in out
    with Image.open(tmp_path / "v.png") as image:
        assert image.size[0] > 600 and image.size[1] > 200


def test_visualize_reads_images_as_training_does(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """visualize had no --intensity or --window, so data that need them could not be shown."""
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    hu = np.full((32, 32), -900.0, dtype=np.float32)
    hu[8:16, 8:16] = -300.0
    np.save(tmp_path / "data" / "images" / "a.npy", hu)
    mask = ((hu > -500) * 255).astype(np.uint8)
    Image.fromarray(mask).save(tmp_path / "data" / "masks" / "a.png")
    code, out, _ = _run(capsys, "visualize", str(tmp_path / "data"), "--out",
                        str(tmp_path / "v.png"), "--intensity", "hu", "--window", "-1000", "0")
    assert code == 0 and "wrote" in out and (tmp_path / "v.png").is_file()


FORCED_OFF_SCALE = {
    "hu": r"read as Hounsfield units \(--intensity hu\), but its values \d+\.\.\d+ are grey "
          r"levels: none lies below 0",
    "unit": r"read as values in \[0, 1\] \(--intensity unit\), but \d+% of its values "
            r"\(\d+\.\.\d+\) lie outside 0\.\.1 and would be clipped"}


@pytest.mark.parametrize("intensity", ["hu", "unit"])
@pytest.mark.parametrize("command", ["visualize", "train"])
@pytest.mark.parametrize("name", ["medseg-covid19-100", "infnet-covid-semiseg"])
def test_scales_forced_on_8_bit_slices_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, name: str,
        intensity: str) -> None:
    """``--intensity hu`` on MedSeg's 8-bit PNGs or Inf-Net's JPEGs read 0..255 as HU, windowed
    into 0.9..1.0: train fit near-blank slices and visualize drew white tiles, both exit 0.
    ``--intensity unit`` clipped them to white above 1 (a near-binary slice) with a warning,
    and trained a useless model: refused alike now."""
    out = tmp_path / ("v.png" if command == "visualize" else "run")
    quick = () if command == "visualize" else ("--epochs", "1", "--model", "miniseg",
                                               "--size", "64")
    code, _, err = _run(capsys, command, str(shared(name)), "--out", str(out), "--intensity",
                        intensity, *quick)
    err = err.rsplit("\r", 1)[-1]  # what a terminal shows after the cleared progress bar
    _assert_one_line_error(code, err, f"(--intensity {intensity}), but ")
    assert re.search(r"error: \S+\.(png|jpg): " + FORCED_OFF_SCALE[intensity], err), err
    assert "--intensity auto" in err and not out.exists()


def test_hounsfield_units_forced_to_8_bit_are_refused_naming_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """``--intensity uint8`` on HU slices clipped everything below 0 HU (the lungs) to black
    and above 255 to white, trained, and only warned."""
    out = tmp_path / "run"
    code, _, err = _run(capsys, "train", str(synthetic_folder), "--out", str(out), "--model",
                        "unet", "--epochs", "1", "--size", "64", "--intensity", "uint8")
    _assert_one_line_error(code, err, ".npy: read as 8-bit grey levels (--intensity uint8), "
                                      "but ")
    assert "lie outside 0..255 and would be clipped" in err and "--intensity auto" in err
    assert not out.exists()


def test_unit_floats_forced_to_8_bit_are_refused_and_overshoot_reads_as_unit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Probe 50: [0, 1] float slices, two of them stretched past 1 at 0.4 % of their pixels:
    ``--intensity auto`` read those two as 8-bit grey (near-black) and trained with no word;
    ``--intensity uint8`` trained on all-black slices, exit 0. Auto reads them all as [0, 1]
    now, the clipping warned of; told uint8 is refused in one line naming the scale to give."""
    data = tmp_path / "data"
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
    for k in range(3):
        image = np.random.default_rng(k).random((32, 32)).astype(np.float32)
        image.flat[:4], image.flat[4] = 1.0 + 0.004 * k, 0.0
        np.save(data / "images" / f"s{k}.npy", image)
        np.save(data / "masks" / f"s{k}.npy", square_mask(32, 8, 8, 12))
    out = tmp_path / "run"
    quick = ("--model", "miniseg", "--epochs", "1", "--size", "32")
    code, _, err = _run(capsys, "train", str(data), "--out", str(out), "--intensity", "uint8",
                        *quick)
    _assert_one_line_error(code, err, "s0.npy: read as 8-bit grey levels (--intensity uint8), "
                                      "but its values 0..1 are floats in [0, 1], which read "
                                      "near-black as 8-bit grey; read them as [0, 1]: "
                                      "--intensity auto")
    assert not out.exists()
    code, _, err = _run(capsys, "train", str(data), "--out", str(out), *quick)
    assert code == 0, err
    assert "a few pixels of an image lie outside 0..1, the range of the unit" in err
    assert "different intensity scales" not in err


@pytest.mark.parametrize("window", [("-1000", "0"), ("-1350", "150")])
@pytest.mark.parametrize("command", ["visualize", "train", "cv", "compare"])
def test_window_on_8_bit_slices_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           command: str, window: tuple[str, str]) -> None:
    """``--window`` windows HU only: on 8-bit PNGs visualize drew the same grid and train
    recorded ``"window": [-1000.0, 0.0]`` in config.json as if applied, both without a word.
    The lung window typed out (-1350 150, the default) was let through: the CLI always passed
    the default, so a window given could not be told from one left out."""
    data = grey_folder(tmp_path / "data")
    out = tmp_path / ("v.png" if command == "visualize" else "out")
    quick = {"visualize": (), "train": ("--epochs", "1", "--model", "unet", "--size", "32"),
             "cv": ("--epochs", "1", "--model", "unet", "--size", "32", "--folds", "2"),
             "compare": ("--models", "unet", "miniseg", "--epochs", "1", "--size", "32",
                         "--folds", "2")}
    code, _, err = _run(capsys, command, str(data), "--out", str(out), "--window", *window,
                        *quick[command])
    err = err.rsplit("\r", 1)[-1]
    given = " ".join(window)
    _assert_one_line_error(code, err, f"--window {given} windows Hounsfield units only")
    assert re.search(rf"error: \S+/images/p0_0\.png: --window {given} windows Hounsfield units "
                     r"only, but this image holds 8-bit grey levels \(0\.\.255\), on which it "
                     r"does nothing; leave --window out", err), err
    assert not out.exists()


def test_a_copied_recipe_still_reads_its_window_as_left_out(tmp_path: Path) -> None:
    """``window_given`` was set in ``__post_init__`` beside the window resolved to the lung
    window, so a copy made with ``dataclasses.replace`` (folds, members, compared models) read
    that window as given: grey slices read with the copy's window were refused."""
    data = grey_folder(tmp_path / "data")
    for config in (TrainConfig(model="unet"), TrainConfig.from_dict({"model": "unet"})):
        copy = dataclasses.replace(config, seed=config.seed + 1)
        assert not copy.window_given and copy.window is None
        assert copy.hu_window == LUNG_WINDOW and copy.to_dict()["window"] == list(LUNG_WINDOW)
        assert len(api.load_dataset(data, window=copy.window).samples) == 4
        assert config.differences(copy) == [f"seed: {config.seed} -> {copy.seed}"]
    given = dataclasses.replace(TrainConfig(window=LUNG_WINDOW), seed=5)
    assert given.window_given and given.hu_window == LUNG_WINDOW


def test_lung_window_given_to_the_api_on_grey_slices_is_refused(tmp_path: Path) -> None:
    """The API's window=LUNG_WINDOW on 8-bit slices was read as if left out; given, it is
    refused as any other window is, named as the API's keyword (the error named the CLI's
    --window), while left out (or None) the slices are read, and no window is recorded."""
    data = grey_folder(tmp_path / "data")
    message = (r"p0_0\.png: window=\(-1350, 150\) windows Hounsfield units only, but this "
               r"image holds 8-bit grey levels \(0\.\.255\), on which it does nothing; leave "
               r"window out \(or give the data in HU\)$")
    for call in (lambda: api.load_dataset(data, window=LUNG_WINDOW),
                 lambda: api.train(data, tmp_path / "r", window=LUNG_WINDOW, epochs=1,
                                   model="unet", size=32),
                 lambda: api.visualize(data, tmp_path / "r.png", window=LUNG_WINDOW)):
        with pytest.raises(CovsegError, match=message):
            call()
    assert not (tmp_path / "r").exists() and not (tmp_path / "r.png").exists()
    assert len(api.load_dataset(data, window=None).samples) == 4
    api.train(data, tmp_path / "grey", window=None, epochs=1, model="unet", size=32)
    record = json.loads((tmp_path / "grey" / "config.json").read_text())["config"]
    assert record["window"] is None


def test_a_run_on_grey_slices_replays_from_its_own_record(tmp_path: Path) -> None:
    """config.json and summary.json recorded the lung window on 8-bit data, where none is
    applied, and fed back to the API that window was refused; they now record null there, and
    a train or cross-validation replayed from its record reruns to the same results. The
    model still predicts HU images through the lung window (its best.pt records it)."""
    data = grey_folder(tmp_path / "data")
    api.cross_validate(data, tmp_path / "cv", folds=2, epochs=1, model="unet", size=32)
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert summary["config"]["window"] is None
    assert summary["config"]["folds"] == 2  # else given back it ran the default 5 folds
    api.cross_validate(summary["data_path"], tmp_path / "cv2", **summary["config"])
    again = json.loads((tmp_path / "cv2" / "summary.json").read_text())
    assert again["config"] == summary["config"]
    assert again["per_fold"] == summary["per_fold"]
    assert again["pooled_per_case"] == summary["pooled_per_case"]

    api.train(data, tmp_path / "run", epochs=1, model="unet", size=32, val_fraction=0.5)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["config"]["window"] is None
    api.train(record["data_path"], tmp_path / "run2", **record["config"])
    replayed = json.loads((tmp_path / "run2" / "config.json").read_text())
    assert replayed["config"] == record["config"]
    assert replayed["val_cases"] == record["val_cases"]
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text())["validation"]
               for run in ("run", "run2")]
    assert metrics[0] == metrics[1]
    weights = [load_checkpoint(tmp_path / run / "best.pt") for run in ("run", "run2")]
    assert weights[0]["meta"]["window"] == list(LUNG_WINDOW)
    assert all(torch.equal(weights[0]["state_dict"][key], value)
               for key, value in weights[1]["state_dict"].items())


def test_window_left_out_records_the_lung_window(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 synthetic_folder: Path) -> None:
    """Left out, --window is the lung window: HU data are read through it and config.json
    records it, as before --window's default became None."""
    code, _, err = _run(capsys, "train", str(synthetic_folder), "--out", str(tmp_path / "r"),
                        "--epochs", "1", "--model", "unet", "--size", "32")
    assert code == 0, err
    record = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert record["window"] == [-1350.0, 150.0]


def test_window_on_hu_or_default_window_on_grey_is_read(tmp_path: Path) -> None:
    """The refusal is for a window that does nothing: HU slices take any window, and grey
    slices the default lung window (which a model trained on them predicts HU images with)."""
    data = grey_folder(tmp_path / "grey")
    assert len(api.load_dataset(data).samples) == 4
    hu = tmp_path / "hu"
    (hu / "images").mkdir(parents=True)
    (hu / "masks").mkdir()
    np.save(hu / "images" / "a.npy", np.linspace(-1000, 0, 32 * 32).reshape(32, 32))
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(hu / "masks" / "a.png")
    image = api.load_dataset(hu, window=(-1000.0, 0.0)).samples[0].image
    assert image.min() == 0.0 and image.max() == 1.0 and abs(image[16, 0] - 0.5) < 0.01


def test_train_predict_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                synthetic_folder: Path, tiny_run: Path) -> None:
    code, out, _ = _run(capsys, "predict", str(synthetic_folder / "images"),
                        "--model", str(tiny_run), "--out", str(tmp_path / "pred"), "--overlay")
    assert code == 0, out
    inputs = sorted((synthetic_folder / "images").glob("*.npy"))
    masks = sorted((tmp_path / "pred").glob("*.png"))
    assert [m.stem for m in masks] == [i.stem for i in inputs]
    first = np.array(Image.open(masks[0]))
    assert first.shape == np.load(inputs[0]).shape and set(np.unique(first)) <= {0, 255}
    assert len(list((tmp_path / "pred" / "overlays").glob("*.png"))) == len(inputs)
    assert out.endswith(f"wrote {len(inputs)} mask(s) to {tmp_path / 'pred'} and their overlays "
                        f"to {tmp_path / 'pred' / 'overlays'}\n")  # said nothing of overlays/
    assert not [p for p in (tmp_path / "pred").iterdir() if p.name.startswith(".")]
    record = json.loads((tmp_path / "pred" / "predict.json").read_text())
    assert record["model"]["source"] == str(tiny_run.resolve()) and record["masks"] == len(inputs)
    assert record["inputs"] == [str(i) for i in inputs] and record["overlays"] == len(inputs)
    assert record["model"]["runtime"] == "pytorch" and 0 < record["model"]["threshold"] < 1
    assert record["model"]["classes"] == {"0": "background", "1": "infection"}

    code, out, _ = _run(capsys, "evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                        str(synthetic_folder / "masks"), "--out", str(tmp_path / "eval"))
    assert code == 0 and f"{len(inputs)} cases" in out
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["summary"]) >= {"dice", "iou", "sensitivity", "specificity", "precision",
                                      "hd95"}
    assert "both empty = 1" in result["empty_mask_rules"]
    assert (tmp_path / "eval.csv").read_text().startswith("case_id,dice")
    with Image.open(tmp_path / "eval.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 300
    assert result["files"]["png"] == str(tmp_path / "eval.png") and "eval.png" in out


def test_predict_threshold_overrides_the_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              synthetic_folder: Path, tiny_run: Path) -> None:
    """A lower threshold marks at least the pixels a higher one does; both are recorded."""
    images = sorted((synthetic_folder / "images").glob("*.npy"))[:3]
    marked = []
    for threshold in ("0.001", "0.999"):
        out = tmp_path / threshold
        code, _, err = _run(capsys, "predict", *map(str, images), "--model", str(tiny_run),
                            "--out", str(out), "--threshold", threshold)
        assert code == 0, err
        record = json.loads((out / "predict.json").read_text())
        assert record["model"]["threshold"] == float(threshold)
        marked.append(np.stack([np.array(Image.open(out / f"{i.stem}.png")) for i in images]))
    assert (marked[0] >= marked[1]).all() and marked[0].sum() > marked[1].sum()
    # the same run again
    code, _, err = _run(capsys, "predict", *map(str, images), "--model", str(tiny_run),
                        "--out", str(tmp_path / "0.001"), "--threshold", "0.001")
    assert code == 0, err
    code, _, err = _run(capsys, "predict", str(images[0]), "--model", str(tiny_run), "--out",
                        str(tmp_path / "0.001"), "--threshold", "0.5")  # would mix two runs
    _assert_one_line_error(code, err, "holds masks predicted otherwise (threshold: 0.001 -> 0.5)")
    code, _, err = _run(capsys, "predict", str(images[0]), "--model", str(tiny_run),
                        "--out", str(tmp_path / "bad"), "--threshold", "1")
    _assert_one_line_error(code, err, "between 0 and 1")
    assert not (tmp_path / "bad").exists()
    code, _, err = _run(capsys, "predict", str(images[0]), "--model", str(tiny_run), "--out",
                        str(tmp_path / "bad"), "--lung-model", str(tiny_run), "--html")
    _assert_one_line_error(code, err, "--html, --lung-model: for CT volumes only")
    assert "images; drop them, or give CT volumes (NIfTI, NRRD, MetaImage or DICOM)" in err
    code, _, err = _run(capsys, "predict", str(images[0]), "--model", str(tiny_run), "--out",
                        str(tmp_path / "bad"), "--html")
    _assert_one_line_error(code, err, "--html: for CT volumes only")
    assert ("images; drop it, or give CT volumes (NIfTI, NRRD, MetaImage or DICOM)"
            in err)  # was "drop the option", then "NIfTI/DICOM volumes", though NRRD is read
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("case", ["x", "ward_org_1"])
def test_evaluate_matches_truths_named_with_mask_endings(tmp_path: Path, case: str) -> None:
    """Reported by the truth's own name (the pairing key drops Kaggle's ``_org`` too)."""
    for folder, name in (("pred", f"{case}.png"), ("truth", f"{case}_mask.png")):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(tmp_path / folder / name)
    result = api.evaluate(tmp_path / "pred", tmp_path / "truth", tmp_path / "eval.json")
    assert result["cases"] == 1 and result["per_case"][0]["case_id"] == case
    assert result["summary"]["dice"]["mean"] == 1.0


def test_evaluate_perfect_prediction_on_real_masks(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    for path in sorted(shared("medseg-covid19-100", "masks").iterdir())[:5]:
        shutil.copy(path, truth / path.name)
        Image.fromarray(np.array(Image.open(path)) * 255).save(pred / path.name)
    code, _, _ = _run(capsys, "evaluate", "--pred", str(pred), "--truth", str(truth), "--out",
                      str(tmp_path / "e.json"))
    summary = json.loads((tmp_path / "e.json").read_text())["summary"]
    assert code == 0 and summary["dice"]["mean"] == 1.0 and summary["hd95"]["mean"] == 0.0


def test_cross_validation_writes_summary_report_and_box_plot(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    cv_args = ["cv", str(synthetic_folder), "--out", str(tmp_path / "cv"), "--folds", "2",
               "--epochs", "1", "--size", "64", "--batch-size", "4", "--model", "unet",
               "--model-option", "width=4"]
    code, out, _ = _run(capsys, *cv_args)
    assert code == 0 and "Dice" in out
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert len(summary["per_fold"]) == 2 and summary["synthetic"]
    for metric in ("dice", "iou", "sensitivity", "specificity", "precision", "hd95"):
        assert metric in summary["mean_std_over_folds"]
    report = (tmp_path / "cv" / "report.md").read_text()
    assert "SYNTHETIC" in report and "mean ± std" in report
    assert [f["epochs"] for f in summary["per_fold"]] == [1, 1]
    assert "Epochs trained per fold: 1, 1" in report
    assert (tmp_path / "cv" / "dice_boxplot.png").is_file()
    per_case = (tmp_path / "cv" / "per_case.csv").read_text().splitlines()
    assert len(per_case) == 1 + 16
    written = (tmp_path / "cv" / "summary.json").read_bytes()
    code, _, err = _run(capsys, *cv_args)  # reprinted the summary, reusing every fold
    _assert_one_line_error(code, err, (
        f"{tmp_path / 'cv'} already holds a cross-validation (fold_0, fold_1, summary.json); "
        "pass --resume to reuse and continue it, or pick a new --out"))
    assert (tmp_path / "cv" / "summary.json").read_bytes() == written
    code, _, _ = _run(capsys, *cv_args, "--resume")
    resumed = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert code == 0 and summary["train_seconds"] > 0
    assert resumed["train_seconds"] == summary["train_seconds"]


def test_cross_validation_fold_by_fold_matches_one_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """``--fold K`` runs one fold as the whole run would, side by side with the others into
    one --out (each looks at its own fold's folder only; each in a process of its own, as
    trainings in threads of one process are refused); the run without it then reuses them
    with --resume, and is refused without it (it reused fold 0 silently and trained fold 1)."""
    recipe = ["--folds", "2", "--epochs", "1", "--size", "64", "--batch-size", "4",
              "--model", "unet", "--model-option", "width=4"]
    parts = ["cv", str(synthetic_folder), "--out", str(tmp_path / "parts"), *recipe]
    side_by_side = [subprocess.Popen([sys.executable, "-m", "covseg", *parts, "--fold", str(k)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
                    for k in (1, 0)]
    ended: list[tuple[str, str]] = []
    try:
        for process in side_by_side:
            ended.append(process.communicate(timeout=300))
    finally:
        for process in side_by_side:  # none left running after a timeout (ended: no-ops)
            process.kill()
            process.wait()
    assert [process.returncode for process in side_by_side] == [0, 0], ended
    assert sorted(line.split(":")[0] for out, _ in ended for line in out.splitlines()) == [
        "fold 0", "fold 1"]
    assert not (tmp_path / "parts" / "summary.json").exists()
    code, _, err = _run(capsys, *parts)
    _assert_one_line_error(code, err, (
        f"{tmp_path / 'parts'} already holds a cross-validation (fold_0, fold_1); pass --resume "
        "to reuse and continue it, or pick a new --out"))
    assert not (tmp_path / "parts" / "summary.json").exists()
    code, _, err = _run(capsys, *parts, "--fold", "0")
    _assert_one_line_error(code, err, (
        f"{tmp_path / 'parts' / 'fold_0'} already holds fold 0 of a cross-validation "
        "(finished); pass --resume"))
    code, _, _ = _run(capsys, *parts, "--resume")
    code_whole, _, _ = _run(capsys, "cv", str(synthetic_folder), "--out", str(tmp_path / "whole"),
                            *recipe)
    parts = json.loads((tmp_path / "parts" / "summary.json").read_text())
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert code == code_whole == 0
    assert ([f["test_cases"] for f in parts["per_fold"]]
            == [f["test_cases"] for f in whole["per_fold"]])
    for name in ("fold_0", "fold_1"):
        split = [json.loads((tmp_path / run / name / "config.json").read_text())["train_cases"]
                 for run in ("parts", "whole")]
        assert split[0] == split[1], "the same slices train each fold"
    code, _, err = _run(capsys, "cv", str(synthetic_folder), "--out", str(tmp_path / "bad"),
                        *recipe, "--fold", "2")
    _assert_one_line_error(code, err, "--fold must lie in 0..1")
    for change, fragment in ((["--epochs", "2"], "epochs: 1 -> 2"),
                             (["--folds", "3", "--fold", "0"],
                              ("finished on another split of the data (2 folds then, 3 now); "
                              "resume with --folds 2"))):
        changed = ([*recipe[2:], *change] if change[0] == "--folds"  # each option given once
                   else [*recipe[:2], *change, *recipe[4:]])
        code, _, err = _run(capsys, "cv", str(synthetic_folder), "--out",
                            str(tmp_path / "whole"), *changed, "--resume")
        _assert_one_line_error(code, err, fragment)


def test_demo_api_runs_small_and_again_from_its_finished_folds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second run reuses every fold from its JSON, where undefined metrics (sensitivity on
    lesion-free slices) are null: the summary must come out as the first run's. Two slices a
    patient (of the demo's 4) and one grid drawn (the reruns' are the same picture) keep it
    cheap."""
    import covseg.data.synthetic

    monkeypatch.setattr(covseg.data.synthetic, "write_synthetic", functools.partial(
        covseg.data.synthetic.write_synthetic, slices_per_patient=2))
    summary = api.demo(tmp_path / "demo", folds=3, epochs=1)
    assert summary["synthetic"] and (tmp_path / "demo" / "samples.png").is_file()
    monkeypatch.setattr(api, "visualize", lambda _, out: out)
    assert (tmp_path / "demo" / "cv" / "report.md").is_file()
    assert summary["pooled_per_case"]["sensitivity"]["undefined"] > 0
    again = api.demo(tmp_path / "demo", folds=3, epochs=1)
    assert again["mean_std_over_folds"] == summary["mean_std_over_folds"]
    assert again["pooled_per_case"] == summary["pooled_per_case"]
    stopped = tmp_path / "demo" / "cv" / "fold_2"
    for name in ("fold_metrics.json", "best.pt", "metrics.json", "test_per_case.csv"):
        (stopped / name).unlink(missing_ok=True)  # as a Ctrl-C inside the last fold leaves it
    resumed = api.demo(tmp_path / "demo", folds=3, epochs=1)  # asked for --resume, not offered
    assert resumed["pooled_per_case"]["dice"] == summary["pooled_per_case"]["dice"]
    cv = tmp_path / "demo" / "cv"
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(cv / 'fold_0'))} \(and fold_1, "
                       r"fold_2\): finished with other settings or data \(epochs: 1 -> 2\); "
                       rf"run the demo into a new out, or delete {re.escape(str(cv))} to "
                       r"start over$"):
        api.demo(tmp_path / "demo", folds=3, epochs=2)  # said "cross-validate into a new --out"
    shutil.rmtree(cv / "fold_0")  # as the error said ("delete the fold"): fold_0 was retrained,
    with pytest.raises(CovsegError, match=r"fold_1 \(and fold_2\): finished with other"):
        api.demo(tmp_path / "demo", folds=3, epochs=2)  # and only then was fold_1 refused
    assert not (cv / "fold_0").exists()


@pytest.mark.parametrize("plotted", [True, False])
def test_demo_names_its_box_plot_only_where_drawn(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        plotted: bool) -> None:
    """`covseg demo` named OUT/cv/dice_boxplot.png among its outputs where the box plot was not
    drawn (a warning): a file that does not exist. Its paths are spelled one way (an --out
    given with a slash printed demo//samples.png beside demo/cv/dice_boxplot.png)."""
    def demo(out: Path, **_: object) -> dict[str, object]:
        (Path(out) / "cv").mkdir(parents=True)
        if plotted:
            (Path(out) / "cv" / "dice_boxplot.png").write_bytes(b"drawn")
        return {"mean_std_over_folds": {"dice": {"mean": 0.5, "std": 0.1, "n": 2}},
                "per_fold": [{}, {}], "demo_seconds": 1.0}

    monkeypatch.setattr(api, "demo", demo)
    code, out, _ = _run(capsys, "demo", "--out", f"{tmp_path / 'demo'}/")
    assert code == 0 and ("dice_boxplot.png" in out) is plotted
    assert "//" not in out and f"{tmp_path / 'demo' / 'samples.png'}" in out


def test_demo_help_gives_the_out_default(capsys: pytest.CaptureFixture[str]) -> None:
    """`covseg demo -h` said "--out OUT  output folder", the only option without its default."""
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--out DIR output folder (default covseg-demo)" in shown


def test_help_says_how_progress_bars_are_turned_off(capsys: pytest.CaptureFixture[str]) -> None:
    """`TQDM_DISABLE=1` turned every bar off, but no --help said so; `covseg --help` says it,
    and how a terminal without cursor movement (TERM=dumb) gets them."""
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "TQDM_DISABLE=1 in the environment turns them off" in shown
    assert "TERM=dumb" in shown


@pytest.mark.parametrize("command", [["train"], ["cv"], ["compare"], ["visualize"],
                                     ["data", "info"]], ids=" ".join)
def test_intensity_help_says_what_each_mode_reads(
        capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    """--intensity's help said "auto detects HU vs 8-bit", leaving out the float [0, 1] slices
    auto reads too, and said nothing of hu, uint8 and unit."""
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert ("how images are stored: auto reads each file's scale (detects HU, 8-bit and "
            "[0, 1]); hu: Hounsfield units, uint8: 8-bit grey levels, unit: values in [0, 1]"
            ) in shown


# --- bad input ----------------------------------------------------------------------------------


def test_train_help_shows_the_recipe_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    recipe = TrainConfig()
    for fragment in ("(default 240, fewer above 100 training slices", f"(default {recipe.lr})",
                     f"(default {recipe.augment})", f"(default {recipe.threshold})",
                     f"default: {recipe.model}"):
        assert fragment in shown, fragment


def test_interrupted_commands_say_how_to_continue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "quantify", interrupted)
    code, _, err = _run(capsys, "quantify", str(tmp_path), "--out", str(tmp_path / "q"))
    assert code == 130 and "already done are skipped" in err and "--resume" not in err
    monkeypatch.setattr(api, "predict", interrupted)  # 2D: said only that CT studies are skipped
    code, _, err = _run(capsys, "predict", "--model", str(tmp_path), str(tmp_path / "x.png"),
                        "--out", str(tmp_path / "p"))
    assert code == 130 and "2D images are predicted again" in err
    monkeypatch.setattr(api, "evaluate", interrupted)
    code, _, err = _run(capsys, "evaluate", "--pred", "p", "--truth", "t", "--out", "e.json")
    assert code == 130 and err == "covseg: interrupted; rerun the same command\n"


@pytest.mark.parametrize("command", ["train", "cv"])
def test_a_run_stopped_before_its_out_exists_is_rerun_without_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: str) -> None:
    """A Ctrl-C in a run's first seconds (its --out made at the first epoch saved) said to
    rerun with --resume, which was then refused: nothing to resume in a missing folder."""
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, {"train": "train", "cv": "cross_validate"}[command], interrupted)
    out = tmp_path / "r"
    code, _, err = _run(capsys, command, "synthetic", "--out", str(out))
    assert code == 130 and err == ("covseg: interrupted; rerun the same command without --resume "
                                   f"(nothing was saved: {out} does not exist)\n")
    out.mkdir()
    code, _, err = _run(capsys, command, "synthetic", "--out", str(out))
    assert code == 130 and err == ("covseg: interrupted; rerun the same command with --resume to "
                                   "continue\n")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("covseg 0.")


def test_quantify_help_says_how_a_lung_mask_is_sided(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """--lungs said that right/left are recomputed except in covseg's own lungs.nii.gz; any
    0/1/2 mask of two lungs side by side keeps its labels as sides (Zenodo's swapped)."""
    with pytest.raises(SystemExit):
        main(["quantify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "labels 1 and 2 lying side by side are the right and left lungs" in text
    assert "recomputed" not in text


def _every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and, recursively, every sub-command's parser under it (``covseg data fetch``)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                yield from _every_parser(command)


def test_no_help_sends_to_a_file_of_the_repository() -> None:
    """`covseg predict -h` ended its --threshold help "see docs/limits.md", which an installed
    wheel does not hold: what it says is said inline, in every command's help down to
    `covseg data fetch -h` (the check stopped at the first level of commands)."""
    helps = {parser.prog: parser.format_help() for parser in _every_parser(build_parser())}
    assert {"covseg data fetch", "covseg data info"} <= set(helps)
    repository_only = re.compile(r"\b(docs|benchmarks|tests)/|README|\w\.md\b")
    named = {prog: [found.group() for found in repository_only.finditer(text)]
             for prog, text in helps.items()}
    assert {prog: names for prog, names in named.items() if names} == {}


def test_every_option_names_its_value() -> None:
    """`covseg train -h` showed --cutmix CUTMIX, --val-fraction VAL_FRACTION, --batch-size
    BATCH_SIZE, argparse's names, where docs/commands.md says --cutmix P, --val-fraction F,
    --batch-size N: every option that takes a value names it (or lists its choices)."""
    unnamed = [(parser.prog, action.option_strings[0])
               for parser in _every_parser(build_parser()) for action in parser._actions
               if action.option_strings and action.nargs != 0 and action.choices is None
               and action.metavar is None]
    assert unnamed == []


def _helps(command: str) -> dict[str, str]:
    """``command``'s options' help texts as ``-h`` prints them, by option."""
    parser = next(action.choices for action in build_parser()._actions
                  if isinstance(action, argparse._SubParsersAction))[command]
    return {action.option_strings[0]: parser._get_formatter()._expand_help(action)
            for action in parser._actions if action.option_strings and action.help}


def test_train_help_gives_its_defaults_and_speaks_of_its_own_work() -> None:
    """--target and --intensity said no default; train's --threshold spoke of the infection
    probability alone, where a --target lung run thresholds the lungs'; train's --resume spoke
    of cv's and compare's folds."""
    train, cv, compare = _helps("train"), _helps("cv"), _helps("compare")
    assert train["--target"].endswith("(default infection)")
    assert train["--intensity"].endswith("(default auto)")
    assert "with --target lung, of lung" in train["--threshold"]
    assert "fold" not in train["--resume"] and "cv" not in train["--resume"]
    assert "cross-validation" in cv["--resume"] and "comparison" in compare["--resume"]


def test_the_threshold_help_quotes_no_measured_dice() -> None:
    """`covseg predict -h` quoted the Dice of an older cross-validation at three thresholds
    (0.768 at the default, since measured 0.766): the help says how the default was chosen,
    the figures stay with the measured results."""
    parser = build_parser()
    commands = next(action.choices for action in parser._actions
                    if isinstance(action, argparse._SubParsersAction))
    text = next(action.help for action in commands["predict"]._actions
                if "--threshold" in action.option_strings)
    assert "0.4 for covseg's recipe, chosen by cross-validation" in text
    assert re.search(r"0\.\d{3}", text) is None


FULL_STDOUT = ("covseg: error: cannot write standard output (no space left on device); send it "
               "elsewhere (another file, /dev/null) to rerun\n")
"""All that ``covseg ... > /dev/full`` writes on stderr."""


def _covseg_with_stdout(argv: list[str], redirect: str,
                        stdout: int) -> subprocess.CompletedProcess[str]:
    """covseg ``argv`` in a process of its own, block-buffered, its stdout ``stdout`` with the
    shell's ``redirect`` (``>&-``, ``> /dev/full``)."""
    script = f"import sys\nfrom covseg import cli\nsys.exit(cli.main({argv}))"
    return subprocess.run(["sh", "-c", f'exec "$0" -c "$1" {redirect}', sys.executable, script],
                          check=False, stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=300, env={**os.environ, "PYTHONUNBUFFERED": ""})


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize(("redirect", "argv", "status", "stderr"), [
    ("", ["--version"], 141, ""),  # 128 + SIGPIPE
    (">&-", ["--help"], 141, ""),
    ("> /dev/full", ["models"], 1, FULL_STDOUT)], ids=["reader-gone", "closed", "full"])
def test_an_unwritable_stdout_ends_the_process_with_its_status(
        redirect: str, argv: list[str], status: int, stderr: str) -> None:
    """What the shell sees of a stdout that cannot be written: a reader gone (``covseg models
    --json | head -3`` ended with 'covseg: error: : Broken pipe', exit 2), a closed stdout
    (``>&-``, exit 1 and a NoneType traceback) or a full one (exit 0 and nothing written, or a
    traceback): the status, and no line of Python's own as the process exits, flushing what
    stdout still holds (the in-process tests below go through each command)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before covseg writes (unless redirect replaces it)
    try:
        done = _covseg_with_stdout(argv, redirect, write)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (status, stderr)


@contextlib.contextmanager
def _stdout_on(fd: int | None, unbuffered: str) -> Iterator[None]:
    """``sys.stdout`` as Python opens it on ``fd``: block-buffered as for a pipe or a file, or
    written through with ``PYTHONUNBUFFERED`` set; ``None`` where fd 1 is closed (``>&-``)."""
    if fd is None:
        stream = None
    else:
        raw = io.FileIO(fd, "w")
        stream = io.TextIOWrapper(raw if unbuffered else io.BufferedWriter(raw),
                                  encoding="utf-8", write_through=bool(unbuffered))
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@pytest.mark.parametrize("argv", [["--version"], ["models", "--json"]])
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_closed_stdout_pipe_ends_quietly(argv: list[str], unbuffered: str,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`covseg models --json | head -3` ended with 'covseg: error: : Broken pipe', exit 2."""
    monkeypatch.setattr(api, "model_table", lambda: [  # larger than a pipe's buffer
        {"name": "m", "parameters": 1, "options": {}, "description": "x" * 200_000}])
    read, write = os.pipe()
    os.close(read)
    with _stdout_on(write, unbuffered):
        code = main(argv)
    assert code == 141  # also --version, whose write argparse drops
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("argv", "status"), [
    (["models"], 141), (["--help"], 141), (["--version"], 141), (["export", "-h"], 141),
    (["predict", "/nonexist.nii.gz", "--model", "run", "--out", "x"], 2)])
def test_a_closed_stdout_ends_as_a_reader_gone(argv: list[str], status: int,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """With fd 1 closed (``>&-``) Python's stdout is None: every command ended in exit 1 and
    "'NoneType' object has no attribute 'flush'" (--help and --version: "... no attribute
    'write'"); now a refusal keeps its own status, and a command whose lines cannot be written
    ends as a closed pipe does."""
    with _stdout_on(None, ""):
        code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "NoneType" not in err
    assert code == status


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("argv", [["models"], ["--help"], ["--version"], ["models", "-h"],
                                  ["export", "--model", "m", "--out", "evf.onnx"]])
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_full_stdout_names_standard_output(argv: list[str], unbuffered: str,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``covseg evaluate ... > /dev/full`` said "no space left on device writing OUT; free
    space and rerun" of a finished job (buffered: a traceback), and --help or --version exited
    0 with nothing written: now one line naming standard output, exit 1."""
    monkeypatch.setattr(api, "export", lambda model, out: out)
    with _stdout_on(os.open("/dev/full", os.O_WRONLY), unbuffered):
        code = main(argv)
    assert (code, capsys.readouterr().err) == (1, FULL_STDOUT)


class _FullStream(io.StringIO):
    """A stderr on a full device (``2>/dev/full``): every write fails with ENOSPC."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def isatty(self) -> bool:
        return False


def _talking_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """``covseg models`` drawing a progress bar and logging a warning (both to stderr) before
    it prints its table."""
    from covseg.progress import progress_bar

    def models() -> list[dict[str, object]]:
        for _ in progress_bar(range(3), desc="listing"):
            logging.getLogger("covseg.models").warning("a warning on the way")
        return [{"name": "m", "parameters": 1, "options": {}, "description": "listed"}]

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(api, "models", models)


@pytest.mark.parametrize("stderr", [None, _FullStream()], ids=["closed", "full"])
def test_an_unwritable_stderr_leaves_a_command_its_output_and_status(
        stderr: io.StringIO | None, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With stderr closed (``2>&-``) or full (``2>/dev/full``) a finished command exited 1 with
    nothing on stdout and no files: its progress bar's last write failed (an AttributeError on
    None, or ENOSPC, taken for a full disk on --out, whose error line failed again). Bars,
    warnings and error lines are written best effort: the command's lines and status stand,
    and a refusal keeps its status, its line not put on stdout (print's stream for None)."""
    _talking_models(monkeypatch)
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["models"]) == 0
    assert "listed" in capsys.readouterr().out
    assert main(["predict", "/nonexist.png", "--model", "run", "--out", "x"]) == 2
    assert capsys.readouterr().out == ""


def test_a_name_a_strict_stderr_cannot_encode_is_escaped_and_later_lines_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stderr strict in ASCII took nothing more after a line naming ``médseg``: its
    UnicodeEncodeError was taken for a closed file, so the error line after it was lost too.
    The letter is written escaped, and the lines after it as they are; a closed stderr alone
    takes nothing more."""
    from covseg.console import tell

    written = io.BytesIO()
    stream = io.TextIOWrapper(written, encoding="ascii")
    monkeypatch.setattr(sys, "stderr", stream)
    tell("reading médseg")
    tell("covseg: error: plain ascii")
    assert written.getvalue() == b"reading m\\xe9dseg\ncovseg: error: plain ascii\n"
    stream.close()
    tell("after it closed")
    another = io.StringIO()
    monkeypatch.setattr(sys, "stderr", another)
    tell("on another stream")
    assert another.getvalue() == "on another stream\n"


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full"])
def test_a_closed_or_full_stderr_leaves_a_finished_command_exit_0(redirect: str) -> None:
    """``covseg data info DATA 2>&- > o.txt`` (and ``2>/dev/full``) exited 1 with o.txt empty:
    its file listing's bar failed as it closed. Now exit 0 and the lines written."""
    if redirect.endswith("/dev/full") and not Path("/dev/full").exists():
        pytest.skip("needs /dev/full (Linux)")
    data = shared("infnet-covid-semiseg")
    script = (f"import sys\nfrom covseg import cli\n"
              f"sys.exit(cli.main(['data', 'info', {str(data)!r}]))")
    env = {key: value for key, value in os.environ.items() if key != "TQDM_DISABLE"}
    done = subprocess.run(["sh", "-c", f'exec "$0" -c "$1" {redirect}', sys.executable, script],
                          check=False, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout
    assert "data_fingerprint" in done.stdout


def test_no_temporary_folder_says_to_set_tmpdir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's temporary files while training met no writable temporary folder (a locked-down
    container): "covseg: error: No usable temporary directory found in [...]" said not what
    to do."""
    (tmp_path / "file").write_text("a file, not a folder\n")
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(tempfile, "_candidate_tempdir_list", lambda: [str(tmp_path / "file")])
    monkeypatch.setattr(api, "models", lambda: tempfile.mkdtemp())
    code, _, err = _run(capsys, "models")
    _assert_one_line_error(code, err, "No usable temporary directory found in")
    assert err.endswith("; set TMPDIR to a writable folder\n")


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "train", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))
    _assert_one_line_error(code, err, "folder not found")


@pytest.mark.parametrize("argv, fragment", [
    (("train", "--model", "miniseg,nosuch"), "unknown model 'nosuch'"),
    (("cv", "--folds", "1"), "--folds must be at least 2"),
    (("compare", "--models", "unet", "nosuch"), "unknown model 'nosuch'"),
    (("compare", "--models", "unet", "unet"), "unet given twice"),
    (("compare", "--models", "unet"), "at least two models"),
    (("train", "--crop-lungs"), "add --lung-guide threshold"),
    (("cv", "--window", "150", "-1350"), "needs LOW < HIGH, both finite, got (150, -1350)"),
    (("train", "--seed", "-5"), "--seed must be a non-negative integer, got -5"),
    (("cv", "--model", "miniseg,unet", "--model-option", "width=8"), "mixes architectures"),
    (("train", "--model", "unet", "--model-option", "width=8", "--model-option", "width=16"),
     "--model-option width given twice (width=8, width=16); give each option once"),
    (("compare", "--models", "unet:width=8,width=16", "miniseg"),
     "model spec 'unet:width=8,width=16': width given twice; give each option once"),
    (("cv", "--seed", "-1"), "--seed must be a non-negative integer"),
    (("compare", "--models", "unet", "miniseg", "--seed", "-1"), "--seed must be a non-negative"),
    (("train", "--seed", "100000000000000000000"),
     ("--seed must be at most 4294967294 (2**32 - 1 less 1, which this run adds for its folds "
      "or ensemble members), got 100000000000000000000")),
    (("train", "--model", "unet", "--seed", "4294967296"),
     "--seed must be at most 4294967295 (2**32 - 1), got 4294967296"),
    (("cv", "--seed", "4294967296"), "--seed must be at most 4294967294 (2**32 - 1 less 1"),
    (("cv", "--folds", "3", "--model", "unet", "--seed", "4294967295"),
     "--seed must be at most 4294967293 (2**32 - 1 less 2"),
    (("compare", "--models", "unet", "miniseg", "--seed", "10000000000000000000"),
     "--seed must be at most 4294967295 (2**32 - 1), got"),  # its room once folds are read
    (("compare", "--models", "unet", "miniseg,unet", "--folds", "2", "--seed", "4294967294"),
     "--seed must be at most 4294967293 (2**32 - 1 less 2"),
    (("cv", "--repeats", "0"), ("--repeats must be at least 1 (1: the folds once, unrepeated), "
     "got 0")),
    (("compare", "--models", "unet", "miniseg", "--repeats", "-1"), "--repeats must be at least"),
    (("cv", "--folds", "3", "--repeats", "2", "--model", "unet", "--seed", "4294967291"),
     "--seed must be at most 4294967290 (2**32 - 1 less 5"),  # room for 3 x 2 folds
    (("compare", "--models", "unet", "miniseg", "--folds", "2", "--repeats", "3", "--seed",
      "4294967291"), "--seed must be at most 4294967290 (2**32 - 1 less 5"),
    (("cv", "--folds", "2", "--repeats", "2", "--fold", "4"),
     "--fold must lie in 0..3 for 2 folds repeated 2 times (4 folds), got 4"),
    (("train", "--val-fraction", "1"), "--val-fraction must lie in [0, 1), got 1.0"),
    (("cv", "--val-fraction", "1.5"), "--val-fraction must lie in [0, 1), got 1.5"),
    (("compare", "--models", "unet", "miniseg", "--val-fraction", "2"), "--val-fraction must"),
    (("train", "--target", "multiclass", "--threshold", "0.9"), "binary targets only"),
    (("cv", "--target", "multiclass", "--threshold", "0.4"), "binary targets only"),
    (("compare", "--models", "unet", "miniseg", "--target", "multiclass", "--threshold", "0.5"),
     "binary targets only"),
])
def test_bad_recipe_fails_before_data_are_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], fragment: str
) -> None:
    """The data folder does not exist: the recipe's error must come first, not after loading."""
    command, *options = argv
    code, _, err = _run(capsys, command, str(tmp_path / "missing"), "--out",
                        str(tmp_path / "r"), *options)
    _assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "r").exists(), "bad options fail before --out is made"


@pytest.mark.parametrize(("seed", "fragment"), [
    ("-1", "--seed must be a non-negative integer, got -1"),
    ("100000000000000000000", "--seed must be at most 4294967295 (2**32 - 1), got 1000")])
def test_visualize_seed_out_of_range_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path, seed: str,
        fragment: str) -> None:
    """``visualize --seed -1`` ended in numpy's traceback (train refused -1 in one line)."""
    code, _, err = _run(capsys, "visualize", str(synthetic_folder), "--out",
                        str(tmp_path / "v.png"), "--seed", seed)
    _assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "v.png").exists()


def test_synthetic_seed_out_of_range_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``synthetic:SEED`` above numpy's and torch's range was read as any other seed."""
    code, _, err = _run(capsys, "visualize", "synthetic:99999999999999999999", "--out",
                        str(tmp_path / "v.png"))
    _assert_one_line_error(code, err, "synthetic:99999999999999999999: the generator's seed "
                                      "must be at most 4294967295")


def test_a_model_option_too_large_for_memory_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--model-option width=1e12`` ended in torch's allocator traceback (exit 1)."""
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"), "--epochs",
                        "1", "--size", "32", "--model", "miniseg", "--model-option",
                        "width=1e12")
    _assert_one_line_error(code, err, "model 'miniseg' with width=1000000000000.0: too large to "
                                      "build in memory; lower width")
    assert not (tmp_path / "r").exists()


def test_running_out_of_memory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate out of memory ended in torch's allocator traceback; a bug's RuntimeError still
    shows its traceback. A volume refused for want of memory, named with its size, exited 2
    (bad input), where the docs give that very line under status 1."""
    from covseg.io.volume import short_of_memory

    report = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
              "allocate memory: you tried to allocate 2516582400 bytes. Error code 12")

    def evaluate(*_: object, **__: object) -> None:
        if report == "volume":
            raise short_of_memory((512, 512, 301), np.dtype(np.float32), "ct.nii.gz")
        raise RuntimeError(report)

    monkeypatch.setattr(api, "evaluate", evaluate)
    code, _, err = _run(capsys, "evaluate", "--pred", str(tmp_path), "--truth", str(tmp_path),
                        "--out", str(tmp_path / "ev"))
    assert code == 1 and err == ("covseg: error: out of memory (could not allocate 2.34 GiB): "
                                 "free memory (close other programs) or use a machine with "
                                 "more\n")
    report = "volume"
    code, _, err = _run(capsys, "evaluate", "--pred", str(tmp_path), "--truth", str(tmp_path),
                        "--out", str(tmp_path / "ev"))
    assert code == 1 and err == ("covseg: error: ct.nii.gz: not enough free memory for its 512 x "
                                 "512 x 301 voxels (301 MiB as float32); free memory (close "
                                 "other programs) or use a machine with more\n")
    report = "a bug"
    with pytest.raises(RuntimeError, match="a bug"):
        main(["evaluate", "--pred", str(tmp_path), "--truth", str(tmp_path), "--out",
              str(tmp_path / "ev")])


@pytest.mark.parametrize("raised", ["stream", "torch"])
def test_a_full_disk_no_writer_named_names_the_output_and_what_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        raised: str) -> None:
    """A stream's full disk printed a bare "No space left on device"; torch's writer's, a
    traceback of RuntimeErrors."""
    def train(*_: object, **__: object) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            if raised == "torch":
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")
            raise

    monkeypatch.setattr(api, "train", train)
    out = tmp_path / "r"
    out.mkdir()  # a run's folder exists from its first epoch saved
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(out), *TINY_RECIPE[:4])
    assert code == 2 and err == (f"covseg: error: no space left on device writing {out}; free "
                                 "space and rerun the same command with --resume to continue\n")


TINY_RECIPE = ("--epochs", "1", "--size", "32", "--model", "miniseg", "--augment", "none")
"""A recipe that trains in seconds, should an option be accepted that a test expects refused."""


def test_a_full_disk_after_the_checkpoints_says_to_resume_which_then_finishes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk writing curves.png (after the epochs' checkpoints) said "free space and rerun
    the same command", which was refused ("already holds a run; pass --resume"): a full disk
    anywhere in a train, cv or compare run says what goes on, and it does."""
    save = Figure.savefig

    def full(figure: Figure, target: object, *args: object, **kwargs: object) -> None:
        if "curves" in str(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        save(figure, target, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", full)
    out = tmp_path / "r"
    told = f"no space left on device writing {out / 'curves.png'}; free space and "
    out_text = _resumed_after_stop(capsys, ("train", "synthetic", "--out", str(out),
                                            *TINY_RECIPE), told, monkeypatch.undo)
    assert "trained 1 epoch" in out_text and (out / "curves.png").is_file()


def _resumed_after_stop(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], told: str,
                        repair: Callable[[], None]) -> str:
    """Run ``argv``, which must stop (exit 2) with ``told`` then "rerun the same command with
    --resume to continue" as its last line; ``repair`` what stopped it, and run it again with
    --resume, which must finish: its stdout."""
    code, _, err = _run(capsys, *argv)
    assert (code, err.splitlines()[-1]) == (2, (
        f"covseg: error: {told}rerun the same command with --resume to continue"))
    repair()
    code, out_text, _ = _run(capsys, *argv, "--resume")
    assert code == 0
    return out_text


def test_a_disk_remounted_read_only_mid_run_says_to_fix_it_and_resume_which_then_finishes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system remounted read-only under epoch 2's last.pt (its write failing with EROFS,
    naming no file, as a disk failing makes the kernel do) said "pick a writable place or
    another name", which would train the run again elsewhere: it is the disk's, as a full or
    failing one is, and the run goes on with --resume once the disk is fixed."""
    save = torch.save
    saved_last = 0

    def read_only_at_second_last(payload: object, handle: Any, *args: object,
                                 **kwargs: object) -> None:
        nonlocal saved_last
        saved_last += ".last." in Path(handle.name).name
        if saved_last == 2:
            raise OSError(errno.EROFS, "Read-only file system")
        save(payload, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", read_only_at_second_last)
    out = tmp_path / "r"
    told = f"{out / 'last.pt'}: cannot write it (Read-only file system); fix the disk and "
    argv = ("train", "synthetic", "--out", str(out), "--epochs", "2", *TINY_RECIPE[2:])
    assert "trained 2 epochs" in _resumed_after_stop(capsys, argv, told, monkeypatch.undo)


@pytest.mark.parametrize(("command", "module", "record", "earlier"), [
    (("train",), "covseg.train", "metrics.json", None),
    (("cv", "--folds", "2"), "covseg.crossval", "summary.json", None),
    (("train",), "covseg.train", "metrics.json", ("train",)),
    (("cv", "--resume"), "covseg.crossval", "summary.json", ("cv", "--folds", "2"))],
    ids=["train", "cv", "train-into-a-finished-run", "cv-resumed-with-other-folds"])
def test_a_stop_after_the_last_write_says_the_run_had_finished(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: tuple[str, ...], module: str, record: str,
        earlier: tuple[str, ...] | None) -> None:
    """A stop (Ctrl-C) landing right after a train's metrics.json or a cv's summary.json, the
    last thing each writes, said "rerun the same command with --resume to continue", which then
    had nothing to do (a cv's wrote its stopped.json too, and the resume every report again): it
    says the run had finished, with the stop's exit status, and the resume finds it so. Only a
    record this command wrote says so: stopped as it began, a fresh train into a finished run's
    folder and a cv --resume of a finished cv without its --folds (both refused, unstopped)
    said it too, where the advice is to resume."""
    out = tmp_path / "r"
    argv = (*command, "synthetic", "--out", str(out), *TINY_RECIPE)
    if earlier is not None:
        assert _run(capsys, *earlier, "synthetic", "--out", str(out), *TINY_RECIPE)[0] == 0

        def stopped_as_it_begins(*args: object, **kwargs: object) -> object:
            raise KeyboardInterrupt

        monkeypatch.setattr(api, "train" if command[0] == "train" else "cross_validate",
                            stopped_as_it_begins)
        code, _, err = _run(capsys, *argv)
        assert (code, err.splitlines()[-1]) == (
            130, "covseg: interrupted; rerun the same command with --resume to continue")
        return
    writer = importlib.import_module(module)
    real_write = writer.write_json

    def stopped_after_record(path: Path, content: object, **kwargs: object) -> Path:
        written = real_write(path, content, **kwargs)
        if Path(path) == out / record:
            raise KeyboardInterrupt
        return written

    monkeypatch.setattr(writer, "write_json", stopped_after_record)
    code, _, err = _run(capsys, *argv)
    assert (code, err.splitlines()[-1]) == (130, (
        f"covseg: interrupted; the run had finished ({out / record} was written before the "
        "stop): nothing to resume"))
    assert not (out / "stopped.json").exists() and not list(out.rglob("last.pt"))
    monkeypatch.undo()
    code, out_text, _ = _run(capsys, *argv, "--resume")
    assert code == 0 and "nothing to do" in out_text


def test_a_full_disk_beside_a_finished_run_says_to_resume_not_that_it_finished(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk (an OSError naming no file) in a train whose --out held a finished run read
    "...; free space and the run had finished (... was written before the stop)", though no stop
    came: that wording is a stop's only."""
    out = tmp_path / "r"
    argv = ("train", "synthetic", "--out", str(out), *TINY_RECIPE)
    assert _run(capsys, *argv)[0] == 0

    def full_disk(*args: object, **kwargs: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(api, "train", full_disk)
    code, _, err = _run(capsys, *argv, "--resume")
    assert (code, err.splitlines()[-1]) == (2, (
        f"covseg: error: no space left on device writing {out}; free space and rerun the same "
        "command with --resume to continue"))


@pytest.mark.parametrize(("options", "never"), [
    (("--target", "lung"), "--target lung"), (("--lung-guide", "threshold"), "--lung-guide")])
def test_frame_lungs_given_where_it_never_applies_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], options: tuple[str, ...],
        never: str) -> None:
    """``--frame-lungs`` with ``--target lung`` trained and recorded false without a word."""
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"),
                        "--frame-lungs", *options, *TINY_RECIPE)
    _assert_one_line_error(code, err, f"--frame-lungs frames infection models without a lung "
                                      f"guide; a {never} model never frames: leave "
                                      "--frame-lungs out")
    assert not (tmp_path / "r").exists()
    with pytest.raises(CovsegError, match=": leave frame_lungs out$"):
        api.train("synthetic", tmp_path / "r2", frame_lungs=True, epochs=1, size=32,
                  model="miniseg", **{options[0].lstrip("-").replace("-", "_"): options[1]})
    recipe = api._recipe({options[0].lstrip("-").replace("-", "_"): options[1],
                          "frame_lungs": False}, False, None)
    assert recipe.frame_lungs is False
    assert api._recipe({}, False, None).frame_lungs is True
    assert api._recipe({"frame_lungs": True}, False, None).frame_lungs is True


def test_window_takes_negative_numbers_with_an_exponent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--window -1e3 150`` said "expected 2 arguments": argparse took -1e3 for an option."""
    code, out, _ = _run(capsys, "visualize", "synthetic", "--out", str(tmp_path / "v.png"),
                        "--window", "-1e3", "1.5e2", "--n", "2")
    assert code == 0 and "wrote" in out and (tmp_path / "v.png").is_file()
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"),
                        "--window", "-1E3", "-2e3")
    _assert_one_line_error(code, err, "needs LOW < HIGH, both finite, got (-1000, -2000)")


@pytest.mark.parametrize(("argv", "message"), [
    (("models", "--json", "extra"), "extra (see `covseg models -h`)"),
    (("visualize", "synthetic", "--out", "v.png", "--fold", "1"),
     "--fold 1 (see `covseg visualize -h`)"),
    (("data", "info", "synthetic", "--bogus"), "--bogus (see `covseg data info -h`)"),
    (("data", "fetch", "medseg", "--to", "d", "--bogus"), "--bogus (see `covseg data fetch -h`)")])
def test_a_subcommands_unrecognised_argument_points_to_its_help(
        capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str) -> None:
    """They pointed to `covseg -h`, whose usage lists no command's options; a nested one's to
    `covseg data -h`, which lists neither data info's nor data fetch's."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    _assert_one_line_error(exit_info.value.code, capsys.readouterr().err,
                           f"unrecognized arguments: {message}")


def test_an_empty_name_in_a_model_list_is_named_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--model 'unet,'`` said "unknown model ''"."""
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"),
                        "--model", "unet,")
    _assert_one_line_error(code, err, "--model 'unet,': an empty name in the list; join the "
                                      "names of an ensemble with ',', e.g. 'miniseg,unet'")


@pytest.mark.parametrize("command", [
    ["train"], ["cv", "--folds", "2", "--fold", "0"], ["compare", "--models", "miniseg", "unet"]])
def test_resume_into_an_out_that_does_not_exist_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    """``--resume`` with a mistyped --out trained a new run from scratch without a word."""
    out = tmp_path / "typo"
    code, _, err = _run(capsys, command[0], "synthetic", *command[1:], "--out", str(out),
                        "--resume", "--epochs", "1", "--size", "32", "--augment", "none")
    _assert_one_line_error(code, err, f"--resume: nothing to resume in {out}, which does not "
                           "exist; drop --resume to start there, or give the --out of the run "
                           "to continue")
    assert not out.exists()
    with pytest.raises(CovsegError, match="^resume=True: nothing to resume in "):
        api.train("synthetic", out, resume=True, epochs=1, size=32, model="miniseg")


def test_bad_synthetic_seed_is_one_line_and_makes_no_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "train", "synthetic:abc", "--out", str(tmp_path / "r"))
    _assert_one_line_error(code, err, "synthetic:abc: the generator's seed must be a non-negative")
    assert not (tmp_path / "r").exists()


def test_an_infection_run_is_refused_as_lung_model(tmp_path: Path, tiny_run: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The cascade's lung guide and volume prediction's --lung-model must segment lungs."""
    code, _, err = _run(capsys, "train", str(tmp_path / "missing"), "--out", str(tmp_path / "r"),
                        "--lung-guide", str(tiny_run))
    _assert_one_line_error(code, err, "trained for --target infection, not a lung model")
    volume = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 2), -1000.0, dtype=np.float32), np.eye(4)),
             str(volume))
    code, _, err = _run(capsys, "predict", str(volume), "--model", str(tiny_run),
                        "--lung-model", str(tiny_run), "--out", str(tmp_path / "p"))
    _assert_one_line_error(code, err, "not a lung model")
    lung_run = tmp_path / "lungs"
    api.train("synthetic", lung_run, target="lung", epochs=1, size=64, batch_size=4,
              model="unet", model_options={"width": 4})
    capsys.readouterr()
    code, _, err = _run(capsys, "predict", str(volume), "--model", str(lung_run),
                        "--out", str(tmp_path / "p"))
    _assert_one_line_error(code, err, "pass it as --lung-model")


def test_python_api_mirrors_volume_predict_and_quantify(tmp_path: Path, tiny_run: Path) -> None:
    import covseg

    volume = tmp_path / "ct.nii.gz"
    hu = np.full((32, 32, 3), -1000.0, dtype=np.float32)
    hu[4:28, 4:28] = 40.0
    hu[8:14, 8:24] = hu[18:24, 8:24] = -850.0
    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(volume))
    result = covseg.predict_volumes(tiny_run, [volume], tmp_path / "pred", html=True)
    assert (result.done, result.failed) == (1, 0)
    assert (tmp_path / "pred" / "ct" / "report.html").is_file()
    again = covseg.quantify([tmp_path / "pred"], tmp_path / "again")
    assert (again.done, again.failed) == (1, 0)
    with pytest.raises(CovsegError, match="predict_volumes"):
        covseg.predict(tiny_run, [volume], tmp_path / "masks")


def test_a_batch_of_one_study_ends_with_its_figures_and_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """quantify (and CT predict) of one study ended "1 done, 0 already done, 0 failed; summary:
    ...": no lesion mL, % or category, nor the folder holding its montage and report. A batch
    of several keeps its counts."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "chest")
    out = tmp_path / "q"
    for done in ("", " (already done)"):
        code, printed, _ = _run(capsys, "quantify", str(mask), "--image", str(ct), "--out",
                                str(out))
        assert code == 0
        assert re.fullmatch(rf"chest{re.escape(done)}: lesion 0\.18 mL, \d+\.\d\d % of "
                            rf"the lungs involved, CT-1; results in {re.escape(str(out))}/"
                            r"chest\n", printed), printed
    code, printed, _ = _run(capsys, "quantify", str(mask), "--out", str(tmp_path / "nolungs"))
    assert printed.endswith("lesion 0.18 mL, category not available (no lung mask); results in "
                            f"{tmp_path / 'nolungs' / 'chest'}\n")
    synthetic_study(tmp_path / "in", "other")
    code, printed, _ = _run(capsys, "quantify", str(mask.parent), "--image", str(ct.parent),
                            "--out", str(tmp_path / "two"))
    assert printed == f"2 done, 0 already done, 0 failed; summary: {tmp_path / 'two'}/summary.csv\n"


def test_a_study_skipped_as_an_earlier_covsegs_says_it_recorded_no_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rerun into an --out an earlier covseg wrote (its record holds no settings) skips the
    study and printed "NAME (already done): ..." with the old figures, made perhaps otherwise
    (160 mL where this covseg found 970): the line says whose they are and how to redo it."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "chest")
    out = tmp_path / "q"
    args = ("quantify", str(mask), "--image", str(ct), "--out", str(out))
    assert _run(capsys, *args)[0] == 0
    done = out / "chest" / "quantification.json"
    record = json.loads(done.read_text(encoding="utf-8"))
    del record["settings"]
    done.write_text(json.dumps(record), encoding="utf-8")
    code, printed, _ = _run(capsys, *args)
    assert code == 0
    assert printed.startswith("chest (already done by an earlier covseg that recorded no "
                              "settings; delete its folder to redo it): lesion 0.18 mL, "), printed


def test_a_batch_counts_the_studies_skipped_as_an_earlier_covsegs_recorded_no_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The note above showed only for one study: a rerun of two whose records hold no settings
    said "0 done, 2 already done, 0 failed; summary: ..." without a word, as did one new study
    beside an old one. The counts line says how many are an earlier covseg's."""
    for name in ("chest", "other"):
        synthetic_study(tmp_path / "in", name)
    out = tmp_path / "q"
    args = ("quantify", str(tmp_path / "in" / "masks"), "--image", str(tmp_path / "in"),
            "--out", str(out))
    assert _run(capsys, *args)[0] == 0
    for done in out.glob("*/quantification.json"):
        record = json.loads(done.read_text(encoding="utf-8"))
        del record["settings"]
        done.write_text(json.dumps(record), encoding="utf-8")
    code, printed, _ = _run(capsys, *args)
    assert code == 0
    assert printed == ("0 done, 2 already done (2 done by an earlier covseg that recorded no "
                       "settings; delete their folders to redo them), 0 failed; summary: "
                       f"{out}/summary.csv\n"), printed


def test_predict_mosmed_studies_folder_as_it_ships(tmp_path: Path, tiny_run: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``covseg predict MOS/studies`` (studies/CT-0..CT-4/*.nii.gz) failed every CT-x folder as
    "no DICOM series found"; each file is now a study named after it, as is CT-0's one file."""
    hu = np.full((32, 32, 3), -1000.0, dtype=np.float32)
    hu[4:28, 4:28] = 40.0
    for name in ("CT-0/study_0001", "CT-1/study_0255", "CT-1/study_0256"):
        (tmp_path / "studies" / name).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(hu, np.eye(4)), str(tmp_path / "studies" / f"{name}.nii.gz"))
    code, out, _ = _run(capsys, "predict", "--model", str(tiny_run), str(tmp_path / "studies"),
                        "--out", str(tmp_path / "p"))
    assert code == 0 and "3 done, 0 already done, 0 failed" in out
    assert sorted(p.parent.name for p in (tmp_path / "p").glob("*/infection.nii.gz")) == [
        "study_0001", "study_0255", "study_0256"]


def test_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            tiny_run: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "slice.png")
    code, _, err = _run(capsys, "predict", str(tmp_path / "slice.png"), "--model", str(tiny_run),
                        "--out", str(tmp_path / "taken"))
    _assert_one_line_error(code, err, "a file is in the way")


def test_train_says_one_epoch_in_the_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               synthetic_folder: Path) -> None:
    """"trained 1 epochs"."""
    code, out, _ = _run(capsys, "train", str(synthetic_folder), "--out", str(tmp_path / "run"),
                        "--epochs", "1", "--size", "32", "--batch-size", "4", "--model", "unet",
                        "--model-option", "width=4", "--val-fraction", "0.2")
    assert code == 0 and out.startswith("trained 1 epoch (validation Dice 0."), out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_epoch_by"].startswith(
        "best_val_dice_canvas (log.csv's val_dice): the validation Dice on the 32 px canvas;")


def test_a_multiclass_run_names_its_two_validation_dices(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], saved_figures: list[Figure]) -> None:
    """The console and metrics.json's validation gave the Dice of any lesion (0.285), while
    curves.png, log.csv's val_dice and best_val_dice_canvas gave the mean over the lesion
    classes (0.10), both called "validation Dice", the curve's note blaming image size."""
    run = tmp_path / "run"
    code, out, _ = _run(capsys, "train", "synthetic", "--target", "multiclass", "--out",
                        str(run), "--epochs", "1", "--size", "32", "--batch-size", "4",
                        "--model", "unet", "--model-option", "width=4", "--val-fraction", "0.2")
    metrics = json.loads((run / "metrics.json").read_text())
    dice_mean = metrics["validation"]["dice"]["mean"]
    assert code == 0
    assert out.startswith(f"trained 1 epoch (validation Dice (any lesion) {dice_mean:.3f})")
    assert "the mean over the lesion classes present" in metrics["best_epoch_by"]
    assert "validation.dice is the Dice of any lesion (label > 0)" in metrics["best_epoch_by"]
    with (run / "log.csv").open() as handle:
        assert float(next(csv.DictReader(handle))["val_dice"]) == pytest.approx(
            metrics["best_val_dice_canvas"])
    _, dice = saved_figures[-1].axes
    assert dice.get_ylabel() == ("validation Dice, mean over\nlesion classes\n"
                                 "(on the 32 px training canvas)")
    assert dice.get_title() == (
        f"kept (star): epoch 1, validation Dice (any lesion) {dice_mean:.3f}\nat the images' "
        "own size (metrics.json's validation.dice)")
    recipe = ["--target", "multiclass", "--epochs", "1", "--size", "32", "--batch-size", "4",
              "--model", "unet", "--model-option", "width=4", "--folds", "2"]
    code, out, _ = _run(capsys, "cv", "synthetic", "--out", str(tmp_path / "cv"), *recipe)
    assert code == 0 and out.startswith("Dice (any lesion) 0."), out  # said plain "Dice"
    code, out, _ = _run(capsys, "cv", "synthetic", "--out", str(tmp_path / "one"), "--fold", "0",
                        *recipe)
    assert code == 0 and out.startswith("fold 0: Dice (any lesion) 0."), out
    code, out, _ = _run(capsys, "compare", "synthetic", "--out", str(tmp_path / "cmp"),
                        *recipe[:-6], "--folds", "2", "--models", "unet:width=4", "unet:width=2")
    assert code == 0 and out.startswith("unet:width=4: Dice (any lesion) 0."), out


def test_a_layouts_sub_folder_is_refused_naming_its_data_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Inf-Net's Imgs/ given to visualize got the generic "unrecognised data layout"."""
    (tmp_path / "Imgs").mkdir()
    (tmp_path / "GT").mkdir()  # Imgs/ alone is a generic images/ (Imgs/ + masks/)
    code, _, err = _run(capsys, "visualize", str(tmp_path / "Imgs"), "--out",
                        str(tmp_path / "v.png"))
    _assert_one_line_error(code, err, f"{tmp_path / 'Imgs'}: the Imgs/ folder of Inf-Net data; "
                                      f"give the data folder itself, {tmp_path}")


def test_unrecognised_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data" / "stuff").mkdir(parents=True)
    code, _, err = _run(capsys, "cv", str(tmp_path / "data"), "--out", str(tmp_path / "r"))
    _assert_one_line_error(code, err, "unrecognised data layout")


def test_images_without_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              synthetic_folder: Path) -> None:
    data = tmp_path / "d"
    shutil.copytree(synthetic_folder, data)
    next((data / "masks").iterdir()).unlink()
    code, _, err = _run(capsys, "visualize", str(data), "--out", str(tmp_path / "v.png"))
    _assert_one_line_error(code, err, "have no mask")
    assert not (tmp_path / "v.png").exists()


def test_size_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for folder, shape in (("images", (16, 16)), ("masks", (16, 12))):
        (tmp_path / "d" / folder).mkdir(parents=True)
        Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / "d" / folder / "a.png")
    code, _, err = _run(capsys, "train", str(tmp_path / "d"), "--out", str(tmp_path / "r"))
    _assert_one_line_error(code, err, "must match their images")


def test_corrupt_image_in_predict_is_listed_and_the_others_predicted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        synthetic_folder: Path) -> None:
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = next((synthetic_folder / "images").glob("*.npy"))
    shutil.copy(good, bad / "good.npy")
    code, _, err = _run(capsys, "predict", str(bad), "--model", str(tiny_run), "--out",
                        str(tmp_path / "out"))
    _assert_one_line_error(code, err, "1 of 2 images could not be predicted (first: ", 1)
    assert "corrupt" in err and f"{tmp_path / 'out'} holds the other 1 mask, and " in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png", "predict.json"]
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert list(record["failed"]) == [str(bad / "broken.png")] and record["masks"] == 1


def test_an_unreadable_image_in_predict_is_listed_and_the_others_predicted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image the user may not read (permission denied) stopped the whole 2D batch before any
    mask, while a corrupt one is listed as failed and the others predicted: now alike."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "locked.png")
    shutil.copy(next((synthetic_folder / "images").glob("*.npy")), folder / "good.npy")
    deny_reading(monkeypatch, folder / "locked.png")
    code, _, err = _run(capsys, "predict", str(folder), "--model", str(tiny_run), "--out",
                        str(tmp_path / "out"))
    _assert_one_line_error(code, err, f"(first: {folder / 'locked.png'}: permission denied; "
                                      "make it readable (chmod +r) or leave it out)", 1)
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert list(record["failed"]) == [str(folder / "locked.png")] and record["masks"] == 1
    assert (tmp_path / "out" / "good.png").is_file()


def test_an_unreadable_checkpoint_says_so(tmp_path: Path, tiny_run: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A sound checkpoint the user may not read was called "not a covseg checkpoint ...
    damaged, or another format"."""
    deny_reading(monkeypatch, tiny_run / "best.pt")
    with pytest.raises(CovsegError, match=re.escape(
            f"{tiny_run / 'best.pt'}: permission denied; make it readable (chmod +r) or pass "
            "another model")):
        load_checkpoint(tiny_run)


def test_an_image_over_the_slice_bound_in_predict_is_listed_and_the_others_predicted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        synthetic_folder: Path) -> None:
    """PIL's DecompressionBombError (an image over 178,956,970 pixels) stopped predict with a
    traceback and nothing written, not even the readable images beside it; a 13,000 x 13,000
    PNG header under that limit was decoded for 72 s before "out of memory"."""
    folder = tmp_path / "in"
    folder.mkdir()
    png_header(folder / "huge.png", 13_000, 13_000)
    shutil.copy(next((synthetic_folder / "images").glob("*.npy")), folder / "good.npy")
    code, _, err = _run(capsys, "predict", str(folder), "--model", str(tiny_run), "--out",
                        str(tmp_path / "out"))
    _assert_one_line_error(code, err, "1 of 2 images could not be predicted (first: ", 1)
    assert ("huge.png: its header claims a 13,000 x 13,000 image (169,000,000 pixels), more "
            "than covseg reads in one slice (67,108,864 pixels, 8,192 x 8,192, at most)") in err
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert list(record["failed"]) == [str(folder / "huge.png")] and record["masks"] == 1
    assert (tmp_path / "out" / "good.png").is_file()


def _lying_npy(path: Path) -> Path:
    """A 192-byte .npy whose header claims 2**20 x 2**20 float64 (8 TiB)."""
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f8", "fortran_order": False, "shape": (2 ** 20, 2 ** 20)})
        handle.write(bytes(64))
    return path


LYING_NPY_REFUSED = ("its header claims an array of shape (1048576, 1048576) "
                     "(1,099,511,627,776 values), more than covseg reads in one slice")


def test_an_image_whose_header_claims_terabytes_fails_alone_in_predict(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        synthetic_folder: Path) -> None:
    """A 192-byte .npy claiming 8 TiB stopped the whole 2D batch with "out of memory" naming
    no file, no mask written for the good images and predict.json left all pending."""
    folder = tmp_path / "in"
    folder.mkdir()
    bad = _lying_npy(folder / "b_bad.npy")
    shutil.copy(next((synthetic_folder / "images").glob("*.npy")), folder / "a_good.npy")
    code, _, err = _run(capsys, "predict", str(folder), "--model", str(tiny_run), "--out",
                        str(tmp_path / "out"))
    _assert_one_line_error(code, err, f"(first: {bad}: {LYING_NPY_REFUSED}", 1)
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert list(record["failed"]) == [str(bad)] and record["masks"] == 1
    assert (tmp_path / "out" / "a_good.png").is_file()


def test_an_image_that_runs_out_of_memory_while_read_fails_alone_in_predict(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image too large for free memory (its header under covseg's bound, so read) stopped
    the whole 2D batch with an "out of memory" line naming no file; it fails alone, named with
    the size asked for and the file's size."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a_good.npy", "b_big.npy"):
        shutil.copy(next((synthetic_folder / "images").glob("*.npy")), folder / name)
    read = api.read_image

    def read_or_run_out(path: Path) -> np.ndarray:
        if Path(path).name == "b_big.npy":
            raise MemoryError("Unable to allocate 3.00 GiB for an array with shape (32768, 24576)")
        return read(path)

    monkeypatch.setattr(api, "read_image", read_or_run_out)
    code, _, err = _run(capsys, "predict", str(folder), "--model", str(tiny_run), "--out",
                        str(tmp_path / "out"))
    size = (folder / "b_big.npy").stat().st_size
    _assert_one_line_error(code, err, f"(first: {folder / 'b_big.npy'}: out of memory (could not "
                                      f"allocate 3.00 GiB) reading it; the file holds {size:,} "
                                      "bytes: is the file corrupt?", 1)
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert list(record["failed"]) == [str(folder / "b_big.npy")] and record["masks"] == 1


def test_data_info_says_whether_the_data_s_own_split_files_make_the_folds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only --json's shipped_folds told whether cv would use the data's split files, so a
    folder whose files were not read printed the same lines as one whose files were."""
    from tests.data.test_layouts import _mosmed_2d

    root = _mosmed_2d(tmp_path)
    assert main(["data", "info", str(root)]) == 0
    assert "\ncv folds: the data's own split files (2 folds)\n" in capsys.readouterr().out
    for path in root.glob("*_new*.txt"):
        path.unlink()
    assert main(["data", "info", str(root)]) == 0
    assert "\ncv folds: drawn by covseg (no split files found beside the data)\n" in (
        capsys.readouterr().out)


@pytest.mark.parametrize(("command", "options"), [(("data", "info"), ()),
                                                   (("visualize",), ("--out", "v.png"))])
def test_an_image_whose_header_claims_terabytes_is_named_in_a_data_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path,
        command: tuple[str, ...], options: tuple[str, ...],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same .npy among a training folder's slices stopped data info, visualize and train
    with an "out of memory" line that left the user to find it among hundreds of slices."""
    data = tmp_path / "d"
    shutil.copytree(synthetic_folder, data)
    bad = _lying_npy(min((data / "images").glob("*.npy")))
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, *command, str(data), *options)
    err = err.rsplit("\r", 1)[-1]  # what a terminal shows after the cleared progress bar
    _assert_one_line_error(code, err, f"error: {bad}: {LYING_NPY_REFUSED}")


def test_predict_names_a_file_of_another_type_so_and_its_folder_skips_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        synthetic_folder: Path) -> None:
    """``predict notes.md`` asked "is the file corrupt?"; now it says the file is of a type
    covseg does not read and which it reads (a broken .png is still asked); a folder holding
    it predicts its images and passes it over."""
    folder = tmp_path / "in"
    folder.mkdir()
    notes, broken = folder / "notes.md", tmp_path / "broken.png"
    notes.write_text("# notes\n")
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    shutil.copy(next((synthetic_folder / "images").glob("*.npy")), folder / "good.npy")
    code, _, err = _run(capsys, "predict", str(notes), str(broken), "--model", str(tiny_run),
                        "--out", str(tmp_path / "out"))
    _assert_one_line_error(code, err, f"2 of 2 images could not be predicted (first: {notes}: "
                                      "a .md file, not an image covseg reads; give 2D slices as "
                                      ".png, ", 1)
    failed = json.loads((tmp_path / "out" / "predict.json").read_text())["failed"]
    assert "corrupt" not in failed[str(notes)] and "or CT volumes as NIfTI" in failed[str(notes)]
    assert failed[str(broken)].endswith("; is the file corrupt?")
    code, out, _ = _run(capsys, "predict", str(folder), "--model", str(tiny_run), "--out",
                        str(tmp_path / "folder_out"))
    assert code == 0 and out.startswith("wrote 1 mask(s)")
    assert sorted(p.name for p in (tmp_path / "folder_out").iterdir()) == ["good.png",
                                                                           "predict.json"]


def test_predict_names_a_missing_or_empty_input_given_with_ct_volumes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        synthetic_folder: Path) -> None:
    """A mistyped path or an empty folder beside a CT was told "give either 2D images or CT
    volumes ..., not both", though no 2D image was given: the path is named as when given
    alone (nothing written), the empty folder fails its study; a real mix is still refused,
    naming one input of each kind."""
    ct = tmp_path / "chest.nii.gz"
    nib.save(nib.Nifti1Image(np.full((32, 32, 3), -1000.0, np.float32), np.eye(4)), str(ct))
    missing = tmp_path / "nonexist.nii.gz"
    code, _, err = _run(capsys, "predict", str(ct), str(missing), "--model", str(tiny_run),
                        "--out", str(tmp_path / "out_missing"))
    _assert_one_line_error(code, err, f"{missing}: no such file or folder")
    assert not (tmp_path / "out_missing").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out_empty"
    code, _, err = _run(capsys, "predict", str(ct), str(empty), "--model", str(tiny_run),
                        "--out", str(out))
    assert code == 1 and "1 done, 0 already done, 1 failed" in err
    with open(out / "summary.csv", newline="") as handle:
        rows = {row["study"]: row for row in csv.DictReader(handle)}
    assert rows["chest"]["status"] == "done" and rows["empty"]["status"] == "failed"
    assert rows["empty"]["error"] == f"{empty}: the folder is empty; give a folder of DICOM slices"
    image = next((synthetic_folder / "images").glob("*.npy"))
    code, _, err = _run(capsys, "predict", str(ct), str(image), "--model", str(tiny_run),
                        "--out", str(tmp_path / "out_mixed"))
    _assert_one_line_error(code, err, "give either 2D images or CT volumes to one predict call, "
                                      f"not both ({image}: 2D images; {ct}: CT volumes)")


def test_predict_lists_a_label_mask_given_as_an_image_and_predicts_the_others(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        synthetic_folder: Path) -> None:
    """``predict GT/2.png`` (Inf-Net's 0/255 truth) wrote a "mask" of it and exited 0. A label
    mask is now listed as failed with the reason, and the images beside it are predicted, an
    all-black slice too."""
    folder = tmp_path / "in"
    folder.mkdir()
    truth = np.zeros((48, 40), dtype=np.uint8)
    truth[10:30, 8:20] = 255
    Image.fromarray(truth).save(folder / "truth.png")
    Image.fromarray(np.zeros((48, 40), dtype=np.uint8)).save(folder / "black.png")
    shutil.copy(next((synthetic_folder / "images").glob("*.npy")), folder / "good.npy")
    reason = (f"{folder / 'truth.png'}: not a CT slice but a label mask (values 0/255); give "
              "the slice itself")
    code, _, err = _run(capsys, "predict", str(folder), "--model", str(tiny_run), "--out",
                        str(tmp_path / "out"))
    _assert_one_line_error(code, err, f"1 of 3 images could not be predicted (first: {reason})",
                           1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["black.png", "good.png",
                                                                    "predict.json"]
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert record["failed"] == {str(folder / "truth.png"): reason} and record["masks"] == 2
    with Image.open(tmp_path / "out" / "black.png") as black:
        assert black.size == (40, 48)


def test_predict_names_the_16_bit_slice_it_cannot_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        synthetic_folder: Path) -> None:
    """A 16-bit PNG's failure line gave the reason alone ("first: cannot tell the intensity
    scale ..."); only predict.json named the file."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) * 30).save(
        folder / "u16.png")
    shutil.copy(next((synthetic_folder / "images").glob("*.npy")), folder / "good.npy")
    reason = f"{folder / 'u16.png'}: cannot tell the intensity scale (values 0..57570, "
    code, _, err = _run(capsys, "predict", str(folder), "--model", str(tiny_run), "--out",
                        str(tmp_path / "out"))
    _assert_one_line_error(code, err, f"1 of 2 images could not be predicted (first: {reason}",
                           1)
    failed = json.loads((tmp_path / "out" / "predict.json").read_text())["failed"]
    assert list(failed) == [str(folder / "u16.png")] and failed[str(folder / "u16.png")].startswith(
        reason)


@pytest.mark.parametrize("real", [False, True])
def test_predict_fails_a_label_volume_given_as_the_ct(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path, real: bool) -> None:
    """``predict study_0255_mask.nii.gz`` (MosMed's 0/1 lesion mask) said "1 done", exit 0,
    with no lungs found and lesion 0 ml; it now fails as its study, with the reason."""
    if real:
        mask = shared("mosmed-masks", "masks", "study_0255_mask.nii.gz")
    else:
        labels = np.zeros((32, 32, 4), dtype=np.uint8)
        labels[8:20, 10:24, 1:3] = 1
        mask = tmp_path / "study_0255_mask.nii.gz"
        nib.save(nib.Nifti1Image(labels, np.diag([0.8, 0.8, 5.0, 1.0])), str(mask))
    code, _, err = _run(capsys, "predict", str(mask), "--model", str(tiny_run), "--out",
                        str(tmp_path / "p"))
    assert code == 1 and "0 done, 0 already done, 1 failed" in err
    with open(tmp_path / "p" / "summary.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert row["status"] == "failed" and row["error"] == (
        f"{mask}: not a CT image but a label mask (values 0/1); give the CT itself")
    assert not list((tmp_path / "p").glob("*/infection.nii.gz"))


def test_predict_never_overwrites_inputs_or_its_own_masks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((32, 32), 90, dtype=np.uint8)).save(images / "slice.png")
    before = (images / "slice.png").read_bytes()
    code, _, err = _run(capsys, "predict", str(images), "--model", str(tiny_run), "--out",
                        str(images))
    _assert_one_line_error(code, err, "would overwrite the input")
    assert (images / "slice.png").read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.full((32, 32), 90, dtype=np.uint8)).save(other / "slice.jpg")
    code, _, err = _run(capsys, "predict", str(images / "slice.png"), str(other / "slice.jpg"),
                        "--model", str(tiny_run), "--out", str(tmp_path / "masks"))
    _assert_one_line_error(code, err, "would both be written to")
    assert not (tmp_path / "masks").exists()


def test_visualize_out_must_be_a_png_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         synthetic_folder: Path) -> None:
    (tmp_path / "d").mkdir()
    code, _, err = _run(capsys, "visualize", str(synthetic_folder), "--out", str(tmp_path / "d"))
    _assert_one_line_error(code, err, f"{tmp_path / 'd'}: is a folder; pass the PNG grid file")
    (tmp_path / "notes.txt").write_text("keep me")
    code, _, err = _run(capsys, "visualize", str(synthetic_folder), "--out",
                        str(tmp_path / "notes.txt"))
    _assert_one_line_error(code, err, "must end in .png")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_visualize_out_never_replaces_data_or_other_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """``--out DATA/masks/x.png`` replaced a truth mask with the grid, and the data set no longer
    loaded; an existing file visualize did not write (another command's figure) was replaced too."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_folder, data)
    mask = min((data / "masks").iterdir())
    before = mask.read_bytes()
    code, _, err = _run(capsys, "visualize", str(data), "--out", str(mask), "--n", "2")
    _assert_one_line_error(code, err, f"lies in the data folder {data}")
    assert mask.read_bytes() == before
    code, _, err = _run(capsys, "visualize", str(data), "--out", str(data / "new.png"))
    _assert_one_line_error(code, err, "pick an --out outside it")
    assert not (data / "new.png").exists()
    other = tmp_path / "montage.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(other)
    figure = other.read_bytes()
    code, _, err = _run(capsys, "visualize", str(data), "--out", str(other), "--n", "2")
    _assert_one_line_error(code, err, "exists and is no earlier visualize grid")
    assert other.read_bytes() == figure
    grid = tmp_path / "grid.png"
    assert _run(capsys, "visualize", str(data), "--out", str(grid), "--n", "2")[0] == 0
    assert _run(capsys, "visualize", str(data), "--out", str(grid), "--n", "1")[0] == 0


@pytest.mark.parametrize("command", [
    ["train"], ["cv", "--folds", "2", "--fold", "0"], ["compare", "--models", "miniseg", "unet"]])
@pytest.mark.parametrize("inside", [".", "run"])
def test_runs_are_never_written_into_the_data_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path,
        command: list[str], inside: str) -> None:
    """``train DATA --out DATA`` (or ``DATA/run``) trained and put checkpoints, curves and logs
    beside images/ and masks/; visualize already refused such an --out."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_folder, data)
    before = sorted(data.rglob("*"))
    out = data / inside
    code, _, err = _run(capsys, command[0], str(data), *command[1:], "--out", str(out),
                        "--epochs", "1", "--size", "32", "--augment", "none",
                        *(["--model", "miniseg"] if command[0] != "compare" else []))
    _assert_one_line_error(code, err, f"--out {out}: lies in the data folder {data}, whose "
                           "images and masks it could overwrite; pick an --out outside it")
    assert sorted(data.rglob("*")) == before


def test_predict_out_inside_an_input_folder_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path,
        tiny_run: Path) -> None:
    """``predict IMAGES --out IMAGES/pred`` wrote masks named as the images inside the images
    folder, which training then advised moving into images/ itself."""
    images = tmp_path / "images"
    shutil.copytree(synthetic_folder / "images", images)
    code, _, err = _run(capsys, "predict", str(images), "--model", str(tiny_run), "--out",
                        str(images / "pred"))
    _assert_one_line_error(code, err, f"--out {images / 'pred'}: lies in the input folder "
                           f"{images}, where its masks would lie among the images")
    assert not (images / "pred").exists()


def test_empty_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    code, _, err = _run(capsys, "train", str(tmp_path / "d"), "--out", str(tmp_path / "r"))
    _assert_one_line_error(code, err, "holds no slices")


def test_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          synthetic_folder: Path) -> None:
    fake = tmp_path / "fake.pt"
    fake.write_text("hello")
    code, _, err = _run(capsys, "predict", str(synthetic_folder / "images"), "--model", str(fake),
                        "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "not a covseg checkpoint")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    code, _, err = _run(capsys, "predict", str(synthetic_folder / "images"), "--model",
                        str(unfinished), "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "no best.pt yet")


def test_bad_numbers_and_empty_input_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            tiny_run: Path) -> None:
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"), "--epochs", "0")
    _assert_one_line_error(code, err, "--epochs must be at least 1, got 0")
    for value in ("0", "nan"):  # one wording for one rule: 0 said "--lr must be positive"
        code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"), "--lr",
                            value)
        _assert_one_line_error(code, err, f"--lr must lie in (0, 1], got {float(value)}")
    code, _, err = _run(capsys, "cv", "synthetic", "--out", str(tmp_path / "r"), "--size", "0")
    _assert_one_line_error(code, err, "--size must lie in [32, 1024] px")
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"),
                        "--threshold", "1.5")
    _assert_one_line_error(code, err, "--threshold must lie strictly between 0 and 1")
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"),
                        "--ema-decay", "-0.1")
    _assert_one_line_error(code, err, "--ema-decay must lie in [0, 1)")
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"),
                        "--cutmix", "2")
    _assert_one_line_error(code, err, "--cutmix must lie in [0, 1]")
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"),
                        "--lesion-paste", "-1")
    _assert_one_line_error(code, err, "--lesion-paste must lie in [0, 1]")
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "predict", str(tmp_path / "empty"), "--model", str(tiny_run),
                        "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "no images")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "slice.png")
    code, _, err = _run(capsys, "predict", str(tmp_path / "slice.png"), "--model", str(tiny_run),
                        "--out", str(tmp_path / "o"), "--batch-size", "0")
    _assert_one_line_error(code, err, "--batch-size must be at least 1")
    too_many = "--batch-size must be at most 4096 slices, got 1000000000000; give a smaller one"
    code, _, err = _run(capsys, "predict", str(tmp_path / "slice.png"), "--model", str(tiny_run),
                        "--out", str(tmp_path / "o"), "--batch-size", "1000000000000")
    _assert_one_line_error(code, err, too_many)  # was taken and recorded
    code, _, err = _run(capsys, "train", "synthetic", "--out", str(tmp_path / "r"),
                        "--batch-size", "1000000000000")
    _assert_one_line_error(code, err, too_many)
    volume = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 2), -1000.0, dtype=np.float32), np.eye(4)),
             str(volume))
    code, _, err = _run(capsys, "predict", str(volume), "--model", str(tiny_run),
                        "--out", str(tmp_path / "v"), "--lung-margin-mm", "-1")
    _assert_one_line_error(code, err, "--lung-margin-mm must be a finite number >= 0")
    code, _, err = _run(capsys, "predict", str(volume), "--model", str(tiny_run),
                        "--out", str(tmp_path / "v"), "--batch-size", "4097")
    _assert_one_line_error(code, err, "--batch-size must be at most 4096 slices, got 4097")
    assert not (tmp_path / "v").exists(), "bad numbers fail before any study is written"
    code, _, err = _run(capsys, "predict", str(volume), "--model", str(tiny_run),
                        "--out", str(tmp_path / "v"), "--lung-margin-mm", "nan")
    _assert_one_line_error(code, err, "--lung-margin-mm must be a finite number >= 0, got nan")
    with pytest.raises(CovsegError,
                       match="unknown option.s. overlay; predict_volumes takes model, "):
        api.predict_volumes(tiny_run, [volume], tmp_path / "v", overlay=True)
    with pytest.raises(CovsegError, match="^unknown hu value 'maybe'"):
        api.predict_volumes(tiny_run, [volume], tmp_path / "v", hu="maybe")
    code, _, err = _run(capsys, "predict", str(volume), "--model", str(tiny_run),
                        "--out", str(tmp_path / "v"), "--overlay")
    _assert_one_line_error(code, err, "--overlay: for 2D images only")
    assert not (tmp_path / "v").exists()
    [mask] = api.predict(tiny_run, str(tmp_path / "slice.png"), tmp_path / "one")  # not a list
    assert mask.name == "slice.png"
    code, _, err = _run(capsys, "visualize", "synthetic", "--out", str(tmp_path / "g.png"),
                        "--n", "0")
    _assert_one_line_error(code, err, "--n must be positive")


def test_multiclass_train_predict_evaluate_on_real_infnet(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = shared("infnet-covid-semiseg")
    code, out, _ = _run(capsys, "train", str(data), "--target", "multiclass", "--out",
                        str(tmp_path / "run"), "--epochs", "1", "--size", "64",
                        "--model", "unet", "--model-option", "width=4", "--loss", "ce+dice",
                        "--val-fraction", "0.2")
    assert code == 0, out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]
    for key in ("ground-glass_dice", "consolidation_dice", "miou_with_background",
                "miou_without_background"):
        assert key in metrics
    images = data / "TrainingSet" / "MultiClassInfection-Train" / "Imgs"
    subset = [str(p) for p in sorted(images.iterdir())[:6]]
    code, _, _ = _run(capsys, "predict", *subset, "--model", str(tmp_path / "run"), "--out",
                      str(tmp_path / "pred"))
    assert code == 0
    first = np.array(Image.open(min((tmp_path / "pred").glob("*.png"))))
    assert first.max() <= 2
    code, _, err = _run(capsys, "predict", *subset, "--model", str(tmp_path / "run"), "--out",
                        str(tmp_path / "pred2"), "--threshold", "0.5")
    _assert_one_line_error(code, err, "binary models only")
    code, _, _ = _run(capsys, "evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                      str(images.parent / "GT"), "--out", str(tmp_path / "eval.json"))
    result = json.loads((tmp_path / "eval.json").read_text())
    assert code == 0 and result["num_classes"] == 3 and result["cases"] == 6
    assert len(result["unmatched_truths"]) == 44  # never given to predict: not scored
    assert "consolidation_iou" in result["summary"]


def test_predict_on_real_nifti_and_dicom_keeps_geometry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path) -> None:
    import nibabel as nib

    ct = shared("ct-samples", "example_ct_sm.nii.gz")
    dicom = tmp_path / "series"
    dicom.mkdir()
    for name in ("lungmask_0.dcm", "lungmask_1.dcm"):
        shutil.copy(shared("ct-samples", name), dicom / name)
    code, _, err = _run(capsys, "predict", str(ct), str(dicom), "--model", str(tiny_run),
                          "--out", str(tmp_path / "out"))
    assert code == 0, err
    source = nib.load(str(ct))
    mask = nib.load(str(tmp_path / "out" / "example_ct_sm" / "infection.nii.gz"))
    np.testing.assert_array_equal(mask.affine, source.affine)
    assert mask.shape == source.shape
    report = json.loads((tmp_path / "out" / "example_ct_sm" / "quantification.json").read_text())
    assert "category" in json.dumps(report)
    assert (tmp_path / "out" / "series" / "infection.nii.gz").is_file()
    assert (tmp_path / "out" / "summary.csv").is_file()


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse printed its whole usage block above the error."""
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", "m", "x.nii.gz", "--out", "o", "--shard", "2/2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("covseg: error: argument --shard: shard 2/2")
    assert err.rstrip().endswith("(see `covseg predict -h`)")


@pytest.mark.usefixtures("hangup_delivered")
@pytest.mark.parametrize(("stop", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                               (signal.SIGHUP, 129)])
def test_a_stop_while_covseg_loads_is_one_line(tmp_path: Path, stop: signal.Signals,
                                               exit_code: int) -> None:
    """Ctrl-C while PyTorch was being imported printed a 20-line traceback, and ``kill`` ended
    the command without a word (exit -15): the handlers came after the imports."""
    command = [sys.executable, "-c", "import sys; from covseg_entry import main; sys.exit(main())",
               "train", "synthetic", "--out", str(tmp_path / "run"), "--epochs", "1000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "libtorch" not in maps.read_text():
        time.sleep(0.01)  # covseg_entry has started covseg's import once PyTorch is mapped
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    assert process.returncode == exit_code
    assert len(err.strip().splitlines()) == 1 and err.startswith("covseg: "), err


def test_python_m_covseg_ends_a_stop_while_covseg_loads_as_the_script_does() -> None:
    """``python -m covseg`` imports the package before its ``__main__``, and ``import covseg``
    loaded PyTorch: Ctrl-C in its first 3 s printed a KeyboardInterrupt traceback and died by
    SIGINT, where the ``covseg`` script says one line and exits 130."""
    loaded = "import sys, covseg; print([m for m in ('torch', 'covseg.api') if m in sys.modules])"
    unloaded = subprocess.run([sys.executable, "-c", loaded], check=True, capture_output=True,
                              text=True, timeout=120)
    assert unloaded.stdout == "[]\n"
    process = subprocess.Popen([sys.executable, "-m", "covseg", "models"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "libtorch" not in maps.read_text():
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert (process.returncode, err, out) == (
        130, "covseg: interrupted while starting; nothing was done\n", "")


def test_the_api_names_stay_functions_when_their_submodules_load_under_w_error() -> None:
    """covseg.compare, covseg.export, covseg.models and covseg.train name API functions and
    submodules: the submodules' import leaves the functions in place, without the ImportWarning
    that ``-W error`` turns into a failed ``import covseg``."""
    code = ("import covseg, covseg.compare, covseg.export, covseg.models, covseg.train; "
            "print(all(callable(getattr(covseg, n)) for n in "
            "('compare', 'export', 'models', 'train')))")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], check=False,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "True\n", "")


def test_a_stop_after_the_last_line_is_not_a_silent_death() -> None:
    """After a command's last line Python put its default handlers back and spent about 2 s
    freeing PyTorch's modules: Ctrl-C then ended the process by SIGINT without a word. The
    process now ends as its lines are written (one line and 130 where the stop lands first)."""
    process = subprocess.Popen([sys.executable, "-m", "covseg", "--version"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    time.sleep(0.2)  # past the handlers' last 20 ms, in the teardown where they were given up
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert line.startswith("covseg ")
    assert (process.returncode, err) in [
        (0, ""), (130, "covseg: interrupted as the command ended; nothing was left half-done\n")]


CTRL_C_IN_AN_IMPORT_CALLBACK = """
import signal, sys, weakref
from covseg_entry import main

class Lock:
    pass

class CtrlCInACallback:
    def find_spec(self, name, path, target=None):
        if name == "covseg":  # as Ctrl-C landing in a module lock's clean-up callback
            lock = Lock()
            ref = weakref.ref(lock, lambda _: signal.raise_signal(signal.SIGINT))
            del lock
        return None

sys.meta_path.insert(0, CtrlCInACallback())
sys.argv = ["covseg", "models"]
sys.exit(main())
"""


def test_ctrl_c_in_an_import_callback_still_stops_covseg() -> None:
    """Ctrl-C while PyTorch loaded could land in a callback of the import machinery, where
    Python printed the KeyboardInterrupt's traceback as "Exception ignored" and went on to run
    the command (exit 0)."""
    process = subprocess.run([sys.executable, "-c", CTRL_C_IN_AN_IMPORT_CALLBACK],
                             check=False, capture_output=True, text=True, timeout=120)
    assert (process.returncode, process.stderr, process.stdout) == (
        130, "covseg: interrupted while starting; nothing was done\n", "")


STOP_OUTSIDE_THE_WORK = """
import argparse, os, signal, sys
import covseg.cli
from covseg_entry import main

STOP = getattr(signal, sys.argv[1])

def stop():
    os.kill(os.getpid(), STOP)

run, print_help = covseg.cli._run, argparse.ArgumentParser.print_help
covseg.cli._run = lambda argv: (run(argv), stop())[0]  # the work done, its lines not flushed
argparse.ArgumentParser.print_help = lambda *args: (stop(), print_help(*args))[1]
sys.argv = ["covseg", *sys.argv[2:]]
sys.exit(main())
"""


@pytest.mark.parametrize(("stop", "argv", "status", "line"), [
    ("SIGINT", ["models"], 130, ("covseg: interrupted as the command ended; nothing was left "
                                 "half-done\n")),
    ("SIGTERM", ["--help"], 143, "covseg: stopped while starting; nothing was done\n")])
def test_a_stop_outside_the_work_is_one_line(stop: str, argv: list[str], status: int,
                                             line: str) -> None:
    """Ctrl-C after a command's work (its last lines, Python's exit) or during --help printed
    a KeyboardInterrupt traceback, after a finished command also with exit status 0; SIGTERM
    there ended it without a word."""
    process = subprocess.run([sys.executable, "-c", STOP_OUTSIDE_THE_WORK, stop, *argv],
                             check=False, capture_output=True, text=True, timeout=120)
    assert (process.returncode, process.stderr) == (status, line)
    assert argv != ["models"] or "unet" in process.stdout  # the finished command's lines kept


@pytest.mark.parametrize(("code", "status"), [
    (STOP_OUTSIDE_THE_WORK, 130),
    ("import sys; from covseg_entry import main; sys.argv[1:] = ['models']; main()", 0)])
def test_the_covseg_script_removes_matplotlibs_temporary_folder(tmp_path: Path, code: str,
                                                               status: int) -> None:
    """Where matplotlib's folder cannot be written covseg makes a temporary one, removed at
    exit, at a normal end (atexit) as at a stop as the command ended (``os._exit``, which
    skips atexit, left it in TMPDIR)."""
    (tmp_path / "file").write_text("a file, not a folder\n")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "file" / "matplotlib"),
           "TMPDIR": str(tmp_path / "tmp")}
    process = subprocess.run([sys.executable, "-c", code, "SIGINT", "models"],
                             check=False, capture_output=True, text=True, timeout=120, env=env)
    assert process.returncode == status, process.stderr
    assert list((tmp_path / "tmp").glob("matplotlib-*")) == []


SECOND_STOP_AS_IT_ENDS = """
import os, signal, sys
import covseg.cli
from covseg.errors import CovsegError
from covseg_entry import main

FIRST = sys.argv[1]

def work(args):
    if FIRST == "error":
        raise CovsegError("bad input; fix it")
    os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C, in the work
    return 0

parser, tell, advice = covseg.cli.build_parser, covseg.cli.tell, covseg.cli.resume_advice

def build():
    built = parser()
    parse = built.parse_args
    built.parse_args = lambda argv=None: (args := parse(argv), setattr(args, "handler", work))[0]
    return built

def second(text):
    os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C as the last line is printed
    tell(text)

def advised(out):
    os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C as the hint is worked out
    return advice(out)

covseg.cli.build_parser = build
if FIRST == "hint":
    covseg.cli.resume_advice = advised
    sys.argv = ["covseg", "train", "data", "--out", sys.argv[2]]
else:
    covseg.cli.tell = second
    sys.argv = ["covseg", "models"]
sys.exit(main())
"""


@pytest.mark.parametrize(("first", "line"), [
    ("stop", "covseg: interrupted; rerun the same command\n"),
    ("error", "covseg: error: bad input; fix it\n"),
    ("hint", ("covseg: interrupted; rerun the same command without --resume (nothing was "
              "saved: {out} does not exist)\n"))], ids=["stop", "error", "hint"])
def test_a_second_stop_as_the_last_line_is_printed_claims_nothing(tmp_path: Path, first: str,
                                                                   line: str) -> None:
    """A second Ctrl-C while the rerun hint or the error line was printed replaced it with
    "covseg: interrupted as the command ended; nothing was left half-done", untrue after a
    stop (a half-trained run): the line is printed whole, then one that claims nothing. One
    while a train's hint was worked out (its records read) lost the line: only the second
    stop's was printed."""
    out = tmp_path / "r"
    process = subprocess.run([sys.executable, "-c", SECOND_STOP_AS_IT_ENDS, first, str(out)],
                             check=False, capture_output=True, text=True, timeout=120)
    assert (process.returncode, process.stderr) == (
        130, f"{line.format(out=out)}covseg: interrupted as the command ended\n")


LOADED_AFTER_EACH_STEP = """
import contextlib, io, json, sys
HEAVY = ("monai", "torchvision", "scipy.stats")
import covseg
from covseg.cli import main
steps = [["import covseg", None, [m for m in HEAVY if m in sys.modules]]]
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    steps.append([argv[0] if argv[0] != "--help" else "covseg", code,
                  [m for m in HEAVY if m in sys.modules]])
print(json.dumps(steps))
"""


def test_help_and_refusals_of_bad_input_do_not_load_monai(tmp_path: Path) -> None:
    """``import covseg`` imported MONAI (about 4 s of CPU, torchvision within it) and
    scipy.stats (0.7 s) for every help text, one-line refusal, ensemble member and worker: they
    are imported where used."""
    missing = str(tmp_path / "missing")
    argvs = [["--help"], ["predict", "--help"],
             ["predict", missing, "--model", str(tmp_path / "m.pt"), "--out", missing],
             ["train", missing, "--out", missing],
             ["train", "synthetic", "--augment", "extreme", "--out", missing]]
    done = subprocess.run([sys.executable, "-c", LOADED_AFTER_EACH_STEP, json.dumps(argvs)],
                          check=True, capture_output=True, text=True, timeout=300)
    assert json.loads(done.stdout) == [["import covseg", None, []], ["covseg", 0, []],
                                       ["predict", 0, []], ["predict", 2, []],
                                       ["train", 2, []], ["train", 2, []]]


FULL_DISK = ("covseg: error: no space left on device writing m.onnx; free space and rerun the "
             "same command\n")


@pytest.mark.parametrize("error, shown", [
    (OSError(5, "Input/output error"), "covseg: error: Input/output error\n"),
    (OSError(5, "Input/output error", "m.onnx"), "covseg: error: m.onnx: Input/output error\n"),
    (OSError(28, "No space left on device"), FULL_DISK),
    (OSError(28, "No space left on device", "m.onnx"), FULL_DISK)])
def test_a_system_error_names_its_file_only_when_it_has_one(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, error: OSError,
        shown: str) -> None:
    """An error without a file name (a full disk while writing a stream) printed
    'covseg: error: : No space left on device'; a full disk, named or not, now names the
    output it was writing and says what to do."""
    def fail(*args: object) -> None:
        raise error

    monkeypatch.setattr("covseg.api.export", fail)
    code, _, err = _run(capsys, "export", "--model", "run", "--out", "m.onnx")
    assert (code, err) == (2, shown)


def test_a_series_folder_with_a_thumbnail_is_predicted_as_the_series(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """``covseg predict SERIES`` refused a DICOM series folder holding a preview.png as "holds
    both 2D images and CT volumes", which covseg.predict_volumes predicted: one decision
    (api.input_kind) now serves both, and the picture is skipped with a warning naming it."""
    from tests.io.helpers import phantom, synthetic_series

    series = tmp_path / "series"
    synthetic_series(series, phantom())
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(series / "preview.png")
    with caplog.at_level("WARNING"):
        code, out, err = _run(capsys, "predict", "--model", str(tiny_run), str(series), "--out",
                              str(tmp_path / "cli"))
    assert code == 0 and out.startswith("series: lesion "), err
    assert "series: 1 2D image(s) beside its CT data skipped (preview.png)" in caplog.text
    assert (tmp_path / "cli" / "series" / "infection.nii.gz").is_file()
    assert api.predict_volumes(tiny_run, series, tmp_path / "api").done == 1
    with pytest.raises(CovsegError, match="series: CT volumes; predict them with "
                                          "covseg.predict_volumes"):
        api.predict(tiny_run, series, tmp_path / "masks")
    volume = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.full((16, 16, 4), -1000.0, np.float32), np.eye(4)), str(volume))
    with pytest.raises(CovsegError, match=r"ct\.nii\.gz: a CT volume; predict it with "
                                          "covseg.predict_volumes$"):
        api.predict(tiny_run, volume, tmp_path / "masks")


def test_visualize_seed_and_demo_folds_and_epochs_reach_the_api(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """`covseg visualize` had no --seed and `covseg demo` no --folds or --epochs, which
    covseg.visualize and covseg.demo took."""
    for seed in ("0", "1"):
        code, out, _ = _run(capsys, "visualize", str(synthetic_folder), "--out",
                            str(tmp_path / f"cli{seed}.png"), "--n", "2", "--seed", seed)
        assert code == 0 and "wrote" in out
    api.visualize(synthetic_folder, tmp_path / "api1.png", n=2, seed=1)
    pixels = {name: np.asarray(Image.open(tmp_path / f"{name}.png")) for name in
              ("cli0", "cli1", "api1")}
    assert np.array_equal(pixels["cli1"], pixels["api1"])
    assert not np.array_equal(pixels["cli0"], pixels["cli1"]), "another seed, other slices"
    code, _, err = _run(capsys, "demo", "--out", str(tmp_path / "demo"), "--folds", "13")
    _assert_one_line_error(code, err, "--folds must be at most 12, the demo's synthetic patients")
    code, _, err = _run(capsys, "demo", "--out", str(tmp_path / "demo"), "--epochs", "0")
    _assert_one_line_error(code, err, "--epochs must be at least 1, got 0")
    assert not (tmp_path / "demo").exists()


def test_warnings_print_on_lines_of_their_own_with_the_covseg_prefix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A warning logged while a progress bar runs (16-bit HU + 1024 slices read with
    --intensity hu are clipped by the window) is printed on its own line as
    ``covseg: warning: ...``, not onto the bar's."""
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for k in range(3):
        np.save(tmp_path / "data" / "images" / f"s{k}.npy",
                rng.integers(1024 - 500, 1024 + 400, (64, 64)).astype(np.uint16))
        mask = np.zeros((64, 64), dtype=np.uint8)
        mask[20:40, 20:40] = 255
        Image.fromarray(mask).save(tmp_path / "data" / "masks" / f"s{k}.png")
    code, _, err = _run(capsys, "visualize", str(tmp_path / "data"), "--out",
                        str(tmp_path / "grid.png"), "--intensity", "hu")
    assert code == 0
    warned = [line for line in err.replace("\r", "\n").splitlines() if "clipped" in line]
    assert warned and all(line.startswith("covseg: warning: ") and "many pixels" in line
                          for line in warned), err


def test_a_future_warning_reaches_the_user(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """A library's announcement that a call covseg makes will change (a FutureWarning) is not
    ignored (Python prints it): every command ignored every FutureWarning, so covseg's own calls
    could never show one; the libraries' own at import (torch's LeafSpec, MONAI's
    torch.jit.interface) they silence themselves."""
    def announcing(*args: object, **kwargs: object) -> Path:
        warnings.warn("this call will change in the next release", FutureWarning, stacklevel=1)
        return tmp_path / "v.png"

    monkeypatch.setattr(api, "visualize", announcing)
    with pytest.warns(FutureWarning, match="this call will change in the next release"):
        code, _, _ = _run(capsys, "visualize", "synthetic", "--out", str(tmp_path / "v.png"))
    assert code == 0


def test_the_suite_hides_no_future_warning() -> None:
    """The tests' conftest ignored every FutureWarning (and every UserWarning from MONAI), so
    no test could catch one from a call covseg makes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("this call will change in the next release", FutureWarning, stacklevel=1)
    assert [str(warning.message) for warning in caught] == [
        "this call will change in the next release"]


@pytest.mark.parametrize(("option", "argv"), [
    ("--out", ["demo", "--out", "", "--folds", "2", "--epochs", "1"]),
    ("--out", ["demo", "--out=", "--folds", "2", "--epochs", "1"]),
    ("--out", ["train", "synthetic", "--model", "unet", "--epochs", "1", "--out", ""]),
    ("--out", ["predict", "--model", "run", "x.png", "--out", ""]),
    ("--out", ["quantify", "mask.nii.gz", "--out", ""]),
    ("--model", ["predict", "--model", "", "x.png", "--out", "o"]),
    ("--pred", ["evaluate", "--pred", "", "--truth", "t", "--out", "o"])])
def test_an_empty_path_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        option: str, argv: list[str]) -> None:
    """``--out ""`` is the current folder: the demo wrote cv/, samples.png and its data there
    and printed "samples: /samples.png"; predict, train and quantify wrote into it too."""
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, *argv)
    _assert_one_line_error(code, err, f"{option} is empty; give it a value")
    assert out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("call", [
    lambda out: api.demo(out, folds=2, epochs=1),
    lambda out: api.train("synthetic", out, model="unet", epochs=1),
    lambda out: api.predict_volumes("run", "x.nii.gz", out),
    lambda out: api.quantify("mask.nii.gz", out),
    lambda out: api.evaluate("p", "t", out)])
def test_the_api_refuses_an_empty_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      call: Callable[[str], object]) -> None:
    """The API took ``out=""`` as the current folder, as the CLI did."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CovsegError, match=r"^out is empty; give a path"):
        call("")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("stop", "exit_code", "word"), [
    (signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped"),
    (signal.SIGHUP, 129, "stopped")])
@pytest.mark.usefixtures("hangup_delivered")
def test_a_stop_in_a_finaliser_still_stops_an_ensemble_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        synthetic_folder: Path, stop: signal.Signals, exit_code: int, word: str) -> None:
    """A stop raised inside a finaliser as a member ended was printed by Python as "Exception
    ignored in ..." and dropped: the run trained on, wrote its metrics and exited 0."""
    import torch

    training = importlib.import_module("covseg.train")  # covseg.train is the API function
    real_finish = training._finish

    def finish_then_collect(*args: object, **kwargs: object) -> object:
        metrics = real_finish(*args, **kwargs)
        StopWhenCollected(stop)  # collected at once: the stop arrives inside its __del__
        return metrics

    monkeypatch.setattr(training, "_finish", finish_then_collect)
    threads, hook = torch.get_num_threads(), sys.unraisablehook
    torch.set_num_threads(1)  # members one after the other, in this process
    try:
        code, _, err = _run(capsys, "train", str(synthetic_folder), "--out", str(tmp_path / "e"),
                            "--model", "unet,unet", "--model-option", "width=4", "--epochs",
                            "1", "--size", "64")
    finally:
        torch.set_num_threads(threads)
    assert code == exit_code and "Exception ignored" not in err and "Traceback" not in err
    assert err.splitlines()[-1] == f"covseg: {word}; rerun the same command with --resume " \
                                   "to continue"
    assert (tmp_path / "e" / "member0-unet" / "metrics.json").is_file()
    assert not (tmp_path / "e" / "member1-unet").exists()  # stopped before the next member
    assert not (tmp_path / "e" / "metrics.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    assert sys.unraisablehook is hook  # put back


@pytest.mark.parametrize(("argv", "shown", "kind", "give"), [
    (["predict", "{fifo}.png", "--model", "{tmp}/run"], "{fifo}.png", "a FIFO",
     "an image or CT file, or a folder of them"),
    (["predict", "{fifo}.nii.gz", "--model", "{tmp}/run"], "{fifo}.nii.gz", "a FIFO",
     "an image or CT file, or a folder of them"),
    (["predict", "/dev/zero", "--model", "{tmp}/run"], "/dev/zero", "a device",
     "an image or CT file, or a folder of them"),
    (["quantify", "/dev/zero"], "/dev/zero", "a device", "a mask file or a folder of them"),
    (["quantify", "{fifo}.png"], "{fifo}.png", "a FIFO", "a mask file or a folder of them"),
    (["quantify", "{tmp}", "--lungs", "/dev/zero"], "--lungs /dev/zero", "a device",
     "a NIfTI, NRRD or MetaImage file or a folder"),
    (["quantify", "{tmp}", "--image", "{fifo}.nii.gz"], "--image {fifo}.nii.gz", "a FIFO",
     "a CT file (NIfTI, NRRD, MetaImage or DICOM) or a folder"),
    (["evaluate", "--pred", "/dev/zero", "--truth", "{tmp}"], "/dev/zero", "a device",
     "the prediction folder or one mask file"),
    (["evaluate", "--pred", "{tmp}", "--truth", "{fifo}.png"], "{fifo}.png", "a FIFO",
     "the truth folder or one mask file"),
])
def test_a_fifo_or_device_input_is_named_as_such(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], shown: str,
        kind: str, give: str) -> None:
    """A FIFO or a device given as an input was "no such file or folder" (it exists), "a file
    is in the way of a folder covseg writes; pick another --out" (quantify, blaming the
    output), a study failed with a raw NotADirectoryError (--lungs, --image) or "prediction
    folder not found" (evaluate): each now says what the path is and what to give."""
    fifo = tmp_path / "fifo"
    for suffix in (".png", ".nii.gz"):
        os.mkfifo(f"{fifo}{suffix}")
    (tmp_path / "dir").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "dir" / "case.png")
    names = {"fifo": str(fifo), "tmp": str(tmp_path / "dir")}
    out = tmp_path / "out"
    code, _, err = _run(capsys, *(a.format(**names) for a in argv), "--out", str(out))
    _assert_one_line_error(code, err, f"error: {shown.format(**names)}: not a regular file or "
                                      f"folder ({kind}); give {give}\n")
    assert not out.exists()


@pytest.mark.parametrize("argv", [["demo", "--epochs", "1"],
                                  ["train", "synthetic:0", "--epochs", "1"],
                                  ["evaluate", "--pred", "{dir}", "--truth", "{dir}2"]])
@pytest.mark.parametrize("under", ["", "/sub"])
def test_a_dangling_symlink_as_out_is_named_as_such(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], under: str) -> None:
    """--out a symbolic link to a missing folder (or a folder under one) said "cannot write to
    it (File exists)" or "a file is in the way of a folder covseg writes", mkdir's EEXIST,
    though nothing is there to see: it now names the link, where it points and what to do."""
    for folder in ("dir", "dir2"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / folder / "case.png")
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "link"
    link.symlink_to(Path("elsewhere", "target"))
    code, _, err = _run(capsys, *(a.format(dir=tmp_path / "dir") for a in argv),
                        "--out", f"{link}{under}" + ("/ev" if argv[0] == "evaluate" else ""))
    _assert_one_line_error(code, err, f"error: {link}: a symbolic link to {tmp_path}/elsewhere/"
                                      "target, which does not exist; create that folder or pick "
                                      "another --out\n")
    assert not (tmp_path / "elsewhere" / "target").exists()


def test_a_study_named_with_terminal_escapes_is_shown_escaped_in_its_result_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """quantify's and CT predict's closing line printed a study named ``a<ESC>[2J<ESC>]0;PWN
    <BEL>b`` as it was on stdout, which cleared the terminal and set its title; every line on
    stdout shows such characters as Python writes them."""
    name = "a\x1b[2J\x1b]0;PWN\x07b"
    ct, mask, _ = synthetic_study(tmp_path / "in", name)
    out = tmp_path / "q"
    code, printed, _ = _run(capsys, "quantify", str(mask), "--image", str(ct), "--out", str(out))
    assert code == 0 and "\x1b" not in printed and "\x07" not in printed, repr(printed)
    assert printed.startswith("a\\x1b[2J\\x1b]0;PWN\\x07b: lesion 0.18 mL"), printed


def test_names_with_terminal_control_characters_are_shown_escaped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file named ``a<ESC>[2J<ESC>[31mFAKE OK<ESC>[0m.nii.gz`` was printed as it was in the
    error naming it, which cleared the terminal and printed "FAKE OK" in colour; now its
    control characters are shown as Python writes them, in errors, warnings and stages."""
    from tqdm import tqdm

    from covseg.progress import StageBar

    folder = tmp_path / "esc"
    folder.mkdir()
    (folder / "a\x1b[2J\x1b[31mFAKE OK\x1b[0m.nii.gz").write_bytes(b"")
    code, _, err = _run(capsys, "quantify", str(folder), "--out", str(tmp_path / "out"))
    assert code == 1 and "\x1b" not in err, repr(err)
    assert "covseg: error: a\\x1b[2J\\x1b[31mFAKE OK\\x1b[0m failed: " in err
    record = logging.LogRecord("covseg", logging.WARNING, __file__, 1, "%s: skipped",
                               ("b\x00c\u202ed\re",), None)
    _AboveProgressBars(logging.WARNING).emit(record)
    assert capsys.readouterr().err == "covseg: warning: b\\x00c\\u202ed\\re: skipped\n"
    drawn = io.StringIO()
    with tqdm(total=1, file=drawn) as bar:
        StageBar(bar, after=0).reporter("s\x1bt")("reading")
    assert "s\\x1bt: reading" in drawn.getvalue() and "\x1b" not in drawn.getvalue()


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` by its path there: its mtime (ns) and bytes."""
    return {str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("model", ["unet", "unet,unet"])
def test_a_resume_of_a_finished_run_says_so_and_leaves_every_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path,
        model: str) -> None:
    """`covseg train ... --resume` of a finished run trained nothing, yet rewrote its records:
    finished_utc became the no-op's time, a resumed_by entry went into config.json and
    metrics.json, and curves.png was drawn again. It says the run is done now, in one line on
    stdout with exit 0, and leaves every file as it was (an ensemble's too)."""
    out = tmp_path / "r"
    command = ["train", str(synthetic_folder), "--out", str(out), "--epochs", "1", "--model",
               model, "--model-option", "width=4", "--size", "32"]
    code, _, err = _run(capsys, *command)
    assert code == 0, err
    before = _files(out)
    finished = json.loads((out / "metrics.json").read_text())["finished_utc"]
    code, said, err = _run(capsys, *command, "--resume")
    assert (code, err) == (0, ""), err
    assert said == f"{out}: already trained (1 epoch, finished {finished}); nothing to do\n"
    assert _files(out) == before


def _finished_run(capsys: pytest.CaptureFixture[str], command: str, out: Path, data: Path
                  ) -> list[str]:
    """A 2-fold ``command`` (cv or compare) run into ``out``; the same command with --resume."""
    given = {"cv": ["--model", "unet", "--model-option", "width=4"],
             "compare": ["--models", "unet:width=4", "miniseg", "--"]}[command]
    run = ["--out", str(out), "--folds", "2", "--epochs", "1", "--size", "32", *given, str(data)]
    code, _, err = _run(capsys, command, *run)
    assert code == 0, err
    return [command, "--resume", *run]


@pytest.mark.parametrize("command", ["cv", "compare"])
def test_a_resume_of_a_finished_cv_or_comparison_says_so_and_leaves_every_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path,
        command: str) -> None:
    """`covseg cv --resume` and `covseg compare --resume` of a finished run trained nothing,
    yet rewrote their reports: summary.json or comparison.json listed a resume under
    resumed_by (a model's summary.json too) and the CSV, report and box plot were written
    again. They say the run is done now, in one line on stdout with exit 0, as train does, and
    leave every file as it was, its mtime too."""
    out = tmp_path / command
    resume = _finished_run(capsys, command, out, synthetic_folder)
    before = _files(out)
    code, said, err = _run(capsys, *resume)
    assert (code, err) == (0, ""), err
    if command == "cv":
        finished = json.loads((out / "summary.json").read_text())["finished_utc"]
        assert said == (f"{out}: already cross-validated (2 folds, finished {finished}); "
                        "nothing to do\n")
    else:
        assert said == f"{out}: already compared (2 models over 2 folds); nothing to do\n"
    assert _files(out) == before


@pytest.mark.parametrize("command", ["cv", "compare"])
def test_a_cv_or_comparison_stopped_writing_its_reports_is_finished_by_a_resume(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path,
        command: str) -> None:
    """Every fold trained but the record written last missing (summary.json, comparison.json:
    stopped in its reports) or a fold deleted to be trained again: a --resume is no no-op, it
    writes the reports (training the fold) and says its results, as before."""
    out = tmp_path / command
    resume = _finished_run(capsys, command, out, synthetic_folder)
    last = out / ("summary.json" if command == "cv" else "comparison.json")
    report = out / ("report.md" if command == "cv" else "comparison.md")
    cv = out if command == "cv" else out / "miniseg"
    for stop in ("reports", "fold"):
        if stop == "reports":
            last.unlink()
            report.unlink()
        else:
            shutil.rmtree(cv / "fold_1")
        code, said, err = _run(capsys, *resume)
        assert code == 0, err
        assert "nothing to do" not in said and f"{out}/{report.name}" in said, said
        assert last.is_file() and report.is_file()
        assert (cv / "fold_1" / "fold_metrics.json").is_file()


@pytest.mark.parametrize("command", ["cv", "compare"])
def test_a_resume_writes_again_a_summary_older_than_a_fold_or_than_this_covseg(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path,
        command: str) -> None:
    """A summary.json written before a fold finished (trained again alone since), or by an
    earlier covseg (each metric's mean and std alone, without the n and cases of today's; a
    multi-class metric named pleural-effusion_ before its rename), was taken as a finished
    run's: cv --resume said "nothing to do" and kept it, and compare --resume, which reads
    each model's, ended in a traceback (KeyError 'n'). The resume writes it again from the
    folds, as it did before it left finished runs as they were."""
    out = tmp_path / command
    resume = _finished_run(capsys, command, out, synthetic_folder)
    summary = (out if command == "cv" else out / "miniseg") / "summary.json"
    for change in ("older", "renamed", "fold"):
        record = json.loads(summary.read_text())
        across = record["mean_std_over_folds"]
        if change == "older":
            record["mean_std_over_folds"] = {key: {"mean": stats["mean"], "std": stats["std"]}
                                             for key, stats in across.items()}
        elif change == "renamed":
            across["pleural-effusion_dice"] = across["dice"]
        summary.write_text(json.dumps(record))
        if change == "fold":  # trained again: its record tells other training seconds
            metrics = summary.parent / "fold_1" / "metrics.json"
            trained = json.loads(metrics.read_text())
            metrics.write_text(json.dumps({**trained,
                                           "train_seconds": trained["train_seconds"] + 1.0}))
        code, said, err = _run(capsys, *resume)
        assert (code, err) == (0, ""), (change, err)
        assert "nothing to do" not in said, (change, said)
        rewritten = json.loads(summary.read_text())["mean_std_over_folds"]
        assert "pleural-effusion_dice" not in rewritten
        assert all({"n", "cases"} <= stats.keys() for stats in rewritten.values())


def test_a_resume_says_nothing_to_do_only_where_train_found_the_run_finished(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """`covseg train` judged a run finished by its metrics.json alone, before training: a
    finished run whose best.pt and last.pt were deleted was trained again from its first epoch,
    then said "already trained ...; nothing to do"; one whose config.json was deleted said so
    with its options and data unchecked. The first now says what it trained, the second is
    refused in one line, its files left as they were."""
    run = tmp_path / "r"
    command = ["train", str(synthetic_folder), "--epochs", "1", "--model", "unet",
               "--model-option", "width=4", "--size", "32", "--resume"]
    code, _, err = _run(capsys, *command[:-1], "--out", str(run))
    assert code == 0, err
    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(run, unrecorded)
    (unrecorded / "config.json").unlink()
    before = _files(unrecorded)
    code, _, err = _run(capsys, *command, "--out", str(unrecorded))
    _assert_one_line_error(code, err, f"{unrecorded}: finished, but its config.json is gone, "
                           "so these options and data cannot be checked against the run's; "
                           "train into a new --out")
    assert _files(unrecorded) == before
    assert not (run / "last.pt").exists()  # deleted as the run finished
    (run / "best.pt").unlink()
    code, said, err = _run(capsys, *command, "--out", str(run))
    assert code == 0, err
    assert said.startswith("trained 1 epoch (") and said.endswith(f"; run in {run}\n"), said
    assert (run / "best.pt").is_file()


def test_a_fold_of_a_finished_cross_validation_says_its_summary_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fold of a finished cross-validation resumed alone (--fold K --resume) said "once
    every fold is done, the same command without --fold writes the summary", though it was
    written. It says so; a fold of an unfinished one still gives that advice."""
    cv = tmp_path / "cv"
    recipe = ["synthetic", "--out", str(cv), *TINY_RECIPE, "--folds", "2"]
    code, out, _ = _run(capsys, "cv", *recipe, "--fold", "0")
    assert code == 0 and out.rstrip().endswith("with --resume) writes the summary"), out
    assert _run(capsys, "cv", *recipe, "--resume")[0] == 0
    code, out, _ = _run(capsys, "cv", *recipe, "--fold", "0", "--resume")
    assert code == 0 and out.rstrip().endswith(
        f"; every fold is done and the summary written ({cv / 'summary.json'})"), out


@pytest.mark.parametrize(("argv", "message"), [
    (("predict", "--model", "cv/fold_0", "--model", "cv/fold_1", "ct.nii.gz", "--out", "x"),
     ("covseg: error: --model given twice (cv/fold_0, cv/fold_1): give it once; covseg "
      "does not ensemble run folders at predict time: train an ensemble with --model "
      "miniseg,miniseg, or after a cv one final model on all the data "
      "(see `covseg predict -h`)")),
    (("train", "no-data", "--model", "unet", "--out", "r", "--model=miniseg"),
     ("covseg: error: --model given twice (unet, miniseg): give it once; for an ensemble "
      "join the names: --model unet,miniseg (see `covseg train -h`)")),
    (("cv", "no-data", "--out", "r", "--window", "-1000", "400", "--window", "-900", "100"),
     ("covseg: error: --window given twice (-1000.0 400.0, -900.0 100.0): give it once "
      "(see `covseg cv -h`)")),
    (("quantify", "m.nii.gz", "--out", "a", "--out", "b"),
     "covseg: error: --out given twice (a, b): give it once (see `covseg quantify -h`)"),
    (("data", "fetch", "medseg", "--to", "a", "--to", "b"),
     ("covseg: error: --to given twice (a, b): give it once "
      "(see `covseg data fetch -h`)")),
    (("predict", "ct.nii.gz", "--model", "r", "--out", "x", "--tta", "--no-tta"),
     ("covseg: error: --tta and --no-tta both given: give one of them "
      "(see `covseg predict -h`)")),
    (("train", "no-data", "--out", "r", "--no-frame-lungs", "--frame-lungs"),
     ("covseg: error: --no-frame-lungs and --frame-lungs both given: give one of them "
      "(see `covseg train -h`)")),
    (("cv", "no-data", "--out", "r", "--no-test-flips", "--no-test-flips"),
     "covseg: error: --no-test-flips given twice: give it once (see `covseg cv -h`)"),
    (("train", "no-data", "--out", "r", "--resume", "--resume"),
     "covseg: error: --resume given twice: give it once (see `covseg train -h`)")])
def test_an_option_or_switch_given_twice_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: tuple[str, ...], message: str) -> None:
    """argparse kept the last without a word: `predict --model fold_0 --model fold_1`, an
    nnU-Net user's way to ensemble folds, ran fold_1 alone and exited 0, and `--tta --no-tta`
    ran without. (No data nor inputs are there: the command would end at once if it were not
    refused.)"""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == message + "\n"
    assert list(tmp_path.iterdir()) == []


def test_an_option_given_once_in_each_of_two_parses_is_taken() -> None:
    """The options seen are a parse's own: a parser used twice takes its option each time."""
    parser = build_parser()
    for out in ("a", "b"):
        assert parser.parse_args(["quantify", "m.nii.gz", "--out", out]).out == out


def test_a_run_folder_among_the_inputs_is_named_as_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`predict --model A B CT` said "B: 2D images" of the second run folder."""
    runs = [tmp_path / "cv" / f"fold_{k}" for k in (0, 1)]
    for run in runs:
        run.mkdir(parents=True)
        (run / "config.json").write_text("{}")
    code, _, err = _run(capsys, "predict", "--model", str(runs[0]), str(runs[1]),
                        str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "out"))
    _assert_one_line_error(code, err, f"{runs[1]}: a run folder given as an input; --model "
                                      "takes one run (covseg does not ensemble run folders")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("command", "out", "held"), [
    ("predict-volume", "mask.nii.gz", "masks go to OUT/STUDY/infection.nii.gz (and lungs.nii.gz)"),
    ("predict-image", "one_mask.png", "masks go to OUT/IMAGE.png, one per image"),
    ("predict-image", "mask.JPG", "masks go to OUT/IMAGE.png, one per image"),
    ("predict-volume", "mask.tiff", "masks go to OUT/STUDY/infection.nii.gz (and lungs.nii.gz)"),
    ("predict-image", "mask.npy", "masks go to OUT/IMAGE.png, one per image"),
    ("predict-image", "mask.bmp", "masks go to OUT/IMAGE.png, one per image"),
    ("quantify", "result.nhdr", ("results go to OUT/STUDY/quantification.json and "
                                 "OUT/summary.csv")),
    ("quantify", "result.nrrd", ("results go to OUT/STUDY/quantification.json and "
                                 "OUT/summary.csv"))])
def test_an_out_named_as_a_file_is_refused_where_out_is_a_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, out: str,
        held: str) -> None:
    """lungmask's `-o mask.nii.gz` habit made a folder named mask.nii.gz/."""
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), ct)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    argv = {"predict-volume": ["predict", str(ct), "--model", str(tmp_path / "run")],
            "predict-image": ["predict", str(image), "--model", str(tmp_path / "run")],
            "quantify": ["quantify", str(ct)]}[command]
    code, _, err = _run(capsys, *argv, "--out", str(tmp_path / out))
    _assert_one_line_error(code, err, f"--out {tmp_path / out}: --out is a folder: {held}; "
                                      "give a folder name")
    assert not (tmp_path / out).exists()


@pytest.mark.parametrize(("argv", "out", "held"), [
    (("train", "DATA"), "model.pt",
     "the run goes to OUT/best.pt, OUT/config.json and OUT/metrics.json"),
    (("train", "DATA"), "model.onnx",
     "the run goes to OUT/best.pt, OUT/config.json and OUT/metrics.json"),
    (("cv", "DATA", "--folds", "2"), "results.json",
     "each fold goes to OUT/fold_K/, the summary to OUT/summary.json and OUT/report.md"),
    (("cv", "DATA", "--fold", "0"), "folds.csv",
     "each fold goes to OUT/fold_K/, the summary to OUT/summary.json and OUT/report.md"),
    (("compare", "DATA", "--models", "unet", "miniseg"), "run.nii.gz",
     ("each model's folds go to OUT/MODEL/, the comparison to OUT/comparison.json and "
      "OUT/comparison.md")),
    (("demo",), "demo.md",
     "the demo's data go to OUT/synthetic-data/, its cross-validation to OUT/cv/")])
def test_a_training_out_named_as_a_file_is_refused_as_predicts_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path,
        monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], out: str, held: str) -> None:
    """``covseg train DATA --out model.pt`` trained into a folder named model.pt/ (cv's and
    compare's --out results.json, demo's alike): refused before the data are read, as
    predict's --out mask.nii.gz is."""
    monkeypatch.setattr(api, "_load", data_unread)
    given = [str(synthetic_folder) if arg == "DATA" else arg for arg in argv]
    code, _, err = _run(capsys, *given, "--out", str(tmp_path / out))
    _assert_one_line_error(code, err, f"--out {tmp_path / out}: --out is a folder: {held}; "
                                      "give a folder name")
    assert not (tmp_path / out).exists()


@pytest.mark.parametrize("made", [True, False])
def test_a_run_folder_named_as_a_file_is_taken_where_it_exists_or_ends_in_a_slash(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path,
        made: bool) -> None:
    """An existing folder model.pt/ (a run trained there before the check) is a folder, as
    ``--out model.pt/`` says one."""
    run = tmp_path / "model.pt"
    if made:
        run.mkdir()
    code, _, err = _run(capsys, "train", str(synthetic_folder), "--out",
                        str(run) if made else f"{run}/", "--epochs", "1", "--size", "32",
                        "--model", "unet", "--model-option", "width=4", "--batch-size", "4")
    assert code == 0, err
    assert (run / "best.pt").is_file()


def test_an_out_named_as_a_file_with_a_trailing_slash_is_a_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """quantify refused ``--out res.nii.gz/`` (its --out read as a Path, which drops the slash)
    where predict took it: both take it now, as the folder the slash says."""
    _, mask, _ = synthetic_study(tmp_path / "in", "chest")
    out = f"{tmp_path / 'res.nii.gz'}/"
    code, _, err = _run(capsys, "quantify", str(mask), "--image", str(tmp_path / "in"),
                        "--out", out)
    assert code == 0, err
    assert (tmp_path / "res.nii.gz" / "chest" / "quantification.json").is_file()
    code, _, err = _run(capsys, "predict", str(mask), "--model", str(tmp_path / "run"),
                        "--out", f"{tmp_path / 'pred.nii.gz'}/")
    _assert_one_line_error(code, err, f"{tmp_path / 'run'}: no such checkpoint")


@pytest.mark.parametrize(("argv", "message"), [
    (("predict", "ct.nii.gz", "--model", "r", "--out", "o", "--noHU"),
     "--noHU is lungmask's option, not covseg's: give --hu no"),
    (("predict", "ct.nii.gz", "--model", "r", "--out", "o", "--batchsize", "4"),
     "--batchsize is lungmask's option, not covseg's: give --batch-size N"),
    (("predict", "ct.nii.gz", "--model", "r", "--out", "o", "--cpu"),
     "--cpu is lungmask's option, not covseg's: drop it: covseg runs on the CPU"),
    (("predict", "ct.nii.gz", "--out", "o", "--modelname", "LTRCLobes"),
     "--modelname is lungmask's option, not covseg's: give --model RUN"),
    (("predict", "ct.nii.gz", "--out", "o", "-m", "R231"),
     "-m is lungmask's option, not covseg's: give --model RUN"),
    (("predict", "-i", "ct.nii.gz", "-o", "o", "--model", "r"),
     "-i is lungmask's option, not covseg's: give the inputs as they are"),
    (("predict", "ct.nii.gz", "-o", "o", "--model", "r"),
     ("-o is lungmask's option, not covseg's: give --out DIR, a folder (masks go to "
      "DIR/STUDY/ for volumes, DIR/IMAGE.png for 2D images)"))])
def test_lungmasks_options_are_answered_with_covsegs(
        capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str) -> None:
    """They got argparse's bare "unrecognized arguments" (or "--out is required")."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert "(see `covseg predict -h`)" in err


@pytest.mark.parametrize("argv", [
    ("train", "d", "--out", "o", "--noHU"), ("cv", "d", "--out", "o", "-m", "unet"),
    ("evaluate", "r", "d", "-o", "x"), ("quantify", "m.nii.gz", "--out", "o", "-m", "R231")])
def test_lungmasks_answers_are_given_only_where_they_fit(
        capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    """Every command was told predict's answers: train's --noHU to give --hu (train has none),
    cv's -m to give --model RUN (cv's --model takes an architecture)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert "lungmask" not in err, err


def test_lungmasks_answers_to_quantify_fit_it(capsys: pytest.CaptureFixture[str]) -> None:
    """quantify's --noHU is --hu no (its --image), its -o a folder of studies and summary.csv."""
    with pytest.raises(SystemExit):
        main(["quantify", "m.nii.gz", "-o", "o"])
    assert ("-o is lungmask's option, not covseg's: give --out DIR, a folder (results go to "
            "DIR/STUDY/ and DIR/summary.csv)") in capsys.readouterr().err
