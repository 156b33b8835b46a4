"""Model comparison: identical folds for every model, paired Wilcoxon test, report files."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from covseg import api, crossval
from covseg.checkpoint import save_checkpoint
from covseg.cli import build_parser, main, swallowed_data
from covseg.compare import (
    BOOTSTRAP_RESAMPLES,
    COMPARED_METRICS,
    bootstrap_ci,
    check_spec_seeds,
    check_specs,
    comparison_markdown,
    fold_t_test,
    model_folder,
    paired_wilcoxon,
    parse_model_spec,
    per_case_dice,
    verdict,
)
from covseg.config import MAX_SEED, TrainConfig
from covseg.crossval import StaleFolds, make_folds, mean_over_folds, stale_folds_error
from covseg.data import load_dataset
from covseg.errors import CovsegError
from tests.conftest import (
    NEEDS_ZOO,
    calls_counted,
    data_unread,
    folder_holding,
    grey_folder,
    held_by_another_thread,
    mixed_unit_folder,
)

compare = importlib.import_module("covseg.compare")  # covseg.compare is also the API's function


def test_parse_model_spec() -> None:
    assert parse_model_spec("unet") == ("unet", {})
    assert parse_model_spec("unet++:encoder=densenet201,width=8") == (
        "unet++", {"encoder": "densenet201", "width": 8})
    with pytest.raises(CovsegError):
        parse_model_spec("unet:width")
    assert parse_model_spec("miniseg:deep_supervision=true,width=1.5") == (
        "miniseg", {"deep_supervision": True, "width": 1.5})  # as --model-option reads them
    with pytest.raises(CovsegError, match="separated by spaces"):
        parse_model_spec("unet:width=8,")  # from `--models unet:width=8, miniseg`


@pytest.mark.parametrize("specs, same", [
    (["unet:width=16", "unet"], "unet:width=16 and unet"),  # unet's width is 16
    (["unet", "miniseg", "unet:res_units=0,dropout=0"], "unet and unet:res_units=0,dropout=0"),
    (["miniseg", "miniseg:width=1"], "miniseg and miniseg:width=1"),  # 1 is its 1.0
    (["miniseg,miniseg", "miniseg,miniseg:deep_supervision=false"], "miniseg,miniseg and"),
    (["unet++", "unet++:width=32"], "unet++ and unet++:width=32"),  # None builds MONAI's 32
    (["unet++:width=32", "unet++:width=null"], "unet++:width=32 and unet++:width=null"),
])
def test_a_default_spelt_out_is_the_same_model(specs: list[str], same: str) -> None:
    """`--models unet:width=16 unet` trained one model twice and reported p = 1 between them,
    where `unet unet` is refused: specs are compared with the model's defaults filled in."""
    with pytest.raises(CovsegError, match=rf"^{re.escape(same)}.* are one model once its "
                                          r"defaults are filled in; name each model once"):
        check_specs(specs, 64)


@pytest.mark.parametrize("specs, variant", [
    (["unet++", "unet++:width=32"], "unet++:width=64"),
    (["miniseg", "miniseg:width=1"], "miniseg:width=2"),
    (["resunet:width=8", "resunet:width=8"], "resunet:width=16"),
])
def test_a_duplicate_is_told_a_variant_of_its_own_model(specs: list[str], variant: str) -> None:
    """The refusal of `unet++ unet++:width=32` suggested `unet:width=32`, another architecture:
    the example is now the duplicate's own model with another value, and one it takes."""
    with pytest.raises(CovsegError, match=rf"e\.g\. {re.escape(variant)}\)$"):
        check_specs(specs, 64)
    check_specs([specs[0], variant], 64)


@NEEDS_ZOO
def test_a_duplicate_without_number_options_is_told_its_options() -> None:
    with pytest.raises(CovsegError, match=r"name each model once \(to compare variants, give one "
                                          r"another value of deeplabv3's options: backbone, "
                                          r"weights\)$"):
        check_specs(["deeplabv3", "deeplabv3"], 64)
    with pytest.raises(CovsegError, match=r"^miniseg,unet given twice; name each model once$"):
        check_specs(["miniseg,unet", "miniseg,unet"], 64)


def test_variants_and_other_models_are_not_taken_for_one() -> None:
    check_specs(["unet:width=8", "unet", "resunet", "unet:res_units=2", "miniseg,unet"], 64)
    check_specs(["miniseg", "miniseg,miniseg", "miniseg:width=1.5"], 64)
    with pytest.raises(CovsegError, match="^unet given twice; name each model once"):
        check_specs(["unet", "miniseg", "unet"], 64)


def test_every_spec_is_checked_before_any_model_trains() -> None:
    with pytest.raises(CovsegError, match="'miniseg' has no option 'res_units'"):
        check_specs(["unet:width=8", "miniseg:res_units=3"], 64)
    with pytest.raises(CovsegError, match="unknown model 'minseg'"):
        check_specs(["unet", "minseg"], 64)
    with pytest.raises(CovsegError, match=r"every member of miniseg,unet, which mixes"):
        check_specs(["unet", "miniseg,unet:width=8"], 64)
    check_specs(["unet:width=8", "miniseg,miniseg:width=1.5"], 64)  # one architecture: options go


@NEEDS_ZOO
@pytest.mark.parametrize(("spec", "message"), [
    ("fcn:backbone=resnet18", "unknown backbone 'resnet18'"),
    ("deeplabv3+:encoder=nosuch", "unknown encoder 'nosuch'"),
    ("deeplabv3+:encoder=vgg16", "encoder 'vgg16' does not fit DeepLabV3Plus"),
])
def test_a_later_models_backbone_or_encoder_is_refused_before_any_fold(
        tmp_path: Path, synthetic_folder: Path, spec: str, message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The builders' own checks ran only when that model's turn came: `--models unet fcn:
    backbone=resnet18` cross-validated the baseline, every fold, before the typo was named."""
    out = tmp_path / "cmp"
    assert main(["compare", str(synthetic_folder), "--models", "unet:width=4", spec, "--folds",
                 "2", "--epochs", "1", "--size", "32", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_one_model_named_alone_is_not_read_letter_by_letter(tmp_path: Path) -> None:
    """compare("synthetic", "unet") compared 'u', 'n', 'e', 't' ("unknown model 'u'"); a
    single name is a list of one, as covseg.predict reads a single path."""
    with pytest.raises(CovsegError, match="^compare needs at least two models"):
        api.compare("synthetic", "unet", tmp_path / "cmp", epochs=1)
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("given", [{"model_options": {"width": 4}}, {"model": "unet"}])
def test_the_api_refuses_one_model_or_options_for_every_model(
        tmp_path: Path, given: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """model_options= was dropped (every model trained without it) or checked against the
    default model, never trained; each model's options go in its spec, as in the CLI."""
    def no_training(*args: object, **kwargs: object) -> None:
        pytest.fail("compare trained with model= or model_options= given")

    monkeypatch.setattr(compare, "cross_validate", no_training)
    key = next(iter(given))
    with pytest.raises(CovsegError, match=re.escape(
            f"compare takes each model's name and options in models (e.g. ['unet', "
            f"'unet:width=8']), not {key}=")):
        api.compare("synthetic", ["unet", "unet:width=16"], tmp_path / "cmp", **given)
    assert not (tmp_path / "cmp").exists()


def test_an_abbreviated_option_is_not_taken_for_another() -> None:
    """argparse took ``--model`` for ``--models`` and replaced the list of compared models."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "synthetic", "--models", "unet", "miniseg",
                                   "--model", "miniseg", "--out", "x"])


@pytest.mark.parametrize("data", ["folder", "synthetic"])
def test_data_after_the_model_list_is_named_not_called_missing(
        tmp_path: Path, synthetic_folder: Path, capsys: pytest.CaptureFixture[str],
        data: str) -> None:
    """`compare --models unet miniseg DATA --out X`: nargs="+" took DATA as a third model and
    argparse said "the following arguments are required: data" to a user who had given it."""
    given = str(synthetic_folder) if data == "folder" else "synthetic"
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--models", "unet", "miniseg", given, "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert err == (f"covseg: error: DATA was read as a model name after --models "
                   f"({given}): put the data folder before --models (or end the list with --) "
                   "(see `covseg compare -h`)\n")
    with pytest.raises(SystemExit):  # --out missing too: both said
        main(["compare", "--models", "unet", "miniseg", given])
    assert "(or end the list with --); also required: --out (see" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_options_after_the_dashes_are_named_as_read_for_data(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`compare --models unet miniseg -- synthetic --out X`: all after `--` is positional, and
    argparse said "--out is required" to a user who had given it."""
    out = str(tmp_path / "c")
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--models", "unet", "miniseg", "--", "synthetic", "--out", out,
              "--folds", "2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "covseg: error: --out, --folds after `--` were read as data, not as options "
        "(all after `--` is): give the options before --models (see `covseg compare -h`)\n")
    with pytest.raises(SystemExit):
        main(["compare", "--out", out, "--models", "unet", "miniseg", "--", "synthetic",
              "--folds", "2"])
    assert "error: --folds after `--` were read as data" in capsys.readouterr().err
    args = build_parser().parse_args(["compare", "--out", out, "--folds", "2", "--models",
                                      "unet", "miniseg", "--", "synthetic"])
    assert (args.data, args.models, args.out, args.folds) == (
        "synthetic", ["unet", "miniseg"], out, 2)  # the form README and -h give
    assert not (tmp_path / "c").exists()


