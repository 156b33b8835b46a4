"""MedSeg CT100: the ``tr_im/`` + ``tr_mask/`` (or ``tr_mask_new/``) PNGs or ``tr_im.nii.gz``
stack (or ``tr_im.nii``, gunzipped), and the Radiopaedia volumes ``rp_im/``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from covseg.data.fetch import archive_stem
from covseg.data.layouts.base import (
    LoadedData,
    ReadOptions,
    Sample,
    archives,
    check_patients_listed,
    files,
    first_dir,
    listed,
    loaded,
    pair,
    pair_folders,
    read_2d_pairs,
    read_patients_csv,
    read_volume_pairs,
    slice_cases,
    slice_volume,
    study_cases,
    target_option,
    two_copies,
    unique,
)
from covseg.errors import CovsegError
from covseg.io.ct import refuse_broken_links, volume_stem
from covseg.io.image import is_image_file
from covseg.io.nifti import is_nifti, named_as_nifti

MEDSEG_MASKS = ("tr_mask_new", "tr_mask")
"""Names of MedSeg's PNG masks folder, the corrected masks first."""
MEDSEG_RADIOPAEDIA = ("rp_im", "rp_msk", "rp_lung_msk")
"""MedSeg's Radiopaedia part: 9 CT volumes, their lesion masks (labels as ``tr_mask``'s) and
their lung masks."""
MEDSEG_LUNG_STACK = "tr_lungmasks_updated"
"""MedSeg's lung masks of the 100 ``tr_im`` slices, a NIfTI stack downloaded beside it."""
MEDSEG_STACKS = ("tr_im", "tr_mask", MEDSEG_LUNG_STACK)
"""MedSeg's NIfTI stacks, by stem."""


def read_medseg(root: Path, options: ReadOptions) -> LoadedData:
    """MedSeg's 100 slices (``tr_im``, as PNGs or one NIfTI stack) and its Radiopaedia volumes
    (``rp_im/``), each a study; ``--target lung`` reads the slices' lung masks
    (``tr_lungmasks_updated.nii.gz``) and the volumes' ``rp_lung_msk/``; slices without lung
    masks are not read then (a note says so). Archives of its parts left packed are named in a
    note. Stacks in folders of their names (:func:`stack_folders`) are refused, as where they
    are all the folder holds: they were dropped without a word beside ``rp_im/``; so is the
    image stack under a near name (:func:`medseg_slices_renamed`)."""
    if folders := stack_folders(root):
        raise CovsegError(f"{root}: {stack_folders_advice(root, folders)}")
    if renamed := medseg_slices_renamed(root):
        raise CovsegError(f"{root}: tr_im.nii.gz (or tr_im.nii) not found, so MedSeg's slices "
                          f"are not read; {renamed}{_mask_renamed(root, options.target)}")
    patients = read_patients_csv(root)
    slices, cases = _read_medseg_slices(root, options, patients)
    volumes = _medseg_volume_pairs(root, options.target, bool(slices))
    notes = [note] if (note := _packed_note(root, options.target)) else []
    if options.target == "lung" and not slices and holds_medseg_slices(root):
        notes.append(f"MedSeg's tr_im slices have no lung masks here "
                     f"({_lung_stack_unread(root) or f'{MEDSEG_LUNG_STACK}.nii.gz'}) and are "
                     f"not read for {target_option('lung')}; the {len(volumes)} rp_im/ volumes "
                     "with rp_lung_msk/ are")
    samples = slices + read_volume_pairs(volumes, options, "reading MedSeg volumes", patients)
    check_patients_listed(patients, cases, study_cases(volumes), pairs=volumes)
    data = loaded(samples, "medseg", root, options, volumes=len(volumes))
    data.notes.extend(notes)
    return data


def _packed_note(root: Path, target: str) -> str:
    """A note naming the archives of the Radiopaedia folders that ``target`` reads
    (``rp_im.zip``; ``rp_lung_msk.zip`` for lungs only) left packed beside the data read,
    whose volumes are not read; "" where there are none."""
    lesions, lungs = MEDSEG_RADIOPAEDIA[1:]
    read = set(MEDSEG_RADIOPAEDIA) - {lesions if target == "lung" else lungs}
    packed = [path.name for path in archives(root)
              if (name := archive_stem(path.name)) in read and not (root / name).is_dir()]
    if not packed:
        return ""
    one = len(packed) == 1
    return (f"{', '.join(packed)} {'is' if one else 'are'} not unpacked, so not read; unpack "
            f"{'it' if one else 'them'} here (rp_im/, rp_msk/, rp_lung_msk/ beside tr_im)")


def holds_medseg_slices(root: Path) -> bool:
    """Whether ``root`` holds MedSeg's 100 slices: ``tr_im/`` or a ``tr_im`` NIfTI stack."""
    return bool(_stacks(root, "tr_im")) or (root / "tr_im").is_dir()


