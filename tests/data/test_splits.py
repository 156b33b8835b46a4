"""Patient-grouped k-fold: the seed's effect on patients of different sizes, the partitions of
equal-size patients kept as before, fold balance, and its speed on many slices."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from covseg.data.layouts import Sample
from covseg.data.splits import grouped_kfold, validation_split

ZENODO_SLICES = [301, 200, 200, 270, 290, 213, 249, 301, 256, 301,
                 39 + 418, 110, 66, 42 + 42, 45, 93, 39, 45]
"""Slices per patient of the Zenodo COVID-19 CT set: its 10 coronacases CTs, then its
Radiopaedia cases (two cases of two scans each, grouped as covseg groups them)."""

_PIXEL = np.zeros((1, 1), np.float32)


def _samples(sizes: list[int]) -> list[Sample]:
    """Patient ``p{i}`` with ``sizes[i]`` slices, listed patient by patient."""
    return [Sample(_PIXEL, _PIXEL.astype(np.uint8), f"p{i}_z{k:04d}", f"p{i}", f"p{i}#z{k}")
            for i, size in enumerate(sizes) for k in range(size)]


def _before_size_classes(samples: list[Sample], folds: int, seed: int
                         ) -> list[tuple[list[str], list[str]]]:
    """grouped_kfold as it was up to this change: shuffled, then strictly sorted by size (its
    held-out sets built once per fold here, not once per case)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for sample in samples:
        groups[sample.patient_id].append(sample.case_id)
    patients = list(groups)
    np.random.default_rng(seed).shuffle(patients)
    patients.sort(key=lambda p: -len(groups[p]))
    held_out: list[list[str]] = [[] for _ in range(folds)]
    for patient in patients:
        smallest = min(range(folds), key=lambda k: (len(held_out[k]), k))
        held_out[smallest].extend(groups[patient])
    held = [set(test) for test in held_out]
    return [([s.case_id for s in samples if s.case_id not in held[k]], sorted(test))
            for k, test in enumerate(held_out)]


def _held_sizes(sizes: list[int], folds: list[tuple[list[str], list[str]]]
                ) -> frozenset[tuple[int, ...]]:
    """Each fold's held-out patients by their sizes: the split, up to swapping patients of one
    size (which the seed always did)."""
    return frozenset(tuple(sorted(sizes[int(p[1:])] for p in {c.split("_")[0] for c in test}))
                     for _, test in folds)


@pytest.mark.parametrize("patients,size,folds", [(50, 1, 5), (52, 1, 5), (7, 1, 3),
                                                 (12, 4, 3), (8, 2, 4), (10, 300, 5)])
def test_equal_size_patients_keep_their_partitions(patients: int, size: int, folds: int) -> None:
    """The Inf-Net and MedSeg CV figures (one-slice patients) were measured on these folds."""
    samples = _samples([size] * patients)
    for seed in range(10):
        assert grouped_kfold(samples, folds, seed) == _before_size_classes(samples, folds, seed)


@pytest.mark.parametrize("folds", [3, 5])
def test_the_seed_changes_the_split_of_patients_of_different_sizes(folds: int) -> None:
    """Shuffled then sorted by slice count, Zenodo's CTs got one split for every seed (only
    patients of one size swapped), so --seed 1 was no other split."""
    samples = _samples(ZENODO_SLICES)
    splits = [grouped_kfold(samples, folds, seed) for seed in range(20)]
    assert len({_held_sizes(ZENODO_SLICES, split) for split in splits}) >= 10
    for split in splits:
        held = [len(test) for _, test in split]
        assert sorted(c for _, test in split for c in test) == sorted(s.case_id for s in samples)
        assert max(held) - min(held) <= max(ZENODO_SLICES)
        assert sum(held) == sum(ZENODO_SLICES)


def test_folds_stay_within_the_largest_patient_of_each_other() -> None:
    rng = np.random.default_rng(0)
    for seed in range(20):
        sizes = [int(n) for n in rng.integers(1, 400, size=int(rng.integers(5, 30)))]
        split = grouped_kfold(_samples(sizes), 5, seed)
        held = [len(test) for _, test in split]
        assert max(held) - min(held) <= max(sizes), (sizes, held)
        for train, test in split:
            assert not {c.split("_")[0] for c in train} & {c.split("_")[0] for c in test}


def test_many_one_slice_patients() -> None:
    """The training list rebuilt the held-out set for every case: 40,000 slices took a minute."""
    samples = _samples([1] * 20_000)
    split = grouped_kfold(samples, 5, 3)
    assert split == _before_size_classes(samples, 5, 3)
    assert [len(test) for _, test in split] == [4000] * 5
    assert [len(train) for train, _ in split] == [16_000] * 5


@pytest.mark.parametrize("seed", range(5))
def test_each_fold_trains_on_every_case_but_its_held_out_patients(seed: int) -> None:
    """No test checked a fold's training cases against its held-out ones, so training on a
    held-out case (test-set leakage) went unnoticed; nor the validation split's."""
    samples = _samples([1, 2, 3, 4, 5, 1, 2, 3, 4, 5])
    patient = {sample.case_id: sample.patient_id for sample in samples}
    every = {sample.case_id for sample in samples}
    tested: list[str] = []
    for train, test in grouped_kfold(samples, 5, seed):
        assert not set(train) & set(test) and set(train) | set(test) == every
        assert not {patient[case] for case in train} & {patient[case] for case in test}
        tested += test
    assert sorted(tested) == sorted(every)
    train, val = validation_split(samples, 0.3, seed)
    assert not set(train) & set(val) and set(train) | set(val) == every
    assert not {patient[case] for case in train} & {patient[case] for case in val}


def test_the_folds_of_patients_of_different_sizes_stay_balanced() -> None:
    """Zenodo's CTs in 5 folds, seeds 0-9: the largest fold stays within 100 slices of the
    smallest (9-50 apart); patients taken smallest first (sorted the wrong way) left 359-457."""
    samples = _samples(ZENODO_SLICES)
    for seed in range(10):
        held = [len(test) for _, test in grouped_kfold(samples, 5, seed)]
        assert max(held) - min(held) <= 100, (seed, held)


def _validation_patients(samples: list[Sample], seed: int) -> set[str]:
    """The patients that :func:`validation_split` holds out of ``samples``, a quarter of them."""
    return {case.split("_")[0] for case in validation_split(samples, 0.25, seed)[1]}


def test_the_seed_picks_the_validation_patients() -> None:
    """--seed 1 holds out other patients than --seed 0: a seed that did not reach the shuffle
    gave every seed one validation split."""
    samples = _samples([3] * 20)
    first, second = (_validation_patients(samples, seed) for seed in (0, 1))
    assert len(first) == len(second) == 5 and first != second


def test_the_validation_patients_do_not_depend_on_the_order_the_data_are_listed_in() -> None:
    """One seed holds out the same patients whatever order the layout lists the slices in
    (patients are shuffled from their sorted ids, not from their first appearance)."""
    samples = _samples([3] * 20)
    assert _validation_patients(samples[::-1], 0) == _validation_patients(samples, 0)
