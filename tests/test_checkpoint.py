"""Checkpoint loading: covseg's own one-line reasons for files it will not load."""

from __future__ import annotations

import errno
import importlib
import json
import os
import pickle
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from covseg.checkpoint import (
    META_KEYS,
    final_model_step,
    load_checkpoint,
    resume_advised,
    save_checkpoint,
    write_errors_resumable,
)
from covseg.cli import main
from covseg.config import TrainConfig
from covseg.errors import CovsegError, DiskFailed, FullDisk, Resumable
from covseg.io.atomic import atomic_path
from covseg.io.lock import writing_to
from tests.conftest import deny_reading


class _Custom:
    """A class outside PyTorch's safe list, so a weights-only load refuses it."""


@pytest.mark.parametrize("content", ["junk", "object"])
def test_unloadable_file_gives_covsegs_reason_only(tmp_path: Path, content: str) -> None:
    path = tmp_path / "fake.pt"
    if content == "junk":
        path.write_text("junk\n")
    else:
        torch.save({"a": _Custom()}, path)
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a covseg checkpoint (") and "\n" not in message
    assert "run folder from `covseg train` or its best.pt" in message
    assert "weights_only" not in message and "False" not in message


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("config.json", '{"model": "miniseg"}',
     "not a readable PyTorch file: damaged, or another format"),
    ("g.pt", "garbage\n", "not a readable PyTorch file: damaged, or another format"),
    ("b.pt", bytes(range(256)), "not a readable PyTorch file: damaged, or another format"),
    ("o.pt", _Custom, "it holds Python objects besides tensors and plain values"),
], ids=["json", "text", "bytes", "object"])
def test_the_reason_tells_another_format_from_a_pickle_of_objects(
        tmp_path: Path, name: str, content: str | bytes | type, reason: str) -> None:
    """A JSON, text or random file was said to "hold Python objects besides tensors", the
    reason for a real but unsafe pickle: torch's weights-only loader refuses both alike."""
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save({"a": content()}, path)
    with pytest.raises(CovsegError, match=re.escape(f"not a covseg checkpoint ({reason})")):
        load_checkpoint(path)


def test_an_onnx_file_is_named_as_such(tmp_path: Path) -> None:
    """`covseg export --model model.onnx` said the file held Python objects besides tensors."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07onnx")
    with pytest.raises(CovsegError, match=r"model\.onnx: an ONNX file \(from `covseg export`\), "
                                          r"not a checkpoint; pass the run folder or its best\.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("key", ["meta", "state_dict", *META_KEYS])
def test_a_checkpoint_without_an_entry_its_network_needs_is_refused(tmp_path: Path,
                                                                     key: str) -> None:
    """A covseg checkpoint whose meta lacked in_channels, num_classes or model stopped
    predict with a KeyError traceback."""
    meta = {"model": "miniseg", "in_channels": 1, "num_classes": 2, "size": 64}
    path = save_checkpoint(tmp_path / "best.pt", nn.Linear(2, 1), meta)
    assert load_checkpoint(path)["meta"] == meta
    payload = torch.load(path, weights_only=True)
    payload["meta"].pop(key, None)
    payload.pop(key, None)
    torch.save(payload, path)
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (f"{path}: not a covseg checkpoint (no {key!r} entry); train a "
                                 "model with `covseg train` and pass its run folder or best.pt")


GUIDE_SHAPE = ("null or an object of source (text), crop (true or false), window (two numbers) "
               "and, where recorded, sha256 and relative (text)")
"""What a checkpoint's lung_guide meta must be, as its refusal says."""