def test_a_model_list_without_data_keeps_argparses_words(
        tmp_path: Path, synthetic_folder: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No DATA at all, the last model a model: argparse's own message; DATA before --models,
    or after a -- ending the list, is read as DATA."""
    with pytest.raises(SystemExit):
        main(["compare", "--models", "unet", "miniseg:width=0.5", "--out", str(tmp_path / "c")])
    assert capsys.readouterr().err == ("covseg: error: the following arguments are "
                                       "required: data (see `covseg compare -h`)\n")
    for argv in (["compare", str(synthetic_folder), "--models", "unet", "miniseg"],
                 ["compare", "--models", "unet", "miniseg", "--", str(synthetic_folder)]):
        args = build_parser().parse_args([*argv[:1], "--out", "x", *argv[1:]])
        assert (args.data, args.models) == (str(synthetic_folder), ["unet", "miniseg"])


@pytest.mark.parametrize("missing, argv, last", [
    ("data", ["--models", "unet", "miniseg", "synthetic:3"], "synthetic:3"),
    ("data", ["--models", "unet", "nosuch", "--folds", "2"], "nosuch"),
    ("data", ["--models", "unet", "miniseg", "--models", "unet", "mydata"], "mydata"),
    ("data", ["--models", "unet", "miniseg,unet:width=8", "--out", "x"], None),
    ("--out", ["x", "--models", "unet", "miniseg", "--", "y"], None),
])
def test_swallowed_data_looks_at_the_last_model_named(missing: str, argv: list[str],
                                                      last: str | None) -> None:
    hint = swallowed_data(f"the following arguments are required: {missing}", argv)
    assert hint is None if last is None else f"after --models ({last}):" in hint


def test_paired_wilcoxon_against_hand_checked_values() -> None:
    baseline = {f"c{i}": 0.5 for i in range(8)}
    better = {f"c{i}": 0.5 + 0.01 * (i + 1) for i in range(8)}
    result = paired_wilcoxon(better, baseline)
    assert result["pairs"] == 8 and result["cases_better"] == 8
    # all 8 differences positive: exact two-sided p = 2 / 2**8
    assert result["p_value"] == pytest.approx(2 / 2**8)
    assert paired_wilcoxon(baseline, baseline)["p_value"] == 1.0
    two_tied = {**better, "c0": 0.5, "c1": 0.5}  # equal Dice: left out of the test, counted
    result = paired_wilcoxon(two_tied, baseline)
    assert (result["cases_better"], result["cases_worse"], result["cases_tied"]) == (6, 0, 2)
    assert result["p_value"] == pytest.approx(2 / 2**6)


def test_the_fold_test_counts_training_variation_where_the_wilcoxon_does_not() -> None:
    """compare's only test paired slices as independent, though each fold trains one network:
    one recipe trained with seeds 0 and 20 differed at p = 1e-5 over 52 MedSeg slices, and its
    verdict rested on that p. Nadeau and Bengio's corrected resampled t-test on the per-fold
    mean differences (variance times 1/k + n_test/n_train, t with k - 1 df) now stands beside
    it and decides the verdict: here every slice of a fold differs by that fold's shift, as a
    network trained with another seed shifts them, which the Wilcoxon reads as proof."""
    from scipy.stats import t

    shifts = [0.01, 0.02, 0.03, 0.0, 0.04]
    baseline = {(k, f"c{k}_{i}"): 0.5 + 0.001 * i for k in range(5) for i in range(10)}
    candidate = {(k, case): dice + shifts[k] for (k, case), dice in baseline.items()}
    splits = [([f"t{i}" for i in range(40)], [f"c{k}_{i}" for i in range(10)]) for k in range(5)]
    assert paired_wilcoxon(candidate, baseline)["p_value"] < 1e-6
    result = fold_t_test(candidate, baseline, splits)
    assert result["fold_differences"] == pytest.approx(shifts)
    assert result["variance_factor"] == pytest.approx(1 / 5 + 10 / 40)
    statistic = 0.02 / math.sqrt((1 / 5 + 10 / 40) * np.var(shifts, ddof=1))
    assert result["statistic"] == pytest.approx(statistic) == pytest.approx(1.8856, abs=1e-4)
    assert result["p_value"] == pytest.approx(2 * t.sf(statistic, 4)) == pytest.approx(0.132,
                                                                                   abs=1e-3)
    assert verdict(result) == "no difference shown"  # uncorrected (1/k alone): p = 0.047
    steady = {(k, case): dice + 0.02 + shifts[k] / 10 for (k, case), dice in baseline.items()}
    assert verdict(fold_t_test(steady, baseline, splits)) == "better"
    assert verdict({**fold_t_test(steady, baseline, splits), "p_holm": 0.06}) == (
        "no difference shown")
    assert verdict(fold_t_test(baseline, steady, splits)) == "worse"
    assert fold_t_test(baseline, baseline, splits)["p_value"] == 1.0
    one_fold = {key: dice for key, dice in candidate.items() if key[0] == 0}
    assert math.isnan(fold_t_test(one_fold, baseline, splits[:1])["p_value"])


def test_paired_wilcoxon_pairs_by_key_not_by_order() -> None:
    """Every test built both models' dicts in one order, so pairing by position went unnoticed:
    here every case is 0.1 better, listed in opposite orders."""
    candidate = {"a": .9, "b": .5, "c": .7, "d": .6, "e": .8, "f": .3}
    baseline = {"f": .2, "e": .7, "d": .5, "c": .6, "b": .4, "a": .8}
    result = paired_wilcoxon(candidate, baseline)
    assert (result["cases_better"], result["cases_worse"]) == (6, 0)
    assert result["p_value"] == pytest.approx(2 / 2**6)
    assert result["ci95_mean_difference"] == pytest.approx([0.1, 0.1])


def _sign_flip_p(diffs: list[float]) -> float:
    """The two-sided signed-rank p of ``diffs`` by its definition: zeros dropped, midranks of
    the |differences|, the sum of the positive ones' ranks against all 2^n sign flips."""
    untied = np.array([d for d in diffs if d != 0])
    size = np.abs(untied)
    ranks = np.array([((size < v).sum() + 1 + (size <= v).sum()) / 2 for v in size])
    flips = (np.arange(2 ** len(untied))[:, None] >> np.arange(len(untied))) & 1
    sums, observed = flips @ ranks, ranks[untied > 0].sum()
    return min(1.0, 2 * min(float((sums <= observed).mean()), float((sums >= observed).mean())))


@pytest.mark.parametrize("untied, tied, method", [
    ([1 / 64, 2 / 64, 3 / 64, 4 / 64, 5 / 64], 10, "exact"),  # p 0.0431 by scipy's own choice
    ([1 / 8], 20, "exact"),  # 0.317 by scipy's own choice, of a single untied pair
    ([1 / 8] * 5 + [-1 / 8] + [1 / 4] * 3 + [3 / 8, -1 / 16], 4, "permutation"),
    ([1 / 8, 1 / 8, -1 / 8, 1 / 4, 1 / 4, 3 / 8, 1 / 2, -5 / 8], 2, "permutation"),  # 0.3125
])
def test_tied_pairs_leave_an_exact_p_of_the_untied_ones(untied: list[float], tied: int,
                                                        method: str) -> None:
    """scipy counted the tied pairs among n, so from 14 pairs it approximated the p of the
    few untied ones, and gave p below the 2 / 2^n that the note beside it called the floor.
    Ties among the |differences| take all sign flips: the exact distribution, which assumes
    none, gives another p (0.3125, not 0.297, on the last)."""
    diffs = [*untied, *[0.0] * tied]
    baseline = {f"c{i}": 0.5 for i in range(len(diffs))}
    result = paired_wilcoxon({case: 0.5 + d for case, d in zip(baseline, diffs)}, baseline)
    assert result["method"] == method and result["cases_tied"] == tied
    assert result["p_value"] == pytest.approx(_sign_flip_p(diffs))
    assert result["p_value"] >= result["min_p_value"]


def test_a_single_untied_pair_is_tested_exactly() -> None:
    """One pair, untied, is tested as any: by its exact distribution, p 1 (a sign flip of one
    rank is as likely), recorded with its method and statistic."""
    result = paired_wilcoxon({"a": 0.75}, {"a": 0.5})
    assert (result["method"], result["p_value"], result["statistic"]) == ("exact", 1.0, 0.0)


def test_many_untied_pairs_are_tested_by_the_normal_approximation() -> None:
    """Past 13 pairs whose differences hold ties, or 500 without, enumerating sign flips or the
    exact distribution costs seconds, and the normal approximation is accurate: within 0.01
    of the p of all 2^14 sign flips here."""
    diffs = [1 / 8] * 6 + [-1 / 8] * 2 + [1 / 4] * 4 + [3 / 8, -1 / 16]
    baseline = {f"c{i}": 0.5 for i in range(len(diffs))}
    result = paired_wilcoxon({case: 0.5 + d for case, d in zip(baseline, diffs)}, baseline)
    assert result["method"] == "normal approximation"
    assert result["p_value"] == pytest.approx(_sign_flip_p(diffs), abs=0.01)
    many = {i: 0.5 + i / 2**12 for i in range(1, 502)}
    assert paired_wilcoxon(many, dict.fromkeys(many, 0.5))["method"] == "normal approximation"
    assert paired_wilcoxon({i: many[i] for i in range(1, 501)},
                           dict.fromkeys(many, 0.5))["method"] == "exact"


@pytest.mark.parametrize("untied, method", [
    ([1 / 8] * 2 + [1 / 16 * k for k in range(3, 14)], "permutation"),  # 13 pairs, one tie
    ([1 / 8] * 2 + [1 / 16 * k for k in range(3, 15)], "normal approximation"),  # 14
    ([1 / 8, -1 / 8, 1 / 4], "permutation"),  # |differences| tied across signs
    ([1 / 8, -1 / 4, 3 / 8], "exact"),
])
def test_the_signed_rank_method_is_chosen_by_ties_and_untied_pairs(untied: list[float],
                                                                    method: str) -> None:
    """All 2^n sign flips up to PERMUTATION_PAIRS (13) pairs whose |differences| hold ties, a
    tie being one of |differences| whatever their signs; the exact distribution where none."""
    from covseg.compare import _signed_rank_method

    assert _signed_rank_method(np.array(untied)) == method


def test_a_patients_dice_is_the_mean_over_its_slices(tmp_path: Path) -> None:
    """P1's slices 0.1, 0.8, 0.9: mean 0.6 (the report's "mean Dice over its slices"), where
    their median, 0.8, went unnoticed."""
    (tmp_path / "per_case.csv").write_text(
        "fold,case_id,dice,patient_id\n0,s1,0.1,P1\n0,s2,0.8,P1\n0,s3,0.9,P1\n"
        "1,s4,0.5,P2\n1,s5,0.5,P2\n")
    dice, unit = compare.patient_dice(tmp_path)
    assert unit == "patient" and dice == {"P1": pytest.approx(0.6), "P2": 0.5}


def test_a_one_slice_patient_beside_a_several_slice_one_still_pairs_by_patient(
        tmp_path: Path) -> None:
    """Patients are the units once any patient holds several slices: A's 0.5, 0.6, 0.7 are one
    pair (0.6) beside B's single slice, not four slice pairs."""
    (tmp_path / "per_case.csv").write_text(
        "fold,case_id,dice,patient_id\n0,s1,0.5,A\n0,s2,0.6,A\n0,s3,0.7,A\n1,s4,0.9,B\n")
    dice, unit = compare.patient_dice(tmp_path)
    assert unit == "patient" and dice == {"A": pytest.approx(0.6), "B": 0.9}


@pytest.mark.parametrize("pairs, tied, note", [
    (4, 0, "n = 4 pairs: p cannot fall below 0.125"),
    (5, 0, "n = 5 pairs: p cannot fall below 0.0625"),
    (6, 2, "n = 4 untied pairs: p cannot fall below 0.125"),
    (6, 0, None),
])
def test_too_few_pairs_to_reach_significance_are_said_so(pairs: int, tied: int,
                                                        note: str | None) -> None:
    """4 patients gave p = 0.375 as an ordinary result, though the exact two-sided test
    cannot go below 2 / 2**4 = 0.125 there: below 0.05 only from 6 untied pairs on."""
    baseline = {f"c{i}": 0.5 for i in range(pairs)}
    better = {case: 0.5 + 0.01 * (i + 1) * (i >= tied) for i, case in enumerate(baseline)}
    result = paired_wilcoxon(better, baseline)
    untied = pairs - tied
    assert result["min_p_value"] == 2 / 2**untied
    assert result["p_value"] == pytest.approx(2 / 2**untied)  # every difference positive
    assert result.get("note") == note


def test_holm_adjusts_the_candidates_p_values_by_hand() -> None:
    holm = compare.holm
    # sorted 0.01, 0.02, 0.04: 3 x 0.01, 2 x 0.02, then 1 x 0.04 (kept non-decreasing)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # 2 x 0.01 = 0.02, then max(0.02, 0.015) = 0.02; 3 x 0.4 capped at 1; NaN not counted
    assert holm([0.015, 0.01]) == pytest.approx([0.02, 0.02])
    adjusted = holm([0.4, math.nan, 0.5])
    assert adjusted[0] == pytest.approx(0.8) and adjusted[2] == pytest.approx(0.8)
    assert math.isnan(adjusted[1])
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_several_candidates_get_holm_p_values_and_few_pairs_a_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two candidates each had an unadjusted p against the baseline with no word of the
    multiplicity, and a test of 4 untied pairs none of its floor."""
    base = {case: 0.5 for case in "abcdef"}
    gains = {"miniseg": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06],
             "resunet": [0.0, 0.0, 0.03, 0.04, 0.05, 0.06]}  # two tied pairs
    dice = {"unet": base} | {model: {case: 0.5 + gain for case, gain in zip(base, values)}
                             for model, values in gains.items()}
    _fake_runs(monkeypatch, {model: [{c: d[c] for c in "abc"}, {c: d[c] for c in "def"}]
                             for model, d in dice.items()})
    assert main(["compare", "synthetic", "--out", str(tmp_path), "--models", "unet", "miniseg",
                 "resunet"]) == 0
    from scipy.stats import wilcoxon
    p_mini = wilcoxon(gains["miniseg"]).pvalue
    p_res = wilcoxon(gains["resunet"], zero_method="wilcox").pvalue
    assert (p_mini, p_res) == (pytest.approx(2 / 2**6), pytest.approx(2 / 2**4))
    holm_mini, holm_res = 2 * p_mini, max(2 * p_mini, p_res)  # Holm by hand, p_mini smallest
    out = capsys.readouterr().out.splitlines()
    low, high = bootstrap_ci(np.array(gains["miniseg"]))  # the paired Δ, as comparison.md's
    assert f", paired Δ (95 % CI) +0.035 ({low:+.3f}, {high:+.3f}), p = " in out[1]
    recorded = json.loads((tmp_path / "comparison.json").read_text())["models"]
    folds = [row["corrected_t_vs_baseline"] for row in recorded[1:]]
    assert [d for test in folds for d in test["fold_differences"]] == pytest.approx(
        [0.02, 0.05, 0.01, 0.05])
    fold_holm = [min(1.0, max(2 * min(t["p_value"] for t in folds), test["p_value"]))
                 for test in folds]
    assert [test["p_holm"] for test in folds] == pytest.approx(fold_holm)
    over_folds = [f"; over 2 folds (corrected t, training variation included) p = "
                  f"{test['p_value']:.3g} (Holm {test['p_holm']:.3g}): no difference shown"
                  for test in folds]
    assert out[1].endswith(f"p = {p_mini:.3g} (Holm {holm_mini:.3g}) vs unet over 6 slices "
                           "(these trained networks; training variation not included)"
                           + over_folds[0])
    assert out[2].endswith(f"p = {p_res:.3g} (Holm {holm_res:.3g}) vs unet over 6 slices "
                           "(these trained networks; training variation not included); "
                           "n = 4 untied pairs: p cannot fall below 0.125" + over_folds[1])
    assert [row["wilcoxon_vs_baseline"]["p_holm"] for row in recorded[1:]] == pytest.approx(
        [holm_mini, holm_res])
    assert recorded[2]["wilcoxon_vs_baseline"]["note"] == (
        "n = 4 untied pairs: p cannot fall below 0.125")
    assert "note" not in recorded[1]["wilcoxon_vs_baseline"]
    report = (tmp_path / "comparison.md").read_text()
    assert ("p by a two-sided paired Wilcoxon signed-rank test on the untied pairs (tied pairs "
            "left out of the test), p from its exact distribution; p is unadjusted for the 2 "
            "comparisons against the baseline, p (Holm) adjusts it for them (Holm's "
            "step-down)") in report
    assert ("\n- Too few pairs: resunet vs unet: n = 4 untied pairs: p cannot fall below "
            "0.125 (the exact two-sided test's smallest p is 2 / 2^n: below 0.05 only from 6 "
            "untied pairs on)\n") in report
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert "| p | p (Holm) | p over folds: verdict | params |" in table[0]
    assert table[0].count("|") == table[1].count("|") == table[2].count("|")
    for line, p_value, holm_value, test in zip(table[3:], (p_mini, p_res),
                                               (holm_mini, holm_res), folds):
        assert (f"| {p_value:.3g} | {holm_value:.3g} | {test['p_value']:.3g} (Holm "
                f"{test['p_holm']:.3g}): no difference shown | 1 |") in line
    assert ("p over folds: Nadeau and Bengio's corrected resampled t-test on the per-fold mean "
            "differences (variance times 1/k + n_test/n_train, t with k − 1 degrees of "
            "freedom), which includes training variation, Holm-adjusted where several "
            "candidates meet the baseline, and the verdict (better, worse or no difference "
            "shown at 0.05) rests on it alone") in report


def test_one_candidate_gets_no_holm_column() -> None:
    stats = {"mean": 0.5, "std": 0.1, "n": 2}
    row = {**dict.fromkeys(COMPARED_METRICS, stats), "parameters": 1, "cpu_ms_per_slice": 1.0,
           "gflops_per_slice": 1.0, "train_seconds": 1.0}
    result = {"config": TrainConfig().to_dict(), "synthetic": False, "data": "d", "folds": 2,
              "fold_source": "f", "baseline": "unet", "warnings": [],
              "models": [{**row, "model": "unet"},
                         {**row, "model": "miniseg", "dice_difference": 0.0,
                          "wilcoxon_vs_baseline": {"cases_better": 1, "cases_worse": 1,
                                                   "p_value": 1.0}}]}
    report = comparison_markdown(result, plotted=True)
    assert "Holm" not in report and "unadjusted" not in report


def test_the_report_ends_with_training_the_best_model_on_all_the_data() -> None:
    """comparison.md stopped at the table: a user took its fold models for the final one."""
    stats = {"n": 2, "std": 0.1}
    row = {**{m: {**stats, "mean": 0.5} for m in COMPARED_METRICS}, "parameters": 1,
           "cpu_ms_per_slice": 1.0, "gflops_per_slice": 1.0, "train_seconds": 1.0}
    test = {"cases_better": 1, "cases_worse": 1, "p_value": 1.0}
    result = {"config": TrainConfig().to_dict(), "synthetic": False, "data": "d", "folds": 5,
              "fold_source": "f", "baseline": "unet", "warnings": [], "data_path": "/data/ct",
              "models": [{**row, "model": "unet"},
                         {**row, "dice": {**stats, "mean": 0.7}, "model": "miniseg:width=8",
                          "dice_difference": 0.2, "wilcoxon_vs_baseline": test}]}
    assert comparison_markdown(result, plotted=True).splitlines()[-1] == (
        "Next step: `miniseg:width=8` has the highest mean Dice; for a final model train one on "
        "all the data (the fold models are no ensemble, each trained on 4/5 of it): `covseg "
        "train /data/ct --model miniseg --model-option width=8 --out RUN`")


@pytest.mark.parametrize(("verdict_", "best", "said"), [
    ("no difference shown", "miniseg:width=8", True), ("better", "miniseg:width=8", False),
    ("no difference shown", "unet", False)])
def test_the_next_step_says_where_the_best_model_showed_no_difference_over_the_folds(
        verdict_: str, best: str, said: bool) -> None:
    """comparison.md named the model of the highest mean Dice and the command to train it as
    if it had won where its verdict over the folds was "no difference shown"; the baseline,
    when highest, has no verdict and gets no word."""
    stats = {"n": 2, "std": 0.1}
    row = {**{m: {**stats, "mean": 0.5} for m in COMPARED_METRICS}, "parameters": 1,
           "cpu_ms_per_slice": 1.0, "gflops_per_slice": 1.0, "train_seconds": 1.0}
    test = {"cases_better": 1, "cases_worse": 1, "p_value": 1.0}
    fold_test = {"df": 4, "variance_factor": 0.45, "p_value": 0.2, "mean_difference": 0.2,
                 "verdict": verdict_}
    higher = {"dice": {**stats, "mean": 0.7}}
    result = {"config": TrainConfig().to_dict(), "synthetic": False, "data": "d", "folds": 5,
              "fold_source": "f", "baseline": "unet", "warnings": [], "data_path": "/data/ct",
              "models": [{**row, "model": "unet", **(higher if best == "unet" else {})},
                         {**row, "model": "miniseg:width=8", "dice_difference": 0.2,
                          "wilcoxon_vs_baseline": test, "corrected_t_vs_baseline": fold_test,
                          **(higher if best != "unet" else {})}]}
    unshown = " (no difference from the baseline shown over the folds)" if said else ""
    assert comparison_markdown(result, plotted=True).splitlines()[-1].startswith(
        f"Next step: `{best}` has the highest mean Dice{unshown}; for a final model train one")


@pytest.mark.parametrize(("folds", "factor", "line"), [
    (2, 1.5, ("- Few folds: over 2 folds the t has 1 degree of freedom, so p over folds falls "
              "below 0.05 only where |t| > 12.7: where the fold differences' mean is over 15.6 "
              "times their sample std; \"no difference shown\" is then no evidence of no "
              "difference (more folds, or --repeats, test it)")),
    (3, 1 / 3 + 1 / 2, ("- Few folds: over 3 folds the t has 2 degrees of freedom, so p over "
                        "folds falls below 0.05 only where |t| > 4.3: where the fold "
                        "differences' mean is over 3.93 times their sample std;")),
    (4, 1 / 4 + 1 / 3, None)])
def test_few_folds_say_how_large_a_t_over_folds_reaches_significance(
        folds: int, factor: float, line: str | None) -> None:
    """Over 2 folds the corrected t has 1 degree of freedom and p < 0.05 needs |t| > 12.7, so
    "no difference shown" read as a tested result; comparison.md now says the bound there, as
    it says the Wilcoxon's smallest p over too few pairs."""
    stats = {"mean": 0.5, "std": 0.1, "n": folds}
    row = {**dict.fromkeys(COMPARED_METRICS, stats), "parameters": 1, "cpu_ms_per_slice": 1.0,
           "gflops_per_slice": 1.0, "train_seconds": 1.0}
    fold_test = {"df": folds - 1, "variance_factor": factor, "p_value": 0.3,
                 "mean_difference": 0.0, "verdict": "no difference shown"}
    result = {"config": TrainConfig().to_dict(), "synthetic": False, "data": "d",
              "folds": folds, "fold_source": "f", "baseline": "unet", "warnings": [],
              "models": [{**row, "model": "unet"},
                         {**row, "model": "miniseg", "dice_difference": 0.0,
                          "wilcoxon_vs_baseline": {"cases_better": 1, "cases_worse": 1,
                                                   "p_value": 1.0},
                          "corrected_t_vs_baseline": fold_test}]}
    notes = [text for text in comparison_markdown(result, plotted=True).splitlines()
             if text.startswith("- Few folds")]
    if line is None:
        assert not notes
    else:
        assert len(notes) == 1 and notes[0].startswith(line)


@pytest.mark.parametrize("unit", ["mm", None])
def test_the_table_names_the_datas_hd95_unit(unit: str | None) -> None:
    """The comparison's HD95 column is in its data's unit, px in a record written before the
    unit was kept."""
    stats = {"mean": 0.5, "std": 0.1, "n": 2}
    row = {**dict.fromkeys(COMPARED_METRICS, stats), "parameters": 1, "cpu_ms_per_slice": 1.0,
           "gflops_per_slice": 1.0, "train_seconds": 1.0}
    result = {"config": TrainConfig().to_dict(), "synthetic": False, "data": "d", "folds": 2,
              "fold_source": "f", "baseline": "unet", "warnings": [],
              "models": [{**row, "model": "unet"}], **({"hd95_unit": unit} if unit else {})}
    assert f"| HD95 ({unit or 'px'}) |" in comparison_markdown(result, plotted=True)


def test_the_report_says_how_each_candidates_p_was_had() -> None:
    """Where the candidates' tests differ in method, each method is named with its models;
    a record written before the method was kept names none."""
    stats = {"mean": 0.5, "std": 0.1, "n": 2}
    row = {**dict.fromkeys(COMPARED_METRICS, stats), "parameters": 1, "cpu_ms_per_slice": 1.0,
           "gflops_per_slice": 1.0, "train_seconds": 1.0}
    test = {"cases_better": 1, "cases_worse": 1, "p_value": 1.0, "p_holm": 1.0}
    result = {"config": TrainConfig().to_dict(), "synthetic": False, "data": "d", "folds": 2,
              "fold_source": "f", "baseline": "unet", "warnings": [],
              "models": [{**row, "model": "unet"}] + [
                  {**row, "model": model, "dice_difference": 0.0,
                   "wilcoxon_vs_baseline": {**test, "method": method}}
                  for model, method in (("miniseg", "exact"), ("resunet", "permutation"),
                                        ("resunet:width=8", "exact"))]}
    assert ("(tied pairs left out of the test), p from its exact distribution for miniseg, "
            "resunet:width=8, p from all 2^n sign flips (ties among the differences) for "
            "resunet; p is unadjusted") in comparison_markdown(result, plotted=True)
    for row in result["models"][1:]:
        del row["wilcoxon_vs_baseline"]["method"]
    assert ("(tied pairs left out of the test); p is unadjusted"
            in comparison_markdown(result, plotted=True))


def _hd95_result(covered: list[int], missed: list[int]) -> dict[str, Any]:
    """A comparison of unet and miniseg on 48 slices (42 with a lesion) whose HD95 means cover
    ``covered`` slices, the models having predicted nothing on ``missed`` lesion slices."""
    rows = []
    for model, cases, lost in zip(("unet", "miniseg"), covered, missed):
        stats = {"mean": 0.5, "std": 0.1, "n": 3, "cases": 48, "cases_undefined": 0}
        rows.append({**dict.fromkeys(COMPARED_METRICS, stats), "model": model,
                     "hd95": {**stats, "cases": cases, "cases_undefined": 48 - cases},
                     "empty_mask_counts": {"lesion_slices": 42,
                                           "lesion_slices_predicted_empty": lost,
                                           "empty_slices_predicted_lesion": 48 - cases - lost},
                     "parameters": 1, "cpu_ms_per_slice": 1.0, "gflops_per_slice": 1.0,
                     "train_seconds": 1.0})
    rows[1] |= {"dice_difference": 0.0, "wilcoxon_vs_baseline": {
        "cases_better": 6, "cases_worse": 7, "p_value": 0.5, "pairs": 13, "unit": "patient"}}
    return {"config": TrainConfig().to_dict(), "synthetic": False, "data": "d", "folds": 3,
            "fold_source": "f", "baseline": "unet", "warnings": [], "models": rows,
            "cases_without_patient_id": 10}


def test_hd95_means_over_different_slices_and_missed_lesions_are_said() -> None:
    """A model that predicted nothing on a fold's lesions beat the baseline's HD95 (15.9 vs
    26.3 px) as its HD95 left those slices out: the means covered different slices, unsaid."""
    report = comparison_markdown(_hd95_result([31, 27], [11, 21]), plotted=True)
    assert ("\n- HD95 is undefined where exactly one mask is empty and left out of the means, "
            "so they cover different slices: unet 31 of 48, miniseg 27 of 48; lesions missed "
            "(slices with a lesion on which the model predicted nothing, no HD95 penalty): unet "
            "11 of 42, miniseg 21 of 42\n") in report
    row = next(line for line in report.splitlines() if line.startswith("| miniseg |"))
    assert "| 0.500 ± 0.100 (27 of 48 slices) | +0.000 |" in row
    both_empty = comparison_markdown(_hd95_result([6, 6], [42, 42]),  # both predict nothing
                                     plotted=True)
    assert ("so they cover slices: unet 6 of 48, miniseg 6 of 48; lesions missed (slices with a "
            "lesion on which the model predicted nothing, no HD95 penalty): unet 42 of 42, "
            "miniseg 42 of 42\n") in both_empty
    assert "HD95 is undefined" not in comparison_markdown(_hd95_result([48, 48], [0, 0]),
                                                          plotted=True)


def test_a_repeated_comparisons_hd95_counts_say_they_count_tests() -> None:
    """Repeated (3 times over 16 slices), HD95's cover and the lesions missed count every test
    (48), as the summaries count them now: the report says tests of 16 slices × 3, in the line
    and in each mean, not slices."""
    report = comparison_markdown({**_hd95_result([31, 27], [11, 21]), "repeats": 3},
                                 plotted=True)
    assert ("so they cover different tests of 16 slices × 3: unet 31 of 48, miniseg 27 of 48; "
            "lesions missed (tests with a lesion on which the model predicted nothing, no HD95 "
            "penalty): unet 11 of 42, miniseg 21 of 42\n") in report
    assert "; 27 of 48 tests of 16 slices × 3) | +0.000 |" in report


def test_slices_without_a_patient_id_among_the_pairs_are_counted() -> None:
    """MedSeg's tr_im slices beside its rp_im volumes read as 13 per-patient pairs, 10 of
    them slices that carry no patient id."""
    report = comparison_markdown(_hd95_result([48, 48], [0, 0]), plotted=True)
    assert ("p: per-patient pairs (13 patients, 10 of them slices that carry no patient id, "
            "each counted alone; each its mean Dice over its slices") in report
    grouped = comparison_markdown({**_hd95_result([48, 48], [0, 0]),
                                   "cases_without_patient_id": 0}, plotted=True)
    assert "p: per-patient pairs (13 patients, each its mean Dice over its slices" in grouped


def test_per_case_dice_reads_a_run_or_one_fold(tmp_path: Path) -> None:
    (tmp_path / "fold_0").mkdir()
    header = "case_id,patient_id,dice,iou\n"
    (tmp_path / "per_case.csv").write_text(header + "a,a,0.5,0.3\nb,b,0.75,0.6\n")
    (tmp_path / "fold_0" / "test_per_case.csv").write_text(header + "a,a,0.25,0.1\n")
    assert per_case_dice(tmp_path) == {"a": 0.5, "b": 0.75}
    assert per_case_dice(tmp_path / "fold_0", "test_per_case.csv") == {"a": 0.25}


def test_comparison_table_shows_small_costs_as_not_zero() -> None:
    """A model of 0.04 GFLOPs trained in 2.1 s read "0.0" in both cost columns."""
    stats = {"mean": 0.5, "std": 0.1, "n": 2}
    row = {**dict.fromkeys(COMPARED_METRICS, stats), "parameters": 1234, "cpu_ms_per_slice": 42.0}
    result = {"config": TrainConfig(model="unet").to_dict(), "synthetic": False, "data": "d",
              "folds": 2, "fold_source": "f", "baseline": "unet:width=2", "warnings": [],
              "models": [{**row, "model": "unet:width=2", "gflops_per_slice": 0.0412,
                          "train_seconds": 2.13},
                         {**row, "model": "unet", "gflops_per_slice": 12.34,
                          "train_seconds": 150.0, "dice_difference": 0.0,
                          "wilcoxon_vs_baseline": {"cases_better": 1, "cases_worse": 1,
                                                   "p_value": 1.0}}]}
    table = [line for line in comparison_markdown(result, plotted=True).splitlines()
             if line.startswith("| ")]
    assert table[0].endswith("| GFLOPs/512² | CPU ms/512² | CV training |")
    assert table[1].endswith("| 1,234 | 0.041 | 42 | 2.1 s |")
    assert table[2].endswith("| 1,234 | 12.3 | 42 | 2.5 min |")


def test_compare_two_models_on_the_same_folds(tmp_path: Path, synthetic_folder: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two models cross-validated on one split; the notes of its folds, warned by each model's
    cross-validation, are in comparison.json's warnings once (they were in cv's alone)."""
    note = "fold 1's training slices hold no effusion (label 3)"
    monkeypatch.setattr(crossval, "_fold_notes", lambda *_: [note])
    result = api.compare(synthetic_folder, ["unet:width=4", "miniseg"], tmp_path, folds=2,
                         epochs=1, size=64, batch_size=4)
    folds = [json.loads((tmp_path / name / "summary.json").read_text())["per_fold"]
             for name in ("unet_width-4", "miniseg")]
    assert [f["test_cases"] for f in folds[0]] == [f["test_cases"] for f in folds[1]]
    candidate = result["models"][1]
    # 16 slices of 8 patients: the pairs are the patients, not the slices
    assert (candidate["wilcoxon_vs_baseline"]["pairs"],
            candidate["wilcoxon_vs_baseline"]["unit"]) == (8, "patient")
    assert candidate["parameters"] > 0 and candidate["gflops_per_slice"] > 0
    miniseg_summary = json.loads((tmp_path / "miniseg" / "summary.json").read_text())
    assert candidate["train_seconds"] == miniseg_summary["train_seconds"] > 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [  # as docs/outputs.md lists
        "comparison.json", "comparison.md", "comparison_boxplot.png", "miniseg", "unet_width-4"]
    report = (tmp_path / "comparison.md").read_text()
    assert "paired Wilcoxon" in report and "2-fold cross-validation, identical folds" in report
    for synthetic in (True, False):  # real data's report had two blank lines under the title
        assert "\n\n\n" not in comparison_markdown({**result, "synthetic": synthetic}, plotted=True)
    assert result["warnings"] == [note] and f"- Data warnings (1): {note}" in report
    warned = comparison_markdown({**result, "warnings": ["3 of 7 slices are in no valid_new"]},
                                 plotted=True)
    assert "\n- Data warnings (1): 3 of 7 slices are in no valid_new\n" in warned
    recipe = next(line for line in report.splitlines() if line.startswith("- Recipe"))
    assert "'epochs': 1" in recipe and "'size': 64" in recipe and "'batch_size': 4" in recipe
    assert result["config"]["window"] == miniseg_summary["config"]["window"]
    stored = json.loads((tmp_path / "comparison.json").read_text())
    for note in ("std_note", "empty_mask_rules"):  # as summary.json: comparison.json had none
        assert stored[note] == result[note] == miniseg_summary[note]
    unet, miniseg = tmp_path / "unet_width-4", tmp_path / "miniseg"
    # said "cross-validate into a new --out"; named miniseg's folds only once unet's were gone
    refused_resume(synthetic_folder, tmp_path, 2, (
        f"{unet / 'fold_0'} (and fold_1), {miniseg / 'fold_0'} (and fold_1): finished with "
        f"other settings or data (epochs: 1 -> 2); compare into a new out, or delete {unet} and "
        f"{miniseg} to start over"))
    # a split of another --seed, or a model's folds of several: the --out given is named, not
    # a model's folder inside it ("compare into a new --out than OUT/unet_width-4")
    refused_resume(synthetic_folder, tmp_path, 1, (
        f"{unet / 'fold_0'}: finished on another split of the data (seed 0 then, 3 now); resume "
        f"with seed=0, or compare into a new out than {tmp_path}"), seed=3)
    record = json.loads((miniseg / "fold_1" / "config.json").read_text())
    (miniseg / "fold_1" / "config.json").write_text(json.dumps({**record, "folds": 3}))
    refused_resume(synthetic_folder, tmp_path, 1, (
        f"{miniseg}: holds folds of 2 different splits of the data (fold_0 on 2 folds, fold_1 on "
        f"3 folds; 2 folds now); resume with folds=2 after deleting {miniseg / 'fold_1'}, or with "
        f"folds=3 after deleting {miniseg / 'fold_0'}, or compare into a new out than "
        f"{tmp_path}"))
    (miniseg / "fold_1" / "config.json").write_text(json.dumps(record))
    # folds stale for different reasons: only the first fold's (epochs) was told, the lr next
    for fold, key, value in ((unet / "fold_0", "epochs", 3), (miniseg / "fold_0", "epochs", 3),
                             (miniseg / "fold_1", "lr", 0.5)):
        record = json.loads((fold / "config.json").read_text())
        record["config"][key] = value
        (fold / "config.json").write_text(json.dumps(record))
    lr = result["config"]["lr"]
    refused_resume(synthetic_folder, tmp_path, 1, (
        f"{unet / 'fold_0'}, {miniseg / 'fold_0'}: finished with other settings or data "
        f"(epochs: 3 -> 1); {miniseg / 'fold_1'}: finished with other settings or data "
        f"(lr: 0.5 -> {lr}); compare into a new out, or delete {unet / 'fold_0'} and "
        f"{miniseg} to train them again with these settings"))


def test_box_plots_that_cannot_be_drawn_are_warnings_beside_the_scores(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A box plot failing in matplotlib ended cv (each model's dice_boxplot.png) and compare
    (comparison_boxplot.png) in a traceback after their scores were written, as evaluate's
    figure no longer did: each is one warning line, the scores and reports kept, no stale
    figure left, and no report links the figure not drawn (a link to a missing file)."""
    def refused(*_: object, **__: object) -> None:
        raise TypeError("set_text(): incompatible function arguments.\n    1. (self) -> None")

    monkeypatch.setattr(crossval, "box_plot", refused)
    monkeypatch.setattr(compare, "paired_plot", refused)
    (tmp_path / "comparison_boxplot.png").write_bytes(b"an earlier run's")
    api.compare(synthetic_folder, ["unet:width=4", "miniseg"], tmp_path, folds=2, epochs=1,
                size=64, batch_size=4)
    assert (tmp_path / "comparison.md").is_file() and (tmp_path / "comparison.json").is_file()
    assert not (tmp_path / "comparison_boxplot.png").exists()
    def told(png: Path, kept: Path) -> str:
        return (f"{png}: not drawn (TypeError: set_text(): incompatible function arguments. "
                f"1. (self) -> None); the numbers are in {kept}")

    models = [tmp_path / model for model in ("unet_width-4", "miniseg")]
    assert [record.getMessage() for record in caplog.records if "drawn" in record.getMessage()] == [
        *(told(model / "dice_boxplot.png", model / "per_case.csv") for model in models),
        told(tmp_path / "comparison_boxplot.png", tmp_path / "comparison.json")]
    assert all((model / "summary.json").is_file() for model in models)
    reports = [tmp_path / "comparison.md", *(model / "report.md" for model in models)]
    assert [".png" in report.read_text() for report in reports] == [False] * 3


def refused_resume(data: Path, out: Path, epochs: int, refusal: str, seed: int = 0) -> None:
    """Assert that a resume of the two models' comparison in ``out`` with ``epochs`` and
    ``seed`` is refused in exactly ``refusal``."""
    with pytest.raises(CovsegError, match="^" + re.escape(refusal) + "$"):
        api.compare(data, ["unet:width=4", "miniseg"], out, folds=2, epochs=epochs, size=64,
                    batch_size=4, seed=seed, resume=True)


def test_one_refusal_names_every_models_stale_folds_and_what_to_delete(tmp_path: Path) -> None:
    """A model all of whose finished folds are stale is deleted whole, one with matching
    finished folds only its stale folds' folders, in one refusal."""
    whole, some = tmp_path / "unet", tmp_path / "miniseg"
    error = stale_folds_error([StaleFolds(whole, [(whole / "fold_0", ["epochs: 1 -> 2"])], False),
                               StaleFolds(some, [(some / "fold_1", ["epochs: 1 -> 2"])], True)],
                              "compare")
    assert str(error) == (f"{whole / 'fold_0'}, {some / 'fold_1'}: finished with other settings "
                          "or data (epochs: 1 -> 2); compare into a new --out, or delete "
                          f"{whole} and {some / 'fold_1'} to train them again with these settings")


def test_a_comparison_fingerprints_the_whole_set_once_and_each_folds_training_slices_once(
        tmp_path: Path, synthetic_folder: Path, fingerprinted: list[int]) -> None:
    """Every model's cross-validation fingerprinted the whole set per fold (and twice per
    finished fold on a resume, with compare's own check a third time), each model its folds'
    training slices again: now once per command, the models sharing their identical folds'."""
    data = load_dataset(synthetic_folder)
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4}
    api.compare(data, ["unet:width=4", "unet:width=8"], tmp_path, **tiny)
    trained = [len(train) for train, _ in make_folds(data, 2, TrainConfig().seed)[0]]
    assert sorted(fingerprinted) == sorted([len(data.samples), *trained])
    fingerprinted.clear()
    api.compare(data, ["unet:width=4", "unet:width=8"], tmp_path, resume=True, **tiny)
    assert fingerprinted == [len(data.samples)]


