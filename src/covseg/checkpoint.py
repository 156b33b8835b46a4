"""covseg checkpoints: a state dict plus what is needed to rebuild the model and its inputs.

Files are plain dicts of tensors and primitives, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from covseg.config import MAX_SIZE, TrainConfig, check_window
from covseg.errors import CovsegError, Resumable, disk_error, refuse_special_file
from covseg.io.atomic import atomic_path, write_error
from covseg.io.facts import file_fact
from covseg.io.image import unreadable_file
from covseg.io.lock import holder
from covseg.models import build_model
from covseg.models.pretrained import torch_load_failure, without_weights_file
from covseg.provenance import API_COMMAND, option_given
from covseg.records import read_record
from covseg.transforms import INTENSITY_MODES

log = logging.getLogger(__name__)

FORMAT = "covseg-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any],
                    **extra: Any) -> Path:
    """Write ``{format, version, meta, state_dict, **extra}`` atomically."""
    payload = {"format": FORMAT, "version": VERSION, "meta": meta,
               "state_dict": model.state_dict(), **extra}
    with atomic_path(path) as tmp:
        save_resumable(payload, tmp, path)
    return Path(path)


def save_resumable(payload: Any, tmp: Path, target: str | os.PathLike[str]) -> None:
    """``torch.save`` a training's file through a Python file, so that a full disk is an
    OSError (torch's own writer gave a traceback of RuntimeErrors):
    :func:`write_errors_resumable` says it naming ``target``."""
    with write_errors_resumable(target), tmp.open("wb") as handle:
        torch.save(payload, handle)


@contextmanager
def write_errors_resumable(target: str | os.PathLike[str], what: str = "") -> Iterator[None]:
    """Run a training's write of ``target`` (``what`` as in
    :func:`~covseg.io.atomic.write_error`); a write error that is the disk's
    (:func:`~covseg.errors.disk_error`, as an atomic file's write judges it: one that names no
    file, a full or failing disk), and torch's writer's RuntimeError over one
    (:func:`_hidden_write_error`), become ``target``'s one-line error
    (:func:`~covseg.io.atomic.write_error`): a full or failing disk is a :class:`Resumable`
    stop, which a run says to resume. The ensemble's shared data, written outside any atomic
    file, ended in a bare "covseg: error: Input/output error"; torch's RuntimeError over a
    passing I/O error, in a traceback."""
    try:
        yield
    except RuntimeError as exc:
        hidden = _hidden_write_error(exc)
        if hidden is None:
            raise
        raise write_error(target, hidden, what) from None
    except OSError as exc:
        if not disk_error(exc):
            raise
        raise write_error(target, exc, what) from None


TORCH_WRITER_SIGNS = ("inline_container", "PytorchStreamWriter", "unexpected pos")
"""Words of the RuntimeError torch's checkpoint writer (caffe2's inline_container.cc, torch
2.14: "[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0", "PytorchStreamWriter
failed writing file ...") raises over the OSError of the Python file it writes."""


def _hidden_write_error(exc: RuntimeError) -> OSError | None:
    """The OSError that torch's writer turned into ``exc`` (:data:`TORCH_WRITER_SIGNS`), None
    for any other RuntimeError: a bug's raised while an OSError was handled is no write error
    (it was told as that OSError)."""
    context = exc.__context__
    if isinstance(context, OSError) and any(sign in str(exc) for sign in TORCH_WRITER_SIGNS):
        return context
    return None


def resume_advice(out: str | os.PathLike[str]) -> str:
    """How to go on with a train, cv or compare into ``out`` that stopped: with --resume where
    ``out`` is left (saved epochs, or a folder there before), else without it, as --resume is
    refused there: a run stopped before its first epoch is saved removes the folder it made."""
    given = option_given("resume", True)
    if Path(out).exists():
        return f"rerun the same command with {given} to continue"
    return f"rerun the same command without {given} (nothing was saved: {out} does not exist)"


