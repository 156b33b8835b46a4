"""Cross-validation: patient-grouped folds (or the data set's own), per-case metrics, a report."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from covseg.cascade import THRESHOLD
from covseg.checkpoint import (
    checkpoint_file,
    final_model_step,
    fold_folders,
    fold_index,
    lost_model,
    recipe_model,
)
from covseg.config import TrainConfig
from covseg.data.layouts import (
    LoadedData,
    Sample,
    class_labels,
    data_fingerprint,
    fingerprints_kept,
    split_files_note,
    warn_notes,
)
from covseg.data.layouts.base import fold_class_notes
from covseg.data.splits import grouped_kfold, validation_split
from covseg.errors import CovsegError, counted
from covseg.evaluate import (
    HD95_UNITS,
    any_lesion,
    drawn_name,
    evaluate_samples,
    hd95_by_unit,
    hd95_slices_by_unit,
    lesion_class_dice,
    rows_to_csv,
    target_scored,
)
from covseg.infer import Predictor
from covseg.io.atomic import remove_temporaries, write_json, write_json_stopping, write_text
from covseg.io.facts import file_version
from covseg.io.lock import LOCK_FILE, refuse_if_held, writing_to
from covseg.metrics import (
    HD95_UNIT,
    METRICS,
    STD_NOTE,
    hd95_unit_field,
    metric_notes,
    sample_std,
    summarize,
)
from covseg.provenance import (
    INVOCATION_KEYS,
    RESUMED_BY,
    option_given,
    option_name,
    provenance,
    run_provenance,
    utc_now,
)
from covseg.records import read_record
from covseg.train import (
    BEST_SHA256,
    CROSS_VALIDATION,
    DATA_FINGERPRINT,
    FOLDS,
    UNREADABLE,
    AlreadyTrained,
    check_run_seed,
    holds_saved_run,
    lung_run_found,
    made_from_other_data,
    pin_lungs,
    recipe_notes,
    refuse_gone_weights,
    refuse_other_output,
    refuse_other_weights,
    refuse_retrained_lungs,
    run_networks,
    train,
    unreadable_record,
    unresumed,
    weights_file_sha256,
)
from covseg.viz import box_plot, drawn

log = logging.getLogger(__name__)

T = TypeVar("T")

REPORT_METRICS = METRICS
DEFAULT_FOLDS = 5
"""Folds of a data set that ships no split files of its own, unless ``folds`` is given."""
REPEATS = "repeats"
"""Key of a cross-validation's count of repeats in its summary's recipe (``config``), beside
:data:`~covseg.train.FOLDS`, the folds of one repeat, and in a comparison.json; kept where over
1 (:func:`repeats_record`)."""
CV_VERB = "cross-validate"
"""What a refusal tells a ``covseg cv`` user to do into a new --out (compare says compare)."""


def make_folds(data: LoadedData, folds: int | None, seed: int, repeats: int = 1
               ) -> tuple[list[tuple[list[str], list[str]]], str]:
    """The data set's own split files when it has them, else patient-grouped k-fold
    (``folds`` None: :data:`DEFAULT_FOLDS`). A fold count that contradicts the split files is
    refused rather than silently replaced by theirs. ``repeats`` > 1: repeated k-fold, the k·r
    folds flattened, repeat r's folds those of the plain cross-validation seeded
    ``seed + r*k`` (:func:`repeat_seed`), so that repeat 0 is the unrepeated run and a repeated
    run extends a finished one; refused for split files, which make one split only."""
    if data.folds:
        if folds is not None and folds != len(data.folds):
            raise CovsegError(f"{data.root} ships its own {len(data.folds)} folds (split files "
                              f"train_new*.txt / valid_new*.txt), which cv uses; pass "
                              f"{option_given('folds', len(data.folds))} or leave "
                              f"{option_name('folds')} out")
        if repeats > 1:
            raise CovsegError(f"{data.root} ships its own {len(data.folds)} folds (split files "
                              f"train_new*.txt / valid_new*.txt), one split that repeats "
                              f"cannot redraw; leave {option_name('repeats')} out, or "
                              "cross-validate a copy of the data without the split files")
        how = f"the data set's own {len(data.folds)} split files"
        note = split_files_note(data)
        return data.folds, f"{how} ({note})" if note else how
    folds = DEFAULT_FOLDS if folds is None else folds
    seeds = f"seed {seed}" if repeats == 1 else f"repeat r seeded {seed} + {folds}·r"
    k_fold = f"{folds}-fold{repeated(folds, repeats)}"
    if len(data.patients) < len(data.samples):
        how = f"{k_fold}, grouped by patient ({seeds})"
        alone = len(data.unidentified)
        if alone:  # MedSeg's tr_im slices beside its rp_im volumes: said "grouped" alone
            carry = ("carries no patient id and is counted alone" if alone == 1 else
                     "carry no patient id and are each counted alone")
            how += (f"; {alone} of the {len(data.samples)} slices {carry}, so slices of one "
                    "patient among them may fall on "
                    "both sides; a patients.csv (case_id,patient_id) in the data folder groups "
                    "them")
    else:
        how = (f"{k_fold} over slices ({seeds}): every slice is counted alone (the data "
               "name no patient), so slices of one patient may fall on both sides; a patients.csv "
               "(case_id,patient_id) in the data folder groups them")
    return [split for r in range(repeats)
            for split in grouped_kfold(data.samples, folds, repeat_seed(seed, folds, r))], how


def repeat_seed(seed: int, folds: int, repeat: int) -> int:
    """The seed of repeat ``repeat`` (0-based) of a repeated k-fold run seeded ``seed``: the
    plain cross-validation seeded ``seed + repeat*k`` is that repeat (its fold i the run's fold
    repeat*k + i, seeded alike: :func:`_fold_config`), so no two folds share a seed and a user
    reproduces a repeat with ``--seed``."""
    return seed + repeat * folds


def repeats_record(repeats: int) -> dict[str, int]:
    """A record's :data:`REPEATS`, kept where the folds are repeated: an unrepeated run's records
    stay as they were (read without it: 1)."""
    return {REPEATS: repeats} if repeats > 1 else {}


def repeated(folds: int, repeats: int) -> str:
    """What follows ``folds`` folds repeated ``repeats`` times in words, " repeated 3 times (15
    folds)"; nothing unrepeated. One phrase for the fold source, the records held and --fold."""
    return "" if repeats == 1 else f" repeated {repeats} times ({folds * repeats} folds)"


def repeats_text(folds: int, repeats: int) -> str:
    """A repeated cross-validation in words, "5-fold cross-validation repeated 3 times (15
    folds)"; "5-fold cross-validation" unrepeated."""
    return f"{folds}-fold cross-validation{repeated(folds, repeats)}"


def fold_done(fold_dir: Path) -> bool:
    """Whether the fold in ``fold_dir`` finished (its fold_metrics.json, written last) and its
    run still reads as finished, as a run's resume reads it (:func:`~covseg.train.lost_network`):
    its metrics.json there (the summary reads its epochs and training time) and its model. One
    whose best.pt is gone or damaged (:func:`~covseg.checkpoint.lost_model`) is trained again,
    as a fold deleted is (a resume said "already cross-validated"); so is one whose metrics.json
    alone was deleted, which read as done and was refused as an unreadable record."""
    return (fold_recorded(fold_dir) and (fold_dir / "metrics.json").is_file()
            and lost_model(fold_dir) is None)


def fold_recorded(fold_dir: Path) -> bool:
    """Whether the fold in ``fold_dir`` wrote its fold_metrics.json: work a cross-validation
    without --resume must not replace, its model lost or not (:func:`fold_done`)."""
    return (fold_dir / "fold_metrics.json").is_file()


def finished_summary(out: Path, folds: int) -> dict[str, Any] | None:
    """The summary.json of the finished cross-validation of ``folds`` folds in ``out`` (written
    last but for the removal of :data:`STOPPED_FILE`: its report, table and plot are written),
    its undefined metrics NaN as a fresh summary has them (JSON holds them as null); None where
    it is not finished: no summary (one stopped writing its reports), a record of a stopped
    command left, a fold unfinished (deleted to be trained again), a summary of other folds
    than those there (:func:`_summarises_folds`: one trained again alone since, ``--fold K``),
    another count of folds, or a summary an earlier covseg wrote (:func:`_current_summary`).
    A --resume of a finished one returns it and leaves every file as it was: it rewrote them,
    its summary listing a resume that trained nothing."""
    if (out / STOPPED_FILE).exists() or not all(fold_done(out / f"fold_{k}")
                                                for k in range(folds)):
        return None
    summary = read_record(out / "summary.json")
    if (summary is None or not _current_summary(summary, folds)
            or not _summarises_folds(out, summary)):
        return None
    return _undefined_as_nan(summary)


def _summarises_folds(out: Path, summary: dict[str, Any]) -> bool:
    """Whether ``summary`` (a :func:`_current_summary`) was written from the folds now in
    ``out``, by what their records say (:func:`_fold_training`): each fold's epochs and
    best_sha256 (where the summary records it) as its ``per_fold`` has them, and their training
    seconds summed as its ``train_seconds``, a sum no fold trained again gives. By content, not
    file times: summary.json written after every fold_metrics.json told it until 7 Dec, which a
    copy made without its times (``cp -r`` without ``-p``) or a coarse clock could upset, its
    finished run then summarised again. An unreadable fold record is none (the resume refuses
    it, naming the fold)."""
    try:
        trained = [_fold_training(out / f"fold_{k}") for k in range(len(summary["per_fold"]))]
    except CovsegError:
        return False
    return (summary.get("train_seconds") == sum(seconds for seconds, _, _ in trained)
            and all(fold.get("epochs") == epochs
                    and fold.get(BEST_SHA256) in (None, best)
                    for fold, (_, epochs, best) in zip(summary["per_fold"], trained,
                                                       strict=True)))


def pinned_lungs(config: TrainConfig, out: Path, folds: int | None,
                 trained: Sequence[int] | None = None) -> str | None:
    """The lung model the cross-validation in ``out`` pins its cascade's networks to
    (:func:`~covseg.train.pin_lungs`, its own folds' records looked up, a lung run that holds
    another model than they record refused): worked out once, where one of the folds this
    command trains (:func:`_folds_of`) is left to train; None where none is (nothing trains
    on it) or without a lung model. The one rule of cv, on Ray or not, and of each model of
    compare; made before the data are read too (``folds`` None: the folds started then), so
    that a refused resume starts no Ray and leaves ``out`` as it was."""
    left = [folder for folder in _folds_of(out, folds, trained) if not fold_done(folder)]
    return pin_lungs(config, left[0]) if left else None