def test_a_comparison_of_grey_slices_records_no_window(tmp_path: Path) -> None:
    """comparison.json and .md recorded the lung window for 8-bit slices, on which none is
    applied, while the models' own summaries recorded null: the shared recipe is now
    recorded as theirs is."""
    result = api.compare(grey_folder(tmp_path / "data"), ["unet:width=4", "miniseg"],
                         tmp_path / "cmp", folds=2, epochs=1, size=32, batch_size=4)
    summary = json.loads((tmp_path / "cmp" / "miniseg" / "summary.json").read_text())
    assert result["config"]["window"] is summary["config"]["window"] is None
    recipe = next(line for line in (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
                  if line.startswith("- Recipe"))
    assert "'window': None" in recipe


def test_a_second_comparison_into_one_out_is_refused_naming_the_first(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """Two comparisons started at once into one --out met only at their folds' locks, so both
    wrote comparison.json; a comparison now holds --out's lock for its whole run."""
    out = tmp_path / "cmp"
    held = re.escape(f"another covseg run is writing to {out} (pid {os.getpid()}); wait for "
                     "it to end, or pick another out")
    tiny = {"folds": 2, "epochs": 1, "size": 64, "batch_size": 4}
    with held_by_another_thread(out):
        with pytest.raises(CovsegError, match=f"^{held}$"):
            api.compare(synthetic_folder, ["unet:width=4", "unet:width=8"], out, **tiny)
        with pytest.raises(CovsegError, match=f"^{held}$".replace(" out$", " --out$")):
            compare.compare_models(TrainConfig(epochs=1, size=64, batch_size=4),
                                   load_dataset(synthetic_folder),
                                   ["unet:width=4", "unet:width=8"], out, folds=2)
        assert sorted(p.name for p in out.iterdir()) == [".covseg.lock"], "nothing trained"
    assert not out.exists(), "the refused runs left no folder"


def test_hd95_of_a_folder_mixing_2d_files_and_volumes_is_compared_per_unit(
        tmp_path: Path) -> None:
    """A folder of PNG slices (HD95 in px) and a NIfTI volume (in mm) was compared on one HD95
    column, "HD95 (mm or px)", averaging both units; each unit has its column now, holding each
    model's cross-validated mean of that unit."""
    data = load_dataset(mixed_unit_folder(tmp_path / "mix"))
    result = api.compare(data, ["unet:width=4", "unet:width=8"], tmp_path / "cmp", folds=2,
                         epochs=1, size=32, batch_size=4, threshold=0.001)
    assert result["hd95_unit"] == "mm or px" and result["hd95_slices_by_unit"] == {"mm": 3,
                                                                                   "px": 5}
    report = (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
    header = next(line for line in report if line.startswith("| model |"))
    assert "| precision | HD95 (mm) | HD95 (px) | Δ Dice |" in header and "mm or px" not in header
    assert report[report.index(header) + 1] == "|" + "---|" * (header.count("|") - 1)
    assert any(line.startswith("- HD95 is in mm on the 3 slices of volumes (NIfTI, NRRD, "
                               "MetaImage) and in px on the 5 2D images") for line in report)
    for row in json.loads((tmp_path / "cmp" / "comparison.json").read_text())["models"]:
        assert "hd95" not in row
        summary = json.loads((tmp_path / "cmp" / row["folder"] / "summary.json").read_text())
        across = summary["mean_std_over_folds"]
        assert (row["hd95_mm"], row["hd95_px"]) == (across["hd95_mm"], across["hd95_px"])
        line = next(line for line in report if line.startswith(f"| {row['model']} |"))
        cells = line.split(" | ")
        assert cells[5:7] == [mean_over_folds(across[key], 2) for key in ("hd95_mm", "hd95_px")]


def test_a_cascade_costs_its_lung_channel_and_split_files_are_named(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """The cost columns profiled one input channel while a lung-guided run takes two (165,265
    parameters reported against 165,337 trained), and the report did not say that the folds
    were the data's own split files, nor comparison.json which files made each fold, as cv's
    summary.json does."""
    data = load_dataset(synthetic_folder)
    cases = [s.case_id for s in data.samples]
    data.folds = [(cases[8:], cases[:8]), (cases[:8], cases[8:])]  # as MosMed's files give
    data.split_files = [("train_new1.txt", "valid_new1.txt"), ("train_new2.txt", "valid_new2.txt")]
    result = api.compare(data, ["unet:width=4", "miniseg"], tmp_path, epochs=1, size=64,
                         batch_size=4, lung_guide="threshold")
    for row, folder in zip(result["models"], ("unet_width-4", "miniseg"), strict=True):
        trained = json.loads((tmp_path / folder / "fold_0" / "config.json").read_text())
        assert row["parameters"] == trained["parameters"]
    report = (tmp_path / "comparison.md").read_text()
    source = ("the data set's own 2 split files (fold 0: train_new1.txt + valid_new1.txt, "
              "fold 1: train_new2.txt + valid_new2.txt)")
    assert ("2-fold cross-validation, identical folds and seed for every model; folds: "
            f"{source}\n") in report
    assert result["split_files"] is True and result["fold_source"] == source
    assert json.loads((tmp_path / "comparison.json").read_text())["fold_source"] == source
    for folder in ("unet_width-4", "miniseg"):  # recorded as cv records them
        assert json.loads((tmp_path / folder / "summary.json").read_text())["folds"] == source


def test_a_model_folder_is_one_safe_component_inside_out(tmp_path: Path) -> None:
    """weights=../../../w.pt put fcn's folds in ./w.pt, outside --out, and fcn and deeplabv3
    with one weights path shared a folder: the second was refused after the first trained."""
    assert [model_folder(s) for s in ("unet:width=4", "unet++:encoder=densenet201,width=8",
                                      "miniseg,miniseg:width=1.5")] == [
        "unet_width-4", "unetpp_encoder-densenet201_width-8", "miniseg_miniseg_width-1.5"]
    specs = ["fcn:weights=../../../w.pt", "deeplabv3:weights=../../../w.pt",
             "fcn:weights=../w.pt", "fcn:weights=..\\..\\w.pt", "fcn:weights=/w.pt"]
    folders = [model_folder(spec) for spec in specs]
    assert len(set(folders)) == len(specs)
    assert folders[0].startswith("fcn_weights-w-")
    for folder in folders:
        assert "/" not in folder and "\\" not in folder and not folder.startswith(".")
        assert (tmp_path / folder).resolve().parent == tmp_path.resolve()
    assert model_folder(specs[0]) == folders[0], "the same spec finds its folds again"


@NEEDS_ZOO
def test_specs_that_would_share_a_folder_are_refused_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders that differ only in case are one folder on macOS and Windows."""
    monkeypatch.chdir(tmp_path)  # the weights files must be state dicts: the spec check reads them
    for name in ("A.pt", "a.pt"):
        torch.save({}, tmp_path / name)
    with pytest.raises(CovsegError, match=r"^fcn:weights=A.pt and fcn:weights=a.pt would share "
                                          r"one folder under --out \(fcn_weights-A.pt = "
                                          r"fcn_weights-a.pt\); compare them into separate"):
        check_specs(["fcn:weights=A.pt", "fcn:weights=a.pt"], 64)


@NEEDS_ZOO
def test_a_relative_weights_file_gone_is_judged_for_every_models_folds_before_the_data_are_read(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model spec's weights=r50.pth typed relative, gone after its fold 0 finished (the
    comparison stopped before fold 1 saved an epoch): the resume is refused naming fold_1,
    which would start from it, before the data are read, not as a folder of another model."""
    from torchvision.models import resnet50

    monkeypatch.chdir(tmp_path)
    torch.save(resnet50().state_dict(), tmp_path / "r50.pth")
    specs = ["unet:width=4", "fcn:weights=r50.pth"]
    recipe = {"folds": 2, "epochs": 1, "size": 32, "batch_size": 8}
    folds = Path("cmp") / model_folder(specs[1])
    folds.mkdir(parents=True)  # named fcn_weights-r50.pth: cv takes it as the folder it is
    api.cross_validate(synthetic_folder, folds, fold=0, model="fcn",
                       model_options={"weights": "r50.pth"}, **recipe)
    (tmp_path / "r50.pth").rename(tmp_path / "moved.pth")
    monkeypatch.setattr(api, "_load", data_unread)
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{folds}: the weights= file {tmp_path / 'r50.pth'} is gone, and fold_1 would start "
            "from it (no last.pt to resume from); restore the file or pick a new out") + "$"):
        api.compare(synthetic_folder, specs, "cmp", resume=True, **recipe)


@NEEDS_ZOO
def test_a_weights_file_gone_is_judged_per_fold_not_by_the_trial_build_of_a_resume(
        tmp_path: Path) -> None:
    """A compare --resume's trial builds leave out a weights= file gone since (its folds holding
    last.pt go on without it; a fold that would start from it is refused, naming it, later); a
    new comparison is refused at once, as no such file."""
    gone = tmp_path / "gone.pth"
    check_specs(["unet:width=4", f"fcn:weights={gone}"], 64, resume=True)
    with pytest.raises(CovsegError, match="^" + re.escape(f"{gone}: no such weights file") + "$"):
        check_specs(["unet:width=4", f"fcn:weights={gone}"], 64)


def test_a_models_folds_from_a_relative_weights_file_are_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fcn:weights=w.pt typed relative: its folds record the file's absolute path, and a
    --resume takes them for its own, not for another model's folds."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"weights")
    fold = tmp_path / "cmp" / model_folder("fcn:weights=w.pt") / "fold_0"
    fold.mkdir(parents=True)
    recipe = TrainConfig(model="fcn", model_options={"weights": str(tmp_path / "w.pt")})
    (fold / "config.json").write_text(json.dumps({"config": recipe.to_dict()}))
    compare.check_compare_folder(Path("cmp"), ["unet", "fcn:weights=w.pt"], resume=True)


def test_a_models_folds_from_other_weights_bytes_are_refused_before_any_model_trains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second model's saved fold started from other bytes of its weights= file: refused
    with every model's folds, before the first model trains for hours."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"now")
    fold = tmp_path / "cmp" / model_folder("fcn:weights=w.pt") / "fold_0"
    fold.mkdir(parents=True)
    (fold / "best.pt").write_bytes(b"")
    recipe = TrainConfig(model="fcn", model_options={"weights": "w.pt"})
    (fold / "config.json").write_text(json.dumps({"config": recipe.to_dict(),
                                                  "weights_sha256": "0" * 64}))

    def no_training(*args: object, **kwargs: object) -> None:
        pytest.fail("a model trained before the refusal")

    monkeypatch.setattr(compare, "cross_validate", no_training)
    with pytest.raises(CovsegError, match=re.escape(
            f"the weights= file {tmp_path / 'w.pt'} holds other bytes than the run started "
            "from")):
        compare.compare_models(TrainConfig(), load_dataset("synthetic"),
                               ["unet", "fcn:weights=w.pt"], "cmp", resume=True)


def test_each_models_weights_file_is_hashed_once_and_handed_to_its_folds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compare hashed each model's weights= file as it checked every model's folds, and its
    cross-validation hashed it again: it is handed the one SHA-256, which its folds record."""
    from covseg.records import content_hash

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"weights")
    hashed = calls_counted(monkeypatch, crossval, "weights_file_sha256")
    handed: list[object] = []

    class FirstFold(Exception):
        """The first fold reached: no network need train to show what it was handed."""

    def first_fold(*args: Any, weights: Any = None, **kwargs: Any) -> None:
        handed.append(weights)
        raise FirstFold

    monkeypatch.setattr(crossval, "_split_fold", first_fold)
    with pytest.raises(FirstFold):
        compare.compare_models(TrainConfig(), load_dataset("synthetic"),
                               ["fcn:weights=w.pt", "unet"], "cmp", folds=2)
    assert len(hashed) == 2  # each model's once, before any model trains
    assert handed == [{"weights_sha256": content_hash(tmp_path / "w.pt")}]


def _fold_stats(means: list[float]) -> dict[str, float]:
    """Mean, sample std and count of per-fold means, as a summary's mean_std_over_folds."""
    return {"mean": float(np.mean(means)),
            "std": float(np.std(means, ddof=1)) if len(means) > 1 else float("nan"),
            "n": len(means)}


def _fake_runs(monkeypatch: pytest.MonkeyPatch, dice: dict[str, list[dict[str, float]]],
               classes: dict[str, dict[str, list[float]]] | None = None,
               patients: dict[str, str] | None = None) -> None:
    """compare's cross-validation and profiling replaced: each model's per_case.csv holds the
    per-fold Dice of ``dice`` (model -> per fold, case id -> Dice), with ``patients``' patient
    of each case where given, its summary their means, and the per-fold means of ``classes``
    (model -> metric -> per fold) as given."""
    def cross_validate(config: TrainConfig, data: object, out: Path, folds: object,
                       resume: bool, verb: str, **_: object) -> dict[str, Any]:
        assert verb == "compare"  # its refusals say compare, not cross-validate
        spec = next(s for s in dice if model_folder(s) == out.name)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "per_case.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["fold", "case_id", "dice"] + (["patient_id"] if patients else []))
            writer.writerows([k, case, value] + ([patients[case]] if patients else [])
                             for k, fold in enumerate(dice[spec]) for case, value in fold.items())
        means = [float(np.mean(list(fold.values()))) for fold in dice[spec]]
        by_class = {key: _fold_stats(values) for key, values in (classes or {}).get(spec, {}
                                                                                   ).items()}
        summary = {"train_seconds": 60.0, "per_fold": [{"fold": k} for k in range(len(means))],
                   "folds": f"{len(means)}-fold, grouped by patient (seed 0)",
                   "mean_std_over_folds": dict.fromkeys(COMPARED_METRICS, _fold_stats(means))
                   | by_class}
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(compare, "cross_validate", cross_validate)
    monkeypatch.setattr(compare, "build_model", lambda *args, **kwargs: None)
    monkeypatch.setattr(compare, "profile_for_comparison", lambda *args, **kwargs: {
        "parameters": 1, "gflops_per_slice": 0.1, "cpu_ms_per_slice": 1.0})


class _FixedSize(nn.Module):
    """A network that takes 32 px slices only, as timm's swin_tiny_patch4_window7_224 takes
    224 px ones (with timm's words)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] == 32, f"Input height ({x.shape[-2]}) doesn't match model (32)."
        return self.conv(x)


def test_a_model_that_takes_its_canvas_only_is_costed_on_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compare costed every model on a 512 px slice, which a timm encoder of one input size
    (unet++:encoder=tu-swin_tiny_patch4_window7_224 at --size 224) does not take: every fold
    trained, then an AssertionError traceback and no comparison.json (--resume the same). Such
    a model is costed on its run's canvas, the size said in its cells, its row and a note."""
    from covseg.models import profile

    _fake_runs(monkeypatch, {"miniseg": [{"a": 0.5, "b": 0.6}, {"c": 0.4}],
                             "unet": [{"a": 0.6, "b": 0.6}, {"c": 0.5}]})
    monkeypatch.setattr(compare, "profile_for_comparison", profile.profile_for_comparison)
    monkeypatch.setattr(compare, "build_model", lambda name, *args, **kwargs: (
        _FixedSize() if name == "unet" else nn.Conv2d(1, 1, 3, padding=1)))
    # as smp's timm encoders are told apart (fixed_canvas_possible): only they are run at 512
    monkeypatch.setattr(profile, "fixed_canvas_possible",
                        lambda model, **kwargs: isinstance(model, _FixedSize))
    compare.compare_models(TrainConfig(size=32), load_dataset("synthetic"),
                           ["miniseg", "unet"], tmp_path)
    baseline, fixed = json.loads((tmp_path / "comparison.json").read_text())["models"]
    assert (baseline["size"], "size_note" in baseline) == (512, False)
    assert fixed["size"] == 32 and fixed["gflops_per_slice"] == pytest.approx(2 * 9 * 32 * 32 / 1e9)
    reason = "it does not run on a 512 px slice (Input height (512) doesn't match model (32).)"
    assert fixed["size_note"] == f"measured on its 32 px canvas: {reason}"
    report = (tmp_path / "comparison.md").read_text()
    assert f"\n- Cost of unet: GFLOPs and CPU ms measured on its 32 px canvas: {reason}\n" in report
    row = next(line for line in report.splitlines() if line.startswith("| unet |"))
    assert re.search(r"\| 1.8e-05 at 32² \| \d+ at 32² \| ", row), row
    assert "| GFLOPs/512² | CPU ms/512² |" in report and " at 512²" not in report


def test_pairs_are_the_same_folds_slice_and_delta_is_the_dice_columns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-case Dice was keyed by case id alone: a slice two folds test kept one fold's value
    (4 pairs for 5 results); Δ Dice was the per-slice mean difference beside Dice columns that
    are means over folds, so it was not their difference (0.060 beside 0.550 - 0.500)."""
    _fake_runs(monkeypatch, {
        "unet": [{"a": 0.5, "b": 0.5, "d": 0.5}, {"a": 0.3, "c": 0.7}],
        "miniseg": [{"a": 0.6, "b": 0.6, "d": 0.6}, {"a": 0.2, "c": 0.8}]})
    result = compare.compare_models(TrainConfig(), load_dataset("synthetic"),
                                    ["unet", "miniseg"], tmp_path)
    test = result["models"][1]["wilcoxon_vs_baseline"]
    assert (test["pairs"], test["cases_better"], test["cases_worse"]) == (5, 4, 1)
    assert test["mean_difference"] == pytest.approx(0.06)
    assert result["models"][1]["dice_difference"] == pytest.approx(0.05)
    report = (tmp_path / "comparison.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| miniseg |"))
    assert row.startswith("| miniseg | 0.550 ± 0.071 |") and "| +0.050 | 4/1 |" in row
    assert "Δ Dice: a model's Dice minus the baseline's" in report
    assert ("per-slice pairs (the same fold's same slice, each counted alone: where the data "
            "name no patients, slices of one patient among them are not independent and make p "
            "too small)") in report
    assert test["unit"] == "slice" and "| +0.060 (" in row
    assert "| model | Dice | IoU |" in report and "(any lesion)" not in report
    assert "Per-class" not in report and "ground-glass" not in report


def test_slices_of_one_patient_pair_as_that_patient(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The paired test took every slice as an independent pair, although the data named the
    patients: 24 slices of 6 patients gave p = 1e-4 where 6 patients cannot go below 0.031.
    Each patient's mean Dice is now the unit, and the mean paired difference has a 95 % CI."""
    from scipy.stats import wilcoxon
    slices = {f"p{p}_{k}": f"P{p}" for p in range(6) for k in range(4)}
    gain = [0.02, 0.03, 0.01, 0.04, 0.05, -0.01]  # per patient, plus a slice's own spread
    base = {case: 0.5 + 0.01 * int(case[-1]) for case in slices}
    cand = {case: base[case] + gain[int(case[1])] + 0.001 * int(case[-1]) for case in slices}
    folds = [lambda case: int(case[1]) < 3, lambda case: int(case[1]) >= 3]
    _fake_runs(monkeypatch, {name: [{c: d[c] for c in slices if fold(c)} for fold in folds]
                             for name, d in (("unet", base), ("miniseg", cand))},
               patients=slices)
    result = compare.compare_models(TrainConfig(), load_dataset("synthetic"),
                                    ["unet", "miniseg"], tmp_path)
    test = result["models"][1]["wilcoxon_vs_baseline"]
    per_slice = wilcoxon([cand[c] - base[c] for c in slices])
    per_patient = np.array([np.mean([cand[c] - base[c] for c in slices if slices[c] == f"P{p}"])
                            for p in range(6)])
    by_hand = wilcoxon(per_patient)
    assert per_slice.pvalue < 0.001 and by_hand.pvalue == pytest.approx(0.0625)
    assert (test["unit"], test["pairs"], test["cases_better"], test["cases_worse"]) == (
        "patient", 6, 5, 1)
    assert (test["statistic"], test["p_value"]) == (by_hand.statistic,
                                                    pytest.approx(by_hand.pvalue))
    assert test["mean_difference"] == pytest.approx(per_patient.mean())
    rng = np.random.default_rng(0)
    means = per_patient[rng.integers(0, 6, (BOOTSTRAP_RESAMPLES, 6))].mean(axis=1)
    assert test["ci95_mean_difference"] == pytest.approx(list(np.percentile(means, [2.5, 97.5])))
    low, high = test["ci95_mean_difference"]
    assert low < per_patient.mean() < high and low > -0.01 and high < 0.05
    recorded = json.loads((tmp_path / "comparison.json").read_text())["models"][1]
    assert recorded["wilcoxon_vs_baseline"]["unit"] == "patient"
    assert json.loads((tmp_path / "comparison.json").read_text())["hd95_unit"] == "px"
    report = (tmp_path / "comparison.md").read_text()
    assert "p: per-patient pairs (6 patients, each its mean Dice over its slices" in report
    assert "| precision | HD95 (px) | Δ Dice |" in report  # 2D slices: pixels
    row = next(line for line in report.splitlines() if line.startswith("| miniseg |"))
    assert f"| 5/1 | {per_patient.mean():+.3f} ({low:+.3f}, {high:+.3f}) | 0.0625 |" in row


def test_multiclass_comparisons_name_their_scores_of_any_lesion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saved_figures: list[Figure]) -> None:
    """The Dice of a multi-class comparison is of any lesion (label > 0), as evaluate says, and
    so is its paired test; its per-class Dice, which each model's cv report gives, were nowhere
    in comparison.md or comparison.json. Its plot names that Dice as evaluate's and cv's boxes
    do, "Dice, any lesion" (it read "Dice (any lesion)"); the table keeps its columns."""
    _fake_runs(monkeypatch, {"unet": [{"a": 0.5}, {"b": 0.4}],
                             "miniseg": [{"a": 0.6}, {"b": 0.5}]},
               {"unet": {"ground-glass_dice": [0.2, 0.4], "consolidation_dice": [0.1]},
                "miniseg": {"ground-glass_dice": [0.3, 0.3], "consolidation_dice": [0.05, 0.15]}})
    result = compare.compare_models(TrainConfig(target="multiclass"),
                                    load_dataset("synthetic", "multiclass"), ["unet", "miniseg"],
                                    tmp_path)
    report = (tmp_path / "comparison.md").read_text()
    assert "| model | Dice (any lesion) | IoU (any lesion) | sensitivity (any lesion) |" in report
    assert ("| Δ Dice (any lesion) | better/worse | paired Δ (95 % CI) | p (any lesion) |"
            in report)
    assert ("| model | ground-glass | consolidation |\n|---|---|---|\n"
            "| unet | 0.300 ± 0.141 | 0.100 (1 of 2 folds) |\n"
            "| miniseg | 0.300 ± 0.000 | 0.100 ± 0.071 |\n") in report
    recorded = json.loads((tmp_path / "comparison.json").read_text())
    assert result["classes"] == recorded["classes"] == {
        "0": "background", "1": "ground-glass", "2": "consolidation"}  # names, not only a count
    for rows in (result["models"], recorded["models"]):
        assert rows[0]["ground-glass_dice"]["mean"] == pytest.approx(0.3)
        assert rows[1]["consolidation_dice"] == {"mean": pytest.approx(0.1),
                                                "std": pytest.approx(0.0707107), "n": 2}
    axes, differences = saved_figures[-1].axes
    assert saved_figures[-1].get_suptitle().startswith("Dice, any lesion, by model on ")
    assert axes.get_ylabel() == "Dice, any lesion, per case"
    assert differences.get_ylabel() == "paired Dice difference, any lesion, per slice"


def test_lung_comparisons_name_their_dice_of_the_lungs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saved_figures: list[Figure]) -> None:
    """A comparison of lung models drew "Dice per case" and "Dice by model", as a lesion
    model's does: its Dice, of the lungs (about 0.95 where a lesion's is 0.7), is named so."""
    _fake_runs(monkeypatch, {"unet": [{"a": 0.95}, {"b": 0.94}],
                             "miniseg": [{"a": 0.96}, {"b": 0.93}]})
    compare.compare_models(TrainConfig(target="lung"), load_dataset("synthetic", "lung"),
                           ["unet", "miniseg"], tmp_path)
    axes, differences = saved_figures[-1].axes
    assert saved_figures[-1].get_suptitle().startswith("Dice, lungs, by model on ")
    assert axes.get_ylabel() == "Dice, lungs, per case"
    assert differences.get_ylabel() == "paired Dice difference, lungs, per slice"