def medseg_slices_renamed(root: Path) -> str:
    """Advice to rename MedSeg's image stack found in ``root`` under a near name only (a
    browser's second copy, ``tr_im (1).nii.gz``), with no ``tr_im`` stack or ``tr_im/`` beside
    it: its slices were dropped without a word beside ``rp_im/``; "" where there is none."""
    return "" if holds_medseg_slices(root) else _renamed(root, "tr_im")


def _mask_renamed(root: Path, target: str) -> str:
    """Advice, after "; ", to rename the mask stack of ``target`` (the lung stack for lungs)
    found in ``root`` under a near name only; "" where the stack is here or no copy is."""
    stem = MEDSEG_LUNG_STACK if target == "lung" else "tr_mask"
    renamed = "" if _stacks(root, stem) else _renamed(root, stem)
    return f"; {renamed}" if renamed else ""


def _renamed(root: Path, stem: str) -> str:
    """Advice to rename the first file in ``root`` named as MedSeg's NIfTI stack ``stem`` under
    a near name (``tr_mask (1).nii.gz``, ``tr_im(1).nii``) to the stack's own name, its suffix
    kept; "" where there is none."""
    near = [path for path in listed(root) if named_as_nifti(path) and path.is_file()
            and (name := volume_stem(path)) != stem and name.startswith(stem)]
    if not near:
        return ""
    suffix = near[0].name[len(volume_stem(near[0])):]
    return f"{near[0].name} is here: rename it {stem}{suffix}"


def _stacks(root: Path, stem: str) -> list[Path]:
    """The files of MedSeg's NIfTI stack ``stem`` in ``root``: ``.nii.gz`` as downloaded, ``.nii``
    as a browser or desktop gunzips it, or both, their suffix in any case (``.NII.GZ``) as a
    generic folder's; a broken link of the name too (content not fetched), which
    :func:`_stack` refuses."""
    return [path for path in listed(root) if named_as_nifti(path) and volume_stem(path) == stem
            and (path.is_file() or (path.is_symlink() and not path.exists()))]


def _stack(root: Path, stem: str) -> Path | None:
    """The one NIfTI stack ``stem`` in ``root``, or None; ``.nii`` beside ``.nii.gz`` is refused
    as any two files of one name are, rather than one of them read unseen, and so is a broken
    link (:func:`refuse_broken_links`)."""
    stacks = _stacks(root, stem)
    refuse_broken_links(root, stacks)
    return unique(root, stacks, volume_stem).get(stem)


def _medseg_volume_pairs(root: Path, target: str, slices_read: bool
                         ) -> list[tuple[str, Path, Path]]:
    """(study ``medseg_rp<N>``, CT, mask) of each Radiopaedia volume: its lesion mask, or for
    ``target`` lung its lung mask; none without ``rp_im/``. Lung masks asked of a folder with
    neither the slices' nor the volumes' (``slices_read``: the slices' were read) are refused,
    naming what is missing; so are volumes in a sub-folder (``rp_im/rp_im/`` of "Extract All"
    of ``rp_im.zip``), which were dropped without a word (:func:`pair_folders`)."""
    images, lesions, lungs = (root / name for name in MEDSEG_RADIOPAEDIA)
    if not images.is_dir():
        if target == "lung" and not slices_read:
            raise CovsegError(_no_lung_masks(root))
        return []
    masks = lungs if target == "lung" else lesions
    if not masks.is_dir():
        raise CovsegError(f"{root}: rp_im/ found but not {masks.name}/, which holds its "
                          f"{'lung ' if target == 'lung' else ''}masks"
                          + _packed_advice(root, masks.name))
    pairs = pair_folders(files(images, is_nifti), files(masks, is_nifti), root, "medseg",
                         images, masks, "rp_im/ holds no volumes it reads")
    return [(f"medseg_rp{stem}", image, mask) for stem, image, mask in pairs]


def _no_lung_masks(root: Path) -> str:
    """The refusal of ``--target lung`` for a MedSeg folder with no lung masks it reads,
    naming MedSeg's two, the lung stack beside the PNG slices (read with the NIfTI stack only),
    one under a near name and an archive of ``rp_lung_msk/`` left packed."""
    if unread := _lung_stack_unread(root):
        return f"{root}: {unread}"
    return (f"{root}: MedSeg's lung masks are {MEDSEG_LUNG_STACK}.nii.gz beside tr_im.nii.gz "
            f"and rp_lung_msk/ beside rp_im/, which this folder lacks; "
            f"{target_option('lung')} needs those, images/ + lungs/ folders or the Zenodo "
            "volumes' lung_mask/" + _packed_advice(root, "rp_lung_msk")
            + _mask_elsewhere(root, MEDSEG_LUNG_STACK))


