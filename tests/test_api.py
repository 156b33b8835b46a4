"""The Python API (``import covseg``): the functions stay functions, and bad input is a one-line
:class:`CovsegError`, as on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
