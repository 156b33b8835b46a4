""""COVID-19 CT Lung and Infection Segmentation" volumes (Kaggle's or Zenodo's names).
"""

from __future__ import annotations

from pathlib import Path

from covseg.data.layouts.base import (
    LoadedData,
    ReadOptions,
    files,
    loaded,
    only_dir,
    pair_folders,
    read_studies,
    target_option,
)
from covseg.errors import CovsegError
from covseg.io.ct import is_mask_volume, is_volume_file, volume_stem
from covseg.io.image import case_key

ZENODO_IMAGES = ("ct_scans", "COVID-19-CT-Seg_20cases")
ZENODO_INFECTION = ("infection_mask", "Infection_Mask")
ZENODO_LUNG = ("lung_mask", "Lung_Mask")
ZENODO_COMBINED = ("lung_and_infection_mask", "Lung_and_Infection_Mask")
"""Kaggle's and Zenodo's masks of lungs (1, 2) and infection (3) in one, which no target reads:
their labels are not covseg's (1..3 lesion classes)."""


def combined_mask_folder(path: Path, folders: tuple[str, str] = ZENODO_COMBINED) -> str | None:
    """The infection mask folder to give instead of ``path``, where ``path`` is (or is a file
    of) Zenodo's lung-and-infection folder (:data:`ZENODO_COMBINED`; or another of Zenodo's
    ``folders``, such as :data:`ZENODO_LUNG`), whose lungs read as covseg's labels would count
    as lesions; else None."""
    folder = path if path.is_dir() else path.parent
    if folder.name not in folders:
        return None
    return str(folder.with_name(ZENODO_INFECTION[folders.index(folder.name)]))


def refuse_combined_masks(path: Path, counted: str, option: str) -> None:
    """Refuse Zenodo's lung-and-infection folder, or a file of it (:func:`combined_mask_folder`),
    given where lesion masks are read (``counted``: what its labels would be read as; ``option``:
    where to give the infection masks it names instead)."""
    infection = combined_mask_folder(path)
    if infection:
        raise CovsegError(f"{path}: Zenodo's lung and infection masks label the lungs 1 and 2 "
                          f"and the infection 3, which would be {counted} (the lungs as "
                          f"infection); give the infection masks, {infection}, as {option}")


def _missing_folders(root: Path, images_dir: Path | None, masks_dir: Path | None,
                     names: tuple[str, str], target: str) -> str:
    """Why ``root`` is not read: the CT or mask folder (``names``, for the ``target``) it lacks,
    spelled as the folders it holds are (Zenodo's ``Infection_Mask/`` beside its
    ``COVID-19-CT-Seg_20cases/``, Kaggle's ``infection_mask/`` beside ``ct_scans/``); its
    lung-and-infection folder said not to be read (:data:`ZENODO_COMBINED`), its lung folder
    named as what ``--target lung`` reads."""
    folders = (ZENODO_IMAGES, ZENODO_INFECTION, ZENODO_LUNG, ZENODO_COMBINED)
    spelling = next((k for spellings in folders for k, name in enumerate(spellings)
                     if (root / name).is_dir()), 0)
    needed = [f"{folder}/" for folder, found in ((ZENODO_IMAGES[spelling], images_dir),
                                                (names[spelling], masks_dir)) if found is None]
    held = [f"{folder.name}/" for folder in (images_dir, masks_dir) if folder]
    notes: list[str] = []
    if only_dir(root, ZENODO_COMBINED):
        notes.append(f"{ZENODO_COMBINED[spelling]}/ is not read: it labels the lungs 1 and 2 "
                     "and the infection 3, no covseg target's labels")
    if target != "lung" and only_dir(root, ZENODO_LUNG):
        notes.append(f"{target_option('lung')} reads {ZENODO_LUNG[spelling]}/")
    beside = f" beside {held[0]}" if held else ""
    note = f" ({'; '.join(notes)})" if notes else ""
    return (f"{root}: the Zenodo layout needs {' and '.join(needed)}{beside}, which it lacks"
            f"{note}; add {'them' if len(needed) > 1 else 'it'} from the data set")


def missing_images(root: Path) -> str | None:
    """Why ``root``, holding Zenodo's (or Kaggle's) mask folders but not their CT folder, is
    not read, in :func:`read_zenodo`'s words (:func:`_missing_folders`): the CT folder spelled
    as the masks found are, the lung-and-infection folder said not to be read; None where it
    holds none of those mask folders."""
    infection, lungs, combined = (only_dir(root, names)
                                  for names in (ZENODO_INFECTION, ZENODO_LUNG, ZENODO_COMBINED))
    if not (infection or lungs or combined):
        return None
    names, target = (ZENODO_LUNG, "lung") if lungs and not infection else (
        ZENODO_INFECTION, "infection")
    return _missing_folders(root, None, lungs if target == "lung" else infection, names, target)


def read_zenodo(root: Path, options: ReadOptions) -> LoadedData:
    images_dir = only_dir(root, ZENODO_IMAGES)
    names = ZENODO_LUNG if options.target == "lung" else ZENODO_INFECTION
    masks_dir = only_dir(root, names)
    if images_dir is None or masks_dir is None:
        raise CovsegError(_missing_folders(root, images_dir, masks_dir, names, options.target))
    images = files(images_dir, is_volume_file, lambda p: case_key(volume_stem(p)))
    masks = files(masks_dir, is_mask_volume, lambda p: case_key(volume_stem(p)))
    pairs = pair_folders(images, masks, root, "zenodo", images_dir, masks_dir)
    samples = read_studies(pairs, options, "reading Zenodo volumes", root)
    return loaded(samples, "zenodo", root, options, volumes=len(pairs))

