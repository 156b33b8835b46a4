"""Fair model comparison: the same folds, data and seed for every model, paired tests vs a baseline.

This is the "improved model vs U-Net" section of a report: cross-validated metrics per model,
a paired Wilcoxon signed-rank test on per-patient Dice against the baseline (per slice where
no patient holds several) with a bootstrap interval of the mean difference, which takes the
trained networks as given; beside it Nadeau and Bengio's corrected resampled t-test on the
per-fold mean differences, which includes training variation and decides the verdict
(Holm-adjusted p values beside the raw ones where several candidates meet one baseline); and
each model's cost (parameters, GFLOPs and CPU milliseconds per 512x512 slice, or per slice of
its canvas for a model that takes no 512 px slice).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from covseg.checkpoint import final_model_step, fold_folders
from covseg.config import TrainConfig, absolute_weights
from covseg.crossval import (
    REPEATS,
    UNDEFINED,
    checked_fold_weights,
    class_dice,
    cross_validate,
    cross_validation_work,
    data_warnings,
    duration_text,
    figure_link,
    finished_fold_check,
    finished_summary,
    fold_done,
    hd95_cover,
    hd95_keys,
    hd95_slices_by_unit,
    hd95_unit,
    hd95_units_line,
    make_folds,
    mean_over_folds,
    per_repeat,
    pinned_lungs,
    refuse_gone_fold_weights,
    refuse_midway_folds,
    repeated_line,
    repeats_record,
    repeats_text,
    stale_folds_error,
    tested,
    tested_unit,
    warned_cv_notes,
)
from covseg.data.layouts import LoadedData, class_labels, fingerprints_kept
from covseg.errors import CovsegError, counted
from covseg.evaluate import any_lesion, drawn_name, target_scored
from covseg.io.atomic import write_json, write_text
from covseg.io.lock import refuse_if_held, writing_to
from covseg.metrics import metric_notes
from covseg.models import build_model
from covseg.models.ensemble import member_names
from covseg.models.pretrained import without_weights_file
from covseg.models.profile import CT_SIZE, profile_for_comparison
from covseg.models.registry import (
    REGISTRY,
    check_model,
    check_model_names,
    parse_option_value,
    resolved_options,
)
from covseg.provenance import continued, option_name, provenance, utc_now
from covseg.records import read_record
from covseg.report import read_rows
from covseg.train import (
    COMPARISON,
    AlreadyTrained,
    check_run_seed,
    refuse_other_output,
    trial_options,
    unresumed,
)
from covseg.viz import drawn, paired_plot

log = logging.getLogger(__name__)

COMPARED_METRICS = ("dice", "iou", "sensitivity", "specificity", "precision", "hd95")


def compared_metrics(summary: Mapping[str, Any]) -> list[str]:
    """The metrics of a model's cross-validation ``summary`` that the comparison gives: HD95
    per unit (``hd95_mm``, ``hd95_px``) where the data's slices have both."""
    across = summary["mean_std_over_folds"]
    return [*(m for m in COMPARED_METRICS if m != "hd95"), *hd95_keys(across)]


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,key=value`` -> (name, options); numbers are parsed."""
    name, colon, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in rest.split(",") if colon else []:
        key, sep, value = item.partition("=")
        if not (key and sep):
            raise CovsegError(f"model spec {spec!r}: expected name:key=value,key=value "
                              f"({_separated()})")
        if key in options:
            raise CovsegError(f"model spec {spec!r}: {key} given twice; give each option once")
        options[key] = parse_option_value(value)
    return name, options


def _separated() -> str:
    """How models are told apart, as the running command gives them: by spaces on the command
    line, as list items from the API."""
    option = option_name("models")
    if option.startswith("--"):
        return f"models are separated by spaces: {option} unet miniseg"
    return f"models are items of a list: {option}=[\"unet\", \"miniseg\"]"


def known_spec(spec: str) -> bool:
    """Whether ``spec`` names registered models (``name[:options]``, ``a,b`` an ensemble), as
    a ``--models`` entry does and a data folder does not; its options are not looked at."""
    return all(member in REGISTRY for member in member_names(spec.partition(":")[0]))


FOLD_TEST = "corrected_t_vs_baseline"
"""A candidate's comparison.json key of its :func:`fold_t_test` against the baseline."""
SIGNIFICANCE = 0.05
"""The level at which :func:`verdict` calls a candidate better or worse, and at which a test
is said to be unable to reach significance (:func:`paired_wilcoxon`'s ``note``, the few folds'
line of comparison.md)."""
BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the 95 % bootstrap interval of the mean paired difference (seeded, so that a
comparison's report reads the same on every rerun)."""
EXACT_PAIRS = 500
"""Untied pairs up to which p comes from the exact signed-rank distribution (where their
|differences| hold no ties; 0.13 s at 500); past it the normal approximation is accurate."""
PERMUTATION_PAIRS = 13
"""Untied pairs up to which p comes from all 2^n sign flips where their |differences| hold
ties (scipy's own bound: about 1 s at 13, doubling with each pair more)."""


def paired_differences(candidate: Mapping[Hashable, float], baseline: Mapping[Hashable, float]
                       ) -> np.ndarray:
    """Each key's candidate minus baseline Dice, over the keys both hold, in key order."""
    return np.array([candidate[key] - baseline[key]
                     for key in sorted(set(candidate) & set(baseline), key=str)])


def paired_wilcoxon(candidate: Mapping[Hashable, float], baseline: Mapping[Hashable, float]
                    ) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test on per-case Dice paired by key (a case id, a
    (fold, case id) pair or a patient); tied pairs (equal Dice) are dropped from the test
    and counted apart, and p is that of the untied pairs alone (``method``:
    :func:`_signed_rank_method`). ``ci95_mean_difference``: a percentile
    bootstrap interval of the mean difference over the pairs (seeded), to judge its size.
    ``min_p_value``: the smallest p the exact two-sided test can give on these untied pairs,
    2 / 2**n; where that is not below :data:`SIGNIFICANCE` (n <= 5), ``note`` says so: a p of
    0.375 from 4 patients read as an ordinary non-significant result."""
    diffs = paired_differences(candidate, baseline)
    result: dict[str, Any] = {"pairs": diffs.size, "mean_difference": float(diffs.mean()),
                              "ci95_mean_difference": bootstrap_ci(diffs),
                              "cases_better": int((diffs > 0).sum()),
                              "cases_worse": int((diffs < 0).sum()),
                              "cases_tied": int((diffs == 0).sum())}
    untied = diffs[diffs != 0]
    result["min_p_value"] = min(1.0, 2 / 2**len(untied))
    if diffs.size and result["min_p_value"] >= SIGNIFICANCE:
        result["note"] = (f"n = {len(untied)} {'untied ' if result['cases_tied'] else ''}"
                          f"pairs: p cannot fall below {result['min_p_value']:.3g}")
    if not untied.size:
        result["p_value"] = 1.0 if diffs.size else math.nan
        return result
    from scipy.stats import PermutationMethod, wilcoxon  # here: scipy.stats costs 0.7 s

    result["method"] = _signed_rank_method(untied)
    method = {"exact": "exact", "normal approximation": "asymptotic",
              "permutation": PermutationMethod(n_resamples=np.inf)}[result["method"]]
    test = wilcoxon(untied, alternative="two-sided", method=method)
    result["statistic"], result["p_value"] = float(test.statistic), float(test.pvalue)
    return result


def _signed_rank_method(untied: np.ndarray) -> str:
    """How the p of the signed-rank test on the nonzero differences ``untied`` is had:
    "exact" (its exact distribution, where their |differences| hold no ties), "permutation"
    (all 2^n sign flips, where they do) or "normal approximation" (tie-corrected, past
    :data:`EXACT_PAIRS` or :data:`PERMUTATION_PAIRS`). scipy's own choice counts the
    tied pairs among n and approximates from 14 pairs with any tied, so that 5 untied and 10
    tied pairs gave p 0.043, below the 2 / 2^5 = 0.0625 the exact test can reach."""
    if len(np.unique(np.abs(untied))) == len(untied):
        return "exact" if len(untied) <= EXACT_PAIRS else "normal approximation"
    return "permutation" if len(untied) <= PERMUTATION_PAIRS else "normal approximation"


def fold_t_test(candidate: Mapping[Hashable, float], baseline: Mapping[Hashable, float],
                splits: Sequence[tuple[Sequence[str], Sequence[str]]]) -> dict[str, Any]:
    """Nadeau and Bengio's (2003) corrected resampled t-test on the per-fold mean differences
    of per-case Dice keyed (fold, case id), as :func:`per_case_dice` keys them by fold: each
    fold trains its own networks, so the k fold means vary with training as well as with the
    test cases, and their variance is scaled by 1/k + n_test/n_train (the folds' training sets
    overlap) for a two-sided t with k - 1 degrees of freedom. Over the k·r folds of repeated
    k-fold (``--repeats``, flattened as :func:`~covseg.crossval.make_folds` makes them) this is
    Bouckaert and Frank's (2004) corrected repeated k-fold t-test: variance times
    1/(k·r) + n_test/n_train, k·r - 1 degrees of freedom. Unlike :func:`paired_wilcoxon`,
    which takes the trained networks as given, it includes training variation: one recipe
    trained with seeds 0 and 20 gave a Wilcoxon p of 1e-5 over 52 MedSeg slices. p is NaN
    below two folds; where every fold's difference is the same, p is 1 for none, else 0."""
    by_fold: dict[int, list[float]] = {}
    for key in set(candidate) & set(baseline):
        fold = cast(tuple[int, str], key)[0]  # keyed (fold, case id) by per_case_dice
        by_fold.setdefault(fold, []).append(candidate[key] - baseline[key])
    diffs = np.array([np.mean(by_fold[fold]) for fold in sorted(by_fold)])
    k = len(diffs)
    ratio = (np.mean([len(test) for _, test in splits])
             / max(1.0, float(np.mean([len(train) for train, _ in splits]))))
    factor = 1 / max(1, k) + float(ratio)
    mean = float(diffs.mean()) if diffs.size else math.nan
    result: dict[str, Any] = {"folds": k, "fold_differences": diffs.tolist(),
                              "mean_difference": mean, "variance_factor": factor, "df": k - 1}
    if k < 2:
        result["p_value"] = math.nan
        return result
    spread = math.sqrt(factor * float(np.var(diffs, ddof=1)))
    if spread == 0:
        result["p_value"] = 1.0 if mean == 0 else 0.0
        return result
    from scipy.stats import t  # here: scipy.stats costs 0.7 s

    result["statistic"] = mean / spread
    result["p_value"] = float(2 * t.sf(abs(result["statistic"]), k - 1))
    return result


def verdict(test: Mapping[str, Any]) -> str:
    """What a candidate's :func:`fold_t_test` (its Holm-adjusted p where several candidates
    meet the baseline) says of it at :data:`SIGNIFICANCE`: "better", "worse" or "no
    difference shown"; the per-case Wilcoxon, which leaves training variation out, does not
    decide it (it called one recipe trained with two seeds different, p = 1e-5 on 52 slices)."""
    p_value = test.get("p_holm", test["p_value"])
    if math.isnan(p_value) or p_value >= SIGNIFICANCE:
        return "no difference shown"
    return "better" if test["mean_difference"] > 0 else "worse"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (one test per candidate against the
    baseline): the i-th smallest of k times (k - i + 1), kept non-decreasing, at most 1; NaN
    (no test) stays NaN and is not counted among the k."""
    order = sorted((i for i, p in enumerate(p_values) if not math.isnan(p)),
                   key=lambda i: p_values[i])
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def bootstrap_ci(diffs: np.ndarray, seed: int = 0) -> list[float]:
    """95 % percentile bootstrap interval of the mean of ``diffs`` (resampled with
    replacement, :data:`BOOTSTRAP_RESAMPLES` times, seeded); NaN bounds below two values."""
    if len(diffs) < 2:
        return [math.nan, math.nan]
    picks = np.random.default_rng(seed).integers(0, len(diffs), (BOOTSTRAP_RESAMPLES,
                                                                 len(diffs)))
    low, high = np.percentile(diffs[picks].mean(axis=1), [2.5, 97.5])
    return [float(low), float(high)]


def patient_dice(cv_dir: Path, repeats: int = 1) -> tuple[dict[Hashable, float], str]:
    """The paired test's units from a finished cv folder's per_case.csv, and their name:
    each patient's mean Dice over its slices where a patient holds several (its slices are not
    independent pairs, taken as pairs they make p far too small), else
    each slice (:func:`slice_dice`). With ``repeats`` > 1 each slice is tested once per repeat
    and a unit's mean is over its tests too: one pair per patient (slice), not r; a slice
    without a patient id is keyed ("case", case id) then, which no patient id can equal (its
    bare case id merged it with the patient of that name)."""
    rows = read_rows(cv_dir / "per_case.csv")
    groups: dict[Hashable, list[float]] = {}
    for row in rows:
        case = ((int(row["fold"]) if repeats == 1 else "case"), row["case_id"])
        groups.setdefault(row.get("patient_id") or case, []).append(float(row["dice"]))
    if all(len(values) == repeats for values in groups.values()):
        return slice_dice(_case_dice(rows, by_fold=True), repeats), "slice"
    return {key: float(np.mean(values)) for key, values in groups.items()}, "patient"


def slice_dice(dice: Mapping[Hashable, float], repeats: int) -> dict[Hashable, float]:
    """Dice keyed (fold, case id) as :func:`per_case_dice` keys it by fold, each tested slice
    once: as it is unrepeated; with ``repeats`` > 1 (each slice tested once per repeat) its
    mean over its repeats keyed by case id (:func:`mean_dice_over_repeats`)."""
    return dict(dice) if repeats == 1 else mean_dice_over_repeats(dice)


def mean_dice_over_repeats(dice: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """Dice keyed (fold, case id) as each case id's mean over the folds that test it (a
    repeated run's repeats): one value per slice, as a test pairs slices."""
    tests: dict[Hashable, list[float]] = {}
    for key, value in dice.items():
        tests.setdefault(cast(tuple[int, str], key)[1], []).append(value)
    return {case: float(np.mean(values)) for case, values in tests.items()}


