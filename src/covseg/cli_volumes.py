"""Command-line pieces for volumes: ``covseg quantify``, ``covseg data fetch`` and the volume
options of ``covseg predict`` (the lead's cli.py calls :func:`register`,
:func:`add_volume_predict_arguments` and :func:`run_volume_predict`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covseg import api
from covseg.batch import UNRECORDED, BatchResult, StudiesFailed, parse_shard, recorded_no_settings
from covseg.console import say, tell
from covseg.data.fetch import DATASETS, notice
from covseg.errors import CovsegError
from covseg.io.atomic import output_folder, refuse_unexpanded_home
from covseg.io.volume import HU_MODES
from covseg.lungs import DEFAULT_LUNG_MARGIN_MM, LESION_DEPTH_MM
from covseg.quantify import CLASSES
from covseg.records import RESULT_JSON
from covseg.report import headline, read_rows
from covseg.volumes import (
    MAX_LUNG_MARGIN_MM,
    VOLUME_DEFAULTS,
    SlicePredictor,
    predict_batch,
    volume_only,
    volume_options_given,
)


def register(subparsers: Any) -> Any:
    """Add ``quantify`` and ``data fetch`` to the top-level subparsers; return the ``data``
    command's subparsers, for the commands cli.py adds under it (``data info``)."""
    add_quantify_parser(subparsers)
    data = subparsers.add_parser("data", help="public COVID-19 CT data sets; what a data folder "
                                 "holds", description="Public COVID-19 CT data sets, and what a "
                                 "data folder holds.")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    add_fetch_parser(commands)
    return commands


def add_quantify_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``covseg quantify MASK... --out DIR``: lesion volumes, % involvement, CT category."""
    parser = subparsers.add_parser(
        "quantify", help="lesion volume, %% lung involved and CT-0..4 from masks",
        description="Quantify lesion masks (NIfTI, NRRD or MetaImage files or folders of "
                    "them): volumes in mL, % of lung involved, MosMedData CT-0..CT-4. One "
                    "output folder per mask plus summary.csv.")
    # paths as typed (str, as --out and fetch's --to): pathlib made ./~/m.nii.gz ~/m.nii.gz,
    # which the ~ check (io.atomic.refuse_unexpanded_home) said the shell did not expand
    parser.add_argument("masks", nargs="+", metavar="MASK",
                        help="lesion mask files (NIfTI, NRRD, MetaImage, a one-layer 3D Slicer "
                             ".seg.nrrd) or folders of them, or a `covseg predict` output folder "
                             "(its lungs.nii.gz are used as labelled unless --lungs is given)")
    # a str, as predict's: its trailing "/" says a folder (api.refuse_file_out)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--lungs", metavar="PATH",
                        help="lung mask file (NIfTI, NRRD, MetaImage), or a folder of them named "
                             "like the masks (a predict study folder is read as its lungs.nii.gz; "
                             "every non-zero voxel is lung; labels 1 and 2 lying side by side "
                             "are the right and left lungs, read as Zenodo's 1 left, 2 right "
                             "where the affine says so; in any other mask the sides are found)")
    parser.add_argument("--image", metavar="CT",
                        help="the CT (NIfTI, NRRD, MetaImage, DICOM folder) or a folder of CTs "
                             "named like the masks: shown in the montage, and thresholded for "
                             "lungs when --lungs is not given (grown over the lesion regions that "
                             f"come within {DEFAULT_LUNG_MARGIN_MM:g} mm of them, to "
                             f"{LESION_DEPTH_MM:g} mm deep, as predict's --lung-margin-mm)")
    parser.add_argument("--hu", choices=HU_MODES, default="auto",
                        help="is --image in Hounsfield units (yes), 8-bit grey (no) or detect "
                             "(auto, default); the CT a predict record names, read without "
                             "--image, is read as predict read it")
    parser.add_argument("--classes", choices=tuple(CLASSES), default="auto",
                        help="binary (any non-zero is lesion), multiclass (1 GGO, "
                             "2 consolidation, 3 effusion; refused for a binary model's "
                             "prediction, by its predict record) or auto (default: multiclass for "
                             "the whole call when a mask holds labels 2 or 3, or a predict "
                             "record or a study done in --out says so)")
    parser.add_argument("--html", action="store_true", help="also write report.html per study")
    parser.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                        help="process every N-th study from the I-th (0-based), by sorted name")
    parser.set_defaults(handler=_quantify_command)
    return parser


def _quantify_command(args: argparse.Namespace) -> int:
    """``covseg quantify``: the batch's line and exit status 1 when a study failed, where the
    API raises :class:`StudiesFailed`."""
    try:
        result = api.quantify(args.masks, args.out, lungs=args.lungs, image=args.image,
                              hu=args.hu, classes=args.classes, html=args.html, shard=args.shard)
    except StudiesFailed as exc:
        result = exc.result
    return _report(result)


def add_fetch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``covseg data fetch NAME --to DIR`` (usable under an existing ``data`` command too)."""
    parser = subparsers.add_parser(
        "fetch", help="download and unpack a public data set",
        description="Download (resumable, checksummed) and safely unpack a public data set. "
                    "MosMedData needs a manual registration step; the command says what to do.")
    parser.add_argument("name", choices=sorted(DATASETS), help="data set")
    parser.add_argument("--to", required=True, metavar="DIR", help="destination folder")
    parser.set_defaults(handler=_fetch_command)
    return parser


