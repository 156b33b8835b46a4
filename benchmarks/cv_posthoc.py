"""Re-score finished cross-validation runs with inference-time choices, without retraining.

    python benchmarks/cv_posthoc.py DATA RUN [RUN ...] [--json out.json] [--against VARIANT]

Each RUN is a ``covseg cv`` output folder; runs given together must share their folds (same
split seed), so that the same slices are held out of every model that predicts them. For every
fold the held-out slices are predicted by the fold's model(s), and the mean per-slice Dice over
all held-out slices (and over folds) is printed for each variant:

- checkpoint: ``best.pt`` (validation-selected) or ``last.pt`` (final epoch; the same model
  when the run kept no validation slices), where a fold kept it: a run deletes its last.pt as it
  finishes since 7 Dec, so a cv run since has ``best.pt`` alone (with no validation slices,
  the final epoch);
- test-time views: none, left-right flip, both flips, transpose, flip + transpose, all eight
  flips and transposes, and the four flips each also with its intensities gamma-shifted
  (power 0.8 and 1.25, the training augmentation's range) (probabilities averaged);
- ensembles: the probability average of the given runs' fold models;
- post-processing: dropping connected components under a share of the slice, filling holes,
  thresholds, Gaussian smoothing of the probabilities, expected-Dice decoding (per slice,
  the most probable pixels that maximise the Dice expected under the probabilities), and
  hysteresis (components at 0.4 kept only where they reach a higher probability).

The cut of each variant: one without a post-processing suffix, and its ``+fill`` and
``+drop<S%`` ones, cut the probabilities at 0.5, not at the threshold the run predicts with (its
recipe's, 0.4 by default); ``+tX`` cuts at X (``+t0.4`` is the default recipe's own cut),
``+smoothS+t0.4`` and ``+hyst0.4/H`` at 0.4, and ``+expected-dice`` picks a cut per slice.

``--recalibrate-bn clean|dihedral`` first recomputes every BatchNorm statistic of each fold
model on that fold's training slices, unaugmented (``clean``) or in their eight flips and
transposes (``dihedral``), with torch's ``update_bn``: the statistics training keeps come from
heavily augmented batches, while test slices are not augmented.

A variant is named ``RUN|checkpoint|views`` and its post-processing, RUN by the run's folder
name or, for runs of one name (``a/cv b/cv``), by as many trailing parts of its path as tell
them apart.

``--against VARIANT`` (a name from the printed table) adds, for every variant, the two tests of
``covseg compare`` against that one: the paired two-sided Wilcoxon test on the per-slice Dice
(slices better / worse, p), which takes the trained networks as given, and Nadeau and Bengio's
corrected resampled t-test on the per-fold mean differences (p over folds), which includes
training variation (not given where no run keeps a fold's config.json, which holds its
training slices: a folder of links to fold models). Variants of one run and checkpoint share
their networks (they differ in views and post-processing alone), so the per-slice test is the
one for them; variants of another run, checkpoint or the ensemble have networks of their own
training, and the test over folds is the one that asks whether their recipe differs (one
recipe trained with two seeds differed at p = 1e-5 per slice, 0.47 over folds).
``--json`` writes every variant's figures, its per-slice Dice by case id included, so that
variants of separate runs (with and without ``--recalibrate-bn``) can be paired afterwards.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from _cli import run_labels
from scipy import ndimage
from torch.optim.swa_utils import update_bn

from covseg.checkpoint import fold_folders
from covseg.compare import fold_t_test, paired_wilcoxon
from covseg.crossval import finished_fold, fold_recorded, fold_training, read_fold_record
from covseg.data.layouts import load_dataset
from covseg.errors import CovsegError
from covseg.infer import FLIP_DIMS, Predictor
from covseg.io.atomic import write_json
from covseg.metrics import dice
from covseg.models.ensemble import average_as_logits
from covseg.records import read_record
from covseg.train import FOLDS, canvas_items

T = TypeVar("T")
GAMMAS = (0.8, 1.25)
"""The gamma views' powers: the range of the training augmentation (MONAI's
RandAdjustContrastd, which also rescales by each image's min and max; here the [0, 1]
intensities are raised as they are)."""
View = tuple[str, ...]
"""Operations applied in order: "lr" mirrors columns, "ud" mirrors rows, "t" transposes,
"gG" raises the [0, 1] intensities to the power G."""
VIEWS: dict[str, tuple[View, ...]] = {
    "none": ((),), "lr": ((), ("lr",)), "lr+ud": ((), ("lr",), ("ud",), ("lr", "ud")),
    "t": ((), ("t",)), "lr+t": ((), ("lr",), ("t",), ("t", "lr")),
    "lr+ud+t": ((), ("lr",), ("ud",), ("lr", "ud"), ("t",), ("t", "lr"), ("t", "ud"),
                ("t", "lr", "ud")),
    "lr+ud+gamma": tuple(flips + gamma for flips in ((), ("lr",), ("ud",), ("lr", "ud"))
                         for gamma in ((), *((f"g{g}",) for g in GAMMAS))),
}
OPERATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    **{name: partial(torch.flip, dims=(dim,)) for name, dim in FLIP_DIMS.items()},
    "t": lambda x: x.transpose(2, 3),
    **{f"g{gamma}": (lambda x, gamma=gamma: x.clamp(min=0) ** gamma) for gamma in GAMMAS},
}
INPUT_ONLY = {f"g{gamma}" for gamma in GAMMAS}
"""Intensity operations change the input only: nothing to undo on the output."""


def _apply(batch: torch.Tensor, view: Sequence[str]) -> torch.Tensor:
    for name in view:
        batch = OPERATIONS[name](batch)
    return batch


class ViewAveraged:
    """A network whose output is the mean of its outputs over views of the input, each mapped
    back (every operation is its own inverse, so a view is undone in reverse order)."""

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], views: tuple[View, ...]
                 ) -> None:
        self.network, self.views = network, views

    def eval(self) -> ViewAveraged:
        return self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        outs = [_apply(self.network(_apply(batch, v).contiguous()),
                       [op for op in v[::-1] if op not in INPUT_ONLY]) for v in self.views]
        # back to logits, as Predictor applies the sigmoid itself
        return average_as_logits(outs)


def recalibrate_bn(predictor: Predictor, images: Sequence[torch.Tensor], views: str) -> None:
    """Recompute the network's BatchNorm statistics on training canvases (see the docstring)."""
    batch = torch.stack(list(images))
    if views == "dihedral":
        batch = torch.cat([_apply(batch, v) for v in VIEWS["lr+ud+t"]])
    batch = batch[torch.randperm(len(batch), generator=torch.Generator().manual_seed(0))]
    chunks = [chunk for chunk in batch.split(8) if len(chunk) > 1]
    update_bn(chunks, predictor.model)  # keeps eval mode