def check_specs(specs: Sequence[str], size: int, resume: bool = False) -> None:
    """At least a baseline and a candidate, each named once, with a folder of its own, and
    built once with its options and, where its input size may be fixed, run once on the
    ``size`` px canvas (:func:`check_model`; ``resume``: see
    :func:`~covseg.train.trial_options`)."""
    if len(specs) < 2:
        raise CovsegError("compare needs at least two models: a baseline and a candidate")
    for spec in specs:  # an unknown name is named as such, not as sharing another's folder
        check_model_names(parse_model_spec(spec)[0])
    built = [_resolved_spec(spec) for spec in specs]
    for k, spec in enumerate(specs):  # a default spelt out (unet:width=16, unet) is one model
        other = next((specs[j] for j in range(k) if built[j] == built[k]), spec)
        if other != spec or specs.count(spec) > 1:
            given = (f"{spec} given twice" if other == spec else
                     f"{other} and {spec} are one model once its defaults are filled in")
            raise CovsegError(f"{given}; name each model once{_variant_hint(spec)}")
    folders: dict[str, str] = {}
    for spec in specs:  # one folder each, on file systems that ignore case too
        other = folders.setdefault(model_folder(spec).lower(), spec)
        if other != spec:
            shared = " = ".join(dict.fromkeys((model_folder(other), model_folder(spec))))
            out = option_name("out")
            raise CovsegError(f"{other} and {spec} would share one folder under {out} "
                              f"({shared}); compare them into separate {out} folders")
    for spec in specs:  # each built once, before the first model trains for hours
        name, options = parse_model_spec(spec)
        check_model(name, trial_options(options, resume), size)


