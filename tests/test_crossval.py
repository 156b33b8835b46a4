"""Cross-validation folds, summary and report, on the built-in generator's slices."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from covseg import api
from covseg.crossval import DEFAULT_FOLDS, make_folds, mean_over_folds
from covseg.data import load_dataset
from covseg.errors import CovsegError


def test_split_files_set_the_folds_and_another_count_is_refused(tmp_path: Path) -> None:
    """MosMed's train_new*.txt are its folds: --folds 5 on its 2 files must not run 2 quietly."""
    data = load_dataset("synthetic")
    cases = [s.case_id for s in data.samples]
    data.folds = [(cases[4:], cases[:4]), (cases[:4], cases[4:])]
    assert make_folds(data, None, 0) == (data.folds, "the data set's own 2 split files")
    assert make_folds(data, 2, 0)[0] == data.folds
    with pytest.raises(CovsegError, match="ships its own 2 folds .*pass --folds 2 or leave"):
        make_folds(data, 5, 0)
    with pytest.raises(CovsegError, match="ships its own 2 folds"):
        api.cross_validate(data, tmp_path / "cv", folds=3, model="unet")
    assert not (tmp_path / "cv").exists(), "refused before anything is written"
    data.folds = None
    assert len(make_folds(data, None, 0)[0]) == DEFAULT_FOLDS


def test_a_fold_that_tests_no_slices_leaves_its_metrics_undefined(tmp_path: Path,
                                                                 synthetic_folder: Path) -> None:
    """Its metrics were missing, so the summary lacked Dice and the CLI ended in a KeyError."""
    data = load_dataset(synthetic_folder)
    cases = [s.case_id for s in data.samples]
    data.folds = [(cases[2:], cases[:2]), (cases, [])]
    summary = api.cross_validate(data, tmp_path / "cv", epochs=1, size=64, batch_size=4,
                                 model="unet", model_options={"width": 4})
    assert math.isnan(summary["per_fold"][1]["dice"])
    written = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert written["per_fold"][1]["dice"] is None
    assert written["mean_std_over_folds"]["dice"]["mean"] == summary["per_fold"][0]["dice"]
    report = (tmp_path / "cv" / "report.md").read_text()
    assert "nan" not in report and "| 1 | 0 | – | – |" in report
    assert f"**{summary['per_fold'][0]['dice']:.3f} (1 of 2 folds)**" in report


@pytest.mark.parametrize("stats, text", [
    ({"mean": 0.5, "std": 0.1, "n": 3}, "0.500 ± 0.100"),
    ({"mean": 0.5, "std": 0.1, "n": 2}, "0.500 ± 0.100 (2 of 3 folds)"),
    ({"mean": 0.135, "std": math.nan, "n": 1}, "0.135 (1 of 3 folds)"),
    ({"mean": math.nan, "std": math.nan, "n": 0}, "–"),
])
def test_means_over_folds_say_over_how_many(stats: dict[str, float], text: str) -> None:
    """A metric undefined in some folds showed nan, or a mean over one fold as ± 0.000."""
    assert mean_over_folds(stats, 3) == text
