"""Fair model comparison: the same folds, data and seed for every model, paired tests vs a baseline.

This is the "improved model vs U-Net" section of a report: cross-validated metrics per model,
a paired Wilcoxon signed-rank test on per-case Dice against the baseline, and each model's
cost (parameters, GFLOPs and CPU milliseconds per 512x512 slice).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from covseg.config import TrainConfig
from covseg.crossval import cross_validate, mean_over_folds
from covseg.data.layouts import LoadedData
from covseg.errors import CovsegError
from covseg.io.atomic import write_json, write_text
from covseg.models import build_model
from covseg.models.profile import profile_model
from covseg.models.registry import check_model, parse_option_value
from covseg.viz import box_plot

COMPARED_METRICS = ("dice", "iou", "sensitivity", "specificity", "precision", "hd95")


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,key=value`` -> (name, options); numbers are parsed."""
    name, colon, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in rest.split(",") if colon else []:
        key, sep, value = item.partition("=")
        if not (key and sep):
            raise CovsegError(f"model spec {spec!r}: expected name:key=value,key=value (models "
                              "are separated by spaces: --models unet miniseg)")
        options[key] = parse_option_value(value)
    return name, options


def paired_wilcoxon(candidate: dict[str, float], baseline: dict[str, float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test on per-case Dice paired by case id; tied pairs
    (equal Dice) are dropped from the test (scipy's "wilcox" method) and counted apart."""
    cases = sorted(set(candidate) & set(baseline))
    diffs = np.array([candidate[c] - baseline[c] for c in cases])
    result: dict[str, Any] = {"pairs": len(cases), "mean_difference": float(diffs.mean()),
                              "cases_better": int((diffs > 0).sum()),
                              "cases_worse": int((diffs < 0).sum()),
                              "cases_tied": int((diffs == 0).sum())}
    if len(cases) < 2 or not np.any(diffs):
        result["p_value"] = 1.0 if len(cases) else math.nan
        return result
    test = wilcoxon(diffs, zero_method="wilcox", alternative="two-sided")
    result["statistic"], result["p_value"] = float(test.statistic), float(test.pvalue)
    return result


def check_specs(specs: Sequence[str]) -> None:
    """At least a baseline and a candidate, each registered and named once."""
    if len(specs) < 2:
        raise CovsegError("compare needs at least two models: a baseline and a candidate")
    repeated = sorted({spec for spec in specs if list(specs).count(spec) > 1})
    if repeated:
        raise CovsegError(f"{', '.join(repeated)} given twice; name each model once (give "
                          "another option, e.g. unet:width=32, to compare variants)")
    for spec in specs:  # names and options, before the first model trains for hours
        check_model(*parse_model_spec(spec))


def compare_models(config: TrainConfig, data: LoadedData, specs: list[str],
                   out: str | os.PathLike[str], folds: int | None = None, resume: bool = False
                   ) -> dict[str, Any]:
    """Cross-validate every model on identical folds; write comparison.json, .md and box plot.

    The first spec is the baseline that every other model is tested against.
    """
    check_specs(specs)
    out = Path(out)
    rows, dice_by_model = [], {}
    for spec in specs:
        name, options = parse_model_spec(spec)
        model_config = replace(config, model=name, model_options=options)
        summary = cross_validate(model_config, data, out / _folder(spec), folds, resume)
        per_case = per_case_dice(out / _folder(spec))
        channels = model_config.in_channels  # as its runs take them: a lung guide adds one
        cost = profile_model(build_model(name, channels, data.num_classes, **options), size=512,
                             in_channels=channels)
        dice_by_model[spec] = per_case
        rows.append({"model": spec, "train_seconds": summary["train_seconds"], **cost,
                     **{m: summary["mean_std_over_folds"][m] for m in COMPARED_METRICS}})
    baseline = specs[0]
    for row in rows:
        if row["model"] != baseline:
            row["wilcoxon_vs_baseline"] = paired_wilcoxon(dice_by_model[row["model"]],
                                                          dice_by_model[baseline])
    result = {"data": data.describe(), "synthetic": data.synthetic, "baseline": baseline,
              "folds": len(summary["per_fold"]), "split_files": bool(data.folds),
              "config": _shared_recipe(config), "models": rows}
    write_json(out / "comparison.json", result)
    box_plot({spec: list(d.values()) for spec, d in dice_by_model.items()},
             out / "comparison_boxplot.png",
             title=("SYNTHETIC data: " if data.synthetic else "") + "per-case Dice by model")
    write_text(out / "comparison.md", comparison_markdown(result))
    return result


def _shared_recipe(config: TrainConfig) -> dict[str, Any]:
    """The recipe every compared model trained with: its own name and options are in its row."""
    return {k: v for k, v in config.to_dict().items() if k not in ("model", "model_options")}


def _folder(spec: str) -> str:
    return spec.replace(":", "_").replace(",", "_").replace("=", "-").replace("+", "p")


def per_case_dice(cv_dir: Path, table: str = "per_case.csv") -> dict[str, float]:
    """Per-case Dice of a finished ``covseg cv`` folder, from its ``per_case.csv`` (or of one
    finished fold, from its ``test_per_case.csv``)."""
    with (cv_dir / table).open(newline="", encoding="utf-8") as handle:
        return {row["case_id"]: float(row["dice"]) for row in csv.DictReader(handle)}


def _fold_source(result: dict[str, Any]) -> str:
    """Where the folds came from, when the data set shipped them (MosMed's split files)."""
    if result.get("split_files"):
        return " on the data set's own split files (train_new*.txt / valid_new*.txt)"
    return ""


def comparison_markdown(result: dict[str, Any]) -> str:
    """The comparison table as Markdown."""
    lines = [
        "# Model comparison",
        "",
        "**SYNTHETIC data**: figures say nothing about real CT.\n" if result["synthetic"] else "",
        f"- Data: {result['data']}",
        (f"- {result['folds']}-fold cross-validation{_fold_source(result)}, identical folds "
         "and seed for every model"),
        (f"- Baseline: `{result['baseline']}`; p: two-sided paired Wilcoxon signed-rank test on "
         "per-case Dice (tied pairs left out of the test, as scipy's default); ± is the sample "
         "std over folds"),
        f"- Recipe (shared; each model's name and options in its row): `{result['config']}`",
        "",
        ("| model | Dice | IoU | sensitivity | precision | HD95 (px) | Δ Dice | better/worse "
         "| p | params | GFLOPs/512² | CPU ms/512² | CV training (min) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["models"]:
        test = row.get("wilcoxon_vs_baseline")
        delta = f"{test['mean_difference']:+.3f}" if test else "baseline"
        counts = (f"{test['cases_better']}/{test['cases_worse']}"
                  + (f" ({test['cases_tied']} tied)" if test.get("cases_tied") else "")
                  if test else "")
        p_value = f"{test['p_value']:.3g}" if test else ""
        cells = [mean_over_folds(row[m], result["folds"])
                 for m in ("dice", "iou", "sensitivity", "precision", "hd95")]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {delta} | {counts} | "
                     f"{p_value} | {row['parameters']:,} | {row['gflops_per_slice']:.1f} | "
                     f"{row['cpu_ms_per_slice']:.0f} | {row['train_seconds'] / 60:.1f} |")
    lines += ["", "![per-case Dice by model](comparison_boxplot.png)", ""]
    return "\n".join(lines)
