"""Cross-validation folds, summary and report, on the built-in generator's slices."""

from __future__ import annotations

import csv
import importlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from covseg import api, crossval
from covseg.config import MAX_SEED, TrainConfig
from covseg.crossval import DEFAULT_FOLDS, make_folds, mean_over_folds, report_markdown
from covseg.data import load_dataset
from covseg.data.layouts import LoadedData
from covseg.data.splits import validation_split
from covseg.data.synthetic import write_synthetic
from covseg.errors import CovsegError
from covseg.io.lock import LOCK_FILE
from covseg.metrics import METRICS
from covseg.models.registry import model_options
from covseg.stopping import Terminated
from covseg.train import DATA_FINGERPRINT, AlreadyTrained
from tests.conftest import (
    NEEDS_ZOO,
    calls_counted,
    data_unread,
    disk_full_from,
    effusion_frames,
    fold_stopped_midway,
    folder_holding,
    held_by_another_thread,
    mixed_unit_folder,
    stopped_after_epoch,
)


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


@NEEDS_ZOO
def test_a_weights_file_is_hashed_once_for_every_fold(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fold hashed the weights= file again (a 100 MB ResNet read once a fold); hashed once
    a cross-validation, each fold's record holds its SHA-256 as before."""
    import importlib

    import torch
    from torchvision.models import resnet50

    from covseg.records import content_hash

    weights = tmp_path / "r50.pth"
    torch.save(resnet50().state_dict(), weights)
    hashed: list[Path] = []

    def counted(path: Path) -> str | None:
        hashed.append(path)
        return content_hash(path)

    monkeypatch.setattr(importlib.import_module("covseg.train"), "content_hash", counted)
    api.cross_validate(load_dataset(synthetic_folder), tmp_path / "cv", folds=2, epochs=1,
                       size=32, batch_size=8, model="fcn", model_options={"weights": str(weights)})
    assert hashed.count(weights) == 1
    for fold in ("fold_0", "fold_1"):
        record = json.loads((tmp_path / "cv" / fold / "config.json").read_text())
        assert record["weights_sha256"] == content_hash(weights)


@NEEDS_ZOO
def test_a_resume_reads_the_weights_file_once_for_its_check_and_once_for_its_hash(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cv --resume whose fold left to train resumes from its last.pt read the weights= file
    three times: the recipe's trial build, the hash, and the fold's own trial build of the
    recipe checked already. The fold is handed the check with the hash: read twice now, and
    the fold's network is built from its last.pt, as before."""
    import importlib

    import torch
    from torchvision.models import resnet50

    from covseg.models import pretrained
    from covseg.records import content_hash

    weights = tmp_path / "r50.pth"
    torch.save(resnet50().state_dict(), weights)
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    recipe = {"folds": 2, "epochs": 1, "size": 32, "batch_size": 8, "model": "fcn",
              "model_options": {"weights": str(weights)}}
    api.cross_validate(data, out, fold=0, **recipe)
    fold_stopped_midway(data, out, 1, **recipe)
    read: list[str] = []  # how the weights= file was read (best.pt is hashed too)
    read_state_dict = pretrained.read_state_dict

    def loaded(path: Path) -> dict[str, torch.Tensor]:
        read.extend(["load"] if Path(path) == weights else [])
        return read_state_dict(path)

    def hashed(path: Path) -> str | None:
        read.extend(["hash"] if path == weights else [])
        return content_hash(path)

    monkeypatch.setattr(pretrained, "read_state_dict", loaded)
    monkeypatch.setattr(importlib.import_module("covseg.train"), "content_hash", hashed)
    api.cross_validate(data, out, resume=True, **recipe)
    assert read == ["load", "hash"]
    assert (out / "summary.json").is_file()


@NEEDS_ZOO
def test_folds_are_not_trained_from_another_weights_file_than_the_folds_done(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fold 0 trained, the weights= file replaced: a --resume trained fold 1 from the new bytes
    and reused fold 0 (a cross-validation of two starts), and --fold 1 did too. Both are refused
    in the one line a resume gets, before any fold trains; the bytes restored, the run resumes,
    fold 1 (no last.pt) starting from the file, as fold 0 did."""
    import importlib

    import torch
    from torchvision.models import resnet50

    weights = tmp_path / "r50.pth"
    torch.save(resnet50().state_dict(), weights)
    started = weights.read_bytes()
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    recipe = {"folds": 2, "epochs": 1, "size": 32, "batch_size": 8, "model": "fcn",
              "model_options": {"weights": str(weights)}}
    api.cross_validate(data, out, fold=0, **recipe)
    torch.save(resnet50().state_dict(), weights)
    refusal = "^" + re.escape(f"{out}: the weights= file {weights} holds other bytes than the "
                              "run started from (SHA-256 ") + r".*; restore that file or pick a "
    for fold in (None, 1):
        with pytest.raises(CovsegError, match=refusal + "new out$"):
            api.cross_validate(data, out, fold=fold, resume=True, **recipe)
        assert not (out / "fold_1").exists()
        assert not (out / crossval.STOPPED_FILE).exists()
    weights.write_bytes(started)
    train_module = importlib.import_module("covseg.train")
    built: list[object] = []  # the weights= of each network trained
    build_model = train_module.build_model
    monkeypatch.setattr(train_module, "build_model", lambda *args, **options: (
        built.append(options.get("weights")), build_model(*args, **options))[1])
    assert api.cross_validate(data, out, resume=True, **recipe)["mean_std_over_folds"]["dice"][
        "n"] == 2
    assert built == [str(weights)]  # fold 1's network, from the file; fold 0's is finished
    first, second = (json.loads((out / f"fold_{k}" / "config.json").read_text())
                     for k in range(2))
    assert first["weights_sha256"] == second["weights_sha256"]


@NEEDS_ZOO
def test_a_cross_validation_goes_on_without_a_weights_file_no_fold_left_would_read(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """The weights= file gone after folds started: a --resume was refused even where every fold
    left holds its last.pt or is finished. Refused, naming it, while a fold has not started
    (--fold K of a finished fold goes on); with every fold finished or resumable, the run goes
    on, each fold's record keeping the SHA-256 it started from."""
    import torch
    from torchvision.models import resnet50

    from covseg.records import content_hash

    weights, moved = tmp_path / "r50.pth", tmp_path / "moved.pth"
    torch.save(resnet50().state_dict(), weights)
    started = content_hash(weights)
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    recipe = {"folds": 2, "epochs": 1, "size": 32, "batch_size": 8, "model": "fcn",
              "model_options": {"weights": str(weights)}}
    api.cross_validate(data, out, fold=0, **recipe)
    weights.rename(moved)
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{out}: the weights= file {weights} is gone, and fold_1 would start from it (no "
            "last.pt to resume from); restore the file or pick a new out") + "$"):
        api.cross_validate(data, out, resume=True, **recipe)
    assert not (out / "fold_1").exists()
    assert api.cross_validate(data, out, fold=0, resume=True, **recipe)["fold"] == 0
    moved.rename(weights)
    fold_stopped_midway(data, out, 1, **recipe)
    weights.rename(moved)
    summary = api.cross_validate(data, out, resume=True, **recipe)
    assert summary["mean_std_over_folds"]["dice"]["n"] == 2
    for k in range(2):
        record = json.loads((out / f"fold_{k}" / "config.json").read_text())
        assert record["weights_sha256"] == started


@NEEDS_ZOO
def test_a_relative_weights_file_gone_is_judged_before_the_data_are_read(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weights=r50.pth typed relative, gone after fold 0 finished: --fold 0 --resume was
    refused as trained otherwise (its record's absolute path against the typed one), and a
    whole run's refusal naming fold_1 came once the data were read. --fold 0 goes on; the
    refusal comes before the data are read."""
    import torch
    from torchvision.models import resnet50

    monkeypatch.chdir(tmp_path)
    torch.save(resnet50().state_dict(), tmp_path / "r50.pth")
    recipe = {"folds": 2, "epochs": 1, "size": 32, "batch_size": 8, "model": "fcn",
              "model_options": {"weights": "r50.pth"}}
    api.cross_validate(synthetic_folder, "cv", fold=0, **recipe)
    (tmp_path / "r50.pth").rename(tmp_path / "moved.pth")
    assert api.cross_validate(synthetic_folder, "cv", fold=0, resume=True, **recipe)["fold"] == 0
    monkeypatch.setattr(api, "_load", data_unread)
    with pytest.raises(CovsegError, match=re.escape(
            "r50.pth is gone, and fold_1 would start from it")):
        api.cross_validate(synthetic_folder, "cv", resume=True, **recipe)


def test_a_weights_file_gone_is_judged_on_the_folds_started_without_a_fold_count(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no --folds (the data's split files or the default count, known once the data are
    read), the weights= file gone is judged, before the data are read, on the fold folders
    there: fold_0 started from the file, with no last.pt, would start from it again. unet++ with
    weights= and no encoder= is refused by its builder ("weights= needs encoder="), never
    reached: the file is checked first, and no model takes weights= without the zoo."""
    weights, out = tmp_path / "gone.pth", tmp_path / "cv"
    (out / "fold_0").mkdir(parents=True)
    (out / "fold_0" / "config.json").write_text(json.dumps(  # the fold started from the file
        {"config": {"model_options": {"weights": str(weights)}}}))
    monkeypatch.setattr(api, "_load", data_unread)
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{out}: the weights= file {weights} is gone, and fold_0 would start from it (no "
            "last.pt to resume from); restore the file or pick a new out") + "$"):
        api.cross_validate(synthetic_folder, out, resume=True, size=32, model="unet++",
                           model_options={"weights": str(weights)})


def test_a_weights_file_no_fold_started_from_is_no_such_file(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model added to a compare --resume (or a cv --resume) whose weights= file never was (a
    typo): it was called gone ("restore the file or pick a new out"), once the data were read;
    no such file, before. unet++ with weights= and no encoder= is refused by its builder
    ("weights= needs encoder="), never reached: the file is checked first, and no model takes
    weights= without the zoo."""
    monkeypatch.setattr(api, "_load", data_unread)
    typo, out, cv = tmp_path / "typo.pth", tmp_path / "cmp", tmp_path / "cv"
    out.mkdir()
    cv.mkdir()
    with pytest.raises(CovsegError, match="^" + re.escape(f"{typo}: no such weights file") + "$"):
        api.compare(synthetic_folder, ["unet", f"unet++:weights={typo}"], out, resume=True,
                    folds=2, size=32)
    with pytest.raises(CovsegError, match="^" + re.escape(f"{typo}: no such weights file") + "$"):
        api.cross_validate(synthetic_folder, cv, resume=True, folds=2, size=32,
                           model="unet++", model_options={"weights": str(typo)})



def test_only_folds_holding_saved_work_are_held_to_their_weights_file(tmp_path: Path) -> None:
    """A fold's record beside no checkpoint (killed before its first epoch) describes nothing
    saved and starts afresh, from the file as it is now: only saved folds are compared, and
    records without the SHA-256 (before 6 Dec) pass."""
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"now")
    config, out = TrainConfig(model="fcn", model_options={"weights": str(weights)}), tmp_path
    (out / "fold_0").mkdir()
    (out / "fold_0" / "config.json").write_text(json.dumps({"weights_sha256": "0" * 64}))
    (out / "fold_1").mkdir()
    (out / "fold_1" / "last.pt").write_bytes(b"")
    (out / "fold_1" / "config.json").write_text("{}")
    assert crossval.checked_fold_weights(config, out, 2)["weights_sha256"] != "0" * 64
    (out / "fold_0" / "best.pt").write_bytes(b"")
    with pytest.raises(CovsegError, match="holds other bytes than the run started from"):
        crossval.checked_fold_weights(config, out, 2)


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
    assert report.splitlines()[-1] == (  # the fold models are no final model
        "Next step: for a final model train one on all the data (the fold models are no "
        "ensemble, each trained on 1/2 of it): "
        f"`covseg train {synthetic_folder} --model unet --model-option width=4 --epochs 1 "
        "--size 64 --out RUN`")
    assert f"**{summary['per_fold'][0]['dice']:.3f} (1 of 2 folds)**" in report


def test_what_loading_mosmed_warned_of_is_in_the_run_record_and_report(tmp_path: Path) -> None:
    """MosMed's warnings (slices whose patient cannot be told, slices no fold tests) were only
    logged while loading: the cross-validation's summary.json and report.md, and each fold's
    metrics.json, did not carry them. They now list them as ``warnings``."""
    from tests.data.test_layouts import _mosmed_2d

    (tmp_path / "mosmed").mkdir()
    root = _mosmed_2d(tmp_path / "mosmed")
    for folder in ("imgs", "masks"):
        for k in (0, 1):
            path = root / folder / f"study_0001_{k}.npy"
            path.rename(path.with_name(f"p1s{k}.npy"))
        np.save(root / folder / "study_0004_0.npy", np.load(root / folder / "study_0002_0.npy"))
    for path in root.glob("*_new*.txt"):
        path.write_text(re.sub(r"study_0001_(\d)", r"p1s\1", path.read_text()))
    data = load_dataset(root)
    assert data.notes == [
        ("2 of 7 slices name no study (study_NNNN_K) and no patients.csv names them (e.g. p1s0),"
         " so each is counted alone and a fold may train and test one patient's slices; name "
         "them by study or add a patients.csv (case_id,patient_id)"),
        ("3 of 7 slices are in no valid_new*.txt, so no fold tests them (study_0003_0, "
         "study_0003_1, study_0004_0); list each in one fold's test file")]
    api.cross_validate(data, tmp_path / "cv", epochs=1, size=32, batch_size=4, model="unet",
                       model_options={"width": 4})
    assert json.loads((tmp_path / "cv" / "summary.json").read_text())["warnings"] == data.notes
    for fold in (0, 1):
        metrics = json.loads((tmp_path / "cv" / f"fold_{fold}" / "metrics.json").read_text())
        assert metrics["warnings"] == data.notes
    report = (tmp_path / "cv" / "report.md").read_text()
    assert f"\n- Data warnings (2): {data.notes[0]}; {data.notes[1]}\n" in report
    assert "Data warnings" not in report_markdown({**json.loads(
        (tmp_path / "cv" / "summary.json").read_text()), "warnings": []}, plotted=True)


def test_finished_folds_are_reused_only_on_the_data_they_were_made_from(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cv --resume on another data set with the same slice names (here every mask zeroed)
    reused the folds and reported their Dice under the new data's name."""
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    data = load_dataset(synthetic_folder)
    first = api.cross_validate(data, tmp_path / "cv", **tiny)
    other = replace(data, samples=[replace(s, mask=np.zeros_like(s.mask)) for s in data.samples])
    with pytest.raises(CovsegError, match=r"fold_0 \(and fold_1\): finished with other settings "
                                          r"or data \(its data .*\); cross-validate into a new "
                                          r"out, or delete .*cv to start over$"):
        api.cross_validate(other, tmp_path / "cv", resume=True, **tiny)

    def no_training(*args: object, **kwargs: object) -> None:
        pytest.fail("a finished fold was trained again")

    monkeypatch.setattr(crossval, "train", no_training)
    again = api.cross_validate(load_dataset(synthetic_folder), tmp_path / "cv", resume=True,
                               **tiny)  # the same data, loaded anew: the folds are reused
    assert [f["dice"] for f in again["per_fold"]] == [f["dice"] for f in first["per_fold"]]
    for fold in (tmp_path / "cv").glob("fold_*"):  # folds finished before fingerprints
        record = json.loads((fold / "fold_metrics.json").read_text())
        del record[DATA_FINGERPRINT]
        (fold / "fold_metrics.json").write_text(json.dumps(record))
    api.cross_validate(other, tmp_path / "cv", resume=True, **tiny)  # are reused as before


@pytest.mark.parametrize("stats, text", [
    ({"mean": 0.5, "std": 0.1, "n": 3}, "0.500 ± 0.100"),
    ({"mean": 0.5, "std": 0.1, "n": 2}, "0.500 ± 0.100 (2 of 3 folds)"),
    ({"mean": 0.135, "std": math.nan, "n": 1}, "0.135 (1 of 3 folds)"),
    ({"mean": math.nan, "std": math.nan, "n": 0}, "–"),
    ({"mean": 0.0, "std": 0.0, "n": 3, "cases": 6, "cases_undefined": 42},
     "0.000 ± 0.000 (6 of 48 slices)"),
    ({"mean": 0.286, "std": 0.05, "n": 2, "cases": 25, "cases_undefined": 23},
     "0.286 ± 0.050 (2 of 3 folds; 25 of 48 slices)"),
    ({"mean": 0.5, "std": 0.1, "n": 3, "cases": 48, "cases_undefined": 0}, "0.500 ± 0.100"),
])
def test_means_over_folds_say_over_how_many(stats: dict[str, float], text: str) -> None:
    """A metric undefined in some folds showed nan, or a mean over one fold as ± 0.000."""
    assert mean_over_folds(stats, 3) == text


def test_a_model_that_predicts_nothing_shows_how_few_slices_its_hd95_covers(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A model predicting nothing scored HD95 0.000 ± 0.000, the best, in report.md: its HD95
    is undefined on every slice with a lesion, so only the empty slices' 0 were averaged, and
    the report did not say how few slices that was. Counts recomputed from per_case.csv."""
    summary = api.cross_validate(synthetic_folder, tmp_path / "cv", folds=2, epochs=1, size=64,
                                 batch_size=4, model="unet", model_options={"width": 4},
                                 threshold=0.999)
    with (tmp_path / "cv" / "per_case.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["precision"] == "" for row in rows)  # nothing predicted on any slice
    lesions = sum(row["sensitivity"] != "" for row in rows)
    empty = len(rows) - lesions
    assert (lesions, empty) == (13, 3)
    assert summary["empty_mask_counts"] == {"lesion_slices": lesions,
                                            "lesion_slices_predicted_empty": lesions,
                                            "empty_slices_predicted_lesion": 0}
    hd95 = summary["mean_std_over_folds"]["hd95"]
    assert (hd95["mean"], hd95["cases"], hd95["cases_undefined"]) == (0.0, empty, lesions)
    assert summary["mean_std_over_folds"]["dice"]["cases_undefined"] == 0
    report = (tmp_path / "cv" / "report.md").read_text()
    assert f"**0.000 ± 0.000 ({empty} of {len(rows)} slices)** |" in report  # HD95
    assert f"**0.000 ± 0.000 ({lesions} of {len(rows)} slices)** |" in report  # sensitivity
    for k, fold in enumerate(summary["per_fold"]):
        tested = [row for row in rows if row["fold"] == str(k)]
        defined = sum(row["hd95"] != "" for row in tested)
        assert fold["slices_defined"]["hd95"] == defined
        line = next(line for line in report.splitlines() if line.startswith(f"| {k} |"))
        assert line.endswith(f"| – | 0.000 ({defined} of {len(tested)}) |")
    assert (f"- HD95 is undefined, and left out of its means, on {lesions} of {len(rows)} "
            f"slices: {lesions} of the {lesions} slices with a lesion, on which the model "
            "predicted nothing (missed lesions, no HD95 penalty), and 0 without a lesion"
            in report)
    written = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert written["pooled_per_case"]["hd95"] == {"mean": 0.0, "std": 0.0, "median": 0.0,
                                                  "n": empty, "undefined": lesions}


def test_hd95_of_a_folder_mixing_2d_files_and_volumes_is_given_per_unit(tmp_path: Path) -> None:
    """A generic folder of PNG slices (HD95 in px) and a NIfTI volume (HD95 in mm) got one HD95
    mean of px and mm alike, under a header reading just "hd95". Now each unit apart, in
    per_case.csv, summary.json and report.md, recomputed here from per_case.csv."""
    data = load_dataset(mixed_unit_folder(tmp_path / "mix"))
    summary = api.cross_validate(data, tmp_path / "cv", folds=2, epochs=1, size=32,
                                 batch_size=4, model="unet", model_options={"width": 4},
                                 threshold=0.001)  # predicts lesion everywhere: HD95 defined
    with (tmp_path / "cv" / "per_case.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert "hd95" not in rows[0] and {"hd95_mm", "hd95_px"} <= set(rows[0])
    in_mm = [float(row["hd95_mm"]) for row in rows if row["case_id"].startswith("v_z")]
    in_px = [float(row["hd95_px"]) for row in rows if row["case_id"].startswith("p")]
    assert (len(in_mm), len(in_px)) == (3, 5)
    assert all(row["hd95_px" if row["case_id"].startswith("v_z") else "hd95_mm"] == ""
               for row in rows)
    across, pooled = summary["mean_std_over_folds"], summary["pooled_per_case"]
    assert "hd95" not in across and "hd95" not in pooled
    assert pooled["hd95_mm"]["mean"] == pytest.approx(np.mean(in_mm))
    assert pooled["hd95_px"]["mean"] == pytest.approx(np.mean(in_px))
    assert (pooled["hd95_mm"]["n"], pooled["hd95_px"]["n"]) == (3, 5)
    first, second = summary["per_fold"]  # the volume and p3 tested in fold 0, p0-p2, p4 in 1
    assert first["hd95_mm"] == pytest.approx(np.mean(in_mm)) and math.isnan(second["hd95_mm"])
    assert second["hd95_px"] == pytest.approx(np.mean([float(row["hd95_px"]) for row in rows
                                                       if row["fold"] == "1"]))
    written = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert written["hd95_unit"] == "mm or px"
    assert written["hd95_slices_by_unit"] == {"mm": 3, "px": 5}
    report = (tmp_path / "cv" / "report.md").read_text()
    assert "| precision | hd95 (mm) | hd95 (px) |" in report and "| hd95 |" not in report
    assert ("- HD95 is in mm on the 3 slices of volumes (NIfTI, NRRD, MetaImage) and in px on the "
            "5 2D images, so it is given per unit (hd95_mm, hd95_px)") in report
    assert "HD95 is undefined" not in report  # every slice has its HD95, in its own unit


def test_slices_without_a_patient_id_beside_grouped_ones_are_counted(
        synthetic_folder: Path) -> None:
    """MedSeg's tr_im slices beside its rp_im volumes: the folds read "grouped by patient"
    alone, though the slices are each counted alone."""
    data = load_dataset(synthetic_folder)
    data.samples[:3] = [replace(s, patient_id=s.case_id) for s in data.samples[:3]]
    assert len(data.unidentified) == 3
    assert make_folds(data, 2, 0)[1] == (
        "2-fold, grouped by patient (seed 0); 3 of the 16 slices carry no patient id and are "
        "each counted alone, so slices of one patient among them may fall on both sides; a "
        "patients.csv (case_id,patient_id) in the data folder groups them")
    assert make_folds(load_dataset(synthetic_folder), 2, 0)[1] == (
        "2-fold, grouped by patient (seed 0)")
    # a patient named after one of its slices is no slice without a patient id
    data.samples[3:5] = [replace(s, patient_id=data.samples[3].case_id) for s in data.samples[3:5]]
    assert len(data.unidentified) == 3


def test_multiclass_folds_record_no_threshold_and_older_ones_are_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every multi-class report listed 'threshold': 0.4, never applied, and cv --resume compared
    it; folds recorded so are reused, and a default spelt out (epochs, width) is no change."""
    tiny = {"folds": 2, "epochs": None, "size": 32, "batch_size": 4, "model": "miniseg",
            "target": "multiclass"}
    monkeypatch.setattr("covseg.config.MAX_SLICE_PASSES", 8)  # 24 training slices a fold -> 1 epoch
    data = load_dataset("synthetic", "multiclass")
    first = api.cross_validate(data, tmp_path / "cv", **tiny)
    assert first["config"]["threshold"] is None
    assert "'threshold': None" in (tmp_path / "cv" / "report.md").read_text()
    for fold in (tmp_path / "cv").glob("fold_*"):
        record = json.loads((fold / "config.json").read_text())
        record["config"]["threshold"] = 0.4  # as covseg recorded before
        (fold / "config.json").write_text(json.dumps(record))

    def no_training(*args: object, **kwargs: object) -> None:
        pytest.fail("a finished fold was trained again")

    monkeypatch.setattr(crossval, "train", no_training)
    again = api.cross_validate(data, tmp_path / "cv", resume=True,
                               **{**tiny, "epochs": 1, "model_options": {"width": 1.0}})
    assert [f["dice"] for f in again["per_fold"]] == [f["dice"] for f in first["per_fold"]]


def test_a_refused_fold_shows_the_options_it_compared(tmp_path: Path) -> None:
    """The message compared the resolved options but printed the given ones: 'model_options:
    {} -> {}' for unet against miniseg, and 'epochs: default -> 2'."""
    data = load_dataset("synthetic")
    cases = [sample.case_id for sample in data.samples][:6]
    (tmp_path / "config.json").write_text(json.dumps({
        "config": TrainConfig(model="unet").to_dict(), "train_cases": cases[:4],
        "val_cases": []}))
    finished = {"per_case": [{"case_id": case} for case in cases[4:]]}
    message = "; ".join(crossval._fold_changes(tmp_path, TrainConfig(model="miniseg", epochs=2),
                                               finished, data, cases[:4], cases[4:], None,
                                               crossval.CV_VERB))
    assert "model: unet -> miniseg" in message and "epochs: 240 -> 2" in message
    assert (f"model_options: {model_options('unet')} -> {model_options('miniseg')}"
            in message)
    assert "{} -> {}" not in message and "default" not in message


def test_the_headline_over_folds_is_the_mean_and_sample_sd() -> None:
    """Every test's folds had two or equal values (mean == median), so a median over folds went
    unnoticed: folds of Dice 0.2, 0.8, 0.9 give 0.6333 +- 0.3786 (sample SD), not 0.8."""
    dice = [0.2, 0.8, 0.9]
    per_fold = [{"fold": k, "dice": d} for k, d in enumerate(dice)]
    rows = [{"fold": k, "case_id": f"c{k}", "dice": d, "sensitivity": d, "precision": d}
            for k, d in enumerate(dice)]
    begun = crossval.Begun(clock=0.0, utc="2026-12-05T00:00:00Z", resume=False, saved=())
    summary = crossval._summary(TrainConfig(), load_dataset("synthetic"), Path("cv"), "3 folds",
                                per_fold, rows, begun, 1.0, fingerprint="0" * 64)
    across = summary["mean_std_over_folds"]["dice"]
    assert across["mean"] == pytest.approx(1.9 / 3)
    # deviations -13/30, 5/30, 8/30: sum of squares 258/900 over n - 1 = 2
    assert across["std"] == pytest.approx(math.sqrt(258 / 1800))
    assert across["n"] == 3


def _summary(target: str) -> dict[str, object]:
    """A two-fold summary as cross-validation writes it, with a class's Dice beside the main
    metrics when ``target`` is multi-class."""
    stats = {"mean": 0.5, "std": 0.1, "n": 2}
    extra = {"ground-glass_dice": stats} if target == "multiclass" else {}
    return {"config": TrainConfig(model="unet", target=target).to_dict(), "synthetic": False,
            "data": "d", "folds": "f", "seconds": 60.0, "train_seconds": 60.0,
            "per_fold": [{"fold": k, "test_cases": 1, "epochs": 1, **dict.fromkeys(METRICS, 0.5)}
                         for k in range(2)],
            "mean_std_over_folds": dict.fromkeys(METRICS, stats) | extra,
            "empty_mask_rules": "r"}


def test_multiclass_reports_name_their_scores_of_any_lesion(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """A multi-class report's main columns said plain 'dice', 'iou', ... and its box plot
    'per-case Dice', though they score any lesion (label > 0), as evaluate's plot says. The
    box plot drew any lesion's Dice alone though per_case.csv holds each class's: a box per
    class follows, each box named as evaluate's are ("Dice, any lesion", "Dice, ground-glass":
    they read "any lesion, fold 0" and "ground-glass, all"). Its title and each fold's curves
    named the data's kind alone ("unet on SYNTHETIC data"): they name the folder, and a fold's
    curves its fold."""
    report = report_markdown(_summary("multiclass"), plotted=True)
    assert "| fold | test slices | dice (any lesion) | iou (any lesion) |" in report
    assert "- ground-glass_dice: 0.500 ± 0.100" in report
    assert "| fold | test slices | dice | iou |" in report_markdown(_summary("infection"),
                                                                    plotted=True)
    data = load_dataset("synthetic", "multiclass")
    summary = api.cross_validate(data, tmp_path / "cv", folds=2, epochs=1, size=32,
                                 batch_size=4, model="miniseg", target="multiclass")
    assert "dice (any lesion)" in (tmp_path / "cv" / "report.md").read_text()
    axes = saved_figures[-1].axes[0]
    assert axes.get_title() == "miniseg on synthetic:0 (SYNTHETIC data), per-case Dice"
    assert [t.get_text().split(" (n=")[0] for t in axes.get_xticklabels()] == [
        "Dice, any lesion, fold 0", "Dice, any lesion, fold 1", "Dice, any lesion, all",
        "Dice, ground-glass, all", "Dice, consolidation, all"]
    assert axes.get_ylabel() == "Dice per case"
    assert [figure.get_suptitle() for figure in saved_figures[:-1]] == [
        f"miniseg on synthetic:0 (SYNTHETIC data), fold {k} of 2 (no validation split)"
        for k in range(2)]
    assert summary["config"]["target"] == "multiclass"


def test_lung_cross_validations_name_their_dice_of_the_lungs(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """A lung model's box plot read "fold 0", "all" and "Dice per case", and its folds' curves
    "miniseg on ...", as a lesion model's: its Dice, of the lungs, is named so, as a
    multi-class model's is of any lesion."""
    api.cross_validate(load_dataset("synthetic", "lung"), tmp_path / "cv", folds=2, epochs=1,
                       size=32, batch_size=4, model="miniseg", target="lung")
    axes = saved_figures[-1].axes[0]
    assert [t.get_text().split(" (n=")[0] for t in axes.get_xticklabels()] == [
        "Dice, lungs, fold 0", "Dice, lungs, fold 1", "Dice, lungs, all"]
    assert [figure.get_suptitle() for figure in saved_figures[:-1]] == [
        f"miniseg lung model on synthetic:0 (SYNTHETIC data), fold {k} of 2 (no validation "
        "split)" for k in range(2)]


@pytest.mark.parametrize("unit", ["mm", "px"])
def test_report_names_the_unit_of_one_unit_hd95(unit: str) -> None:
    """Data of one unit gave a column of plain 'hd95', though data of both units and compare's
    table name it ('hd95 (mm)', 'HD95 (mm)')."""
    report = report_markdown({**_summary("infection"), "hd95_unit": unit}, plotted=True)
    assert f"| precision | hd95 ({unit}) |" in report and "| hd95 |" not in report


def test_the_hd95_units_line_names_every_volume_format_scored_in_mm() -> None:
    """The line said the slices in mm were of NIfTI volumes, while NRRD and MetaImage volumes
    (3D Slicer's, ITK-SNAP's) are scored in mm too."""
    line, = crossval.hd95_units_line({"mm": 3, "px": 5})
    assert line.startswith("- HD95 is in mm on the 3 slices of volumes (NIfTI, NRRD, MetaImage) "
                           "and in px on the 5 2D images, so it is given per unit")


def test_a_fold_trained_without_a_class_is_warned_of(tmp_path: Path) -> None:
    """Consolidation in one patient's slices only: the fold testing that patient trained
    without it, and the summary said nothing; its warnings now name the fold and class."""
    for k in range(4):
        label = np.zeros((32, 32), dtype=np.uint8)
        label[4:12, 4:12] = 1
        if k == 0:
            label[16:24, 16:24] = 2
        Image.fromarray(np.full((32, 32), 100 + k, dtype=np.uint8)).save(
            _made(tmp_path / "data" / "images") / f"s{k}.png")
        Image.fromarray(label).save(_made(tmp_path / "data" / "masks") / f"s{k}.png")
    data = load_dataset(tmp_path / "data", "multiclass")
    summary = api.cross_validate(data, tmp_path / "cv", folds=2, epochs=1, size=32,
                                 batch_size=4, model="miniseg", target="multiclass")
    folds = make_folds(data, 2, summary["config"]["seed"])[0]
    assert [note for note in summary["warnings"] if "training slices hold no" in note] == [
        f"fold {k}'s training slices hold no consolidation (label 2), which other slices hold: "
        "its model learns it from no example" for k, (_, test) in enumerate(folds) if "s0" in test]


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_report_gives_short_run_times_in_seconds() -> None:
    """A 2.7 s run read "training 0.0 min summed over folds", as if it cost nothing."""
    short = {**_summary("infection"), "seconds": 5.9, "train_seconds": 2.74}
    assert ("- Run time: 5.9 s in this invocation; training 2.7 s summed over folds"
            in report_markdown(short, plotted=True))
    long = {**_summary("infection"), "seconds": 60.0, "train_seconds": 150.0}
    assert ("- Run time: 1.0 min in this invocation; training 2.5 min summed"
            in report_markdown(long, plotted=True))


def test_report_run_time_counts_only_resumes_that_trained_folds() -> None:
    """A --resume of a finished run trains nothing and adds no seconds, yet the run time read
    "over the command that started it and the resumes that trained folds (1 resume in all)".
    Resumes recording trained_folds false are now named apart; a killed one, which records no
    trained_folds and whose seconds count, is among those that trained."""
    base = {**_summary("infection"), "seconds": 1.1, "train_seconds": 0.4}
    idle = {"command": "covseg cv d --resume", "trained_folds": False}
    trained, killed = {**idle, "trained_folds": True}, {"command": "covseg cv d --resume"}
    walls = {"started": "over the command that started it",
             "none": "(1 resume that trained none left out)",
             "two": "and the 2 resumes that trained folds;",
             "one": "and the 1 resume that trained folds (2 resumes that trained none left out);"}
    for resumes, wall in (([idle], "none"), ([killed, trained], "two"),
                          ([trained, idle, idle], "one")):
        assert (f"- Run time: 1.1 s {walls['started']} {walls[wall]}"
                in report_markdown({**base, "resumed_by": resumes}, plotted=True))


def test_report_and_plot_titles_read_for_a_user(tmp_path: Path) -> None:
    """report.md had two blank lines under its title (an empty line where the SYNTHETIC
    banner goes), and the box plot named the layout as covseg does ("unet on folders")."""
    assert "# Cross-validation: unet\n\n- Data: d\n" in report_markdown(_summary("infection"),
                                                                         plotted=True)
    synthetic = {**_summary("infection"), "synthetic": True}
    assert ("# Cross-validation: unet\n\n**SYNTHETIC data** (covseg's built-in generator): "
            "figures say nothing about real CT.\n\n- Data: d\n") in report_markdown(synthetic,
                                                                                 plotted=True)
    for part in ("images", "masks"):
        (tmp_path / part).mkdir()
        np.save(tmp_path / part / "x.npy", np.eye(8, dtype=np.uint8))
    data = load_dataset(tmp_path)
    assert crossval._title(TrainConfig(model="unet"), data) == (
        f"unet on {tmp_path.name} (generic (images/ + masks/) data), per-case Dice")
    assert crossval._title(TrainConfig(model="unet"), load_dataset("synthetic")) == (
        "unet on synthetic:0 (SYNTHETIC data), per-case Dice")
    assert data.describe() == (f"generic (images/ + masks/) data at {tmp_path.resolve()}: 1 slice, "
                               "patient ids unknown: each slice counted alone, target infection "
                               "(2 classes)")


@pytest.mark.parametrize("held, kind", [("config.json", "a training run"),
                                        ("best.pt", "a training run"),
                                        ("comparison.json", "a model comparison")])
def test_a_folder_holding_a_run_or_comparison_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: str, kind: str) -> None:
    """cv --out RUN wrote a cross-validation's summary and folds beside the run's config.json
    and best.pt, one folder whose records contradict each other; --fold K too."""
    def no_training(*args: object, **kwargs: object) -> None:
        pytest.fail("a fold trained in a folder holding another command's output")

    monkeypatch.setattr(crossval, "train", no_training)
    out = folder_holding(tmp_path / "run", held)
    message = (rf"^{out} holds {kind} \(.*\), not a cross-validation; "
               r"cross-validate into a new --out$")
    data = load_dataset("synthetic")
    with pytest.raises(CovsegError, match=message):
        crossval.cross_validate(TrainConfig(), data, out, folds=2)
    with pytest.raises(CovsegError, match=message):
        crossval.cross_validate_fold(TrainConfig(), data, out, 2, 0)
    assert [p.name for p in out.iterdir()] == [held]


def test_the_training_time_is_summed_over_folds_and_each_fold_validates_on_its_own_seed(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """Nothing checked summary.json's train_seconds against its folds: report.md's "summed over
    folds" could show the last fold's time alone. Nor which slices a fold validates on: every
    fold could validate on the seed-0 split whatever --seed, so a seed study read as less noisy
    than it is. Fold k trains with seed + k and validates on that seed's split of its slices."""
    data = load_dataset(synthetic_folder)
    cases = [s.case_id for s in data.samples]
    half = len(cases) // 2
    data.folds = [(cases[half:], cases[:half]), (cases[:half], cases[half:])]
    summary = api.cross_validate(data, tmp_path / "cv", epochs=1, size=32, batch_size=4,
                                 model="unet", model_options={"width": 4}, seed=3,
                                 val_fraction=0.25)
    folds = [json.loads((tmp_path / "cv" / f"fold_{k}" / "metrics.json").read_text())
             for k in range(2)]
    assert summary["train_seconds"] == pytest.approx(sum(f["train_seconds"] for f in folds))
    by_id = {s.case_id: s for s in data.samples}
    for k, (train_cases, _) in enumerate(data.folds):
        record = json.loads((tmp_path / "cv" / f"fold_{k}" / "config.json").read_text())
        _, val = validation_split([by_id[c] for c in train_cases], 0.25, 3 + k)
        assert val and sorted(record["val_cases"]) == sorted(val)


def test_folds_run_alone_then_the_summary_in_the_same_folder(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cv --fold K writes fold_K into its own --out, and the command without --fold reuses it
    there with --resume: a cross-validation's folder is no other command's. Without --resume,
    its work already there is refused, as train refuses a run's folder: a finished fold, the
    folds, or the summary were reused silently."""
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    folds = [api.cross_validate(data, out, fold=fold, **tiny) for fold in (0, 1)]
    assert not list(out.rglob("last.pt")), "a finished fold's last.pt, for resumes only, is gone"

    def no_training(*args: object, **kwargs: object) -> None:
        pytest.fail("a finished fold was trained again")

    monkeypatch.setattr(crossval, "train", no_training)
    advice = "; pass resume=True to reuse and continue it, or pick a new out$"
    for fold in (0, 1):
        with pytest.raises(CovsegError, match=re.escape(
                f"{out / f'fold_{fold}'} already holds fold {fold} of a cross-validation "
                "(finished)") + advice):
            api.cross_validate(data, out, fold=fold, **tiny)
        reused = api.cross_validate(data, out, fold=fold, resume=True, **tiny)
        assert reused["summary"]["dice"] == folds[fold]["summary"]["dice"]
    held = re.escape(f"{out} already holds a cross-validation (fold_0, fold_1)")
    with pytest.raises(CovsegError, match=held + advice):
        api.cross_validate(data, out, **tiny)
    with pytest.raises(CovsegError, match=held + "; pass --resume to reuse and continue it, "
                                          "or pick a new --out$"):  # compare's and the demo's
        crossval.cross_validate(TrainConfig(), data, out, 2)  # way in, under their command
    assert not (out / "summary.json").exists()
    summary = api.cross_validate(data, out, resume=True, **tiny)
    assert len(summary["per_fold"]) == 2
    assert [f["dice"] for f in summary["per_fold"]] == [
        f["summary"]["dice"]["mean"] for f in folds]
    with pytest.raises(CovsegError, match=re.escape(
            f"{out} already holds a cross-validation (fold_0, fold_1, summary.json)") + advice):
        api.cross_validate(data, out, **tiny)
    api.cross_validate(data, out, resume=True, **tiny)  # a finished summary too


@pytest.mark.usefixtures("last_pt_kept")
def test_a_fold_starts_beside_another_fold_midway_in_the_same_folder(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """Folds run side by side into one --out (one process each, as docs/commands.md says): fold 0
    started while fold 1 is midway (its folder holding its record and last epoch) is no reuse
    of anything and needs no --resume; fold 1 itself is continued only with it."""
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    api.cross_validate(data, out, fold=1, **tiny)
    midway = out / "fold_1"
    for name in ("fold_metrics.json", "metrics.json", "test_per_case.csv"):
        (midway / name).unlink()  # as a fold still training has it: its record, checkpoints
    assert {"config.json", "last.pt", "best.pt"} <= {p.name for p in midway.iterdir()}
    assert api.cross_validate(data, out, fold=0, **tiny)["fold"] == 0
    assert json.loads((out / "fold_0" / "fold_metrics.json").read_text())["hd95_unit"] == "px"
    with pytest.raises(CovsegError, match=re.escape(
            f"{midway} already holds fold 1 of a cross-validation (stopped midway); pass "
            "resume=True")):
        api.cross_validate(data, out, fold=1, **tiny)
    assert not (midway / "fold_metrics.json").exists()
    assert api.cross_validate(data, out, fold=1, resume=True, **tiny)["test_cases"] > 0
    assert (midway / "fold_metrics.json").is_file()


TINY_FOLDS = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
              "model_options": {"width": 4}}
TINY_FOLDS_RECIPE = {key: value for key, value in TINY_FOLDS.items() if key != "folds"}


def test_a_cv_fingerprints_the_whole_set_once_and_a_resume_once_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        fingerprinted: list[int]) -> None:
    """The whole set's data fingerprint (about 4 ms a slice) was taken for every fold as it was
    tested, and again for each finished fold on a resume, twice (checked before any fold ran,
    then as it was reused): 9 whole sets' worth in a fresh 5-fold run, 10 in a resume of one.
    Now once per command, plus each fold's training slices as it trains; each shown on a bar
    (a log, captured stderr, is written every LOGGED_EVERY_S, 0 here)."""
    from covseg import progress

    monkeypatch.setattr(progress, "LOGGED_EVERY_S", 0.0)
    data = load_dataset("synthetic")
    whole = len(data.samples)
    api.cross_validate(data, tmp_path / "cv", **{**TINY_FOLDS, "folds": 3})
    trained = [len(train) for train, _ in make_folds(data, 3, TrainConfig().seed)[0]]
    assert sorted(fingerprinted) == sorted([whole, *trained])
    assert capsys.readouterr().err.count("data fingerprint: 100%") == 1 + 3
    fingerprinted.clear()
    api.cross_validate(data, tmp_path / "cv", resume=True, **{**TINY_FOLDS, "folds": 3})
    assert fingerprinted == [whole]  # the finished folds checked and reused on one fingerprint
    assert capsys.readouterr().err.count("data fingerprint: 100%") == 1


def test_a_resume_after_a_fold_trained_again_alone_writes_the_summary_again(
        tmp_path: Path) -> None:
    """Every fold finished beside a summary.json: a --resume returned that summary as a
    finished run's ("nothing to do"), though fold_1 was deleted and trained again alone
    (``--fold 1``) after it was written, so that the summary and report told of the old fold.
    Only a summary written after every fold is a finished run's, which a resume returns with
    its undefined metrics NaN, as a fresh summary has them (JSON holds them as null)."""
    data = load_dataset("synthetic")
    out = tmp_path / "cv"
    api.cross_validate(data, out, **TINY_FOLDS)
    shutil.rmtree(out / "fold_1")
    api.cross_validate(data, out, fold=1, **TINY_FOLDS)
    summary = api.cross_validate(data, out, resume=True, **TINY_FOLDS)
    assert not isinstance(summary, AlreadyTrained)
    assert summary["resumed_by"][-1]["trained_folds"] is False
    written = json.loads((out / "summary.json").read_text())
    written["mean_std_over_folds"]["precision"].update(mean=None, std=None)
    written["per_fold"][0]["precision"] = None
    (out / "summary.json").write_text(json.dumps(written))
    again = api.cross_validate(data, out, resume=True, **TINY_FOLDS)
    assert isinstance(again, AlreadyTrained)
    assert math.isnan(again["mean_std_over_folds"]["precision"]["mean"])
    assert math.isnan(again["per_fold"][0]["precision"])


def test_a_resume_trains_again_a_fold_whose_best_pt_is_damaged(tmp_path: Path) -> None:
    """A finished cross-validation whose fold_0/best.pt was truncated: a --resume said "already
    cross-validated; nothing to do". The fold is trained again, as a fold deleted is, and the
    summary written again from the folds."""
    data, out = load_dataset("synthetic"), tmp_path / "cv"
    api.cross_validate(data, out, **TINY_FOLDS)
    best = out / "fold_0" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    summary = api.cross_validate(data, out, resume=True, **TINY_FOLDS)
    assert not isinstance(summary, AlreadyTrained)
    assert summary["resumed_by"][-1]["trained_folds"] is True
    assert crossval.fold_done(out / "fold_0")
    assert isinstance(api.cross_validate(data, out, resume=True, **TINY_FOLDS), AlreadyTrained)


def test_a_fold_trained_again_and_stopped_midway_is_no_finished_fold(tmp_path: Path) -> None:
    """A finished fold's best.pt and metrics.json deleted, trained again by a --resume that was
    stopped after its first epoch: its old fold_metrics.json stayed beside the new best.pt, so
    the fold read as finished and the next resume reused the old test of a model gone. The
    record goes as the fold starts training again; the next resume finishes the fold."""
    data, out = load_dataset("synthetic"), tmp_path / "cv"
    recipe = {**TINY_FOLDS, "epochs": 2}
    api.cross_validate(data, out, **recipe)
    fold = out / "fold_0"
    for name in ("best.pt", "metrics.json"):
        (fold / name).unlink()
    with stopped_after_epoch():
        api.cross_validate(data, out, resume=True, **recipe)
    assert (fold / "best.pt").is_file() and not (fold / "fold_metrics.json").exists()
    assert not crossval.fold_done(fold)
    summary = api.cross_validate(data, out, resume=True, **recipe)
    assert not isinstance(summary, AlreadyTrained) and crossval.fold_done(fold)
    assert isinstance(api.cross_validate(data, out, resume=True, **recipe), AlreadyTrained)


@pytest.mark.parametrize("fold", [None, 0])
def test_a_fold_whose_metrics_json_alone_was_deleted_is_trained_again_on_resume(
        tmp_path: Path, synthetic_folder: Path, fold: int | None) -> None:
    """Its best.pt and fold_metrics.json kept, the fold read as done: ``--fold 0 --resume``
    said so, and the resume that writes the summary (which reads the fold's epochs and training
    time there) was refused, "metrics.json: unreadable run record ([Errno 2] No such file or
    directory ...); delete fold_0". A run without its metrics.json is unfinished, as a resume
    of ``covseg train`` reads it: the fold is trained again, then summarised."""
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    recipe = {**TINY_FOLDS, "size": 32}
    api.cross_validate(data, out, **recipe)
    metrics = out / "fold_0" / "metrics.json"
    metrics.unlink()
    api.cross_validate(data, out, fold=fold, resume=True, **recipe)
    assert json.loads(metrics.read_text())["epochs"] == 1
    summary = api.cross_validate(data, out, resume=True, **recipe)
    assert [f["epochs"] for f in summary["per_fold"]] == [1, 1]
    assert isinstance(api.cross_validate(data, out, resume=True, **recipe), AlreadyTrained)


def test_a_resume_loads_each_fold_model_an_older_covseg_finished_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fold whose metrics.json records no best_sha256 (finished before covseg kept it) is
    loaded to tell whether its best.pt is damaged: a resume loaded each such fold's model
    several times. Once for each file identity now, as the recorded ones are hashed once."""
    import torch

    data, out = load_dataset("synthetic"), tmp_path / "cv"
    api.cross_validate(data, out, **TINY_FOLDS)
    for record in [*out.glob("fold_*/*metrics.json"), out / "summary.json"]:
        written = json.loads(record.read_text())
        for kept in [written, *written.get("per_fold", [])]:
            kept.pop("best_sha256", None)
        record.write_text(json.dumps(written))
    time.sleep(0.2)  # older than RECENT_NS: its file times tell a rewrite
    loads = calls_counted(monkeypatch, torch, "load")
    assert isinstance(api.cross_validate(data, out, resume=True, **TINY_FOLDS), AlreadyTrained)
    loaded = [str(args[0]) for args in loads if str(args[0]).endswith("best.pt")]
    assert sorted(loaded) == sorted(str(out / f"fold_{k}" / "best.pt") for k in (0, 1))


def test_a_finished_cv_copied_without_its_file_times_resumes_as_finished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished cv was told by file times: summary.json written after every fold's
    fold_metrics.json. A copy made without them (``cp -r`` without ``-p``), or a clock that
    gives summary.json an earlier time, made a --resume summarise the finished run again, as
    if a fold had been trained again since. It is told by what the folds' records say. A lock
    file a run killed outright left (copied with the run while it ran) was replaced by the
    resume and removed, as by one refused for another recipe: both leave it as it was now."""
    data = load_dataset("synthetic")
    run, copy = tmp_path / "cv", tmp_path / "copy"
    api.cross_validate(data, run, **TINY_FOLDS)
    shutil.copytree(run, copy, copy_function=shutil.copyfile)  # no times kept
    os.utime(copy / "summary.json", (0, 0))  # whatever order the copy took
    (copy / LOCK_FILE).write_text("999999999\n")  # no such run holds it
    before = {path: path.read_bytes() for path in sorted(copy.rglob("*")) if path.is_file()}
    monkeypatch.setattr(crossval, "train", lambda *_, **__: pytest.fail("a fold trained"))
    again = api.cross_validate(data, copy, resume=True, **TINY_FOLDS)
    assert isinstance(again, AlreadyTrained)
    with pytest.raises(CovsegError, match=r"lr: "):
        api.cross_validate(data, copy, resume=True, **{**TINY_FOLDS, "lr": 0.5})
    assert before == {path: path.read_bytes() for path in sorted(copy.rglob("*"))
                      if path.is_file()}


def test_a_summary_names_its_data_each_folds_best_pt_and_its_fold_count(tmp_path: Path) -> None:
    """summary.json named neither the data nor the best.pt of a fold, and its recipe no fold
    count (only the text of ``folds``), so that the recipe given back to cross_validate ran the
    default 5 folds; fold_metrics.json named no best.pt its rows came from. Each is recorded
    now, the SHA-256s read from each fold's own record; a finished run whose summary an
    earlier covseg wrote without them is still returned by a resume, left as it was."""
    import hashlib

    data = load_dataset("synthetic")
    out = tmp_path / "cv"
    summary = api.cross_validate(data, out, **TINY_FOLDS)
    assert summary["config"]["folds"] == TINY_FOLDS["folds"]
    for k, fold in enumerate(summary["per_fold"]):
        best = hashlib.sha256((out / f"fold_{k}" / "best.pt").read_bytes()).hexdigest()
        metrics = json.loads((out / f"fold_{k}" / "fold_metrics.json").read_text())
        assert fold["best_sha256"] == metrics["best_sha256"] == best
        assert summary[DATA_FINGERPRINT] == metrics[DATA_FINGERPRINT]
    assert "best_sha256" not in summary["mean_std_over_folds"]  # no metric
    written = json.loads((out / "summary.json").read_text())
    older = {**written, "config": {key: value for key, value in written["config"].items()
                                   if key != "folds"},
             "per_fold": [{key: value for key, value in fold.items() if key != "best_sha256"}
                          for fold in written["per_fold"]]}
    del older[DATA_FINGERPRINT]
    (out / "summary.json").write_text(json.dumps(older))
    os.utime(out / "summary.json")  # written after its folds, as a finished run's
    again = api.cross_validate(data, out, resume=True, **TINY_FOLDS)
    assert isinstance(again, AlreadyTrained) and DATA_FINGERPRINT not in again
    assert json.loads((out / "summary.json").read_text()) == older


def test_a_fold_run_alone_returns_its_best_sha256_as_its_records_and_the_summary_hold_it(
        tmp_path: Path) -> None:
    """``fold=K`` returned the fold's summary without the best_sha256 its fold_metrics.json and
    the whole run's ``per_fold`` record: it returns it now, as recorded, run or resumed."""
    data = load_dataset("synthetic")
    out = tmp_path / "cv"
    runs = [api.cross_validate(data, out, fold=k, **TINY_FOLDS) for k in range(2)]
    resumed = api.cross_validate(data, out, fold=1, resume=True, **TINY_FOLDS)
    summary = api.cross_validate(data, out, resume=True, **TINY_FOLDS)
    for fold in [*runs, resumed]:
        k = fold["fold"]
        recorded = json.loads((out / f"fold_{k}" / "fold_metrics.json").read_text())
        assert fold["best_sha256"] == recorded["best_sha256"] is not None
        assert fold["best_sha256"] == summary["per_fold"][k]["best_sha256"]


def test_a_finished_summary_read_back_keeps_a_folds_unrecorded_best_sha256_null() -> None:
    """A fold trained before its metrics.json held best_sha256 is summarised with it null; read
    back by a resume, its undefined metrics are NaN again, but the missing hash stays null."""
    fold = {"fold": 0, "best_sha256": None, "precision": None, "dice": 0.5}
    summary = crossval._undefined_as_nan({"per_fold": [fold], "mean_std_over_folds": {}})
    [read] = summary["per_fold"]
    assert read["best_sha256"] is None and math.isnan(read["precision"]) and read["dice"] == 0.5


def _as_killed_before_its_first_epoch(fold: Path) -> None:
    """Leave ``fold`` as a run killed outright before its first epoch does: its record and the
    lock file no run holds any more."""
    for path in fold.iterdir():
        if path.name != "config.json":
            path.unlink()
    (fold / LOCK_FILE).write_text("999999\n")


def test_a_fold_killed_before_its_first_epoch_starts_afresh_as_a_run_does(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A fold holding only its record (and a stale lock file) was refused without --resume
    ("stopped midway"), fold alone or whole, where ``train`` replaces such a record."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    api.cross_validate(data, out, fold=0, **TINY_FOLDS)
    _as_killed_before_its_first_epoch(out / "fold_0")
    assert api.cross_validate(data, out, fold=0, **TINY_FOLDS)["fold"] == 0
    assert (out / "fold_0" / "fold_metrics.json").is_file()
    _as_killed_before_its_first_epoch(out / "fold_0")
    summary = api.cross_validate(data, out, **TINY_FOLDS)
    assert [f["fold"] for f in summary["per_fold"]] == [0, 1]
    assert not list(out.rglob(LOCK_FILE))


def test_a_cv_resume_removes_the_temporary_files_a_killed_run_left_in_out_and_its_folds(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A cv killed with ``kill -9`` left its hidden ``fold_0/.best.XXXXXXXX.pt`` (and a
    summary's temporary in ``out``) after the ``--resume`` that finished it, against
    docs/outputs.md."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    api.cross_validate(data, out, fold=0, **TINY_FOLDS)
    (out / "fold_1").mkdir()
    left = [out / "fold_1" / ".best.rja6h2ai.pt", out / ".summary.k2j4h5g6.json"]
    for path in left:
        path.write_bytes(b"partial")
    (out / ".notes").write_text("mine")
    api.cross_validate(data, out, resume=True, **TINY_FOLDS)
    assert not [path for path in left if path.exists()]
    assert (out / ".notes").read_text() == "mine"


def test_a_fold_another_run_writes_is_refused_naming_that_run(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """``cv --fold K`` started while another run wrote fold K was told the fold "stopped
    midway; pass --resume" (its saved epochs and lock file judged before the lock was tried),
    and the --resume it advised was refused by the lock."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    api.cross_validate(data, out, fold=0, **TINY_FOLDS)
    fold = out / "fold_0"
    (fold / "fold_metrics.json").unlink()  # midway, as the other run has it
    held = re.escape(f"another covseg run is writing to {fold} (pid {os.getpid()}); wait for "
                     "it to end, or pick another out")
    with held_by_another_thread(fold):  # the other run
        with pytest.raises(CovsegError, match=f"^{held}$"):
            api.cross_validate(data, out, fold=0, **TINY_FOLDS)
        with pytest.raises(CovsegError, match=f"^{held}$"):
            api.cross_validate(data, out, **TINY_FOLDS)
    with pytest.raises(CovsegError, match="stopped midway"):  # that run gone: as it left it
        api.cross_validate(data, out, fold=0, **TINY_FOLDS)


def test_a_whole_cross_validation_holds_its_out_and_folds_alone_do_not(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """Two whole ``covseg cv`` runs started at once into one --out met only at their folds'
    locks, so both wrote summary.json and the report; a whole run now holds --out's lock, and
    the second is refused in one line naming the first, before any fold (also where folds are
    there: not "pass --resume"). ``cv --fold K`` alone runs beside it, as documented."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    held = re.escape(f"another covseg run is writing to {out} (pid {os.getpid()}); wait for "
                     "it to end, or pick another out")
    with held_by_another_thread(out):
        with pytest.raises(CovsegError, match=f"^{held}$"):
            api.cross_validate(data, out, **TINY_FOLDS)
        with pytest.raises(CovsegError, match=f"^{held}$".replace(" out$", " --out$")):
            crossval.cross_validate(TrainConfig(**TINY_FOLDS_RECIPE), data, out, folds=2)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE], "no fold was started"
        assert api.cross_validate(data, out, fold=1, **TINY_FOLDS)["fold"] == 1
        with pytest.raises(CovsegError, match=f"^{held}$"):  # not "pass --resume"
            api.cross_validate(data, out, **TINY_FOLDS)
    summary = api.cross_validate(data, out, resume=True, **TINY_FOLDS)
    assert [f["fold"] for f in summary["per_fold"]] == [0, 1]
    assert not list(out.rglob(LOCK_FILE))


def test_a_fold_finished_before_effusion_was_renamed_is_read_with_its_new_key(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """Label 3's metrics were ``pleural-effusion_*`` before they became ``effusion_*``: a
    resume over folds finished before and after the rename reported both, each over one
    fold. A finished fold's old keys are read as the new ones."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    for fold, key, dice in ((0, "pleural-effusion", 0.25), (1, "effusion", 0.75)):
        api.cross_validate(data, out, fold=fold, **TINY_FOLDS)
        metrics = out / f"fold_{fold}" / "fold_metrics.json"
        finished = json.loads(metrics.read_text())
        for row in finished["per_case"]:
            row.update({f"{key}_dice": dice, f"{key}_hd95": None})
        metrics.write_text(json.dumps(finished))
    summary = api.cross_validate(data, out, resume=True, **TINY_FOLDS)
    across = summary["mean_std_over_folds"]
    assert not [key for key in across if key.startswith("pleural")]
    assert across["effusion_dice"]["mean"] == pytest.approx(0.5)
    assert across["effusion_dice"]["n"] == 2 and across["effusion_hd95"]["n"] == 0
    report = (out / "report.md").read_text()
    assert "- effusion_dice: 0.500 ± 0.354" in report and "pleural" not in report
    assert "pleural" not in (out / "per_case.csv").read_text()


def test_a_fold_stopped_midway_and_resumed_with_another_folds_names_the_split(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A stopped fold resumed with another --folds was told it "was trained on other data
    (other slices, images or masks ...); pick a new --out" about the fold's folder: the data
    were the same, the split was not, and the fold's folder is not the --out given."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    fold = fold_stopped_midway(data, out, 0, **TINY_FOLDS)
    record = json.loads((fold / "config.json").read_text())
    assert record["folds"] == 2
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{fold}: stopped midway on another split of the data (2 folds then, 3 now); resume "
            f"with folds=2, or cross-validate into a new out than {out}") + "$"):
        api.cross_validate(data, out, fold=0, resume=True, **{**TINY_FOLDS, "folds": 3})
    refused_without_fold_count(data, fold, (
        f"{fold}: stopped midway on another split of the data (its training slices differ: "
        "another folds, seed or data set); resume with the options it was started "
        f"with, or cross-validate into a new out than {out}"))
    assert api.cross_validate(data, out, fold=0, resume=True, **TINY_FOLDS)["fold"] == 0


def test_a_later_fold_stopped_midway_on_another_split_is_refused_before_any_fold_trains(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """Only the fold about to train was checked: fold 0 trained before fold 1's split was
    refused (and on Ray, the refusal came from fold 1's task, as "fold 1 failed on Ray")."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    fold = fold_stopped_midway(data, out, 1, **TINY_FOLDS)
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{fold}: stopped midway on another split of the data (2 folds then, 3 now)")):
        api.cross_validate(data, out, resume=True, **{**TINY_FOLDS, "folds": 3})
    assert not (out / "fold_0").exists()


def test_a_folder_of_folds_made_on_several_splits_names_them_all(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """Folds run alone with several --folds (fold_0 of 2, fold_1 of 3, stopped midway) were
    refused as the first fold's split alone ("resume with --folds 3"), whose resume was refused
    on the other fold ("resume with --folds 2"): the refusal names both splits and how to
    resume with either."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    api.cross_validate(data, out, fold=0, **TINY_FOLDS)
    fold_stopped_midway(data, out, 1, **{**TINY_FOLDS, "folds": 3})
    for folds in (2, 3):
        with pytest.raises(CovsegError, match="^" + re.escape(
                f"{out}: holds folds of 2 different splits of the data (fold_0 on 2 folds, "
                f"fold_1 on 3 folds; {folds} folds now); resume with folds=2 after deleting "
                f"{out / 'fold_1'}, or with folds=3 after deleting {out / 'fold_0'}, or "
                f"cross-validate into a new "
                f"out than {out}") + "$"):
            api.cross_validate(data, out, resume=True, **{**TINY_FOLDS, "folds": folds})
    shutil.rmtree(out / "fold_1")
    assert len(api.cross_validate(data, out, resume=True, **TINY_FOLDS)["per_fold"]) == 2


def test_a_fold_past_the_runs_count_made_on_another_split_is_refused_naming_it(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A 2-fold run resumed over a folder also holding fold_2 of a 3-fold split (``--fold 2
    --folds 3``) never looked at fold_2: it summed folds 0-1 without a word, fold_2 left
    there. It is refused as folds of several splits are, naming fold_2 and what to delete."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    api.cross_validate(data, out, **TINY_FOLDS)
    shutil.copytree(out / "fold_1", out / "fold_2")  # as --fold 2 --folds 3 would leave it
    record = json.loads((out / "fold_2" / "config.json").read_text())
    record["folds"], record["config"]["seed"] = 3, 2  # fold k is seeded seed + k
    (out / "fold_2" / "config.json").write_text(json.dumps(record))
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{out}: holds folds of 2 different splits of the data (fold_0 and fold_1 on 2 "
            f"folds, fold_2 on 3 folds; 2 folds now); resume with folds=2 after deleting "
            f"{out / 'fold_2'}, or with folds=3 after deleting {out / 'fold_0'} and "
            f"{out / 'fold_1'}, or cross-validate into a new out than {out}") + "$"):
        api.cross_validate(data, out, resume=True, **TINY_FOLDS)
    shutil.rmtree(out / "fold_2")
    assert len(api.cross_validate(data, out, resume=True, **TINY_FOLDS)["per_fold"]) == 2


@pytest.mark.parametrize(("verb", "given"), [(crossval.CV_VERB, "cv"), ("compare", ""),
                                             (api.DEMO_VERB, "")])
def test_a_fold_on_another_split_names_the_out_given_not_a_folder_inside_it(
        tmp_path: Path, verb: str, given: str) -> None:
    """Compare's models and the demo cross-validate in a folder inside the --out given (a
    model's folder, cv): their refusals said "into a new --out than OUT/MODEL"."""
    told = "seed 0 then, 3 now); resume with --seed 0"
    error = crossval._another_split_error(tmp_path / "cv" / "fold_0", "finished", told, verb,
                                          2, 3)
    assert str(error).endswith(f", or {verb} into a new --out than {tmp_path / given}")


def test_a_finished_fold_resumed_with_another_folds_or_seed_names_the_split(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A finished fold resumed with another --folds or --seed was refused as "finished with
    other settings or data (its training or test slices ...); ... or delete OUT to start over":
    good folds deleted over a mistyped option. It is refused as a fold stopped midway is,
    naming the split and the options to resume with; other changes keep the general refusal."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    fold = out / "fold_0"
    api.cross_validate(data, out, fold=0, **TINY_FOLDS)
    new_out = f", or cross-validate into a new out than {out}"
    for changed, told in (({"folds": 3}, "2 folds then, 3 now); resume with folds=2"),
                          ({"seed": 5}, "seed 0 then, 5 now); resume with seed=0"),
                          ({"folds": 3, "seed": 5},
                           ("2 folds then, 3 now; seed 0 then, 5 now); resume with folds=2 and "
                           "seed=0"))):
        refusal = "^" + re.escape(f"{fold}: finished on another split of the data ({told}"
                                  + new_out) + "$"
        with pytest.raises(CovsegError, match=refusal):
            api.cross_validate(data, out, resume=True, **{**TINY_FOLDS, **changed})
        with pytest.raises(CovsegError, match=refusal):  # run alone, as a whole run
            api.cross_validate(data, out, fold=0, resume=True, **{**TINY_FOLDS, **changed})
    general = re.escape(f"{fold}: finished with other settings or data (epochs: 1 -> 2; its "
                        "training or test slices (another folds, seed or data set)); ")
    with pytest.raises(CovsegError, match=f"^{general}"):  # not the split alone that differs
        api.cross_validate(data, out, resume=True, **{**TINY_FOLDS, "folds": 3, "epochs": 2})
    refused_without_fold_count(data, fold, (
        f"{fold}: finished with other settings or data (its training or test slices "
        "(another folds, seed or data set)); cross-validate into a new out, or delete "
        f"{out} to start over"))


@pytest.mark.parametrize("k", [0, 1, 3])
def test_the_split_of_fold_k_names_the_runs_seed_not_the_folds(tmp_path: Path, k: int) -> None:
    """Fold k trains with the run's seed + k: its record's seed less k is the seed the run was
    started with, the one to resume with (fold 1 of a --seed 0 run records seed 1)."""
    record = {"folds": 4, "config": {"seed": k}}  # started with seed 0
    assert crossval._split_told(record, tmp_path / "cv" / f"fold_{k}", 4, 5 + k) == (
        "seed 0 then, 5 now); resume with --seed 0")


def refused_without_fold_count(data: LoadedData, fold: Path, refusal: str) -> None:
    """Assert that ``fold``, its count of folds dropped from its config.json (as covseg wrote
    it before it kept the count), is refused in exactly ``refusal`` to a resume with 3 folds."""
    record = json.loads((fold / "config.json").read_text())
    del record["folds"]
    (fold / "config.json").write_text(json.dumps(record))
    with pytest.raises(CovsegError, match="^" + re.escape(refusal) + "$"):
        api.cross_validate(data, fold.parent, resume=True, **{**TINY_FOLDS, "folds": 3})


def test_a_cv_stopped_while_writing_its_summary_leaves_no_summary_and_resumes_all(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cv stopped (Ctrl-C) after summary.json, before report.md and the box plot, left a
    summary.json that looked final beside no report: summary.json is now written last, and a
    --resume of the finished folds writes all of them."""
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    out = tmp_path / "cv"

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(crossval, "box_plot", stopped)
        with pytest.raises(KeyboardInterrupt):
            api.cross_validate(load_dataset(synthetic_folder), out, **tiny)
    assert not (out / "summary.json").exists() and not (out / "report.md").exists()
    assert (out / "fold_0" / "fold_metrics.json").is_file()
    assert (out / "fold_1" / "fold_metrics.json").is_file()

    def no_training(*args: object, **kwargs: object) -> None:
        pytest.fail("a finished fold was trained again")

    monkeypatch.setattr(crossval, "train", no_training)
    summary = api.cross_validate(load_dataset(synthetic_folder), out, resume=True, **tiny)
    assert json.loads((out / "summary.json").read_text())["per_fold"] == summary["per_fold"]
    assert "dice_boxplot.png" in (out / "report.md").read_text()
    assert (out / "dice_boxplot.png").stat().st_size > 0


def test_a_cv_stopped_before_its_summary_counts_both_commands_time(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cv stopped (SIGTERM) after fold 0 and continued with --resume wrote the resume's
    wall-clock seconds alone: the first command's were lost, where a resumed run's add up. The
    stopped command is now recorded (stopped.json) and the summary sums both, keeping the
    first command's start, as a resume of a finished cv does. The record's recipe holds the
    count of folds, as the summary's does (it lacked it: given back to cross_validate, it ran
    the default 5 folds)."""
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    run_fold = crossval.run_fold

    def stopped_at_fold_1(config: TrainConfig, data: object, fold_dir: Path,
                          *args: object, **kwargs: object) -> object:
        if fold_dir.name == "fold_1":
            time.sleep(1.0)  # the first command's time, which the summary must keep
            raise Terminated
        return run_fold(config, data, fold_dir, *args, **kwargs)

    first_began = time.perf_counter()
    with monkeypatch.context() as patch, pytest.raises(Terminated):
        patch.setattr(crossval, "run_fold", stopped_at_fold_1)
        api.cross_validate(data, out, **tiny)
    first = time.perf_counter() - first_began
    stopped = json.loads((out / crossval.STOPPED_FILE).read_text())
    assert stopped["config"]["folds"] == tiny["folds"], "its recipe reruns these folds"
    assert 1.0 <= stopped["seconds"] <= first, "the sleep in fold 1 counted, within the command"
    resume_began = time.perf_counter()
    summary = api.cross_validate(data, out, resume=True, **tiny)
    assert stopped["config"] == summary["config"]
    assert stopped["data_path"] == summary["data_path"]
    both = first + time.perf_counter() - resume_began
    assert stopped["seconds"] < summary["seconds"] <= both, (summary["seconds"], both)
    [resume] = summary["resumed_by"]
    assert resume["trained_folds"] is True
    assert summary["seconds"] == pytest.approx(stopped["seconds"] + resume["seconds"])
    assert summary["started_utc"] == stopped["started_utc"] <= resume["started_utc"]
    assert summary["finished_utc"] == resume["finished_utc"]
    assert not (out / crossval.STOPPED_FILE).exists(), "summed into the summary"
    assert json.loads((out / "summary.json").read_text())["seconds"] == summary["seconds"]


def test_a_full_disk_after_the_folds_is_told_at_its_file_not_at_the_stops_record(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk at per_case.csv, after the folds, was told as one at stopped.json: the record
    of the stopped command, written on the way out, failed on the same disk and its error
    replaced the first. The resume, space freed, finishes the run."""
    tiny = {"folds": 2, "epochs": 1, "size": 32, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    disk_full_from(monkeypatch, out / "per_case.csv")
    with pytest.raises(CovsegError) as caught:
        api.cross_validate(data, out, **tiny)
    assert str(caught.value).startswith(f"no space left on device writing {out / 'per_case.csv'};")
    monkeypatch.undo()
    api.cross_validate(data, out, resume=True, **tiny)
    assert (out / "summary.json").is_file()


def test_a_cv_killed_before_its_summary_keeps_its_start_command_and_time(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A cv killed with ``kill -9`` (which writes no stopped.json) after fold 0, then a resume
    killed while training fold 1: the --resume that finished it recorded itself as the run's
    command and start, listed no resume and gave its own 0.1 s as the run time. The start is
    now the folds' record of the first command, each killed resume is listed, and each killed
    command's time runs to its last write in --out; a kill leaves the files simulated here."""
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    api.cross_validate(data, out, **tiny)
    for left in ("summary.json", "report.md", "per_case.csv", "dice_boxplot.png",
                 "fold_1/fold_metrics.json", "fold_1/test_per_case.csv"):
        (out / left).unlink()
    started, killed_resume = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"
    start = datetime.fromisoformat(started).timestamp()
    for fold, began, resumes in (("fold_0", started, []), ("fold_1", "2026-01-01T00:00:20Z",
                                 [{"command": "covseg cv data --out cv --resume",
                                   "started_utc": killed_resume}])):
        record = json.loads((out / fold / "config.json").read_text())
        (out / fold / "config.json").write_text(json.dumps(
            {**record, "command": "covseg cv data --out cv", "started_utc": began,
             "resumed_by": resumes}))
    for path in out.rglob("*"):  # the first command's last write 42 s in, the resume's 5 s
        written = start + (65.0 if "fold_1" in path.parts else 42.0)
        os.utime(path, (written, written))
    summary = api.cross_validate(data, out, resume=True, **tiny)
    assert summary["command"] == "covseg cv data --out cv" and summary["started_utc"] == started
    killed, resume = summary["resumed_by"]
    assert killed["started_utc"] == killed_resume and killed["seconds"] == 5.0
    assert resume["trained_folds"] is True and resume["started_utc"] > killed_resume
    assert summary["seconds"] == pytest.approx(47.0 + resume["seconds"])
    assert summary["config"] == json.loads((out / "summary.json").read_text())["config"]
    # 47 s and the resume's own: over 60 s, as on a loaded machine, it reads in minutes
    assert (f"Run time: {crossval.duration_text(summary['seconds'])} over the command that "
            "started it and the 2 resumes that trained folds;") in (out / "report.md").read_text()


def test_a_finished_fold_with_a_damaged_record_is_refused_naming_it_to_delete(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A finished fold's config.json holding "epochs": "1" was refused as the user's own
    "--epochs must be a whole number, got '1'", which they had given right; the record is
    named, and its fold to delete, as when it was read as another recipe."""
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    api.cross_validate(data, out, fold=0, **tiny)
    record = out / "fold_0" / "config.json"
    saved = json.loads(record.read_text())
    record.write_text(json.dumps({**saved, "config": {**saved["config"], "epochs": "1"}}))
    for fold in (None, 0):
        with pytest.raises(CovsegError) as caught:
            api.cross_validate(data, out, fold=fold, resume=True, **tiny)
        told = str(caught.value)
        assert told.startswith(f"{record}: unreadable run record (")
        assert told.endswith(f"); delete {out / 'fold_0'} to train that fold again, or pick a "
                             "new out")


def test_a_finished_fold_whose_records_lack_what_a_resume_reads_is_refused_naming_it(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A finished fold's config.json without its case lists or recipe is refused naming it,
    and its fold_metrics.json or metrics.json not JSON, without its per-case rows (or a row's
    case_id) or its training time, which ended in JSONDecodeError and KeyError tracebacks."""
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    api.cross_validate(data, out, fold=0, **tiny)
    api.cross_validate(data, out, fold=1, **tiny)
    fold = out / "fold_0"

    def drop(name: str, key: str) -> str:
        record = json.loads((fold / name).read_text())
        if key == "case_id":
            record["per_case"][0].pop(key)
        else:
            record.pop(key)
        return json.dumps(record)

    damages = [("config.json", drop("config.json", key))
               for key in ("config", "train_cases", "val_cases")]
    damages += [("fold_metrics.json", drop("fold_metrics.json", key))
                for key in ("per_case", "case_id")]
    damages += [("fold_metrics.json", "{"), ("metrics.json", drop("metrics.json", "epochs"))]
    for name, damaged in damages:
        kept = (fold / name).read_text()
        (fold / name).write_text(damaged)
        alone = () if name == "metrics.json" else (0,)  # metrics.json: read by the summary
        for only in (None, *alone):
            with pytest.raises(CovsegError) as caught:
                api.cross_validate(data, out, fold=only, resume=True, **tiny)
            told = str(caught.value)
            assert told.startswith(f"{fold / name}: unreadable run record (")
            assert told.endswith(f"); delete {fold} to train that fold again, or pick a new out")
        (fold / name).write_text(kept)
    assert not (out / "summary.json").exists()


def test_a_finished_fold_record_that_cannot_be_read_or_holds_no_object_names_its_fold(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A finished fold's config.json that cannot be read (here a folder: run as root, chmod 000
    reads) ended in the CLI's general message, not the fold's advice to delete it; a record
    holding a JSON list is refused saying so."""
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    fold = out / "fold_0"
    api.cross_validate(data, out, fold=0, **tiny)

    def refused(name: str, why: str) -> None:
        with pytest.raises(CovsegError) as caught:
            api.cross_validate(data, out, fold=0, resume=True, **tiny)
        told = str(caught.value)
        assert told.startswith(f"{fold / name}: unreadable run record (") and why in told
        assert told.endswith(f"); delete {fold} to train that fold again, or pick a new out")

    kept = (fold / "fold_metrics.json").read_text()
    (fold / "fold_metrics.json").write_text("[]")
    refused("fold_metrics.json", "(a JSON list, not an object)")
    (fold / "fold_metrics.json").write_text(kept)
    (fold / "config.json").unlink()
    (fold / "config.json").mkdir()
    refused("config.json", "Is a directory")


def test_where_only_some_folds_are_stale_the_refusal_names_those_folds_to_delete(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """Folds run alone with another recipe (--fold K) were refused with "delete OUT to start
    over", which deleted the good folds too: deleting the stale fold's folder is enough."""
    tiny = {"folds": 2, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    api.cross_validate(data, out, fold=0, epochs=1, **tiny)
    api.cross_validate(data, out, fold=1, epochs=2, **tiny)
    stale = out / "fold_1"
    told = re.escape(f"{stale}: finished with other settings or data (epochs: 2 -> 1); "
                     f"cross-validate into a new out, or delete {stale} to train it again "
                     "with these settings") + "$"
    with pytest.raises(CovsegError, match=told):
        api.cross_validate(data, out, resume=True, epochs=1, **tiny)
    with pytest.raises(CovsegError, match=told):  # the fold alone
        api.cross_validate(data, out, fold=1, resume=True, epochs=1, **tiny)
    kept = (out / "fold_0" / "fold_metrics.json").read_bytes()
    shutil.rmtree(stale)  # as the refusal said: fold_0 is reused, fold_1 trained again
    summary = api.cross_validate(data, out, resume=True, epochs=1, **tiny)
    assert (out / "fold_0" / "fold_metrics.json").read_bytes() == kept
    assert [f["epochs"] for f in summary["per_fold"]] == [1, 1]


def test_a_summary_of_an_earlier_covseg_is_the_same_recipe_as_the_fold_check_reads_it(
        tmp_path: Path) -> None:
    """A cv summary of 8-bit data that a covseg before 5 Dec wrote records the lung window
    (now null) and lacks cutmix and lesion_paste: compared as raw JSON it was "no summary of
    this recipe", so its --resume wrote its own command and 0.2 s as the run's, though the fold
    check took the folds as this recipe's. Both read a recorded recipe alike."""
    now = TrainConfig(model="miniseg", epochs=2, size=64).record(windowed=False)
    older = {key: value for key, value in now.items() if key not in ("cutmix", "lesion_paste")}
    assert now["window"] is None
    same = partial(crossval._same_recipe, tmp_path)
    assert same({**older, "window": [-1350.0, 150.0]}, now)
    assert not same({**older, "lr": 0.01}, now)
    assert not same(None, now) and not same({"lr": "x"}, now)


def test_a_resume_refused_before_it_trains_leaves_the_stopped_record_as_it_was(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``--resume`` that a fold's run refused in one line, having trained nothing, replaced
    stopped.json with its own record (another recipe: the stopped command's start and time
    lost) or was listed there as a resume that trained folds, its seconds added (other data).
    A command is recorded only where it trained: the refused ones leave the record as it was."""
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}}
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    other = load_dataset(write_synthetic(tmp_path / "other", seed=2, patients=8,
                                         slices_per_patient=2, size=64))
    train = crossval.train

    def stopped_once_trained(*args: object, **kwargs: object) -> None:
        train(*args, **kwargs)
        raise Terminated

    with monkeypatch.context() as patch, pytest.raises(Terminated):
        patch.setattr(crossval, "train", stopped_once_trained)
        api.cross_validate(data, out, **tiny)
    record = (out / crossval.STOPPED_FILE).read_bytes()
    with pytest.raises(CovsegError, match="trained otherwise"):
        api.cross_validate(data, out, resume=True, **{**tiny, "lr": 0.001})
    with pytest.raises(CovsegError, match="trained on other data"):
        api.cross_validate(other, out, resume=True, **tiny)
    assert (out / crossval.STOPPED_FILE).read_bytes() == record
    summary = api.cross_validate(data, out, resume=True, **tiny)
    stopped = json.loads(record)
    [resume] = summary["resumed_by"]
    assert summary["started_utc"] == stopped["started_utc"]
    assert summary["seconds"] == pytest.approx(stopped["seconds"] + resume["seconds"])


def test_a_run_started_afresh_replaces_a_stopped_record_left_from_another(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A stopped.json of another recipe left in --out (its folds deleted to start over) kept
    a fresh run's stop from being recorded, so its --resume recorded itself as the start and
    lost the first command's time."""
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    config = TrainConfig(model="unet", model_options={"width": 4}, epochs=1, size=64)
    other = replace(config, lr=config.lr / 2)
    out.mkdir()
    (out / crossval.STOPPED_FILE).write_text(json.dumps(
        {"config": other.record(data.windowed), "seconds": 5.0}))
    begun = crossval.begin(out, 1, resume=False)
    with pytest.raises(Terminated), crossval.stop_recorded(config, data, out, begun):
        (out / "fold_0").mkdir()
        (out / "fold_0" / "last.pt").write_bytes(b"an epoch")  # it trained
        raise Terminated
    recorded = json.loads((out / crossval.STOPPED_FILE).read_text())
    assert recorded["config"] == {**config.record(data.windowed), "folds": 1}
    assert "resumed_by" not in recorded


def test_a_stopped_record_of_another_recipe_is_kept(tmp_path: Path,
                                                     synthetic_folder: Path) -> None:
    """A command of another recipe that trained before it stopped replaced the stopped.json
    of the run's own commands with its own record alone: that record is the run's, kept."""
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    config = TrainConfig(model="unet", model_options={"width": 4}, epochs=1, size=64)
    other = replace(config, lr=config.lr / 2)
    theirs = {"config": other.record(data.windowed), "seconds": 5.0}
    out.mkdir()
    (out / crossval.STOPPED_FILE).write_text(json.dumps(theirs))
    begun = crossval.begin(out, 1, resume=True)
    with pytest.raises(Terminated), crossval.stop_recorded(config, data, out, begun):
        (out / "fold_0").mkdir()
        (out / "fold_0" / "last.pt").write_bytes(b"an epoch")  # it trained
        raise Terminated
    assert json.loads((out / crossval.STOPPED_FILE).read_text()) == theirs
    (out / crossval.STOPPED_FILE).unlink()  # none there: this command's record is written
    begun = crossval.begin(out, 1, resume=True)
    with pytest.raises(Terminated), crossval.stop_recorded(config, data, out, begun):
        (out / "fold_0" / "last.pt").unlink()
        (out / "fold_0" / "last.pt").write_bytes(b"another epoch")
        raise Terminated
    assert json.loads((out / crossval.STOPPED_FILE).read_text())["config"] == {
        **config.record(data.windowed), "folds": 1}


def _stopped_after(out: Path, config: TrainConfig, data: object, folds: int, resume: bool,
                   work: Callable[[], object]) -> dict[str, object]:
    """The stopped.json a command on ``out``'s ``folds`` folds writes where ``work`` is what it
    did before it was stopped (SIGTERM)."""
    begun = crossval.begin(out, folds, resume=resume)
    with pytest.raises(Terminated), crossval.stop_recorded(config, data, out, begun):
        work()
        raise Terminated
    recorded: dict[str, object] = json.loads((out / crossval.STOPPED_FILE).read_text())
    return recorded


def test_a_stopped_command_is_recorded_by_its_members_epochs_and_folds_threads(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """An ensemble's fold writes its members' checkpoints, not the fold's: a command that
    trained members is recorded, as is one that trained a fold to its end (which deletes its
    last.pt) and was stopped before its test, with the thread count its folds record (one where they
    agree, one per fold where not, null for a fold that records none)."""
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    config = TrainConfig(model="unet", model_options={"width": 4}, epochs=1, size=64)
    for k in (0, 1):
        (out / f"fold_{k}").mkdir(parents=True)
        (out / f"fold_{k}" / "config.json").write_text(json.dumps({"threads": 3}))

    def member_epoch() -> None:  # a member's folder as an ensemble names it: member_old is none
        (out / "fold_1" / "member0-unet").mkdir()
        (out / "fold_1" / "member0-unet" / "last.pt").write_bytes(b"a member's epoch")

    assert _stopped_after(out, config, data, 2, False, member_epoch)["threads"] == 3
    (out / crossval.STOPPED_FILE).unlink()  # a resume that only tested fold 0 finished it
    tested = _stopped_after(out, config, data, 2, True,
                            lambda: (out / "fold_0" / "fold_metrics.json").write_text("{}"))
    assert tested["config"] == {**config.record(data.windowed), "folds": 2}
    (out / crossval.STOPPED_FILE).unlink()
    checkpoint = out / "fold_0" / "last.pt"
    checkpoint.write_bytes(b"an epoch")

    def rewritten_in_place() -> None:  # same inode: its time tells the epoch
        checkpoint.write_bytes(b"the next epoch")
        os.utime(checkpoint, ns=(0, checkpoint.stat().st_mtime_ns + 10**9))

    assert "config" in _stopped_after(out, config, data, 2, True, rewritten_in_place)
    (out / crossval.STOPPED_FILE).unlink()
    checkpoint.unlink()

    def trained_to_its_end() -> None:  # its last.pt written and deleted, its metrics.json left
        (out / "fold_1" / "metrics.json").write_text("{}")

    assert "config" in _stopped_after(out, config, data, 2, True, trained_to_its_end)
    (out / "fold_1" / "config.json").write_text(json.dumps({"threads": 2}))
    assert crossval._folds_threads(out, 3) == [3, 2, None]
    assert crossval._folds_threads(tmp_path / "none", 2) is None


def test_a_fresh_run_and_a_resume_past_an_unreadable_record_record_themselves_alone(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A stopped.json of this recipe left in --out is no part of a run started afresh (no
    --resume): its stop records its own start and time. A resume finding one it cannot read
    records itself, rather than nothing: a resume that finishes the run finishes no record."""
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    config = TrainConfig(model="unet", model_options={"width": 4}, epochs=1, size=64)
    out.mkdir()
    (out / crossval.STOPPED_FILE).write_text(json.dumps(
        {"config": config.record(data.windowed), "seconds": 500.0, "started_utc": "2020"}))

    def epoch(fold: Path = out / "fold_0") -> None:
        fold.mkdir(exist_ok=True)
        (fold / "last.pt").unlink(missing_ok=True)
        (fold / "last.pt").write_bytes(b"an epoch")

    fresh = _stopped_after(out, config, data, 1, False, epoch)
    assert fresh["seconds"] < 500.0 and fresh["started_utc"] != "2020"
    assert "resumed_by" not in fresh
    (out / crossval.STOPPED_FILE).write_text("{")
    resumed = _stopped_after(out, config, data, 1, True, epoch)
    assert resumed["config"] == {**config.record(data.windowed), "folds": 1}
    assert "resumed_by" not in resumed


def test_a_resume_finishing_a_stopped_run_ends_it_with_its_own_end_and_threads(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A resume that trains nothing (the folds were done, the first command stopped writing
    the summary) still finishes the run: the summary ends at its end, not at the stop; its
    threads are the folds' as they stand; and the start's provenance an earlier covseg left
    out (``command``) is null, not this resume's."""
    data, out = load_dataset(synthetic_folder), tmp_path / "cv"
    config = TrainConfig(model="unet", model_options={"width": 4}, epochs=1, size=64)
    out.mkdir()
    stopped = out / crossval.STOPPED_FILE
    stopped.write_text(json.dumps({"config": config.record(data.windowed), "seconds": 5.0,
                                   "started_utc": "2020", "finished_utc": "the stop",
                                   "threads": 1}))
    now = crossval._command_record(config, data, crossval.begin(out, 1, resume=True), out)
    summary = crossval._continued(json.loads(stopped.read_text()), False,
                                  {**now, "threads": 7}, trained=False, out=out)
    assert summary["finished_utc"] == now["finished_utc"] and summary["threads"] == 7
    assert summary["started_utc"] == "2020" and summary["seconds"] == 5.0
    assert summary["command"] is None and summary["resumed_by"][0]["command"] == now["command"]


def test_a_fold_whose_rare_class_fell_in_its_validation_patients_is_noted(
        tmp_path: Path) -> None:
    """The fold notes looked at a fold's training cases before its validation patients were
    taken out: effusion held by one patient, drawn for validation, was learned from no example
    without a word. The slices each fold trains on are checked."""
    names = [f"s{k}" for k in range(6)]
    for name in names:
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.full((4, 4), 100, np.uint8)).save(tmp_path / "images" / f"{name}.png")
        Image.fromarray(np.array([[0, 1, 2, 0]] * 4, np.uint8)).save(
            tmp_path / "masks" / f"{name}.png")
    config = TrainConfig(val_fraction=0.2, seed=3)
    splits = [(names[:5], names[5:])]
    by_id = {s.case_id: s for s in load_dataset(tmp_path, target="multiclass").samples}
    _, (held_out,) = validation_split([by_id[name] for name in names[:5]], 0.2, config.seed)
    Image.fromarray(np.array([[0, 1, 2, 3]] * 4, np.uint8)).save(
        tmp_path / "masks" / f"{held_out}.png")
    data = load_dataset(tmp_path, target="multiclass")
    assert crossval._fold_notes(config, data, splits) == [
        ("fold 0's training slices hold no effusion (label 3), which other slices hold: its "
         "model learns it from no example")]
    assert crossval._fold_notes(replace(config, val_fraction=0.0), data, splits) == []


def test_a_seed_without_room_for_the_folds_seeds_is_refused_before_fold_0_trains(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """cv --seed 4294967295 (2**32 - 1, the largest seed) trained fold 0, then was refused at
    fold 1, seeded one above it, leaving fold_0 behind. The room for the folds (5 by default,
    known once the data are read) is checked before any fold trains, naming the largest seed
    that leaves it, and that seed trains every fold, the last at 2**32 - 1."""
    out = tmp_path / "cv"
    with pytest.raises(CovsegError) as caught:
        api.cross_validate(synthetic_folder, out, model="miniseg", seed=MAX_SEED - 3, epochs=1,
                           size=32)
    assert str(caught.value) == (f"seed must be at most {MAX_SEED - 4} (2**32 - 1 less 4, which "
                                 f"this run adds for its folds or ensemble members), got "
                                 f"{MAX_SEED - 3}")
    assert not out.exists()
    api.cross_validate(synthetic_folder, out, folds=2, model="miniseg", seed=MAX_SEED - 1,
                       epochs=1, size=32, batch_size=4)
    assert [json.loads((out / f"fold_{k}" / "config.json").read_text())["config"]["seed"]
            for k in (0, 1)] == [MAX_SEED - 1, MAX_SEED]


def test_only_fold_k_folders_are_folds_in_fold_order(tmp_path: Path) -> None:
    """A user's copy of a fold (``fold_1.bak``) or a folder named ``fold_x`` was counted as a
    fold: alone it made ``cv`` refuse the folder ("already holds a cross-validation
    (fold_1.bak)"), and beside real folds it was named among them; folds are named in fold
    order, fold_2 before fold_10."""
    out = tmp_path / "cv"
    for name in ("fold_0", "fold_10", "fold_2", "fold_1.bak", "fold_x", "fold_01"):
        (out / name).mkdir(parents=True)
        (out / name / "fold_metrics.json").write_text("{}")
    with pytest.raises(CovsegError, match=re.escape(
            f"{out} already holds a cross-validation (fold_0, fold_2, fold_10); pass")):
        crossval.check_cv_folder(out, resume=False)
    for name in ("fold_0", "fold_10", "fold_2"):
        shutil.rmtree(out / name)
    crossval.check_cv_folder(out, resume=False)


def test_cv_framing_multiclass_masks_that_hold_effusion_is_warned_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """cv of a multi-class set holding effusion, framed to the lungs (the default), which cut
    it away without a word: warned once for its folds, into summary.json's warnings and each
    fold's metrics.json's; a fold run alone (``fold=``) warns it too. The share cut away is
    worked out once per command and handed to its folds (each fold worked it out again before)."""
    data = effusion_frames(tmp_path / "data")
    caplog.set_level(logging.WARNING, logger="covseg")
    calls = calls_counted(monkeypatch, importlib.import_module("covseg.train"),
                          "_effusion_framed_out")  # covseg.train is also the function
    summary = api.cross_validate(data, tmp_path / "cv", target="multiclass", **TINY_FOLDS)
    assert len(calls) == 1
    note = ("lung framing cuts away 100 % of the effusion pixels (label 3), which lie outside "
            "the aerated lung it frames, in training and prediction alike (a model so trained "
            "on a phantom predicted none); train with frame_lungs=False to learn it")
    assert note in summary["warnings"]
    assert all(note in json.loads((tmp_path / "cv" / f"fold_{k}" / "metrics.json").read_text())[
        "warnings"] for k in range(2))
    classes = {"0": "background", "1": "ground-glass", "2": "consolidation", "3": "effusion"}
    assert summary["classes"] == classes == api.data_info(data, target="multiclass")["classes"]
    assert all(json.loads((tmp_path / "cv" / f"fold_{k}" / "fold_metrics.json").read_text())[
        "classes"] == classes for k in range(2))
    assert [r.getMessage() for r in caplog.records].count(f"{data}: {note}") == 1
    caplog.clear()
    api.cross_validate(data, tmp_path / "alone", target="multiclass", fold=0, **TINY_FOLDS)
    assert [r.getMessage() for r in caplog.records].count(f"{data}: {note}") == 1
    assert len(calls) == 2
    assert note in json.loads((tmp_path / "alone" / "fold_0" / "metrics.json").read_text())[
        "warnings"]


def test_a_lung_model_trained_on_the_tested_slices_is_warned_of(
        tmp_path: Path, synthetic_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A --lung-guide run trained on all of DATA (the usual way) guided every test fold, and
    only its SHA-256 was checked: the folds' lung channel came from a model that had seen their
    slices, unsaid. Warned once, in summary.json's warnings and report.md; not refused."""
    lungs = tmp_path / "lungs"
    api.train(synthetic_folder, lungs, target="lung", **TINY_FOLDS_RECIPE)
    caplog.clear()
    summary = api.cross_validate(synthetic_folder, tmp_path / "cv", lung_guide=str(lungs),
                                 **TINY_FOLDS)
    note = (f"the lung model of lung_guide {lungs} was trained or validated on 16 of the 16 "
            "slices the folds test (its config.json names these data), so their lung channel "
            "comes from a model that saw them and the scores may read higher than on unseen "
            "scans; for an unbiased figure guide with a lung model trained on other data, or "
            "lung_guide=\"threshold\"")
    assert note in summary["warnings"]
    assert caplog.text.count("was trained or validated on 16 of the 16 slices") == 1
    report = (tmp_path / "cv" / "report.md").read_text()
    assert "was trained or validated on 16 of the 16 slices" in report
    data = load_dataset(synthetic_folder)
    splits = make_folds(data, 2, 0)[0]
    record = json.loads((lungs / "config.json").read_text())
    guided = TrainConfig(lung_guide=str(lungs))
    for cases, said in ((record["train_cases"][:3], "3 of the 16"), ([], None)):
        (lungs / "config.json").write_text(json.dumps({**record, "train_cases": cases,
                                                       "val_cases": []}))
        notes = crossval.lung_run_notes(guided, data, splits)
        assert (notes[0].split(" was trained or validated on ")[1].startswith(said) if said
                else notes == [])
    (lungs / "config.json").write_text(json.dumps({**record, "data_path": str(tmp_path)}))
    assert crossval.lung_run_notes(guided, data, splits) == []  # a lung model of other data
    assert crossval.lung_run_notes(TrainConfig(lung_guide="threshold"), data, splits) == []


def test_a_resume_in_the_second_its_fold_started_continues_that_command(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``started_utc`` is to the second: a --resume begun in the second a finished fold of an
    earlier command (``--fold 0``) started took no fold as earlier, and its summary named the
    resume as the run's start and listed no resume (the cascade test of moved runs failed so
    when the machine was quiet). A fold finished as the resume began is an earlier command's."""
    out = tmp_path / "cv"
    api.cross_validate(synthetic_folder, out, fold=0, **TINY_FOLDS)
    started = json.loads((out / "fold_0" / "config.json").read_text())["started_utc"]
    monkeypatch.setattr(crossval, "utc_now", lambda: started)
    summary = api.cross_validate(synthetic_folder, out, resume=True, **TINY_FOLDS)
    assert summary["started_utc"] == started
    assert len(summary["resumed_by"]) == 1


def test_repeat_r_is_the_plain_split_seeded_seed_plus_r_k_and_split_files_take_none() -> None:
    """Repeated k-fold (--repeats R): repeat r's folds are exactly the plain cross-validation's
    seeded seed + r*k, flattened after the folds of the repeats before it, so repeat 0 is the
    unrepeated run. Data with their own split files make one split: repeats are refused."""
    data = load_dataset("synthetic")
    repeated, how = make_folds(data, 3, 5, repeats=2)
    assert repeated == make_folds(data, 3, 5)[0] + make_folds(data, 3, 8)[0]
    assert make_folds(data, 3, 5)[0] != make_folds(data, 3, 8)[0], "the repeats differ"
    assert how.startswith("3-fold repeated 2 times (6 folds), grouped by patient (repeat r "
                          "seeded 5 + 3·r)")
    cases = [s.case_id for s in data.samples]
    data.folds = [(cases[4:], cases[:4]), (cases[:4], cases[4:])]
    with pytest.raises(CovsegError, match=r"ships its own 2 folds .* leave --repeats out, or"):
        make_folds(data, None, 0, repeats=2)


def test_a_repeated_cv_extends_a_finished_one_training_only_the_new_folds(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished 2-fold run resumed with repeats=2 reuses its folds as repeat 0 and trains
    fold_2 and fold_3 alone, fold j seeded seed + j on the split seeded seed + 2; its summary
    records the folds of a repeat and the repeats, pools each slice once, and its report says
    over what the means run. A resume with fewer repeats than the folds there is refused: it
    wrote the summary of fewer folds over theirs."""
    tiny = {"folds": 2, "epochs": 1, "size": 32, "batch_size": 4, "model": "unet",
            "model_options": {"width": 4}, "seed": 3}
    data = load_dataset(synthetic_folder)
    out = tmp_path / "cv"
    api.cross_validate(data, out, **tiny)
    trained: list[tuple[str, int]] = []
    train = crossval.train

    def counted(config: TrainConfig, data: LoadedData, out: Path, **kwargs: object) -> object:
        trained.append((out.name, config.seed))
        return train(config, data, out, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(crossval, "train", counted)
    summary = api.cross_validate(data, out, resume=True, repeats=2, **tiny)
    assert trained == [("fold_2", 5), ("fold_3", 6)]
    splits = make_folds(data, 2, 3, repeats=2)[0]
    assert splits[2:] == make_folds(data, 2, 5)[0]
    for j, (_, test_cases) in enumerate(splits):
        record = json.loads((out / f"fold_{j}" / "config.json").read_text())
        assert (record["folds"], record["config"]["seed"]) == (2, 3 + j)
        tested = json.loads((out / f"fold_{j}" / "fold_metrics.json").read_text())["per_case"]
        assert sorted(row["case_id"] for row in tested) == sorted(test_cases)
    assert (summary["config"]["folds"], summary["config"]["repeats"]) == (2, 2)
    assert len(summary["per_fold"]) == 4
    pooled = summary["pooled_per_case"]["dice"]
    assert pooled["n"] + pooled["undefined"] == len(data.samples), "each slice pooled once"
    report = (out / "report.md").read_text()
    assert ("\n- Repeats: every mean ± std over folds is over all 4 folds;") in report
    assert report.count("repeated 2 times") == 1, "said once, in the fold source"
    assert "each trained on 1/2 of it" in report
    with pytest.raises(CovsegError, match=re.escape(
            f"{out}: holds the folds of a 2-fold cross-validation repeated 2 times (4 folds) "
            "(fold_2, fold_3 past the 2 of repeats=1); resume with repeats=2, or delete")):
        api.cross_validate(data, out, resume=True, **tiny)


def _repeated_rows() -> list[dict[str, object]]:
    """Per-case rows of a 2-fold run repeated twice over slices a, b (each with a lesion) and c
    (none): a's lesion missed in repeat 0 (precision and HD95 undefined there), found in
    repeat 1; b's found both times; c left empty both times."""
    nan = math.nan
    tests = {"a": [(0.0, 0.0, nan, nan), (0.8, 0.8, 0.9, 2.0)],
             "b": [(0.7, 0.7, 0.7, 3.0), (0.9, 0.9, 0.9, 1.0)],
             "c": [(1.0, nan, nan, 0.0), (1.0, nan, nan, 0.0)]}
    folds = {0: ["a", "b"], 1: ["c"], 2: ["a"], 3: ["b", "c"]}
    return [{"fold": k, "case_id": case, **dict(zip(("dice", "sensitivity", "precision", "hd95"),
                                                    tests[case][k // 2], strict=True))}
            for k, cases in folds.items() for case in cases]


def test_a_repeated_run_counts_missed_lesions_and_what_hd95_covers_over_every_test(
        tmp_path: Path) -> None:
    """Under repeats each slice's rows were pooled as its mean over its repeats where defined:
    a lesion missed in one of two repeats counted as neither missed nor HD95-undefined (0 of 2
    lesion slices missed, HD95 on 3 of 3 slices), and the report's counts no longer added up.
    The cover of each metric and the empty masks count every test now, and the report says so
    ("of 6 tests of 3 slices × 2"); the pooled figures keep each slice once."""
    rows = _repeated_rows()
    per_fold = [{"fold": k, "test_cases": sum(row["fold"] == k for row in rows), "epochs": 1,
                 "hd95": 1.0, "dice": 0.5} for k in range(4)]
    begun = crossval.begin(tmp_path, 4, False, repeats=2)
    summary = crossval._summary(TrainConfig(model="unet"), load_dataset("synthetic"), tmp_path,
                                "f", per_fold, rows, begun, 1.0, fingerprint="0" * 64)
    assert summary["empty_mask_counts"] == {"lesion_slices": 4,
                                            "lesion_slices_predicted_empty": 1,
                                            "empty_slices_predicted_lesion": 0}
    hd95 = summary["mean_std_over_folds"]["hd95"]
    assert (hd95["cases"], hd95["cases_undefined"]) == (5, 1)
    pooled = summary["pooled_per_case"]
    assert (pooled["hd95"]["n"], pooled["dice"]["n"]) == (3, 3), "each slice pooled once"
    assert pooled["dice"]["mean"] == pytest.approx((0.4 + 0.8 + 1.0) / 3)
    report = report_markdown({**summary, "seconds": 1.0}, plotted=False)
    assert ("\n- HD95 is undefined, and left out of its means, on 1 of 6 tests of 3 slices × 2: "
            "1 of the 4 tests with a lesion, on which the model predicted nothing (missed "
            "lesions, no HD95 penalty), and 0 without a lesion") in report
    assert "**1.000 ± 0.000 (5 of 6 tests of 3 slices × 2)** |" in report
    assert ("\n- Repeats: every mean ± std over folds is over all 4 folds; each slice is tested "
            "once per repeat: the figures pooled over slices (and the box of all folds) take its "
            "mean over its 2 tests, while the slices a mean covers and the empty masks are "
            "counted over every test\n") in report


def test_a_fold_of_a_later_repeat_given_without_its_repeats_says_to_give_them(
        tmp_path: Path) -> None:
    """``fold=7`` of a 5-fold run repeated 3 times, its repeats left out, was refused "must lie
    in 0..4 for 5 folds" alone; where ``out`` holds that fold, of a repeat's 5 folds, the
    refusal says to give the run's repeats (its summary's count, where written)."""
    out = tmp_path / "cv"
    (out / "fold_7").mkdir(parents=True)
    (out / "fold_7" / "config.json").write_text(json.dumps({"folds": 5}))
    refused = "fold must lie in 0..4 for 5 folds, got 7"
    with pytest.raises(CovsegError, match=re.escape(
            f"{refused} (fold_7 of a repeated run: give its repeats)")):
        api.cross_validate("synthetic", out, folds=5, fold=7, resume=True)
    (out / "summary.json").write_text(json.dumps({"config": {"folds": 5, "repeats": 3}}))
    with pytest.raises(CovsegError, match=re.escape(
            f"{refused} (fold_7 of a repeated run: give its repeats=3)")):
        api.cross_validate("synthetic", out, folds=5, fold=7, resume=True)
    with pytest.raises(CovsegError, match=re.escape(refused) + "$"):
        api.cross_validate("synthetic", tmp_path / "other", folds=5, fold=7)


def test_a_count_of_tests_names_its_slices_only_where_the_repeats_divide_it() -> None:
    """A repeated run counts every test, each slice once per repeat: 156 tests are "tests of
    52 slices × 3". A count that is no multiple of the repeats (a summary of an earlier build,
    counting slices) said "52 of 52 tests of 17 slices × 3": it is said as tests alone."""
    assert crossval.tested(156, 3) == "tests of 52 slices × 3"
    assert crossval.tested(52, 3) == "tests"
    assert crossval.tested(52, 1) == "slices"
