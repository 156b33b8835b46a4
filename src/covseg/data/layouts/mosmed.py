"""MosMedData: the 2D slices with their ``train_new{k}.txt`` / ``valid_new{k}.txt`` fold lists,
and the 3D ``studies/`` + ``masks/`` NIfTI volumes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PureWindowsPath

from covseg.data.layouts.base import (
    LoadedData,
    ReadOptions,
    check_patients_listed,
    files,
    first_dir,
    kept_slices,
    loaded,
    mosmed_patient,
    only_dir,
    pair_folders,
    read_2d_pairs,
    read_patients_csv,
    read_studies,
    read_text_file,
    slice_cases,
    slice_patients,
    study_rows,
    sub_folders,
    unique,
)
from covseg.data.layouts.folders import FOLDERS_IMAGES, FOLDERS_MASKS
from covseg.errors import CovsegError, counted, examples
from covseg.io.ct import refuse_broken_links, volume_stem
from covseg.io.image import IMAGE_SUFFIXES, image_name, is_image_file
from covseg.io.nifti import is_nifti, named_as_nifti


def read_mosmed_2d(root: Path, options: ReadOptions) -> LoadedData:
    images_folder = only_dir(root, FOLDERS_IMAGES)
    images_dir = images_folder or root
    masks_dir = only_dir(root, FOLDERS_MASKS)
    if masks_dir is None:
        raise CovsegError(_no_masks(root))
    images = files(images_dir, is_image_file, lambda path: _slice_stem(path.name))
    pairs = pair_folders(images, files(masks_dir, is_image_file,
                                       lambda path: _slice_stem(path.name)),
                         root, "mosmed-2d", images_folder, masks_dir)
    notes: list[str] = []
    patients = _mosmed_patients(root, pairs)
    samples = read_2d_pairs(pairs, options, patients, "reading MosMed slices")
    splits = _split_pairs(root)
    folds = [_read_fold(train_list, valid_list, patients, images_dir)
             for train_list, valid_list in splits]
    _check_tested_once([valid_list for _, valid_list in splits], [valid for _, valid in folds])
    tested = {stem for _, valid in folds for stem in valid}
    read = [sample.case_id for sample in kept_slices(samples, options.slices)]
    untested = [case for case in read if case not in tested]
    if untested:
        one = len(untested) == 1
        notes.append(f"{len(untested)} of {counted(len(read), 'slice')} "
                     f"{'is' if one else 'are'} in no {SPLIT_LISTS[1]}*.txt, so no fold tests "
                     f"{'it' if one else 'them'} ({examples(untested)}); list each in one "
                     "fold's test file")
    data = loaded(samples, "mosmed-2d", root, options, folds=folds)
    data.split_files = [(train.name, valid.name) for train, valid in splits]
    numbers = [_fold_number(train) for train, _ in splits]
    if numbers not in (list(range(len(numbers))), list(range(1, len(numbers) + 1))):
        notes.append(f"the split files are numbered {', '.join(map(str, numbers))}, not "
                     f"1..{len(numbers)}, so the folds' numbers are not theirs (fold K is the "
                     f"K-th pair in number order): {split_files_note(data)}")
    data.notes.extend(notes)
    return data


def _no_masks(root: Path) -> str:
    """Why split files without a masks folder beside them are refused, and what to do: where a
    sub-folder holds the slices (split files one folder above them, ``X/train_new1.txt`` +
    ``X/data/{imgs,masks}``), move the files into it."""
    below = [f"{path.name}/" for path in sorted(root.iterdir())
             if path.is_dir() and first_dir(path, FOLDERS_MASKS)]
    if below:
        return (f"{root}: MosMed split files found, but the masks/ folder lies one folder "
                f"deeper ({examples(below)}); move the split files into that folder and give it")
    return (f"{root}: MosMed split files found but no masks/ folder beside them; put each "
            "slice's mask in masks/, under the slice's file stem")


def _mosmed_patients(root: Path, pairs: list[tuple[str, Path, Path]]) -> dict[str, str]:
    """Each slice's patient: as ``root/patients.csv`` groups it, as every 2D layout reads it,
    else its study as its name tells it (:func:`mosmed_patient`); slices that neither tells are
    each their own patient, which loading warns of
    (:func:`~covseg.data.layouts.detect.unidentified_note`), as a split file may then put one
    patient's slices on both sides of a fold unseen."""
    table, studies = study_rows(read_patients_csv(root), pairs, mosmed_patient)
    check_patients_listed(table, slice_cases(pairs), studies, warn=False)  # studies group
    return slice_patients(root, table, pairs, mosmed_patient)


