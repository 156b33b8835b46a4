"""Multi-scale test-time averaging, re-scored on saved cross-validation folds (no retraining).

    python benchmarks/multiscale.py DATA RUN --sizes 224,256,288,320 [--json out.json]

Every fold model of RUN predicts its held-out slices with its own test-time mirrors at each canvas
size; the mean per-slice Dice is printed for each size alone, each pair of sizes and all sizes
averaged, at thresholds 0.4 and 0.5. Folds and Dice come from ``cv_posthoc``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from cv_posthoc import dice_rows, fold_cases

from covseg.data.layouts import load_dataset
from covseg.infer import Predictor

THRESHOLDS = (0.4, 0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("run", type=Path)
    parser.add_argument("--sizes", default="224,256,288,320",
                        help="canvas sizes in px, comma-separated")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    by_id = {s.case_id: s for s in load_dataset(args.data).samples}
    probs: dict[int, list[np.ndarray]] = {size: [] for size in sizes}
    truths: list[np.ndarray] = []
    for k, cases in enumerate(fold_cases(args.run)):
        samples = [by_id[c] for c in cases]
        truths += [(s.mask > 0).astype(np.uint8) for s in samples]
        predictor = Predictor.load(args.run / f"fold_{k}" / "best.pt", tta=True)
        for size in sizes:
            predictor.size = size
            probs[size] += [p[0] for p in predictor.predict_probabilities([s.image for s in samples])]
        print(f"fold {k} predicted", file=sys.stderr)
    combos = [(s,) for s in sizes] + list(itertools.combinations(sizes, 2)) + [tuple(sizes)]
    results = {}
    for combo in dict.fromkeys(combos):
        averaged = [np.mean(maps, axis=0) for maps in zip(*(probs[s] for s in combo))]
        for threshold in THRESHOLDS:
            name = f"{'+'.join(map(str, combo))}@{threshold}"
            rows = dice_rows(averaged, truths, lambda p, t=threshold: p >= t)
            results[name] = float(np.mean(rows))
            print(f"{name:<24} {results[name]:.4f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
