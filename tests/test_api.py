"""The Python API (``import covseg``): the functions stay functions, and bad input is a one-line
:class:`CovsegError`, as on the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