def view_probabilities(predictor: Predictor, images: Sequence[np.ndarray]
                       ) -> dict[str, list[np.ndarray]]:
    """Infection probabilities of ``images`` under each set of views, from one loaded model."""
    network = predictor.model
    result = {}
    for name, views in VIEWS.items():
        predictor.model = ViewAveraged(network, views)
        result[name] = [p[0] for p in predictor.predict_probabilities(images)]
    return result


def postprocess(mask: np.ndarray, min_share: float, fill: bool) -> np.ndarray:
    """Drop components smaller than ``min_share`` of the slice; optionally fill holes."""
    if min_share > 0:
        labels, count = ndimage.label(mask)
        if count:
            sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
            keep = np.concatenate([[False], sizes >= min_share * mask.size])
            mask = keep[labels]
    if fill:
        mask = ndimage.binary_fill_holes(mask)
    return mask.astype(np.uint8)


def hysteresis_mask(probs: np.ndarray, low: float, high: float) -> np.ndarray:
    """Components of ``probs >= low`` kept only where they reach ``high`` somewhere: a faint
    blob with no confident core (the false calls on healthy lungs) is dropped whole."""
    labels, count = ndimage.label(probs >= low)
    if not count:
        return labels > 0
    peaks = ndimage.maximum(probs, labels, index=np.arange(1, count + 1))
    return np.concatenate([[False], peaks >= high])[labels]


def expected_dice_mask(probs: np.ndarray) -> np.ndarray:
    """The k most probable pixels, k maximising 2 * sum(top k) / (k + sum(all)): the Dice
    expected under the probabilities (an adaptive threshold per slice)."""
    flat = probs.ravel()
    order = np.argsort(-flat)
    expected = 2 * np.cumsum(flat[order]) / (np.arange(1, flat.size + 1) + flat.sum())
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:int(np.argmax(expected)) + 1]] = True
    return mask.reshape(probs.shape)


