"""Training: outputs of a run, exact resume after an interruption, and checkpoint safety."""

from __future__ import annotations

import _thread
import csv
import errno
import importlib
import json
import logging
import math
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from covseg.cascade import LungFrame
from covseg.checkpoint import load_checkpoint
from covseg.config import TrainConfig
from covseg.data import load_dataset
from covseg.errors import CovsegError, FullDisk
from covseg.io.atomic import atomic_path, write_json
from covseg.io.facts import file_version
from covseg.io.lock import LOCK_FILE
from covseg.provenance import cli_command, invoked_as
from covseg.report import read_rows
from covseg.stopping import Terminated, stops_recorded
from covseg.train import handler_restored, member_label, train_label
from tests.conftest import (
    NEEDS_ZOO,
    calls_counted,
    data_unread,
    disk_full_from,
    effusion_frames,
    folder_holding,
    mixed_unit_folder,
    square_mask,
    stopped_after_epoch,
)

config_module = importlib.import_module("covseg.config")
train_module = importlib.import_module("covseg.train")  # the package exports a train() too
TINY = {"model": "unet", "epochs": 4, "size": 64, "batch_size": 4, "model_options": {"width": 4},
        "augment": "heavy"}


def test_run_folder_has_config_log_curves_checkpoints_and_metrics(tiny_run: Path) -> None:
    """last.pt, which only a resume of a stopped run reads, is deleted as the run finishes."""
    for name in ("config.json", "log.csv", "curves.png", "best.pt", "metrics.json",
                 "validation_per_case.csv"):
        assert (tiny_run / name).is_file(), name
    assert not (tiny_run / "last.pt").exists()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["synthetic"] is True
    assert 0.0 <= metrics["validation"]["dice"]["mean"] <= 1.0
    assert metrics["validation"]["hd95_unit"] == "px"  # synthetic slices have no spacing
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["synthetic"] and config["val_cases"]
    assert config["classes"] == {"0": "background", "1": "infection"}
    assert len((tiny_run / "log.csv").read_text().strip().splitlines()) == 3


def test_a_recipe_built_by_hand_with_numpys_numbers_trains_and_records_python_numbers(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A TrainConfig built with numpy's numbers passed its checks (they are numbers), but they
    reached torch's DataLoader (a batch size must be Python's int) and the checkpoint's meta
    unconverted; only the Python API converted its arguments."""
    config = TrainConfig(model="unet", epochs=np.int64(1), batch_size=np.int64(4),
                         lr=np.float32(2e-3), size=np.int32(32), seed=np.int64(3),
                         threshold=np.float64(0.25), frame_lungs=np.bool_(False),
                         window=(np.float32(-1250), np.int64(250)),
                         model_options={"width": np.int64(4)})
    for name in ("epochs", "batch_size", "size", "seed"):
        assert type(getattr(config, name)) is int, name
    assert (type(config.lr), type(config.threshold)) == (float, float)
    assert config.frame_lungs is False and config.window == (-1250.0, 250)
    out = tmp_path / "run"
    metrics = train_module.train(config, load_dataset(synthetic_folder), out, progress=False)
    assert metrics["epochs"] == 1
    recorded = json.loads((out / "config.json").read_text())["config"]
    assert (recorded["epochs"], recorded["batch_size"], recorded["size"], recorded["seed"]) == (
        1, 4, 32, 3)
    assert recorded["lr"] == 2e-3 and recorded["threshold"] == 0.25  # float32: as it shows
    assert recorded["window"] == [-1250.0, 250] and recorded["model_options"] == {"width": 4}
    meta = load_checkpoint(out)["meta"]  # weights_only: numpy's numbers would not load
    assert (meta["size"], meta["model_options"]) == (32, {"width": 4})


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, dices: list[float]) -> TrainConfig:
    """A tiny run's config with a validation set, one epoch per Dice in ``dices``: the real
    validation runs, and its Dice is replaced by the next of ``dices``."""
    scores = iter(dices)
    real = train_module._validate

    def scripted(*args: object, **kwargs: object) -> tuple[float, float]:
        return real(*args, **kwargs)[0], next(scores)

    monkeypatch.setattr(train_module, "_validate", scripted)
    return TrainConfig(model="unet", epochs=len(dices), size=32, batch_size=4, val_fraction=0.25,
                       model_options={"width": 4})


@pytest.mark.parametrize("dices", [[0.2, 0.5, 0.3], [0.2, 0.5, 0.5]], ids=["best", "tied"])
def test_best_pt_holds_the_epoch_of_the_best_validation_dice(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        dices: list[float]) -> None:
    """Nothing checked which epoch best.pt holds, so saving every epoch (the last model, whatever
    its validation Dice) went unnoticed; nor metrics.json's best epoch, which could name the last
    epoch while best.pt held the best. The real validation runs; its Dice is replaced by
    ``dices`` for epochs 1-3, so epoch 2 is the best. On a tie (common with a small validation
    set) the first best epoch is kept, in best.pt and in metrics.json alike: keeping the last
    tied one in best.pt made the record name weights the run did not ship."""
    config = _scripted_validation(monkeypatch, dices)
    train_module.train(config, load_dataset(synthetic_folder), tmp_path / "run", progress=False)
    meta = load_checkpoint(tmp_path / "run" / "best.pt")["meta"]
    assert (meta["epoch"], meta["val_dice"]) == (2, 0.5)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["best_epoch"], metrics["best_val_dice_canvas"]) == (2, 0.5)


def test_a_resumed_run_keeps_the_best_epoch_from_before_the_stop(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test resumed a run with a validation set, so a resume that forgot the best Dice so far
    went unnoticed: the first resumed epoch then replaced a better best.pt and metrics.json named
    an epoch whose weights were gone. The Dice is scripted 0.2, 0.6, the run stops after epoch
    2's last.pt, and the resumed epochs score 0.3, 0.4: best.pt still holds epoch 2."""
    config = _scripted_validation(monkeypatch, [0.2, 0.6, 0.3, 0.4])
    data = load_dataset(synthetic_folder)
    with stopped_after_epoch(2):
        train_module.train(config, data, tmp_path / "run", progress=False)
    train_module.train(config, data, tmp_path / "run", resume=True, progress=False)
    meta = load_checkpoint(tmp_path / "run" / "best.pt")["meta"]
    assert (meta["epoch"], meta["val_dice"]) == (2, 0.6)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best_epoch"] == 2


def test_curves_mark_the_kept_epoch_with_the_dice_train_reports(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        saved_figures: list) -> None:
    """curves.png was drawn before the kept model was scored at the images' own size, so the
    Dice train prints was nowhere on it and no epoch was marked as the one kept: epoch 2 (the
    scripted best) is marked, and metrics.json's validation Dice is written above its star."""
    config = _scripted_validation(monkeypatch, [0.2, 0.6, 0.3])
    metrics = train_module.train(config, load_dataset(synthetic_folder), tmp_path / "run",
                                 progress=False)
    _, dice = saved_figures[-1].axes
    kept = metrics["validation"]["dice"]["mean"]
    assert dice.get_title().startswith(f"kept (star): epoch 2, validation Dice {kept:.3f}\n")
    assert [line.get_xdata()[0] for line in dice.get_lines() if line.get_marker() == "*"] == [2]


def test_an_ensembles_folder_has_curves_naming_each_member_and_its_kept_epoch(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        saved_figures: list) -> None:
    """An ensemble's run folder had no curves.png, its members' folders each theirs: it has
    one now, written atomically, drawing each member's curves from its records in a colour of
    its own, named in the legend, its kept epoch a dotted line and a star as a run's are."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # members one after the other
    drawn_to = calls_counted(monkeypatch, Figure, "savefig")
    out = tmp_path / "ens"
    config = _scripted_validation(monkeypatch, [0.6, 0.2, 0.3, 0.7])  # members keep 1 and 2
    metrics = train_module.train(replace(config, model="unet,unet", epochs=2),
                                 load_dataset(synthetic_folder), out, progress=False)
    assert [member["best_epoch"] for member in metrics["members"]] == [1, 2]
    figure, written = drawn_to[-1]  # type: ignore[misc]  # (figure, path) each
    assert Path(written).parent == out and Path(written).name.startswith(".curves.")
    assert (out / "curves.png").is_file() and not list(out.glob(".curves.*"))
    assert figure is saved_figures[-1]
    assert figure.get_suptitle().endswith(": its members")
    loss, dice = figure.axes
    (legend,) = figure.legends
    names = [text.get_text() for text in legend.get_texts()]
    for index, member in enumerate(metrics["members"]):
        name, best = f"member {index} unet", member["best_epoch"]
        kept = (f"{name}: kept epoch {best} (validation Dice "
                f"{member['validation']['dice']['mean']:.3f} at the images' own size)")
        assert names[3 * index:3 * index + 3] == [f"{name}, train", f"{name}, validation", kept]
        for axis in (loss, dice):
            assert [line.get_xdata()[0] for line in axis.get_lines()
                    if line.get_linestyle() == ":" and line.get_color() == f"C{index}"] == [best]
        (star,) = [line for line in dice.get_lines()
                   if line.get_marker() == "*" and line.get_color() == f"C{index}"]
        assert star.get_xdata()[0] == best
    assert f"the ensemble's validation Dice {metrics['validation']['dice']['mean']:.3f}" in (
        dice.get_title())


def test_an_ensemble_whose_members_log_is_gone_finishes_without_its_curves(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A member's log.csv deleted before the resume that finishes its ensemble: the
    ensemble's curves.png, drawn from it, is a one-line warning, and the run finishes."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # members one after the other
    config = TrainConfig(**{**TINY, "model": "unet,unet", "epochs": 1, "size": 32})
    out = tmp_path / "ens"
    train_module.train(config, load_dataset(synthetic_folder), out, progress=False)
    (out / "metrics.json").unlink()
    (out / "curves.png").unlink()  # stopped before its end: neither written
    (out / "member1-unet" / "log.csv").unlink()
    train_module.train(config, load_dataset(synthetic_folder), out, resume=True,
                       progress=False)
    assert (out / "metrics.json").is_file() and not (out / "curves.png").exists()
    told = (f"{out / 'curves.png'}: not drawn (ValueError: {out / 'member1-unet' / 'log.csv'}: "
            f"No such file or directory); the numbers are in {out / 'member*' / 'log.csv'}")
    assert [record.getMessage() for record in caplog.records
            if "not drawn" in record.getMessage()] == [told]


def test_curves_that_cannot_be_drawn_are_a_warning_and_the_run_finishes(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """curves.png failing in matplotlib ended the run in a traceback before its metrics.json
    (a cv fold then read as unfinished): one warning line, the run finished without the figure,
    as evaluate's and cv's figures are."""
    def refused(*_: object, **__: object) -> None:
        raise TypeError("set_text(): incompatible function arguments")

    monkeypatch.setattr(train_module, "training_curves", refused)
    out = tmp_path / "run"
    metrics = train_module.train(TrainConfig(**{**TINY, "epochs": 1, "size": 32}),
                                 load_dataset(synthetic_folder), out, progress=False)
    assert metrics["epochs"] == 1 and (out / "metrics.json").is_file()
    assert not (out / "curves.png").exists()
    told = (f"{out / 'curves.png'}: not drawn (TypeError: set_text(): incompatible function "
            f"arguments); the numbers are in {out / 'log.csv'}")
    assert [record.getMessage() for record in caplog.records
            if "not drawn" in record.getMessage()] == [told]


def test_a_resume_removes_the_temporary_files_a_killed_run_left_and_nothing_else(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A run killed with ``kill -9`` while saving left its hidden ``.best.XXXXXXXX.pt`` (a
    partial checkpoint) for good: the --resume that finished the run kept it, against
    docs/outputs.md. Hidden files not of covseg's temporary pattern are the user's: kept."""
    config = TrainConfig(**{**TINY, "epochs": 3, "size": 32})
    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    with stopped_after_epoch(2):
        train_module.train(config, data, out, progress=False)
    left = [out / ".best.qv545a9k.pt", out / ".last.yyulcx4w.pt"]
    for path in left:
        path.write_bytes(b"partial")
    (out / ".notes").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / ".best.abcd1234.pt").write_bytes(b"not in the run folder itself")
    assert train_module.train(config, data, out, resume=True, progress=False)["epochs"] == 3
    assert not [path for path in left if path.exists()]
    assert (out / ".notes").read_text() == "mine"
    assert (out / "sub" / ".best.abcd1234.pt").exists()


@pytest.mark.parametrize("options", [{}, {"ema_decay": 0.9}, {"cutmix": 1.0},
                                     {"lesion_paste": 0.5}])
@pytest.mark.usefixtures("last_pt_kept")
def test_resume_after_interruption_matches_an_uninterrupted_run(
        tmp_path: Path, synthetic_folder: Path, options: dict[str, float]) -> None:
    data = load_dataset(synthetic_folder)
    config = TrainConfig(**TINY, **options)
    train_module.train(config, data, tmp_path / "straight", progress=False)

    with stopped_after_epoch(2):
        train_module.train(config, data, tmp_path / "killed", progress=False)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2

    with pytest.raises(CovsegError, match="--resume"):
        train_module.train(config, data, tmp_path / "killed", progress=False)
    train_module.train(config, data, tmp_path / "killed", resume=True, progress=False)

    resumed = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3, 4]
    for name in ("last.pt", "best.pt"):  # bit for bit, as docs/outputs.md says
        straight = load_checkpoint(tmp_path / "straight" / name)["state_dict"]
        again = load_checkpoint(tmp_path / "killed" / name)["state_dict"]
        assert straight.keys() == again.keys()
        assert [key for key, value in straight.items() if not torch.equal(again[key], value)] == []


