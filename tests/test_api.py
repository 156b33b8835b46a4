"""The Python API (``import covseg``): the functions stay functions, and bad input is a one-line
:class:`CovsegError`, as on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import covseg
from covseg.errors import CovsegError
from tests.test_quantify import synthetic_study


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
        assert record["settings"]["classes"] == "binary" and (out / "case" / "report.html").is_file()
    with pytest.raises(CovsegError, match=r"^unknown --classes value 'multi'; choose one of "
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
