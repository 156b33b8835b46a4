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


@pytest.fixture(scope="module")
def tiny_cv(tmp_path_factory: pytest.TempPathFactory, synthetic_folder: Path) -> Path:
    """A 2-fold, 1-epoch MiniSeg cross-validation on the synthetic folder."""
    run = tmp_path_factory.mktemp("bench") / "cv"
    api.cross_validate(synthetic_folder, run, folds=2, epochs=1, size=32, batch_size=4,
                       model="miniseg")
    return run


def test_cv_posthoc_refuses_an_unknown_against_before_predicting(
        tiny_cv: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt ``--against`` was found only after every fold was predicted, and the error
    listed all ~700 variants on one line; now it stops at once, naming close matches."""
    cv_posthoc = _script("cv_posthoc", monkeypatch)
    with pytest.raises(SystemExit) as stop:
        cv_posthoc.main([str(synthetic_folder), str(tiny_cv), "--against", "cv|best.pt|none|t0.4"])
    message = str(stop.value.code)
    assert "predicted" not in capsys.readouterr().err
    assert "no such variant" in message and "'cv|best.pt|none+t0.4'" in message
    assert "\n" not in message and len(message) < 400


def test_cv_posthoc_names_are_known_before_predicting(
        tiny_cv: Path, synthetic_folder: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The names checked up front are exactly the table's, so a valid name still passes."""
    cv_posthoc = _script("cv_posthoc", monkeypatch)
    out = tmp_path / "posthoc.json"
    assert cv_posthoc.main([str(synthetic_folder), str(tiny_cv), "--json", str(out),
                            "--against", "cv|best.pt|none+t0.4"]) == 0
    results = json.loads(out.read_text())
    assert sorted(results) == sorted(cv_posthoc.variant_names([tiny_cv]))
    assert results["cv|best.pt|none+t0.4"]["vs_against"]["p_value"] == 1.0
