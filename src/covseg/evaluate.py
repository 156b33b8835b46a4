"""Evaluation: a predictor on samples, or a folder of predicted masks against a folder of truths."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from covseg.data.layouts import CLASS_NAMES, Sample
from covseg.errors import CovsegError
from covseg.infer import Predictor
from covseg.io.atomic import write_json, write_text
from covseg.io.image import is_image_file, read_mask
from covseg.metrics import EMPTY_MASK_RULES, case_metrics, summarize


def evaluate_samples(predictor: Predictor, samples: Sequence[Sample], desc: str = "evaluating"
                     ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Predict each sample at its original size; per-case metric rows and the label maps."""
    predictions = []
    for start in tqdm(range(0, len(samples), predictor.batch_size), desc=desc, unit="batch",
                      leave=False):
        chunk = samples[start:start + predictor.batch_size]
        predictions.extend(predictor.predict_labels([s.image for s in chunk]))
    rows = [
        {"case_id": s.case_id, "patient_id": s.patient_id,
         **case_metrics(pred, s.mask, predictor.num_classes, CLASS_NAMES)}
        for s, pred in zip(samples, predictions)
    ]
    return rows, predictions


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Per-case rows as CSV text (NaN written as empty)."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return buffer.getvalue()


def _mask_files(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise CovsegError(f"{folder}: {role} folder not found")
    files = {p.stem: p for p in sorted(folder.iterdir()) if is_image_file(p)}
    if not files:
        raise CovsegError(f"{folder}: no mask images (png, jpg, tif, npy) in the {role} folder")
    return files


def evaluate_folders(pred_dir: str | os.PathLike[str], truth_dir: str | os.PathLike[str],
                     out: str | os.PathLike[str]) -> dict[str, Any]:
    """Match masks by file stem, compute per-case metrics, write ``out``.csv and ``out``.json.

    Masks with labels above 1 in either folder are evaluated per class as well.
    """
    preds = _mask_files(Path(pred_dir), "prediction")
    truths = _mask_files(Path(truth_dir), "truth")
    common = sorted(set(preds) & set(truths))
    if not common:
        raise CovsegError(f"{pred_dir} and {truth_dir} share no file stems; name masks alike")
    loaded = []
    for stem in tqdm(common, desc="evaluating", unit="case", leave=False):
        pred, truth = read_mask(preds[stem]), read_mask(truths[stem])
        if pred.shape != truth.shape:
            raise CovsegError(f"{stem}: prediction {pred.shape} and truth {truth.shape} differ in size")
        loaded.append((stem, pred, truth))
    num_classes = max(2, *(int(max(p.max(), t.max())) + 1 for _, p, t in loaded))
    rows = [{"case_id": stem, **case_metrics(p, t, num_classes, CLASS_NAMES)}
            for stem, p, t in loaded]
    result = {
        "prediction_dir": str(pred_dir), "truth_dir": str(truth_dir), "cases": len(rows),
        "unmatched_predictions": sorted(set(preds) - set(truths)),
        "unmatched_truths": sorted(set(truths) - set(preds)),
        "num_classes": num_classes, "empty_mask_rules": EMPTY_MASK_RULES,
        "summary": summarize(rows), "per_case": rows,
    }
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".json", ".csv") else out
    write_text(stem.with_suffix(".csv"), rows_to_csv(rows))
    write_json(stem.with_suffix(".json"), result)
    return result
