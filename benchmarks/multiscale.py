"""Multi-scale test-time averaging, re-scored on saved cross-validation folds (no retraining).

    python benchmarks/multiscale.py DATA RUN --sizes 224,256,288,320 [--json out.json]

Every fold model of RUN predicts its held-out slices with the run's own test-time mirrors (none
for a run trained with ``--no-test-flips``) at each canvas size; the mean per-slice Dice is
printed for each size alone, each pair of sizes and all sizes averaged, at the threshold the run
was trained to predict with (its folds' ``config.json``) and, where that is another value, at
0.5 for comparison. Folds and Dice come from ``cv_posthoc``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from _cli import description
from cv_posthoc import dice_rows, finished_folds, held_out

from covseg.config import TrainConfig
from covseg.crossval import read_fold_record
from covseg.data.layouts import load_dataset
from covseg.errors import CovsegError
from covseg.infer import Predictor
from covseg.io.atomic import write_json

COMPARED_THRESHOLD = 0.5
"""Scored beside the run's own threshold: the usual cut of a probability."""


def canvas_sizes(text: str) -> list[int]:
    """``--sizes``: positive whole pixel counts, comma-separated, each once (``64,abc`` or ``0``
    failed after loading every fold; ``64,64`` predicted each fold twice into one list, out of
    step with the truths, and scored slices against other slices' masks)."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give whole pixel counts, e.g. 224,256") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be at least 1 px")
    repeated = sorted({size for size in sizes if sizes.count(size) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {', '.join(map(str, repeated))} given more than once; give each size once")
    return sizes


def _fold_threshold(fold: Path) -> float | None:
    """The threshold of the recipe ``fold`` records, read as training reads it; a damaged
    config.json is refused in one line naming it (:func:`~covseg.crossval.read_fold_record`),
    which ended in a JSONDecodeError, KeyError or TypeError traceback."""
    return read_fold_record(fold / "config.json",
                            lambda record: TrainConfig.from_dict(record["config"]).threshold)


def run_thresholds(run: Path, folds: int) -> list[float]:
    """The threshold every fold of ``run`` records in its ``config.json``, then
    :data:`COMPARED_THRESHOLD` where it differs; folds of other thresholds (trained alone with
    ``--fold K``, which does not look at the others) or a multi-class run (no threshold) are
    refused in one line before any prediction. Each fold's recipe is read as the project reads
    it (:meth:`TrainConfig.from_dict`): an older multi-class record's 0.4, never applied, is no
    threshold, and a record from before thresholds were recorded holds the recipe's."""
    recorded = {_fold_threshold(run / f"fold_{k}") for k in range(folds)}
    if len(recorded) != 1 or None in recorded:
        raise CovsegError(f"{run}: its folds record no single binary threshold "
                          f"({', '.join(sorted(map(str, recorded)))}); give a binary run whose "
                          "folds share one recipe")
    return list(dict.fromkeys([recorded.pop(), COMPARED_THRESHOLD]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("data")
    parser.add_argument("run", type=Path)
    parser.add_argument("--sizes", default="224,256,288,320", type=canvas_sizes,
                        help="canvas sizes in px, comma-separated")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes: list[int] = args.sizes
    splits = finished_folds(args.run)
    by_id = {s.case_id: s for s in load_dataset(args.data).samples}
    held = [held_out(by_id, cases, args.run, args.data) for cases in splits]
    thresholds = run_thresholds(args.run, len(splits))
    probs: dict[int, list[np.ndarray]] = {size: [] for size in sizes}
    truths: list[np.ndarray] = []
    for k, samples in enumerate(held):
        truths += [(s.mask > 0).astype(np.uint8) for s in samples]
        predictor = Predictor.load(args.run / f"fold_{k}" / "best.pt")
        images = [s.image for s in samples]
        for size in sizes:
            predictor.size = size
            probs[size] += [p[0] for p in predictor.predict_probabilities(images)]
        print(f"fold {k} predicted", file=sys.stderr)
    combos = [(s,) for s in sizes] + list(itertools.combinations(sizes, 2)) + [tuple(sizes)]
    results = {}
    for combo in dict.fromkeys(combos):
        averaged = [np.mean(maps, axis=0) for maps in zip(*(probs[s] for s in combo))]
        for threshold in thresholds:
            name = f"{'+'.join(map(str, combo))}@{threshold}"
            rows = dice_rows(averaged, truths, lambda p, t=threshold: p >= t)
            results[name] = float(np.mean(rows))
            print(f"{name:<24} {results[name]:.4f}")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    from _cli import run_main

    run_main(main)