@pytest.mark.parametrize(("key", "value", "wanted"), [
    ("threshold", float("nan"), "a number strictly between 0 and 1"),
    ("threshold", -1, "a number strictly between 0 and 1"),
    ("threshold", 1.0, "a number strictly between 0 and 1"),
    ("threshold", True, "a number strictly between 0 and 1"),
    ("flips", ["../../x", "zz"], "a list of mirrors from ['lr', 'ud']"),
    ("flips", "lr", "a list of mirrors from ['lr', 'ud']"),
    ("size", 0, "a positive whole number"),
    ("size", -5, "a positive whole number"),
    ("size", 64.0, "a positive whole number"),
    ("size", 100000, "a canvas of at most 1024 px, covseg's largest"),
    ("size", True, "a positive whole number"),
    ("threshold", 0, "a number strictly between 0 and 1"),
    ("window", [150, 150], "two finite numbers, the lower first"),
    ("window", [float("-inf"), 150.0], "two finite numbers, the lower first"),
    ("in_channels", 0, "a positive whole number"),
    ("window", [float("nan"), 150.0], "two finite numbers, the lower first"),
    ("window", [150, -1350], "two finite numbers, the lower first"),
    ("intensity", "raw", "one of auto, hu, uint8, unit"),
    ("test_flips", "yes", "true or false"),
    ("target", "tumour", "one of infection, multiclass, lung"),
    ("model_options", [1], "an object of options"),
    ("model", 5, "a model name"),
    ("model", " ", "a model name"),
    ("lung_guide", {"x": 1}, GUIDE_SHAPE),
    ("lung_guide", {"source": "threshold", "crop": False, "window": 7}, GUIDE_SHAPE),
    ("lung_guide", {"source": "/runs/lungs", "crop": False, "window": [-1350, 150],
                    "sha256": 5}, GUIDE_SHAPE),
    ("lung_frame", 7, "null or an object of window (two numbers)"),
    ("lung_frame", {"window": [150]}, "null or an object of window (two numbers)"),
])
def test_a_checkpoint_whose_settings_cannot_be_used_is_refused_naming_the_value(
        tmp_path: Path, key: str, value: Any, wanted: str) -> None:
    """A checkpoint's meta was used as it was: threshold NaN wrote all-empty masks and -1
    all-lesion ones (exit 0); a size of 0 or a flip named "zz" ended in a traceback, and one of
    100000 in "out of memory" at the first slice; a model that was no string, and a lung guide or
    frame of another shape, ended in tracebacks too."""
    meta = {"model": "miniseg", "in_channels": 1, "num_classes": 2, "size": 64,
            "threshold": 0.5, "flips": ["lr", "ud"], "window": [-1350, 150],
            "intensity": "auto", "test_flips": True, "target": "infection",
            "model_options": {}, "lung_frame": {"window": [-1350, 150]},
            "lung_guide": {"source": "threshold", "crop": False, "window": [-1350, 150]}}
    path = save_checkpoint(tmp_path / "best.pt", nn.Linear(2, 1), meta)
    assert load_checkpoint(path)["meta"] == meta
    save_checkpoint(path, nn.Linear(2, 1), {**meta, key: value})
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (f"{path}: a damaged checkpoint (meta {key}: {value!r}, not "
                                 f"{wanted}); train the model again or pass another run")


@pytest.mark.parametrize(("model", "options", "said"), [
    ("nosuchnet", {}, "unknown model 'nosuchnet'; `covseg models` lists: "),
    ("miniseg,nosuchnet", {}, "unknown model 'nosuchnet'"),
    ("miniseg", {"nosuch": 3}, "model 'miniseg' has no option 'nosuch'; its options: "),
])
def test_a_checkpoint_whose_model_the_registry_cannot_build_is_refused_naming_the_file(
        tmp_path: Path, model: str, options: dict[str, Any], said: str) -> None:
    """A checkpoint naming a model or an option covseg does not know was refused in the
    registry's words alone, as if of the command line's --model ("unknown model 'nosuchnet';
    `covseg models` lists ..."), naming no file."""
    path = save_checkpoint(tmp_path / "best.pt", nn.Linear(2, 1),
                           {"model": model, "in_channels": 1, "num_classes": 2, "size": 64,
                            "model_options": options})
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: a checkpoint of a "
                                          rf"network this covseg cannot build \({re.escape(said)}"
                                          r".*\): saved by another covseg version, or edited; "
                                          "load it with the covseg that trained it, or train the "
                                          "model again or pass another run$"):
        load_checkpoint(path)


def test_a_checkpoint_of_a_model_whose_package_is_missing_is_not_called_damaged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sound deeplabv3+ checkpoint on an install without segmentation-models-pytorch was
    called damaged, to be trained again: its load now passes the check, and the build says
    what to install."""
    registry = importlib.import_module("covseg.models.registry")
    monkeypatch.setattr(registry, "unavailable", lambda *_, **__: "No module named 'smp'")
    path = save_checkpoint(tmp_path / "best.pt", nn.Linear(2, 1),
                           {"model": "deeplabv3+", "in_channels": 1, "num_classes": 2,
                            "size": 64})
    assert load_checkpoint(path)["meta"]["model"] == "deeplabv3+"


def test_a_checkpoint_whose_weights_hold_nan_is_refused(tmp_path: Path) -> None:
    """Weights holding NaN (a diverged training, a corrupt file) predicted NaN probabilities:
    empty masks, exit 0."""
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.bias.fill_(float("nan"))
    path = save_checkpoint(tmp_path / "best.pt", layer,
                           {"model": "miniseg", "in_channels": 1, "num_classes": 2, "size": 64})
    with pytest.raises(CovsegError, match=r"best\.pt: a damaged checkpoint \(its weights bias "
                                          r"hold NaN: a training that diverged, or a corrupt "
                                          r"file\); train the model again"):
        load_checkpoint(path)


@pytest.mark.parametrize("version", ["2", None, 1.5, -1])
def test_a_checkpoint_whose_format_version_is_no_number_is_refused(
        tmp_path: Path, version: Any) -> None:
    """A version of "2" or null ended in a TypeError traceback (compared with covseg's own)."""
    path = save_checkpoint(tmp_path / "best.pt", nn.Linear(2, 1),
                           {"model": "miniseg", "in_channels": 1, "num_classes": 2, "size": 64})
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "version": version}, path)
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (f"{path}: a damaged checkpoint (version {version!r}, not a "
                                 "format number); train the model again or pass another run")


