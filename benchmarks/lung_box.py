"""How much the lung box of the framing costs on whole frames: covseg's box against Inf-Net's own.

    python benchmarks/lung_box.py INFNET_DATA MEDSEG_DATA RUN [--grow 0.05 0.25] [--json out.json]

RUN is a ``covseg cv`` folder trained on the Inf-Net slices with lung framing. Each fold model
predicts the whole MedSeg frames of the slices its fold held out, cut to:

- ``thresholded``: covseg's box (the thresholded lungs, what ``covseg predict`` uses); every
  box is framed as ``covseg predict`` frames (the air floor of whole 8-bit frames included),
  so this row is full_frame.py's whole-frame figure;
- ``infnet``: Inf-Net's own crop box, recovered by matching each Inf-Net mask (transposed) inside
  its MedSeg mask: the best a box can do for these models (a slice without infection has no
  mask to match and keeps the ``thresholded`` box);
- ``grow S``: covseg's box, grown by 12 % of its size on every side where the predicted
  infection covers more than a share S of the box edge, up to three times (a way to recover
  consolidation against the chest wall, which the threshold leaves outside the box).

Prints the mean per-slice Dice of each box and how far the boxes differ.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _cli import description
from cv_posthoc import finished_folds
from full_frame import both_framings

from covseg.cascade import CropBox, LungFrame
from covseg.data.layouts import Sample, load_dataset
from covseg.infer import Predictor
from covseg.io.atomic import write_json
from covseg.metrics import dice

GROW_STEP = 0.12
EDGE_BAND = 0.03


def infnet_box(crop: Sample, frame: Sample) -> CropBox | None:
    """Where Inf-Net cut ``crop`` out of ``frame``: the crops are transposed and not resized, so
    the offset of their masks' corners is the offset of the crop. None where either mask is
    empty (no infection, nothing to match)."""
    crop_mask = (crop.mask > 0).T
    rows, cols = np.nonzero(crop_mask)
    frame_rows, frame_cols = np.nonzero(frame.mask > 0)
    if not len(rows) or not len(frame_rows):
        return None
    top, left = int(frame_rows.min() - rows.min()), int(frame_cols.min() - cols.min())
    return CropBox(top, top + crop_mask.shape[0], left, left + crop_mask.shape[1])


@dataclass(frozen=True)
class FixedBoxes(LungFrame):
    """covseg's own lung framing (:meth:`LungFrame.prepare`: the air floor of whole 8-bit
    frames, then the cut and stretch) with given boxes in place of the thresholded ones, looked
    up by image identity: only the box differs from what ``covseg predict`` feeds the model."""

    boxes: Mapping[int, CropBox] = field(default_factory=dict, compare=False)

    def box(self, image: np.ndarray, crop: bool | None = None) -> CropBox:
        return self.boxes[id(image)]


def predict(predictor: Predictor, images: list[np.ndarray], boxes: list[CropBox]
            ) -> list[np.ndarray]:
    """The predictor's probabilities of ``images``, each framed to its box of ``boxes``."""
    window = (predictor.frame or LungFrame()).window
    predictor.frame = FixedBoxes(window, {id(i): b for i, b in zip(images, boxes, strict=True)})
    return [p[0] for p in predictor.predict_probabilities(images)]


def grown(box: CropBox, probability: np.ndarray, threshold: float, share: float,
          size: tuple[int, int]) -> CropBox:
    """``box`` grown on each side whose edge band holds infection along more than ``share``."""
    inside = box.crop(probability) >= threshold
    height, width = inside.shape
    band_rows, band_cols = max(2, round(EDGE_BAND * height)), max(2, round(EDGE_BAND * width))
    step_rows, step_cols = round(GROW_STEP * height), round(GROW_STEP * width)
    top, bottom, left, right = box.top, box.bottom, box.left, box.right
    if inside[:band_rows].any(0).mean() > share:
        top = max(0, top - step_rows)
    if inside[-band_rows:].any(0).mean() > share:
        bottom = min(size[0], bottom + step_rows)
    if inside[:, :band_cols].any(1).mean() > share:
        left = max(0, left - step_cols)
    if inside[:, -band_cols:].any(1).mean() > share:
        right = min(size[1], right + step_cols)
    return CropBox(top, bottom, left, right)


def grow_boxes(predictor: Predictor, images: list[np.ndarray], boxes: list[CropBox],
               share: float) -> list[CropBox]:
    for _ in range(3):
        probabilities = predict(predictor, images, boxes)
        new = [grown(b, p, predictor.threshold, share, i.shape)
               for b, p, i in zip(boxes, probabilities, images, strict=True)]
        if new == boxes:
            break
        boxes = new
    return boxes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("infnet")
    parser.add_argument("medseg")
    parser.add_argument("run", type=Path)
    parser.add_argument("--grow", type=float, nargs="*", default=[0.05, 0.25],
                        help="edge shares that grow the box (see above)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    finished_folds(args.run)
    crops = {s.case_id: s for s in load_dataset(args.infnet).samples}
    frames = {s.case_id: s for s in load_dataset(args.medseg).samples}
    folds = both_framings(args.run, crops, args.infnet, frames, args.medseg)
    scores: dict[str, list[float]] = {}
    edge_gap: list[list[int]] = []
    for k, (cropped, samples) in enumerate(folds):
        predictor = Predictor.load(args.run / f"fold_{k}")
        images = [s.image for s in samples]
        truths = [(s.mask > 0).astype(np.uint8) for s in samples]
        thresholded = [(predictor.frame or LungFrame()).box(image) for image in images]
        matched = [infnet_box(c, s) for c, s in zip(cropped, samples, strict=True)]
        variants = {"thresholded": thresholded,
                    "infnet": [m or t for m, t in zip(matched, thresholded, strict=True)]}
        variants |= {f"grow {share}": grow_boxes(predictor, images, thresholded, share)
                     for share in args.grow}
        edge_gap += [[int(a.top - b.top), int(a.bottom - b.bottom), int(a.left - b.left),
                      int(a.right - b.right)]
                     for a, b in zip(thresholded, matched, strict=True) if b is not None]
        for name, boxes in variants.items():
            scores.setdefault(name, []).extend(
                float(dice((p >= predictor.threshold).astype(np.uint8), t))
                for p, t in zip(predict(predictor, images, boxes), truths, strict=True))
        print(f"fold {k} scored", file=sys.stderr)
    if edge_gap:
        gap = np.abs(np.array(edge_gap)).mean(axis=0)
        print("thresholded vs Inf-Net box, mean |difference| in px (top, bottom, left, right): "
              + ", ".join(f"{g:.1f}" for g in gap) + f" over {len(edge_gap)} slices with a mask")
    for name, rows in scores.items():
        print(f"{name:<12} whole-frame Dice {np.mean(rows):.4f}")
    if args.json:
        write_json(args.json, {"dice": scores, "edge_gap": edge_gap})
    return 0


if __name__ == "__main__":
    from _cli import run_main

    run_main(main)