Decoder = Callable[[np.ndarray], np.ndarray]
DECODERS: dict[str, Decoder] = {
    "": lambda p: p >= 0.5,
    "+fill": lambda p: postprocess(p >= 0.5, 0.0, True),
    "+drop<0.1%": lambda p: postprocess(p >= 0.5, 0.001, False),
    "+drop<0.5%": lambda p: postprocess(p >= 0.5, 0.005, False),
    **{f"+t{t}": (lambda p, t=t: p >= t) for t in (0.3, 0.35, 0.4, 0.45, 0.6)},
    **{f"+smooth{s}+t0.4": (lambda p, s=s: ndimage.gaussian_filter(p, s) >= 0.4)
       for s in (1, 2, 4)},
    "+expected-dice": expected_dice_mask,
    **{f"+hyst0.4/{h}": partial(hysteresis_mask, low=0.4, high=h) for h in (0.6, 0.7, 0.8, 0.9)},
}
"""Probabilities to a mask: the name's suffix in the printed table."""


def dice_rows(probabilities: Sequence[np.ndarray], truths: Sequence[np.ndarray],
              decode: Decoder) -> list[float]:
    """Per-slice Dice with covseg's rule (both empty = 1); the lists pair slice by slice, so
    lists of different lengths (a slice's probabilities beside another's truth) are refused."""
    return [dice(decode(p).astype(np.uint8), t)
            for p, t in zip(probabilities, truths, strict=True)]


def checkpoints(run: Path) -> list[str]:
    """``best.pt`` and, where every fold of the run kept it (single models of a covseg before 7
    Dec; ensembles keep only their average), ``last.pt``."""
    folds = [fold for fold in run.glob("fold_*") if fold.name.removeprefix("fold_").isdigit()]
    return [name for name in ("best.pt", "last.pt")
            if folds and all((fold / name).is_file() for fold in folds)]


def fold_cases(run: Path) -> list[list[str]]:
    """Each finished fold's held-out case ids, in fold order, its fold_metrics.json read as a
    resume reads it (:func:`~covseg.crossval.finished_fold`): a damaged one is refused in one
    line naming it, which ended in a JSONDecodeError or KeyError traceback."""
    folds = [fold for fold in fold_folders(run) if fold_recorded(fold)]
    return [[row["case_id"] for row in finished_fold(fold)["per_case"]] for fold in folds]


def finished_folds(run: Path) -> list[list[str]]:
    """:func:`fold_cases`, or refused in one line where ``run`` holds no finished fold (a plain
    ``covseg train`` run scored nan, or failed in a traceback) or not folds 0..n-1: the scripts
    load ``fold_{k}`` for the k-th list, so a gap (fold_0 unfinished, fold_1 done) paired one
    fold's held-out slices with another fold's model. A run of ``--repeats`` (more folds than
    its folds record as a repeat's) is refused: it holds each slice out once per repeat, and
    the scripts key Dice by slice."""
    splits = fold_cases(run)
    if not splits:
        raise CovsegError(f"{run}: no fold_*/fold_metrics.json; give a finished `covseg cv` "
                          "folder")
    folds = (read_record(run / "fold_0" / "config.json") or {}).get(FOLDS)
    if isinstance(folds, int) and 0 < folds < len(splits):
        raise CovsegError(f"{run}: a repeated cross-validation (--repeats: {len(splits)} folds, "
                          f"{folds} a repeat), which holds each slice out once per repeat, and "
                          "these scripts key Dice by slice; give a run without --repeats (its "
                          f"repeat 0, fold_0 .. fold_{folds - 1} copied to a folder of their "
                          "own, is one)")
    unfinished = [f"fold_{k}" for k in range(len(splits))
                  if not fold_recorded(run / f"fold_{k}")]
    if unfinished:
        raise CovsegError(f"{run}: {', '.join(unfinished)} unfinished while later folds are "
                          "done; finish the cross-validation (covseg cv ... --resume) first")
    return splits