def test_a_sound_last_pt_from_a_newer_covseg_or_unreadable_is_not_to_be_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resume's advice for a damaged last.pt is to delete it: said of one from a newer covseg
    or one only unreadable to this user, it threw away a run that can go on. They say to
    upgrade covseg or make the file readable."""
    path = save_checkpoint(tmp_path / "last.pt", nn.Linear(2, 1),
                           {"model": "miniseg", "in_channels": 1, "num_classes": 2, "size": 64})
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "version": payload["version"] + 1}, path)
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(path, "delete it")
    assert str(caught.value) == (f"{path}: written by a newer covseg (format "
                                 f"{payload['version'] + 1}); upgrade covseg to the one that "
                                 "wrote it and rerun the same command")
    deny_reading(monkeypatch, path)
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(path, "delete it")
    assert str(caught.value) == (f"{path}: permission denied; make it readable (chmod +r) or "
                                 "rerun as the user who wrote it")


def test_a_checkpoint_at_the_largest_canvas_is_loaded(tmp_path: Path) -> None:
    """A size of 1024 px, the largest canvas covseg trains, is a checkpoint's size, not one
    beyond it."""
    meta = {"model": "miniseg", "in_channels": 1, "num_classes": 2, "size": 1024,
            "threshold": 0.01}
    path = save_checkpoint(tmp_path / "best.pt", nn.Linear(2, 1), meta)
    assert load_checkpoint(path)["meta"] == meta


def test_predict_with_a_checkpoint_whose_threshold_is_nan_writes_nothing(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``covseg predict`` with such a best.pt wrote an all-empty mask and exited 0."""
    payload = torch.load(tiny_run / "best.pt", weights_only=True)
    payload["meta"]["threshold"] = float("nan")
    torch.save(payload, tmp_path / "best.pt")
    image = next((synthetic_folder / "images").glob("*.npy"))
    out = tmp_path / "out"
    assert main(["predict", str(image), "--model", str(tmp_path / "best.pt"), "--out",
                 str(out)]) == 2
    assert capsys.readouterr().err == (
        f"covseg: error: {tmp_path / 'best.pt'}: a damaged checkpoint (meta threshold: nan, "
        "not a number strictly between 0 and 1); train the model again or pass another run\n")
    assert not out.exists()


def test_a_run_stopped_before_its_end_is_refused_but_its_best_pt_given_by_name_loads(
        tmp_path: Path) -> None:
    """A single network rewrites best.pt every epoch, so `covseg predict --model RUN` of a run
    killed after epoch 1 of 3 served epoch 1's weights with exit 0 and no word."""
    run = _stopped_run(tmp_path / "run", '{"config": {"model": "miniseg", "epochs": 3}}')
    with pytest.raises(CovsegError, match=re.escape(
            f"{run}: this run stopped before its end (no metrics.json: its best.pt holds the "
            f"last epoch trained, not the whole recipe); finish it with the `covseg train ... "
            f"--out {run}` command that made it and --resume (from Python, the covseg.train(..., "
            f'out="{run}") call that made it and resume=True), or give {run / "best.pt"} to use '
            "those weights as they are")):
        load_checkpoint(run)
    assert load_checkpoint(run / "best.pt")["meta"]["epoch"] == 1
    (run / "metrics.json").write_text('{"epochs": 3}\n')
    assert load_checkpoint(run)["meta"]["epoch"] == 1


def test_the_advised_resume_quotes_its_out_for_the_shell(tmp_path: Path) -> None:
    """The advice named ``--out /tmp/my run`` unquoted, which a shell splits at the space,
    where every other advised command quotes its option values (``shlex.join``)."""
    run = _stopped_run(tmp_path / "my run", '{"command": "covseg train --out x"}')
    with pytest.raises(CovsegError, match=re.escape(
            f"finish it with the `covseg train ... --out '{run}'` command that made it and "
            "--resume, or give")):
        load_checkpoint(run)


def _stopped_run(run: Path, config: str) -> Path:
    """A run folder killed after epoch 1: its best.pt, and ``config`` as its config.json."""
    run.mkdir()
    meta = {"model": "miniseg", "in_channels": 1, "num_classes": 2, "size": 64, "epoch": 1}
    save_checkpoint(run / "best.pt", nn.Conv2d(1, 2, 1), meta)
    (run / "config.json").write_text(config + "\n")
    return run


