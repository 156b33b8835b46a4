"""Wall time and peak memory of ``covseg.volumes.predict_study`` on a large synthetic CT.

Builds a synthetic HU volume (default 600 slices of 512x512, written as .nii.gz in a temporary
folder, stored as int16 or, with ``--dtype``, as float32 or float64, as some converters write
CT), then runs predict_study in a fresh process so that the peak resident memory
(``resource.getrusage(...).ru_maxrss``) is the study's alone, not the generator's. The model is a
covseg checkpoint (``--model RUN/best.pt``) or, without one, an untrained MONAI
UNet(16, 32, 64, 128, 256; num_res_units=2) behind the same predictor interface: its outputs are
meaningless but its cost is that of a real model. Target: peak memory under 4 GB.

    python benchmarks/volume_memory.py [--model RUN/best.pt] [--slices 600] [--dtype int16]
                                       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from _cli import at_least, description
from _memory import peak_rss_kib
from tqdm import tqdm

from covseg.checkpoint import load_checkpoint
from covseg.data.synthetic import patient_anatomy, synthetic_slice
from covseg.io.atomic import write_json
from covseg.transforms import LUNG_WINDOW

MIB = 1024.0 * 1024.0


class UNetPredictor:
    """An untrained MONAI 2D UNet with covseg's SlicePredictor interface (binary output)."""

    num_classes = 2
    intensity = "hu"
    window = LUNG_WINDOW
    threshold = 0.5
    tta = False
    source = ""
    """Not loaded from a file: predict_study records no model file and no hash for it."""

    def __init__(self) -> None:
        import torch
        from monai.networks.nets import UNet

        torch.manual_seed(0)
        self.network = UNet(spatial_dims=2, in_channels=1, out_channels=1,
                            channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
                            num_res_units=2).eval()

    def predict_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(np.stack(images)[:, None])
            return list(torch.sigmoid(self.network(batch)).numpy())


def build_volume(path: Path, slices: int, size: int, seed: int = 0, dtype: str = "int16") -> None:
    """A synthetic chest CT in HU stored as ``dtype``, cycling through 24 distinct generated
    slices."""
    rng = np.random.default_rng(seed)
    anatomy = patient_anatomy(rng)
    distinct = [np.rint(synthetic_slice(rng, size, anatomy).hu).astype(np.int16)
                for _ in tqdm(range(24), desc="generating slices", leave=False)]
    data = np.empty((size, size, slices), dtype=dtype)  # x, y, z
    for k in range(slices):
        data[:, :, k] = distinct[k % len(distinct)].T
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.7, 1.0, 1.0])), str(path))


def current_rss_mib() -> float | None:
    """Resident memory now, from /proc (Linux); None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def measure(path: str, out_dir: str, model: str | None, batch_size: int,
            probabilities: bool) -> dict[str, Any]:
    """Runs in a fresh process: load the model, predict the study, report time and peak RSS."""
    from covseg.volumes import predict_study

    if model:
        from covseg.infer import Predictor

        predictor: Any = Predictor.load(model, batch_size=batch_size)
    else:
        predictor = UNetPredictor()
    baseline = current_rss_mib()
    start = time.perf_counter()
    result = predict_study(predictor, path, out_dir, batch_size=batch_size,
                           probabilities=probabilities)
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(peak_rss_kib() / 1024, 1),
            "rss_before_predict_mib": baseline and round(baseline, 1),
            "lesion_ml": result["study"]["lesion_ml"], "lung_ml": result["study"]["lung_ml"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--model", help="covseg checkpoint (run folder or .pt); default: "
                                        "untrained MONAI UNet")
    parser.add_argument("--slices", type=at_least(1), default=600)
    parser.add_argument("--size", type=at_least(1), default=512)
    parser.add_argument("--dtype", choices=("int16", "float32", "float64"), default="int16",
                        help="how the file stores the voxels")
    parser.add_argument("--batch-size", type=at_least(1), default=8)
    parser.add_argument("--probabilities", action="store_true",
                        help="also write the probability map")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.model:  # refused before the study is built; the worker loads it again, measured
        load_checkpoint(args.model)
    with tempfile.TemporaryDirectory(prefix="covseg-bench-") as scratch:
        path = Path(scratch) / "synthetic_ct.nii.gz"
        start = time.perf_counter()
        build_volume(path, args.slices, args.size, dtype=args.dtype)
        built = time.perf_counter() - start
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            figures = pool.apply(measure, (str(path), str(Path(scratch) / "out"), args.model,
                                           args.batch_size, args.probabilities))
            pool.close()  # the worker exits by itself: killed, it leaves its semaphores behind
            pool.join()
        report = {"slices": args.slices, "size": args.size, "dtype": args.dtype,
                  "batch_size": args.batch_size,
                  "probabilities": args.probabilities,
                  "model": args.model or "untrained MONAI UNet(16..256, num_res_units=2)",
                  "input_file_mib": round(path.stat().st_size / MIB, 1),
                  "volume_float32_mib": round(args.slices * args.size**2 * 4 / MIB, 1),
                  "build_s": round(built, 1), **figures,
                  "s_per_slice": round(figures["wall_s"] / args.slices, 3)}
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    from _cli import run_main

    run_main(main)