def test_the_comparison_plot_shows_the_paired_differences_its_test_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saved_figures: list[Figure]) -> None:
    """comparison_boxplot.png drew each model's per-case Dice alone: two boxes that overlap
    (medians 0.20 and 0.18) beside a paired difference of -0.041 with p = 3e-15. A second
    panel draws each candidate's per-patient differences from the baseline, the pairs the test
    takes, over a line at zero; the title names the data and the folds."""
    slices = {f"p{p}_{k}": f"P{p}" for p in range(6) for k in range(2)}
    base = {case: 0.2 + 0.1 * int(case[1]) for case in slices}
    folds = [lambda case: int(case[1]) < 3, lambda case: int(case[1]) >= 3]
    _fake_runs(monkeypatch, {name: [{c: d[c] for c in slices if fold(c)} for fold in folds]
                             for name, d in (("unet", base), ("miniseg", {
                                 c: base[c] - 0.04 for c in slices}))},
               patients=slices)
    data = load_dataset("synthetic")
    compare.compare_models(TrainConfig(), data, ["unet", "miniseg"], tmp_path)
    figure = saved_figures[-1]
    models, differences = figure.axes
    assert [t.get_text() for t in models.get_xticklabels()] == ["unet (n=12)", "miniseg (n=12)"]
    assert [t.get_text() for t in differences.get_xticklabels()] == ["miniseg - unet (n=6)"]
    (points,) = differences.collections
    np.testing.assert_allclose(points.get_offsets()[:, 1], [-0.04] * 6)
    assert differences.get_ylabel() == "paired Dice difference per patient"
    zero = [line for line in differences.lines if tuple(line.get_ydata()) == (0, 0)]
    assert len(zero) == 1 and differences.get_ylim() == pytest.approx((-0.05, 0.05))
    assert figure.get_suptitle() == "Dice by model on synthetic:0 (SYNTHETIC data), 2 folds"