@pytest.mark.usefixtures("last_pt_kept")
def test_moving_average_is_the_saved_model(tmp_path: Path, synthetic_folder: Path,
                                           saved_figures: list) -> None:
    """With ``ema_decay`` the predicting model (best.pt) is the EMA, distinct from the raw
    weights kept in last.pt, and its weights lie on the path the raw ones took; curves.png
    names the epoch kept as its moving average ("kept: epoch 4" read as that epoch's weights)."""
    data = load_dataset(synthetic_folder)
    train_module.train(TrainConfig(**TINY, ema_decay=0.5), data, tmp_path / "ema", progress=False)
    (loss,) = saved_figures[-1].axes
    assert [text.get_text() for text in loss.get_legend().get_texts()] == [
        "train", f"kept: epoch {TINY['epochs']}'s moving average"]
    served = load_checkpoint(tmp_path / "ema" / "best.pt")["state_dict"]
    raw = load_checkpoint(tmp_path / "ema" / "last.pt")
    assert set(raw["moving_average"]) >= {"n_averaged"}
    steps = TINY["epochs"] * (len(data.samples) // TINY["batch_size"])
    assert int(raw["moving_average"]["n_averaged"]) == steps, "one update per optimiser step"
    weight = next(k for k, v in served.items() if v.is_floating_point() and v.ndim == 4)
    assert not torch.equal(served[weight], raw["state_dict"][weight])
    torch.testing.assert_close(served[weight], raw["moving_average"][f"module.{weight}"])


def test_moving_average_decay_must_lie_in_0_1(tmp_path: Path, synthetic_folder: Path) -> None:
    data = load_dataset(synthetic_folder)
    with pytest.raises(CovsegError, match="--ema-decay"):
        train_module.train(TrainConfig(**TINY, ema_decay=1.0), data, tmp_path / "bad",
                           progress=False)


def test_cutmix_moves_mask_boxes_with_image_boxes() -> None:
    """Every pixel's label still belongs to the slice its intensity came from."""
    mixer = train_module._BatchCutMix(1.0, batch_size=4)
    mixer.set_random_state(3)
    image = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 16, 16)
    mask = torch.arange(4).view(4, 1, 1, 1).expand(4, 1, 16, 16)
    mixed = [mixer(image, mask) for _ in range(4)]
    for mixed_image, mixed_mask in mixed:
        assert mixed_mask.dtype == torch.int64
        torch.testing.assert_close(mixed_image, mixed_mask.float())
    assert any(not torch.equal(m, image) for m, _ in mixed), "share 1 mixes every full batch"
    unmixed_image, _ = train_module._BatchCutMix(0.0, batch_size=4)(image, mask)
    assert torch.equal(unmixed_image, image)


def test_cutmix_warns_of_nothing_and_indexes_with_tuples(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """MONAI 1.6's CutMix indexed its boxes with a list, which torch warns of as deprecated on
    every mixed batch (covseg hid it) and will refuse or read otherwise: covseg's boxes index
    with a tuple, and a mixed batch warns of nothing."""
    setitem = torch.Tensor.__setitem__

    def tuple_indexing_only(tensor: torch.Tensor, index: Any, value: Any) -> None:
        if isinstance(index, list):
            raise IndexError("a list index: torch deprecates it")
        setitem(tensor, index, value)

    monkeypatch.setattr(torch.Tensor, "__setitem__", tuple_indexing_only)
    mixer = train_module._BatchCutMix(1.0, batch_size=4)
    mixer.set_random_state(1)
    image, mask = torch.rand(4, 1, 16, 16), torch.randint(0, 2, (4, 1, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixed_image, mixed_mask = mixer(image, mask)
    assert not torch.equal(mixed_image, image) and mixed_mask.shape == mask.shape


@pytest.mark.parametrize("shape", [(4, 1, 32, 32), (3, 2, 17, 23)])
def test_cutmix_draws_and_mixes_as_monais_did_under_a_seed(shape: tuple[int, ...]) -> None:
    """covseg's CutMix replaced MONAI 1.6's, keeping its draws and float32 box sides so that a
    seeded run mixes its batches as before: batch by batch, under 30 seeds, both mix the same
    images and masks as covseg's wrapper of MONAI's CutMix did (its share drawn first, on the
    transform's own generator; the mask mixed as floats and rounded back)."""
    try:
        from monai.transforms import CutMix
    except ImportError:
        pytest.skip("this MONAI has no CutMix to compare covseg's with")
    batch = shape[0]
    for seed in range(30):
        monais, covsegs = CutMix(batch), train_module._BatchCutMix(0.5, batch)
        monais.set_random_state(seed=seed)
        covsegs.set_random_state(seed)
        for step in range(3):
            image = torch.rand(shape)
            mask = torch.randint(0, 3, (batch, 1, *shape[2:]))
            expected = image, mask
            if monais.R.rand() < 0.5:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # MONAI's list indexing
                    mixed_image, mixed_mask = monais(image, mask.float())
                expected = mixed_image, mixed_mask.round().long()
            mixed = covsegs(image, mask)
            assert all(torch.equal(got, want) for got, want in zip(mixed, expected)), (seed, step)


@pytest.mark.parametrize(("option", "flag"), [("cutmix", "--cutmix"),
                                              ("lesion_paste", "--lesion-paste")])
def test_mixing_shares_must_lie_in_0_1(tmp_path: Path, synthetic_folder: Path, option: str,
                                       flag: str) -> None:
    data = load_dataset(synthetic_folder)
    with pytest.raises(CovsegError, match=flag):
        train_module.train(TrainConfig(**TINY, **{option: 1.5}), data, tmp_path / "bad",
                           progress=False)


def test_seed_must_not_be_negative() -> None:
    """numpy refuses negative seeds with a traceback, after the run folder was made."""
    with pytest.raises(CovsegError, match="--seed must be a non-negative integer, got -5"):
        train_module.check_recipe(TrainConfig(**TINY, seed=-5))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("lr", math.nan, "--lr must lie in"), ("lr", math.inf, "--lr must lie in"),
    ("lr", 1e300, "--lr must lie in"), ("size", 15, "--size must lie in \\[32, 1024\\] px"),
    ("size", 100_000, "--size must lie in \\[32, 1024\\] px .*, got 100000"),
    ("epochs", 0, "--epochs must be at least 1")])
def test_numbers_that_would_crash_or_train_nothing_are_refused(option: str, value: float,
                                                               message: str) -> None:
    """NaN or huge learning rates trained NaN weights (or crashed inside the optimiser), a
    15 px canvas crashed inside the network, and a 100,000 px one in a 44-line traceback
    allocating 29 GB (20,000 px: killed for memory): refused before the run folder is made."""
    with pytest.raises(CovsegError, match=message):
        train_module.check_recipe(TrainConfig(**{**TINY, option: value}))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("epochs", "2", "--epochs must be a whole number, got '2'"),
    ("epochs", 2.0, "--epochs must be a whole number, got 2.0"),
    ("seed", True, "--seed must be a whole number, got True"),
    ("lr", "2e-3", "--lr must be a number, got '2e-3'"),
    ("cutmix", False, "--cutmix must be a number, got False"),
    ("test_flips", "no", "--test-flips must be true or false, got 'no'"),
    ("model", ["unet"], "--model must be a name, got ['unet']")])
def test_options_of_the_wrong_type_are_one_line_errors(tmp_path: Path, option: str,
                                                       value: object, message: str) -> None:
    """epochs="2" raised Python's own TypeError from a comparison; a bool passed as a number."""
    import covseg

    with pytest.raises(CovsegError, match=f"^{re.escape(message)}$"):
        train_module.check_recipe(TrainConfig(**{**TINY, option: value}))
    keyword = message.replace(f"--{option.replace('_', '-')}", option, 1)  # the API's spelling
    with pytest.raises(CovsegError, match=f"^{re.escape(keyword)}$"):
        covseg.cross_validate(tmp_path / "missing", tmp_path / "cv", **{**TINY, option: value})
    assert not (tmp_path / "cv").exists()


def test_fold_numbers_of_the_wrong_type_are_one_line_errors(tmp_path: Path) -> None:
    import covseg

    with pytest.raises(CovsegError, match="^folds must be a whole number, got '2'$"):
        covseg.cross_validate("synthetic", tmp_path / "cv", folds="2", **TINY)
    with pytest.raises(CovsegError, match="^fold must be a whole number, got True$"):
        covseg.cross_validate("synthetic", tmp_path / "cv", folds=2, fold=True, **TINY)
    assert TrainConfig(**{**TINY, "lr": 1, "epochs": None}).check_types() is None


def test_refusals_needing_no_data_come_before_the_data_are_read(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """cv --folds 2 --fold 7 and train into a saved run without --resume read every slice
    (minutes for a volume data set), then refused; they are refused before now."""
    import covseg
    from covseg import api

    def unread(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data were read")

    monkeypatch.setattr(api, "load_dataset", unread)
    # the API names its keyword, fold, not the CLI's --fold
    with pytest.raises(CovsegError, match=r"^fold must lie in 0\.\.1 for 2 folds, got 7$"):
        covseg.cross_validate(synthetic_folder, tmp_path / "cv", folds=2, fold=7, **TINY)
    with pytest.raises(CovsegError, match=r"^fold must be 0 or more \(the folds count from "
                                          r"0\), got -1$"):
        covseg.cross_validate(synthetic_folder, tmp_path / "cv", fold=-1, **TINY)
    with pytest.raises(CovsegError, match=f"^{re.escape(str(tiny_run))} already holds a run; "
                                          "pass resume=True to reuse and continue it, or pick "
                                          "a new out$"):
        covseg.train(synthetic_folder, tiny_run, **TINY)
    with pytest.raises(AssertionError, match="the data were read"):
        covseg.cross_validate(synthetic_folder, tmp_path / "cv", folds=2, fold=1, **TINY)


def test_resume_with_another_recipe_is_refused(tiny_run: Path, synthetic_folder: Path) -> None:
    data = load_dataset(synthetic_folder)
    saved = TrainConfig.from_dict(json.loads((tiny_run / "config.json").read_text())["config"])
    with pytest.raises(CovsegError, match="model: unet -> miniseg"):
        train_module.train(replace(saved, model="miniseg"), data, tiny_run, resume=True,
                           progress=False)
    with pytest.raises(CovsegError, match=f"epochs: {saved.epochs} -> 240"):  # as resolved
        train_module.train(replace(saved, epochs=None), data, tiny_run, resume=True,
                           progress=False)
    with pytest.raises(CovsegError, match=r"trained otherwise \(lr: "):
        train_module.train(replace(saved, lr=saved.lr * 2), data, tiny_run, resume=True,
                           progress=False)
    with pytest.raises(CovsegError, match=r"trained otherwise \(threshold: "):  # as cv refuses
        train_module.train(replace(saved, threshold=0.9), data, tiny_run, resume=True,
                           progress=False)  # its checkpoints would keep predicting at the old one
    ensemble = replace(saved, model="miniseg,miniseg")  # the default: refused before any member
    with pytest.raises(CovsegError, match="model: unet -> miniseg,miniseg"):
        train_module.train(ensemble, data, tiny_run, resume=True, progress=False)
    with pytest.raises(CovsegError, match="already holds a run; pass --resume"):
        train_module.train(ensemble, data, tiny_run, progress=False)
    assert not list(tiny_run.glob("member*"))


def test_a_finished_or_refused_resume_leaves_a_stale_lock_file_as_it_was(
        tiny_run: Path, synthetic_folder: Path, tmp_path: Path) -> None:
    """A lock file that a run killed outright left in a finished run's folder (kill -9 after
    metrics.json, an rsync of the run while it ran) was replaced by a "nothing to do" resume
    and removed at its end, as by a resume refused for another recipe or data, though such a
    resume leaves every file as it was: both are judged before the lock is taken now."""
    import covseg

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / LOCK_FILE).write_text("999999999\n")  # no such run holds it
    before = {path: path.read_bytes() for path in sorted(run.rglob("*")) if path.is_file()}
    recipe = {**TINY, "epochs": 2, "val_fraction": 0.25}  # tiny_run's
    data = load_dataset(synthetic_folder)
    assert isinstance(covseg.train(data, run, resume=True, **recipe),
                      train_module.AlreadyTrained)
    with pytest.raises(CovsegError, match="model: unet -> miniseg"):
        covseg.train(data, run, resume=True, **{**recipe, "model": "miniseg"})
    fewer = replace(data, samples=data.samples[:-2])
    with pytest.raises(CovsegError, match="trained on other data"):
        covseg.train(fewer, run, resume=True, **recipe)
    assert before == {path: path.read_bytes() for path in sorted(run.rglob("*"))
                      if path.is_file()}


def test_resume_on_other_data_is_refused(tiny_run: Path, synthetic_folder: Path,
                                         tmp_path: Path) -> None:
    """train --resume checked the recipe only, so a run went on with other slices or masks."""
    data = load_dataset(synthetic_folder)
    saved = TrainConfig.from_dict(json.loads((tiny_run / "config.json").read_text())["config"])
    zeroed = replace(data, samples=[replace(s, mask=np.zeros_like(s.mask)) for s in data.samples])
    fewer = replace(data, samples=data.samples[:-2])  # other training and validation slices
    for other in (zeroed, fewer):
        with pytest.raises(CovsegError, match=rf"^{tiny_run}: the saved run was trained on other "
                                              r"data .*; pick a new --out or delete it$"):
            train_module.train(saved, other, tiny_run, resume=True, progress=False)
    old = tmp_path / "old"  # a run recorded before fingerprints is resumed as before
    shutil.copytree(tiny_run, old)
    record = json.loads((old / "config.json").read_text())
    del record[train_module.DATA_FINGERPRINT]
    (old / "config.json").write_text(json.dumps(record))
    train_module.train(saved, zeroed, old, resume=True, progress=False)


@pytest.mark.parametrize("damage", [None, [], "x", {"model_options": 5}, {"model": 5}],
                         ids=["null", "list", "string", "model_options", "model"])
def test_a_resume_into_a_run_whose_recorded_recipe_is_damaged_is_refused_in_one_line(
        tiny_run: Path, synthetic_folder: Path, tmp_path: Path, damage: object) -> None:
    """config.json's "config" null, a list or a string ended in an AttributeError traceback,
    and model options or a model name of another type in a TypeError or AttributeError one,
    past the check meant to call the record unreadable."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    record = json.loads((out / "config.json").read_text())
    saved = TrainConfig.from_dict(record["config"])
    record["config"] = {**record["config"], **damage} if isinstance(damage, dict) else damage
    (out / "config.json").write_text(json.dumps(record))
    with pytest.raises(CovsegError, match=rf"^{out / 'config.json'}: unreadable run record "
                                          r"\(.*\); pick a new --out$"):
        train_module.train(saved, load_dataset(synthetic_folder), out, resume=True,
                           progress=False)


@pytest.mark.usefixtures("last_pt_kept")
def test_a_resume_whose_last_pt_is_damaged_says_so_and_how_to_go_on(
        tiny_run_last_kept: Path, synthetic_folder: Path, tmp_path: Path) -> None:
    """A truncated last.pt was refused in model loading's words ("pass a run folder from
    `covseg train` or its best.pt"), which a resume takes none of; its recipe damaged ended in
    a traceback. Deleting last.pt, as the refusal says, trains the run again from epoch 1."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "run"
    shutil.copytree(tiny_run_last_kept, out)
    (out / "metrics.json").unlink()  # stopped before its end
    saved = TrainConfig.from_dict(json.loads((out / "config.json").read_text())["config"])
    state = torch.load(out / "last.pt", weights_only=True)
    torch.save({**state, "config": [1]}, out / "last.pt")
    with pytest.raises(CovsegError, match=rf"^{out / 'last.pt'}: unreadable run record \(the "
                                          r"recipe is \[1\], not an object\); pick a new --out$"):
        train_module.train(saved, data, out, resume=True, progress=False)
    (out / "last.pt").write_bytes((tiny_run_last_kept / "last.pt").read_bytes()[:1000])
    with pytest.raises(CovsegError) as caught:
        train_module.train(saved, data, out, resume=True, progress=False)
    assert str(caught.value) == (
        f"{out / 'last.pt'}: not a covseg checkpoint (not a readable PyTorch file: damaged, or "
        "another format); the run cannot go on from it: delete it and rerun with --resume to "
        "train the run again from epoch 1, or pick a new --out")
    (out / "last.pt").unlink()
    assert train_module.train(saved, data, out, resume=True, progress=False)["epochs"] == 2
    assert [r["epoch"] for r in load_checkpoint(out / "last.pt")["history"]] == [1, 2]


def _optimizer_state_of_another_type(state: dict[str, Any]) -> dict[str, object]:
    """last.pt's optimizer with its per-parameter state an int, its groups kept."""
    return {"optimizer": {**state["optimizer"], "state": 5}}


@pytest.mark.parametrize("damage", [
    "optimizer", "scheduler", "epoch", "best_dice", "history", {"optimizer": {}},
    {"scheduler": [1]}, {"epoch": "x"}, {"best_dice": None}, {"history": 3},
    {"state_dict": {}}, {"optimizer": None}, {"optimizer": 5}, {"scheduler": {"junk": 1}},
    {"scheduler": {"last_epoch": "2"}},
    pytest.param(_optimizer_state_of_another_type, id="optimizer-state-5")], ids=str)
def test_a_resume_whose_last_pt_lacks_an_entry_it_reads_is_refused_as_damaged(
        tiny_run_last_kept: Path, synthetic_folder: Path, tmp_path: Path,
        damage: str | dict[str, object] | Callable[[dict[str, Any]], dict[str, object]]
        ) -> None:
    """A last.pt that loads but lacks its optimizer, scheduler or progress (``damage``: the
    entry dropped), or holds one of another shape (the entries put, or made from the saved
    ones), ended in a KeyError, ValueError, RuntimeError or AttributeError traceback (an
    optimizer of None), or resumed with the learning rate schedule restarted (a scheduler
    without its epoch count): it is refused as a truncated one is, saying how to go on."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run_last_kept, out)
    (out / "metrics.json").unlink()  # stopped before its end
    saved = TrainConfig.from_dict(json.loads((out / "config.json").read_text())["config"])
    state = torch.load(out / "last.pt", weights_only=True)
    if callable(damage):
        damage = damage(state)
    state = {**state, **damage} if isinstance(damage, dict) else {
        key: value for key, value in state.items() if key != damage}
    torch.save(state, out / "last.pt")
    with pytest.raises(CovsegError) as caught:
        train_module.train(saved, load_dataset(synthetic_folder), out, resume=True,
                           progress=False)
    told = str(caught.value)
    assert told.startswith(f"{out / 'last.pt'}: a damaged checkpoint (")
    assert "\n" not in told and told.endswith(
        "); the run cannot go on from it: delete it and rerun with --resume to train the run "
        "again from epoch 1, or pick a new --out")


@pytest.mark.usefixtures("last_pt_kept")
def test_an_ensemble_members_damaged_moving_average_is_refused_naming_its_last_pt(
        synthetic_folder: Path, tmp_path: Path) -> None:
    """An ensemble member's last.pt whose moving average no longer fits its network (EMA on)
    ended in a RuntimeError traceback on a resume."""
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model="unet,unet", model_options={"width": 4}, epochs=1, size=64,
                         batch_size=4, ema_decay=0.9)
    out = tmp_path / "run"
    train_module.train(config, data, out, progress=False)
    (out / "metrics.json").unlink()
    # a member stopped before its metrics.json resumes from its last.pt; a finished one reads none
    (out / "member1-unet" / "metrics.json").unlink()
    last = out / "member1-unet" / "last.pt"
    torch.save({**torch.load(last, weights_only=True), "moving_average": {}}, last)
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(last))}: a damaged checkpoint "
                                          r"\('moving_average' entry: "):
        train_module.train(config, data, out, resume=True, progress=False)


def test_an_ensemble_keeps_its_members_last_pt_until_it_finishes_then_deletes_them(
        synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished run kept last.pt (its weights, AdamW's two moments and the schedule: about
    three times best.pt, 75-79 % of a run folder), each ensemble member one, which only a
    resume of a stopped run reads: a resume of a finished one trains nothing. Stopped before
    its metrics.json, the ensemble keeps its members' to resume; finished, it keeps none, and
    a resume finds it finished, every file left as it was. The members' shared data that a
    ``kill -9`` left (``.members-XXXX/``) were removed only by a resume training members side
    by side; one training them one by one (a thread each) left them."""
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model="unet,unet", model_options={"width": 4}, epochs=1, size=64,
                         batch_size=4)
    out = tmp_path / "run"
    real_write = train_module.write_json

    def stop_at_metrics(path: Path, record: object) -> Path:
        if Path(path) == out / "metrics.json":
            raise KeyboardInterrupt
        return real_write(path, record)

    with monkeypatch.context() as patched:
        patched.setattr(train_module, "write_json", stop_at_metrics)
        with pytest.raises(KeyboardInterrupt):
            train_module.train(config, data, out, progress=False)
    assert sorted(p.parent.name for p in out.rglob("last.pt")) == ["member0-unet",
                                                                    "member1-unet"]
    scratch = out / f"{train_module.MEMBERS_SCRATCH}k1ll3d"  # the members' data a kill -9 left
    scratch.mkdir()
    (scratch / "data.pkl").write_bytes(b"the training data")
    with monkeypatch.context() as patched:  # one thread: the members trained one by one
        patched.setattr(torch, "get_num_threads", lambda: 1)
        train_module.train(config, data, out, resume=True, progress=False)
    assert not scratch.exists()
    assert (out / "metrics.json").is_file() and not list(out.rglob("last.pt"))
    assert all((out / member / "best.pt").is_file() for member in ("member0-unet",
                                                                   "member1-unet"))
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = train_module.train(config, data, out, resume=True, progress=False)
    assert isinstance(again, train_module.AlreadyTrained)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == written


