"""Paired comparison of two finished cross-validation runs on the slices they both held out.

    python benchmarks/paired_runs.py CANDIDATE_RUN BASELINE_RUN

Each RUN is a ``covseg cv`` output folder. Unlike ``cv_posthoc.py``, the runs may have different
folds (10-fold against 5-fold, say): every slice is held out exactly once in each, so the two
``per_case.csv`` files pair up by case id. Prints the mean Dice of each, and the two-sided
Wilcoxon signed-rank test of ``covseg compare`` (slices better / worse, p).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from covseg.compare import paired_wilcoxon, per_case_dice


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", type=Path)
    parser.add_argument("baseline", type=Path)
    args = parser.parse_args(argv)
    for run in (args.candidate, args.baseline):
        if not (run / "per_case.csv").is_file():
            sys.exit(f"{run}: no per_case.csv; finish the run (covseg cv ... --resume) first")
    candidate, baseline = per_case_dice(args.candidate), per_case_dice(args.baseline)
    test = paired_wilcoxon(candidate, baseline)
    shared = sorted(set(candidate) & set(baseline))
    print(f"{test['pairs']} slices in both: {args.candidate.name} "
          f"{np.mean([candidate[c] for c in shared]):.4f}, {args.baseline.name} "
          f"{np.mean([baseline[c] for c in shared]):.4f}, difference {test['mean_difference']:+.4f}, "
          f"{test['cases_better']}/{test['cases_worse']} slices better/worse, "
          f"p = {test['p_value']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
