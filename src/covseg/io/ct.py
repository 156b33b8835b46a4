"""A CT from whatever the user gives: a NIfTI, NRRD or MetaImage file, a DICOM file or folder,
or a folder holding one such volume file (:func:`read_volume`); and a volume's label mask from a
NIfTI, NRRD or MetaImage file (:func:`read_mask_volume`), as 3D Slicer and ITK-SNAP save them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

import numpy as np

from covseg.errors import CovsegError, counted, examples
from covseg.io.atomic import LINK_LOOP, is_link_loop
from covseg.io.dicom import (
    holds_no_ct_image,
    is_dicom_file,
    is_dicom_named,
    read_dicom_file,
    read_dicom_folder,
)
from covseg.io.image import (
    CT_CHANNEL,
    IMAGE_SUFFIXES,
    MASK_SLICES,
    NNUNET_CHANNEL,
    NNUNET_IMAGES,
    apple_double,
    in_nnunet_images,
    named_as_image,
)
from covseg.io.itk import data_file_refused, read_itk
from covseg.io.listing import Listings
from covseg.io.nifti import (
    analyze_refused,
    is_analyze,
    is_nifti_named,
    named_as_nifti,
    nifti_stem,
    read_mask_nifti,
    read_nifti,
)
from covseg.io.volume import (
    NIFTI_SUFFIXES,
    SEGMENTATION_SUFFIX,
    Volume,
    check_hu,
    detect_volume_intensity,
    is_itk_named,
    is_itk_source,
    is_segmentation,
)


def is_volume_file(path: Path) -> bool:
    """True for a NIfTI, NRRD or MetaImage file that a folder's listing reads as a CT: not
    hidden (as :func:`~covseg.io.nifti.is_nifti`), nor a 3D Slicer segmentation
    (:func:`~covseg.io.volume.is_segmentation`), which is never a CT."""
    return (not path.name.startswith(".") and is_volume_named(path)
            and not is_segmentation(path))


def is_volume_named(path: Path) -> bool:
    """True for a file named as a NIfTI, NRRD or MetaImage volume, hidden or not: one given by
    name."""
    return is_nifti_named(path) or is_itk_named(path)


def one_channel(root: Path, found: str, folder: str = NNUNET_IMAGES) -> CovsegError:
    """The refusal of nnU-Net data of several channels per case, ``found`` saying where (in
    ``root``'s images ``folder``, or its dataset.json): covseg reads CTs, one channel."""
    return CovsegError(f"{root}: {found}, but covseg reads one CT channel per case; keep the "
                       f"CT's {folder}/ files (_{CT_CHANNEL}) alone in a copy and give that")


def refuse_further_channels(paths: Iterable[Path]) -> None:
    """Refuse the files of ``paths`` in an nnU-Net images folder (``imagesTr/``, ``imagesTs/``:
    :func:`~covseg.io.image.in_nnunet_images`) that are another channel beside their case's CT
    (``case_001_0001`` by ``case_001_0000``): covseg reads one CT channel per case, and
    predict took the other channel for a CT study of its own."""
    by_folder: dict[Path, dict[str, Path]] = {}
    for path in paths:
        if in_nnunet_images(path):
            by_folder.setdefault(path.parent, {})[volume_stem(path)] = path
    for folder, stems in by_folder.items():
        others = sorted(path.name for stem, path in stems.items() if _other_channel(stem, stems))
        if others:
            raise one_channel(folder.parent, f"{folder.name}/ holds further channels "
                                             f"({examples(others)})", folder.name)


def _other_channel(stem: str, stems: Collection[str]) -> bool:
    """Whether ``stem`` is a channel other than the CT's of a case whose CT is in ``stems``."""
    match = NNUNET_CHANNEL.fullmatch(stem)
    return (match is not None and match.group(2) != CT_CHANNEL
            and f"{match.group(1)}_{CT_CHANNEL}" in stems)


def refuse_broken_links(folder: Path, paths: Iterable[Path]) -> None:
    """Refuse the symbolic links among ``paths`` (in ``folder``) that are named as images or
    volumes but lead nowhere: a git-annex or DataLad clone whose content is not fetched holds
    one for each file, which no listing reads, so that their masks were said to have no image
    and a run trained on what was left. Links in a loop are said to be so (ELOOP), not to
    want their content fetched."""
    broken = [path for path in paths if _is_broken_link(path)]
    loops = [path.relative_to(folder).as_posix() for path in broken if is_link_loop(path)]
    if loops:
        raise CovsegError(f"{folder}: {counted(len(loops), 'file')} named as images or volumes "
                          f"{'is' if len(loops) == 1 else 'are each'} {LINK_LOOP} "
                          f"({examples(loops)}); remove or mend the links")
    if broken:
        one = len(broken) == 1
        names = examples([path.relative_to(folder).as_posix() for path in broken])
        raise CovsegError(f"{folder}: {counted(len(broken), 'file')} {'is a' if one else 'are'} "
                          f"broken link{'' if one else 's'} ({names}): {_UNFETCHED}")


def refuse_broken_link(path: Path, shown: str | None = None) -> None:
    """Refuse ``path``, given itself, if it is a broken link (as :func:`refuse_broken_links`
    refuses a folder's), the message starting with it (``shown``: as the option was given): it
    started with its folder, ``.`` for a name given in the working folder."""
    if _is_broken_link(path):
        why = f"{LINK_LOOP}; remove or mend the link" if is_link_loop(path) else (
            f"a broken link: {_UNFETCHED}")
        raise CovsegError(f"{shown or path}: {why}")


_UNFETCHED = ("content not fetched from git-annex or DataLad? Run `git annex get .` or "
              "`datalad get .` in the clone, then run again")
"""What a broken link named as an image or volume most likely is, and how to fetch it."""


def _is_broken_link(path: Path) -> bool:
    """Whether ``path`` is a symbolic link named as an image or volume that leads nowhere."""
    return ((named_as_image(path) or named_as_volume(path)) and not path.exists()
            and path.is_symlink())


def named_as_volume(path: Path) -> bool:
    """Whether ``path`` is named as a NIfTI, NRRD or MetaImage file a folder's listing reads
    (not hidden), whatever is behind the name: a broken link's too."""
    return named_as_nifti(path) or (not path.name.startswith(".") and is_itk_source(path.name))


def is_mask_volume(path: Path) -> bool:
    """True for a file read as a volume's mask rather than a 2D one: a NIfTI, NRRD or MetaImage
    file, a 3D Slicer segmentation included, not hidden (as :func:`is_volume_file`). evaluate
    tells a volume mask from a 2D one by it, and the data layouts' masks folders and quantify's
    folders (:func:`~covseg.studies.find_studies`) list volume masks by it; a mask given by name
    is judged by its name (:func:`is_volume_named`)."""
    return path.is_file() and not path.name.startswith(".") and is_volume_named(path)


def volume_stem(path: Path) -> str:
    """A file's name without its format's suffix (``.nii.gz``, ``.nrrd``, ``.seg.nrrd``,
    ``.mha``, ``.png``, ...): the name that pairs a mask with its CT, whichever format each is
    saved in (``x.seg.nrrd`` is ``x``)."""
    if is_segmentation(path):
        return path.name[:-len(SEGMENTATION_SUFFIX)]
    return nifti_stem(path)


def read_mask_volume(path: Path, dtype: type = np.int16, like: Volume | None = None) -> Volume:
    """A volume's label mask (:func:`is_mask_volume`) as ``dtype``, NIfTI or NRRD/MetaImage
    read as the CTs are and checked alike (integer labels, a mask's slices; ``like``: as for
    :func:`~covseg.io.nifti.read_nifti`)."""
    if is_itk_source(path.name):
        return read_itk(path, like, dtype, MASK_SLICES)
    return read_mask_nifti(path, dtype, like)


def read_volume_file(path: Path, like: Volume | None = None) -> Volume:
    """A CT's NIfTI, NRRD or MetaImage file as float32 (z, y, x), its intensity not judged: the
    one reader of such a file, for :func:`read_volume` and the data layouts' volumes (which
    judge a training set's scale themselves); ``like``: as for :func:`read_nifti`."""
    if is_itk_source(path.name):
        return read_itk(path, like)
    return read_nifti(path, like=like)


def read_volume(path: str | os.PathLike[str], hu: str = "auto", like: Volume | None = None
                ) -> Volume:
    """Read a CT as float32 (z, y, x) from NIfTI, NRRD or MetaImage (:mod:`covseg.io.itk`), a
    DICOM folder or a single DICOM file (a folder holding one such volume file and no DICOM is
    read as that file: :func:`folder_volume`).

    ``hu``: "auto" detects Hounsfield units vs 8-bit grey from the value range, "yes" forces HU,
    "no" says the values are grey (0..255 or 0..1), as lungmask's ``--noHU``. ``like``: as for
    :func:`read_nifti` (for a NIfTI, NRRD or MetaImage file).
    """
    check_hu(hu)
    path = Path(path)
    if path.is_dir():
        path = folder_volume(path)
    if path.is_dir():
        volume = read_dicom_folder(path)
    elif not path.exists():
        raise CovsegError(f"{path}: no such file or folder")
    elif refused := apple_double(path):
        raise refused
    elif path.name.lower().endswith(NIFTI_SUFFIXES) or is_itk_source(path.name):
        volume = read_volume_file(path, like)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        raise CovsegError(
            f"{path}: a 2D image, not a volume; give a NIfTI, NRRD or MetaImage file or a DICOM "
            "series (2D images are predicted slice by slice as images)"
        )
    elif is_analyze(path):
        raise analyze_refused(path)
    elif is_dicom_named(path):
        volume = read_dicom_file(path)
    else:
        raise data_file_refused(path) or CovsegError(
            f"{path}: not a NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr) or MetaImage (.mha/.mhd) "
            "file, a DICOM file or a DICOM folder")
    volume.intensity = detect_volume_intensity(volume.array, hu, volume.source)
    return volume


def folder_volumes(folder: Path, listings: Listings | None = None,
                   is_volume: Callable[[Path], bool] = is_volume_file) -> list[Path]:
    """The volume files (NIfTI, NRRD, MetaImage: ``is_volume``, :func:`is_volume_file` for CTs,
    :func:`is_mask_volume` for masks) of a folder that holds no DICOM file, sorted; none beside
    DICOM slices (a series with a converted copy is read from its slices), but all beside DICOM
    files of no CT image (:func:`~covseg.io.dicom.holds_no_ct_image`: a dose report beside NIfTI
    CTs). Its folders, and what its DICOM files hold, as ``listings`` holds them (found here
    without)."""
    listings = listings or Listings()
    children = listings.children(folder)
    volumes = [c for c in children if is_volume(c)]
    if not volumes or not any(is_dicom_file(c) for c in children):
        return volumes
    return volumes if listings.once(holds_no_ct_image, folder) else []


def folder_volume(folder: Path) -> Path:
    """Where a folder's CT is read from: the folder itself (a DICOM series, searched as
    :func:`read_dicom_folder` searches it), or the one volume file it holds beside no DICOM file
    of a CT image (data stored one folder per patient: ``p1/ct.nii.gz``, perhaps beside its dose
    report: :func:`folder_volumes`). Several volume files there are refused: which is the CT, and
    which its masks, is a guess."""
    volumes = folder_volumes(folder)
    if not volumes:
        return folder
    if len(volumes) > 1:
        raise CovsegError(f"{folder}: holds {len(volumes)} volume files ({volumes[0].name}, "
                          f"{volumes[1].name}{', ...' if len(volumes) > 2 else ''}) and no DICOM "
                          "slices; give the CT file itself, or this folder alone to read each "
                          "file as a study")
    return volumes[0]
