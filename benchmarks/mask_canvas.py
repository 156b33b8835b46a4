"""What the letterbox's mask shrink does to masks: their Dice ceiling, changed pixels and cost.

    python benchmarks/mask_canvas.py [DATA] [--size 256] [--threshold 0.4] [--repeats 50]
                                     [--json out.json]

DATA is a folder of 2D slices with masks (default ../shared/data/medseg-covid19-100). Its masks
are put on the training canvas as training puts them (``covseg.train.canvas_items``), on whole
slices (``--no-frame-lungs``) and framed to the lungs as the default recipe frames them, by the
current shrink (the block centre's label, or the block's majority where the centre falls between
source pixels) and by nearest-exact, the shrink before 6 Dec. For each:

- the Dice ceiling: a perfect canvas lesion mask (labels above 0) mapped back to the slice as
  ``covseg predict`` maps probabilities (bilinear, pasted into the frame, at or above
  ``--threshold``, the default recipe's), scored against the slice's own mask: mean per slice
  over the slices holding a lesion, pooled over all, and the change in lesion area (pooled);
- the canvas mask pixels and slices the current shrink changes against nearest-exact, and the
  canvas lesion pixels under each; the lesion pixels outside the frame (which no canvas
  holds) and the slices larger than the canvas;
- the milliseconds one mask shrink takes (the first slice with a lesion, whole, to ``--size``),
  each rule, one thread, median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from _cli import at_least, run_main

from covseg import transforms
from covseg.cascade import CropBox, LungFrame
from covseg.config import RECIPE_THRESHOLD, TrainConfig, check_threshold
from covseg.data.layouts import Sample, load_dataset
from covseg.errors import CovsegError
from covseg.infer import model_inputs, on_slice
from covseg.io.atomic import write_json
from covseg.metrics import dice
from covseg.train import canvas_items
from covseg.transforms import Letterbox

DEFAULT_DATA = "../shared/data/medseg-covid19-100"
RULES = ("current", "nearest-exact")


def nearest_exact(labels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The mask shrink before 6 Dec: the label of the pixel at or after each block's centre."""
    return F.interpolate(labels[None], size=shape, mode="nearest-exact")[0]


@contextmanager
def shrink_rule(rule: str) -> Iterator[Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]]:
    """The letterbox's mask shrink set to ``rule`` while inside (the current one is covseg's)."""
    if rule == "current":
        yield transforms._shrink_labels
        return
    with mock.patch.object(transforms, "_shrink_labels", nearest_exact):
        yield nearest_exact


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread while inside, its own count given back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def mapped_back(samples: Sequence[Sample], canvases: Sequence[torch.Tensor],
                inputs: Sequence[tuple[np.ndarray, CropBox]], threshold: float
                ) -> list[np.ndarray]:
    """Each canvas's lesions (labels above 0) as ``covseg predict`` maps a binary model's
    probabilities back to its slice (``inputs``: its network input and crop): bilinear,
    pasted into the frame, thresholded."""
    back = []
    for sample, canvas, (array, crop) in zip(samples, canvases, inputs, strict=True):
        box = Letterbox(array.shape[-2], array.shape[-1], canvas.shape[-1])
        probability = on_slice((canvas > 0).float(), box, crop, sample.mask.shape, classes=False)
        back.append(probability[0] >= threshold)
    return back


def ceiling(samples: Sequence[Sample], back: Sequence[np.ndarray]) -> dict[str, Any]:
    """Dice of the mapped-back masks against truth: mean per slice holding a lesion, pooled,
    and the pooled lesion area's change."""
    truths = [s.mask > 0 for s in samples]
    per_slice = [dice(b, t) for b, t in zip(back, truths, strict=True) if t.any()]
    both = sum(int((b & t).sum()) for b, t in zip(back, truths, strict=True))
    predicted, true = sum(int(b.sum()) for b in back), sum(int(t.sum()) for t in truths)
    return {"dice_per_slice": float(np.mean(per_slice)), "slices_with_lesion": len(per_slice),
            "dice_pooled": 2 * both / (predicted + true), "lesion_px": true,
            "lesion_px_back": predicted, "area_change": predicted / true - 1}


def framing(samples: Sequence[Sample], size: int, frame: LungFrame | None,
            threshold: float) -> dict[str, Any]:
    """Both rules' canvas masks of one framing, their Dice ceilings and how they differ."""
    canvases = {}
    for rule in RULES:
        with shrink_rule(rule):
            canvases[rule] = [item["mask"] for item in canvas_items(samples, size, frame)]
    changed = [int((a != b).sum()) for a, b in zip(*canvases.values(), strict=True)]
    inputs = model_inputs([s.image for s in samples], frame)
    return {
        "slices": len(samples),
        "slices_shrunk": sum(max(array.shape[-2:]) > size for array, _ in inputs),
        "lesion_px_outside_frame": sum(int((s.mask > 0).sum() - (crop.crop(s.mask) > 0).sum())
                                       for s, (_, crop) in zip(samples, inputs, strict=True)),
        "canvas_px": sum(c.numel() for c in canvases["current"]),
        "changed_px": sum(changed), "slices_changed": sum(n > 0 for n in changed),
        **{rule: {"canvas_lesion_px": sum(int((c > 0).sum()) for c in masks),
                  **ceiling(samples, mapped_back(samples, masks, inputs, threshold))}
           for rule, masks in canvases.items()}}