def check_spec_seeds(config: TrainConfig, specs: Sequence[str], folds: int) -> None:
    """Refuse, before any model trains, a seed that leaves no room for the seeds some model's
    ``folds`` folds and ensemble members derive from it (:func:`~covseg.train.check_run_seed`):
    refused at the second fold, the first model's first fold was trained for nothing. Checked
    for the model with the most members, so that one refusal gives the largest seed all take
    (model by model, a rerun at the seed given could be refused again)."""
    check_run_seed(_spec_recipe(config, max(
        specs, key=lambda spec: len(member_names(parse_model_spec(spec)[0])))), folds)


def _spec_recipe(config: TrainConfig, spec: str) -> TrainConfig:
    """``config`` with ``spec``'s model and options: the one recipe a compared model's seeds
    and finished folds are checked against and its folds trained with."""
    name, options = parse_model_spec(spec)
    return replace(config, model=name, model_options=options)


def _variant_hint(spec: str) -> str:
    """How to compare a variant of ``spec``'s own model: its first positive number option
    doubled (``unet++:width=64`` for unet++, whose width is 32 as built), or its options named;
    empty for a model that takes none (a mixed ensemble)."""
    name, options = _resolved_spec(spec)
    for key, value in options.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return (" (to compare variants, give one another value, e.g. "
                    f"{name}:{key}={value * 2:g})")
    if not options:
        return ""
    return (f" (to compare variants, give one another value of {name}'s options: "
            f"{', '.join(options)})")


def _resolved_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``spec`` as the model it builds: its name and its options with the model's defaults
    filled in (:func:`~covseg.models.registry.resolved_options`), compared as Python compares
    values, so that ``miniseg:width=1`` is miniseg's default width 1.0."""
    name, options = parse_model_spec(spec)
    return name, resolved_options(name, options)


@fingerprints_kept()
def compare_models(config: TrainConfig, data: LoadedData, specs: list[str],
                   out: str | os.PathLike[str], folds: int | None = None, resume: bool = False,
                   pins: Mapping[str, str | None] | None = None, repeats: int = 1
                   ) -> dict[str, Any]:
    """Cross-validate every model on identical folds; write comparison.json, .md and box plot.

    The first spec is the baseline that every other model is tested against. Finished folds
    are reused with ``resume`` only: without it, a comparison already in ``out`` is refused.
    Models of an earlier comparison there that ``specs`` leave out (their folds stay) are
    warned of before any fold trains, again at the end where a fold trained meanwhile, and listed
    as ``left_out``. ``specs`` are checked by the caller, before data are
    read (:func:`check_specs`, as :func:`covseg.api.compare` does). ``pins``: each model's
    :func:`spec_pins`, where the caller worked them out before the data were read (one None
    is worked out again here). ``repeats``: repeated k-fold for every model
    (:func:`~covseg.crossval.make_folds`).
    """
    out = Path(out)
    refuse_other_output(out, COMPARISON)
    with writing_to(out):  # a second comparison into ``out`` is refused, naming this one
        check_compare_folder(out, specs, resume)
        return _compare_held(config, data, specs, out, folds, resume, pins or {}, repeats)


