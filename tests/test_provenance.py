"""Every JSON record names the covseg version, the command that wrote it and the absolute paths
it read: a run's config.json and metrics.json, a cross-validation's summary.json, a comparison's
comparison.json, evaluate's JSON, predict.json and quantification.json."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import platform
import re
import shutil
import subprocess
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import covseg.provenance
from covseg import api
from covseg.checkpoint import load_checkpoint
from covseg.cli import main
from covseg.config import TrainConfig
from covseg.data import load_dataset
from covseg.provenance import (
    INVOCATION_KEYS,
    RESUMED_BY,
    UNKNOWN_COMMAND,
    continued,
    environment_changes,
    git_state,
    invoked_as,
    provenance,
    source_sha256,
)
from covseg.transforms import LUNG_WINDOW
from tests.conftest import calls_counted, stopped_after_epoch
from tests.test_quantify import synthetic_study

train_module = importlib.import_module("covseg.train")  # the package exports a train() too
UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")

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


@pytest.mark.usefixtures("last_pt_kept")
def test_train_records_its_command_and_a_resume_spelt_otherwise_is_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path) -> None:
    """config.json and metrics.json named neither the covseg version nor the command, and the
    data only inside a free-text description. A resume spelt otherwise (absolute paths, options
    in another order, from another folder) trains the same recipe: it is accepted and listed
    under ``resumed_by`` with its own command line, while ``command`` stays the one that
    started the run (the resume's had replaced it: ``... --resume`` cannot start a run)."""
    data = shutil.copytree(synthetic_folder, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    _cli("train", "data", "--out", "run", *QUICK)
    command = "covseg train data --out run " + " ".join(QUICK)
    for name in ("config.json", "metrics.json"):
        _assert_names(_record(tmp_path / "run" / name), command, data_path=data)
    monkeypatch.chdir(data)
    (tmp_path / "run" / "metrics.json").unlink()  # stopped in its last validation: resumable
    again = ["--model", "unet", "--model-option", "width=4", "--size", "32", "--epochs", "1"]
    _cli("train", str(data), "--resume", *again, "--out", str(tmp_path / "run"))
    resumed = f"covseg train {data} --resume {' '.join(again)} --out {tmp_path / 'run'}"
    for name in ("config.json", "metrics.json"):
        record = _record(tmp_path / "run" / name)
        _assert_names(record, command, data_path=data)
        assert [r["command"] for r in record["resumed_by"]] == [resumed]
        assert record["resumed_by"][0]["data_path"] == str(data)


def test_a_run_from_python_names_the_api_function(tiny_run: Path, synthetic_folder: Path) -> None:
    for name in ("config.json", "metrics.json"):
        _assert_names(_record(tiny_run / name), "Python API: covseg.train()",
                      data_path=synthetic_folder)


def test_cross_validation_records_its_command_and_reuses_folds_spelt_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path) -> None:
    """summary.json and each fold's config.json name the command; a resume spelt otherwise
    reuses the finished folds (their config.json is compared on the recipe, not the command).
    That resume, which trains nothing, rewrote summary.json with its own command and its 0.1 s
    as the run time: it leaves the finished run as it was now, and one that finishes a fold
    (its test stopped) keeps the run's start (command, times), the resume listed beside it,
    also where an older covseg wrote the summary."""
    data = shutil.copytree(synthetic_folder, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    _cli("cv", "data", "--out", "cv", "--folds", "2", *QUICK)
    command = "covseg cv data --out cv --folds 2 " + " ".join(QUICK)
    first = _record(tmp_path / "cv" / "summary.json")
    _assert_names(first, command, data_path=data)
    assert UTC_TIME.fullmatch(first["started_utc"]) and UTC_TIME.fullmatch(first["finished_utc"])
    assert first["started_utc"] <= first["finished_utc"]
    assert first["threads"] == torch.get_num_threads(), "recorded as train's config.json does"
    _assert_names(_record(tmp_path / "cv" / "fold_1" / "config.json"), command, data_path=data)
    weights = (tmp_path / "cv" / "fold_1" / "best.pt").stat().st_mtime_ns
    monkeypatch.chdir(data)
    finished = (tmp_path / "cv" / "summary.json").read_bytes()
    _cli("cv", str(data), "--resume", "--folds", "2", *QUICK, "--out", str(tmp_path / "cv"))
    assert (tmp_path / "cv" / "summary.json").read_bytes() == finished
    tested = tmp_path / "cv" / "fold_1" / "fold_metrics.json"
    tested.unlink()  # stopped testing fold 1: its run is reused, and tested again
    _cli("cv", str(data), "--resume", "--folds", "2", *QUICK, "--out", str(tmp_path / "cv"))
    resumed = f"covseg cv {data} --resume --folds 2 {' '.join(QUICK)} --out {tmp_path / 'cv'}"
    summary = _record(tmp_path / "cv" / "summary.json")
    _assert_names(summary, command, data_path=data)
    assert [r["command"] for r in summary["resumed_by"]] == [resumed]
    assert summary["resumed_by"][0]["threads"] == torch.get_num_threads()
    for key in ("started_utc", "source_sha256"):
        assert summary[key] == first[key], key
    assert (tmp_path / "cv" / "fold_1" / "best.pt").stat().st_mtime_ns == weights, "reused"
    _assert_names(_record(tmp_path / "cv" / "fold_1" / "config.json"), command, data_path=data)
    older = {key: value for key, value in summary.items()  # as covseg wrote it before 5 Dec
             if key not in ("source_sha256", "started_utc", "python", RESUMED_BY)}
    (tmp_path / "cv" / "summary.json").write_text(json.dumps(older))
    tested.unlink()
    _cli("cv", str(data), "--resume", "--folds", "2", *QUICK, "--out", str(tmp_path / "cv"))
    again = _record(tmp_path / "cv" / "summary.json")
    assert again["command"] == command and len(again[RESUMED_BY]) == 1
    assert not {"source_sha256", "started_utc", "python"} & set(again), (
        "this resume's provenance beside the start's command")
    recipe = {key: value for key, value in again["config"].items()  # before 4 Dec: 8-bit data's
              if key not in ("cutmix", "lesion_paste")}  # lung window, no options added since
    oldest = {key: value for key, value in older.items() if key != "command"}
    (tmp_path / "cv" / "summary.json").write_text(json.dumps(
        {**oldest, "config": {**recipe, "window": list(LUNG_WINDOW)}}))
    tested.unlink()
    _cli("cv", str(data), "--resume", "--folds", "2", *QUICK, "--out", str(tmp_path / "cv"))
    oldest_resumed = _record(tmp_path / "cv" / "summary.json")
    assert oldest_resumed["command"] is None and len(oldest_resumed[RESUMED_BY]) == 1
    assert oldest_resumed["seconds"] == pytest.approx(
        summary["seconds"] + oldest_resumed[RESUMED_BY][0]["seconds"])
    assert oldest_resumed["config"]["window"] == again["config"]["window"]


def test_comparison_records_its_command_and_a_resume_keeps_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_folder: Path) -> None:
    """A ``compare --resume`` replaced comparison.json's command (and recorded no start time):
    the command that started the comparison was lost, while each model's summary.json kept it.
    It is kept now, with ``started_utc``, and the resume listed under ``resumed_by`` (one that
    finishes a fold: a resume of the finished comparison leaves it as it was)."""
    data = shutil.copytree(synthetic_folder, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    argv = ["compare", "data", "--models", "unet:width=4", "unet:width=8", "--out", "cmp",
            "--folds", "2", "--epochs", "1", "--size", "32"]
    _cli(*argv)
    command = ("covseg compare data --models unet:width=4 unet:width=8 --out cmp --folds 2 "
               "--epochs 1 --size 32")
    first = _record(tmp_path / "cmp" / "comparison.json")
    _assert_names(first, command, data_path=data)
    assert UTC_TIME.fullmatch(first["started_utc"]) and RESUMED_BY not in first
    finished = (tmp_path / "cmp" / "comparison.json").read_bytes()
    _cli(*argv, "--resume")
    assert (tmp_path / "cmp" / "comparison.json").read_bytes() == finished, "nothing to do"
    next((tmp_path / "cmp").glob("*/fold_1/fold_metrics.json")).unlink()  # a fold's test stopped
    _cli(*argv, "--resume")
    resumed = _record(tmp_path / "cmp" / "comparison.json")
    _assert_names(resumed, command, data_path=data)
    assert resumed["started_utc"] == first["started_utc"]
    assert [entry["command"] for entry in resumed[RESUMED_BY]] == [f"{command} --resume"]
    assert UTC_TIME.fullmatch(resumed[RESUMED_BY][0]["started_utc"])


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


PACKAGE = Path(covseg.provenance.__file__).resolve().parent


def test_records_name_the_code_and_the_versions_they_ran_on() -> None:
    """covseg_version (0.1.0 over every commit) was the only code identity, and neither Python
    nor numpy (whose random streams cut the folds) was recorded."""
    record = provenance()
    assert record["python"] == platform.python_version()
    assert record["numpy"] == np.__version__
    assert record["torch"] == torch.__version__
    assert record["platform"] == platform.platform()
    assert record["source_sha256"] == source_sha256(PACKAGE)
    head = subprocess.run(["git", "-C", str(PACKAGE), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False)
    if head.returncode != 0:
        assert "git_commit" not in record  # installed, not a checkout
        return
    assert record["git_commit"] == head.stdout.strip()
    changed = subprocess.run(["git", "-C", str(PACKAGE), "status", "--porcelain",
                              "--untracked-files=no"], capture_output=True, text=True, check=True)
    assert record["git_dirty"] is bool(changed.stdout.strip())


def test_records_name_the_libraries_that_shape_the_weights_and_none_not_installed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """MONAI's random transforms shape the weights a run trains, yet a record named python,
    numpy and torch alone: now MONAI's, Pillow's and the zoo's libraries' versions too, None
    for one not installed, and SciPy's, which finds the lungs that frame whole CT frames on
    the training canvas (it was not named)."""
    record = provenance()
    assert record["monai"] == version("monai") and record["pillow"] == version("Pillow")
    assert record["scipy"] == version("scipy")
    for key in ("segmentation_models_pytorch", "timm", "torchvision"):
        assert key in record, key
    monkeypatch.setattr(covseg.provenance, "version", _version_without("timm"))
    assert covseg.provenance._libraries.__wrapped__()["timm"] is None


def _version_without(missing: str) -> Any:
    """importlib.metadata's ``version`` as where the distribution ``missing`` is not installed."""
    from importlib.metadata import PackageNotFoundError

    def installed(name: str) -> str:
        if name == missing:
            raise PackageNotFoundError(name)
        return version(name)
    return installed


def test_a_resume_warns_of_another_monai_but_not_a_record_without_one() -> None:
    """A record written before the versions of MONAI were recorded resumes as it did, unwarned;
    one under another MONAI (whose random transforms augment each batch) is warned of."""
    now = {"monai": "1.6.1", "pillow": "13.0.0", "timm": None, "torch": "2.0.0"}
    assert environment_changes({"torch": "2.0.0"}, now) == []
    assert environment_changes({"monai": "1.4.0", "pillow": "10.1.0", "timm": "1.0.0"},
                               now) == ["monai 1.4.0 -> 1.6.1"]


def test_a_resume_warns_of_another_scipy_which_frames_the_canvas() -> None:
    """SciPy finds the lungs that cut whole CT frames to their box on the canvas: another
    version may train on other canvases, yet a resume under one was not warned of."""
    assert environment_changes({"scipy": "1.15.0", "torch": "2.0.0"},
                               {"scipy": "1.16.3", "torch": "2.0.0"}) == ["scipy 1.15.0 -> 1.16.3"]


def test_the_source_hash_follows_the_code_not_where_it_lies(tmp_path: Path) -> None:
    """A copy of the package elsewhere (a wheel's site-packages) hashes the same; an edit of one
    file, or a module added, changes it."""
    copy = shutil.copytree(PACKAGE, tmp_path / "covseg",
                           ignore=shutil.ignore_patterns("__pycache__"))
    assert source_sha256(copy) == source_sha256(PACKAGE)
    (copy / "losses.py").write_text((copy / "losses.py").read_text() + "\n")
    edited = source_sha256(copy)
    assert edited != source_sha256(PACKAGE)
    (copy / "extra.py").write_text("")
    assert source_sha256(copy) != edited


def test_no_checkout_or_no_git_records_no_commit(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a git checkout, from site-packages, or without git: the keys are absent, never an
    error; a ``GIT_DIR`` inherited from a git hook does not lend another repository's commit."""
    assert git_state(shutil.copytree(PACKAGE, tmp_path / "plain" / "covseg")) == {}
    installed = tmp_path / "repo" / "venv" / "site-packages" / "covseg"
    shutil.copytree(PACKAGE, installed)
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    assert git_state(installed) == {}  # another project's checkout around a venv
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    subprocess.run(["git", "-C", str(other), "-c", "user.name=a", "-c", "user.email=a@b",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))  # as a git hook runs its commands
    assert git_state(tmp_path / "plain" / "covseg") == {}, "another repository's commit"
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert git_state(PACKAGE) == {}



def test_the_source_hash_covers_sub_packages_and_module_names(tmp_path: Path) -> None:
    """An edit in a sub-package (``covseg/io/``, ``covseg/data/layouts/``) changes the hash as
    one at the top level does, and so does a module renamed (its imports change with it)."""
    copy = shutil.copytree(PACKAGE, tmp_path / "covseg",
                           ignore=shutil.ignore_patterns("__pycache__"))
    before = source_sha256(copy)
    atomic = copy / "io" / "atomic.py"
    atomic.write_text(atomic.read_text() + "\n")
    edited = source_sha256(copy)
    assert edited != before
    (copy / "losses.py").rename(copy / "losses_renamed.py")
    assert source_sha256(copy) != edited


def test_a_checkout_without_a_commit_or_a_distributions_packages_records_no_commit(
        tmp_path: Path) -> None:
    """A ``git init`` around the code with nothing committed has no commit to name (git says
    ``(initial)``), and a Debian ``dist-packages`` inside another project's checkout is an
    installed copy, as ``site-packages`` is."""
    fresh = shutil.copytree(PACKAGE, tmp_path / "fresh" / "covseg",
                            ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", str(tmp_path / "fresh")], check=True)
    assert git_state(fresh) == {}
    repo = tmp_path / "repo"
    installed = shutil.copytree(PACKAGE, repo / "lib" / "python3" / "dist-packages" / "covseg",
                                ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=a", "-c", "user.email=a@b",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    assert git_state(installed) == {}


def test_a_synthetic_data_spec_is_recorded_as_given() -> None:
    """``synthetic`` and ``synthetic:SEED`` name the built-in generator, not a folder: resolved
    as paths they would name a folder of the working directory that does not exist."""
    record = provenance(data_path="synthetic:7", other="synthetic", none=None)
    assert (record["data_path"], record["other"], record["none"]) == ("synthetic:7", "synthetic",
                                                                       None)


def test_a_resume_keeps_the_starting_command_only_from_a_record_that_names_one(
        tmp_path: Path) -> None:
    """A run started here, or resumed from a record that cannot be read, records this command
    alone; a resume of a recorded run keeps the command that started it and lists its own under
    resumed_by; one of a record an earlier covseg wrote without a ``command`` keeps what it
    holds, its command null, and is listed under resumed_by too, never as the start."""
    record, now = tmp_path / "config.json", {"command": "covseg train d --resume", "threads": 2}
    record.write_text(json.dumps({"epochs": 2, "covseg_version": "0.0.9"}))
    assert continued(record, now, resumed=True) == {"command": None, "covseg_version": "0.0.9",
                                                     RESUMED_BY: [now]}
    record.write_text("{")
    assert continued(record, now, resumed=True) == now
    record.write_text(json.dumps({"command": "covseg train d", "threads": 3, "epochs": 2}))
    assert continued(record, now, resumed=False) == now
    assert continued(record, now, resumed=True) == {"command": "covseg train d", "threads": 3,
                                                     RESUMED_BY: [now]}


def test_environment_changes_show_hashes_short_and_skip_keys_a_record_lacks() -> None:
    saved = {"source_sha256": "a" * 64, "torch": "2.0.0", "threads": 3}
    now = {"source_sha256": "b" * 64, "torch": "2.0.0", "threads": 4, "covseg_version": "0.2"}
    assert environment_changes(saved, now) == [
        f"covseg source (source_sha256) {'a' * 12} -> {'b' * 12}", "threads 3 -> 4"]

@pytest.mark.usefixtures("last_pt_kept")
def test_a_resume_under_another_torch_or_thread_count_warns_and_keeps_each_commands(
        tmp_path: Path, synthetic_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run started under one torch and thread count and resumed under others was accepted
    silently, and config.json and metrics.json were rewritten to claim the resume's alone
    (epoch 1 trained by one, epoch 2 by the other: the weights match neither). Here the run's
    record is made to say it started on torch 2.0.0 and 3 threads, as on another machine."""
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model="unet", epochs=2, size=32, batch_size=4,
                         model_options={"width": 4})
    out = tmp_path / "run"
    with invoked_as("covseg train data --out run"), stopped_after_epoch():
        train_module.train(config, data, out, progress=False)
    record = _record(out / "config.json")
    assert record["threads"] == torch.get_num_threads() and UTC_TIME.fullmatch(
        record["started_utc"])
    record.update(torch="2.0.0", threads=3)
    (out / "config.json").write_text(json.dumps(record))
    caplog.set_level(logging.WARNING, logger="covseg")
    with invoked_as("covseg train data --out run --resume"):
        train_module.train(config, data, out, resume=True, progress=False)
    warned = [r.getMessage() for r in caplog.records if r.name == "covseg.train"]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert (f"torch 2.0.0 -> {torch.__version__}; threads 3 -> {torch.get_num_threads()}"
            in warned[0]) and "differ from an uninterrupted run" in warned[0]
    for name in ("config.json", "metrics.json"):
        saved = _record(out / name)
        assert (saved["command"], saved["torch"], saved["threads"]) == (
            "covseg train data --out run", "2.0.0", 3), name
        assert saved["started_utc"] == record["started_utc"]
        [resume] = saved["resumed_by"]
        assert (resume["command"], resume["torch"], resume["threads"]) == (
            "covseg train data --out run --resume", torch.__version__, torch.get_num_threads())
        assert resume["started_utc"] >= record["started_utc"]
    assert _record(out / "metrics.json")["finished_utc"] >= resume["started_utc"]
    caplog.clear()
    train_module.train(config, data, out, resume=True, progress=False)  # finished: not warned
    assert not [r for r in caplog.records if r.name == "covseg.train"]
    assert len(_record(out / "config.json")["resumed_by"]) == 1  # nothing trained: left as it was
    (out / "metrics.json").unlink()  # stopped in its last validation: no epoch left to train
    train_module.train(config, data, out, resume=True, progress=False)
    assert not [r for r in caplog.records if r.name == "covseg.train"]


def test_a_resume_under_the_same_code_and_threads_is_not_warned_of(
        tmp_path: Path, synthetic_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model="unet", epochs=2, size=32, batch_size=4,
                         model_options={"width": 4})
    with stopped_after_epoch():
        train_module.train(config, data, tmp_path / "run", progress=False)
    caplog.set_level(logging.WARNING, logger="covseg")
    train_module.train(config, data, tmp_path / "run", resume=True, progress=False)
    assert not [r for r in caplog.records if r.name == "covseg.train"]


@pytest.mark.parametrize(("started", "warned"), [(2, False), (3, False), (4, True)])
def test_an_ensemble_is_warned_of_another_thread_count_only_where_its_members_get_another(
        tmp_path: Path, synthetic_folder: Path, caplog: pytest.LogCaptureFixture,
        started: int, warned: bool) -> None:
    """Two members started under 2 (or 3) threads train on one each, as they do resumed under
    one: the same weights as an uninterrupted run, yet the resume was warned of (`threads 2 ->
    1`). Started under 4, each trained on two: warned. The run's record is made to say so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the members one after the other, in this process
    try:
        config = TrainConfig(model="unet,unet", epochs=2, size=32, batch_size=4,
                             model_options={"width": 4})
        data, out = load_dataset(synthetic_folder), tmp_path / "run"
        with stopped_after_epoch():
            train_module.train(config, data, out, progress=False)
        record = {**_record(out / "config.json"), "threads": started}
        (out / "config.json").write_text(json.dumps(record))
        caplog.set_level(logging.WARNING, logger="covseg")
        train_module.train(config, data, out, resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    told = [r.getMessage() for r in caplog.records if r.name == "covseg.train"]
    warning = (f"{out}: resumed under other settings than the run started with (threads "
               f"{started} -> 1): its results may differ from an uninterrupted run's "
               "(config.json's resumed_by records each command)")
    assert told == ([warning] if warned else [])


def test_a_replaced_best_pt_is_warned_of_once_per_process(
        tmp_path: Path, tiny_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cascade's lung run is loaded by each network and each test: its replaced best.pt was
    warned of on every load (3 times for a guided train, 7 for a cv of two folds). Once for
    each run and best.pt; replaced again, it is warned of again."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    caplog.set_level(logging.WARNING, logger="covseg")
    for change in (1, 2):
        payload = torch.load(run / "best.pt", weights_only=True)
        first = next(iter(payload["state_dict"]))
        payload["state_dict"][first] = payload["state_dict"][first] + change
        torch.save(payload, run / "best.pt")
        for _ in range(3):
            load_checkpoint(run)
    warned = [r.getMessage() for r in caplog.records if r.name == "covseg.checkpoint"]
    assert len(warned) == 2 and all("is not the model its metrics.json" in w for w in warned)


def test_a_runs_best_pt_is_hashed_once_for_the_replaced_check_of_each_load(
        tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check of a replaced best.pt hashed it at every load (a cascade's lung run is loaded
    by every network and test), though it warns once: hashed once for each file identity, as
    :func:`~covseg.volumes.model_hash` hashes a model, and again once rewritten."""
    volumes = importlib.import_module("covseg.volumes")
    run = shutil.copytree(tiny_run, tmp_path / "run")
    hashed = calls_counted(monkeypatch, volumes, "content_hash")
    time.sleep(0.2)  # older than RECENT_NS: its file times tell a rewrite
    for _ in range(3):
        load_checkpoint(run)
    assert hashed == [(run / "best.pt",)]
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes())
    time.sleep(0.2)
    load_checkpoint(run)
    assert hashed == [(run / "best.pt",)] * 2


def test_metrics_name_their_best_pt_and_predict_warns_of_one_replaced(
        tmp_path: Path, tiny_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A best.pt copied over a run's was predicted under the run's config.json without a word,
    and no record held the hash to check it against."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    metrics = _record(run / "metrics.json")
    assert metrics["best_sha256"] == hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    caplog.set_level(logging.WARNING, logger="covseg")
    load_checkpoint(run)
    assert not caplog.records
    payload = torch.load(run / "best.pt", weights_only=True)
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = payload["state_dict"][first] + 1
    torch.save(payload, run / "best.pt")
    actual = hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    assert main(["predict", str(synthetic_folder_images(tiny_run)), "--model", str(run),
                 "--out", str(tmp_path / "pred")]) == 0
    warned = [r.getMessage() for r in caplog.records if r.name == "covseg.checkpoint"]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert f"best.pt (sha256 {actual[:12]}) is not the model its metrics.json" in warned[0]
    assert metrics["best_sha256"][:12] in warned[0]
    caplog.clear()
    del metrics["best_sha256"]  # a record written before covseg kept the hash
    (run / "metrics.json").write_text(json.dumps(metrics))
    load_checkpoint(run)
    assert not caplog.records


def synthetic_folder_images(run: Path) -> Path:
    """The images folder of the data ``run`` was trained on (its config.json's data_path)."""
    return Path(_record(run / "config.json")["data_path"]) / "images"


@pytest.mark.usefixtures("last_pt_kept")
def test_a_resume_of_a_run_recorded_without_its_command_keeps_the_old_record(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A run's config.json of a covseg before 4 Dec holds no ``command`` (nor code, versions or
    start): its resume was recorded as the run's start, today's commit and command on weights
    older code trained. What the old record holds is kept, ``command`` null, the resume under
    ``resumed_by``."""
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model="unet", epochs=1, size=32, batch_size=4,
                         model_options={"width": 4})
    out = tmp_path / "run"
    train_module.train(config, data, out, progress=False)
    record = _record(out / "config.json")
    old = {key: value for key, value in record.items() if key not in INVOCATION_KEYS}
    (out / "config.json").write_text(json.dumps({**old, "torch": "2.0.0", "threads": 3}))
    (out / "metrics.json").unlink()  # stopped in its last validation (a finished run is left)
    with invoked_as("covseg train data --out run --resume"):
        train_module.train(config, data, out, resume=True, progress=False)
    for name in ("config.json", "metrics.json"):
        saved = _record(out / name)
        assert saved["command"] is None and "source_sha256" not in saved, name
        assert (saved["torch"], saved["threads"]) == ("2.0.0", 3), name
        [resume] = saved["resumed_by"]
        assert resume["command"] == "covseg train data --out run --resume", name
