"""Paired comparison of two finished cross-validation runs on the slices they both held out.

    python benchmarks/paired_runs.py CANDIDATE_RUN BASELINE_RUN

Each RUN is a ``covseg cv`` output folder. Unlike ``cv_posthoc.py``, the runs may have different
folds (10-fold against 5-fold, say): every slice is held out exactly once in each, so the two
``per_case.csv`` files pair up by case id. A run stopped part-way (``--fold K``) contributes the
``test_per_case.csv`` of each fold it finished. Prints the mean Dice of each, and the two-sided
Wilcoxon signed-rank test of ``covseg compare`` (slices better / worse, p). Runs are named by
their folder, or for runs of one name (``a/cv b/cv``) by as many trailing parts of their paths
as tell them apart; one run given twice is refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _cli import description, run_labels

from covseg.checkpoint import fold_folders
from covseg.compare import paired_wilcoxon, per_case_dice
from covseg.errors import CovsegError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("candidate", type=Path)
    parser.add_argument("baseline", type=Path)
    args = parser.parse_args(argv)
    labels = run_labels([args.candidate, args.baseline])
    candidate, baseline = held_out_dice(args.candidate), held_out_dice(args.baseline)
    shared = sorted(set(candidate) & set(baseline))
    if not shared:  # the means were nan, and the status 0
        raise CovsegError(f"{args.candidate} and {args.baseline} held out no slice in common; "
                          "give two runs of the same data")
    test = paired_wilcoxon(candidate, baseline)
    print(f"{test['pairs']} slices in both: {labels[args.candidate]} "
          f"{np.mean([candidate[c] for c in shared]):.4f}, {labels[args.baseline]} "
          f"{np.mean([baseline[c] for c in shared]):.4f}, "
          f"difference {test['mean_difference']:+.4f}, "
          f"{test['cases_better']}/{test['cases_worse']} slices better/worse, "
          f"p = {test['p_value']:.4f}")
    return 0


def held_out_dice(run: Path) -> dict[str, float]:
    """Per-slice Dice of every slice ``run`` held out: the whole run's, or its finished folds'."""
    if (run / "per_case.csv").is_file():
        return per_case_dice(run)
    folds = [table for table in (fold / "test_per_case.csv" for fold in fold_folders(run))
             if table.is_file()]
    if not folds:
        raise CovsegError(f"{run}: no per_case.csv and no finished fold; run covseg cv into it "
                          "first")
    return {case: value for table in folds
            for case, value in per_case_dice(table.parent, table.name).items()}


if __name__ == "__main__":
    from _cli import run_main

    run_main(main)
