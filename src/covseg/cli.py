"""The ``covseg`` command line: one subcommand per step, each a thin call into :mod:`covseg.api`."""

from __future__ import annotations

import argparse
import codecs
import io
import itertools
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from tqdm import tqdm

from covseg import api, cli_models, cli_volumes
from covseg._mplconfig import settle_matplotlib_config
from covseg.checkpoint import resume_advice
from covseg.cluster import RAY_INSTALL
from covseg.compare import (
    FOLD_TEST,
    compared_mean,
    fold_test_text,
    known_spec,
    paired_difference_text,
    total_folds,
)
from covseg.config import MAX_SLICE_PASSES, RECIPE_EPOCHS, TrainConfig
from covseg.console import STDERR, StdoutFailed, flush_stdout, say, tell, write_stdout
from covseg.crossval import DEFAULT_FOLDS, mean_over_folds, reads_finished, shown
from covseg.data.layouts import TARGETS
from covseg.errors import (
    BatchFailed,
    CovsegError,
    NoWritableFolder,
    OutOfMemory,
    counted,
    is_out_of_memory,
    no_space,
    no_space_text,
    out_of_memory_text,
    terminal_safe,
    tmpdir_advice,
)
from covseg.evaluate import any_lesion
from covseg.export import onnx_install
from covseg.io.atomic import dangling_link, refuse_unexpanded_home
from covseg.io.facts import file_version
from covseg.losses import LOSSES
from covseg.models.registry import parse_option_value
from covseg.provenance import cli_command, invoked_as
from covseg.stopping import (
    Terminated,
    exit_status,
    raise_if_stopped,
    stop_word,
    stops_held,
    stops_recorded,
)
from covseg.train import AlreadyTrained, reads_trained
from covseg.transforms import (
    AUGMENTATIONS,
    AUTO_ADVICE,
    INTENSITY_MODES,
    LUNG_WINDOW,
    SCALE_NAMES,
)

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

log = logging.getLogger(__name__)

DEFAULTS = TrainConfig()
FOLDS_HELP = (f"number of folds (default {DEFAULT_FOLDS}; data that ship their own split files, "
              "MosMed's train_new*.txt, use those, and another count is refused)")
REPEATS_HELP = ("repeated k-fold: draw the K folds R times (default 1), K·R folds in all; repeat r "
                "is exactly the plain run with --seed SEED+r·K, so --resume with more repeats "
                "extends a finished run (refused for data with their own split files)")


def _model_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key, parse_option_value(value)


def _model_options(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The --model-option pairs as a dict; a key given twice is refused (the last one was
    taken without a word)."""
    options: dict[str, Any] = {}
    for key, value in pairs:
        if key in options:
            raise CovsegError(f"--model-option {key} given twice ({key}={options[key]}, "
                              f"{key}={value}); give each option once")
        options[key] = value
    return options


INTENSITY_HELP = ("how images are stored: auto reads each file's scale" + AUTO_ADVICE + "; "
                  + ", ".join(f"{mode}: {name}" for mode, name in SCALE_NAMES.items()))
"""--intensity's help: each mode, in the words its refusals use (auto read float [0, 1] slices
too, which "auto detects HU vs 8-bit" left out)."""


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="data folder (any supported layout) or 'synthetic[:SEED]'")
    parser.add_argument("--target", choices=TARGETS, default=DEFAULTS.target,
                        help="infection (binary), multiclass lesions, or lung "
                             "(default %(default)s)")
    parser.add_argument("--intensity", choices=INTENSITY_MODES, default=DEFAULTS.intensity,
                        help=f"{INTENSITY_HELP} (default %(default)s)")
    parser.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help=f"HU window for HU data (default: the lung window, "
                             f"{LUNG_WINDOW[0]:g} {LUNG_WINDOW[1]:g}; any given on 8-bit or "
                             "[0, 1] images, where it does nothing, is refused)")


RECIPE_NUMBERS: tuple[tuple[str, type, str, str], ...] = (
    ("epochs", int, "N", (f"training epochs (default {RECIPE_EPOCHS}, fewer above 100 training "
                          f"slices so that at most {MAX_SLICE_PASSES:,} slices are shown: about "
                          "25 min on 2 cores)")),
    ("batch_size", int, "N", "slices per step"),
    ("lr", float, "LR", "AdamW's peak learning rate, cosine decay"),
    ("weight_decay", float, "WD", "AdamW's weight decay"),
    ("size", int, "PX", "training canvas in px"),
    ("seed", int, "SEED", "seed of the weights, augmentation and splits"),
    ("cutmix", float, "P",
     "share P of batches mixed by CutMix (boxes swapped between slices; 0 = off)"),
    ("lesion_paste", float, "P", ("share P of slices given another slice's lesions, blended "
                                  "into their lungs (CarveMix-like; 0 = off)")),
    ("ema_decay", float, "D",
     "keep a moving average of the weights, decay D (e.g. 0.998 per step; 0 = off)"),
    ("val_fraction", float, "F", ("share F of patients held out to keep the best epoch; 0 "
                                  "trains on every slice and keeps the last")),
)
"""The numeric training options: name in TrainConfig, type, metavar (as docs/commands.md names
the value), help (the default is appended, unless it is None: then the help says what None
means)."""

RESUME_HELP = {
    "train": "continue an interrupted run in --out, with the same options and data",
    "cv": ("continue an interrupted cross-validation in --out: its finished folds are reused "
           "(without --resume an --out holding them is refused)"),
    "compare": ("continue an interrupted comparison in --out: its finished folds are reused "
                "(without --resume an --out holding them is refused)"),
}
"""--resume's help, by command: each says what it continues, train no folds."""