def test_a_folder_holding_another_models_folds_is_refused_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second model was refused only once the first had trained every fold, and was told
    to pass --resume, which refused it again."""
    fold = tmp_path / "miniseg" / "fold_0"
    fold.mkdir(parents=True)
    config = {"config": TrainConfig(model="fcn", model_options={"weights": "w.pt"}).to_dict()}
    (fold / "config.json").write_text(json.dumps(config))

    def no_training(*args: object, **kwargs: object) -> None:
        pytest.fail("a model trained before the refusal")

    monkeypatch.setattr(compare, "cross_validate", no_training)
    recorded = {"weights": str(Path("w.pt").resolve())}  # as its recipe names it, file or not
    with pytest.raises(CovsegError, match=re.escape(
            f"miniseg holds folds of another model (fcn with options {recorded}), not of "
            "miniseg; compare into a new --out or delete")) as caught:
        compare.compare_models(TrainConfig(), load_dataset("synthetic"), ["unet", "miniseg"],
                               tmp_path)
    assert "--resume" not in str(caught.value)



def test_another_models_folds_are_read_in_fold_order_and_copies_are_not_folds(
        tmp_path: Path) -> None:
    """The fold records were read in name order, fold_10 before fold_2, so the refusal named
    fold_10's model, not the first fold's; a copy of a fold (``fold_3.bak``) was read as a fold
    and refused the model's folder."""
    folder = tmp_path / "miniseg"
    for fold, model in (("fold_2", "fcn"), ("fold_10", "unet"), ("fold_3.bak", "fcn")):
        (folder / fold).mkdir(parents=True)
        config = {"config": TrainConfig(model=model).to_dict()}
        (folder / fold / "config.json").write_text(json.dumps(config))
    with pytest.raises(CovsegError, match=re.escape("holds folds of another model (fcn ")):
        compare._check_folder_holds(folder, "miniseg")
    for fold in ("fold_2", "fold_10"):
        shutil.rmtree(folder / fold)
    compare._check_folder_holds(folder, "miniseg")