def shrink_ms(sample: Sample, size: int, repeats: int) -> dict[str, Any]:
    """Median milliseconds of one shrink of ``sample``'s whole mask to ``size``, each rule,
    one thread (after one untimed call)."""
    labels = torch.as_tensor(sample.mask[None], dtype=torch.float32)
    shape = Letterbox(*sample.mask.shape, size).resized
    timed: dict[str, Any] = {"mask": list(sample.mask.shape), "canvas": list(shape)}
    with one_thread():
        for rule in RULES:
            with shrink_rule(rule) as shrink:
                shrink(labels, shape)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    shrink(labels, shape)
                    times.append(time.perf_counter() - start)
            timed[rule] = 1000 * float(np.median(times))
    return timed


HEADER = ("| framing | rule | Dice per slice | pooled Dice | lesion area back | canvas lesion px "
          "| canvas px changed | slices changed |")


def table(figures: dict[str, Any]) -> list[str]:
    """The figures as a Markdown table, a row per framing and rule, and the timing line."""
    lines = [HEADER, "|---" * 8 + "|"]
    for name, row in figures["framings"].items():
        for rule in RULES:
            got = row[rule]
            changed = (f"{row['changed_px']:,} of {row['canvas_px']:,} | "
                       f"{row['slices_changed']} of {row['slices']}" if rule == "current"
                       else "- | -")
            lines.append(f"| {name} | {rule} | {got['dice_per_slice']:.4f} "
                         f"({got['slices_with_lesion']}) | {got['dice_pooled']:.4f} | "
                         f"{got['area_change']:+.2%} | {got['canvas_lesion_px']:,} | {changed} |")
    lines.append("")
    for name, row in figures["framings"].items():
        outside, lesion = row["lesion_px_outside_frame"], row["current"]["lesion_px"]
        lines.append(f"- {name}: {outside:,} of {lesion:,} lesion pixels lie outside the "
                     f"frame ({outside / lesion:.1%}), {row['slices_shrunk']} of "
                     f"{row['slices']} slices shrunk")
    timed = figures["shrink_ms"]
    mask, canvas = ("x".join(map(str, timed[key])) for key in ("mask", "canvas"))
    lines.append("")
    lines.append(f"One {mask} mask shrunk to {canvas}, one thread, median of "
                 f"{figures['repeats']}: current {timed['current']:.2f} ms, nearest-exact "
                 f"{timed['nearest-exact']:.2f} ms")
    return lines


def lesion_samples(data: Path) -> list[Sample]:
    """The slices of ``data``; refused where it is no folder or none of them holds a lesion."""
    if not data.is_dir():
        raise CovsegError(f"{data}: no such folder; give a folder of 2D slices with masks "
                          f"(e.g. {DEFAULT_DATA})")
    samples = load_dataset(data).samples
    if not any(s.mask.any() for s in samples):
        raise CovsegError(f"{data}: no mask holds a lesion, so there is no Dice to measure; "
                          "give slices with lesion masks")
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        usage="python benchmarks/mask_canvas.py [DATA] [options]", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, nargs="?", default=Path(DEFAULT_DATA),
                        help=f"a folder of 2D slices with masks (default {DEFAULT_DATA})")
    parser.add_argument("--size", type=at_least(1), default=TrainConfig().size,
                        help="the canvas size (default: the default recipe's, 256)")
    parser.add_argument("--threshold", type=float, default=RECIPE_THRESHOLD,
                        help="the binary threshold of the map back (default: the default "
                             f"recipe's, {RECIPE_THRESHOLD})")
    parser.add_argument("--repeats", type=at_least(1), default=50,
                        help="timed shrinks per rule (default 50)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    threshold = check_threshold(args.threshold)
    samples = lesion_samples(args.data)
    frames = {"whole slice": None, "lungs (default recipe)": TrainConfig().frame()}
    figures = {"data": str(args.data), "size": args.size, "threshold": threshold,
               "repeats": args.repeats,
               "framings": {name: framing(samples, args.size, frame, threshold)
                            for name, frame in frames.items()},
               "shrink_ms": shrink_ms(next(s for s in samples if s.mask.any()), args.size,
                                      args.repeats)}
    print("\n".join(table(figures)))
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    run_main(main)
