"""Every JSON record names the covseg version, the command that wrote it and the absolute paths
it read: a run's config.json and metrics.json, a cross-validation's summary.json, a comparison's
comparison.json, evaluate's JSON, predict.json and quantification.json."""

from __future__ import annotations

import json
import shutil
import threading
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import torch

from covseg import api
from covseg.cli import main
from covseg.provenance import UNKNOWN_COMMAND, invoked_as, provenance
from tests.test_quantify import synthetic_study

QUICK = ["--epochs", "1", "--size", "32", "--model", "unet", "--model-option", "width=4"]


def _record(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _assert_names(record: dict[str, Any], command: str, **paths: Path) -> None:
    assert record["covseg_version"] == version("covseg")
    assert record["command"] == command
    for key, path in paths.items():
        assert record[key] == str(path.resolve()), key


def _cli(*argv: str) -> None:
    assert main(list(argv)) == 0


def test_train_records_its_command_and_a_resume_spelt_otherwise_is_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path) -> None:
    """config.json and metrics.json named neither the covseg version nor the command, and the
    data only inside a free-text description. A resume spelt otherwise (absolute paths, options
    in another order, from another folder) trains the same recipe: it is accepted and records
    its own command line."""
    data = shutil.copytree(synthetic_folder, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    _cli("train", "data", "--out", "run", *QUICK)
    command = "covseg train data --out run " + " ".join(QUICK)
    for name in ("config.json", "metrics.json"):
        _assert_names(_record(tmp_path / "run" / name), command, data_path=data)
    monkeypatch.chdir(data)
    again = ["--model", "unet", "--model-option", "width=4", "--size", "32", "--epochs", "1"]
    _cli("train", str(data), "--resume", *again, "--out", str(tmp_path / "run"))
    resumed = f"covseg train {data} --resume {' '.join(again)} --out {tmp_path / 'run'}"
    for name in ("config.json", "metrics.json"):
        _assert_names(_record(tmp_path / "run" / name), resumed, data_path=data)


def test_a_run_from_python_names_the_api_function(tiny_run: Path, synthetic_folder: Path) -> None:
    for name in ("config.json", "metrics.json"):
        _assert_names(_record(tiny_run / name), "Python API: covseg.train()",
                      data_path=synthetic_folder)


def test_cross_validation_records_its_command_and_reuses_folds_spelt_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path) -> None:
    """summary.json and each fold's config.json name the command; a resume spelt otherwise
    reuses the finished folds (their config.json is compared on the recipe, not the command)."""
    data = shutil.copytree(synthetic_folder, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    _cli("cv", "data", "--out", "cv", "--folds", "2", *QUICK)
    command = "covseg cv data --out cv --folds 2 " + " ".join(QUICK)
    _assert_names(_record(tmp_path / "cv" / "summary.json"), command, data_path=data)
    _assert_names(_record(tmp_path / "cv" / "fold_1" / "config.json"), command, data_path=data)
    weights = (tmp_path / "cv" / "fold_1" / "best.pt").stat().st_mtime_ns
    monkeypatch.chdir(data)
    _cli("cv", str(data), "--resume", "--folds", "2", *QUICK, "--out", str(tmp_path / "cv"))
    resumed = f"covseg cv {data} --resume --folds 2 {' '.join(QUICK)} --out {tmp_path / 'cv'}"
    _assert_names(_record(tmp_path / "cv" / "summary.json"), resumed, data_path=data)
    assert (tmp_path / "cv" / "fold_1" / "best.pt").stat().st_mtime_ns == weights, "reused"
    _assert_names(_record(tmp_path / "cv" / "fold_1" / "config.json"), command, data_path=data)


def test_comparison_records_its_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        synthetic_folder: Path) -> None:
    data = shutil.copytree(synthetic_folder, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    _cli("compare", "data", "--models", "unet:width=4", "unet:width=8", "--out", "cmp",
         "--folds", "2", "--epochs", "1", "--size", "32")
    _assert_names(_record(tmp_path / "cmp" / "comparison.json"),
                  "covseg compare data --models unet:width=4 unet:width=8 --out cmp --folds 2 "
                  "--epochs 1 --size 32", data_path=data)


def test_evaluate_and_predict_record_absolute_paths_and_their_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path,
        tiny_run: Path) -> None:
    """evaluate stored --pred and --truth as typed (``"prediction_dir": "pout"``), relative
    to a folder it did not record, and neither it nor predict.json named the command."""
    data = shutil.copytree(synthetic_folder, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    _cli("predict", "data/images", "--model", str(tiny_run), "--out", "pred")
    _assert_names(_record(tmp_path / "pred" / "predict.json"),
                  f"covseg predict data/images --model {tiny_run} --out pred")
    _cli("evaluate", "--pred", "pred", "--truth", "data/masks", "--out", "ev")
    _assert_names(_record(tmp_path / "ev.json"),
                  "covseg evaluate --pred pred --truth data/masks --out ev",
                  prediction_dir=tmp_path / "pred", truth_dir=data / "masks")


def test_quantify_records_its_command(tmp_path: Path) -> None:
    _, mask, _ = synthetic_study(tmp_path / "studies", "study_0001")
    assert api.quantify([mask], tmp_path / "out").done == 1
    _assert_names(_record(tmp_path / "out" / "study_0001" / "quantification.json"),
                  "Python API: covseg.quantify()")


def _in_threads(*targets: Any) -> None:
    """Run each of ``targets`` in a thread of its own, wait for all; re-raise the first error."""
    errors: list[BaseException] = []

    def run(target: Any) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001  handed to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]


