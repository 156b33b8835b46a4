"""benchmarks/multiscale.py and benchmarks/volume_memory.py, run tiny (the slow parts in-process)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Self

import pytest

from covseg import api

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import benchmarks/NAME.py as its command line does (its folder first on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_multiscale_scores_every_size_and_pair(tmp_path: Path, synthetic_folder: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """It stopped in a TypeError after predicting every fold at every size: it called
    cv_posthoc's ``dice_rows`` with ``threshold=``, which takes a decoder now. At the run's own
    size and threshold the figure is the cross-validation's own Dice."""
    run = tmp_path / "cv"
    summary = api.cross_validate(synthetic_folder, run, folds=2, epochs=1, size=32,
                                 batch_size=4, model="miniseg")
    multiscale = _script("multiscale", monkeypatch)
    out = tmp_path / "multiscale.json"
    assert multiscale.main([str(synthetic_folder), str(run), "--sizes", "32,48",
                            "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results) == ["32@0.4", "32@0.5", "48@0.4", "48@0.5", "32+48@0.4", "32+48@0.5"]
    assert all(0.0 <= dice <= 1.0 for dice in results.values())
    assert summary["config"]["threshold"] == 0.4
    assert results["32@0.4"] == pytest.approx(summary["pooled_per_case"]["dice"]["mean"])


class _InProcess:
    """multiprocessing's spawn context with a pool that runs its one task here."""

    def Pool(self, processes: int) -> Self:
        return self

    def apply(self, function: Any, args: tuple[Any, ...]) -> Any:
        return function(*args)

    def close(self) -> None:
        return None

    def join(self) -> None:
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        return None


def test_volume_memory_runs_with_its_default_untrained_unet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--model`` (the default) the study failed in the worker: the stand-in
    predictor had no ``source``, which predict_study records."""
    volume_memory = _script("volume_memory", monkeypatch)
    monkeypatch.setattr(volume_memory, "multiprocessing",
                        SimpleNamespace(get_context=lambda method: _InProcess()))
    out = tmp_path / "report.json"
    assert volume_memory.main(["--slices", "6", "--size", "64", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["model"].startswith("untrained MONAI UNet") and report["slices"] == 6
    assert report["s_per_slice"] == round(report["wall_s"] / 6, 3)
    assert report["lesion_ml"] >= 0.0 and report["peak_rss_mib"] > 0