def _fetch_command(args: argparse.Namespace) -> int:
    source = DATASETS.get(args.name)
    if source:  # also before a manual step's instructions (MosMed's)
        refuse_unexpanded_home(args.to)  # refused before the notice, as fetch_data refuses it
        output_folder(args.to, "--to")
        say(notice(args.name, source))  # what, whose licence, before a long download
    paths = api.fetch_data(args.name, args.to)
    say(f"{args.name}: {len(paths)} file(s) ready in {args.to}")
    return 0


def add_volume_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the volume options to ``covseg predict`` (which defines --out, --batch-size, --tta)."""
    parser.add_argument("--hu", choices=HU_MODES, default=VOLUME_DEFAULTS["hu"],
                        help="volumes in Hounsfield units (yes), 8-bit grey (no, like "
                             "lungmask's --noHU) or detect (auto, default)")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write probabilities.nii.gz per volume (float32 at float16 "
                             "precision): the lesion probability, or for a multi-class model a "
                             "4D volume of one channel per class label (0 background, "
                             "1 ground-glass, 2 consolidation, 3 effusion)")
    parser.add_argument("--keep-outside-lungs", action="store_true",
                        help="keep infection predicted outside the lungs")
    parser.add_argument("--lung-margin-mm", type=float, default=VOLUME_DEFAULTS["lung_margin_mm"],
                        metavar="MM",
                        help="an infection region that comes this close to the lungs is "
                             "kept (and counted as lung, for thresholded lungs), beyond this "
                             "only to "
                             f"{LESION_DEPTH_MM:g} mm from the lungs (in the slices this close "
                             "to a lung slice, inside the body); one wholly farther is removed "
                             f"(default {DEFAULT_LUNG_MARGIN_MM:g}, at most "
                             f"{MAX_LUNG_MARGIN_MM:g})")
    parser.add_argument("--html", action="store_true",
                        help="also write a self-contained report.html per volume (done "
                             "studies gain theirs on a rerun)")
    parser.add_argument("--shard", type=_shard, default=VOLUME_DEFAULTS["shard"], metavar="I/N",
                        help="process every N-th volume from the I-th (0-based), by sorted name")
    parser.add_argument("--lung-model", metavar="RUN",
                        help="lung model from `covseg train --target lung` (default: HU threshold)")


def refuse_volume_options(args: argparse.Namespace) -> None:
    """2D images get masks only: a volume option given with them would be silently ignored."""
    given = [f"--{key.replace('_', '-')}" for key in volume_options_given(vars(args))]
    if given:
        raise CovsegError(volume_only(given, "these inputs are 2D images",
                                      "CT volumes (NIfTI, NRRD, MetaImage or DICOM)"))


def _shard(text: str) -> tuple[int, int]:
    """argparse type for --shard I/N: a bad value becomes an argparse usage error."""
    try:
        return parse_shard(text)
    except CovsegError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_volume_predict(args: argparse.Namespace, predictor: SlicePredictor,
                       inputs: Sequence[str | Path],
                       lung_predictor: SlicePredictor | None = None) -> int:
    """Predict every volume of ``inputs`` (NIfTI, NRRD, MetaImage files, DICOM folders/files) into
    ``args.out``."""
    result = predict_batch(
        predictor, inputs, args.out, shard=args.shard, batch_size=args.batch_size,
        probabilities=args.probabilities, lung_predictor=lung_predictor,
        keep_outside_lungs=args.keep_outside_lungs, hu=args.hu, html=args.html,
        lung_margin_mm=args.lung_margin_mm)
    return _report(result)


def _report(result: BatchResult) -> int:
    """Print one line about the batch (for a summary of one study done, its figures and
    folder); exit status 1 when a study failed. The studies skipped as an earlier covseg's that
    recorded no settings are counted apart: their figures, kept as they were, may come from
    other settings, and a batch of two said nothing of it."""
    unrecorded = (f" ({result.unrecorded} {UNRECORDED}; delete their folders to redo them)"
                  if result.unrecorded else "")
    line = _one_study_line(result) or (
        f"{result.done} done, {result.skipped} already done{unrecorded}, {result.failed} "
        f"failed; summary: {result.summary}")
    if result.failed:
        tell(line)
    else:
        say(line)
    return 1 if result.failed else 0


def _one_study_line(result: BatchResult) -> str | None:
    """``"NAME: lesion .. mL, .. % of the lungs involved, CT-n; results in OUT/NAME"`` where
    the batch's summary lists one study and it is done; else None (the counts say it). A study
    skipped as an earlier covseg's that recorded no settings says so: its figures, kept as they
    were, may come from other settings (160 mL where this covseg found 970)."""
    rows = read_rows(result.summary) if result.summary.is_file() else []
    if result.failed or len(rows) != 1:
        return None
    folder = result.summary.parent / rows[0]["study"]
    try:
        record = json.loads((folder / RESULT_JSON).read_text(encoding="utf-8"))
        figures = headline(record)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    done = " (already done)" if result.skipped else ""
    if result.skipped and recorded_no_settings(record):
        done = f" (already {UNRECORDED}; delete its folder to redo it)"
    return f"{rows[0]['study']}{done}: {figures}; results in {folder}"