def split_files_note(data: LoadedData) -> str:
    """Which split files each fold reads, where their numbers are not the folds' (MosMed's
    train_new1..5, as it ships them, are folds 0..4), else "": for reports and ``--fold``.
    Loading warns only where the numbers skip or repeat, as 1..N is the normal case."""
    numbers = [_fold_number(Path(train)) for train, _ in data.split_files]
    if numbers == list(range(len(numbers))):
        return ""
    return ", ".join(f"fold {k}: {train} + {valid}"
                     for k, (train, valid) in enumerate(data.split_files))


SPLIT_LISTS = ("train_new", "valid_new")
"""Name starts of MosMed's split files:
fold k trains on train_new{k}.txt, tests valid_new{k}.txt."""


def is_split_file(path: Path) -> bool:
    """Whether ``path`` is a MosMed split file: ``train_new*.txt`` or ``valid_new*.txt``, in any
    case (Windows tools may save ``train_new1.TXT``), as image suffixes are read."""
    name = path.name.lower()
    return name.startswith(SPLIT_LISTS) and name.endswith(".txt") and path.is_file()


def split_files(folder: Path) -> list[Path]:
    """The split files in ``folder`` (none where it cannot be listed), found by name alone and
    refusing nothing: the layout probes and the note of stray split files look in folders
    covseg does not read (the data folder's parent, siblings, sub-folders)."""
    try:
        return [path for path in sorted(folder.iterdir()) if is_split_file(path)]
    except OSError:
        return []


def stray_split_files_note(root: Path) -> str:
    """A note naming the MosMed split files in a sub-folder of ``root`` or in its parent, which
    a data folder without them beside its images does not read, so that ``cv`` does not draw
    its own folds in place of the published ones unseen; "" where there are none. One level
    each way, so that no tree is walked; the parent of ``root``'s absolute path, as "." has
    none of its own."""
    absolute = Path(os.path.abspath(root))
    found = [path for folder in (*sub_folders(root), absolute.parent) if folder != absolute
             for path in split_files(folder)]
    if not found:
        return ""
    names = [os.path.relpath(path, root).replace(os.sep, "/") for path in found]
    return (f"MosMed split files lie outside this folder ({examples(names)}) and are not read, "
            "so cv draws its own folds, not theirs; to use them, move them here, beside the "
            "images' folder")


