"""The Python API (``import covseg``): the functions stay functions, and bad input is a one-line
:class:`CovsegError`, as on the command line."""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib
import inspect
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

import covseg
from covseg import api, progress
from covseg.batch import BatchResult, StudiesFailed
from covseg.cli import build_parser, main
from covseg.errors import BatchFailed, CovsegError
from covseg.infer import Predictor
from covseg.io.image import read_image
from tests.conftest import (
    NEEDS_ONNX,
    StopWhenCollected,
    forked_exit_code,
    held_by_another_thread,
    shared,
)
from tests.io.helpers import edited_series, needs_ct
from tests.test_quantify import synthetic_study
from tests.test_train import TINY


@NEEDS_ONNX
def test_api_names_stay_functions_after_their_submodules_are_used(tmp_path: Path,
                                                                   tiny_run: Path) -> None:
    """``covseg.export`` became the module covseg.export after its first call (a lazy import of
    the submodule sets the package attribute), and so did ``covseg.compare``."""
    onnx_file = tmp_path / "a.onnx"
    script = f"""
import covseg
before = {{name: getattr(covseg, name) for name in covseg.__all__}}
covseg.export({str(tiny_run)!r}, {str(onnx_file)!r})
covseg.export({str(tiny_run)!r}, {str(tmp_path / "b.onnx")!r})
try:
    covseg.compare("synthetic", ["unet"], {str(tmp_path / "cmp")!r})
except covseg.CovsegError:
    pass
covseg.load_predictor({str(onnx_file)!r})
print([name for name in covseg.__all__ if getattr(covseg, name) is not before[name]])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_quantify_takes_one_folder_alone_and_the_clis_option_names(tmp_path: Path) -> None:
    """A str was read character by character, a Path was not iterable; the options were named
    html_report and multiclass where the CLI says --html and --classes."""
    _, mask, lesion_ml = synthetic_study(tmp_path / "in", "case")
    for given in (str(mask.parent), mask.parent):
        out = tmp_path / f"out-{type(given).__name__}"
        result = covseg.quantify(given, out, image=tmp_path / "in", classes="binary", html=True)
        assert (result.done, result.failed) == (1, 0)
        record = json.loads((out / "case" / "quantification.json").read_text())
        assert record["study"]["lesion_ml"] == pytest.approx(lesion_ml)
        assert record["settings"]["classes"] == "binary"
        assert (out / "case" / "report.html").is_file()
    with pytest.raises(CovsegError, match=r"^unknown classes value 'multi'; choose one of "
                                          r"auto, binary, multiclass$"):
        covseg.quantify(mask, tmp_path / "bad", classes="multi")


def test_predict_takes_a_loaded_predictor(tmp_path: Path, tiny_run: Path,
                                          synthetic_folder: Path) -> None:
    """predict and predict_volumes took paths only (a TypeError deep in checkpoint.py), while
    segment took a loaded predictor; options given with one apply to a copy."""
    image = next((synthetic_folder / "images").glob("*.npy"))
    predictor = covseg.load_predictor(tiny_run)
    [loaded] = covseg.predict(predictor, image, tmp_path / "loaded")
    [from_path] = covseg.predict(tiny_run, image, tmp_path / "path")
    assert loaded.read_bytes() == from_path.read_bytes()
    copy = covseg.load_predictor(predictor, batch_size=2, tta=False, threshold=0.3)
    assert (copy.batch_size, copy.tta, copy.threshold) == (2, False, 0.3)
    assert (predictor.batch_size, predictor.threshold) == (8, 0.4)
    assert covseg.load_predictor(predictor) is predictor
    volume = tmp_path / "ct.nii.gz"
    hu = np.full((32, 32, 3), -1000.0, dtype=np.float32)
    hu[4:28, 4:28] = 40.0
    hu[8:14, 8:24] = hu[18:24, 8:24] = -850.0
    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(volume))
    result = covseg.predict_volumes(predictor, volume, tmp_path / "volumes")
    assert (result.done, result.failed) == (1, 0)


def test_tqdm_disable_silences_the_bar_of_predict(tmp_path: Path, tiny_run: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """covseg.predict's bar of 20 images and more was given ``disable=`` and so ignored
    ``TQDM_DISABLE``, docs/python-api.md's way to silence covseg's bars."""
    images = tmp_path / "images"
    images.mkdir()
    for k in range(20):
        Image.fromarray(np.full((16, 16), 10 * k, dtype=np.uint8)).save(images / f"s{k}.png")
    monkeypatch.setattr(progress, "LOGGED_EVERY_S", 0.0)  # a quick passing bar writes to a log
    drawn = {}
    for quiet in ("0", "1"):
        monkeypatch.setenv("TQDM_DISABLE", quiet)
        capsys.readouterr()
        covseg.predict(tiny_run, images, tmp_path / f"pred{quiet}")
        drawn[quiet] = "predict" in capsys.readouterr().err
    assert drawn == {"0": True, "1": False}


def test_batches_with_failed_studies_raise_once_written(
        tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """predict_volumes and quantify returned BatchResult(failed=N) quietly, where predict (2D)
    raises and the CLI exits 1: they now raise one line once the batch is written, naming how
    many failed, the first one's reason and the summary, with the counts as ``result``. The
    CLI's quantify still prints its line and exits 1."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "good")
    label = tmp_path / "in" / "label.nii.gz"
    nib.save(nib.Nifti1Image((nib.load(str(ct)).get_fdata() > -500).astype(np.uint8),
                             np.eye(4)), str(label))
    out = tmp_path / "volumes"
    with pytest.raises(StudiesFailed) as failed:
        covseg.predict_volumes(tiny_run, [ct, label], out)
    message = str(failed.value)
    assert message.startswith(f"1 of 2 studies could not be predicted (first: label: {label}: ")
    assert "label mask" in message and "\n" not in message
    assert message.endswith(f"; {out} holds the other 1 study, and {out / 'summary.csv'} lists "
                            "the failures")
    assert isinstance(failed.value, CovsegError)
    assert failed.value.result == BatchResult(out / "summary.csv", 1, 0, 1)
    assert (out / "good" / "quantification.json").is_file()
    fractional = tmp_path / "in" / "masks" / "soft_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.full((64, 48, 6), 0.5, np.float32), np.eye(4)), str(fractional))
    quantified = tmp_path / "quantified"
    with pytest.raises(CovsegError, match=(
            rf"^1 of 2 studies could not be quantified \(first: soft: {fractional}: .*\); "
            rf"{quantified} holds the other 1 study, and {quantified}/summary.csv lists the "
            "failures$")):
        covseg.quantify(mask.parent, quantified)
    capsys.readouterr()
    assert main(["quantify", str(mask.parent), "--out", str(tmp_path / "cli")]) == 1
    assert capsys.readouterr().err.endswith(
        f"1 done, 0 already done, 1 failed; summary: {tmp_path / 'cli' / 'summary.csv'}\n")
    assert covseg.quantify(mask, tmp_path / "one").failed == 0