def test_a_comparison_already_there_is_refused_without_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compare into its own --out again reused every model's finished folds silently, where cv
    and train refuse their own work without --resume; with --resume it goes on."""
    _fake_runs(monkeypatch, {"unet": [{"a": 0.5}, {"b": 0.4}],
                             "miniseg": [{"a": 0.6}, {"b": 0.5}]})
    data = load_dataset("synthetic")
    first = compare.compare_models(TrainConfig(), data, ["unet", "miniseg"], tmp_path)
    with pytest.raises(CovsegError, match=re.escape(
            f"{tmp_path} already holds a model comparison (comparison.json, miniseg, unet); "
            "pass --resume to reuse and continue it, or pick a new --out") + "$"):
        compare.compare_models(TrainConfig(), data, ["unet", "miniseg"], tmp_path)
    again = compare.compare_models(TrainConfig(), data, ["unet", "miniseg"], tmp_path,
                                   resume=True)
    assert again["models"][1]["dice"] == first["models"][1]["dice"]


def test_a_resume_with_fewer_models_names_those_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`--resume` with another model list rewrote the report without the models dropped from
    it, their folders kept, and said nothing. From the second such resume on, a model the
    earlier record lists under ``left_out`` alone was named by its folder (miniseg_miniseg)."""
    runs = {"unet": [{"a": 0.5}, {"b": 0.4}], "miniseg,miniseg": [{"a": 0.6}, {"b": 0.5}],
            "miniseg": [{"a": 0.7}, {"b": 0.6}], "unet:width=8": [{"a": 0.2}, {"b": 0.3}]}
    _fake_runs(monkeypatch, runs)
    data = load_dataset("synthetic")
    first = compare.compare_models(TrainConfig(), data, ["unet", "miniseg,miniseg"], tmp_path)
    assert first["left_out"] == [] and "- Note:" not in (tmp_path / "comparison.md").read_text()
    again = compare.compare_models(TrainConfig(), data, ["unet", "miniseg"], tmp_path,
                                   resume=True)
    note = ("miniseg,miniseg (miniseg_miniseg/) of an earlier comparison in this folder, not "
            "among the models compared now: left out of the report; its folder stays (name it "
            "among the models to report it, or delete the folder)")
    assert again["left_out"] == [{"model": "miniseg,miniseg", "folder": "miniseg_miniseg"}]
    assert [row["model"] for row in again["models"]] == ["unet", "miniseg"]
    said = [r.getMessage() for r in caplog.records if r.name == "covseg.compare"]
    assert said == [f"{tmp_path}: {note}"] * 2, "before the folds and after miniseg's"
    assert json.loads((tmp_path / "comparison.json").read_text())["left_out"] == \
        again["left_out"]
    assert f"- Note: {note}\n" in (tmp_path / "comparison.md").read_text()
    third = compare.compare_models(TrainConfig(), data, ["miniseg", "unet:width=8"], tmp_path,
                                   resume=True)  # the record names it under left_out
    assert third["left_out"] == [{"model": "miniseg,miniseg", "folder": "miniseg_miniseg"},
                                 {"model": "unet", "folder": "unet"}]
    assert "their folders stay (name them among the models to report them, or delete the " \
        "folders)" in caplog.records[-1].getMessage()