def test_two_commands_in_two_threads_record_their_own() -> None:
    """The command was one environment variable of the process: a second thread's command was
    recorded as the first's, and the first's end removed it under the second."""
    entered, first_done = threading.Barrier(2, timeout=30), threading.Event()
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def first() -> None:
        with invoked_as("covseg first"):
            entered.wait()
            seen["a"].append(provenance()["command"])
        first_done.set()

    def second() -> None:
        with invoked_as("covseg second"):
            entered.wait()
            seen["b"].append(provenance()["command"])
            assert first_done.wait(30)
            seen["b"].append(provenance()["command"])

    _in_threads(first, second)
    assert seen == {"a": ["covseg first"], "b": ["covseg second", "covseg second"]}
    assert provenance()["command"] == UNKNOWN_COMMAND, "nothing left behind"


def test_an_api_call_beside_another_command_in_the_process_records_its_own(
        tmp_path: Path) -> None:
    """quantify() called in one thread while another thread runs a command (a long training)
    recorded the other's command line."""
    _, mask, _ = synthetic_study(tmp_path / "studies", "study_0001")
    holding, done = threading.Event(), threading.Event()

    def other_command() -> None:
        with invoked_as("covseg train data --out run"):
            holding.set()
            assert done.wait(120)

    def quantify() -> None:
        try:
            assert holding.wait(30)
            assert api.quantify([mask], tmp_path / "out").done == 1
        finally:
            done.set()

    _in_threads(other_command, quantify)
    _assert_names(_record(tmp_path / "out" / "study_0001" / "quantification.json"),
                  "Python API: covseg.quantify()")


def test_members_in_processes_of_their_own_record_the_command(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """The command is kept in the calling thread only: each member trained in a spawned process
    is handed it, and records it as the run does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two members side by side, one process each
    try:
        metrics = api.train(synthetic_folder, tmp_path / "run", model="unet,unet", epochs=1,
                            size=32, model_options={"width": 4})
    finally:
        torch.set_num_threads(threads)
    assert metrics["members_side_by_side"] == 2
    for member in ("member0-unet", "member1-unet"):
        _assert_names(_record(tmp_path / "run" / member / "config.json"),
                      "Python API: covseg.train()", data_path=synthetic_folder)
