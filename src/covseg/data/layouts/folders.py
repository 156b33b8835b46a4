"""The generic layout: ``images/`` + ``masks/`` (or ``lungs/``) with matching stems, 2D files,
volumes (NIfTI, NRRD or MetaImage) or both; a volume's mask may be any of the three, whichever
its CT's is (3D Slicer's single-layer ``.seg.nrrd`` too).
"""

from __future__ import annotations

import re
from pathlib import Path

from covseg.data.layouts.base import (
    LoadedData,
    ReadOptions,
    Sample,
    check_patients_listed,
    files,
    loaded,
    mosmed_patient,
    only_dir,
    pair_folders,
    read_2d_pairs,
    read_patients_csv,
    read_volume_pairs,
    slice_cases,
    slice_patients,
    study_cases,
    study_rows,
)
from covseg.errors import CovsegError
from covseg.io.ct import is_mask_volume, is_volume_file, is_volume_named
from covseg.io.image import is_image_file

FOLDERS_IMAGES = ("images", "imgs", "Images", "Imgs")
"""Names of the generic layout's images folder (MosMed's 2D ``imgs/`` too, and Inf-Net's
spelling ``Imgs/``, which is Inf-Net's only beside its ``GT/``); two of them in one folder are
refused (:func:`only_dir`)."""
FOLDERS_MASKS = ("masks", "Masks")
"""Names of the generic layout's infection masks folder."""
LUNG_MASKS = ("lungs", "lung_masks")
"""Names of the generic layout's lung masks folder (``--target lung``)."""


def _missing_folder(root: Path, images_dir: Path | None, masks: str) -> str:
    """Which of the generic layout's two folders ``root`` lacks, and what to do: the line said
    "expected images/ and masks/ folders" whichever was there."""
    if images_dir is None:
        return (f"{root}: expected images/ and {masks}/ folders, found no images/; put each "
                f"mask's image in images/ beside {masks}/, under the same file stem")
    what = "lung masks" if masks == LUNG_MASKS[0] else "masks"
    return (f"{root}: {images_dir.name}/ found but no {masks}/ beside it; put the {what} of its "
            f"images in {masks}/, under the same file stems (covseg predict segments images "
            "without masks)")


def read_folders(root: Path, options: ReadOptions) -> LoadedData:
    images_dir = only_dir(root, FOLDERS_IMAGES)
    mask_names = LUNG_MASKS if options.target == "lung" else FOLDERS_MASKS
    masks_dir = only_dir(root, mask_names)
    if images_dir is None or masks_dir is None:
        raise CovsegError(_missing_folder(root, images_dir, mask_names[0]))
    images = files(images_dir, lambda p: is_image_file(p) or is_volume_file(p))
    masks = files(masks_dir, lambda p: is_image_file(p) or is_mask_volume(p))
    pairs = pair_folders(images, masks, root, "folders", images_dir, masks_dir)
    return read_pairs(root, pairs, options, "folders")


def read_pairs(root: Path, pairs: list[tuple[str, Path, Path]], options: ReadOptions,
               layout: str) -> LoadedData:
    """The generic layout's pairs (case, image, mask) read as ``layout``'s data: volumes sliced
    (each its own patient, as its name tells), 2D files grouped by the study their names tell,
    and both by a patients.csv; the nnU-Net layout's pairs too, read alike."""
    _check_one_kind(root, pairs)
    volumes = [p for p in pairs if is_mask_volume(p[1])]
    slices = [p for p in pairs if not is_mask_volume(p[1])]
    patients = read_patients_csv(root)
    by_slice, studies = study_rows(patients, slices, _study_of_slice)
    check_patients_listed(by_slice, slice_cases(slices), study_cases(volumes) + studies,
                           grouped=lambda case: _slice_study(case) is not None
                           or (case, case) in studies, pairs=pairs)
    samples = read_volume_pairs(volumes, options, "reading volumes", patients)
    samples += read_2d_pairs(slices, options,
                              slice_patients(root, by_slice, slices, _study_of_slice),
                              "reading slices")
    _check_unique_cases(samples)
    return loaded(samples, layout, root, options, synthetic=(root / "SYNTHETIC").exists(),
                  volumes=len(volumes))


def _check_one_kind(root: Path, pairs: list[tuple[str, Path, Path]]) -> None:
    """A 2D image with a volume mask (ITK-SNAP and 3D Slicer save a 2D segmentation so), or the
    reverse, is refused naming the pair: a pair is read by its image's kind, and the mask's
    reader refused a .nii.gz while asking for NIfTI. A 2D image has no geometry to place a
    volume's slice on, so the mask is not read across kinds."""
    kinds = {True: "a volume", False: "a 2D file"}
    for _, image, mask in pairs:
        image_volume, mask_volume = is_volume_named(image), is_mask_volume(mask)
        if image_volume != mask_volume:
            raise CovsegError(f"{root}: {image.relative_to(root)} is {kinds[image_volume]} but "
                              f"its mask {mask.relative_to(root)} is {kinds[mask_volume]}; an "
                              "image and its mask must be of one kind (both 2D files or both "
                              "volumes): save the mask as its image is")


def _check_unique_cases(samples: list[Sample]) -> None:
    """A 2D file named like a volume's slice (``x_z0003.png`` beside ``x.nii.gz``) would make
    two samples of one case id, which folds and reports tell apart by that id."""
    seen: dict[str, str] = {}
    for sample in samples:
        if sample.case_id in seen:
            raise CovsegError(f"{sample.source} and {seen[sample.case_id]} are both case "
                              f"{sample.case_id}; rename one of them")
        seen[sample.case_id] = sample.source


VOLUME_SLICE = re.compile(r"(.+)_z\d{4,}")
"""covseg's case id of a volume's slice (``coronacases_001_z0012``, :func:`read_volume_pairs`),
as slices of a volume written out as 2D files are named: its study, then the slice."""


MOSMED_NAME = re.compile(r"(?:study_?)?\d+(?:_\d+)?", flags=re.IGNORECASE)
"""A whole name spelt as MosMed names a study or its slice (``study_0255_12``, ``Study0255``,
``0255_12``); a name that only holds such a part (``siteA_study1_3``) is none."""


def _slice_study(stem: str) -> str | None:
    """The study a generic 2D slice's name tells, else None: MosMed's spellings
    (``study_0255_12``, ``Study0255_12``, ``0255_12``: :func:`mosmed_patient`, as the MosMed
    layout reads them, so that its slices without their split files group alike) or covseg's
    case id of a volume's slice (:data:`VOLUME_SLICE`). Other names (``img_12``, ``slice3``,
    ``siteA_study1_3``) tell none: a number after a name may count patients as well as slices."""
    volume = VOLUME_SLICE.fullmatch(stem)
    named = volume.group(1) if volume else stem
    study = mosmed_patient(named) if MOSMED_NAME.fullmatch(named) else named
    return study if study != named or volume else None


def _study_of_slice(stem: str) -> str:
    """A generic 2D slice's study (:func:`_slice_study`), or its own stem where it names none."""
    return _slice_study(stem) or stem