def _add_train_options(parser: argparse.ArgumentParser, command: str,
                       single_model: bool = True) -> None:
    """The options of ``command`` (train, cv or compare) that train networks."""
    _add_data_options(parser)
    parser.add_argument("--out", required=True, metavar="RUN" if command == "train" else "DIR",
                        help="output folder")
    if single_model:
        parser.add_argument("--model", default=DEFAULTS.model, metavar="NAME[,NAME]",
                            help="architecture (see `covseg models`), or a,b for an ensemble; "
                                 "default: %(default)s (two seeds, averaged)")
        parser.add_argument("--model-option", type=_model_option, action="append", default=[],
                            metavar="KEY=VALUE", help="architecture option, e.g. width=32 "
                                                      "(not for an ensemble that mixes "
                                                      "architectures)")
    for name, kind, metavar, text in RECIPE_NUMBERS:
        default = getattr(DEFAULTS, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default,
                            metavar=metavar,
                            help=text if default is None else f"{text} (default %(default)s)")
    parser.add_argument("--augment", choices=AUGMENTATIONS, default=DEFAULTS.augment,
                        help="augmentation preset (default %(default)s)")
    parser.add_argument("--loss", choices=LOSSES, default=DEFAULTS.loss,
                        help="training loss (default %(default)s; with --target multiclass "
                             "bce+dice is softmax cross-entropy + Dice, recorded as ce+dice)")
    parser.add_argument("--lung-guide", default=DEFAULTS.lung_guide, metavar="none|threshold|RUN",
                        help="cascade: add a lung channel from HU thresholding or a lung model run")
    parser.add_argument("--crop-lungs", action="store_true",
                        help="cascade: crop to the lungs' box before the infection model")
    parser.add_argument("--frame-lungs", action=argparse.BooleanOptionalAction, default=None,
                        help="cut whole CT frames to their lungs' box, as Inf-Net's slices are "
                             f"(default {DEFAULTS.frame_lungs}; lung models and --lung-guide "
                             "runs never frame, record false, and refuse --frame-lungs)")
    parser.add_argument("--test-flips", action=argparse.BooleanOptionalAction,
                        default=DEFAULTS.test_flips,
                        help="the run predicts as the mean over the mirrored slices "
                             "(default %(default)s)")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="binary decision threshold on the predicted probability, of "
                             "infection or, with --target lung, of lung (default "
                             f"{DEFAULTS.threshold}); multi-class models take the most probable "
                             "class and refuse one")
    parser.add_argument("--resume", action="store_true", help=RESUME_HELP[command])


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": getattr(args, "model", DEFAULTS.model),
        "model_options": _model_options(getattr(args, "model_option", [])),
        "target": args.target,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "size": args.size,
        "seed": args.seed, "augment": args.augment, "loss": args.loss,
        "cutmix": args.cutmix, "lesion_paste": args.lesion_paste, "ema_decay": args.ema_decay,
        "val_fraction": args.val_fraction, "intensity": args.intensity,
        "window": _window(args), "lung_guide": args.lung_guide,
        "crop_lungs": args.crop_lungs, "test_flips": args.test_flips,
        "threshold": args.threshold,
        **({} if args.frame_lungs is None else {"frame_lungs": args.frame_lungs}),
    }


def _window(args: argparse.Namespace) -> tuple[float, float] | None:
    """``--window`` as given, or None when left out: the API reads the lung window then, and
    refuses only a window given on grey images."""
    return None if args.window is None else tuple(args.window)