def _stopped_fold(fold: Path, model: str = "miniseg,miniseg",
                  command: str = "covseg cv data --out cv") -> Path:
    """A fold folder as a cv stopped in its first member leaves it: its record (made by
    ``command``), no best.pt."""
    fold.mkdir(parents=True)
    (fold / "config.json").write_text(json.dumps({
        "command": command, "config": {"model": model, "model_options": {}}}))
    return fold


def test_a_run_stopped_midway_is_finished_through_the_front_door_that_started_it(
        tmp_path: Path) -> None:
    """"Finish it with the `covseg cv ... --out X` command that made it and --resume" was told
    of a run started from Python too (covseg.cross_validate takes resume=True), whoever loads
    it: a run records its command, read here, so a run started from Python is told as its API
    call, and one from the command line as its command line."""
    fold = _stopped_fold(tmp_path / "cv" / "fold_0", command="Python API: covseg.cross_validate()")
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(fold)
    assert str(caught.value).endswith(
        f'finish it with the covseg.cross_validate(..., out="{tmp_path / "cv"}") call that made '
        "it and resume=True")
    member = _stopped_fold(tmp_path / "ens" / "member0-unet", "unet")
    (member.parent / "config.json").write_text(
        '{"command": "Python API: covseg.train()", "config": {"model": "unet,unet"}}')
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(member)
    assert str(caught.value).endswith(
        f'finish it with the covseg.train(..., out="{tmp_path / "ens"}") call that made it and '
        "resume=True")


def test_a_fold_stopped_midway_says_to_resume_the_command_that_made_it(tmp_path: Path) -> None:
    """A stopped `covseg cv` fold was to be finished "with the same `covseg train` command",
    which refuses a fold's folder."""
    fold = _stopped_fold(tmp_path / "cv" / "fold_0")
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(fold)
    assert str(caught.value) == (
        f"{fold}: this run has no best.pt yet (stopped before its end?); finish it with the "
        f"`covseg cv ... --out {tmp_path / 'cv'}` command that made it and --resume")
    compared = _stopped_fold(tmp_path / "cmp" / "unet" / "fold_1", "unet")
    (tmp_path / "cmp" / "comparison.json").write_text("{}")
    with pytest.raises(CovsegError, match=re.escape(
            f"finish it with the `covseg compare ... --out {tmp_path / 'cmp'}` command that "
            "made it and --resume")):
        load_checkpoint(compared)
    (tmp_path / "cmp" / "comparison.json").unlink()  # a comparison stopped in its first model
    with pytest.raises(CovsegError, match=re.escape(
            f"finish it with the `covseg cv ... --out {tmp_path / 'cmp' / 'unet'}` command that "
            f"made it and --resume (or, in a comparison, the `covseg compare ... --out "
            f"{tmp_path / 'cmp'}` command that made it and --resume)")):
        load_checkpoint(compared)


def test_a_cross_validation_or_comparison_folder_says_where_its_models_are(
        tmp_path: Path) -> None:
    """Such a folder was "best.pt: no such checkpoint; pass a run folder or its best.pt"."""
    cv = tmp_path / "cv"
    for k in (0, 1, 10):
        (cv / f"fold_{k}").mkdir(parents=True)
    (cv / "summary.json").write_text("{}")
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(cv)
    assert str(caught.value) == (
        f"{cv}: a cross-validation, whose models are in its fold folders; give one of them "
        f"({cv / 'fold_0'}) as the model, or for a final model train one on all the data (the "
        "fold models are no ensemble, each trained on 2/3 of it): `covseg train DATA --model "
        "MODEL --out RUN`")
    compared = tmp_path / "cmp"
    (compared / "unet" / "fold_0").mkdir(parents=True)
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(compared)
    assert str(caught.value) == (
        f"{compared}: holds cross-validations (a model comparison), whose models are in their "
        f"fold folders; give one of them ({compared / 'unet' / 'fold_0'}) as the model; for "
        "a final model train one on all the data (the fold models are no ensemble, each "
        "trained on (k-1)/k of it): `covseg train DATA --model MODEL --out RUN`")


def test_a_repeated_cross_validation_folder_says_each_fold_trained_on_k_minus_1_of_k(
        tmp_path: Path) -> None:
    """A 5-fold cross-validation repeated 3 times (15 fold folders) given as the model said
    each fold model trained on 14/15 of the data, counting its folders: each trained on 4/5,
    as its summary's recipe (or, before the summary, a fold's record) counts a repeat's."""
    cv = tmp_path / "cv"
    for k in range(15):
        (cv / f"fold_{k}").mkdir(parents=True)
    (cv / "fold_0" / "config.json").write_text(json.dumps({"folds": 5}))
    for summary in (None, {"config": {"model": "unet", "folds": 5, "repeats": 3}}):
        if summary is not None:
            (cv / "summary.json").write_text(json.dumps(summary))
        with pytest.raises(CovsegError, match=re.escape(
                "(the fold models are no ensemble, each trained on 4/5 of it)")):
            load_checkpoint(cv)