def _compare_held(config: TrainConfig, data: LoadedData, specs: list[str], out: Path,
                  folds: int | None, resume: bool, given: Mapping[str, str | None],
                  repeats: int = 1) -> dict[str, Any]:
    """:func:`compare_models` inside ``out``'s lock (each model's cross-validation holds its own
    folder's, each fold its fold's); comparison.json keeps the command that started the
    comparison and its start, each ``resume`` listed under ``resumed_by`` (:func:`continued`)."""
    now = {**provenance(data_path=data.root), "started_utc": utc_now()}
    left_out = models_left_out(out, specs)
    if left_out:
        log.warning("%s: %s", out, left_out_note(left_out))  # before hours of training
    splits = make_folds(data, folds, config.seed, repeats)[0]
    check_spec_seeds(config, specs, len(splits))
    # every model's finished folds and weights=, before any model trains; the stale folds of
    # all models in one refusal (it named one model's, the next model's after their deletion)
    recipes = {spec: _spec_recipe(config, spec) for spec in specs}
    checks = {spec: finished_fold_check(recipe, data, out / model_folder(spec), splits, "compare",
                                        repeats)
              for spec, recipe in recipes.items()}
    stale = [check for check, _ in checks.values() if check]
    if stale:
        raise stale_folds_error(stale, "compare")
    weights = {}  # hashed once: each model's cross-validation is handed it
    for spec, (_, midway) in checks.items():
        refuse_midway_folds(midway, per_repeat(splits, repeats), "compare")
        weights[spec] = checked_fold_weights(recipes[spec], out / model_folder(spec), len(splits))
    finished = finished_comparison(out, specs, len(splits), left_out) if resume else None
    if finished is not None:  # nothing left to do: every file left as it was
        return AlreadyTrained(finished)
    rows, dice_by_model, units_by_model = [], {}, {}
    cv_notes = warned_cv_notes(config, data, splits)  # every model's folds: the same
    # each model's lung model, as its own saved folds record it (another model's folds may
    # record another): looked up once per model left to train, not once per fold
    pins = {spec: given.get(spec) or pinned_lungs(recipes[spec], out / model_folder(spec),
                                                  len(splits))
            for spec in specs}
    # whether a fold is left to train, its lines after the warning: a model whose folds all
    # finished has its missing or stale summary.json written again from them, no line said
    trains = not all(fold_done(out / model_folder(spec) / f"fold_{k}")
                     for spec in specs for k in range(len(splits)))
    for spec in specs:
        model_config = recipes[spec]
        summary = cross_validate(model_config, data, out / model_folder(spec), folds, resume,
                                 verb="compare", cv_notes=cv_notes, weights=weights[spec],
                                 lung_sha256=pins[spec], repeats=repeats)
        per_case = per_case_dice(out / model_folder(spec), by_fold=True)
        channels = model_config.in_channels  # as its runs take them: a lung guide adds one
        cost = profile_for_comparison(
            build_model(model_config.model, channels, data.num_classes,
                        **without_weights_file(model_config.model_options)),
            model_config.size, channels)
        dice_by_model[spec] = per_case
        units_by_model[spec] = patient_dice(out / model_folder(spec), repeats)
        rows.append({"model": spec, "folder": model_folder(spec),
                     "train_seconds": summary["train_seconds"], **cost,
                     **{m: summary["mean_std_over_folds"][m] for m in compared_metrics(summary)},
                     "empty_mask_counts": summary.get("empty_mask_counts", {}),
                     **class_dice(summary["mean_std_over_folds"])})
    baseline = specs[0]
    for row in rows[1:]:
        row["dice_difference"] = row["dice"]["mean"] - rows[0]["dice"]["mean"]
        units, unit = units_by_model[row["model"]]
        row["wilcoxon_vs_baseline"] = {**paired_wilcoxon(units, units_by_model[baseline][0]),
                                       "unit": unit}
        row[FOLD_TEST] = fold_t_test(dice_by_model[row["model"]], dice_by_model[baseline],
                                     splits)
    if len(rows) > 2:  # several candidates tested against one baseline
        for key in ("wilcoxon_vs_baseline", FOLD_TEST):
            tests = [row[key] for row in rows[1:]]
            for test, adjusted in zip(tests, holm([test["p_value"] for test in tests])):
                test["p_holm"] = adjusted
    for row in rows[1:]:
        row[FOLD_TEST]["verdict"] = verdict(row[FOLD_TEST])
    result = {**continued(out / "comparison.json", now, resume),  # a resume keeps the start
              "data": data.describe(), "classes": class_labels(data.target, data.num_classes),
              "synthetic": data.synthetic, "baseline": baseline,
              "folds": per_repeat(summary["per_fold"], repeats), **repeats_record(repeats),
              "split_files": bool(data.folds),
              "fold_source": summary["folds"], "hd95_unit": data.hd95_unit,
              "hd95_slices_by_unit": hd95_slices_by_unit(data), **metric_notes(),
              "cases_without_patient_id": len(data.unidentified),
              "config": _shared_recipe(config, data.windowed), "models": rows, "left_out": left_out,
              "warnings": list(dict.fromkeys([*data.notes, *cv_notes.all]))}
    png = out / "comparison_boxplot.png"
    cases = {spec: slice_dice(dice, repeats)
             for spec, dice in dice_by_model.items()}  # a box of each slice once
    folds_text = (counted(result["folds"], "fold") if repeats == 1 else
                  repeats_text(result["folds"], repeats))
    plotted = drawn(lambda: _comparison_plot(config, data, cases, units_by_model, png,
                                             folds_text),
                    png, out / "comparison.json")
    write_text(out / "comparison.md", comparison_markdown(result, plotted))
    # Last, so that a comparison.json means the rest is written (finished_comparison), as cv's
    # summary.json: one stopped before comparison.md looked finished to a --resume.
    write_json(out / "comparison.json", result)
    if left_out and trains:  # said again: the first went by before the training's lines
        log.warning("%s: %s", out, left_out_note(left_out))
    return result


