"""Wall time and peak memory of ``covseg evaluate`` on one large synthetic volume pair.

Writes a prediction and a truth of 600 slices of 512x512 at 0.625 mm (by default) into a
temporary folder: an irregular lesion-like prediction (7.4 M voxels) and a ball truth mostly
inside it, with a small lesion it misses. Runs ``python -m covseg evaluate`` on them in a
child process, whose peak resident memory (``resource.getrusage(RUSAGE_CHILDREN)``) is the
evaluation's alone, not the generator's.

    OMP_NUM_THREADS=1 python benchmarks/evaluate_memory.py [--slices 600] [--size 512]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from _cli import at_least, description
from _memory import peak_rss_kib
from scipy import ndimage

from covseg.io.atomic import write_json


def build_pair(folder: Path, slices: int, size: int = 512) -> tuple[Path, Path]:
    """A prediction study folder and a truth file on one 0.625 mm grid; their paths."""
    x, y, z = np.ogrid[:size, :size, :slices]
    cx, cy, cz = 0.59 * size, 0.49 * size, 0.5 * slices
    body = ((x - cx) / (0.25 * size)) ** 2 + ((y - cy) / (0.21 * size)) ** 2
    pred = body + ((z - cz) / (0.25 * slices)) ** 2 < 1
    cells = (-(-size // 16), -(-size // 16), -(-slices // 16))  # whole 16-voxel cells, cut back
    coarse = np.random.default_rng(0).random(cells)
    holes = ndimage.zoom(coarse, 16, order=1)[:size, :size, :slices] > 0.55
    pred &= ~(holes & (body > 0.5))
    step = size / 512  # the truth's geometry at 512 px, scaled
    truth = (x - cx - 10 * step) ** 2 + (y - cy + 10 * step) ** 2 + (z - cz) ** 2 < (60 * step) ** 2
    truth[int(0.74 * size):int(0.78 * size), int(100 * step):int(120 * step),
          slices // 6:slices * 11 // 60] = True
    affine = np.diag([0.625, 0.625, 0.625, 1.0])
    (folder / "pred" / "big").mkdir(parents=True)
    (folder / "truth").mkdir()
    nib.save(nib.Nifti1Image(pred.astype(np.uint8), affine),
             str(folder / "pred" / "big" / "infection.nii.gz"))
    nib.save(nib.Nifti1Image(truth.astype(np.uint8), affine), str(folder / "truth" / "big.nii.gz"))
    return folder / "pred" / "big", folder / "truth" / "big.nii.gz"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--slices", type=at_least(1), default=600)
    parser.add_argument("--size", type=at_least(1), default=512, help="rows and columns of a slice")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pred, truth = build_pair(Path(tmp), args.slices, args.size)
        command = [sys.executable, "-m", "covseg", "evaluate", "--pred", str(pred),
                   "--truth", str(truth), "--out", str(Path(tmp) / "ev" / "big")]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            return done.returncode
        row = json.loads((Path(tmp) / "ev" / "big.json").read_text())["per_case"][0]
    results = {"slices": args.slices, "size": args.size, "wall_s": round(wall, 1),
               "peak_rss_mib": round(peak_rss_kib(resource.RUSAGE_CHILDREN) / 1024),
               "metrics": {key: row[key] for key in ("dice", "iou", "hd95")}}
    print(json.dumps(results, indent=2))
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    from _cli import run_main

    run_main(main)