def test_a_finished_cross_validation_or_comparison_folder_says_how_to_train_the_final_model(
        tmp_path: Path) -> None:
    """An nnU-Net user given a cv folder to predict with was told only to give one fold: its
    records name the data, the model (a comparison's of the best mean Dice) and the target."""
    data = tmp_path / "my data"
    cv = tmp_path / "cv"
    for k in range(5):
        (cv / f"fold_{k}").mkdir(parents=True)
    (cv / "summary.json").write_text(json.dumps({
        "data_path": str(data), "config": {"model": "unet", "model_options": {"width": 16},
                                           "target": "lung"}}))
    with pytest.raises(CovsegError, match=re.escape(
            "or for a final model train one on all the data (the fold models are no ensemble, "
            f"each trained on 4/5 of it): `covseg train '{data}' --model unet --model-option "
            "width=16 --target lung --out RUN`")):
        load_checkpoint(cv)
    compared = tmp_path / "cmp"
    (compared / "unet" / "fold_0").mkdir(parents=True)
    (compared / "comparison.json").write_text(json.dumps({
        "data_path": str(data), "folds": 3, "config": {"target": "infection"},
        "models": [{"model": "unet", "dice": {"mean": 0.6}},
                   {"model": "miniseg:width=8", "dice": {"mean": 0.7}},
                   {"model": "resunet", "dice": {"mean": None}}]}))
    with pytest.raises(CovsegError, match=re.escape(
            "each trained on 2/3 of it): "
            f"`covseg train '{data}' --model miniseg --model-option width=8 --out RUN`")):
        load_checkpoint(compared)


@pytest.mark.parametrize(("verdict", "said"), [("no difference shown", True), ("better", False)])
def test_a_comparison_folder_names_its_best_model_with_its_verdict(
        tmp_path: Path, verdict: str, said: bool) -> None:
    """A comparison's folder given as the model was answered with the command to train the
    model of the highest mean Dice, as if it had won, where its verdict over the folds (the
    corrected t-test vs the baseline) was "no difference shown"; it says so, in one line, as
    comparison.md's next step does."""
    compared = tmp_path / "cmp"
    (compared / "unet" / "fold_0").mkdir(parents=True)
    fold_test = {"p_value": 0.3 if said else 0.01, "mean_difference": 0.1, "verdict": verdict}
    (compared / "comparison.json").write_text(json.dumps({
        "data_path": "/data/ct", "folds": 3, "config": {"target": "infection"},
        "models": [{"model": "unet", "dice": {"mean": 0.6}},
                   {"model": "miniseg", "dice": {"mean": 0.7},
                    "corrected_t_vs_baseline": fold_test}]}))
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(compared)
    unshown = " (no difference from the baseline shown over the folds)" if said else ""
    assert str(caught.value) == (
        f"{compared}: holds cross-validations (a model comparison), whose models are in their "
        f"fold folders; give one of them ({compared / 'unet' / 'fold_0'}) as the model; "
        f"`miniseg` has the highest mean Dice{unshown}; for a final model train one on all the "
        "data (the fold models are no ensemble, each trained on 2/3 of it): `covseg train "
        "/data/ct --model miniseg --out RUN`")


def test_a_comparison_folder_offers_the_fold_of_its_best_model(tmp_path: Path) -> None:
    """The refusal offered the first model's fold by name (``miniseg/fold_0``), then said
    another (``unet:width=4``) had the highest mean Dice: it offers that model's fold, and
    the first by name where the best one's folder is gone."""
    compared = tmp_path / "cmp"
    for name in ("miniseg", "unet_width-4"):
        (compared / name / "fold_0").mkdir(parents=True)
    (compared / "comparison.json").write_text(json.dumps({
        "data_path": "/data/ct", "folds": 2,
        "models": [{"model": "unet:width=4", "dice": {"mean": 0.7}},
                   {"model": "miniseg", "dice": {"mean": 0.6}}]}))
    with pytest.raises(CovsegError, match=re.escape(
            f"give one of them ({compared / 'unet_width-4' / 'fold_0'}) as the model; "
            "`unet:width=4` has the highest mean Dice")):
        load_checkpoint(compared)
    (compared / "unet_width-4" / "fold_0").rmdir()
    with pytest.raises(CovsegError, match=re.escape(
            f"give one of them ({compared / 'miniseg' / 'fold_0'}) as the model; "
            "`unet:width=4` has the highest mean Dice")):
        load_checkpoint(compared)


@pytest.mark.parametrize("models", [["unet"], {"unet": {"dice": {"mean": 0.6}}}, "unet", None,
                                    [{"dice": 0.5, "model": "unet"}], [{"model": ["unet"]}]])