def test_the_cli_notes_the_models_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The models left out are said again at the end where a fold trained, as a warning on
    stderr, as covseg's other notes are (evaluate's): it was a "note:" line on stdout, among the
    results."""
    _fake_runs(monkeypatch, {"unet": [{"a": 0.5}, {"b": 0.4}],
                             "miniseg": [{"a": 0.6}, {"b": 0.5}],
                             "resunet": [{"a": 0.7}, {"b": 0.6}]})
    argv = ["compare", "synthetic", "--out", str(tmp_path), "--models", "unet"]
    assert main([*argv, "miniseg", "resunet"]) == 0
    assert "left out" not in capsys.readouterr().err
    assert main([*argv, "resunet", "--resume"]) == 0
    printed = capsys.readouterr()
    note = ("miniseg (miniseg/) of an earlier comparison in this folder, not among the "
            "models compared now: left out of the report; its folder stays (name it among the "
            "models to report it, or delete the folder)")
    assert "left out" not in printed.out
    assert printed.out.splitlines()[-1] == f"report in {tmp_path}/comparison.md"
    assert printed.err.count(f"covseg: warning: {tmp_path}: {note}\n") == 2


def test_a_resume_that_trains_nothing_says_the_models_left_out_once(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A --resume leaving out a model of a comparison whose other models had finished said the
    warning twice in a row: before any fold trained, and again at the end with nothing between
    (the second without the folder). So it still did where a model's summary.json alone was
    gone, written again from its finished folds. Said again only after a fold trained."""
    monkeypatch.setattr(compare, "profile_for_comparison", lambda *args, **kwargs: {
        "parameters": 1, "gflops_per_slice": 0.1, "cpu_ms_per_slice": 1.0})  # timed: slow
    argv = ["compare", str(synthetic_folder), "--out", str(tmp_path), "--folds", "2",
            "--epochs", "1", "--size", "32", "--batch-size", "4", "--models", "miniseg",
            "miniseg:width=0.5"]
    assert main([*argv, "miniseg:width=0.25"]) == 0
    note = (f"covseg: warning: {tmp_path}: miniseg:width=0.25 (miniseg_width-0.25/) of an "
            "earlier comparison")
    for deleted in ("", "miniseg/summary.json"):  # every model finished; a summary gone
        if deleted:
            (tmp_path / deleted).unlink()
        capsys.readouterr()
        assert main([*argv, "--resume"]) == 0
        err = capsys.readouterr().err
        assert err.count("left out of the report") == 1, deleted
        assert note in err, "named as the first comparison named it, not by its folder"
    assert (tmp_path / "miniseg" / "summary.json").is_file()
    shutil.rmtree(tmp_path / "miniseg" / "fold_1")
    assert main([*argv, "--resume"]) == 0
    assert capsys.readouterr().err.count(note) == 2, "before the fold trained and after it"


