"""Refusals name an option as the running command spells it: the flag (``--out``) on the command
line, the keyword (``out``) from the Python API, whose user never typed a flag
(:func:`covseg.provenance.option_name`). Each family of refusal is checked both ways: the API
call, and the same mistake through ``main([...])``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import covseg
from covseg.cli import main
from covseg.config import check_kind
from covseg.errors import CovsegError
from covseg.provenance import cli_command, invoked_as

TINY_FOLD = ["--size", "64", "--batch-size", "4", "--model", "unet", "--model-option", "width=4"]
"""A tiny cross-validation's recipe as flags, :data:`TINY` as keywords."""
TINY = {"size": 64, "batch_size": 4, "model": "unet", "model_options": {"width": 4}}


def api_error(call: object, *args: object, **kwargs: object) -> str:
    """The one-line refusal of the API function ``call`` given ``args`` and ``kwargs``."""
    with pytest.raises(CovsegError) as raised:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(raised.value)


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one-line refusal ``covseg ARGV`` printed (exit 2) last, after any warnings, without
    its ``covseg: error:``."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    *warnings, error = capsys.readouterr().err.splitlines()
    assert error.startswith("covseg: error: "), error
    assert all(line.startswith("covseg: warning: ") for line in warnings), warnings
    return error.removeprefix("covseg: error: ")


def test_option_types_and_ranges_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """config's checks (a whole number, a seed, a threshold) said --fold, --seed, --threshold
    to a notebook calling covseg.cross_validate(fold=True) or covseg.train(seed=-5)."""
    assert api_error(covseg.cross_validate, "synthetic:1", tmp_path / "cv", folds=2,
                     fold=True) == "fold must be a whole number, got True"
    with (invoked_as(cli_command(["cv", "--fold", "x"])),  # argparse refuses it first
          pytest.raises(CovsegError, match="^--fold must be a whole number, got 'x'$")):
        check_kind("fold", "x", [int])
    data = str(synthetic_folder)
    assert api_error(covseg.train, data, tmp_path / "r", seed=-5, **TINY) == (
        "seed must be a non-negative integer, got -5")
    assert cli_error(capsys, "train", data, "--out", str(tmp_path / "r"), "--seed", "-5") == (
        "--seed must be a non-negative integer, got -5")
    assert api_error(covseg.train, data, tmp_path / "r", threshold=1.5, **TINY) == (
        "threshold must lie strictly between 0 and 1, got 1.5")
    assert cli_error(capsys, "train", data, "--out", str(tmp_path / "r"), "--threshold",
                     "1.5") == "--threshold must lie strictly between 0 and 1, got 1.5"
    assert not (tmp_path / "r").exists() and not (tmp_path / "cv").exists()


def test_ray_options_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cross_validate(fold=0, ray=...) and cpus_per_fold without ray said --fold, --ray and
    --cpus-per-fold; refused before Ray is joined or the data are read."""
    out = str(tmp_path / "cv")
    assert api_error(covseg.cross_validate, "synthetic:1", out, folds=2, fold=0,
                     ray="local") == ("fold runs one fold here and ray runs every fold on Ray; "
                                      "give one of them")
    assert cli_error(capsys, "cv", "synthetic:1", "--out", out, "--folds", "2", "--fold", "0",
                     "--ray", "local") == ("--fold runs one fold here and --ray runs every fold "
                                           "on Ray; give one of them")
    assert api_error(covseg.cross_validate, "synthetic:1", out, folds=2, cpus_per_fold=2) == (
        "cpus_per_fold sizes the Ray tasks of ray; give ray too")
    assert cli_error(capsys, "cv", "synthetic:1", "--out", out, "--folds", "2",
                     "--cpus-per-fold", "2") == (
        "--cpus-per-fold sizes the Ray tasks of --ray; give --ray too")
    assert not (tmp_path / "cv").exists()


def test_an_out_inside_the_data_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """refuse_inside said "--out DATA/run: ...; pick an --out outside it" from the API too."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_folder, data)
    out = data / "run"
    assert api_error(covseg.train, data, out, epochs=1, **TINY) == (
        f'out="{out}": lies in the data folder {data}, whose images and masks it could '
        "overwrite; pick an out outside it")
    assert cli_error(capsys, "train", str(data), "--out", str(out), "--epochs", "1") == (
        f"--out {out}: lies in the data folder {data}, whose images and masks it could "
        "overwrite; pick an --out outside it")
    assert not out.exists()


def test_a_fold_count_against_the_split_files_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """make_folds said "pass --folds 2 or leave --folds out" to covseg.cross_validate(folds=3)."""
    from tests.data.test_layouts import _mosmed_2d

    (tmp_path / "mosmed").mkdir()
    root = _mosmed_2d(tmp_path / "mosmed")
    out = tmp_path / "cv"
    told = (f"{root} ships its own 2 folds (split files train_new*.txt / valid_new*.txt), "
            "which cv uses; pass ")
    assert api_error(covseg.cross_validate, root, out, folds=3, epochs=1, **TINY) == (
        told + "folds=2 or leave folds out")
    assert cli_error(capsys, "cv", str(root), "--out", str(out), "--folds", "3", "--epochs",
                     "1", *TINY_FOLD) == told + "--folds 2 or leave --folds out"
    assert not out.exists()


def test_work_already_there_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """train's unresumed() said "pass --resume ... or pick a new --out" to the API."""
    finished = tmp_path / "cv" / "fold_0"
    finished.mkdir(parents=True)
    (finished / "fold_metrics.json").write_text("{}")
    out = tmp_path / "cv"
    told = f"{out} already holds a cross-validation (fold_0); pass "
    assert api_error(covseg.cross_validate, "synthetic:1", out, folds=2) == (
        told + "resume=True to reuse and continue it, or pick a new out")
    assert cli_error(capsys, "cv", "synthetic:1", "--out", str(out), "--folds", "2") == (
        told + "--resume to reuse and continue it, or pick a new --out")


def test_folds_of_other_settings_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """A finished fold of other settings ("cross-validate into a new --out") and a fold stopped
    midway on another split ("resume with --folds 2, or ... into a new --out") named flags to
    the API."""
    data, out = str(synthetic_folder), tmp_path / "cv"
    covseg.cross_validate(data, out, folds=2, fold=0, epochs=1, **TINY)
    stale = (f"{out / 'fold_0'}: finished with other settings or data (epochs: 1 -> 2); "
             "cross-validate into a new ")
    delete = f", or delete {out / 'fold_0'} to train it again with these settings"
    assert api_error(covseg.cross_validate, data, out, folds=2, fold=0, resume=True, epochs=2,
                     **TINY) == stale + "out" + delete
    assert cli_error(capsys, "cv", data, "--out", str(out), "--folds", "2", "--fold", "0",
                     "--resume", "--epochs", "2", *TINY_FOLD) == stale + "--out" + delete
    for name in ("fold_metrics.json", "metrics.json", "test_per_case.csv"):
        (out / "fold_0" / name).unlink()  # as a fold stopped midway leaves it
    midway = (f"{out / 'fold_0'}: stopped midway on another split of the data (2 folds then, 3 "
              "now); resume with ")
    assert api_error(covseg.cross_validate, data, out, folds=3, fold=0, resume=True, epochs=1,
                     **TINY) == midway + f"folds=2, or cross-validate into a new out than {out}"
    assert cli_error(capsys, "cv", data, "--out", str(out), "--folds", "3", "--fold", "0",
                     "--resume", "--epochs", "1", *TINY_FOLD) == (
        midway + f"--folds 2, or cross-validate into a new --out than {out}")