def reads_finished(out: Path, folds: int | None, repeats: int = 1) -> bool:
    """Whether the cross-validation in ``out`` reads as finished before its data are read
    (:func:`finished_summary`): of ``folds`` folds ``repeats`` times, or where ``folds`` is
    None, of as many as its summary.json holds where it records these ``repeats`` (the data's
    split files, once read, may make another count). A --resume on Ray starts no Ray for it:
    nothing would run there."""
    summary = read_record(out / "summary.json") or {}
    per_fold = summary.get("per_fold")
    recorded = summary.get("config")
    same = (recorded.get(REPEATS, 1) if isinstance(recorded, dict) else 1) == repeats
    count = (folds * repeats if folds is not None else
             len(per_fold) if isinstance(per_fold, list) and same else 0)
    return count > 0 and finished_summary(out, count) is not None


def _current_summary(summary: dict[str, Any], folds: int) -> bool:
    """Whether ``summary`` holds ``folds`` folds as covseg writes them now: each metric over
    the folds with how many folds and slices define it (``n``, ``cases``: an earlier covseg
    wrote mean and std alone) and no metric named as before :data:`RENAMED`. A summary that is
    not is written again from the folds, as a --resume did before it left finished ones."""
    per_fold, across = summary.get("per_fold"), summary.get("mean_std_over_folds")
    if not (isinstance(per_fold, list) and len(per_fold) == folds and isinstance(across, dict)
            and all(isinstance(fold, dict) for fold in per_fold)):
        return False
    keys = [*across, *(key for fold in per_fold for key in fold)]
    return (all(isinstance(stats, dict) and {"n", "cases"} <= stats.keys()
                for stats in across.values())
            and not any(key.startswith(old) for key in keys for old in RENAMED))