def cmd_visualize(args: argparse.Namespace) -> int:
    path = api.visualize(args.data, args.out, n=args.n, target=args.target, seed=args.seed,
                         intensity=args.intensity, window=_window(args))
    say(f"wrote {path}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    info = api.data_info(args.data, target=args.target, intensity=args.intensity,
                         window=_window(args))
    if args.json:
        say(json.dumps(info, indent=2))
        return 0
    window = (f"window {info['window'][0]:g} {info['window'][1]:g}" if info["window"]
              else "no window (8-bit or [0, 1] values, read as they are)")
    say(f"{info['kind']} at {info['data_path']} (layout {info['layout']}): "
          f"{counted(info['slices'], 'slice')} ({info['labelled_slices']} labelled), "
          f"{counted(info['cases'], 'case')}, {counted(info['patients'], 'patient')}")
    say(f"read as: target {info['target']} ({info['num_classes']} classes), intensity "
          f"{info['intensity']}, {window}; HD95 in {info['hd95_unit']}")
    shipped = info["shipped_folds"]
    say(f"cv folds: the data's own split files ({counted(shipped, 'fold')})" if shipped
          else "cv folds: drawn by covseg (no split files found beside the data)")
    say(f"data_fingerprint {info['data_fingerprint']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    metrics = api.train(args.data, args.out, resume=args.resume, **_config(args))
    if isinstance(metrics, AlreadyTrained):
        return _nothing_to_do(args.out, "trained", counted(metrics["epochs"], "epoch"), metrics)
    dice = metrics.get("validation", {}).get("dice", {}).get("mean")
    name = any_lesion("Dice", args.target == "multiclass")
    shown = f"validation {name} {dice:.3f}" if dice is not None else "no validation split"
    say(f"trained {counted(metrics['epochs'], 'epoch')} ({shown}); run in {args.out}")
    return 0


def _nothing_to_do(out: str, done: str, what: str, record: Mapping[str, Any]) -> int:
    """Say that a --resume found the run in ``out`` finished (``done``: as what, ``what`` it
    holds; ``record``: the record it wrote last, an :class:`~covseg.train.AlreadyTrained`) and,
    its recipe and data checked, left every file as it was; exit 0, as the work is done."""
    when = f", finished {record['finished_utc']}" if record.get("finished_utc") else ""
    say(f"{out}: already {done} ({what}{when}); nothing to do")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    summary = api.cross_validate(args.data, args.out, folds=args.folds, resume=args.resume,
                                 fold=args.fold, ray=args.ray, repeats=args.repeats,
                                 cpus_per_fold=args.cpus_per_fold, **_config(args))
    if isinstance(summary, AlreadyTrained):
        return _nothing_to_do(args.out, "cross-validated",
                              counted(len(summary["per_fold"]), "fold"), summary)
    if args.fold is not None:
        dice = shown(summary["summary"].get("dice", {}).get("mean"))
        # a finished cross-validation's summary is written already (and holds this fold)
        then = (f"every fold is done and the summary written ({Path(args.out) / 'summary.json'})"
                if reads_finished(Path(args.out), args.folds, args.repeats) else
                "once every fold is done, the same command without --fold (and with --resume) "
                "writes the summary")
        say(f"fold {args.fold}: {any_lesion('Dice', args.target == 'multiclass')} {dice} on "
              f"{counted(summary['test_cases'], 'slice')}; {then}")
        return 0
    folds = len(summary["per_fold"])
    say(f"{any_lesion('Dice', args.target == 'multiclass')} "
          f"{mean_over_folds(summary['mean_std_over_folds']['dice'], folds)} over {folds} "
          f"folds; report in {args.out}/report.md")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    config = _config(args)
    config.pop("model")
    config.pop("model_options")
    result = api.compare(args.data, args.models, args.out, folds=args.folds, resume=args.resume,
                         repeats=args.repeats, **config)
    if isinstance(result, AlreadyTrained):
        return _nothing_to_do(args.out, "compared", f"{counted(len(result['models']), 'model')} "
                              f"over {counted(total_folds(result), 'fold')}", result)
    for row in result["models"]:
        test = row.get("wilcoxon_vs_baseline")
        p_value = (f", paired Δ (95 % CI) {paired_difference_text(test)}"
                   f", p = {test['p_value']:.3g}"
                   + (f" (Holm {test['p_holm']:.3g})" if "p_holm" in test else "")
                   + f" vs {result['baseline']} over "
                   f"{counted(test['pairs'], test.get('unit', 'slice'))} (these trained "
                   "networks; training variation not included)"
                   + (f"; {test['note']}" if test.get("note") else "")
                   + f"; over {counted(row[FOLD_TEST]['folds'], 'fold')} (corrected t, training "
                   f"variation included) p = {fold_test_text(row[FOLD_TEST])}" if test
                   else " (baseline)")
        say(f"{row['model']}: {any_lesion('Dice', args.target == 'multiclass')} "
              f"{compared_mean(row['dice'], result)}{p_value}")
    say(f"report in {args.out}/comparison.md")
    return 0


def _predict_model(args: argparse.Namespace) -> str:
    """``--model`` (a run folder or checkpoint, or an .onnx file as the API's ``model`` takes),
    or ``--onnx``, which must be an .onnx file: a run folder there would quietly run PyTorch."""
    if args.onnx is not None and not args.onnx.lower().endswith(".onnx"):
        raise CovsegError(f"--onnx {args.onnx}: not an .onnx file; give one written by `covseg "
                          "export`, or pass a run folder or checkpoint as --model")
    return args.model or args.onnx


def cmd_predict(args: argparse.Namespace) -> int:
    model = _predict_model(args)
    for item in args.inputs:  # CT volumes go on to predict_batch, past the API's check
        refuse_unexpanded_home(item)
    kinds = [api.input_kind(Path(item)) for item in args.inputs]
    if api.VOLUMES in kinds:  # 2D images go on to api.predict, which checks --out itself
        api.checked_out(args.out, held=api.VOLUME_MASKS)
        if api.IMAGES in kinds:
            image, volume = (args.inputs[kinds.index(kind)] for kind in (api.IMAGES, api.VOLUMES))
            raise CovsegError(f"give either 2D images or CT volumes to one predict call, not both "
                              f"({image}: 2D images; {volume}: CT volumes)")
        if args.overlay:
            raise CovsegError("--overlay: for 2D images only; CT volumes get montage.png with "
                              "overlays (and report.html with --html)")
        predictor, lungs = api.load_volume_predictors(model, args.lung_model,
                                                      args.batch_size, args.tta, args.threshold)
        return cli_volumes.run_volume_predict(args, predictor, args.inputs, lungs)
    cli_volumes.refuse_volume_options(args)
    written = api.predict(model, args.inputs, args.out, overlay=args.overlay,
                          batch_size=args.batch_size, tta=args.tta, threshold=args.threshold)
    overlays = f" and their overlays to {Path(args.out) / 'overlays'}" if args.overlay else ""
    say(f"wrote {len(written)} mask(s) to {args.out}{overlays}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    say(f"wrote {api.export(args.model, args.out)}")
    return 0


EVALUATE_NOTES = {
    "missing_predictions": ("truth", ("whose input predict recorded as failed or wrote no mask "
                                      "of, scored as an empty prediction")),
    "unmatched_predictions": ("prediction", "without a truth, not scored"),
    "unmatched_truths": ("truth", "without a prediction (not given to this predict), not scored"),
    "pending_truths": ("truth", ("pending in the predict that did not finish (not done when it "
                                 "stopped, or still running), not scored")),
    "skipped_images": ("file", ("among the masks, no mask of labels, not scored (named as an "
                                "image beside its mask, or by its levels an image, a soft "
                                "mask or a lossy mask of several classes: see the warnings "
                                "above)")),
}
"""The name lists of an evaluation said on the console: the noun each counts, what it holds."""


def _mean_std(stats: dict[str, float]) -> str:
    """``mean ± std`` of a metric over the cases that define it, said to be the sample SD (as
    the record's ``std_note`` says), with no spread from one case (null: none measured)."""
    if stats["n"] < 2:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f} (mean ± sample SD)"


def cmd_evaluate(args: argparse.Namespace) -> int:
    result = api.evaluate(args.pred, args.truth, args.out, per_slice=args.per_slice)
    summary = result["summary"]
    dice = summary["dice"]
    per_class = [f"{key.removesuffix('_dice')} {summary[key]['mean']:.3f}"
                 for key in summary if key.endswith("_dice") and summary[key]["n"]]
    scores = (f"Dice (any lesion) {_mean_std(dice)}; per class: {', '.join(per_class)}"
              if result["num_classes"] > 2 else f"Dice {_mean_std(dice)}")
    wrote = ", ".join(result["files"].values())
    say(f"{counted(result['cases'], 'case')}, {scores}; wrote {wrote}")
    for key, (noun, what) in EVALUATE_NOTES.items():
        names = result[key]
        if key == "unmatched_truths" and not result["predict_record"]:
            what = "without a prediction of that name, not scored"
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5
                                            else "")
            log.warning("%s %s: %s", counted(len(names), noun), what, shown)
    if result["classes_note"]:
        log.warning("%s", result["classes_note"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    summary = api.demo(args.out, folds=args.folds, epochs=args.epochs)
    dice = mean_over_folds(summary["mean_std_over_folds"]["dice"], len(summary["per_fold"]))
    out = Path(args.out)
    box_plot = out / "cv" / "dice_boxplot.png"  # none where it was not drawn (a warning)
    say(f"SYNTHETIC demo done in {summary['demo_seconds']:.0f} s: Dice {dice}"
        f"\n  samples: {out / 'samples.png'}\n  report:  {out / 'cv' / 'report.md'}"
        + (f"\n  box plot: {box_plot}" if box_plot.is_file() else "")
        + f"\n  folds:   {out / 'cv' / 'fold_*'}{os.sep}")
    return 0


MISSING = "the following arguments are required: "
"""How argparse begins its error for required arguments not given."""


def swallowed_data(message: str, argv: Sequence[str]) -> str | None:
    """For argparse's error ``message`` on ``argv`` (a subcommand's arguments): when DATA is
    missing because ``--models`` (any number of names) took it as its last model, which is an
    existing path or no registered model, a one-line message saying so; else None."""
    if not message.startswith(MISSING) or "--models" not in argv:
        return None
    missing = message.removeprefix(MISSING).split(", ")
    start = len(argv) - argv[::-1].index("--models")
    given = list(itertools.takewhile(lambda arg: not arg.startswith("-"), argv[start:]))
    if "data" not in missing or not given or (known_spec(given[-1])
                                              and not Path(given[-1]).exists()):
        return None
    also = [name for name in missing if name != "data"]
    return (f"DATA was read as a model name after --models ({given[-1]}): put the data folder "
            "before --models (or end the list with --)"
            + (f"; also required: {', '.join(also)}" if also else ""))


def empty_argument(argv: Sequence[str]) -> str | None:
    """What is wrong with an empty argument of ``argv`` (``--out ""``, ``--out=``), or None
    where there is none: every covseg argument is a path, name or number, and an empty path is
    the current folder, where ``--out ""`` wrote its files unasked."""
    for index, arg in enumerate(argv):
        option = arg[:-1] if arg.startswith("--") and arg.endswith("=") else None
        if arg == "" and index and argv[index - 1].startswith("--"):
            option = argv[index - 1]
        if option:
            return (f"{option} is empty; give it a value (for a path, \".\" is the current "
                    "folder)")
        if arg == "":
            return "an argument is empty (\"\"); give a path or drop it"
    return None


def options_after_dashes(argv: Sequence[str]) -> str | None:
    """When argparse failed on ``argv`` (a subcommand's arguments) and options follow a ``--``,
    which makes everything after it positional (``compare --models unet miniseg -- DATA --out
    X`` read --out X as data and said "--out is required"), a one-line message saying so and
    where they go instead; else None."""
    if "--" not in argv:
        return None
    options = [arg for arg in argv[argv.index("--") + 1:] if arg.startswith("-") and arg != "-"]
    if not options:
        return None
    where = "before --models" if "--models" in argv else "before the `--`"
    return (f"{', '.join(options)} after `--` were read as data, not as options (all after "
            f"`--` is): give the options {where}")


def dash_named_path(argv: Sequence[str]) -> str | None:
    """When argparse failed on ``argv`` and an argument before any ``--`` that begins with
    ``-`` is an existing path (``predict -scan.nii.gz``, read as an unknown option, so that
    argparse said "the following arguments are required: inputs"), a one-line message saying
    how to give it; else None."""
    before = argv[:argv.index("--")] if "--" in argv else argv
    named = next((arg for arg in before if arg.startswith("-") and arg != "-"
                  and not NEGATIVE_NUMBER.match(arg) and os.path.lexists(arg)), None)
    if named is None:
        return None
    return (f"{named}: a path beginning with '-' is read as an option; write "
            f"{os.path.join('.', named)}, or give it last, after `--`")


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
"""An argument read as a negative number, not an option: argparse's own pattern has no exponent,
so ``--window -1e3 150`` said "expected 2 arguments"."""


RUN_MODEL = "give --model RUN, a run folder from `covseg train` (covseg ships no trained weights)"
"""What lungmask's ``--modelname``/``-m`` (R231, LTRCLobes: weights it ships) is in covseg."""

FOLDER_OUT = ("give --out DIR, a folder (masks go to DIR/STUDY/ for volumes, DIR/IMAGE.png for "
              "2D images)")
"""What lungmask's ``-o`` (a mask file) is in covseg's predict."""

NO_HU = "give --hu no (8-bit grey images; the default, --hu auto, tells them from HU)"
"""What lungmask's ``--noHU`` is in covseg's predict and quantify (its --image)."""

LUNGMASK_OPTIONS = {
    "predict": {
        "--noHU": NO_HU,
        "--batchsize": "give --batch-size N",
        "--cpu": "drop it: covseg runs on the CPU, and has no device option",
        "--modelname": RUN_MODEL,
        "-m": RUN_MODEL,
        "-i": "give the inputs as they are (covseg predict CT.nii.gz --model RUN --out DIR)",
        "-o": FOLDER_OUT,
    },
    "quantify": {
        "--noHU": NO_HU,
        "-o": "give --out DIR, a folder (results go to DIR/STUDY/ and DIR/summary.csv)",
    },
}
"""lungmask's options a user of it types, and covseg's for each, by the command they are given
to (argparse only said "unrecognized arguments"): only predict and quantify, which do what
lungmask does; another command's own options differ (train's --model is an architecture)."""


def lungmask_option(argv: Sequence[str], command: str) -> str | None:
    """What to give instead of the first lungmask option in ``argv`` given to ``command``
    (:data:`LUNGMASK_OPTIONS`), as a one-line message; None where there is none."""
    options = LUNGMASK_OPTIONS.get(command, {})
    given = next((arg.partition("=")[0] for arg in argv
                  if arg.partition("=")[0] in options), None)
    if given is None:
        return None
    return f"{given} is lungmask's option, not covseg's: {options[given]}"


TWICE_ADVICE = {
    ("--model", "train"): "for an ensemble join the names: --model {0},{1}",
    ("--model", "cv"): "for an ensemble join the names: --model {0},{1}",
    ("--model", "predict"): api.NO_PREDICT_ENSEMBLE,
}
"""What to do where an option was given twice, by (option, command), beyond giving it once."""


def _refuse_twice(parser: argparse.ArgumentParser, dest: str, option: str | None,
                  value: Any) -> None:
    """Refuse ``option`` given ``value`` where an option of the same ``dest`` was given
    already (argparse kept the last without a word: ``predict --model A --model B`` ran B
    alone, ``--tta --no-tta`` ran without); note it given otherwise. ``value``: None for a
    switch, which takes none."""
    if not option:
        return
    given = cast("_Parser", parser)._given
    if dest in given:
        before, then_value = given[dest]
        if before != option:  # a switch's two forms: --tta --no-tta
            parser.error(f"{before} and {option} both given: give one of them")
        if value is None:  # a switch
            parser.error(f"{option} given twice: give it once")
        first, second = (" ".join(map(str, shown)) if isinstance(shown, list) else str(shown)
                         for shown in (then_value, value))
        advice = TWICE_ADVICE.get((option, parser.prog.rpartition(" ")[2]))
        then = f"; {advice.format(first, second)}" if advice else ""
        parser.error(f"{option} given twice ({first}, {second}): give it once{then}")
    given[dest] = (option, value)


class _Once(argparse.Action):
    """The default action of covseg's parsers: an option's value, refused when the option is
    given twice (:func:`_refuse_twice`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        _refuse_twice(parser, self.dest, option_string, values)
        setattr(namespace, self.dest, values)


class _OnceFlag(argparse.Action):
    """A switch of covseg's parsers, before argparse's action it is mixed into: given twice
    it is refused (:class:`_Once`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        _refuse_twice(parser, self.dest, option_string, None)
        super().__call__(parser, namespace, values, option_string)


class _OnceTrue(_OnceFlag, argparse._StoreTrueAction):
    """``store_true`` in covseg's parsers: a switch given twice is refused."""


class _OnceSwitch(_OnceFlag, argparse.BooleanOptionalAction):
    """A ``--x``/``--no-x`` switch in covseg's parsers: given twice, in either form, refused."""


class _Parser(argparse.ArgumentParser):
    """Options by their full names only: argparse would take ``--model`` for compare's
    ``--models`` and silently replace the list. Subcommand parsers are of this class too.
    An option given twice is refused (:class:`_Once`), a switch too, in either of its forms
    (``--tta --no-tta``): ``store_true`` and argparse's BooleanOptionalAction are covseg's
    :class:`_OnceTrue` and :class:`_OnceSwitch` here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})
        self._argv: list[str] = []
        self._given: dict[str, Any] = {}
        self._negative_number_matcher = NEGATIVE_NUMBER
        self.register("action", None, _Once)
        self.register("action", "store", _Once)
        self.register("action", "store_true", _OnceTrue)
        self.register("action", argparse.BooleanOptionalAction, _OnceSwitch)

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None
                         ) -> tuple[Any, list[str]]:
        """As argparse, keeping the arguments for :meth:`error` (see :func:`swallowed_data`);
        ``namespace`` as argparse takes it (its own class, or any object)."""
        self._argv = list(sys.argv[1:] if args is None else args)
        self._given = {}
        return super().parse_known_args(None if args is None else self._argv, namespace)

    def error(self, message: str) -> NoReturn:
        """One line, as covseg's own errors (``covseg: error: ...``, whichever parser refused
        it: a subcommand's said ``covseg train: error:``), with where to find the usage
        (argparse prints the whole usage block first)."""
        command_prog = self._command_prog()
        usage = command_prog if message.startswith("unrecognized") else self.prog
        command = command_prog.rpartition(" ")[2]
        message = (lungmask_option(self._argv, command) or swallowed_data(message, self._argv)
                   or options_after_dashes(self._argv) or dash_named_path(self._argv)
                   or message)
        self.exit(2, f"covseg: error: {message} (see `{usage} -h`)\n")

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        """As argparse, but a failed write of --help or --version to stdout raises
        :class:`~covseg.console.StdoutFailed` (argparse drops it: ``covseg --help > /dev/full``
        exited 0 with nothing written), and a closed stdout (``>&-``) ends as a reader gone
        (:func:`~covseg.console.write_stdout`)."""
        if file is not sys.stdout or not message:
            super()._print_message(message, file)
            return
        write_stdout(message)

    def _command_prog(self) -> str:
        """The prog of the subcommand the arguments name, down to a nested one (``covseg
        models``, ``covseg data info``), else this parser's: argparse reports a subcommand's
        unrecognised arguments from the top parser, whose usage does not list that command's
        options (nor does ``covseg data``'s list info's)."""
        parser: argparse.ArgumentParser = self
        args = self._argv
        while True:
            commands = next((action.choices for action in parser._actions
                             if isinstance(action, argparse._SubParsersAction)), {})
            command = next((arg for arg in args if not arg.startswith("-")), None)
            if command not in commands:
                return parser.prog
            parser = commands[command]
            args = args[args.index(command) + 1:]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="covseg", description="Segment COVID-19 lung infection and the lungs on chest CT: "
        "train, cross-validate, compare, predict, export and quantify. "
        "`covseg COMMAND -h` for each.",
        epilog="Progress bars go to stderr; TQDM_DISABLE=1 in the environment turns them off. "
        "In a log file, a pipe or a terminal that cannot move its cursor (TERM=dumb) a bar is "
        "a plain line per update, at most every 30 s.")
    parser.add_argument("--version", action="version",
                        version=f"covseg {version('covseg')} (torch {version('torch')})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("visualize", help="PNG grid of slices with their masks")
    _add_data_options(p)
    p.add_argument("--out", required=True, metavar="PNG", help="PNG file to write")
    p.add_argument("--n", type=int, default=8, metavar="N",
                   help=f"number of slices (default %(default)s, at most {api.MAX_GRID_SAMPLES})")
    p.add_argument("--seed", type=int, default=0, metavar="SEED",
                   help="seed of the order the slices are drawn in, lesion-bearing ones first "
                        "(default %(default)s): another seed shows other slices")
    p.set_defaults(handler=cmd_visualize)

    p = sub.add_parser("train", help="train a model (default: two MiniSeg networks, averaged)")
    _add_train_options(p, "train")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("cv", help="k-fold cross-validation grouped by patient")
    _add_train_options(p, "cv")
    p.add_argument("--folds", type=int, metavar="K", help=FOLDS_HELP)
    p.add_argument("--repeats", type=int, default=1, metavar="R", help=REPEATS_HELP)
    p.add_argument("--fold", type=int, metavar="K",
                   help="run only fold K (0-based, of all K·R folds with --repeats; with split "
                        "files the K-th pair in number order: fold 0 is train_new1.txt), e.g. "
                        "one per core with OMP_NUM_THREADS=1")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run the folds as Ray tasks: 'local' starts Ray on this machine, else a "
                        "cluster's address (auto, HOST:PORT); --out must be on a disk every "
                        f"node sees (needs `{RAY_INSTALL}`)")
    p.add_argument("--cpus-per-fold", type=int, metavar="N",
                   help="CPUs each fold's Ray task takes (default: one per network trained)")
    p.set_defaults(handler=cmd_cv)

    p = sub.add_parser("compare", help="cross-validate several models on identical folds",
                       usage="%(prog)s DATA --models NAME[:KEY=VALUE,...] [NAME ...] --out DIR "
                             "[options]")
    _add_train_options(p, "compare", single_model=False)
    p.add_argument("--models", nargs="+", required=True, metavar="NAME[:KEY=VALUE,...]",
                   help="models to compare; the first is the baseline (e.g. unet resunet); "
                        "they take every name up to the next option, so give DATA before "
                        "--models (or end the list with -- DATA, every option before "
                        "--models: all after -- is read as DATA)")
    p.add_argument("--folds", type=int, metavar="K", help=FOLDS_HELP)
    p.add_argument("--repeats", type=int, default=1, metavar="R", help=REPEATS_HELP)
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("predict", help="masks for 2D images (PNG) or CT volumes (NIfTI + report)")
    p.add_argument("inputs", nargs="+",
                   help="2D images (png, jpg, tif, npy) or folders of them; or CT volumes: "
                        "NIfTI, NRRD or MetaImage files, DICOM files or series folders, or "
                        "folders of these")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="RUN",
                        help="run folder or checkpoint from `covseg train` (an .onnx file runs "
                             "on ONNX Runtime, as with --onnx)")
    source.add_argument("--onnx", metavar="ONNX",
                        help="ONNX file from `covseg export` (runs on ONNX Runtime; needs "
                             f"`{onnx_install('onnxruntime')}`)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (2D masks: 0/255, or a multi-class model's labels 0..3)")
    p.add_argument("--overlay", action="store_true", help="also write overlays/*.png")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="slices per forward pass (default %(default)s)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average over the run's mirrored predictions (default: as the run was "
                        "trained to predict; covseg's recipe mirrors both ways)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="infection from this probability on (default: the run's, 0.4 for "
                        "covseg's recipe, chosen by cross-validation; higher calls less on "
                        "healthy lungs and loses some Dice on infected ones)")
    cli_volumes.add_volume_predict_arguments(p)
    p.set_defaults(handler=cmd_predict)

    needs = f"needs `{onnx_install('onnx', 'onnxscript')}`"
    p = sub.add_parser("export", help=f"export a trained model to ONNX ({needs})",
                       description=f"Export a trained model to ONNX ({needs}).")
    p.add_argument("--model", required=True, metavar="RUN", help="run folder or checkpoint")
    p.add_argument("--out", required=True, metavar="ONNX", help="ONNX file to write")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("evaluate", help="metrics of predicted masks against the truth")
    p.add_argument("--pred", required=True, metavar="DIR",
                   help="folder of predicted masks, or one mask file")
    p.add_argument("--truth", required=True, metavar="DIR",
                   help="folder of true masks (named as the predictions, _mask/_seg aside), "
                        "or one mask file")
    p.add_argument("--per-slice", action="store_true",
                   help="score each axial slice of volumes (NIfTI, NRRD, MetaImage) as its own "
                        "case (a stack of independent slices, as MedSeg's tr_mask.nii.gz), "
                        "named by the file's "
                        "slice index (tr#007): the mean per-slice Dice, a slice empty in both "
                        "counting as 1; refused for 2D masks, each one slice already")
    p.add_argument("--out", required=True, metavar="NAME",
                   help="output name (NAME.json, NAME.csv and a NAME.png box plot; a folder holds "
                        "evaluation.*), outside the mask folders")
    p.set_defaults(handler=cmd_evaluate)

    cli_models.register(sub)
    data_commands = cli_volumes.register(sub)
    p = data_commands.add_parser(
        "info", help="layout, counts and data fingerprint of a data folder",
        description="What a data folder holds, read as training reads it: layout, slices, "
                    "cases, patients, and the data_fingerprint a run's config.json records, to "
                    "check 'same data' without training.")
    _add_data_options(p)
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(handler=cmd_data_info)

    p = sub.add_parser("demo", help="synthetic data -> cross-validation -> report, in minutes")
    p.add_argument("--out", default="covseg-demo", metavar="DIR",
                   help="output folder (default %(default)s)")
    p.add_argument("--folds", type=int, default=api.DEMO_FOLDS, metavar="K",
                   help="cross-validation folds (default %(default)s, at most "
                        f"{api.DEMO_PATIENTS}, the synthetic patients)")
    p.add_argument("--epochs", type=int, default=api.DEMO_EPOCHS, metavar="N",
                   help="training epochs per fold (default %(default)s; 1 for a smoke test)")
    p.set_defaults(handler=cmd_demo)
    return parser


RERUN_HINTS = {
    "predict": ("rerun the same command to continue (CT studies already done are skipped; "
                "2D images are predicted again)"),
    "quantify": "rerun the same command to continue (studies already done are skipped)",
    "demo": "rerun the same command to continue",
}
"""What to do after a stopped command, for the commands that continue by a plain rerun (train,
cv and compare: :func:`~covseg.checkpoint.resume_advice`)."""


def _rerun_hint(args: argparse.Namespace) -> str:
    """What to do after ``args``' command stopped (:data:`RERUN_HINTS`); a train, cv or compare
    goes on with --resume only where its ``--out`` is left (:func:`resume_advice`)."""
    if args.command in ("train", "cv", "compare"):
        return resume_advice(args.out)
    return RERUN_HINTS.get(args.command, "rerun the same command")


def _last_record(args: argparse.Namespace) -> Path | None:
    """The record a train or a whole cv writes last (its metrics.json, summary.json), once its
    run is finished; None for the other commands."""
    if args.command == "train":
        return Path(args.out) / "metrics.json"
    if args.command == "cv" and args.fold is None:
        return Path(args.out) / "summary.json"
    return None


def _finished_before_stop(args: argparse.Namespace, begun: tuple[int, int] | None) -> str | None:
    """The stop line's end for a train or a whole cv stopped once it had finished: this command
    wrote its last record (:func:`_last_record`; ``begun``, its version as the command began,
    :func:`~covseg.io.facts.file_version`) and the run reads finished
    (:func:`~covseg.train.reads_trained`, :func:`~covseg.crossval.reads_finished`). It said to
    rerun with --resume, which then had nothing to do. None where a --resume has work left;
    also for a record there before the command (a fresh train into a finished run's folder,
    refused; a cv --resume of other folds, refused), and for compare, whose finished
    comparison is judged against the models and folds of its data, not read here."""
    record = _last_record(args)
    if record is None or file_version(record) in (None, begun):
        return None
    out = Path(args.out)
    finished = (reads_trained(out) if args.command == "train"
                else reads_finished(out, args.folds, args.repeats))
    if not finished:
        return None
    return f"the run had finished ({record} was written before the stop): nothing to resume"


STDOUT_CLOSED = 141
"""Exit status when the reader of stdout has gone (``covseg models | true``): 128 + SIGPIPE,
as a tool that SIGPIPE ends has; also a closed stdout (``covseg models >&-``)."""

STDOUT_FAILED = 1
"""Exit status when stdout cannot be written (``covseg models > /dev/full``): the command's
lines are lost, not its files."""


CONSOLE_ERRORS = "covseg-console"
"""The encoding error handler of covseg's console lines (:func:`_console_text`)."""

PLAIN = {"±": "+/-", "Δ": "delta", "—": "-", "–": "-", "×": "x", "…": "..."}
"""ASCII for the characters covseg's console lines use, where the console cannot show them."""


def _console_text(error: UnicodeError) -> tuple[str | bytes, int]:
    """What a console that cannot encode ``error``'s characters gets instead: a file name's
    undecodable bytes as they are (as ``ls`` writes them), ``±`` as ``+/-``, else ``\\xb1``
    escapes. A finished ``evaluate`` or ``cv`` ended in a traceback (exit 1) on its summary line
    under ``PYTHONIOENCODING=ascii``."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start:error.end]
    if all("\udc80" <= char <= "\udcff" for char in text):
        return bytes(ord(char) - 0xDC00 for char in text), error.end
    return "".join(PLAIN.get(char) or char.encode("ascii", "backslashreplace").decode("ascii")
                   for char in text), error.end


codecs.register_error(CONSOLE_ERRORS, _console_text)


def _tolerant_console() -> None:
    """Have stdout and stderr write what they cannot encode as :func:`_console_text` says, not
    raise (streams that are no text files, a notebook's, are left alone)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with suppress(ValueError, OSError):  # closed, or a reader gone
                stream.reconfigure(errors=CONSOLE_ERRORS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: bad input ends with one line on stderr and exit status 2 (a batch with
    failed inputs, the others written: 1); Ctrl-C, SIGTERM and SIGHUP unwind (temporary files
    removed, ensemble members stopped) and exit 130 / 143 / 129; a closed stdout pipe ends
    quietly with :data:`STDOUT_CLOSED`. A character the console cannot encode never fails a
    command (:func:`_console_text`)."""
    _tolerant_console()
    try:
        try:
            return _run(argv)
        finally:
            flush_stdout()  # also after --help, whose failed write argparse drops
    except BrokenPipeError:
        _drop_stdout()
        return STDOUT_CLOSED
    except StdoutFailed as exc:
        _drop_stdout()
        _error(exc)
        return STDOUT_FAILED


def _drop_stdout() -> None:
    """Point stdout at nothing: Python flushes it again at exit, and would warn of the lines
    it still holds (nothing where stdout is closed, or no file: captured, replaced)."""
    if sys.stdout is not None:
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class _AboveProgressBars(logging.Handler):
    """covseg's warnings on lines of their own above the progress bars (tqdm's ``write``), as
    ``covseg: warning: ...``: Python's fallback handler printed them onto the end of the bar's
    line, where they were easy to miss. Not tqdm's ``logging_redirect_tqdm``: it only swaps
    the console handlers a logger already has, and covseg's has none (nor the prefix)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(terminal_safe(f"covseg: {record.levelname.lower()}: "
                                     f"{record.getMessage()}"), file=STDERR)
        except Exception:  # noqa: BLE001 - logging's own contract: never raise from emit
            self.handleError(record)


def _run(argv: Sequence[str] | None) -> int:
    """Parse the command line and run the command, turning its errors into exit statuses."""
    empty = empty_argument(sys.argv[1:] if argv is None else argv)
    if empty:
        _error(empty)
        return 2
    args = build_parser().parse_args(argv)
    record = _last_record(args)
    begun = None if record is None else file_version(record)
    logger, handler = logging.getLogger("covseg"), _AboveProgressBars(logging.WARNING)
    logger.addHandler(handler)
    try:
        settle_matplotlib_config()  # monai imports matplotlib with itself: refused in one line
        with stops_recorded(), invoked_as(cli_command(sys.argv[1:] if argv is None else argv)):
            status: int = args.handler(args)
            raise_if_stopped()  # a stop raised inside a finaliser was dropped by Python
            return status
    except CovsegError as exc:  # a batch done in part, or the machine's want: 1; bad input: 2
        _error(exc)
        return 1 if isinstance(exc, (BatchFailed, NoWritableFolder, OutOfMemory)) else 2
    except (KeyboardInterrupt, Terminated) as exc:
        with stops_held():  # the hint reads the run's records: a second stop waits for the line
            hint = _finished_before_stop(args, begun) or _rerun_hint(args)
            _last_line(f"covseg: {stop_word(exc)}; {hint}")
        return exit_status(exc)
    except (FileExistsError, NotADirectoryError) as exc:
        option = "--to" if getattr(args, "to", None) is not None else "--out"
        text = (dangling_link(exc.filename, option) if exc.filename else None) or (
            f"{_named(exc)}a file is in the way of a folder covseg writes; pick another {option}")
        _error(text)
        return 2
    except BrokenPipeError:
        raise  # stdout closed: main ends quietly
    except (MemoryError, RuntimeError) as exc:  # torch's allocator raises RuntimeError
        if no_space(exc):  # torch's writer says a full disk so
            _error(_no_space(exc, args))
            return 2
        if not is_out_of_memory(exc):
            raise
        _error(out_of_memory_text(exc))
        return 1
    except OSError as exc:
        text = _no_space(exc, args) if no_space(exc) else f"{_named(exc)}{_reason(exc)}"
        _error(text)
        return 2
    finally:
        logger.removeHandler(handler)


def _error(text: object) -> None:
    """Print ``covseg: error: TEXT`` on stderr, the names in it unable to drive the terminal
    (:func:`~covseg.errors.terminal_safe`); best effort, as the exit status says it failed
    (with stderr closed, print wrote it on stdout)."""
    _last_line(f"covseg: error: {text}")


def _last_line(text: str) -> None:
    """Print a command's last line, ``text``, whole: a second stop meanwhile lands after it
    (:func:`~covseg.stopping.stops_held`); it cut the line off, leaving only its own."""
    with stops_held():
        tell(text)


def _no_space(exc: BaseException, args: argparse.Namespace) -> str:
    """A full disk that no writer named (a stream's OSError has no file name): the file where
    known, else the output folder, and how to go on."""
    target = getattr(exc, "filename", None) or getattr(args, "out", None) or "."
    return no_space_text(target, _rerun_hint(args))


def _reason(exc: OSError) -> str:
    """What went wrong, and what to do where Python's tempfile found no folder to write
    (:func:`~covseg.errors.tmpdir_advice`)."""
    return f"{exc.strerror or exc}{tmpdir_advice(exc)}"


def _named(exc: OSError) -> str:
    """``"PATH: "`` for an error about a file, nothing for one that names none (a full disk
    while writing a stream printed ``covseg: error: : No space left on device``)."""
    return f"{exc.filename}: " if exc.filename else ""


if __name__ == "__main__":
    sys.exit(main())
