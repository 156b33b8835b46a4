"""ONNX export and ONNX Runtime prediction without the optional ``onnx`` extra installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from covseg.cli import main
from covseg.errors import CovsegError
from covseg.export import OnnxNetwork, export_onnx


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_missing_onnx_packages_give_the_install_command(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_run: Path, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # an import of it now fails
    with pytest.raises(CovsegError, match=rf"need {module}: pip install 'covseg\[onnx\]'"):
        if module == "onnx":
            export_onnx(tiny_run, tmp_path / "model.onnx")
        else:
            OnnxNetwork(tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_missing_onnx_is_a_one_line_cli_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              tiny_run: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", "--model", str(tiny_run), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "covseg[onnx]" in err and "Traceback" not in err