def _split_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(train list, valid list) of every fold. A list without its partner is refused, as its
    fold would be dropped without a word; two spellings of one (``train_new1.txt`` and
    ``train_new1.TXT``) are refused."""
    found = unique(root, split_files(root), lambda path: path.name.lower())
    lists = sorted(found.values(),
                   key=lambda path: (_fold_number(path), path.name))  # one order for ties
    for path in lists:
        partner = _partner(path)
        if partner.lower() not in found:
            role = "test" if partner.lower().startswith(SPLIT_LISTS[1]) else "training"
            raise CovsegError(f"{path}: its partner {partner} is missing, so this fold has "
                              f"no {role} slices; add {partner} or remove {path.name}")
    return [(path, found[_partner(path).lower()]) for path in lists
            if path.name.lower().startswith(SPLIT_LISTS[0])]


def _partner(path: Path) -> str:
    """The name of valid_new{k}.txt for train_new{k}.txt, and the reverse, spelt as ``path``."""
    training = path.name.lower().startswith(SPLIT_LISTS[0])
    mine, other = SPLIT_LISTS if training else SPLIT_LISTS[::-1]
    return other + path.name[len(mine):]


def _fold_number(path: Path) -> int:
    match = re.search(r"(\d+)", path.stem)
    return int(match.group(1)) if match else 0


def _read_fold(train_list: Path, valid_list: Path, patients: dict[str, str], images_dir: Path
               ) -> tuple[list[str], list[str]]:
    """One fold's training and test slices. A fold that tests on what it trained on is refused:
    a slice in both lists, or a patient (a MosMed study, or as patients.csv groups slices) with
    slices in both."""
    train, valid = (_read_split(path, patients, images_dir) for path in (train_list, valid_list))
    train_set = set(train)
    trained = {patients[stem]: stem for stem in train}
    for stem in valid:
        if stem in train_set:
            raise CovsegError(f"{valid_list}: slice {stem} is in {train_list.name} too, so the "
                              "fold tests on a slice it trained on; keep it in one of the lists")
        if patients[stem] in trained:
            raise CovsegError(f"{valid_list}: patient {patients[stem]} has slices in both "
                              f"lists ({stem} here, {trained[patients[stem]]} in "
                              f"{train_list.name}); "
                              "folds never split a patient: put all of its slices in one list")
    return train, valid


def _check_tested_once(valid_lists: list[Path], tested: list[list[str]]) -> None:
    """A slice in two folds' test lists would be tested twice and count twice in every pooled
    mean (and in the paired test of ``compare``): refused, as a slice listed twice in one is."""
    first: dict[str, Path] = {}
    for valid_list, stems in zip(valid_lists, tested, strict=True):
        for stem in stems:
            if stem in first:
                raise CovsegError(f"{valid_list}: slice {stem} is in {first[stem].name} too, so "
                                  "two folds would test it and it would count twice; keep it "
                                  "in one fold's test list")
            first[stem] = valid_list


def _read_split(path: Path, known: dict[str, str], images_dir: Path) -> list[str]:
    """The slices a split file names, one a line, optionally followed by its mask
    (``imgs/x.jpg masks/x_mask.png``); a name with no slice, or no name at all, is refused, as
    it would train or test a fold on other slices than the file says (or on none); so is a slice
    named twice, which would count twice in every mean."""
    lines = read_text_file(path).splitlines()
    names = [(number, _split_line(path, number, line, known))
             for number, line in enumerate(lines, 1) if line.strip()]
    if not names:
        raise CovsegError(f"{path}: names no slices; list one slice file name per line")
    stems = [_slice_stem(name) for _, name in names]
    missing = [name for (_, name), stem in zip(names, stems) if stem not in known]
    if missing:
        raise CovsegError(f"{path}: {len(missing)} of {len(names)} names are no slice in "
                          f"{images_dir} (e.g. {missing[0]}); correct the file or restore the "
                          "slices")
    first: dict[str, int] = {}
    for (number, _), stem in zip(names, stems):
        if stem in first:
            raise CovsegError(f"{path}: slice {stem} is listed twice (lines {first[stem]} and "
                              f"{number}), so it would count twice; delete line {number}")
        first[stem] = number
    return stems


def _slice_stem(name: str) -> str:
    """The stem of a slice file as the MosMed layout keys its images and a split file names
    them (``imgs/study_0255_3.jpg``, ``imgs\\study_0255_3.jpg`` as written on Windows, or no
    suffix): the file name without its image suffix only, so that ``study_0255_x.0.jpg`` is
    ``study_0255_x.0``."""
    file_name = PureWindowsPath(name).name  # split at \ and / alike
    suffix = PureWindowsPath(file_name).suffix
    return file_name[: -len(suffix)] if suffix.lower() in IMAGE_SUFFIXES else file_name


def _split_line(path: Path, number: int, line: str, known: dict[str, str]) -> str:
    """The slice that line ``number`` of a split file names: one name, or a slice and then
    its mask (as MosMed's files pair them). A path may hold blanks (Colab's ``My Drive``,
    ``C:\\Users\\John Smith``), so the line is cut at a blank only where the part before it names
    a slice (one of ``known``, or any image file: a missing slice followed by another's mask is
    no name of that mask's slice), whose mask the part after must be, or the line is refused
    rather than read as another slice than its author meant; else the whole line is one name."""
    text = line.strip()
    cuts = [(text[: blank.start()], text[blank.end():]) for blank in re.finditer(r"\s+", text)]
    heads = [(image, mask) for image, mask in cuts if _slice_stem(image) in known
             or PureWindowsPath(image).suffix.lower() in IMAGE_SUFFIXES]
    for image, mask in heads:
        if image_name(_slice_stem(mask)) == _slice_stem(image):
            return image
    if heads:
        raise CovsegError(f"{path}: line {number} names {text!r}, which is not a slice "
                          f"and its mask (x.jpg masks/x.png or masks/x_mask.png); give one slice "
                          "per line, optionally followed by its own mask")
    return text


def read_mosmed_3d(root: Path, options: ReadOptions) -> LoadedData:
    """MosMed's studies that have a mask (only CT-1's have); the others are skipped, and both
    skips are said."""
    studies = unique(root / "studies", _niftis_under(root / "studies"), volume_stem)
    masks = unique(root / "masks", _niftis_under(root / "masks"),
                    lambda p: image_name(volume_stem(p)))
    pairs = [(stem, studies[stem], masks[stem]) for stem in sorted(studies) if stem in masks]
    if not pairs:
        raise CovsegError(
            f"{root}: no MosMed study under studies/ has a mask under masks/ "
            "(masks are named <study>_mask.nii.gz)"
        )
    notes = [f"{counted(len(skipped), *what)} without {without} skipped ({examples(skipped)})"
             for skipped, what, without in ((sorted(set(studies) - set(masks)),
                                             ("study", "studies"), "a mask"),
                                            (sorted(set(masks) - set(studies)),
                                             ("mask", "masks"), "a study"))
             if skipped]
    samples = read_studies(pairs, options, "reading MosMed studies", root)
    data = loaded(samples, "mosmed-3d", root, options, volumes=len(pairs))
    data.notes.extend(notes)
    return data


def _niftis_under(folder: Path) -> list[Path]:
    """The NIfTI files in ``folder`` and its sub-folders (MosMed's CT-0 .. CT-4), their suffix in
    any case (``.NII.GZ``) as a generic folder's."""
    found = sorted(path for path in folder.rglob("*") if named_as_nifti(path))
    refuse_broken_links(folder, found)
    return [path for path in found if is_nifti(path)]
