"""Inf-Net COVID-SemiSeg: ``Imgs/`` + ``GT/`` slices (binary or multi-class), read from the
data set's root, ``TrainingSet/`` or the folder itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

from covseg.data.layouts.base import (
    LoadedData,
    ReadOptions,
    Sample,
    check_patients_listed,
    files,
    loaded,
    pair,
    patient_of,
    patients_csv,
    read_2d_pairs,
    read_patients_table,
    require,
    slice_cases,
    warn_misnamed_patients,
)
from covseg.errors import CovsegError
from covseg.io.image import is_image_file


def infnet_folder(root: Path, target: str) -> Path:
    training = root / "TrainingSet" if (root / "TrainingSet").is_dir() else root
    if target == "multiclass" and (training / "MultiClassInfection-Train").is_dir():
        return training / "MultiClassInfection-Train"
    doctor = training / "LungInfection-Train" / "Doctor-label"
    if doctor.is_dir():
        return doctor
    if (training / "Doctor-label").is_dir():
        return training / "Doctor-label"
    return root


def _infnet_spellings(folder: Path, target: str) -> list[Path]:
    """Every folder that names the Inf-Net data of ``folder`` (the one holding Imgs/ and GT/):
    ``folder`` and each folder above it that reads it (LungInfection-Train/, TrainingSet/, the
    data set's root), top first, whichever of them was given as the data folder."""
    place = Path(os.path.abspath(folder))
    spellings = [place]
    while place.parent != place and Path(os.path.abspath(
            infnet_folder(place.parent, target))) == spellings[0]:
        place = place.parent
        spellings.append(place)
    return spellings[::-1]


def _one_patients_csv(folders: Sequence[Path], slices: Sequence[tuple[str, str]]
                      ) -> tuple[dict[str, str], Path | None]:
    """The patients.csv of ``folders`` (equivalent spellings of one data folder) and its path,
    so that the grouping does not depend on which spelling was typed; ({}, None) without one.
    Two that group ``slices`` (:func:`slice_cases`) otherwise are refused, as either would be
    silently dropped; tables that name them otherwise (case id or stem) or name other slices
    too, but group these alike, are not."""
    found: list[tuple[Path, dict[str, str]]] = []
    for table in filter(None, map(patients_csv, folders)):
        if not any(table.samefile(other) for other, _ in found):
            found.append((table, read_patients_table(table)))
    if not found:  # named as the data set's folder, Imgs/ and GT/'s (the last)
        warn_misnamed_patients(folders, folders[-1])
    for (first, mine), (second, theirs) in pairwise(found):
        for case, stem in slices:
            if patient_of(mine, case, stem) != patient_of(theirs, case, stem):
                named = [table.get(case, table.get(stem, "not named")) for table in (mine, theirs)]
                raise CovsegError(
                    f"{first} and {second} group the slices differently ({stem}: {named[0]} in "
                    f"one, {named[1]} in the other); keep one of them")
    return (found[0][1], found[0][0]) if found else ({}, None)


def read_infnet(root: Path, options: ReadOptions) -> LoadedData:
    """Inf-Net's slices of ``root`` (the data set's root, TrainingSet/ or the folder of Imgs/
    and GT/), grouped by a patients.csv in any of those folders (:func:`_one_patients_csv`)."""
    folder = infnet_folder(root, options.target)
    pairs = pair(files(require(folder / "Imgs"), is_image_file),
                  files(require(folder / "GT"), is_image_file), folder)
    patients, table = _one_patients_csv(_infnet_spellings(folder, options.target),
                                        slice_cases(pairs, "infnet_"))
    samples = _read_slices(pairs, options, "reading Inf-Net slices", patients, "infnet_")
    return loaded(samples, "infnet", folder, options, patients_file=table)


def _read_slices(pairs: list[tuple[str, Path, Path]], options: ReadOptions, desc: str,
                 patients: dict[str, str], case_prefix: str) -> list[Sample]:
    """A public slice set's slices (case ids ``case_prefix`` + stem), grouped by ``patients``
    (its patients.csv; empty without one)."""
    samples = read_2d_pairs(pairs, options, patients, desc, case_prefix=case_prefix)
    check_patients_listed(patients, slice_cases(pairs, case_prefix), pairs=pairs,
                          case_prefix=case_prefix)
    return samples
