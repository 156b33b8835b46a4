"""Paired comparison of two finished cross-validation runs on the slices they both held out.

    python benchmarks/paired_runs.py CANDIDATE_RUN BASELINE_RUN

Each RUN is a ``covseg cv`` output folder. Unlike ``cv_posthoc.py``, the runs may have different
folds (10-fold against 5-fold, say): every slice is held out exactly once in each (once per repeat
in a run of ``--repeats``, where its Dice is its mean over its repeats: one pair per slice), so the
two ``per_case.csv`` files pair up by case id. A run stopped part-way (``--fold K``) contributes
the ``test_per_case.csv`` of each fold it finished. Prints the mean Dice of each and the two tests
of ``covseg compare``: the two-sided Wilcoxon signed-rank test on the per-slice Dice (slices better
/ worse, p), which takes these trained networks as given, and, where the folds both runs finished
held out and trained on the same slices fold by fold, Nadeau and Bengio's corrected resampled
t-test on the per-fold mean differences (mean, t, df, p), which includes training variation (one
recipe trained with two seeds differed at p = 1e-5 by the first and 0.47 by the second); where the
folds differ, or a fold keeps no config.json (which holds its training slices), a line says why
only the per-slice test is given. Runs are named by their folder, or for runs of one name (``a/cv
b/cv``) by as many trailing parts of their paths as tell them apart; one run given twice is
refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import cast

import numpy as np
from _cli import description, run_labels

from covseg.checkpoint import fold_folders, fold_index
from covseg.compare import fold_t_test, mean_dice_over_repeats, paired_wilcoxon, per_case_dice
from covseg.crossval import fold_training
from covseg.errors import CovsegError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("candidate", type=Path)
    parser.add_argument("baseline", type=Path)
    args = parser.parse_args(argv)
    labels = run_labels([args.candidate, args.baseline])
    by_fold = held_out_dice(args.candidate), held_out_dice(args.baseline)
    candidate, baseline = (mean_dice_over_repeats(dice) for dice in by_fold)
    shared = sorted(set(candidate) & set(baseline), key=str)
    if not shared:  # the means were nan, and the status 0
        raise CovsegError(f"{args.candidate} and {args.baseline} held out no slice in common; "
                          "give two runs of the same data")
    test = paired_wilcoxon(candidate, baseline)
    print(f"{test['pairs']} slices in both: {labels[args.candidate]} "
          f"{np.mean([candidate[c] for c in shared]):.4f}, {labels[args.baseline]} "
          f"{np.mean([baseline[c] for c in shared]):.4f}, "
          f"difference {test['mean_difference']:+.4f}")
    print("per-slice Wilcoxon (takes these trained networks as given): "
          f"{test['cases_better']}/{test['cases_worse']} slices better/worse, "
          f"p = {test['p_value']:.4f}")
    splits = shared_splits((args.candidate, args.baseline), by_fold)
    if isinstance(splits, str):
        print(f"fold test: not given, {splits}; only the per-slice test is given")
        return 0
    folds = fold_t_test(*by_fold, splits)
    print(f"fold test (Nadeau and Bengio's corrected resampled t over {folds['folds']} folds, "
          "training variation included): per-fold differences "
          f"{', '.join(f'{d:+.4f}' for d in folds['fold_differences'])}; "
          f"mean {folds['mean_difference']:+.4f}, t = {folds.get('statistic', np.nan):.3f}, "
          f"df = {folds['df']}, p = {folds['p_value']:.4f}")
    return 0


def held_out_dice(run: Path) -> dict[Hashable, float]:
    """Per-slice Dice of every slice ``run`` held out, keyed (fold, case id): the whole run's,
    or its finished folds'."""
    if (run / "per_case.csv").is_file():
        return per_case_dice(run, by_fold=True)
    folds = [fold for fold in fold_folders(run) if (fold / "test_per_case.csv").is_file()]
    if not folds:
        raise CovsegError(f"{run}: no per_case.csv and no finished fold; run covseg cv into it "
                          "first")
    return {(fold_index(fold), case): value for fold in folds
            for case, value in per_case_dice(fold, "test_per_case.csv").items()}


def shared_splits(runs: tuple[Path, Path], dice: tuple[Mapping[Hashable, float], ...]
                  ) -> list[tuple[list[str], list[str]]] | str:
    """The (training, held-out) slices of each fold both ``runs`` finished, as
    :func:`~covseg.compare.fold_t_test` takes them, where each such fold held out and trained
    on the same slices in both (its config.json, :func:`~covseg.crossval.fold_training`);
    else why the fold test cannot be given: the folds differ (10-fold against 5-fold, another
    split seed), or a fold keeps no config.json (its folder deleted, the run's per_case.csv
    kept)."""
    held = [_held_out_by_fold(d) for d in dice]
    folds = sorted(set(held[0]) & set(held[1]))
    differ = ("the runs' folds differ (it needs the same slices held out and trained on fold "
              "by fold)")
    if not folds or any(held[0][k] != held[1][k] for k in folds):
        return differ
    if len(folds) < 2:  # a variance over one fold is none: t = nan, df = 0
        return f"the runs share only fold {folds[0]} (it needs two or more)"
    records = [run / f"fold_{k}" / "config.json" for run in runs for k in folds]
    missing = next((record for record in records if not record.is_file()), None)
    if missing is not None:
        return f"{missing} is missing (it holds the fold's training slices)"
    trained = [[fold_training(run / f"fold_{k}") for k in folds] for run in runs]
    if trained[0] != trained[1]:
        return differ
    return [(sorted(train), sorted(held[0][k])) for k, train in zip(folds, trained[0])]


def _held_out_by_fold(dice: Mapping[Hashable, float]) -> dict[int, set[str]]:
    """The slices each fold held out, from Dice keyed (fold, case id)."""
    folds: dict[int, set[str]] = {}
    for key in dice:
        fold, case = cast(tuple[int, str], key)
        folds.setdefault(fold, set()).add(case)
    return folds


if __name__ == "__main__":
    from _cli import run_main

    run_main(main)
