"""Model comparison: identical folds for every model, paired Wilcoxon test, report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from covseg import api
from covseg.cli import build_parser
from covseg.compare import check_specs, paired_wilcoxon, parse_model_spec, per_case_dice
from covseg.data import load_dataset
from covseg.errors import CovsegError


def test_parse_model_spec() -> None:
    assert parse_model_spec("unet") == ("unet", {})
    assert parse_model_spec("unet++:encoder=densenet201,width=8") == (
        "unet++", {"encoder": "densenet201", "width": 8})
    with pytest.raises(CovsegError):
        parse_model_spec("unet:width")
    assert parse_model_spec("miniseg:deep_supervision=true,width=1.5") == (
        "miniseg", {"deep_supervision": True, "width": 1.5})  # as --model-option reads them
    with pytest.raises(CovsegError, match="separated by spaces"):
        parse_model_spec("unet:width=8,")  # from `--models unet:width=8, miniseg`


def test_every_spec_is_checked_before_any_model_trains() -> None:
    with pytest.raises(CovsegError, match="'miniseg' has no option 'res_units'"):
        check_specs(["unet:width=8", "miniseg:res_units=3"])
    with pytest.raises(CovsegError, match="unknown model 'minseg'"):
        check_specs(["unet", "minseg"])
    with pytest.raises(CovsegError, match=r"every member of miniseg,unet, which mixes"):
        check_specs(["unet", "miniseg,unet:width=8"])
    check_specs(["unet:width=8", "miniseg,miniseg:width=1.5"])  # one architecture: options go


def test_one_model_named_alone_is_not_read_letter_by_letter(tmp_path: Path) -> None:
    """compare("synthetic", "unet") compared 'u', 'n', 'e', 't' ("unknown model 'u'"); a
    single name is a list of one, as covseg.predict reads a single path."""
    with pytest.raises(CovsegError, match="^compare needs at least two models"):
        api.compare("synthetic", "unet", tmp_path / "cmp", epochs=1)
    assert not (tmp_path / "cmp").exists()


def test_an_abbreviated_option_is_not_taken_for_another() -> None:
    """argparse took ``--model`` for ``--models`` and replaced the list of compared models."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "synthetic", "--models", "unet", "miniseg",
                                   "--model", "miniseg", "--out", "x"])


def test_paired_wilcoxon_against_hand_checked_values() -> None:
    baseline = {f"c{i}": 0.5 for i in range(8)}
    better = {f"c{i}": 0.5 + 0.01 * (i + 1) for i in range(8)}
    result = paired_wilcoxon(better, baseline)
    assert result["pairs"] == 8 and result["cases_better"] == 8
    # all 8 differences positive: exact two-sided p = 2 / 2**8
    assert result["p_value"] == pytest.approx(2 / 2**8)
    assert paired_wilcoxon(baseline, baseline)["p_value"] == 1.0
    two_tied = {**better, "c0": 0.5, "c1": 0.5}  # equal Dice: left out of the test, counted
    result = paired_wilcoxon(two_tied, baseline)
    assert (result["cases_better"], result["cases_worse"], result["cases_tied"]) == (6, 0, 2)
    assert result["p_value"] == pytest.approx(2 / 2**6)


def test_per_case_dice_reads_a_run_or_one_fold(tmp_path: Path) -> None:
    (tmp_path / "fold_0").mkdir()
    header = "case_id,patient_id,dice,iou\n"
    (tmp_path / "per_case.csv").write_text(header + "a,a,0.5,0.3\nb,b,0.75,0.6\n")
    (tmp_path / "fold_0" / "test_per_case.csv").write_text(header + "a,a,0.25,0.1\n")
    assert per_case_dice(tmp_path) == {"a": 0.5, "b": 0.75}
    assert per_case_dice(tmp_path / "fold_0", "test_per_case.csv") == {"a": 0.25}


def test_compare_two_models_on_the_same_folds(tmp_path: Path, synthetic_folder: Path) -> None:
    result = api.compare(synthetic_folder, ["unet:width=4", "miniseg"], tmp_path, folds=2,
                         epochs=1, size=64, batch_size=4)
    folds = [json.loads((tmp_path / name / "summary.json").read_text())["per_fold"]
             for name in ("unet_width-4", "miniseg")]
    assert [f["test_cases"] for f in folds[0]] == [f["test_cases"] for f in folds[1]]
    candidate = result["models"][1]
    assert candidate["wilcoxon_vs_baseline"]["pairs"] == 16
    assert candidate["parameters"] > 0 and candidate["gflops_per_slice"] > 0
    miniseg_summary = json.loads((tmp_path / "miniseg" / "summary.json").read_text())
    assert candidate["train_seconds"] == miniseg_summary["train_seconds"] > 0
    assert (tmp_path / "comparison_boxplot.png").is_file()
    report = (tmp_path / "comparison.md").read_text()
    assert "paired Wilcoxon" in report and "2-fold cross-validation, identical folds" in report
    recipe = next(line for line in report.splitlines() if line.startswith("- Recipe"))
    assert "'epochs': 1" in recipe and "'size': 64" in recipe and "'batch_size': 4" in recipe


def test_a_cascade_costs_its_lung_channel_and_split_files_are_named(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """The cost columns profiled one input channel while a lung-guided run takes two (165,265
    parameters reported against 165,337 trained), and the report did not say that the folds
    were the data's own split files."""
    data = load_dataset(synthetic_folder)
    cases = [s.case_id for s in data.samples]
    data.folds = [(cases[8:], cases[:8]), (cases[:8], cases[8:])]  # as MosMed's files give
    result = api.compare(data, ["unet:width=4", "miniseg"], tmp_path, epochs=1, size=64,
                         batch_size=4, lung_guide="threshold")
    for row, folder in zip(result["models"], ("unet_width-4", "miniseg"), strict=True):
        trained = json.loads((tmp_path / folder / "fold_0" / "config.json").read_text())
        assert row["parameters"] == trained["parameters"]
    report = (tmp_path / "comparison.md").read_text()
    assert ("2-fold cross-validation on the data set's own split files (train_new*.txt / "
            "valid_new*.txt), identical folds") in report
    assert result["split_files"] is True