def _undefined_as_nan(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` read back from JSON with its undefined metrics NaN again, as a fresh summary
    has them: each fold's means, their mean and std over folds and the pooled statistics."""
    return {**summary,
            "per_fold": [fold | _nulls_as_nan({key: value for key, value in fold.items()
                                               if key not in FOLD_FIELDS})
                         for fold in summary["per_fold"]],
            "mean_std_over_folds": {key: _nulls_as_nan(stats)
                                    for key, stats in summary["mean_std_over_folds"].items()},
            "pooled_per_case": {key: _nulls_as_nan(stats) if isinstance(stats, dict) else stats
                                for key, stats in (summary.get("pooled_per_case") or {}).items()}}


def _nulls_as_nan(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` read back from JSON with its nulls NaN again: JSON holds undefined metrics as
    null."""
    return {key: math.nan if value is None else value for key, value in values.items()}


def cross_validation_work(out: Path, fold: int | None = None) -> list[Path]:
    """What of a cross-validation ``out`` holds: its fold folders holding saved work (a fold
    finished, or stopped midway after an epoch: one killed before its first left only its
    record, which the next run replaces, as ``train`` does) and its summary.json; with ``fold``,
    fold ``fold``'s folder only, so that folds run side by side into one ``out`` never count
    each other's."""
    folders = [out / f"fold_{fold}"] if fold is not None else fold_folders(out)
    held = [folder for folder in folders if fold_recorded(folder) or holds_saved_run(folder)]
    summary = out / "summary.json"
    return held + ([summary] if fold is None and summary.is_file() else [])


def check_cv_folder(out: Path, resume: bool, fold: int | None = None) -> None:
    """Without ``resume``, a cross-validation's ``out`` already holding folds or the summary is
    refused; with ``fold``, only when that fold's folder holds it (see :func:`unresumed`). A
    whole run another run holds ``out`` for is refused first, naming that run (not "pass
    --resume" about the folds it is writing); folds alone never hold ``out``."""
    if fold is None:
        refuse_if_held(out)
    held = [] if resume else cross_validation_work(out, fold)
    for folder in held:  # a fold another run is writing: its lock's refusal, naming that run
        refuse_if_held(folder)
    if held and fold is not None:
        state = "finished" if fold_done(held[0]) else "stopped midway"
        raise unresumed(held[0], f"fold {fold} of a cross-validation ({state})")
    if held:
        raise unresumed(out, f"a cross-validation ({', '.join(p.name for p in held)})")


def check_fold_index(fold: int, folds: int | None, note: str = "", repeats: int = 1,
                     out: Path | None = None) -> None:
    """``fold`` as far as it can be checked before the data are read (a volume data set takes
    minutes): never negative, and below the ``folds`` times ``repeats`` folds where ``folds``
    is given; the count of a data set's own split files bounds it otherwise, checked once they
    are read (``note``: which they are). Named as the command spells it: ``--fold`` on the
    command line, ``fold`` from the API; past the folds, a fold that ``out`` holds of a later
    repeat (:func:`_later_repeat_hint`) is said to need the run's repeats."""
    option = option_name("fold")
    if folds is not None and not 0 <= fold < folds * repeats:
        raise CovsegError(f"{option} must lie in 0..{folds * repeats - 1} for "
                          f"{folds} folds{repeated(folds, repeats)}{note}, got {fold}"
                          f"{_later_repeat_hint(out, fold)}")
    if fold < 0:
        raise CovsegError(f"{option} must be 0 or more (the folds count from 0), got {fold}")


def _later_repeat_hint(out: Path | None, fold: int) -> str:
    """Where ``out`` holds ``fold`` as a fold of a later repeat of repeated k-fold (its record
    counting fewer folds, a repeat's, than its index), the advice to give the run's repeats
    (:data:`REPEATS`, recorded by its summary where written); else nothing: refused without
    it, ``--fold 7`` of a 5-fold run repeated 3 times said only "must lie in 0..4"."""
    if out is None:
        return ""
    count = _record_split(read_record(out / f"fold_{fold}" / "config.json") or {})[0]
    if count is None or not 0 < count <= fold:
        return ""
    config = (read_record(out / "summary.json") or {}).get("config")
    repeats = config.get(REPEATS) if isinstance(config, dict) else None
    given = (option_given("repeats", repeats) if isinstance(repeats, int) and repeats > 1
             else option_name("repeats"))
    return f" (fold_{fold} of a repeated run: give its {given})"


def _unreadable_fold_record(record: Path, exc: Exception) -> CovsegError:
    """The refusal of a finished fold's damaged ``record`` (``exc``: why), naming the fold to
    delete, which the next run trains again (:func:`~covseg.train.unreadable_record`)."""
    return unreadable_record(record, exc, f"delete {record.parent} to train that fold again, or ")


def read_fold_record(record: Path, read: Callable[[dict[str, Any]], T]) -> T:
    """``read`` of the JSON object a fold's ``record`` holds (config.json, fold_metrics.json,
    metrics.json). A record that cannot be read (missing, a folder, not UTF-8, not JSON), holds
    no object, or lacks or mistypes what ``read`` takes (:data:`~covseg.train.UNREADABLE`) is
    refused in one line naming the fold to delete, as a resume and the benchmarks that re-score
    a run's folds refuse it: a config.json that was a folder ended in the CLI's general
    message, a benchmark's read of a truncated one in a traceback."""
    try:
        found = json.loads(record.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _unreadable_fold_record(record, exc) from None
    if not isinstance(found, dict):
        raise _unreadable_fold_record(record, TypeError(f"a JSON {type(found).__name__}, "
                                                        "not an object"))
    try:
        return read(found)
    except UNREADABLE as exc:
        raise _unreadable_fold_record(record, exc) from None


def finished_fold(fold_dir: Path) -> dict[str, Any]:
    """A finished fold's fold_metrics.json, its per-case rows each naming its slice: one not
    JSON, or without them, ended in a JSONDecodeError or KeyError traceback on a resume."""
    return read_fold_record(fold_dir / "fold_metrics.json", _with_case_rows)


def fold_training(fold_dir: Path) -> set[str]:
    """The slices a finished fold trained and validated on (its split's training side, as
    :func:`make_folds` gives it), from its config.json; a damaged one is refused as
    :func:`read_fold_record` refuses it. The benchmarks that pair runs fold by fold read it."""
    return read_fold_record(fold_dir / "config.json", _recorded_cases)


def _with_case_rows(finished: dict[str, Any]) -> dict[str, Any]:
    """A fold_metrics.json's ``finished`` object, checked to hold per-case rows each naming its
    slice (ValueError, KeyError or TypeError where it does not)."""
    if not all(isinstance(row, dict) and "case_id" in row for row in finished["per_case"]):
        raise ValueError("a per_case row names no case_id")
    return finished


def _fold_changes(fold_dir: Path, config: TrainConfig, finished: dict[str, Any],
                  data: LoadedData, train_cases: list[str], test_cases: list[str],
                  folds: int | None, verb: str) -> list[str]:
    """What differs between a finished fold (``finished``: its fold_metrics.json) and this
    recipe on this split of these data: the fold is reused only when nothing does. A damaged
    config.json is refused naming it (a bad value read as the user's option, "--epochs must be a
    whole number"), to be deleted with its fold. A fold of the same recipe finished on another
    split that its record tells (another ``folds``, or seed) is refused as a fold stopped midway
    is (:func:`_split_told`): "delete OUT to start over" lost good folds to a mistyped --folds."""
    def read(record: dict[str, Any]
             ) -> tuple[dict[str, Any], TrainConfig, int, list[str], set[str]]:
        saved = lung_run_found(fold_dir, TrainConfig.from_dict(record["config"]), config)
        slices = len(record["train_cases"])
        return record, saved, slices, saved.differences(config, slices), _recorded_cases(record)

    record, saved, slices, changed, trained = read_fold_record(fold_dir / "config.json", read)
    tested = {row["case_id"] for row in finished["per_case"]}
    if trained != set(train_cases) or tested != set(test_cases):
        told = _split_told(record, fold_dir, folds, config.seed)
        if told and not saved.differences(replace(config, seed=saved.seed), slices):
            raise _another_split_error(fold_dir, "finished", told, verb, folds, config.seed)
        changed.append(f"its training or test slices (another {option_name('folds')}, "
                       f"{option_name('seed')} or data set)")
    elif made_from_other_data(finished, data_fingerprint(data, [*train_cases, *test_cases],
                                                         quiet=False)):
        changed.append("its data (other images or masks under the same slice names: another "
                       "data set, or files changed since)")
    return changed


@dataclass(frozen=True)
class StaleFolds:
    """A cross-validation folder ``out``'s finished folds that other settings or data made,
    each with what changed (:func:`_fold_changes`); ``some``: other finished folds there
    match, so only the stale folds' folders are to be deleted, not ``out`` with the good ones."""

    out: Path
    folds: list[tuple[Path, list[str]]]
    some: bool


def stale_folds_error(stale: Sequence[StaleFolds], verb: str) -> CovsegError:
    """One error naming every stale fold of every folder in ``stale`` (a comparison's models:
    each refused alone, one model per try) with what changed, folds changed alike named
    together (the first fold's changes alone were told: fixed, the next were refused), telling
    to ``verb`` (the command running: cross-validate, compare) into a new --out or to delete
    each folder whole, or, where it holds matching finished folds (``some``), only its stale
    folds' folders."""
    folds = [fold for group in stale for fold, _ in group.folds]
    by_change: dict[tuple[str, ...], dict[Path, list[Path]]] = {}
    for group in stale:
        for fold, changed in group.folds:
            by_change.setdefault(tuple(changed), {}).setdefault(group.out, []).append(fold)
    told = "; ".join(f"{_folds_named(named)}: finished with other settings or data "
                     f"({'; '.join(changed)})" for changed, named in by_change.items())
    doomed = [path for group in stale
              for path in ([fold for fold, _ in group.folds] if group.some else [group.out])]
    again = (f"to train {'them' if len(folds) > 1 else 'it'} again with these settings"
             if any(group.some for group in stale) else "to start over")
    return CovsegError(f"{told}; {verb} into a new {option_name('out')}, or delete "
                       f"{' and '.join(map(str, doomed))} {again}")


def _folds_named(by_folder: Mapping[Path, list[Path]]) -> str:
    """Folds of several folders named: each folder's first fold by its path, the rest of that
    folder's by name (``out/fold_0 (and fold_2)``)."""
    return ", ".join(f"{folds[0]}" + (f" (and {', '.join(fold.name for fold in folds[1:])})"
                                      if len(folds) > 1 else "")
                     for folds in by_folder.values())


def finished_fold_check(config: TrainConfig, data: LoadedData, out: Path,
                        splits: list[tuple[list[str], list[str]]], verb: str = CV_VERB,
                        repeats: int = 1
                        ) -> tuple[StaleFolds | None, list[tuple[Path, list[str], int]]]:
    """The finished folds of the cross-validation ``out`` that another recipe or data made
    (see :func:`_fold_changes`, which refuses one finished on another split in ``verb``'s
    words; None: none), and its other folds with their training slices and seeds, for
    :func:`refuse_midway_folds`. A folder holding folds of several splits is refused first
    (:func:`_mixed_splits_error`): a fold past this run's count (``--fold 2 --folds 3`` beside
    a 2-fold run) went unlooked at, the summary leaving it out without a word; so is one
    holding more repeats of this split than ``repeats`` (:func:`_more_repeats_error`). Fold
    records count the folds of one repeat (:func:`per_repeat`)."""
    folds = per_repeat(splits, repeats)
    refusal = (_mixed_splits_error(out, verb, folds, config.seed)
               or _more_repeats_error(out, verb, folds, repeats, config.seed))
    if refusal:
        raise refusal
    stale, finished_folds = [], 0
    midway: list[tuple[Path, list[str], int]] = []
    for k, (train_cases, test_cases) in enumerate(splits):
        fold_dir = out / f"fold_{k}"
        if fold_done(fold_dir):
            finished_folds += 1
            finished = finished_fold(fold_dir)
            changed = _fold_changes(fold_dir, _fold_config(config, k), finished, data,
                                    train_cases, test_cases, folds, verb)
            if changed:
                stale.append((fold_dir, changed))
        else:
            midway.append((fold_dir, train_cases, _fold_config(config, k).seed))
    return (StaleFolds(out, stale, len(stale) < finished_folds) if stale else None), midway


def refuse_midway_folds(midway: list[tuple[Path, list[str], int]], folds: int, verb: str
                        ) -> None:
    """Refuse a fold of :func:`finished_fold_check`'s ``midway`` stopped on another split
    (``folds``: of one repeat, :func:`per_repeat`)."""
    for fold_dir, train_cases, seed in midway:
        _refuse_midway_fold_of_another_split(fold_dir, train_cases, folds, seed, verb)


def check_finished_folds(config: TrainConfig, data: LoadedData, out: Path,
                         splits: list[tuple[list[str], list[str]]], verb: str = CV_VERB,
                         repeats: int = 1) -> None:
    """Refuse, before any fold trains, a cross-validation ``out`` whose finished folds another
    recipe or data made (see :func:`_fold_changes`), or with a fold stopped midway on another
    split: checked fold by fold, the first stale fold stopped the run only after the folds
    before it were retrained (on Ray, inside a fold's task, as "fold 1 failed on Ray")."""
    stale, midway = finished_fold_check(config, data, out, splits, verb, repeats)
    if stale:
        raise stale_folds_error([stale], verb)
    refuse_midway_folds(midway, per_repeat(splits, repeats), verb)


def checked_fold_weights(config: TrainConfig, out: Path, folds: int,
                         trained: Sequence[int] | None = None) -> dict[str, str | None]:
    """This command's :func:`~covseg.train.weights_file_sha256`, hashed once for all ``folds``
    folds of ``out``, after refusing, before any fold trains, one whose config.json records
    another (:func:`~covseg.train.refuse_other_weights`, the rule a resume follows): a fold
    trained now would start from other weights than the folds done, which are reused. Folds
    holding no saved work (a record beside no checkpoint starts afresh: see
    :func:`cross_validation_work`) and records without the SHA-256 (before 6 Dec) pass. A
    file gone since is :func:`refuse_gone_fold_weights`'s to judge."""
    weights = weights_file_sha256(config)
    if not weights:  # no weights= file: the recipe names none, as its records' recipes say
        return weights
    refuse_gone_fold_weights(config, out, folds, trained)
    for fold_dir in (out / f"fold_{k}" for k in range(folds)):
        record = read_record(fold_dir / "config.json")
        if record is not None and (fold_done(fold_dir) or holds_saved_run(fold_dir)):
            refuse_other_weights(out, config, record, weights)
    return weights


def refuse_gone_fold_weights(config: TrainConfig, out: Path, folds: int | None,
                             trained: Sequence[int] | None = None) -> None:
    """A weights= file gone since the folds of ``out`` started, refused where a network of the
    unfinished folds this command trains (``trained``: all where None; ``--fold K``'s one)
    would start from it (:func:`~covseg.train.refuse_gone_weights`). It needs the fold folders
    alone, so it is made before the data are read too (a volume data set takes minutes), where
    ``folds`` may be None (the data's split files or the default): the folds started then."""
    refuse_gone_weights(out, config, [folder for folder in _folds_of(out, folds, trained)
                                      if not fold_done(folder)])


def _folds_of(out: Path, folds: int | None, trained: Sequence[int] | None) -> list[Path]:
    """The fold folders of ``out`` a command trains: ``trained`` (``--fold K``'s one), else all
    ``folds``, else (before the data are read: their split files may count them) those
    started."""
    if trained is None and folds is None:
        return fold_folders(out)
    return [out / f"fold_{k}" for k in (range(folds or 0) if trained is None else trained)]


def run_fold(config: TrainConfig, data: LoadedData, fold_dir: Path, train_cases: list[str],
             test_cases: list[str], resume: bool, verb: str = CV_VERB,
             folds: int | None = None, node: Mapping[str, str] | None = None,
             weights: Mapping[str, str | None] | None = None,
             notes: Sequence[str] | None = None, lung_sha256: str | None = None
             ) -> list[dict[str, Any]]:
    """Train on ``train_cases`` (validation patients drawn from them), evaluate on ``test_cases``;
    a finished fold is reused (unless :func:`_fold_changes` finds it stale) instead. ``folds``:
    how many the split has, kept in the fold's record; ``node``: the machine a fold run on Ray
    trains on (:data:`NODE`), kept there too; ``weights``: the recipe's
    :func:`~covseg.train.weights_file_sha256`, ``notes`` its
    :func:`~covseg.train.recipe_notes` on ``data`` and ``lung_sha256`` its lung model's
    :func:`~covseg.train.pin_lungs`, each worked out once for all folds (None: by the fold)."""
    if fold_done(fold_dir):
        finished = finished_fold(fold_dir)
        changed = _fold_changes(fold_dir, config, finished, data, train_cases, test_cases,
                                folds, verb)
        if changed:
            # Run alone (--fold K), the other folds are not looked at: only this one is deleted.
            raise stale_folds_error([StaleFolds(fold_dir.parent, [(fold_dir, changed)], True)],
                                    verb)
        # JSON holds undefined metrics as null: make them NaN again, as a fresh fold has them.
        return hd95_by_unit([_nulls_as_nan({_renamed(key): value for key, value in row.items()})
                             for row in finished["per_case"]], data)
    _refuse_midway_fold_of_another_split(fold_dir, train_cases, folds, config.seed, verb)
    by_id = {s.case_id: s for s in data.samples}
    fit, val = _fold_split(config, by_id, train_cases)
    record = ({} if folds is None else {FOLDS: folds}) | ({NODE: dict(node)} if node else {})
    trained = train(config, data, fold_dir, resume=resume, train_cases=fit, val_cases=val,
                    record=record, weights=weights, notes=notes, lung_sha256=lung_sha256)
    # the fold's files kept: a resume tests it
    refuse_retrained_lungs(config, fold_dir, lung_sha256)
    test_samples = [by_id[c] for c in test_cases]
    rows, _ = evaluate_samples(Predictor.load(fold_dir / "best.pt"), test_samples, "testing fold")
    rows = hd95_by_unit(rows, data)
    write_text(fold_dir / "test_per_case.csv", rows_to_csv(rows))
    fingerprint = data_fingerprint(data, [*train_cases, *test_cases], quiet=False)  # the fold's
    write_json(fold_dir / "fold_metrics.json", {"summary": summarize(rows), "std_note": STD_NOTE,
                                                "classes": class_labels(data.target,
                                                                        data.num_classes),
                                                **hd95_unit_field(data.hd95_unit),
                                                "per_case": rows,
                                                DATA_FINGERPRINT: fingerprint,
                                                BEST_SHA256: trained.get(BEST_SHA256)})
    return rows


NODE = "node"
"""Key of the node a fold run on Ray last trained on in its config.json: ``hostname`` and Ray's
``ray_node_id`` (:func:`covseg.cluster.this_node`); folds run here record none, as no record
names the machine it was written on."""


def hd95_keys(stats: Mapping[str, Any]) -> list[str]:
    """The HD95 keys of a summary's metrics: ``hd95``, or ``hd95_mm`` and ``hd95_px`` where
    the slices have both units (:func:`hd95_by_unit`)."""
    return [key for key in ("hd95", *HD95_UNITS) if key in stats]


def hd95_unit(key: str, record: Mapping[str, Any]) -> str:
    """The unit of HD95 key ``key`` of a cross-validation summary or comparison ``record``,
    for its reports' column names: ``hd95_mm``'s and ``hd95_px``'s own, else the data's
    (:data:`HD95_UNIT`; px in records written before it was kept)."""
    return HD95_UNITS.get(key) or record.get(HD95_UNIT, "px")


def hd95_cover(stats: Mapping[str, Any]) -> tuple[int, int]:
    """On how many slices HD95 is defined (in either unit), of how many, from a summary's
    ``mean_std_over_folds`` (or a comparison row); (0, 0) without HD95 counts."""
    keys = [key for key in hd95_keys(stats) if "cases" in stats[key]]
    if not keys:
        return 0, 0
    first = stats[keys[0]]
    return sum(stats[key]["cases"] for key in keys), first["cases"] + first["cases_undefined"]


def hd95_units_line(by_unit: Mapping[str, int]) -> list[str]:
    """The report line saying why HD95 is given per unit (``by_unit``: slices per unit, from
    :func:`hd95_slices_by_unit`); none for data of one unit."""
    if not by_unit:
        return []
    return [(f"- HD95 is in mm on the {counted(by_unit['mm'], 'slice')} of volumes (NIfTI, NRRD, "
             f"MetaImage) and in px on the {counted(by_unit['px'], '2D image')}, so it is given "
             "per unit (hd95_mm, hd95_px), each over its own slices (the other unit's counted as "
             "left out): one mean of mm and px would mean nothing")]


RENAMED = {"pleural-effusion_": "effusion_"}
"""Per-case key prefixes that finished folds wrote before label 3 was renamed, by their name
now: a resume mixed ``pleural-effusion_dice`` and ``effusion_dice`` in one summary."""


def _renamed(key: str) -> str:
    """A finished fold's per-case metric key as folds write it now (see :data:`RENAMED`)."""
    for old, new in RENAMED.items():
        if key.startswith(old):
            return new + key.removeprefix(old)
    return key


def _recorded_cases(record: Mapping[str, Any]) -> set[str]:
    """The slices a run's ``record`` (its config.json) trained and validated on: its
    ``train_cases`` and ``val_cases``; a KeyError or TypeError where it lacks or mistypes them."""
    return {*record["train_cases"], *record["val_cases"]}


def _refuse_midway_fold_of_another_split(fold_dir: Path, train_cases: list[str],
                                         folds: int | None, seed: int, verb: str) -> None:
    """A fold stopped midway is continued only on its own training slices (``seed``: the
    fold's, see :func:`_split_told`): one resumed with another --folds was refused as "trained
    on other data ...; pick a new --out" naming the fold's folder, which is not the --out the
    user gave."""
    record = read_record(fold_dir / "config.json") or {}
    try:
        saved = _recorded_cases(record)
    except (KeyError, TypeError):
        return  # nothing saved, or a record the run's own check refuses
    if not holds_saved_run(fold_dir) or saved == set(train_cases):
        return
    told = _split_told(record, fold_dir, folds, seed) or (
        f"its training slices differ: another {option_name('folds')}, {option_name('seed')} "
        "or data set); resume with the options it was started with")
    raise _another_split_error(fold_dir, "stopped midway", told, verb, folds, seed)


def _split_told(record: Mapping[str, Any], fold_dir: Path, folds: int | None,
                seed: int) -> str | None:
    """How the split the fold in ``fold_dir`` (``out/fold_k``) was made on differs from this
    one (``folds`` folds; ``seed``: the fold's, the run's + k, as :func:`_fold_config` seeds
    it), as its config.json ``record`` tells it, with the options to resume with:
    ``2 folds then, 3 now); resume with --folds 2``; None where it tells neither (a record
    written before the count was kept, or another data set)."""
    then, saved_seed = _record_split(record)
    k = fold_index(fold_dir)  # the run's seed: the fold's less k
    told, options = [], []
    if then is not None and folds is not None and then != folds:
        told.append(f"{then} folds then, {folds} now")
        options.append(option_given("folds", then))
    if saved_seed is not None and saved_seed != seed:
        told.append(f"seed {saved_seed - k} then, {seed - k} now")
        options.append(option_given("seed", saved_seed - k))
    return f"{'; '.join(told)}); resume with {' and '.join(options)}" if told else None


def _record_split(record: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The split a fold's config.json ``record`` tells it was made on: its count of folds and
    the fold's seed, each None where the record does not tell it (written before it was kept)."""
    then, recipe = record.get(FOLDS), record.get("config")
    saved_seed = recipe.get("seed") if isinstance(recipe, dict) else None
    return (then if isinstance(then, int) else None,
            saved_seed if isinstance(saved_seed, int) else None)


def _another_split_error(fold_dir: Path, state: str, told: str, verb: str, folds: int | None,
                         seed: int) -> CovsegError:
    """The refusal of the fold in ``fold_dir``, ``state`` (finished, stopped midway) on another
    split of the data (``told``: how, and what to resume with), as ``verb`` (the command
    running) words it: one wording for either state. Where the folder's folds were made on
    several splits (``--fold K`` runs with several --folds), it names them all (see
    :func:`_mixed_splits_error`): told one fold's options, the user was refused on the next."""
    mixed = _mixed_splits_error(fold_dir.parent, verb, folds, seed - fold_index(fold_dir))
    return mixed or CovsegError(f"{fold_dir}: {state} on another split of the data ({told}, or "
                                f"{verb} into a new {option_name('out')} than "
                                f"{_given_out(fold_dir.parent, verb)}")


def _given_out(out: Path, verb: str) -> Path:
    """The --out the user gave for the cross-validation folder ``out``, as the refusals of
    ``verb`` (the command running) name it: ``out`` itself for cv; its parent for compare (a
    model's folder) and the demo (its cv folder), which cross-validate inside the --out given
    ("compare into a new --out than cmp/unet" named a model's folder)."""
    return out if verb == CV_VERB else out.parent


def _splits_made(out: Path) -> dict[tuple[int, int], list[str]]:
    """The folds of ``out`` holding work (finished, or a saved run) by the split their records
    tell they were made on (:func:`_record_split`): (folds, the run's seed); folds
    whose records tell neither (written before the count was kept) are left out."""
    made: dict[tuple[int, int], list[str]] = {}
    for fold_dir in fold_folders(out):
        then, saved_seed = _record_split(read_record(fold_dir / "config.json") or {})
        if (then is not None and saved_seed is not None
                and (fold_done(fold_dir) or holds_saved_run(fold_dir))):
            made.setdefault((then, saved_seed - fold_index(fold_dir)), []).append(fold_dir.name)
    return made


def _mixed_splits_error(out: Path, verb: str, folds: int | None, seed: int) -> CovsegError | None:
    """The refusal of a cross-validation ``out`` whose folds were made on several splits
    (:func:`_splits_made`), naming each split's folds and the options to resume each with once
    the other splits' folds are deleted, by their full paths to paste into ``rm -r`` (named
    ``fold_1``, they were looked for beside the user, and under compare lie in a model's
    folder) (``folds``, ``seed``: this run's); None for one split."""
    made = _splits_made(out)
    if len(made) < 2:
        return None
    now = (folds, seed)
    shown = [index for index in (0, 1)  # what differs; None: this run's count not known
             if len({split[index] for split in made} | ({now[index]} - {None})) > 1]

    def split(values: tuple[int | None, int]) -> str:
        return " and ".join(f"{values[0]} folds" if index == 0 else f"seed {values[1]}"
                            for index in shown if values[index] is not None)

    def resume(values: tuple[int, int], names: list[str]) -> str:
        others = [str(out / other) for split_names in made.values() if split_names is not names
                  for other in split_names]
        options = " and ".join(option_given(("folds", "seed")[index], values[index])
                               for index in shown)
        return f"{options} after deleting {' and '.join(others)}"

    held = ", ".join(f"{' and '.join(names)} on {split(values)}" for values, names in made.items())
    resumes = ", or with ".join(resume(values, names) for values, names in made.items())
    told = split(now)
    return CovsegError(f"{out}: holds folds of {len(made)} different splits of the data ({held}"
                       f"{f'; {told} now' if told else ''}); resume with {resumes}, or {verb} into "
                       f"a new {option_name('out')} than {_given_out(out, verb)}")


def _more_repeats_error(out: Path, verb: str, folds: int, repeats: int,
                        seed: int) -> CovsegError | None:
    """The refusal of a cross-validation ``out`` holding folds of this split (``folds`` a
    repeat, seeded ``seed``: :func:`_record_split`) past its ``repeats`` (:func:`make_folds`),
    naming the repeats they make; None where it holds none. Left unlooked at, a resume with
    fewer repeats wrote the summary of fewer folds over that of the folds there."""
    total = folds * repeats
    past = [fold for fold in fold_folders(out) if fold_index(fold) >= total
            and (fold_done(fold) or holds_saved_run(fold))
            and _record_split(read_record(fold / "config.json") or {})
            == (folds, seed + fold_index(fold))]
    if not past:
        return None
    held = max(map(fold_index, past)) // folds + 1
    return CovsegError(f"{out}: holds the folds of a {repeats_text(folds, held)} "
                       f"({', '.join(fold.name for fold in past)} past the {total} of "
                       f"{option_given('repeats', repeats)}); resume with "
                       f"{option_given('repeats', held)}, or delete "
                       f"{' and '.join(str(fold) for fold in past)} to keep {repeats}, or "
                       f"{verb} into a new {option_name('out')} than {_given_out(out, verb)}")


def cross_validate_fold(config: TrainConfig, data: LoadedData, out: str | os.PathLike[str],
                        folds: int | None, fold: int, resume: bool = False,
                        lung_sha256: str | None = None, repeats: int = 1) -> dict[str, Any]:
    """Run fold ``fold`` alone into ``out/fold_k``, exactly as :func:`cross_validate` would (same
    split and seed), so that folds can run side by side; return its summary, with the
    ``best_sha256`` its fold_metrics.json records (as the whole run's ``per_fold`` has it: it
    was missing; null in a record before 7 Dec). Without ``resume`` a ``fold_k`` already there
    is refused; of the other folds' folders only the weights= file their records name is looked
    at (:func:`checked_fold_weights`). ``lung_sha256``: the lung model the caller pinned
    (:func:`pinned_lungs`), as :func:`run_fold` takes it; ``repeats``: fold ``fold`` of the
    k·r folds of repeated k-fold (:func:`make_folds`)."""
    refuse_other_output(Path(out), CROSS_VALIDATION)
    splits, _ = make_folds(data, folds, config.seed, repeats)
    check_run_seed(config, len(splits))  # as the whole run refuses it: its folds are these
    named = split_files_note(data)
    check_fold_index(fold, per_repeat(splits, repeats), f" ({named})" if named else "", repeats,
                     Path(out))
    check_cv_folder(Path(out), resume, fold)
    weights = checked_fold_weights(config, Path(out), len(splits), [fold])
    notes = recipe_notes(config, data)
    warn_notes(notes, data)  # a whole run warns them once for its folds
    rows = _split_fold(config, data, Path(out), splits, fold, resume, weights=weights,
                       notes=notes, lung_sha256=lung_sha256, repeats=repeats)
    best = read_fold_record(Path(out) / f"fold_{fold}" / "fold_metrics.json",
                            lambda record: record.get(BEST_SHA256))
    return {"fold": fold, "test_cases": len(splits[fold][1]), "summary": summarize(rows),
            BEST_SHA256: best}


def _fold_split(config: TrainConfig, by_id: Mapping[str, Sample], train_cases: Sequence[str],
                quiet: bool = False) -> tuple[list[str], list[str]]:
    """The (training, validation) cases a fold seeded as ``config`` draws from its
    ``train_cases`` (:func:`~covseg.data.splits.validation_split`; ``quiet``: unwarned), the
    data's samples ``by_id`` (case id) built once by the caller."""
    return validation_split([by_id[c] for c in train_cases], config.val_fraction, config.seed,
                            quiet)


@dataclass(frozen=True)
class CvNotes:
    """A cross-validation's notes beside the data's (:func:`warned_cv_notes`): the recipe's on
    the data (:func:`~covseg.train.recipe_notes`), which each fold's metrics.json records too,
    and the folds' (:func:`_fold_notes`)."""

    recipe: list[str]
    folds: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.recipe, *self.folds]


def warned_cv_notes(config: TrainConfig, data: LoadedData,
                    splits: Sequence[tuple[list[str], list[str]]]) -> CvNotes:
    """A cross-validation's notes beside the data's, each warned: once per command, handed to
    each fold, which takes them as given (they share the data and the framing; until 7 Dec each
    fold framed every slice holding effusion again), compare's models being cross-validated on
    the same folds."""
    notes = CvNotes(recipe_notes(config, data), _fold_notes(config, data, splits))
    warn_notes(notes.all, data)
    return notes


def _fold_notes(config: TrainConfig, data: LoadedData,
                splits: Sequence[tuple[list[str], list[str]]]) -> list[str]:
    """The folds' notes: the classes their training slices lack (:func:`_class_notes`), and a
    lung model that saw the slices they test (:func:`lung_run_notes`)."""
    return [*_class_notes(config, data, splits), *lung_run_notes(config, data, splits)]


def lung_run_notes(config: TrainConfig, data: LoadedData,
                   splits: Sequence[tuple[list[str], list[str]]]) -> list[str]:
    """A note where the lung model of ``--lung-guide RUN`` trained or validated (picked its
    epoch) on slices the folds test: its run's config.json names these data (``data_path``)
    and lists them among its ``train_cases`` or ``val_cases``. Their lung channel then comes
    from a model that saw their lungs, so the folds may score them above unseen scans; not
    refused, as a user may have no other lung model. Until 7 Dec only the lung model's SHA-256
    was checked, and a lung run trained on all of DATA guided every test fold unsaid."""
    guide = config.guide()
    if guide is None or guide.source == THRESHOLD:
        return []
    record = read_record(checkpoint_file(guide.source).parent / "config.json") or {}
    if record.get("data_path") != data.root:
        return []
    try:
        seen = _recorded_cases(record)
    except (KeyError, TypeError):
        return []  # a record without its case lists: nothing to tell
    tested = {case for _, test in splits for case in test}
    overlap = len(tested & seen)
    if not overlap:
        return []
    return [(f"the lung model of {option_name('lung_guide')} {guide.source} was trained or "
             f"validated on {overlap} of the {counted(len(tested), 'slice')} the folds test "
             "(its config.json names these data), so their lung channel comes from a model that "
             "saw them and the scores may read higher than on unseen scans; for an unbiased "
             "figure guide with a lung model trained on other data, or "
             f"{option_given('lung_guide', THRESHOLD)}")]


def _class_notes(config: TrainConfig, data: LoadedData,
                 splits: Sequence[tuple[list[str], list[str]]]) -> list[str]:
    """:func:`~covseg.data.layouts.base.fold_class_notes` of the slices each fold trains on,
    its validation patients left out as its run leaves them (which warns of its split); none
    for a data set that is not multi-class, whose folds are then not drawn."""
    if data.target != "multiclass":
        return []
    by_id = {s.case_id: s for s in data.samples}
    return fold_class_notes(data, [
        _fold_split(_fold_config(config, k), by_id, train_cases, quiet=True)[0]
        for k, (train_cases, _) in enumerate(splits)])


def _split_fold(config: TrainConfig, data: LoadedData, out: Path,
                splits: list[tuple[list[str], list[str]]], k: int, resume: bool,
                verb: str = CV_VERB, node: Mapping[str, str] | None = None,
                weights: Mapping[str, str | None] | None = None,
                notes: Sequence[str] | None = None, lung_sha256: str | None = None,
                repeats: int = 1) -> list[dict[str, Any]]:
    """Fold ``k`` of ``splits`` (``repeats`` times k folds) into ``out/fold_k``, seeded
    ``seed + k`` (whole run or alone), its record counting the folds of one repeat
    (:func:`per_repeat`), as the plain run it repeats records them; ``weights``, ``notes``,
    ``lung_sha256``: as :func:`run_fold` takes them."""
    train_cases, test_cases = splits[k]
    return run_fold(_fold_config(config, k), data, out / f"fold_{k}", train_cases, test_cases,
                    resume, verb, per_repeat(splits, repeats), node, weights, notes,
                    lung_sha256)


def per_repeat(splits: Sequence[object], repeats: int) -> int:
    """The folds of one repeat of ``splits``, the k·r folds of :func:`make_folds`: what a fold
    records as its count and a split is told by (:func:`_split_told`)."""
    return len(splits) // repeats


def _fold_config(config: TrainConfig, k: int) -> TrainConfig:
    """The recipe fold ``k`` of a cross-validation seeded as ``config`` trains with: seeded
    ``seed + k`` (the run's seed read back from a fold's: :func:`_killed_commands`)."""
    return replace(config, seed=config.seed + k)


def whole_run_fold(config: TrainConfig, data: LoadedData, out: str | os.PathLike[str],
                   folds: int | None, fold: int, resume: bool,
                   node: Mapping[str, str] | None = None,
                   weights: Mapping[str, str | None] | None = None,
                   notes: Sequence[str] | None = None, lung_sha256: str | None = None,
                   repeats: int = 1) -> None:
    """Fold ``fold`` as a whole run (:func:`cross_validate_held`) trains it, for a fold of a
    whole run on Ray: the whole run's ``out`` was checked before its folds started, so a fold
    another run (``--fold K`` beside it) finished since is reused, as here, not refused as that
    fold's own folder is refused to ``--fold K`` without ``resume`` ("pass --resume").
    ``node``, ``weights``, ``notes``, ``lung_sha256``: see :func:`run_fold` (the driver worked
    them out once for every fold: the weights= file checked and hashed by
    :func:`checked_fold_weights`)."""
    _split_fold(config, data, Path(out), make_folds(data, folds, config.seed, repeats)[0], fold,
                resume, node=node, weights=weights, notes=notes, lung_sha256=lung_sha256,
                repeats=repeats)


@fingerprints_kept()
def cross_validate(config: TrainConfig, data: LoadedData, out: str | os.PathLike[str],
                   folds: int | None = None, resume: bool = False,
                   begun: Begun | None = None, verb: str = CV_VERB,
                   cv_notes: CvNotes | None = None,
                   weights: Mapping[str, str | None] | None = None,
                   lung_sha256: str | None = None, repeats: int = 1) -> dict[str, Any]:
    """Run every fold into ``out/fold_k`` (``repeats``: repeated k-fold's k·r folds,
    :func:`make_folds`); write per_case.csv, dice_boxplot.png, report.md and
    summary.json, the last written: a run stopped before it leaves no summary. A --resume that
    finds the run finished (:func:`finished_summary`) returns its summary as an
    :class:`~covseg.train.AlreadyTrained` and leaves every file as it was; one that finds every
    fold finished but the summary stale or missing writes all four again from the folds.

    Completed folds are kept, so an interrupted run continues where it stopped when resumed
    (its time too: :data:`STOPPED_FILE`);
    without ``resume`` an ``out`` already holding folds or the summary is refused. A refused
    run leaves no folder (``out`` is removed again where the run leaves it empty). A folder
    holding a training run or a comparison is refused. ``begun``: when the command began
    (:func:`begin`), where its folds ran before (on Ray).
    ``verb``: the command running, as its refusals name it (compare's models are
    cross-validated here too). ``cv_notes``: :func:`warned_cv_notes` of these folds, where
    the caller warned them, ``weights``: :func:`checked_fold_weights` of ``out``, where the
    caller checked and hashed it, and ``lung_sha256``: the lung model the caller pinned
    (:func:`~covseg.train.pin_lungs`), each worked out once for every fold (compare: for
    every model; None: worked out here, the lung model pinned where a fold is left to train).

    ``out``'s lock is held for the whole run (:func:`~covseg.io.lock.writing_to`): a second
    whole run into it is refused naming the first; folds run alone (``--fold K``) do not take
    it, so that they run side by side, and meet a whole run only at their fold's own lock.
    """
    out = Path(out)
    refuse_other_output(out, CROSS_VALIDATION)
    if resume and begun is None:
        finished = finished_resume(config, data, out, folds, verb, weights, repeats)
        if finished is not None:
            return finished
    with writing_to(out):
        return cross_validate_held(config, data, out, folds, resume, begun, verb, cv_notes,
                                   weights, lung_sha256, repeats)


def finished_resume(config: TrainConfig, data: LoadedData, out: Path, folds: int | None,
                    verb: str = CV_VERB, weights: Mapping[str, str | None] | None = None,
                    repeats: int = 1) -> AlreadyTrained | None:
    """The summary of the finished cross-validation in ``out`` that a --resume returns, its
    folds checked as a run's are (:func:`checked_cv_folder`), None where it is not finished.
    Judged before ``out``'s lock is taken, which would replace a stale lock file (a run killed
    outright left it) and remove it: a finished or refused resume leaves every file as it was."""
    if not reads_finished(out, folds, repeats):
        return None
    (splits, _), _ = checked_cv_folder(config, data, out, folds, True, verb, weights, repeats)
    finished = finished_summary(out, len(splits))
    return None if finished is None else AlreadyTrained(finished)


def checked_cv_folder(config: TrainConfig, data: LoadedData, out: Path, folds: int | None,
                      resume: bool, verb: str = CV_VERB,
                      weights: Mapping[str, str | None] | None = None, repeats: int = 1
                      ) -> tuple[tuple[list[tuple[list[str], list[str]]], str],
                                 Mapping[str, str | None]]:
    """The folds of ``data`` and how they were made (:func:`make_folds`), and the ``weights=``
    file's SHA-256 (``weights``, or :func:`checked_fold_weights`), once ``out`` and its finished
    folds passed every check a fold trained into them would fail (:func:`check_cv_folder`,
    :func:`check_finished_folds`)."""
    check_cv_folder(out, resume)
    made = make_folds(data, folds, config.seed, repeats)
    splits = made[0]
    check_run_seed(config, len(splits))
    check_finished_folds(config, data, out, splits, verb, repeats)
    return made, checked_fold_weights(config, out, len(splits)) if weights is None else weights


def cross_validate_held(config: TrainConfig, data: LoadedData, out: Path, folds: int | None,
                        resume: bool, begun: Begun | None = None, verb: str = CV_VERB,
                        cv_notes: CvNotes | None = None,
                        weights: Mapping[str, str | None] | None = None,
                        lung_sha256: str | None = None, repeats: int = 1) -> dict[str, Any]:
    """:func:`cross_validate` inside ``out``'s lock, which the caller holds (Ray's folds ran
    under it, so that no second whole run starts between them and the summary)."""
    (splits, how), weights = checked_cv_folder(config, data, out, folds, resume, verb, weights,
                                               repeats)
    # Finished only where the command began with no fold to train: on Ray its folds ran first.
    nothing_to_train = resume and (begun is None or not begun.trains)
    finished = finished_summary(out, len(splits)) if nothing_to_train else None
    if finished is not None:  # nothing left to do: every file left as it was
        return AlreadyTrained(finished)
    if lung_sha256 is None:  # before the clean-up: a refused resume leaves every file as it was
        lung_sha256 = pinned_lungs(config, out, len(splits))
    remove_temporaries(out)  # a run killed there (kill -9) left them; its folds' go in train
    if cv_notes is None:
        cv_notes = warned_cv_notes(config, data, splits)
    begun = begin(out, len(splits), resume, repeats=repeats) if begun is None else begun
    with stop_recorded(config, data, out, begun):
        per_fold: list[dict[str, Any]] = []
        all_rows: list[dict[str, Any]] = []
        train_seconds = 0.0
        for k, (train_cases, test_cases) in enumerate(splits):
            rows = _split_fold(config, data, out, splits, k, resume, verb, weights=weights,
                               notes=cv_notes.recipe, lung_sha256=lung_sha256, repeats=repeats)
            seconds, epochs, best = _fold_training(out / f"fold_{k}")
            train_seconds += seconds
            stats = summarize(rows)
            per_fold.append({"fold": k, "train_cases": len(train_cases),
                             "test_cases": len(test_cases), "epochs": epochs, BEST_SHA256: best,
                             **_fold_means(stats, data),
                             DEFINED: {key: metric["n"] for key, metric in stats.items()}})
            all_rows.extend({"fold": k, **row} for row in rows)
        summary = _continued(*_earlier(out, begun),
                             _summary(config, data, out, how, per_fold, all_rows, begun,
                                      train_seconds, _whole_set(data, splits), cv_notes.all),
                             begun.trains, out)
        write_text(out / "per_case.csv", rows_to_csv(all_rows))
        png = out / "dice_boxplot.png"
        plotted = drawn(lambda: box_plot(_dice_groups(config, all_rows, per_fold, repeats), png,
                                         ylabel="Dice per case", title=_title(config, data)),
                        png, out / "per_case.csv")
        write_text(out / "report.md", report_markdown(summary, plotted))
        # Last, so that a summary.json means the rest is written: one stopped (Ctrl-C) after it
        # alone looked finished without its report.md and box plot.
        write_json(out / "summary.json", summary)
    (out / STOPPED_FILE).unlink(missing_ok=True)  # summed into the summary
    return summary


FoldState = tuple[bool, bool, tuple[tuple[int, int], ...]]
"""What a fold holds (:func:`_fold_state`): whether it finished, whether it wrote its
fold_metrics.json, and its run's files' writes."""


@dataclass(frozen=True)
class Begun:
    """A cross-validation command as its records time it: begun at ``clock``
    (``time.perf_counter()``) and ``utc``; ``trains``: it had folds to train then (a command
    that trains none adds no time to the run's); ``resume``: it continues earlier commands;
    ``saved``: what its folds held then (a command that changed nothing trained nothing);
    ``writes``: when each file in ``out`` was last written then, on a resume
    (:func:`_killed_commands`); ``repeats``: the run's repeats of its folds (:func:`make_folds`:
    ``saved`` holds all k·r)."""

    clock: float
    utc: str
    resume: bool
    saved: tuple[FoldState, ...]
    writes: tuple[float, ...] = ()
    repeats: int = 1

    @property
    def trains(self) -> bool:
        """Whether some fold was unfinished as the command began."""
        return not all(finished for finished, *_ in self.saved)


def begin(out: Path, folds: int, resume: bool, clock: float | None = None,
          utc: str | None = None, repeats: int = 1) -> Begun:
    """The command running the ``folds`` folds of ``out`` (a whole run; all k·r of its
    ``repeats``), begun now, or at ``clock`` and ``utc`` (before its folds ran on Ray), with
    what its folds held then."""
    return Begun(clock=time.perf_counter() if clock is None else clock,
                 utc=utc_now() if utc is None else utc,
                 resume=resume, saved=_folds_state(out, folds),
                 writes=_writes(out) if resume else (),  # read by a resume alone
                 repeats=repeats)


def _writes(out: Path) -> tuple[float, ...]:
    """When each file in ``out`` (its folds' included) was last written, in seconds since the
    epoch: what tells how long commands killed with ``kill -9`` there ran. Lock files are no
    work of theirs: this command took over ``out``'s before it began."""
    times = []
    for path in out.rglob("*") if out.is_dir() else ():
        with suppress(OSError):
            if path.is_file() and path.name != LOCK_FILE:
                times.append(path.stat().st_mtime)
    return tuple(times)


def _folds_state(out: Path, folds: int) -> tuple[FoldState, ...]:
    """What each of the ``folds`` folds of ``out`` holds (:func:`_fold_state`)."""
    return tuple(_fold_state(out / f"fold_{k}") for k in range(folds))


def _fold_state(fold_dir: Path) -> FoldState:
    """Whether the fold finished (:func:`fold_done`: its model there), whether it wrote its
    fold_metrics.json (a test of a fold with no model counts: the command ran it), and each of
    its run's files an epoch or its end writes (the ``last.pt`` of the run and of an ensemble's
    members, :func:`~covseg.train.run_networks`, and ``metrics.json``, written as ``last.pt``
    is deleted at the run's end) as last written (inode, modification time): a command that
    changed none of them ran nothing."""
    written = (file_version(checkpoint) for checkpoint in sorted(
        run / name for run in run_networks(fold_dir) for name in ("last.pt", "metrics.json")))
    return (fold_done(fold_dir), fold_recorded(fold_dir),
            tuple(version for version in written if version is not None))


STOPPED_FILE = "stopped.json"
"""A cross-validation's record of the commands that ran it until one was stopped (Ctrl-C,
SIGTERM) or failed before the summary: their provenance and summed ``seconds``, which the
summary of the ``--resume`` that finishes it continues, as a resume of a finished one continues
its summary.json (:func:`_continued`); removed once the summary is written."""


@contextmanager
def stop_recorded(config: TrainConfig, data: LoadedData, out: Path,
                  begun: Begun) -> Iterator[None]:
    """Run the block (the folds, the summary); where it ends in a stop or an error after this
    command trained an epoch or finished a fold in ``out``, write :data:`STOPPED_FILE` (where the
    disk lets it: :func:`~covseg.io.atomic.write_json_stopping`), so that the ``--resume`` that
    finishes the run counts this command's time too. A command refused before it trained (a
    fold's run made otherwise, or from other data) is not recorded, nor does a resume replace a
    record of another recipe's commands: it ran nothing of the run; a run started afresh (no
    ``--resume``) replaces a record left from another. One killed outright (``kill -9``) cannot
    be recorded. A stop landing once the block wrote the summary (which sums the commands)
    finishes the run as the block's end does, :data:`STOPPED_FILE` removed: it was written
    again, and the finished run read as stopped, its --resume writing every report again."""
    summary = out / "summary.json"
    before = file_version(summary)
    try:
        yield
    except BaseException:
        if file_version(summary) != before:
            (out / STOPPED_FILE).unlink(missing_ok=True)
        elif (_folds_state(out, len(begun.saved)) != begun.saved
                and not (begun.resume and _stopped_otherwise(out, config, data))):
            write_json_stopping(out / STOPPED_FILE, _continued(
                *_earlier(out, begun), _command_record(config, data, begun, out), True, out))
        raise


def _stopped_otherwise(out: Path, config: TrainConfig, data: LoadedData) -> bool:
    """Whether ``out``'s :data:`STOPPED_FILE` records the commands of another recipe than
    ``config`` (an unreadable one records none)."""
    saved = read_record(out / STOPPED_FILE)
    return saved is not None and not _same_recipe(out, saved.get("config"),
                                                  config.record(data.windowed))


def _earlier(out: Path, begun: Begun) -> tuple[dict[str, Any] | None, bool]:
    """The record of the commands a resume (``begun``) continues, and whether they ended the
    run: those stopped before the summary (:data:`STOPPED_FILE`), else the finished run's
    summary.json (ended), else those killed with ``kill -9`` (:func:`_killed_commands`). A
    command that is no resume continues none (a stale record left in ``out`` is not read)."""
    if not begun.resume:
        return None, False
    for name, ended in ((STOPPED_FILE, False), ("summary.json", True)):
        if (out / name).is_file():
            return read_record(out / name), ended
    return _killed_commands(out, begun), False


def _killed_commands(out: Path, begun: Begun) -> dict[str, Any] | None:
    """The record of the commands that ran ``out``'s folds before ``begun`` and were killed
    with ``kill -9``, which leaves no :data:`STOPPED_FILE`, rebuilt from the folds' config.json:
    the recipe, start and provenance of the first, as the fold it began records them (its
    ``started_utc`` that fold's start, after the data were read), the resumes the folds list
    under ``resumed_by``, and the seconds each ran until its last write in ``out`` (the time
    after it, until the kill, is lost). The summary recorded the resume that finished the run
    as its start, with its own 0.1 s as the run time. A fold finished as ``begun`` began is an
    earlier command's though it started in the same second (``started_utc`` is to the second:
    a resume within it was taken for the run's start). None where no fold began before."""
    began = [(k, record) for k in range(len(begun.saved))
             if (record := read_record(out / f"fold_{k}" / "config.json")) is not None
             and (begun.saved[k][0] or _before(record, begun.utc))]
    if not began:
        return None
    k, first = min(began, key=lambda item: item[1]["started_utc"])
    resumes = sorted({entry["started_utc"]: entry for _, record in began
                      for entry in record.get(RESUMED_BY) or []
                      if isinstance(entry, dict) and _before(entry, begun.utc)}.values(),
                     key=lambda entry: entry["started_utc"])
    seconds = _seconds_run([first, *resumes], begun)
    recipe = first.get("config")
    if isinstance(recipe, dict) and isinstance(recipe.get("seed"), int):
        recipe = {**recipe, "seed": recipe["seed"] - k}  # undoes _fold_config
    start = {key: value for key, value in run_provenance(first).items() if key != RESUMED_BY}
    return start | {"config": recipe, "seconds": sum(seconds),
                    RESUMED_BY: [entry | {"seconds": ran}
                                 for entry, ran in zip(resumes, seconds[1:], strict=True)]}


def _before(record: Mapping[str, Any], utc: str) -> bool:
    """Whether ``record`` holds a ``started_utc`` before ``utc`` (an earlier command's)."""
    started = record.get("started_utc")
    return isinstance(started, str) and _epoch(started) is not None and started < utc


def _epoch(utc: str) -> float | None:
    """A ``started_utc`` (:func:`~covseg.provenance.utc_now`) in seconds since the epoch; None
    for a damaged one."""
    try:
        return datetime.fromisoformat(utc).timestamp()
    except ValueError:
        return None


def _seconds_run(commands: Sequence[Mapping[str, Any]], begun: Begun) -> list[float]:
    """The seconds each of ``commands`` (in the order they began, killed) ran in ``out``: from
    its start to the last write in ``out`` (``begun.writes``) before the next one began."""
    starts = [_epoch(command["started_utc"]) or 0.0 for command in commands]
    ends = [*starts[1:], _epoch(begun.utc) or math.inf]
    return [max((w for w in begun.writes if start <= w < end), default=start) - start
            for start, end in zip(starts, ends, strict=True)]


def _continued(saved: dict[str, Any] | None, ended: bool, summary: dict[str, Any],
               trained: bool, out: Path) -> dict[str, Any]:
    """``summary`` as a resume of the cross-validation whose record is ``saved`` writes it: with
    the provenance, start time and ``seconds`` of the command that started it, this one listed
    under ``resumed_by`` (its own seconds added where it ``trained`` a fold), so that a
    ``--resume`` that trains nothing leaves the run's command and run time as they were; as it
    is where no record of this recipe is there (a run started). ``saved``: a finished run's
    summary.json (``ended``), or the record of commands stopped before it (:data:`STOPPED_FILE`,
    :func:`_killed_commands`), which ended nothing: the run finishes now. A summary an earlier
    covseg wrote, without some of the start's keys (its source hash, start time, ``command``:
    null), keeps none of this resume's in their place: they would describe another command.
    ``threads`` stays ``summary``'s: the folds' as they stand (:func:`_folds_threads`), a fold
    trained again since included. ``out``: the cross-validation's folder (:func:`_same_recipe`)."""
    if saved is None or not _same_recipe(out, saved.get("config"), summary["config"]):
        return summary
    now = {**run_provenance(summary), "seconds": summary["seconds"],
           "finished_utc": summary["finished_utc"], "trained_folds": trained}
    start = {"command": None, **run_provenance(saved)}
    start.pop(RESUMED_BY, None)
    kept = {key: value for key, value in summary.items() if key not in INVOCATION_KEYS}
    finishes = trained or not ended
    return kept | start | {  # none of this resume's own provenance beside the start's command
        THREADS: summary[THREADS],
        "seconds": float(saved["seconds"]) + (summary["seconds"] if trained else 0.0),
        "finished_utc": summary["finished_utc"] if finishes else saved.get("finished_utc"),
        RESUMED_BY: [*saved.get(RESUMED_BY, []), now]}


def _same_recipe(out: Path, recorded: Any, current: dict[str, Any]) -> bool:
    """Whether a summary's ``recorded`` recipe is the ``current`` one, read as the check of a
    fold's run reads its config.json (:meth:`TrainConfig.from_dict`, :meth:`TrainConfig.
    differences`): the lung window an earlier covseg recorded for 8-bit data, and options added
    since (absent: their defaults), are the same recipe, and so is a lung run at another place
    holding the lung model that the folds of ``out`` record (:func:`~covseg.train.lung_run_found`:
    the folder moved with it); an unreadable one is not."""
    try:
        now = TrainConfig.from_dict(current)
        return not lung_run_found(out, TrainConfig.from_dict(recorded), now).differences(now)
    except (AttributeError, TypeError, ValueError, CovsegError):
        return False


def data_warnings(record: Mapping[str, Any]) -> list[str]:
    """The report line of what loading the data warned of (a record's ``warnings``: MosMed
    slices no fold tests, slices whose patient cannot be told), none without."""
    warned = record.get("warnings") or []
    return [f"- Data warnings ({len(warned)}): " + "; ".join(warned)] if warned else []


def figure_link(alt: str, name: str, plotted: bool) -> list[str]:
    """A report's closing lines: its figure ``name`` in the same folder, where ``plotted``;
    none for a figure not drawn (a link to a missing file)."""
    return [f"![{alt}]({name})", ""] if plotted else []


DEFINED = "slices_defined"
"""Key of a fold's count, per metric, of the slices its mean covers (where it is defined)."""
FOLD_FIELDS = ("fold", "train_cases", "test_cases", "epochs", BEST_SHA256, DEFINED)
"""The keys of a summary's ``per_fold`` entry that are no metric."""


def empty_mask_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """The slices whose HD95 is undefined for an empty mask, by why: a lesion the model
    predicted nothing on (truth non-empty: sensitivity defined; prediction empty: precision
    undefined), or a lesion predicted on a slice without one; and the slices with a lesion.
    A model that misses lesions gets no HD95 for them, so its HD95 mean looks better."""
    truth = [not math.isnan(row["sensitivity"]) for row in rows]
    predicted = [not math.isnan(row["precision"]) for row in rows]
    return {"lesion_slices": sum(truth),
            "lesion_slices_predicted_empty": sum(t and not p for t, p in zip(truth, predicted)),
            "empty_slices_predicted_lesion": sum(p and not t for t, p in zip(truth, predicted))}


def _fold_means(stats: dict[str, dict[str, float]], data: LoadedData) -> dict[str, float]:
    """A fold's mean of every metric (``stats``: :func:`summarize` of its rows); the report's
    metrics are NaN (undefined) in a fold that tested no slices, so that the summary and the
    report never lack them (HD95 per unit where ``data`` has both: :func:`hd95_by_unit`)."""
    split = hd95_slices_by_unit(data)
    metrics = [m for m in REPORT_METRICS if not (split and m == "hd95")]
    return dict.fromkeys([*metrics, *(HD95_UNITS if split else ())], math.nan) | {
        metric: metric_stats["mean"] for metric, metric_stats in stats.items()}


def _fold_training(fold_dir: Path) -> tuple[float, int, str | None]:
    """Training time the fold's run recorded (which, unlike wall time, survives resumes), the
    epochs it trained (the default schedule depends on the number of slices) and the SHA-256
    of its best.pt as training wrote it (None in a record before it was recorded), read, not
    hashed again."""
    return read_fold_record(fold_dir / "metrics.json", lambda metrics: (
        float(metrics["train_seconds"]), int(metrics["epochs"]), metrics.get(BEST_SHA256)))


def _whole_set(data: LoadedData, splits: Sequence[tuple[list[str], list[str]]]) -> str:
    """The data fingerprint of every slice the folds trained and tested on (each fold's, as its
    fold_metrics.json records it, where the folds cover the same slices: taken once then)."""
    return data_fingerprint(data, {case for fit, test in splits for case in (*fit, *test)},
                            quiet=False)


def _title(config: TrainConfig, data: LoadedData) -> str:
    return f"{config.model} on {data.named}, per-case Dice"


def _dice_groups(config: TrainConfig, rows: list[dict[str, Any]],
                 per_fold: list[dict[str, Any]], repeats: int = 1) -> dict[str, list[float]]:
    """dice_boxplot.png's boxes: each fold's per-case Dice and all folds' together (each slice
    once: :func:`slice_mean_rows`); for a multi-class or lung target those named as what they
    score (:func:`~covseg.evaluate.target_scored`), in the style of evaluate's boxes
    (:func:`~covseg.evaluate.drawn_name`: "Dice, any lesion, fold 0", "Dice, lungs, all"), a
    multi-class target's then each lesion class's over all folds (per_case.csv holds them: the
    plot showed any lesion's alone, "Dice, ground-glass, all")."""
    cases = slice_mean_rows(rows, repeats)
    dice = {f"fold {fold['fold']}": [row["dice"] for row in rows if row["fold"] == fold["fold"]]
            for fold in per_fold} | {"all": [row["dice"] for row in cases]}
    scored = target_scored(config.target)
    if not scored:
        return dice
    merged = drawn_name("Dice", scored)
    return ({f"{merged}, {name}": values for name, values in dice.items()}
            | {f"{drawn_name('Dice', name)}, all": values
               for name, values in lesion_class_dice(cases).items()})


def slice_mean_rows(rows: list[dict[str, Any]], repeats: int) -> list[dict[str, Any]]:
    """Per-case ``rows`` of every fold, each slice once: as they are unrepeated; with
    ``repeats`` > 1, where each slice is tested once per repeat, its mean of every metric over
    its tests where defined (NaN where defined in none), without their ``fold``: counted r
    times, a slice's figures were pooled as r slices'. For pooled values alone: a mean row's
    metric is defined where any test's is, so what a metric covers and the empty masks are
    counted over the tests (:func:`_summary`)."""
    if repeats == 1:
        return rows
    by_case: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_case.setdefault(row["case_id"], []).append(row)
    return [_mean_row(tests) for tests in by_case.values()]


def _mean_row(tests: list[dict[str, Any]]) -> dict[str, Any]:
    """One slice's per-case ``tests`` (one per repeat) as one row: each number its mean over
    the tests that define it, the rest (its case id) as the first test has it."""
    row = {key: value for key, value in tests[0].items() if key != "fold"}
    for key, value in row.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = np.array([test[key] for test in tests], dtype=float)
            defined = values[~np.isnan(values)]
            row[key] = float(defined.mean()) if defined.size else math.nan
    return row


def _command_record(config: TrainConfig, data: LoadedData, begun: Begun, out: Path
                    ) -> dict[str, Any]:
    """What a cross-validation's records (summary.json, :data:`STOPPED_FILE`) say of the
    command writing them (``begun``): its start and provenance (as a run's config.json has
    them), the folds' thread count (:func:`_folds_threads`), end, wall-clock ``seconds`` and
    recipe, holding the count of folds and repeats as ``cross_validate``'s ``folds`` and
    ``repeats`` take them, so that the recipe given back to it (``**record["config"]``) runs
    these folds, not the default count (a stopped run's record lacked it)."""
    folds = len(begun.saved)
    return {"started_utc": begun.utc, **provenance(data_path=data.root),
            THREADS: _folds_threads(out, folds), "finished_utc": utc_now(),
            "config": {**config.record(data.windowed), FOLDS: folds // begun.repeats,
                       **repeats_record(begun.repeats)},
            "seconds": time.perf_counter() - begun.clock}


THREADS = "threads"
"""Key of the thread count a record's folds trained under (see :func:`_folds_threads`)."""


def _folds_threads(out: Path, folds: int) -> int | list[int | None] | None:
    """The thread count the ``folds`` folds of ``out`` trained under, as each fold's
    config.json records it: on Ray a fold trains in a Ray worker, whose count Ray sets, not the
    command's. One count where the folds that record one agree, else one per fold (null: none
    recorded, or not started); null where none does."""
    counts: list[int | None] = []
    for k in range(folds):
        counts.append((read_record(out / f"fold_{k}" / "config.json") or {}).get(THREADS))
    known = set(counts) - {None}
    return known.pop() if len(known) == 1 else list(counts) if known else None


def _summary(config: TrainConfig, data: LoadedData, out: Path, how: str,
             per_fold: list[dict[str, Any]], rows: list[dict[str, Any]], begun: Begun,
             train_seconds: float, fingerprint: str, cv_notes: Sequence[str] = ()
             ) -> dict[str, Any]:
    """The summary; ``cv_notes``: the recipe's and folds' warnings (:func:`warned_cv_notes`),
    after the data's own; ``fingerprint``: the folds' slices' (:func:`_whole_set`). Its recipe
    holds the count of folds and repeats (:func:`_command_record`); its pooled figures are over
    the slices, each once (:func:`slice_mean_rows`: repeated, its mean over its tests), while
    what each metric covers (``cases``, ``cases_undefined``) and the empty masks are counted
    over every test (a repeated run's slice r times): of a slice's means, a lesion missed in
    some repeats counted as neither missed nor left out of HD95."""
    command = _command_record(config, data, begun, out)
    metric_keys = [k for k in dict.fromkeys(key for fold in per_fold for key in fold)
                   if k not in FOLD_FIELDS]
    pooled = summarize(slice_mean_rows(rows, begun.repeats))
    counted = summarize(rows) if begun.repeats > 1 else pooled  # unrepeated: the same rows
    across = {}
    for key in metric_keys:
        values = np.array([f.get(key, math.nan) for f in per_fold], dtype=float)
        values = values[~np.isnan(values)]
        covered = counted.get(key, {"n": 0, "undefined": len(rows)})
        across[key] = {"mean": float(values.mean()) if values.size else math.nan,
                       "std": sample_std(values),
                       "n": int(values.size),
                       "cases": covered["n"], "cases_undefined": covered["undefined"]}
    return {
        **command, "data": data.describe(), DATA_FINGERPRINT: fingerprint,
        "classes": class_labels(data.target, data.num_classes),
        "synthetic": data.synthetic, "folds": how,
        "train_seconds": train_seconds,
        "per_fold": per_fold,
        "mean_std_over_folds": across, "pooled_per_case": pooled,
        "empty_mask_counts": empty_mask_counts(rows) if rows else {},
        **metric_notes(),
        "hd95_unit": data.hd95_unit, "hd95_slices_by_unit": hd95_slices_by_unit(data),
        "warnings": [*data.notes, *cv_notes],
    }


UNDEFINED = "–"
"""How reports show a metric that is undefined (see EMPTY_MASK_RULES), instead of nan."""
UNDEFINED_NOTE = (f"{UNDEFINED}: undefined in that fold (or in every fold); a mean over fewer "
                  "folds than were run says over how many, and has no ± from a single fold. "
                  "± is the sample standard deviation over folds; a fold's value is the mean "
                  "over its slices where the metric is defined, and where that leaves slices "
                  "out it says how many it covers, e.g. `0.000 (6 of 16)`, as the mean over "
                  "folds says of all slices (`(6 of 48 slices)`).")


def shown(value: float | None) -> str:
    """A metric to three decimals, or :data:`UNDEFINED` where it is NaN or missing."""
    return UNDEFINED if value is None or math.isnan(value) else f"{value:.3f}"


def duration_text(seconds: float) -> str:
    """Seconds as '2.7 s' under a minute, else '1.5 min': a short run's cost read '0.0 min'."""
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def mean_over_folds(stats: dict[str, float], folds: int, repeats: int = 1) -> str:
    """``mean ± std`` of a metric over ``folds`` folds (all k·r of ``repeats``); where it is
    undefined in some folds, over how many it is taken, with no spread from a single fold;
    :data:`UNDEFINED` in none. Where it leaves out slices, how many it covers
    (:func:`tested`)."""
    count = stats["n"]
    text = shown(stats["mean"])
    if count >= 2:
        text += f" ± {stats['std']:.3f}"
    notes = [f"{count} of {folds} folds"] if 0 < count < folds else []
    if count and stats.get("cases_undefined"):  # HD95 of a model that misses lesions
        total = int(stats["cases"] + stats["cases_undefined"])
        notes.append(f"{stats['cases']} of {total} {tested(total, repeats)}")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def tested(total: int, repeats: int) -> str:
    """What a count of ``total`` per-slice tests counts, in words: "slices"; in a run of
    ``repeats`` > 1, which tests each slice once per repeat and counts a metric's cover and
    the empty masks over every test (:func:`_summary`), "tests of 52 slices × 3"; "tests"
    alone where ``total`` is no multiple of ``repeats`` (no count of this build's: it counts
    every test, each slice tested once per repeat)."""
    whole = repeats > 1 and total % repeats == 0
    slices = f" of {total // repeats} slices × {repeats}" if whole else ""
    return tested_unit(repeats) + slices


def tested_unit(repeats: int) -> str:
    """What the counts over a run's per-slice tests count: "slices", or "tests" where
    ``repeats`` > 1 test each slice once per repeat."""
    return "slices" if repeats == 1 else "tests"


def _fold_cell(fold: Mapping[str, Any], key: str) -> str:
    """A fold's mean of ``key``, with how many of its slices it covers where it leaves some
    out (undefined there: see EMPTY_MASK_RULES)."""
    text = shown(fold.get(key))
    defined = fold.get(DEFINED, {}).get(key)
    if defined and defined < fold["test_cases"]:
        text += f" ({defined} of {fold['test_cases']})"
    return text


def hd95_undefined_line(summary: Mapping[str, Any]) -> list[str]:
    """The report line saying on how many slices HD95 is undefined, and why (a lesion the
    model predicted nothing on, a lesion predicted on a slice without one), none where it is
    defined on every slice; of a repeated run, on how many of its tests (:func:`tested`)."""
    cases, total = hd95_cover(summary["mean_std_over_folds"])
    counts = summary.get("empty_mask_counts")
    if cases == total or not counts:
        return []
    repeats = summary["config"].get(REPEATS, 1)
    line = (f"- HD95 is undefined, and left out of its means, on {total - cases} of "
            f"{total} {tested(total, repeats)}: {counts['lesion_slices_predicted_empty']} of "
            f"the {counts['lesion_slices']} {tested_unit(repeats)} with a "
            "lesion, on which the model predicted nothing (missed lesions, no HD95 penalty), "
            "and "
            f"{counts['empty_slices_predicted_lesion']} without a lesion, on which it "
            "predicted some")
    return [line]


def _column(key: str, summary: Mapping[str, Any]) -> str:
    """A report column's name: the metric's key, HD95 with its unit as ``hd95 (mm)``."""
    return f"hd95 ({hd95_unit(key, summary)})" if key in ("hd95", *HD95_UNITS) else key


def class_dice(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The per-class Dice (``ground-glass_dice``, ...) of a multi-class cross-validation's
    ``mean_std_over_folds``, which its report lists beside the Dice of any lesion; empty for
    a binary target."""
    return {key: value for key, value in stats.items() if key.endswith("_dice")}


def _run_time_line(summary: Mapping[str, Any]) -> str:
    """The report's run time: the wall-clock seconds of the command, or of the commands that
    trained folds where resumes followed (:func:`_continued`), and the training time. A resume
    whose record says it trained no fold is named apart: its seconds are not in the time (one
    killed or stopped records nothing there, and its seconds are)."""
    resumes = summary.get(RESUMED_BY, [])
    idle = sum(1 for entry in resumes if entry.get("trained_folds") is False)
    trained = len(resumes) - idle
    wall = ("in this invocation" if not resumes else
            "over the command that started it"
            + (f" and the {counted(trained, 'resume')} that trained folds" if trained else "")
            + (f" ({counted(idle, 'resume')} that trained none left out)" if idle else ""))
    return (f"- Run time: {duration_text(summary['seconds'])} {wall}; training "
            f"{duration_text(summary['train_seconds'])} summed over folds (kept across resumes)")


def report_markdown(summary: dict[str, Any], plotted: bool) -> str:
    """The cross-validation table as Markdown, with its box plot where ``plotted`` (one not
    drawn, :func:`~covseg.viz.drawn`, was linked as a missing file)."""
    keys = [k for k in (*REPORT_METRICS, *HD95_UNITS) if k in summary["mean_std_over_folds"]]
    extra = [k for k in summary["mean_std_over_folds"] if k not in keys]
    multiclass = summary["config"].get("target") == "multiclass"
    folds, repeats = len(summary["per_fold"]), summary["config"].get(REPEATS, 1)
    one = per_repeat(summary["per_fold"], repeats)  # a repeat's folds: a fold model's share
    lines = [
        f"# Cross-validation: {summary['config']['model']}",
        "",
        *([("**SYNTHETIC data** (covseg's built-in generator): figures say nothing about real "
            "CT."), ""] if summary["synthetic"] else []),
        f"- Data: {summary['data']}",
        f"- Folds: {summary['folds']}",
        *repeated_line(summary["config"], folds),
        _run_time_line(summary),
        f"- Recipe: `{summary['config']}`",
        f"- Epochs trained per fold: {', '.join(str(f['epochs']) for f in summary['per_fold'])}",
        *data_warnings(summary),
        *hd95_units_line(summary.get("hd95_slices_by_unit", {})),
        "",
        "| fold | test slices | "
        + " | ".join(any_lesion(_column(k, summary), multiclass) for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for fold in summary["per_fold"]:
        lines.append(f"| {fold['fold']} | {fold['test_cases']} | "
                     + " | ".join(_fold_cell(fold, k) for k in keys) + " |")
    across = summary["mean_std_over_folds"]
    lines.append("| **mean ± std** | | " + " | ".join(
        f"**{mean_over_folds(across[k], folds, repeats)}**" for k in keys) + " |")
    if extra:
        lines += ["", "Per-class and other metrics (mean ± std over folds):", ""]
        lines += [f"- {k}: {mean_over_folds(across[k], folds, repeats)}" for k in extra]
    hd95 = hd95_undefined_line(summary)
    lines += [*([""] + hd95 if hd95 else []), "", UNDEFINED_NOTE, "",
              f"Empty masks: {summary['empty_mask_rules']}", "",
              *(figure_link("per-case Dice" + (" of any lesion and of each class" if multiclass
                                               else ""), "dice_boxplot.png", plotted) or [""]),
              f"Next step: {final_model_step(*recipe_model(summary['config']), summary, one)}"]
    return "\n".join(lines)


def repeated_line(record: Mapping[str, Any], folds: int) -> list[str]:
    """The report line of a repeated cross-validation (``record``: its recipe, or a comparison,
    holding :data:`REPEATS`; ``folds``: all k·r): what the means and stds run over, and how the
    pooled figures count a slice; none unrepeated."""
    repeats = record.get(REPEATS, 1)
    if repeats == 1:
        return []
    return [(f"- Repeats: every mean ± std over folds is over all {folds} folds; each slice "
             f"is tested once per repeat: the figures pooled over slices (and the box of all "
             f"folds) take its mean over its {repeats} tests, while the slices a mean covers "
             f"and the empty masks are counted over every test")]
