"""MedSeg CT100: the ``tr_im/`` + ``tr_mask/`` (or ``tr_mask_new/``) PNGs or ``tr_im.nii.gz``
stack (or ``tr_im.nii``, gunzipped), and the Radiopaedia volumes ``rp_im/``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from covseg.data.layouts.base import (
    LoadedData,
    ReadOptions,
    Sample,
    check_patients_listed,
    files,
    first_dir,
    listed,
    loaded,
    pair,
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


def read_medseg(root: Path, options: ReadOptions) -> LoadedData:
    """MedSeg's 100 slices (``tr_im``, as PNGs or one NIfTI stack) and its Radiopaedia volumes
    (``rp_im/``), each a study; ``--target lung`` reads the volumes' ``rp_lung_msk/`` alone, as
    the slices have no lung masks (a note says so)."""
    patients = read_patients_csv(root)
    volumes = _medseg_volume_pairs(root, options.target)
    slices: list[Sample] = []
    cases: list[tuple[str, str]] = []
    notes = []
    if options.target != "lung":
        slices, cases = _read_medseg_slices(root, options, patients)
    elif holds_medseg_slices(root):
        notes.append("MedSeg's tr_im slices have no lung masks and are not read for "
                     f"{target_option('lung')}; the {len(volumes)} rp_im/ volumes with "
                     "rp_lung_msk/ are")
    samples = slices + read_volume_pairs(volumes, options, "reading MedSeg volumes", patients)
    check_patients_listed(patients, cases, study_cases(volumes))
    data = loaded(samples, "medseg", root, options, volumes=len(volumes))
    data.notes = notes
    return data


def holds_medseg_slices(root: Path) -> bool:
    """Whether ``root`` holds MedSeg's 100 slices: ``tr_im/`` or a ``tr_im`` NIfTI stack."""
    return bool(_stacks(root, "tr_im")) or (root / "tr_im").is_dir()


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


def _medseg_volume_pairs(root: Path, target: str) -> list[tuple[str, Path, Path]]:
    """(study ``medseg_rp<N>``, CT, mask) of each Radiopaedia volume: its lesion mask, or for
    ``target`` lung its lung mask; none without ``rp_im/``."""
    images, lesions, lungs = (root / name for name in MEDSEG_RADIOPAEDIA)
    if not images.is_dir():
        if target == "lung":
            raise CovsegError(f"{root}: MedSeg's lung masks are rp_lung_msk/ beside rp_im/, "
                              f"which this folder lacks; {target_option('lung')} needs those, "
                              "images/ + lungs/ folders or the Zenodo volumes' lung_mask/")
        return []
    masks = lungs if target == "lung" else lesions
    if not masks.is_dir():
        raise CovsegError(f"{root}: rp_im/ found but not {masks.name}/, which holds its "
                          f"{'lung ' if target == 'lung' else ''}masks")
    pairs = pair(files(images, is_nifti), files(masks, is_nifti), root)
    return [(f"medseg_rp{stem}", image, mask) for stem, image, mask in pairs]


def _png_copy(root: Path) -> str | None:
    """The first of MedSeg's PNG folders (``tr_im/``, ``tr_mask_new/``, ``tr_mask/``) in
    ``root`` that holds image files, a second copy beside the NIfTI stack; an empty one (or
    one of other files) holds none, and the stack is read as before."""
    return next((name for name in ("tr_im", *MEDSEG_MASKS)
                 if (root / name).is_dir() and files(root / name, is_image_file)), None)


def _read_medseg_slices(root: Path, options: ReadOptions, patients: dict[str, str]
                        ) -> tuple[list[Sample], list[tuple[str, str]]]:
    """MedSeg's 100 slices (none where the folder holds its volumes alone), and the (case id,
    file stem) of each, the names a patients.csv may give them. The NIfTI stack beside the
    ``tr_im/`` or ``tr_mask/`` PNGs is refused: the PNGs (corrected masks, say) were dropped
    unseen (:func:`_png_copy`)."""
    if image_file := _stack(root, "tr_im"):
        if copy := _png_copy(root):
            raise two_copies(root, image_file.name, f"{copy}/")
        mask_file = _stack(root, "tr_mask")
        if mask_file is None:
            raise CovsegError(f"{root}: {image_file.name} found but tr_mask.nii.gz (or "
                              "tr_mask.nii) is missing")
        samples = slice_volume(image_file, mask_file, replace(options, slices="all"),
                                "medseg_{:04d}".format, lambda case: patients.get(case, case))
        return samples, [(s.case_id, s.case_id) for s in samples]
    if not (root / "tr_im").is_dir():
        return [], []
    masks_dir = first_dir(root, MEDSEG_MASKS)
    if masks_dir is None:
        raise CovsegError(f"{root}: tr_im/ found but neither tr_mask/ nor tr_mask_new/")
    pairs = pair(files(root / "tr_im", is_image_file), files(masks_dir, is_image_file), root)
    samples = read_2d_pairs(pairs, options, patients, "reading MedSeg slices", "medseg_")
    return samples, slice_cases(pairs, "medseg_")