def held_out(by_id: Mapping[str, T], cases: Sequence[str], run: Path, data: str,
             role: str = "held-out") -> list[T]:
    """The items of ``cases`` (a fold's held-out case ids, or its ``role`` ones), or exit in one
    line naming those ``data`` lacks: a run trained on another data folder failed in a
    KeyError."""
    missing = [case for case in cases if case not in by_id]
    if missing:
        raise CovsegError(f"{run}: {len(missing)} {role} case(s) not in {data} "
                          f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); "
                          "give the data folder the run was trained on")
    return [by_id[case] for case in cases]


def training_samples(by_id: Mapping[str, T], runs: Sequence[Path], folds: int, data: str
                     ) -> dict[tuple[Path, int], list[T]]:
    """Each run's fold training slices (``--recalibrate-bn`` needs them), or refused in one line
    before any prediction where ``data`` lacks some: that failed in a KeyError after the
    first fold was predicted. A fold's damaged config.json is refused in one line naming it
    (:func:`~covseg.crossval.read_fold_record`), which ended in a traceback."""
    return {(run, k): held_out(by_id, read_fold_record(run / f"fold_{k}" / "config.json",
                                                       _training_cases),
                               run / f"fold_{k}", data, "training")
            for run in runs for k in range(folds)}


def _training_cases(record: dict[str, Any]) -> list[str]:
    """The training case ids a fold's config.json lists (KeyError or TypeError where none)."""
    cases = record["train_cases"]
    if not isinstance(cases, list) or not all(isinstance(case, str) for case in cases):
        raise TypeError("train_cases is no list of case ids")
    return cases


def variant_names(labels: Mapping[Path, str]) -> list[str]:
    """Every variant the table will hold, in its order: known from the runs' ``labels`` (runs
    in order, as :func:`run_labels` names them), their checkpoints, the views and the decoders
    alone, so a name can be checked before predicting."""
    runs = list(labels)
    keys = [f"{labels[run]}|{checkpoint}|{view}" for run in runs
            for checkpoint in checkpoints(run) for view in VIEWS]
    if len(runs) > 1:
        shared = set.intersection(*(set(checkpoints(r)) for r in runs))
        keys += [f"ensemble|{checkpoint}|{view}" for checkpoint in shared for view in VIEWS]
    return [key + suffix for key in keys for suffix in DECODERS]


def check_variant(name: str, labels: Mapping[Path, str]) -> None:
    """Exit in one line, naming a few close variants, when ``name`` is not in the table of the
    runs ``labels`` names."""
    names = variant_names(labels)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else \
            f"names look like {names[0]!r} (run|checkpoint|views+post-processing)"
        raise CovsegError(f"--against {name!r}: no such variant; {hint}")


TESTS_TOLD = (
    "p: paired Wilcoxon on the per-slice Dice, which takes these trained networks as given: "
    "the test for variants sharing --against's run and checkpoint (views, thresholds, "
    "post-processing). p over folds: Nadeau and Bengio's corrected resampled t-test on the "
    "per-fold mean differences, which includes training variation: the test for variants of "
    "another run, checkpoint or the ensemble")
"""The line under the table that says which of its two tests is which."""


def by_fold(per_slice: Mapping[str, float], splits: Sequence[Sequence[str]]
            ) -> dict[Hashable, float]:
    """Per-slice Dice keyed (fold, case id), as :func:`~covseg.compare.fold_t_test` takes it,
    from Dice keyed by case id and each fold's held-out case ids."""
    return {(k, case): per_slice[case] for k, cases in enumerate(splits) for case in cases}


