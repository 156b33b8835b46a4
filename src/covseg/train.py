"""Training: one model on 2D samples, patient-grouped validation, resumable, with logs and curves.

A run folder holds ``config.json``, ``log.csv`` (one row per epoch), ``curves.png``,
``last.pt`` (everything needed to resume; the raw weights when ``ema_decay`` keeps a moving
average; deleted once the run finishes), ``best.pt`` (best validation Dice, or the last epoch;
the average when kept) and ``metrics.json`` (the best model evaluated at the original image
size).

An ensemble (``--model a,b``) trains each member into ``member{i}-{name}/`` with seed
``seed + i`` on the same slices (side by side when there are threads for it), then writes the
averaged model to ``best.pt`` and its members' curves to ``curves.png``.

MONAI is imported where it is used, so that ``import covseg`` and the CLI's help and refusals
stay fast.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from covseg.burden import EFFUSION
from covseg.cascade import THRESHOLD, LungFrame, LungGuide, require_lung_model
from covseg.checkpoint import (
    FOLD,
    MEMBER,
    checkpoint_file,
    fold_folders,
    fold_index,
    load_checkpoint,
    lost_model,
    save_checkpoint,
    trained_by,
    write_errors_resumable,
)
from covseg.config import (
    MAX_SIZE,
    MIN_SIZE,
    TrainConfig,
    absolute_weights,
    check_batch_size,
    check_seed,
    check_threshold,
)
from covseg.data.layouts import (
    CLASS_NAMES,
    LoadedData,
    Sample,
    class_labels,
    data_fingerprint,
    warn_notes,
)
from covseg.data.splits import validation_split
from covseg.errors import CovsegError, Resumable, counted
from covseg.evaluate import evaluate_samples, hd95_by_unit, rows_to_csv
from covseg.infer import TEST_FLIPS, Predictor, model_inputs
from covseg.io.atomic import (
    remove_empty_folders,
    remove_temporaries,
    write_json,
    write_json_stopping,
    write_text,
)
from covseg.io.facts import file_fact
from covseg.io.lock import drop_unheld_lock, refuse_if_held, writing_to
from covseg.losses import BINARY_ONLY, LOSSES, build_loss, trained_loss
from covseg.metrics import hd95_unit_field, metric_notes, summarize
from covseg.models import build_model, parameter_count
from covseg.models.ensemble import Ensemble, member_names
from covseg.models.pretrained import weights_path, without_weights_file
from covseg.models.registry import check_model
from covseg.progress import progress_bar
from covseg.provenance import (
    WEIGHTS_SHA256,
    continued,
    current_command,
    environment,
    environment_changes,
    invoked_as,
    option_given,
    option_name,
    provenance,
    run_provenance,
    utc_now,
)
from covseg.records import content_hash, read_record
from covseg.report import read_rows
from covseg.stopping import (
    Terminated,
    exit_status,
    raise_if_stopped,
    stops_held,
    stops_recorded,
)
from covseg.transforms import AUGMENTATIONS, LesionPaste, Letterbox
from covseg.viz import MemberCurves, drawn, members_curves, training_curves

if TYPE_CHECKING:
    from monai.data import DataLoader

log = logging.getLogger(__name__)

CANVAS_CHUNK = 64
"""Slices framed and letterboxed together: bounds the full-size copies alive at once."""

CANVAS_MASK_DTYPE = torch.uint8
"""Canvas masks hold their labels (0 to 3) in a byte a pixel, not float32's four: 0.19 MiB less
per slice at ``--size 256``, for every slice of the run held the whole run. Training casts them
back to float32 before augmentation, so the run is the same to the bit."""


def unresumed(folder: Path, what: str) -> CovsegError:
    """The refusal of ``folder`` already holding ``what`` (a run, a cross-validation's folds)
    without --resume: reusing or continuing earlier work is what --resume asks for, never done
    silently."""
    return CovsegError(f"{folder} already holds {what}; pass {option_given('resume', True)} to "
                       f"reuse and continue it, or pick a new {option_name('out')}")


def canvas_items(samples: Sequence[Sample], size: int,
                 prepare: LungGuide | LungFrame | None = None, bar: str | None = None,
                 position: int = 0) -> list[dict[str, torch.Tensor]]:
    """Letterbox every sample once to the training canvas (image bilinear/area, mask nearest).

    With a lung guide the image gains a lung channel and, when cropping, image and mask are
    cut to the lungs' box first; with a lung frame, full frames are cut to the lungs' box.
    ``bar``: the name of a progress bar over the slices (at line ``position``), none where
    None or where there are none: framing 3,520 slices to their lungs took 11 s, before the
    first epoch's bar.
    """
    items = []
    with progress_bar(total=len(samples), quiet=bar is None or not samples, desc=bar, unit="slice",
                      leave=False, position=position) as shown:
        for start in range(0, len(samples), CANVAS_CHUNK):  # full-size copies of a chunk at a time
            chunk = samples[start:start + CANVAS_CHUNK]
            inputs = model_inputs([s.image for s in chunk], prepare)
            for sample, (image, crop) in zip(chunk, inputs, strict=True):
                box = Letterbox(image.shape[-2], image.shape[-1], size)
                mask = box.forward(crop.crop(sample.mask)[None], nearest=True)
                items.append({"image": box.forward(image), "mask": mask.to(CANVAS_MASK_DTYPE)})
            shown.update(len(chunk))
    return items


def _seed_epoch(seed: int, epoch: int, *randomized: Any) -> None:
    """Seed every RNG from (seed, epoch) so a resumed run replays the same batches (the
    caller's global generators are given back by :func:`callers_generators_kept`)."""
    value = (seed * 100_003 + epoch) % 2**31
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
    for transform in randomized:
        transform.set_random_state(seed=value)


class _BatchCutMix:
    """CutMix (Yun et al., 2019) on a share of full batches: each slice takes a box of another
    slice of the batch, its mask the same box. Written here because MONAI's CutMix indexes its
    boxes with a list, which torch deprecates; it draws and sizes the boxes as MONAI 1.6's did
    (the same draws, lengths in float32), so a seeded run mixes its batches as before."""

    def __init__(self, share: float, batch_size: int) -> None:
        self.share = share
        self.batch_size = batch_size
        self.rng = np.random.RandomState()

    def set_random_state(self, seed: int) -> None:
        self.rng = np.random.RandomState(seed)

    def __call__(self, image: torch.Tensor,
                 mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(image) != self.batch_size or self.rng.rand() >= self.share:
            return image, mask
        inside, order = self._boxes(image.shape)
        return (torch.where(inside, image[order], image),
                torch.where(inside, mask[order], mask))

    def _boxes(self, shape: torch.Size) -> tuple[torch.Tensor, np.ndarray]:
        """Where each slice takes the other's pixels (one corner for the batch, a box of
        sides ``sqrt(1 - weight)`` of the slice's for a Beta(1, 1) weight per slice), and
        which slice each takes them from."""
        self.rng.rand()  # MONAI's transform drew its own apply-or-not here
        weights = self.rng.beta(1.0, 1.0, self.batch_size).astype(np.float32)
        order = self.rng.permutation(self.batch_size)
        dims = shape[2:]
        corner = [int(self.rng.randint(0, size, size=1)[0]) for size in dims]
        inside = torch.zeros((self.batch_size, 1, *dims), dtype=torch.bool)
        for slice_index, weight in enumerate(weights):
            box = [slice(start, min(math.ceil(np.float32(start)
                                              + np.float32(size * math.sqrt(1 - weight))), size))
                   for start, size in zip(corner, dims)]
            where: tuple[int | slice, ...] = (slice_index, slice(None), *box)
            inside[where] = True
        return inside, order


def _validate(model: nn.Module, loss_fn: nn.Module, items: list[dict[str, torch.Tensor]],
              num_classes: int, batch_size: int, threshold: float | None
              ) -> tuple[float, float]:
    """Mean loss and mean per-case Dice on the canvas (for model selection: log.csv's
    ``val_dice``), a binary model's masks cut at the ``threshold`` it will predict with, a
    multi-class model's Dice the mean over its lesion classes (:func:`_multiclass_dice`; a
    model that finds lesions but mixes up their classes is not the best)."""
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    model.eval()
    losses, dices = [], []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            image = torch.stack([c["image"] for c in chunk])
            mask = torch.stack([c["mask"] for c in chunk]).long()
            logits = model(image)
            losses.append(float(loss_fn(logits, mask)) * len(chunk))
            if num_classes == 2:
                assert threshold is not None, "a binary run's config sets one (checked)"
                pred, truth = (torch.sigmoid(logits) >= threshold).float(), mask.float()
                dices.extend(compute_dice(pred, truth, ignore_empty=False)[:, 0].tolist())
            else:
                pred = one_hot(logits.argmax(1, keepdim=True), num_classes)
                dices.extend(_multiclass_dice(pred, one_hot(mask, num_classes)).tolist())
    return float(np.sum(losses) / len(items)), float(np.mean(dices))


def _multiclass_dice(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per case, the mean Dice of the lesion classes present in either one-hot mask, by the
    rules of :mod:`covseg.metrics`: a class absent from both is undefined, not 1 (which gave a
    slice whose only lesion was missed 0.5), and a case with no lesion in either scores 1, as
    two empty masks do."""
    from monai.metrics import compute_dice

    dice = compute_dice(pred, truth, include_background=False, ignore_empty=False)
    present = (pred[:, 1:] + truth[:, 1:]).flatten(2).amax(2) > 0
    return torch.where(present, dice, torch.nan).nanmean(dim=1).nan_to_num(1.0)


def _meta(config: TrainConfig, num_classes: int, guide: LungGuide | None) -> dict[str, Any]:
    """The checkpoint's meta for a run: a cascade's records its lung model's SHA-256 and path
    from the run's folder (its ``guide``, :func:`_pinned_guide`)."""
    frame = config.frame()
    return {
        "model": config.model, "model_options": dict(config.model_options),
        "in_channels": config.in_channels,
        "lung_guide": guide.to_meta() if guide else None,
        "lung_frame": frame.to_meta() if frame else None,
        "num_classes": num_classes, "size": config.size, "intensity": config.intensity,
        "window": list(config.hu_window), "target": config.target,
        "test_flips": config.test_flips, "flips": list(TEST_FLIPS),
        "class_names": class_labels(config.target, num_classes),
        **({} if config.threshold is None else {"threshold": config.threshold}),
    }


def _moving_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """torch's EMA of the weights and BatchNorm buffers, updated after every step; None when off."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


UNREADABLE = (ValueError, KeyError, TypeError, CovsegError)
"""What reading a run's saved recipe raises where it is damaged (:func:`unreadable_record`)."""


def _start(out: Path, config: TrainConfig, slices: int, model: nn.Module,
           optimizer: torch.optim.Optimizer, scheduler: Any, averaged: AveragedModel | None,
           resume: bool) -> tuple[int, float, list[dict[str, float]]]:
    """Epoch to start from, best Dice so far and the history, from ``last.pt`` when resuming
    (``slices``: the training slices, by which the default epochs are resolved)."""
    last = out / "last.pt"
    if not last.exists():
        return 1, -1.0, []
    if not resume:
        raise unresumed(out, "a run")
    state = load_checkpoint(last, _damaged_resume_state())
    try:
        saved = TrainConfig.from_dict(state["config"])
    except UNREADABLE as exc:
        raise unreadable_record(last, exc) from None
    _refuse_other_recipe(out, saved, config, slices)
    if averaged is not None and "moving_average" not in state:
        raise CovsegError(f"{out}: the saved run kept no moving average; resume it without "
                          f"{option_name('ema_decay')} or pick a new {option_name('out')}")
    parts = {"state_dict": model, "optimizer": optimizer, "scheduler": scheduler}
    return _restored(last, state, parts if averaged is None else
                     {**parts, "moving_average": averaged})


def _restored(last: Path, state: dict[str, Any], restored: dict[str, Any]
              ) -> tuple[int, float, list[dict[str, float]]]:
    """Load ``last``'s ``state`` into the ``restored`` parts (by their entry) and return the
    run's progress (see :func:`_start`); an entry missing or of another shape is refused as a
    damaged last.pt (:func:`_damaged_last`), which ended in a KeyError, RuntimeError or
    AttributeError traceback (torch's, of an optimizer state holding a value of another type)."""
    for key in (*restored, *PROGRESS_ENTRIES):
        if key not in state:
            raise _damaged_last(last, f"no {key!r} entry")
    reading = "history"
    try:
        history = state["history"]
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise TypeError("not a list of epochs")
        for reading, part in restored.items():
            _refuse_other_shape(reading, state[reading])
            part.load_state_dict(state[reading])
        reading = "epoch"
        first_epoch = int(state["epoch"]) + 1
        reading = "best_dice"
        return first_epoch, float(state["best_dice"]), list(history)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        why = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0].rstrip(":")
        raise _damaged_last(last, f"{reading!r} entry: {why}") from None


def _refuse_other_shape(entry: str, saved: Any) -> None:
    """Raise TypeError where a restored part's ``saved`` state (last.pt's ``entry``) is no
    dict, or the scheduler's holds no epoch count: torch's load_state_dict took a scheduler's
    dict of other entries, which restarted the learning rate schedule from its first epoch."""
    if not isinstance(saved, dict):
        raise TypeError(f"not a state but {type(saved).__name__}")
    if entry == "scheduler" and type(saved.get("last_epoch")) is not int:
        raise TypeError("no epoch count (last_epoch)")


PROGRESS_ENTRIES = ("epoch", "best_dice", "history")
"""What last.pt holds of a run's progress, beside the states :func:`_start` loads."""


def _damaged_last(last: Path, why: str) -> CovsegError:
    """The refusal of a resume's ``last.pt`` that loads but lacks, or holds a bad, entry the
    resume reads (``why``): told as a truncated one is (:func:`_damaged_resume_state`)."""
    return CovsegError(f"{last}: a damaged checkpoint ({why}); {_damaged_resume_state()}")


def _damaged_resume_state() -> str:
    """What to do about a resume's last.pt that cannot be loaded (a damaged copy or disk: it is
    written whole): model loading's "pass a run folder or its best.pt" fit no resume. A resume
    without last.pt trains the run again from epoch 1, as it started."""
    return (f"the run cannot go on from it: delete it and rerun with "
            f"{option_given('resume', True)} to train the run again from epoch 1, or pick a new "
            f"{option_name('out')}")


def unreadable_record(record: Path, exc: Exception, advice: str = "") -> CovsegError:
    """The refusal of a run's ``record`` (config.json, or last.pt's recipe) that a resume cannot
    read (``exc``: why): not JSON, or a recipe that is no object or holds a value of another
    type (:meth:`TrainConfig.from_dict`), which ended in tracebacks. ``advice``: what else to
    do, before picking a new out (a cross-validation's fold: delete it)."""
    return CovsegError(f"{record}: unreadable run record ({exc}); {advice}pick a new "
                       f"{option_name('out')}")


@contextmanager
def callers_generators_kept() -> Iterator[None]:
    """Give the global ``random``, ``numpy.random`` and torch (CPU) generators back as they
    were: training reseeds them every epoch, which left a calling script drawing the numbers
    of covseg's last epoch seed, whatever it had seeded itself."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def train(config: TrainConfig, data: LoadedData, out: str | os.PathLike[str],
          resume: bool = False, train_cases: Sequence[str] | None = None,
          val_cases: Sequence[str] | None = None, progress: bool = True,
          record: Mapping[str, Any] | None = None,
          weights: Mapping[str, str | None] | None = None, notes: Sequence[str] | None = None,
          lung_sha256: str | None = None) -> dict[str, Any]:
    """Train ``config.model`` on ``data`` into the run folder ``out``; return its metrics.

    Without explicit case lists (a cross-validation fold's) the validation patients are drawn
    by ``config.val_fraction``.
    ``record``: more for the run's config.json (a cross-validation fold's count of folds and,
    on Ray, the node that trained it). ``weights``: :func:`weights_file_sha256` of ``config``
    where the caller hashed it already (a cross-validation, once for all its folds, whose
    recipe check built the network from the file: the file is not read by a trial build here
    again); None: hashed here. ``notes``: :func:`recipe_notes` of ``config`` on ``data``, and
    ``lung_sha256``: :func:`pin_lungs` of its command, where the caller worked them out (a
    cross-validation or comparison, once for all its folds); None: worked out here.
    The caller's global generators are left as they were (:func:`callers_generators_kept`).
    """
    with callers_generators_kept():
        return _train(config, data, out, resume, train_cases, val_cases, progress, record or {},
                      weights, notes, lung_sha256)


def recipe_notes(config: TrainConfig, data: LoadedData) -> list[str]:
    """What a user should know of the recipe on these data: a multi-class model framed to the
    lungs (the default) cuts away the effusion that lies outside the frames' aerated lung, in
    training and prediction alike (docs/limits.md: 37 % of a phantom's effusion voxels lay
    inside the frames, and a model so trained predicted none). Measured on the slices holding
    effusion; lung crops, which are not framed, lose none."""
    frame = config.frame()
    if config.target != "multiclass" or frame is None or data.num_classes <= EFFUSION:
        return []
    cut, held = _effusion_framed_out(frame, data.samples)
    if not cut:
        return []
    return [(f"lung framing cuts away {_share_cut(cut, held)} % of the {CLASS_NAMES[EFFUSION]} "
             f"pixels (label {EFFUSION}), which lie outside the aerated lung it frames, in "
             "training and prediction alike (a model so trained on a phantom predicted none); "
             f"train with {option_given('frame_lungs', False)} to learn it")]


def _share_cut(cut: int, held: int) -> str:
    """``cut`` of ``held`` pixels as a whole %, rounded down, "under 1" below 1: rounded to
    nearest, a few pixels cut read "0 %" and 99.6 % read "100 %"."""
    share = math.floor(100 * cut / held)
    return str(share) if share else "under 1"


def _effusion_framed_out(frame: LungFrame, samples: Sequence[Sample]) -> tuple[int, int]:
    """Effusion pixels of ``samples`` outside their lung frames, and effusion pixels in all."""
    cut = held = 0
    for sample in samples:
        mask = sample.mask
        count = int(np.count_nonzero(mask == EFFUSION))
        if count:
            held += count
            cut += count - int(np.count_nonzero(frame.box(sample.image).crop(mask) == EFFUSION))
    return cut, held


def _refuse_too_few_to_train(count: int, val_fraction: float, fold: bool) -> None:
    """Refuse fewer than 2 training slices (batch normalisation sees two at a time), advising by
    what left so few: a cross-validation ``fold``'s test patients (fewer folds), a validation
    split (a lower ``val_fraction``), or neither (the data: it was told to lower a
    ``val_fraction`` of 0, where nothing was split)."""
    if count >= 2:
        return
    causes = [(cause, advice) for cause, advice, given in (
        ("its cross-validation fold's test patients", f"use fewer {option_name('folds')}", fold),
        ("the validation patients", f"lower {option_name('val_fraction')}", val_fraction > 0))
        if given]
    where = (f"left once {' and '.join(cause for cause, _ in causes)} are held out" if causes
             else "in the data")
    *others, last = [*(advice for _, advice in causes), "add data"]
    advice = f"{', '.join(others)} or {last}" if others else last
    raise CovsegError(f"{counted(count, 'training slice')} {where}; training needs at least 2 "
                      f"(batch normalisation sees two at a time): {advice}")


def _train(config: TrainConfig, data: LoadedData, out: str | os.PathLike[str], resume: bool,
           train_cases: Sequence[str] | None, val_cases: Sequence[str] | None,
           progress: bool, record: Mapping[str, Any],
           weights: Mapping[str, str | None] | None, notes: Sequence[str] | None,
           lung_sha256: str | None) -> dict[str, Any]:
    """:func:`train`, in the generators it reseeds; the ``weights=`` file hashed once the
    recipe is checked (a folder or no file given is refused there), the lung model pinned once
    a run is left to train."""
    out = Path(out)
    check_recipe(config, resume=resume, weights_read=weights is not None)
    fold = train_cases is not None
    if train_cases is None:
        train_cases, val_cases = validation_split(data.samples, config.val_fraction, config.seed)
    val_cases = val_cases or []
    _refuse_too_few_to_train(len(train_cases), config.val_fraction, fold)
    notes = recipe_notes(config, data) if notes is None else list(notes)
    if not fold:  # a cross-validation warns once for its folds
        warn_notes(notes, data)
    # worked out once, on the full data: an ensemble's members trained side by side get the
    # data without their training pixels, and each run's metrics.json records them
    data = replace(data, notes=[*data.notes, *notes])
    fingerprint = data_fingerprint(data, [*train_cases, *val_cases], quiet=not progress)
    refuse_other_output(out, RUN)
    weights = weights_file_sha256(config) if weights is None else weights
    split = (train_cases, val_cases)
    # a saved run is judged before the lock, which would replace a stale lock file (a run killed
    # outright left it) and remove it: a refused or finished resume leaves every file as it was
    saved = holds_saved_run(out)
    if saved:
        refuse_if_held(out)  # a run writing there: named, its files not judged midway
        config = _check_run_folder(out, config, resume, fingerprint, split, weights)
        finished = _already_trained(out, lost_network(out))
        if finished is not None:
            return finished
    # held from the check that the folder is empty (or resumable) to the end: a second run into
    # it is refused; a refusal leaves no folder made
    with writing_to(out):
        if not saved:  # checked under the lock: a run may have saved here in between
            config = _check_run_folder(out, config, resume, fingerprint, split, weights)
        # a resume that ended in between may have finished it; its model is judged here
        lost = lost_network(out)
        done = _already_trained(out, lost)
        if done is not None:
            return done
        refuse_gone_weights(out, config, [out])
        # before the clean-up: a refused resume leaves every file as it was
        pin = pin_lungs(config, out) if lung_sha256 is None else lung_sha256
        _forget_finished_records(out, lost)
        remove_temporaries(out)  # a run killed there (kill -9) left them; no one writes them now
        try:
            if len(member_names(config.model)) > 1:
                return _train_ensemble(config, data, out, resume, train_cases, val_cases,
                                       fingerprint, weights, pin, progress, record)
            return _train_model(config, data, out, resume, train_cases, val_cases,
                                fingerprint, weights, pin, progress, record=record, judged=True)
        finally:  # a stop landing right after metrics.json finished the run: it left last.pt
            if (out / "metrics.json").is_file():
                drop_resume_state(out)
            else:
                forget_unsaved_run(out)


def drop_resume_state(out: Path) -> None:
    """Delete the last.pt of the run finished in ``out`` (its members' for an ensemble), once
    its metrics.json is written: the weights, AdamW's two moments and the schedule that only a
    resume reads (about three times best.pt: 476 of a deeplabv3 run's 635 MB), and a --resume of
    a finished run trains nothing (:func:`finished_metrics`), its epochs fixed by the recipe it
    checks. A stop (Ctrl-C, ``kill``) after metrics.json deletes them on its way out
    (:func:`_train`); a ``kill -9`` before this leaves them, which the next resume leaves as
    they are."""
    for network in run_networks(out):
        (network / "last.pt").unlink(missing_ok=True)


def _already_trained(out: Path, lost: str | None) -> AlreadyTrained | None:
    """The metrics of the finished run ``out`` holds (nothing left to train), None for none or
    where its model is lost (``lost``: :func:`lost_network`'s why, worked out once by the
    caller, which then trains it again)."""
    finished = finished_metrics(out) if lost is None else None
    return None if finished is None else AlreadyTrained(finished)


def reads_trained(out: Path) -> bool:
    """Whether ``out`` holds a finished run that a --resume leaves as it is
    (:func:`_already_trained`): a stop landing once its metrics.json was written was told to
    resume it, which had nothing to do."""
    return _already_trained(out, lost_network(out)) is not None


def lost_network(out: Path) -> str | None:
    """Why the network trained into ``out`` (a run's, an ensemble member's folder) is trained
    again from epoch 1, None where it is not: finished (its metrics.json), its model lost
    (:func:`~covseg.checkpoint.lost_model`: best.pt gone or damaged); or stopped midway, its
    best.pt gone beside its last.pt, which does not hold the best epoch (a member stopped so,
    its last.pt at its final epoch, was refused "best.pt: no such checkpoint" at each resume)."""
    if (out / "metrics.json").is_file():
        lost = lost_model(out)
        return None if lost is None else f"finished, but {lost}"
    if (out / "last.pt").is_file() and not (out / "best.pt").exists():
        return "stopped midway, but its best.pt is gone (its last.pt holds no best epoch)"
    return None


class AlreadyTrained(dict[str, Any]):
    """The record a --resume returns where it found its run finished, as the run wrote it last:
    :func:`train`'s metrics.json, a cross-validation's summary.json
    (:func:`~covseg.crossval.finished_summary`), a comparison's comparison.json. Nothing was
    trained and every file was left as it was, which the command says (a folder's record alone
    does not tell: a run's checkpoints, a fold, may be gone, and trained again)."""


def finished_metrics(out: Path) -> dict[str, Any] | None:
    """The metrics.json of the finished run in ``out`` (written last: every epoch trained), None
    where there is none (or it cannot be read, as a run's that stopped writing it). A --resume
    of a finished run returns them and leaves every file as it was: it rewrote its records, its
    finished_utc the no-op's time, with a resume that trained nothing. Its names read back as
    the run saw them, as every record's (:func:`~covseg.records.read_record`)."""
    return read_record(out / "metrics.json")


SAVED_RUN_FILES = ("best.pt", "last.pt", "metrics.json")
"""The files whose presence makes a folder (or an ensemble member's in it) a saved run
(:func:`holds_saved_run`): a checkpoint, or a finished run's metrics.json."""


def holds_saved_run(out: Path, files: Sequence[str] = SAVED_RUN_FILES) -> bool:
    """Whether ``out`` holds a covseg run's records, refused without --resume: any checkpoint,
    or a finished run's metrics.json, its own or an ensemble member's (a --resume trains a
    model lost since again: :func:`lost_network`). A finished run whose best.pt was deleted (its
    last.pt goes at its end) was no saved run, and a run of another recipe trained over it
    unchecked. A config.json and lock file alone, left by a run killed before its first epoch,
    are replaced by the next run. ``files``: which of them count (:func:`forget_unsaved_run`
    leaves a best.pt alone out)."""
    return any((folder / name).exists() for folder in run_networks(out) for name in files)


def run_networks(out: Path) -> list[Path]:
    """``out`` and the folders of the ensemble members in it (``member{i}-{name}``:
    :data:`~covseg.checkpoint.MEMBER`), in order: the folders whose networks a run there
    trains, the one way covseg lists them (its checks, clean-ups and a fold's state). A user's
    folder in a run (``member_old/``, ``members_backup/``) is none: a run's end deleted its
    last.pt, a run stopped before its first epoch its best.pt and config.json."""
    return [out, *(member for member in sorted(out.glob("member*/"))
                   if MEMBER.fullmatch(member.name))]


FINISHED_RECORDS = ("metrics.json", "fold_metrics.json", "best.pt", "last.pt")
"""A finished run's files that describe or hold its trained model: its metrics.json, and a
cross-validation fold's test record written after it (fold_metrics.json), its best.pt and
last.pt (the last epoch: a resume from it trains nothing, and the best epoch is not in it)."""


def _forget_finished_records(out: Path, lost: str | None) -> None:
    """Before the network of ``out`` trains: where its model is lost (``lost``:
    :func:`lost_network`'s why), make it train again from epoch 1, as a cross-validation's fold
    deleted is trained again, its :data:`FINISHED_RECORDS` gone so that a resume stopped midway
    is no finished run; else a cross-validation fold's test record left from a model lost since
    (fold_metrics.json, beside no metrics.json) goes, which read the fold retrained and stopped
    midway as finished, its old test reused."""
    if lost is not None:
        log.warning("%s: %s; training it again from epoch 1", out, lost)
    for name in FINISHED_RECORDS if lost is not None else ("fold_metrics.json",):
        (out / name).unlink(missing_ok=True)


def forget_unsaved_run(out: Path, made: Sequence[Path] = ()) -> None:
    """Remove the record of a run that stopped before it saved any epoch (a member that could
    not start, as in a script without the ``__main__`` guard): it describes nothing saved, and
    would make the rerun that fixes the cause ask for --resume. Its members' records go too,
    a best.pt saved without its last.pt (a stop between the two saves of the first epoch: kept
    alone, predict loaded it as a finished model), a lock file no run holds, and the folders it
    ``made`` (deepest first: the run's, a fold's, a cross-validation's) that are left empty, so
    that a run refused or stopped that early leaves no folder behind. A saved run
    (:func:`holds_saved_run`, a best.pt alone aside) is left as it is: a finished member's
    metrics.json too, beside a member trained again (its model lost), whose stop before its
    first epoch deleted the finished member's best.pt and every config.json until 7 Dec (no
    resume could go on)."""
    if holds_saved_run(out, ("last.pt", "metrics.json")):
        return
    networks = run_networks(out)
    for network in networks:
        for name in ("config.json", "best.pt"):
            (network / name).unlink(missing_ok=True)
    drop_unheld_lock(out)
    remove_empty_folders([*networks[1:], *made])


RUN, CROSS_VALIDATION, COMPARISON = "a training run", "a cross-validation", "a model comparison"
"""What an output folder holds: see :func:`held_output`."""
_FILES = {RUN: "config.json, best.pt", CROSS_VALIDATION: "summary.json, fold_*/",
          COMPARISON: "comparison.json, or a model's cross-validation in a folder"}
_VERBS = {RUN: "train", CROSS_VALIDATION: "cross-validate", COMPARISON: "compare"}


def held_output(folder: Path) -> str | None:
    """Which command's output ``folder`` holds, by the files only that command writes there:
    a comparison's comparison.json or a model's cross-validation in a folder (all that a
    comparison stopped midway has written), a cross-validation's summary.json or fold folders
    (the first written), a run's record or checkpoints; None for a folder holding none."""
    if (folder / "comparison.json").is_file() or any(map(_holds_folds, folder.glob("*/"))):
        return COMPARISON
    if _holds_folds(folder):
        return CROSS_VALIDATION
    if any((folder / name).is_file() for name in ("config.json", "best.pt", "last.pt")):
        return RUN
    return None


def _holds_folds(folder: Path) -> bool:
    """Whether ``folder`` holds a cross-validation: its summary.json or a fold folder."""
    return (folder / "summary.json").is_file() or bool(fold_folders(folder))


def refuse_other_output(out: Path, kind: str) -> None:
    """A folder holding another command's output is refused: writing ``kind`` beside it left
    one folder whose records contradict each other (a cross-validation's report beside a run's
    best.pt, which predict then loads)."""
    held = held_output(out)
    if held not in (None, kind):
        raise CovsegError(f"{out} holds {held} ({_FILES[held]}), not {kind}; {_VERBS[kind]} "
                          f"into a new {option_name('out')}")


def check_train_folder(out: Path, resume: bool, config: TrainConfig) -> str | None:
    """The refusals of a run's ``out`` that need no data, made before they are read (a volume
    data set takes minutes) and before anything in ``out`` changes: another command's output,
    a saved run that another run is writing (naming that run, as its lock would), one saved
    without --resume, a resume that needs a weights= file gone since
    (:func:`refuse_gone_weights`) and one whose lung run holds another lung model than its
    saved epochs record (:func:`pin_lungs`: refused once the lock had replaced a stale lock
    file). Returns the lung model a resume pins, for :func:`train`; None where no saved run is
    left to train (none saved: nothing recorded to refuse; finished: nothing trains) or
    without a lung model."""
    refuse_other_output(out, RUN)
    saved = holds_saved_run(out)
    if saved:
        refuse_if_held(out)
    if saved and not resume:
        raise unresumed(out, "a run")
    refuse_gone_weights(out, config, [out])
    return pin_lungs(config, out) if saved and finished_metrics(out) is None else None


def _check_run_folder(out: Path, config: TrainConfig, resume: bool, fingerprint: str,
                      split: tuple[Sequence[str], Sequence[str]],
                      weights: Mapping[str, str | None]) -> TrainConfig:
    """A folder holding a run is continued only with --resume, the recipe it was started with,
    the data it was trained on (``fingerprint``), its (train, validation) ``split`` and the
    bytes of its ``weights=`` file (``weights``: :func:`weights_file_sha256`), whether one
    network or an ensemble wrote it (so that a resume with other options, data, split or
    starting weights never mixes them into the saved run).

    A record beside no checkpoint (a run killed outright, as for memory, before its first
    epoch: :func:`forget_unsaved_run` could not remove it) describes nothing saved and is
    started afresh, with or without --resume, as such a stopped run leaves no folder; one a
    run still writes is refused before this check (:func:`~covseg.io.lock.writing_to`).

    Returns the recipe to train with: the saved one on a resume, which trains alike, so that a
    default spelt out on the resume (``--epochs 240``) leaves the run's record as it was.
    """
    record = out / "config.json"
    if not holds_saved_run(out):
        return config
    if not resume:
        raise unresumed(out, "a run")
    if not record.exists():
        _refuse_unchecked_finished_run(out)
        return config
    try:
        saved_record = json.loads(record.read_text())
        saved = TrainConfig.from_dict(saved_record["config"])
    except UNREADABLE as exc:
        raise unreadable_record(record, exc) from None
    saved = _refuse_other_recipe(out, saved, config, len(split[0]))
    if made_from_other_data(saved_record, fingerprint):
        raise CovsegError(f"{out}: the saved run was trained on other data (other slices, "
                          f"images or masks than these); pick a new {option_name('out')} or "
                          "delete it")
    _refuse_other_split(out, saved_record, split)
    refuse_other_weights(out, saved, saved_record, weights)
    _warn_other_environment(out, saved_record, saved.epochs_for(len(split[0])),
                            member_names(saved.model))
    return saved


def _refuse_unchecked_finished_run(out: Path) -> None:
    """Refuse a --resume of a run whose config.json is gone where it, or an ensemble member,
    finished (its metrics.json): it would say there was nothing to do, or average a member
    into the ensemble, without the recipe and data having been checked against the run's (an
    ensemble's resume of another recipe was recorded as the run's)."""
    finished = [folder for folder in run_networks(out) if (folder / "metrics.json").is_file()]
    if finished:
        state = "finished" if finished[0] == out else f"{finished[0].name} finished"
        raise CovsegError(f"{out}: {state}, but its config.json is gone, so these options and "
                          "data cannot be checked against the run's; train into a new "
                          f"{option_name('out')}")


def _warn_other_environment(out: Path, record: dict[str, Any], epochs: int,
                            names: Sequence[str]) -> None:
    """Warn in one line of a resume under another covseg (version or source), torch or thread
    count than the run started with (its ``record``): each changes the weights trained, so the
    run matches neither an uninterrupted run nor one all under this command. A thread count
    that gives each of the run's members (``names``; one: a single network) the threads it
    trained with is no change (:func:`network_threads`): the default ensemble on 2 cores, each
    member on one thread whether resumed with 1 or 2, was warned of. A run with no epoch left
    of its ``epochs`` in any network (finished, or stopped in its last validation), which a
    resume only validates again, is not warned of: by last.pt's epochs, as a stop between an
    epoch's last.pt and its log.csv row left the log an epoch short, and warned."""
    members = len(names)
    threads, saved = torch.get_num_threads(), record.get("threads")
    if type(saved) is int and saved > 0 and (network_threads(saved, members)
                                              == network_threads(threads, members)):
        threads = saved
    changed = environment_changes(record, {**environment(), "threads": threads})
    networks = _member_folders(out, names) if members > 1 else [out]
    if changed and any(not (network / "metrics.json").is_file()
                       and _saved_epochs(network) < epochs for network in networks):
        log.warning("%s: resumed under other settings than the run started with (%s): its "
                    "results may differ from an uninterrupted run's (config.json's resumed_by "
                    "records each command)", out, "; ".join(changed))


def _saved_epochs(out: Path) -> int:
    """How many epochs a run's (or an ensemble member's) last.pt holds: 0 without one
    (finished, or before its first epoch) or where it cannot be read, which a resume refuses as
    it loads it (:func:`_start`). Worked out once per version of the file
    (:func:`~covseg.io.facts.file_fact`): a resumed ensemble's check of its environment and
    its record of the epochs it trains each unpickled the same last.pt before it was loaded to
    resume."""
    last = out / "last.pt"
    return file_fact(last, "epochs", _epochs_in) if last.is_file() else 0


def _epochs_in(last: Path) -> int:
    """The length of the history in ``last`` (see :func:`_saved_epochs`), its tensors left on
    disk (memory-mapped)."""
    try:
        history = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["history"]
    except Exception:  # noqa: BLE001  torch.load raises KeyError, UnpicklingError...
        return 0
    return len(history) if isinstance(history, list) else 0


def _epochs_logged(out: Path) -> int:
    """How many epochs a run's (or an ensemble member's) log.csv holds: 0 without one (before
    its first epoch; an ensemble's members log theirs) or unreadable."""
    try:
        return max(len((out / "log.csv").read_text().splitlines()) - 1, 0)
    except OSError:
        return 0


def _refuse_other_split(out: Path, record: dict[str, Any],
                        split: tuple[Sequence[str], Sequence[str]]) -> None:
    """The fingerprint covers the union of train and validation slices, not which is which: a
    resume whose split moved a slice (an edited patients.csv) would pick the best epoch on
    slices it trained on. Records without the case lists are resumed as before."""
    for key, cases in zip(("train_cases", "val_cases"), split):
        saved = record.get(key)
        if saved is not None and sorted(saved) != sorted(cases):
            raise CovsegError(f"{out}: the saved run was trained with another train/validation "
                              "split (patients.csv or cases changed); restore them or pick a "
                              f"new {option_name('out')}")


def refuse_other_weights(out: Path, saved: TrainConfig, record: dict[str, Any],
                         weights: Mapping[str, str | None]) -> None:
    """The ``weights=`` file ``saved`` names must hold the bytes the run ``out`` started from
    (its ``record``'s SHA-256, a fold's for a cross-validation; ``weights``: this command's): a
    member or fold not yet trained would start from other weights than the rest, and the record
    would name a start the run never had. Records written before the SHA-256 was (6 Dec) resume
    as before; a file gone since is :func:`refuse_gone_weights`'s to judge."""
    started, now = record.get(WEIGHTS_SHA256), weights.get(WEIGHTS_SHA256)
    if started is not None and now != started and not gone_weights_file(saved.model_options):
        raise CovsegError(f"{out}: the weights= file {saved.model_options['weights']} holds "
                          f"other bytes than the run started from (SHA-256 {started[:12]}..., "
                          f"now {f'{now[:12]}...' if now else 'no file'}); restore that file "
                          f"or pick a new {option_name('out')}")


def _lung_model(config: TrainConfig) -> tuple[LungGuide, str] | None:
    """The lung guide of a cascade trained with ``config`` and the SHA-256 of the lung model
    its lung run holds now ("" where its file is gone); None without a lung model (no guide,
    or thresholded lungs)."""
    from covseg.volumes import model_hash  # it imports this module

    guide = config.guide()
    if guide is None or guide.source == THRESHOLD:
        return None
    return guide, model_hash(guide.source) or ""


def pin_lungs(config: TrainConfig, out: Path) -> str | None:
    """The SHA-256 of the lung model a command training ``config`` into ``out`` (a run's
    folder, a cross-validation's first fold left to train) pins its cascade networks to: the
    one the saved epochs of its command's networks record (:func:`_recorded_lung_sha256`), else
    its file's now; None without a lung model. Worked out once as the command starts, before
    anything in its folder changes (a killed fold's files, a stale lock) and before Ray starts,
    and handed to each network (:func:`_pinned_guide`), as its ``weights=`` file's hash is. A
    lung run that holds another lung model than the one recorded is refused there
    (:func:`_other_lungs`): a network left to train would train on two."""
    lungs = _lung_model(config)
    if lungs is None:
        return None
    guide, now = lungs
    recorded = _recorded_lung_sha256(_command_folders(out))
    if recorded is not None and recorded[1] != now:
        raise _other_lungs(out, recorded, now, guide.source)
    return now


def _pinned_guide(config: TrainConfig, out: Path, pin: str | None) -> LungGuide | None:
    """The lung guide of the network trained into ``out``, pinned to the SHA-256 of the lung
    model its command trains on (:meth:`~covseg.cascade.LungGuide.pinned`): ``pin``
    (:func:`pin_lungs`, worked out as its command began) where the lung run still holds it. A
    lung run that holds another lung model than the saved epochs of its command's networks
    record (its own, its ensemble's members', its cross-validation's folds', looked up again
    only then) is refused in one line: the cascade would be trained on two, and its checkpoint
    would name one (a cross-validation's fold_1, started after the lung run was retrained
    during fold_0, trained on the new one unsaid); one that no network saved epochs on yet is
    pinned to the lung model there now. Checked as each network (run, member, fold) starts,
    before its lung channels are made, which stay as made for its epochs; the pinned guide
    loads the lung model only where its SHA-256 is still the one pinned."""
    lungs = _lung_model(config)
    if lungs is None:
        return config.guide()
    guide, now = lungs
    return guide.pinned(out, now if pin == now else pin_lungs(config, out))


def refuse_retrained_lungs(config: TrainConfig, out: Path, pin: str | None) -> None:
    """Refuse the test of the network just trained into ``out`` (a cross-validation's fold)
    where its lung run was retrained while it trained: its lung channels were made by the
    lung model it records (``pin``, its command's; None: looked up in its checkpoint), which
    its test needs too. The fold is kept, and a ``--resume`` with the original lung run back
    tests it (said so, not "retrain the cascade")."""
    lungs = _lung_model(config)
    if lungs is None:
        return
    guide, now = lungs
    recorded = _recorded_lung_sha256([out]) if pin is None else (out, pin, guide.source)
    if recorded is not None and recorded[1] != now:
        raise _other_lungs(out, recorded, now, guide.source,
                           "put the original lung run back and run the same command with "
                           f"{option_name('resume')}")


def _other_lungs(out: Path, recorded: tuple[Path, str, str], now: str, source: str,
                 advice: str | None = None) -> CovsegError:
    """The refusal of a network trained into ``out`` whose command's saved epochs record
    (``recorded``: in which folder, :func:`_recorded_lung_sha256`) the lung model ``digest``
    while the lung run ``source`` holds ``now``; ``advice``: what to do (else restore the lung
    run or train elsewhere). Given another lung run than the one they record, which still holds
    their lung model, it names that one (a resume given the wrong lung run was told to restore
    the one it named)."""
    from covseg.volumes import model_hash  # it imports this module

    folder, digest, trained = recorded
    saved = "the saved run was" if folder == out else f"{folder} was"
    if advice is None and trained != source and model_hash(trained) == digest:
        return CovsegError(f"{out}: {saved} trained with the lung model of {trained}; resume "
                           f"with {option_given('lung_guide', trained)} or pick a new "
                           f"{option_name('out')}")
    advice = advice or f"restore that lung run or pick a new {option_name('out')}"
    return CovsegError(f"{out}: {saved} trained with another lung model than the lung run "
                       f"{source} now holds (SHA-256 {digest[:12]}... at training, now "
                       f"{now[:12]}...); {advice}")


def _recorded_lung_sha256(folders: Iterable[Path]) -> tuple[Path, str, str] | None:
    """The folder, SHA-256 and lung run (its path then) of the lung model that the first of
    ``folders`` (a network's, or its command's: :func:`_command_folders`, which a user's own run
    named ``fold_1`` is not among) to hold saved epochs of a cascade records in their meta,
    whatever path its lung run had there (one lung run is one model: moved, or seen at another
    mount, it is the same); None where none is saved or records one. A checkpoint that does not
    load is left to the resume to refuse. Each checkpoint is loaded once for each file identity
    (:func:`~covseg.io.facts.file_fact`): a resume looks twice (:func:`lung_run_found`,
    :func:`pin_lungs`), a cross-validation's again for each fold."""
    for folder in folders:
        for name in ("best.pt", "last.pt"):
            if not (folder / name).is_file():
                continue
            try:
                guide = file_fact(folder / name, "lung_guide", _recorded_lung_guide)
            except (CovsegError, AttributeError):
                continue
            if isinstance(guide, dict) and isinstance(guide.get("sha256"), str):
                return folder, guide["sha256"], str(guide.get("source"))
    return None


def _recorded_lung_guide(checkpoint: Path) -> Any:
    """The lung guide the meta of ``checkpoint`` (a best.pt or last.pt) records, as saved (None
    for none); a CovsegError or AttributeError where it does not load as a covseg checkpoint."""
    return load_checkpoint(checkpoint)["meta"].get("lung_guide")


def _command_folders(out: Path) -> list[Path]:
    """The folders whose networks one command trains with ``out``'s: ``out`` first, then its
    run's (the run above an ensemble member or a cross-validation's fold:
    :func:`_trained_by_run_above`), its members', its folds' and theirs."""
    top = out
    while _trained_by_run_above(top):
        top = top.parent
    runs = [top, *fold_folders(top)]
    networks = [network for run in runs for network in run_networks(run)]
    return list(dict.fromkeys([out, *runs, *networks]))  # the runs, then their members


def _trained_by_run_above(folder: Path) -> bool:
    """Whether the run above ``folder`` trains it, as the records there say: an ensemble's
    member (its run's config.json lists ``members``, written before they train), or a
    cross-validation's fold (a fold's config.json records its count of :data:`FOLDS`). A
    user's own run named ``fold_2`` or ``member0-unet`` is neither, nor are its siblings its
    command's."""
    if MEMBER.fullmatch(folder.name):
        return isinstance((read_record(folder.parent / "config.json") or {}).get("members"), list)
    return bool(FOLD.fullmatch(folder.name)) and any(
        FOLDS in (read_record(fold / "config.json") or {}) for fold in fold_folders(folder.parent))


def gone_weights_file(options: Mapping[str, Any]) -> str | None:
    """The ``weights=`` file model ``options`` name where nothing is there now (deleted or
    moved since a run started from it); None where it is there, or none is named."""
    weights = options.get("weights")
    return weights if isinstance(weights, str) and not Path(weights).exists() else None


def weights_readers(config: TrainConfig, runs: Iterable[Path]) -> list[Path]:
    """The networks of ``runs`` (a run's folder, a cross-validation's folds left to train) that
    would read ``config``'s weights= file, starting from epoch 1 (:func:`_starts_afresh`): one
    that resumes from its last.pt is built without it (:func:`_built_options`), and a finished
    run's (its metrics.json, its last.pt deleted: :func:`drop_resume_state`) trains nothing
    where its model is there (an ensemble's, its members' too: an ensemble's own model is
    looked at here, a single network's by :func:`_starts_afresh`)."""
    names = member_names(config.model)
    networks = list(runs)
    if len(names) > 1:
        left = [run for run in networks if not (run / "metrics.json").is_file()
                or lost_network(run) is not None]
        networks = [folder for run in left for folder in _member_folders(run, names)]
    return [network for network in networks if _starts_afresh(network)]


def _starts_afresh(network: Path) -> bool:
    """Whether the run or member in ``network`` would train from epoch 1: it holds neither its
    metrics.json nor a last.pt, or its model is lost (:func:`lost_network`: trained again; one
    was refused for a weights= file gone only once its records were deleted)."""
    return (lost_network(network) is not None
            or not any((network / name).is_file() for name in ("metrics.json", "last.pt")))


def refuse_gone_weights(out: Path, config: TrainConfig, runs: Iterable[Path]) -> None:
    """The rule for a weights= file gone since the run started (deleted or moved): refused,
    naming them, where a network of ``runs`` (in ``out``) left to train would start from it
    (:func:`weights_readers`); where every one resumes from its last.pt (or its fold is
    finished, which the caller leaves out of ``runs``) the run goes on without the file, its
    record keeping the SHA-256 it started from (the resume's own, under resumed_by, null). A
    file no saved run in ``out`` started from (a typo, a new --out) was never there: refused
    as no such file (:func:`~covseg.models.pretrained.weights_path`)."""
    gone = gone_weights_file(config.model_options)
    if gone and not _started_from(out, gone):
        weights_path(gone)
    readers = weights_readers(config, runs) if gone else []
    if readers:
        names = ", ".join(reader.relative_to(out).as_posix() if reader != out else "its network"
                          for reader in readers)
        raise CovsegError(f"{out}: the weights= file {gone} is gone, and {names} would start "
                          f"from it (no last.pt to resume from); restore the file or pick a new "
                          f"{option_name('out')}")


def _started_from(out: Path, weights: str) -> bool:
    """Whether a saved run in ``out`` (the run's, or a cross-validation's folds') records
    ``weights`` as its weights= file: the file was there when that run started."""
    records = [out / "config.json", *(fold / "config.json" for fold in fold_folders(out))]
    return any(_recorded_weights(read_record(path)) == weights for path in records)


def _recorded_weights(record: dict[str, Any] | None) -> Any:
    """The weights= file a run's ``record`` names (as a recipe read back names it); None where
    it names none or is no run's record."""
    recipe = record.get("config") if record is not None else None
    options = recipe.get("model_options") if isinstance(recipe, dict) else None
    return absolute_weights(options).get("weights") if isinstance(options, dict) else None


def _built_options(config: TrainConfig, out: Path, resume: bool) -> dict[str, Any]:
    """The model options the network of ``out`` is built with: less the weights= file where it
    resumes from its last.pt, whose weights replace the file's (which may be gone since)."""
    resumed = resume and (out / "last.pt").exists()
    return without_weights_file(config.model_options) if resumed else config.model_options


def _member_folders(out: Path, names: Sequence[str]) -> list[Path]:
    """The folders of an ensemble's members (``names``) in its run folder ``out``."""
    return [out / f"member{i}-{name}" for i, name in enumerate(names)]


def _refuse_other_recipe(out: Path, saved: TrainConfig, config: TrainConfig, slices: int
                         ) -> TrainConfig:
    """A resume must train what the saved run trained on its ``slices`` training slices: any
    option that would train otherwise is refused (one spelt out as the run resolved it is not).
    Returns ``saved`` as compared: its lung run found at ``config``'s place
    (:func:`lung_run_found`)."""
    saved = lung_run_found(out, saved, config)
    changed = saved.differences(config, slices)
    if changed:
        raise CovsegError(f"{out}: the saved run was trained otherwise ({'; '.join(changed)}); "
                          f"resume with the same options or pick a new {option_name('out')}")
    return saved


def lung_run_found(out: Path, saved: TrainConfig, config: TrainConfig) -> TrainConfig:
    """``saved``, the recipe a network in ``out`` recorded, with ``config``'s lung run where
    the two name lung runs at other places and ``config``'s holds the lung model that the saved
    epochs of ``out``'s command record (:func:`_recorded_lung_sha256`): a lung run is told by
    its model, not its path, so that a run moved or copied with it, or a cross-validation's
    folder shared at another path on another machine, resumes (and records its place now).
    As it is where they hold none (a cascade trained before covseg recorded it: the paths are
    compared as before) or another (refused as another recipe)."""
    if (saved.lung_guide in ("none", THRESHOLD, config.lung_guide)
            or (lungs := _lung_model(config)) is None):
        return saved
    recorded = _recorded_lung_sha256(_command_folders(out))
    same = recorded is not None and recorded[1] == lungs[1]
    return replace(saved, lung_guide=config.lung_guide) if same else saved


FOLDS = "folds"
"""Key of a cross-validation fold's count of folds in its config.json (see
:func:`~covseg.crossval.run_fold`)."""
DATA_FINGERPRINT = "data_fingerprint"
"""Key of :func:`~covseg.data.layouts.data_fingerprint` in a run's config.json (the slices it
trained on) and in a cross-validation fold's fold_metrics.json (those it trained and tested on)."""


def made_from_other_data(record: dict[str, Any], fingerprint: str) -> bool:
    """Whether a run's or fold's record names other data than ``fingerprint``: the one rule for
    resumed runs and reused folds. Records written before covseg kept fingerprints name none and
    are reused as before."""
    recorded = record.get(DATA_FINGERPRINT)
    return recorded is not None and recorded != fingerprint


def check_run_seed(config: TrainConfig, folds: int = 1) -> None:
    """Refuse, before anything trains, a seed that leaves no room below :data:`~covseg.config.
    MAX_SEED` for the seeds the run derives from it: fold k of ``folds`` trains with seed + k
    and ensemble member i with its fold's seed + i (:func:`~covseg.config.check_seed`)."""
    check_seed(config.seed, offset=folds - 1 + len(member_names(config.model)) - 1)


def check_recipe(config: TrainConfig, folds: int | None = 1, resume: bool = False,
                 weights_read: bool = False) -> None:
    """Refuse options of the wrong type, out of range or contradictory, before data are read
    or a member starts (``folds``: a cross-validation's, whose seeds the seed leaves room
    for: :func:`check_run_seed`; None: the seed's range only, its room left to a caller whose
    models are not ``config``'s, as compare's: :func:`covseg.compare.check_spec_seeds`;
    ``resume``, ``weights_read``: see :func:`trial_options`)."""
    config.check_types()
    if not MIN_SIZE <= config.size <= MAX_SIZE:
        raise CovsegError(f"{option_name('size')} must lie in [{MIN_SIZE}, {MAX_SIZE}] px (the "
                          "networks halve it four times; CT slices are 512 px, which a larger "
                          f"canvas only upsamples), got {config.size}")
    check_model(config.model, trial_options(config.model_options, resume, weights_read),
                config.size)
    _check_names(config)
    if config.crop_lungs and config.lung_guide == "none":
        raise CovsegError(f"{option_name('crop_lungs')} crops to the lung guide's lungs: add "
                          f"{option_given('lung_guide', 'threshold')} or "
                          f"{option_given('lung_guide', 'RUN')} (a lung model)")
    if config.target == "lung" and config.lung_guide != "none":
        flag = option_name("lung_guide")
        raise CovsegError(f"{flag} adds a lung channel for a lesion model, while a lung "
                          f"model ({option_given('target', 'lung')}) takes the plain CT slice "
                          f"and could never guide another; leave {flag} out")
    guide = config.guide()
    if guide is not None and guide.source != THRESHOLD:
        _refuse_lung_run_in_training(guide.source)
        _check_lung_run(require_lung_model(Predictor.load(guide.source)), config)
    if config.lesion_paste and config.target == "lung":
        raise CovsegError(f"{option_name('lesion_paste')} pastes lesions: it does not apply to "
                          f"{option_given('target', 'lung')}")
    if config.target == "multiclass":
        if config.threshold is not None:
            raise CovsegError(f"{option_name('threshold')} applies to binary targets only: a "
                              "multi-class model takes the most probable class per pixel; "
                              "leave it out")
    else:
        check_threshold(config.threshold)
    if not 0 <= config.val_fraction < 1:
        raise CovsegError(f"{option_name('val_fraction')} must lie in [0, 1), got "
                          f"{config.val_fraction}")
    if folds is None:
        check_seed(config.seed)
    else:
        check_run_seed(config, folds)
    if not 0 <= config.cutmix <= 1:
        raise CovsegError(f"{option_name('cutmix')} must lie in [0, 1], got {config.cutmix}")
    if not 0 <= config.lesion_paste <= 1:
        raise CovsegError(f"{option_name('lesion_paste')} must lie in [0, 1], got "
                          f"{config.lesion_paste}")
    if not 0 <= config.ema_decay < 1:
        raise CovsegError(f"{option_name('ema_decay')} must lie in [0, 1), got {config.ema_decay}")
    if config.batch_size < 2:
        raise CovsegError(f"{option_name('batch_size')} must be at least 2 (batch normalisation "
                          "needs two slices)")
    check_batch_size(config.batch_size)
    if not (math.isfinite(config.lr) and 0 < config.lr <= 1):
        raise CovsegError(f"{option_name('lr')} must lie in (0, 1], got {config.lr} (the "
                          "default is 2e-3)")
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        raise CovsegError(f"{option_name('weight_decay')} must be finite and at least 0, got "
                          f"{config.weight_decay} (the default is 1e-4)")
    if config.epochs is not None and config.epochs < 1:
        raise CovsegError(f"{option_name('epochs')} must be at least 1, got {config.epochs}")


def trial_options(options: dict[str, Any], resume: bool, weights_read: bool = False
                  ) -> dict[str, Any]:
    """The model ``options`` of a trial build (:func:`~covseg.models.registry.check_model`):
    on a resume, less a weights= file gone since, which only a network with no last.pt reads
    (refused then, naming it: :func:`refuse_gone_weights`); less the file where the caller's
    own check built from it (``weights_read``: a cross-validation's, once for its folds, each
    of which read it again). Options that are not a dict (a string, another mapping) are
    passed on as given, for the build to refuse in its words."""
    left_out = isinstance(options, dict) and (weights_read or
                                              (resume and gone_weights_file(options)))
    return without_weights_file(options) if left_out else options


def _check_names(config: TrainConfig) -> None:
    """The loss and augmentation by name, and a loss the target can train with: found before,
    they failed once the slices were read, or in every member an ensemble had started."""
    if config.loss not in LOSSES:
        raise CovsegError(f"unknown loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    if config.target == "multiclass" and config.loss in BINARY_ONLY:
        usable = [name if trained_loss(name, True) == name
                  else f"{name} (recorded as {trained_loss(name, True)})"
                  for name in LOSSES if name not in BINARY_ONLY]
        raise CovsegError(f"{option_given('loss', config.loss)} is binary (one output): with "
                          f"{option_given('target', 'multiclass')} use one of "
                          f"{', '.join(usable)}")
    if config.augment not in AUGMENTATIONS:
        raise CovsegError(f"unknown augmentation {config.augment!r}; choose one of "
                          f"{', '.join(AUGMENTATIONS)}")


def _refuse_lung_run_in_training(source: str) -> None:
    """Refuse a lung run that another covseg run is still training (its folder's lock held, or
    its ensemble's, cross-validation's or comparison's: :func:`~covseg.checkpoint.trained_by`):
    its best.pt given by name holds one epoch's weights, which the cascade would train on, and
    its final ones would then differ from them."""
    by = trained_by(checkpoint_file(source).parent)
    if by is not None:
        raise CovsegError(f"{option_name('lung_guide')} {source}: that lung run is still being "
                          f"trained ({by}); wait for it to end, then train the cascade")


def _check_lung_run(lung: Predictor, config: TrainConfig) -> None:
    """The cascade feeds its lung run the slices it reads itself: the two must read them alike,
    or the lung run sees other grey levels than it was trained on and misses lungs."""
    if lung.intensity != config.intensity or tuple(lung.window) != tuple(config.hu_window):
        low, high = lung.window
        raise CovsegError(f"{lung.source}: the lung run reads slices with "
                          f"{option_given('intensity', lung.intensity)} "
                          f"{option_given('window', (f'{low:g}', f'{high:g}'))}; train the "
                          "cascade with the same")


def _train_model(config: TrainConfig, data: LoadedData, out: Path, resume: bool,
                 train_cases: Sequence[str], val_cases: Sequence[str], fingerprint: str,
                 weights: Mapping[str, str | None], lung_sha256: str | None, progress: bool,
                 bar_position: int = 0,
                 train_items: list[dict[str, torch.Tensor]] | None = None,
                 bar_label: str | None = None, record: Mapping[str, Any] | None = None,
                 judged: bool = False) -> dict[str, Any]:
    """Train one network into ``out`` (``bar_position``: its progress bar's line, ``bar_label``
    its name, ``train MODEL`` unless given: an ensemble's members name themselves);
    ``fingerprint``: the training slices' data fingerprint, for the run record (computed by
    :func:`train`: a member has no full-size training pixels) and ``weights`` the SHA-256 of
    its ``weights=`` file (:func:`weights_file_sha256`, hashed once for a run and its members);
    ``lung_sha256``: the lung model its command pinned (:func:`pin_lungs`);
    ``train_items``: the training
    slices already on the canvas (an ensemble's members share them), else made here;
    ``record``: more for its config.json (see :func:`train`). A finished network (its
    metrics.json: an ensemble's member, resumed after a stop before the ensemble's end) trains
    nothing and leaves its files as they are, as a finished run's resume does, its last.pt and
    log.csv there or not (:func:`drop_resume_state`); one whose model is lost trains again
    (:func:`lost_network`). ``judged``: the caller told both already, under its lock (a run's:
    :func:`_train`), so that only a member's are worked out here."""
    from monai.data import DataLoader, Dataset
    from monai.losses import DeepSupervisionLoss
    from monai.transforms import CastToTyped, Compose

    from covseg.augmentation import augmentation

    if not judged:  # a member's (a run's was judged in _train)
        lost = lost_network(out)
        finished = _already_trained(out, lost)
        if finished is not None:
            return finished
        _forget_finished_records(out, lost)
    by_id = {s.case_id: s for s in data.samples}
    train_samples = [by_id[c] for c in train_cases]
    val_samples = [by_id[c] for c in val_cases]

    torch.manual_seed(config.seed)
    model = build_model(config.model, config.in_channels, data.num_classes,
                        **_built_options(config, out, resume))
    loss_fn = build_loss(config.loss, data.num_classes)
    # Deeply supervised models return [main, side outputs...] while training; MONAI's wrapper
    # weighs them 1, 1/2, 1/4... and passes a single output straight to the loss.
    train_loss_fn = DeepSupervisionLoss(loss_fn)  # type: ignore[arg-type]  # it only calls it
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    epochs = config.epochs_for(len(train_samples))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs,
                                                           eta_min=config.lr * 0.02)
    averaged = _moving_average(model, config.ema_decay)
    served = model if averaged is None else averaged.module
    first_epoch, best_dice, history = _start(out, config, len(train_samples), model, optimizer,
                                             scheduler, averaged, resume)
    if history and _epochs_logged(out) != len(history):  # a stop between last.pt and log.csv
        write_text(out / "log.csv", rows_to_csv(history))  # (a full disk) lost the last row
    guide = _pinned_guide(config, out, lung_sha256)
    meta = _meta(config, data.num_classes, guide)
    _write_run_record(out, config, data, train_cases, val_cases, fingerprint, weights,
                      first_epoch > 1, parameters=parameter_count(model), **(record or {}))

    transform = augmentation(config.augment, guided=guide is not None)
    cutmix = _BatchCutMix(config.cutmix, config.batch_size)
    paste = LesionPaste(config.lesion_paste)
    prepare = guide or config.frame()
    label = bar_label or train_label(out, config.model)
    if train_items is None:
        train_items = canvas_items(train_samples, config.size, prepare,
                                   _canvas_bar(label, "training", progress), bar_position)
    val_items = canvas_items(val_samples, config.size, prepare,
                             _canvas_bar(label, "validation", progress), bar_position)
    float_masks = Compose([CastToTyped("mask", dtype=torch.float32), transform])
    loader = DataLoader(Dataset(train_items, transform=float_masks), batch_size=config.batch_size,
                        shuffle=True, drop_last=len(train_items) > config.batch_size, num_workers=0)

    bar = progress_bar(range(first_epoch, epochs + 1), quiet=not progress,
                       desc=label, unit="epoch",
                       initial=first_epoch - 1, total=epochs, position=bar_position)
    for epoch in bar:
        _seed_epoch(config.seed, epoch, transform, cutmix, paste)
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the epoch's: the step below sets the next one's
        train_loss = _train_epoch(model, loader, train_loss_fn, optimizer, averaged,
                                  (cutmix, paste))
        scheduler.step()
        row = {"epoch": epoch, "train_loss": train_loss, "lr": lr,
               "seconds": time.perf_counter() - started}
        if val_items:
            row["val_loss"], row["val_dice"] = _validate(served, loss_fn, val_items,
                                                         data.num_classes, config.batch_size,
                                                         config.threshold)
        history.append(row)
        score = row.get("val_dice", float(epoch))
        with stops_held():  # the epoch's files together: a kill between last.pt and log.csv
            if score > best_dice or not val_items:  # left the log a row short of last.pt
                best_dice = score
                save_checkpoint(out / "best.pt", served, {**meta, "epoch": epoch,
                                                          "val_dice": row.get("val_dice")})
            resume_state = {} if averaged is None else {"moving_average": averaged.state_dict()}
            save_checkpoint(out / "last.pt", model, meta, config=config.to_dict(), epoch=epoch,
                            best_dice=best_dice, history=history,
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            **resume_state)
            write_text(out / "log.csv", rows_to_csv(history))
        bar.set_postfix(_bar_postfix(row, data.num_classes > 2))
        raise_if_stopped()  # the epoch is saved: a stop dropped in a finaliser ends here
    bar.close()
    return _finish(out, config, data, history, val_samples, record or {})


def _canvas_bar(label: str, slices: str, progress: bool) -> str | None:
    """The name of the bar of a run's ``slices`` (training, validation) put on the canvas, as
    its epochs' bar is named (``label``), or None without ``progress``."""
    return f"{label}: {slices} slices to the canvas" if progress else None


MULTICLASS_VAL_DICE = "val_dice (lesion-class mean)"
"""The progress bar's name for a multi-class run's ``val_dice``: per case the mean over the
lesion classes, not the Dice of any lesion that the run's last line prints
(:func:`best_epoch_by`)."""


def _bar_postfix(row: dict[str, Any], multiclass: bool) -> dict[str, str]:
    """An epoch's training loss and validation Dice for its progress bar, the Dice named for
    what it is (:data:`MULTICLASS_VAL_DICE` for multi-class runs)."""
    names = {"train_loss": "train_loss",
             "val_dice": MULTICLASS_VAL_DICE if multiclass else "val_dice"}
    return {name: f"{row[key]:.3f}" for key, name in names.items() if key in row}


def _train_epoch(model: nn.Module, loader: DataLoader, loss_fn: nn.Module,
                 optimizer: torch.optim.Optimizer, averaged: AveragedModel | None,
                 batch_mixes: tuple[_BatchCutMix, LesionPaste]) -> float:
    """One pass over the loader (mixing each batch, then a step); the mean training loss."""
    model.train()
    losses = []
    for batch in loader:
        optimizer.zero_grad(set_to_none=True)
        image = batch["image"].as_subclass(torch.Tensor)
        mask = batch["mask"].as_subclass(torch.Tensor).long()
        for mix in batch_mixes:
            image, mask = mix(image, mask)
        loss = loss_fn(model(image), mask)
        loss.backward()
        optimizer.step()
        if averaged is not None:
            averaged.update_parameters(model)
        losses.append(loss.item())
    return float(np.mean(losses))


def _train_ensemble(config: TrainConfig, data: LoadedData, out: Path, resume: bool,
                    train_cases: Sequence[str], val_cases: Sequence[str], fingerprint: str,
                    weights: Mapping[str, str | None], lung_sha256: str | None, progress: bool,
                    record: Mapping[str, Any]) -> dict[str, Any]:
    """Train each member on its own (each resumable), then save their average (``record``: more
    for its config.json, see :func:`train`; ``fingerprint``, ``weights`` and ``lung_sha256``: as
    :func:`_train_model` takes them, for the run and each member).

    With threads for more than one, members train side by side, one process each with the
    threads shared out: a network this small keeps about one core busy, so on 2 cores two
    members took 12 min 24 s against 9 min 16 s for one and 21 min 49 s one after the other
    (benchmarks/RESULTS.md).
    """
    names = member_names(config.model)
    # loaded from the members' best.pt, so never from the weights= file
    ensemble = build_model(config.model, config.in_channels, data.num_classes,
                           **without_weights_file(config.model_options))
    assert isinstance(ensemble, Ensemble), "several member names build an Ensemble"
    guide = _pinned_guide(config, out, lung_sha256)
    # the members' parameters summed, as a single run's record and compare's row count them
    _write_run_record(out, config, data, train_cases, val_cases, fingerprint, weights,
                      holds_saved_run(out), members=names, parameters=parameter_count(ensemble),
                      **record)
    jobs = [(replace(config, model=name, seed=config.seed + i), folder)
            for i, (name, folder) in enumerate(zip(names, _member_folders(out, names),
                                                   strict=True))]
    for _, folder in jobs:  # a member killed there left them; the run's lock keeps others out
        remove_temporaries(folder)
    # the members' shared data a kill -9 left, also where this command trains them one by one
    for stale in out.glob(f"{MEMBERS_SCRATCH}*"):
        shutil.rmtree(stale, ignore_errors=True)
    workers = min(len(jobs), torch.get_num_threads())
    by_id = {s.case_id: s for s in data.samples}
    make_items = partial(canvas_items, [by_id[c] for c in train_cases], config.size,
                         guide or config.frame(),
                         _canvas_bar(train_label(out, config.model), "training", progress))
    with _invocation_recorded(out, [folder for _, folder in jobs], workers, resume) as done:
        if workers > 1:
            member_metrics = _train_side_by_side(jobs, data, train_cases, val_cases,
                                                 fingerprint, weights, lung_sha256, make_items,
                                                 progress, workers)
        else:
            items = make_items()
            member_metrics = []
            for member, folder in jobs:
                member_metrics.append(_train_model(member, data, folder, True, train_cases,
                                                   val_cases, fingerprint, weights, lung_sha256,
                                                   progress, train_items=items,
                                                   bar_label=member_label(folder)))
                raise_if_stopped()  # a stop dropped in a finaliser as the member ended
        raise_if_stopped()  # before the ensemble's checkpoint, validation and metrics
        for network, (_, folder) in zip(ensemble.members, jobs, strict=True):
            network.load_state_dict(load_checkpoint(folder / "best.pt")["state_dict"])
        if not _holds_weights(out / "best.pt", ensemble):
            save_checkpoint(out / "best.pt", ensemble, _meta(config, data.num_classes, guide))
    invocations = done["invocations"]
    trained = [i for i in invocations if i["epochs_trained"]] or invocations
    metrics: dict[str, Any] = {
        "epochs": member_metrics[0]["epochs"],
        "members": [{"model": n, **m} for n, m in zip(names, member_metrics, strict=True)],
        "train_seconds": float(sum(m["train_seconds"] for m in member_metrics)),
        "seconds_per_epoch": float(sum(m["seconds_per_epoch"] for m in member_metrics)),
        "wall_seconds": float(sum(i["wall_seconds"] for i in invocations)),
        "members_side_by_side": max(i["members_side_by_side"] for i in trained),
        "invocations": invocations, "synthetic": data.synthetic,
    }
    metrics = _metrics_record(out, metrics, data, [by_id[c] for c in val_cases])
    members = [(folder, m) for (_, folder), m in zip(jobs, member_metrics, strict=True)]
    drawn(lambda: members_curves(_members_curves(members, bool(val_cases)),
                                 out / "curves.png", loss=config.loss,
                                 canvas=config.size,
                                 ensemble_dice=metrics["validation"]["dice"]["mean"]
                                 if val_cases else None,
                                 title=_curves_title(out, config, data, record),
                                 multiclass=data.num_classes > 2,
                                 averaged=config.ema_decay > 0),
          out / "curves.png", out / "member*" / "log.csv")
    write_json(out / "metrics.json", metrics)
    return metrics


def network_threads(threads: int, members: int) -> int:
    """The threads each network of a run of ``members`` networks (1: a single one) trains with
    under torch's ``threads``: all of them for one network; an ensemble's members train side by
    side, as many at once as there are threads, sharing them out (:func:`_train_ensemble`)."""
    return max(1, threads // min(members, threads))


def _members_curves(members: Sequence[tuple[Path, Mapping[str, Any]]], validated: bool
                    ) -> list[MemberCurves]:
    """What the ensemble's curves.png draws of each member (its folder and metrics.json):
    its name, its log.csv's rows (each value a number, an empty cell left out), its kept epoch
    and, ``validated``, that model's Dice at the images' own size. A log.csv that cannot be
    read (deleted since the member finished) is a ValueError, so that the figure alone is lost
    (:func:`~covseg.viz.drawn`), not the run."""
    drawn_members = []
    for folder, metrics in members:
        try:
            rows = [{key: float(value) for key, value in row.items() if value}
                    for row in read_rows(folder / "log.csv")]
        except OSError as exc:
            raise ValueError(f"{folder / 'log.csv'}: {exc.strerror or exc}") from None
        drawn_members.append(MemberCurves(
            member_label(folder).removeprefix(_fold_named(folder.parent)), rows,
            int(metrics["best_epoch"]),
            metrics["validation"]["dice"]["mean"] if validated else None))
    return drawn_members


def _holds_weights(path: Path, model: nn.Module) -> bool:
    """Whether the checkpoint at ``path`` holds ``model``'s weights already: a resume that
    trained no member leaves an ensemble's best.pt as it is, since rewriting it (an older
    covseg's file, saved otherwise) changed its SHA-256, by which predict folders made with
    the run are checked."""
    try:
        saved = load_checkpoint(path)["state_dict"]
    except (CovsegError, KeyError, TypeError):
        return False
    now = model.state_dict()
    return saved.keys() == now.keys() and all(
        isinstance(saved[key], torch.Tensor) and torch.equal(saved[key], now[key]) for key in now)


def member_label(folder: Path) -> str:
    """A member's progress-bar name from its folder (``member0-miniseg``: ``member 0
    miniseg``, ``fold 1, member 0 miniseg`` in a cv's fold_1): both members of the default
    ensemble read ``train miniseg`` before."""
    index, _, name = folder.name.removeprefix("member").partition("-")
    return f"{_fold_named(folder.parent)}member {index} {name}"


def train_label(out: Path, model: str) -> str:
    """A run's progress-bar name (``train miniseg``; ``fold 1, train miniseg`` in a cv's
    fold_1): a cv's folds logged the same lines, nothing saying which fold was training. The
    fold is read from the folder's name alone, as :func:`member_label` reads the member's: a
    plain run whose ``--out`` is named ``fold_3`` reads ``fold 3, train miniseg`` too."""
    return f"{_fold_named(out)}train {model}"


def _fold_named(folder: Path) -> str:
    """``"fold K, "`` for a cross-validation's fold folder (:data:`FOLD`), else nothing."""
    return f"fold {fold_index(folder)}, " if FOLD.fullmatch(folder.name) else ""


INVOCATIONS_FILE = "invocations.json"
"""An ensemble run's record of each command that trained it (kept across resumes)."""


@contextmanager
def _invocation_recorded(out: Path, members: Sequence[Path], workers: int, resume: bool
                         ) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """Time the block and add it to ``out``'s :data:`INVOCATIONS_FILE`: its wall-clock seconds,
    members trained at once and epochs trained (summed over members, as their last.pt count
    them: log.csv's rows counted a resume that only wrote a lost row again, and not the epoch
    whose row the stopped command lost), so that a resumed run's wall time covers every
    command, as its training time does. A block that ends in an error
    or an interruption (Ctrl-C, ``kill``) is recorded when it trained an epoch, where the disk
    lets it (:func:`~covseg.io.atomic.write_json_stopping`); one killed outright (``kill -9``)
    cannot be; a resume that trained nothing (a finished run's) is not recorded, so that its
    validation alone adds nothing to the run's wall time. Yields a dict
    whose ``invocations`` holds the record, this command's last, once the block is done."""
    path = out / INVOCATIONS_FILE
    before = [_saved_epochs(folder) for folder in members]
    earlier = json.loads(path.read_text()) if resume and path.is_file() else []
    started = time.perf_counter()
    done: dict[str, list[dict[str, Any]]] = {}
    finished = False
    try:
        yield done
        finished = True
    finally:
        epochs = sum(_saved_epochs(f) - n for f, n in zip(members, before, strict=True))
        done["invocations"] = [*earlier, {"wall_seconds": time.perf_counter() - started,
                                          "members_side_by_side": workers,
                                          "epochs_trained": epochs}]
        if not epochs and earlier:  # a resume with nothing left to train: no training time
            done["invocations"] = earlier
        elif finished:
            write_json(path, done["invocations"])
        elif epochs:
            write_json_stopping(path, done["invocations"])


def _without_pixels(data: LoadedData, cases: Sequence[str]) -> LoadedData:
    """The data with the full-size pixels of ``cases`` dropped (their canvas items stand in)."""
    dropped, empty = set(cases), np.zeros((0, 0), dtype=np.float32)
    return replace(data, samples=[replace(s, image=empty, mask=empty) if s.case_id in dropped
                                  else s for s in data.samples])


ITEMS_FILE = "canvas.pt"


def _save_items(items: list[dict[str, torch.Tensor]], path: Path) -> None:
    """The canvas items stacked per key, for :func:`_load_items` (the caller's list is the
    only copy kept: it is emptied as it is stacked)."""
    stacked = {}
    for key in ("image", "mask"):
        stacked[key] = torch.empty((len(items), *items[0][key].shape), dtype=items[0][key].dtype)
        for index, item in enumerate(items):
            stacked[key][index] = item.pop(key)
    items.clear()
    with path.open("wb") as handle:  # torch's own writer hides a full disk's OSError
        torch.save(stacked, handle)


def _load_items(path: Path) -> list[dict[str, torch.Tensor]]:
    """Canvas items as views into the memory-mapped file: members share one copy."""
    stacked = torch.load(path, mmap=True, weights_only=True)
    return [{"image": image, "mask": mask}
            for image, mask in zip(stacked["image"], stacked["mask"], strict=True)]


def _return_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc's ``malloc_trim``; nothing
    elsewhere): the canvas freed once written to its file stayed in the parent's heap while
    it waited for the members (1,000-slice stand-in: 1.83 GiB RSS at the wait, 1.42 after)."""
    if not sys.platform.startswith("linux"):
        return
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; musl has none
    if trim is not None:
        trim(0)


MEMBERS_SCRATCH = ".members-"
"""Prefix of the scratch folder in the run through which the members get the data."""


def _train_side_by_side(jobs: list[tuple[TrainConfig, Path]], data: LoadedData,
                        train_cases: Sequence[str], val_cases: Sequence[str], fingerprint: str,
                        weights: Mapping[str, str | None], lung_sha256: str | None,
                        make_items: Callable[[], list[dict[str, torch.Tensor]]], progress: bool,
                        workers: int) -> list[dict[str, Any]]:
    """Train the (recipe, folder) jobs ``workers`` at a time, each in a process of its own
    (:func:`member_context`), with the lung model their run pinned (``lung_sha256``).

    The data go through a file, not the process pipe, so that a child dying at start-up cannot
    block the parent: the training slices on the canvas (``make_items``), made once and
    memory-mapped by every member (one copy in memory, shared), and the data without the
    training slices' full-size pixels (2,000 synthetic 512x512 slices: 14.2 GB summed RSS
    before, 9.0 GB now; see RESULTS.md). A member's failure, Ctrl-C or SIGTERM stops the
    others, and members stop by themselves when the parent is killed outright; every
    checkpoint is written atomically, so ``--resume`` goes on from the last epoch each member
    finished.
    """
    threads = network_threads(torch.get_num_threads(), len(jobs))
    context = member_context()
    run = jobs[0][1].parent
    with _sigterm_as_exit(), tempfile.TemporaryDirectory(prefix=MEMBERS_SCRATCH,
                                                         dir=run) as scratch:
        shared = Path(scratch) / "data.pkl"
        items = make_items()  # outside the writes' guard: its errors are no write's
        with write_errors_resumable(run, f"the members' shared data in {run}"):
            with shared.open("wb") as handle:
                pickle.dump((_without_pixels(data, train_cases), list(train_cases),
                             list(val_cases), fingerprint, dict(weights), lung_sha256), handle,
                            pickle.HIGHEST_PROTOCOL)
            _save_items(items, shared.with_name(ITEMS_FILE))
        _return_freed_memory()
        for start in range(0, len(jobs), workers):
            _run_wave(context, jobs[start:start + workers], shared, progress, threads)
    return [json.loads((folder / "metrics.json").read_text()) for _, folder in jobs]


MEMBER_PRELOAD = ("covseg.cli", "covseg.augmentation", "monai.data", "monai.losses",
                  "monai.transforms")
"""What a member imports: the fork server imports it once for every member."""


def member_context() -> BaseContext:
    """The multiprocessing context members start in: forked from Python's fork server, which
    imports covseg, torch and MONAI once (:data:`MEMBER_PRELOAD`), where a spawned member
    imported them again, several seconds each; spawned where there is no fork server
    (Windows). Never forked from the parent: forking a process whose OpenMP threads are running
    can hang the child, and the fork server runs none. The fork server, started here at the
    first ensemble with Ctrl-C ignored (inherited by every member it forks), lives until the
    parent ends, holding torch, MONAI and covseg imported: 917 MB resident, 519 MB of it its
    own (Private_Dirty; docs/python-api.md). Its members write to the standard streams the
    parent had then, and take the parent's environment as each starts
    (:func:`_member_process`)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver  # POSIX only

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(MEMBER_PRELOAD))
    with handler_restored(signal.SIGINT, signal.SIG_IGN):  # it only execs the server: instant
        forkserver.ensure_running()
    return context


@contextmanager
def handler_restored(signum: int, handler: Any = None) -> Iterator[None]:
    """Run the block with ``handler`` for ``signum`` (None: as it is, or as the block sets it),
    then put the previous handler back. Nothing is done off the main thread, where handlers
    cannot be set, nor where the previous one was set outside Python (it cannot be put back)."""
    previous = signal.getsignal(signum)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    if handler is not None:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While members train, SIGTERM (``kill``, a job scheduler) exits like Ctrl-C does: the
    members are stopped and the shared data file removed, instead of the parent dying alone.
    Only where nothing handles SIGTERM yet (the command line does, for every command)."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield  # handled already
        return
    with handler_restored(signal.SIGTERM, lambda *_: sys.exit(143)):
        yield


WAKE_S = 0.5
"""How often the wait for members returns to Python: a KeyboardInterrupt raised without a
signal (Ray's cancel of a fold, ``_thread.interrupt_main``) wakes no wait, and was seen only
once a member ended."""


def _run_wave(context: Any, jobs: list[tuple[TrainConfig, Path]], shared: Path, progress: bool,
              threads: int) -> None:
    """Start one process per job, wait for all; the first failure stops the rest and is raised."""
    running: dict[Any, tuple[Any, Connection]] = {}
    # The members' end of a pipe the parent never writes to: it reads as end of file once the
    # parent is gone, however it ended (:func:`_stop_when_orphaned`).
    parent_alive, parent_holds = context.Pipe(duplex=False)
    try:
        for position, (member, folder) in enumerate(jobs):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_member_process, name=folder.name,
                                      args=(member, shared, folder, progress, position, threads,
                                            sender, parent_alive, current_command(),
                                            dict(os.environ)))
            with stops_held():  # a stop as it starts is raised once it is known: stopped below
                _start_member(context, process)
                running[process.sentinel] = (process, receiver)
            sender.close()  # the child holds the write end now; its exit reads as end of file
        parent_alive.close()
        while running:
            for sentinel in wait(list(running), timeout=WAKE_S):
                process, receiver = running.pop(sentinel)
                process.join()
                if process.exitcode != 0:
                    sent = _sent_error(receiver)
                    if isinstance(sent, Resumable):  # advised as the parent's own disk's
                        raise sent
                    raise CovsegError(sent) if sent else _failure(process)
    finally:
        for process, _ in running.values():  # all at once: a member takes seconds to exit
            process.terminate()
        for process, _ in running.values():
            process.join()
        parent_alive.close()
        parent_holds.close()
        for _, folder in jobs:  # a member killed outright (out of memory) left its temporaries
            remove_temporaries(folder)


def _start_member(context: BaseContext, process: BaseProcess) -> None:
    """Start ``process`` with Ctrl-C ignored in it: a Ctrl-C while a member started printed its
    traceback there. Python installs no KeyboardInterrupt handler where SIGINT is ignored
    from the exec: a spawned member's own exec, here under SIG_IGN (a Ctrl-C in its few
    milliseconds is lost), or the fork server's (:func:`member_context`). A stop while a member
    starts from the fork server (the first start waits seconds while the server imports) is held
    back by :func:`_run_wave` until the member is known, and then stops it: raised inside the
    start, it left the member the server forked meanwhile running unknown to the parent, which
    printed "Process member0-unet:" under the run's stop line once its data were removed. (A
    blocked SIGINT is unblocked by multiprocessing when it starts its resource tracker.)"""
    if context.get_start_method() == "forkserver":
        process.start()
        return
    with handler_restored(signal.SIGINT, signal.SIG_IGN):
        process.start()


def _sent_error(receiver: Connection) -> str | Resumable | None:
    """The covseg error a member sent before it stopped, if any: its line, or its full or
    failing disk (:class:`~covseg.errors.Resumable`)."""
    try:
        return receiver.recv() if receiver.poll() else None
    except EOFError:  # it stopped without sending one
        return None


def _failure(process: BaseProcess) -> CovsegError:
    """What to tell the user about a member that ended without a covseg error: killed by a
    signal, or stopped by a SIGTERM sent to it alone (it exits 143, as :func:`_member_process`
    says; it was told to check its script's main guard), a :class:`Resumable` stop, advised
    with --resume only where ``--out`` is left (:func:`~covseg.checkpoint.resume_advised`; it
    said --resume where nothing was saved)."""
    assert process.exitcode is not None, "called once the member is joined"
    if process.exitcode < 0:
        return Resumable(f"training member {process.name} was killed by signal "
                         f"{-process.exitcode} (out of memory?)")
    if process.exitcode == exit_status(Terminated()):
        return Resumable(f"training member {process.name} was stopped (SIGTERM)")
    return CovsegError(f"training member {process.name} stopped (exit status {process.exitcode}; "
                       "its messages are above). A script that calls covseg's train must do so "
                       "under `if __name__ == \"__main__\":`, as members train in processes of "
                       "their own")


def _stop_when_orphaned(parent_alive: Connection) -> None:
    """End this member (SIGTERM to itself, so it unwinds as above) once its parent is gone, even
    killed with SIGKILL: an orphan would go on training into the run beside a resumed one.
    ``parent_alive`` is a pipe's end the parent holds the other end of and never writes to:
    it reads as end of file once the parent is gone (a member of the fork server has the fork
    server for parent, which a killed parent's members keep alive)."""
    def watch() -> None:
        parent_alive.poll(None)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _member_process(config: TrainConfig, shared: Path, out: Path, progress: bool,
                    bar_position: int, threads: int, errors: Connection,
                    parent_alive: Connection, command: str,
                    environment: Mapping[str, str]) -> None:
    """One member in a process of its own; covseg's one-line errors go back through ``errors``,
    its records name the parent's ``command``. It runs in the parent's ``environment`` as the
    member started (``TQDM_DISABLE``, torch's and MONAI's variables): a member forked from the
    fork server had the environment the server started with, at the process's first ensemble.

    Ctrl-C is left to the parent, which ends the members with SIGTERM: that unwinds like an
    exception here, so no temporary file is left behind, and exits 143. The stop is recorded
    (:func:`~covseg.stopping.stops_recorded`): one landing in a finaliser, which Python drops,
    is raised again after the next epoch or as training ends, where a plain ``sys.exit``
    handler's was lost and the member went on (or exited 0).
    """
    os.environ.clear()
    os.environ.update(environment)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stops_recorded():
            _stop_when_orphaned(parent_alive)
            torch.set_num_threads(threads)
            tqdm.set_lock(threading.RLock())  # tqdm's default is a semaphore SIGTERM would leak
            with shared.open("rb") as handle:
                data, train_cases, val_cases, fingerprint, weights, pin = pickle.load(handle)
            items = _load_items(shared.with_name(ITEMS_FILE))
            with invoked_as(command):
                _train_model(config, data, out, True, train_cases, val_cases, fingerprint,
                             weights, pin, progress, bar_position, train_items=items,
                             bar_label=member_label(out))
            raise_if_stopped()  # a stop dropped in a finaliser as the member's training ended
    except CovsegError as exc:
        errors.send(exc if isinstance(exc, Resumable) else str(exc))
        sys.exit(2)
    except Terminated:
        sys.exit(143)


def _finish(out: Path, config: TrainConfig, data: LoadedData, history: list[dict[str, float]],
            val_samples: list[Sample], record: Mapping[str, Any]) -> dict[str, Any]:
    """The best model's validation metrics at the original image size, then the curves that
    mark its epoch and Dice (a figure that cannot be drawn is a warning,
    :func:`~covseg.viz.drawn`: it ended the run before its metrics.json, a cv fold read as
    unfinished), then metrics.json. ``record``: as :func:`train` takes it."""
    multiclass = data.num_classes > 2
    best = max(history, key=lambda r: r.get("val_dice", r["epoch"]))
    metrics = _metrics_record(out, {
        "epochs": len(history), "best_epoch": best["epoch"],
        "best_val_dice_canvas": best.get("val_dice"),
        **({"best_epoch_by": best_epoch_by(multiclass, config.size)} if val_samples else {}),
        "train_seconds": float(sum(r["seconds"] for r in history)),
        "seconds_per_epoch": float(np.mean([r["seconds"] for r in history])),
        "final_train_loss": history[-1]["train_loss"], "synthetic": data.synthetic,
    }, data, val_samples)
    kept = metrics["validation"]["dice"]["mean"] if val_samples else None
    drawn(lambda: training_curves(history, out / "curves.png", loss=config.loss,
                                  canvas=config.size, best_epoch=int(best["epoch"]),
                                  kept_dice=kept, title=_curves_title(out, config, data, record),
                                  multiclass=multiclass, averaged=config.ema_decay > 0),
          out / "curves.png", out / "log.csv")
    write_json(out / "metrics.json", metrics)
    return metrics


def _curves_title(out: Path, config: TrainConfig, data: LoadedData,
                  record: Mapping[str, Any]) -> str:
    """curves.png's title: the model and the data folder (:attr:`~LoadedData.named`), and a
    cross-validation fold's place, "fold 0 of 5" (its ``record`` holds the count of
    :data:`FOLDS`): five folds' curves read alike. A fold of a later repeat of repeated k-fold
    (its index past the count, which is one repeat's) says its place in its repeat too: "fold 7
    (repeat 1, fold 2 of 5)". A lung model is named so, "unet lung model on ...": nothing
    told its curves (a validation Dice near 0.95) from a lesion model's."""
    model = f"{config.model} lung model" if config.target == "lung" else config.model
    if FOLDS not in record:
        return f"{model} on {data.named}"
    k, folds = fold_index(out), record[FOLDS]
    place = (f"{k} of {folds}" if not isinstance(folds, int) or not 0 < folds <= k else
             f"{k} (repeat {k // folds}, fold {k % folds} of {folds})")
    return f"{model} on {data.named}, fold {place}"


def best_epoch_by(multiclass: bool, canvas: int) -> str:
    """metrics.json's note of what ``best_val_dice_canvas`` (log.csv's ``val_dice``) is: a
    multi-class run's is the mean over lesion classes, about a third of the Dice of any
    lesion beside it in one run, and nothing said so."""
    if not multiclass:
        return (f"best_val_dice_canvas (log.csv's val_dice): the validation Dice on the {canvas} "
                "px canvas; validation: the best epoch's model at the images' own size")
    return (f"best_val_dice_canvas (log.csv's val_dice): the validation Dice on the {canvas} px "
            "canvas, per case the mean over the lesion classes present in the truth or the "
            "prediction; validation.dice is the Dice of any lesion (label > 0) of the best "
            "epoch's model at the images' own size, validation.<class>_dice each class's")


def _write_run_record(out: Path, config: TrainConfig, data: LoadedData,
                      train_cases: Sequence[str], val_cases: Sequence[str], fingerprint: str,
                      weights: Mapping[str, str | None], resumed: bool, **extra: Any) -> None:
    """``config.json``: the command, code and versions (:func:`provenance`), thread count and
    start time of the command that started the run (``resumed``: this one continues it, and is
    listed under ``resumed_by``: :func:`continued`), the recipe, the data (and their
    fingerprint), the classes trained (label -> name, as predict.json's) and the split, enough
    to reproduce the run and to refuse resuming it on other data (a resume compares the recipe,
    fingerprint, split and weights= file only: it may be spelt otherwise); ``weights``: as
    :func:`_train_model` takes it."""
    now = {**provenance(data_path=data.root), **weights,
           "threads": torch.get_num_threads(), "started_utc": utc_now()}
    write_json(out / "config.json", {
        **continued(out / "config.json", now, resumed),
        "config": config.record(data.windowed), "data": data.describe(),
        "classes": class_labels(config.target, data.num_classes), "layout": data.layout,
        "synthetic": data.synthetic, DATA_FINGERPRINT: fingerprint, **extra,
        "train_cases": list(train_cases), "val_cases": list(val_cases),
        "held_out": held_out(data, train_cases, val_cases),
    })


def weights_file_sha256(config: TrainConfig) -> dict[str, str | None]:
    """:data:`~covseg.provenance.WEIGHTS_SHA256` of the ``weights=`` file the command read (the
    recipe names it by path, which may hold other bytes later); none where no file is given.
    Hashed once a run, whose ensemble's members are handed it, and once a cross-validation,
    whose folds are handed it, on Ray too: none hashes the file again."""
    weights = config.model_options.get("weights")
    return {WEIGHTS_SHA256: content_hash(Path(weights))} if isinstance(weights, str) else {}


def held_out(data: LoadedData, train_cases: Sequence[str], val_cases: Sequence[str]
             ) -> dict[str, Any]:
    """The validation patients and slices actually held out, and their share of the patients:
    --val-fraction holds out one patient at least, so the share may be far above the one asked
    (which the recipe records)."""
    patient = {s.case_id: s.patient_id for s in data.samples}
    held = {patient[c] for c in val_cases}
    patients = len(held | {patient[c] for c in train_cases})
    return {"patients": len(held), "slices": len(val_cases), "of_patients": patients,
            "patient_share": len(held) / patients if patients else 0.0}


BEST_SHA256 = "best_sha256"
"""Key of the SHA-256 of a run's best.pt in its metrics.json: predict warns of a best.pt
replaced since (:func:`covseg.checkpoint.load_checkpoint`)."""


def _metrics_record(out: Path, metrics: dict[str, Any], data: LoadedData,
                    val_samples: Sequence[Sample]) -> dict[str, Any]:
    """The whole metrics.json record: ``metrics`` with the saved model's validation metrics at
    the original image size, the run's provenance as its config.json holds it
    (:func:`run_provenance`), the time now (``finished_utc``), the SHA-256 of the best.pt
    described (:data:`BEST_SHA256`) and what loading the data and the recipe on them warned of
    (``warnings``, the data's notes: MosMed slices no fold tests, say; :func:`recipe_notes`,
    added to them by :func:`train`)."""
    started = run_provenance(json.loads((out / "config.json").read_text()))
    metrics = {**started, "finished_utc": utc_now(), **metrics,
               BEST_SHA256: content_hash(out / "best.pt"),
               "warnings": list(data.notes)}
    if val_samples:
        rows, _ = evaluate_samples(Predictor.load(out / "best.pt"), val_samples, "validating")
        rows = hd95_by_unit(rows, data)  # px and mm apart where the data have both
        write_text(out / "validation_per_case.csv", rows_to_csv(rows))
        metrics["validation"] = {**summarize(rows), **hd95_unit_field(data.hd95_unit)}
        metrics.update(metric_notes())
    return metrics