@pytest.mark.parametrize("model", ["unet", "unet,unet"])
def test_a_stop_right_after_metrics_json_leaves_no_last_pt(
        synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        model: str) -> None:
    """A stop (Ctrl-C, ``kill``) landing right after a run's metrics.json was written, before
    its last.pt (an ensemble's members') was deleted, left it beside the finished run, about
    three times best.pt, which no resume deletes (that of a finished run leaves every file as
    it was): the run is finished once metrics.json is written, and its last.pt goes on the
    way out too."""
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model=model, model_options={"width": 4}, epochs=1, size=32,
                         batch_size=4)
    out = tmp_path / "run"
    real_write = train_module.write_json

    def stop_after_metrics(path: Path, record: object) -> Path:
        written = real_write(path, record)
        if Path(path) == out / "metrics.json":
            raise KeyboardInterrupt
        return written

    monkeypatch.setattr(train_module, "write_json", stop_after_metrics)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # an ensemble's members in turn
    with pytest.raises(KeyboardInterrupt):
        train_module.train(config, data, out, progress=False)
    assert (out / "metrics.json").is_file() and not list(out.rglob("last.pt"))


def test_a_full_disk_at_an_ensembles_model_is_told_at_its_file_not_at_its_time_record(
        synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk at the ensemble's best.pt, after its members, was told as one at
    invocations.json: the record of the command's time, written on the way out, failed on the
    same disk and its error replaced the first."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # members one after the other
    config = TrainConfig(**{**TINY, "model": "unet,unet", "epochs": 1, "size": 32})
    out = tmp_path / "ens"
    disk_full_from(monkeypatch, out / "best.pt")
    with pytest.raises(FullDisk) as caught:
        train_module.train(config, load_dataset(synthetic_folder), out, progress=False)
    assert caught.value.target == out / "best.pt"


@pytest.mark.parametrize("threads", [1, 2], ids=["one-by-one", "side-by-side"])
def test_a_finished_member_is_not_trained_again_on_its_ensembles_resume(
        synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        threads: int) -> None:
    """A member finished (its metrics.json and best.pt) whose last.pt is gone, as a finished
    run deletes it, was trained again from epoch 1 by the resume that finished its ensemble
    (stopped before the ensemble's metrics.json): every file of the member was rewritten, its
    best.pt another model. It is left as it is, as a finished run is by its own resume."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model="unet,unet", model_options={"width": 4}, epochs=1, size=64,
                         batch_size=4)
    out = tmp_path / "run"
    train_module.train(config, data, out, progress=False)
    (out / "metrics.json").unlink()
    kept = _member_files(out)
    train_module.train(config, data, out, resume=True, progress=False)
    assert (out / "metrics.json").is_file() and not list(out.rglob("last.pt"))
    assert _member_files(out) == kept


def _member_files(out: Path) -> dict[Path, tuple[bytes, int]]:
    """Each file in an ensemble's member folders: its bytes and modification time."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("member*/*")
            if p.is_file()}


def test_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CovsegError, match="not a covseg checkpoint"):
        load_checkpoint(bogus)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CovsegError, match="no covseg header"):
        load_checkpoint(other)


def test_deep_supervision_trains_every_output(tmp_path: Path, synthetic_folder: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from monai.losses import DeepSupervisionLoss

    seen: list[int] = []
    real_loss = DeepSupervisionLoss.forward

    def recording(self, outputs, target):  # type: ignore[no-untyped-def]
        seen.append(len(outputs) if isinstance(outputs, list) else 1)
        return real_loss(self, outputs, target)

    monkeypatch.setattr(DeepSupervisionLoss, "forward", recording)
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model="miniseg", model_options={"deep_supervision": True}, epochs=2,
                         size=64, batch_size=4, val_fraction=0.25)
    metrics = train_module.train(config, data, tmp_path / "ds", progress=False)
    assert seen and set(seen) == {3}, "main output and two side outputs in every step"
    assert 0.0 <= metrics["validation"]["dice"]["mean"] <= 1.0


def test_default_epochs_shrink_for_large_sets() -> None:
    """240 epochs up to 100 slices (the recipe's sets: 40-52), then at most 24,000 slices shown."""
    recipe = TrainConfig()
    assert [recipe.epochs_for(n) for n in (1, 50, 100, 101, 785, 3520, 10**6)] == [
        240, 240, 240, 238, 31, 7, 1]
    assert replace(recipe, epochs=3).epochs_for(3520) == 3


def test_training_follows_the_default_schedule(tmp_path: Path, synthetic_folder: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With no --epochs, the run trains the schedule's epochs for its number of slices."""
    monkeypatch.setattr("covseg.config.MAX_SLICE_PASSES", 32)  # 16 slices -> 2 epochs
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model="unet", model_options={"width": 4}, size=32, batch_size=4)
    metrics = train_module.train(config, data, tmp_path / "run", progress=False)
    assert metrics["epochs"] == 2 and len(data.samples) == 16
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["config"]["epochs"] is None