def test_a_comparison_folder_whose_models_record_is_damaged_is_refused_in_one_line(
        tmp_path: Path, models: object) -> None:
    """A comparison.json whose ``models`` is not a list of rows (a list of names, an object)
    gave an AttributeError traceback where the folder's refusal was due."""
    compared = tmp_path / "cmp"
    (compared / "unet" / "fold_0").mkdir(parents=True)
    (compared / "comparison.json").write_text(json.dumps({"data_path": "/data/ct", "folds": 3,
                                                          "models": models}))
    with pytest.raises(CovsegError, match=re.escape(
            "holds cross-validations (a model comparison), whose models are in their fold "
            "folders; give one of them")):
        load_checkpoint(compared)


def test_the_final_model_step_gives_the_recipe_cross_validated(tmp_path: Path) -> None:
    """The step gave only the data, model and target: the final model trained another recipe
    (240 epochs at 256 px, no lung guide) than the one cross-validated, and a model option
    holding a comma was cut in two."""
    recipe = TrainConfig(model="unet", model_options={"width": 16, "note": "a,b"}, epochs=40,
                         size=128, lung_guide=str(tmp_path / "lungs"), window=(-1200, 600),
                         test_flips=False, ema_decay=0.998)
    summary = {"data_path": "/data/ct", "config": {**recipe.record(), "folds": 5}}
    assert final_model_step("unet", recipe.model_options, summary, 5).endswith(
        "`covseg train /data/ct --model unet --model-option width=16 --model-option note=a,b "
        f"--epochs 40 --size 128 --ema-decay 0.998 --window -1200 600 --lung-guide "
        f"{tmp_path / 'lungs'} --no-test-flips --out RUN`")
    lungs = {"data_path": "/data/ct", "config": TrainConfig(target="lung").record(False)}
    assert final_model_step("unet", {}, lungs, 5).endswith(  # its own defaults left out
        "`covseg train /data/ct --model unet --target lung --out RUN`")


def test_a_run_folder_that_also_holds_a_cross_validation_loads_as_the_run(
        tmp_path: Path) -> None:
    """The folds-holder check ran on every run folder loaded, so a finished run with a
    cross-validation kept inside it (``run/cv/fold_0``) was refused as a comparison."""
    run = tmp_path / "run"
    (run / "cv" / "fold_0").mkdir(parents=True)
    meta = {"model": "miniseg", "in_channels": 1, "num_classes": 2, "size": 64, "epoch": 3}
    save_checkpoint(run / "best.pt", nn.Conv2d(1, 2, 1), meta)
    assert load_checkpoint(run)["meta"]["epoch"] == 3


def test_an_ensemble_member_stopped_midway_says_to_resume_its_ensemble(tmp_path: Path) -> None:
    """A member's folder was to be finished "with the same `covseg train` command and
    --resume", as if the member were a run of its own; the command is the ensemble's."""
    member = _stopped_fold(tmp_path / "ens" / "member0-miniseg", "miniseg")
    (member.parent / "config.json").write_text('{"config": {"model": "miniseg,miniseg"}}')
    with pytest.raises(CovsegError, match=re.escape(
            f"{member}: this run has no best.pt yet (stopped before its end?); finish it with "
            f"the `covseg train ... --out {tmp_path / 'ens'}` command that made it and "
            "--resume")):
        load_checkpoint(member)
    in_fold = _stopped_fold(_stopped_fold(tmp_path / "cv" / "fold_1") / "member1-unet", "unet")
    with pytest.raises(CovsegError, match=re.escape(
            f"finish it with the `covseg cv ... --out {tmp_path / 'cv'}` command that made it "
            "and --resume")):
        load_checkpoint(in_fold)