@contextmanager
def resume_advised(out: str | os.PathLike[str]) -> Iterator[None]:
    """Run a train, cv or compare into ``out``: its :class:`Resumable` stop (a full or failing
    disk, a member killed, a fold lost on Ray) ends saying how to go on (:func:`resume_advice`),
    decided once the run has removed what it had not saved (it said --resume where that
    removed ``out``, and the rerun was refused: nothing to resume)."""
    try:
        yield
    except Resumable as exc:
        raise CovsegError(exc.advised(resume_advice(out))) from None


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The file a model path names: a run folder's best.pt, else the path itself; a run named
    by its folder and by its best.pt is one model."""
    path = Path(path)
    return path / "best.pt" if path.is_dir() else path


def load_checkpoint(path: str | os.PathLike[str], advice: str | None = None) -> dict[str, Any]:
    """Load a covseg checkpoint safely; anything else gives a one-line error, ending in
    ``advice`` where the caller knows better what to do about a refused file than model
    loading's words (pass a run folder or its best.pt), as a resume does of its last.pt. A file
    only unreadable to this user, or from a newer covseg, is sound and gets no ``advice`` (a
    resume's was to delete it): it says to make it readable, or to upgrade covseg."""
    path = Path(path)
    run = path if path.is_dir() else None
    if run is not None:
        if not (run / "best.pt").is_file():  # a run's folder holds its model, whatever else
            _refuse_folds_holder(run)
        _refuse_unfinished(run)
        _refuse_lost_model(run)
    path = checkpoint_file(path)
    if not path.is_file():
        refuse_special_file(path, "a run folder or its best.pt")
        _refuse_in_training(path.parent if path.name == "best.pt" else path)
        raise CovsegError(f"{path}: no such checkpoint; pass a run folder or its best.pt")
    if path.suffix.lower() == ".onnx":
        raise CovsegError(f"{path}: an ONNX file (from `covseg export`), not a checkpoint; pass "
                          "the run folder or its best.pt (`covseg predict` runs ONNX files)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise unreadable_file(path, "pass another model" if advice is None
                              else "rerun as the user who wrote it") from None
    except Exception as exc:  # noqa: BLE001  torch.load raises KeyError, UnpicklingError...
        raise CovsegError(f"{path}: not a covseg checkpoint ({torch_load_failure(exc)}); "
                          f"{advice or 'pass a run folder from `covseg train` or its best.pt'}"
                          ) from None
    then = f"; {advice}" if advice else ""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CovsegError(f"{path}: not a covseg checkpoint (no covseg header){then}")
    version = payload.get("version", 0)  # files before the format numbered none
    if not _whole(version, 0):  # "2" or null ended in a TypeError traceback
        raise CovsegError(f"{path}: a damaged checkpoint (version {version!r}, not a format "
                          f"number); {advice or RETRAIN}")
    if version > VERSION:
        raise CovsegError(f"{path}: written by a newer covseg (format {version}); upgrade "
                          "covseg to the one that wrote it and rerun the same command")
    _check_entries(path, payload, advice)
    if run is not None:  # after the load, which names an unreadable best.pt in its own words
        _warn_replaced(run)
    return payload


def _refuse_folds_holder(folder: Path) -> None:
    """Refuse a cross-validation's or a comparison's folder, whose models are in its folds,
    saying so (it was "best.pt: no such checkpoint"), and how to train the final model."""
    folds = fold_folders(folder)
    if (folder / "summary.json").is_file() or folds:
        example = folds[0] if folds else folder / "fold_0"
        summary = read_record(folder / "summary.json") or {}
        step = final_model_step(*recipe_model(summary.get("config", {})), summary,
                                _repeat_folds(summary, folds))
        raise CovsegError(f"{folder}: a cross-validation, whose models are in its fold "
                          f"folders; give one of them ({example}) as the model, or {step}")
    models = sorted(p for p in folder.glob("*/") if fold_folders(p))
    if (folder / "comparison.json").is_file() or models:
        from covseg.compare import final_step  # compare reads checkpoints
        result = read_record(folder / "comparison.json") or {}
        step = final_step(result)
        example = _example_model(folder, result, models) / "fold_0"
        raise CovsegError(f"{folder}: holds cross-validations (a model comparison), whose "
                          f"models are in their fold folders; give one of them ({example}) "
                          f"as the model; {step}")


def _example_model(folder: Path, result: Mapping[str, Any], models: list[Path]) -> Path:
    """The model folder whose fold a comparison's refusal offers: that of the best mean Dice
    (``result``: its comparison.json), the one its next step names (the first by name was
    offered beside another's final model); else the first by name, else a placeholder."""
    from covseg.compare import best_compared, compared_rows, model_folder

    best = best_compared(compared_rows(result))
    chosen = folder / model_folder(best) if best else None
    return chosen if chosen in models else (models[0] if models else folder / "MODEL")


def _repeat_folds(summary: Mapping[str, Any], folds: list[Path]) -> int:
    """The folds of one repeat of a cross-validation (``summary``: its summary.json, or none;
    ``folds``: its fold folders), whose fold models each trained on (k-1)/k of the data: its
    recipe's count, else its first fold's record's (each fold records its repeat's), else its
    fold folders'. Counted by its folders, a 5-fold run repeated 3 times said each fold model
    trained on 14/15 of the data, where each trained on 4/5."""
    from covseg.train import FOLDS  # train reads checkpoints

    first = read_record(folds[0] / "config.json") if folds else None
    for record in (summary.get("config"), first):
        count = record.get(FOLDS) if isinstance(record, Mapping) else None
        if isinstance(count, int) and _whole(count, 2):
            return count
    return len(folds)


def recipe_model(config: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """A recorded recipe's model and its options (None and none where it names no model)."""
    return config.get("model"), config.get("model_options") or {}


def _option_pair(key: str, value: Any) -> str:
    """A model option as typed: ``width=32``, ``encoder=resnet34`` (a string as it is)."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def final_model_step(model: str | None, options: Mapping[str, Any], record: Mapping[str, Any],
                     folds: int | None) -> str:
    """What to do after a cross-validation or comparison (``record``: its summary.json or
    comparison.json, for the data and recipe) for ``model`` with its ``options``: its ``folds``
    fold models are no ensemble, each trained on (k-1)/k of the data, so a final model is
    trained on all of it, by the recipe cross-validated (:func:`recipe_options`)."""
    share = f"{folds - 1}/{folds}" if isinstance(folds, int) and folds > 1 else "(k-1)/k"
    words = ["covseg", "train", str(record.get("data_path") or "DATA"), "--model", model or "MODEL"]
    for key, value in options.items():
        words += ["--model-option", _option_pair(key, value)]
    config = record.get("config")
    words += recipe_options(config if isinstance(config, Mapping) else {})
    return (f"for a final model train one on all the data (the fold models are no ensemble, "
            f"each trained on {share} of it): `{shlex.join([*words, '--out', 'RUN'])}`")


def recipe_options(config: Mapping[str, Any]) -> list[str]:
    """The ``covseg train`` options giving the recorded recipe ``config`` (a summary's, without
    its model): each setting that differs from what train takes when it is left out. Only the
    data and model were given, so a final model trained another recipe than the one
    cross-validated (a cascade lost its lung guide, a 40-epoch recipe trained 240)."""
    given = {key: config[key] for key in ("target", "lung_guide")
             if isinstance(config.get(key), str)}
    default = TrainConfig()
    try:  # what the rest resolves to for this target and guide (a lung model frames nothing)
        usual = {**TrainConfig(**given).record(config.get("window") is not None),
                 "target": default.target, "lung_guide": default.lung_guide}
    except CovsegError:  # a damaged record's target: its options as they are
        usual = default.to_dict()
    words: list[str] = []
    for key, value in config.items():
        if key in usual and key not in ("model", "model_options") and value != usual[key]:
            words += _option_words(key, value)
    return words


def _option_words(key: str, value: Any) -> list[str]:
    """Recipe setting ``key`` given ``value`` as train's options spell it: a switch as its
    flag or ``--no-`` form, a window as its two numbers."""
    option = f"--{key.replace('_', '-')}"
    if isinstance(value, bool):
        return [option if value else f"--no-{option[2:]}"]
    if isinstance(value, list | tuple):
        return [option, *(f"{item:g}" if isinstance(item, float) else str(item)
                          for item in value)]
    return [option, str(value)]


FOLD = re.compile(r"fold_(0|[1-9][0-9]*)")
"""The name of a cross-validation's fold folder, ``fold_k`` as ``cv`` and ``compare`` write it;
a ``fold_x`` or ``fold_3.bak`` beside the folds (a user's copy, say) is no fold, and nothing
counts, refuses or reads it as one."""


def fold_folders(folder: Path) -> list[Path]:
    """The fold folders (:data:`FOLD`) in ``folder``, in fold order: fold_2 before fold_10."""
    folds = [path for path in folder.glob("fold_*") if FOLD.fullmatch(path.name) and path.is_dir()]
    return sorted(folds, key=fold_index)


def fold_index(fold_dir: Path) -> int:
    """The k of a fold folder ``fold_k`` (:data:`FOLD`)."""
    return int(fold_dir.name.removeprefix("fold_"))


MEMBER = re.compile(r"member\d+-.+")
"""The name of an ensemble member's folder in its run (``member0-miniseg``)."""


def _finish_with(run: Path) -> str:
    """How to finish ``run`` stopped midway: a fold is finished by the command that made it
    (``covseg train`` refuses a fold's folder), a comparison's where its folder is one of
    a comparison's (its comparison.json, or the folder named after the fold's model); an
    ensemble member by its ensemble's (a resume into the member's folder trains it alone)."""
    if MEMBER.fullmatch(run.name) and (run.parent / "config.json").is_file():
        if FOLD.fullmatch(run.parent.name):
            return _finish_with(run.parent)
        return _resumed(run.parent, "train", run.parent)
    if not FOLD.fullmatch(run.name):
        return _resumed(run, "train", run)
    cv, compared = run.parent, run.parent.parent
    compare = _resumed(run, "compare", compared)
    if (compared / "comparison.json").is_file():
        return compare
    cross_validate = _resumed(run, "cv", cv)
    if cv.name == _model_folder(run):
        return f"{cross_validate} (or, in a comparison, {compare})"
    return cross_validate


API_FUNCTIONS = {"train": "train", "cv": "cross_validate", "compare": "compare"}
"""The Python API function of each command that trains."""


def _resumed(run: Path, command: str, out: Path) -> str:
    """``covseg COMMAND`` into ``out`` resumed, as ``run``'s config.json records the run was
    started: its command line and --resume, or its API call and resume=True (whoever loads it
    may use the other); both where it records neither (a run of an earlier covseg)."""
    cli = (f"the `covseg {command} ... {shlex.join(['--out', str(out)])}` command that made "
           "it and --resume")
    api = (f'the covseg.{API_FUNCTIONS[command]}(..., out="{out}") call that made it and '
           "resume=True")
    try:
        recorded = json.loads((run / "config.json").read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        recorded = None  # unreadable: named both ways below
    if isinstance(recorded, str) and recorded.startswith(API_COMMAND):
        return api
    if isinstance(recorded, str) and recorded.startswith("covseg "):
        return cli
    return f"{cli} (from Python, {api})"


def _model_folder(fold: Path) -> str | None:
    """The folder name ``covseg compare`` gives the model the fold's run record names."""
    from covseg.compare import model_folder  # compare imports this module

    try:
        config = json.loads((fold / "config.json").read_text())["config"]
        options = ",".join(f"{key}={value}" for key, value in config["model_options"].items())
        return model_folder(f"{config['model']}:{options}" if options else config["model"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, CovsegError):
        return None  # an unreadable record: no comparison's folder name to compare


def _refuse_unfinished(run: Path) -> None:
    """Refuse a run folder whose training stopped before its end (its config.json written, its
    metrics.json, written last, not): a single network rewrites best.pt every epoch, so a
    killed run's best.pt was served as if trained. Its best.pt given by name is used as it is
    (training reads it so, before writing metrics.json)."""
    if not (run / "config.json").is_file() or (run / "metrics.json").is_file():
        return
    _refuse_in_training(run)
    if not (run / "best.pt").is_file():
        raise CovsegError(f"{run}: this run has no best.pt yet (stopped before its end?); "
                          f"finish it with {_finish_with(run)}")
    raise CovsegError(f"{run}: this run stopped before its end (no metrics.json: its best.pt "
                      f"holds the last epoch trained, not the whole recipe); finish it with "
                      f"{_finish_with(run)}, or give {run / 'best.pt'} to use those weights as "
                      "they are")


def _refuse_lost_model(run: Path) -> None:
    """Refuse a finished run whose best.pt is gone or damaged (:func:`lost_model`), saying how to
    get it back: a resume of the command that made it trains it again. It was told "no such
    checkpoint" or "not a covseg checkpoint; pass a run folder", of the run folder it was
    given, and a resume said there was nothing to do."""
    if not (run / "metrics.json").is_file():
        return
    lost = lost_model(run)
    if lost is not None:
        raise CovsegError(f"{run}: finished, but {lost}; train it again with "
                          f"{_finish_with(run)}")


def lost_model(run: Path) -> str | None:
    """Why the finished run ``run`` has no model to serve, None where it has: its best.pt gone,
    or damaged (it does not load, or is no covseg checkpoint: truncated, overwritten). One that
    is the file its metrics.json records (``best_sha256``) is not loaded to tell: hashed; one
    of a run finished before covseg kept the hash is loaded. Each once for each file identity
    (:func:`~covseg.io.facts.file_fact`): a cross-validation looks at each fold several times. A
    best.pt only unreadable to this user, or from a newer covseg, is sound: loading it says what
    to do."""
    from covseg.volumes import model_hash  # it imports this module

    best = run / "best.pt"
    if not best.is_file():
        return "its best.pt is gone"
    recorded = recorded_best_sha256(run)
    try:
        if recorded is not None and model_hash(str(best)) == recorded:
            return None
        return file_fact(best, "damage", _damage)
    except (PermissionError, CovsegError):  # unreadable to this user (the hash says so)
        return None


def _damage(best: Path) -> str | None:
    """How the file ``best`` (a run's best.pt) is damaged, None where it loads as a covseg
    checkpoint; a PermissionError where it cannot be read."""
    try:
        payload = torch.load(best, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except Exception as exc:  # noqa: BLE001  torch.load raises KeyError, UnpicklingError...
        return f"its best.pt is damaged ({torch_load_failure(exc)})"
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        return "its best.pt is damaged (no covseg header)"
    return None


def recorded_best_sha256(run: Path) -> str | None:
    """The SHA-256 of best.pt that the finished run ``run``'s metrics.json records, None where
    it records none (written before covseg kept it) or cannot be read."""
    recorded = (read_record(run / "metrics.json") or {}).get("best_sha256")
    return recorded if isinstance(recorded, str) else None


def _refuse_in_training(run: Path) -> None:
    """Refuse ``run`` where a covseg run is training it (one of :func:`_trainers` locked), naming
    that run, as it is no run stopped midway: "finish it with --resume" was then refused as
    another run writing there. Its weights so far are offered where saved: best.pt (the best
    epoch yet) and last.pt (the latest). A folder that is no run's (no config.json, nor a
    member's or fold's name: a predict's ``out``, say) is left to the caller's refusal."""
    if not ((run / "config.json").is_file() or MEMBER.fullmatch(run.name)
            or FOLD.fullmatch(run.name)):
        return
    by = trained_by(run)
    if by is None:
        return
    saved = [f"{run / name} ({what})" for name, what in (("best.pt", "the best epoch yet"),
                                                       ("last.pt", "the latest epoch"))
             if (run / name).is_file()]
    offer = f", or give {' or '.join(saved)} to use those weights as they are" if saved else ""
    raise CovsegError(f"{run}: still being trained ({by}); wait for it to end{offer}")


def trained_by(run: Path) -> str | None:
    """The covseg run training ``run`` now, as refusals name it: "pid N" where it holds
    ``run``'s own lock, "pid N, writing to FOLDER" where it holds its ensemble's,
    cross-validation's or comparison's (:func:`_trainers`); None where none does."""
    for folder in _trainers(run):
        pid = holder(folder)
        if pid is not None:
            return f"pid {pid}" if folder == run else f"pid {pid}, writing to {folder}"
    return None


def _trainers(run: Path) -> list[Path]:
    """The folders whose lock a command training ``run`` holds: its own; an ensemble member's
    ensemble's; a fold's cross-validation's, and its comparison's where it may be in one (as
    :func:`_finish_with` tells them)."""
    if MEMBER.fullmatch(run.name):
        return [run, *_trainers(run.parent)]
    if not FOLD.fullmatch(run.name):
        return [run]
    cv, compared = run.parent, run.parent.parent
    in_comparison = (compared / "comparison.json").is_file() or cv.name == _model_folder(run)
    return [run, cv, *([compared] if in_comparison else [])]


_WARNED_REPLACED: set[tuple[Path, str]] = set()
"""The (run, best.pt's SHA-256) pairs :func:`_warn_replaced` warned of in this process."""


def _warn_replaced(run: Path) -> None:
    """Warn in one line where ``run``'s best.pt is not the one its metrics.json describes (its
    ``best_sha256``): copied over since, its masks would be credited to the run's recipe and
    scores. Records written before covseg kept the hash are not checked. Once per process for
    each run and best.pt: a cascade's lung run is loaded by every network and test (a cv of
    two folds said it 7 times); best.pt is hashed once for each file identity
    (:func:`~covseg.volumes.model_hash`), not at every load."""
    from covseg.volumes import model_hash  # it imports this module

    recorded = recorded_best_sha256(run)
    if recorded is None:
        return
    actual = model_hash(str(run / "best.pt"))
    seen = (run.resolve(), actual or "")
    if actual is not None and actual != recorded and seen not in _WARNED_REPLACED:
        _WARNED_REPLACED.add(seen)
        log.warning("%s: best.pt (sha256 %s) is not the model its metrics.json describes "
                    "(best_sha256 %s): it was replaced since training, so the run's config.json "
                    "and metrics.json may not describe it", run, actual[:12], recorded[:12])


RETRAIN = "train the model again or pass another run"
"""What to do about a damaged checkpoint."""


NEW_MODEL = "train a model with `covseg train` and pass its run folder or best.pt"
"""What to do about a file that holds no covseg model."""


META_KEYS = ("model", "in_channels", "num_classes", "size")
"""What ``meta`` must hold to rebuild a network and feed it (every covseg run records them)."""


def _check_entries(path: Path, payload: dict[str, Any], advice: str | None) -> None:
    """Refuse a covseg-headed file without the weights or the meta that rebuild its network
    (edited or written by other code), which failed later with a KeyError traceback
    (``advice``: see :func:`load_checkpoint`)."""
    missing = [key for key in ("meta", "state_dict") if not isinstance(payload.get(key), dict)]
    if not missing:
        missing = [key for key in META_KEYS if key not in payload["meta"]]
    if missing:
        raise CovsegError(f"{path}: not a covseg checkpoint (no {missing[0]!r} entry); "
                          f"{advice or NEW_MODEL}")
    problem = meta_problem(payload["meta"])
    if problem:
        raise CovsegError(f"{path}: a damaged checkpoint (meta {problem}); "
                          f"{advice or RETRAIN}")
    unbuildable = _model_problem(payload["meta"])
    if unbuildable:
        raise CovsegError(f"{path}: a checkpoint of a network this covseg cannot build "
                          f"({unbuildable}): saved by another covseg version, or edited; load it "
                          f"with the covseg that trained it, or {advice or RETRAIN}")
    nan = next((key for key, value in payload["state_dict"].items()
                if isinstance(value, torch.Tensor) and torch.isnan(value).any()), None)
    if nan is not None:  # predicted NaN probabilities: empty masks, exit 0
        raise CovsegError(f"{path}: a damaged checkpoint (its weights {nan} hold NaN: a "
                          f"training that diverged, or a corrupt file); {advice or RETRAIN}")


def _model_problem(meta: dict[str, Any]) -> str | None:
    """What keeps ``meta``'s network from being built as recorded: a model name or an option
    the registry does not know. Said by the registry alone, it read as of the command line's
    --model ("unknown model 'x'; `covseg models` lists ..."), naming no file. A model whose
    package is missing is left to the build, which says what to install."""
    from covseg.models.registry import REGISTRY, check_options, member_names

    for name in member_names(meta["model"]):
        if name not in REGISTRY:
            return f"unknown model {name!r}; `covseg models` lists: {', '.join(REGISTRY)}"
        try:
            check_options(name, without_weights_file(meta.get("model_options", {})))
        except CovsegError as exc:
            return str(exc)
    return None


def meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with the settings a checkpoint's (or an exported model's) ``meta`` gives
    inference, None where nothing: a hand-edited or hostile file's threshold NaN or -1 wrote
    all-empty or all-lesion masks with exit 0, and a size of 0 or a flip named "zz" ended in
    a traceback; a size of 100000 in "out of memory", and a model name that is no string or a
    lung guide or frame of another shape in a traceback. Keys that old runs lack are left to
    their defaults."""
    from covseg.data.layouts import TARGETS  # both import modules that import this one
    from covseg.infer import FLIP_DIMS

    for key in ("in_channels", "size", "num_classes"):
        if not _whole(meta.get(key), 1):
            return f"{key}: {meta.get(key)!r}, not a positive whole number"
    if meta["size"] > MAX_SIZE:  # 100000 ended in "out of memory" at the first slice
        return f"size: {meta['size']!r}, not a canvas of at most {MAX_SIZE} px, covseg's largest"
    checks = {
        "model": (lambda v: isinstance(v, str) and v.strip() != "", "a model name"),
        "threshold": (lambda v: _number(v) and 0 < v < 1, "a number strictly between 0 and 1"),
        "flips": (lambda v: isinstance(v, (list, tuple)) and all(
            isinstance(name, str) and name in FLIP_DIMS for name in v),
            f"a list of mirrors from {sorted(FLIP_DIMS)}"),
        "test_flips": (lambda v: isinstance(v, bool), "true or false"),
        "window": (_window, "two finite numbers, the lower first"),
        "intensity": (lambda v: v in INTENSITY_MODES, f"one of {', '.join(INTENSITY_MODES)}"),
        "target": (lambda v: v is None or v in TARGETS, f"one of {', '.join(TARGETS)}"),
        "model_options": (lambda v: isinstance(v, dict), "an object of options"),
        "lung_guide": (lambda v: not v or (
            _fields(v, source=lambda s: isinstance(s, str), crop=lambda c: isinstance(c, bool),
                    window=_window)
            and all(isinstance(v.get(key, ""), str) for key in ("sha256", "relative"))),
                       ("null or an object of source (text), crop (true or false), window "
                        "(two numbers) and, where recorded, sha256 and relative (text)")),
        "lung_frame": (lambda v: not v or _fields(v, window=_window),
                       "null or an object of window (two numbers)"),
    }
    for key, (fits, wanted) in checks.items():
        if key in meta and not fits(meta[key]):
            return f"{key}: {meta[key]!r}, not {wanted}"
    return None


def _whole(value: Any, least: int) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _window(value: Any) -> bool:
    """Whether ``value`` is an HU window (:func:`covseg.config.check_window`'s rule: two
    finite numbers, the lower first)."""
    try:
        check_window(value)
    except CovsegError:
        return False
    return True


def _fields(value: Any, **fits: Callable[[Any], bool]) -> bool:
    """Whether ``value`` is a dict holding each of ``fits``' keys with a value that fits
    (a lung guide's or frame's meta, as :mod:`covseg.cascade` reads it back)."""
    return isinstance(value, dict) and all(key in value and fit(value[key])
                                           for key, fit in fits.items())


def _number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def model_from_checkpoint(payload: dict[str, Any]) -> nn.Module:
    """Rebuild the network recorded in ``payload['meta']`` and load its weights. Its initial
    weights draw from torch's global generator, which is given back as it was after the build, so
    a caller's seeded draws go on as if no model had been loaded (a torch draw another thread
    makes during the build is rewound with it)."""
    meta = payload["meta"]
    options = without_weights_file(meta.get("model_options", {}))
    with torch.random.fork_rng(devices=[]):
        model = build_model(meta["model"], meta["in_channels"], meta["num_classes"], **options)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise CovsegError(f"the saved weights do not fit {meta['model']} with options {options} "
                          "(a damaged checkpoint, or one from an incompatible covseg)") from None
    return model.eval()