def _comparison_plot(config: TrainConfig, data: LoadedData,
                     dice_by_model: Mapping[str, Mapping[Hashable, float]],
                     units_by_model: Mapping[str, tuple[dict[Hashable, float], str]], png: Path,
                     folds: str) -> Path:
    """comparison_boxplot.png: each model's per-case Dice (each slice once: ``dice_by_model``,
    a repeated run's slices each its mean over the repeats) beside each candidate's paired
    differences from the baseline (the first model) in the units its test pairs
    (:func:`patient_dice`): boxes that overlap hid a difference the pairs show. Its Dice is
    named in the style of evaluate's and cv's boxes (:func:`~covseg.evaluate.drawn_name`), what
    it scores set off by commas: "Dice, any lesion, per case"."""
    scored = target_scored(config.target)
    dice, difference = (f"{drawn_name(name, scored)}{',' if scored else ''}"
                        for name in ("Dice", "Dice difference"))
    baseline, *candidates = dice_by_model
    base_units, unit = units_by_model[baseline]
    differences = {f"{spec} - {baseline}": list(paired_differences(units_by_model[spec][0],
                                                                   base_units))
                   for spec in candidates}
    return paired_plot({spec: list(d.values()) for spec, d in dice_by_model.items()},
                       differences, png, ylabel=f"{dice} per case",
                       difference_label=f"paired {difference} per {unit}",
                       title=f"{dice} by model on {data.named}, {folds}")


def finished_comparison(out: Path, specs: Sequence[str], folds: int,
                        left_out: Sequence[Mapping[str, str]]) -> dict[str, Any] | None:
    """The comparison.json of the finished comparison of ``specs`` over ``folds`` folds in
    ``out`` (written last: its report and plot are written), None where it is not finished: no
    comparison.json (one stopped writing its reports), another model list or models
    ``left_out``, or a model's cross-validation unfinished (:func:`finished_summary`). A
    --resume of a finished one returns it and leaves every file as it was: it rewrote them,
    listing a resume that trained nothing."""
    if not all(finished_summary(out / model_folder(spec), folds) is not None for spec in specs):
        return None
    result = read_record(out / "comparison.json")
    rows = result.get("models") if result is not None else None
    if result is None or not isinstance(rows, list) or result.get("left_out") != list(left_out):
        return None
    named = [row.get("model") if isinstance(row, dict) else None for row in rows]
    return result if named == list(specs) else None


def models_left_out(out: Path, specs: Sequence[str]) -> list[dict[str, str]]:
    """The models whose cross-validation lies in ``out`` (a folder holding folds or a summary)
    but which ``specs`` do not name: a resume with another model list leaves them out of the
    report. Each as ``{"model", "folder"}``, the model named as the earlier comparison.json
    named it, among its models or those it left out (from the second such resume on, it was
    named by its folder), its folder's name where that record is gone, as a comparison stopped
    midway."""
    record = read_record(out / "comparison.json") or {}
    try:
        earlier = {row["folder"]: row["model"]
                   for row in [*record.get("left_out", []), *record["models"]]}
    except (KeyError, TypeError):
        earlier = {}
    named = {model_folder(spec).lower() for spec in specs}  # as check_specs: case ignored
    return [{"model": earlier.get(folder.name, folder.name), "folder": folder.name}
            for folder in sorted(out.glob("*/"))
            if folder.name.lower() not in named and cross_validation_work(folder)]


def left_out_note(left_out: Sequence[Mapping[str, str]]) -> str:
    """One line on the models :func:`models_left_out` found, and what to do about them."""
    models = ", ".join(f"{row['model']} ({row['folder']}/)" for row in left_out)
    it, stays, folder = (("it", "its folder stays", "folder") if len(left_out) == 1
                         else ("them", "their folders stay", "folders"))
    return (f"{models} of an earlier comparison in this folder, not among the models compared "
            f"now: left out of the report; {stays} (name {it} among the models to report {it}, "
            f"or delete the {folder})")


def _shared_recipe(config: TrainConfig, windowed: bool) -> dict[str, Any]:
    """The recipe every compared model trained with, recorded as its folds record theirs
    (``window`` null where no image was ``windowed``): its own name and options are in its row."""
    return {k: v for k, v in config.record(windowed).items()
            if k not in ("model", "model_options")}


SAFE_FOLDER = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
"""A model's folder under ``--out``: one path component, no separator, never ``.`` or ``..``."""


def model_folder(spec: str) -> str:
    """The folder, under ``--out``, of a model's cross-validation: the spec spelt as a name
    (``unet:width=8`` -> ``unet_width-8``); a spec with other characters (a ``weights=PATH``)
    gets its options' file names, made safe, and a hash of the whole spec, so that it stays
    one folder inside ``--out`` and no other spec shares it (``fcn_weights-w-3fa2c1``)."""
    plain = spec.replace(":", "_").replace(",", "_").replace("=", "-").replace("+", "p")
    if SAFE_FOLDER.fullmatch(plain):
        return plain
    name, options = parse_model_spec(spec)
    parts = [name.replace("+", "p")] + [
        f"{key}-{Path(value).stem if isinstance(value, str) else value}"
        for key, value in options.items()]
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(parts)).lstrip(".")
    digest = hashlib.sha256(spec.encode("utf-8")).hexdigest()[:6]
    return f"{readable}-{digest}"


def check_compare_folder(out: Path, specs: Sequence[str], resume: bool) -> None:
    """``out`` may hold no other command's output nor, in a model's folder, another model's
    folds; without ``resume``, a comparison already there (comparison.json, or a model's folds
    or summary) is refused, as cv refuses its own (see :func:`~covseg.train.unresumed`)."""
    refuse_other_output(out, COMPARISON)
    refuse_if_held(out)  # a comparison running there: named, not "pass --resume"
    for spec in specs:
        _check_folder_holds(out / model_folder(spec), spec)
    if resume:
        return
    held = [path for path in [out / "comparison.json"] if path.is_file()] + [
        folder for folder in sorted(out.glob("*/")) if cross_validation_work(folder)]
    if held:
        raise unresumed(out, f"a model comparison ({', '.join(p.name for p in held)})")


def refuse_gone_spec_weights(config: TrainConfig, specs: Sequence[str], out: Path,
                             folds: int | None) -> None:
    """:func:`~covseg.crossval.refuse_gone_fold_weights` for every model's folds, before the
    data are read."""
    for spec in specs:
        refuse_gone_fold_weights(_spec_recipe(config, spec), out / model_folder(spec), folds)