@contextmanager
def _locked_elsewhere(folder: Path) -> Iterator[None]:
    """``folder``'s lock held, as a run training there holds it, by another thread: a folder
    the calling thread holds is its own run's, not another's (holder() and refuse_if_held()
    pass it)."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with writing_to(folder):
            taken.set()
            done.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert taken.wait(30)
        yield
    finally:
        done.set()
        thread.join()


def test_a_run_still_training_is_said_to_be_so_not_stopped(tmp_path: Path) -> None:
    """`covseg predict --model RUN` of a run still training said it "stopped before its end"
    and to finish it with --resume, which was then refused as another run writing there; an
    ensemble's best.pt not yet written was "no such checkpoint", a member, a fold or a
    cross-validation's fold not yet made alike. The run training it is named now, by pid, with
    the weights saved so far (only those there), and a read-only run folder is probed alike."""
    pid = os.getpid()
    run = tmp_path / "run"
    run.mkdir()
    meta = {"model": "miniseg", "in_channels": 1, "num_classes": 2, "size": 64, "epoch": 1}
    save_checkpoint(run / "best.pt", nn.Conv2d(1, 2, 1), meta)
    (run / "config.json").write_text('{"config": {"model": "miniseg", "epochs": 3}}\n')
    with _locked_elsewhere(run):
        run.chmod(0o555)
        try:
            with pytest.raises(CovsegError) as caught:
                load_checkpoint(run)
        finally:
            run.chmod(0o755)
        assert str(caught.value) == (
            f"{run}: still being trained (pid {pid}); wait for it to end, or give "
            f"{run / 'best.pt'} (the best epoch yet) to use those weights as they are")
        save_checkpoint(run / "last.pt", nn.Conv2d(1, 2, 1), meta)
        with pytest.raises(CovsegError, match=re.escape(
                f"or give {run / 'best.pt'} (the best epoch yet) or {run / 'last.pt'} (the "
                "latest epoch) to use those weights as they are")):
            load_checkpoint(run)
        assert load_checkpoint(run / "best.pt")["meta"]["epoch"] == 1  # given by name: used
    ens = tmp_path / "ens"
    member = _stopped_fold(ens / "member0-miniseg", "miniseg")
    (ens / "config.json").write_text('{"config": {"model": "miniseg,miniseg"}}')
    with _locked_elsewhere(ens):
        for given in (ens, ens / "best.pt"):
            with pytest.raises(CovsegError) as caught:
                load_checkpoint(given)
            assert str(caught.value) == (f"{ens}: still being trained (pid {pid}); wait for it "
                                         "to end")
        with pytest.raises(CovsegError) as caught:
            load_checkpoint(member)
        assert str(caught.value) == (f"{member}: still being trained (pid {pid}, writing to "
                                     f"{ens}); wait for it to end")
    cv = tmp_path / "cv"
    fold = _stopped_fold(cv / "fold_0")
    with _locked_elsewhere(cv):
        for given in (fold, cv / "fold_1"):  # fold_1 not made yet
            with pytest.raises(CovsegError, match=re.escape(
                    f"{given}: still being trained (pid {pid}, writing to {cv})")):
                load_checkpoint(given)
    with pytest.raises(CovsegError, match="stopped before its end"):  # the run has ended
        load_checkpoint(fold)


def test_a_run_loading_its_own_stopped_fold_is_not_told_it_is_still_training(
        tmp_path: Path) -> None:
    """A cross-validation loading its own fold (its lock held by the loading run) was told the
    fold was "still being trained (pid <its own pid>, writing to CV)": the lock's holder was
    itself. Its own lock is passed now, and the fold judged by its files."""
    cv = tmp_path / "cv"
    fold = _stopped_fold(cv / "fold_0")
    with writing_to(cv), pytest.raises(CovsegError) as caught:
        load_checkpoint(fold)
    assert "stopped before its end" in str(caught.value)
    assert "still being trained" not in str(caught.value)


def _write_fails(code: int) -> Callable[..., None]:
    """torch.save whose file's write fails with ``code``: its zip writer turns the file's
    OSError into a RuntimeError."""
    def save(*_: object, **__: object) -> None:
        try:
            raise OSError(code, os.strerror(code))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 "
                               "vs 598")

    return save


@pytest.mark.parametrize(("code", "told", "kind"), [
    (errno.ENOSPC, "no space left on device writing {target}; free space and ", FullDisk),
    (errno.EIO, "{target}: cannot write it (Input/output error); fix the disk and ", DiskFailed),
    (errno.EROFS, "{target}: cannot write it (Read-only file system); fix the disk and ",
     DiskFailed)],
    ids=["full", "io-error", "remounted-read-only"])
def test_a_write_error_while_saving_says_the_file_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, told: str,
        kind: type[Resumable]) -> None:
    """A full disk, or a failing one (an I/O error, or a file system remounted read-only
    under the file: "pick a writable place or another name" before), is a :class:`Resumable`
    stop: the run's caller says whether to go on with --resume (:func:`resume_advised`), as
    the saver cannot tell whether the stopped run keeps its folder; elsewhere it says to rerun
    the command. An I/O error once (the file's close then fine) reached the command line as torch's
    RuntimeError over it, a traceback, and then as "pick a writable place or another name",
    where the stopped training goes on with --resume once the disk is back."""
    monkeypatch.setattr(torch, "save", _write_fails(code))
    target = tmp_path / "run" / "best.pt"
    with pytest.raises(CovsegError) as caught:
        save_checkpoint(target, nn.Linear(2, 1), {"model": "x"})
    assert str(caught.value) == told.format(target=target) + "rerun the same command"
    assert isinstance(caught.value, kind)
    # an ensemble member's reaches its parent whole (pickled), to be advised alike
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)
    assert list((tmp_path / "run").iterdir()) == []  # no best.pt, no temporary
    with pytest.raises(CovsegError) as caught, resume_advised(target.parent):
        save_checkpoint(target, nn.Linear(2, 1), {"model": "x"})
    assert str(caught.value) == (told.format(target=target)
                                 + "rerun the same command with --resume to continue")


@pytest.mark.parametrize("error", [
    OSError(errno.EIO, "Input/output error", "other.json"),
    OSError(errno.EROFS, "Read-only file system"),
    OSError(errno.EROFS, "Read-only file system", "other.json"),
    OSError(errno.EACCES, "Permission denied", "other.json"),
    OSError("no errno")], ids=["eio-named", "erofs", "erofs-named", "eacces-named", "no-errno"])
def test_an_atomic_file_and_a_trainings_write_judge_an_error_alike(
        tmp_path: Path, error: OSError) -> None:
    """An atomic file's write and a training's (:func:`write_errors_resumable`) decided by two
    rules whether an error was the disk's: an I/O error naming another file, or one with no
    errno, was the file's own line in one and raised as it was in the other."""
    told = []
    for writing in (atomic_path(tmp_path / "a.json"), write_errors_resumable(tmp_path / "a.json")):
        try:
            with writing:
                raise error
        except CovsegError as exc:
            told.append((type(exc), str(exc)))
        except OSError as exc:
            told.append((type(exc), str(exc)))
    assert told[0] == told[1]

def test_a_failing_disk_under_the_ensembles_shared_data_names_them(tmp_path: Path) -> None:
    """The members' shared data (data.pkl, canvas.pt) are written outside any atomic file: a
    failing disk there (an OSError naming no file) ended in a bare "covseg: error:
    Input/output error"."""
    what = f"the members' shared data in {tmp_path}"
    with pytest.raises(DiskFailed) as caught, write_errors_resumable(tmp_path, what):
        raise OSError(errno.EIO, "Input/output error")
    assert str(caught.value) == (f"{what}: cannot write it (Input/output error); fix the disk "
                                 "and rerun the same command")


def test_a_full_disk_says_resume_only_where_the_runs_folder_is_left(tmp_path: Path) -> None:
    """It said --resume after a run that removed its folder, where --resume is refused; an
    ensemble member's full disk reaches its parent whole (pickled), to be advised alike."""
    target = tmp_path / "r" / "last.pt"
    gone = f"without --resume (nothing was saved: {target.parent} does not exist)"
    for made, advice in ((False, gone), (True, "with --resume to continue")):
        if made:
            target.parent.mkdir()
        with pytest.raises(CovsegError) as caught, resume_advised(target.parent):
            raise pickle.loads(pickle.dumps(FullDisk(target)))
        assert str(caught.value) == (f"no space left on device writing {target}; free space and "
                                     f"rerun the same command {advice}")


def _bug_over(error: OSError | None) -> Callable[..., None]:
    """torch.save raising a bug's RuntimeError, while ``error`` is handled where given."""
    def save(*_: object, **__: object) -> None:
        if error is None:
            raise RuntimeError("a bug")
        try:
            raise error
        except OSError:
            raise RuntimeError("a bug") from None

    return save


@pytest.mark.parametrize("error", [
    None, FileNotFoundError(errno.ENOENT, "No such file or directory", "x.json"),
    OSError(errno.EIO, "Input/output error")], ids=["alone", "over-a-missing-file", "over-eio"])
def test_another_runtime_error_while_saving_stays_a_bug(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError | None) -> None:
    """Only torch's writer's RuntimeError over the file's OSError is that write error: a bug's
    raised while an OSError was handled was told as that OSError (a file not found)."""
    monkeypatch.setattr(torch, "save", _bug_over(error))
    with pytest.raises(RuntimeError, match="a bug"):
        save_checkpoint(tmp_path / "best.pt", nn.Linear(2, 1), {"model": "x"})


def test_a_fifo_or_device_given_as_a_checkpoint_or_weights_is_named_as_such(
        tmp_path: Path) -> None:
    """A run folder whose best.pt is a FIFO was "no such checkpoint", and weights=/dev/zero or
    a FIFO "no such weights file": both exist, neither is a file covseg reads."""
    from covseg.models.pretrained import weights_path

    (tmp_path / "run").mkdir()
    fifo = tmp_path / "run" / "best.pt"
    os.mkfifo(fifo)
    with pytest.raises(CovsegError) as caught:
        load_checkpoint(tmp_path / "run")
    assert str(caught.value) == (f"{fifo}: not a regular file or folder (a FIFO); give a run "
                                 "folder or its best.pt")
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a device")):
        with pytest.raises(CovsegError) as caught:
            weights_path(path)
        assert str(caught.value) == (f"weights={path}: not a regular file or folder ({kind}); "
                                     "give a state dict file (.pt, .pth)")