def _lung_stack_unread(root: Path) -> str:
    """Why MedSeg's lung stack in ``root`` is not read: it holds the lung masks of the
    ``tr_im.nii.gz`` stack's slices, and the slices here are the ``tr_im/`` PNGs; "" where
    there is no such stack."""
    if not _stacks(root, MEDSEG_LUNG_STACK) or _stacks(root, "tr_im"):
        return ""
    return (f"{MEDSEG_LUNG_STACK}.nii.gz is read only with the tr_im.nii.gz stack, whose slices' "
            "lung masks it holds, not with the tr_im/ PNGs; put tr_im.nii.gz beside it")


def _packed_advice(root: Path, name: str) -> str:
    """Advice to unpack the archive of MedSeg's folder ``name`` found in ``root`` instead;
    "" where there is none."""
    packed = [path.name for path in archives(root) if archive_stem(path.name) == name]
    return f" ({packed[0]} is here, not unpacked: unpack it)" if packed else ""


def _png_copy(root: Path) -> str | None:
    """The first of MedSeg's PNG folders (``tr_im/``, ``tr_mask_new/``, ``tr_mask/``) in
    ``root`` that holds image files, a second copy beside the NIfTI stack; an empty one (or
    one of other files) holds none, and the stack is read as before."""
    return next((name for name in ("tr_im", *MEDSEG_MASKS)
                 if (root / name).is_dir() and files(root / name, is_image_file)), None)


def _read_medseg_slices(root: Path, options: ReadOptions, patients: dict[str, str]
                        ) -> tuple[list[Sample], list[tuple[str, str]]]:
    """MedSeg's 100 slices (none where the folder holds its volumes alone), and the (case id,
    file stem) of each, the names a patients.csv may give them; for ``--target lung`` those of
    the NIfTI stack with its lung masks (any non-zero label is lung), none without them. The
    NIfTI stack beside the ``tr_im/`` or ``tr_mask/`` PNGs is refused: the PNGs (corrected
    masks, say) were dropped unseen (:func:`_png_copy`)."""
    if image_file := _stack(root, "tr_im"):
        if copy := _png_copy(root):
            raise two_copies(root, image_file.name, f"{copy}/")
        lung = options.target == "lung"
        mask_file = _stack(root, MEDSEG_LUNG_STACK if lung else "tr_mask")
        if mask_file is None:
            if lung:
                return [], []
            raise CovsegError(f"{root}: {image_file.name} found but tr_mask.nii.gz (or "
                              f"tr_mask.nii) is missing{_mask_elsewhere(root, 'tr_mask')}")
        samples = slice_volume(image_file, mask_file, replace(options, slices="all"),
                                "medseg_{:04d}".format, lambda case: patients.get(case, case))
        return samples, [(s.case_id, s.case_id) for s in samples]
    if not (root / "tr_im").is_dir() or options.target == "lung":
        return [], []
    masks_dir = first_dir(root, MEDSEG_MASKS)
    if masks_dir is None:
        raise CovsegError(f"{root}: tr_im/ found but neither tr_mask/ nor tr_mask_new/")
    pairs = pair(files(root / "tr_im", is_image_file), files(masks_dir, is_image_file), root)
    samples = read_2d_pairs(pairs, options, patients, "reading MedSeg slices", "medseg_")
    return samples, slice_cases(pairs, "medseg_")


def _mask_elsewhere(root: Path, stem: str) -> str:
    """Where MedSeg's mask stack ``stem`` (``tr_mask``, or its lung masks) missing from ``root``
    was put instead, said for the user: in a folder of its name (7-Zip's "Extract to
    tr_mask.nii\\"), or under a near name (a browser's second copy, ``tr_mask (1).nii.gz``); ""
    where neither is seen. ``root`` may be such a folder itself (given as the data set a folder
    of them was said to hold)."""
    absolute = Path(os.path.abspath(root))
    for folder in (root, absolute.parent if named_as_nifti(absolute) else None):
        if folder and (folders := stack_folders(folder)):
            return f"; {stack_folders_advice(folder, folders)}"
    renamed = _renamed(root, stem)
    return f"; {renamed}" if renamed else ""


def stack_folders(root: Path) -> list[Path]:
    """The folders in ``root`` named as one of MedSeg's NIfTI stacks that hold that stack
    (``tr_im.nii/tr_im.nii``: 7-Zip's or WinRAR's "Extract to tr_im.nii\\" of the download), in
    which the stack is not read."""
    return [path for path in listed(root) if path.is_dir() and named_as_nifti(path)
            and volume_stem(path) in MEDSEG_STACKS and _stacks(path, volume_stem(path))]


def stack_folders_advice(root: Path, folders: list[Path]) -> str:
    """What :func:`stack_folders` found and what to do: move each stack up into ``root``."""
    named = ", ".join(f"{path.name}/" for path in folders)
    return (f"{named} {'is a folder' if len(folders) == 1 else 'are folders'} holding the file "
            f"of {'its' if len(folders) == 1 else 'their'} name (an unpacker's \"Extract to\"); "
            f"move the file{'s' if len(folders) > 1 else ''} up into {root} and give that folder")
