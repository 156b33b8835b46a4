"""The Python API: one function per ``covseg`` subcommand, taking paths like the CLI does, and
:func:`segment` for images held in memory."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Unpack, cast, overload

import nibabel as nib
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from PIL import Image

from covseg._mplconfig import settle_matplotlib_config
from covseg.batch import BatchResult, all_done, check_shard, parse_shard
from covseg.cascade import require_lung_model
from covseg.checkpoint import resume_advised
from covseg.cluster import (
    check_cluster_options,
    default_cpus_per_fold,
    joined,
    run_folds_on_ray,
)
from covseg.compare import (
    check_compare_folder,
    check_spec_seeds,
    check_specs,
    compare_models,
    refuse_gone_spec_weights,
    spec_pins,
)
from covseg.config import (
    ComparedRecipe,
    Int,
    Numbers,
    Real,
    Recipe,
    TrainConfig,
    check_kind,
    check_seed,
    check_threshold,
    check_window,
    python_numbers,
)
from covseg.crossval import (
    begin,
    check_cv_folder,
    check_fold_index,
    checked_cv_folder,
    cross_validate_fold,
    cross_validate_held,
    finished_resume,
    pinned_lungs,
    reads_finished,
    refuse_gone_fold_weights,
    stop_recorded,
    warned_cv_notes,
)
from covseg.crossval import cross_validate as _cross_validate
from covseg.data.fetch import fetch
from covseg.data.layouts import (
    LoadedData,
    class_labels,
    data_fingerprint,
    data_folders,
    fingerprints_kept,
    label_names,
    load_dataset,
)
from covseg.data.splits import check_fold_count, check_repeat_count
from covseg.errors import (
    BatchFailed,
    CovsegError,
    counted,
    read_naming_out_of_memory,
    refuse_special_file,
)
from covseg.evaluate import evaluate_folders, is_covseg_picture
from covseg.export import export_onnx
from covseg.infer import Predictor, output_name, recorded_mask_name
from covseg.io.atomic import (
    output_file,
    output_folder,
    refuse_inside,
    refuse_undecodable_name,
    refuse_unexpanded_home,
    remove_temporaries,
    remove_temporaries_of,
    write_json,
)
from covseg.io.ct import (
    is_volume_file,
    is_volume_named,
    refuse_broken_link,
    refuse_broken_links,
    refuse_further_channels,
)
from covseg.io.dicom import gzipped_dicom_refusal, is_dicom_file, is_dicom_named
from covseg.io.image import (
    CT_SLICES,
    IMAGE_SUFFIXES,
    is_image_file,
    read_image,
    readable_kinds,
    refuse_label_mask,
    refuse_tiny_slice,
    write_png,
)
from covseg.io.itk import segmentation_as_ct
from covseg.io.lock import writing_to
from covseg.io.nifti import (
    analyze_refused,
    is_analyze,
    volume_from_nifti,
)
from covseg.io.quiet import in_forked_child
from covseg.io.volume import (
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    Volume,
    check_hu,
    checked_array,
    detect_volume_intensity,
    is_segmentation,
    volume_from_array,
    volume_from_itk,
)
from covseg.lungs import DEFAULT_LUNG_MARGIN_MM
from covseg.models.profile import model_table
from covseg.models.registry import is_a
from covseg.progress import progress_bar
from covseg.provenance import (
    api_command,
    invoked_as,
    option_given,
    option_name,
    provenance,
    utc_now,
)
from covseg.quantify import multiclass_for, quantify_batch
from covseg.records import (
    CHECKPOINT_SHA256,
    LUNG_GUIDE_SHA256,
    MODEL_SHA256,
    OUTPUT_SHA256,
    PENDING,
    PREDICT_RECORD,
    changed_settings,
    content_hash,
    read_record,
    recorded_path,
    recorded_paths,
    weights_sha256,
)
from covseg.stopping import raise_if_stopped, stops_recorded
from covseg.train import (
    CROSS_VALIDATION,
    DATA_FINGERPRINT,
    callers_generators_kept,
    check_recipe,
    check_train_folder,
    refuse_other_output,
)
from covseg.train import train as _train
from covseg.transforms import (
    intensity_scale,
    normalize_intensity,
    note_scale,
    one_read,
    scale_intensity,
    warn_mixed_scales,
)
from covseg.viz import CLASS_COLOURS, LUNG_COLOURS, is_sample_grid, legend_strip, sample_grid
from covseg.viz import overlay as overlay_image
from covseg.volumes import (
    STUDY_OPTIONS,
    VOLUME_DEFAULTS,
    check_volume_options,
    checkpoint_sha256,
    guide_run,
    masks_in_lungs,
    model_hash,
    predict_batch,
    predict_labels,
    volume_only,
    volume_options_given,
)

log = logging.getLogger(__name__)

Function = TypeVar("Function", bound=Callable[..., Any])


def _public(options: str = "", accepted: Sequence[str] = (), trains: bool = False,
            elsewhere: Callable[[list[str]], tuple[list[str], str]] = lambda given: (given, "")
            ) -> Callable[[Function], Function]:
    """A public function whose call with a keyword it does not take, or without one it needs,
    is a one-line :class:`CovsegError` naming what it takes (Python's TypeError is a traceback
    naming nothing). ``elsewhere``: of the keywords it does not take, those no function takes
    (named unknown) and its refusal of the others (options another function takes), in the
    same line. ``accepted``: what its ``**options`` take, shown as ``options``.
    ``trains``: it trains, so it is refused while another training runs in this process, and
    gives back the global random generators it reseeds (:func:`_trained_alone`).
    Matplotlib's folder is settled first, as by the CLI: monai, which most functions import,
    imports matplotlib with itself, whose want of a folder is then a
    :class:`~covseg.errors.NoWritableFolder`, not matplotlib's OSError.
    Ctrl-C (a notebook's Interrupt) is recorded as the CLI records it
    (:func:`~covseg.stopping.stops_recorded`) and raised again at the end if Python dropped it
    (batches and training also raise it between studies and epochs): landing in a finaliser
    (matplotlib's weakref callbacks as a montage is drawn) it was printed as "Exception ignored"
    and the call ran on to return success. Ctrl-C only: SIGTERM and SIGHUP keep the handlers the
    caller set (a host application's own shutdown), or their default, killing the process."""
    def decorate(function: Function) -> Function:
        signature = inspect.signature(function)
        own = [name for name, parameter in signature.parameters.items()
               if parameter.kind is not parameter.VAR_KEYWORD]

        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            not_taken = sorted(set(kwargs) - set(own) - set(accepted))
            if not_taken:
                unknown, refusal = elsewhere(not_taken)
                told = (f"unknown option(s) {', '.join(unknown)}; {function.__name__} takes "
                        f"{_taken(own, options, accepted)}" if unknown else "")
                raise CovsegError("; ".join(text for text in (told, refusal) if text))
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise CovsegError(f"{function.__name__}: {exc}") from None
            _refuse_empty(signature, bound.arguments)
            settle_matplotlib_config()  # monai imports matplotlib with itself: one-line refusal
            alone = _trained_alone(function.__name__) if trains else nullcontext()
            with alone, stops_recorded((signal.SIGINT,)), invoked_as(
                    api_command(function.__name__)):
                # numpy's numbers as Python's
                result = function(*map(python_numbers, args), **python_numbers(kwargs))
                raise_if_stopped()  # a Ctrl-C that Python dropped in a finaliser
                return result
        return cast(Function, checked)
    return decorate


_TRAINING = threading.RLock()
"""Held by the training call running in this process (:func:`_trained_alone`); an RLock, so
that a call nested in it in its own thread is part of it, not another training. A child
process forked meanwhile gets its own, free (:func:`_training_lock_renewed`)."""


@in_forked_child
def _training_lock_renewed() -> None:
    """A forked child's own :data:`_TRAINING`, free: it inherited the parent's held by a
    thread not in the child (a ``multiprocessing`` "fork" process, a ProcessPoolExecutor's, as
    another thread trained), and its every training was refused as one running in another
    thread, where the refusal advises separate processes."""
    global _TRAINING
    _TRAINING = threading.RLock()


@contextmanager
def _trained_alone(name: str) -> Iterator[None]:
    """Run the training call ``name`` as the only one in this process, and give the global
    ``random``, ``numpy.random`` and torch generators back as they were when it ends
    (:func:`callers_generators_kept`). Training reseeds them every epoch: two trainings in
    threads of one process drew from each other's seeds, and the first to end gave the
    generators back under the other, so each got other weights than alone, without a word. A
    second one is refused at once rather than queued, since a thread waiting in silence looks
    hung."""
    lock = _TRAINING  # the one taken is let go, in a child forked inside the block too
    if not lock.acquire(blocking=False):
        raise CovsegError(
            f"{name}: another covseg training (train, cross_validate, compare or demo) is "
            "running in another thread of this process, and trainings reseed the process's "
            "random generators every epoch, so two at once get other weights than each alone; "
            "run them one after the other, or in separate processes")
    try:
        with callers_generators_kept():
            yield
    finally:
        lock.release()


@overload
def _as_python(value: Int) -> int: ...
@overload
def _as_python(value: float | np.floating[Any]) -> float: ...
@overload
def _as_python(value: Numbers) -> Sequence[float]: ...
@overload
def _as_python(value: None) -> None: ...
def _as_python(value: object) -> object:
    """A public function's number (or numbers) as its body has it: :func:`_public` read numpy's
    as Python's before the body ran, which the type checker cannot see."""
    return value


def _refuse_empty(signature: inspect.Signature, arguments: dict[str, Any]) -> None:
    """Refuse an empty str given for any argument, before anything runs, as the CLI refuses
    ``--out ""``: an empty path is the current folder (``load_dataset("")`` read it, ``train("",
    out)`` was told its out lay in the data folder ""), and no name or value covseg takes is
    empty (``lung_guide=""`` and ``model_options={"weights": ""}`` failed on the cwd)."""
    for name, value in arguments.items():
        parameter = signature.parameters[name]
        given = value.items() if parameter.kind is parameter.VAR_KEYWORD else [(name, value)]
        for shown, item in given:
            empty = _empty_in(shown, item)
            if empty and "PathLike" in str(parameter.annotation):
                raise _empty_path(empty)
            if empty:
                raise CovsegError(f"{empty} is empty; give it a value (for a path, \".\" is the "
                                  "current folder)")


def _empty_in(name: str, value: object) -> str | None:
    """``name``, or that of its item (``inputs[1]``, ``model_options['weights']``), where it is
    an empty str; else None."""
    if isinstance(value, str):
        return name if not value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    return next((f"{name}[{key!r}]" for key, item in items
                 if isinstance(item, str) and not item), None)


def _empty_path(name: str) -> CovsegError:
    """The refusal of an empty path given as ``name``: ``Path("")`` is the current folder."""
    return CovsegError(f"{name} is empty; give a path (\".\" for the current folder)")


def _taken(own: Sequence[str], options: str, accepted: Sequence[str]) -> str:
    """What a public function takes, for its unknown-option error: its own arguments and the
    ``accepted`` ``options``, or "no options" (``models()``)."""
    taken = [", ".join(own)] if own else []
    if accepted:
        taken.append(f"{options} {', '.join(accepted)}")
    return " and ".join(taken) or "no options"


RECIPE = tuple(TrainConfig.__dataclass_fields__)
"""The training options that :func:`train`, :func:`cross_validate` and :func:`compare` take as
``**config``."""

load_dataset = _public()(load_dataset)  # covseg.load_dataset, checked as the functions below

DATA_ARGUMENT = "a data folder (str or pathlib.Path) or a covseg.load_dataset result"


def _recipe(config: Mapping[str, Any], resume: bool, data: object, folds: int | None = None,
            seed_room: bool = True, repeats: int = 1) -> TrainConfig:
    """The training config, its models, options and fold count (and ``repeats``) checked
    before data are read (the seed's room for the k·r folds too: without a count, once the
    folds are read; without ``seed_room``, by the caller, whose models are not the config's);
    with data already read, the recipe reads them as they were read (see :func:`_reading`)."""
    check_kind("resume", resume, [bool])
    recipe = TrainConfig(**_reading(data, config))
    _check_folds(folds, repeats)
    check_recipe(recipe, _fold_total(folds, repeats) or 1 if seed_room else None, resume)
    if config.get("frame_lungs") is True and not recipe.frame_lungs:  # given, not the default
        never = (option_given("target", "lung") if recipe.target == "lung"
                 else option_name("lung_guide"))
        frame = option_name("frame_lungs")
        raise CovsegError(f"{frame} frames infection models without a lung guide; a "
                          f"{never} model never frames: leave {frame} out")
    return recipe


def _check_folds(folds: int | None, repeats: int = 1) -> None:
    """A fold count given (None: the default, or the data's split files) and the count of
    ``repeats`` are whole numbers covseg takes."""
    if folds is not None:
        check_kind("folds", folds, [int])
        check_fold_count(folds)
    check_kind("repeats", repeats, [int])
    check_repeat_count(repeats)


def _fold_total(folds: int | None, repeats: int) -> int | None:
    """The folds of a cross-validation before its data are read: ``folds`` ``repeats`` times
    (:func:`~covseg.crossval.make_folds`); None where ``folds`` is (the data count them)."""
    return None if folds is None else folds * repeats


def _reading(data: object, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` options with the target, intensity and window that ``data`` read by
    :func:`load_dataset` were read with, where ``given`` leaves them out (a window of None is
    left out); given otherwise, they are refused: the run would record, and predict with, a
    reading it never trained on."""
    if not isinstance(data, LoadedData):
        return dict(given)
    read = data.reading()
    given = {key: value for key, value in given.items() if key != "window" or value is not None}
    differ = [key for key in read if key in given and
              (check_window(given[key]) if key == "window" else given[key]) != read[key]]
    if differ:
        raise CovsegError(
            f"{', '.join(f'{key}={given[key]!r}' for key in differ)}, but the data were read with "
            f"{', '.join(f'{key}={read[key]!r}' for key in differ)}; leave "
            f"{' and '.join(differ)} out to use the data's, or read them again with "
            f"covseg.load_dataset(..., {', '.join(f'{key}=...' for key in differ)})")
    return {**given, **read}


def _load(data: str | os.PathLike[str] | LoadedData, config: TrainConfig) -> LoadedData:
    if isinstance(data, LoadedData):
        return data
    return load_dataset(_path("data", data, DATA_ARGUMENT), config.target, config.intensity,
                        config.window)  # None where not given


def _path(name: str, value: object, what: str = "a path (str or pathlib.Path)"
          ) -> str | os.PathLike[str]:
    """``value`` when it is a path; else a one-line error naming the argument (pathlib's
    TypeError names none). An empty one is refused: ``Path("")`` is the current folder, where
    an ``out=""`` wrote its files unasked."""
    if isinstance(value, str | os.PathLike):
        if not os.fspath(value):
            raise _empty_path(name)
        refuse_unexpanded_home(value)
        return value
    raise CovsegError(f"{name} must be {what}, got {_shown(value)}")


def _shown(value: object) -> str:
    """``value`` as a refusal of its type shows it: a number or None as it is, else its type;
    an array is pointed to :func:`segment`."""
    shown = repr(value) if value is None or isinstance(value, int | float) else (
        f"a value of type {type(value).__name__}")
    hint = "; images held in memory go to covseg.segment" if isinstance(value, np.ndarray) else ""
    return shown + hint


def _paths(name: str, inputs: object) -> list[str | os.PathLike[str]]:
    """``inputs`` as a list of paths (one given alone is a list of one), each checked. An empty
    list (a glob that matched nothing) is refused, as the CLI needs one path at least: it was
    a batch that succeeded with an empty summary. Bytes, a set or a generator are refused as
    neither: bytes were read byte by byte ("got 105"), a set or generator was called no path."""
    if isinstance(inputs, bytes | bytearray) or not isinstance(inputs, os.PathLike | Sequence):
        raise CovsegError(f"{name} must be a path or a list of paths (str or pathlib.Path), got "
                          f"{_shown(inputs)}")
    items = _as_list(inputs)
    if not items:
        raise CovsegError(f"no {name} given: {name} is an empty list (a pattern that matched "
                          "nothing?); give a file or folder at least")
    return [_path(name, item) for item in items]


def _shard(shard: object) -> tuple[int, int]:
    """``shard`` as the CLI's ``"I/N"`` or a pair ``(I, N)``, checked before any study."""
    if isinstance(shard, str):
        return parse_shard(shard)
    if isinstance(shard, tuple | list) and len(shard) == 2 and all(is_a(i, int) for i in shard):
        return check_shard((shard[0], shard[1]))
    raise CovsegError(f"shard must be \"I/N\" or a pair (I, N) of whole numbers, e.g. \"0/4\" "
                      f"or (0, 4), got {shard!r}")


def checked_out(out: object, data: object = None, held: str | None = None) -> Path:
    """The output folder ``out``: a path, with no file in the way of it, outside the data folder
    ``data`` (a folder path, or data read from one) where one is given, and not named as a
    file where it is to hold the files ``held`` says (:func:`refuse_file_out`). ``covseg
    predict`` checks its ``--out`` so too, before its models load."""
    given = _path("out", out)
    if held is not None:
        refuse_file_out(given, held)
    folder = output_folder(given)
    _outside_data(folder, data)
    return folder


OUT_FILE_SUFFIXES = (*NIFTI_SUFFIXES, *ITK_SUFFIXES, *IMAGE_SUFFIXES, ".pt", ".pth", ".ckpt",
                     ".onnx", ".json", ".csv", ".md", ".html")
"""Endings of an ``out`` that names a file, not the folder covseg's ``out`` is: a mask's
(lungmask's habit), a model's or a record's (``train --out model.pt``, ``cv --out
results.json``)."""
VOLUME_MASKS = "masks go to OUT/STUDY/infection.nii.gz (and lungs.nii.gz)"
IMAGE_MASKS = "masks go to OUT/IMAGE.png, one per image"
QUANTIFY_RESULTS = "results go to OUT/STUDY/quantification.json and OUT/summary.csv"
TRAIN_OUT = "the run goes to OUT/best.pt, OUT/config.json and OUT/metrics.json"
CV_OUT = "each fold goes to OUT/fold_K/, the summary to OUT/summary.json and OUT/report.md"
COMPARE_OUT = ("each model's folds go to OUT/MODEL/, the comparison to OUT/comparison.json "
               "and OUT/comparison.md")
DEMO_OUT = "the demo's data go to OUT/synthetic-data/, its cross-validation to OUT/cv/"
"""What the folders of :func:`predict_volumes`, :func:`predict`, :func:`quantify`,
:func:`train`, :func:`cross_validate`, :func:`compare` and :func:`demo` hold, said by
:func:`refuse_file_out`."""


def refuse_file_out(out: str | os.PathLike[str], held: str) -> None:
    """Refuse an ``out`` not yet there that is named as a file (``mask.nii.gz``) where it is a
    folder, saying what it ``held``: the folder was made, named mask.nii.gz/. One given with a
    trailing slash (``res.nii.gz/``) is named as a folder, and taken."""
    given = os.fspath(out)
    if not Path(given).exists() and given.lower().endswith(OUT_FILE_SUFFIXES):
        raise CovsegError(f"{option_given('out', given)}: {option_name('out')} is a folder: "
                          f"{held}; give a folder name")


def _resumable(out: Path, resume: bool) -> Path:
    """``out``, refused with ``resume`` when it does not exist: a mistyped --out with --resume
    (meant to continue a long run) started a new run elsewhere without a word."""
    if resume and not out.exists():
        given = option_given("resume", True)
        raise CovsegError(f"{given}: nothing to resume in {out}, which does not exist; drop "
                          f"{given} to start there, or give the {option_name('out')} of the run "
                          "to continue")
    return out


def _outside_data(out: Path, data: object) -> None:
    """Refuse an ``out`` in the data folder ``data`` reads (:func:`refuse_inside`)."""
    refuse_inside(out, data.root if isinstance(data, LoadedData) else data, "data folder",
                  "whose images and masks it could overwrite")


MAX_GRID_SAMPLES = 100
"""The most slices one visualize grid shows: 50 rows, 18,227 px tall for square slices (1332 px
wide, 24 s, 1.2 GB peak RSS); more made grids that viewers and browsers refuse (72,677 px for
400) and, from about 750, one that PIL can no longer open."""


@_public()
def visualize(data: str | os.PathLike[str] | LoadedData, out: str | os.PathLike[str], n: Int = 8,
              target: str | None = None, seed: Int = 0, intensity: str | None = None,
              window: Numbers | None = None) -> Path:
    """A PNG grid of ``n`` samples (lesion-bearing ones first), image beside image + mask.

    ``target``, ``intensity`` and ``window`` read a data folder as training does (None: the
    defaults, infection, auto and the lung window); data already read by :func:`load_dataset`
    are shown as they were read, and options given otherwise are refused. ``out``'s folder is
    locked while the grid is read and drawn (:func:`~covseg.io.lock.writing_to`): a second grid
    into it meanwhile is refused in one line naming this one's pid.

    Returns the path of the PNG written.
    """
    check_kind("n", n, [int])
    if n < 1:
        raise CovsegError(f"{option_name('n')} must be positive, got {n}")
    if n > MAX_GRID_SAMPLES:
        raise CovsegError(f"{option_name('n')} must be at most {MAX_GRID_SAMPLES} (a grid of 50 "
                          f"rows), got {n}; for other slices draw another grid with another "
                          f"{option_name('seed')}")
    check_seed(seed)
    n, seed = _as_python(n), _as_python(seed)
    out = output_file(_path("out", out), ".png", "PNG grid")
    _outside_data(out, data)
    options = {key: value for key, value in (
        ("target", target), ("intensity", intensity), ("window", window)) if value is not None}
    with writing_to(out.absolute().parent):  # a second grid into it meanwhile: refused
        return _draw_grid(data, out, n, seed, options)


def _draw_grid(data: str | os.PathLike[str] | LoadedData, out: Path, n: int, seed: int,
               options: dict[str, Any]) -> Path:
    """:func:`visualize` once the lock of ``out``'s folder is held, so that the temporary file
    of ``out`` it finds is a killed grid's, never one another grid is writing."""
    _refuse_other_file(out)
    reading = _reading(data, options)
    loaded = (data if isinstance(data, LoadedData)
              else load_dataset(_path("data", data, DATA_ARGUMENT), **reading))
    rng = np.random.default_rng(seed)
    order = sorted(range(len(loaded.samples)),
                   key=lambda i: (not loaded.samples[i].mask.any(), rng.random()))
    chosen = [loaded.samples[i] for i in order[:n]]
    if len(chosen) < n:  # a grid of fewer slices than asked for, said rather than left to notice
        log.warning("%s, but the data hold %s: the grid shows all %d", option_given("n", n),
                    counted(len(chosen), "slice"), len(chosen))
    heading = loaded.describe()
    return sample_grid([s.image for s in chosen], [s.mask for s in chosen],
                       [f"{s.title} ({s.shape[1]}x{s.shape[0]})" for s in chosen],
                       out, heading, label_names=label_names(loaded.target, loaded.num_classes),
                       aspects=[s.aspect for s in chosen],
                       palette=LUNG_COLOURS if loaded.target == "lung" else CLASS_COLOURS)


def _refuse_other_file(out: Path) -> None:
    """Refuse an ``out`` that is a file but no earlier grid; remove the temporary file a grid
    killed with ``kill -9`` left for it. (Never inside the data folder it reads either, which
    :func:`visualize` refuses first: a ``--out masks/x.png`` replaced a truth mask.)"""
    if out.exists() and not is_sample_grid(out):
        raise CovsegError(f"{option_given('out', str(out))}: exists and is no earlier visualize "
                          f"grid; pick another {option_name('out')} or delete it")
    remove_temporaries_of(out)


@_public("the training recipe's", RECIPE, trains=True)
def train(data: str | os.PathLike[str] | LoadedData, out: str | os.PathLike[str],
          resume: bool = False, **config: Unpack[Recipe]) -> dict[str, Any]:
    """Train a model (see :class:`TrainConfig` for the options) into the run folder ``out``.

    ``data``: a data folder, read with the recipe's ``target``, ``intensity`` and ``window``; or
    data already read by :func:`load_dataset`, whose reading the recipe takes where it leaves
    those options out (given otherwise, they are refused: the run would record, and predict
    with, a reading it never trained on).

    Returns the run's metrics, as its ``metrics.json``: epochs, training seconds, and the saved
    model's metrics on the validation slices at their own size when some were held out (an
    ensemble's adds each member's); a finished run that ``resume`` left as it was returns its
    metrics as an :class:`~covseg.train.AlreadyTrained`.
    """
    recipe = _recipe(config, resume, data)
    out = _resumable(checked_out(out, data, TRAIN_OUT), resume)
    pin = check_train_folder(out, resume, recipe)  # before the data are read
    with resume_advised(out):
        return _train(recipe, _load(data, recipe), out, resume=resume, lung_sha256=pin)


@_public("the training recipe's", RECIPE, trains=True)
def cross_validate(data: str | os.PathLike[str] | LoadedData, out: str | os.PathLike[str],
                   folds: Int | None = None, resume: bool = False, fold: Int | None = None,
                   ray: str | None = None, cpus_per_fold: Int | None = None,
                   repeats: Int = 1, **config: Unpack[Recipe]) -> dict[str, Any]:
    """k-fold cross-validation grouped by patient (or the data set's split files).

    ``folds`` None: the data set's own split files where it ships them, else 5 folds; a count
    that differs from the split files' is refused. ``repeats`` > 1: patient-grouped repeated
    k-fold, k·r folds ``fold_0`` .. ``fold_{k·r-1}``, repeat r's folds
    exactly those of the plain cross-validation seeded ``seed + r*k`` (so ``repeats=1`` is the
    plain run, and a finished one is extended with ``resume=True``); refused for data that ship
    split files. ``fold`` then counts all k·r folds.

    ``fold`` runs that fold alone and returns its summary; a later call without it reuses the
    finished folds (``resume=True``) and writes the cross-validation summary. Without
    ``resume``, an ``out`` already holding folds or the summary is refused, as :func:`train`
    refuses a run's folder; with ``fold``, only that fold's folder counts, so that folds run
    side by side (one process each) into one ``out``. ``data`` as in :func:`train`.

    ``ray`` runs the folds as Ray tasks (``"local"``: Ray started on this machine; else
    a cluster address as ``ray.init`` takes it, e.g. ``"auto"``), ``cpus_per_fold`` CPUs each
    (default: one per network the recipe trains), then writes the summary from them: ``out``
    must be a folder every node sees at the same path (see :mod:`covseg.cluster`).

    Returns the summary, as ``summary.json``: each fold's mean metrics (``per_fold``), their
    mean and std over folds (``mean_std_over_folds``), the metrics pooled over every test
    slice and the recipe; with ``fold``, ``{"fold", "test_cases", "summary", "best_sha256"}`` of
    that fold (``best_sha256`` as its fold_metrics.json records it). A finished
    cross-validation that ``resume`` left as it was returns its summary as an
    :class:`~covseg.train.AlreadyTrained`.
    """
    folds, fold, cpus_per_fold = _as_python(folds), _as_python(fold), _as_python(cpus_per_fold)
    repeats = _as_python(repeats)
    recipe = _recipe(config, resume, data, folds, repeats=repeats)
    total = _fold_total(folds, repeats)
    out = _resumable(checked_out(out, data, CV_OUT), resume)
    refuse_other_output(out, CROSS_VALIDATION)
    if fold is not None:
        check_kind("fold", fold, [int])
        check_fold_index(fold, folds, repeats=repeats, out=out)  # before the data are read
        if ray is not None:
            raise CovsegError(f"{option_name('fold')} runs one fold here and "
                              f"{option_name('ray')} runs every fold on Ray; give one of them")
    if ray is None and cpus_per_fold is not None:  # with fold too: it runs no Ray task
        raise CovsegError(f"{option_name('cpus_per_fold')} sizes the Ray tasks of "
                          f"{option_name('ray')}; give {option_name('ray')} too")
    check_cv_folder(out, resume, fold)  # before Ray is joined or the data are read
    refuse_gone_fold_weights(recipe, out, total, None if fold is None else [fold])
    # before Ray starts or anything in out changes; None: worked out again once the data count
    # the folds (or nothing trains)
    pin = pinned_lungs(recipe, out, total, None if fold is None else [fold])
    with resume_advised(out):
        if fold is not None:
            return cross_validate_fold(recipe, _load(data, recipe), out, folds, fold, resume,
                                       lung_sha256=pin, repeats=repeats)
        if ray is None:
            return _cross_validate(recipe, _load(data, recipe), out, folds, resume,
                                   lung_sha256=pin, repeats=repeats)
        check_cluster_options(ray, cpus_per_fold)
        started, started_utc = time.perf_counter(), utc_now()
        cpus = cpus_per_fold or default_cpus_per_fold(recipe)
        with fingerprints_kept():  # the set fingerprinted once
            # a finished run's resume runs nothing on Ray and starts none, judged before the
            # lock as a run here judges it (where the data's split files make it unfinished
            # after all, its folds join Ray as they start)
            finished = resume and reads_finished(out, folds, repeats)
            loaded = _load(data, recipe) if finished else None
            done = (None if loaded is None else
                    finished_resume(recipe, loaded, out, folds, repeats=repeats))
            if done is not None:
                return done
            # held from the folds to the summary, as a run here holds it
            with writing_to(out):
                # joined before the data are read: a refusal takes seconds
                with nullcontext() if finished else joined(ray, cpus):
                    if loaded is None:
                        loaded = _load(data, recipe)
                    # before fold 0 trains (its seed, not at fold 1): a refusal is no stopped run
                    (splits, _), weights = checked_cv_folder(recipe, loaded, out, folds, resume,
                                                             repeats=repeats)
                    # timed as a run here: whether it trains is known before its folds run on Ray
                    begun = begin(out, len(splits), resume, started, started_utc, repeats)
                    cv_notes = None
                    if pin is None:  # as a run here pins it
                        pin = pinned_lungs(recipe, out, len(splits))
                    if begun.trains:  # else none runs on Ray: the summary is written, or finished
                        cv_notes = warned_cv_notes(recipe, loaded, splits)  # once, for every fold
                        with stop_recorded(recipe, loaded, out, begun):
                            run_folds_on_ray(recipe, loaded, out, folds, resume, ray, cpus,
                                             weights, cv_notes.recipe, pin, repeats)
                return cross_validate_held(recipe, loaded, out, folds, resume=True, begun=begun,
                                           cv_notes=cv_notes, weights=weights, lung_sha256=pin,
                                           repeats=repeats)


@_public("the training recipe's", RECIPE, trains=True)
def compare(data: str | os.PathLike[str] | LoadedData, models: Sequence[str] | str,
            out: str | os.PathLike[str], folds: Int | None = None, resume: bool = False,
            repeats: Int = 1, **config: Unpack[ComparedRecipe]) -> dict[str, Any]:
    """Cross-validate ``models`` (first = baseline) on identical folds, with paired tests; one
    name given alone is a list of one (and refused: a comparison needs two). ``data`` as in
    :func:`train`.

    Returns the comparison, as ``comparison.json``: per model (``models``) its metrics over the
    folds (with a multi-class target each class's Dice too, ``ground-glass_dice``...), its cost
    (parameters, GFLOPs, CPU ms per slice) and, but for the baseline, the paired Wilcoxon test
    of its per-case Dice against the baseline's (``wilcoxon_vs_baseline``) and the corrected
    resampled t-test of its per-fold mean differences (``corrected_t_vs_baseline``), whose
    ``verdict`` ("better", "worse" or "no difference shown") rests on that t-test alone, as it
    includes training variation; ``fold_source``: how the folds were made (the
    split files of each fold), as cv's ``summary.json`` says it; and ``left_out``: the models of
    an earlier comparison in ``out`` (a ``resume`` with another list) that this one does not
    report, whose folders stay, also logged as a warning. A finished comparison that ``resume``
    left as it was returns its comparison.json as an :class:`~covseg.train.AlreadyTrained`.
    Each model's options go in its spec (``"unet:width=8"``): ``model=`` and ``model_options=``
    are refused, as the CLI's compare has no ``--model`` or ``--model-option`` (they were
    dropped, or checked against a model never trained). ``repeats``: repeated k-fold, as
    :func:`cross_validate` takes it; the fold test then runs over all k·r folds (Bouckaert and
    Frank's corrected repeated k-fold t-test) and the Wilcoxon pairs each case's (patient's)
    mean Dice over its repeats, once.
    """
    for key in ("model", "model_options"):
        if key in config:
            raise CovsegError(f"compare takes each model's name and options in models (e.g. "
                              f"['unet', 'unet:width=8']), not {key}=")
    recipe = _recipe(config, resume, data, seed_room=False)  # its model is none compared
    folds, repeats = _as_python(folds), _as_python(repeats)
    _check_folds(folds, repeats)
    total = _fold_total(folds, repeats)
    if not isinstance(models, str | Sequence):
        raise CovsegError(f"models must be a list of model specs, e.g. ['unet', "
                          f"'unet:width=8'] (the baseline first), got {models!r}")
    specs = [str(spec).strip() for spec in _as_list(models)]  # " unet" names unet and its folder
    check_specs(specs, recipe.size, resume)
    if total is not None:  # else once the folds are read
        check_spec_seeds(recipe, specs, total)
    out = _resumable(checked_out(out, data, COMPARE_OUT), resume)
    check_compare_folder(out, specs, resume)  # before the data are read
    refuse_gone_spec_weights(recipe, specs, out, total)
    pins = spec_pins(recipe, specs, out, total)
    with resume_advised(out):
        return compare_models(recipe, _load(data, recipe), specs, out, folds, resume, pins,
                              repeats)


def collect_inputs(inputs: Sequence[str | os.PathLike[str]],
                   own_masks: Collection[Path] = ()) -> list[Path]:
    """Files as given, and the image files inside any folder given but ``own_masks`` (resolved
    paths of the masks covseg predicted into that folder: see :func:`_own_masks`), each once
    (:func:`_once`); a name that is not valid UTF-8 is refused, as CT predict refuses it, and
    an nnU-Net images folder of several channels per case, as training refuses it."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.iterdir() if is_image_file(p))
            found = [p for p in images if not own_masks or p.resolve() not in own_masks]
            analyze = sorted(p for p in item.iterdir() if is_analyze(p))
            if not found and analyze:
                raise analyze_refused(analyze[0])
            if not found:
                raise _nothing_to_read(item, bool(images))
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            refuse_special_file(item, "an image file or a folder of them")
            raise CovsegError(f"{item}: no such file or folder")
    if not files:
        raise CovsegError("no input images given")
    refuse_further_channels(files)
    recorded = recorded_paths(files)
    for name in recorded:  # the record names them
        refuse_undecodable_name(Path(name))
    return _once(files, recorded)


def _once(files: Sequence[Path], recorded: Sequence[str]) -> list[Path]:
    """``files`` without the repeats of a file given twice under its own name (a folder and a
    file in it, ``x`` and ``./x``), by its ``recorded`` path (:func:`recorded_paths`): it was
    refused as two inputs writing one mask, to be predicted into separate folders. Two links to
    one stored file (git-annex's, DVC's) stay two inputs, as two CT studies do."""
    kept: dict[str, Path] = {}
    for path, key in zip(files, recorded, strict=True):
        kept.setdefault(key, path)
    return list(kept.values())


def _nothing_to_read(folder: Path, own_masks: bool) -> CovsegError:
    """The error for a folder holding no input (or only the masks covseg predicted into it):
    gzip-compressed DICOM slices are named as such, else every kind of input covseg reads."""
    gzipped = gzipped_dicom_refusal(folder, folder.iterdir())  # the top level, as listed
    if gzipped:
        return gzipped
    masks = " but the masks covseg predicted into it" if own_masks else ""
    return CovsegError(f"{folder}: no images or CT volumes in this folder{masks}; give "
                       f"{readable_kinds()}")


def _other_kind(inputs: Sequence[str], named: tuple[str, str], function: str) -> CovsegError:
    """The error for ``inputs`` that ``function`` predicts instead, ``named`` (one, many): one
    file is one image or volume, more inputs or a folder many ("x.png: 2D images ... predict
    them" named one image as several)."""
    one = len(inputs) == 1 and Path(inputs[0]).is_file()
    return CovsegError(f"{', '.join(inputs)}: {named[0] if one else named[1]}; predict "
                       f"{'it' if one else 'them'} with {function}")


@dataclass(frozen=True)
class _Planned:
    """The inputs of a 2D predict call and their masks in ``out``, each resolved once for the
    checks before any image is read (:func:`_refuse_unrecorded_masks`, :func:`_check_outputs`)."""

    files: Sequence[Path]
    masks: list[Path]
    """Each file's mask as spelled in ``out``, in the order of ``files``."""
    targets: list[Path]
    """Each mask resolved."""
    inputs: set[Path]
    """The files resolved."""

    @classmethod
    def of(cls, files: Sequence[Path], out: Path) -> _Planned:
        """The masks of ``files`` predicted into ``out``."""
        masks = [out / output_name(path) for path in files]
        return cls(files, masks, [mask.resolve() for mask in masks],
                   {path.resolve() for path in files})


def _check_outputs(planned: _Planned, out: Path, earlier: dict[str, Any]) -> None:
    """Refuse what would lose data: two inputs writing one mask, in this call or over the mask
    of another file an earlier call (its ``predict.json``, ``earlier``) predicted into ``out``
    or failed on (the mask then taken for that failure's), or a mask over an input. Masks are
    compared ignoring case, as macOS and Windows disks do (``Scan.png`` and ``scan.png`` wrote
    one mask there, the second over the first)."""
    targets: dict[Path, Path] = {}
    folded: dict[str, Path] = {}  # each target by its path in lower case (letter by letter,
    # as those disks fold it: straße.png and strasse.png are two files there)
    for path, target in zip(planned.files, planned.targets, strict=True):
        first = folded.setdefault(str(target).lower(), target)
        if first in targets:
            raise CovsegError(f"{targets[first]} and {path} would both be written to {first}"
                              f"{_case_only(first, target)}; predict them into separate "
                              f"{option_name('out')} folders")
        targets[target] = path
    failed = _earlier(earlier, "failed", {})
    for before in map(Path, _earlier_inputs(earlier)):  # absolute, or relative in old records
        mask = (out / output_name(before)).resolve()
        ours = folded.get(str(mask).lower())
        if ours is not None and before.is_file() and not _one_input(before, targets[ours]):
            clash = (f"be taken for that of {before}{_case_only(mask, ours)}, which an "
                     f"earlier predict into {out} failed on (evaluate scores it as an empty "
                     "prediction)" if str(before) in failed else
                     f"overwrite that of {before}{_case_only(mask, ours)}, which an earlier "
                     f"predict wrote into {out}")
            raise CovsegError(f"{targets[ours]}: its mask would {clash}; pick another "
                              f"{option_name('out')}")
    for target, path in targets.items():
        if target in planned.inputs:
            raise CovsegError(f"{target}: its mask would overwrite the input {path}; "
                              f"pick another {option_name('out')}")


def _case_only(first: Path, second: Path) -> str:
    """Where ``first`` and ``second`` are one mask only ignoring case, the words saying so."""
    return "" if first == second else " on macOS and Windows disks"


def _one_input(before: Path, given: Path) -> bool:
    """Whether ``given`` is the file an earlier predict recorded as ``before``: one path once
    resolved, or on a disk that ignores case one file under a name differing only in case (a
    hard link elsewhere, as two links to one stored file, is another input)."""
    first, second = before.resolve(), given.resolve()
    return first == second or (str(first).lower() == str(second).lower()
                               and first.samefile(second))


def _own_masks(out: Path, earlier: dict[str, Any]) -> set[Path]:
    """The masks an earlier predict wrote into ``out`` (resolved), by its record: in a folder
    predicted into itself they are no inputs for the next call. None of an input it records as
    failed, which has none of predict's there (a ground-truth PNG put under its mask's name
    was written over as predict's own)."""
    failed = _earlier(earlier, "failed", {})
    inputs = [Path(path) for path in _earlier_inputs(earlier)
              if isinstance(path, str) and path not in failed]
    given = {path.resolve() for path in inputs}
    return {mask for mask in ((out / recorded_mask_name(out, path)).resolve() for path in inputs)
            if mask not in given}


LATER_RECORDS = (MODEL_SHA256, LUNG_GUIDE_SHA256, "classes")
"""What a 2D prediction records (its model files' content, the model's class names) that
records of earlier covseg versions lack."""


def _model_record(predictor: Predictor) -> dict[str, Any]:
    """How ``predictor`` predicts (:meth:`Predictor.describe`) with the SHA-256 of its checkpoint
    or ONNX file, of the checkpoint its weights come from, and of its lung guide's run: a model
    retrained in place keeps its path."""
    record = {**predictor.describe(), MODEL_SHA256: model_hash(predictor.source),
              LUNG_GUIDE_SHA256: model_hash(guide_run(predictor))}
    return {**record, CHECKPOINT_SHA256: checkpoint_sha256(predictor, record[MODEL_SHA256])}


def _refuse_other_model(out: Path, earlier: dict[str, Any], predictor: Predictor) -> None:
    """A folder of masks predicted otherwise (another model, or its file changed in place,
    threshold, mirrors) is not written into: the new masks would sit beside the old ones under
    one record of the new run; a run and its own ONNX export (the checkpoint SHA-256 the
    export records) are one model. Records written before the hashes or the class names compare
    the rest."""
    before = earlier.get("model")
    if not isinstance(before, dict):
        return
    now = json.loads(json.dumps(_model_record(predictor)))  # as the record holds it
    unrecorded = [key for key in LATER_RECORDS if key not in before]
    same_file = before.get(MODEL_SHA256) and before.get(MODEL_SHA256) == now[MODEL_SHA256]
    named = ["source"] if same_file else []  # a run folder, its best.pt, a copy: one model
    if weights_sha256(before) and weights_sha256(before) == now[CHECKPOINT_SHA256]:
        named = ["source", "runtime", MODEL_SHA256]  # a run and its own ONNX export: one model
    changed = changed_settings(before, now,
                               ignored=["batch_size", CHECKPOINT_SHA256, *unrecorded, *named])
    if changed:
        raise CovsegError(f"{out} holds masks predicted otherwise ({'; '.join(changed)}); "
                          f"pick a new {option_name('out')} or delete it")


def _as_list(inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]
             ) -> list[str | os.PathLike[str]]:
    """One path given alone is a list of one (a string would be read character by character)."""
    return [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)


IMAGES, VOLUMES = "images", "volumes"
"""The kinds of input :func:`input_kind` tells apart: 2D images for :func:`predict`, CT volumes
for :func:`predict_volumes`."""


NO_PREDICT_ENSEMBLE = ("covseg does not ensemble run folders at predict time: train an ensemble "
                       "with --model miniseg,miniseg, or after a cv one final model on all the "
                       "data")
"""What an nnU-Net user who gives several runs to predict, to ensemble them, is told."""

RUN_FILES = ("best.pt", "config.json")
"""Files of which one marks a folder as a run of ``covseg train`` (or a cross-validation's)."""


def input_kind(path: Path, wanted: str | None = None) -> str | None:
    """Whether ``path`` is 2D images (:data:`IMAGES`) or CT volumes (:data:`VOLUMES`): the one
    decision of ``covseg predict`` and of :func:`predict` and :func:`predict_volumes`, so that
    they agree. None: a file of neither kind, or a folder holding nothing of either (its reader
    says what is wrong). A broken link given (said to be no such file), and a folder's named as
    images or volumes, are refused as a data set's are (:func:`~covseg.io.ct.refuse_broken_links`):
    a folder's were passed over, and the images or volumes left predicted without a word.

    A data folder that training reads (:func:`~covseg.data.layouts.data_folders`: Inf-Net's
    ``Imgs/`` + ``GT/`` or a folder above them, ``images/`` + ``masks/`` of 2D slices or NIfTI
    volumes, MedSeg's ``tr_im/`` + ``tr_mask/``) holding no images itself is refused, naming its
    images folder, unless it holds CT volumes of its own beside them (a volume file, a study or
    DICOM folder), which are predicted. A folder of both is refused, but for pictures that are
    strays beside CT data: beside DICOM slices (a series' thumbnail), or anywhere when the
    caller ``wanted`` volumes; they are skipped with a warning naming them. A folder holding
    sub-folders and no images is volumes (study folders, a DICOM tree). A run folder
    (:data:`RUN_FILES`) is refused: ``--model A B CT`` read run B as a CT and said "B: 2D
    images", as an nnU-Net user gives several folds to ensemble."""
    if not path.is_dir():
        refuse_broken_link(path)
        refuse_special_file(path, "an image or CT file, or a folder of them")
        if is_segmentation(path):  # refused before a batch is written, not as its one study
            raise segmentation_as_ct(path)
        if is_volume_named(path) or is_dicom_named(path):
            return VOLUMES
        return IMAGES if is_image_file(path) else None
    if any((path / name).is_file() for name in RUN_FILES):
        raise CovsegError(f"{path}: a run folder given as an input; --model takes one run "
                          f"({NO_PREDICT_ENSEMBLE})")
    children = sorted(c for c in path.iterdir()
                      if not is_covseg_picture(c) and not c.name.startswith("."))
    refuse_broken_links(path, children)
    images = [c.name for c in children if is_image_file(c)]
    data = None if images else data_folders(path)
    if data and not any(_holds_volumes(c) for c in children if c not in data):
        raise CovsegError(f"{path}: a data folder ({data[0].name}/ + {data[1].name}/: images "
                          f"and their masks), not images to predict; give {data[0]} to predict")
    volumes = [c for c in children if _holds_volumes(c)]
    if images and volumes:
        if wanted != VOLUMES and not any(c.is_file() and is_dicom_file(c) for c in volumes):
            raise CovsegError(f"{path}: holds both 2D images ({images[0]}...) and CT volumes "
                              f"({volumes[0].name}...); give them to separate predict calls")
        if wanted != IMAGES:  # predict refuses the folder: nothing is skipped
            log.warning("%s: %d 2D image(s) beside its CT data skipped (%s)", path,
                        len(images), ", ".join(images[:3]) + (", ..." if len(images) > 3 else ""))
        return VOLUMES
    if images:
        return IMAGES
    return VOLUMES if volumes or any(c.is_dir() for c in children) else None


def _holds_volumes(path: Path) -> bool:
    """A volume (NIfTI, NRRD, MetaImage) or DICOM file, or a folder holding one (a study folder
    beside 2D images was passed over: the images alone were predicted)."""
    if path.is_dir():
        return any(is_volume_file(c) or is_dicom_file(c) for c in path.iterdir() if c.is_file())
    return is_volume_file(path) or is_dicom_file(path)


MODEL_ARGUMENT = ("a run folder, checkpoint or .onnx file (str or pathlib.Path) or a "
                  "covseg.load_predictor result")


@_public()
def load_predictor(model: str | os.PathLike[str] | Predictor, batch_size: Int | None = None,
                   tta: bool | None = None, threshold: Real | None = None) -> Predictor:
    """The predictor of a run folder / checkpoint, or of an ``.onnx`` file from :func:`export`.

    A predictor already loaded is returned as it is, or as a copy with the options given (so that
    every function taking a ``model`` takes one loaded once). ``batch_size`` None: 8, or the
    loaded predictor's. ``tta`` and ``threshold`` None follow the run's recipe (test-time mirrors
    or not, and the probability from which a pixel is infection); a ``threshold`` applies to
    binary models only.

    Returns the :class:`~covseg.infer.Predictor`, which :func:`segment`, :func:`predict` and
    :func:`predict_volumes` take as their ``model``.
    """
    if batch_size is not None:
        check_kind("batch_size", batch_size, [int])
    if tta is not None:
        check_kind("tta", tta, [bool])
    if threshold is not None:
        check_threshold(threshold)
    if isinstance(model, Predictor):
        predictor = model
    else:
        source = _path("model", model, MODEL_ARGUMENT)
        predictor = (Predictor.load_onnx(source) if str(source).lower().endswith(".onnx")
                     else Predictor.load(source))
    if threshold is not None and predictor.num_classes != 2:
        raise CovsegError(f"{predictor.source}: a multi-class model takes the most probable "
                          f"class per pixel; {option_name('threshold')} applies to binary "
                          "models only")
    told = (("batch_size", batch_size), ("tta", tta), ("threshold", threshold))
    given: dict[str, Any] = {name: value for name, value in told if value is not None}
    return replace(predictor, **given) if given else predictor


def refuse_lung_model(predictor: Predictor) -> Predictor:
    """``predictor``, refused when a lung model: CT volumes take one as the lung model only, as
    the infection clean-up (lesions near the lungs) would cut its lungs to thresholded ones."""
    if predictor.target == "lung":
        raise CovsegError(f"{predictor.source}: a lung model; for CT volumes pass it as "
                          f"{option_name('lung_model')}, with an infection model as "
                          f"{option_name('model')}")
    return predictor


def load_volume_predictors(model: str | os.PathLike[str] | Predictor,
                           lung_model: str | os.PathLike[str] | Predictor | None = None,
                           batch_size: int | None = None, tta: bool | None = None,
                           threshold: float | None = None) -> tuple[Predictor, Predictor | None]:
    """The infection model and the optional lung model for CT volumes, each checked for its role
    (as in :func:`load_predictor`); ``threshold`` overrides the infection model's own."""
    predictor = refuse_lung_model(load_predictor(model, batch_size, tta, threshold))
    lungs = (require_lung_model(load_predictor(lung_model, batch_size))
             if lung_model is not None else None)
    return predictor, lungs


VOLUME_OPTIONS = STUDY_OPTIONS - {"batch_size", "lung_predictor"}
"""The volume options :func:`predict_volumes` passes on by name: the others are its own
parameters (``batch_size``, and ``lung_model`` loaded as the lung predictor)."""


class VolumeOptions(TypedDict, total=False):
    """:data:`VOLUME_OPTIONS` as :func:`predict_volumes`' keywords, typed as
    :func:`~covseg.volumes.predict_study` takes them (numpy's numbers too), so that mypy checks
    them in a call (``**options: Any`` took a misspelt ``htm=True``)."""

    probabilities: bool
    keep_outside_lungs: bool
    hu: str
    html: bool
    lung_margin_mm: Real


@_public("the CT volume options", sorted(VOLUME_OPTIONS))
def predict_volumes(model: str | os.PathLike[str] | Predictor,
                    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
                    out: str | os.PathLike[str],
                    lung_model: str | os.PathLike[str] | Predictor | None = None,
                    batch_size: Int | None = None, tta: bool | None = None,
                    threshold: Real | None = None, shard: tuple[Int, Int] | str = (0, 1),
                    **options: Unpack[VolumeOptions]) -> BatchResult:
    """CT volumes (NIfTI, NRRD or MetaImage files, DICOM files or series folders, or folders of
    them): per study, infection and lung masks on the input's grid plus the quantification
    report.

    ``model`` and ``lung_model`` as :func:`load_predictor` takes them, with its ``batch_size``,
    ``tta`` and ``threshold``. ``options`` as ``covseg predict``'s volume flags:
    ``probabilities``, ``keep_outside_lungs``, ``hu``, ``html``, ``lung_margin_mm``; ``shard``
    as ``--shard``: ``"I/N"`` or ``(I, N)``. 2D images are refused: :func:`predict` takes them.
    A study that fails is listed in the summary CSV and the others are predicted; a
    :class:`~covseg.batch.StudiesFailed` (a :class:`CovsegError` whose ``result`` is the
    batch's) then says how many failed, as :func:`predict` does.

    Returns the batch's counts (done, skipped, failed: 0) and the path of its summary CSV.
    """
    # Any: an unchecked caller's values may be of any type, which the checks refuse in one line
    given: dict[str, Any] = {key: value for key, value in options.items() if key != "hu"}
    check_volume_options(**given)
    check_hu(options.get("hu", "auto"))
    inputs, shard = _paths("inputs", inputs), _shard(shard)
    out = checked_out(out, held=VOLUME_MASKS)
    images = [str(item) for item in inputs if input_kind(Path(item), VOLUMES) == IMAGES]
    if images:
        raise _other_kind(images, ("a 2D image, not a CT volume", "2D images, not CT volumes"),
                          "covseg.predict")
    batch_size, threshold = _as_python(batch_size), _as_python(threshold)
    predictor, lungs = load_volume_predictors(model, lung_model, batch_size, tta, threshold)
    return all_done(predict_batch(predictor, inputs, out, shard=shard,
                                  batch_size=predictor.batch_size, lung_predictor=lungs,
                                  **options), "predicted")


@_public()
def segment(model: str | os.PathLike[str] | Predictor,
            image: np.ndarray | sitk.Image | nib.Nifti1Pair,
            *, spacing: Numbers | None = None, direction: Numbers | None = None,
            hu: str = "auto",
            lung_model: str | os.PathLike[str] | Predictor | None = None,
            keep_outside_lungs: bool = False,
            lung_margin_mm: Real = DEFAULT_LUNG_MARGIN_MM) -> npt.NDArray[np.uint8]:
    """Segment an image held in memory; nothing is written (as lungmask's ``apply``).

    ``model``: a run folder, checkpoint or ``.onnx`` file, or a :func:`load_predictor` result
    (load once to segment many images). ``image``: a 2D slice (numpy array, as ``covseg predict``
    reads a PNG, in HU or 8-bit grey), or a CT volume: a ``SimpleITK.Image``, a nibabel NIfTI
    image (``Nifti1Image``, ``Nifti2Image`` or an ``.img``/``.hdr`` ``Nifti1Pair``), or
    a (z, y, x) numpy array with its ``spacing`` (z, y, x) in mm (refused with an image,
    which carries its own). A bare array has no orientation: it is taken in DICOM's LPS order,
    as ``SimpleITK.GetArrayFromImage`` gives an axial series with the identity direction (x,
    the last axis, towards the patient's left, y towards the back, z towards the head): the
    lungs are split into right and left in that frame, and the lesions' 30 mm cut from the
    lungs is measured in mm of ``spacing``, in the array's (z, y, x) order. The array of an
    image in another orientation (a RAS NIfTI's is mirrored in y and x) can so give a slightly
    different mask. ``direction``: the array's direction cosines as
    SimpleITK's ``GetDirection()`` gives them (9 numbers, LPS), to say otherwise (with
    ``spacing``, for numpy volumes only; both are refused with a 2D slice). Volumes are handled as
    :func:`predict_volumes` handles them (``hu``, ``lung_model``, ``keep_outside_lungs`` and
    ``lung_margin_mm`` as its options, refused with a 2D slice as the CLI refuses them with 2D
    images): an infection region that comes within ``lung_margin_mm`` of the lungs is kept, to
    :data:`covseg.lungs.LESION_DEPTH_MM` from them, and one lying wholly farther is removed
    (:func:`covseg.lungs.remove_outside_lungs`), and a
    volume with sagittal or coronal slices is cut into axial ones. An (H, W, 3 or 4) array
    without ``spacing`` is refused as an RGB image: convert it to grayscale first; a label
    mask (a 0/1 or 0..4 integer volume or slice) is refused as ``covseg predict`` refuses one
    given as a CT (:func:`~covseg.io.image.label_levels`).

    Returns uint8 labels of the input's shape, in its own axis order (SimpleITK's array is
    (z, y, x), nibabel's (x, y, z)): 1 infection (or lung, for a lung model given a 2D slice),
    or the classes 0..K-1 of a multi-class model. A lung model is refused for volumes, as
    :func:`predict_volumes` refuses it: give it as ``lung_model``, with an infection model.
    """
    check_hu(hu, "hu")
    predictor = load_predictor(model)
    if isinstance(image, sitk.Image) and image.GetDimension() == 2:
        image = sitk.GetArrayFromImage(image)
    if isinstance(image, np.ndarray) and image.ndim == 2:
        given = volume_options_given({"hu": hu, "lung_model": lung_model,
                                      "keep_outside_lungs": keep_outside_lungs,
                                      "lung_margin_mm": lung_margin_mm})
        given += [name for name, value in (("spacing", spacing), ("direction", direction))
                  if value is not None]
        if given:
            raise CovsegError(volume_only(given, "this image is a 2D slice", "a volume"))
        refuse_label_mask(_checked_slice(image), "the slice", what="CT slice",
                          advice="give the slice itself")
        slice_ = normalize_intensity(image, predictor.intensity, predictor.window,
                                     as_is=_trained_as_is())
        return predictor.predict_labels([slice_])[0]
    refuse_lung_model(predictor)
    lung_margin_mm, spacing, direction = (
        _as_python(lung_margin_mm), _as_python(spacing), _as_python(direction))
    check_volume_options(predictor.batch_size, lung_margin_mm,
                         keep_outside_lungs=keep_outside_lungs)
    volume = _volume_in_memory(image, spacing, direction)
    refuse_label_mask(volume.array, volume.source)
    volume.intensity = detect_volume_intensity(volume.array, hu, volume.source)
    lungs = require_lung_model(load_predictor(lung_model)) if lung_model is not None else None
    with one_read():  # the volume's scale warnings once, as predict_study says them
        labels = predict_labels(predictor, volume, batch_size=predictor.batch_size,
                                desc="infection")
        masks = masks_in_lungs(predictor, volume, labels, lung_predictor=lungs,
                               keep_outside_lungs=keep_outside_lungs,
                               lung_margin_mm=lung_margin_mm, batch_size=predictor.batch_size,
                               quantified=False)
    masks.warn(volume.source)
    labels = volume.in_file_axes(masks.infection)
    if isinstance(image, nib.Nifti1Pair):  # back to the image's own (x, y, z[, 1...]) shape
        return labels.transpose(2, 1, 0).reshape(image.shape)
    return labels


def _checked_slice(image: np.ndarray) -> np.ndarray:
    """A 2D slice the readers would accept: real numbers, finite, not empty, at least 2 x 2
    pixels as :func:`~covseg.io.image.refuse_tiny_slice` reads files."""
    if image.dtype.kind not in "iuf":
        raise CovsegError(f"a slice of type {image.dtype}; give grey values or Hounsfield units "
                          "as numbers")
    if image.size == 0:
        raise CovsegError(f"an empty slice of shape {image.shape}")
    # an array has no file of its own to give
    refuse_tiny_slice(image.shape, "the slice", CT_SLICES.name, "give the whole slice")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise CovsegError("the slice holds NaN or infinite values")
    return image


def _volume_in_memory(image: object, spacing: Sequence[float] | None,
                      direction: Sequence[float] | None = None) -> Volume:
    """The volume of a :func:`segment` input.
    ``spacing`` and ``direction`` are for numpy arrays: an image's own geometry would silently
    win over them."""
    if direction is not None and not (isinstance(image, np.ndarray) and image.ndim == 3):
        raise CovsegError("direction: for a (z, y, x) numpy volume only (with spacing); an "
                          "image carries its own")
    if spacing is not None and isinstance(image, sitk.Image | nib.Nifti1Pair):
        library = type(image).__module__.split(".")[0]
        raise CovsegError(f"spacing: for numpy arrays only; a {library} image carries its own "
                          "voxel size (set it on the image, or pass its array with spacing)")
    if isinstance(image, sitk.Image):
        return volume_from_itk(image, "the SimpleITK image")
    if isinstance(image, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and .img/.hdr pairs
        return volume_from_nifti(image, "the nibabel image")
    if isinstance(image, np.ndarray) and image.ndim == 3:
        if spacing is None and image.shape[-1] == 1:
            raise CovsegError(f"an array of shape {image.shape} looks like a grey image with a "
                              "channel axis; drop it (image[..., 0]) to segment it as a 2D "
                              "slice, or give spacing=(z, y, x) in mm if it is a CT volume")
        if spacing is None and image.shape[-1] in (3, 4):
            raise CovsegError(f"an array of shape {image.shape} looks like an RGB image; convert "
                              "it to grayscale (PIL's .convert('L')) to segment it as a 2D "
                              "slice, or give spacing=(z, y, x) in mm if it is a CT volume")
        if spacing is None:
            raise CovsegError("a 3D array needs spacing=(z, y, x) in mm; or pass a SimpleITK or "
                              "nibabel image, which carries its geometry")
        if direction is not None:
            return volume_from_itk(_oriented(image, spacing, direction), "the array")
        return volume_from_array(image, spacing, "the array")
    shape = f" of shape {image.shape}" if isinstance(image, np.ndarray) else ""
    convert = (" (nibabel.Nifti1Image(image.get_fdata(), image.affine) converts it)"
               if isinstance(image, nib.spatialimages.SpatialImage) else "")
    raise CovsegError(f"cannot segment a {type(image).__name__}{shape}: give a 2D slice or a "
                      "(z, y, x) volume as a numpy array, a SimpleITK image or a nibabel NIfTI "
                      f"image (Nifti1Image, Nifti2Image or an .img/.hdr Nifti1Pair){convert}")


def _oriented(array: np.ndarray, spacing: Sequence[float], direction: Sequence[float]
              ) -> sitk.Image:
    """A (z, y, x) array as a SimpleITK image with its (z, y, x) ``spacing`` and SimpleITK
    ``direction`` (9 numbers), so that it is read as that image would be."""
    try:
        cosines = np.asarray(direction, dtype=float).reshape(3, 3)
        valid = bool(np.allclose(cosines @ cosines.T, np.eye(3), atol=1e-3))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise CovsegError(f"direction: 9 numbers, a rotation or reflection as SimpleITK's "
                          f"GetDirection() gives it, e.g. (1, 0, 0, 0, 1, 0, 0, 0, 1); got "
                          f"{direction!r}")
    volume = checked_array(array, spacing, "the array")
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(tuple(float(v) for v in reversed(spacing)))
    image.SetDirection(tuple(float(v) for v in cosines.ravel()))
    return image


@_public()
def quantify(masks: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
             out: str | os.PathLike[str], *, lungs: str | os.PathLike[str] | None = None,
             image: str | os.PathLike[str] | None = None, hu: str = "auto",
             classes: str = "auto", html: bool = False, shard: tuple[Int, Int] | str = (0, 1)
             ) -> BatchResult:
    """Lesion and lung volumes, % involved and CT-0..CT-4 from existing masks, as ``covseg
    quantify`` (its options by the same names: ``classes`` is ``auto``, ``binary`` or
    ``multiclass``, ``shard`` ``"I/N"`` or ``(I, N)``); one mask or folder may be given alone.
    A study that fails is listed in the summary CSV and the others are quantified; a
    :class:`~covseg.batch.StudiesFailed` (a :class:`CovsegError` whose ``result`` is the
    batch's) then says how many failed, as :func:`predict` does.

    Returns the batch's counts (done, skipped, failed: 0) and the path of its summary CSV.
    """
    for name, value in (("lungs", lungs), ("image", image)):
        if value is not None:
            _path(name, value)
    check_kind("html", html, [bool])
    check_hu(hu)
    out = checked_out(out, held=QUANTIFY_RESULTS)
    return all_done(quantify_batch(_paths("masks", masks), out, lungs=lungs, image=image, hu=hu,
                                   multiclass=multiclass_for(classes), html_report=html,
                                   shard=_shard(shard)), "quantified")


@_public()
def export(model: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Export a trained run to ONNX (for ``predict --onnx`` and ONNX Runtime users).

    Returns the path of the ONNX file written.
    """
    return export_onnx(_path("model", model), _path("out", out))


def _for_volumes(not_taken: list[str]) -> tuple[list[str], str]:
    """Of the keywords :func:`predict` does not take, those no function takes, and its refusal
    of those that are ``covseg predict``'s volume options, whatever their values ("" where
    none), so that a mix of both names each as what it is (it named them all unknown)."""
    volume = [name for name in not_taken if name in VOLUME_DEFAULTS]
    refusal = volume_only(volume, "covseg.predict takes 2D images",
                          "CT volumes to covseg.predict_volumes") if volume else ""
    return [name for name in not_taken if name not in VOLUME_DEFAULTS], refusal


@_public(elsewhere=_for_volumes)
def predict(model: str | os.PathLike[str] | Predictor,
            inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
            out: str | os.PathLike[str], overlay: bool = False, batch_size: Int | None = None,
            tta: bool | None = None, threshold: Real | None = None) -> list[Path]:
    """Masks for 2D images: PNG named after each input, same size, 0 background, 255 infection
    (or lung, for a lung model); ``predict.json`` beside them records the model and settings.

    Multi-class models write their labels (0..K-1) instead of 0/255. ``model`` as
    :func:`load_predictor` takes it, with its ``batch_size``, ``tta`` and ``threshold``: a run
    folder or checkpoint, an ``.onnx`` file (from :func:`export`, run with ONNX Runtime) or a
    predictor already loaded. An image that cannot be read, or that holds a label mask (a
    ground-truth 0/255 PNG: :func:`~covseg.io.image.read_image`), is listed in
    ``predict.json`` and the others are predicted; a :class:`~covseg.errors.BatchFailed` (a
    :class:`CovsegError`) then says how many failed. ``overlay`` also writes each image with
    its mask in colour into ``overlays/``. A later call into the same ``out`` (same model and
    settings) adds to its record: inputs, masks, overlays.

    Returns the paths of the masks written.
    """
    check_kind("overlay", overlay, [bool])
    inputs = _paths("inputs", inputs)
    volumes = [str(item) for item in inputs if input_kind(Path(item), IMAGES) == VOLUMES]
    if volumes:
        raise _other_kind(volumes, ("a CT volume", "CT volumes"), "covseg.predict_volumes")
    out = checked_out(out, held=IMAGE_MASKS)
    for item in inputs:  # into a folder itself is allowed: its own masks are then no inputs
        if Path(item).resolve() != out.resolve():
            refuse_inside(out, item, "input folder", "where its masks would lie among the images")
    batch_size, threshold = _as_python(batch_size), _as_python(threshold)
    with writing_to(out):  # a second predict into ``out`` meanwhile is refused, naming this one
        return _predict_images(model, inputs, out, overlay, batch_size, tta, threshold)


def _predict_images(model: str | os.PathLike[str] | Predictor,
                    inputs: Sequence[str | os.PathLike[str]], out: Path, overlay: bool,
                    batch_size: int | None, tta: bool | None, threshold: float | None
                    ) -> list[Path]:
    """:func:`predict` once ``out``'s lock is held: the temporary files a run killed there with
    ``kill -9`` left (in ``out`` and its ``overlays/``), which no one else writes now, go
    first."""
    for folder in (out, out / "overlays"):
        remove_temporaries(folder)
    earlier = read_record(out / PREDICT_RECORD) or {}
    own = _own_masks(out, earlier)
    files = collect_inputs(inputs, own)
    planned = _Planned.of(files, out)
    _refuse_unrecorded_masks(out, planned, earlier, overlay, own)
    _refuse_earlier_names(out, planned, own)
    _check_outputs(planned, out, earlier)
    predictor = load_predictor(model, batch_size, tta, threshold)
    if predictor.guide is not None:  # once, before any image is read or recorded as failed
        predictor.guide.run  # noqa: B018 - looked up: one line refuses a lung run not there
    batch_size = predictor.batch_size
    _refuse_other_model(out, earlier, predictor)
    palette = LUNG_COLOURS if predictor.target == "lung" else CLASS_COLOURS
    names = label_names(predictor.target or "infection", predictor.num_classes)
    started = time.perf_counter()
    written: list[Path] = []
    failed: dict[str, str] = {}
    given = recorded_paths(files)  # one spelling from any working folder
    record = _PredictRecord(out, earlier, predictor, given)
    record.write(failed, 0.0, finished=False)  # before any mask: a stopped call is judged too
    scales: dict[str, list[str]] = {}
    with one_read(), progress_bar(total=len(files), quiet=len(files) < 20, desc="predict",
                                  unit="image", leave=False) as bar:
        for start in range(0, len(files), batch_size):
            chunk, images = _readable(files[start:start + batch_size], predictor, failed,
                                      scales)
            for path, image, labels in zip(chunk, images, predictor.predict_labels(images)):
                stored = labels * 255 if predictor.num_classes == 2 else labels
                written.append(write_png(out / output_name(path), stored.astype(np.uint8)))
                if overlay:  # the model's colours named under the image
                    write_png(out / "overlays" / output_name(path), legend_strip(
                        overlay_image(image, labels, palette=palette), labels, names, palette))
            bar.update(len(chunk))
            raise_if_stopped()  # a Ctrl-C that Python dropped in a finaliser ends it here
    warn_mixed_scales(scales)
    _remove_stale_masks(out, failed, earlier)
    record.write(failed, time.perf_counter() - started, finished=True)
    if failed:
        reason = next(iter(failed.values()))
        kept = (f"{out} holds the other {counted(len(written), 'mask')}, and" if written
                else "no mask was written;")
        raise BatchFailed(f"{len(failed)} of {len(files)} images could not be predicted "
                          f"(first: {reason}); {kept} {out / PREDICT_RECORD} lists the "
                          "failures")
    return written


def _remove_stale_masks(out: Path, failed: Collection[str], earlier: dict[str, Any]) -> None:
    """Delete the mask and overlay an earlier call into ``out`` made of each input that failed
    in this one: the mask of the image's earlier content was counted and hashed as this call's,
    and scored by evaluate, which scores a failed input as an empty prediction. Only an input
    the earlier record names (``failed`` holds recorded paths): another file's mask of that
    name is none of its own."""
    if not failed:  # else every earlier input was resolved again at the end of every call
        return
    before = set(recorded_paths(path for path in _earlier_inputs(earlier)
                                if isinstance(path, str)))
    for path in before.intersection(failed):
        for stale in (out / output_name(Path(path)), out / "overlays" / output_name(Path(path))):
            if stale.is_file():
                stale.unlink()


def _refuse_unrecorded_masks(out: Path, planned: _Planned, earlier: dict[str, Any],
                             overlay: bool, own: set[Path]) -> None:
    """PNGs in ``out`` that its predict.json does not record are not written over nor beside:
    a file this call would overwrite (ground truth of any kind, palette, multi-class or RGB,
    given as ``--out``: the data set's own masks/ lost them all without a word), and in a
    folder without a record any PNG mask (a covseg before 3 Dec wrote none), which would sit
    beside the new masks under one record naming the new model, credited to it by evaluate.
    ``own``: the masks the record names (:func:`_own_masks`); their overlays are its too.
    ``planned``: the files and masks as :func:`_predict_images` planned them."""
    inputs = planned.inputs
    overlays = (out / "overlays").resolve()
    known = inputs | own | {overlays / mask.name for mask in own}  # once, not once a mask
    overwritten = {mask for mask, target in zip(planned.masks, planned.targets, strict=True)
                   if mask.is_file() and target not in known}
    if overlay:
        overwritten |= {drawn for drawn in (out / "overlays" / mask.name for mask in planned.masks)
                        if drawn.is_file() and drawn.resolve() not in known}
    beside = set() if earlier else {path for path in out.glob("*.png")
                                    if path.resolve() not in inputs and _is_mask_png(path)}
    unrecorded = sorted(str(path.relative_to(out)) for path in overwritten | beside)
    if unrecorded:
        raise CovsegError(f"{out} holds {counted(len(unrecorded), 'PNG')} (first: "
                          f"{unrecorded[0]}) that no {PREDICT_RECORD} there records: ground "
                          "truth, or masks of an unknown model, which predict would overwrite "
                          f"or mix with its own; pick a new {option_name('out')} or move them")


def _refuse_earlier_names(out: Path, planned: _Planned, own: set[Path]) -> None:
    """Refuse to predict an input into ``out`` where its mask, among the record's (``own``),
    lies under the name covseg gave it until late on 7 Dec
    (:func:`~covseg.infer.recorded_mask_name`: ``lungA_0000.png`` of ``imagesTs/lungA_0000.png``,
    now ``lungA.png``): the new mask was written beside it, and evaluate stopped on the two
    masks of one case."""
    for path, mask in zip(planned.files, planned.masks, strict=True):
        name = recorded_mask_name(out, path)
        if name != mask.name and (out / name).resolve() in own:
            raise CovsegError(f"{out / name}: the mask of {path} as covseg named it until 7 "
                              f"Dec, with nnU-Net's _0000, which predict now drops ({mask.name}); "
                              f"predict into a new {option_name('out')}, or rename such masks "
                              "without _0000")


MASK_PNG_VALUES = frozenset({0, 1, 2, 3, 255})
"""The values of the masks covseg's 2D predict writes: 0/255 for a binary model, class indices
for a multi-class one."""


def _is_mask_png(path: Path) -> bool:
    """Whether ``path`` is a PNG such as 2D predict writes (one 8-bit channel holding mask
    values only), not a figure (RGB(A): an evaluation's box plot, a run's curves.png) nor a
    grey image."""
    if not path.is_file():  # a FIFO named x.png would block the read
        return False
    try:
        with Image.open(path) as image:
            if image.format != "PNG" or image.mode != "L":
                return False
            return set(np.unique(np.asarray(image)).tolist()) <= MASK_PNG_VALUES
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _earlier_inputs(earlier: dict[str, Any]) -> list[str]:
    """The images an earlier predict.json names, finished (``inputs``) or not (``pending``)."""
    return [*_earlier(earlier, "inputs", []), *_earlier(earlier, PENDING, [])]


@dataclass
class _PredictRecord:
    """A 2D predict call's predict.json: written before the first mask, with this call's images
    ``pending`` (a call stopped, even by ``kill -9``, leaves the model and settings its masks
    were made with, which the next call into ``out`` is checked against), and again at the end,
    with them among the ``inputs``. The model's record (its file's SHA-256) is taken once, at
    the start: a best.pt its run replaced during the call was hashed anew at the end, and the
    record named weights that made none of the masks."""

    out: Path
    earlier: dict[str, Any]
    predictor: Predictor
    given: list[str]
    model: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.model = _model_record(self.predictor)

    def write(self, failed: dict[str, str], seconds: float, finished: bool) -> None:
        done = _earlier(self.earlier, "inputs", [])
        pending = [path for path in _earlier(self.earlier, PENDING, []) if path not in self.given]
        if finished:
            done = [*done, *self.given]
        else:
            pending = [*pending, *(path for path in self.given if path not in done)]
        recorded = list(dict.fromkeys(done))
        names = {recorded_mask_name(self.out, Path(path)) for path in [*recorded, *pending]}
        target = "lung" if self.predictor.target == "lung" else "infection"
        earlier_failed = _earlier(self.earlier, "failed", {})
        write_json(self.out / PREDICT_RECORD, {
            **provenance(), "model": self.model, "inputs": recorded,
            **({PENDING: list(dict.fromkeys(pending))} if pending else {}),
            "masks": sum((self.out / name).is_file() for name in names),
            "failed": {**{path: reason for path, reason in earlier_failed.items()
                          if path not in self.given}, **failed},
            "overlays": sum((self.out / "overlays" / name).is_file() for name in names),
            OUTPUT_SHA256: self.mask_hashes(recorded, finished),
            "mask_values": f"0 background, 255 {target}" if self.predictor.num_classes == 2
            else "class labels 0..K-1",
            "seconds": round(_earlier(self.earlier, "seconds", 0.0) + seconds, 3)})


    def mask_hashes(self, recorded: Sequence[str], finished: bool) -> dict[str, str]:
        """The SHA-256 of each mask of the ``recorded`` inputs, by file name in ``out``, so
        that evaluate can tell a mask edited since: an earlier call's as it recorded them (none
        for records before 5 Dec), this call's hashed as written, once it has ``finished``."""
        names = sorted({recorded_mask_name(self.out, Path(path)) for path in recorded})
        rewritten = {output_name(Path(path)) for path in self.given}
        earlier = _earlier(self.earlier, OUTPUT_SHA256, {})
        hashes = {name: earlier.get(name) if name not in rewritten
                  else content_hash(self.out / name) if finished else None for name in names}
        return {name: digest for name, digest in hashes.items() if isinstance(digest, str)}


def _earlier(earlier: dict[str, Any], key: str, empty: Any) -> Any:
    """What the folder's earlier predict.json holds under ``key``, or ``empty`` where it holds
    nothing of that type: a later call adds to it, since the earlier masks are still there."""
    value = earlier.get(key)
    return value if isinstance(value, type(empty)) else empty


def _readable(chunk: Sequence[Path], predictor: Predictor, failed: dict[str, str],
              scales: dict[str, list[str]]) -> tuple[list[Path], list[np.ndarray]]:
    """The images of ``chunk`` that read and hold no label mask (a ground-truth PNG given as
    the image: :func:`~covseg.io.image.read_image`), scaled for the model, each noted in
    ``scales`` by the scale it was read on (:func:`~covseg.transforms.note_scale`); the others'
    errors go into ``failed``, so that one bad file does not stop a batch of hundreds (as a
    failing CT study does not)."""
    kept, images = [], []
    for path in chunk:
        try:
            images.append(read_naming_out_of_memory(
                lambda named: _scaled(read_image(named), str(named), predictor, scales), path))
        except CovsegError as exc:
            failed[recorded_path(path)] = str(exc)
            continue
        kept.append(path)
    return kept, images


def _scaled(image: np.ndarray, source: str, predictor: Predictor,
            scales: dict[str, list[str]]) -> np.ndarray:
    """``image`` (from ``source``) scaled as ``predictor`` reads, its scale noted in
    ``scales``."""
    kind = intensity_scale(image, predictor.intensity, predictor.window, source,
                           as_is=_trained_as_is())
    note_scale(scales, kind, image, source)
    return scale_intensity(image, kind, predictor.window, source=source)


def _trained_as_is() -> str:
    """What reads slices on no scale covseg knows as they are, when predicting: a run trained
    with ``--intensity hu``. A prediction reads slices as its run was trained, and neither 2D
    predict nor segment takes the option that the refusal advised."""
    return f"a run trained with {option_given('intensity', 'hu')}"


@_public()
def evaluate(pred: str | os.PathLike[str], truth: str | os.PathLike[str],
             out: str | os.PathLike[str], per_slice: bool = False) -> dict[str, Any]:
    """Per-case and summary metrics of predicted masks against the truth (CSV and JSON).

    ``pred`` and ``truth``: folders of masks, or single mask files or predict study folders (their
    ``infection.nii.gz``). A truth whose input ``covseg predict`` recorded as failed, or whose mask
    is gone from a ``pred`` folder whose ``predict.json`` lists its image, is scored as an empty
    prediction (a single mask as ``pred`` is scored alone); other truths without a prediction
    (another shard's, a subset's) are not scored. ``per_slice``: score each axial slice of volumes
    (NIfTI, NRRD, MetaImage) as its own case (a stack of independent slices, as MedSeg's
    ``tr_mask.nii.gz``), so the mean is the mean per-slice Dice; refused for 2D masks, each one
    slice already. One folder or file given as both ``pred`` and ``truth`` is refused. ``out``: a
    name, written as ``out.json``, ``out.csv`` and ``out.png``, or a folder that holds
    ``evaluation.*``: one that exists, or a str ending in ``/`` (``"evnew/"``); ``Path("evnew/")``
    drops the slash, so it names the files ``evnew.*`` unless the folder ``evnew`` exists.

    Returns what the JSON holds: the number of ``cases``, the ``summary`` (per metric its mean,
    std, median and how many cases define it; HD95 apart as ``hd95_mm`` and ``hd95_px`` where
    2D masks and volumes are both scored), the ``per_case`` rows, the truths scored without
    a prediction (``missing_predictions``), the predictions without a truth
    (``unmatched_predictions``), the truths not scored (``unmatched_truths``; those pending in
    a predict that did not finish: ``pending_truths``, warned of), whether ``pred``
    holds covseg predict's record (``predict_record``), the models that made the scored masks
    as covseg's records name them (``models``: source, runtime, ``model_sha256``,
    ``checkpoint_sha256``, threshold, test flips), the masks edited since predict wrote them
    (``edited_predictions``, warned of in one line), those beside a predict.json that does
    not list them (``unrecorded_predictions``: no record names their model), the files among
    the masks that are no masks of labels, not scored (``skipped_images``: files named as images
    beside their masks, truths holding an image, a soft mask or a lossy mask of several
    classes), and the paths of the ``files`` written.
    """
    check_kind("per_slice", per_slice, [bool])
    return evaluate_folders(_path("pred", pred), _path("truth", truth), _path("out", out),
                            per_slice=per_slice)


@_public()
def models() -> list[dict[str, Any]]:
    """The registered architectures, as ``covseg models`` lists them.

    Returns one dict per model: its ``name``, ``parameters`` (1 input channel, binary output,
    default options; None, with the ``error`` saying why, where an optional dependency is
    missing), ``description``, default ``options``, and ``null_means``: what each option whose
    default is None stands for (unet++'s ``width``: 32).
    """
    return model_table()


@_public()
def fetch_data(name: str, to: str | os.PathLike[str]) -> list[Path]:
    """Download a public data set (``zenodo-covid19-ct``, ``medseg``; ``mosmed`` says how to
    register for it) into the folder ``to`` and unpack its archives, as ``covseg data fetch``:
    resumable, checksummed where a checksum is known, files already there not fetched again.

    Returns the paths of the data set's files ready in ``to``: downloaded now, or already
    there and verified (``covseg data fetch``'s "N file(s) ready"). What the data set is and
    its licence go to the ``covseg.data.fetch`` logger at INFO, a file without an official
    checksum (its SHA-256 shown) at WARNING: nothing is printed.
    """
    return fetch(name, _path("to", to))


@_public()
def data_info(data: str | os.PathLike[str] | LoadedData, target: str | None = None,
              intensity: str | None = None, window: Numbers | None = None
              ) -> dict[str, Any]:
    """What a data folder holds, read as training reads it, as ``covseg data info`` prints it:
    its layout, counts of slices, cases (image files: 2D slices or volumes), labelled slices and
    patients, and its ``data_fingerprint``, the one a run's config.json records when trained on
    all of it with the same ``target``, ``intensity`` and ``window`` (a fold's covers its own
    training and test slices), so that "same data" is checked without training. Options as
    :func:`visualize` takes them; data already read by :func:`load_dataset` are described as
    they were read.

    Returns the dict that ``covseg data info --json`` prints.
    """
    options = {key: value for key, value in (
        ("target", target), ("intensity", intensity), ("window", window)) if value is not None}
    reading = _reading(data, options)
    loaded = (data if isinstance(data, LoadedData)
              else load_dataset(_path("data", data, DATA_ARGUMENT), **reading))
    cases = [sample.case_id for sample in loaded.samples]
    applied = loaded.applied_window  # null on 8-bit data, as a run trained on them records it
    return {
        "data_path": loaded.root, "layout": loaded.layout, "kind": loaded.kind,
        **loaded.reading(), "window": list(applied) if applied else None,
        "num_classes": loaded.num_classes,
        "classes": class_labels(loaded.target, loaded.num_classes),
        "slices": len(cases), "labelled_slices": sum(bool(s.mask.any()) for s in loaded.samples),
        "cases": len({sample.image_file for sample in loaded.samples}),
        "patients": len(loaded.patients), "shipped_folds": len(loaded.folds or []),
        "hd95_unit": loaded.hd95_unit, "warnings": list(loaded.notes),
        DATA_FINGERPRINT: data_fingerprint(loaded, cases, quiet=False),
    }


DEMO_PATIENTS = 12
"""Patients of the demo's synthetic data set (4 slices each): at most that many folds."""

DEMO_FOLDS, DEMO_EPOCHS = 3, 24
"""The demo's folds and epochs per fold unless told otherwise: a few minutes on CPU."""
DEMO_VERB = "run the demo"
"""What a refusal of the demo's own folds tells to do into a new --out (cv says cross-validate)."""


@_public(trains=True)
def demo(out: str | os.PathLike[str] = "covseg-demo", folds: Int = DEMO_FOLDS,
         epochs: Int = DEMO_EPOCHS) -> dict[str, Any]:
    """Synthetic data, a picture of it, then cross-validation and its report: a few minutes on CPU.
    A rerun into the same ``out`` continues the folds an interrupted one left (its recipe and
    data are fixed, and checked as ``--resume`` checks them).

    Returns the cross-validation summary (as :func:`cross_validate`) with ``demo_seconds``.
    """
    from covseg.data.synthetic import write_synthetic

    out = checked_out(out, held=DEMO_OUT)
    check_kind("folds", folds, [int])  # None, cv's "the default", is no fold count here
    check_kind("epochs", epochs, [int])  # None, the recipe's 240 epochs, is no demo's
    folds, epochs = _as_python(folds), _as_python(epochs)
    recipe = {"epochs": epochs, "size": 128, "batch_size": 8, "lr": 5e-3, "augment": "light"}
    _recipe(recipe, True, None, folds)  # refused before the data and picture are written
    if folds > DEMO_PATIENTS:
        raise CovsegError(f"{option_name('folds')} must be at most {DEMO_PATIENTS}, the demo's "
                          f"synthetic patients, got {folds}")
    started = time.perf_counter()
    data_dir = write_synthetic(out / "synthetic-data", seed=0, patients=DEMO_PATIENTS)
    data = load_dataset(data_dir)
    visualize(data, out / "samples.png")
    summary = _cross_validate(_recipe(recipe, True, data), data, checked_out(out / "cv"), folds,
                              resume=True, verb=DEMO_VERB)
    summary["demo_seconds"] = time.perf_counter() - started
    return summary