def test_a_slices_padding_below_air_does_not_change_its_mask(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An HU slice padded with -2048 outside its scan circle reached the model darker than air
    (the lung mask DICOMs' gave a mask of Dice 0.706 to the one padded with air, -1024): the
    model now sees, and masks, both alike."""
    image = np.load(next((synthetic_folder / "images").glob("*.npy")))
    for padding in (-1024, -2048):
        padded = image.copy()
        padded[:6], padded[:, :6] = padding, padding
        np.save(tmp_path / f"pad{-padding}.npy", padded)
    predictor = covseg.load_predictor(tiny_run)
    seen: list[np.ndarray] = []
    predict = predictor.predict_probabilities

    def recorded(images: list[np.ndarray]) -> list[np.ndarray]:
        seen.extend(images)
        return predict(images)

    monkeypatch.setattr(predictor, "predict_probabilities", recorded)
    masks = covseg.predict(predictor, [tmp_path / "pad1024.npy", tmp_path / "pad2048.npy"],
                           tmp_path / "out")
    assert len(seen) == 2 and np.array_equal(seen[0], seen[1])
    assert [mask.name for mask in masks] == ["pad1024.png", "pad2048.png"]
    assert np.array_equal(np.asarray(Image.open(masks[0])), np.asarray(Image.open(masks[1])))


class Given:
    """What the calls below are made with: a run, its predictor, data, an image and a volume."""

    def __init__(self, tmp: Path, run: Path, data: Path) -> None:
        self.tmp, self.run, self.data = tmp, run, data
        self.image = next((data / "images").glob("*.npy"))
        self.predictor = covseg.load_predictor(run)
        self.volume = np.full((2, 16, 16), -1000.0, dtype=np.float32)
        self.file = tmp / "file.py"
        self.file.write_text("not a folder")
        self.pictures_beside_folders = tmp / "pictures"  # a notebook's checkpoints, masks
        for folder in (".ipynb_checkpoints", "preds"):
            (self.pictures_beside_folders / folder).mkdir(parents=True)
        shutil.copy(self.image, self.pictures_beside_folders / "slice.npy")
        shutil.copy(self.image, self.pictures_beside_folders / "preds" / "slice.npy")


WRONG_ARGUMENTS: list[tuple[Callable[[Given], object], str]] = [
    (lambda g: covseg.predict(g.run, g.image, g.tmp / "p", tta="no"),
     "tta must be true or false, got 'no'"),
    (lambda g: covseg.predict(g.run, g.image, g.tmp / "p", threshold="0.5"),
     "threshold must be a number, got '0.5'"),
    (lambda g: covseg.predict(g.run, g.image, g.tmp / "p", batch_size="8"),
     "batch_size must be a whole number, got '8'"),
    (lambda g: covseg.predict(g.run, g.image, g.tmp / "p", overlay="no"),
     "overlay must be true or false, got 'no'"),
    (lambda g: covseg.predict(g.run, np.zeros((8, 8)), g.tmp / "p"),
     ("inputs must be a path or a list of paths (str or pathlib.Path), got a value of type "
      "ndarray; images held in memory go to covseg.segment")),
    (lambda g: covseg.predict(g.run, b"images", g.tmp / "p"),
     "inputs must be a path or a list of paths (str or pathlib.Path), got a value of type bytes"),
    (lambda g: covseg.predict(g.run, {str(g.image)}, g.tmp / "p"),
     "inputs must be a path or a list of paths (str or pathlib.Path), got a value of type set"),
    (lambda g: covseg.predict_volumes(g.run, (p for p in [g.image]), g.tmp / "p"),
     ("inputs must be a path or a list of paths (str or pathlib.Path), got a value of type "
      "generator")),
    (lambda g: covseg.quantify(b"masks", g.tmp / "q"),
     "masks must be a path or a list of paths (str or pathlib.Path), got a value of type bytes"),
    (lambda g: covseg.predict(g.run, g.image, g.file),
     "file.py: a file is in the way (the output is a folder)"),
    (lambda g: covseg.predict_volumes(g.run, g.image, g.tmp / "p", probabilities="yes"),
     "probabilities must be true or false, got 'yes'"),
    (lambda g: covseg.predict_volumes(g.run, g.tmp, g.tmp / "p", overlay=True),
     ("unknown option(s) overlay; predict_volumes takes model, inputs, out, lung_model, "
      "batch_size, tta, threshold, shard and the CT volume options html, hu, keep_outside_lungs, "
      "lung_margin_mm, probabilities")),
    (lambda g: covseg.predict_volumes(g.run, g.tmp, g.tmp / "p", lung_predictor=g.run),
     "unknown option(s) lung_predictor; predict_volumes takes model, inputs, out, lung_model, "),
    (lambda g: covseg.predict(g.run, g.image, g.tmp / "p", shard="0/2"),
     ("shard: for CT volumes only, and covseg.predict takes 2D images; drop it, or give CT "
      "volumes to covseg.predict_volumes")),
    (lambda g: covseg.predict(g.run, g.image, g.tmp / "p", probabilities=True, html=True),
     "html, probabilities: for CT volumes only, and covseg.predict takes 2D images; drop them"),
    (lambda g: covseg.predict(g.run, g.image, g.tmp / "p", html=True, bogus=1),
     ("unknown option(s) bogus; predict takes model, inputs, out, overlay, batch_size, tta, "
      "threshold; html: for CT volumes only, and covseg.predict takes 2D images; drop it, or give "
      "CT volumes to covseg.predict_volumes")),
    (lambda g: covseg.predict(g.run, g.image, g.tmp / "p", hu="auto"),
     "hu: for CT volumes only, and covseg.predict takes 2D images; drop it, or give CT volumes"),
    (lambda g: covseg.visualize(g.data, g.tmp / "v.png", target="lesion"),
     "unknown target 'lesion'; choose one of infection, multiclass, lung"),
    (lambda g: covseg.data_info(g.data, intensity="foo"),
     "unknown intensity mode 'foo'; choose one of auto, hu, uint8, unit"),
    (lambda g: covseg.predict_volumes(g.run, g.image, g.tmp / "p", lung_margin_mm="5"),
     "lung_margin_mm must be a number, got '5'"),
    (lambda g: covseg.predict_volumes(g.run, g.data / "images", g.tmp / "p"),
     "images: 2D images, not CT volumes; predict them with covseg.predict"),
    (lambda g: covseg.predict_volumes(g.run, g.pictures_beside_folders, g.tmp / "p"),
     "pictures: 2D images, not CT volumes; predict them with covseg.predict"),
    (lambda g: covseg.predict_volumes(g.run, [g.tmp, g.image], g.tmp / "p"),
     ".npy: a 2D image, not a CT volume; predict it with covseg.predict"),
    (lambda g: covseg.predict_volumes(g.run, [g.image, g.image], g.tmp / "p"),
     ".npy: 2D images, not CT volumes; predict them with covseg.predict"),
    (lambda g: covseg.train(g.data, g.file, **TINY),
     "file.py: a file is in the way (the output is a folder)"),
    (lambda g: covseg.train(g.data, g.file / "run", **TINY),
     "file.py: a file is in the way of the output folder"),
    (lambda g: covseg.fetch_data("medseg", g.file),
     "file.py: a file is in the way (the output is a folder); pick another to"),
    (lambda g: covseg.fetch_data("medseg", g.file / "sub"),
     "file.py: a file is in the way of the output folder"),
    (lambda g: covseg.evaluate(g.data / "masks", g.pictures_beside_folders, g.file / "sub/ev"),
     "file.py: a file is in the way of the output folder"),
    (lambda g: covseg.evaluate(g.data / "masks", g.pictures_beside_folders, f"{g.file}/"),
     "file.py: a file is in the way (the output is a folder); pick another out"),
    (lambda g: covseg.export(g.run, g.file / "sub" / "m.onnx"),
     "file.py: a file is in the way of the folder "),
    (lambda g: covseg.visualize(g.data, g.file / "sub" / "v.png"),
     "file.py: a file is in the way of the folder "),
    (lambda g: covseg.train(g.data, g.tmp / "p", **{**TINY, "lung_guide": None}),
     "lung_guide must be a name, got None"),
    (lambda g: covseg.compare(g.data, None, g.tmp / "p", folds=2),
     "models must be a list of model specs, e.g. ['unet', 'unet:width=8'] (the baseline "),
    (lambda g: covseg.demo(g.tmp / "d", folds=None), "folds must be a whole number, got None"),
    (lambda g: covseg.visualize(g.data, g.tmp / "v.png", n=np.bool_(True)),
     "n must be a whole number, got True"),
    (lambda g: covseg.predict_volumes(g.run, [], g.tmp / "v"),
     "no inputs given: inputs is an empty list (a pattern that matched nothing?)"),
    (lambda g: covseg.quantify([], g.tmp / "q"),
     "no masks given: masks is an empty list (a pattern that matched nothing?)"),
    (lambda g: covseg.predict(g.run, (), g.tmp / "p"), "no inputs given: inputs is an empty"),
    (lambda g: covseg.train(5, g.tmp / "p", **TINY), ("data must be a data folder (str or "
     "pathlib.Path) or a covseg.load_dataset result, got 5")),
    (lambda g: covseg.cross_validate(None, g.tmp / "p", **TINY), "data must be a data folder"),
    (lambda g: covseg.train(g.data, g.tmp / "p", **{**TINY, "window": (1, 2, 3)}),
     "window must be two numbers (LOW, HIGH) in HU, e.g. (-1350.0, 150.0), got (1, 2, 3)"),
    (lambda g: covseg.train(g.data, g.tmp / "p", **{**TINY, "window": "lung"}),
     "window must be two numbers (LOW, HIGH) in HU"),
    (lambda g: covseg.train(g.data, g.tmp / "p", **{**TINY, "model_options": "width=2"}),
     "model_options must be a dict of option names and values"),
    (lambda g: covseg.train(g.data, g.tmp / "p", resume="no", **TINY),
     "resume must be true or false, got 'no'"),
    (lambda g: covseg.load_dataset(g.data, window=(0, -1)),
     "window (LOW, HIGH) needs LOW < HIGH, both finite, got (0, -1)"),
    (lambda g: covseg.load_predictor(None), "model must be a run folder, checkpoint or .onnx file"),
    (lambda g: covseg.export(g.run, None), "out must be a path (str or pathlib.Path), got None"),
    (lambda g: covseg.segment(g.predictor, g.volume, spacing=(1, 1, 1), lung_margin_mm="5"),
     "lung_margin_mm must be a number, got '5'"),
    (lambda g: covseg.segment(g.predictor, g.volume, spacing=(1, 1, 1), keep_outside_lungs="no"),
     "keep_outside_lungs must be true or false, got 'no'"),
    (lambda g: covseg.visualize(g.data, g.tmp / "v.png", n=0), "n must be positive, got 0"),
    (lambda g: covseg.visualize(g.data, g.tmp / "v.png", n=-3), "n must be positive, got -3"),
    (lambda g: covseg.visualize(g.tmp / "none", g.tmp / "v.png", n=101),
     ("n must be at most 100 (a grid of 50 rows), got 101; for other slices draw another "
      "grid with another seed")),
    (lambda g: covseg.segment(g.predictor, g.volume, spacing=(1, 1, 1), lung_margin_mm=-1.0),
     "lung_margin_mm must be a finite number >= 0, got -1"),
    (lambda g: covseg.quantify(g.tmp, g.tmp / "q", html="yes"),
     "html must be true or false, got 'yes'"),
    (lambda g: covseg.quantify(g.tmp, g.tmp / "q", hu="maybe"),
     "unknown hu value 'maybe'; choose one of auto, yes, no"),
    (lambda g: covseg.quantify(g.tmp, g.tmp / "q", shard=(0, 2, 1)),
     ("shard must be \"I/N\" or a pair (I, N) of whole numbers, e.g. \"0/4\" or (0, 4), "
      "got (0, 2, 1)")),
    (lambda g: covseg.quantify(g.tmp, g.tmp / "q", shard="2/2"),
     "shard 2/2: need 0 <= I < N (shards count from 0: 0/2 to 1/2)"),
    (lambda g: covseg.predict_volumes(g.run, g.tmp, g.tmp / "p", shard="half"),
     "shard must look like I/N (e.g. 0/4), got 'half'"),
    (lambda g: covseg.predict_volumes(g.run, g.tmp, g.tmp / "p", shard=(0.0, 2)),
     "shard must be \"I/N\" or a pair (I, N) of whole numbers"),
    (lambda g: covseg.demo(g.tmp / "d", epochs="x"), "epochs must be a whole number, got 'x'"),
    (lambda g: covseg.demo(g.tmp / "d", epochs=None), "epochs must be a whole number, got None"),
    (lambda g: covseg.train(g.data, g.tmp / "p", **{**TINY, "window": np.array([[-1000, 400]])}),
     "window must be two numbers (LOW, HIGH) in HU, e.g. (-1350.0, 150.0), got array("),
    (lambda g: covseg.demo(g.tmp / "d", epochs=0), "epochs must be at least 1, got 0"),
    (lambda g: covseg.demo(g.tmp / "d", folds=1), "folds must be at least 2, got 1"),
    (lambda g: covseg.cross_validate(g.data, g.tmp / "p", repeats=0, **TINY),
     "repeats must be at least 1 (1: the folds once, unrepeated), got 0"),
    (lambda g: covseg.cross_validate(g.data, g.tmp / "p", repeats=2.0, **TINY),
     "repeats must be a whole number, got 2.0"),
    (lambda g: covseg.cross_validate(g.data, g.tmp / "p", folds=2, repeats=3, fold=6, **TINY),
     "fold must lie in 0..5 for 2 folds repeated 3 times (6 folds), got 6"),
    (lambda g: covseg.compare(g.data, ["unet", "miniseg"], g.tmp / "p", repeats=0),
     "repeats must be at least 1"),
    (lambda g: covseg.demo(g.tmp / "d", folds=13),
     "folds must be at most 12, the demo's synthetic patients, got 13"),
    (lambda g: covseg.demo(g.file), "file.py: a file is in the way (the output is a folder)"),
    (lambda g: covseg.train(g.data, g.tmp / "p", bogus=1, **TINY),
     ("unknown option(s) bogus; train takes data, out, resume and the training recipe's model, "
      "model_options, target, epochs")),
    (lambda g: covseg.cross_validate(g.data, g.tmp / "p", folds=2, bogus=1, lrate=1.0),
     ("unknown option(s) bogus, lrate; cross_validate takes data, out, folds, resume, fold, ray, "
      "cpus_per_fold, repeats and the training recipe's model, ")),
    (lambda g: covseg.compare(g.data, ["unet", "fcn"], g.tmp / "p", bogus=1),
     ("unknown option(s) bogus; compare takes data, models, out, folds, resume, repeats and the "
     "training ")),
    (lambda g: covseg.train(g.data, g.tmp / "p", weight_decay=-1.0, **TINY),
     "weight_decay must be finite and at least 0, got -1.0 (the default is 1e-4)"),
]


@pytest.mark.parametrize(("call", "message"), WRONG_ARGUMENTS,
                         ids=[message[:40] for _, message in WRONG_ARGUMENTS])
def test_arguments_of_the_wrong_type_are_one_line_errors(
        call: Callable[[Given], object], message: str, tmp_path: Path, tiny_run: Path,
        synthetic_folder: Path) -> None:
    """Each was a TypeError, ValueError or AttributeError from deep inside (pathlib, a
    comparison, an unpacking), or was taken silently: tta="no" turned the mirrors on, n=0 drew
    one sample."""
    given = Given(tmp_path, tiny_run, synthetic_folder)
    with pytest.raises(CovsegError, match=re.escape(message)) as raised:
        call(given)
    assert "\n" not in str(raised.value)
    made = {"file.py", given.pictures_beside_folders.name}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in made) == [], (
        "refused before writing")


@pytest.mark.parametrize(("options", "refused"), [
    ({"hu": "yes"}, "hu"), ({"keep_outside_lungs": True}, "keep_outside_lungs"),
    ({"lung_margin_mm": 2.0, "spacing": (1.0, 1.0)}, "lung_margin_mm, spacing"),
    ({"lung_model": "lungs-run"}, "lung_model"), ({"spacing": (1.0, 1.0)}, "spacing"),
    ({"direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}, "direction"),
    ({"spacing": (1.0, 1.0), "direction": np.eye(2)}, "spacing, direction")])
def test_segment_refuses_volume_options_with_a_2d_slice(tiny_run: Path, options: dict[str, object],
                                                        refused: str) -> None:
    """A 2D slice silently ignored every volume option, where the CLI refuses them; the one
    option refused was told to "drop them"."""
    predictor = covseg.load_predictor(tiny_run)
    pronoun = "them" if "," in refused else "it"
    with pytest.raises(CovsegError, match=rf"^{refused}: for CT volumes only, and this image is "
                                          rf"a 2D slice; drop {pronoun}, or give a volume$"):
        covseg.segment(predictor, np.zeros((32, 32), dtype=np.float32), **options)
    assert covseg.segment(predictor, np.zeros((32, 32), dtype=np.float32)).shape == (32, 32)


def test_segment_warns_of_a_volume_without_lungs_in_its_own_terms(
        tiny_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    """segment's warning for a CT without lungs said "no % involved or CT category", which it
    never gives (it returns labels only); it now says what it found and what to give."""
    soft_tissue = np.full((4, 64, 64), -1000, np.int16)  # air around a body of no lungs
    soft_tissue[:, 8:56, 8:56] = np.random.default_rng(0).integers(-100, 100, (4, 48, 48))
    with caplog.at_level("WARNING"):
        covseg.segment(tiny_run, soft_tissue, spacing=(5.0, 0.7, 0.7))
    said = [r.getMessage() for r in caplog.records if "no lungs found" in r.getMessage()]
    assert said == [("the array: no lungs found in the CT (under 5 mL of lung-like air; gas "
                     "pockets such as bowel gas are not lung); if the CT holds lungs, give them "
                     "with lung_model; infection outside the lungs was not removed")]


def test_segment_names_an_rgb_array(tiny_run: Path) -> None:
    """An (H, W, 3) picture was told that a 3D array needs spacing=(z, y, x)."""
    with pytest.raises(CovsegError, match=r"^an array of shape \(32, 32, 3\) looks like an RGB "
                                          r"image; convert it to grayscale"):
        covseg.segment(tiny_run, np.zeros((32, 32, 3), dtype=np.uint8))


def test_segment_names_a_grey_array_with_a_channel_axis(tiny_run: Path) -> None:
    """An (H, W, 1) grey picture, as PIL or OpenCV may give it, was told that a 3D array needs
    spacing=(z, y, x)."""
    with pytest.raises(CovsegError, match=r"^an array of shape \(32, 32, 1\) looks like a grey "
                                          r"image with a channel axis; drop it \(image\[\.\.\., "
                                          r"0\]\)"):
        covseg.segment(tiny_run, np.zeros((32, 32, 1), dtype=np.uint8))


@pytest.mark.parametrize("spacing", ["3,1,1", "1,1", (1.0, 1.0, True)])
def test_segment_shows_a_spacing_that_is_no_three_numbers_as_given(
        tiny_run: Path, spacing: object) -> None:
    """A spacing string was shown as a tuple of its characters ("3,1,1": ('3', ',', '1', ...)),
    and one of three characters ("1,1") raised a TypeError from numpy."""
    with pytest.raises(CovsegError, match=r"^the array: spacing must be three positive numbers "
                                          rf"\(z, y, x\) in mm, got {re.escape(repr(spacing))}$"):
        covseg.segment(tiny_run, np.full((4, 32, 32), -1000.0, dtype=np.float32),
                       spacing=spacing)


@pytest.mark.parametrize("image", [
    np.zeros((0, 32, 32), np.float32), np.zeros((4, 0, 32), np.float32),
    nib.Nifti1Image(np.zeros((32, 32, 0), np.int16), np.eye(4))])
def test_segment_refuses_a_volume_of_no_voxels(tiny_run: Path, image: object) -> None:
    """An empty volume escaped as numpy's ValueError ("zero-size array to reduction operation
    minimum"), not the one-line CovsegError an empty 2D slice gets."""
    spacing = (2.5, 0.7, 0.7) if isinstance(image, np.ndarray) else None
    with pytest.raises(CovsegError, match=r"^the (array|nibabel image): holds no voxels \(shape "
                                          r"\d+ x \d+ x \d+\); give a volume with at least one "
                                          "voxel along each axis$"):
        covseg.segment(tiny_run, image, spacing=spacing)


def test_segment_counts_a_numpy_volume_s_slices_as_slices(
        tiny_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A (10, 64, 64) [0, 1] array overshooting 1 in every slice was warned of as "the array: a
    few pixels of an image ... (10 images alike)", as if 10 images were given, not one volume;
    a 2D array's warning still speaks of an image."""
    grey = np.zeros((10, 64, 64), dtype=np.float32)
    grey[:, 4:60, 4:60] = 0.9
    grey[:, 20:24, 30:34] = 1.01  # overshoot in every slice
    with caplog.at_level("WARNING"):
        covseg.segment(tiny_run, grey, spacing=(2.0, 0.8, 0.8))
        covseg.segment(tiny_run, grey[0])
    said = [r.getMessage() for r in caplog.records if "a few pixels" in r.getMessage()]
    assert len(said) == 2
    assert said[0].startswith("the array: a few pixels of a slice lie outside 0..1")
    assert said[0].endswith("(10 slices alike)")
    assert said[1].startswith("a few pixels of an image lie outside 0..1")

@pytest.mark.parametrize("rows, columns", [(1, 1), (1, 64), (64, 1)])
def test_segment_refuses_a_slice_too_small_as_covseg_predict_does(
        tiny_run: Path, tmp_path: Path, rows: int, columns: int) -> None:
    """A 1 x 1 or one-row slice was segmented (its black pixel called infection), where covseg
    predict refuses the same pixels saved as a PNG: one rule, the same words."""
    plane = np.full((rows, columns), 90, np.uint8)
    told = (rf"a {columns} x {rows} image, too small to be a CT slice \(covseg reads slices of "
            r"at least 2 x 2 pixels\); give ")
    with pytest.raises(CovsegError, match=rf"^the slice: {told}the whole slice$"):
        covseg.segment(tiny_run, plane)
    with pytest.raises(CovsegError, match=rf"^the slice: {told}the whole slice$"):
        covseg.segment(tiny_run, sitk.GetImageFromArray(plane))
    Image.fromarray(plane).save(tmp_path / "tiny.png")
    with pytest.raises(CovsegError, match=rf"tiny\.png: {told}the slice's own file$"):
        read_image(tmp_path / "tiny.png")


def thin_slices_refusal(z: int, y: int, x: int) -> str:
    """The pattern of the refusal of a volume of ``z`` axial slices of ``x`` by ``y`` pixels (on
    LPS axes), one side under 2 pixels, after its source: the words of a 2D slice's where the
    volume is one slice, else those of a single sagittal or coronal plane."""
    if z == 1:
        return (rf" \(one axial slice\): a {x} x {y} image, too small to be a CT slice \(covseg "
                r"reads slices of at least 2 x 2 pixels\); give the whole series")
    plane = "coronal" if y == 1 else "sagittal"
    return (rf": a single {plane} plane \(axes LPS; {z} axial slices of {x} x {y} pixels\), not "
            "axial slices; give the whole series")


@pytest.mark.parametrize("shape", [(1, 1, 64), (1, 64, 1), (30, 1, 64), (30, 64, 1)])
def test_segment_refuses_a_volume_whose_slices_are_under_2_pixels_a_side(
        tiny_run: Path, shape: tuple[int, int, int]) -> None:
    """A (z, y, x) array one pixel high or wide in-plane was segmented without a word (a
    nonsense mask of its shape), and so was one such axial slice as a SimpleITK or nibabel
    image; every one is refused by the rule of 2D slices, naming the input and its slices."""
    volume = np.random.default_rng(0).integers(-1000, 400, size=shape).astype(np.int16)
    told = thin_slices_refusal(*shape)
    for image, spacing, source in (
            (volume, (2.5, 0.7, 0.7), "the array"),
            (sitk.GetImageFromArray(volume), None, "the SimpleITK image"),
            (nib.Nifti1Image(volume.T, np.diag([-0.7, -0.7, 2.5, 1.0])), None,
             "the nibabel image")):
        with pytest.raises(CovsegError, match=f"^{source}{told}$"):
            covseg.segment(tiny_run, image, spacing=spacing)


def test_segment_reads_an_arrays_slices_on_the_direction_given(tiny_run: Path) -> None:
    """A (z, y, x) array one column wide is one axial slice where its direction puts x head to
    foot: segmented, not refused as a single sagittal plane on the axes of an array without
    one."""
    volume = np.random.default_rng(0).integers(-1000, 400, size=(16, 16, 1)).astype(np.int16)
    mask = covseg.segment(tiny_run, volume, spacing=(0.7, 0.7, 2.5),
                          direction=(0, 0, 1, 0, 1, 0, 1, 0, 0))
    assert mask.shape == volume.shape and mask.dtype == np.uint8


@pytest.mark.parametrize("labels", [
    np.array([0, 1]), np.array([0, 1, 2, 3, 4]), np.array([0, 255])])
def test_segment_refuses_a_label_mask_as_covseg_predict_does(tiny_run: Path,
                                                              labels: np.ndarray) -> None:
    """A 0/1 or 0..4 mask volume (or slice) in memory was segmented as a CT without a word,
    where ``covseg predict`` refuses a label mask given as the CT: the same rule, the same
    words."""
    predictor = covseg.load_predictor(tiny_run)
    volume = np.zeros((3, 32, 32), dtype=np.int16)
    volume[:, 8:24, 8:24] = np.resize(labels[1:], (3, 16, 16))
    shown = "/".join(str(value) for value in labels)
    with pytest.raises(CovsegError, match=rf"^the array: not a CT image but a label mask "
                                          rf"\(values {shown}\); give the CT itself$"):
        covseg.segment(predictor, volume, spacing=(5.0, 0.7, 0.7))
    image = sitk.GetImageFromArray(volume)
    with pytest.raises(CovsegError, match=r"^the SimpleITK image: not a CT image but a label"):
        covseg.segment(predictor, image)
    with pytest.raises(CovsegError, match=rf"^the slice: not a CT slice but a label mask "
                                          rf"\(values {shown}\); give the slice itself$"):
        covseg.segment(predictor, volume[0].astype(np.uint8))
    ct = volume.astype(np.float32) * 40 - 1000  # in HU: the same shapes, now an image
    assert covseg.segment(predictor, ct, spacing=(5.0, 0.7, 0.7)).shape == ct.shape


def test_data_already_read_are_trained_on_as_they_were_read(tmp_path: Path,
                                                            synthetic_folder: Path) -> None:
    """A LoadedData was trained on as read while the run recorded the recipe's window and
    target: load_dataset(D) then window=(-1000, 0) recorded a window it never trained on, and
    load_dataset(D, "multiclass") recorded target infection with 3 classes."""
    quick = {**TINY, "epochs": 1}
    windowed = covseg.load_dataset(synthetic_folder, window=(-1000, 0))
    assert windowed.reading() == {"target": "infection", "intensity": "auto",
                                  "window": (-1000.0, 0.0)}
    covseg.train(windowed, tmp_path / "windowed", **quick)
    record = json.loads((tmp_path / "windowed" / "config.json").read_text())["config"]
    assert record["window"] == [-1000.0, 0.0]
    multiclass = covseg.load_dataset("synthetic", "multiclass")
    covseg.train(multiclass, tmp_path / "multiclass", **quick)
    predictor = covseg.load_predictor(tmp_path / "multiclass")
    assert (predictor.target, predictor.num_classes) == ("multiclass", 3)
    plain = covseg.load_dataset(synthetic_folder)
    message = (r"^window=\(-1000, 0\), but the data were read with window=\(-1350.0, 150.0\); "
               r"leave window out to use the data's, or read them again with "
               r"covseg.load_dataset\(..., window=...\)$")
    for call in (lambda: covseg.train(plain, tmp_path / "r", window=(-1000, 0), **quick),
                 lambda: covseg.cross_validate(plain, tmp_path / "r", window=(-1000, 0), **quick),
                 lambda: covseg.compare(plain, ["unet", "fcn"], tmp_path / "r",
                                        window=(-1000, 0), epochs=1),
                 lambda: covseg.visualize(plain, tmp_path / "r.png", window=(-1000, 0))):
        with pytest.raises(CovsegError, match=message):
            call()
    with pytest.raises(CovsegError, match="^target='infection', but the data were read with "
                                          "target='multiclass'"):
        covseg.train(multiclass, tmp_path / "r", target="infection", **quick)
    assert not (tmp_path / "r").exists() and not (tmp_path / "r.png").exists()


def test_data_read_from_a_relative_folder_keep_it_after_a_chdir(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The root was stored as given: after a chdir, visualize's guard looked for the data
    folder under the new working folder, found none, and wrote a grid among the masks."""
    monkeypatch.chdir(synthetic_folder.parent)
    data = covseg.load_dataset(synthetic_folder.name)
    monkeypatch.chdir(tmp_path)
    assert data.root == str(synthetic_folder.resolve()) and data.root in data.describe()
    inside = synthetic_folder / "masks" / "grid.png"
    with pytest.raises(CovsegError, match=f"lies in the data folder {re.escape(data.root)}"):
        covseg.visualize(data, inside)
    assert not inside.exists() and covseg.visualize(data, "grid.png").is_file()


@pytest.mark.parametrize(("function", "seed", "message"), [
    ("visualize", -1, "seed must be a non-negative integer, got -1"),
    ("visualize", 2**64, "seed must be at most 4294967295"),
    ("train", 10**20, "seed must be at most 4294967294 (2**32 - 1 less 1, which this run adds"),
    ("cross_validate", 2**63, "seed must be at most 4294967294")])
def test_seeds_out_of_range_are_covseg_errors(tmp_path: Path, function: str, seed: int,
                                              message: str) -> None:
    """A seed of -1 (visualize) or above 2**63 - 1 raised numpy's or torch's ValueError."""
    with pytest.raises(CovsegError, match="^" + re.escape(message)):  # the keyword: no --seed
        if function == "visualize":
            covseg.visualize("synthetic", tmp_path / "v.png", seed=seed)
        else:
            getattr(covseg, function)("synthetic", tmp_path / "r", seed=seed, epochs=1, size=32)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("cpus", [2, -5])
def test_cpus_per_fold_with_one_fold_and_no_ray_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        cpus: int) -> None:
    """cv --fold K took any --cpus-per-fold (-5 too) and ignored it, which cv without --fold
    refuses without --ray: it sizes the Ray tasks, and one fold runs none."""
    monkeypatch.setattr("covseg.api._load", lambda *_: pytest.fail("data were read"))
    out = tmp_path / "cv"
    with pytest.raises(CovsegError, match="^cpus_per_fold sizes the Ray tasks of ray; give ray "
                                          "too$"):
        covseg.cross_validate("synthetic:1", out, folds=2, fold=0, cpus_per_fold=cpus, epochs=1)
    capsys.readouterr()
    assert main(["cv", "synthetic:1", "--out", str(out), "--folds", "2", "--fold", "1",
                 "--cpus-per-fold", str(cpus), "--epochs", "1"]) == 2
    assert capsys.readouterr().err == ("covseg: error: --cpus-per-fold sizes the Ray tasks of "
                                       "--ray; give --ray too\n")
    assert not out.exists()


def test_every_api_function_says_what_it_returns() -> None:
    """train, cross_validate and evaluate said what they did, not what they returned."""
    functions = [getattr(covseg, name) for name in covseg.__all__
                 if callable(getattr(covseg, name)) and not isinstance(getattr(covseg, name), type)]
    assert len(functions) == 16
    assert [f.__name__ for f in functions if "Returns" not in (f.__doc__ or "")] == []


def test_the_types_the_api_returns_and_its_batch_errors_are_named_in_covseg() -> None:
    """A script could not annotate what load_predictor, load_dataset, predict_volumes and quantify
    return, nor catch the error that holds a batch's counts (StudiesFailed: BatchFailed has
    none), by a name covseg exports."""
    from covseg.data.layouts import LoadedData

    named = {"Predictor": Predictor, "LoadedData": LoadedData, "BatchResult": BatchResult,
             "BatchFailed": BatchFailed, "StudiesFailed": StudiesFailed}
    assert {name: getattr(covseg, name, None) for name in named} == named
    assert set(named) <= set(covseg.__all__)
    assert issubclass(covseg.StudiesFailed, covseg.BatchFailed)


def test_quantify_takes_the_clis_shard_text(tmp_path: Path) -> None:
    """shard="0/2", as --shard takes it, ended in "ValueError: too many values to unpack"."""
    for name in ("a", "b"):
        synthetic_study(tmp_path / "in", name)
    first = covseg.quantify(tmp_path / "in" / "masks", tmp_path / "out", shard="0/2")
    second = covseg.quantify(tmp_path / "in" / "masks", tmp_path / "out", shard=[1, 2])
    assert (first.done, second.done, first.failed + second.failed) == (1, 1, 0)
    assert (first.summary.name, second.summary.name) == ("summary_shard0of2.csv",
                                                         "summary_shard1of2.csv")


def test_a_second_predict_into_a_folder_adds_to_its_record(tmp_path: Path, tiny_run: Path,
                                                           synthetic_folder: Path) -> None:
    """The second call's predict.json described that call alone (one input, one mask, no
    overlays) while the folder still held the first call's masks and overlays; it then said
    "overlays": true though only the first image had one: the record counts them."""
    first, second = sorted((synthetic_folder / "images").glob("*.npy"))[:2]
    out = tmp_path / "pred"
    covseg.predict(tiny_run, first, out, overlay=True)
    covseg.predict(tiny_run, [second, first], out)
    record = json.loads((out / "predict.json").read_text())
    assert record["inputs"] == [str(first), str(second)] and record["masks"] == 2
    assert record["overlays"] == 1 and record["failed"] == {}
    assert sorted(p.name for p in out.glob("*.png")) == [f"{first.stem}.png", f"{second.stem}.png"]


def test_an_input_failing_on_a_rerun_loses_its_earlier_mask(tmp_path: Path, tiny_run: Path,
                                                             synthetic_folder: Path) -> None:
    """An image that failed on a rerun kept the mask of its earlier content, which predict.json
    counted and hashed as written by the rerun and evaluate scored, where a failed input is
    scored as an empty prediction; the failure line said "holds the other 1 mask" of two, and
    "the other 0 masks" when all failed. Only an input the record names loses its mask."""
    first, second = sorted((synthetic_folder / "images").glob("*.npy"))[:2]
    images, truth, out = tmp_path / "in", tmp_path / "truth", tmp_path / "pred"
    for folder in (images, truth):
        folder.mkdir()
    for image in (first, second):
        shutil.copy(image, images / image.name)
        shutil.copy(synthetic_folder / "masks" / f"{image.stem}.png", truth)
    covseg.predict(tiny_run, images, out, overlay=True)
    (images / second.name).write_bytes(b"garbage")
    with pytest.raises(CovsegError, match=f"; {re.escape(str(out))} holds the other 1 mask, "):
        covseg.predict(tiny_run, images, out, overlay=True)
    assert sorted(p.name for p in out.rglob("*.png")) == [f"{first.stem}.png"] * 2
    record = json.loads((out / "predict.json").read_text())
    assert (record["masks"], record["overlays"]) == (1, 1)
    assert list(record["output_sha256"]) == [f"{first.stem}.png"]
    scores = covseg.evaluate(out, truth, tmp_path / "ev")
    assert scores["missing_predictions"] == [second.stem]
    assert [row["dice"] for row in scores["per_case"] if row["case_id"] == second.stem] == [0.0]
    with pytest.raises(CovsegError, match=r"1 of 1 images could not be predicted \(first: .*\); "
                       f"no mask was written; {re.escape(str(out / 'predict.json'))} lists"):
        covseg.predict(tiny_run, images / second.name, out)
    assert (out / f"{first.stem}.png").is_file()


def test_one_file_given_twice_is_predicted_once(tmp_path: Path, tiny_run: Path,
                                                synthetic_folder: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A file given twice (a folder and a file in it, ``x`` and ``./x``) was refused as two
    inputs writing one mask, advised to go to separate folders; it is one input now. A file
    linked under another name still gets its own mask."""
    images = tmp_path / "in"
    images.mkdir()
    for image in sorted((synthetic_folder / "images").glob("*.npy"))[:2]:
        shutil.copy(image, images / image.name)
    one = min(images.iterdir())
    (tmp_path / "linked.npy").symlink_to(one)
    monkeypatch.chdir(tmp_path)
    written = covseg.predict(tiny_run, ["in", f"in/{one.name}", f"./in/{one.name}",
                                        "linked.npy"], "pred")
    assert len(written) == 3
    record = json.loads((tmp_path / "pred" / "predict.json").read_text())
    assert record["inputs"] == [*map(str, sorted(images.iterdir())), str(tmp_path / "linked.npy")]
    assert record["masks"] == 3


def test_two_links_of_one_name_to_one_stored_file_are_two_inputs(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """``a/x.npy`` and ``b/x.npy`` linking to one stored file (git-annex's, DVC's) were merged
    as one input, ``b/x.npy`` silently dropped from the call and its record; they are two
    inputs, refused as writing one mask, as two such CT studies are two."""
    store = tmp_path / "store"
    store.mkdir()
    stored = store / "SHA256E-s1--0f3c.npy"
    shutil.copy(min((synthetic_folder / "images").glob("*.npy")), stored)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.npy").symlink_to(stored)
    with pytest.raises(CovsegError, match="a/x.npy and .*b/x.npy would both be written to"):
        covseg.predict(tiny_run, [tmp_path / "a", tmp_path / "b"], tmp_path / "pred")
    assert not (tmp_path / "pred").exists()


def test_two_inputs_whose_masks_differ_only_in_case_are_refused(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """``cA/Scan.npy`` and ``cB/scan.npy`` wrote two masks, ``Scan.png`` and ``scan.png``: one
    file on macOS and Windows disks, the second over the first. They are refused as two inputs
    of one mask name are."""
    image = min((synthetic_folder / "images").glob("*.npy"))
    for folder, name in (("cA", "Scan"), ("cB", "scan")):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / f"{name}.npy")
    with pytest.raises(CovsegError, match=r"cA/Scan.npy and \S*cB/scan.npy would both be written "
                                          r"to \S*pred/Scan.png on macOS and Windows disks; "):
        covseg.predict(tiny_run, [tmp_path / "cA", tmp_path / "cB"], tmp_path / "pred")
    assert not (tmp_path / "pred").exists()


def test_masks_differing_beyond_case_are_two_masks_as_on_macos_and_windows(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """``a/straße.npy`` and ``b/strasse.npy`` were refused as writing one mask on macOS and
    Windows disks, which fold case letter by letter (``ß`` stays ``ß``): two masks, written."""
    image = min((synthetic_folder / "images").glob("*.npy"))
    for folder, name in (("a", "straße"), ("b", "strasse")):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / f"{name}.npy")
    written = covseg.predict(tiny_run, [tmp_path / "a", tmp_path / "b"], tmp_path / "pred")
    assert sorted(path.name for path in written) == ["strasse.png", "straße.png"]


def test_a_later_predict_whose_mask_differs_only_in_case_says_so(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """``cB/scan.npy`` predicted into a folder holding the mask of ``cA/Scan.npy`` was refused
    as overwriting that mask, false on Linux (``scan.png`` and ``Scan.png`` are two files): it
    says that this is on macOS and Windows disks, as two such inputs of one call are refused."""
    image = min((synthetic_folder / "images").glob("*.npy"))
    for folder, name in (("cA", "Scan"), ("cB", "scan")):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / f"{name}.npy")
    out = tmp_path / "pred"
    covseg.predict(tiny_run, tmp_path / "cA" / "Scan.npy", out)
    with pytest.raises(CovsegError) as refused:
        covseg.predict(tiny_run, tmp_path / "cB" / "scan.npy", out)
    assert str(refused.value) == (
        f"{tmp_path / 'cB' / 'scan.npy'}: its mask would overwrite that of "
        f"{tmp_path / 'cA' / 'Scan.npy'} on macOS and Windows disks, which an earlier predict "
        f"wrote into {out}; pick another out")


def test_a_later_predict_of_a_hard_link_to_an_earlier_input_is_another_input(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """``b/h.npy``, a hard link to ``a/h.npy`` that an earlier call predicted into ``out``, was
    taken as that input and its mask written over the other's: links to one stored file are two
    inputs, refused as writing one mask."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, linked = tmp_path / "a" / "h.npy", tmp_path / "b" / "h.npy"
    shutil.copy(min((synthetic_folder / "images").glob("*.npy")), first)
    os.link(first, linked)
    out = tmp_path / "pred"
    covseg.predict(tiny_run, first, out)
    with pytest.raises(CovsegError, match=f"^{re.escape(str(linked))}: its mask would overwrite "
                                          f"that of {re.escape(str(first))}, which an earlier"):
        covseg.predict(tiny_run, linked, out)


def test_an_earlier_input_named_in_another_case_on_a_disk_ignoring_case_is_the_same_input(
        tmp_path: Path) -> None:
    """On a macOS disk ``a/scan.npy`` is the file an earlier call recorded as ``a/Scan.npy``: a
    rerun, not a clash (a hard link of that name stands in for it here); a hard link in another
    folder is another input."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    recorded = tmp_path / "a" / "Scan.npy"
    recorded.write_bytes(b"x")
    os.link(recorded, tmp_path / "a" / "scan.npy")
    os.link(recorded, tmp_path / "b" / "scan.npy")
    out = tmp_path / "pred"
    earlier = {"inputs": [str(recorded)]}
    api._check_outputs(api._Planned.of([tmp_path / "a" / "scan.npy"], out), out, earlier)
    with pytest.raises(CovsegError, match="would overwrite that of .* on macOS and Windows"):
        api._check_outputs(api._Planned.of([tmp_path / "b" / "scan.npy"], out), out, earlier)


def test_predict_refuses_a_name_that_is_not_utf8_before_writing(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """2D predict took an image whose name is not valid UTF-8 (legal on Linux) and wrote it
    into predict.json as lone surrogates, and a mask its own evaluate refused; CT predict,
    quantify and evaluate refuse such a name in one line before writing anything, and so does
    it now."""
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(next((synthetic_folder / "images").glob("*.npy")), images / "a.npy")
    bad = os.fsdecode(bytes(images) + b"/x\xe9y.npy")
    shutil.copy(images / "a.npy", bad)
    with pytest.raises(CovsegError) as raised:
        covseg.predict(tiny_run, images, tmp_path / "pred")
    assert str(raised.value) == (f"{images}/x\\xe9y.npy: its name is not valid UTF-8, which "
                                 "covseg's records cannot hold; rename it")
    assert not (tmp_path / "pred").exists()


def test_a_16_bit_slice_is_refused_with_advice_predict_and_segment_can_follow(
        tmp_path: Path, tiny_run: Path) -> None:
    """A 16-bit slice's refusal in 2D predict and segment advised ``--intensity hu`` /
    ``intensity="hu"``, which neither takes (a run reads slices as it was trained): it names a
    run trained so now."""
    sixteen = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(sixteen).save(tmp_path / "g16.png")
    advice = ('NIfTI; a run trained with intensity="hu" reads them as they are, offset and all, '
              "mostly white)")
    with pytest.raises(CovsegError) as raised:
        covseg.predict(tiny_run, tmp_path / "g16.png", tmp_path / "pred")
    assert f"{advice}); no mask was written;" in str(raised.value)
    with pytest.raises(CovsegError) as raised:
        covseg.segment(tiny_run, sixteen)
    assert str(raised.value).endswith(advice)


def test_predict_records_each_input_once_from_any_working_folder(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """predict.json listed an image twice when a later call ran from another working folder
    (``e/../in2d/x.npy`` beside ``in2d/x.npy``). Inputs are recorded with their folders resolved
    and their own names kept, a file linked into a store by its link's name (its mask's), and
    a CT study likewise (it was recorded by the store's name)."""
    root = tmp_path.resolve()
    images, store, elsewhere = root / "in2d", root / "store", root / "e"
    for folder in (images, store, elsewhere):
        folder.mkdir()
    first, second = sorted((synthetic_folder / "images").glob("*.npy"))[:2]
    shutil.copy(first, images / "a.npy")
    shutil.copy(second, store / "SHA256E-s1--0f3c.npy")
    (images / "linked.npy").symlink_to(store / "SHA256E-s1--0f3c.npy")
    (root / "via").symlink_to(images, target_is_directory=True)
    monkeypatch.chdir(root)
    covseg.predict(tiny_run, "in2d", "pred")
    monkeypatch.chdir(elsewhere)
    covseg.predict(tiny_run, "../in2d", "../pred")
    covseg.predict(tiny_run, "../via/linked.npy", "../pred")
    record = json.loads((root / "pred" / "predict.json").read_text())
    assert record["inputs"] == [str(images / "a.npy"), str(images / "linked.npy")]
    assert record["masks"] == 2
    ct = store / "SHA256E-s2--9a1b.nii.gz"
    hu = np.full((32, 32, 3), -1000.0, dtype=np.float32)
    hu[4:28, 4:28] = 40.0
    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(ct))
    (images / "chest.nii.gz").symlink_to(ct)
    covseg.predict_volumes(tiny_run, "../via/../in2d/chest.nii.gz", "../volumes")
    study = json.loads((root / "volumes" / "chest" / "quantification.json").read_text())
    assert study["inputs"]["image"] == str(images / "chest.nii.gz")


class _StopsAt(torch.nn.Module):
    """A 1x1 convolution whose ``stop_at``-th forward pass raises KeyboardInterrupt (Ctrl-C
    mid-run); a bias of ``bias`` makes another model's masks."""

    def __init__(self, stop_at: int, bias: float = 0.0) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        torch.nn.init.constant_(self.conv.weight, 1.0)
        torch.nn.init.constant_(self.conv.bias, bias)
        self.calls, self.stop_at = 0, stop_at

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.conv(batch)


def test_a_stopped_predict_leaves_its_record_and_another_model_is_refused(
        tmp_path: Path, synthetic_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 2D predict stopped after its first mask left no predict.json, so a later predict with
    another model into that --out was accepted and the folder mixed two models' masks under one
    record. The record is written before the first mask, this call's images ``pending``."""
    images = sorted((synthetic_folder / "images").glob("*.npy"))[:3]
    out = tmp_path / "pred"
    stopped = Predictor(_StopsAt(2), num_classes=2, size=64, batch_size=1)
    with pytest.raises(KeyboardInterrupt):
        covseg.predict(stopped, images[:2], out)
    assert (out / f"{images[0].stem}.png").is_file()
    record = json.loads((out / "predict.json").read_text())
    assert record["inputs"] == [] and record["pending"] == [str(p) for p in images[:2]]
    assert record["masks"] == 0  # counted when the record was written, before the first
    with caplog.at_level("WARNING"):
        scored = covseg.evaluate(out, synthetic_folder / "masks", tmp_path / "ev")
    assert scored["cases"] == 1 and scored["missing_predictions"] == []
    assert "lists 2 images of a covseg predict that did not finish" in caplog.text
    other = Predictor(_StopsAt(0, bias=-3.0), num_classes=2, size=64, batch_size=1,
                      threshold=0.9)
    with pytest.raises(CovsegError, match=r"pred holds masks predicted otherwise "
                                          r"\(threshold: 0\.5 -> 0\.9\)"):
        covseg.predict(other, images[2], out)  # an image the stopped call was not given
    assert not (out / f"{images[2].stem}.png").exists()
    stopped.model.stop_at = 0
    covseg.predict(stopped, images[1:], out)  # the same model finishes, adding one
    record = json.loads((out / "predict.json").read_text())
    assert record["inputs"] == [str(p) for p in images[1:]]
    assert record["pending"] == [str(images[0])] and record["masks"] == 3
    covseg.predict(stopped, images[0], out)
    record = json.loads((out / "predict.json").read_text())
    assert "pending" not in record and sorted(record["inputs"]) == [str(p) for p in images]


def test_predict_into_a_folder_of_masks_without_a_record_is_refused(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """A folder of PNG masks a covseg before 3 Dec predicted (no predict.json) took another
    model's masks beside them (exit 0), under a predict.json naming the new model alone; it is
    refused, nothing written."""
    images = sorted((synthetic_folder / "images").glob("*.npy"))[:2]
    out = tmp_path / "pred"
    out.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(out / "0.png")
    with pytest.raises(CovsegError, match=r"pred holds 1 PNG \(first: 0\.png\) that no "
                                          r"predict\.json there records: ground truth, or "
                                          r"masks of an unknown model"):
        covseg.predict(tiny_run, images, out)
    assert sorted(path.name for path in out.iterdir()) == ["0.png"]


def test_predict_over_real_palette_masks_is_refused(tmp_path: Path, tiny_run: Path) -> None:
    """``covseg predict RUN images --out masks`` (MedSeg's ground truth, palette "P" PNGs, or a
    copy of them) overwrote every true mask without a word: only 8-bit grey PNGs counted as
    masks. Any PNG predict would write over that no predict.json records is refused, nothing
    written; so is the CLI's, in one line."""
    real = shared("medseg-covid19-100")
    names = sorted(path.name for path in (real / "masks").glob("*.png"))[:2]
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        for name in names:
            shutil.copy(real / folder / name, tmp_path / folder / name)
    before = {name: (tmp_path / "masks" / name).read_bytes() for name in names}
    with Image.open(tmp_path / "masks" / names[0]) as mask:
        assert mask.mode == "P"
    with pytest.raises(CovsegError, match=rf"masks holds 2 PNGs \(first: {names[0]}\) that no "
                                          r"predict\.json there records"):
        covseg.predict(tiny_run, tmp_path / "images", tmp_path / "masks")
    assert main(["predict", "--model", str(tiny_run), str(tmp_path / "images"),
                 "--out", str(tmp_path / "masks")]) == 2
    assert {name: (tmp_path / "masks" / name).read_bytes() for name in names} == before
    assert sorted(path.name for path in (tmp_path / "masks").iterdir()) == names


@pytest.mark.parametrize("mode", ["P", "RGB", "multi-class"])
def test_predict_over_any_unrecorded_png_is_refused(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path, mode: str) -> None:
    """A PNG at a mask's (or, with ``overlay``, an overlay's) path that the folder's predict.json
    does not record is refused whatever it holds, before and after a first predict there; the
    masks that record names are predicted again."""
    images = sorted((synthetic_folder / "images").glob("*.npy"))[:2]
    out = tmp_path / "pred"
    out.mkdir()
    pixels = {"P": np.zeros((8, 8), np.uint8), "RGB": np.zeros((8, 8, 3), np.uint8),
              "multi-class": np.arange(64, dtype=np.uint8).reshape(8, 8) % 7}[mode]
    truth = Image.fromarray(pixels).convert("P") if mode == "P" else Image.fromarray(pixels)
    truth.save(out / f"{images[1].stem}.png")
    with pytest.raises(CovsegError, match=rf"pred holds 1 PNG \(first: {images[1].stem}\.png\)"):
        covseg.predict(tiny_run, images, out)
    assert sorted(path.name for path in out.iterdir()) == [f"{images[1].stem}.png"]
    covseg.predict(tiny_run, images[0], out, overlay=True)
    covseg.predict(tiny_run, images[0], out, overlay=True)  # its own mask: predicted again
    with pytest.raises(CovsegError, match=r"that no predict\.json there records"):
        covseg.predict(tiny_run, images[1], out)
    (out / f"{images[1].stem}.png").unlink()
    truth.save(out / "overlays" / f"{images[1].stem}.png")
    with pytest.raises(CovsegError, match=rf"\(first: overlays/{images[1].stem}\.png\)"):
        covseg.predict(tiny_run, images[1], out, overlay=True)
    assert covseg.predict(tiny_run, images[1], out) == [out / f"{images[1].stem}.png"]


def test_predict_over_a_png_named_as_a_failed_input_mask_is_refused(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """An image an earlier predict recorded as failed has no mask of predict's in ``out``, but
    its mask's name counted as recorded: a ground-truth PNG put there under that name was
    written over once the image read. It is refused as any unrecorded PNG is."""
    image = tmp_path / "ct.npy"
    image.write_text("not an array")
    out = tmp_path / "pred"
    with pytest.raises(BatchFailed):
        covseg.predict(tiny_run, image, out)
    truth = out / "ct.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(truth)
    shutil.copy(min((synthetic_folder / "images").glob("*.npy")), image)
    before = truth.read_bytes()
    with pytest.raises(CovsegError, match=r"pred holds 1 PNG \(first: ct\.png\) that no "
                                          r"predict\.json there records"):
        covseg.predict(tiny_run, image, out)
    assert truth.read_bytes() == before


def test_predict_into_a_folder_of_figures_and_grey_pictures_writes_its_masks(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """The refusal of unrecorded masks counted every PNG: a folder holding an evaluation's box
    plot or a run's curves.png (RGBA figures), or a grey picture, was refused as "masks from
    an earlier covseg"."""
    images = sorted((synthetic_folder / "images").glob("*.npy"))[:2]
    out = tmp_path / "results"
    out.mkdir()
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(out / "eval.png")
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(out / "slice.png")
    os.mkfifo(out / "pipe.png")  # opened, it would block the call
    written = covseg.predict(tiny_run, images, out)
    assert len(written) == 2 and (out / "predict.json").is_file()


def test_predict_warns_of_images_read_on_different_scales(
        tmp_path: Path, tiny_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Predict detects each 2D image's scale on its own (probe 50): a [0, 1] float image
    overshooting 1 a hair reads as [0, 1], but one stretched far past it (an eighth at 1.5)
    read as 8-bit grey, near-black among the others, without a word: it is warned of, as
    a data set read so is."""
    folder = tmp_path / "in"
    folder.mkdir()
    for stem, (top, rows) in {"a": (1.004, 1), "b": (1.0, 2), "c": (1.5, 8)}.items():
        image = np.random.default_rng(len(stem)).random((64, 64)).astype(np.float32)
        image[:rows] = top
        np.save(folder / f"{stem}.npy", image)
    covseg.predict(tiny_run, folder, tmp_path / "out")
    assert ("the images of one set were read on different intensity scales, each detected on "
            f"its own: 2 images as values in [0, 1] (e.g. {folder / 'a.npy'}), 1 image as "
            f"8-bit grey levels (e.g. {folder / 'c.npy'}); if they share one, store "
            "them all on it (8-bit grey as uint8, floats in [0, 1] clipped to it), else some "
            "read near-black or white") in caplog.text


@pytest.mark.parametrize(("function", "held"), [
    ("predict_volumes", "masks go to OUT/STUDY/infection.nii.gz (and lungs.nii.gz)"),
    ("quantify", "results go to OUT/STUDY/quantification.json and OUT/summary.csv"),
    ("predict", "masks go to OUT/IMAGE.png, one per image"),
])
def test_an_out_named_as_a_file_is_refused_by_the_api_as_by_the_cli(
        tmp_path: Path, function: str, held: str) -> None:
    """The check was the command line's only: covseg.predict_volumes and covseg.quantify made a
    folder named mask.nii.gz. A trailing slash says a folder, and is taken."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    given = {"predict_volumes": (tmp_path / "run", mask), "quantify": (mask,),
             "predict": (tmp_path / "run", image)}[function]
    out = str(tmp_path / "mask.nii.gz")
    refusal = f'out="{out}": out is a folder: {held}; give a folder name'
    with pytest.raises(CovsegError, match=f"^{re.escape(refusal)}$"):
        getattr(covseg, function)(*given, out)
    assert not Path(out).exists()
    if function == "quantify":
        assert covseg.quantify(mask, f"{out}/").done == 1
        assert (Path(out) / "case" / "quantification.json").is_file()


def test_an_nnunet_2d_case_is_named_as_a_volume_study_and_one_channel_read(
        tmp_path: Path, tiny_run: Path) -> None:
    """2D predict of ``imagesTs/lungA_0000.png`` wrote ``lungA_0000.png`` where a volume's study
    is ``lungA``, as the label ``labelsTs/lungA.png`` names the case: one rule for both. A case
    of several channels is refused as training and volume predict refuse it."""
    images = tmp_path / "imagesTs"
    images.mkdir()
    grey = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(grey).save(images / "lungA_0000.png")
    assert [p.name for p in covseg.predict(tiny_run, images, tmp_path / "predTs")] == [
        "lungA.png"]
    shutil.copy(images / "lungA_0000.png", images / "lungA_0001.png")
    with pytest.raises(CovsegError, match=(
            rf"^{re.escape(str(tmp_path))}: imagesTs/ holds further channels "
            r"\(lungA_0001\.png\), but covseg reads one CT channel per case; keep the CT's "
            r"imagesTs/ files \(_0000\) alone in a copy and give that$")):
        covseg.predict(tiny_run, images, tmp_path / "again")


def test_an_out_whose_masks_keep_nnunets_0000_is_read_by_its_record_and_not_mixed(
        tmp_path: Path, tiny_run: Path) -> None:
    """Until 7 Dec ``imagesTs/lungA_0000.png``'s mask was ``lungA_0000.png``, which predict.json
    records by its input: evaluate of such an --out warned that its every mask was "not listed
    in its predict.json", and predict into it again wrote ``lungA.png`` beside it, after which
    evaluate stopped on "lungA_0000.png and lungA.png are both case 'lungA'". Its masks are
    read as its record's, and predict into it is refused in one line."""
    images, out = tmp_path / "imagesTs", tmp_path / "predTs"
    images.mkdir()
    grey = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(grey).save(images / "lungA_0000.png")
    covseg.predict(tiny_run, images, out)
    (out / "lungA.png").rename(out / "lungA_0000.png")  # as covseg named it until late on 7 Dec
    record = json.loads((out / "predict.json").read_text())
    record["output_sha256"] = {"lungA_0000.png": record["output_sha256"]["lungA.png"]}
    (out / "predict.json").write_text(json.dumps(record))
    truth = tmp_path / "labelsTs"
    truth.mkdir()
    shutil.copy(out / "lungA_0000.png", truth / "lungA.png")
    result = covseg.evaluate(out, truth, tmp_path / "ev")
    assert result["cases"] == 1 and result["unrecorded_predictions"] == []
    assert result["models"] and result["edited_predictions"] == []
    with pytest.raises(CovsegError, match=(
            rf"^{re.escape(str(out / 'lungA_0000.png'))}: the mask of {re.escape(str(images))}"
            r"/lungA_0000\.png as covseg named it until 7 Dec, with nnU-Net's _0000, which "
            r"predict now drops \(lungA\.png\); predict into a new out, or rename such masks "
            r"without _0000$")):
        covseg.predict(tiny_run, images, out)
    assert sorted(path.name for path in out.glob("*.png")) == ["lungA_0000.png"]


def test_predict_and_quantify_into_an_out_another_run_writes_are_refused(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """Two predicts (or quantifies) at once into one --out were both accepted: predict.json and
    summary.csv kept one call's inputs, and two models' masks mixed. Each holds --out's lock
    now, and the second is refused in one line naming the first's pid; shards, which share
    a folder by design, are refused only while a whole run holds it."""
    image = min((synthetic_folder / "images").glob("*.npy"))
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    for out in (tmp_path / "pred", tmp_path / "quant"):
        held = re.escape(f"another covseg run is writing to {out} (pid {os.getpid()}); wait "
                         "for it to end, or pick another out")
        with held_by_another_thread(out):
            with pytest.raises(CovsegError, match=f"^{held}$"):
                covseg.predict(tiny_run, image, out)
            with pytest.raises(CovsegError, match=f"^{held}$"):
                covseg.quantify(mask, out)
            with pytest.raises(CovsegError, match=f"^{held}$"):
                covseg.quantify(mask, out, shard="0/2")
            assert sorted(p.name for p in out.iterdir()) == [".covseg.lock"], "nothing written"
    assert [p.name for p in covseg.predict(tiny_run, image, tmp_path / "pred")] == [
        f"{image.stem}.png"]
    assert covseg.quantify(mask, tmp_path / "quant").done == 1
    assert not (tmp_path / "pred" / ".covseg.lock").exists()


def test_predict_and_quantify_remove_what_kill_9_left_in_their_out(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """kill -9 mid-write left hidden temporary PNGs in a 2D predict's --out and overlays/ and
    beside a volume --out's summary, which reruns never removed; only covseg's own pattern goes,
    a user's hidden files stay."""
    image = min((synthetic_folder / "images").glob("*.npy"))
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    pred, quant = tmp_path / "pred", tmp_path / "quant"
    planted = [pred / ".x.wne6qwfs.png", pred / "overlays" / ".x_b.abcdefgh.png",
               quant / ".summary.k10xvj_o.csv", quant / ".summary.a1b2c3d4.png"]
    kept = [pred / ".notes", pred / "overlays" / ".keep.me.png",
            quant / ".summary_shard1of2.a1b2c3d4.csv"]
    for path in planted + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    covseg.predict(tiny_run, image, pred, overlay=True)
    assert covseg.quantify(mask, quant).done == 1
    assert [path for path in planted if path.exists()] == []
    assert [path for path in kept if path.exists()] == kept


def test_a_second_predict_refuses_to_overwrite_the_mask_of_another_file(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two calls given files of one name from different folders: the second silently replaced
    the first's mask, and the record listed both inputs for one mask."""
    first = min((synthetic_folder / "images").glob("*.npy"))
    other = tmp_path / "elsewhere" / first.name
    other.parent.mkdir()
    shutil.copy(first, other)
    out = tmp_path / "pred"
    covseg.predict(tiny_run, first, out)
    before = (out / f"{first.stem}.png").read_bytes()
    with pytest.raises(CovsegError, match=f"would overwrite that of {re.escape(str(first))}"):
        covseg.predict(tiny_run, other, out)
    assert (out / f"{first.stem}.png").read_bytes() == before
    covseg.predict(tiny_run, first, out)  # the same file again is a rerun, not a clash
    # named relative to where each call ran: the record's relative path was looked up from the
    # second call's folder, found nothing there, and the other file's mask was written over
    relative = tmp_path / "relative"
    (relative / "here").mkdir(parents=True)
    shutil.copy(first, relative / "here" / first.name)
    monkeypatch.chdir(relative)
    covseg.predict(tiny_run, Path("here") / first.name, relative / "pred")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CovsegError, match="would overwrite that of"):
        covseg.predict(tiny_run, other, relative / "pred")


def test_a_clash_with_an_earlier_failure_is_not_called_an_earlier_mask(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """A first call given a data set's GT/x.png (a label mask: it fails, no mask written), a
    second given Imgs/x of that name: refused as overwriting the mask "which an earlier predict
    wrote", which was never written. Refused still, saying what was recorded."""
    image = min((synthetic_folder / "images").glob("*.npy"))
    truth = tmp_path / "GT" / f"{image.stem}.png"
    truth.parent.mkdir()
    Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 12)).save(truth)
    out = tmp_path / "pred"
    with pytest.raises(covseg.BatchFailed, match="not a CT slice but a label mask"):
        covseg.predict(tiny_run, truth, out)
    with pytest.raises(CovsegError, match=(
            rf"{re.escape(str(image))}: its mask would be taken for that of "
            rf"{re.escape(str(truth))}, which an earlier predict into {re.escape(str(out))} "
            r"failed on \(evaluate scores it as an empty prediction\); pick another out$")):
        covseg.predict(tiny_run, image, out)
    assert not (out / f"{image.stem}.png").exists()


@pytest.mark.parametrize(("ct", "mask"), [
    ("coronacases_org_001", "coronacases_001"),
    ("radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm", "radiopaedia_4_85506_1"),
])
def test_quantify_finds_kaggles_ct_of_a_zenodo_mask(tmp_path: Path, ct: str, mask: str) -> None:
    """The mask ``radiopaedia_4_85506_1`` found no CT in Kaggle's ``ct_scans/``, whose
    Radiopaedia names end in ``-dcm``: the study failed."""
    scan, made, lesion_ml = synthetic_study(tmp_path / "ct_scans", ct)
    masks = tmp_path / "infection_mask"
    masks.mkdir()
    made.rename(masks / f"{mask}.nii.gz")
    shutil.rmtree(made.parent)
    result = covseg.quantify(masks, tmp_path / "out", image=tmp_path / "ct_scans")
    assert (result.done, result.failed) == (1, 0)
    record = json.loads((tmp_path / "out" / mask / "quantification.json").read_text())
    assert record["inputs"]["image"] == str(scan)
    assert record["study"]["lesion_ml"] == pytest.approx(lesion_ml)


def test_segment_refuses_spacing_with_an_image_that_carries_its_own(tiny_run: Path) -> None:
    """spacing= given with a SimpleITK or nibabel image was silently ignored: a user correcting a
    wrong header got the header's mL and mm."""
    hu = np.full((3, 16, 16), -1000.0, dtype=np.float32)
    images = {"SimpleITK": sitk.GetImageFromArray(hu),
              "nibabel": nib.Nifti1Image(hu.transpose(2, 1, 0), np.eye(4))}
    for name, image in images.items():
        with pytest.raises(CovsegError, match=rf"^spacing: for numpy arrays only; a {name} image "
                                              "carries its own voxel size"):
            covseg.segment(tiny_run, image, spacing=(1.0, 1.0, 1.0))
    assert covseg.segment(tiny_run, hu, spacing=(5.0, 0.7, 0.7)).shape == hu.shape


def test_a_folder_predicted_into_itself_can_be_predicted_again(tmp_path: Path, tiny_run: Path,
                                                               synthetic_folder: Path) -> None:
    """The rerun took the first call's mask (x.png) as an input beside x.npy, and was refused as
    writing two inputs to one mask; a lone mask would have been predicted as a CT slice."""
    image = shutil.copy(min((synthetic_folder / "images").glob("*.npy")), tmp_path / "x.npy")
    [mask] = covseg.predict(tiny_run, tmp_path, tmp_path)
    first = mask.read_bytes()
    assert covseg.predict(tiny_run, tmp_path, tmp_path) == [mask]
    assert mask.read_bytes() == first
    record = json.loads((tmp_path / "predict.json").read_text())
    assert record["inputs"] == [str(image)] and record["masks"] == 1
    Path(image).unlink()
    with pytest.raises(CovsegError, match="no images .* in this folder but the masks covseg "
                                          "predicted into it"):
        covseg.predict(tiny_run, tmp_path, tmp_path)


def test_predict_records_the_model_file_it_loaded_not_one_its_run_replaced_meanwhile(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``predict --model RUN/best.pt`` while RUN trained hashed best.pt again for the final
    predict.json: the record named the best.pt found at the end, whose weights made none of the
    masks. The file is replaced once the first (pending) record is written."""
    model = Path(shutil.copy(tiny_run / "best.pt", tmp_path / "best.pt"))
    loaded = hashlib.sha256(model.read_bytes()).hexdigest()
    real_write_json = api.write_json

    def replace_model_after_first(target: Path, data: object) -> Path:
        written = real_write_json(target, data)
        model.write_bytes(b"a later epoch's weights")
        return written

    monkeypatch.setattr(api, "write_json", replace_model_after_first)
    images = sorted((synthetic_folder / "images").glob("*.npy"))[:2]
    covseg.predict(model, images, tmp_path / "pred")
    record = json.loads((tmp_path / "pred" / "predict.json").read_text())["model"]
    assert (record["model_sha256"], record["checkpoint_sha256"]) == (loaded, loaded)


def test_predict_records_its_model_files_hash_and_refuses_one_changed_in_place(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """A run retrained in place (same path, other weights) wrote its masks beside the first
    model's under one record: predict.json held the model's path, no hash of its file."""
    first, second = sorted((synthetic_folder / "images").glob("*.npy"))[:2]
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    out = tmp_path / "pred"
    covseg.predict(run, first, out)
    record = json.loads((out / "predict.json").read_text())["model"]
    assert record["model_sha256"] == hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    assert record["lung_guide_sha256"] is None
    covseg.predict(run, second, out)  # the same model adds to the folder
    covseg.predict(run / "best.pt", second, out)  # named by its file: one model, as for CTs
    payload = torch.load(run / "best.pt", weights_only=True)
    for weights in payload["state_dict"].values():
        if weights.is_floating_point():
            weights.add_(0.01)
    torch.save(payload, run / "best.pt")
    with pytest.raises(CovsegError, match=r"pred holds masks predicted otherwise "
                                          r"\(model_sha256: [0-9a-f]{64} -> [0-9a-f]{64}[;)]"):
        covseg.predict(run, second, out)
    legacy = json.loads((out / "predict.json").read_text())
    for key in ("model_sha256", "lung_guide_sha256"):
        del legacy["model"][key]
    (out / "predict.json").write_text(json.dumps(legacy))
    covseg.predict(run / "best.pt", second, out)  # without hashes: the rest, as before


@needs_ct
def test_a_stray_picture_beside_ct_data_is_no_2d_input(tmp_path: Path, tiny_run: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """predict_volumes refused a series folder holding a thumbnail ("holds both") and a folder
    of study folders with an overview picture beside them ("2D images, not CT volumes"), both
    predicted before; the CLI predicted the overview alone as a 2D image, passing the studies
    over in silence."""
    from PIL import Image

    from covseg.cli import main

    thumbnail = edited_series(tmp_path / "series", 3)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(thumbnail / "thumbnail.jpg")
    studies = tmp_path / "studies"
    edited_series(studies / "a", 3)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(studies / "overview.png")
    assert covseg.predict_volumes(tiny_run, thumbnail, tmp_path / "one").done == 1
    assert covseg.predict_volumes(tiny_run, studies, tmp_path / "two").done == 1
    assert main(["predict", "--model", str(tiny_run), str(studies), "--out",
                 str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err
    assert "holds both 2D images (overview.png...) and CT volumes (a...)" in err
    assert not (tmp_path / "cli" / "overview.png").exists()


def test_a_multiclass_record_from_before_class_names_is_added_to(tmp_path: Path,
                                                                 synthetic_folder: Path) -> None:
    """predict.json records a multi-class model's class names since they were added; a folder
    predicted before, its record without them, was refused as "predicted otherwise"."""
    first, second = sorted((synthetic_folder / "images").glob("*.npy"))[:2]
    predictor = Predictor(torch.nn.Conv2d(1, 3, 1), num_classes=3, size=64)
    out = tmp_path / "pred"
    covseg.predict(predictor, first, out)
    legacy = json.loads((out / "predict.json").read_text())
    assert legacy["model"]["classes"]["1"] == "ground-glass"
    del legacy["model"]["classes"]
    (out / "predict.json").write_text(json.dumps(legacy))
    covseg.predict(predictor, second, out)
    assert len(json.loads((out / "predict.json").read_text())["inputs"]) == 2


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommands by name, nested ones as ``data fetch``."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _subparsers(sub)
                found.update({f"{name} {key}": value for key, value in nested.items()}
                             if nested else {name: sub})
    return found


API_OF_COMMAND = {"visualize": ["visualize"], "train": ["train"], "cv": ["cross_validate"],
                  "compare": ["compare"], "predict": ["predict", "predict_volumes"],
                  "export": ["export"], "evaluate": ["evaluate"], "models": ["models"],
                  "quantify": ["quantify"], "data fetch": ["fetch_data"],
                  "data info": ["data_info"], "demo": ["demo"]}
"""The API functions of each subcommand; together they take its options."""

CLI_ONLY = {"help", "onnx", "json", "model_option"}
"""What docs/python-api.md says has no keyword: --onnx (``model`` takes .onnx files), --json
(models() returns the data) and --model-option (the dict ``model_options``, as config.json
records it)."""


def _keywords(name: str) -> set[str]:
    """The keywords an API function takes, its ``**options`` included."""
    own = {key for key, parameter in inspect.signature(getattr(covseg, name)).parameters.items()
           if parameter.kind is not parameter.VAR_KEYWORD}
    extra = {"train": api.RECIPE, "cross_validate": api.RECIPE,
             "compare": set(api.RECIPE) - {"model", "model_options"},  # in each model's spec
             "predict_volumes": api.VOLUME_OPTIONS}.get(name, ())
    return own | set(extra)


@pytest.mark.parametrize("command", sorted(API_OF_COMMAND))
def test_each_command_and_its_api_take_the_same_options(command: str) -> None:
    """visualize had no --seed, demo no --folds or --epochs and the CLI no --weight-decay, which
    the API took; --overlay was overlay_png and --ray ray_address; models and data fetch had no
    API function."""
    parser = _subparsers(build_parser())[command]
    options = {action.dest for action in parser._actions} - CLI_ONLY
    keywords = set().union(*(_keywords(name) for name in API_OF_COMMAND[command]))
    assert options == keywords - {"model_options"}


@pytest.mark.parametrize("name", [name for name in covseg.__all__
                                  if inspect.isfunction(getattr(covseg, name))])
def test_a_keyword_no_function_takes_is_one_line_naming_those_it_takes(name: str) -> None:
    """covseg.predict(..., overlay_png=True) ended in Python's TypeError traceback; the check
    comes before anything is read or written."""
    with pytest.raises(CovsegError, match=rf"^unknown option\(s\) bogus; {name} takes ") as raised:
        getattr(covseg, name)(bogus=1)
    assert "\n" not in str(raised.value)


def test_a_renamed_or_missing_argument_names_the_right_one() -> None:
    with pytest.raises(CovsegError, match=re.escape(
            "unknown option(s) overlay_png; predict takes model, inputs, out, overlay, "
            "batch_size, tta, threshold")):
        covseg.predict("run", "a.png", "out", overlay_png=True)
    with pytest.raises(CovsegError, match=r"^export: missing a required argument: 'out'$"):
        covseg.export("run")
    with pytest.raises(CovsegError, match=r"^quantify: too many positional arguments$"):
        covseg.quantify("masks", "out", "lungs")


def test_an_option_to_models_says_it_takes_none() -> None:
    """covseg.models(json=True) said "models takes " (an empty list)."""
    with pytest.raises(CovsegError, match=r"^unknown option\(s\) json; models takes no options$"):
        covseg.models(json=True)


def test_models_is_the_table_of_covseg_models(capsys: pytest.CaptureFixture[str]) -> None:
    rows = covseg.models()
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == rows
    unet = next(row for row in rows if row["name"] == "unet")
    assert unet["parameters"] > 0 and "width" in unet["options"] and unet["description"]


def _save_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(path)


def _save_nifti(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.int16), np.eye(4)), str(path))


@pytest.mark.parametrize(("given", "images", "files"), [
    ("LungInfection-Test", "Imgs", ("Imgs/0.jpg", "GT/0.png")),
    ("LungInfection-Test", "images", ("images/0.jpg", "masks/0.png")),
    ("LungInfection-Train", "Doctor-label/Imgs",
     ("Doctor-label/Imgs/0.jpg", "Doctor-label/GT/0.png")),
    ("TrainingSet", "LungInfection-Train/Doctor-label/Imgs",
     ("LungInfection-Train/Doctor-label/Imgs/0.jpg", "LungInfection-Train/Doctor-label/GT/0.png")),
    ("nifti", "images", ("images/s1.nii.gz", "masks/s1.nii.gz")),
])
def test_predict_refuses_a_data_folder_naming_its_images(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str, images: str,
        files: tuple[str, str]) -> None:
    """Inf-Net's ``LungInfection-Test`` (Imgs/ + GT/) was read as two DICOM studies: "Imgs
    failed: no DICOM series found", and the same for GT, with a summary.csv of failures; so
    were the Inf-Net folders above it that train reads, and images/ + masks/ of NIfTI volumes
    were predicted as two CT studies."""
    data = tmp_path / given
    for name in files:
        (_save_nifti if name.endswith(".nii.gz") else _save_png)(data / name)
    image_dir, mask_dir = (data / name for name in files)
    shown = (f"{data}: a data folder ({image_dir.parent.name}/ + {mask_dir.parent.name}/: images "
             f"and their masks), not images to predict; give {data / images} to predict")
    assert main(["predict", "--model", str(tmp_path / "run"), str(data), "--out",
                 str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"covseg: error: {shown}\n"
    for predict in (api.predict, api.predict_volumes):
        with pytest.raises(CovsegError, match=re.escape(shown)):
            predict(tmp_path / "run", data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("marker", ["best.pt", "config.json"])
def test_the_api_refuses_a_run_folder_as_an_input(tmp_path: Path, marker: str) -> None:
    """api.predict and api.predict_volumes read a run folder given as an input as images or a
    CT (only ``covseg predict`` refused it), though input_kind is the one decision of all
    three."""
    run = tmp_path / "cv" / "fold_1"
    run.mkdir(parents=True)
    (run / marker).write_text("{}")
    _save_png(run / "curves.png")
    shown = (f"{run}: a run folder given as an input; --model takes one run "
             f"({api.NO_PREDICT_ENSEMBLE})")
    for predict in (api.predict, api.predict_volumes):
        with pytest.raises(CovsegError, match=re.escape(shown)):
            predict(tmp_path / "run", run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("volume", ["ct.nii.gz", "study2/ct.nii.gz"])
def test_a_ct_folder_beside_images_and_masks_is_predicted(tmp_path: Path, volume: str) -> None:
    """A patient's folder holding its CT beside images/ + masks/ of PNG key slices (or a folder
    of study folders beside them) was refused as a data folder: its CTs are predicted."""
    for name in ("images/key1.png", "masks/key1.png"):
        _save_png(tmp_path / "patient" / name)
    _save_nifti(tmp_path / "patient" / volume)
    assert api.input_kind(tmp_path / "patient") == api.VOLUMES


@pytest.mark.parametrize("kept, broken", [("a.png", "b.png"), ("a.nii.gz", "b.nii.gz")])
def test_a_folder_to_predict_holding_a_broken_link_is_refused_naming_it(
        tmp_path: Path, kept: str, broken: str) -> None:
    """A broken link (a git-annex file not fetched) named as an image or a volume was passed
    over, and the rest predicted without a word; the data layouts refuse it, naming it."""
    folder = tmp_path / "in"
    (_save_png if kept.endswith(".png") else _save_nifti)(folder / kept)
    (folder / broken).symlink_to(tmp_path / "not fetched")
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(folder))}: 1 file is a broken link "
                                          rf"\({re.escape(broken)}\): .*git annex get"):
        api.input_kind(folder)
    if kept.endswith(".png"):
        with pytest.raises(CovsegError, match="broken link"):
            api.predict(tmp_path / "no run needed", folder, tmp_path / "out")


@pytest.mark.parametrize("broken", ["b.png", "b.nii.gz"])
def test_a_broken_link_given_to_predict_is_refused_naming_it(tmp_path: Path, broken: str
                                                            ) -> None:
    """A broken link (a git-annex file not fetched) given by name was "no such file or
    folder": it is refused with the `git annex get .` line, as a folder's are."""
    (tmp_path / broken).symlink_to(tmp_path / "not fetched")
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(tmp_path / broken))}: a broken "
                                          r"link: .*git annex get"):
        api.input_kind(tmp_path / broken)


def test_a_dicom_folder_beside_picture_folders_is_predicted_without_failures(
        tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """predict of a folder holding a CT study beside images/ + masks/ of PNG key slices
    predicted the CT but tried each picture folder as a DICOM series, listed it as failed and
    exited 1; the picture folders are now passed over, and a series of slices named without a
    suffix (a PACS export) is still found and predicted."""
    from tests.io.helpers import phantom, synthetic_series

    patient = tmp_path / "patient"
    for name in ("images/key1.png", "masks/key1.png", "series/thumb.png"):
        _save_png(patient / name)
    synthetic_series(patient / "series", phantom(), preamble=False, suffix="")
    assert main(["predict", "--model", str(tiny_run), str(patient), "--out",
                 str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out  # one study: its figures and folder, not counts
    assert printed.startswith("series: lesion ") and " mL, " in printed
    assert printed.endswith(f"; results in {tmp_path / 'out' / 'series'}\n")
    assert [p.name for p in (tmp_path / "out").iterdir() if p.is_dir()] == ["series"]
    assert (tmp_path / "out" / "series" / "infection.nii.gz").is_file()


def test_segment_takes_a_bare_array_in_lps_order_and_a_direction_says_otherwise(
        tiny_run: Path) -> None:
    """An array has no orientation: segment takes it in DICOM's LPS order, which the docstring
    and docs/python-api.md now say (the README called it "same" as the image it came from, a RAS
    NIfTI whose array is mirrored in y and x against that); ``direction=`` gives the image's."""
    ct = sitk.ReadImage(str(shared("ct-samples", "example_ct_sm.nii.gz")))
    assert np.allclose(ct.GetDirection(), (-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS storage
    array, spacing = sitk.GetArrayFromImage(ct), ct.GetSpacing()[::-1]
    from_image = covseg.segment(tiny_run, ct)
    assert from_image.any(), "the tiny model marks voxels of this CT, so equality says something"
    mirrored = covseg.segment(tiny_run, np.ascontiguousarray(array[:, ::-1, ::-1]),
                              spacing=spacing)
    np.testing.assert_array_equal(mirrored[:, ::-1, ::-1], from_image)
    told = covseg.segment(tiny_run, array, spacing=spacing, direction=ct.GetDirection())
    np.testing.assert_array_equal(told, from_image)
    for bad in ((1, 0, 0), (2, 0, 0, 0, 1, 0, 0, 0, 1), "LPS"):
        with pytest.raises(CovsegError, match=r"^direction: 9 numbers, a rotation or reflection"):
            covseg.segment(tiny_run, array, spacing=spacing, direction=bad)
    with pytest.raises(CovsegError, match=r"^direction: for a \(z, y, x\) numpy volume only"):
        covseg.segment(tiny_run, ct, direction=ct.GetDirection())


class _Bands(torch.nn.Module):
    """Fake 3-class network: ground-glass where the slice is dark, consolidation where bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 20.0 * (x < 0.3) - 10, 20.0 * (x > 0.7) - 10], 1)


def test_multiclass_overlays_name_their_colours(tmp_path: Path) -> None:
    """predict --overlay of a multi-class model drew ground-glass red and consolidation yellow
    with nothing in the picture saying which was which."""
    from covseg.viz import CLASS_COLOURS
    from covseg.viz import overlay as overlay_image

    ramp = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))
    Image.fromarray(ramp).save(tmp_path / "slice.png")
    predictor = Predictor(_Bands(), num_classes=3, size=64, target="multiclass")
    (mask,) = covseg.predict(predictor, tmp_path / "slice.png", tmp_path / "out", overlay=True)
    labels = np.asarray(Image.open(mask))
    assert set(np.unique(labels)) == {0, 1, 2}
    with Image.open(tmp_path / "out" / "overlays" / "slice.png") as picture:
        shown = np.asarray(picture.convert("RGB"))
    assert shown.shape[0] == 48 + 4 + 2 * 14
    np.testing.assert_allclose(shown[:48, :64], overlay_image(ramp / 255.0, labels), atol=1)
    for row, label in enumerate((1, 2)):  # a swatch per class, its name beside it
        np.testing.assert_array_equal(shown[48 + 4 + row * 14 + 5, 6], CLASS_COLOURS[label])
        assert (shown[48 + 4 + row * 14:48 + 4 + (row + 1) * 14, 16:] < 100).any()


class _Bright(torch.nn.Module):
    """Fake binary network: the bright half of a slice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (x > 0.5) - 10


def test_binary_and_lung_overlays_name_their_class_and_an_empty_prediction(
        tmp_path: Path) -> None:
    """predict --overlay of a binary or a lung model drew no legend, and an empty prediction's
    overlay was the input itself: the class is named under each image, beside its colour, and
    "none predicted" where the mask is empty."""
    from covseg.viz import CLASS_COLOURS, LUNG_COLOURS

    Image.fromarray(np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))).save(
        tmp_path / "slice.png")
    Image.fromarray(np.full((48, 64), 30, dtype=np.uint8)).save(tmp_path / "dark.png")
    for target, palette in (("infection", CLASS_COLOURS), ("lung", LUNG_COLOURS)):
        predictor = Predictor(_Bright(), num_classes=2, size=64, target=target)
        masks = covseg.predict(predictor, [tmp_path / "slice.png", tmp_path / "dark.png"],
                               tmp_path / target, overlay=True)
        assert [bool(np.asarray(Image.open(mask)).any()) for mask in masks] == [True, False]
        text_ends = []
        for name in ("slice", "dark"):
            with Image.open(tmp_path / target / "overlays" / f"{name}.png") as picture:
                shown = np.asarray(picture.convert("RGB"))
            assert shown.shape[0] == 48 + 4 + 14
            np.testing.assert_array_equal(shown[48 + 4 + 5, 6], palette[1])
            text_ends.append(int(np.nonzero((shown[48:] < 100).all(axis=2).any(axis=0))[0][-1]))
        assert text_ends[1] > text_ends[0] + 40  # "...: none predicted" after the name


def test_segment_refuses_a_lung_model_for_a_volume_as_predict_volumes_does(
        tmp_path: Path) -> None:
    """segment ran a lung model's volume through the infection clean-up, cutting its lungs to
    30 mm of thresholded ones without a word, where predict_volumes refuses a lung model."""
    lungs = Predictor(_Bright(), num_classes=2, size=64, target="lung")
    volume = np.full((4, 48, 64), -1000.0, dtype=np.float32)
    volume[:, 8:40, 8:56] = 40.0
    volume[:, 12:36, 12:28] = -850.0
    with pytest.raises(CovsegError, match=r"a lung model; for CT volumes pass it as "
                                          r"lung_model, with an infection model as model$"):
        covseg.segment(lungs, volume, spacing=(5.0, 0.7, 0.7))
    with pytest.raises(CovsegError, match="a lung model; for CT volumes"):
        covseg.segment(lungs, volume, spacing=(5.0, 0.7, 0.7), lung_model=lungs)
    sliced = covseg.segment(lungs, np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8))
    assert sliced.shape == (48, 64) and 0 < sliced.sum() < sliced.size  # 2D: its lungs


def test_lung_model_overlays_fill_lungs_in_the_lung_colour(tmp_path: Path) -> None:
    """A lung model's overlays filled the lungs in infection's red, with no legend."""
    from covseg.viz import LUNG_COLOURS
    from covseg.viz import overlay as overlay_image

    ramp = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))
    Image.fromarray(ramp).save(tmp_path / "slice.png")
    predictor = Predictor(_Bright(), num_classes=2, size=64, target="lung")
    covseg.predict(predictor, tmp_path / "slice.png", tmp_path / "out", overlay=True)
    with Image.open(tmp_path / "out" / "overlays" / "slice.png") as picture:
        shown = np.asarray(picture.convert("RGB"))
    lungs = (np.asarray(Image.open(tmp_path / "out" / "slice.png")) > 0).astype(np.int64)
    assert shown.shape == (48 + 4 + 14, 64, 3) and 0 < lungs.sum() < lungs.size  # its legend
    np.testing.assert_allclose(shown[:48], overlay_image(ramp / 255.0, lungs,
                                                         palette=LUNG_COLOURS), atol=1)
    assert (shown[:48][lungs > 0, 1] > shown[:48][lungs > 0, 0]).all()  # green, not red


def test_a_cascade_whose_lung_run_is_gone_is_refused_before_any_image(tmp_path: Path) -> None:
    """predict on 2D images read the images before it found the cascade's lung run gone: a
    folder whose first images could not be predicted (a label mask, a corrupt file) got each
    one's reading error in predict.json and "2 of 2 images could not be predicted", not the
    refusal that CT volumes get once before any study."""
    from covseg.cascade import LungGuide

    (tmp_path / "in").mkdir()
    Image.fromarray(np.where(np.eye(48, 64) > 0, 255, 0).astype(np.uint8)).save(
        tmp_path / "in" / "a_mask.png")
    (tmp_path / "in" / "b_corrupt.png").write_bytes(b"not a png")
    cascade = Predictor(_Bright(), num_classes=2, size=64, target="infection",
                        guide=LungGuide(str(tmp_path / "lungrun")))
    gone = re.escape(f"this cascade model takes its lung channel from the lung run "
                     f"{tmp_path / 'lungrun'}, which is not there (moved or deleted?)")
    with pytest.raises(CovsegError, match=rf"^{gone}"):
        covseg.predict(cascade, tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _seed(seed: int) -> None:
    """Seed numpy's, Python's and torch's global generators with ``seed``."""
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


def _draws(seed: int | None = None) -> tuple[float, float, float]:
    """The next number of each global generator, after seeding them all with ``seed`` if one
    is given."""
    if seed is not None:
        _seed(seed)
    return np.random.rand(), random.random(), torch.rand(1).item()


def test_training_leaves_the_callers_generators_as_they_were(tmp_path: Path,
                                                             synthetic_folder: Path) -> None:
    """train reseeded random, numpy and torch every epoch and left them there: two scripts
    seeded differently drew the same numbers after a covseg.train call."""
    after = []
    for seed in (123, 999):
        np.random.seed(seed)
        random.seed(seed)
        torch.manual_seed(seed)
        covseg.train(synthetic_folder, tmp_path / f"run{seed}", **TINY)
        after.append((np.random.rand(), random.random(), torch.rand(1).item()))
    assert after == [_draws(123), _draws(999)]


@pytest.mark.parametrize("name", [
    "load_predictor", "segment", "segment volume", "predict", "predict_volumes",
    pytest.param("export", marks=NEEDS_ONNX), "covseg predict"])
def test_inference_leaves_the_callers_generators_as_they_were(
        name: str, tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """Loading a model built its network, whose initial weights drew from torch's global
    generator: a script that seeded torch, segmented and then drew got other numbers than one
    that did not segment (covseg predict, segment, load_predictor, predict_volumes, export)."""
    from covseg.cli import main

    image = next((synthetic_folder / "images").glob("*.npy"))
    volume = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.full((16, 16, 4), -1000.0, np.float32), np.eye(4)), str(volume))
    calls: dict[str, Callable[[], object]] = {
        "load_predictor": lambda: covseg.load_predictor(tiny_run),
        "segment": lambda: covseg.segment(tiny_run, np.load(image)),
        "segment volume": lambda: covseg.segment(tiny_run, np.full((4, 16, 16), -1000.0),
                                                 spacing=(5.0, 1.0, 1.0)),
        "predict": lambda: covseg.predict(tiny_run, image, tmp_path / "api"),
        "predict_volumes": lambda: covseg.predict_volumes(tiny_run, volume, tmp_path / "volumes"),
        "export": lambda: covseg.export(tiny_run, tmp_path / "model.onnx"),
        "covseg predict": lambda: main(["predict", str(image), "--model", str(tiny_run),
                                        "--out", str(tmp_path / "cli")]),
    }
    _seed(7)
    calls[name]()
    assert _draws() == _draws(7), name


def test_segment_leaves_what_another_thread_draws_meanwhile(
        monkeypatch: pytest.MonkeyPatch, tiny_run: Path, synthetic_folder: Path) -> None:
    """Every API function gave the global generators back, when it ended, as they were at its
    start: a segment call in one thread rewound what another thread drew meanwhile, which then
    drew the same numbers again (the probe: 1,455 of 2,737 draws repeated beside a loop of
    segment calls)."""
    predictor = covseg.load_predictor(tiny_run)
    image = np.load(next((synthetic_folder / "images").glob("*.npy")))
    inside, drawn = threading.Event(), threading.Event()
    predict_labels = predictor.predict_labels

    def held(images: list[np.ndarray]) -> list[np.ndarray]:
        inside.set()
        drawn.wait(60)
        return predict_labels(images)

    monkeypatch.setattr(predictor, "predict_labels", held)
    _draws_kept_beside(lambda: covseg.segment(predictor, image), inside, drawn)


def _draws_kept_beside(call: Callable[[], object], inside: threading.Event,
                       drawn: threading.Event) -> None:
    """Run ``call`` in a thread, which sets ``inside`` and waits for ``drawn`` midway, drawing in
    this thread meanwhile: this thread's draws, during the call and after it, are those that a
    seed gives with no call made."""
    returned: list[object] = []
    thread = threading.Thread(target=lambda: returned.append(call()))
    expected = [_draws(7), _draws()]
    _seed(7)
    thread.start()
    assert inside.wait(60)
    drawn_meanwhile = _draws()
    drawn.set()
    thread.join()
    assert returned
    assert [drawn_meanwhile, _draws()] == expected


def test_models_leaves_the_generators_and_what_another_thread_draws_meanwhile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """covseg.models gave the global generators back, when it ended, as they were at its start:
    a draw another thread made while it listed the models was rewound, and drawn again. Only
    building each network draws, and torch's generator is given back after each build."""
    profile = importlib.import_module("covseg.models.profile")
    _seed(7)
    covseg.models()
    assert _draws() == _draws(7)
    inside, drawn = threading.Event(), threading.Event()
    model_options = profile.model_options

    def held(name: str) -> dict[str, object]:
        if not inside.is_set():
            inside.set()
            drawn.wait(60)
        return model_options(name)

    monkeypatch.setattr(profile, "model_options", held)
    _draws_kept_beside(covseg.models, inside, drawn)


def test_numpys_numbers_are_taken_as_the_numbers_they_are(tmp_path: Path, tiny_run: Path,
                                                          synthetic_folder: Path) -> None:
    """np.int64(4) was refused as "must be a whole number" (np.float32 as "a number"), and,
    once taken, reached torch's DataLoader and random.seed, which take Python's numbers only."""
    predictor = covseg.load_predictor(tiny_run, batch_size=np.int64(4),
                                      threshold=np.float32(0.25))
    assert (predictor.batch_size, predictor.threshold) == (4, 0.25)
    assert type(predictor.batch_size) is int
    grid = covseg.visualize(synthetic_folder, tmp_path / "v.png", n=np.int64(3))
    assert grid.is_file()
    recipe = {**TINY, "epochs": np.int64(1), "batch_size": np.int32(4), "seed": np.int64(3),
              "lr": np.float64(2e-3), "model_options": {"width": np.int64(4)}}
    metrics = covseg.train(synthetic_folder, tmp_path / "run", **recipe)
    assert metrics["epochs"] == 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (config["epochs"], config["batch_size"], config["seed"]) == (1, 4, 3)
    assert config["model_options"]["width"] == 4


def test_api_refusals_name_keywords_not_command_line_flags(tmp_path: Path, tiny_run: Path
                                                           ) -> None:
    """Refusals from an API call named the CLI's flags ("--n must be positive", "drop --hu no
    (or pass --hu yes)", "--lung-margin-mm must be ..."), which a notebook user never typed:
    they now name the keyword (``n``, ``hu="no"``); the CLI still names its flags
    (test_cli's refusals)."""
    predictor, volume = covseg.load_predictor(tiny_run), np.full((2, 16, 16), -1000.0)
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: covseg.visualize("synthetic", tmp_path / "v.png", n=0),
         "n must be positive, got 0"),
        (lambda: covseg.segment(predictor, volume, spacing=(1, 1, 1), lung_margin_mm=-1.0),
         "lung_margin_mm must be a finite number >= 0, got -1"),
        (lambda: covseg.segment(predictor, volume - 500.0, spacing=(1, 1, 1), hu="no"),
         ("the array: hu=\"no\" expects grey values 0..255, but values -1500..-1500 look like "
          "Hounsfield units, not grey levels; drop hu=\"no\" (or pass hu=\"yes\") to read them "
          "as HU")),
        (lambda: covseg.quantify(tmp_path, tmp_path / "q", lungs=tmp_path / "none.nii.gz"),
         f"lungs=\"{tmp_path / 'none.nii.gz'}\": no such file or folder; check the path"),
    ]
    for call, message in calls:
        with pytest.raises(CovsegError) as raised:
            call()
        assert str(raised.value) == message


EMPTY_ARGUMENTS: list[tuple[Callable[[Given], object], str]] = [
    (lambda g: covseg.load_dataset(""), "path is empty; give a path"),
    (lambda g: covseg.train("", "e/run", **TINY), "data is empty; give a path"),
    (lambda g: covseg.cross_validate("", "e/cv", folds=2, **TINY), "data is empty; give a path"),
    (lambda g: covseg.compare("", ["unet", "fcn"], "e/cmp", folds=2), "data is empty; give a "),
    (lambda g: covseg.visualize("", "e/v.png"), "data is empty; give a path"),
    (lambda g: covseg.train(g.data, "e/run", **{**TINY, "lung_guide": ""}),
     "lung_guide is empty; give it a value (for a path, \".\" is the current folder)"),
    (lambda g: covseg.train(g.data, "e/run", **{**TINY, "model": "unet++",
                                                "model_options": {"weights": ""}}),
     "model_options['weights'] is empty; give it a value"),
    (lambda g: covseg.predict(g.run, [g.image, ""], "e/p"), "inputs[1] is empty; give a path"),
    (lambda g: covseg.segment(g.predictor, g.volume, spacing=(1, 1, 1), hu=""),
     "hu is empty; give it a value"),
]


@pytest.mark.parametrize(("call", "message"), EMPTY_ARGUMENTS,
                         ids=[message[:40] for _, message in EMPTY_ARGUMENTS])
def test_an_empty_str_is_refused_first_wherever_it_is_given(
        call: Callable[[Given], object], message: str, tmp_path: Path, tiny_run: Path,
        synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty path is the current folder: ``load_dataset("")`` read it, ``train("", out)``
    with out below it said out "lies in the data folder ," (out was checked first), and
    ``lung_guide=""`` and ``model_options={"weights": ""}`` failed on the cwd as a checkpoint
    and a folder."""
    given = Given(tmp_path, tiny_run, synthetic_folder)
    shutil.copytree(synthetic_folder, tmp_path / "cwd")  # a data folder as the current one
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(CovsegError, match=f"^{re.escape(message)}") as raised:
        call(given)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "cwd" / "e").exists(), "refused before writing"


def test_an_empty_lung_guide_or_weights_is_refused_outside_the_api_too() -> None:
    """A TrainConfig built by hand resolved lung_guide="" to the current folder, and the
    registry's weights="" named it a folder ("., a folder, not a weights file")."""
    from covseg.config import TrainConfig
    from covseg.models.pretrained import weights_path

    with pytest.raises(CovsegError, match=r"^--lung-guide is empty; give none, threshold or "):
        TrainConfig(lung_guide="").check_types()
    with pytest.raises(CovsegError, match=r"^weights is empty; give the path of a state dict "):
        weights_path("")


def test_a_float32_setting_is_the_number_it_shows(tmp_path: Path, tiny_run: Path,
                                                  synthetic_folder: Path) -> None:
    """np.float32(0.3) was recorded as 0.30000001192092896, and the same setting given then as
    0.3 was refused as another ("threshold: 0.30000001192092896 -> 0.3"); a float64 or Python
    float is recorded as it was."""
    from covseg.config import TrainConfig, python_numbers

    assert python_numbers([np.float32(0.4), np.float16(0.1), {"lr": np.float32(3e-3)}]) == [
        0.4, 0.1, {"lr": 0.003}]
    values = np.random.default_rng(0).normal(size=1000) * 10.0 ** np.arange(-10, 10).repeat(50)
    assert [python_numbers(v) for v in values] == values.tolist()  # float64: unchanged, bitwise
    assert python_numbers(0.30000001192092896) == 0.30000001192092896
    assert TrainConfig(lr=np.float32(0.003), threshold=np.float32(0.4)).record()["lr"] == 0.003
    images = [synthetic_folder / "images" / name for name in
              sorted(p.name for p in (synthetic_folder / "images").iterdir())[:2]]
    covseg.predict(tiny_run, images, tmp_path / "p", threshold=np.float32(0.3))
    record = json.loads((tmp_path / "p" / "predict.json").read_text())
    assert record["model"]["threshold"] == 0.3
    masks = covseg.predict(tiny_run, images, tmp_path / "p", threshold=0.3)  # the same setting
    assert len(masks) == 2
    covseg.train(synthetic_folder, tmp_path / "run", **{**TINY, "epochs": 1},
                 lr=np.float32(0.003))
    metrics = covseg.train(synthetic_folder, tmp_path / "run", resume=True,
                           **{**TINY, "epochs": 1}, lr=0.003)
    assert metrics["epochs"] == 1


def test_a_window_is_taken_as_a_numpy_array_of_two_numbers(tmp_path: Path,
                                                           synthetic_folder: Path) -> None:
    """window=np.array([-1000, 400]) was refused as "must be two numbers", while spacing and
    direction take arrays."""
    from covseg.config import TrainConfig

    data = covseg.load_dataset(synthetic_folder, window=np.array([-1000, 400]))
    assert data.reading()["window"] == (-1000.0, 400.0)
    config = TrainConfig(window=np.array([-1000.0, 400.0], dtype=np.float32))
    assert config.window == (-1000.0, 400.0) and config.record()["window"] == [-1000.0, 400.0]
    grid = covseg.visualize(synthetic_folder, tmp_path / "v.png", n=2,
                            window=np.array([-1000, 400]))
    assert grid.is_file()


def test_segment_reads_a_nifti_pair_as_the_same_nifti_image(tmp_path: Path,
                                                            tiny_run: Path) -> None:
    """A nibabel Nifti1Pair (.img/.hdr) was refused as "cannot segment a Nifti1Pair: give ... a
    nibabel image"; it is read as the .nii of the same data is. Other nibabel images (MGH) are
    refused naming the NIfTI images taken and how to convert one."""
    nii = nib.load(shared("ct-samples", "example_ct_sm.nii.gz"))
    nib.save(nib.Nifti1Pair(np.asarray(nii.dataobj), nii.affine, nii.header), tmp_path / "ct.img")
    pair = nib.load(tmp_path / "ct.img")
    assert type(pair) is nib.Nifti1Pair
    predictor = covseg.load_predictor(tiny_run)
    from_nii = covseg.segment(predictor, nii)
    assert from_nii.any(), "the tiny model marks voxels of this CT, so equality says something"
    np.testing.assert_array_equal(covseg.segment(predictor, pair), from_nii)
    mgh = nib.MGHImage(np.asarray(nii.dataobj, dtype=np.float32), nii.affine)
    with pytest.raises(CovsegError, match=r"^cannot segment a MGHImage: give a 2D slice or a "
                                          r"\(z, y, x\) volume as a numpy array, a SimpleITK "
                                          r"image or a nibabel NIfTI image \(Nifti1Image, "
                                          r"Nifti2Image or an \.img/\.hdr Nifti1Pair\) "
                                          r"\(nibabel\.Nifti1Image\(image\.get_fdata\(\), "
                                          r"image\.affine\) converts it\)$"):
        covseg.segment(predictor, mgh)


def test_only_pngs_holding_mask_values_count_as_unrecorded_masks(tmp_path: Path) -> None:
    """The masks 2D predict writes, 0/255 (binary) or class indices, count as masks of an
    earlier covseg; a bitmap or a text file named .png, a figure, a grey picture, and the call's
    own input images do not (reading them failed, or refused a folder holding no masks)."""
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(out / "binary.png")
    Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8)).save(out / "classes.png")
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(out / "bitmap.png", format="BMP")
    (out / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((2, 2, 4), np.uint8)).save(out / "figure.png")
    Image.fromarray(np.array([[0, 128]], np.uint8)).save(out / "grey.png")
    assert [path.name for path in sorted(out.iterdir()) if api._is_mask_png(path)] == [
        "binary.png", "classes.png"]
    api._refuse_unrecorded_masks(out, api._Planned.of([out / "binary.png", out / "classes.png"],
                                                      out), {}, False, set())
    with pytest.raises(CovsegError, match=r"out holds 1 PNG \(first: binary\.png\)"):
        api._refuse_unrecorded_masks(out, api._Planned.of([out / "classes.png"], out), {}, False,
                                     set())


def test_predict_records_the_model_as_it_was_when_the_call_began(
        tmp_path: Path, tiny_run: Path) -> None:
    """A best.pt its run replaced during a predict call was hashed anew at the call's end: the
    record named weights that made none of its masks. It keeps the model taken at the start."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    predictor = api.load_predictor(run)
    (tmp_path / "out").mkdir()
    record = api._PredictRecord(tmp_path / "out", {}, predictor, [])
    before = record.model[api.MODEL_SHA256]
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes() + b"retrained")
    record.write({}, 0.0, finished=True)
    written = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert written["model"][api.MODEL_SHA256] == before


def test_data_info_shows_its_data_fingerprint_being_taken(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """data info's fingerprint (4.5 s for 3,520 slices) showed nothing after the reading bar;
    a log (captured stderr) is written every LOGGED_EVERY_S, 0 here."""
    monkeypatch.setattr(progress, "LOGGED_EVERY_S", 0.0)
    covseg.data_info("synthetic")
    assert "data fingerprint: 100%" in capsys.readouterr().err


def test_data_info_counts_a_volumes_slices_as_one_case(tmp_path: Path) -> None:
    """Cases are image files: a volume layout's every slice counted as a case (2 volumes of 3
    slices gave 6 cases)."""
    for name in ("a", "b"):
        for folder, values in (("images", np.full((3, 16, 16), -800)),
                               ("masks", np.zeros((3, 16, 16)))):
            (tmp_path / folder).mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(values.T.astype(np.int16), np.eye(4)),
                     tmp_path / folder / f"{name}.nii.gz")
    info = covseg.data_info(tmp_path)
    assert (info["slices"], info["cases"], info["patients"]) == (6, 2, 2)


def test_a_folder_of_2d_slices_is_not_searched_below_its_top_for_gzipped_dicom(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2D predict lists a folder's own files, yet its "nothing to read" refusal walked the whole
    tree for gzip-compressed DICOM (9.5 s for /usr) and named slices far below what it reads:
    it looks at the top level only (read_volume still searches sub-folders, test_dicom)."""
    import gzip

    from covseg.io import dicom
    from tests.io.helpers import phantom, synthetic_series

    for path in synthetic_series(tmp_path / "series", phantom()):
        (tmp_path / "study" / "deep").mkdir(parents=True, exist_ok=True)
        (tmp_path / "study" / "deep" / f"{path.name}.gz").write_bytes(
            gzip.compress(path.read_bytes()))
    (tmp_path / "study" / "notes.txt").write_text("no scan")
    looked: list[Path] = []
    sniff = dicom.is_gzipped_dicom
    monkeypatch.setattr(dicom, "is_gzipped_dicom", lambda path: looked.append(path) or sniff(path))
    with pytest.raises(CovsegError, match=r"^\S*study: no images or CT volumes in this folder; "):
        api.collect_inputs([tmp_path / "study"])
    assert looked and {path.parent for path in looked} == {tmp_path / "study"}, looked


@pytest.mark.parametrize(("command", "full", "advice"), [
    ("train", "", "without resume=True (nothing was saved: {out} does not exist)"),
    ("cross_validate", "fold_1", "with resume=True to continue")])
def test_a_full_disk_says_resume_only_where_the_run_leaves_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path, command: str,
        full: str, advice: str) -> None:
    """A full disk while a run saved its first epoch said to rerun with --resume, and that
    rerun was refused: the stopped run had removed its folder (nothing to resume). A
    cross-validation whose fold 0 is saved keeps its folder, and goes on with --resume."""
    real = torch.save

    def save(payload: object, handle: Any) -> None:
        if full in handle.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(payload, handle)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "r"
    kind = {"cross_validate": {"folds": 2}}.get(command, {})
    with pytest.raises(CovsegError) as caught:
        getattr(covseg, command)(synthetic_folder, out, **{**TINY, "epochs": 1}, **kind)
    assert str(caught.value).endswith(advice.format(out=out))
    assert out.exists() == (command == "cross_validate")


def test_a_slicer_segmentation_given_to_predict_is_refused_before_anything_is_written(
        tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """predict of a .seg.nrrd given by name wrote a summary.csv of its one failed study, exit 1:
    refused in one line, nothing written, as a .raw data file is."""
    segmentation = tmp_path / "m.seg.nrrd"
    sitk.WriteImage(sitk.Image(8, 8, 4, sitk.sitkUInt8), str(segmentation))
    capsys.readouterr()
    assert main(["predict", str(segmentation), "--model", str(tiny_run), "--out",
                 str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"covseg: error: {segmentation}: a 3D Slicer "
                                       "segmentation (.seg.nrrd: labels), not a CT; give the CT "
                                       "volume it was drawn on\n")
    assert not (tmp_path / "out").exists()


def test_a_ctrl_c_python_drops_as_a_montage_is_drawn_stops_the_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """A notebook's Interrupt landing in a finaliser as matplotlib drew a study's montage (its
    weakref callbacks) was printed as "Exception ignored" and dropped: quantify (and
    predict_volumes) ran the other studies and returned success (6 of 20 Interrupts in a
    probe script outside the repository).
    It now stops before the next study, as the CLI does; SIGTERM is left as the caller had it,
    and Ctrl-C's handler is the caller's again after the call."""
    for name in ("a", "b", "c"):
        synthetic_study(tmp_path / "in", name)
    report = importlib.import_module("covseg.report")
    real = report.write_montage
    sigterm_during: list[object] = []

    def montage_then_ctrl_c(*args: Any, **kwargs: Any) -> Path:
        sigterm_during.append(signal.getsignal(signal.SIGTERM))
        drawn = real(*args, **kwargs)
        StopWhenCollected(signal.SIGINT)
        return drawn

    monkeypatch.setattr(report, "write_montage", montage_then_ctrl_c)
    before = {stop: signal.getsignal(stop) for stop in (signal.SIGINT, signal.SIGTERM)}
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        covseg.quantify(tmp_path / "in" / "masks", out)
    assert sigterm_during == [before[signal.SIGTERM]]  # one study, then stopped
    assert sorted(path.name for path in out.iterdir() if path.is_dir()) == ["a"]
    assert {stop: signal.getsignal(stop) for stop in before} == before
    assert "Exception ignored" not in capfd.readouterr().err


def test_a_ctrl_c_python_drops_in_2d_predict_stops_it_after_the_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path,
        tiny_run: Path) -> None:
    """A Ctrl-C that Python dropped in a finaliser as predict wrote a mask is raised after
    that chunk of images (``batch_size`` of them), not after all of them: one mask of three."""
    real = api.write_png
    dropped: list[Path] = []

    def written_then_ctrl_c(*args: Any, **kwargs: Any) -> Path:
        path = real(*args, **kwargs)
        if not dropped:
            dropped.append(path)
            StopWhenCollected(signal.SIGINT)
        return path

    monkeypatch.setattr(api, "write_png", written_then_ctrl_c)
    images = sorted((synthetic_folder / "images").glob("*.npy"))[:3]
    out = tmp_path / "pred"
    with pytest.raises(KeyboardInterrupt):
        covseg.predict(tiny_run, images, out, batch_size=1)
    assert len(images) == 3
    assert sorted(out.glob("*.png")) == dropped


def test_api_calls_in_a_thread_run_with_the_handlers_left_alone(tmp_path: Path) -> None:
    """Signal handlers can be set from the main thread alone: a call from another thread
    (a notebook's worker) runs, recording no stop, and sets none. A guard: the code before
    the API recorded stops set no handlers either; this keeps the recording off other threads."""
    synthetic_study(tmp_path / "in", "a")
    before = {stop: signal.getsignal(stop) for stop in (signal.SIGINT, signal.SIGTERM)}
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(
        covseg.quantify(tmp_path / "in" / "masks", tmp_path / "out")), daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the call in a thread did not end"
    assert [getattr(result, "done", result) for result in results] == [1]
    assert {stop: signal.getsignal(stop) for stop in before} == before


def _one_epoch_logged(out: Path) -> bool:
    """Whether the run ``out`` logged its first epoch alone."""
    return len((out / "log.csv").read_text().splitlines()) == 2  # its header and epoch 1


def _first_member_alone(out: Path) -> bool:
    """Whether the ensemble ``out`` finished its first member alone."""
    return ((out / "member0-unet" / "metrics.json").is_file()
            and not (out / "member1-unet").exists())


@pytest.mark.parametrize(("model", "where", "stopped"), [
    ("unet", "_bar_postfix", _one_epoch_logged),  # as an epoch ends
    ("unet,unet", "_finish", _first_member_alone)])  # as a member ends
def test_a_ctrl_c_python_drops_in_training_stops_it_at_the_next_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path, model: str,
        where: str, stopped: Callable[[Path], bool]) -> None:
    """A Ctrl-C that Python dropped in a finaliser during covseg.train was lost: training's
    own checks after each epoch and member saw nothing recorded outside the CLI, and the run
    trained on and returned its metrics. It now stops at the next check, as under the CLI,
    and a training in another thread is taken after it."""
    training = importlib.import_module("covseg.train")  # covseg.train is the API function
    real = getattr(training, where)

    def ctrl_c_dropped_first(*args: Any, **kwargs: Any) -> object:
        StopWhenCollected(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, where, ctrl_c_dropped_first)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # an ensemble's members one after the other, in this process
    out = tmp_path / "run"
    try:
        with pytest.raises(KeyboardInterrupt):
            covseg.train(synthetic_folder, out, **{**TINY, "model": model, "epochs": 2})
    finally:
        torch.set_num_threads(threads)
    assert stopped(out)
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(api, "_train", lambda *args, **kwargs: {})
    results: list[object] = []  # another thread: an RLock left held would let this one in
    other = threading.Thread(target=lambda: results.append(
        covseg.train(synthetic_folder, tmp_path / "after", **TINY)), daemon=True)
    other.start()
    other.join(60)
    assert not other.is_alive(), "the training in another thread did not end"
    assert results == [{}]


@pytest.mark.parametrize("second", [
    lambda data, out: covseg.train(data, out, **TINY),
    lambda data, out: covseg.cross_validate(data, out, folds=2, **TINY),
    lambda data, out: covseg.compare(data, ["unet", "fcn"], out, folds=2, epochs=1),
    lambda data, out: covseg.demo(out, folds=2, epochs=1)],
    ids=["train", "cross_validate", "compare", "demo"])
def test_a_second_training_in_another_thread_is_refused_but_predictions_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path,
        tiny_run: Path, second: Callable[[Path, Path], object]) -> None:
    """Two trainings in threads of one process got other weights than each alone, without a
    word: training reseeds the process's random generators every epoch, and the first to end
    gave them back under the other (probe). The second is refused in one line, writing
    nothing; a prediction meanwhile runs, and a training after the first ends is taken."""
    started, ended = threading.Event(), threading.Event()

    def training(*args: Any, **kwargs: Any) -> dict[str, Any]:
        started.set()
        ended.wait(60)
        return {}

    monkeypatch.setattr(api, "_train", training)
    first = threading.Thread(target=covseg.train, args=(synthetic_folder, tmp_path / "first"),
                             kwargs=TINY)
    first.start()
    try:
        assert started.wait(60), "the first training did not start"
        with pytest.raises(CovsegError, match=(
                r"^\w+: another covseg training \(train, cross_validate, compare or demo\) is "
                r"running in another thread of this process, .* run them one after the other, "
                r"or in separate processes$")):
            second(synthetic_folder, tmp_path / "second")
        image = min((synthetic_folder / "images").glob("*.npy"))
        assert len(covseg.predict(tiny_run, image, tmp_path / "pred")) == 1
    finally:
        ended.set()
        first.join(60)
    assert not (tmp_path / "second").exists()
    assert covseg.train(synthetic_folder, tmp_path / "after", **TINY) == {}


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="no fork here (Windows)")
def test_a_process_forked_as_another_thread_trains_may_train(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path) -> None:
    """A process forked (multiprocessing's "fork", Linux's default before Python 3.14, and a
    ProcessPoolExecutor's) while another thread trained inherited the training lock held, with
    no thread in it to let it go: its every training was refused as one running "in another
    thread of this process", where the refusal advises separate processes. It trains."""
    monkeypatch.setattr(api, "_train", lambda *args, **kwargs: {})
    held, done = threading.Event(), threading.Event()

    def training() -> None:
        with api._trained_alone("train"):
            held.set()
            done.wait(60)

    first = threading.Thread(target=training)
    first.start()
    try:
        assert held.wait(60), "the first training did not start"
        exit_code = forked_exit_code(covseg.train, synthetic_folder, tmp_path / "child", **TINY)
    finally:
        done.set()
        first.join(60)
    assert exit_code == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here (Windows)")
def test_a_process_forked_inside_a_training_leaves_it_cleanly() -> None:
    """A child forked by the training's own thread (``os.fork``) that leaves the training's
    block lets go the lock it inherited held, not its own new one, which it does not hold."""
    pid = -1
    try:
        with api._trained_alone("train"):
            pid = os.fork()
    except BaseException:
        if pid == 0:
            os._exit(1)
        raise
    if pid == 0:
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
