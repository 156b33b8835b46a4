"""Score Inf-Net cross-validation models on the full 512x512 frames of their held-out slices.

    python benchmarks/full_frame.py INFNET_DATA MEDSEG_DATA RUN [RUN ...] [--json out.json]

Inf-Net's 50 training slices are MedSeg slices cropped to the lungs (and transposed); the
MedSeg folder holds the same slices as full 512x512 frames, with the body wall, the table and
the air around the body. A model trained on the crops is scored here on both framings of the
slices its fold held out (Inf-Net id N = MedSeg slice N), each with the run's own prediction
recipe (test-time mirrors, threshold, lung framing), so that a user feeding whole CT slices knows
what to expect. ``--frame-lungs`` adds the lung framing to runs trained before it existed: on
Inf-Net's crops it changes nothing (they are taken as crops, and already span 0-255),
so such a run's models are exactly what the current recipe trains.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _cli import description, run_labels
from cv_posthoc import finished_folds, held_out

from covseg.cascade import LungFrame
from covseg.data.layouts import Sample, load_dataset
from covseg.errors import CovsegError
from covseg.infer import Predictor
from covseg.io.atomic import write_json
from covseg.metrics import dice


def medseg_id(infnet_case: str) -> str:
    """``infnet_12`` -> ``medseg_0012``: the Inf-Net file id is the MedSeg slice index."""
    prefix, _, index = infnet_case.rpartition("_")
    if prefix != "infnet" or not index.isdigit():
        raise CovsegError(f"{infnet_case}: not an Inf-Net slice (infnet_N); give a run trained "
                          "on Inf-Net's slices")
    return f"medseg_{int(index):04d}"


def both_framings(run: Path, crops: dict[str, Sample], infnet: str, frames: dict[str, Sample],
                  medseg: str) -> list[tuple[list[Sample], list[Sample]]]:
    """Each fold's held-out slices as Inf-Net crops and as MedSeg frames, or exit in one line
    where ``run`` is no finished cross-validation or holds out slices the folders lack."""
    return [(held_out(crops, cases, run, infnet),
             held_out(frames, [medseg_id(c) for c in cases], run, medseg))
            for cases in finished_folds(run)]


def score_run(run: Path, folds: list[tuple[list[Sample], list[Sample]]], frame_lungs: bool
              ) -> dict[str, list[float]]:
    """Per-slice Dice of each fold model on its held-out slices, cropped and full-frame."""
    rows: dict[str, list[float]] = {"cropped": [], "full_frame": []}
    for k, (cropped, full) in enumerate(folds):
        predictor = Predictor.load(run / f"fold_{k}")
        if frame_lungs and predictor.guide is None:
            predictor.frame = predictor.frame or LungFrame(predictor.window)
        for framing, samples in (("cropped", cropped), ("full_frame", full)):
            masks = predictor.predict_labels([s.image for s in samples])
            rows[framing] += [dice(m, (s.mask > 0).astype(np.uint8))
                              for m, s in zip(masks, samples, strict=True)]
        print(f"{run}: fold {k} scored", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("infnet", help="the Inf-Net COVID-SemiSeg folder the runs trained on")
    parser.add_argument("medseg", help="the MedSeg folder with the same slices as full frames")
    parser.add_argument("runs", nargs="+", type=Path, help="covseg cv output folders")
    parser.add_argument("--frame-lungs", action="store_true",
                        help="frame full slices to their lungs even if the run predates framing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    labels = run_labels(args.runs)
    for run in args.runs:
        finished_folds(run)
    crops = {s.case_id: s for s in load_dataset(args.infnet).samples}
    frames = {s.case_id: s for s in load_dataset(args.medseg).samples}
    folds = {run: both_framings(run, crops, args.infnet, frames, args.medseg) for run in args.runs}
    results = {labels[run]: score_run(run, held, args.frame_lungs) for run, held in folds.items()}
    print(f"{'run':<24} {'cropped':>8} {'full frame':>11}  (mean per-slice Dice)")
    for name, rows in results.items():
        print(f"{name:<24} {np.mean(rows['cropped']):>8.4f} {np.mean(rows['full_frame']):>11.4f}")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    from _cli import run_main

    run_main(main)