def test_sigterm_stops_a_run_cleanly_and_resume_finishes(tmp_path: Path,
                                                         synthetic_folder: Path) -> None:
    """``kill`` (SIGTERM) unwinds like Ctrl-C: one line, exit 143, no temporary file left; even
    when it lands inside a MONAI transform, which wraps ordinary exceptions."""
    out = tmp_path / "run"
    command = [sys.executable, "-c", "import sys; from covseg.cli import main; sys.exit(main())",
               "train", str(synthetic_folder), "--out", str(out), "--model", "unet",
               "--model-option", "width=4", "--size", "32", "--epochs", "30"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "log.csv"
    deadline = time.monotonic() + 120
    while ((not log.is_file() or len(log.read_text().splitlines()) < 3)
           and time.monotonic() < deadline):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    stopped = "covseg: stopped; rerun the same command with --resume to continue"
    assert err.splitlines()[-1] == stopped
    assert "Traceback" not in err and not list(out.rglob(".*"))
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert len(log.read_text().splitlines()) == 1 + 30


def test_resume_with_another_split_is_refused(tiny_run: Path, synthetic_folder: Path,
                                              tmp_path: Path) -> None:
    """The fingerprint covers train and validation slices together: an edited patients.csv that
    moved a slice into validation was resumed, picking the best epoch on a slice trained on."""
    data = load_dataset(synthetic_folder)
    record = json.loads((tiny_run / "config.json").read_text())
    saved = TrainConfig.from_dict(record["config"])
    train_cases, val_cases = record["train_cases"], record["val_cases"]
    moved = (train_cases[1:], [*val_cases, train_cases[0]])
    with pytest.raises(CovsegError, match=rf"^{tiny_run}: the saved run was trained with another "
                                          r"train/validation split .*pick a new --out$"):
        train_module.train(saved, data, tiny_run, resume=True, train_cases=moved[0],
                           val_cases=moved[1], progress=False)
    train_module._check_run_folder(tiny_run, saved, True, record[train_module.DATA_FINGERPRINT],
                                   (list(reversed(train_cases)), val_cases), {})  # order: no split
    old = tmp_path / "old"  # a run recorded before the split was checked is resumed as before
    shutil.copytree(tiny_run, old)
    del record["train_cases"], record["val_cases"]
    (old / "config.json").write_text(json.dumps(record))
    train_module._check_run_folder(old, saved, True, record[train_module.DATA_FINGERPRINT],
                                   moved, {})


@pytest.mark.usefixtures("last_pt_kept")
def test_a_default_schedule_run_resumed_under_other_threads_is_warned_not_a_traceback(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A run on the default schedule records ``epochs`` null: resumed under another thread
    count before it finished, its epochs left were counted against None, a TypeError."""
    monkeypatch.setattr(config_module, "RECIPE_EPOCHS", 3)
    data = load_dataset(synthetic_folder)
    config = TrainConfig(**{**TINY, "epochs": None})
    out = tmp_path / "run"
    with stopped_after_epoch(2):
        train_module.train(config, data, out, progress=False)
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["epochs"] is None
    (out / "config.json").write_text(json.dumps({**record,
                                                 "threads": torch.get_num_threads() + 1}))
    caplog.set_level(logging.WARNING, logger="covseg")
    train_module.train(config, data, out, resume=True, progress=False)
    assert any("resumed under other settings" in r.getMessage() for r in caplog.records)
    assert len(load_checkpoint(out / "last.pt")["history"]) == 3


def test_an_unreadable_log_csv_counts_no_epochs(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two functions of one name counted a log.csv's epochs; the one in force (an ensemble's
    resume and its members' count) raised on an unreadable file, the other counted 0."""
    (tmp_path / "log.csv").write_text("epoch,train_loss\n1,0.5\n2,0.4\n")
    assert train_module._epochs_logged(tmp_path) == 2

    def unreadable(path: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert train_module._epochs_logged(tmp_path) == 0
    assert train_module._epochs_logged(tmp_path / "none") == 0


def test_a_run_stopped_before_its_first_epoch_is_rerun_without_resume(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its config.json, written before training, made the rerun ask for --resume although no
    epoch was saved (as after an ensemble whose members could not start)."""
    def stopped(*_: object) -> float:
        raise KeyboardInterrupt

    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    config = TrainConfig(**{**TINY, "epochs": 1})
    monkeypatch.setattr(train_module, "_train_epoch", stopped)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(config, data, out, progress=False)
    assert not (out / "config.json").exists()
    monkeypatch.undo()
    assert train_module.train(config, data, out, progress=False)["epochs"] == 1


def test_a_run_stopped_between_its_first_best_and_last_saves_leaves_no_model(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """best.pt is saved before last.pt: a stop between the two (Ray's cancel of a fold) left
    the epoch's best.pt alone, its config.json removed, and predict loaded that folder as a
    finished model. The folder now goes, as for a stop before the first epoch."""
    real_save = train_module.save_checkpoint

    def stopped_before_last(path: Path, *args: object, **kwargs: object) -> None:
        if Path(path).name == "last.pt":
            raise KeyboardInterrupt
        real_save(path, *args, **kwargs)

    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    config = TrainConfig(**{**TINY, "epochs": 1})
    monkeypatch.setattr(train_module, "save_checkpoint", stopped_before_last)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(config, data, out, progress=False)
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    with pytest.raises(CovsegError, match="no such checkpoint"):
        load_checkpoint(out)
    monkeypatch.undo()
    assert train_module.train(config, data, out, progress=False)["epochs"] == 1


@pytest.mark.parametrize(("stop", "raised"), [
    (lambda: signal.raise_signal(signal.SIGTERM), Terminated),  # a member ended by its parent
    (_thread.interrupt_main, KeyboardInterrupt),  # Ray's cancel of a fold: no signal sent
], ids=["kill", "ray-cancel"])
def test_a_stop_between_last_pt_and_the_log_waits_for_the_epochs_log_row(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        stop: Callable[[], None], raised: type[BaseException]) -> None:
    """log.csv is written after last.pt: a stop between the two left the log a row short of
    last.pt's history, so invocations.json counted an epoch more than the logs showed. The
    epoch's files are now written together, the stop raised once the row is in."""
    real_save = train_module.save_checkpoint

    def stopped_after_last(path: Path, *args: object, **kwargs: object) -> None:
        real_save(path, *args, **kwargs)
        if Path(path).name == "last.pt" and kwargs["epoch"] == 2:
            stop()

    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    monkeypatch.setattr(train_module, "save_checkpoint", stopped_after_last)
    with handler_restored(signal.SIGINT, signal.default_int_handler), stops_recorded(), \
            pytest.raises(raised):
        train_module.train(TrainConfig(**TINY), data, out, progress=False)
    saved = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["history"]
    assert len(saved) == 2
    assert [row["epoch"] for row in read_rows(out / "log.csv")] == ["1", "2"]


def test_a_full_disk_at_the_last_epochs_log_is_made_good_by_the_resume(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """log.csv is written after last.pt: a full disk between the two at the last epoch left the
    log an epoch short, and the resume, with no epoch left to train, finished with that log;
    under another thread count it warned that the run resumed under other settings."""
    real_write = train_module.write_text

    def full_at_last_log(target: Path, text: str, **kwargs: object) -> Path:
        if Path(target).name == "log.csv" and len(text.splitlines()) == 3:  # epoch 2's
            with atomic_path(target):
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(target, text, **kwargs)

    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    config = TrainConfig(**{**TINY, "epochs": 2})
    monkeypatch.setattr(train_module, "write_text", full_at_last_log)
    with pytest.raises(FullDisk):
        train_module.train(config, data, out, progress=False)
    monkeypatch.undo()
    record = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**record,
                                                 "threads": torch.get_num_threads() + 1}))
    caplog.set_level(logging.WARNING, logger="covseg")
    train_module.train(config, data, out, resume=True, progress=False)
    assert [row["epoch"] for row in read_rows(out / "log.csv")] == ["1", "2"]
    # no epoch was left to train: the short log warned of a resume under other settings
    assert not any("resumed under other settings" in r.getMessage() for r in caplog.records)


def test_an_ensembles_resume_that_makes_a_log_good_records_no_epoch_trained(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ensemble counts the epochs each command trained by its members' last.pt: by their
    log.csv, a resume that only wrote a member's lost row again (a full disk between its last
    epoch's last.pt and log.csv row) was recorded in invocations.json as one that trained an
    epoch, and the stopped command as one that trained an epoch fewer."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # members one after the other
    data, out = load_dataset(synthetic_folder), tmp_path / "ens"
    log = out / "member1-unet" / "log.csv"
    real_write = train_module.write_text

    def full_at_last_log(target: Path, text: str, **kwargs: object) -> Path:
        if Path(target) == log and len(text.splitlines()) == 3:  # epoch 2's
            with atomic_path(target):
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(target, text, **kwargs)

    config = TrainConfig(**{**TINY, "model": "unet,unet", "epochs": 2, "size": 32})
    with monkeypatch.context() as patched:
        patched.setattr(train_module, "write_text", full_at_last_log)
        with pytest.raises(FullDisk):
            train_module.train(config, data, out, progress=False)
    train_module.train(config, data, out, resume=True, progress=False)
    assert [row["epoch"] for row in read_rows(log)] == ["1", "2"]
    invocations = json.loads((out / "invocations.json").read_text())
    assert [i["epochs_trained"] for i in invocations] == [4]


def test_a_resumed_ensemble_unpickles_its_members_last_pt_once_to_check_it(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A resumed ensemble under another environment unpickled a stopped member's last.pt three
    times before it trained: for the warning of the environment, for the epochs the command
    trains (invocations.json), and to resume it. The two counts of its epochs share one read
    of the file (its history, memory-mapped), the resume loads it: two loads, and the warning
    and the epochs recorded are as before."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # members in this process
    data, out = load_dataset(synthetic_folder), tmp_path / "ens"
    config = TrainConfig(**{**TINY, "model": "unet,unet", "epochs": 3, "size": 32})
    with stopped_after_epoch(2):
        train_module.train(config, data, out, progress=False)
    last = out / "member0-unet" / "last.pt"
    stopped = file_version(last)
    time.sleep(0.2)  # a file changed in the last 0.1 s is read again (covseg.io.facts)
    real_environment, real_load = train_module.environment, torch.load
    monkeypatch.setattr(train_module, "environment",
                        lambda: {**real_environment(), "torch": "0.0"})
    loads: list[tuple[int, int] | None] = []

    def counted_load(path: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(file_version(Path(path)))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted_load)
    with caplog.at_level(logging.WARNING, logger="covseg"):
        train_module.train(config, data, out, resume=True, progress=False)
    assert loads.count(stopped) == 2  # the last.pt it resumes from, not the epochs' it saves
    assert "resumed under other settings than the run started with" in caplog.text
    invocations = json.loads((out / "invocations.json").read_text())
    assert [i["epochs_trained"] for i in invocations] == [2, 4]

@pytest.mark.parametrize("harm", ["truncated", "deleted", "deleted with last.pt"])
@pytest.mark.usefixtures("last_pt_kept")  # as a run an earlier covseg finished keeps it
def test_a_finished_run_whose_best_pt_is_lost_is_told_so_and_trained_again_on_resume(
        tmp_path: Path, synthetic_folder: Path, caplog: pytest.LogCaptureFixture,
        harm: str) -> None:
    """A finished run's best.pt truncated or deleted: predict of the run folder said "not a
    covseg checkpoint ...; pass a run folder" (one was passed) or "no such checkpoint", and a
    --resume said "already trained; nothing to do" without looking at it. The folder is now
    told to be trained again by the command that made it and --resume, which does so from
    epoch 1, as a cross-validation's fold deleted is trained again."""
    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    config = TrainConfig(**{**TINY, "epochs": 1})
    train_module.train(config, data, out, progress=False)
    best = out / "best.pt"
    if harm == "truncated":
        best.write_bytes(best.read_bytes()[:1000])
    else:
        best.unlink()
        if harm == "deleted with last.pt":
            (out / "last.pt").unlink()
    why = r"damaged \(.*\)" if harm == "truncated" else "gone"
    with pytest.raises(CovsegError, match=(
            rf"^{re.escape(str(out))}: finished, but its best.pt is {why}; train "
            r"it again with the .* command that made it and (--resume|resume=True)")):
        load_checkpoint(out)
    with caplog.at_level(logging.WARNING, logger="covseg"):
        again = train_module.train(config, data, out, resume=True, progress=False)
    assert not isinstance(again, train_module.AlreadyTrained)
    assert "training it again from epoch 1" in caplog.text
    assert load_checkpoint(out)["meta"]["epoch"] == 1
    assert isinstance(train_module.train(config, data, out, resume=True, progress=False),
                      train_module.AlreadyTrained)


def test_a_run_tells_once_whether_its_model_is_finished_or_lost(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run told under its lock whether the model in its folder was finished or lost, then
    told it again as its network started, which only an ensemble's members (not told under the
    run's lock) need: once now."""
    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    calls = calls_counted(monkeypatch, train_module, "lost_network")
    train_module.train(TrainConfig(**{**TINY, "epochs": 1}), data, out, progress=False)
    assert calls == [(out,)]


@pytest.mark.parametrize("left", ["config.json and metrics.json", "metrics.json"])
def test_a_finished_run_whose_best_pt_is_deleted_is_a_saved_run(
        tmp_path: Path, synthetic_folder: Path, left: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished run's best.pt deleted (its last.pt went at its end): the folder held no
    checkpoint, so was no saved run, and a run of another recipe without --resume trained over
    it unchecked. Its records make it a saved run: refused without --resume, before the data
    are read too; a resume of another recipe is refused, one of its own trains it again."""
    from covseg import api

    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    config = TrainConfig(**{**TINY, "epochs": 1})
    train_module.train(config, data, out, progress=False)
    (out / "best.pt").unlink()
    if left == "metrics.json":
        (out / "config.json").unlink()
    kept = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(api, "_load", data_unread)
    refused = "^" + re.escape(f"{out} already holds a run; pass ") + "{} to reuse and continue it"
    other = replace(config, epochs=2)
    with pytest.raises(CovsegError, match=refused.format("--resume")):
        train_module.train(other, data, out, progress=False)
    with pytest.raises(CovsegError, match=refused.format(r"resume=True")):
        api.train(synthetic_folder, out, **{**TINY, "epochs": 2})
    assert sorted(p.name for p in out.iterdir()) == kept
    if left == "metrics.json":
        with pytest.raises(CovsegError, match="finished, but its config.json is gone"):
            train_module.train(config, data, out, resume=True, progress=False)
        return
    with pytest.raises(CovsegError, match="the saved run was trained otherwise"):
        train_module.train(other, data, out, resume=True, progress=False)
    assert train_module.train(config, data, out, resume=True, progress=False)["epochs"] == 1


def test_a_resume_of_a_lost_model_whose_weights_file_is_gone_is_refused_before_any_file_changes(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished run's best.pt deleted and its weights= file gone: a resume deleted the run's
    records (to train it again) and was then refused for the file, its metrics.json lost. It is
    refused first, naming the file, every file left as it was. The recipe, unet++ with weights=
    and no encoder=, is one its builder refuses ("weights= needs encoder="), never reached: the
    file is checked first, and no model takes weights= without the zoo."""
    from covseg import api

    weights, out = tmp_path / "gone.pth", tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(  # the run started from the file
        {"config": {"model_options": {"weights": str(weights)}}}))
    (out / "metrics.json").write_text(json.dumps({"epochs": 1}))
    monkeypatch.setattr(api, "_load", data_unread)
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{out}: the weights= file {weights} is gone, and its network would start from it "
            "(no last.pt to resume from); restore the file or pick a new out") + "$"):
        api.train(synthetic_folder, out, resume=True, model="unet++", size=32,
                  model_options={"weights": str(weights)})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json"]


@pytest.mark.parametrize("member", ["finished", "stopped in its last validation"])
@pytest.mark.usefixtures("last_pt_kept")  # the ensemble stopped: its members' last.pt kept
def test_an_ensemble_member_whose_best_pt_is_lost_is_trained_again_on_resume(
        tmp_path: Path, synthetic_folder: Path, member: str) -> None:
    """An ensemble stopped after its members' last epoch, a member's best.pt deleted: each
    resume went on from that member's last.pt, at its final epoch, trained nothing and was
    refused "member0-unet/best.pt: no such checkpoint". The member is trained again from
    epoch 1, saying why (in its own process: not captured here), and the next resume finds the
    ensemble finished."""
    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    config = TrainConfig(**{**TINY, "model": "unet,unet", "epochs": 1})
    train_module.train(config, data, out, progress=False)
    lost = out / "member0-unet"
    for name in ("metrics.json", "best.pt"):  # the ensemble stopped before its end
        (out / name).unlink()
    (lost / "best.pt").unlink()
    if member != "finished":
        (lost / "metrics.json").unlink()
    again = train_module.train(config, data, out, resume=True, progress=False)
    assert not isinstance(again, train_module.AlreadyTrained)
    assert load_checkpoint(lost / "best.pt")["meta"]["epoch"] == 1 and load_checkpoint(out)
    assert json.loads((lost / "metrics.json").read_text())["epochs"] == 1
    assert isinstance(train_module.train(config, data, out, resume=True, progress=False),
                      train_module.AlreadyTrained)


def test_an_ensemble_resume_without_its_records_is_refused_for_its_finished_members(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A finished ensemble's config.json and metrics.json deleted: a resume of another recipe
    averaged its finished members again unchecked and recorded the new recipe as the run's
    (10 epochs for members trained 1). It is refused, as a finished run without its
    config.json is."""
    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    config = TrainConfig(**{**TINY, "model": "unet,unet", "epochs": 1})
    train_module.train(config, data, out, progress=False)
    for name in ("config.json", "metrics.json"):
        (out / name).unlink()
    kept = sorted(p.name for p in out.iterdir())
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{out}: member0-unet finished, but its config.json is gone, so these options and "
            "data cannot be checked against the run's; train into a new --out") + "$"):
        train_module.train(replace(config, epochs=2), data, out, resume=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == kept


def test_a_finished_runs_files_are_kept_by_the_clean_up_of_a_stopped_resume(
        tmp_path: Path) -> None:
    """A finished run (metrics.json) whose last.pt was deleted to save room is no unsaved run:
    its record and best.pt stay."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.json", "best.pt", "metrics.json"):
        (out / name).write_text("{}")
    train_module.forget_unsaved_run(out)
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "metrics.json"]


@pytest.mark.parametrize("end", ["finished", "stopped before its first epoch"])
def test_a_users_folder_named_member_in_a_run_is_no_member_of_its_clean_ups(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        end: str) -> None:
    """The clean-ups listed ``member*``: a run's end deleted the last.pt of a user's copy in
    ``member_old/``, a stop before its first epoch its best.pt and config.json. They list the
    members as the checks do (:func:`covseg.train.run_networks`)."""
    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    kept = out / "member_old"
    kept.mkdir(parents=True)
    for name in ("last.pt", "best.pt", "config.json"):
        (kept / name).write_text("a copy")
    config = TrainConfig(**{**TINY, "epochs": 1, "size": 32})
    if end == "finished":
        train_module.train(config, data, out, progress=False)
        assert not (out / "last.pt").exists()
    else:
        def stopped(*args: Any, **kwargs: Any) -> float:
            raise KeyboardInterrupt

        monkeypatch.setattr(train_module, "_train_epoch", stopped)
        with pytest.raises(KeyboardInterrupt):
            train_module.train(config, data, out, progress=False)
        assert sorted(p.name for p in out.iterdir()) == ["member_old"]
    assert sorted(p.name for p in kept.iterdir()) == ["best.pt", "config.json", "last.pt"]


def test_a_stop_before_a_retrained_members_first_epoch_keeps_the_finished_member(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished ensemble whose best.pt and member0's were lost: the resume retrains member0,
    and a stop before its first epoch found "nothing saved" (no last.pt anywhere, the run's
    metrics.json gone) and deleted every config.json and member1's finished best.pt; the next
    resume was refused "member1-unet finished, but its config.json is gone", one without
    --resume "already holds a run". The finished member keeps its files, and a resume goes on."""
    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    config = TrainConfig(**{**TINY, "model": "unet,unet", "epochs": 1})
    train_module.train(config, data, out, progress=False)  # its members' last.pt dropped
    for lost in (out / "best.pt", out / "member0-unet" / "best.pt"):
        lost.unlink()
    finished = sorted(p.name for p in (out / "member1-unet").iterdir())

    def stopped(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # members in this process
    monkeypatch.setattr(train_module, "_start", stopped)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(config, data, out, resume=True, progress=False)
    assert sorted(p.name for p in (out / "member1-unet").iterdir()) == finished
    assert (out / "config.json").is_file()
    monkeypatch.undo()
    train_module.train(config, data, out, resume=True, progress=False)
    assert load_checkpoint(out)
    assert isinstance(train_module.train(config, data, out, resume=True, progress=False),
                      train_module.AlreadyTrained)


def test_a_multiclass_run_refuses_a_threshold_and_records_none(tmp_path: Path) -> None:
    """A multi-class run took --threshold, recorded it (0.4 by default) in config.json and
    best.pt and never applied it: predict refused it, and a resume compared it."""
    import covseg

    message = (r"^--threshold applies to binary targets only: a multi-class model takes the most "
               r"probable class per pixel; leave it out$")
    with pytest.raises(CovsegError, match=message):
        train_module.check_recipe(TrainConfig(**TINY, target="multiclass", threshold=0.9))
    message = message.replace("^--threshold", "^threshold")  # the API names its keyword
    for call in (covseg.train, covseg.cross_validate):
        with pytest.raises(CovsegError, match=message):
            call(tmp_path / "missing", tmp_path / "r", target="multiclass", threshold=0.4, **TINY)
    with pytest.raises(CovsegError, match=message):
        covseg.compare(tmp_path / "missing", ["unet", "miniseg"], tmp_path / "r",
                       target="multiclass", threshold=0.4)
    assert not (tmp_path / "r").exists()
    data, out = load_dataset("synthetic", "multiclass"), tmp_path / "run"
    config = TrainConfig(**{**TINY, "epochs": 1}, target="multiclass")
    train_module.train(config, data, out, progress=False)
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["threshold"] is None
    assert record["classes"] == {"0": "background", "1": "ground-glass",
                                 "2": "consolidation"}  # named in no record of the run before
    assert "threshold" not in load_checkpoint(out / "best.pt")["meta"]
    record["config"]["threshold"] = 0.4  # as covseg recorded before: resumed all the same
    (out / "config.json").write_text(json.dumps(record))
    assert train_module.train(config, data, out, resume=True, progress=False)["epochs"] == 1


def test_a_canvas_out_of_range_is_refused_before_the_trial_pass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The trial build runs the model on the run's canvas: a --size of 100000 is refused
    first, rather than run on a 100000 px slice."""
    monkeypatch.setattr(train_module, "check_model",
                        lambda *_: pytest.fail("the model was tried on the canvas"))
    with pytest.raises(CovsegError, match=re.escape("--size must lie in [32, 1024] px")):
        train_module.check_recipe(TrainConfig(**{**TINY, "size": 100000}))


@pytest.mark.parametrize("fraction", [1, 1.5, 2.0, -0.1])
def test_an_out_of_range_val_fraction_is_refused_before_data_are_read(
        tmp_path: Path, fraction: float) -> None:
    """It was refused after every slice was read, without naming the option, and left the
    empty output folders of train, cv and compare behind."""
    import covseg

    message = f"^{re.escape(f'--val-fraction must lie in [0, 1), got {fraction}')}$"
    with pytest.raises(CovsegError, match=message):
        train_module.check_recipe(TrainConfig(**TINY, val_fraction=fraction))
    message = f"^{re.escape(f'val_fraction must lie in [0, 1), got {fraction}')}$"  # the API's
    for call in (covseg.train, covseg.cross_validate):
        with pytest.raises(CovsegError, match=message):
            call(tmp_path / "missing", tmp_path / "r", val_fraction=fraction, **TINY)
    with pytest.raises(CovsegError, match=message):
        covseg.compare(tmp_path / "missing", ["unet", "miniseg"], tmp_path / "r",
                       val_fraction=fraction)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("patients", "command", "told"), [
    (1, ["train"], "in the data; {} add data"),
    (2, ["train", "--val-fraction", "0.5"],
     "left once the validation patients are held out; {} lower --val-fraction or add data"),
    (2, ["cv", "--folds", "2"], ("left once its cross-validation fold's test patients are "
                                 "held out; {} use fewer --folds or add data"))])
def test_too_few_training_slices_are_told_what_left_so_few(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], patients: int, command: list[str],
        told: str) -> None:
    """One slice, --val-fraction at its default 0, was told to "lower --val-fraction", as was a
    cross-validation fold that its test patients left one slice: advice by the actual cause."""
    from covseg.cli import main
    from covseg.data.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "data", seed=1, patients=patients, slices_per_patient=1,
                           size=64)
    assert main([command[0], str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--size", "64", "--model", "miniseg", *command[1:]]) != 0
    needs = "training needs at least 2 (batch normalisation sees two at a time):"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"covseg: error: 1 training slice {told.format(needs)}")
    assert not (tmp_path / "run").exists()


def test_a_run_refused_before_training_leaves_no_folder(tmp_path: Path,
                                                       synthetic_folder: Path) -> None:
    data = load_dataset(synthetic_folder)
    with pytest.raises(CovsegError, match="0 training slices left once its cross-validation"):
        train_module.train(TrainConfig(**TINY), data, tmp_path / "run", train_cases=[],
                           val_cases=[s.case_id for s in data.samples], progress=False)
    assert not (tmp_path / "run").exists()
    # one slice made a batch of one, which DeepLab's image pooling cannot normalise: a traceback
    with pytest.raises(CovsegError, match="1 training slice left .* needs at least 2"):
        train_module.train(TrainConfig(**TINY), data, tmp_path / "run",
                           train_cases=[data.samples[0].case_id],
                           val_cases=[s.case_id for s in data.samples[1:]], progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(CovsegError, match="--lesion-paste pastes lesions: it does not apply"):
        train_module.train(TrainConfig(**{**TINY, "target": "lung", "lesion_paste": 0.5}), data,
                           tmp_path / "run", progress=False)


@pytest.mark.parametrize(("recorded", "given"), [
    ({"width": None}, {"width": 32}), ({}, {"width": 32}), ({"width": 32}, {}),
    ({"width": 32}, {"width": None})])
def test_unetpp_width_32_resumes_a_run_recorded_with_width_null(
        recorded: dict[str, object], given: dict[str, object]) -> None:
    """A unet++ run recorded with width null (MONAI's 32) refused a --resume with
    --model-option width=32 ("model_options: ... 'width': None -> ... 'width': 32"), and the
    other way round, though both build one network."""
    saved = TrainConfig.from_dict({**TrainConfig(model="unet++").to_dict(),
                                   "model_options": recorded})
    assert saved.differences(replace(saved, model_options=given), 50) == []
    assert saved.differences(replace(saved, model_options={"width": 16}), 50) == [
        ("model_options: {'width': 32, 'encoder': None, 'weights': None} -> "
         "{'width': 16, 'encoder': None, 'weights': None}")]


@pytest.mark.parametrize("name", ["r 50 é.pth", "r50"])
def test_a_weights_file_is_recorded_absolute_and_resumes_from_any_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``weights=PATH`` was recorded as typed and compared as text: a run started in ``w/`` with
    ``weights=r50.pth`` resumed from no other folder, whatever the spelling, and docs'
    reproduce recipe failed elsewhere. A record from before (relative) resumes from its folder;
    a name that is no file is kept as typed for the registry's own refusal; a file there named
    as a download would be (``r50``: no folder, no suffix) is a file."""
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / name).write_bytes(b"weights")
    absolute = str((tmp_path / "w" / name).resolve())
    monkeypatch.chdir(tmp_path / "w")
    started = TrainConfig(model="fcn", model_options={"weights": name})
    assert started.to_dict()["model_options"] == {"weights": absolute}
    old = TrainConfig.from_dict({**started.to_dict(), "model_options": {"weights": name}})
    monkeypatch.chdir(tmp_path)
    assert TrainConfig.from_dict(started.to_dict()).differences(
        replace(started, model_options={"weights": f"w/{name}"})) == []
    assert old.differences(replace(started, model_options={"weights": absolute})) == []
    assert TrainConfig(model="fcn", model_options={"weights": "imagenet"}).model_options == {
        "weights": "imagenet"}


@NEEDS_ZOO
def test_a_run_from_a_weights_file_records_its_sha256_and_resumes_from_another_folder(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started in ``w/`` with ``weights=r50.pth``, a run resumes from the folder above naming
    ``w/r50.pth`` (refused as 'trained otherwise' before), and its record holds the file's
    SHA-256, so that a reproduction can tell it starts from the same weights."""
    from torchvision.models import resnet50

    from covseg.records import content_hash

    (tmp_path / "w").mkdir()
    torch.save(resnet50().state_dict(), tmp_path / "w" / "r50.pth")
    data = load_dataset(synthetic_folder)
    config = {"model": "fcn", "epochs": 1, "size": 32, "batch_size": 8}
    monkeypatch.chdir(tmp_path / "w")
    train_module.train(TrainConfig(**config, model_options={"weights": "r50.pth"}), data,
                       tmp_path / "run", progress=False)
    monkeypatch.chdir(tmp_path)
    train_module.train(TrainConfig(**config, model_options={"weights": "w/r50.pth"}), data,
                       tmp_path / "run", resume=True, progress=False)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["config"]["model_options"]["weights"] == str((tmp_path / "w" / "r50.pth"
                                                                ).resolve())
    assert record["weights_sha256"] == content_hash(tmp_path / "w" / "r50.pth")


@NEEDS_ZOO
def test_a_resume_whose_weights_file_changed_is_refused_until_it_is_restored(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """The weights= file's SHA-256 was recorded, not compared: a resume after the file changed
    went on, an ensemble member or fold not yet trained starting from other weights than the
    rest, under a record naming the first file. Refused in one line; the same bytes restored
    resume, and a record written before the SHA-256 was resumes as before."""
    from torchvision.models import resnet50

    weights = tmp_path / "r50.pth"
    torch.save(resnet50().state_dict(), weights)
    started = weights.read_bytes()
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model="fcn", epochs=1, size=32, batch_size=8,
                         model_options={"weights": str(weights)})
    out = tmp_path / "run"
    train_module.train(config, data, out, progress=False)
    torch.save(resnet50().state_dict(), weights)
    with pytest.raises(CovsegError, match=r"weights= file .*r50\.pth holds other bytes than the "
                       r"run started from .*; restore that file or pick a new --out") as error:
        train_module.train(config, data, out, resume=True, progress=False)
    assert "\n" not in str(error.value)
    weights.write_bytes(started)
    train_module.train(config, data, out, resume=True, progress=False)
    torch.save(resnet50().state_dict(), weights)
    record = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(
        {key: value for key, value in record.items() if key != "weights_sha256"}))
    train_module.train(config, data, out, resume=True, progress=False)


@NEEDS_ZOO
@pytest.mark.parametrize("model", ["fcn", "fcn,fcn"])
@pytest.mark.usefixtures("last_pt_kept")
def test_a_resume_from_last_pt_goes_on_with_its_weights_file_gone(
        tmp_path: Path, synthetic_folder: Path, model: str) -> None:
    """The weights= file deleted or moved after the run saved its last.pt: the resume was
    refused ("now no file"), and the build read the file, though a resume starts from last.pt.
    It goes on, the record keeping the SHA-256 the run started from (the resume's, null); an
    ensemble's too, every member holding its last.pt (the average is built from their best.pt,
    not the file)."""
    from torchvision.models import resnet50

    from covseg.records import content_hash

    weights = tmp_path / "r50.pth"
    torch.save(resnet50().state_dict(), weights)
    started = content_hash(weights)
    data = load_dataset(synthetic_folder)
    config = TrainConfig(model=model, epochs=1, size=32, batch_size=8,
                         model_options={"weights": str(weights)})
    out = tmp_path / "run"
    train_module.train(config, data, out, progress=False)
    weights.rename(tmp_path / "moved.pth")
    (out / "metrics.json").unlink()  # stopped in its last validation: a finished run is left
    train_module.train(config, data, out, resume=True, progress=False)
    record = json.loads((out / "config.json").read_text())
    assert record["weights_sha256"] == started
    assert record["resumed_by"][-1]["weights_sha256"] is None


@NEEDS_ZOO
def test_a_resume_whose_gone_weights_file_a_member_would_start_from_is_refused(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """An ensemble whose second member had not started, its weights= file gone: refused in
    one line naming that member, before the data are read (it said "no such weights file")."""
    from covseg import api

    weights, out = tmp_path / "gone.pth", tmp_path / "run"
    (out / "member0-fcn").mkdir(parents=True)
    for name in ("best.pt", "last.pt"):  # a member stopped midway holds both
        (out / "member0-fcn" / name).write_bytes(b"")
    (out / "config.json").write_text(json.dumps(  # the run started from the file
        {"config": {"model_options": {"weights": str(weights)}}}))
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{out}: the weights= file {weights} is gone, and member1-fcn would start from it "
            "(no last.pt to resume from); restore the file or pick a new out") + "$"):
        api.train(synthetic_folder, out, resume=True, model="fcn,fcn", size=32,
                  model_options={"weights": str(weights)})



@NEEDS_ZOO
@pytest.mark.usefixtures("last_pt_kept")
def test_a_resume_of_a_relative_weights_file_gone_goes_on(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weights=r50.pth typed relative, the file gone after the run saved its last.pt: the
    resume was refused as trained otherwise (the record's absolute path against the typed
    one, kept as typed while no file was there). Both are the absolute path now."""
    from torchvision.models import resnet50

    from covseg import api

    monkeypatch.chdir(tmp_path)
    torch.save(resnet50().state_dict(), tmp_path / "r50.pth")
    recipe = {"model": "fcn", "epochs": 1, "size": 32, "batch_size": 8,
              "model_options": {"weights": "r50.pth"}}
    api.train(synthetic_folder, "run", **recipe)
    (tmp_path / "r50.pth").rename(tmp_path / "moved.pth")
    (tmp_path / "run" / "metrics.json").unlink()  # stopped in its last validation
    api.train(synthetic_folder, "run", resume=True, **recipe)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["config"]["model_options"]["weights"] == str(tmp_path / "r50.pth")
    assert record["resumed_by"][-1]["weights_sha256"] is None


@pytest.mark.parametrize("saved", [False, True])
def test_a_resume_whose_weights_file_never_was_is_refused_as_no_such_file(
        tmp_path: Path, synthetic_folder: Path, saved: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A weights= file no saved run in --out started from (a typo; --resume into an empty
    folder): it was called gone ("restore the file"), which cannot be; no such file, as a new
    run says it, before the data are read. unet++ with weights= and no encoder= is refused by
    its builder ("weights= needs encoder="), never reached: the file is checked first, and no
    model takes weights= without the zoo."""
    from covseg import api

    monkeypatch.setattr(api, "_load", data_unread)
    out, typo = tmp_path / "run", tmp_path / "typo.pth"
    out.mkdir()
    if saved:  # a run started from another file
        (out / "config.json").write_text(json.dumps(
            {"config": {"model_options": {"weights": str(tmp_path / "r50.pth")}}}))
        (out / "last.pt").write_bytes(b"")
    with pytest.raises(CovsegError, match="^" + re.escape(f"{typo}: no such weights file") + "$"):
        api.train(synthetic_folder, out, resume=True, model="unet++,unet++", size=32,
                  model_options={"weights": str(typo)})


def test_a_resume_with_options_spelt_out_as_the_run_resolved_them_is_accepted(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--epochs 240 (the default on these slices) or --model-option width=1.0 (miniseg's
    default) was refused on --resume ("epochs: default -> 240"), though it trains the same."""
    recipe = TrainConfig(model="miniseg")
    assert recipe.differences(replace(recipe, epochs=240, model_options={"width": 1.0}),
                              50) == []
    assert recipe.differences(replace(recipe, epochs=240), 1000) == ["epochs: 24 -> 240"]
    assert recipe.differences(replace(recipe, epochs=240)) == ["epochs: default -> 240"]
    assert recipe.differences(replace(recipe, model_options={"width": 2.0})) == [
        ("model_options: {'width': 1.0, 'deep_supervision': False} -> "
         "{'width': 2.0, 'deep_supervision': False}")]
    monkeypatch.setattr("covseg.config.MAX_SLICE_PASSES", 32)  # 16 slices -> 2 epochs
    data, out = load_dataset(synthetic_folder), tmp_path / "run"
    config = TrainConfig(model="unet", model_options={"width": 4}, size=32, batch_size=4)
    train_module.train(config, data, out, progress=False)
    recorded = json.loads((out / "config.json").read_text())["config"]
    spelt = replace(config, epochs=2, model_options={"width": 4, "dropout": 0.0})
    assert train_module.train(spelt, data, out, resume=True, progress=False)["epochs"] == 2
    assert json.loads((out / "config.json").read_text())["config"] == recorded  # as it was
    with pytest.raises(CovsegError, match=r"trained otherwise \(epochs: 2 -> 3\)"):
        train_module.train(replace(config, epochs=3), data, out, resume=True, progress=False)


class _Predicts(torch.nn.Module):
    """A network that gives every pixel one label, whatever the image."""

    def __init__(self, label: int, classes: int = 3) -> None:
        super().__init__()
        self.label, self.classes = label, classes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(image), self.classes, *image.shape[-2:])
        logits[:, self.label] = 1.0
        return logits


def test_multiclass_validation_dice_leaves_out_classes_absent_from_both() -> None:
    """A slice with only ground-glass and an empty prediction scored 0.5 (the absent
    consolidation counted as 1) and so could pick a model that finds no lesion at all."""
    from covseg.losses import build_loss

    loss = build_loss("ce+dice", 3)
    ground_glass = torch.zeros(1, 8, 8, dtype=torch.long)
    ground_glass[0, 2:5, 2:5] = 1
    lesion = [{"image": torch.zeros(1, 8, 8), "mask": ground_glass}]
    empty = [{"image": torch.zeros(1, 8, 8), "mask": torch.zeros(1, 8, 8, dtype=torch.long)}]
    assert train_module._validate(_Predicts(0), loss, lesion, 3, 4, None)[1] == 0.0
    assert train_module._validate(_Predicts(0), loss, empty, 3, 4, None)[1] == 1.0  # both empty
    assert train_module._validate(_Predicts(1), loss, empty, 3, 4, None)[1] == 0.0
    score = train_module._validate(_Predicts(1), loss, lesion + empty, 3, 4, None)[1]
    assert score == pytest.approx((9 * 2 / (64 + 9)) / 2)


class _Logit(torch.nn.Module):
    """A binary network that gives every pixel one logit, whatever the image."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.full((len(image), 1, *image.shape[-2:]), self.logit)


def test_validation_dice_cuts_at_the_runs_threshold() -> None:
    """Epochs were chosen by the Dice at probability 0.5 whatever the run's threshold (0.4 by
    default), so log.csv's val_dice disagreed with the validation metrics of the same model."""
    from covseg.losses import build_loss

    loss = build_loss("bce+dice", 2)
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[0, 2:5, 2:5] = 1
    items = [{"image": torch.zeros(1, 8, 8), "mask": mask}]
    probability_045 = _Logit(math.log(0.45 / 0.55))
    assert train_module._validate(probability_045, loss, items, 2, 4, 0.4)[1] == pytest.approx(
        2 * 9 / (64 + 9))
    assert train_module._validate(probability_045, loss, items, 2, 4, 0.5)[1] == 0.0


def test_validation_dice_is_the_mean_over_cases() -> None:
    """Every validation test scored one case, where the mean and the median agree, so log.csv's
    val_dice (and the best epoch chosen by it) could have become the median unnoticed. Three
    cases, every pixel predicted, masks of 9, 32 and 64 pixels: Dice 18/73, 64/96 and 1, mean
    0.638 (the median is 0.667). The batch size 2 splits them over two batches."""
    from covseg.losses import build_loss

    items = []
    for pixels in (9, 32, 64):
        mask = torch.zeros(1, 8, 8, dtype=torch.long)
        mask.view(-1)[:pixels] = 1
        items.append({"image": torch.zeros(1, 8, 8), "mask": mask})
    probability_045 = _Logit(math.log(0.45 / 0.55))
    dice = train_module._validate(probability_045, build_loss("bce+dice", 2), items, 2, 2, 0.4)[1]
    assert dice == pytest.approx((18 / 73 + 64 / 96 + 1.0) / 3)


def test_log_gives_the_learning_rate_each_epoch_trained_with(tiny_run: Path) -> None:
    """log.csv's lr was read after the scheduler's step: the next epoch's rate (a 1-epoch run
    logged 4e-05 though it trained at 2e-3)."""
    import csv

    config = TrainConfig.from_dict(json.loads((tiny_run / "config.json").read_text())["config"])
    with (tiny_run / "log.csv").open(newline="") as handle:
        rates = [float(row["lr"]) for row in csv.DictReader(handle)]
    floor = config.lr * 0.02  # the cosine schedule over 2 epochs: lr, then halfway to its floor
    assert rates == pytest.approx([config.lr, (config.lr + floor) / 2])


@pytest.mark.parametrize("options, message", [
    ({"loss": "xyz"}, r"unknown loss 'xyz'; choose one of bce, dice, bce\+dice, .*structure$"),
    ({"augment": "medium"}, r"unknown augmentation 'medium'; choose one of none, light, heavy$"),
    ({"loss": "structure", "target": "multiclass"},
     (r"--loss structure is binary \(one output\): with --target multiclass use one of dice, "
      r"bce\+dice \(recorded as ce\+dice\), focal, focal\+dice, tversky, ce\+dice$")),
    ({"loss": "bce", "target": "multiclass"}, r"--loss bce is binary"),
])
def test_unknown_names_and_binary_losses_for_multiclass_are_refused_before_data_are_read(
        tmp_path: Path, options: dict[str, str], message: str) -> None:
    """They were refused only once the slices were read (an unknown augmentation in every
    member an ensemble had started), leaving empty run, fold and model folders behind."""
    import covseg

    recipe = {**TINY, **options}
    with pytest.raises(CovsegError, match=f"^{message}"):
        train_module.check_recipe(TrainConfig(**recipe))
    message = re.sub(r"--(loss|target) (\w+)", r'\1="\2"', message)  # the API's keywords
    for call in (covseg.train, covseg.cross_validate):
        with pytest.raises(CovsegError, match=f"^{message}"):
            call(tmp_path / "missing", tmp_path / "r", **recipe)
    with pytest.raises(CovsegError, match=f"^{message}"):
        covseg.compare(tmp_path / "missing", ["unet", "miniseg"], tmp_path / "r",
                       **{key: value for key, value in recipe.items()
                          if key not in ("model", "model_options")})
    assert not (tmp_path / "r").exists()


def test_a_run_that_fails_before_saving_an_epoch_leaves_no_folder_it_made(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run (or an ensemble's member) failing before its first epoch left its run folder, and
    the fold and cross-validation folders above it, behind: empty, or with a record of
    nothing. A folder that was there before is kept."""
    def failing(*_: object) -> float:
        raise CovsegError("failed before the first epoch")

    data = load_dataset(synthetic_folder)
    monkeypatch.setattr(train_module, "_train_epoch", failing)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # members one after the other
    for model in ("unet", "unet,unet"):
        config = TrainConfig(**{**TINY, "model": model, "epochs": 1})
        with pytest.raises(CovsegError, match="failed before the first epoch"):
            train_module.train(config, data, tmp_path / "cv" / "fold_0", progress=False)
        assert not (tmp_path / "cv").exists()
        (tmp_path / "given").mkdir(exist_ok=True)
        with pytest.raises(CovsegError, match="failed before the first epoch"):
            train_module.train(config, data, tmp_path / "given" / "run", progress=False)
        assert list((tmp_path / "given").iterdir()) == []


@pytest.mark.parametrize("held", ["summary.json", "comparison.json", "fold_0/", "unet/fold_0/"])
def test_train_refuses_a_folder_holding_a_cross_validation_or_comparison(
        tmp_path: Path, synthetic_folder: Path, held: str) -> None:
    """Training into a cv or compare --out wrote a run's config.json and best.pt (which
    predict then loaded) beside another command's report, records contradicting each other;
    a comparison stopped during its first model (unet/fold_0/, no comparison.json yet) too."""
    out = folder_holding(tmp_path / "cv", held)
    kind = ("a model comparison" if held in ("comparison.json", "unet/fold_0/")
            else "a cross-validation")
    with pytest.raises(CovsegError, match=rf"^{out} holds {kind} \(.*\), not a training run; "
                                          r"train into a new --out$"):
        train_module.train(TrainConfig(**TINY), load_dataset(synthetic_folder), out,
                           progress=False)
    assert sorted(p.name for p in out.iterdir()) == [held.split("/")[0]]


CONTEXTS = {"spawned": lambda: multiprocessing.get_context("spawn"),
            "from the fork server": train_module.member_context}
"""How members start: from the fork server (:func:`covseg.train.member_context`), spawned
where there is none (Windows)."""


@pytest.mark.parametrize("context", CONTEXTS.values(), ids=CONTEXTS.keys())
def test_members_started_while_ctrl_c_is_pressed_print_no_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        context: Callable[[], multiprocessing.context.BaseContext]) -> None:
    """A Ctrl-C reaching the process group while members started (importing torch, before they
    ignore it) raised a KeyboardInterrupt traceback in each: they now start with it ignored."""
    (tmp_path / "ctrl_c_member.py").write_text(
        "import signal\n\n\ndef start(*_):\n    signal.raise_signal(signal.SIGINT)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # members get the parent's sys.path
    member = importlib.import_module("ctrl_c_member")
    monkeypatch.setattr(train_module, "_member_process", member.start)
    jobs = [("recipe", tmp_path / f"member{i}") for i in range(2)]
    handler = signal.getsignal(signal.SIGINT)
    train_module._run_wave(context(), jobs, tmp_path / "data.pkl", False, 1)  # a member
    assert signal.getsignal(signal.SIGINT) is handler  # interrupted would fail the wave


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(),
                    reason="no fork server here (Windows): members are spawned")
def test_members_start_with_covseg_torch_and_monai_imported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each spawned member imported torch, MONAI and covseg again before training: seconds per
    member (10 of them for the demo's three folds), now spent once by the fork server."""
    held = "' '.join(m for m in ('torch', 'monai.data', 'covseg.train') if m in sys.modules)"
    assert _members_noted(tmp_path, monkeypatch, "import sys", held) == [
        "torch monai.data covseg.train"] * 2


def _members_noted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imports: str,
                   note: str) -> list[str]:
    """What each of two members started by :func:`covseg.train._run_wave` wrote of the Python
    expression ``note`` (with ``imports`` done), in place of training."""
    module = f"noting_{tmp_path.name}"  # a name of its own: a module is imported once
    (tmp_path / f"{module}.py").write_text(
        f"{imports}\n\n\ndef start(config, shared, out, *_):\n"
        f"    out.mkdir()\n    (out / 'note').write_text(str({note}))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(train_module, "_member_process", importlib.import_module(module).start)
    jobs = [("recipe", tmp_path / f"member{i}") for i in range(2)]
    train_module._run_wave(train_module.member_context(), jobs, tmp_path / "data.pkl", False, 1)
    return [(folder / "note").read_text() for _, folder in jobs]


NEEDS_FORKSERVER = pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="no fork server here (Windows): members are spawned")


ENVIRON_MEMBER = """
import importlib, os

train_module = importlib.import_module("covseg.train")


def trained(config, data, out, *_, **__):
    out.mkdir()
    (out / "seen").write_text(os.environ.get("COVSEG_SEEN", ""))


def start(*args):  # covseg's own member, training replaced by a record of the environment
    train_module._train_model = trained
    train_module._load_items = lambda path: []
    train_module._member_process(*args)
"""


@NEEDS_FORKSERVER
def test_members_run_in_the_parents_environment_as_they_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Members forked from the fork server had the environment it started with, at the first
    ensemble: a TQDM_DISABLE=1 set later did not reach them."""
    (tmp_path / "environ_member.py").write_text(ENVIRON_MEMBER)
    (tmp_path / "data.pkl").write_bytes(pickle.dumps((None, [], [], "", {}, None)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(train_module, "_member_process",
                        importlib.import_module("environ_member").start)
    for value in ("first", "second"):  # the fork server runs from the first wave on
        monkeypatch.setenv("COVSEG_SEEN", value)
        folder = tmp_path / value
        train_module._run_wave(train_module.member_context(), [("recipe", folder)],
                               tmp_path / "data.pkl", False, 1)
        assert (folder / "seen").read_text() == value


@NEEDS_FORKSERVER
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in Linux's /proc")
def test_members_are_forked_by_a_fork_server_of_one_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork from a process of several threads can hang the child on a lock another thread
    held, and from Python 3.12 on it warns each time (DeprecationWarning "This process is
    multi-threaded, use of fork() may lead to deadlocks"). The fork server imports torch, MONAI
    and covseg (:data:`~covseg.train.MEMBER_PRELOAD`), none of which may start a thread there:
    it forks every member."""
    server_threads = "len(os.listdir(f'/proc/{os.getppid()}/task'))"
    assert _members_noted(tmp_path, monkeypatch, "import os", server_threads) == ["1"] * 2


INTERRUPTED_START = """
import importlib, multiprocessing.forkserver, signal, sys
from pathlib import Path

train_module = importlib.import_module("covseg.train")
if __name__ == "__main__":
    context = train_module.member_context()
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    ignored = [line for line in Path(f"/proc/{server}/status").read_text().splitlines()
               if line.startswith("SigIgn:")] if server else ["SigIgn: 0"]
    print(int(ignored[0].split()[1], 16) >> (signal.SIGINT - 1) & 1, flush=True)
    try:
        train_module._run_wave(context, [(None, Path(sys.argv[1]))], Path(sys.argv[1]), False, 1)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    else:
        print("started", flush=True)
"""


@NEEDS_FORKSERVER
def test_a_ctrl_c_while_the_fork_server_starts_stops_the_run(tmp_path: Path) -> None:
    """The first member's start waits seconds while the fork server imports torch and MONAI;
    it ran with Ctrl-C ignored, so a Ctrl-C then was lost and the run trained on. The server
    now starts on its own with Ctrl-C ignored (so it and its members ignore it), and a Ctrl-C
    during the start stops the run as the start returns, the member known and stopped."""
    script = tmp_path / "start.py"
    script.write_text(INTERRUPTED_START)
    run = subprocess.Popen([sys.executable, str(script), str(tmp_path / "member")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert run.stdout is not None
    server_ignores = run.stdout.readline().strip()
    time.sleep(0.5)  # into the start: the server's imports take seconds
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert (server_ignores, out.strip()) == ("1", "interrupted"), err


SLOW_TO_STOP_MEMBER = '''
import signal, sys, time
from pathlib import Path


def run(config, shared, out, *_):
    def stop(*_):
        (out / "stopped").write_text(repr(time.time()))
        time.sleep(2)  # a member takes seconds to unwind and exit: 2 s apart one after the other
        sys.exit(143)

    signal.signal(signal.SIGTERM, stop)
    out.mkdir(parents=True, exist_ok=True)
    (out / "started").write_text("")
    time.sleep(20)
'''


def test_an_interrupt_without_a_signal_stops_every_member_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray cancels a fold with a KeyboardInterrupt raised without a signal, which woke no wait
    for the members (seen only once they ended); then each member was stopped only once the
    one before it had exited, so the last trained on for seconds."""
    (tmp_path / "slow_member.py").write_text(SLOW_TO_STOP_MEMBER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(train_module, "_member_process",
                        importlib.import_module("slow_member").run)
    jobs = [("recipe", tmp_path / f"member{i}") for i in range(2)]

    def interrupt() -> None:
        while not all((folder / "started").exists() for _, folder in jobs):
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    with handler_restored(signal.SIGINT, signal.default_int_handler), \
            pytest.raises(KeyboardInterrupt):
        train_module._run_wave(train_module.member_context(), jobs, tmp_path / "data.pkl",
                               False, 1)
    stopped = [float((folder / "stopped").read_text()) for _, folder in jobs]
    assert max(stopped) - min(stopped) < 1.5, "members stopped one after the other"


def test_a_stop_as_a_member_starts_stops_that_member(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C while a member started (the fork server's first start waits seconds while it
    imports) was raised inside the start: the member the server forked meanwhile was unknown to
    the parent, which left it running (it printed "Process member0-unet:" under the stop line).
    The stop is now raised once the member is known, and stops it."""
    (tmp_path / "long_member.py").write_text(SLOW_TO_STOP_MEMBER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(train_module, "_member_process",
                        importlib.import_module("long_member").run)
    started = []
    real_start = train_module._start_member

    def start_as_ctrl_c_lands(context: Any, process: Any, **_: Any) -> None:
        real_start(context, process)
        started.append(process)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(train_module, "_start_member", start_as_ctrl_c_lands)
    try:
        with handler_restored(signal.SIGINT, signal.default_int_handler), \
                pytest.raises(KeyboardInterrupt):
            train_module._run_wave(train_module.member_context(), [("recipe", tmp_path / "m0")],
                                   tmp_path / "data.pkl", False, 1)
        assert not started[0].is_alive(), "the member was left running"
    finally:
        for process in started:
            process.kill()


MEMBER_STOPPED_IN_A_FINALISER = """
import importlib, multiprocessing, pickle, signal, sys
from pathlib import Path

train_module = importlib.import_module("covseg.train")
folder = Path(sys.argv[1])


class StopWhenCollected:
    def __del__(self):
        signal.raise_signal(signal.SIGTERM)  # a kill landing in tqdm's __del__, say


def trained(*_, **__):
    StopWhenCollected()  # collected at once: SIGTERM arrives inside its finaliser
    (folder / "trained").write_text("")


class Errors:
    def send(self, message):
        raise AssertionError(message)


train_module._train_model = trained
train_module._load_items = lambda path: []
(folder / "data.pkl").write_bytes(pickle.dumps((None, [], [], "", {}, None)))
parent_alive, parent_holds = multiprocessing.Pipe(duplex=False)
train_module._member_process(None, folder / "data.pkl", folder / "member0-unet", False, 0, 1,
                             Errors(), parent_alive, "covseg train", {})
"""


def test_a_sigterm_in_a_members_finaliser_still_stops_the_member(tmp_path: Path) -> None:
    """A side-by-side member stopped through a plain ``sys.exit(143)`` handler: a SIGTERM
    landing in a finaliser as its training ended was printed as "Exception ignored" and
    dropped, and the member exited 0 as if finished. It now exits 143, printing nothing."""
    script = tmp_path / "member.py"
    script.write_text(MEMBER_STOPPED_IN_A_FINALISER)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert (tmp_path / "trained").is_file(), done.stderr
    assert done.returncode == 143, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr


def test_a_lung_model_guided_by_lungs_is_refused() -> None:
    """--target lung with --lung-guide trained a lung model that every later use as a lung
    guide refused ("a lung model must take the plain CT slice")."""
    with pytest.raises(CovsegError, match=r"^--lung-guide adds a lung channel for a lesion "
                                          r"model, .*--target lung.*; leave --lung-guide out$"):
        train_module.check_recipe(TrainConfig(**TINY, target="lung", lung_guide="threshold"))
    train_module.check_recipe(TrainConfig(**TINY, target="lung"))
    train_module.check_recipe(TrainConfig(**TINY, lung_guide="threshold"))


def test_a_run_record_left_without_a_checkpoint_is_started_afresh(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A run killed for memory before its first epoch (--size 20000) left only config.json,
    and the rerun with sane options was refused as "already holds a run" (and --resume as
    "trained otherwise"), though nothing was saved: such a record is replaced now, as a run
    stopped any other way before its first epoch leaves no folder. A saved epoch still asks
    for --resume."""
    data = load_dataset(synthetic_folder)
    out = tmp_path / "killed"
    out.mkdir()
    stale = {"config": TrainConfig(**{**TINY, "size": 20000}).to_dict()}
    (out / "config.json").write_text(json.dumps(stale))
    metrics = train_module.train(TrainConfig(**{**TINY, "epochs": 1}), data, out,
                                 progress=False)
    assert metrics["epochs"] == 1
    assert json.loads((out / "config.json").read_text())["config"]["size"] == 64
    with pytest.raises(CovsegError, match="already holds a run; pass --resume"):
        train_module.train(TrainConfig(**{**TINY, "epochs": 1}), data, out, progress=False)


WAITING_RUN = """
import importlib, sys, time
from pathlib import Path
from covseg.config import TrainConfig
from covseg.data import load_dataset

train_module = importlib.import_module("covseg.train")  # covseg exports a train() too
data, out = sys.argv[1], Path(sys.argv[2])
real_epoch = train_module._train_epoch


def waiting_epoch(*args):
    (out.parent / "started").write_text("")  # config.json written, no checkpoint yet
    while not (out.parent / "go").exists():
        time.sleep(0.05)
    return real_epoch(*args)


train_module._train_epoch = waiting_epoch
train_module.train(TrainConfig(model="unet", epochs=1, size=32, model_options={"width": 4}),
                   load_dataset(data), out, progress=False)
"""


def _waiting_run(tmp_path: Path, data: Path, out: Path) -> subprocess.Popen[str]:
    """A run into ``out`` in a process of its own, waiting before its first epoch (its
    config.json written, no checkpoint) until ``tmp_path / "go"`` exists."""
    process = subprocess.Popen([sys.executable, "-c", WAITING_RUN, str(data), str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the run never started its first epoch"
        time.sleep(0.05)
    assert (out / "config.json").is_file() and not (out / "last.pt").exists()
    return process


def test_a_second_run_into_an_out_another_run_writes_to_is_refused(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """An --out holding only a config.json (a run started, no epoch saved yet) was taken for
    empty: a second run started into it trained beside the first, each overwriting the other's
    files. It is refused while the first runs, in one line naming the first's pid."""
    out = tmp_path / "run"
    first = _waiting_run(tmp_path, synthetic_folder, out)
    try:
        record = (out / "config.json").read_text()
        second = TrainConfig(**{**TINY, "epochs": 1, "size": 32})
        with pytest.raises(CovsegError, match=(
                rf"^another covseg run is writing to {re.escape(str(out))} \(pid {first.pid}\); "
                r"wait for it to end, or pick another --out$")):
            train_module.train(second, load_dataset(synthetic_folder), out, progress=False)
        assert (out / "config.json").read_text() == record, "the first run's record is kept"
    finally:
        (tmp_path / "go").write_text("")
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1
    assert not (out / LOCK_FILE).exists(), "released at its end"
    with pytest.raises(CovsegError, match="already holds a run; pass --resume"):
        train_module.train(second, load_dataset(synthetic_folder), out, progress=False)


def test_a_run_killed_outright_leaves_its_out_to_the_next_run(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A run killed with SIGKILL before its first epoch cannot remove its lock file; the lock
    is the system's (released with the process), so the next run takes the folder over."""
    out = tmp_path / "run"
    first = _waiting_run(tmp_path, synthetic_folder, out)
    first.kill()
    first.communicate(timeout=60)
    assert (out / LOCK_FILE).read_text() == f"{first.pid}\n", "left behind, naming the dead run"
    metrics = train_module.train(TrainConfig(**{**TINY, "epochs": 1, "size": 32}),
                                 load_dataset(synthetic_folder), out, progress=False)
    assert metrics["epochs"] == 1
    assert not (out / LOCK_FILE).exists()


def test_an_out_that_cannot_be_made_is_one_line(tmp_path: Path, synthetic_folder: Path) -> None:
    """An --out under a file raised NotADirectoryError's traceback when its folder was made."""
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "run"
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(out))}: cannot write to it \("
                                          r".*\); pick a writable --out$"):
        train_module.train(TrainConfig(**TINY), load_dataset(synthetic_folder), out,
                           progress=False)


def test_the_patients_actually_held_out_are_recorded(tiny_run: Path) -> None:
    """config.json recorded --val-fraction as asked (0.25 of 8 patients), never the patients
    and slices actually held out, which --val-fraction rounds (one patient at least)."""
    record = json.loads((tiny_run / "config.json").read_text())
    assert record["config"]["val_fraction"] == 0.25
    assert record["held_out"] == {"patients": 2, "slices": 4, "of_patients": 8,
                                  "patient_share": 0.25}
    assert len(record["val_cases"]) == 4


@pytest.mark.parametrize("target, named", [
    ("multiclass", "val_dice (lesion-class mean)="), ("infection", "val_dice=")])
def test_the_progress_bar_names_a_multiclass_runs_dice(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, named: str) -> None:
    """A multi-class run's bar showed ``val_dice``, the mean over lesion classes, beside a last
    line printing the Dice of any lesion (about 3x higher) under the same name."""
    from covseg.train import train

    config = TrainConfig(**{**TINY, "epochs": 1, "target": target, "val_fraction": 0.25})
    data = load_dataset("synthetic", target)
    metrics = train(config, data, tmp_path / "run", progress=True)
    bar = next(line for line in capsys.readouterr().err.split("\r") if "train unet: 100%" in line)
    shown = re.search(rf"{re.escape(named)}(\d\.\d{{3}})", bar)
    assert shown, bar
    assert float(shown.group(1)) == pytest.approx(metrics["best_val_dice_canvas"], abs=5e-4)
    assert ("lesion-class mean" in bar) == (target == "multiclass")


@pytest.mark.parametrize("progress", [True, False])
def test_the_steps_before_the_first_epoch_are_shown_unless_quiet(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        progress: bool) -> None:
    """Between reading a data set and the first epoch's bar, its data fingerprint (slice by
    slice) and its slices' framing to the canvas (25 s for 3,520 slices) showed nothing;
    quiet, they still show nothing. A log (captured stderr) is written every LOGGED_EVERY_S,
    0 here."""
    from covseg import progress as progress_module
    from covseg.train import train

    monkeypatch.setattr(progress_module, "LOGGED_EVERY_S", 0.0)
    config = TrainConfig(**{**TINY, "epochs": 1, "val_fraction": 0.25})
    train(config, load_dataset("synthetic"), tmp_path / "run", progress=progress)
    shown = capsys.readouterr().err
    for bar in ("data fingerprint: 100%", "train unet: training slices to the canvas: 100%",
                "train unet: validation slices to the canvas: 100%"):
        assert (bar in shown) == progress, shown
    if progress:  # the fingerprint's bar moves slice by slice, not once at its end
        assert shown.count("data fingerprint:") > 10, shown
    config = replace(config, val_fraction=0.0)
    train(config, load_dataset("synthetic"), tmp_path / "all", progress=progress)
    assert "validation slices" not in capsys.readouterr().err, "none to put on the canvas"


def test_a_canvas_bar_is_drawn_at_its_runs_line_over_its_slices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An ensemble's members trained side by side each draw their bars at a line of their own:
    the canvas bar at its run's (``position``), counting every slice, chunk by chunk."""
    from contextlib import nullcontext

    train_module = sys.modules["covseg.train"]  # covseg.train is also the function

    class Drawn:
        def __init__(self, **options: object) -> None:
            self.options, self.n = options, 0
            drawn.append(self)

        def update(self, n: int) -> None:
            self.n += n

    drawn: list[Drawn] = []
    monkeypatch.setattr(train_module, "progress_bar", lambda **o: nullcontext(Drawn(**o)))
    monkeypatch.setattr(train_module, "CANVAS_CHUNK", 3)
    samples = load_dataset("synthetic:3").samples[:7]
    items = train_module.canvas_items(samples, 32, bar="member 2", position=2)
    assert len(items) == 7 and [(d.options["position"], d.options["desc"], d.options["total"],
                                 d.n) for d in drawn] == [(2, "member 2", 7, 7)]


@pytest.mark.usefixtures("last_pt_kept")
def test_canvas_masks_hold_a_byte_a_pixel_and_train_as_float32_masks_did(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every slice of a run stays on the canvas for the whole run: its mask's labels in uint8,
    a quarter of float32's bytes, cast back before augmentation, so that the run is the same
    to the bit (losses, weights) as one with float32 masks."""
    train_module = sys.modules["covseg.train"]  # covseg.train is also the function
    data = load_dataset(synthetic_folder)
    config = TrainConfig(**TINY, cutmix=0.5, lesion_paste=0.5)
    train_module.train(config, data, tmp_path / "bytes", progress=False)
    held = train_module.canvas_items(data.samples, config.size)
    monkeypatch.setattr(train_module, "CANVAS_MASK_DTYPE", torch.float32)
    train_module.train(config, data, tmp_path / "floats", progress=False)
    floats = train_module.canvas_items(data.samples, config.size)

    assert {item["mask"].dtype for item in held} == {torch.uint8}
    assert all(torch.equal(a["mask"].float(), b["mask"]) for a, b in zip(held, floats))
    for name in ("best.pt", "last.pt"):
        ours = load_checkpoint(tmp_path / "bytes" / name)["state_dict"]
        theirs = load_checkpoint(tmp_path / "floats" / name)["state_dict"]
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    untimed = [[{k: v for k, v in row.items() if k != "seconds"}
                for row in load_checkpoint(tmp_path / run / "last.pt")["history"]]
               for run in ("bytes", "floats")]
    assert untimed[0] == untimed[1] and len(untimed[0]) == TINY["epochs"]


def test_validation_hd95_of_a_folder_mixing_2d_files_and_volumes_is_given_per_unit(
        tmp_path: Path) -> None:
    """A run's validation metrics averaged the HD95 of PNG slices (px) and of a volume's
    slices (mm) into one mean; metrics.json and validation_per_case.csv give each unit apart."""
    from covseg import api

    data = load_dataset(mixed_unit_folder(tmp_path / "mix"))
    metrics = api.train(data, tmp_path / "run", epochs=1, size=32, batch_size=4, model="unet",
                        model_options={"width": 4}, val_fraction=0.5, threshold=0.001)
    validation = metrics["validation"]
    with (tmp_path / "run" / "validation_per_case.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert "hd95" not in validation and "hd95" not in rows[0]
    for key, volume in (("hd95_mm", True), ("hd95_px", False)):
        values = [float(row[key]) for row in rows if row["case_id"].startswith("v_z") == volume]
        assert all(row[key] == "" for row in rows if row["case_id"].startswith("v_z") != volume)
        assert validation[key]["n"] == len(values)
        if values:
            assert validation[key]["mean"] == pytest.approx(np.mean(values))
    assert validation["hd95_mm"]["n"] + validation["hd95_px"]["n"] == len(rows) > 0


@pytest.mark.usefixtures("last_pt_kept")
def test_a_resume_of_a_finished_ensemble_leaves_its_best_pt_as_it_is(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A --resume of an ensemble an older covseg saved, stopped in its last validation (no
    metrics.json: a finished run's resume leaves every file), trained no member but rewrote
    best.pt with other bytes (same weights): its SHA-256 changed, and predict refused the
    folders made with the run as "predicted otherwise". It is left as it is; one whose
    weights are not the members' average (a member retrained) is still written."""
    data = load_dataset(synthetic_folder)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # members one after the other
    config = TrainConfig(**{**TINY, "model": "unet,unet", "epochs": 1})
    out = tmp_path / "ens"
    train_module.train(config, data, out, progress=False)
    saved = load_checkpoint(out / "best.pt")
    older = {**saved, "meta": {**saved["meta"], "class_names": {"1": "ground-glass"}}}
    torch.save(older, out / "best.pt")  # as a covseg of 1 Dec saved it: other bytes
    kept = (out / "best.pt").read_bytes()
    (out / "metrics.json").unlink()
    train_module.train(config, data, out, resume=True, progress=False)
    assert (out / "best.pt").read_bytes() == kept
    stale = {**older, "state_dict": {key: torch.zeros_like(value)
                                     for key, value in saved["state_dict"].items()}}
    torch.save(stale, out / "best.pt")
    (out / "metrics.json").unlink()
    train_module.train(config, data, out, resume=True, progress=False)
    assert all(torch.equal(value, saved["state_dict"][key]) for key, value
               in load_checkpoint(out / "best.pt")["state_dict"].items())


def test_a_member_killed_by_a_signal_says_resume_only_where_out_is_left(tmp_path: Path) -> None:
    """An ensemble member killed by a signal (out of memory?) said "rerun the same command with
    --resume" whatever the run left, refused where it saved nothing; it now follows the rule of
    a full disk (:func:`covseg.checkpoint.resume_advised`): --resume only where ``--out`` is
    left."""
    from types import SimpleNamespace

    from covseg.checkpoint import resume_advised

    train = importlib.import_module("covseg.train")  # covseg.train is also the API's function

    member = SimpleNamespace(exitcode=-signal.SIGKILL, name="unet-seed1")
    gone = tmp_path / "gone"
    for out, advice in ((tmp_path, "with --resume to continue"),
                        (gone, f"without --resume (nothing was saved: {gone} does not exist)")):
        with pytest.raises(CovsegError) as stopped, resume_advised(out):
            raise train._failure(member)
        assert str(stopped.value) == (f"training member unet-seed1 was killed by signal "
                                      f"{signal.SIGKILL.value} (out of memory?); rerun the same "
                                      f"command {advice}")


def test_a_member_stopped_by_a_sigterm_of_its_own_says_resume_not_main_guard(
        tmp_path: Path) -> None:
    """A member sent SIGTERM alone (``kill PID``, a scheduler ending one process) unwinds and
    exits 143, which was told as a member that failed at start: "check your script's
    ``if __name__ == "__main__":``", no --resume, though --out held its epochs."""
    from types import SimpleNamespace

    from covseg.checkpoint import resume_advised

    train = importlib.import_module("covseg.train")  # covseg.train is also the API's function

    member = SimpleNamespace(exitcode=143, name="unet-seed1")
    with pytest.raises(CovsegError) as stopped, resume_advised(tmp_path):
        raise train._failure(member)
    assert str(stopped.value) == ("training member unet-seed1 was stopped (SIGTERM); rerun the "
                                  "same command with --resume to continue")


def test_a_cv_folds_progress_names_the_fold(tmp_path: Path) -> None:
    """A cross-validation's folds logged "member 0 miniseg" / "train miniseg" alike, nothing
    saying which fold was training (with stderr in a file, where the lines pile up)."""
    fold = tmp_path / "cv" / "fold_1"
    assert member_label(fold / "member0-miniseg") == "fold 1, member 0 miniseg"
    assert train_label(fold, "unet") == "fold 1, train unet"
    assert member_label(tmp_path / "run" / "member1-unet") == "member 1 unet"
    assert train_label(tmp_path / "fold_x", "unet") == "train unet"


def test_a_finished_runs_metrics_read_back_names_as_the_run_saw_them(tmp_path: Path) -> None:
    """Under ``LC_ALL=C PYTHONUTF8=0`` the metrics a --resume of a finished run returned held a
    non-ASCII case name as text (``méd``) that names no file there, where the run's own names
    are decoded as lone surrogates; they read back as every record does (:func:`read_record`)."""
    write_json(tmp_path / "metrics.json", {"cases": ["m\u00e9d"]})
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LC_", "LANG", "PYTHONIOENCODING", "PYTHONUTF8"))}
    script = ("import sys; from pathlib import Path; from covseg.train import finished_metrics; "
              "from covseg.records import read_record; p = Path(sys.argv[1]); "
              "print(finished_metrics(p) == read_record(p / 'metrics.json') is not None)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                          env={**env, "LC_ALL": "C", "PYTHONUTF8": "0"}, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.stdout.strip() == "True", done.stderr


def test_framing_multiclass_masks_that_hold_effusion_is_warned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A multi-class run framed to the lungs (the default) on whole frames whose masks hold
    effusion cut the effusion away, in training and prediction alike (a model so trained on a
    phantom predicted none), without a word; it warns, measured, into metrics.json's
    warnings. Unframed, or on lung crops (which are not framed), nothing is cut, and no note."""
    from covseg import api

    data = effusion_frames(tmp_path / "data")
    caplog.set_level(logging.WARNING, logger="covseg")
    metrics = api.train(data, tmp_path / "framed", target="multiclass", **{**TINY, "epochs": 1})
    note = ("lung framing cuts away 100 % of the effusion pixels (label 3), which lie outside "
            "the aerated lung it frames, in training and prediction alike (a model so trained "
            "on a phantom predicted none); train with frame_lungs=False to learn it")
    assert metrics["warnings"] == [note]
    assert json.loads((tmp_path / "framed" / "metrics.json").read_text())["warnings"] == [note]
    assert [r.getMessage() for r in caplog.records].count(f"{data}: {note}") == 1
    loaded = load_dataset(data, target="multiclass")
    config = TrainConfig(target="multiclass")
    assert train_module.recipe_notes(replace(config, frame_lungs=False), loaded) == []
    with invoked_as(cli_command(["train", str(data), "--target", "multiclass"])):
        assert train_module.recipe_notes(config, loaded) == [
            note.replace("frame_lungs=False", "--no-frame-lungs")]
    for sample in loaded.samples:  # each slice cut to its lungs and effusion, a lung crop
        box = LungFrame().box(sample.image)
        cut = np.s_[box.top:box.bottom + 5, box.left:box.right]
        sample.image, sample.mask = sample.image[cut], sample.mask[cut]
        assert (sample.mask == 3).any() and LungFrame().box(sample.image).crop(
            sample.mask).shape == sample.mask.shape
    assert train_module.recipe_notes(config, loaded) == []


def test_a_set_read_on_different_scales_is_among_the_runs_warnings(tmp_path: Path) -> None:
    """Slices of one set read on different intensity scales (a [0, 1] float one stretched far
    past 1 reads as 8-bit grey, black among the others) were warned of on the console alone,
    the last reading warning missing from metrics.json's warnings."""
    from covseg import api

    data = tmp_path / "data"
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
    for k, top in enumerate((1.0, 1.0, 1.0, 1.5)):
        image = np.random.default_rng(k).random((32, 32)).astype(np.float32)
        image[:8] = top
        np.save(data / "images" / f"s{k}.npy", image)
        np.save(data / "masks" / f"s{k}.npy", square_mask(32, 8, 8, 12))
    metrics = api.train(data, tmp_path / "run", **{**TINY, "epochs": 1, "size": 32})
    said = [note for note in metrics["warnings"] if "different intensity scales" in note]
    assert len(said) == 1 and "1 image as 8-bit grey levels (e.g. images/s3.npy)" in said[0]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["warnings"] == (
        metrics["warnings"])


def test_the_framing_note_gives_a_share_cut_rounded_down(tmp_path: Path) -> None:
    """The framing note's share of the effusion cut away was rounded to nearest: a few pixels
    cut read "0 %" and nearly all "100 %"; rounded down, under 1 % reads "under 1 %"."""
    loaded = load_dataset(effusion_frames(tmp_path / "data"), target="multiclass")
    config = TrainConfig(target="multiclass")
    first = loaded.samples[0]
    box = LungFrame().box(first.image)
    first.mask[(box.top + box.bottom) // 2, (box.left + box.right) // 2] = 3  # one kept
    assert "cuts away 99 % of the effusion" in train_module.recipe_notes(config, loaded)[0]
    for sample in loaded.samples:  # all kept but one pixel, beside a block kept
        box = LungFrame().box(sample.image)
        sample.mask[sample.mask == 3] = 0
        sample.mask[box.top:box.bottom, box.left:box.right] = 3
    first.mask[-1, -1] = 3  # a corner: outside the frame
    note = train_module.recipe_notes(config, loaded)[0]
    assert note.startswith("lung framing cuts away under 1 % of the effusion pixels"), note


def test_ensemble_members_trained_side_by_side_record_the_framing_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ensemble's members trained side by side, which get the data without their training
    pixels, recorded no framing note in their metrics.json (worked out again from those data),
    while members trained one after the other did: each records the ensemble's note."""
    from covseg import api

    data = effusion_frames(tmp_path / "data")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # both members side by side
    metrics = api.train(data, tmp_path / "ens", target="multiclass",
                        **{**TINY, "model": "unet,unet", "epochs": 1})
    assert metrics["members_side_by_side"] == 2
    assert len(metrics["warnings"]) == 1 and "lung framing cuts away" in metrics["warnings"][0]
    members = sorted((tmp_path / "ens").glob("member*/metrics.json"))
    assert len(members) == 2
    for member in members:
        assert json.loads(member.read_text())["warnings"] == metrics["warnings"]


def test_curves_titles_name_the_data_folder_and_a_folds_place(tmp_path: Path) -> None:
    """curves.png said "unet on generic (images/ + masks/) data": two folders' runs, and the
    five folds of a cross-validation, drew the same title."""
    train_module = importlib.import_module("covseg.train")

    for part in ("images", "masks"):
        (tmp_path / "scans" / part).mkdir(parents=True)
        np.save(tmp_path / "scans" / part / "x.npy", np.eye(8, dtype=np.uint8))
    data = load_dataset(tmp_path / "scans")
    config = TrainConfig(model="unet")
    assert train_module._curves_title(tmp_path / "run", config, data, {}) == (
        "unet on scans (generic (images/ + masks/) data)")
    assert train_module._curves_title(tmp_path / "cv" / "fold_3", config, data,
                                      {"folds": 5}) == (
        "unet on scans (generic (images/ + masks/) data), fold 3 of 5")
    # a later repeat's fold of --repeats (its record counts a repeat's folds): "fold 7 of 5"
    assert train_module._curves_title(tmp_path / "cv" / "fold_7", config, data,
                                      {"folds": 5}) == (
        "unet on scans (generic (images/ + masks/) data), fold 7 (repeat 1, fold 2 of 5)")