def spec_pins(config: TrainConfig, specs: Sequence[str], out: Path,
              folds: int | None) -> dict[str, str | None]:
    """Every model's :func:`~covseg.crossval.pinned_lungs`, before the data are read: a lung
    run retrained since a model's folds trained is refused before any model trains or any
    file in ``out`` changes."""
    return {spec: pinned_lungs(_spec_recipe(config, spec), out / model_folder(spec), folds)
            for spec in specs}


def _check_folder_holds(folder: Path, spec: str) -> None:
    """A model's folder already holding another model's folds is refused before anything
    trains (the spec's own folds are reused or resumed by cross-validation)."""
    name, options = parse_model_spec(spec)
    for record in (fold / "config.json" for fold in fold_folders(folder)):
        try:
            trained = json.loads(record.read_text())["config"]
            other = (trained["model"], trained["model_options"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable record (a folder, say): cross-validation names it
        if other != (name, absolute_weights(options)):  # as a recipe records its file
            raise CovsegError(f"{folder} holds folds of another model ({other[0]} with options "
                              f"{other[1]}), not of {spec}; compare into a new "
                              f"{option_name('out')} or delete {folder}")


def per_case_dice(cv_dir: Path, table: str = "per_case.csv", by_fold: bool = False
                  ) -> dict[Hashable, float]:
    """Per-case Dice of a finished ``covseg cv`` folder, from its ``per_case.csv`` (or of one
    finished fold, from its ``test_per_case.csv``), keyed by case id, or ``by_fold`` by
    (fold, case id): the same fold's same slice pairs up between models, and a slice that two
    folds test keeps both."""
    return _case_dice(read_rows(cv_dir / table), by_fold)


def _case_dice(rows: Sequence[Mapping[str, str]], by_fold: bool) -> dict[Hashable, float]:
    """Per-case Dice of rows read from a per-case table, keyed as :func:`per_case_dice` says
    (:func:`patient_dice` keys the rows it read so, not reading the table twice)."""
    return {(int(row["fold"]), row["case_id"]) if by_fold else row["case_id"]:
            float(row["dice"]) for row in rows}


def _class_dice_table(result: dict[str, Any]) -> list[str]:
    """A multi-class comparison's per-class Dice per model (mean ± std over folds, as each
    model's report.md gives it) as Markdown lines; none for a binary target."""
    rows = result["models"]
    keys = list(dict.fromkeys(key for row in rows for key in class_dice(row)))
    if not keys:
        return []
    lines = ["", ("Per-class Dice (mean ± sample std over folds; the paired test above is on "
                  "the Dice of any lesion):"), "",
             "| model | " + " | ".join(key.removesuffix("_dice") for key in keys) + " |",
             "|---|" + "---|" * len(keys)]
    return lines + [f"| {row['model']} | " + " | ".join(
        compared_mean(row[key], result) if key in row else UNDEFINED
        for key in keys)
        + " |" for row in rows]


def total_folds(result: Mapping[str, Any]) -> int:
    """The folds of a comparison (its comparison.json ``result``): its ``folds`` (one repeat's)
    times its :data:`~covseg.crossval.REPEATS` (1 in records before them), as its means over
    folds run over them all."""
    return int(result["folds"]) * int(result.get(REPEATS, 1))


def compared_mean(stats: dict[str, float], result: Mapping[str, Any]) -> str:
    """A model's metric over the folds of a comparison (``result``: its comparison.json), as
    :func:`~covseg.crossval.mean_over_folds` says it over all its folds and repeats."""
    return mean_over_folds(stats, total_folds(result), result.get(REPEATS, 1))


def cost_text(value: float) -> str:
    """A cost to one decimal, or two significant digits below 1: a small model's 0.04 GFLOPs
    read 0.0, as if it cost nothing."""
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def _pairing_text(result: dict[str, Any]) -> str:
    """What the paired columns of comparison.md pair: patients (a patient's mean Dice over its
    slices) where the data name patients of several slices, else slices; of a repeated
    comparison, each its mean over its repeats too (one pair each)."""
    tests = [row["wilcoxon_vs_baseline"] for row in result["models"]
             if "wilcoxon_vs_baseline" in row]
    unit = tests[0].get("unit", "slice") if tests else "slice"
    alone = result.get("cases_without_patient_id", 0)
    repeats = result.get(REPEATS, 1)
    ungrouped = (f", {alone} of them slices that carry no patient id, each counted alone;"
                 if alone else ",")
    over = f" and its {repeats} repeats" if repeats > 1 else ""
    pairs = (f"per-patient pairs ({counted(tests[0]['pairs'], 'patient')}{ungrouped} each its "
             f"mean Dice over its slices{over}, as slices of one patient are not independent)"
             if unit == "patient" and tests else
             ("per-slice pairs (the same fold's same slice, each counted alone: where the data "
              "name no patients, slices of one patient among them are not independent and make "
              "p too small)" if repeats == 1 else
              f"per-slice pairs (each slice's mean Dice over its {repeats} repeats, one pair per "
              "slice: a slice counted once per repeat would make p too small; where the data "
              "name no patients, slices of one patient among them are not independent and make "
              "p too small)"))
    adjusted = (f"; p is unadjusted for the {len(tests)} comparisons against the baseline, "
                "p (Holm) adjusts it for them (Holm's step-down)"
                if any("p_holm" in test for test in tests) else "")
    return ("Δ Dice: a model's Dice minus the baseline's; better/worse, paired Δ (the mean "
            f"paired difference, its 95 % CI by a seeded bootstrap over the pairs) and p: {pairs}, "
            "p by a two-sided paired Wilcoxon signed-rank test on the untied pairs (tied pairs "
            f"left out of the test){_method_text(result)}{adjusted}. That p takes these trained "
            "networks as given (training variation is not included: one recipe trained with two "
            "seeds differed at p = 1e-5 over 52 MedSeg slices), so it says whether these networks "
            "differ on these cases, not whether the models do; p over folds: "
            + _fold_test_name(repeats) + ", which includes training variation"
            + (", Holm-adjusted where several candidates meet the baseline" if adjusted else "")
            + f", and the verdict (better, worse or no difference shown at {SIGNIFICANCE}) "
            "rests on it alone")


def _fold_test_name(repeats: int) -> str:
    """comparison.md's words for :func:`fold_t_test` over the folds of ``repeats`` repeats."""
    if repeats == 1:
        return ("Nadeau and Bengio's corrected resampled t-test on the per-fold mean differences "
                "(variance times 1/k + n_test/n_train, t with k − 1 degrees of freedom)")
    return ("Bouckaert and Frank's (2004) corrected repeated k-fold t-test on the per-fold mean "
            "differences over all k·r folds (Nadeau and Bengio's correction: variance times "
            "1/(k·r) + n_test/n_train, t with k·r − 1 degrees of freedom)")


METHOD_TEXT = {"exact": "from its exact distribution",
               "permutation": "from all 2^n sign flips (ties among the differences)",
               "normal approximation": "by the normal approximation, over many pairs"}
"""How comparison.md says each ``method`` of :func:`paired_wilcoxon` had its p."""


def _method_text(result: dict[str, Any]) -> str:
    """How the candidates' p values were had, each method with its models where they differ;
    none for records written before the method was kept."""
    by_method: dict[str, list[str]] = {}
    for row in result["models"]:
        method = row.get("wilcoxon_vs_baseline", {}).get("method")
        if method:
            by_method.setdefault(method, []).append(row["model"])
    if len(by_method) == 1:
        return f", p {METHOD_TEXT[next(iter(by_method))]}"
    return "".join(f", p {METHOD_TEXT[method]} for {', '.join(models)}"
                   for method, models in by_method.items())


def _test_notes(result: dict[str, Any]) -> list[str]:
    """A line per candidate whose pairs are too few for its test to reach p < 0.05, and one
    where the folds are so few that the t over folds reaches it only at a large |t|
    (:func:`_few_folds_note`)."""
    return [f"- Too few pairs: {row['model']} vs {result['baseline']}: "
            f"{row['wilcoxon_vs_baseline']['note']} (the exact two-sided test's smallest p is "
            f"2 / 2^n: below {SIGNIFICANCE} only from 6 untied pairs on)"
            for row in result["models"] if row.get("wilcoxon_vs_baseline", {}).get("note")
            ] + _few_folds_note(result)


FEW_FOLDS = 3
"""Folds up to which comparison.md says how large a t over folds must be to reach
:data:`SIGNIFICANCE` (|t| > 12.7 over 2 folds, 4.30 over 3, 3.18 over 4, 2.78 over 5)."""


def _few_folds_note(result: dict[str, Any]) -> list[str]:
    """A line where the t over folds has at most :data:`FEW_FOLDS` folds (every candidate's
    folds, so one line): the |t| that p < 0.05 needs (scipy's t quantile at k - 1 degrees of
    freedom) and so the fold differences' mean in their sample stds (times the root of the
    variance factor), as "no difference shown" over 2 folds read like a tested result. None
    for one fold (p NaN) and for records written before the test was kept."""
    tests = [row[FOLD_TEST] for row in result["models"] if "df" in row.get(FOLD_TEST, {})]
    if not tests or not 2 <= tests[0]["df"] + 1 <= FEW_FOLDS:
        return []
    from scipy.stats import t  # here: scipy.stats costs 0.7 s

    df, factor = tests[0]["df"], tests[0]["variance_factor"]
    critical = float(t.ppf(1 - SIGNIFICANCE / 2, df))
    return [(f"- Few folds: over {df + 1} folds the t has {counted(df, 'degree')} of freedom, "
             f"so p over folds falls below {SIGNIFICANCE} only where |t| > {critical:.3g}: "
             f"where the fold differences' mean is over {critical * math.sqrt(factor):.3g} "
             "times their sample std; \"no difference shown\" is then no evidence of no "
             f"difference (more folds, or {option_name('repeats')}, test it)")]


def _hd95_coverage(result: dict[str, Any]) -> list[str]:
    """A line where the models' HD95 means cover different numbers of slices, or a model
    missed lesions (predicted nothing on a slice with one), whose HD95 is undefined there and
    left out: a model that predicts nothing scored the best HD95, 0 on empty slices alone."""
    rows = [row for row in result["models"] if hd95_cover(row)[1]]
    covered = {row["model"]: hd95_cover(row)[0] for row in rows}
    missed = {row["model"]: row["empty_mask_counts"] for row in rows
              if row.get("empty_mask_counts")}
    if not any(counts["lesion_slices_predicted_empty"] for counts in missed.values()):
        missed = {}
    if len(set(covered.values())) < 2 and not missed:
        return []
    total, repeats = hd95_cover(rows[0])[1], result.get(REPEATS, 1)
    text = ("- HD95 is undefined where exactly one mask is empty and left out of the means, so "
            "they cover " + ("different " if len(set(covered.values())) > 1 else "")
            + f"{tested(total, repeats)}: "
            + ", ".join(f"{model} {count} of {total}" for model, count in covered.items()))
    if missed:
        text += (f"; lesions missed ({tested_unit(repeats)} with a lesion on "
                 "which the model predicted nothing, no HD95 penalty): " + ", ".join(
                     f"{model} {counts['lesion_slices_predicted_empty']} of "
                     f"{counts['lesion_slices']}" for model, counts in missed.items()))
    return [text]


def _cost_size(row: Mapping[str, Any]) -> str:
    """`` at 224²`` after a cost measured on the model's canvas, not the column's 512 px slice
    (:func:`~covseg.models.profile.profile_for_comparison`'s ``size_note``); else nothing."""
    return f" at {row['size']}²" if "size_note" in row else ""


def _cost_size_notes(result: dict[str, Any]) -> list[str]:
    """A line per model whose cost was measured on its canvas, saying why (its ``size_note``)."""
    return [f"- Cost of {row['model']}: GFLOPs and CPU ms {row['size_note']}"
            for row in result["models"] if "size_note" in row]


def paired_difference_text(test: Mapping[str, Any]) -> str:
    """The mean paired difference and its 95 % bootstrap interval, e.g. ``+0.060 (+0.010,
    +0.110)``; the interval left out where there is none (one pair, or a record without)."""
    low, high = test.get("ci95_mean_difference", (math.nan, math.nan))
    mean = test.get("mean_difference", math.nan)
    if math.isnan(mean):
        return UNDEFINED
    return f"{mean:+.3f}" + ("" if math.isnan(low) else f" ({low:+.3f}, {high:+.3f})")


def fold_test_text(test: Mapping[str, Any] | None) -> str:
    """A candidate's :func:`fold_t_test` and its verdict: ``0.012 (Holm 0.024): better``;
    empty for the baseline and for records written before the test was kept."""
    if not test:
        return ""
    holm_text = f" (Holm {test['p_holm']:.3g})" if "p_holm" in test else ""
    return f"{test['p_value']:.3g}{holm_text}: {test['verdict']}"


def comparison_markdown(result: dict[str, Any], plotted: bool) -> str:
    """The comparison table as Markdown, with its box plot where ``plotted`` (one not drawn,
    :func:`~covseg.viz.drawn`, was linked as a missing file)."""
    multiclass = result["config"].get("target") == "multiclass"
    holm_column = any("p_holm" in row.get("wilcoxon_vs_baseline", {}) for row in result["models"])
    hd95 = hd95_keys(result["models"][0])
    units = [f"HD95 ({hd95_unit(key, result)})" for key in hd95]
    columns = [any_lesion(name, multiclass)
               for name in ("Dice", "IoU", "sensitivity", "precision", *units)]
    lines = [
        "# Model comparison",
        "",
        *(["**SYNTHETIC data**: figures say nothing about real CT.", ""]
          if result["synthetic"] else []),
        f"- Data: {result['data']}",
        (f"- {result['folds']}-fold cross-validation, identical folds and seed for every "
         f"model; folds: {result['fold_source']}"),  # which says any repeats
        *repeated_line(result, total_folds(result)),
        f"- Baseline: `{result['baseline']}`; {_pairing_text(result)}",
        ("- Metrics: mean ± sample std over folds, a fold's value being the mean over its "
         "slices"),
        f"- Recipe (shared; each model's name and options in its row): `{result['config']}`",
        *([f"- Note: {left_out_note(result['left_out'])}"] if result.get("left_out") else []),
        *_test_notes(result),
        *_hd95_coverage(result),
        *_cost_size_notes(result),
        *hd95_units_line(result.get("hd95_slices_by_unit", {})),
        *data_warnings(result),
        "",
        ("| model | " + " | ".join(columns) + f" | Δ {columns[0]} | better/worse "
         f"| paired Δ (95 % CI) | {any_lesion('p', multiclass)} | "
         + ("p (Holm) | " if holm_column else "") + "p over folds: verdict | params "
         f"| GFLOPs/{CT_SIZE}² | CPU ms/{CT_SIZE}² | CV training |"),
        "|" + "---|" * (len(columns) + 10 + holm_column),
    ]
    for row in result["models"]:
        test = row.get("wilcoxon_vs_baseline")
        delta = "baseline" if not test else (
            UNDEFINED if math.isnan(row["dice_difference"]) else f"{row['dice_difference']:+.3f}")
        counts = (f"{test['cases_better']}/{test['cases_worse']}"
                  + (f" ({test['cases_tied']} tied)" if test.get("cases_tied") else "")
                  if test else "")
        p_value = f"{test['p_value']:.3g}" if test else ""
        if holm_column:
            p_value += f" | {test['p_holm']:.3g}" if test else " | "
        paired = paired_difference_text(test) if test else ""
        cells = [compared_mean(row[m], result) for m in ("dice", "iou", "sensitivity", "precision",
                                                          *hd95)]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {delta} | {counts} | "
                     f"{paired} | {p_value} | {fold_test_text(row.get(FOLD_TEST))} | "
                     f"{row['parameters']:,} | "
                     f"{cost_text(row['gflops_per_slice'])}{_cost_size(row)} | "
                     f"{row['cpu_ms_per_slice']:.0f}{_cost_size(row)} | "
                     f"{duration_text(row['train_seconds'])} |")
    lines += _class_dice_table(result)
    caption = f"per-case {columns[0]} by model and paired differences from the baseline"
    lines += ["", *(figure_link(caption, "comparison_boxplot.png", plotted) or [""]),
              _next_step(result)]
    return "\n".join(lines)


def _next_step(result: dict[str, Any]) -> str:
    """comparison.md's last line: :func:`final_step`."""
    return f"Next step: {final_step(result)}"


def spec_parts(spec: str | None) -> tuple[str | None, dict[str, Any]]:
    """A compared model's ``spec`` as its name and options (None and none: no spec)."""
    return parse_model_spec(spec) if spec else (None, {})


def best_compared(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The spec of the compared model of the highest mean Dice over folds (None: none has one;
    a damaged row, its model no name or its dice no object, has none)."""
    means = {row["model"]: row["dice"].get("mean") for row in rows
             if isinstance(row.get("model"), str) and isinstance(row.get("dice"), Mapping)}
    scored = {spec: mean for spec, mean in means.items()
              if isinstance(mean, (int, float)) and not math.isnan(mean)}
    return max(scored, key=scored.__getitem__) if scored else None


def compared_rows(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A comparison's per-model rows (``result``: its comparison.json, or what a folder's
    damaged or missing one gives): none where ``models`` is no list, a row no object left out."""
    models = result.get("models")
    return [row for row in models if isinstance(row, Mapping)] if isinstance(models, list) else []


def final_step(result: Mapping[str, Any]) -> str:
    """The model of the best mean Dice of a comparison (``result``: its comparison.json, or what
    a folder's damaged or missing one gives), trained on all the data, and where it is a
    candidate whose verdict is not "better", that the folds showed no difference from the
    baseline (named as if it had won, an equal model was taken for the better one): the end of
    comparison.md and of the refusal of a comparison's folder as a model."""
    rows = compared_rows(result)
    best = best_compared(rows)
    config = result.get("config")
    multiclass = isinstance(config, Mapping) and config.get("target") == "multiclass"
    test = next((row.get(FOLD_TEST) for row in rows if row.get("model") == best), None)
    unshown = (" (no difference from the baseline shown over the folds)"
               if isinstance(test, Mapping) and test.get("verdict", "better") != "better"
               else "")
    named = (f"`{best}` has the highest mean {any_lesion('Dice', multiclass)}{unshown}; "
             if best else "")
    name, options = spec_parts(best)
    return f"{named}{final_model_step(name, options, result, result.get('folds'))}"