def test_a_comparison_stopped_midway_is_refused_without_resume_before_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A comparison stopped in its first model (unet/fold_0/ with a saved epoch, no
    comparison.json yet) is continued with --resume only, refused before the data are read."""
    fold = tmp_path / "cmp" / "unet" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "config.json").write_text(json.dumps({"config": TrainConfig(model="unet").to_dict()}))
    save_checkpoint(fold / "last.pt", nn.Conv2d(1, 2, 1), {"model": "unet"})
    monkeypatch.setattr("covseg.api._load", lambda *_: pytest.fail("data were read"))
    with pytest.raises(CovsegError, match=re.escape(
            f"{tmp_path / 'cmp'} already holds a model comparison (unet); pass resume=True")):
        api.compare("synthetic", ["unet", "miniseg"], tmp_path / "cmp", epochs=1)
    compare.check_compare_folder(tmp_path / "cmp", ["unet", "miniseg"], resume=True)


def test_a_fold_record_that_cannot_be_read_is_left_to_cross_validation(tmp_path: Path) -> None:
    """A fold's config.json that is a folder (or unreadable: run as root, chmod 000) ended the
    check of whose folds a model's folder holds in an IsADirectoryError, the CLI's general
    message; it is passed over, as a record that is no JSON is, for cross-validation to name.
    The fold beside it is still read."""
    unet = tmp_path / "cmp" / "unet"
    (unet / "fold_1" / "config.json").mkdir(parents=True)
    compare.check_compare_folder(tmp_path / "cmp", ["unet", "unet:width=8"], resume=True)
    (unet / "fold_0").mkdir()
    (unet / "fold_0" / "config.json").write_text(
        json.dumps({"config": TrainConfig(model="miniseg").to_dict()}))
    with pytest.raises(CovsegError, match=f"^{re.escape(str(unet))} holds folds of another "
                                          "model \\(miniseg with options"):
        compare.check_compare_folder(tmp_path / "cmp", ["unet", "unet:width=8"], resume=True)


@pytest.mark.parametrize("held, kind", [("config.json", "a training run"),
                                        ("summary.json", "a cross-validation"),
                                        ("fold_0/", "a cross-validation")])
def test_a_folder_holding_a_run_or_cross_validation_is_refused_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: str, kind: str) -> None:
    """compare --out RUN wrote model folders and comparison.json beside a run's records."""
    def no_training(*args: object, **kwargs: object) -> None:
        pytest.fail("a model trained in a folder holding another command's output")

    monkeypatch.setattr(compare, "cross_validate", no_training)
    out = folder_holding(tmp_path / "out", held)
    with pytest.raises(CovsegError, match=rf"^{out} holds {kind} \(.*\), not a model "
                                          r"comparison; compare into a new --out$"):
        compare.compare_models(TrainConfig(), load_dataset("synthetic"), ["unet", "miniseg"],
                               out)


def test_specs_with_stray_spaces_name_their_model_and_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec typed with a space (`--models miniseg " miniseg:width=0.5"`) trained into a
    folder named `_miniseg_width-0.5-b408c4`, which no later spelling found again."""
    given: list[list[str]] = []
    monkeypatch.setattr(api, "compare_models",
                        lambda config, data, specs, *_: given.append(specs) or {})
    api.compare("synthetic:1", ["miniseg ", " miniseg:width=0.5"], tmp_path / "cmp", epochs=1)
    assert given == [["miniseg", "miniseg:width=0.5"]]
    assert model_folder(given[0][1]) == "miniseg_width-0.5"


def test_compare_checks_each_model_once(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """api.compare checked the specs, building every model, and compare_models did it again."""
    checked: list[str] = []
    monkeypatch.setattr(compare, "check_model", lambda name, *_: checked.append(name))
    monkeypatch.setattr(compare, "_compare_held", lambda *_: {})
    api.compare("synthetic:1", ["miniseg", "unet"], tmp_path / "cmp", epochs=1)
    assert checked == ["miniseg", "unet"]


def test_an_unknown_model_is_named_before_folders_are_compared() -> None:
    """`--models miniseg MiniSeg` was refused as two models sharing one folder, while MiniSeg
    is no model at all."""
    with pytest.raises(CovsegError, match=r"^unknown model 'MiniSeg'; `covseg models` lists: "):
        check_specs(["miniseg", "MiniSeg"], 64)


def test_a_seed_without_room_for_a_models_folds_is_refused_before_any_model_trains(
        tmp_path: Path, synthetic_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """compare --seed 4294967295 cross-validated the baseline's fold 0, then was refused at its
    fold 1, seeded one above 2**32 - 1. Each model's folds (5 by default) and ensemble members
    must fit below it, checked before any model trains."""
    out = tmp_path / "cmp"
    assert main(["compare", str(synthetic_folder), "--models", "miniseg", "miniseg,unet",
                 "--seed", str(MAX_SEED - 4), "--epochs", "1", "--size", "32", "--out",
                 str(out)]) == 2
    assert capsys.readouterr().err == (
        f"covseg: error: --seed must be at most {MAX_SEED - 5} (2**32 - 1 less 5, which this "
        f"run adds for its folds or ensemble members), got {MAX_SEED - 4}\n")
    assert not out.exists()


def test_a_seed_is_checked_once_against_the_compared_models_not_the_default(
        tmp_path: Path, synthetic_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """compare checked the seed against the default model too (a two-network ensemble), which
    no comparison of single networks trains: it refused 2**32 - 1 as "at most 2**32 - 1 less
    3" for 3 folds, then at that seed said less 2. One refusal gives the largest seed the
    compared models take, and that seed passes; so with an ensemble listed after a network
    (it gave the network's largest, then the ensemble's)."""
    args = ["compare", str(synthetic_folder), "--models", "miniseg", "unet", "--folds", "3",
            "--epochs", "1", "--size", "32", "--out"]
    assert main([*args, str(tmp_path / "cmp"), "--seed", str(MAX_SEED)]) == 2
    assert capsys.readouterr().err == (
        f"covseg: error: --seed must be at most {MAX_SEED - 2} (2**32 - 1 less 2, which this "
        f"run adds for its folds or ensemble members), got {MAX_SEED}\n")
    (tmp_path / "file").touch()  # refused after the seed's check, so that nothing trains
    assert main([*args, str(tmp_path / "file"), "--seed", str(MAX_SEED - 2)]) == 2
    assert "a file is in the way" in capsys.readouterr().err
    with pytest.raises(CovsegError, match=rf"at most {MAX_SEED - 3} \(2\*\*32 - 1 less 3,"):
        check_spec_seeds(TrainConfig(seed=MAX_SEED), ["miniseg", "miniseg,unet"], 3)


@pytest.mark.parametrize("by_patient", [False, True])
def test_a_repeated_comparison_pairs_each_case_once_and_tests_over_all_folds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_patient: bool) -> None:
    """repeats=2: the fold test runs over the 2 x 2 flattened folds (Bouckaert and Frank's
    corrected repeated k-fold t-test: factor 1/4 + n_test/n_train, 3 df), while the Wilcoxon
    pairs each slice (patient) once, its mean Dice over its repeats: counted once per repeat,
    its pairs were r times too many and p too small. The records and report say the repeats."""
    data = load_dataset("synthetic")
    splits = make_folds(data, 2, 0, repeats=2)[0]
    dice = {"unet": [dict.fromkeys(test, 0.5) for _, test in splits],
            "miniseg": [dict.fromkeys(test, 0.6 + 0.01 * j) for j, (_, test) in enumerate(splits)]}
    patients = {s.case_id: s.patient_id for s in data.samples} if by_patient else None
    _fake_runs(monkeypatch, dice, patients=patients)
    result = compare.compare_models(TrainConfig(), data, ["unet", "miniseg"], tmp_path, folds=2,
                                    repeats=2)
    assert (result["folds"], result["repeats"]) == (2, 2)
    test = result["models"][1]["wilcoxon_vs_baseline"]
    units = data.patients if by_patient else data.samples
    assert (test["pairs"], test["unit"]) == (len(units), "patient" if by_patient else "slice")
    assert test["mean_difference"] == pytest.approx(0.115)
    folds = result["models"][1]["corrected_t_vs_baseline"]
    assert (folds["folds"], folds["df"]) == (4, 3)
    assert folds["variance_factor"] == pytest.approx(1 / 4 + 24 / 24)
    report = (tmp_path / "comparison.md").read_text()
    # the repeats said once, by the fold source (the stand-in's summary says none)
    assert ("\n- 2-fold cross-validation, identical folds and seed for every model; folds: "
            in report)
    assert "\n- Repeats: every mean ± std over folds is over all 4 folds;" in report
    assert "repeated 2 times" not in report
    assert "Bouckaert and Frank's (2004) corrected repeated k-fold t-test" in report
    assert ("over its 2 repeats" if not by_patient else "over its slices and its 2 repeats"
            ) in report


def test_a_repeated_slice_without_a_patient_id_never_joins_the_patient_of_its_name(
        tmp_path: Path) -> None:
    """Repeated, a slice carrying no patient id was keyed by its bare case id, so slice "A"
    joined patient "A"'s slices as one unit (mean 0.5 over both); keyed ("case", "A") it is a
    unit of its own. Unrepeated it stays keyed (fold, case id), as before."""
    rows = [(0, "a1", 0.2, "A"), (0, "a2", 0.4, "A"), (1, "A", 1.0, ""),
            (2, "a1", 0.2, "A"), (3, "a2", 0.4, "A"), (2, "A", 0.8, "")]
    with (tmp_path / "per_case.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("fold", "case_id", "dice", "patient_id"), *rows])
    units, unit = compare.patient_dice(tmp_path, repeats=2)
    assert unit == "patient"
    assert units == pytest.approx({"A": 0.3, ("case", "A"): 0.9})
    with (tmp_path / "per_case.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("fold", "case_id", "dice", "patient_id"), *rows[:3]])
    assert compare.patient_dice(tmp_path) == (pytest.approx({"A": 0.3, (1, "A"): 1.0}),
                                              "patient")