def training_splits(runs: Sequence[Path], splits: Sequence[list[str]]
                    ) -> list[tuple[list[str], list[str]]] | str:
    """Each fold's (training, held-out) slices, as :func:`~covseg.compare.fold_t_test` takes
    them, the training ones from the first of ``runs`` (which share their folds) that keeps
    the fold's config.json (:func:`~covseg.crossval.fold_training`); else why the test over
    folds cannot be given: no run keeps it (folders of links to fold models)."""
    found = []
    for k, cases in enumerate(splits):
        kept = [run / f"fold_{k}" for run in runs if (run / f"fold_{k}" / "config.json").is_file()]
        if not kept:
            return f"no run keeps fold_{k}/config.json (the fold's training slices)"
        found.append((sorted(fold_training(kept[0])), cases))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path,
                        help="also write every variant's figures, per slice included")
    parser.add_argument("--against", help="variant to test every other one against (paired)")
    parser.add_argument("--recalibrate-bn", choices=("clean", "dihedral"),
                        help="recompute BatchNorm statistics on each fold's training slices first")
    args = parser.parse_args(argv)
    labels = run_labels(args.runs)
    splits = finished_folds(args.runs[0])
    for run in args.runs[1:]:
        if fold_cases(run) != splits:
            raise CovsegError(f"{run}: its folds differ from {args.runs[0]}'s; "
                              "ensembles need the same folds")
    if args.against:
        check_variant(args.against, labels)
    by_id = {s.case_id: s for s in load_dataset(args.data).samples}
    held = [held_out(by_id, cases, args.runs[0], args.data) for cases in splits]
    trained_on = (training_samples(by_id, args.runs, len(splits), args.data)
                  if args.recalibrate_bn else {})
    fold_splits = training_splits(args.runs, splits) if args.against else []
    truths: list[np.ndarray] = []
    probs: dict[str, list[np.ndarray]] = {}
    fold_of: list[int] = []
    for k, samples in enumerate(held):
        images = [s.image for s in samples]
        truths += [(s.mask > 0).astype(np.uint8) for s in samples]
        fold_of += [k] * len(samples)
        training: dict[tuple, list[torch.Tensor]] = {}  # the fold's training canvases, per canvas
        for run in args.runs:
            for checkpoint in checkpoints(run):
                predictor = Predictor.load(run / f"fold_{k}" / checkpoint, tta=False)
                if args.recalibrate_bn:
                    canvas = (predictor.size, predictor.guide or predictor.frame)
                    if canvas not in training:
                        training[canvas] = [c["image"] for c in
                                            canvas_items(trained_on[run, k], *canvas)]
                    recalibrate_bn(predictor, training[canvas], args.recalibrate_bn)
                by_views = view_probabilities(predictor, images)
                for view_name, fold_probs in by_views.items():
                    key = f"{labels[run]}|{checkpoint}|{view_name}"
                    probs.setdefault(key, []).extend(fold_probs)
        print(f"fold {k} predicted", file=sys.stderr)
    if len(args.runs) > 1:
        for checkpoint in set.intersection(*(set(checkpoints(r)) for r in args.runs)):
            for view_name in VIEWS:
                members = [probs[f"{labels[r]}|{checkpoint}|{view_name}"] for r in args.runs]
                probs[f"ensemble|{checkpoint}|{view_name}"] = [np.mean(ps, axis=0)
                                                               for ps in zip(*members)]
    case_ids = [case for cases in splits for case in cases]
    fold_index = np.array(fold_of)
    results: dict[str, dict] = {}
    for key, p in probs.items():
        for suffix, decode in DECODERS.items():
            dice = np.array(dice_rows(p, truths, decode))
            per_fold = [float(dice[fold_index == k].mean()) for k in range(len(splits))]
            results[key + suffix] = {
                "mean": float(dice.mean()), "fold_std": float(np.std(per_fold, ddof=1)),
                "per_fold": per_fold, "per_slice": dict(zip(case_ids, dice.tolist())),
            }
    if args.against:
        against = results[args.against]["per_slice"]
        for key, r in results.items():
            r["vs_against"] = paired_wilcoxon(r["per_slice"], against)
            if not isinstance(fold_splits, str):
                r["folds_vs_against"] = fold_t_test(by_fold(r["per_slice"], splits),
                                                    by_fold(against, splits), fold_splits)
    width = max(map(len, results))
    print(f"{'variant':<{width}}  mean Dice  std over folds  per fold"
          + ("                         better/worse  p  p over folds" if args.against else ""))
    for key, r in results.items():
        test, folds = r.get("vs_against"), r.get("folds_vs_against")
        over_folds = f"{folds['p_value']:.4f}" if folds else "-"
        paired = (f"  {test['cases_better']}/{test['cases_worse']}  {test['p_value']:.4f}"
                  f"  {over_folds}" if test else "")
        print(f"{key:<{width}}  {r['mean']:.4f}     {r['fold_std']:.4f}          "
              + " ".join(f"{d:.3f}" for d in r["per_fold"]) + paired)
    if args.against:
        print(TESTS_TOLD)
    if isinstance(fold_splits, str):
        print(f"p over folds: not given, {fold_splits}")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    from _cli import run_main

    run_main(main)
