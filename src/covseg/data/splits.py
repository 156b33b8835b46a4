"""Patient-grouped splits: no patient ever has slices on both sides of a split."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from covseg.data.layouts import Sample
from covseg.errors import CovsegError
from covseg.provenance import option_name

log = logging.getLogger(__name__)


def _by_patient(samples: Sequence[Sample]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for sample in samples:
        groups[sample.patient_id].append(sample.case_id)
    return groups


def _spelled(name: str) -> str:
    """Option ``name`` as the running command spells it (:func:`covseg.provenance.option_name`)."""

    return option_name(name)


def check_fold_count(folds: int) -> None:
    """k-fold cross-validation needs k >= 2; checked before data are read, and here."""
    if folds < 2:
        raise CovsegError(f"{_spelled('folds')} must be at least 2, got {folds}")


def check_repeat_count(repeats: int) -> None:
    """Repeated k-fold cross-validation repeats the k folds at least once (1: plain k-fold);
    checked before data are read."""
    if repeats < 1:
        raise CovsegError(f"{_spelled('repeats')} must be at least 1 (1: the folds once, "
                          f"unrepeated), got {repeats}")


def grouped_kfold(samples: Sequence[Sample], folds: int, seed: int = 0
                  ) -> list[tuple[list[str], list[str]]]:
    """(train case ids, held-out case ids) per fold, patients shuffled by ``seed``.

    Patients are dealt to the fold with the fewest slices, larger ones first, so folds stay
    balanced: any order keeps every fold within the largest patient's slice count of every
    other, and largest first keeps them closer. A strict sort by slice count left the seed
    only the order of patients of equal size, so volumes (every CT of its own size) got the
    same split for every seed; patients are therefore sorted by size class, sizes within a
    factor of sqrt(2) sharing one (two classes per doubling), and the shuffle orders each
    class. The classes' bounds are moved by a seeded fraction of a class, so that no two
    patients of close size are held in one order for every seed. Patients of one size share
    one class whatever its bounds: their order is the shuffle's, as before, and so are the
    folds of one-slice patients (MedSeg's, Inf-Net's slices).
    Hand-written rather than scikit-learn's GroupKFold to avoid a dependency for ten lines,
    and because GroupKFold does not shuffle.
    """
    groups = _by_patient(samples)
    check_fold_count(folds)
    if len(groups) < folds:
        raise CovsegError(f"{folds} folds need at least {folds} patients; "
                          f"the data has {len(groups)}")
    rng = np.random.default_rng(seed)
    patients = list(groups)
    rng.shuffle(patients)
    offset = rng.random()
    patients.sort(key=lambda p: -math.floor(2 * math.log2(len(groups[p])) + offset))
    held_out: list[list[str]] = [[] for _ in range(folds)]
    for patient in patients:
        smallest = min(range(folds), key=lambda k: (len(held_out[k]), k))
        held_out[smallest].extend(groups[patient])
    all_cases = [s.case_id for s in samples]
    return [(_train_cases(all_cases, set(test)), sorted(test)) for test in held_out]


def _train_cases(all_cases: list[str], held: set[str]) -> list[str]:
    """The cases a fold trains on, in the data's order; ``held`` is a set, built once per fold
    (built once per case, it made 40,000 slices take a minute)."""
    return [case for case in all_cases if case not in held]


def validation_split(samples: Sequence[Sample], fraction: float, seed: int = 0,
                     quiet: bool = False) -> tuple[list[str], list[str]]:
    """(train, validation) case ids with about ``fraction`` of the patients held out; a split
    that leaves fewer slices to train on than to validate on is logged as a warning (the
    model would learn from a few slices while many pick its best epoch), as is one whose
    count of patients had to be moved off ``fraction``'s rounding (at least one patient held
    out, one left to train) or that holds out none: 0.05 of 8 patients held out 12.5 %
    without a word. ``quiet``: no warnings, for a look at the split that its run warns of."""
    groups = _by_patient(samples)
    if not 0.0 <= fraction < 1.0:
        raise CovsegError(f"{_spelled('val_fraction')} must lie in [0, 1), got {fraction}")
    patients = sorted(groups)
    np.random.default_rng(seed).shuffle(patients)
    asked = count = round(fraction * len(patients))
    if fraction > 0 and len(patients) >= 2:
        count = min(max(count, 1), len(patients) - 1)
    if fraction > 0 and patients and (count != asked or count == 0) and not quiet:
        log.warning("%s %g holds out %d of %d patient(s) (%.1f %%), not %g %%: whole patients "
                    "are held out, one at least where another is left to train on",
                    _spelled("val_fraction"), fraction, count, len(patients),
                    100 * count / len(patients), 100 * fraction)
    val_patients = set(patients[:count])
    train = [s.case_id for s in samples if s.patient_id not in val_patients]
    val = [s.case_id for s in samples if s.patient_id in val_patients]
    if len(train) < len(val) and not quiet:
        log.warning("validation fraction %g leaves %d slice(s) to train on and %d to validate "
                    "on; lower %s (0 trains on every slice)", fraction, len(train), len(val),
                    _spelled("val_fraction"))
    return train, val
